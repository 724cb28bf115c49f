//! Problem responses for what can go wrong before a handler runs (API.md §1).

use crate::harness::{Backend, TestServer, problem};

on_every_backend!(
    unknown_routes_are_404_problems,
    wrong_methods_are_405_with_allow,
    bodies_over_the_limit_are_413,
    the_default_body_limit_is_one_mebibyte,
    bodies_that_are_not_json_are_415,
    headers_over_the_limit_are_431,
    malformed_json_and_unknown_fields_are_400,
    requests_the_http_parser_refuses_are_answered_and_change_nothing,
);

async fn unknown_routes_are_404_problems(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in ["/nope", "/v1/nope", "/v2/whoami", "/v1/whoami/extra"] {
        let response = server.get(path).send().await.unwrap();
        problem(response, 404, "not-found").await;
    }
    // A trailing slash is told the path without it.
    let response = server.get("/v1/whoami/").send().await.unwrap();
    let body = problem(response, 404, "not-found").await;
    assert!(
        body["detail"].as_str().unwrap().contains("`/v1/whoami`?"),
        "{body}"
    );
}

async fn wrong_methods_are_405_with_allow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server.post("/v1/whoami").send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    problem(response, 405, "method-not-allowed").await;

    let response = server.get("/v1/verify").send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    problem(response, 405, "method-not-allowed").await;
}

/// `POST /v1/verify` with a JSON body whose credential is `len` characters long.
async fn verify_with_credential_of(server: &TestServer, len: usize) -> reqwest::Response {
    server
        .post("/v1/verify")
        .header("apikey", &server.token)
        .header("content-type", "application/json")
        .body(format!("{{\"credential\": \"{}\"}}", "x".repeat(len)))
        .send()
        .await
        .unwrap()
}

async fn bodies_over_the_limit_are_413(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.limits.body_bytes = 1024).await;
    problem(
        verify_with_credential_of(&server, 2048).await,
        413,
        "payload-too-large",
    )
    .await;
    // Just under the limit is parsed (and answered, here with a verdict).
    assert_eq!(verify_with_credential_of(&server, 900).await.status(), 200);
}

async fn the_default_body_limit_is_one_mebibyte(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = verify_with_credential_of(&server, 1024 * 1024).await;
    problem(response, 413, "payload-too-large").await;
}

async fn bodies_that_are_not_json_are_415(backend: Backend) {
    let server = TestServer::start(backend).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = server
            .post("/v1/verify")
            .header("apikey", &server.token)
            .body("{\"credential\": \"x\"}");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        problem(request.send().await.unwrap(), 415, "unsupported-media-type").await;
    }
}

async fn headers_over_the_limit_are_431(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Several headers, none large, that together exceed 8 KiB.
    let mut request = server.get("/healthz");
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), "y".repeat(500));
    }
    let body = problem(request.send().await.unwrap(), 431, "headers-too-large").await;
    assert!(body["detail"].as_str().unwrap().contains("8192"));

    let server = TestServer::start_with(backend, |c| c.limits.header_bytes = 2048).await;
    let response = server
        .get("/healthz")
        .header("x-big", "z".repeat(3000))
        .send()
        .await
        .unwrap();
    problem(response, 431, "headers-too-large").await;
}

async fn malformed_json_and_unknown_fields_are_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let send = |body: &'static str| {
        server
            .post("/v1/verify")
            .header("apikey", &server.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = problem(
        send("{\"credential\": ").await.unwrap(),
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    // serde would read the struct's fields from an array, in order; the contract says object.
    let body = problem(send("[\"x\", []]").await.unwrap(), 400, "invalid-request").await;
    assert!(
        body["detail"].as_str().unwrap().contains("JSON object"),
        "{body}"
    );

    let body = problem(
        send("{\"credential\": \"x\", \"permisions\": []}")
            .await
            .unwrap(),
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `permisions`"),
        "{body}"
    );

    let body = problem(
        send("{\"credential\": 7}").await.unwrap(),
        400,
        "invalid-request",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("credential"),
        "{body}"
    );
    problem(send("[]").await.unwrap(), 400, "invalid-request").await;
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn exchange_raw(server: &TestServer, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes a connection it cannot read")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn requests_the_http_parser_refuses_are_answered_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.clone();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "a NUL byte in a header",
            format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\napikey: {token}\0\r\n\r\n").into_bytes(),
            "HTTP/1.1 400",
        ),
        (
            "an obsolete folded header",
            format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\napikey: {token}\r\n  folded\r\n\r\n")
                .into_bytes(),
            "HTTP/1.1 400",
        ),
        (
            "two different Content-Lengths",
            b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "more than 100 headers",
            format!(
                "GET /v1/whoami HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..101).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
    ];
    for (what, raw, status) in cases {
        let answer = exchange_raw(&server, &raw).await;
        assert!(answer.starts_with(status), "{what}: {answer:?}");
    }
    // Within hyper's limits and over keygate's own, keygate answers with its problem.
    let response = server
        .get("/v1/whoami")
        .header("x-padding", "p".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    problem(response, 431, "headers-too-large").await;
    // And the server goes on serving.
    let me = server
        .whoami(&[("apikey", token.as_str())])
        .await
        .status()
        .as_u16();
    assert_eq!(me, 200);
}
