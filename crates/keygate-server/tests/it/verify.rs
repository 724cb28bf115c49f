//! `POST /v1/verify` as far as the foundation goes: verdicts for what exists, permissions, and
//! the caller's own permission.

use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    verdicts_for_valid_malformed_unknown_and_forbidden,
    operator_permissions_can_be_required_and_unknown_ones_are_400,
    the_caller_needs_a_valid_credential,
    forward_auth_allows_with_identity_headers_and_an_empty_body,
    forward_auth_refuses_with_problems,
    verification_counts_the_verified_credentials_rate_limit,
    forward_auth_takes_require_as_a_query_on_its_path_and_as_a_header_below_it,
    forward_auth_answers_every_method_and_only_its_own_paths,
    forward_auth_names_the_tenant_acted_for,
    outside_the_callers_tenants_every_credential_is_not_found_whatever_its_state,
    every_path_checks_address_then_rate_limit_then_permissions,
    a_verified_credential_is_noted_as_used,
);

async fn verify(server: &TestServer, caller: &str, body: Value) -> reqwest::Response {
    server
        .post("/v1/verify")
        .header("apikey", caller)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn verdicts_for_valid_malformed_unknown_and_forbidden(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.token.clone();

    let response = verify(&server, &token, json!({"credential": token})).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let valid = ok_json(response).await;
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
    let response = verify(&server, &token, json!({"credential": unknown.expose()})).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = ok_json(response).await;
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

async fn operator_permissions_can_be_required_and_unknown_ones_are_400(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.permissions = vec!["zones:read".into()]).await;
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

async fn the_caller_needs_a_valid_credential(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server
        .post("/v1/verify")
        .json(&json!({"credential": server.token}))
        .send()
        .await
        .unwrap();
    problem(response, 401, "unauthenticated").await;
}

async fn forward(
    server: &TestServer,
    method: reqwest::Method,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = server.request(method, "/v1/forward-auth");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn forward_auth_allows_with_identity_headers_and_an_empty_body(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.permissions = vec!["zones:read".into()]).await;
    let me = ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    let bearer = format!("Bearer {}", server.token);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        let response = forward(
            &server,
            method.parse().unwrap(),
            &[
                ("authorization", &bearer),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-uri", "/zones/42"),
                ("x-keygate-require", "zones:read, tokens:read"),
            ],
        )
        .await;
        assert_eq!(response.status(), 200, "{method}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["x-keygate-tenant-id"],
            me["organization"]["id"].as_str().unwrap()
        );
        assert_eq!(
            headers["x-keygate-acting-tenant-id"],
            me["organization"]["id"].as_str().unwrap()
        );
        assert_eq!(
            headers["x-keygate-principal-id"],
            me["principal"]["id"].as_str().unwrap()
        );
        assert_eq!(
            headers["x-keygate-credential-id"],
            me["credential"]["id"].as_str().unwrap()
        );
        assert!(
            headers["x-keygate-permissions"]
                .to_str()
                .unwrap()
                .contains("zones:read")
        );
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "an empty body for {method}"
        );
    }
}

async fn forward_auth_refuses_with_problems(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.permissions = vec!["zones:write".into()]).await;
    problem(
        forward(&server, reqwest::Method::GET, &[]).await,
        401,
        "unauthenticated",
    )
    .await;
    let viewer = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "v", "role": "viewer",
                "rate_limit": {"requests": 2, "per_seconds": 60}})),
        )
        .await;
    let viewer = viewer["secret"].as_str().unwrap();
    let body = problem(
        forward(
            &server,
            reqwest::Method::GET,
            &[("apikey", viewer), ("x-keygate-require", "zones:write")],
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["missing_permissions"], json!(["zones:write"]));
    let body = problem(
        forward(
            &server,
            reqwest::Method::GET,
            &[("apikey", viewer), ("x-keygate-require", "zones:typo")],
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["missing_permissions"], json!(["zones:typo"]));
    // The operator reading it is told the proxy asks for what keygate does not know.
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("asks for `zones:typo`, which keygate does not know"),
        "{body}"
    );
    problem(
        forward(&server, reqwest::Method::GET, &[("apikey", viewer)]).await,
        429,
        "rate-limited",
    )
    .await;
}

async fn verification_counts_the_verified_credentials_rate_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let limited = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "l", "role": "viewer",
                "rate_limit": {"requests": 1, "per_seconds": 60}})),
        )
        .await;
    let limited = limited["secret"].as_str().unwrap();
    let first = ok_json(verify(&server, &server.token, json!({"credential": limited})).await).await;
    assert_eq!(first["code"], "VALID");
    let second =
        ok_json(verify(&server, &server.token, json!({"credential": limited})).await).await;
    assert_eq!(second["code"], "RATE_LIMITED");
    assert_eq!(second["valid"], false);
}

async fn forward_auth_takes_require_as_a_query_on_its_path_and_as_a_header_below_it(
    backend: Backend,
) {
    let server =
        TestServer::start_with(backend, |c| c.permissions = vec!["zones:write".into()]).await;
    let viewer = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "v", "role": "viewer"})),
        )
        .await;
    let viewer = viewer["secret"].as_str().unwrap();
    let at = |path: &str, token: &str| server.get(path).header("apikey", token).send();
    // Traefik cannot add a header to its check, so the permission can be in the address.
    let refused = at("/v1/forward-auth?require=zones:write", viewer)
        .await
        .unwrap();
    let body = problem(refused, 403, "forbidden").await;
    assert_eq!(body["missing_permissions"], json!(["zones:write"]));
    assert_eq!(
        at("/v1/forward-auth?require=zones:write", &server.token)
            .await
            .unwrap()
            .status(),
        200
    );
    // Envoy appends the original path to its check's.
    assert_eq!(
        at("/v1/forward-auth/zones/42?x=1", viewer)
            .await
            .unwrap()
            .status(),
        200
    );
    // Below the check's path, only the header names permissions: there the query is the
    // original request's, which the client chose (and an API may have a `require` of its own).
    assert_eq!(
        at("/v1/forward-auth/zones/42?require=zones:write", viewer)
            .await
            .unwrap()
            .status(),
        200,
        "a client's own ?require= is not read as the check's"
    );
    assert_eq!(
        at("/v1/forward-auth?require=zones:write&require=", viewer)
            .await
            .unwrap()
            .status(),
        403,
        "on the check's own path the query still counts"
    );
    let body = problem(
        server
            .get("/v1/forward-auth/zones/42?require=nothing")
            .header("apikey", viewer)
            .header("x-keygate-require", "zones:write")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["missing_permissions"], json!(["zones:write"]));
    // Nor is a query that is no form at all a bad request there: it is not keygate's.
    assert_eq!(
        at("/v1/forward-auth/zones/42?%zz=&&=", viewer)
            .await
            .unwrap()
            .status(),
        200
    );
    problem(
        server
            .get("/v1/forward-auth/anything")
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
}

async fn forward_auth_answers_every_method_and_only_its_own_paths(backend: Backend) {
    let server = TestServer::start(backend).await;
    for method in ["TRACE", "PROPFIND"] {
        let response = forward(
            &server,
            method.parse().unwrap(),
            &[("apikey", &server.token)],
        )
        .await;
        assert_eq!(response.status(), 200, "{method}");
        assert!(
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
    }
    // A path that merely starts with the same letters is not the check.
    let response = server
        .get("/v1/forward-authority")
        .header("apikey", &server.token)
        .send()
        .await
        .unwrap();
    problem(response, 404, "not-found").await;
}

async fn forward_auth_names_the_tenant_acted_for(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Child"})),
        )
        .await;
    let child = created["tenant"]["id"].as_str().unwrap();
    let me = ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    let own = me["organization"]["id"].as_str().unwrap();
    // Twice: the second answer comes from what the first left with the cached verification.
    for _ in 0..2 {
        let acting = forward(
            &server,
            reqwest::Method::GET,
            &[("apikey", &server.token), ("as-tenant", child)],
        )
        .await;
        assert_eq!(acting.status(), 200);
        assert_eq!(acting.headers()["x-keygate-tenant-id"], own);
        assert_eq!(acting.headers()["x-keygate-acting-tenant-id"], child);
        let plain = forward(&server, reqwest::Method::GET, &[("apikey", &server.token)]).await;
        assert_eq!(plain.headers()["x-keygate-acting-tenant-id"], own);
    }
}

/// A token made in `tenant` by the root owner acting for it; returns (secret, id).
async fn token_in(server: &TestServer, tenant: &str, body: Value) -> (String, String) {
    let response = server
        .post("/v1/tokens")
        .bearer_auth(&server.token)
        .header("as-tenant", tenant)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    (
        created["secret"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

async fn outside_the_callers_tenants_every_credential_is_not_found_whatever_its_state(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut tenants = Vec::new();
    for name in ["Alpha", "Bravo"] {
        let created = server
            .expect(
                201,
                reqwest::Method::POST,
                "/v1/tenants",
                &server.token,
                Some(json!({"name": name})),
            )
            .await;
        tenants.push(created["tenant"]["id"].as_str().unwrap().to_owned());
    }
    let (alpha, bravo) = (&tenants[0], &tenants[1]);
    // Alpha's verifier asks about Bravo's credentials.
    let (verifier, _) = token_in(
        &server,
        alpha,
        json!({"kind": "service", "name": "verifier", "role": "admin"}),
    )
    .await;
    let (live, _) = token_in(
        &server,
        bravo,
        json!({"kind": "service", "name": "live", "role": "viewer"}),
    )
    .await;
    let (revoked, revoked_id) = token_in(
        &server,
        bravo,
        json!({"kind": "service", "name": "revoked", "role": "viewer"}),
    )
    .await;
    let (expired, _) = token_in(
        &server,
        bravo,
        json!({"kind": "service", "name": "expired", "role": "viewer", "expires_in": 60}),
    )
    .await;
    let response = server
        .request(reqwest::Method::DELETE, &format!("/v1/tokens/{revoked_id}"))
        .bearer_auth(&server.token)
        .header("as-tenant", bravo)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Bravo's OAuth client, and an access token of it that will have expired.
    let client = server
        .post("/v1/oauth/clients")
        .bearer_auth(&server.token)
        .header("as-tenant", bravo)
        .json(&json!({"name": "backend", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(client.status(), 201);
    let client: Value = client.json().await.unwrap();
    let access = crate::oauth::tokens(
        &server,
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
        None,
    )
    .await;
    let access = access["access_token"].as_str().unwrap().to_owned();
    let ask = async |caller: &str, credential: &str| {
        let body = ok_json(verify(&server, caller, json!({"credential": credential})).await).await;
        body["code"].as_str().unwrap().to_owned()
    };

    // Seen from the root (an ancestor), each state shows.
    assert_eq!(ask(&server.token, &live).await, "VALID");
    assert_eq!(ask(&server.token, &revoked).await, "REVOKED");
    assert_eq!(ask(&server.token, &access).await, "VALID");
    // From Alpha, none of them exists.
    for credential in [&live, &revoked, &expired, &access] {
        assert_eq!(
            ask(&verifier, credential).await,
            "NOT_FOUND",
            "{credential}"
        );
    }

    server.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(ask(&server.token, &expired).await, "EXPIRED");
    assert_eq!(ask(&server.token, &access).await, "EXPIRED");
    for credential in [&live, &revoked, &expired, &access] {
        assert_eq!(
            ask(&verifier, credential).await,
            "NOT_FOUND",
            "{credential}"
        );
    }
    // A fresh node, with nothing cached, answers the same.
    let fresh = server.join().await;
    let ask_fresh = async |caller: &str, credential: &str| {
        let body = ok_json(verify(&fresh, caller, json!({"credential": credential})).await).await;
        body["code"].as_str().unwrap().to_owned()
    };
    for credential in [&expired, &access] {
        assert_eq!(ask_fresh(&verifier, credential).await, "NOT_FOUND");
        assert_eq!(ask_fresh(&server.token, credential).await, "EXPIRED");
    }
}

/// One order of checks on every path (keygate_core::gate): the address before the rate limit,
/// the rate limit before the permissions the path requires. verify used to count only requests
/// that passed the permission check, unlike the extractor and forward-auth.
async fn every_path_checks_address_then_rate_limit_then_permissions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = |body: Value| {
        let server = &server;
        async move {
            let created = server
                .expect(
                    201,
                    reqwest::Method::POST,
                    "/v1/tokens",
                    &server.token,
                    Some(body),
                )
                .await;
            created["secret"].as_str().unwrap().to_owned()
        }
    };
    let limited = token(json!({"kind": "service", "name": "l", "role": "viewer",
        "rate_limit": {"requests": 2, "per_seconds": 60}}))
    .await;
    // Refused for a permission it lacks: still counted against its limit...
    for _ in 0..2 {
        let body = ok_json(
            verify(
                &server,
                &server.token,
                json!({"credential": limited, "permissions": ["tokens:write"]}),
            )
            .await,
        )
        .await;
        assert_eq!(body["code"], "FORBIDDEN");
        assert_eq!(body["missing_permissions"], json!(["tokens:write"]));
    }
    // ...so the third request is over it, whatever it asks.
    let body = ok_json(verify(&server, &server.token, json!({"credential": limited})).await).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(
        body["credential_id"]
            .as_str()
            .map(|id| id.starts_with("tok_")),
        Some(true)
    );

    // Through forward-auth, the same order: 403 twice, then 429.
    let limited = token(json!({"kind": "service", "name": "m", "role": "viewer",
        "rate_limit": {"requests": 2, "per_seconds": 60}}))
    .await;
    let statuses = async || {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let response = server
                .get("/v1/forward-auth")
                .header("apikey", &limited)
                .header("x-keygate-require", "tokens:write")
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses().await, [403, 403, 429]);

    // An address outside the credential's networks is refused before it is counted.
    let pinned = token(json!({"kind": "service", "name": "p", "role": "viewer",
        "allowed_ips": ["10.0.0.0/8"], "rate_limit": {"requests": 1, "per_seconds": 60}}))
    .await;
    for ip in ["192.0.2.1", "192.0.2.1", "192.0.2.1"] {
        let body = ok_json(
            verify(
                &server,
                &server.token,
                json!({"credential": pinned, "ip": ip}),
            )
            .await,
        )
        .await;
        assert_eq!(body["code"], "IP_NOT_ALLOWED");
    }
    // Nor is a restricted credential verified without an address: refused, not guessed.
    let body = ok_json(verify(&server, &server.token, json!({"credential": pinned})).await).await;
    assert_eq!(body["code"], "IP_NOT_ALLOWED");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("give the client's address as `ip`"),
        "the detail says what is missing: {body}"
    );
    let body = ok_json(
        verify(
            &server,
            &server.token,
            json!({"credential": pinned, "ip": "10.1.2.3"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        body["code"], "VALID",
        "none of the refusals above was counted"
    );
}

async fn a_verified_credential_is_noted_as_used(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "used", "role": "viewer"})),
        )
        .await;
    ok_json(
        verify(
            &server,
            &server.token,
            json!({"credential": created["secret"]}),
        )
        .await,
    )
    .await;
    server.state.flush_usage().await;
    let token = server
        .expect(
            200,
            reqwest::Method::GET,
            &format!("/v1/tokens/{}", created["id"].as_str().unwrap()),
            &server.token,
            None,
        )
        .await;
    assert!(token["last_used_at"].is_string(), "{token}");
}
