//! Several keygate nodes on one PostgreSQL: changes made on one are seen on the others at once,
//! a node whose change channel breaks stops trusting its cache, and a database outage is answered
//! with 503s and recovered from without a restart (the usage counted meanwhile written once the
//! database is back). PostgreSQL only: SQLite is one node's file.

use std::future::Future;
use std::time::{Duration, Instant};

use keygate_core::{Clock, Timestamp};
use keygate_testkit::PgCluster;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, ok_json, problem};

const PASSWORD: &str = "correct horse battery staple";

/// Far above the expected few milliseconds, and the bound the silence detection guarantees.
const PROPAGATION_LIMIT: Duration = keygate_store::SILENCE_LIMIT;

/// Polls `check` until it holds; returns how long that took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not seen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn status(node: &TestServer, token: &str) -> u16 {
    node.whoami(&[("apikey", token)]).await.status().as_u16()
}

async fn permissions(node: &TestServer, token: &str) -> Vec<String> {
    let body = ok_json(node.whoami(&[("apikey", token)]).await).await;
    let mut permissions: Vec<String> = body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    permissions.sort();
    permissions
}

async fn service_token(node: &TestServer, role: &str) -> (String, String) {
    let body = node
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &node.token,
            Some(json!({"kind": "service", "name": "probe", "role": role})),
        )
        .await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_change_on_one_node_is_seen_on_the_other_at_once() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let mut seen = Vec::new();

    // A token revoked on A.
    let (id, secret) = service_token(&a, "viewer").await;
    assert_eq!(status(&b, &secret).await, 200, "B has it cached now");
    a.expect(
        204,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        &a.token,
        None,
    )
    .await;
    seen.push((
        "token revoked",
        within(PROPAGATION_LIMIT, "revocation", || async {
            status(&b, &secret).await == 401
        })
        .await,
    ));

    // Three tokens revoked at once on A (one notification each, applied on B together), a
    // fourth left alone.
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let (id, secret) = service_token(&a, "viewer").await;
        assert_eq!(status(&b, &secret).await, 200, "B has it cached now");
        tokens.push((id, secret));
    }
    let ids: Vec<String> = tokens[..3]
        .iter()
        .map(|(id, _)| format!("id={id}"))
        .collect();
    let body = a
        .expect(
            200,
            Method::DELETE,
            &format!("/v1/tokens?{}", ids.join("&")),
            &a.token,
            None,
        )
        .await;
    assert_eq!(body["deleted"].as_array().unwrap().len(), 3);
    seen.push((
        "tokens revoked together",
        within(PROPAGATION_LIMIT, "bulk revocation", || async {
            let mut revoked = true;
            for (_, secret) in &tokens[..3] {
                revoked &= status(&b, secret).await == 401;
            }
            revoked
        })
        .await,
    ));
    assert_eq!(
        status(&b, &tokens[3].1).await,
        200,
        "the fourth still works"
    );

    // A role's permissions changed on A.
    let role = a
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &a.token,
            Some(json!({"name": "probe", "permissions": ["tokens:*"]})),
        )
        .await;
    let role_path = format!("/v1/roles/{}", role["id"].as_str().unwrap());
    let (_, secret) = service_token(&a, role["id"].as_str().unwrap()).await;
    assert_eq!(
        permissions(&b, &secret).await,
        ["tokens:read", "tokens:write"]
    );
    a.expect(
        200,
        Method::PUT,
        &role_path,
        &a.token,
        Some(json!({"name": "probe", "permissions": ["tokens:read"]})),
    )
    .await;
    seen.push((
        "role changed",
        within(PROPAGATION_LIMIT, "role change", || async {
            permissions(&b, &secret).await == ["tokens:read"]
        })
        .await,
    ));

    // A user's role changed, the user disabled, then deleted, on A; their token used on B.
    let user = a
        .expect(201, Method::POST, "/v1/users", &a.token,
            Some(json!({"email": "node@example.com", "name": "N", "role": "member", "password": PASSWORD})))
        .await;
    let user_path = format!("/v1/users/{}", user["id"].as_str().unwrap());
    let session = a.login("node@example.com", PASSWORD).await;
    let personal: Value = a
        .request(Method::POST, "/v1/tokens")
        .header("cookie", format!("keygate_session={session}"))
        .json(&json!({"kind": "personal", "name": "p", "expires_in": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let personal = personal["secret"].as_str().unwrap().to_owned();
    assert!(
        permissions(&b, &personal)
            .await
            .contains(&"tokens:write".to_owned())
    );
    a.expect(
        200,
        Method::PATCH,
        &user_path,
        &a.token,
        Some(json!({"role": "viewer"})),
    )
    .await;
    seen.push((
        "user's role changed",
        within(PROPAGATION_LIMIT, "user role", || async {
            !permissions(&b, &personal)
                .await
                .contains(&"tokens:write".to_owned())
        })
        .await,
    ));
    a.expect(
        200,
        Method::PATCH,
        &user_path,
        &a.token,
        Some(json!({"status": "disabled"})),
    )
    .await;
    seen.push((
        "user disabled",
        within(PROPAGATION_LIMIT, "user disabled", || async {
            status(&b, &personal).await == 401
        })
        .await,
    ));
    a.expect(
        200,
        Method::PATCH,
        &user_path,
        &a.token,
        Some(json!({"status": "active"})),
    )
    .await;
    within(PROPAGATION_LIMIT, "user enabled", || async {
        status(&b, &personal).await == 200
    })
    .await;
    a.expect(204, Method::DELETE, &user_path, &a.token, None)
        .await;
    seen.push((
        "user deleted",
        within(PROPAGATION_LIMIT, "user deleted", || async {
            status(&b, &personal).await == 401
        })
        .await,
    ));

    // An account key deleted on A.
    let key = a
        .expect(201, Method::POST, "/v1/account/keys", &a.token, None)
        .await;
    let key_secret = key["key"].as_str().unwrap().to_owned();
    assert_eq!(status(&b, &key_secret).await, 200);
    let key_path = format!("/v1/account/keys/{}", key["id"].as_str().unwrap());
    a.expect(200, Method::DELETE, &key_path, &a.token, None)
        .await;
    seen.push((
        "account key deleted",
        within(PROPAGATION_LIMIT, "key deletion", || async {
            status(&b, &key_secret).await == 401
        })
        .await,
    ));

    // The allowlist enabled on A: B refuses the same credential from outside it.
    let (_, secret) = service_token(&a, "viewer").await;
    assert_eq!(status(&b, &secret).await, 200);
    a.expect(
        200,
        Method::PUT,
        "/v1/account/ip-restriction",
        &a.token,
        Some(json!({"enabled": true, "allowlist": ["127.0.0.1", "10.0.0.0/8"]})),
    )
    .await;
    let elsewhere = crate::harness::client_from("127.0.0.2");
    seen.push((
        "allowlist enabled",
        within(PROPAGATION_LIMIT, "allowlist", || async {
            elsewhere
                .get(format!("{}/v1/whoami", b.base))
                .bearer_auth(&secret)
                .send()
                .await
                .unwrap()
                .status()
                == 403
        })
        .await,
    ));
    a.expect(
        200,
        Method::PUT,
        "/v1/account/ip-restriction",
        &a.token,
        Some(json!({"enabled": false, "allowlist": []})),
    )
    .await;

    // A tenant suspended on A: its credentials are refused on B.
    let child = a
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &a.token,
            Some(json!({"name": "Child"})),
        )
        .await;
    let child_id = child["tenant"]["id"].as_str().unwrap().to_owned();
    let in_child = a
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&a.token)
        .header("as-tenant", &child_id)
        .json(&json!({"kind": "service", "name": "c", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    let in_child: Value = in_child.json().await.unwrap();
    let child_secret = in_child["secret"].as_str().unwrap().to_owned();
    assert_eq!(status(&b, &child_secret).await, 200);
    let tenant_path = format!("/v1/tenants/{child_id}");
    a.expect(
        200,
        Method::PATCH,
        &tenant_path,
        &a.token,
        Some(json!({"status": "suspended"})),
    )
    .await;
    seen.push((
        "tenant suspended",
        within(PROPAGATION_LIMIT, "suspension", || async {
            status(&b, &child_secret).await == 401
        })
        .await,
    ));

    // An OAuth client deleted on A: its unexpired access token, cached on B, is refused there.
    let (client_id, client_secret) = crate::oauth::create_client(&a, "viewer", None).await;
    let issued = crate::oauth::tokens(&a, &client_id, &client_secret, None).await;
    let jwt = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status(&b, &jwt).await, 200, "B has verified and cached it");
    a.expect(
        204,
        Method::DELETE,
        &format!("/v1/oauth/clients/{client_id}"),
        &a.token,
        None,
    )
    .await;
    seen.push((
        "OAuth client deleted",
        within(PROPAGATION_LIMIT, "client deletion", || async {
            status(&b, &jwt).await == 401
        })
        .await,
    ));

    // And the other way round: B's changes reach A.
    let (id, secret) = service_token(&b, "viewer").await;
    assert_eq!(status(&a, &secret).await, 200);
    b.expect(
        204,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        &b.token,
        None,
    )
    .await;
    seen.push((
        "token revoked on B",
        within(PROPAGATION_LIMIT, "revocation on B", || async {
            status(&a, &secret).await == 401
        })
        .await,
    ));

    for (change, took) in &seen {
        println!("{change}: seen on the other node after {took:?}");
    }
}

#[tokio::test]
async fn a_node_that_loses_its_change_channel_stops_trusting_its_cache() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let (id, secret) = service_token(&a, "viewer").await;
    assert_eq!(status(&a, &secret).await, 200);

    // Revoked behind keygate's back: no notification, so a healthy node keeps its cached answer.
    let url = a.state.config().database_url.clone();
    keygate_testkit::execute(
        &url,
        &format!("UPDATE credentials SET revoked_at = 1 WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(
        status(&a, &secret).await,
        200,
        "cached, and nothing said otherwise"
    );

    // Cut the node's listening connection: it must not go on trusting its cache.
    keygate_testkit::execute(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'keygate' AND query LIKE 'LISTEN%'",
    )
    .await;
    let took = within(
        PROPAGATION_LIMIT,
        "revalidation after losing the channel",
        || async { status(&a, &secret).await == 401 },
    )
    .await;
    println!("a lost channel was noticed after {took:?}");
    // And it listens again: a change on another node still arrives.
    let b = a.join().await;
    let (id, secret) = service_token(&a, "viewer").await;
    assert_eq!(status(&a, &secret).await, 200);
    b.expect(
        204,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        &b.token,
        None,
    )
    .await;
    within(
        PROPAGATION_LIMIT * 2,
        "revocation after reconnecting",
        || async { status(&a, &secret).await == 401 },
    )
    .await;
}

async fn outage(serve_stale: bool) {
    let cluster = PgCluster::start();
    let url = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_at(url, dir, |c| {
        c.store.acquire_timeout_ms = 1000;
        c.cache.serve_stale_on_store_outage = serve_stale;
    })
    .await;
    let (kept_id, cached) = service_token(&server, "viewer").await;
    assert_eq!(status(&server, &cached).await, 200);
    server.state.flush_usage().await;
    // The outage's requests in a later minute than the one before it.
    let before = server.clock.now();
    server.clock.advance(Duration::from_secs(120));
    let during = server.clock.now();
    // Requests the node answered during the outage, from its cache: their usage is counted.
    let served = std::cell::Cell::new(0u64);
    let answered = async |token: &str| {
        let status = status(&server, token).await;
        if status == 200 {
            served.set(served.get() + 1);
        }
        status
    };

    cluster.stop();
    let started = Instant::now();
    let response = server
        .call(
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "during", "role": "viewer"})),
        )
        .await;
    problem(response, 503, "unavailable").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the timeout"
    );
    problem(
        server.get("/readyz").send().await.unwrap(),
        503,
        "unavailable",
    )
    .await;
    // The cached credential: answered only if the operator chose to serve stale entries.
    let expected = if serve_stale { 200 } else { 503 };
    within(
        PROPAGATION_LIMIT * 3,
        "the outage noticed by the cache",
        || async { answered(&cached).await == expected },
    )
    .await;
    // A batch of usage refused by the store is kept, not lost (a node that served nothing from
    // its cache has none to write).
    let flushed = server
        .state
        .gate()
        .usage()
        .flush(server.state.store())
        .await;
    assert_eq!(flushed.is_err(), served.get() > 0, "{flushed:?}");

    cluster.start_server();
    within(
        Duration::from_secs(10),
        "readiness after the outage",
        || async { server.get("/readyz").send().await.unwrap().status() == 200 },
    )
    .await;
    // What the refused batches held is written by the next: the counts of the outage's
    // requests, and their last use.
    server.state.flush_usage().await;
    let minute = |at: Timestamp| Timestamp::from_unix(at.unix() / 60 * 60).to_string();
    let usage = ok_json(
        server
            .call(
                Method::GET,
                &format!(
                    "/v1/usage?granularity=minute&credential_id={kept_id}&since={}&until={}",
                    minute(before),
                    minute(during.saturating_add(Duration::from_secs(60))),
                ),
                &server.token,
                None,
            )
            .await,
    )
    .await;
    let mut expected_usage = vec![json!({"start": minute(before), "count": 1})];
    if served.get() > 0 {
        expected_usage.push(json!({"start": minute(during), "count": served.get()}));
    }
    assert_eq!(usage["data"], json!(expected_usage), "{usage}");
    let token = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{kept_id}"),
            &server.token,
            None,
        )
        .await;
    let last_used = if served.get() > 0 { during } else { before };
    assert_eq!(token["last_used_at"], last_used.to_string(), "{token}");

    let (_, after) = service_token(&server, "viewer").await;
    assert_eq!(status(&server, &after).await, 200);
    assert_eq!(status(&server, &cached).await, 200);
    // Acknowledged writes survived; refused ones left nothing behind.
    let tokens = server
        .expect(200, Method::GET, "/v1/tokens", &server.token, None)
        .await;
    let names: Vec<&str> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"during"), "{names:?}");
    let ids: Vec<&str> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&kept_id.as_str()));
}

#[tokio::test]
async fn a_database_outage_is_503_and_recovery_needs_no_restart() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    outage(false).await;
}

#[tokio::test]
async fn serving_stale_entries_during_an_outage_is_the_operators_choice() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    outage(true).await;
}

#[tokio::test]
async fn a_signing_key_rotated_on_one_node_signs_and_verifies_on_the_other() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let (client_id, client_secret) = crate::oauth::create_client(&a, "viewer", None).await;
    let kid = |jwt: &str| {
        let header = jwt.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    let before = crate::oauth::tokens(&b, &client_id, &client_secret, None).await;
    let before = before["access_token"].as_str().unwrap().to_owned();
    assert_eq!(status(&a, &before).await, 200);

    let rotated = a
        .state
        .keys()
        .rotate(&**a.state.store(), a.clock.now())
        .await
        .unwrap();
    // Signed on A with the new key: B accepts it straight away.
    let after_a = crate::oauth::tokens(&a, &client_id, &client_secret, None).await;
    let after_a = after_a["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid(&after_a), rotated);
    assert_eq!(status(&b, &after_a).await, 200);
    // B signs with it too, once it heard; the token signed before the rotation stays good.
    within(PROPAGATION_LIMIT, "the new key signing on B", || async {
        let token = crate::oauth::tokens(&b, &client_id, &client_secret, None).await;
        kid(token["access_token"].as_str().unwrap()) == rotated
    })
    .await;
    assert_eq!(status(&b, &before).await, 200);
    let published = ok_json(b.get("/.well-known/jwks.json").send().await.unwrap()).await;
    let kids: Vec<&str> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [rotated.as_str(), kid(&before).as_str()]);
}

/// Two nodes answer requests of the same credential in the same minutes: each counts its own and
/// adds them to the store, whose sums are exact, and either node reads the total.
#[tokio::test]
async fn usage_counted_on_two_nodes_sums_exactly() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let (id, secret) = service_token(&a, "viewer").await;
    // Concurrently, so both nodes write into the same buckets.
    let on = async |node: &TestServer, n: usize| {
        for _ in 0..n {
            assert_eq!(status(node, &secret).await, 200);
        }
    };
    tokio::join!(on(&a, 23), on(&b, 19));
    tokio::join!(a.state.flush_usage(), b.state.flush_usage());
    for node in [&a, &b] {
        let read = ok_json(
            node.call(
                Method::GET,
                &format!("/v1/usage?granularity=minute&credential_id={id}"),
                &node.token,
                None,
            )
            .await,
        )
        .await;
        let total: u64 = read["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 23 + 19, "{read}");
    }
}

/// A console form sent again is not acted on twice, whichever node the second sending reaches
/// (behind a load balancer, a reload may well reach another): what a session sent is noted in
/// the store, not in a node.
#[tokio::test]
async fn a_console_form_sent_again_to_another_node_is_not_acted_on_twice() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    use crate::console::{OWNER, csrf_of, once_of, page, post_form};
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let session = a.login(OWNER, &a.password).await;
    let count = || async {
        a.expect(200, Method::GET, "/v1/tokens", &a.token, None)
            .await["data"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    let html = page(&a, "/console/tokens/new", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    let (csrf, once) = (csrf_of(&html), once_of(&html));
    let form = [
        ("csrf", csrf.as_str()),
        ("once", once.as_str()),
        ("kind", "personal"),
        ("name", "Twice"),
        ("expiry", "7"),
    ];
    let first = post_form(&a, &session, "/console/tokens/new", &form).await;
    assert_eq!(first.status(), 200);
    let again = post_form(&b, &session, "/console/tokens/new", &form).await;
    assert_eq!(again.status(), 409, "{}", again.text().await.unwrap());
    assert_eq!(count().await, before + 1);
}
