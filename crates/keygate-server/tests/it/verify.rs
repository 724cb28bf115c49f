//! `POST /v1/verify` as far as the foundation goes: verdicts for what exists, permissions, and
//! the caller's own permission.

use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use serde_json::{Value, json};

use crate::harness::{TestServer, ok_json, problem};

async fn verify(server: &TestServer, caller: &str, body: Value) -> reqwest::Response {
    server
        .post("/v1/verify")
        .header("apikey", caller)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn verdicts_for_valid_malformed_unknown_and_forbidden() {
    let server = TestServer::start().await;
    let token = server.token.clone();

    let valid = ok_json(verify(&server, &token, json!({"credential": token})).await).await;
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["code"], "VALID");
    assert_eq!(valid["tenant"]["slug"], "root");
    assert_eq!(valid["principal"]["type"], "service_token");
    assert!(valid["credential_id"].as_str().unwrap().starts_with("tok_"));
    assert!(valid["acting_tenant"].is_null());
    assert!(valid["expires_at"].is_null());

    let body = ok_json(verify(&server, &token, json!({"credential": "kg_live_nope"})).await).await;
    assert_eq!(
        (body["valid"].clone(), body["code"].clone()),
        (json!(false), json!("MALFORMED"))
    );
    assert!(body["tenant"].is_null() && body["principal"].is_null());

    let unknown = CredentialFormat::new("kg", Environment::Live)
        .unwrap()
        .generate(CredentialKind::Personal)
        .unwrap();
    let body =
        ok_json(verify(&server, &token, json!({"credential": unknown.expose()})).await).await;
    assert_eq!(body["code"], "NOT_FOUND");

    let body = ok_json(
        verify(
            &server,
            &token,
            json!({"credential": token, "permissions": ["tokens:read"]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["code"], "VALID");
}

#[tokio::test]
async fn operator_permissions_can_be_required_and_unknown_ones_are_400() {
    let server = TestServer::start_with(|c| c.permissions = vec!["zones:read".into()]).await;
    let token = server.token.clone();
    let body = ok_json(
        verify(
            &server,
            &token,
            json!({"credential": token, "permissions": ["zones:read"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        body["code"], "VALID",
        "the owner holds operator permissions too"
    );
    assert!(
        body["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("zones:read"))
    );

    let response = verify(
        &server,
        &token,
        json!({"credential": token, "permissions": ["zones:read", "zones:destroy"], "ip": "nope"}),
    )
    .await;
    let body = problem(response, 400, "invalid-request").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["permissions[1]", "ip"]);
}

#[tokio::test]
async fn the_caller_needs_a_valid_credential() {
    let server = TestServer::start().await;
    let response = server
        .post("/v1/verify")
        .json(&json!({"credential": server.token}))
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthenticated").await;
}
