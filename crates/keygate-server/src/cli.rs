//! The command line: `keygate serve | init [--json | --output FILE] | migrate | config check |
//! oauth rotate-key`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use keygate_core::SystemClock;
use tracing_subscriber::EnvFilter;

use crate::bootstrap::BootstrapError;
use crate::config::{Config, LogFormat, Overrides};
use crate::logging::{self, LogSink};
use crate::state::AppState;

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "The front door for your API: credentials, tenants, verification."
)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "KEYGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (config `listen`).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Database URL (config `database_url`): sqlite://PATH or postgres://…
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server; on an empty store, bootstrap it first and print the credentials on stderr.
    Serve {
        /// The first user's email, if this start bootstraps the store.
        #[arg(long, default_value = DEFAULT_EMAIL)]
        email: String,
    },
    /// Create the root tenant, its owner and an owner token; refuses on a non-empty store.
    Init {
        /// Print exactly the bootstrap JSON on stdout.
        #[arg(long, conflicts_with = "output")]
        json: bool,
        /// Write the bootstrap JSON to FILE instead, created readable by its owner alone (0600).
        /// Refuses, changing nothing, if FILE exists.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The first user's email.
        #[arg(long, default_value = DEFAULT_EMAIL)]
        email: String,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage OAuth.
    Oauth {
        #[command(subcommand)]
        command: OauthCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Sign new access tokens with a new key from now on. The previous key stays published, and
    /// its tokens valid, until they expire; running nodes switch within a minute.
    RotateKey,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration, then print it (secrets masked).
    Check,
}

const DEFAULT_EMAIL: &str = "admin@keygate.local";

/// Runs the command line; the exit code says how it went (2: configuration, 1: anything else).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        database: cli.database.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keygate: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let _flush_log_at_exit = init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keygate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let file = cli.config.clone();
    let reload: Reload = Box::new(move || Config::load(file.as_deref(), &overrides));
    match runtime.block_on(dispatch(cli.command, config, reload)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keygate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines are written to stderr by a thread of their own, in batches (see [`logging`]): a
/// request's access-log line costs a copy into a buffer, not a system call. Nothing is dropped:
/// when the buffer is full, requests wait for it. The guard writes what is left when `main`
/// returns.
fn init_logging(config: &Config) -> logging::Flush {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (sink, flush) = LogSink::start(std::io::stderr(), config.log.format, logging::BATCH_PAUSE);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink.clone());
    let installed = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        sink.install();
    }
    flush
}

/// Loads the configuration again, from the same file, environment and flags (on SIGHUP).
type Reload = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

async fn dispatch(command: Command, config: Config, reload: Reload) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            print!("{}", config.to_redacted_toml());
            eprintln!("keygate: configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            AppState::open(config, Arc::new(SystemClock)).await?;
            eprintln!("keygate: the database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Init {
            json,
            output,
            email,
        } => init(config, json, output.as_deref(), &email).await,
        Command::Oauth {
            command: OauthCommand::RotateKey,
        } => {
            let state = AppState::open(config, Arc::new(SystemClock)).await?;
            let kid = state
                .keys()
                .rotate(&**state.store(), state.clock().now())
                .await;
            state.store().close().await;
            println!("{}", kid?);
            eprintln!(
                "keygate: access tokens are signed with this key from now on; the previous key \
                 stays published until its tokens have expired"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { email } => serve(config, &email, reload).await,
    }
}

/// `keygate init`. With `--output`, the file is created before anything else, so a file that
/// exists already (or cannot be made) is refused before the store is even opened: the only copy
/// of the credentials is never written over, and no credentials are made that nobody could keep.
async fn init(
    config: Config,
    json: bool,
    output: Option<&Path>,
    email: &str,
) -> anyhow::Result<ExitCode> {
    let base = crate::bootstrap::local_base(config.listen);
    let file = match output {
        None => None,
        Some(path) => match create_private(path) {
            Ok(file) => Some((file, path)),
            Err(error) => {
                let why = match error.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        "it exists already, and init never writes over a file".to_owned()
                    }
                    _ => error.to_string(),
                };
                eprintln!(
                    "keygate init: cannot create {}: {why}; nothing was changed",
                    path.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    // The file is ours, and empty, until the report is in it: remove it if there is no report.
    let discard = || {
        if let Some(path) = output {
            let _ = std::fs::remove_file(path);
        }
    };
    let outcome = async {
        let state = AppState::open(config, Arc::new(SystemClock)).await?;
        let outcome = crate::bootstrap::run(
            state.store(),
            state.verifier().format(),
            email,
            state.clock().now(),
        )
        .await;
        state.store().close().await;
        anyhow::Ok(outcome)
    }
    .await;
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(BootstrapError::AlreadyInitialized)) => {
            discard();
            eprintln!(
                "keygate init: this store is already initialised (it holds a root tenant); \
                 nothing was changed"
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(Err(error)) => {
            discard();
            return Err(error.into());
        }
        Err(error) => {
            discard();
            return Err(error);
        }
    };
    match file {
        Some((file, path)) => {
            if let Err(error) = write_report(file, &report.to_json()) {
                // The store is initialised now and cannot be again: the credentials must not be
                // lost with the file, so they go to stderr, as the first `serve` would print them.
                discard();
                eprintln!(
                    "keygate init: the store IS initialised, but writing {} failed: {error}. \
                     The credentials are below, and only here; keep them.\n",
                    path.display()
                );
                eprintln!("{}", report.to_text(&base));
                return Ok(ExitCode::FAILURE);
            }
            eprintln!(
                "keygate init: the root tenant, its owner and an owner token are in {} \
                 (readable by you alone); keep it safe, they are not shown again",
                path.display()
            );
        }
        None => {
            let printed = if json {
                format!("{}\n", report.to_json())
            } else {
                report.to_text(&base)
            };
            let mut stdout = std::io::stdout().lock();
            if let Err(error) = stdout
                .write_all(printed.as_bytes())
                .and_then(|()| stdout.flush())
            {
                // As with a file: the store cannot be initialised again, so the credentials
                // must not be lost with standard output.
                eprintln!(
                    "keygate init: the store IS initialised, but printing the credentials \
                     failed: {error}. They are below, and only here; keep them.\n"
                );
                eprintln!("{}", report.to_text(&base));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `path`, refusing one that exists (a symlink too, dangling or not), readable and
/// writable by its owner alone from the start.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes the report and waits until it is on disk: it is the only copy.
fn write_report(mut file: File, json: &str) -> std::io::Result<()> {
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

async fn serve(config: Config, email: &str, reload: Reload) -> anyhow::Result<ExitCode> {
    let listen = config.listen;
    raise_open_files_limit();
    let state = AppState::open(config, Arc::new(SystemClock)).await?;
    // Bound before an empty store is bootstrapped: a start that cannot listen (the address in
    // use) changes nothing, rather than making credentials it never prints.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}; nothing was changed"))?;
    let report = state.bootstrap_if_empty(email).await?;
    let shutdown = shutdown_signal()?;
    let _reloader = reload_on_hangup(state.clone(), reload)?;
    if let Some(report) = report {
        // Printed straight to stderr, not logged: log pipelines keep what they receive. After
        // binding, so it names the address that answers.
        let base = crate::bootstrap::local_base(listener.local_addr()?);
        eprintln!("{}", report.to_text(&base));
    }
    tracing::info!(address = %listener.local_addr()?, "keygate is listening");
    crate::run(listener, state, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Raises the open-files soft limit to the hard one: every connection holds a descriptor, and
/// the soft limit systemd and most shells give (1024) is a few hundred idle clients. The server
/// then caps its connections below what is raised (`connections.rs`).
fn raise_open_files_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok(before), Ok(now)) if now > before => {
            tracing::info!(from = before, to = now, "raised the open-files limit")
        }
        (_, Ok(now)) => tracing::info!(open_files = now, "the open-files limit"),
        (_, Err(error)) => {
            tracing::warn!(%error, "cannot raise the open-files limit; keeping it as it is")
        }
    }
}

/// Reads what can change without a restart again on SIGHUP: GitHub's leak-report keys, and from
/// the configuration loaded anew, the gateway's routes and the TLS certificate. Whatever cannot
/// be used keeps what was loaded before, and the log says why; connections are not touched.
fn reload_on_hangup(state: AppState, reload: Reload) -> std::io::Result<crate::AbortOnDrop> {
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        Ok(crate::AbortOnDrop(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match state.reload_github_keys() {
                    Ok(keys) => tracing::info!(keys, "reloaded GitHub's secret-scanning keys"),
                    Err(error) => {
                        tracing::error!(%error, "kept the keys loaded before: the file cannot be used")
                    }
                }
                match reload() {
                    Ok(config) => {
                        for kept in state.reload(&config) {
                            tracing::error!("{kept}");
                        }
                    }
                    Err(error) => tracing::error!(
                        %error,
                        "kept the gateway routes and TLS certificate: the configuration cannot be used"
                    ),
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = (state, reload);
        Ok(crate::AbortOnDrop(tokio::spawn(async {})))
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are registered before this returns, so a signal
/// that arrives as soon as the server says it is listening is not lost (or fatal).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        let terminate = terminate.recv();
        #[cfg(not(unix))]
        let terminate = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    })
}
