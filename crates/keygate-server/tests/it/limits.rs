//! Per-credential rate limits (API.md §9), on the test clock.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Backend, TestServer, problem};

on_every_backend!(
    a_tokens_limit_admits_its_burst_then_one_per_interval,
    the_configured_default_applies_to_tokens_without_their_own,
    no_limit_no_headers,
);

async fn token_with(server: &TestServer, rate_limit: Option<serde_json::Value>) -> String {
    let mut body = json!({"kind": "service", "name": "limited", "role": "viewer"});
    if let Some(limit) = rate_limit {
        body["rate_limit"] = limit;
    }
    let created = server
        .expect(201, Method::POST, "/v1/tokens", &server.token, Some(body))
        .await;
    created["secret"].as_str().unwrap().to_owned()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

async fn a_tokens_limit_admits_its_burst_then_one_per_interval(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = token_with(&server, Some(json!({"requests": 3, "per_seconds": 1}))).await;
    for remaining in ["2", "1", "0"] {
        let response = server.whoami(&[("apikey", &token)]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), "3");
        assert_eq!(header(&response, "ratelimit-remaining"), remaining);
    }
    let refused = server.whoami(&[("apikey", &token)]).await;
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "ratelimit-limit"), "3");
    assert!(refused.headers().contains_key("ratelimit-reset"));
    problem(refused, 429, "rate-limited").await;

    // One interval (a third of a second) later, exactly one more.
    server.clock.advance(Duration::from_millis(333));
    problem(
        server.whoami(&[("apikey", &token)]).await,
        429,
        "rate-limited",
    )
    .await;
    server.clock.advance(Duration::from_millis(1));
    assert_eq!(server.whoami(&[("apikey", &token)]).await.status(), 200);
    problem(
        server.whoami(&[("apikey", &token)]).await,
        429,
        "rate-limited",
    )
    .await;
    // Once a full window has passed since the last admitted request, the burst is back.
    server
        .clock
        .advance(Duration::from_secs(1) + Duration::from_millis(2));
    for _ in 0..3 {
        assert_eq!(server.whoami(&[("apikey", &token)]).await.status(), 200);
    }
}

async fn the_configured_default_applies_to_tokens_without_their_own(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limit.requests = Some(2);
        c.rate_limit.per_seconds = Some(60);
    })
    .await;
    // Creating the tokens counts against the owner token's own budget: two requests.
    let plain = token_with(&server, None).await;
    let generous = token_with(&server, Some(json!({"requests": 100, "per_seconds": 1}))).await;
    problem(
        server.whoami(&[("apikey", &server.token)]).await,
        429,
        "rate-limited",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(server.whoami(&[("apikey", &plain)]).await.status(), 200);
    }
    let refused = server.whoami(&[("apikey", &plain)]).await;
    assert_eq!(
        header(&refused, "retry-after"),
        "30",
        "one request per 30 s"
    );
    for _ in 0..10 {
        assert_eq!(server.whoami(&[("apikey", &generous)]).await.status(), 200);
    }
    // Counted on every endpoint the credential uses, not only whoami.
    let listed = server.call(Method::GET, "/v1/roles", &plain, None).await;
    problem(listed, 429, "rate-limited").await;
}

async fn no_limit_no_headers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server.whoami(&[("apikey", &server.token)]).await;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("ratelimit-limit"));
}
