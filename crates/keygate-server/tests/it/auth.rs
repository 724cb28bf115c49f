//! The five credential places, scheme spellings, ambiguity, realms and refusals (API.md §2).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use reqwest::header::HeaderValue;

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    whoami_through_every_place_and_scheme_spelling,
    the_same_credential_twice_is_fine_but_two_different_ones_are_ambiguous,
    missing_malformed_unknown_and_foreign_credentials_are_401_with_reasons,
    a_test_server_accepts_only_test_credentials,
    basic_username_and_realm_header_must_name_the_credentials_tenant,
    hostile_credential_headers_get_problems_never_500s,
    a_ten_thousand_character_token_within_the_default_header_limit_is_431,
);

async fn whoami_through_every_place_and_scheme_spelling(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.as_str();
    let bearer = |scheme: &str| format!("{scheme} {token}");
    let basic = |user: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{token}")));
    let cookie = format!("theme=dark; api_access_token={token}");
    let cases: Vec<(&str, String)> = vec![
        ("authorization", bearer("Bearer")),
        ("authorization", bearer("bearer")),
        ("authorization", bearer("BEARER")),
        ("authorization", bearer("Token")),
        ("authorization", bearer("token")),
        ("authorization", bearer("TOKEN")),
        ("authorization", basic("root")),
        ("authorization", basic("root").replacen("Basic", "basic", 1)),
        ("authorization", basic("root").replacen("Basic", "BASIC", 1)),
        ("apikey", token.to_owned()),
        ("x-api-key", token.to_owned()),
        ("cookie", cookie),
    ];
    for (name, value) in &cases {
        let body = ok_json(server.whoami(&[(name, value)]).await).await;
        assert_eq!(body["organization"]["slug"], "root", "{name}: {value}");
        assert_eq!(body["principal"]["type"], "service_token");
        assert_eq!(body["credential"]["kind"], "service");
        assert_eq!(body["credential"]["name"], "bootstrap");
        assert!(body["acting_as"].is_null());
        let permissions = body["permissions"].as_array().unwrap();
        assert!(
            permissions.iter().any(|p| p == "tenants:write"),
            "owner holds everything"
        );
    }
}

async fn the_same_credential_twice_is_fine_but_two_different_ones_are_ambiguous(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.as_str();
    let bearer = format!("Bearer {token}");
    ok_json(
        server
            .whoami(&[("authorization", &bearer), ("apikey", token)])
            .await,
    )
    .await;

    let other = CredentialFormat::new("kg", Environment::Live)
        .unwrap()
        .generate(CredentialKind::Personal)
        .unwrap();
    let response = server
        .whoami(&[("authorization", &bearer), ("x-api-key", other.expose())])
        .await;
    problem(response, 400, "ambiguous-credentials").await;
    let cookie = format!("api_access_token={}", other.expose());
    let response = server
        .whoami(&[("apikey", token), ("cookie", &cookie)])
        .await;
    problem(response, 400, "ambiguous-credentials").await;
}

async fn missing_malformed_unknown_and_foreign_credentials_are_401_with_reasons(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = problem(server.whoami(&[]).await, 401, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains("no credential"));

    // One character flipped in the random part: the checksum catches it.
    let mut flipped = server.token.clone();
    let at = flipped.len() - 10;
    let replacement = if &flipped[at..=at] == "A" { "B" } else { "A" };
    flipped.replace_range(at..=at, replacement);
    let bearer = format!("Bearer {flipped}");
    let body = problem(
        server.whoami(&[("authorization", &bearer)]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("checksum"),
        "{body}"
    );

    // Well-formed, right checksum, never issued.
    let live = CredentialFormat::new("kg", Environment::Live).unwrap();
    let unknown = live.generate(CredentialKind::Service).unwrap();
    let response = server.whoami(&[("apikey", unknown.expose())]).await;
    let body = problem(response, 401, "unauthenticated").await;
    assert!(
        body["detail"].as_str().unwrap().contains("not known"),
        "{body}"
    );

    // A test-environment credential on a live server: refused, saying why.
    let test = CredentialFormat::new("kg", Environment::Test).unwrap();
    let test_token = test.generate(CredentialKind::Service).unwrap();
    let response = server.whoami(&[("apikey", test_token.expose())]).await;
    let body = problem(response, 401, "unauthenticated").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("test credential") && detail.contains("live"),
        "{detail}"
    );

    // Another deployment's brand.
    let lynk = CredentialFormat::new("lynk", Environment::Live).unwrap();
    let foreign = lynk.generate(CredentialKind::Service).unwrap();
    let response = server.whoami(&[("apikey", foreign.expose())]).await;
    problem(response, 401, "unauthenticated").await;

    // A credential without its scheme: told what is missing, and never repeated back, not a
    // character of it (an answer may be logged). An unknown scheme is named.
    let body = problem(
        server.whoami(&[("authorization", &server.token)]).await,
        401,
        "unauthenticated",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("needs a scheme"), "{detail}");
    assert!(!detail.contains(&server.token[..12]), "{detail}");
    let pasted = format!("{} {}", server.token, server.token);
    let body = problem(
        server.whoami(&[("authorization", &pasted)]).await,
        401,
        "unauthenticated",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(!detail.contains(&server.token[..12]), "{detail}");
    let body = problem(
        server
            .whoami(&[("authorization", "Digest username=\"a\"")])
            .await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`Digest` is not supported"),
        "{body}"
    );
}

async fn a_test_server_accepts_only_test_credentials(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.environment = Environment::Test;
        c.token_prefix = "lynk".into();
    })
    .await;
    assert!(
        server.token.starts_with("lynk_service_test_"),
        "{}",
        server.token
    );
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    let live = CredentialFormat::new("lynk", Environment::Live).unwrap();
    let live_token = live.generate(CredentialKind::Service).unwrap();
    let response = server.whoami(&[("apikey", live_token.expose())]).await;
    let body = problem(response, 401, "unauthenticated").await;
    assert!(
        body["detail"].as_str().unwrap().contains("live credential"),
        "{body}"
    );
}

async fn basic_username_and_realm_header_must_name_the_credentials_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.as_str();
    let basic = |user: &str| format!("Basic {}", STANDARD.encode(format!("{user}:{token}")));

    let body = problem(
        server.whoami(&[("authorization", &basic("acme"))]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("Basic username"),
        "{body}"
    );
    problem(
        server.whoami(&[("authorization", &basic(""))]).await,
        401,
        "unauthenticated",
    )
    .await;

    ok_json(server.whoami(&[("apikey", token), ("realm", "root")]).await).await;
    let body = problem(
        server.whoami(&[("apikey", token), ("realm", "acme")]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("Realm"), "{body}");
}

async fn hostile_credential_headers_get_problems_never_500s(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.limits.header_bytes = 32 * 1024).await;
    let long_token = format!("kg_live_{}", "a".repeat(10_000));
    let cases: Vec<(&str, HeaderValue)> = vec![
        (
            "authorization",
            HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap(),
        ),
        ("authorization", HeaderValue::from_static("Bearer")),
        ("authorization", HeaderValue::from_static("Bearer    ")),
        (
            "authorization",
            HeaderValue::from_static("Basic %%%not-base64%%%"),
        ),
        (
            "authorization",
            HeaderValue::from_static("Basic bm8tY29sb24="),
        ),
        ("authorization", HeaderValue::from_static("Negotiate abc")),
        (
            "authorization",
            HeaderValue::from_str(&format!("Bearer {long_token}")).unwrap(),
        ),
        ("apikey", HeaderValue::from_bytes(b"\xc3\x28").unwrap()),
        ("x-api-key", HeaderValue::from_static("kg_live_")),
        ("realm", HeaderValue::from_bytes(b"\xff").unwrap()),
    ];
    for (name, value) in cases {
        let mut request = server.get("/v1/whoami").header(name, value.clone());
        if name == "realm" {
            request = request.header("apikey", &server.token);
        }
        let response = request.send().await.unwrap();
        let label = format!("{name}: {value:?}");
        assert_eq!(response.status().as_u16(), 401, "{label}");
        problem(response, 401, "unauthenticated").await;
    }
    // A cookie header full of garbage is not ours to refuse: no credential, so 401 for that.
    let garbage = HeaderValue::from_bytes(b"=;;\xff==; api_access_token; ;=x").unwrap();
    let response = server
        .get("/v1/whoami")
        .header("cookie", garbage)
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthenticated").await;
    // And next to a real credential it changes nothing.
    let garbage = format!(
        "=;;==; {}; api_access_token={}",
        "x".repeat(100),
        server.token
    );
    ok_json(server.whoami(&[("cookie", &garbage)]).await).await;
}

async fn a_ten_thousand_character_token_within_the_default_header_limit_is_431(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bearer = format!("Bearer kg_live_{}", "a".repeat(10_000));
    problem(
        server.whoami(&[("authorization", &bearer)]).await,
        431,
        "headers-too-large",
    )
    .await;
}
