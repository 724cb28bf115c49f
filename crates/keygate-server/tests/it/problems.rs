//! Problem responses for what can go wrong before a handler runs (API.md §1).

use crate::harness::{TestServer, problem};

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let server = TestServer::start().await;
    for path in ["/nope", "/v1/nope", "/v2/whoami", "/v1/whoami/extra"] {
        let response = server.get(path).send().await.unwrap();
        problem(response, 404, "not-found").await;
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = TestServer::start().await;
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

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let server = TestServer::start_with(|c| c.limits.body_bytes = 1024).await;
    problem(
        verify_with_credential_of(&server, 2048).await,
        413,
        "payload-too-large",
    )
    .await;
    // Just under the limit is parsed (and answered, here with a verdict).
    assert_eq!(verify_with_credential_of(&server, 900).await.status(), 200);
}

#[tokio::test]
async fn the_default_body_limit_is_one_mebibyte() {
    let server = TestServer::start().await;
    let response = verify_with_credential_of(&server, 1024 * 1024).await;
    problem(response, 413, "payload-too-large").await;
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415() {
    let server = TestServer::start().await;
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

#[tokio::test]
async fn headers_over_the_limit_are_431() {
    let server = TestServer::start().await;
    // Several headers, none large, that together exceed 8 KiB.
    let mut request = server.get("/healthz");
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), "y".repeat(500));
    }
    let body = problem(request.send().await.unwrap(), 431, "headers-too-large").await;
    assert!(body["detail"].as_str().unwrap().contains("8192"));

    let server = TestServer::start_with(|c| c.limits.header_bytes = 2048).await;
    let response = server
        .get("/healthz")
        .header("x-big", "z".repeat(3000))
        .send()
        .await
        .unwrap();
    problem(response, 431, "headers-too-large").await;
}

#[tokio::test]
async fn malformed_json_and_unknown_fields_are_400() {
    let server = TestServer::start().await;
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
