//! Users, roles, sign-in, personal and service tokens (API.md §2–§4), through HTTP.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, START, TestServer, ok_json, problem};

on_every_backend!(
    the_personal_token_story,
    narrowed_personal_tokens_never_widen,
    tokens_expire_on_the_test_clock,
    personal_tokens_need_a_user_an_expiry_within_the_cap_and_no_role,
    privilege_escalation_is_refused_everywhere,
    revocation_single_and_bulk_with_warnings,
    secrets_appear_only_in_the_create_response,
    last_use_is_recorded_in_batches,
    last_use_records_the_address_and_the_stale_report_lists_unused_tokens,
    sign_in_failures_are_uniform_and_throttled,
    logout_ends_the_session,
    roles_define_permissions_and_changes_apply_at_once,
    roles_are_listed_newest_first_the_built_in_ones_last,
    bad_input_changes_nothing,
    users_without_a_password_get_one_generated_once_and_lists_page,
    a_wildcard_is_granted_only_by_a_holder_of_it_across_a_catalog_change,
    a_narrowing_beyond_the_role_is_refused_naming_what_the_role_lacks,
    a_new_password_ends_the_users_sessions,
    sign_in_attempts_sent_at_once_never_check_more_than_the_limit,
    an_email_is_unique_within_a_tenant_and_sign_in_asks_for_the_organization,
    delete_selected_sees_only_what_a_list_would_show,
    rolling_a_token_overlaps_the_old_secret_then_ends_it,
    a_roll_needs_what_revoking_needs_and_an_active_token,
    a_rolled_token_is_not_rolled_again,
    an_expiry_past_the_year_9999_is_refused,
    an_answer_showing_a_secret_is_not_to_be_stored,
    the_last_active_owner_is_not_demoted_disabled_or_deleted,
);

const PASSWORD: &str = "correct horse battery staple";

/// Creates a user with `role` as the owner; returns their id.
async fn create_user(server: &TestServer, email: &str, role: &str) -> String {
    let body = json!({"email": email, "name": "Ada", "role": role, "password": PASSWORD});
    let user = server
        .expect(201, Method::POST, "/v1/users", &server.token, Some(body))
        .await;
    user["id"].as_str().unwrap().to_owned()
}

async fn whoami_permissions(server: &TestServer, token: &str) -> Vec<String> {
    let body = ok_json(
        server
            .whoami(&[("authorization", &format!("Bearer {token}"))])
            .await,
    )
    .await;
    body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

async fn token_count(server: &TestServer) -> usize {
    let list = server
        .expect(200, Method::GET, "/v1/tokens", &server.token, None)
        .await;
    list["data"].as_array().unwrap().len()
}

async fn the_personal_token_story(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user_id = create_user(&server, "ada@example.com", "member").await;

    // Sign in; the session is a credential like any other.
    let session = server.login("ADA@example.com", PASSWORD).await;
    let cookie = format!("keygate_session={session}");
    let me = ok_json(server.whoami(&[("cookie", &cookie)]).await).await;
    assert_eq!(me["principal"]["type"], "user");
    assert_eq!(me["principal"]["id"], user_id.as_str());
    assert_eq!(me["principal"]["email"], "ada@example.com");
    assert_eq!(me["credential"]["kind"], "session");
    // The sign-in's answer shows the user as they are now: signed in last just then.
    let answer = ok_json(
        server
            .post("/v1/auth/login")
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        answer["user"]["last_sign_in_at"],
        START.to_string(),
        "{answer}"
    );

    // The session creates a personal token for its user.
    let created = server
        .request(Method::POST, "/v1/tokens")
        .header("cookie", &cookie)
        .json(&json!({"kind": "personal", "name": "laptop", "expires_in": 86_400}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let personal = created["secret"].as_str().unwrap().to_owned();
    assert!(personal.starts_with("kg_live_"));
    assert_eq!(created["user_id"], user_id.as_str());
    assert_eq!(created["status"], "active");
    assert!(created["role"].is_null());
    assert_eq!(created["hint"], &personal[personal.len() - 4..]);

    // It acts with the user's role: member.
    let permissions = whoami_permissions(&server, &personal).await;
    assert!(permissions.contains(&"tokens:write".to_owned()));
    assert!(!permissions.contains(&"users:write".to_owned()));

    // The user also makes a service token, which must outlive them.
    let service = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &personal,
            Some(json!({"kind": "service", "name": "ci", "role": "viewer"})),
        )
        .await;
    let service_secret = service["secret"].as_str().unwrap().to_owned();
    assert_eq!(service["created_by"], user_id.as_str());

    // Change the user's role: the token follows on the very next request.
    let path = format!("/v1/users/{user_id}");
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    let permissions = whoami_permissions(&server, &personal).await;
    assert!(
        !permissions.contains(&"tokens:write".to_owned()),
        "{permissions:?}"
    );
    assert!(permissions.contains(&"tokens:read".to_owned()));

    // Disable the user: refused at once; enable again: back.
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"status": "disabled"})),
        )
        .await;
    let refused = server
        .whoami(&[("authorization", &format!("Bearer {personal}"))])
        .await;
    let body = problem(refused, 401, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains("disabled"));
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"status": "active"})),
        )
        .await;
    whoami_permissions(&server, &personal).await;

    // Delete the user: their token and session die, their service token lives on.
    server
        .expect(204, Method::DELETE, &path, &server.token, None)
        .await;
    let refused = server
        .whoami(&[("authorization", &format!("Bearer {personal}"))])
        .await;
    problem(refused, 401, "unauthenticated").await;
    problem(
        server.whoami(&[("cookie", &cookie)]).await,
        401,
        "unauthenticated",
    )
    .await;
    let still = whoami_permissions(&server, &service_secret).await;
    assert!(still.contains(&"tokens:read".to_owned()));
    server
        .expect(404, Method::GET, &path, &server.token, None)
        .await;
}

async fn narrowed_personal_tokens_never_widen(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_user(&server, "bob@example.com", "admin").await;
    let session = server.login("bob@example.com", PASSWORD).await;
    let cookie = format!("keygate_session={session}");
    let create = |body: Value| {
        server
            .request(Method::POST, "/v1/tokens")
            .header("cookie", cookie.clone())
            .json(&body)
            .send()
    };
    let narrowed: Value = create(
        json!({"kind": "personal", "name": "read-only", "expires_in": 3600,
        "permissions": ["tokens:read", "users:read"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let narrowed = narrowed["secret"].as_str().unwrap().to_owned();
    let mut permissions = whoami_permissions(&server, &narrowed).await;
    permissions.sort();
    assert_eq!(permissions, ["tokens:read", "users:read"]);

    // The narrowed token cannot create a wider one: not even an un-narrowed personal token.
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &narrowed,
            Some(json!({"kind": "personal", "name": "wider", "expires_in": 60})),
        )
        .await;
    // It lacks tokens:write in the first place.
    problem(response, 403, "forbidden").await;

    let writer: Value = create(
        json!({"kind": "personal", "name": "writer", "expires_in": 3600,
        "permissions": ["tokens:*"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let writer = writer["secret"].as_str().unwrap().to_owned();
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &writer,
            Some(json!({"kind": "personal", "name": "wider", "expires_in": 60})),
        )
        .await;
    let body = problem(response, 403, "privilege-escalation").await;
    assert!(
        body["missing_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("users:write"))
    );
    server
        .expect(201, Method::POST, "/v1/tokens", &writer,
            Some(json!({"kind": "personal", "name": "same", "expires_in": 60, "permissions": ["tokens:read"]})))
        .await;
}

async fn tokens_expire_on_the_test_clock(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "short", "role": "viewer", "expires_in": 60})),
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    whoami_permissions(&server, &secret).await;
    server.clock.advance(Duration::from_secs(60));
    let body = problem(
        server.whoami(&[("apikey", &secret)]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    let token = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(token["status"], "expired");
    let expired = server
        .expect(
            200,
            Method::GET,
            "/v1/tokens?status=expired",
            &server.token,
            None,
        )
        .await;
    assert_eq!(expired["data"].as_array().unwrap().len(), 1);
}

/// A service token may live long, but not past 9999-12-31T23:59:59Z, the last time RFC 3339
/// writes: `expires_in` beyond it is refused, naming the field, and makes no token (it was
/// accepted, and the expiry shown as 1970, so every client saw a live token as long expired).
async fn an_expiry_past_the_year_9999_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let create = |expires_in: u64| json!({"kind": "service", "name": "long", "role": "viewer", "expires_in": expires_in});
    for too_far in [300_000_000_000_u64, u64::MAX] {
        let response = server
            .call(
                Method::POST,
                "/v1/tokens",
                &server.token,
                Some(create(too_far)),
            )
            .await;
        let body = problem(response, 400, "invalid-request").await;
        assert_eq!(body["errors"][0]["field"], "expires_in", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("9999-12-31T23:59:59Z"),
            "{body}"
        );
    }
    assert_eq!(token_count(&server).await, 1, "only the owner's");

    // Two centuries is fine, and shown as such everywhere.
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(create(6_311_520_000)),
        )
        .await;
    let expires_at = created["expires_at"].as_str().unwrap();
    assert!(expires_at.starts_with("22"), "{expires_at}");
    let secret = created["secret"].as_str().unwrap();
    let verdict = server
        .expect(
            200,
            Method::POST,
            "/v1/verify",
            &server.token,
            Some(json!({"credential": secret})),
        )
        .await;
    assert_eq!(verdict["expires_at"], expires_at);
}

/// Every 201 that shows a secret, the one time it is shown, says `Cache-Control: no-store`, so that
/// no cache on the way or in a browser keeps it (they said nothing, and could be kept).
async fn an_answer_showing_a_secret_is_not_to_be_stored(backend: Backend) {
    let server = TestServer::start(backend).await;
    let post = |path: String, body: Option<Value>| {
        let server = &server;
        async move {
            let response = server.call(Method::POST, &path, &server.token, body).await;
            assert_eq!(response.status(), 201, "{path}");
            assert_eq!(
                response
                    .headers()
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{path}"
            );
            response.json::<Value>().await.unwrap()
        }
    };
    let service = json!({"kind": "service", "name": "ci", "role": "viewer"});
    let token = post("/v1/tokens".into(), Some(service)).await;
    assert!(token["secret"].is_string());
    let id = token["id"].as_str().unwrap();
    assert!(post(format!("/v1/tokens/{id}/roll"), None).await["secret"].is_string());
    assert!(post("/v1/account/keys".into(), None).await["key"].is_string());
    let client = post(
        "/v1/oauth/clients".into(),
        Some(json!({"name": "sync", "role": "viewer"})),
    )
    .await;
    assert!(client["client_secret"].is_string());
    let id = client["client_id"]
        .as_str()
        .or(client["id"].as_str())
        .unwrap();
    let rolled = post(format!("/v1/oauth/clients/{id}/secret/roll"), None).await;
    assert!(rolled["client_secret"].is_string());
    let webhook = json!({"url": "https://93.184.216.34/hook", "events": ["*"]});
    assert!(post("/v1/webhooks".into(), Some(webhook)).await["secret"].is_string());
    let user = json!({"email": "new@example.com", "name": "New", "role": "viewer"});
    assert!(post("/v1/users".into(), Some(user)).await["initial_password"].is_string());
    let tenant = json!({"name": "Sub", "slug": "sub", "first_user": {"email": "o@sub.example", "name": "O"}});
    assert!(post("/v1/tenants".into(), Some(tenant)).await["initial_password"].is_string());
}

async fn personal_tokens_need_a_user_an_expiry_within_the_cap_and_no_role(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.tokens.personal_max_days = 30).await;
    // The owner token is a service token: it cannot make personal tokens.
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "personal", "name": "x", "expires_in": 60})),
        )
        .await;
    problem(response, 403, "forbidden").await;

    create_user(&server, "cy@example.com", "member").await;
    let session = server.login("cy@example.com", PASSWORD).await;
    let post = |body: Value| {
        server
            .request(Method::POST, "/v1/tokens")
            .header("cookie", format!("keygate_session={session}"))
            .json(&body)
            .send()
    };
    for (body, field) in [
        (json!({"kind": "personal", "name": "x"}), "expires_at"),
        (
            json!({"kind": "personal", "name": "x", "expires_in": 31 * 86_400}),
            "expires_in",
        ),
        (
            json!({"kind": "personal", "name": "x", "expires_in": 60, "role": "member"}),
            "role",
        ),
        (
            json!({"kind": "personal", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"kind": "personal", "name": " ", "expires_in": 60}),
            "name",
        ),
        (
            json!({"kind": "personal", "name": "x", "expires_in": 60, "permissions": ["nope:read"]}),
            "permissions[0]",
        ),
        (
            json!({"kind": "personal", "name": "x", "expires_in": 60, "allowed_ips": ["10.0.0.0/8", "banana"]}),
            "allowed_ips[1]",
        ),
    ] {
        let body = problem(post(body.clone()).await.unwrap(), 400, "invalid-request").await;
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field}: {body}");
    }
}

async fn privilege_escalation_is_refused_everywhere(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_user(&server, "mia@example.com", "member").await;
    let member = server.login("mia@example.com", PASSWORD).await;
    let member: Value = server
        .request(Method::POST, "/v1/tokens")
        .header("cookie", format!("keygate_session={member}"))
        .json(&json!({"kind": "personal", "name": "m", "expires_in": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member = member["secret"].as_str().unwrap().to_owned();

    // A service token with more than a member holds.
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &member,
            Some(json!({"kind": "service", "name": "x", "role": "admin"})),
        )
        .await;
    let body = problem(response, 403, "privilege-escalation").await;
    let missing = body["missing_permissions"].as_array().unwrap();
    assert!(missing.contains(&json!("users:write")), "{body}");
    // The admin role's wildcard is named as patterns, each a permission or `resource:*`.
    assert!(missing.contains(&json!("users:*")), "{body}");
    assert!(
        missing.iter().all(|p| {
            let p = p.as_str().unwrap();
            !p.contains(' ') && (p == "*" || p.split_once(':').is_some())
        }),
        "{body}"
    );

    // An admin cannot make an owner, nor a role with tenants:write.
    let admin = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "admin", "role": "admin"})),
        )
        .await;
    let admin = admin["secret"].as_str().unwrap().to_owned();
    let response = server
        .call(
            Method::POST,
            "/v1/users",
            &admin,
            Some(json!({"email": "o@example.com", "name": "O", "role": "owner"})),
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
    let response = server
        .call(
            Method::POST,
            "/v1/roles",
            &admin,
            Some(json!({"name": "tenant-maker", "permissions": ["tenants:*"]})),
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
    // Nor strip the owner's own token of its power.
    let owner_token_id =
        ok_json(server.whoami(&[("apikey", &server.token)]).await).await["credential"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let response = server
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{owner_token_id}"),
            &admin,
            None,
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
    whoami_permissions(&server, &server.token).await;
}

async fn revocation_single_and_bulk_with_warnings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    let mut secrets = Vec::new();
    for name in ["a", "b", "c"] {
        let token = server
            .expect(
                201,
                Method::POST,
                "/v1/tokens",
                &server.token,
                Some(json!({"kind": "service", "name": name, "role": "viewer"})),
            )
            .await;
        ids.push(token["id"].as_str().unwrap().to_owned());
        secrets.push(token["secret"].as_str().unwrap().to_owned());
    }
    for secret in &secrets {
        whoami_permissions(&server, secret).await;
    }
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{}", ids[0]),
            &server.token,
            None,
        )
        .await;
    problem(
        server.whoami(&[("apikey", &secrets[0])]).await,
        401,
        "unauthenticated",
    )
    .await;
    // Revoked before: still a 404, saying so (reads still show the token).
    let again = server
        .expect(
            404,
            Method::DELETE,
            &format!("/v1/tokens/{}", ids[0]),
            &server.token,
            None,
        )
        .await;
    assert_eq!(
        again["detail"],
        format!("token `{}` is already revoked", ids[0]),
        "{again}"
    );

    let path = format!("/v1/tokens?id={}&id=tok_doesnotexist&id={}", ids[1], ids[2]);
    let body = server
        .expect(200, Method::DELETE, &path, &server.token, None)
        .await;
    assert_eq!(body["deleted"], json!([ids[1], ids[2]]));
    assert_eq!(
        body["warnings"],
        json!([{"code": "not-found", "detail": "tok_doesnotexist"}])
    );
    for secret in &secrets[1..] {
        problem(
            server.whoami(&[("apikey", secret)]).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    let revoked = server
        .expect(
            200,
            Method::GET,
            "/v1/tokens?status=revoked",
            &server.token,
            None,
        )
        .await;
    assert_eq!(revoked["data"].as_array().unwrap().len(), 3);
    problem(
        server
            .call(Method::DELETE, "/v1/tokens", &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
    // An empty id is a mistake to name, not a token to look for.
    let body = problem(
        server
            .call(Method::DELETE, "/v1/tokens?id=", &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "id", "{body}");
    let body = problem(
        server
            .call(
                Method::DELETE,
                &format!("/v1/tokens?id={}&id=", ids[0]),
                &server.token,
                None,
            )
            .await,
        400,
        "invalid-request",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "id[1]", "{body}");
}

async fn secrets_appear_only_in_the_create_response(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(201, Method::POST, "/v1/tokens", &server.token,
            Some(json!({"kind": "service", "name": "ci", "role": "member", "description": "deploys"})))
        .await;
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    for path in [
        "/v1/tokens".to_owned(),
        format!("/v1/tokens/{id}"),
        format!("/v1/tokens?id={id}"),
    ] {
        let text = server
            .call(Method::GET, &path, &server.token, None)
            .await
            .text()
            .await
            .unwrap();
        assert!(!text.contains(secret), "{path}: {text}");
        assert!(!text.contains(&secret[..secret.len() - 4]), "{path}");
        assert!(!text.contains("\"secret\""), "{path}");
        assert!(
            text.contains(&secret[secret.len() - 4..]),
            "the hint is shown: {text}"
        );
    }
}

async fn last_use_is_recorded_in_batches(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "ci", "role": "viewer"})),
        )
        .await;
    let path = format!("/v1/tokens/{}", created["id"].as_str().unwrap());
    assert!(created["last_used_at"].is_null());
    server.clock.advance(Duration::from_secs(90));
    whoami_permissions(&server, created["secret"].as_str().unwrap()).await;
    server.state.flush_usage().await;
    let token = server
        .expect(200, Method::GET, &path, &server.token, None)
        .await;
    let expected = keygate_core::Timestamp::from_unix(crate::harness::START.unix() + 90);
    assert_eq!(token["last_used_at"], expected.to_string());
}

async fn last_use_records_the_address_and_the_stale_report_lists_unused_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = |name: &'static str| {
        server.expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": name, "role": "viewer"})),
        )
    };
    let used = token("used").await;
    let idle = token("idle").await;
    let key = server
        .expect(201, Method::POST, "/v1/account/keys", &server.token, None)
        .await;
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(json!({"name": "app", "role": "viewer"})),
        )
        .await;
    let day = Duration::from_secs(86_400);
    server.clock.advance(day * 5);
    whoami_permissions(&server, used["secret"].as_str().unwrap()).await;
    whoami_permissions(&server, key["key"].as_str().unwrap()).await;
    let granted = server
        .post("/v1/oauth/token")
        .basic_auth(
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    server.state.flush_usage().await;

    let path = |id: &Value| format!("/v1/tokens/{}", id.as_str().unwrap());
    let read = server
        .expect(200, Method::GET, &path(&used["id"]), &server.token, None)
        .await;
    assert_eq!(read["last_used_ip"], "127.0.0.1", "{read}");
    let read = server
        .expect(200, Method::GET, &path(&idle["id"]), &server.token, None)
        .await;
    assert!(read["last_used_ip"].is_null() && read["last_used_at"].is_null());
    let keys = server
        .expect(200, Method::GET, "/v1/account/keys", &server.token, None)
        .await;
    assert_eq!(keys["data"][0]["last_used_ip"], "127.0.0.1", "{keys}");
    let read = server
        .expect(
            200,
            Method::GET,
            &format!(
                "/v1/oauth/clients/{}",
                client["client_id"].as_str().unwrap()
            ),
            &server.token,
            None,
        )
        .await;
    assert_eq!(read["last_used_ip"], "127.0.0.1", "{read}");

    // Three days on, the uses written: "not used for a week" is the token never used; "for two
    // days" adds every one last used five days in (the owner's token among them).
    server.clock.advance(day * 3);
    server.state.flush_usage().await;
    let stale = async |days: u32| {
        let path = format!("/v1/tokens?unused_for_days={days}");
        server
            .expect(200, Method::GET, &path, &server.token, None)
            .await
    };
    let names = |list: Value| -> Vec<String> {
        let mut names: Vec<String> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(stale(7).await), ["idle"]);
    assert_eq!(names(stale(2).await), ["bootstrap", "idle", "used"]);
    for bad in ["0", "36501", "soon", ""] {
        let body = problem(
            server
                .call(
                    Method::GET,
                    &format!("/v1/tokens?unused_for_days={bad}"),
                    &server.token,
                    None,
                )
                .await,
            400,
            "invalid-request",
        )
        .await;
        assert!(
            body.to_string().contains("unused_for_days"),
            "{bad}: {body}"
        );
    }
}

async fn sign_in_failures_are_uniform_and_throttled(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_user(&server, "dee@example.com", "viewer").await;
    let attempt = |email: &'static str, password: &'static str| {
        server
            .post("/v1/auth/login")
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let unknown = problem(
        attempt("nobody@example.com", PASSWORD).await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    let wrong = problem(
        attempt("dee@example.com", "wrong password!!")
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(unknown["detail"], wrong["detail"]);
    assert_eq!(unknown["title"], wrong["title"]);

    for _ in 0..4 {
        attempt("dee@example.com", "wrong password!!")
            .await
            .unwrap();
    }
    let throttled = attempt("dee@example.com", PASSWORD).await.unwrap();
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    // As every 429 (API.md §1): the limit reached (five failures per email), none left, and
    // when it resets.
    let header = |name: &str| throttled.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("ratelimit-limit"), "5");
    assert_eq!(header("ratelimit-remaining"), "0");
    assert_eq!(header("ratelimit-reset"), retry_after.to_string());
    problem(throttled, 429, "rate-limited").await;
    server.clock.advance(Duration::from_secs(15 * 60));
    server.login("dee@example.com", PASSWORD).await;
}

async fn logout_ends_the_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_user(&server, "eve@example.com", "viewer").await;
    let session = server.login("eve@example.com", PASSWORD).await;
    let cookie = format!("keygate_session={session}");
    ok_json(server.whoami(&[("cookie", &cookie)]).await).await;
    let response = server
        .post("/v1/auth/logout")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    problem(
        server.whoami(&[("cookie", &cookie)]).await,
        401,
        "unauthenticated",
    )
    .await;
    let response = server
        .call(Method::POST, "/v1/auth/logout", &server.token, None)
        .await;
    problem(response, 400, "invalid-request").await;
}

/// API.md §1: lists are newest first. The tenant's own roles come first, newest first, then the
/// built-in ones (made with the store); they came first before, their ids sorting after
/// generated ones. Pages of one make the same list, each role once.
async fn roles_are_listed_newest_first_the_built_in_ones_last(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut made = Vec::new();
    for name in ["older", "newer"] {
        let role = server
            .expect(
                201,
                Method::POST,
                "/v1/roles",
                &server.token,
                Some(json!({"name": name, "permissions": ["tokens:read"]})),
            )
            .await;
        made.push(role["id"].as_str().unwrap().to_owned());
    }
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ids(&server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await);
    assert_eq!(all[..2], [made[1].clone(), made[0].clone()], "{all:?}");
    assert!(all[2..].iter().all(|id| !made.contains(id)), "{all:?}");
    assert!(all.contains(&"rol_owner".to_owned()), "{all:?}");
    let mut paged = Vec::new();
    let mut path = "/v1/roles?limit=1".to_owned();
    loop {
        let page = server
            .expect(200, Method::GET, &path, &server.token, None)
            .await;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/roles?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, all);
    // The built-in ones are as old as the deployment (they showed 1970-01-01).
    let owner = server
        .expect(200, Method::GET, "/v1/roles/rol_owner", &server.token, None)
        .await;
    assert_eq!(
        owner["created_at"],
        crate::harness::START.to_string(),
        "{owner}"
    );
}

async fn roles_define_permissions_and_changes_apply_at_once(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.permissions = vec!["zones:read".into(), "zones:write".into()]
    })
    .await;
    let catalog = server
        .expect(200, Method::GET, "/v1/permissions", &server.token, None)
        .await;
    assert!(
        catalog["data"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "zones:write", "builtin": false}))
    );
    // Paged as every list (it answered everything whatever it was asked): pages of five make the
    // same catalog, and a bad limit, cursor or key is refused by name.
    let mut paged = Vec::new();
    let mut path = "/v1/permissions?limit=5".to_owned();
    loop {
        let page = server
            .expect(200, Method::GET, &path, &server.token, None)
            .await;
        let items = page["data"].as_array().unwrap();
        assert!(items.len() <= 5, "{page}");
        paged.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/permissions?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(json!(paged), catalog["data"]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("cursor=zzz", "cursor"),
        ("bogus=1", "bogus"),
    ] {
        let response = server
            .call(
                Method::GET,
                &format!("/v1/permissions?{query}"),
                &server.token,
                None,
            )
            .await;
        let body = problem(response, 400, "invalid-request").await;
        assert!(body.to_string().contains(field), "{query}: {body}");
    }

    let role = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "zone-editor", "permissions": ["zones:*", "tokens:read"]})),
        )
        .await;
    let role_id = role["id"].as_str().unwrap().to_owned();
    assert_eq!(role["builtin"], false);
    let token = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "zones", "role": role_id})),
        )
        .await;
    let secret = token["secret"].as_str().unwrap().to_owned();
    let mut permissions = whoami_permissions(&server, &secret).await;
    permissions.sort();
    assert_eq!(permissions, ["tokens:read", "zones:read", "zones:write"]);

    let path = format!("/v1/roles/{role_id}");
    server
        .expect(
            200,
            Method::PUT,
            &path,
            &server.token,
            Some(json!({"name": "zone-reader", "permissions": ["zones:read"]})),
        )
        .await;
    assert_eq!(whoami_permissions(&server, &secret).await, ["zones:read"]);

    let body = problem(
        server
            .call(Method::DELETE, &path, &server.token, None)
            .await,
        409,
        "role-in-use",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("hold"));
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{}", token["id"].as_str().unwrap()),
            &server.token,
            None,
        )
        .await;
    // An OAuth client holding the role keeps it in use too.
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(json!({"name": "zones app", "role": role_id})),
        )
        .await;
    problem(
        server
            .call(Method::DELETE, &path, &server.token, None)
            .await,
        409,
        "role-in-use",
    )
    .await;
    server
        .expect(
            204,
            Method::DELETE,
            &format!(
                "/v1/oauth/clients/{}",
                client["client_id"].as_str().unwrap()
            ),
            &server.token,
            None,
        )
        .await;
    server
        .expect(204, Method::DELETE, &path, &server.token, None)
        .await;
    server
        .expect(404, Method::GET, &path, &server.token, None)
        .await;

    let response = server
        .call(
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "bad", "permissions": ["zones:read", "zone:*", "tokens:explode"]})),
        )
        .await;
    let body = problem(response, 400, "invalid-request").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["permissions[1]", "permissions[2]"]);
    let response = server
        .call(
            Method::PUT,
            "/v1/roles/rol_admin",
            &server.token,
            Some(json!({"name": "mine", "permissions": ["*"]})),
        )
        .await;
    problem(response, 409, "builtin-role").await;
    let roles = server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await;
    assert_eq!(roles["data"].as_array().unwrap().len(), 4);
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "x", "role": "rol_0VbgSomeoneElses"})),
        )
        .await;
    // A role the body names that is not here is a bad value of that field (it was a 404, which
    // reads as a wrong URL), for a token, a user, an OAuth client and a user's new role alike.
    let body = problem(response, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "role", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("there is no role `rol_0VbgSomeoneElses`"),
        "{body}"
    );
    let user = server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({"email": "role@example.com", "name": "R", "role": "viewer"})),
        )
        .await;
    let user_path = format!("/v1/users/{}", user["id"].as_str().unwrap());
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/users",
            json!({"email": "r2@example.com", "name": "R", "role": "viewr"}),
        ),
        (
            Method::POST,
            "/v1/oauth/clients",
            json!({"name": "c", "role": "rol_nope"}),
        ),
        (Method::PATCH, user_path.as_str(), json!({"role": "viewr"})),
    ] {
        let response = server
            .call(method.clone(), path, &server.token, Some(body))
            .await;
        let refused = problem(response, 400, "invalid-request").await;
        assert_eq!(
            refused["errors"][0]["field"], "role",
            "{method} {path}: {refused}"
        );
    }
}

async fn bad_input_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let before = token_count(&server).await;
    let post = |body: String, content_type: &'static str| {
        server
            .post("/v1/tokens")
            .bearer_auth(&server.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let valid = r#"{"kind": "service", "name": "x", "role": "viewer"}"#;
    for (body, code) in [
        (
            r#"{"kind": "service", "name": "x", "role": "viewer", "colour": "red"}"#.to_owned(),
            "invalid-request",
        ),
        (
            r#"{"kind": "service", "name": 7, "role": "viewer"}"#.to_owned(),
            "invalid-request",
        ),
        (
            r#"{"kind": "sometimes", "name": "x", "role": "viewer"}"#.to_owned(),
            "invalid-request",
        ),
        (
            r#"{"kind": "service", "name": "x", "role": "viewer", "expires_at": "next tuesday"}"#
                .to_owned(),
            "invalid-request",
        ),
        (
            r#"{"kind": "service", "name": "x", "role": "viewer", "expires_in": -5}"#.to_owned(),
            "invalid-request",
        ),
        (
            format!(
                r#"{{"kind": "service", "name": "{}", "role": "viewer"}}"#,
                "x".repeat(2 * 1024 * 1024)
            ),
            "payload-too-large",
        ),
    ] {
        let status = if code == "payload-too-large" {
            413
        } else {
            400
        };
        problem(post(body, "application/json").await.unwrap(), status, code).await;
    }
    problem(
        post(valid.to_owned(), "text/plain").await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    let response = server
        .call(Method::POST, "/v1/users", &server.token,
            Some(json!({"email": "not an email", "name": "a\u{0}b", "role": "viewer", "password": "short"})))
        .await;
    let body = problem(response, 400, "invalid-request").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name", "password"]);
    assert_eq!(token_count(&server).await, before);
    let users = server
        .expect(200, Method::GET, "/v1/users", &server.token, None)
        .await;
    assert_eq!(
        users["data"].as_array().unwrap().len(),
        1,
        "only the bootstrap owner"
    );

    create_user(&server, "dup@example.com", "viewer").await;
    let response = server
        .call(
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({"email": "DUP@example.com", "name": "Dup", "role": "viewer"})),
        )
        .await;
    problem(response, 409, "already-exists").await;
    problem(
        server
            .call(Method::GET, "/v1/tokens?stauts=active", &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
    problem(
        server
            .call(Method::GET, "/v1/tokens?limit=0", &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
}

async fn users_without_a_password_get_one_generated_once_and_lists_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({"email": "gen@example.com", "name": "Gen", "role": "viewer"})),
        )
        .await;
    let password = created["initial_password"].as_str().unwrap().to_owned();
    server.login("gen@example.com", &password).await;
    let id = created["id"].as_str().unwrap();
    let fetched = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/users/{id}"),
            &server.token,
            None,
        )
        .await;
    assert!(fetched.get("initial_password").is_none());
    assert!(fetched.get("password_hash").is_none());

    for i in 0..3 {
        create_user(&server, &format!("p{i}@example.com"), "viewer").await;
    }
    let first = server
        .expect(200, Method::GET, "/v1/users?limit=2", &server.token, None)
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/users?limit=2&cursor={cursor}"),
            &server.token,
            None,
        )
        .await;
    let third_cursor = second["next_cursor"].as_str().unwrap();
    let last = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/users?limit=2&cursor={third_cursor}"),
            &server.token,
            None,
        )
        .await;
    let total = [&first, &second, &last]
        .iter()
        .map(|p| p["data"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(total, 5, "bootstrap owner + gen + three");
    assert!(last["next_cursor"].is_null());
}

async fn a_wildcard_is_granted_only_by_a_holder_of_it_across_a_catalog_change(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.permissions = vec!["zones:read".into()]).await;
    // A role manager who holds zones:read, and the role and token permissions, but no zones:*.
    let manager_role = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "role-manager",
                "permissions": ["roles:*", "tokens:*", "zones:read"]})),
        )
        .await;
    let manager = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "manager", "role": manager_role["id"]})),
        )
        .await;
    let manager = manager["secret"].as_str().unwrap().to_owned();

    // Today `zones:*` expands to zones:read, which the manager holds; it is refused all the same.
    let response = server
        .call(
            Method::POST,
            "/v1/roles",
            &manager,
            Some(json!({"name": "zones-all", "permissions": ["zones:*"]})),
        )
        .await;
    let body = problem(response, 403, "privilege-escalation").await;
    assert_eq!(body["missing_permissions"], json!(["zones:*"]), "{body}");
    // Nor may it hand out an existing `zones:*` role, or narrow a token to `zones:*`.
    let zones_all = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "zones-all", "permissions": ["zones:*"]})),
        )
        .await;
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &manager,
            Some(json!({"kind": "service", "name": "z", "role": zones_all["id"]})),
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
    // What it may grant, the exact permission, it grants.
    let narrow = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &manager,
            Some(json!({"name": "zones-read", "permissions": ["zones:read"]})),
        )
        .await;
    let reader = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &manager,
            Some(json!({"kind": "service", "name": "reader", "role": narrow["id"]})),
        )
        .await;
    let reader = reader["secret"].as_str().unwrap().to_owned();
    // The owner, who holds `*`, may grant the wildcard.
    let wide = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "wide", "role": zones_all["id"]})),
        )
        .await;
    let wide = wide["secret"].as_str().unwrap().to_owned();

    // The operator declares zones:write: the wildcard grows, the manager's grants do not.
    let server = server
        .restart_with(|c| c.permissions = vec!["zones:read".into(), "zones:write".into()])
        .await;
    assert!(
        whoami_permissions(&server, &wide)
            .await
            .contains(&"zones:write".to_owned())
    );
    assert!(
        !whoami_permissions(&server, &reader)
            .await
            .contains(&"zones:write".to_owned())
    );
    assert!(
        !whoami_permissions(&server, &manager)
            .await
            .contains(&"zones:write".to_owned())
    );
    let response = server
        .call(
            Method::POST,
            "/v1/roles",
            &manager,
            Some(json!({"name": "zones-all-2", "permissions": ["zones:*"]})),
        )
        .await;
    problem(response, 403, "privilege-escalation").await;
}

/// The owner holds `tokens:write`, but a viewer token cannot have it: the request's mistake, a 400
/// naming each entry beyond the role (it was a 403 `privilege-escalation` saying the caller did
/// not hold what the caller does hold).
async fn a_narrowing_beyond_the_role_is_refused_naming_what_the_role_lacks(backend: Backend) {
    let server = TestServer::start(backend).await;
    let before = token_count(&server).await;
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "odd", "role": "viewer",
                "permissions": ["tokens:read", "tokens:write", "users:*"]})),
        )
        .await;
    let body = problem(response, 400, "invalid-request").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["permissions[1]", "permissions[2]"], "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tokens:write")
    );
    assert_eq!(token_count(&server).await, before, "nothing was created");

    let response = server
        .call(
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(json!({"name": "odd", "role": "member", "permissions": ["users:write"]})),
        )
        .await;
    let body = problem(response, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "permissions[0]", "{body}");
    let clients = server
        .expect(200, Method::GET, "/v1/oauth/clients", &server.token, None)
        .await;
    assert_eq!(clients["data"].as_array().unwrap().len(), 0);

    // Within the role, a narrowing is taken as given.
    let token = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "fine", "role": "member",
                "permissions": ["tokens:read", "tokens:write"]})),
        )
        .await;
    let mut held = whoami_permissions(&server, token["secret"].as_str().unwrap()).await;
    held.sort();
    assert_eq!(held, ["tokens:read", "tokens:write"]);
}

async fn a_new_password_ends_the_users_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = create_user(&server, "ada@example.com", "admin").await;
    let laptop = format!(
        "keygate_session={}",
        server.login("ada@example.com", PASSWORD).await
    );
    let phone = format!(
        "keygate_session={}",
        server.login("ada@example.com", PASSWORD).await
    );
    let whoami = async |cookie: &str| server.whoami(&[("cookie", cookie)]).await.status().as_u16();
    assert_eq!((whoami(&laptop).await, whoami(&phone).await), (200, 200));

    // Ada changes her own password on her laptop: the phone is signed out, the laptop stays.
    let response = server
        .request(Method::PATCH, &format!("/v1/users/{id}"))
        .header("cookie", &laptop)
        .json(&json!({"password": "a brand new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!((whoami(&laptop).await, whoami(&phone).await), (200, 401));

    // The owner resets it: every session of hers ends, on the very next request.
    server
        .expect(
            200,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &server.token,
            Some(json!({"password": "reset by the owner"})),
        )
        .await;
    assert_eq!(whoami(&laptop).await, 401);
    // A change without a new password ends nothing.
    let fresh = format!(
        "keygate_session={}",
        server.login("ada@example.com", "reset by the owner").await
    );
    server
        .expect(
            200,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &server.token,
            Some(json!({"name": "Ada L."})),
        )
        .await;
    assert_eq!(whoami(&fresh).await, 200);
}

async fn sign_in_attempts_sent_at_once_never_check_more_than_the_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_user(&server, "eve@example.com", "viewer").await;
    let attempts = (0..16).map(|i| {
        server
            .post("/v1/auth/login")
            .json(&json!({"email": "eve@example.com", "password": format!("guess number {i}")}))
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (checked, throttled),
        (5, 11),
        "five passwords checked, the rest refused unchecked: {statuses:?}"
    );
}

/// Creates a sub-customer of the root with an owner; returns (tenant id, slug, owner's token).
async fn sub_customer(server: &TestServer, slug: &str, owner_email: &str) -> (String, String) {
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": slug, "slug": slug,
                "first_user": {"email": owner_email, "name": "Owner", "password": PASSWORD}})),
        )
        .await;
    let session = server.login_to(owner_email, PASSWORD, Some(slug)).await;
    (
        created["tenant"]["id"].as_str().unwrap().to_owned(),
        format!("keygate_session={session}"),
    )
}

async fn an_email_is_unique_within_a_tenant_and_sign_in_asks_for_the_organization(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let (_, acme) = sub_customer(&server, "acme", "boss@acme.example").await;
    let (_, globex) = sub_customer(&server, "globex", "boss@globex.example").await;
    let add_user = async |cookie: &str, email: &str, password: &str| {
        server
            .post("/v1/users")
            .header("cookie", cookie)
            .json(&json!({"email": email, "name": "Sam", "role": "viewer", "password": password}))
            .send()
            .await
            .unwrap()
    };

    // Globex's user, and the root owner's address: Acme cannot tell they exist.
    assert_eq!(
        add_user(&globex, "sam@example.com", PASSWORD)
            .await
            .status(),
        201
    );
    assert_eq!(
        add_user(&acme, "sam@example.com", PASSWORD).await.status(),
        201
    );
    assert_eq!(
        add_user(&acme, "OWNER@example.com", "another passphrase")
            .await
            .status(),
        201
    );
    // Within one tenant an address is taken once (case-insensitively).
    problem(
        add_user(&acme, "Sam@Example.com", PASSWORD).await,
        409,
        "already-exists",
    )
    .await;

    // The same password in two tenants: sign-in asks which.
    let login = async |email: &str, password: &str, organization: Option<&str>| {
        let mut body = json!({"email": email, "password": password});
        if let Some(organization) = organization {
            body["organization"] = json!(organization);
        }
        server
            .post("/v1/auth/login")
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let body = problem(
        login("sam@example.com", PASSWORD, None).await,
        409,
        "organization-required",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("organization"));
    for (organization, tenant) in [("acme", "acme"), ("GLOBEX", "globex")] {
        let response = login("sam@example.com", PASSWORD, Some(organization)).await;
        assert_eq!(response.status(), 200);
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        let session = cookie.split(';').next().unwrap().to_owned();
        let me = ok_json(server.whoami(&[("cookie", &session)]).await).await;
        assert_eq!(me["organization"]["slug"], tenant);
    }
    // A wrong password, or an organization where the address has no account, is the usual 401.
    problem(
        login("sam@example.com", "not the password", None).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        login("sam@example.com", PASSWORD, Some("root")).await,
        401,
        "unauthenticated",
    )
    .await;
    // Different passwords: the address and password together say which account.
    let response = login("owner@example.com", "another passphrase", None).await;
    assert_eq!(response.status(), 200);
    let response = login("owner@example.com", &server.password, None).await;
    assert_eq!(response.status(), 200);
}

async fn delete_selected_sees_only_what_a_list_would_show(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Tokens only: without users:read, other users' personal tokens are not theirs to see.
    let role = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "tokens-only", "permissions": ["tokens:*"]})),
        )
        .await;
    create_user(&server, "mo@example.com", role["id"].as_str().unwrap()).await;
    let cookie = format!(
        "keygate_session={}",
        server.login("mo@example.com", PASSWORD).await
    );
    let personal = |cookie: Option<&str>, name: &str| {
        let mut request = server
            .request(Method::POST, "/v1/tokens")
            .json(&json!({"kind": "personal", "name": name, "expires_in": 3600}));
        request = match cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request.header("cookie", ""),
        };
        request.send()
    };
    let mine: Value = personal(Some(&cookie), "mine")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = mine["id"].as_str().unwrap().to_owned();
    let owner_cookie = format!(
        "keygate_session={}",
        server.login("owner@example.com", &server.password).await
    );
    let theirs: Value = personal(Some(&owner_cookie), "theirs")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs = theirs["id"].as_str().unwrap().to_owned();

    // They see their own personal tokens, not the owner's: those are "not found".
    let response = server
        .request(
            Method::DELETE,
            &format!("/v1/tokens?id={mine}&id={theirs}&id={mine}&id=nonsense"),
        )
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let body = ok_json(response).await;
    assert_eq!(body["deleted"], json!([mine]), "{body}");
    assert_eq!(
        body["warnings"],
        json!([
            {"code": "not-found", "detail": theirs},
            {"code": "not-found", "detail": "nonsense"}
        ]),
        "{body}"
    );
    // The owner's token still works; deleting again finds nothing.
    let still = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{theirs}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(still["status"], "active");
    let again = server
        .request(Method::DELETE, &format!("/v1/tokens?id={mine}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let again = ok_json(again).await;
    assert_eq!(again["deleted"], json!([]));
}

/// API.md §14: the successor is the token again with a new secret; both work during the
/// overlap, then only the successor.
async fn rolling_a_token_overlaps_the_old_secret_then_ends_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({
        "kind": "service", "name": "deploy", "description": "CI", "role": "member",
        "permissions": ["tokens:read", "users:read"], "expires_in": 86_400,
        "allowed_ips": ["127.0.0.0/8"], "rate_limit": {"requests": 100, "per_seconds": 60}
    });
    let old = server
        .expect(201, Method::POST, "/v1/tokens", &server.token, Some(body))
        .await;
    let old_id = old["id"].as_str().unwrap();
    let old_secret = old["secret"].as_str().unwrap();
    server.clock.advance(Duration::from_secs(3_600));

    let path = format!("/v1/tokens/{old_id}/roll");
    let rolled = server
        .expect(
            201,
            Method::POST,
            &path,
            &server.token,
            Some(json!({"expire_previous_in": 600})),
        )
        .await;
    let new_id = rolled["id"].as_str().unwrap();
    let new_secret = rolled["secret"].as_str().unwrap();
    assert_ne!(new_id, old_id);
    assert_ne!(new_secret, old_secret);
    assert_eq!(rolled["rolled_from"], old_id);
    assert_eq!(rolled["rolled_to"], Value::Null);
    for field in [
        "kind",
        "name",
        "description",
        "role",
        "permissions",
        "allowed_ips",
        "rate_limit",
    ] {
        assert_eq!(rolled[field], old[field], "{field} carries over");
    }
    // As long a life as the old token was given, from now.
    let day_later = |at: &Value| {
        time::OffsetDateTime::parse(
            at.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        day_later(&rolled["expires_at"]) - day_later(&rolled["created_at"]),
        time::Duration::days(1)
    );

    let previous = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{old_id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(previous["rolled_to"], new_id);
    assert_eq!(previous["status"], "active");
    assert_eq!(
        day_later(&previous["expires_at"]) - day_later(&rolled["created_at"]),
        time::Duration::seconds(600),
        "the old token now ends with the overlap"
    );
    // Both work during the overlap.
    assert_eq!(whoami_permissions(&server, old_secret).await.len(), 2);
    assert_eq!(whoami_permissions(&server, new_secret).await.len(), 2);

    server.clock.advance(Duration::from_secs(600));
    problem(
        server.whoami(&[("apikey", old_secret)]).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(whoami_permissions(&server, new_secret).await.len(), 2);

    let events = server
        .expect(
            200,
            Method::GET,
            "/v1/audit-events?action=token.roll",
            &server.token,
            None,
        )
        .await;
    let event = &events["data"][0];
    assert_eq!(event["target"]["id"], old_id);
    assert_eq!(event["status"], 201);

    // No body takes the default overlap of an hour.
    let again = server
        .expect(
            201,
            Method::POST,
            &format!("/v1/tokens/{new_id}/roll"),
            &server.token,
            None,
        )
        .await;
    let second = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{new_id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(second["rolled_to"], again["id"]);
    assert_eq!(
        day_later(&second["expires_at"]) - day_later(&again["created_at"]),
        time::Duration::hours(1)
    );
}

/// A second roll of the same token, one after the other (a retry) or both at once, would fork it:
/// two successors, the first dropped from the chain, the second living only as long as the
/// overlap. It is refused (409 `already-rolled`, naming the successor), and changes nothing.
async fn a_rolled_token_is_not_rolled_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let create = json!({"kind": "service", "name": "ci", "role": "member", "expires_in": 7200});
    let roll = |id: &str| format!("/v1/tokens/{id}/roll");
    let token = |id: String| {
        let server = &server;
        async move {
            server
                .expect(
                    200,
                    Method::GET,
                    &format!("/v1/tokens/{id}"),
                    &server.token,
                    None,
                )
                .await
        }
    };

    let first = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(create.clone()),
        )
        .await;
    let id = first["id"].as_str().unwrap().to_owned();
    let overlap = Some(json!({"expire_previous_in": 60}));
    let successor = server
        .expect(
            201,
            Method::POST,
            &roll(&id),
            &server.token,
            overlap.clone(),
        )
        .await;
    let successor_id = successor["id"].as_str().unwrap();
    let again = server
        .call(Method::POST, &roll(&id), &server.token, overlap.clone())
        .await;
    let body = problem(again, 409, "already-rolled").await;
    assert!(
        body["detail"].as_str().unwrap().contains(successor_id),
        "{body}"
    );
    let rolled = token(id.clone()).await;
    assert_eq!(rolled["rolled_to"], successor_id, "the chain is unchanged");
    let listed = server
        .expect(
            200,
            Method::GET,
            "/v1/tokens?status=active",
            &server.token,
            None,
        )
        .await;
    let successors = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rolled_from"] == id.as_str())
        .count();
    assert_eq!(successors, 1, "one successor: {listed}");
    // The successor rolls, and keeps the whole life it was given.
    assert_eq!(
        token(successor_id.to_owned()).await["expires_at"],
        successor["expires_at"]
    );
    server
        .expect(201, Method::POST, &roll(successor_id), &server.token, None)
        .await;

    // Two rolls of one token at once: one succeeds, the other is told where the token went.
    let other = server
        .expect(201, Method::POST, "/v1/tokens", &server.token, Some(create))
        .await;
    let other_id = other["id"].as_str().unwrap();
    let path = roll(other_id);
    let (a, b) = tokio::join!(
        server.call(Method::POST, &path, &server.token, overlap.clone()),
        server.call(Method::POST, &path, &server.token, overlap.clone()),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
}

async fn a_roll_needs_what_revoking_needs_and_an_active_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owners = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "owner's", "role": "owner"})),
        )
        .await;
    let owners_id = owners["id"].as_str().unwrap();
    let members = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "member's", "role": "member"})),
        )
        .await;
    let member = members["secret"].as_str().unwrap();
    let roll = |id: &str| format!("/v1/tokens/{id}/roll");

    // A member cannot roll (so cannot take over) the owner's token.
    let refused = server
        .call(Method::POST, &roll(owners_id), member, None)
        .await;
    problem(refused, 403, "privilege-escalation").await;
    let out_of_range = server
        .call(
            Method::POST,
            &roll(owners_id),
            &server.token,
            Some(json!({"expire_previous_in": 604_801})),
        )
        .await;
    let body = problem(out_of_range, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "expire_previous_in");
    let typo = server
        .call(
            Method::POST,
            &roll(owners_id),
            &server.token,
            Some(json!({"expire_previous": 60})),
        )
        .await;
    problem(typo, 400, "invalid-request").await;
    // Nothing changed: the token was neither rolled nor shortened.
    let unchanged = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{owners_id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(unchanged["rolled_to"], Value::Null);
    assert_eq!(unchanged["expires_at"], Value::Null);

    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{owners_id}"),
            &server.token,
            None,
        )
        .await;
    let revoked = server
        .call(Method::POST, &roll(owners_id), &server.token, None)
        .await;
    problem(revoked, 404, "not-found").await;
    let unknown = server
        .call(
            Method::POST,
            &roll("tok_0000000000000000000000"),
            &server.token,
            None,
        )
        .await;
    problem(unknown, 404, "not-found").await;
}

/// An organization keeps an active owner: its last one is not demoted, disabled or deleted
/// (409 `last-owner`, nothing changed), by anyone, the owner themselves included; with a second
/// owner, either may go. Two owners demoting each other at once leave one.
async fn the_last_active_owner_is_not_demoted_disabled_or_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = owners(&server).await;
    assert_eq!(first.len(), 1, "the bootstrap owner");
    let first = &first[0];
    let path = format!("/v1/users/{first}");
    for (method, body) in [
        (Method::PATCH, Some(json!({"role": "admin"}))),
        (Method::PATCH, Some(json!({"status": "disabled"}))),
        (Method::DELETE, None),
    ] {
        let response = server
            .call(method.clone(), &path, &server.token, body)
            .await;
        let refused = problem(response, 409, "last-owner").await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("last active owner"),
            "{method}: {refused}"
        );
    }
    assert_eq!(
        owners(&server).await,
        std::slice::from_ref(first),
        "nothing changed"
    );
    // A rename is not a demotion.
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"name": "Still owner"})),
        )
        .await;

    // With a second owner, the first may step down; then the second is the last.
    let second = create_user(&server, "second@example.com", "owner").await;
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"role": "admin"})),
        )
        .await;
    let response = server
        .call(
            Method::DELETE,
            &format!("/v1/users/{second}"),
            &server.token,
            None,
        )
        .await;
    problem(response, 409, "last-owner").await;

    // Two owners demoting each other at once: one goes, one stays.
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"role": "owner"})),
        )
        .await;
    let (a, b) = tokio::join!(demote(&server, first), demote(&server, &second));
    let mut statuses = [a, b];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(owners(&server).await.len(), 1);
}

/// The ids of the tenant's active owners.
async fn owners(server: &TestServer) -> Vec<String> {
    let users = server
        .expect(200, Method::GET, "/v1/users", &server.token, None)
        .await;
    users["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "rol_owner" && u["status"] == "active")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Makes `id` a viewer; the status of the answer.
async fn demote(server: &TestServer, id: &str) -> u16 {
    server
        .call(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &server.token,
            Some(json!({"role": "viewer"})),
        )
        .await
        .status()
        .as_u16()
}
