//! Account keys with zero-downtime rotation, the IP restriction, and the real client address
//! (API.md §5, §6).

use reqwest::{Client, Method};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, client_from, ok_json, problem};

on_every_backend!(
    rotating_a_key_without_downtime,
    keys_can_be_named_by_query_under_either_spelling,
    two_keys_at_most_under_concurrent_creates,
    two_keys_deleting_each_other_at_once_leave_one,
    creating_a_key_takes_no_body_and_refuses_one,
    the_ip_restriction_normalises_warns_and_names_bad_entries,
    enabling_a_list_that_locks_the_caller_out_is_refused,
    the_list_is_enforced_from_the_very_next_request,
    a_tokens_own_networks_narrow_further,
    a_trusted_proxy_is_believed_and_anyone_else_is_not,
    ipv6_loopback_is_an_address_like_any_other,
    deleting_a_key_without_keys_read_is_refused_before_anything_changes,
);

async fn create_key(server: &TestServer, with: &str) -> (String, String) {
    let body = server
        .expect(201, Method::POST, "/v1/account/keys", with, None)
        .await;
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kg_key_live_"), "{key}");
    assert!(body["created_at"].is_string());
    (body["id"].as_str().unwrap().to_owned(), key)
}

async fn status(server: &TestServer, client: &Client, token: &str) -> u16 {
    client
        .get(format!("{}/v1/whoami", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn restrict(server: &TestServer, with: &str, body: Value) -> reqwest::Response {
    server
        .call(Method::PUT, "/v1/account/ip-restriction", with, Some(body))
        .await
}

async fn rotating_a_key_without_downtime(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (first_id, first) = create_key(&server, &server.token).await;
    let me = ok_json(server.whoami(&[("apikey", &first)]).await).await;
    assert_eq!(me["principal"]["type"], "account_key");
    assert_eq!(me["credential"]["kind"], "account_key");
    assert!(
        !me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tenants:write")),
        "admin, not owner"
    );

    // The second key, made with the first: both work.
    let (second_id, second) = create_key(&server, &first).await;
    for key in [&first, &second] {
        ok_json(server.whoami(&[("apikey", key)]).await).await;
    }
    let listed = server
        .expect(200, Method::GET, "/v1/account/keys", &second, None)
        .await;
    let current: Vec<(&str, bool)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), k["current"].as_bool().unwrap()))
        .collect();
    // Newest first, as every list.
    assert_eq!(
        current,
        [(second_id.as_str(), true), (first_id.as_str(), false)]
    );
    assert!(
        !listed.to_string().contains(&first),
        "keys are never shown again"
    );

    // A third is refused.
    let third = server
        .call(Method::POST, "/v1/account/keys", &second, None)
        .await;
    problem(third, 409, "key-limit-reached").await;
    // The key in use cannot delete itself.
    let response = server
        .call(
            Method::DELETE,
            &format!("/v1/account/keys/{second_id}"),
            &second,
            None,
        )
        .await;
    problem(response, 409, "cannot-delete-current-key").await;

    // Delete the first with the second: refused on the very next request.
    let remaining = server
        .expect(
            200,
            Method::DELETE,
            &format!("/v1/account/keys/{first_id}"),
            &second,
            None,
        )
        .await;
    assert_eq!(remaining["data"].as_array().unwrap().len(), 1);
    assert_eq!(remaining["data"][0]["id"], second_id.as_str());
    problem(
        server.whoami(&[("apikey", &first)]).await,
        401,
        "unauthenticated",
    )
    .await;
    let again = server
        .call(
            Method::DELETE,
            &format!("/v1/account/keys/{first_id}"),
            &second,
            None,
        )
        .await;
    problem(again, 404, "not-found").await;
}

async fn keys_can_be_named_by_query_under_either_spelling(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (param, by_full_key) in [
        ("id", false),
        ("deleteApiKeyId", false),
        ("key", true),
        ("deleteApiKey", true),
    ] {
        let (id, key) = create_key(&server, &server.token).await;
        let value = if by_full_key { key.clone() } else { id.clone() };
        let path = format!("/v1/account/keys?{param}={value}");
        let remaining = server
            .expect(200, Method::DELETE, &path, &server.token, None)
            .await;
        assert!(remaining["data"].as_array().unwrap().is_empty(), "{param}");
        problem(
            server.whoami(&[("apikey", &key)]).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    let (id, key) = create_key(&server, &server.token).await;
    let both = format!("/v1/account/keys?id={id}&key={key}");
    problem(
        server
            .call(Method::DELETE, &both, &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
    problem(
        server
            .call(Method::DELETE, "/v1/account/keys", &server.token, None)
            .await,
        400,
        "invalid-request",
    )
    .await;
    let unknown = "/v1/account/keys?key=kg_key_live_000000000000000000000000000000000000";
    let body = problem(
        server
            .call(Method::DELETE, unknown, &server.token, None)
            .await,
        404,
        "not-found",
    )
    .await;
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("kg_key_live_0000"),
        "the key is not echoed"
    );
    ok_json(server.whoami(&[("apikey", &key)]).await).await;
}

async fn two_keys_at_most_under_concurrent_creates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let attempts =
        (0..6).map(|_| server.call(Method::POST, "/v1/account/keys", &server.token, None));
    let statuses: Vec<u16> = futures_statuses(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        4,
        "{statuses:?}"
    );
    let listed = server
        .expect(200, Method::GET, "/v1/account/keys", &server.token, None)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
}

/// Each key deletes the other, both requests at once, a few times over: one is answered 200, the
/// other 401 (its key went first, whichever way the two interleave), and one key is left. Were
/// each request's own key not checked when it commits, both would often succeed and leave none.
async fn two_keys_deleting_each_other_at_once_leave_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    for round in 0..4 {
        let (first_id, first) = create_key(&server, &server.token).await;
        let (second_id, second) = create_key(&server, &server.token).await;
        let paths = [&second_id, &first_id].map(|other| format!("/v1/account/keys/{other}"));
        let deletes = [(&first, &paths[0]), (&second, &paths[1])]
            .map(|(with, path)| server.call(Method::DELETE, path, with, None));
        let mut statuses = futures_statuses(deletes.into_iter()).await;
        statuses.sort();
        assert_eq!(statuses, [200, 401], "round {round}");
        let listed = server
            .expect(200, Method::GET, "/v1/account/keys", &server.token, None)
            .await;
        let left = listed["data"].as_array().unwrap();
        assert_eq!(left.len(), 1, "round {round}: {listed}");
        let survivor = left[0]["id"].as_str().unwrap();
        let key = if survivor == first_id {
            &first
        } else {
            &second
        };
        ok_json(server.whoami(&[("apikey", key)]).await).await;
        server
            .expect(
                200,
                Method::DELETE,
                &format!("/v1/account/keys/{survivor}"),
                &server.token,
                None,
            )
            .await;
    }
}

/// A key is made from nothing: no body, or `{}`. A body with fields, or one that is not JSON,
/// is refused as any body is (API.md §1), and makes no key.
async fn creating_a_key_takes_no_body_and_refuses_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let post = || server.post("/v1/account/keys").bearer_auth(&server.token);
    let refused = [
        (post().json(&json!({"name": "ci"})), 400, "invalid-request"),
        (
            post()
                .header("content-type", "application/json")
                .body("garbage{"),
            400,
            "invalid-request",
        ),
        (
            post().header("content-type", "text/plain").body("hello"),
            415,
            "unsupported-media-type",
        ),
    ];
    for (request, status, code) in refused {
        let body = problem(request.send().await.unwrap(), status, code).await;
        if status == 400 {
            assert!(body["detail"].is_string(), "{body}");
        }
    }
    let listed = server
        .expect(200, Method::GET, "/v1/account/keys", &server.token, None)
        .await;
    assert_eq!(listed["data"], json!([]), "a refused request makes no key");
    let with_empty = post().json(&json!({})).send().await.unwrap();
    assert_eq!(with_empty.status(), 201);
    let without = post().send().await.unwrap();
    assert_eq!(without.status(), 201);
}

async fn futures_statuses(
    requests: impl Iterator<Item = impl std::future::Future<Output = reqwest::Response>>,
) -> Vec<u16> {
    let handles: Vec<_> = requests.map(|r| Box::pin(r)).collect();
    let mut statuses = Vec::new();
    // Drive them together: every request is in flight before any is awaited to completion.
    let results = join_all(handles).await;
    for response in results {
        statuses.push(response.status().as_u16());
    }
    statuses
}

/// A small join_all: polls every future until all are done.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(&mut *future).poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

async fn the_ip_restriction_normalises_warns_and_names_bad_entries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let shown = server
        .expect(
            200,
            Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(shown, json!({"enabled": false, "allowlist": []}));

    let body = ok_json(
        restrict(&server, &server.token,
            json!({"enabled": true, "allowlist": ["127.0.0.1", "10.1.2.3/8", "2001:db8::1", "10.0.0.0/8"]}))
        .await,
    )
    .await;
    assert_eq!(body["enabled"], true);
    assert_eq!(
        body["allowlist"],
        json!(["10.0.0.0/8", "127.0.0.1/32", "2001:db8::1/128"])
    );
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["code"], "normalised");
    assert!(
        warnings[0]["detail"]
            .as_str()
            .unwrap()
            .contains("allowlist[1]")
    );

    // `whiteList` is the same field; POST the same as PUT; idempotent.
    let same =
        json!({"enabled": true, "whiteList": ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::1/128"]});
    let again = ok_json(
        server
            .call(
                Method::POST,
                "/v1/account/ip-restriction",
                &server.token,
                Some(same),
            )
            .await,
    )
    .await;
    assert_eq!(again["allowlist"], body["allowlist"]);
    assert!(again.get("warnings").is_none());

    let response = restrict(
        &server,
        &server.token,
        json!({"enabled": true, "allowlist": ["127.0.0.1", "10.0.0.0/33", "nope", "::1/129"]}),
    )
    .await;
    let problem_body = problem(response, 400, "invalid-request").await;
    let fields: Vec<&str> = problem_body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["allowlist[1]", "allowlist[2]", "allowlist[3]"]);
    let response = restrict(
        &server,
        &server.token,
        json!({"enabled": true, "allowlist": ["127.0.0.1"], "whiteList": ["127.0.0.1"]}),
    )
    .await;
    problem(response, 400, "invalid-request").await;
    let too_many: Vec<String> = (0..300)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
        .collect();
    let response = restrict(
        &server,
        &server.token,
        json!({"enabled": false, "allowlist": too_many}),
    )
    .await;
    problem(response, 400, "invalid-request").await;

    let unchanged = server
        .expect(
            200,
            Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(
        unchanged["allowlist"], body["allowlist"],
        "refused changes changed nothing"
    );
}

async fn enabling_a_list_that_locks_the_caller_out_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = restrict(
        &server,
        &server.token,
        json!({"enabled": true, "allowlist": ["10.0.0.0/8"]}),
    )
    .await;
    let body = problem(response, 409, "would-lock-out-caller").await;
    assert!(body["detail"].as_str().unwrap().contains("127.0.0.1"));
    let unchanged = server
        .expect(
            200,
            Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(unchanged, json!({"enabled": false, "allowlist": []}));
    // A disabled list may say anything.
    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": false, "allowlist": ["10.0.0.0/8"]}),
        )
        .await,
    )
    .await;
}

async fn the_list_is_enforced_from_the_very_next_request(backend: Backend) {
    let server = TestServer::start(backend).await;
    let elsewhere = client_from("127.0.0.2");
    let here = client_from("127.0.0.1");
    assert_eq!(status(&server, &elsewhere, &server.token).await, 200);

    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": true, "allowlist": ["127.0.0.1"]}),
        )
        .await,
    )
    .await;
    let refused = elsewhere
        .get(format!("{}/v1/whoami", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let body = problem(refused, 403, "ip-not-allowed").await;
    assert!(body["detail"].as_str().unwrap().contains("127.0.0.2"));
    assert_eq!(status(&server, &here, &server.token).await, 200);
    // Whatever the credential: an account key too.
    let (_, key) = create_key(&server, &server.token).await;
    assert_eq!(status(&server, &elsewhere, &key).await, 403);

    // Signing in from outside the list is refused too (after the password proved who it is).
    let user = json!({"email": "ip@example.com", "name": "Ip", "role": "viewer", "password": "correct horse battery"});
    server
        .expect(201, Method::POST, "/v1/users", &server.token, Some(user))
        .await;
    let login = elsewhere
        .post(format!("{}/v1/auth/login", server.base))
        .json(&json!({"email": "ip@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    problem(login, 403, "ip-not-allowed").await;
    server
        .login("ip@example.com", "correct horse battery")
        .await;

    // Disabling is always allowed, and applies at once.
    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": false, "allowlist": ["127.0.0.1"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status(&server, &elsewhere, &server.token).await, 200);
}

async fn a_tokens_own_networks_narrow_further(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server
        .expect(201, Method::POST, "/v1/tokens", &server.token,
            Some(json!({"kind": "service", "name": "pinned", "role": "viewer", "allowed_ips": ["127.0.0.2/8"]})))
        .await;
    assert_eq!(token["allowed_ips"], json!(["127.0.0.0/8"]));
    assert_eq!(token["warnings"][0]["code"], "normalised");
    let narrow = server
        .expect(201, Method::POST, "/v1/tokens", &server.token,
            Some(json!({"kind": "service", "name": "narrow", "role": "viewer", "allowed_ips": ["127.0.0.2"]})))
        .await;
    let secret = narrow["secret"].as_str().unwrap();
    assert_eq!(
        status(&server, &client_from("127.0.0.2"), secret).await,
        200
    );
    assert_eq!(
        status(&server, &client_from("127.0.0.1"), secret).await,
        403
    );

    // Verification for another service checks the address it is told.
    let verdict = |ip: &'static str| {
        server.call(
            Method::POST,
            "/v1/verify",
            &server.token,
            Some(json!({"credential": secret, "ip": ip})),
        )
    };
    assert_eq!(ok_json(verdict("127.0.0.2").await).await["code"], "VALID");
    assert_eq!(
        ok_json(verdict("203.0.113.9").await).await["code"],
        "IP_NOT_ALLOWED"
    );
    let no_ip = server
        .call(
            Method::POST,
            "/v1/verify",
            &server.token,
            Some(json!({"credential": secret})),
        )
        .await;
    assert_eq!(
        ok_json(no_ip).await["code"],
        "IP_NOT_ALLOWED",
        "restricted and no address given"
    );
}

async fn a_trusted_proxy_is_believed_and_anyone_else_is_not(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]
    })
    .await;
    let via_proxy = |xff: Option<&'static str>| {
        let mut request = server.get("/v1/whoami").bearer_auth(&server.token);
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        request.send()
    };
    // Lock the account to a client network behind the proxy (the caller is in it, via the proxy).
    let response = server
        .request(Method::PUT, "/v1/account/ip-restriction")
        .bearer_auth(&server.token)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"enabled": true, "allowlist": ["203.0.113.0/24"]}))
        .send()
        .await
        .unwrap();
    ok_json(response).await;
    assert_eq!(via_proxy(Some("203.0.113.9")).await.unwrap().status(), 200);
    assert_eq!(
        via_proxy(Some("6.6.6.6, 203.0.113.9"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        via_proxy(Some("203.0.113.9, 6.6.6.6"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        via_proxy(None).await.unwrap().status(),
        403,
        "the proxy itself is not in the list"
    );
    let forwarded = server
        .get("/v1/whoami")
        .bearer_auth(&server.token)
        .header("forwarded", "for=203.0.113.77;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200);

    // 127.0.0.2 is not a trusted proxy: its forwarding headers are ignored.
    let spoofed = client_from("127.0.0.2")
        .get(format!("{}/v1/whoami", server.base))
        .bearer_auth(&server.token)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    problem(spoofed, 403, "ip-not-allowed").await;
}

async fn ipv6_loopback_is_an_address_like_any_other(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.listen = "[::1]:0".parse().unwrap()).await;
    assert!(server.base.contains("[::1]"), "{}", server.base);
    let response = restrict(
        &server,
        &server.token,
        json!({"enabled": true, "allowlist": ["10.0.0.0/8"]}),
    )
    .await;
    let body = problem(response, 409, "would-lock-out-caller").await;
    assert!(body["detail"].as_str().unwrap().contains("::1"), "{body}");
    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": true, "allowlist": ["::1"]}),
        )
        .await,
    )
    .await;
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": true, "allowlist": ["2001:db8::/32", "::1/128"]}),
        )
        .await,
    )
    .await;
    ok_json(
        restrict(
            &server,
            &server.token,
            json!({"enabled": true, "allowlist": ["::/0"]}),
        )
        .await,
    )
    .await;
}

async fn deleting_a_key_without_keys_read_is_refused_before_anything_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, key) = create_key(&server, &server.token).await;
    let role = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": "key-writer", "permissions": ["keys:write"]})),
        )
        .await;
    let writer = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "writer", "role": role["id"]})),
        )
        .await;
    let writer = writer["secret"].as_str().unwrap();
    for path in [
        format!("/v1/account/keys/{id}"),
        format!("/v1/account/keys?id={id}"),
        format!("/v1/account/keys?key={key}"),
    ] {
        let response = server.call(Method::DELETE, &path, writer, None).await;
        let body = problem(response, 403, "forbidden").await;
        assert_eq!(body["missing_permissions"], json!(["keys:read"]), "{path}");
    }
    // The key was not deleted: it still works.
    assert_eq!(status(&server, &server.client, &key).await, 200);
}
