//! Boots keygate on port 0 over a fresh database on either store (a temporary SQLite file, or a
//! database in the shared throwaway PostgreSQL cluster), with a clock the test controls.

use std::sync::Arc;

use keygate_core::{Clock, ManualClock, Timestamp};
use keygate_server::AppState;
use keygate_server::config::Config;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const START: Timestamp = Timestamp::from_unix(1_795_000_000);

/// The store a test runs on: `on_every_backend!` (in `main.rs`) runs a test once on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database on `backend`; the directory keeps a SQLite file alive.
pub async fn database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("keygate.db").display()),
        Backend::Postgres => keygate_testkit::PgCluster::shared().create_database().await,
    }
}

pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    /// The bootstrap owner token.
    pub token: String,
    pub password: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    dir: Arc<tempfile::TempDir>,
}

pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client whose connections come from `address` (all of 127.0.0.0/8 is loopback on Linux).
pub fn client_from(address: &str) -> Client {
    Client::builder()
        .no_proxy()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

impl TestServer {
    /// Starts on a fresh database on `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with the default configuration changed by `configure`.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = database(backend, dir.path()).await;
        Self::start_at(url, dir, configure).await
    }

    /// Starts on the database at `url` (bootstrapping it).
    pub async fn start_at(
        url: String,
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = Arc::new(dir);
        let mut config = test_config(url);
        configure(&mut config);
        let mut server = Self::boot(config, dir, Arc::new(ManualClock::new(START))).await;
        let report = server
            .state
            .bootstrap_if_empty("owner@example.com")
            .await
            .unwrap()
            .unwrap();
        server.token = report.token;
        server.password = report.password;
        server
    }

    /// Another node on the same database, with its own cache and clock.
    pub async fn join(&self) -> Self {
        self.join_with(|_| {}).await
    }

    /// Another node on the same database, its configuration changed by `configure`.
    pub async fn join_with(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.state.config().clone();
        configure(&mut config);
        let mut node = Self::boot(
            config,
            self.dir.clone(),
            Arc::new(ManualClock::new(self.clock.now())),
        )
        .await;
        node.token = self.token.clone();
        node.password = self.password.clone();
        node
    }

    async fn boot(config: Config, dir: Arc<tempfile::TempDir>, clock: Arc<ManualClock>) -> Self {
        let address = std::net::SocketAddr::new(config.listen.ip(), 0);
        let state = AppState::open(config, clock.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(keygate_server::run(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: client(),
            clock,
            state,
            token: String::new(),
            password: String::new(),
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops this server gracefully and starts a new one on the same database file.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`Self::restart`] with the configuration changed by `configure` (a new catalog, say).
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.state.config().clone();
        configure(&mut config);
        self.shutdown().await;
        let mut server = Self::boot(config, self.dir.clone(), self.clock.clone()).await;
        server.token = std::mem::take(&mut self.token);
        server.password = std::mem::take(&mut self.password);
        server
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A JSON request authenticated with `token` (as a Bearer token).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.request(method, path).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Like [`Self::call`], expecting `status` and returning the JSON body.
    pub async fn expect(
        &self,
        status: u16,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let response = self.call(method.clone(), path, token, body).await;
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// Signs in; returns the session cookie's value.
    pub async fn login(&self, email: &str, password: &str) -> String {
        self.login_to(email, password, None).await
    }

    /// Signs in to `organization` (a tenant slug), for an address with accounts in several.
    pub async fn login_to(
        &self,
        email: &str,
        password: &str,
        organization: Option<&str>,
    ) -> String {
        let mut body = serde_json::json!({"email": email, "password": password});
        if let Some(organization) = organization {
            body["organization"] = organization.into();
        }
        let response = self
            .post("/v1/auth/login")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login as {email}");
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        cookie
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("keygate_session="))
            .unwrap()
            .to_owned()
    }

    /// `GET /v1/whoami` with the given headers.
    pub async fn whoami(&self, headers: &[(&str, &str)]) -> Response {
        let mut request = self.get("/v1/whoami");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn test_config(database_url: String) -> Config {
    Config {
        database_url,
        listen: "127.0.0.1:0".parse().unwrap(),
        shutdown_grace_seconds: 5,
        ..Config::default()
    }
}

/// Reads a problem response and checks what every problem must have.
pub async fn problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of a `{code}` problem"
    );
    let headers = response.headers().clone();
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let request_id = headers
        .get("x-request-id")
        .expect("every response has X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["instance"], request_id.as_str());
    assert_eq!(body["type"], format!("urn:keygate:problem:{code}"));
    assert!(body["title"].is_string());
    if status == 401 {
        assert!(
            headers.get("www-authenticate").is_some(),
            "a 401 carries WWW-Authenticate"
        );
    }
    if status >= 500 {
        assert!(
            // 502 and 504 name the route whose upstream failed: the client's own, not internal.
            body.get("detail").is_none() || (502..=504).contains(&status),
            "5xx leaks no detail: {body}"
        );
    }
    body
}

/// Asserts a 200 with a JSON body and returns it.
pub async fn ok_json(response: Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status.as_u16(), 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A program a test runs (a browser's driver, a proxy), in a process group of its own, so that
/// dropping it ends everything it started — Chromium's renderers, nginx's workers — even when the
/// test fails, and nothing is left running after the suite.
pub struct ProcessGroup {
    child: std::process::Child,
}

impl ProcessGroup {
    pub fn spawn(mut command: std::process::Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        Ok(Self {
            child: command.spawn()?,
        })
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The group's id is the leader's pid; `kill -- -pgid` signals every member.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
