//! The audit log (API.md §8): every change records its event, refusals of known credentials are
//! recorded and coalesced, the list filters and pages, a tenant sees only its subtree, an event
//! that cannot be written stops its change, and retention prunes.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    every_change_records_its_event,
    filters_repeat_and_pages_run_newest_first,
    a_tenant_sees_its_subtree_and_never_its_parents_own_events,
    refusals_of_known_credentials_are_recorded_once_with_a_count,
    a_change_whose_event_cannot_be_written_does_not_happen,
    events_past_retention_are_pruned,
    a_flood_of_refusals_cannot_blind_the_log_to_another_credentials,
    a_wrong_password_or_client_secret_is_recorded_in_its_accounts_tenant,
);

/// Every operation that is not a change, by operation id. Anything else in the document that
/// uses POST, PUT, PATCH or DELETE must appear in `every_change_records_its_event`'s table.
const NOT_CHANGES: &[&str] = &["verifyCredential", "oauthIntrospect"];

async fn events(server: &TestServer, token: &str, query: &str) -> Value {
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/audit-events{query}"),
            token,
            None,
        )
        .await
}

/// Makes a request as `token`; returns the response's status, request id and JSON body.
async fn change(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let response = server.call(method.clone(), path, token, body).await;
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(status < 300, "{method} {path}: {status} {text}");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, id, body)
}

/// A service token made by `token` with `body`: its secret and its id.
async fn service_token(server: &TestServer, token: &str, body: Value) -> (String, String) {
    let (_, _, made) = change(server, token, Method::POST, "/v1/tokens", Some(body)).await;
    (
        made["secret"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    )
}

fn mutating_operations() -> BTreeSet<String> {
    let (_, document) = keygate_server::api();
    let document = serde_json::to_value(&document).unwrap();
    let mut ids = BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for method in ["post", "put", "patch", "delete"] {
            if let Some(id) = item[method]["operationId"].as_str()
                && !id.starts_with("forwardAuth")
                && !NOT_CHANGES.contains(&id)
            {
                ids.insert(id.to_owned());
            }
        }
    }
    ids
}

async fn every_change_records_its_event(backend: Backend) {
    let signer = crate::webhooks::GithubSigner::new("k1");
    let keys = signer.path.clone();
    let server = TestServer::start_with(backend, move |config| {
        config.leaks.github_public_keys_path = Some(keys);
    })
    .await;
    let owner = server.token.clone();
    let me = ok_json(server.whoami(&[("apikey", &owner)]).await).await;
    let owner_id = me["credential"]["id"].as_str().unwrap().to_owned();

    // (operation id, action, method, path, body); paths may use ids made by earlier rows.
    let mut made: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut expected = Vec::new();
    let steps: Vec<(&str, &str, Method, String, Option<Value>)> = vec![
        (
            "createRole",
            "role.create",
            Method::POST,
            "/v1/roles".into(),
            Some(json!({"name": "ops", "permissions": ["tokens:read"]})),
        ),
        (
            "replaceRole",
            "role.update",
            Method::PUT,
            "/v1/roles/{role}".into(),
            Some(json!({"name": "ops2", "permissions": ["tokens:read"]})),
        ),
        (
            "deleteRole",
            "role.delete",
            Method::DELETE,
            "/v1/roles/{role}".into(),
            None,
        ),
        (
            "createUser",
            "user.create",
            Method::POST,
            "/v1/users".into(),
            Some(
                json!({"email": "ada@example.com", "name": "Ada", "role": "member", "password": "correct horse battery"}),
            ),
        ),
        (
            "updateUser",
            "user.update",
            Method::PATCH,
            "/v1/users/{user}".into(),
            Some(json!({"name": "Ada L."})),
        ),
        (
            "login",
            "session.create",
            Method::POST,
            "/v1/auth/login".into(),
            Some(json!({"email": "ada@example.com", "password": "correct horse battery"})),
        ),
        (
            "logout",
            "session.delete",
            Method::POST,
            "/v1/auth/logout".into(),
            None,
        ),
        (
            "deleteUser",
            "user.delete",
            Method::DELETE,
            "/v1/users/{user}".into(),
            None,
        ),
        (
            "createToken",
            "token.create",
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"kind": "service", "name": "ci", "role": "viewer"})),
        ),
        (
            "rollToken",
            "token.roll",
            Method::POST,
            "/v1/tokens/{token}/roll".into(),
            Some(json!({"expire_previous_in": 0})),
        ),
        (
            "putTokenQuota",
            "quota.update",
            Method::PUT,
            "/v1/tokens/{token}/quota".into(),
            Some(json!({"limit": 1000, "period": "month"})),
        ),
        (
            "deleteToken",
            "token.delete",
            Method::DELETE,
            "/v1/tokens/{token}".into(),
            None,
        ),
        (
            "createToken",
            "token.create",
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"kind": "service", "name": "ci2", "role": "viewer"})),
        ),
        (
            "deleteTokens",
            "token.delete",
            Method::DELETE,
            "/v1/tokens?id={token}".into(),
            None,
        ),
        (
            "createAccountKey",
            "account_key.create",
            Method::POST,
            "/v1/account/keys".into(),
            None,
        ),
        (
            "deleteAccountKey",
            "account_key.delete",
            Method::DELETE,
            "/v1/account/keys/{key}".into(),
            None,
        ),
        (
            "createAccountKey",
            "account_key.create",
            Method::POST,
            "/v1/account/keys".into(),
            None,
        ),
        (
            "deleteAccountKeyByQuery",
            "account_key.delete",
            Method::DELETE,
            "/v1/account/keys?id={key}".into(),
            None,
        ),
        (
            "setIpRestriction",
            "ip_restriction.update",
            Method::PUT,
            "/v1/account/ip-restriction".into(),
            Some(json!({"enabled": false, "allowlist": ["10.0.0.0/8"]})),
        ),
        (
            "postIpRestriction",
            "ip_restriction.update",
            Method::POST,
            "/v1/account/ip-restriction".into(),
            Some(json!({"enabled": false, "allowlist": []})),
        ),
        (
            "createOauthClient",
            "oauth_client.create",
            Method::POST,
            "/v1/oauth/clients".into(),
            Some(json!({"name": "sync", "role": "viewer"})),
        ),
        (
            "putOauthClientQuota",
            "quota.update",
            Method::PUT,
            "/v1/oauth/clients/{client}/quota".into(),
            Some(json!({"limit": 1000, "period": "day"})),
        ),
        (
            "rollOauthClientSecret",
            "oauth_client.secret_roll",
            Method::POST,
            "/v1/oauth/clients/{client}/secret/roll".into(),
            Some(json!({"expire_previous_in": 0})),
        ),
        // A public address, never reached here: deliveries to it wait, and can be retried.
        (
            "createWebhook",
            "webhook.create",
            Method::POST,
            "/v1/webhooks".into(),
            Some(json!({"url": "https://93.184.216.34/hook", "events": ["*"]})),
        ),
        (
            "updateWebhook",
            "webhook.update",
            Method::PATCH,
            "/v1/webhooks/{webhook}".into(),
            Some(json!({"description": "ops"})),
        ),
        (
            "createToken",
            "token.create",
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"kind": "service", "name": "leaky", "role": "viewer"})),
        ),
        (
            "retryWebhookDelivery",
            "webhook_delivery.retry",
            Method::POST,
            "/v1/webhooks/{webhook}/deliveries/{delivery}/retry".into(),
            None,
        ),
        // Leaks are reported without a credential: the system acts (see below).
        (
            "revokeCredentials",
            "credential.leaked",
            Method::POST,
            "/v1/credentials/revoke".into(),
            Some(json!({"credentials": ["{secret}"]})),
        ),
        (
            "createToken",
            "token.create",
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"kind": "service", "name": "leaky too", "role": "viewer"})),
        ),
        (
            "reportGithubLeaks",
            "credential.leaked",
            Method::POST,
            "/v1/leaks/github".into(),
            Some(
                json!([{"token": "{secret}", "type": "keygate_token", "url": "https://example.com/x"}]),
            ),
        ),
        (
            "deleteWebhook",
            "webhook.delete",
            Method::DELETE,
            "/v1/webhooks/{webhook}".into(),
            None,
        ),
        // The OAuth endpoints take forms and the client's own credentials (see below).
        (
            "oauthToken",
            "oauth.token",
            Method::POST,
            "/v1/oauth/token".into(),
            None,
        ),
        (
            "oauthRevoke",
            "oauth_token.revoke",
            Method::POST,
            "/v1/oauth/revoke".into(),
            None,
        ),
        (
            "deleteOauthClient",
            "oauth_client.delete",
            Method::DELETE,
            "/v1/oauth/clients/{client}".into(),
            None,
        ),
        (
            "createTenant",
            "tenant.create",
            Method::POST,
            "/v1/tenants".into(),
            Some(json!({"name": "Child"})),
        ),
        (
            "putTenantQuota",
            "quota.update",
            Method::PUT,
            "/v1/tenants/{tenant}/quota".into(),
            Some(json!({"limit": 100000, "period": "month"})),
        ),
        (
            "updateTenant",
            "tenant.update",
            Method::PATCH,
            "/v1/tenants/{tenant}".into(),
            Some(json!({"name": "Child Co"})),
        ),
        (
            "deleteTenant",
            "tenant.delete",
            Method::DELETE,
            "/v1/tenants/{tenant}".into(),
            None,
        ),
    ];
    let mut session = None;
    let mut oauth_client: Option<(String, String)> = None;
    let mut refresh: Option<String> = None;
    for (operation, action, method, path, body) in steps {
        if operation == "retryWebhookDelivery" {
            let webhook = &made.iter().find(|(n, _)| n == "webhook").unwrap().1;
            let list = server
                .expect(
                    200,
                    Method::GET,
                    &format!("/v1/webhooks/{webhook}/deliveries"),
                    &owner,
                    None,
                )
                .await;
            let delivery = list["data"][0]["id"].as_str().unwrap().to_owned();
            made.push(("delivery".to_owned(), delivery));
        }
        let mut path = path;
        let mut body = body.map(|b| b.to_string());
        for (name, id) in &made {
            path = path.replace(&format!("{{{name}}}"), id);
            body = body.map(|b| b.replace(&format!("{{{name}}}"), id));
        }
        let body: Option<Value> = body.map(|b| serde_json::from_str(&b).unwrap());
        // Signing out is done by the session it ends.
        let token = match operation {
            "logout" => session.clone().unwrap(),
            _ => owner.clone(),
        };
        let (status, request_id, body) = if let Some(form) = match operation {
            "oauthToken" => Some(vec![("grant_type", "client_credentials".to_owned())]),
            "oauthRevoke" => Some(vec![("token", refresh.clone().unwrap())]),
            _ => None,
        } {
            let (id, secret) = oauth_client.clone().unwrap();
            let response = server
                .post(&path)
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let request_id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let body: Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
            assert!(status < 300, "{operation}: {status} {body}");
            (status, request_id, body)
        } else if operation == "reportGithubLeaks" {
            let text = body.unwrap().to_string();
            let response =
                crate::webhooks::report(&server.base, "k1", &signer.sign(&text), &text).await;
            let status = response.status().as_u16();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(status, 200);
            (status, id, Value::Null)
        } else if operation == "login" {
            let response = server
                .post(&path)
                .json(&body.unwrap())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let cookie = response.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .to_owned();
            session = Some(
                cookie
                    .split(';')
                    .next()
                    .unwrap()
                    .split_once('=')
                    .unwrap()
                    .1
                    .to_owned(),
            );
            (status, id, Value::Null)
        } else {
            change(&server, &token, method, &path, body).await
        };
        if let (Some(id), Some(secret)) =
            (body["client_id"].as_str(), body["client_secret"].as_str())
        {
            oauth_client = Some((id.to_owned(), secret.to_owned()));
        }
        if let Some(token) = body["refresh_token"].as_str() {
            refresh = Some(token.to_owned());
        }
        if let Some(secret) = body["secret"].as_str().filter(|s| s.starts_with("kg_")) {
            made.retain(|(n, _)| n != "secret");
            made.push(("secret".to_owned(), secret.to_owned()));
        }
        let id = body["id"]
            .as_str()
            .or(body["tenant"]["id"].as_str())
            .or(body["client_id"].as_str());
        for (name, prefix) in [
            ("role", "rol_"),
            ("user", "usr_"),
            ("token", "tok_"),
            ("key", "key_"),
            ("tenant", "tnt_"),
            ("client", "cli_"),
            ("webhook", "whk_"),
        ] {
            if let Some(id) = id.filter(|id| id.starts_with(prefix)) {
                made.retain(|(n, _)| *n != name);
                made.push((name.to_owned(), id.to_owned()));
            }
        }
        seen.insert(operation.to_owned());
        expected.push((operation, action, status, request_id));
    }
    assert_eq!(
        seen,
        mutating_operations(),
        "every change in the document must be exercised here, with the event it records"
    );

    let listed = events(&server, &owner, "?limit=500").await;
    let listed = listed["data"].as_array().unwrap();
    for (operation, action, status, request_id) in expected {
        let event = listed
            .iter()
            .find(|e| e["request_id"] == request_id.as_str() && e["action"] == action)
            .unwrap_or_else(|| panic!("{operation}: no {action} event for {request_id}"));
        assert_eq!(event["status"], status, "{operation}");
        assert_eq!(event["outcome"], "success", "{operation}");
        assert_eq!(event["ip"], "127.0.0.1", "{operation}");
        assert!(event["time"].is_string());
        if matches!(operation, "revokeCredentials" | "reportGithubLeaks") {
            assert_eq!(event["token_id"], Value::Null, "{operation}");
            assert_eq!(event["actor"]["type"], "system", "{operation}");
        } else if matches!(operation, "oauthToken" | "oauthRevoke") {
            let (client, _) = oauth_client.as_ref().unwrap();
            assert_eq!(event["token_id"], client.as_str(), "{operation}");
            assert_eq!(event["actor"]["type"], "oauth_client", "{operation}");
        } else if !matches!(operation, "login" | "logout") {
            assert_eq!(event["token_id"], owner_id.as_str(), "{operation}");
            assert_eq!(event["actor"]["type"], "service_token", "{operation}");
        } else {
            assert!(
                event["token_id"].as_str().unwrap().starts_with("ses_"),
                "{operation}: a session acts with its own id"
            );
            assert_eq!(event["actor"]["type"], "user");
        }
    }
}

async fn filters_repeat_and_pages_run_newest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.token.clone();
    for i in 0..7 {
        change(
            &server,
            &owner,
            Method::POST,
            "/v1/roles",
            Some(json!({"name": format!("r{i}"), "permissions": ["tokens:read"]})),
        )
        .await;
        server.clock.advance(Duration::from_secs(60));
    }
    let (_, _, token) = change(
        &server,
        &owner,
        Method::POST,
        "/v1/tokens",
        Some(json!({"kind": "service", "name": "t", "role": "viewer"})),
    )
    .await;
    let token_id = token["id"].as_str().unwrap();

    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = events(
            &server,
            &owner,
            &format!("?action=role.create&limit=3{cursor}"),
        )
        .await;
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let all: Vec<&String> = pages.iter().flatten().collect();
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "newest first");

    let both = events(&server, &owner, "?action=role.create&action=token.create").await;
    assert_eq!(both["data"].as_array().unwrap().len(), 8);
    let by_token = events(&server, &owner, "?action=token.create&outcome=success").await;
    assert_eq!(by_token["data"][0]["target"]["id"], token_id);
    // `since` is inclusive, `until` exclusive: the roles made in the second and third minute.
    let start = keygate_core::Timestamp::from_unix(crate::harness::START.unix() + 60);
    let end = keygate_core::Timestamp::from_unix(crate::harness::START.unix() + 180);
    let window = events(
        &server,
        &owner,
        &format!("?action=role.create&since={start}&until={end}"),
    )
    .await;
    assert_eq!(window["data"].as_array().unwrap().len(), 2);

    for (query, field) in [
        ("?outcome=maybe", "outcome[0]"),
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?limit=", "limit"),
    ] {
        let response = server
            .get(&format!("/v1/audit-events{query}"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        let body = problem(response, 400, "invalid-request").await;
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
    // An empty page size is a mistake on every list, not a request for the default.
    for list in [
        "/v1/users",
        "/v1/tokens",
        "/v1/roles",
        "/v1/tenants",
        "/v1/oauth/clients",
    ] {
        let response = server
            .get(&format!("{list}?limit="))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        let body = problem(response, 400, "invalid-request").await;
        assert_eq!(body["errors"][0]["field"], "limit", "{list}: {body}");
    }
    let response = server
        .get("/v1/audit-events?actor=x")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid-request").await;
}

async fn a_tenant_sees_its_subtree_and_never_its_parents_own_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = server.token.clone();
    let (_, _, child) = change(
        &server,
        &root,
        Method::POST,
        "/v1/tenants",
        Some(json!({"name": "Child"})),
    )
    .await;
    let child_id = child["tenant"]["id"].as_str().unwrap().to_owned();
    // The reseller acts for its sub-customer: an event that happened in the child.
    let response = server
        .post("/v1/tokens")
        .bearer_auth(&root)
        .header("as-tenant", &child_id)
        .json(&json!({"kind": "service", "name": "child owner", "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let child_owner: Value = response.json().await.unwrap();
    let child_owner = child_owner["secret"].as_str().unwrap().to_owned();
    // The child acts on its own.
    change(
        &server,
        &child_owner,
        Method::POST,
        "/v1/roles",
        Some(json!({"name": "mine", "permissions": ["tokens:read"]})),
    )
    .await;
    // The root acts in its own tenant.
    change(
        &server,
        &root,
        Method::POST,
        "/v1/roles",
        Some(json!({"name": "root's", "permissions": ["tokens:read"]})),
    )
    .await;

    let actions = |page: &Value| -> Vec<(String, Option<String>)> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["acting_tenant_id"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    let child_view = actions(&events(&server, &child_owner, "").await);
    assert_eq!(
        child_view,
        [
            ("role.create".to_owned(), None),
            ("token.create".to_owned(), Some(child_id.clone())),
        ],
        "the child sees its own actions and what its reseller did for it, nothing else"
    );
    let root_view = actions(&events(&server, &root, "").await);
    assert_eq!(root_view.len(), 5, "{root_view:?}");
    assert!(root_view.iter().any(|(a, _)| a == "tenant.create"));
    // The parent's own events stay invisible when the reseller reads as its child.
    let response = server
        .get("/v1/audit-events")
        .bearer_auth(&root)
        .header("as-tenant", &child_id)
        .send()
        .await
        .unwrap();
    assert_eq!(actions(&ok_json(response).await).len(), 2);
    // And the export is the same selection.
    let export = server
        .get("/v1/audit-events/export")
        .bearer_auth(&child_owner)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "role.create");

    // Reading the log needs audit:read.
    let (_, _, viewer) = change(
        &server,
        &root,
        Method::POST,
        "/v1/tokens",
        Some(json!({"kind": "service", "name": "v", "role": "viewer", "permissions": ["tokens:read"]})),
    )
    .await;
    let viewer = viewer["secret"].as_str().unwrap();
    for path in ["/v1/audit-events", "/v1/audit-events/export"] {
        let response = server.get(path).bearer_auth(viewer).send().await.unwrap();
        problem(response, 403, "forbidden").await;
    }
}

/// A refused authentication names no credential when the secret is wrong, but a sign-in names
/// its account and a client authentication its client: those are the tenant's to see (API.md §8,
/// every refused authentication), once per kind with a count, as other refusals. A guess at an
/// unknown email or client id is nobody's, and recorded nowhere.
async fn a_wrong_password_or_client_secret_is_recorded_in_its_accounts_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = server.token.clone();
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &root,
            Some(json!({"name": "sync", "role": "viewer"})),
        )
        .await;
    let client_id = client["client_id"]
        .as_str()
        .or(client["id"].as_str())
        .unwrap();
    let sign_in = |email: &'static str| {
        server
            .post("/v1/auth/login")
            .header("x-request-id", "guess-password")
            .json(&json!({"email": email, "password": "not the password at all"}))
            .send()
    };
    for email in [
        "owner@example.com",
        "owner@example.com",
        "nobody@example.com",
    ] {
        assert_eq!(sign_in(email).await.unwrap().status(), 401);
    }
    let token_endpoint = |id: &str| {
        server
            .post("/v1/oauth/token")
            .basic_auth(
                id,
                Some("kg_oauth_live_000000000000000000000000000000AAAAAA"),
            )
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let unknown = "cli_0000000000000000000000";
    for id in [client_id, unknown] {
        assert_eq!(token_endpoint(id).await.unwrap().status(), 401);
    }

    server.state.flush_refusals().await;
    let denied = events(&server, &root, "?outcome=denied").await;
    let denied = denied["data"].as_array().unwrap();
    assert_eq!(denied.len(), 2, "{denied:?}");
    let password = denied
        .iter()
        .find(|e| e["actor"]["type"] == "user")
        .unwrap_or_else(|| panic!("{denied:?}"));
    assert_eq!(password["action"], "auth.denied");
    assert_eq!(password["status"], 401);
    assert_eq!(password["count"], 2, "{password}");
    assert_eq!(password["request_id"], "guess-password");
    assert!(
        password["detail"].to_string().contains("wrong password"),
        "{password}"
    );
    let secret = denied
        .iter()
        .find(|e| e["actor"]["type"] == "oauth_client")
        .unwrap_or_else(|| panic!("{denied:?}"));
    assert_eq!(secret["action"], "auth.denied");
    assert_eq!(secret["actor"]["id"], client_id);
    assert_eq!(secret["status"], 401);
    assert!(!format!("{denied:?}").contains(unknown), "{denied:?}");
}

async fn refusals_of_known_credentials_are_recorded_once_with_a_count(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = server.token.clone();
    let (doomed, doomed_id) = service_token(
        &server,
        &root,
        json!({"kind": "service", "name": "doomed", "role": "viewer"}),
    )
    .await;
    let (viewer, viewer_id) = service_token(
        &server,
        &root,
        json!({"kind": "service", "name": "viewer", "role": "viewer"}),
    )
    .await;
    ok_json(server.whoami(&[("apikey", &doomed)]).await).await;
    change(
        &server,
        &root,
        Method::DELETE,
        &format!("/v1/tokens/{doomed_id}"),
        None,
    )
    .await;

    // A flood with the revoked key, a forbidden request by the viewer, and unknown credentials.
    for _ in 0..30 {
        problem(
            server.whoami(&[("apikey", &doomed)]).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    for _ in 0..3 {
        let response = server
            .post("/v1/tokens")
            .bearer_auth(&viewer)
            .json(&json!({"kind": "service", "name": "x", "role": "viewer"}))
            .send()
            .await
            .unwrap();
        problem(response, 403, "forbidden").await;
    }
    // A token pinned elsewhere, used from here: the credential itself is refused.
    let pinned = json!({"kind": "service", "name": "pinned", "role": "viewer", "allowed_ips": ["10.0.0.0/8"]});
    let (pinned, pinned_id) = service_token(&server, &root, pinned).await;
    problem(
        server.whoami(&[("apikey", &pinned)]).await,
        403,
        "ip-not-allowed",
    )
    .await;
    let forged = "kg_live_000000000000000000000000000000AAAAAA";
    problem(
        server.whoami(&[("apikey", forged)]).await,
        401,
        "unauthenticated",
    )
    .await;

    server.state.flush_refusals().await;
    let denied = events(&server, &root, "?outcome=denied").await;
    let denied = denied["data"].as_array().unwrap();
    assert_eq!(denied.len(), 3, "{denied:?}");
    let elsewhere = denied
        .iter()
        .find(|e| e["token_id"] == pinned_id.as_str())
        .unwrap();
    assert_eq!(elsewhere["action"], "auth.denied");
    assert_eq!(elsewhere["status"], 403);
    assert_eq!(elsewhere["ip"], "127.0.0.1");
    let revoked = denied
        .iter()
        .find(|e| e["token_id"] == doomed_id.as_str())
        .unwrap();
    assert_eq!(revoked["action"], "auth.denied");
    assert_eq!(revoked["status"], 401);
    assert_eq!(revoked["count"], 30);
    assert_eq!(revoked["target"]["id"], "GET /v1/whoami");
    let forbidden = denied
        .iter()
        .find(|e| e["token_id"] == viewer_id.as_str())
        .unwrap();
    assert_eq!(forbidden["action"], "access.denied");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["count"], 3);
    // What did the revoked key do? Its whole story, by its id.
    let story = events(&server, &root, &format!("?token_id={doomed_id}")).await;
    assert_eq!(story["data"].as_array().unwrap().len(), 1);
    let story = events(
        &server,
        &root,
        &format!("?token_id={}&token_id={doomed_id}", viewer_id),
    )
    .await;
    assert_eq!(story["data"].as_array().unwrap().len(), 2);
}

async fn a_change_whose_event_cannot_be_written_does_not_happen(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = server.token.clone();
    let refuse_events = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER no_events BEFORE INSERT ON audit_events
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        }
        Backend::Postgres => {
            "CREATE FUNCTION no_events() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$;
             CREATE TRIGGER no_events BEFORE INSERT ON audit_events
                 FOR EACH ROW EXECUTE FUNCTION no_events()"
        }
    };
    keygate_testkit::execute(&server.state.config().database_url, refuse_events).await;
    let response = server
        .post("/v1/tokens")
        .bearer_auth(&root)
        .json(&json!({"kind": "service", "name": "unrecorded", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    let body = problem(response, 503, "unavailable").await;
    assert!(
        !body.to_string().contains("disk on fire"),
        "no database text for the client"
    );
    let tokens = server
        .expect(200, Method::GET, "/v1/tokens", &root, None)
        .await;
    assert!(
        tokens["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "unrecorded"),
        "the change was rolled back"
    );
}

async fn events_past_retention_are_pruned(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.audit.retention_days = 30).await;
    let root = server.token.clone();
    change(
        &server,
        &root,
        Method::POST,
        "/v1/roles",
        Some(json!({"name": "old", "permissions": ["tokens:read"]})),
    )
    .await;
    server.clock.advance(Duration::from_secs(20 * 24 * 3600));
    change(
        &server,
        &root,
        Method::POST,
        "/v1/roles",
        Some(json!({"name": "new", "permissions": ["tokens:read"]})),
    )
    .await;
    server.clock.advance(Duration::from_secs(15 * 24 * 3600));
    // The bootstrap's event and the old role's are now 35 days old.
    assert_eq!(server.state.prune_audit().await.unwrap(), 2);
    let left = events(&server, &root, "").await;
    let left = left["data"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["target"]["type"], "role");
    assert_eq!(server.state.prune_audit().await.unwrap(), 0);
}

async fn a_flood_of_refusals_cannot_blind_the_log_to_another_credentials(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = server.token.clone();
    let (viewer, viewer_id) = service_token(
        &server,
        &root,
        json!({"kind": "service", "name": "viewer", "role": "viewer"}),
    )
    .await;
    let (doomed, doomed_id) = service_token(
        &server,
        &root,
        json!({"kind": "service", "name": "doomed", "role": "viewer"}),
    )
    .await;
    change(
        &server,
        &root,
        Method::DELETE,
        &format!("/v1/tokens/{doomed_id}"),
        None,
    )
    .await;

    // The viewer floods forbidden requests, each on a path of its own; meanwhile, the revoked
    // token is tried a few times.
    const FLOOD: usize = 600;
    let flood = (0..FLOOD).map(|i| {
        server
            .request(Method::DELETE, &format!("/v1/tokens/tok_flood{i:05}"))
            .bearer_auth(&viewer)
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(flood)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    for _ in 0..5 {
        problem(
            server.whoami(&[("apikey", &doomed)]).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    server.state.flush_refusals().await;

    let revoked = events(
        &server,
        &root,
        &format!("?token_id={doomed_id}&outcome=denied"),
    )
    .await;
    let revoked = revoked["data"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["count"], 5);
    let flooded = events(
        &server,
        &root,
        &format!("?token_id={viewer_id}&outcome=denied"),
    )
    .await;
    let flooded = flooded["data"].as_array().unwrap();
    assert_eq!(
        flooded.len(),
        1,
        "one row for one credential, address and status"
    );
    assert_eq!(flooded[0]["count"], FLOOD);
    assert!(
        flooded[0]["target"]["id"]
            .as_str()
            .unwrap()
            .starts_with("DELETE /v1/tokens/tok_flood"),
        "a path is kept as a sample: {}",
        flooded[0]
    );
}
