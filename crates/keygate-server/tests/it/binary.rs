//! The real `keygate` binary: init, the first serve, restarts, signals, and what reaches the log.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::connections::{connect_from, until_closed};
use crate::harness::client;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn keygate(&self) -> Command {
        self.command(env!("CARGO_BIN_EXE_keygate"))
    }

    /// `program` in this directory, with keygate's environment and nothing else.
    fn command(&self, program: &str) -> Command {
        command_in(program, self.0.path(), "sqlite://data/keygate.db")
    }
}

/// The `keygate` binary run in `dir` on `database_url`, listening on a port of its choosing, with
/// no environment but `PATH`: add the arguments (and any `KEYGATE_*` setting).
pub(crate) fn keygate_in(dir: &std::path::Path, database_url: &str) -> Command {
    command_in(env!("CARGO_BIN_EXE_keygate"), dir, database_url)
}

fn command_in(program: &str, dir: &std::path::Path, database_url: &str) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYGATE_DATABASE_URL", database_url)
        .env("KEYGATE_LISTEN", "127.0.0.1:0");
    command
}

impl Dir {
    /// Every byte keygate wrote to its data directory.
    fn stored_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.0.path().join("data")).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        bytes
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A running `keygate serve`, its address read from its log.
pub(crate) struct Serve {
    child: Child,
    pub(crate) base: String,
    stderr: BufReader<std::process::ChildStderr>,
    log: String,
}

impl Serve {
    fn start(dir: &Dir, extra_env: &[(&str, &str)]) -> Self {
        let mut command = dir.keygate();
        command.envs(extra_env.iter().copied()).arg("serve");
        Self::spawn(command)
    }

    /// Runs `command`, which must end in `keygate serve`, and waits for it to listen.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            assert!(Instant::now() < deadline, "keygate did not start:\n{log}");
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "keygate exited:\n{log}"
            );
            log.push_str(&line);
            // `address=…` in text, `"address":"…"` in JSON.
            if let Some(at) = line.find("address=").or_else(|| line.find("\"address\":")) {
                let address = line[at..]
                    .trim_start_matches("address=")
                    .trim_start_matches("\"address\":")
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '}')
                    .next()
                    .unwrap();
                break format!("http://{}", address.trim_matches('"'));
            }
        };
        Self {
            child,
            base,
            stderr,
            log,
        }
    }

    /// Its process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGHUP: read what can be reloaded again.
    pub(crate) fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The address it listens on.
    fn address(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    /// SIGKILL: no shutdown, no flush, nothing finished. (Dropping a `Serve` does the same, so a
    /// failed test leaves no server behind.)
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status and everything logged.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        self.stderr.read_to_string(&mut self.log).unwrap();
        (exit, std::mem::take(&mut self.log))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Already stopped or killed: nothing to do, and the error says only that.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn init_prints_the_bootstrap_json_once_and_refuses_a_second_time() {
    let dir = Dir::new();
    let output = dir.keygate().args(["init", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is exactly JSON");
    assert_eq!(report["tenant"]["slug"], "root");
    assert!(report["tenant"]["id"].as_str().unwrap().starts_with("tnt_"));
    assert!(report["tenant"]["parent_id"].is_null());
    assert_eq!(report["tenant"]["status"], "active");
    assert!(report["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(report["user"]["email"], "admin@keygate.local");
    assert!(report["password"].as_str().unwrap().len() >= 12);
    assert!(
        report["token"]
            .as_str()
            .unwrap()
            .starts_with("kg_service_live_")
    );

    let again = dir.keygate().args(["init", "--json"]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty(), "no second set of credentials");
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("already initialised"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
}

#[tokio::test]
async fn init_output_writes_the_bootstrap_json_to_a_new_file_for_its_owner_alone() {
    let dir = Dir::new();
    let output = dir
        .keygate()
        .args(["init", "--output", "bootstrap.json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.is_empty(),
        "the credentials go to the file only"
    );
    let path = dir.0.path().join("bootstrap.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report["tenant"]["slug"], "root");
    assert_eq!(report["user"]["email"], "admin@keygate.local");
    assert!(report["password"].as_str().unwrap().len() >= 12);
    let token = report["token"].as_str().unwrap();
    assert!(token.starts_with("kg_service_live_"));
    // They are the store's: the token works.
    let serve = Serve::start(&dir, &[]);
    let whoami = client()
        .get(format!("{}/v1/whoami", serve.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    serve.stop();

    // A second init, to the same file or a new one, refuses: the store is initialised.
    let before = std::fs::read(&path).unwrap();
    let again = dir
        .keygate()
        .args(["init", "--output", "other.json"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("already initialised"), "{message}");
    assert!(
        !dir.0.path().join("other.json").exists(),
        "no empty file left"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn init_output_refuses_an_existing_file_before_touching_the_store() {
    let dir = Dir::new();
    let kept = b"{\"token\": \"the only copy of an earlier init\"}\n";
    let path = dir.0.path().join("bootstrap.json");
    std::fs::write(&path, kept).unwrap();
    // A symlink is refused as well, dangling or not, and what it points to is left alone.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&path, dir.0.path().join("link.json")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("nowhere.json", dir.0.path().join("dangling.json")).unwrap();

    for file in ["bootstrap.json", "link.json", "dangling.json"] {
        if !cfg!(unix) && file != "bootstrap.json" {
            continue;
        }
        let refused = dir
            .keygate()
            .args(["init", "--output", file])
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(1), "{file}");
        assert!(refused.stdout.is_empty(), "{file}");
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains(file), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), kept, "{file}: changed");
    }
    assert!(!dir.0.path().join("nowhere.json").exists());
    // Not even the store was opened, and it can still be initialised.
    assert!(!dir.0.path().join("data").exists(), "the store was created");
    let init = dir
        .keygate()
        .args(["init", "--output", "new.json"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), kept);
}

#[test]
fn the_readme_initialises_with_output_not_a_shell_redirection() {
    let readme = include_str!("../../../../README.md");
    let five_minutes = readme
        .split("## Five minutes with curl")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    // The commands it has the reader run, not its prose.
    let inits: Vec<&str> = five_minutes
        .lines()
        .filter(|line| line.starts_with("./target/release/keygate init"))
        .collect();
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert!(
        inits[0].starts_with("./target/release/keygate init --output bootstrap.json "),
        "{}",
        inits[0]
    );
    assert!(!inits[0].contains('>'), "{}", inits[0]);
}

#[test]
fn the_first_serve_bootstraps_on_stderr_and_the_next_does_not() {
    let dir = Dir::new();
    let serve = Serve::start(&dir, &[]);
    let base = serve.base.clone();
    let (status, log) = serve.stop();
    assert!(status.success(), "SIGTERM is a clean stop:\n{log}");
    assert!(log.contains("  token:    kg_service_live_"), "{log}");
    assert!(log.contains("  password: "), "{log}");
    assert!(
        log.contains(&format!("Sign in to the console at {base}/ as ")),
        "the address that answers, not a placeholder:\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");

    let serve = Serve::start(&dir, &[]);
    let (status, log) = serve.stop();
    assert!(status.success());
    assert!(
        !log.contains("kg_service_live_"),
        "bootstrap happens once:\n{log}"
    );
}

/// A first start that cannot listen (the address taken) bootstraps nothing: credentials that
/// were never printed would leave a store nobody can sign in to. The next start, on a free
/// address, bootstraps and prints them.
#[test]
fn a_first_serve_that_cannot_listen_changes_nothing() {
    let dir = Dir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = dir
        .keygate()
        .env("KEYGATE_LISTEN", &address)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("cannot listen"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(!message.contains("kg_service_live_"), "{message}");
    drop(taken);

    let serve = Serve::start(&dir, &[]);
    let (status, log) = serve.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("  token:    kg_service_live_"), "{log}");
}

/// `init` whose standard output cannot be written (a full disk, a closed pipe) has still
/// initialised the store: the credentials go to standard error, never lost, and it fails.
#[cfg(target_os = "linux")]
#[test]
fn init_whose_output_fails_keeps_the_credentials_on_stderr() {
    let dir = Dir::new();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = dir
        .keygate()
        .args(["init", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "a failure, not a panic");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("IS initialised"), "{message}");
    assert!(
        message.contains("  token:    kg_service_live_"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
}

#[tokio::test]
async fn every_request_has_its_access_line_in_text_or_json_unless_turned_off() {
    let dir = Dir::new();
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    let token = report["token"].as_str().unwrap().to_owned();
    for (format, filter) in [
        ("text", "info"),
        ("json", "info"),
        ("text", "info,keygate_server::front=warn"),
    ] {
        let serve = Serve::start(
            &dir,
            &[("KEYGATE_LOG__FORMAT", format), ("RUST_LOG", filter)],
        );
        let http = client();
        let forward_auth = format!("{}/v1/forward-auth", serve.base);
        for _ in 0..100 {
            let allowed = http.get(&forward_auth).bearer_auth(&token).send().await;
            assert_eq!(allowed.unwrap().status(), 200);
        }
        let refused = http.get(&forward_auth).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let verify = http
            .post(format!("{}/v1/verify", serve.base))
            .bearer_auth(&token)
            .json(&json!({"credential": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(verify.status(), 200);
        let whoami = http
            .get(format!("{}/v1/whoami?key=x", serve.base))
            .header("x-request-id", "mine-1")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(whoami.status(), 200);
        let (exit, log) = serve.stop();
        assert!(exit.success(), "{log}");
        assert!(!log.contains(&token));
        let served: Vec<&str> = log.lines().filter(|l| l.contains("served")).collect();
        if filter.contains("front=warn") {
            assert!(served.is_empty(), "{log}");
            continue;
        }
        // Every request, in the order answered, all written by the end.
        assert_eq!(served.len(), 103, "{log}");
        let fields: Vec<(String, String, u64, String)> = served
            .iter()
            .map(|line| match format {
                "json" => {
                    let line: Value = serde_json::from_str(line).unwrap();
                    let span = &line["span"];
                    (
                        span["method"].as_str().unwrap().to_owned(),
                        span["path"].as_str().unwrap().to_owned(),
                        line["fields"]["status"].as_u64().unwrap(),
                        span["id"].as_str().unwrap().to_owned(),
                    )
                }
                _ => {
                    let field = |name: &str| {
                        let at = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
                        line[at..].split([' ', '}']).next().unwrap().to_owned()
                    };
                    let status = field("status").parse().unwrap();
                    let id = line[line.find("{id=").unwrap() + 4..]
                        .split(' ')
                        .next()
                        .unwrap()
                        .to_owned();
                    (field("method"), field("path").replace('"', ""), status, id)
                }
            })
            .collect();
        assert!(fields[..100].iter().all(|(method, path, status, id)| {
            method == "GET"
                && path == "/v1/forward-auth"
                && *status == 200
                && id.starts_with("req_")
        }));
        assert_eq!(fields[100].2, 401);
        assert_eq!((&*fields[101].0, &*fields[101].1), ("POST", "/v1/verify"));
        // The path without its query, the caller's request id.
        assert_eq!(
            fields[102],
            ("GET".into(), "/v1/whoami".into(), 200, "mine-1".into())
        );
    }
}

#[tokio::test]
async fn neither_the_log_nor_the_store_ever_holds_a_credential_or_the_password() {
    let dir = Dir::new();
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    let token = report["token"].as_str().unwrap().to_owned();
    let password = report["password"].as_str().unwrap().to_owned();

    let serve = Serve::start(&dir, &[("RUST_LOG", "trace")]);
    let http = client();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("root:{token}")
        )
    );
    let mut flipped = token.clone();
    flipped.replace_range(20..21, if &token[20..21] == "A" { "B" } else { "A" });
    for (name, value) in [
        ("authorization", format!("Bearer {token}")),
        ("authorization", basic),
        ("apikey", token.clone()),
        ("x-api-key", token.clone()),
        ("cookie", format!("api_access_token={token}")),
        ("authorization", format!("Bearer {flipped}")),
    ] {
        let response = http
            .get(format!("{}/v1/whoami?key={token}", serve.base))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success() || response.status() == 401);
    }
    let verify = http
        .post(format!("{}/v1/verify", serve.base))
        .header("apikey", &token)
        .json(&serde_json::json!({"credential": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    // An OAuth client's secret, and what it is issued, by each way they travel.
    let client: Value = http
        .post(format!("{}/v1/oauth/clients", serve.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "c", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, client_secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap().to_owned(),
    );
    let issued: Value = http
        .post(format!("{}/v1/oauth/token", serve.base))
        .basic_auth(id, Some(&client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let renewed: Value = http
        .post(format!("{}/v1/oauth/token", serve.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", id),
            ("client_secret", &client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = renewed["access_token"].as_str().unwrap().to_owned();
    let whoami = http
        .get(format!("{}/v1/whoami", serve.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);

    let (status, log) = serve.stop();
    assert!(status.success());
    assert!(
        log.contains("/v1/whoami"),
        "the requests were logged:\n{log}"
    );
    let body = &token[token.len() - 36..];
    let signature = access.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("token", token.as_str()),
        ("token body", body),
        ("password", &password),
        ("client secret", &client_secret),
        ("refresh token", &refresh),
        ("access token signature", signature),
    ] {
        assert!(!log.contains(secret), "the log holds the {what}:\n{log}");
    }
    assert!(
        !log.contains(&flipped[flipped.len() - 36..]),
        "nor a refused credential"
    );

    let stored = dir.stored_bytes();
    assert!(
        contains(&stored, "admin@keygate.local"),
        "the check reads real data"
    );
    for secret in [
        token.as_str(),
        body,
        &password,
        &client_secret,
        &refresh,
        signature,
    ] {
        assert!(!contains(&stored, secret));
    }
}

#[test]
fn config_check_names_unknown_keys_and_masks_secrets() {
    let dir = Dir::new();
    let bad = dir
        .keygate()
        .env("KEYGATE_LISTN", "x")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("unknown key `KEYGATE_LISTN` in the environment"),
        "{message}"
    );
    // In a file: the key as the file spells it (no profile), the file, and the keys known there.
    std::fs::write(dir.0.path().join("bad.toml"), "[limits]\nbody_byte = 1\n").unwrap();
    let bad = dir
        .keygate()
        .args(["--config", "bad.toml", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("unknown key `limits.body_byte` in bad.toml; the keys there are: "),
        "{message}"
    );
    assert!(message.contains("body_bytes"), "{message}");
    assert!(!message.contains("default."), "{message}");

    let good = dir
        .keygate()
        .env("KEYGATE_DATABASE_URL", "postgres://kg:hunter2@db/kg")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(good.status.success());
    let shown = String::from_utf8_lossy(&good.stdout);
    assert!(shown.contains("postgres://kg:***@db/kg"), "{shown}");
    assert!(!shown.contains("hunter2"));
}

#[test]
fn migrate_brings_an_empty_database_up_to_date() {
    let dir = Dir::new();
    let output = dir.keygate().arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.0.path().join("data/keygate.db").exists());
    // Migrating does not bootstrap: init still can.
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    assert!(init.status.success());
}

/// The peak resident memory of a process so far, in bytes (`VmHWM`).
pub(crate) fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn the_audit_export_streams_100_000_events_in_bounded_memory() {
    let dir = Dir::new();
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    let token = report["token"].as_str().unwrap();
    let tenant = report["tenant"]["id"].as_str().unwrap();
    let url = format!("sqlite://{}/data/keygate.db", dir.0.path().display());
    // 100 000 events of about 600 bytes each once exported: ~60 MB.
    keygate_testkit::execute(
        &url,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO audit_events (id, time, tenant_id, actor_type, actor_id, token_id, action,
                 target_type, target_id, outcome, status, ip, user_agent, request_id, scope_path)
             SELECT printf('evt_0000%018d', i), 1795000000 + i, '{tenant}', 'service_token',
                 'tok_x', 'tok_x', 'token.create', 'token', 'tok_' || i, 'success', 201,
                 '203.0.113.7', printf('%.300c', 'a'), 'req_' || i, '/{tenant}/'
             FROM n"
        ),
    )
    .await;

    let serve = Serve::start(&dir, &[]);
    let pid = serve.child.id();
    let client = client();
    let export = |client: &reqwest::Client| {
        client
            .get(format!("{}/v1/audit-events/export", serve.base))
            .bearer_auth(token)
            .send()
    };
    // A first, small request so the baseline includes what any request costs.
    let response = client
        .get(format!("{}/v1/audit-events?limit=1", serve.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let before = peak_memory(pid);

    let mut response = export(&client).await.unwrap();
    assert_eq!(response.status(), 200);
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut last = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        last = chunk.to_vec();
    }
    let grown = peak_memory(pid).saturating_sub(before);
    // The bootstrap's own event and the 100 000, oldest last.
    assert_eq!(lines, 100_001);
    assert!(String::from_utf8_lossy(&last).contains("\"action\":\"token.create\""));
    assert!(bytes > 50_000_000, "{bytes} bytes exported");
    assert!(
        grown < 16 * 1024 * 1024,
        "the server grew by {grown} bytes exporting {bytes}: the export is not streamed"
    );
    serve.stop();
}

#[test]
fn oauth_rotate_key_prints_the_new_key_and_keeps_the_old_one() {
    let dir = Dir::new();
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    assert!(init.status.success());
    let rotate = || {
        let output = dir
            .keygate()
            .args(["oauth", "rotate-key"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let first = rotate();
    let second = rotate();
    assert_eq!(first.len(), 43, "an RFC 7638 thumbprint: {first}");
    assert_ne!(first, second);
}

/// `keygate init --json` in `dir`: the owner token.
fn init(dir: &Dir) -> String {
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    assert!(init.status.success());
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    report["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn under_a_low_open_files_limit_one_client_holding_more_connections_starves_nobody() {
    let dir = Dir::new();
    let owner = init(&dir);
    // The hard limit too, so keygate cannot raise the soft one past it.
    let mut command = dir.command("sh");
    command
        .args([
            "-c",
            r#"ulimit -n 256 && exec "$0" serve"#,
            env!("CARGO_BIN_EXE_keygate"),
        ])
        // Held connections stay held for the test's length.
        .env("KEYGATE_SERVER__HEADER_READ_TIMEOUT_MS", "120000");
    let serve = Serve::spawn(command);
    let at = serve.address();
    // 256 descriptors, less 64 and three for each of the store's 16 connections: 144 at most,
    // 36 of them from one address. 300 from one address are more than the process may open.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(connect_from("127.0.0.2", at).await);
    }
    for refused in &mut held[36..] {
        let said = until_closed(refused, Duration::from_secs(10)).await;
        assert!(said.starts_with("HTTP/1.1 503 "), "{said}");
    }
    let http = client();
    for _ in 0..3 {
        let response = http
            .get(format!("{}/v1/whoami", serve.base))
            .bearer_auth(&owner)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    drop(held);
    let (status, log) = serve.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("open_files=256"), "{log}");
    assert!(
        log.contains("server.max_connections lowered") && log.contains("max_connections=144"),
        "{log}"
    );
    assert!(log.contains("refusing connections"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

#[tokio::test]
async fn every_acknowledged_token_survives_a_kill_9() {
    let dir = Dir::new();
    let owner = init(&dir);
    let serve = Serve::start(&dir, &[]);
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (base, owner, acknowledged) =
                (serve.base.clone(), owner.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let http = client();
                for n in 0.. {
                    let name = format!("w{writer}-{n}");
                    let body = json!({"kind": "service", "name": name, "role": "viewer"});
                    let sent = http
                        .post(format!("{base}/v1/tokens"))
                        .bearer_auth(&owner)
                        .json(&body)
                        .send()
                        .await;
                    // Once the server is gone, the request fails: that writer is done.
                    let Ok(response) = sent else { return };
                    assert_eq!(response.status(), 201, "before the kill, writes succeed");
                    // Acknowledged only once the whole answer, with the secret, has arrived.
                    let Ok(created) = response.json::<Value>().await else {
                        return;
                    };
                    let id = created["id"].as_str().unwrap().to_owned();
                    let secret = created["secret"].as_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().push((id, secret));
                }
            })
        })
        .collect();
    // Killed mid-flight, once enough were acknowledged to make the check mean something.
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < 60 {
        assert!(Instant::now() < deadline, "the writers are stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    serve.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let serve = Serve::start(&dir, &[]);
    let http = client();
    let mut listed = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/tokens?kind=service&limit=500", serve.base);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for token in page["data"].as_array().unwrap() {
            listed.insert(token["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for (id, secret) in &acknowledged {
        assert!(listed.contains(id), "{id} was acknowledged but is gone");
        let whoami = http
            .get(format!("{}/v1/whoami", serve.base))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        assert_eq!(whoami.status(), 200, "{id} does not work after the restart");
    }
    let (status, log) = serve.stop();
    assert!(status.success(), "{log}");
}

/// Usage counted in memory is written at shutdown: SIGTERM right after the requests, long before
/// the next batch is due, and the next process reads every one of them.
#[tokio::test]
async fn a_sigterm_loses_no_counted_request() {
    let dir = Dir::new();
    let init = dir.keygate().args(["init", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&init.stdout).unwrap();
    let owner = report["token"].as_str().unwrap().to_owned();
    let http = client();

    let serve = Serve::start(&dir, &[]);
    let made: Value = http
        .post(format!("{}/v1/tokens", serve.base))
        .bearer_auth(&owner)
        .json(&json!({"kind": "service", "name": "counted", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (secret, id) = (
        made["secret"].as_str().unwrap(),
        made["id"].as_str().unwrap(),
    );
    for _ in 0..37 {
        let whoami = http
            .get(format!("{}/v1/whoami", serve.base))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        assert_eq!(whoami.status(), 200);
    }
    let (status, log) = serve.stop();
    assert!(status.success(), "{log}");

    let serve = Serve::start(&dir, &[]);
    let read: Value = http
        .get(format!(
            "{}/v1/usage?granularity=day&credential_id={id}&group_by=outcome",
            serve.base
        ))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serve.stop();
    // One day bucket, or two if the test ran across midnight (UTC).
    let buckets = read["data"].as_array().unwrap();
    assert!(buckets.iter().all(|b| b["outcome"] == "valid"), "{read}");
    let total: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 37, "{read}");
}
