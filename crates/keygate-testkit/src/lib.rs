//! Throwaway PostgreSQL clusters for keygate's tests: `initdb` on a temporary directory, a server
//! on a free port, never a shared or pre-existing one.
//!
//! PostgreSQL refuses to run as root; when the tests do, the cluster runs as the `postgres` user
//! (which Debian's `postgresql` package creates). The binaries are found in `PG_BIN`, else
//! the newest `/usr/lib/postgresql/*/bin`, else on `PATH`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The role the tests connect as (trust authentication, loopback only).
const ROLE: &str = "keygate";

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    server: Mutex<Option<Child>>,
    /// Keeps the directory for clusters owned by a test; the shared one is removed by its watchdog.
    _temp: Option<tempfile::TempDir>,
}

/// A test kit fails the test that uses it: panicking is how.
#[allow(clippy::panic)]
fn fail(what: impl std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL test cluster: {what}\n\
         The PostgreSQL tests need the server binaries (Debian: `apt-get install postgresql`), \
         or PG_BIN pointing at their directory."
    )
}

fn bin_dir() -> PathBuf {
    // Not a KEYGATE_ variable: keygate reads every one as its own configuration and refuses to
    // start on a key it does not know, so a developer who exported it could not run keygate.
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => PathBuf::new(), // rely on PATH
    }
}

/// Whether PostgreSQL's server binaries are where [`PgCluster`] looks for them (`PG_BIN`, else
/// the newest `/usr/lib/postgresql/*/bin`, else `PATH`).
fn installed() -> bool {
    let bin = bin_dir();
    let dirs: Vec<PathBuf> = if bin.as_os_str().is_empty() {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect())
            .unwrap_or_default()
    } else {
        vec![bin]
    };
    ["initdb", "postgres", "pg_isready"]
        .iter()
        .all(|program| dirs.iter().any(|dir| dir.join(program).is_file()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// For a test that needs PostgreSQL, at its start: whether it can go on. Without PostgreSQL's
/// server binaries it says so and returns `false`, for the test to return early and pass, as the
/// tests that need nginx or Chromium do: a developer without PostgreSQL still runs the rest of
/// the suite. Under CI (`CI` set) it fails instead, so the PostgreSQL tests cannot quietly stop
/// running.
pub fn postgres_or_skip() -> bool {
    if installed() {
        return true;
    }
    if in_ci() {
        fail("PostgreSQL not found, and CI must run the PostgreSQL tests");
    }
    eprintln!("PostgreSQL not found (install postgresql or set PG_BIN): skipped");
    false
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(format!("no free port: {e}")))
}

impl PgCluster {
    /// A new cluster owned by the caller; stopped and removed when dropped.
    pub fn start() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("keygate-pg-")
            .tempdir()
            .unwrap_or_else(|e| fail(format!("no temporary directory: {e}")));
        let mut cluster = Self::init(temp.path().to_path_buf());
        cluster._temp = Some(temp);
        cluster
    }

    /// One cluster shared by every test of this process, started on first use. A watchdog stops
    /// it and removes its directory when the process is gone.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("keygate-pg-shared-")
                .tempdir()
                .unwrap_or_else(|e| fail(format!("no temporary directory: {e}")))
                .keep();
            let cluster = Self::init(dir);
            cluster.watch(std::process::id());
            cluster
        })
    }

    fn init(dir: PathBuf) -> Self {
        let as_postgres = running_as_root();
        let cluster = Self {
            bin: bin_dir(),
            port: free_port(),
            as_postgres,
            server: Mutex::new(None),
            _temp: None,
            dir,
        };
        if as_postgres {
            cluster.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.dir),
            );
        }
        let data = cluster.data();
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            ROLE,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        cluster.run(&mut initdb);
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for a PostgreSQL binary, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let path = if path.is_absolute() {
            path
        } else {
            PathBuf::from(program)
        };
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command) {
        let output = command
            .output()
            .unwrap_or_else(|e| fail(format!("cannot run {command:?}: {e}")));
        if !output.status.success() {
            fail(format!(
                "{command:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }

    /// Starts the server (again, after [`Self::stop`]) and waits until it accepts connections.
    pub fn start_server(&self) {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if server.is_some() {
            return;
        }
        let log = std::fs::File::create(self.dir.join("server.log"))
            .unwrap_or_else(|e| fail(format!("cannot create the server log: {e}")));
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| fail(format!("cannot start postgres: {e}")));
        *server = Some(child);
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    ROLE,
                    "-q",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                fail(format!("postgres did not become ready:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (fast shutdown), as an outage would.
    pub fn stop(&self) {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = server.take() {
            if let Some(pid) = postmaster_pid(&self.data()) {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
            }
            let _ = child.wait();
        }
    }

    /// Kills the server when `pid` (this test process) is gone, then removes the directory.
    fn watch(&self, pid: u32) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             kill -INT $(head -n 1 '{data}/postmaster.pid' 2>/dev/null) 2>/dev/null; \
             sleep 3; rm -rf '{dir}'",
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "keygate_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| fail(format!("cannot connect: {e}")));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| fail(format!("cannot create database {name}: {e}")));
        let _ = admin.close().await;
        self.url(&name)
    }
}

/// Runs `sql` on the database at `url`: for tests that act behind keygate's back.
pub async fn execute(url: &str, sql: &str) {
    use sqlx::Connection;
    macro_rules! run_on {
        ($connection:ty) => {{
            let mut conn = <$connection>::connect(url)
                .await
                .unwrap_or_else(|e| fail(format!("cannot connect: {e}")));
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| fail(format!("`{sql}` failed: {e}")));
            let _ = conn.close().await;
        }};
    }
    if url.starts_with("sqlite:") {
        run_on!(sqlx::SqliteConnection)
    } else {
        run_on!(sqlx::PgConnection)
    }
}

fn postmaster_pid(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next().map(str::to_owned)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
