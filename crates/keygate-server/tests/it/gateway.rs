//! keygate as the gateway itself (API.md §16), in front of the seeds' zones API
//! (`examples/zones`) and of an upstream written here that answers with what it received, so
//! the tests see exactly what an API behind keygate would: the identity keygate vouches for and
//! never a credential.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::IntoResponse;
use keygate_core::routes::RouteSpec;
use reqwest::{Client, Method};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, client, ok_json, problem};

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An API on loopback: records every request; `/slow` answers after three seconds, `/upload`
/// counts a body as it streams in, `/download?bytes=N` streams N bytes out, `/refuse` is the
/// API's own 403; anything else echoes the request.
struct Upstream {
    address: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let record = record.clone();
            async move { answer(request, &record).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn answer(request: Request, record: &Mutex<Vec<Seen>>) -> axum::response::Response {
    let seen = Seen {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into(),
                )
            })
            .collect(),
    };
    record.lock().unwrap().push(seen.clone());
    let path = request.uri().path().to_owned();
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return "slow but here".into_response();
    }
    if path.ends_with("/upload") {
        use futures_util::StreamExt;
        let mut body = request.into_body().into_data_stream();
        let mut bytes = 0usize;
        while let Some(chunk) = body.next().await {
            bytes += chunk.unwrap().len();
        }
        return axum::Json(json!({"bytes": bytes})).into_response();
    }
    if path.ends_with("/download") {
        let query = request.uri().query().unwrap_or_default().to_owned();
        let total: usize = query.trim_start_matches("bytes=").parse().unwrap();
        return Body::from_stream(chunks(total)).into_response();
    }
    if path.ends_with("/refuse") {
        return (
            axum::http::StatusCode::FORBIDDEN,
            [
                ("content-type", "text/plain"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
            ],
            "the API's own refusal",
        )
            .into_response();
    }
    let headers: BTreeMap<&str, &str> = seen
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    axum::Json(json!({"method": seen.method, "uri": seen.uri, "headers": headers})).into_response()
}

/// `total` bytes in 64 KiB chunks, made as they are asked for.
fn chunks(
    total: usize,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    const CHUNK: usize = 64 * 1024;
    futures_util::stream::unfold(0usize, move |sent| async move {
        (sent < total).then(|| {
            let n = CHUNK.min(total - sent);
            (Ok(vec![b'z'; n]), sent + n)
        })
    })
}

fn route(prefix: &str, upstream: &str) -> RouteSpec {
    RouteSpec {
        prefix: prefix.into(),
        upstream: upstream.into(),
        strip_prefix: false,
        require: BTreeMap::new(),
        cost: 1,
        timeout_ms: 30_000,
        public: false,
    }
}

fn zones_require() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("GET".to_owned(), vec!["zones:read".to_owned()]),
        ("POST".to_owned(), vec!["zones:write".to_owned()]),
        ("DELETE".to_owned(), vec!["zones:write".to_owned()]),
    ])
}

async fn service_token(server: &TestServer, role: &str, as_tenant: Option<&str>) -> String {
    let mut request = server
        .post("/v1/tokens")
        .bearer_auth(&server.token)
        .json(&json!({"kind": "service", "name": format!("{role} token"), "role": role}));
    if let Some(tenant) = as_tenant {
        request = request.header("as-tenant", tenant);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    made["secret"].as_str().unwrap().to_owned()
}

async fn whoami(server: &TestServer, token: &str) -> Value {
    ok_json(server.call(Method::GET, "/v1/whoami", token, None).await).await
}

#[tokio::test]
async fn the_upstream_sees_keygates_identity_and_never_a_credential() {
    let upstream = Upstream::start().await;
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.permissions = vec!["zones:read".into(), "zones:write".into()];
        let mut api = route("/api", &format!("{}/base", upstream.url()));
        api.strip_prefix = true;
        api.require = zones_require();
        c.gateway.routes = vec![api, route("/api/v2", &upstream.url())];
    })
    .await;
    let token = service_token(&server, "viewer", None).await;
    let me = whoami(&server, &token).await;

    let response = client()
        .get(format!("{}/api/zones/1?expand=subnets&x=%2F", server.base))
        .header("Authorization", format!("token {token}"))
        .header("X-Keygate-Tenant-Id", "tnt_forged")
        .header("X-Keygate-Permissions", "*")
        .header("X-Keygate-Require", "")
        .header("X-Forwarded-For", "198.51.100.7")
        .header("Forwarded", "for=198.51.100.7")
        .header("Cookie", format!("theme=dark; api_access_token={token}"))
        .header("Connection", "X-Hop")
        .header("X-Hop", "secret to the hop")
        .header("X-Request-Id", "client-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri, "/base/zones/1?expand=subnets&x=%2F",
        "prefix stripped, query kept"
    );
    for place in [
        "authorization",
        "apikey",
        "x-api-key",
        "forwarded",
        "x-hop",
        "x-keygate-require",
    ] {
        assert_eq!(
            seen.header(place),
            None,
            "{place} reached the upstream: {seen:?}"
        );
    }
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(&token)),
        "the credential reached the upstream: {seen:?}"
    );
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    assert_eq!(
        seen.all("x-keygate-tenant-id"),
        [me["organization"]["id"].as_str().unwrap()]
    );
    assert_eq!(
        seen.header("x-keygate-acting-tenant-id"),
        me["organization"]["id"].as_str()
    );
    assert!(
        seen.header("x-keygate-credential-id")
            .unwrap()
            .starts_with("tok_")
    );
    assert!(seen.header("x-keygate-principal-id").is_some());
    let permissions = seen.header("x-keygate-permissions").unwrap();
    assert!(
        permissions.split(',').any(|p| p == "zones:read"),
        "{permissions}"
    );
    assert!(
        !permissions.split(',').any(|p| p == "zones:write"),
        "{permissions}"
    );
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "a client's own is not believed"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let keygate = server.base.trim_start_matches("http://");
    assert_eq!(seen.header("x-forwarded-host"), Some(keygate));
    assert_eq!(seen.header("host"), Some(upstream.address.as_str()));
    assert_eq!(seen.header("x-request-id"), Some("client-chosen-1"));

    // The longest prefix wins; not stripped there.
    let response = client()
        .get(format!("{}/api/v2/things", server.base))
        .header("apikey", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().uri, "/api/v2/things");

    // The API's own answers pass as they are: not made into problems, not audited as refusals,
    // without the hop-by-hop headers it named.
    let response = client()
        .get(format!("{}/api/refuse", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert!(response.headers().get("x-hop").is_none());
    assert!(response.headers().get("x-request-id").is_some());
    assert_eq!(response.text().await.unwrap(), "the API's own refusal");
    server.state.flush_refusals().await;
    let refusals = ok_json(
        server
            .call(
                Method::GET,
                "/v1/audit-events?action=access.denied",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    assert_eq!(refusals["data"].as_array().unwrap().len(), 0, "{refusals}");

    // A path the upstream could resolve into another route's is refused before it leaves
    // (sent raw: HTTP clients resolve dot segments themselves).
    let before = upstream.count();
    for path in ["/api/%2e%2E/v1/tokens", "/api/../admin", "/api/./x"] {
        let status = raw_status(keygate, path, &token).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(upstream.count(), before);
}

/// The status keygate answers `GET path` with, the request written byte for byte.
async fn raw_status(address: &str, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn each_method_needs_what_the_route_requires() {
    let upstream = Upstream::start().await;
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.permissions = vec!["zones:read".into(), "zones:write".into()];
        let mut zones = route("/zones", &upstream.url());
        zones.require = zones_require();
        zones.cost = 5;
        let mut status = route("/status", &upstream.url());
        status.public = true;
        c.gateway.routes = vec![zones, status];
    })
    .await;
    let reader = service_token(&server, "viewer", None).await;
    let writer = service_token(&server, "admin", None).await;
    let at = |path: &str| format!("{}{path}", server.base);

    let get = client()
        .get(at("/zones"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let post = client()
        .post(at("/zones"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let before = upstream.count();
    let refused = client()
        .post(at("/zones"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let body = problem(refused, 403, "forbidden").await;
    assert_eq!(body["missing_permissions"], json!(["zones:write"]));
    let anonymous = client().get(at("/zones/1")).send().await.unwrap();
    problem(anonymous, 401, "unauthenticated").await;
    let unknown = client()
        .get(at("/zones"))
        .bearer_auth("kg_live_nothing")
        .send()
        .await
        .unwrap();
    problem(unknown, 401, "unauthenticated").await;
    let put = client()
        .put(at("/zones/1"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(put.headers()["allow"], "DELETE, GET, POST, HEAD");
    problem(put, 405, "method-not-allowed").await;
    assert_eq!(
        upstream.count(),
        before,
        "no refused request reached the upstream"
    );

    // A public route takes no credential, and still passes none on.
    let public = client()
        .get(at("/status"))
        .header("X-Keygate-Tenant-Id", "tnt_forged")
        .header("apikey", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-keygate-tenant-id"), None);
    assert_eq!(seen.header("apikey"), None);

    // Refusals are audited as forward-auth's are; admitted requests are counted in usage.
    server.state.flush_refusals().await;
    let refusals = ok_json(
        server
            .call(
                Method::GET,
                "/v1/audit-events?action=access.denied",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    assert!(
        !refusals["data"].as_array().unwrap().is_empty(),
        "{refusals}"
    );
    server.state.flush_usage().await;
    let usage = ok_json(
        server
            .call(
                Method::GET,
                "/v1/usage?granularity=day",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    let counted = usage["data"][0]["count"].as_u64().unwrap_or_default();
    assert!(counted >= 3, "the admitted requests are counted: {usage}");

    let metrics = client()
        .get(at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keygate_gateway_requests_total{route=\"/zones\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_gateway_requests_total{route=\"/zones\",status=\"403\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_gateway_upstream_seconds_count{route=\"/zones\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upstream_down_is_502_and_a_slow_one_504() {
    let upstream = Upstream::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        let mut slow = route("/slow", &upstream.url());
        slow.timeout_ms = 300;
        c.gateway.routes = vec![
            route("/down", &format!("http://{closed}")),
            slow,
            route("/zones", &upstream.url()),
        ];
    })
    .await;
    let token = service_token(&server, "viewer", None).await;
    // A request the upstream never served costs nothing: a quota of two outlasts three failures.
    let made = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(
                json!({"kind": "service", "name": "metered", "role": "viewer",
                        "quota": {"limit": 2, "period": "day"}}),
            ),
        )
        .await;
    let metered = made["secret"].as_str().unwrap();
    for _ in 0..3 {
        let down = client()
            .get(format!("{}/down/zones", server.base))
            .bearer_auth(metered)
            .send()
            .await
            .unwrap();
        problem(down, 502, "upstream-unavailable").await;
    }
    let served = client()
        .get(format!("{}/zones", server.base))
        .bearer_auth(metered)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-keygate-quota-remaining"], "1");
    let down = client()
        .get(format!("{}/down/zones", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body = problem(down, 502, "upstream-unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("/down"), "{body}");

    let started = Instant::now();
    let slow = client()
        .get(format!("{}/slow", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    let body = problem(slow, 504, "upstream-timeout").await;
    assert!(
        body["detail"].as_str().unwrap().contains("300 ms"),
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
}

/// The seeds' zones API (`examples/zones`) behind keygate, as the README walks through it.
#[tokio::test]
async fn the_zones_api_behind_keygate() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_example::Zones::open(&format!(
        "sqlite://{}",
        dir.path().join("zones.db").display()
    ))
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let zones_at = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(zones_example::serve(
        listener,
        zones,
        std::future::pending(),
    ));
    // The README's configuration, as written, but for the example's address.
    let documented = readme_config().replace("http://127.0.0.1:9000", &zones_at);
    let documented: keygate_server::config::Config = toml::from_str(&documented).unwrap();
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.permissions = documented.permissions;
        c.gateway = documented.gateway;
    })
    .await;
    let child = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Beta"})),
        )
        .await;
    let beta = child["tenant"]["id"].as_str().unwrap().to_owned();
    let alpha_writer = service_token(&server, "admin", None).await;
    let alpha_reader = service_token(&server, "viewer", None).await;
    let beta_writer = service_token(&server, "admin", Some(&beta)).await;
    let http = client();
    let call = |token: &str, method: Method, path: &str, body: Option<Value>| {
        // The seed's own spelling of the header.
        let mut request = http
            .request(method, format!("{}{path}", server.base))
            .header("Authorization", format!("Token {token}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };

    let made = call(
        &alpha_writer,
        Method::POST,
        "/zones",
        Some(json!({"name": "edge"})),
    )
    .await
    .unwrap();
    assert_eq!(made.status(), 201);
    let zone: Value = made.json().await.unwrap();
    let zone_id = zone["id"].as_i64().unwrap();
    let subnets = format!("/zones/{zone_id}/subnets");
    let added = call(
        &alpha_writer,
        Method::POST,
        &subnets,
        Some(json!({"data": [{"subnet": "192.0.2.0/24", "description": "edge"}, {"subnet": "2001:db8::1"}]})),
    )
    .await
    .unwrap();
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["data"][1]["subnet"], "2001:db8::1/128");

    // Reading takes zones:read; writing zones:write; nothing without a credential.
    let listed = call(&alpha_reader, Method::GET, &subnets, None)
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let refused = call(
        &alpha_reader,
        Method::POST,
        &subnets,
        Some(json!({"data": [{"subnet": "198.51.100.0/24"}]})),
    )
    .await
    .unwrap();
    problem(refused, 403, "forbidden").await;
    let anonymous = http
        .get(format!("{}{subnets}", server.base))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "unauthenticated").await;

    // Another tenant neither sees the zone nor can claim it by naming itself in a header.
    let hidden = call(
        &beta_writer,
        Method::GET,
        &format!("/zones/{zone_id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(hidden.status(), 404);
    let forged = http
        .get(format!("{}/zones/{zone_id}", server.base))
        .header("Authorization", format!("token {beta_writer}"))
        .header(
            "X-Keygate-Tenant-Id",
            zone["tenant_id"].as_str().unwrap_or("tnt_alpha"),
        )
        .header(
            "X-Keygate-Acting-Tenant-Id",
            whoami(&server, &alpha_writer).await["organization"]["id"]
                .as_str()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        404,
        "a client's own identity headers are thrown away"
    );
    let beta_zones: Value = call(&beta_writer, Method::GET, "/zones", None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(beta_zones["data"], json!([]));

    // A subnet is unique across the platform: Beta cannot add Alpha's, and nothing of that
    // request is added.
    let beta_zone: Value = call(
        &beta_writer,
        Method::POST,
        "/zones",
        Some(json!({"name": "beta edge"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let beta_subnets = format!("/zones/{}/subnets", beta_zone["id"]);
    let clash = call(
        &beta_writer,
        Method::POST,
        &beta_subnets,
        Some(json!({"data": [{"subnet": "203.0.113.0/24"}, {"subnet": "192.0.2.0/24"}]})),
    )
    .await
    .unwrap();
    assert_eq!(clash.status(), 409);
    let clash = clash.text().await.unwrap();
    assert!(clash.contains("192.0.2.0/24"), "{clash}");
    let after: Value = call(&beta_writer, Method::GET, &beta_subnets, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        after["data"],
        json!([]),
        "nothing of a refused request is added"
    );
}

/// The configuration the README's walk-through writes to `keygate.toml`.
fn readme_config() -> String {
    const README: &str = include_str!("../../../../README.md");
    let start = "cat > keygate.toml <<'TOML'\n";
    let at = README.find(start).expect("the README writes keygate.toml") + start.len();
    let length = README[at..].find("TOML\n").unwrap();
    let text = README[at..at + length].to_owned();
    assert!(text.contains("http://127.0.0.1:9000"), "{text}");
    text
}

/// The TOML of a configuration with `routes`, written to `dir/keygate.toml`.
fn write_config(
    dir: &std::path::Path,
    extra: &str,
    routes: &[(&str, String, u64)],
) -> std::path::PathBuf {
    let mut text = format!("permissions = [\"zones:read\", \"zones:write\"]\n{extra}\n");
    for (prefix, upstream, timeout_ms) in routes {
        text.push_str(&format!(
            "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\ntimeout_ms = {timeout_ms}\nrequire = {{ GET = [\"zones:read\"], POST = [\"zones:write\"] }}\n"
        ));
    }
    let path = dir.join("keygate.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    path
}

/// `keygate init --json` with `config`: the owner token.
fn init(dir: &std::path::Path, config: &std::path::Path) -> String {
    let output = crate::binary::keygate_in(dir, "sqlite://data/keygate.db")
        .arg("--config")
        .arg(config)
        .args(["init", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    report["token"].as_str().unwrap().to_owned()
}

fn serve(dir: &std::path::Path, config: &std::path::Path) -> crate::binary::Serve {
    let mut command = crate::binary::keygate_in(dir, "sqlite://data/keygate.db");
    command.arg("--config").arg(config).arg("serve");
    crate::binary::Serve::spawn(command)
}

#[tokio::test]
async fn a_hundred_megabytes_stream_each_way_in_flat_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &[("/files", upstream.url(), 30_000)]);
    let token = init(dir.path(), &config);
    let node = serve(dir.path(), &config);
    let http = client();
    // Warm: the pool, the cache, the allocator's first arenas.
    let warm = http
        .get(format!("{}/files/download?bytes=1048576", node.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 1_048_576);
    let before = crate::binary::peak_memory(node.pid());

    let upload = http
        .post(format!("{}/files/upload", node.base))
        .bearer_auth(&token)
        .header("content-length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(chunks(SIZE)))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let counted: Value = upload.json().await.unwrap();
    assert_eq!(
        counted["bytes"], SIZE,
        "the whole body arrived, past the 1 MiB API limit"
    );

    let mut download = http
        .get(format!("{}/files/download?bytes={SIZE}", node.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut received = 0;
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, SIZE);
    let grown = crate::binary::peak_memory(node.pid()).saturating_sub(before);
    // The peak moves in steps of 2 MiB (huge pages, the allocator's segments): 6 to 16 MiB
    // here whether 50 or 150 MiB go each way. A body held whole would be 100 MiB.
    assert!(
        grown < 32 * 1024 * 1024,
        "keygate's peak memory grew by {} MiB while 100 MiB went each way",
        grown / (1024 * 1024)
    );
    let (exit, log) = node.stop();
    assert!(exit.success(), "{log}");
    assert!(!log.contains(&token), "the token reached the log");
}

#[tokio::test]
async fn sighup_adds_a_route_without_dropping_a_request_in_flight() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &[("/a", upstream.url(), 30_000)]);
    let token = init(dir.path(), &config);
    let node = serve(dir.path(), &config);
    let http = client();
    let get = |path: &str| {
        http.get(format!("{}{path}", node.base))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get("/b/zones").await.unwrap().status(), 404);
    // Three seconds at the upstream, across the reload.
    let in_flight = tokio::spawn(get("/a/slow"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_config(
        dir.path(),
        "",
        &[
            ("/a", upstream.url(), 30_000),
            ("/b", upstream.url(), 30_000),
        ],
    );
    node.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get("/b/zones").await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the new route never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.text().await.unwrap(), "slow but here");

    // A bad file (a route over keygate's own paths) keeps the routes in force.
    write_config(dir.path(), "", &[("/v1/zones", upstream.url(), 30_000)]);
    node.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get("/b/zones").await.unwrap().status(), 200);
    assert_eq!(get("/a/zones").await.unwrap().status(), 200);
    let (exit, log) = node.stop();
    assert!(exit.success(), "{log}");
    assert!(log.contains("gateway routes reloaded"), "{log}");
    assert!(log.contains("kept the gateway routes"), "{log}");
    assert!(
        log.contains("/v1/zones"),
        "the log names the bad route: {log}"
    );
}

#[test]
fn a_route_over_keygates_own_paths_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "",
        &[("/v1/zones", "http://127.0.0.1:9".into(), 1000)],
    );
    let output = crate::binary::keygate_in(dir.path(), "sqlite://data/keygate.db")
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gateway route `/v1/zones`"), "{stderr}");
    assert!(stderr.contains("`/v1`"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was started");
}

/// A self-signed certificate for 127.0.0.1, written to `dir`: its PEM for clients.
fn certificate(dir: &std::path::Path) -> String {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = made.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).unwrap();
    cert
}

fn trusting(cert: &str, http2: bool) -> Client {
    let builder = Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap());
    let builder = if http2 { builder } else { builder.http1_only() };
    builder.build().unwrap()
}

#[tokio::test]
async fn over_tls_http1_and_http2_get_through_and_a_new_certificate_is_served_after_sighup() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = certificate(dir.path());
    let tls = format!(
        "[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let config = write_config(dir.path(), &tls, &[("/zones", upstream.url(), 30_000)]);
    let token = init(dir.path(), &config);
    let node = serve(dir.path(), &config);
    let base = node.base.replacen("http://", "https://", 1);

    for (http2, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let http = trusting(&first, http2);
        let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(healthz.status(), 200);
        assert_eq!(healthz.version(), version);
        let proxied = http
            .get(format!("{base}/zones/1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(proxied.status(), 200);
        assert_eq!(proxied.version(), version);
        let seen = upstream.last();
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        assert_eq!(seen.header("authorization"), None);
    }
    // Plain HTTP is not spoken on a TLS listener.
    assert!(
        client()
            .get(format!("{}/healthz", node.base))
            .send()
            .await
            .is_err()
    );

    // A request in flight on a connection made with the first certificate, across the swap.
    let old = trusting(&first, false);
    let in_flight = tokio::spawn(
        old.get(format!("{base}/zones/slow"))
            .bearer_auth(&token)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_dir = tempfile::tempdir().unwrap();
    let second = certificate(second_dir.path());
    std::fs::copy(
        second_dir.path().join("cert.pem"),
        dir.path().join("cert.pem"),
    )
    .unwrap();
    std::fs::copy(
        second_dir.path().join("key.pem"),
        dir.path().join("key.pem"),
    )
    .unwrap();
    node.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = trusting(&second, false);
        if fresh.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        trusting(&first, false)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    let finished = in_flight.await.unwrap().unwrap();
    assert_eq!(
        finished.status(),
        200,
        "the open connection finished its request"
    );
    assert_eq!(finished.text().await.unwrap(), "slow but here");

    // A key that does not go with the certificate is logged and the certificate kept.
    std::fs::copy(dir.path().join("cert.pem"), dir.path().join("key.pem")).unwrap();
    node.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        trusting(&second, false)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (exit, log) = node.stop();
    assert!(exit.success(), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    assert!(log.contains("kept the TLS certificate"), "{log}");
}

#[tokio::test]
async fn session_cookies_are_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path());
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls.cert_path = Some(cert_path);
        c.tls.key_path = Some(key_path);
    })
    .await;
    let base = server.base.replacen("http://", "https://", 1);
    let response = trusting(&cert, true)
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "owner@example.com", "password": server.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
}
