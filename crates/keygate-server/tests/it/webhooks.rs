//! Webhooks and leaked credentials (API.md §15), against a real receiver on loopback that checks
//! every delivery with an independent Standard Webhooks implementation (the `standardwebhooks`
//! crate), and with reports signed by a P-256 key of the test's own, as GitHub signs them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keygate_core::Clock;
use keygate_core::credential::{CredentialFormat, CredentialKind, Environment};
use keygate_server::config::Network;
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, client, ok_json, problem};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub id: String,
    pub body: Value,
    pub raw: String,
    /// Whether `standardwebhooks` accepted its signature.
    pub verified: bool,
}

#[derive(Default)]
struct ReceiverState {
    secret: Mutex<Option<String>>,
    seen: Mutex<Vec<Received>>,
    /// Answer this many requests with a 500 before answering 200.
    failures_left: AtomicUsize,
    /// Hold this many requests without answering (a receiver that hangs).
    hangs_left: AtomicUsize,
}

/// A webhook receiver on loopback.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let secret = state.secret.lock().unwrap().clone();
    let verified = secret.is_some_and(|secret| {
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(&body, &headers)
            .is_ok()
    });
    let raw = String::from_utf8_lossy(&body).into_owned();
    state.seen.lock().unwrap().push(Received {
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        verified,
    });
    if state
        .hangs_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "not yet");
    }
    (StatusCode::OK, "thanks")
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    pub(crate) fn expect_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = Some(secret.to_owned());
    }

    fn fail_next(&self, count: usize) {
        self.state.failures_left.store(count, Ordering::SeqCst);
    }

    fn hang_next(&self, count: usize) {
        self.state.hangs_left.store(count, Ordering::SeqCst);
    }

    pub(crate) fn seen(&self) -> Vec<Received> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until at least `count` requests arrived; all of them.
    pub(crate) async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} deliveries arrived: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn loopback_allowed(config: &mut keygate_server::config::Config) {
    config.webhooks.allowed_private_targets = vec!["127.0.0.0/8".parse::<Network>().unwrap()];
}

/// Registers a webhook for `events` at the receiver; its id, and the receiver now expects its
/// secret.
async fn subscribe(server: &TestServer, receiver: &Receiver, events: &[&str]) -> String {
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/webhooks",
            &server.token,
            Some(json!({"url": receiver.url, "events": events, "description": "ops"})),
        )
        .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.expect_secret(secret);
    created["id"].as_str().unwrap().to_owned()
}

async fn create_token(server: &TestServer, name: &str) -> (String, String) {
    let made = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": name, "role": "viewer"})),
        )
        .await;
    (
        made["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(server: &TestServer, webhook: &str) -> Vec<Value> {
    let list = ok_json(
        server
            .call(
                Method::GET,
                &format!("/v1/webhooks/{webhook}/deliveries"),
                &server.token,
                None,
            )
            .await,
    )
    .await;
    list["data"].as_array().unwrap().clone()
}

/// Waits until the store has recorded `count` attempts of the newest delivery.
async fn wait_for_attempts(server: &TestServer, webhook: &str, count: usize) -> Value {
    // Generous: a loaded two-core machine running the whole suite can stall a worker for seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(server, webhook).await;
        if let Some(newest) = list.first()
            && newest["attempts"].as_array().unwrap().len() >= count
        {
            return newest.clone();
        }
        assert!(Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_every_backend!(
    a_delivery_is_signed_and_arrives_on_the_fourth_attempt,
    failed_deliveries_stop_after_a_day_and_can_be_retried,
    a_bulk_revocation_is_an_event_and_a_delivery_per_token,
);

/// Tokens revoked in one request are written together, and each is still its own audit event
/// and its own delivery to every webhook that wants it; one that was already revoked is neither,
/// and one named twice is each once.
async fn a_bulk_revocation_is_an_event_and_a_delivery_per_token(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let mut tokens = Vec::new();
    for name in ["a", "b", "c", "d"] {
        tokens.push(create_token(&server, name).await.0);
    }
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{}", tokens[3]),
            &server.token,
            None,
        )
        .await;
    let deleted = subscribe(&server, &receiver, &["token.deleted"]).await;
    let also = subscribe(&server, &receiver, &["token.created", "token.deleted"]).await;
    let created = subscribe(&server, &receiver, &["token.created"]).await;
    // The first named twice: revoked, announced and recorded once.
    let path = format!("/v1/tokens?id={}&id={}", tokens.join("&id="), tokens[0]);
    let body = server
        .expect(200, Method::DELETE, &path, &server.token, None)
        .await;
    assert_eq!(body["deleted"], json!(tokens[..3]), "{body}");
    assert_eq!(body["warnings"][0]["detail"], tokens[3].as_str(), "{body}");

    let seen = receiver.wait_for(6, Duration::from_secs(20)).await;
    let mut announced: Vec<&str> = seen
        .iter()
        .map(|r| {
            assert_eq!(r.body["type"], "token.deleted", "{:?}", r.body);
            r.body["data"]["id"].as_str().unwrap()
        })
        .collect();
    announced.sort_unstable();
    let mut twice: Vec<&str> = tokens[..3].iter().flat_map(|t| [t.as_str(); 2]).collect();
    twice.sort_unstable();
    assert_eq!(announced, twice);
    for (webhook, count) in [(&deleted, 3), (&also, 3), (&created, 0)] {
        assert_eq!(deliveries(&server, webhook).await.len(), count, "{webhook}");
    }
    // Deliveries are a list like any (API.md §1): `?id=` picks some, newest first.
    let all: Vec<String> = deliveries(&server, &deleted)
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let picked = server
        .expect(
            200,
            Method::GET,
            &format!(
                "/v1/webhooks/{deleted}/deliveries?id={}&id={}",
                all[2], all[0]
            ),
            &server.token,
            None,
        )
        .await;
    let picked: Vec<&str> = picked["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(picked, [all[0].as_str(), all[2].as_str()]);
    let events = ok_json(
        server
            .call(
                Method::GET,
                "/v1/audit-events?action=token.delete",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    let mut targets: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"]["id"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    let mut revoked: Vec<&str> = tokens.iter().map(String::as_str).collect();
    revoked.sort_unstable();
    assert_eq!(
        targets, revoked,
        "the single revocation's and the bulk's three"
    );
}

/// The receiver fails three times; the test clock moves through the pauses; the fourth attempt
/// delivers. Every attempt is signed for the same `webhook-id` and recorded.
async fn a_delivery_is_signed_and_arrives_on_the_fourth_attempt(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let webhook = subscribe(&server, &receiver, &["token.created", "token.deleted"]).await;
    receiver.fail_next(3);
    let (token, secret) = create_token(&server, "deploy").await;

    let first = wait_for_attempts(&server, &webhook, 1).await;
    assert_eq!(first["status"], "pending", "{first}");
    assert_eq!(first["event_type"], "token.created");
    assert_eq!(first["attempts"][0]["status"], 500);
    assert_eq!(first["attempts"][0]["response_body"], "not yet");
    let next = keygate_core::Timestamp::parse(first["next_attempt_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        next.unix(),
        server.clock.now().unix() + 5,
        "the first retry comes 5 s later"
    );
    for (pause, attempts) in [(5, 2), (60, 3), (300, 4)] {
        server.clock.advance(Duration::from_secs(pause));
        wait_for_attempts(&server, &webhook, attempts).await;
    }
    let seen = receiver.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|r| r.verified), "{seen:?}");
    assert!(
        seen.iter().all(|r| r.id == seen[0].id),
        "one webhook-id for every attempt"
    );
    let body = &seen[3].body;
    assert_eq!(body["type"], "token.created");
    assert_eq!(body["data"]["id"], token);
    assert_eq!(body["data"]["object"], "token");
    assert!(body["timestamp"].is_string());
    let delivered = &deliveries(&server, &webhook).await[0];
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(delivered["id"], seen[0].id.as_str());
    let statuses: Vec<&Value> = delivered["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &json!(500), &json!(200)]
    );
    assert!(delivered["delivered_at"].is_string());

    // The next event, delivered at once; neither body nor record holds a secret.
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{token}"),
            &server.token,
            None,
        )
        .await;
    let seen = receiver.wait_for(5, Duration::from_secs(20)).await;
    assert_eq!(seen[4].body["type"], "token.deleted");
    assert!(seen[4].verified);
    let records = serde_json::to_string(&deliveries(&server, &webhook).await).unwrap();
    for text in seen
        .iter()
        .map(|r| r.raw.as_str())
        .chain([records.as_str()])
    {
        assert!(!text.contains(&secret), "a token secret in {text}");
        assert!(!text.contains("whsec_"), "a signing secret in {text}");
        assert!(
            !text.contains(&server.token),
            "the owner's secret in {text}"
        );
    }
}

/// A receiver that never succeeds: nine attempts over about a day, then `failed`; a retry by hand
/// sends it once more.
async fn failed_deliveries_stop_after_a_day_and_can_be_retried(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let webhook = subscribe(&server, &receiver, &["*"]).await;
    receiver.fail_next(usize::MAX);
    create_token(&server, "doomed").await;
    let started = server.clock.now();
    let mut attempts = 1;
    let mut delivery = wait_for_attempts(&server, &webhook, 1).await;
    while delivery["status"] == "pending" {
        let next =
            keygate_core::Timestamp::parse(delivery["next_attempt_at"].as_str().unwrap()).unwrap();
        server.clock.set(next);
        attempts += 1;
        delivery = wait_for_attempts(&server, &webhook, attempts).await;
    }
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(attempts, 9);
    let span = server.clock.now().unix() - started.unix();
    assert!(
        (23 * 3600..=25 * 3600).contains(&span),
        "{span} s of retries"
    );

    receiver.fail_next(0);
    let id = delivery["id"].as_str().unwrap();
    let retried = server
        .expect(
            202,
            Method::POST,
            &format!("/v1/webhooks/{webhook}/deliveries/{id}/retry"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(retried["status"], "pending");
    let delivered = wait_for_attempts(&server, &webhook, 10).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    let unknown = server
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/deliveries/msg_00000000000000000000/retry"),
            &server.token,
            None,
        )
        .await;
    problem(unknown, 404, "not-found").await;
    let events = ok_json(
        server
            .call(
                Method::GET,
                "/v1/audit-events?action=webhook_delivery.retry&action=webhook.create",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 2, "{events}");
}

/// Loopback, link-local, a name resolving to loopback, and schemes other than http(s) are refused
/// without `webhooks.allowed_private_targets`, and allowed with it; an allowed target that the
/// configuration stops allowing is refused at delivery time.
#[tokio::test]
async fn webhook_targets_are_checked_at_creation_and_delivery() {
    let server = TestServer::start(Backend::Sqlite).await;
    let post = |url: &str| {
        server.call(
            Method::POST,
            "/v1/webhooks",
            &server.token,
            Some(json!({"url": url, "events": ["*"]})),
        )
    };
    for (url, says) in [
        ("http://127.0.0.1:9/hook", "not a public address"),
        ("http://[::1]:9/hook", "not a public address"),
        (
            "http://169.254.169.254/latest/meta-data",
            "not a public address",
        ),
        ("http://[::ffff:10.0.0.1]/", "not a public address"),
        ("http://localhost:9/hook", "resolves to no public address"),
        ("file:///etc/passwd", "must be http or https"),
        ("ftp://example.com/", "must be http or https"),
        (
            "https://user:pw@example.com/hook",
            "must not carry credentials",
        ),
        ("not a url", "not a URL"),
    ] {
        let body = problem(post(url).await, 400, "invalid-request").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
    }
    let unknown_event = server
        .call(
            Method::POST,
            "/v1/webhooks",
            &server.token,
            Some(json!({"url": "http://127.0.0.1/", "events": ["token.made"]})),
        )
        .await;
    let body = problem(unknown_event, 400, "invalid-request").await;
    assert_eq!(
        body["errors"].as_array().unwrap().len(),
        2,
        "both fields named: {body}"
    );
    // The entry at fault is named, and an audit action is told the event it announces.
    let audit_action = server
        .call(
            Method::POST,
            "/v1/webhooks",
            &server.token,
            Some(json!({"url": "https://hooks.example.com/a", "events": ["user.created", "token.create"]})),
        )
        .await;
    let body = problem(audit_action, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "events[1]", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `token.created`?"),
        "{body}"
    );
    let listed = ok_json(
        server
            .call(Method::GET, "/v1/webhooks", &server.token, None)
            .await,
    )
    .await;
    assert_eq!(listed["data"], json!([]), "nothing refused was stored");

    let server = server
        .restart_with(|config| {
            config.webhooks.allowed_private_targets = ["127.0.0.0/8", "::1", "169.254.0.0/16"]
                .iter()
                .map(|n| n.parse().unwrap())
                .collect();
        })
        .await;
    let receiver = Receiver::start().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/hook",
    ] {
        let created = server
            .call(
                Method::POST,
                "/v1/webhooks",
                &server.token,
                Some(json!({"url": url, "events": ["user.created"]})),
            )
            .await;
        assert_eq!(
            created.status(),
            201,
            "{url}: {}",
            created.text().await.unwrap()
        );
    }
    let webhook = subscribe(&server, &receiver, &["token.created"]).await;

    // Allowed when made, refused when sent: nothing reaches the receiver.
    let server = server
        .restart_with(|config| config.webhooks.allowed_private_targets.clear())
        .await;
    create_token(&server, "after").await;
    let refused = wait_for_attempts(&server, &webhook, 1).await;
    let error = refused["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("not a public address"), "{refused}");
    assert_eq!(refused["attempts"][0]["status"], Value::Null);
    assert!(receiver.seen().is_empty());
}

/// A description is held to the schema's 500 characters as sent (padding counts, though it is not
/// kept) and to the rule every description follows, no control characters; a refusal changes
/// nothing, and a blank one clears it.
#[tokio::test]
async fn a_webhook_description_is_checked_as_sent_and_a_refusal_changes_nothing() {
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let webhook = subscribe(&server, &receiver, &["token.created"]).await;
    let path = format!("/v1/webhooks/{webhook}");
    let padded = format!("{}{}", "d".repeat(490), " ".repeat(11));
    for (description, says) in [
        (padded.as_str(), "at most 500 characters"),
        ("bell\u{7}", "control characters"),
    ] {
        let created = server
            .call(
                Method::POST,
                "/v1/webhooks",
                &server.token,
                Some(json!({"url": receiver.url, "events": ["*"], "description": description})),
            )
            .await;
        let body = problem(created, 400, "invalid-request").await;
        assert_eq!(body["errors"][0]["field"], "description", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        let patched = server
            .call(
                Method::PATCH,
                &path,
                &server.token,
                Some(json!({"enabled": false, "description": description})),
            )
            .await;
        problem(patched, 400, "invalid-request").await;
    }
    let kept = ok_json(server.call(Method::GET, &path, &server.token, None).await).await;
    assert_eq!(kept["description"], "ops", "{kept}");
    assert_eq!(kept["enabled"], true, "nothing of a refused change is kept");
    let listed = ok_json(
        server
            .call(Method::GET, "/v1/webhooks", &server.token, None)
            .await,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    let trimmed = format!("  {}  ", "d".repeat(496));
    let changed = ok_json(
        server
            .call(
                Method::PATCH,
                &path,
                &server.token,
                Some(json!({"description": trimmed})),
            )
            .await,
    )
    .await;
    assert_eq!(changed["description"], "d".repeat(496));
    let cleared = ok_json(
        server
            .call(
                Method::PATCH,
                &path,
                &server.token,
                Some(json!({"description": "  "})),
            )
            .await,
    )
    .await;
    assert_eq!(cleared["description"], Value::Null, "{cleared}");
}

/// Webhooks are scoped like the audit log: a customer sees its own and is told of its own events
/// and its sub-customers'; another tenant's webhook is a 404, never a 403.
#[tokio::test]
async fn webhooks_hear_their_tenant_and_below_and_are_hidden_from_others() {
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let root_hook = subscribe(&server, &receiver, &["tenant.created", "user.created"]).await;
    server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme", "slug": "acme",
                        "first_user": {"email": "o@acme.example", "name": "O", "password": "correct horse 1"}})),
        )
        .await;
    let seen = receiver.wait_for(2, Duration::from_secs(20)).await;
    let mut types: Vec<&str> = seen
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["tenant.created", "user.created"]);
    assert!(seen.iter().all(|r| r.verified));
    let acme = server
        .login_to("o@acme.example", "correct horse 1", Some("acme"))
        .await;
    let mine = server
        .call(
            Method::GET,
            &format!("/v1/webhooks/{root_hook}"),
            &acme,
            None,
        )
        .await;
    problem(mine, 404, "not-found").await;
    let listed = ok_json(server.call(Method::GET, "/v1/webhooks", &acme, None).await).await;
    assert_eq!(listed["data"], json!([]));
    let patch = server
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{root_hook}"),
            &acme,
            Some(json!({"enabled": false})),
        )
        .await;
    problem(patch, 404, "not-found").await;

    // Disabled: nothing is sent, and nothing is owed.
    let patched = ok_json(
        server
            .call(
                Method::PATCH,
                &format!("/v1/webhooks/{root_hook}"),
                &server.token,
                Some(json!({"enabled": false})),
            )
            .await,
    )
    .await;
    assert_eq!(patched["enabled"], false);
    server
        .call(
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({"email": "late@example.com", "name": "Late", "role": "viewer", "password": "correct horse 2"})),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.seen().len(), 2);
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/webhooks/{root_hook}"),
            &server.token,
            None,
        )
        .await;
    problem(
        server
            .call(
                Method::GET,
                &format!("/v1/webhooks/{root_hook}"),
                &server.token,
                None,
            )
            .await,
        404,
        "not-found",
    )
    .await;
}

/// `token.expiring` is sent seven days and one day before a token expires, once each.
#[tokio::test]
async fn expiring_tokens_are_told_of_seven_days_and_one_day_before() {
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    subscribe(&server, &receiver, &["token.expiring"]).await;
    let expires = keygate_core::Timestamp::from_unix(server.clock.now().unix() + 10 * 86_400);
    let made = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "ci", "role": "viewer", "expires_at": expires})),
        )
        .await;
    for (days_before, expected) in [
        (8 * 86_400, 0),
        (7 * 86_400 - 60, 1),
        (3 * 86_400, 1),
        (86_400 - 60, 2),
        (600, 2),
    ] {
        let before = receiver.seen().len();
        server.clock.set(keygate_core::Timestamp::from_unix(
            expires.unix() - days_before,
        ));
        if expected > before {
            receiver.wait_for(expected, Duration::from_secs(20)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        assert_eq!(receiver.seen().len(), expected, "{days_before} s before");
    }
    let seen = receiver.seen();
    assert_eq!(seen[0].body["data"]["days_left"], 7);
    assert_eq!(seen[1].body["data"]["days_left"], 1);
    assert_eq!(seen[1].body["data"]["id"], made["id"]);
    assert_eq!(seen[1].body["data"]["expires_at"], json!(expires));
    assert!(seen.iter().all(|r| r.verified));

    // A token made two days from its end is told once, of the two days it has (it said 7).
    let soon = keygate_core::Timestamp::from_unix(server.clock.now().unix() + 2 * 86_400 - 60);
    let short = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": "short", "role": "viewer", "expires_at": soon})),
        )
        .await;
    // The next look for expiring tokens, an hour on.
    server.clock.advance(Duration::from_secs(3600));
    let seen = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(seen[2].body["data"]["id"], short["id"]);
    assert_eq!(seen[2].body["data"]["days_left"], 2);
}

/// A P-256 key pair and GitHub's key document for it, written where keygate reads it.
pub(crate) struct GithubSigner {
    pair: EcdsaKeyPair,
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl GithubSigner {
    pub(crate) fn new(key_id: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let pem = keygate_core::leaks::p256_public_pem(pair.public_key().as_ref());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("github-keys.json");
        std::fs::write(
            &path,
            json!({"public_keys": [{"key_identifier": key_id, "key": pem, "is_current": true}]})
                .to_string(),
        )
        .unwrap();
        Self {
            pair,
            path,
            _dir: dir,
        }
    }

    pub(crate) fn sign(&self, body: &str) -> String {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), body.as_bytes())
            .unwrap();
        STANDARD.encode(signature.as_ref())
    }
}

pub(crate) async fn report(
    base: &str,
    key_id: &str,
    signature: &str,
    body: &str,
) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/leaks/github"))
        .header("content-type", "application/json")
        .header("Github-Public-Key-Identifier", key_id)
        .header("Github-Public-Key-Signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A report signed with GitHub's (here: the test's) key: the known token is refused on the next
/// request on both nodes, the feedback labels are right, the audit log has the source URL and the
/// webhook is told; a bad signature or an unknown key is a 401 that changes nothing.
#[tokio::test]
async fn a_github_report_kills_the_token_on_every_node() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let signer = GithubSigner::new("k1");
    let path = signer.path.clone();
    let a = TestServer::start_with(Backend::Postgres, move |config| {
        loopback_allowed(config);
        config.leaks.github_public_keys_path = Some(path);
    })
    .await;
    let b = a.join().await;
    let receiver = Receiver::start().await;
    subscribe(&a, &receiver, &["credential.leaked"]).await;
    let (leaked_id, leaked) = create_token(&a, "pasted").await;
    let (_, bystander) = create_token(&a, "bystander").await;
    for node in [&a, &b] {
        assert_eq!(
            node.whoami(&[("authorization", &format!("Bearer {leaked}"))])
                .await
                .status(),
            200
        );
    }
    let unknown = CredentialFormat::new("kg", Environment::Live)
        .unwrap()
        .generate(CredentialKind::Personal)
        .unwrap()
        .into_exposed();
    let url = "https://github.com/acme/app/blob/abc123/.env";
    let body = json!([
        {"token": leaked, "type": "keygate_service_token", "url": url, "source": "content"},
        {"token": unknown, "type": "keygate_token", "url": url, "source": "content"},
        {"token": "ghp_notoursatall", "type": "keygate_token", "url": url, "source": "content"},
    ])
    .to_string();

    // Refused reports change nothing.
    let forged = report(&a.base, "k1", &signer.sign("[]"), &body).await;
    problem(forged, 401, "unauthenticated").await;
    let unknown_key = report(&a.base, "k2", &signer.sign(&body), &body).await;
    problem(unknown_key, 401, "unauthenticated").await;
    let unsigned = report(&a.base, "k1", "", &body).await;
    problem(unsigned, 401, "unauthenticated").await;
    assert_eq!(
        b.whoami(&[("authorization", &format!("Bearer {leaked}"))])
            .await
            .status(),
        200
    );

    let answer = report(&a.base, "k1", &signer.sign(&body), &body).await;
    let labels = ok_json(answer).await;
    assert_eq!(
        labels,
        json!([
            {"token_hash": sha256_hex(&leaked), "token_type": "keygate_service_token", "label": "true_positive"},
            {"token_hash": sha256_hex(&unknown), "token_type": "keygate_token", "label": "false_positive"},
            {"token_hash": sha256_hex("ghp_notoursatall"), "token_type": "keygate_token", "label": "false_positive"},
        ])
    );
    for node in [&a, &b] {
        let refused = node
            .whoami(&[("authorization", &format!("Bearer {leaked}"))])
            .await;
        problem(refused, 401, "unauthenticated").await;
        assert_eq!(
            node.whoami(&[("authorization", &format!("Bearer {bystander}"))])
                .await
                .status(),
            200
        );
    }
    let token = ok_json(
        a.call(
            Method::GET,
            &format!("/v1/tokens/{leaked_id}"),
            &a.token,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(token["status"], "revoked");
    assert_eq!(token["revoked_reason"], "leaked");
    let events = ok_json(
        a.call(
            Method::GET,
            "/v1/audit-events?action=credential.leaked",
            &a.token,
            None,
        )
        .await,
    )
    .await;
    let event = &events["data"][0];
    assert_eq!(event["target"]["id"], leaked_id.as_str(), "{events}");
    assert_eq!(event["detail"]["url"], url);
    assert_eq!(event["detail"]["source"], "github");
    let seen = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(seen[0].body["type"], "credential.leaked");
    assert_eq!(seen[0].body["data"]["id"], leaked_id.as_str());
    assert_eq!(seen[0].body["data"]["action"], "revoked");
    assert_eq!(seen[0].body["data"]["url"], url);
    assert!(seen[0].verified);
    assert!(!seen[0].raw.contains(&leaked));
    assert!(
        !seen[0].raw.contains(&sha256_hex(&leaked)),
        "not even its hash"
    );
}

/// A tenant whose `leak_policy` is `notify` keeps its leaked token working and is told; the
/// public revocation endpoint answers 202 whatever it is given and is limited per address.
#[tokio::test]
async fn notify_policy_and_the_public_revocation_endpoint() {
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    subscribe(&server, &receiver, &["credential.leaked"]).await;
    let root = ok_json(
        server
            .whoami(&[("authorization", &format!("Bearer {}", server.token))])
            .await,
    )
    .await;
    let tenant = root["organization"]["id"].as_str().unwrap().to_owned();
    let bad = server
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            &server.token,
            Some(json!({"leak_policy": "shrug"})),
        )
        .await;
    problem(bad, 400, "invalid-request").await;
    let patched = ok_json(
        server
            .call(
                Method::PATCH,
                &format!("/v1/tenants/{tenant}"),
                &server.token,
                Some(json!({"leak_policy": "notify"})),
            )
            .await,
    )
    .await;
    assert_eq!(patched["leak_policy"], "notify");
    let (kept_id, kept) = create_token(&server, "kept").await;
    let revoke = |credentials: Value| {
        client()
            .post(format!("{}/v1/credentials/revoke", server.base))
            .json(&json!({"credentials": credentials}))
            .send()
    };
    let answer = revoke(json!([kept, "kg_live_nonsense", "hello"]))
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.json::<Value>().await.unwrap()["received"], 3);
    assert_eq!(
        server
            .whoami(&[("authorization", &format!("Bearer {kept}"))])
            .await
            .status(),
        200
    );
    let seen = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(seen[0].body["data"]["id"], kept_id.as_str());
    assert_eq!(seen[0].body["data"]["action"], "notified");
    assert_eq!(seen[0].body["data"]["source"], "revoke_api");

    // Back to `revoke`: the same report now kills it.
    server
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{tenant}"),
            &server.token,
            Some(json!({"leak_policy": "revoke"})),
        )
        .await;
    assert_eq!(revoke(json!([kept])).await.unwrap().status(), 202);
    problem(
        server
            .whoami(&[("authorization", &format!("Bearer {kept}"))])
            .await,
        401,
        "unauthenticated",
    )
    .await;

    let too_many: Vec<String> = (0..1001).map(|i| format!("kg_live_{i}")).collect();
    let refused = revoke(json!(too_many)).await.unwrap();
    let body = problem(refused, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "credentials");
    // Three requests so far; sixty an hour per address.
    for _ in 3..60 {
        assert_eq!(revoke(json!([])).await.unwrap().status(), 202);
    }
    let limited = revoke(json!([])).await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    let header = |name: &str| limited.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("ratelimit-limit"), "60");
    assert_eq!(header("ratelimit-remaining"), "0");
    assert_eq!(header("ratelimit-reset"), header("retry-after"));
    problem(limited, 429, "rate-limited").await;
    server.clock.advance(Duration::from_secs(60));
    assert_eq!(
        revoke(json!([])).await.unwrap().status(),
        202,
        "one more a minute later"
    );
}

/// Two nodes on one PostgreSQL, each writing deliveries and sending them: every message is sent
/// exactly once when the receiver answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_both_deliver_the_same_attempt() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start_with(Backend::Postgres, loopback_allowed).await;
    let b = a.join().await;
    let receiver = Receiver::start().await;
    let webhook = subscribe(&a, &receiver, &["token.created"]).await;
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        create_token(node, &format!("t{i}")).await;
    }
    let seen = receiver.wait_for(40, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen_after = receiver.seen();
    assert_eq!(seen_after.len(), seen.len(), "nothing sent twice");
    let mut ids: Vec<&str> = seen_after.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    assert!(seen_after.iter().all(|r| r.verified));
    let list = ok_json(
        a.call(
            Method::GET,
            &format!("/v1/webhooks/{webhook}/deliveries?limit=100"),
            &a.token,
            None,
        )
        .await,
    )
    .await;
    for delivery in list["data"].as_array().unwrap() {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(
            delivery["attempts"].as_array().unwrap().len(),
            1,
            "{delivery}"
        );
    }
}

/// The real binary, killed with SIGKILL while a delivery is in flight (the receiver holds the
/// request): after a restart, once the dead node's claim lapses, the same message is sent again
/// and delivered. Nothing secret reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_by_sigkill_is_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keygate = || {
        let mut command = crate::binary::keygate_in(dir.path(), "sqlite://data/keygate.db");
        command.env("KEYGATE_WEBHOOKS__ALLOWED_PRIVATE_TARGETS", "127.0.0.0/8");
        command
    };
    let init = keygate().args(["init", "--json"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let owner: Value = serde_json::from_slice(&init.stdout).unwrap();
    let owner = owner["token"].as_str().unwrap().to_owned();
    let serve = || {
        let mut command = keygate();
        command.arg("serve");
        crate::binary::Serve::spawn(command)
    };
    let node = serve();
    let receiver = Receiver::start().await;
    receiver.hang_next(1);
    let post = |base: &str, path: &str, body: Value| {
        client()
            .post(format!("{base}{path}"))
            .bearer_auth(&owner)
            .json(&body)
            .send()
    };
    let created: Value = post(
        &node.base,
        "/v1/webhooks",
        json!({"url": receiver.url, "events": ["token.created"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let signing_secret = created["secret"].as_str().unwrap().to_owned();
    receiver.expect_secret(&signing_secret);
    let webhook = created["id"].as_str().unwrap().to_owned();
    let token: Value = post(
        &node.base,
        "/v1/tokens",
        json!({"kind": "service", "name": "survivor", "role": "viewer"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let first = receiver.wait_for(1, Duration::from_secs(20)).await;
    node.kill();

    let node = serve();
    let seen = receiver
        .wait_for(
            2,
            Duration::from_secs(keygate_core::webhooks::CLAIM_SECONDS + 15),
        )
        .await;
    assert_eq!(seen[1].id, first[0].id, "the same message, sent again");
    assert!(seen.iter().all(|r| r.verified));
    assert_eq!(seen[1].body["data"]["id"], token["id"]);
    let list: Value = client()
        .get(format!("{}/v1/webhooks/{webhook}/deliveries", node.base))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["status"], "delivered", "{list}");
    let (status, log) = node.stop();
    assert!(status.success(), "{log}");
    for secret in [
        signing_secret.as_str(),
        token["secret"].as_str().unwrap(),
        owner.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
    assert!(log.contains("webhook attempt"), "{log}");
}

/// `quota.threshold` is sent when a quota's period reaches 80 % and 100 %, once each; a quota
/// replaced (a plan changed) is told of afresh, as it reaches its own 80 % and 100 % (its notices
/// were kept from the old one, and never came again).
#[tokio::test]
async fn quota_thresholds_are_told_at_eighty_and_a_hundred_percent() {
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    subscribe(&server, &receiver, &["quota.threshold"]).await;
    let made = server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(
                json!({"kind": "service", "name": "metered", "role": "viewer",
                        "quota": {"limit": 10, "period": "day"}}),
            ),
        )
        .await;
    let secret = made["secret"].as_str().unwrap();
    let check = || server.get("/v1/forward-auth").bearer_auth(secret).send();
    for _ in 0..7 {
        assert_eq!(check().await.unwrap().status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(receiver.seen().is_empty(), "70 % is not a threshold");
    assert_eq!(check().await.unwrap().status(), 200);
    let seen = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(seen[0].body["data"]["percent"], 80);
    assert_eq!(seen[0].body["data"]["id"], made["id"]);
    assert_eq!(seen[0].body["data"]["limit"], 10);
    for _ in 0..2 {
        assert_eq!(check().await.unwrap().status(), 200);
    }
    assert_eq!(check().await.unwrap().status(), 429);
    let seen = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(seen[1].body["data"]["percent"], 100);
    for _ in 0..3 {
        assert_eq!(check().await.unwrap().status(), 429);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.seen().len(), 2, "once each");
    assert!(receiver.seen().iter().all(|r| r.verified));

    // An upgrade: a new quota of 5 an hour, counted afresh.
    let id = made["id"].as_str().unwrap();
    server
        .expect(
            200,
            Method::PUT,
            &format!("/v1/tokens/{id}/quota"),
            &server.token,
            Some(json!({"limit": 5, "period": "hour"})),
        )
        .await;
    for _ in 0..5 {
        assert_eq!(check().await.unwrap().status(), 200);
    }
    assert_eq!(check().await.unwrap().status(), 429);
    let seen = receiver.wait_for(4, Duration::from_secs(20)).await;
    let told: Vec<(Value, Value)> = seen[2..]
        .iter()
        .map(|r| {
            (
                r.body["data"]["percent"].clone(),
                r.body["data"]["limit"].clone(),
            )
        })
        .collect();
    assert_eq!(told, [(json!(80), json!(5)), (json!(100), json!(5))]);
}

/// The pattern the README gives for registering with a secret-scanning programme matches every
/// opaque credential keygate issues, with the deployment's prefix and environment put in, and
/// nothing shorter, longer, of another prefix, environment or kind.
#[test]
fn the_readme_secret_scanning_pattern_matches_exactly_keygate_credentials() {
    let readme = include_str!("../../../../README.md");
    let pattern = readme
        .split("<!-- secret-scanning-pattern -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .unwrap()
        .trim();
    assert!(
        pattern.starts_with("kg_") && pattern.contains("live_"),
        "{pattern}"
    );
    for (prefix, environment, other) in [
        ("kg", Environment::Live, Environment::Test),
        ("lynk", Environment::Live, Environment::Test),
        ("kg", Environment::Test, Environment::Live),
    ] {
        let mine = pattern
            .replacen("kg_", &format!("{prefix}_"), 1)
            .replace("live_", &format!("{}_", environment.as_str()));
        let exactly = regex::Regex::new(&format!("^(?:{mine})$")).unwrap();
        let format = CredentialFormat::new(prefix, environment).unwrap();
        let elsewhere = CredentialFormat::new(prefix, other).unwrap();
        let foreign = CredentialFormat::new("other", environment).unwrap();
        for kind in CredentialKind::ALL.into_iter().filter(|k| k.is_opaque()) {
            let text = format.generate(kind).unwrap().into_exposed();
            assert!(exactly.is_match(&text), "{mine} misses {text}");
            assert!(
                !exactly.is_match(&text[..text.len() - 1]),
                "{text} shortened"
            );
            assert!(!exactly.is_match(&format!("{text}A")), "{text} lengthened");
            let wrong_env = elsewhere.generate(kind).unwrap().into_exposed();
            assert!(!exactly.is_match(&wrong_env), "{wrong_env}");
            let wrong_prefix = foreign.generate(kind).unwrap().into_exposed();
            assert!(!exactly.is_match(&wrong_prefix), "{wrong_prefix}");
        }
        let body = "a".repeat(36);
        let unknown_kind = format!("{prefix}_admin_{}_{body}", environment.as_str());
        assert!(!exactly.is_match(&unknown_kind), "{unknown_kind}");
        // Found where it sits in a file, as a scanner looks for it.
        let token = format
            .generate(CredentialKind::Service)
            .unwrap()
            .into_exposed();
        let found = regex::Regex::new(&mine).unwrap();
        let line = format!("KEYGATE_TOKEN=\"{token}\"\n");
        assert_eq!(found.find(&line).map(|m| m.as_str()), Some(token.as_str()));
    }
}

/// Account keys, OAuth client secrets (with the access tokens they got) and refresh tokens are
/// reportable as tokens are; a client's previous secret, reported during its overlap, ends the
/// overlap and leaves the current secret working.
#[tokio::test]
async fn every_kind_of_credential_is_reportable() {
    let server = TestServer::start(Backend::Sqlite).await;
    let revoke = |credentials: Value| {
        client()
            .post(format!("{}/v1/credentials/revoke", server.base))
            .json(&json!({"credentials": credentials}))
            .send()
    };
    let key = server
        .expect(201, Method::POST, "/v1/account/keys", &server.token, None)
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let (client_id, client_secret) = crate::oauth::create_client(&server, "viewer", None).await;
    let granted = crate::oauth::tokens(&server, &client_id, &client_secret, None).await;
    let access = granted["access_token"].as_str().unwrap().to_owned();
    let refresh = granted["refresh_token"].as_str().unwrap().to_owned();
    let (other_id, first_secret) = crate::oauth::create_client(&server, "viewer", None).await;
    let rolled = server
        .expect(
            201,
            Method::POST,
            &format!("/v1/oauth/clients/{other_id}/secret/roll"),
            &server.token,
            Some(json!({"expire_previous_in": 3600})),
        )
        .await;
    let second_secret = rolled["client_secret"].as_str().unwrap().to_owned();
    crate::oauth::tokens(&server, &other_id, &first_secret, None).await;

    let answer = revoke(json!([key, refresh, first_secret])).await.unwrap();
    assert_eq!(answer.status(), 202);
    problem(
        server
            .whoami(&[("authorization", &format!("Bearer {key}"))])
            .await,
        401,
        "unauthenticated",
    )
    .await;
    // The leaked key shows why it stopped, and no longer holds one of the two places.
    let keys = ok_json(
        server
            .call(Method::GET, "/v1/account/keys", &server.token, None)
            .await,
    )
    .await;
    let leaked = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["revoked_reason"] == "leaked")
        .unwrap_or_else(|| panic!("{keys}"));
    assert!(leaked["revoked_at"].is_string());
    server
        .expect(201, Method::POST, "/v1/account/keys", &server.token, None)
        .await;
    server
        .expect(201, Method::POST, "/v1/account/keys", &server.token, None)
        .await;
    let exchanged = crate::oauth::exchange(&server, &client_id, &client_secret, &refresh).await;
    assert_eq!(exchanged.status(), 400, "a leaked refresh token is spent");
    assert_eq!(
        crate::oauth::grant(
            &server,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &other_id),
                ("client_secret", &first_secret),
            ],
        )
        .await
        .status(),
        401,
        "the previous secret's overlap ended"
    );
    crate::oauth::tokens(&server, &other_id, &second_secret, None).await;

    // The client's own secret: the client and its access tokens stop at once.
    assert_eq!(
        server
            .whoami(&[("authorization", &format!("Bearer {access}"))])
            .await
            .status(),
        200
    );
    assert_eq!(revoke(json!([client_secret])).await.unwrap().status(), 202);
    problem(
        server
            .whoami(&[("authorization", &format!("Bearer {access}"))])
            .await,
        401,
        "unauthenticated",
    )
    .await;
    let client = ok_json(
        server
            .call(
                Method::GET,
                &format!("/v1/oauth/clients/{client_id}"),
                &server.token,
                None,
            )
            .await,
    )
    .await;
    assert_eq!(client["revoked_reason"], "leaked", "{client}");
    let events = ok_json(
        server
            .call(
                Method::GET,
                "/v1/audit-events?action=credential.leaked",
                &server.token,
                None,
            )
            .await,
    )
    .await;
    let mut kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"]["type"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "account_key",
            "oauth_client",
            "oauth_client",
            "refresh_token"
        ]
    );
}

/// `leaks.github_public_keys_path` is read again on SIGHUP: a new key works at once; a file that
/// cannot be used keeps the keys loaded before, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_githubs_keys_and_keeps_them_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = GithubSigner::new("k1");
    let keys = dir.path().join("keys.json");
    std::fs::copy(&first.path, &keys).unwrap();
    let mut command = crate::binary::keygate_in(dir.path(), "sqlite://data/keygate.db");
    command
        .env("KEYGATE_LEAKS__GITHUB_PUBLIC_KEYS_PATH", &keys)
        .arg("serve");
    let node = crate::binary::Serve::spawn(command);
    let body = json!([{"token": "kg_live_nothing", "type": "keygate_token"}]).to_string();
    let status = |key: &'static str, signer: &GithubSigner| {
        let signature = signer.sign(&body);
        let base = node.base.clone();
        let body = body.clone();
        async move {
            report(&base, key, &signature, &body)
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("k1", &first).await, 200);
    let second = GithubSigner::new("k2");
    std::fs::copy(&second.path, &keys).unwrap();
    assert_eq!(status("k2", &second).await, 401, "not before the signal");
    node.hangup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status("k2", &second).await != 200 {
        assert!(Instant::now() < deadline, "the new key was never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status("k1", &first).await,
        401,
        "the old key is gone with its file"
    );
    std::fs::write(&keys, "{not json").unwrap();
    node.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status("k2", &second).await,
        200,
        "a bad file keeps what was loaded"
    );
    let (exit, log) = node.stop();
    assert!(exit.success(), "{log}");
    assert!(log.contains("kept the keys loaded before"), "{log}");
    assert!(
        log.contains("reloaded GitHub's secret-scanning keys"),
        "{log}"
    );
}
