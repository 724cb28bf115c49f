//! `zones`: the example upstream API on its own, to run behind keygate.
//!
//! It believes the `X-Keygate-*` identity headers of every request, so it must only ever be
//! reachable by keygate: it refuses (exit code 2) to listen on anything but a loopback address.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use zones_example::{Zones, serve};

/// The example upstream API behind keygate: zones and their subnets.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on: a loopback address only, since the API trusts keygate's headers.
    #[arg(long, env = "ZONES_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The SQLite database: sqlite://PATH (created if missing) or sqlite::memory:.
    #[arg(
        long,
        env = "ZONES_DATABASE",
        default_value = "sqlite://zones-data/zones.db"
    )]
    database: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Checked before anything else happens, so a refused start leaves nothing behind.
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "zones: refusing to listen on {}: it is not a loopback address. The example trusts \
             the X-Keygate-* identity headers of every request, so only keygate, on this host, \
             may reach it; listen on 127.0.0.1 or [::1].",
            args.listen
        );
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let zones = match Zones::open(&args.database).await {
        Ok(zones) => zones,
        Err(error) => {
            eprintln!("zones: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("zones: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // The bound address, not the asked one: with port 0 the caller learns the port from here.
    let address = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(database = %args.database, "zones listening on http://{address}");
    match serve(listener, zones, stopped()).await {
        Ok(()) => {
            tracing::info!("zones stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("zones: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what a service manager sends).
async fn stopped() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a handler there is nothing to wait for: run until killed.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
