//! Health, readiness, store outages, restarts, the OpenAPI document and the explorer.

use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use serde_json::Value;

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    health_and_readiness,
    an_unreachable_store_is_503_while_health_stays_up,
    data_survives_a_restart,
    request_ids_are_echoed_when_sane_and_made_up_otherwise,
    the_openapi_document_lists_every_route_and_the_four_credential_schemes,
    the_explorer_is_served_offline,
    metrics_count_requests_verdicts_and_the_cache,
    a_full_cache_makes_room_and_still_answers_every_credential_truly,
    shutdown_finishes_requests_in_flight_and_closes_idle_connections,
);

async fn health_and_readiness(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(
        ok_json(server.get("/healthz").send().await.unwrap()).await["status"],
        "ok"
    );
    assert_eq!(
        ok_json(server.get("/readyz").send().await.unwrap()).await["status"],
        "ready"
    );
}

async fn an_unreachable_store_is_503_while_health_stays_up(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Warm the cache with the bootstrap token before the store goes away.
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    server.state.store().close().await;

    problem(
        server.get("/readyz").send().await.unwrap(),
        503,
        "unavailable",
    )
    .await;
    assert_eq!(server.get("/healthz").send().await.unwrap().status(), 200);
    // A credential that is not cached needs the store: 503, not 401 and not 500.
    let format = CredentialFormat::new("kg", Environment::Live).unwrap();
    let uncached = format.generate(CredentialKind::Service).unwrap();
    let body = problem(
        server.whoami(&[("apikey", uncached.expose())]).await,
        503,
        "unavailable",
    )
    .await;
    assert!(
        !body["detail"].as_str().unwrap_or("").contains("pool"),
        "no internals: {body}"
    );
    // A warm cache answers without the store.
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
}

async fn data_survives_a_restart(backend: Backend) {
    let server = TestServer::start(backend).await;
    let before = ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    let server = server.restart().await;
    assert!(server.state.store().is_initialized().await.unwrap());
    let after = ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    assert_eq!(before, after);
    // The restarted server did not bootstrap again.
    assert!(
        server
            .state
            .bootstrap_if_empty("x@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

async fn request_ids_are_echoed_when_sane_and_made_up_otherwise(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server
        .get("/healthz")
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let response = server
        .get("/healthz")
        .header("x-request-id", "no spaces allowed")
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body = problem(
        server
            .get("/v1/whoami")
            .header("x-request-id", "trace-43")
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(body["instance"], "trace-43");
}

async fn the_openapi_document_lists_every_route_and_the_four_credential_schemes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/v1/whoami", "get"),
        ("/v1/verify", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(
            operation["operationId"].is_string(),
            "{method} {path} is documented"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut names: Vec<&str> = schemes.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["apikey", "basic", "bearer", "cookie"]);
    assert_eq!(schemes["apikey"]["in"], "header");
    assert_eq!(schemes["apikey"]["name"], "apikey");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    assert_eq!(schemes["cookie"]["name"], "api_access_token");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            !path.contains('*'),
            "{path} is not an OpenAPI path template"
        );
    }
    assert!(doc["paths"]["/v1/forward-auth/{path}"]["get"]["operationId"].is_string());
    // Every operation takes any of the four schemes, unless it is public.
    assert_eq!(doc["security"].as_array().unwrap().len(), 4);
    assert!(
        doc["paths"]["/v1/whoami"]["get"].get("security").is_none(),
        "inherits the four"
    );
    for public in ["/healthz", "/readyz", "/v1/auth/login"] {
        let method = if public.ends_with("login") {
            "post"
        } else {
            "get"
        };
        assert_eq!(
            doc["paths"][public][method]["security"],
            serde_json::json!([{}]),
            "{public}"
        );
    }

    // Routes and document come from one source; check the router serves each documented path.
    let (_, generated) = keygate_server::api();
    assert_eq!(
        generated.paths.paths.len(),
        doc["paths"].as_object().unwrap().len()
    );
}

async fn the_explorer_is_served_offline(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server.get("/docs/").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn."),
        "no CDN: the explorer must work offline"
    );
    let response = server
        .get("/docs/swagger-ui-bundle.js")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// The value of the metric line starting with `prefix` in the Prometheus text `text`.
fn metric_in(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The value of the metric line starting with `prefix`, read from the server's `/metrics` now.
async fn metric(server: &TestServer, prefix: &str) -> f64 {
    let response = server.get("/metrics").send().await.unwrap();
    metric_in(&response.text().await.unwrap(), prefix)
}

async fn a_full_cache_makes_room_and_still_answers_every_credential_truly(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.cache.max_credentials = 8).await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        let body = server
            .expect(
                201,
                reqwest::Method::POST,
                "/v1/tokens",
                &server.token,
                Some(serde_json::json!({"kind": "service", "name": format!("t{i}"), "role": "viewer"})),
            )
            .await;
        let secret = body["secret"].as_str().unwrap().to_owned();
        ok_json(server.whoami(&[("apikey", &secret)]).await).await;
        tokens.push((body["id"].as_str().unwrap().to_owned(), secret));
    }
    assert!(metric(&server, "keygate_cache_credentials ").await <= 8.0);
    assert!(metric(&server, "keygate_cache_evictions_total ").await >= 12.0);
    // Every one still verifies (the dropped ones read again), and a revocation of one that was
    // dropped and read again is seen on its next request.
    for (_, secret) in &tokens {
        ok_json(server.whoami(&[("apikey", secret)]).await).await;
    }
    let (id, secret) = &tokens[0];
    server
        .expect(
            204,
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{id}"),
            &server.token,
            None,
        )
        .await;
    problem(
        server.whoami(&[("apikey", secret)]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(metric(&server, "keygate_cache_credentials ").await <= 8.0);
}

async fn metrics_count_requests_verdicts_and_the_cache(backend: Backend) {
    let server = TestServer::start(backend).await;
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    problem(server.whoami(&[]).await, 401, "unauthenticated").await;
    for path in [
        "/v1/forward-auth",
        "/v1/forward-auth/zones/1",
        "/v1/forward-auth/x",
    ] {
        let response = server.get(path).header("apikey", &server.token).send();
        assert_eq!(response.await.unwrap().status(), 200);
    }
    let verdict = server
        .post("/v1/verify")
        .header("apikey", &server.token)
        .json(&serde_json::json!({"credential": "kg_live_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(verdict).await["code"], "MALFORMED");
    // Answered by the router, not the front's own path for a verification: counted alike.
    let wrong_method = server.get("/v1/verify").header("apikey", &server.token);
    assert_eq!(wrong_method.send().await.unwrap().status(), 405);

    let response = server.get("/metrics").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let line = |prefix: &str| metric_in(&text, prefix);
    for (route, status, count) in [
        ("/v1/whoami", 200, 2.0),
        ("/v1/whoami", 401, 1.0),
        ("/v1/forward-auth", 200, 1.0),
        ("/v1/forward-auth/{*path}", 200, 2.0),
        ("/v1/verify", 200, 1.0),
        ("/v1/verify", 405, 1.0),
    ] {
        let series = format!(r#"keygate_http_requests_total{{route="{route}",status="{status}"}}"#);
        assert_eq!(line(&series), count, "{series}");
    }
    assert_eq!(
        text.matches(r#"route="/v1/verify""#).count(),
        2,
        "one series a status"
    );
    assert_eq!(
        line(r#"keygate_verifications_total{code="MALFORMED"}"#),
        1.0
    );
    assert_eq!(line(r#"keygate_verifications_total{code="VALID"}"#), 0.0);
    assert!(
        line(r#"keygate_cache_lookups_total{result="hit"}"#) >= 2.0,
        "warm whoami and verify"
    );
    // The bootstrap token was read from the store once: one observation in the histogram.
    assert_eq!(line(r#"keygate_store_read_seconds_count"#), 1.0);
    assert_eq!(line(r#"keygate_store_read_seconds_bucket{le="+Inf"}"#), 1.0);
}

/// What a test sees of one raw HTTP/1.1 exchange.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        response.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&response);
        let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            body.len() >= length
        });
        if n == 0 || complete {
            return text.into_owned();
        }
    }
}

async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let mut server = TestServer::start(backend).await;
    let address = server.base.trim_start_matches("http://").to_owned();

    // An idle keep-alive connection: one request answered, the connection left open.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));

    // A request in flight: its head and half of its body sent. `Expect: 100-continue` is the
    // signal that the server has read the head and started on the request: hyper answers it when
    // the handler first reads the body.
    let body = format!(r#"{{"credential": "{}"}}"#, server.token);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut busy = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.token,
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    let interim = read_response(&mut busy).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    busy.write_all(first.as_bytes()).await.unwrap();

    let stopping = tokio::spawn(async move {
        server.shutdown().await;
    });
    // The idle connection is closed at once; nobody new is let in. The server lets go of its
    // listener before it closes idle connections, so once this one is closed the port is too.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), read_response(&mut idle));
    assert_eq!(closed.await.unwrap(), "");
    assert!(TcpStream::connect(&address).await.is_err());
    assert!(!stopping.is_finished(), "stopped with a request in flight");

    // The request in flight is finished and answered, and then the server stops.
    busy.write_all(rest.as_bytes()).await.unwrap();
    let response = read_response(&mut busy).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""valid":true"#), "{response}");
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}
