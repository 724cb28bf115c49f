//! Quotas (API.md §13) through HTTP: set on tokens, clients and tenants, spent by forward-auth and
//! `/v1/verify`, refused with 429 `quota-exceeded`, refilled at the period's end on the test
//! clock; and exact across several nodes on one PostgreSQL, even when one is killed mid-run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keygate_core::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, START, TestServer, client, ok_json, problem};

/// A service token made by the owner (acting in `tenant` when given), with `body` merged in.
async fn token_with(server: &TestServer, tenant: Option<&str>, extra: Value) -> (String, String) {
    let mut body = json!({"kind": "service", "name": "metered", "role": "admin"});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let mut request = server
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&server.token)
        .json(&body);
    if let Some(tenant) = tenant {
        request = request.header("as-tenant", tenant);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    (
        made["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    )
}

/// Forward-auth for `token` with extra headers.
async fn forward(server: &TestServer, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = server.get("/v1/forward-auth").bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn remaining(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("x-keygate-quota-remaining")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

async fn quota_of(server: &TestServer, path: &str) -> Value {
    server
        .expect(200, Method::GET, path, &server.token, None)
        .await["quota"]
        .clone()
}

/// An hourly quota of 3: three requests pass with what is left in a header, the fourth is a 429
/// `quota-exceeded` with the seconds to the refill, and the next hour refills it; reads show
/// `used`, `remaining` and `resets_at`; usage counts the refusal as `quota_exceeded`.
#[tokio::test]
async fn a_quota_admits_its_limit_then_refuses_until_the_period_refills() {
    let server = TestServer::start(Backend::Sqlite).await;
    let anchor = Timestamp::from_unix(START.unix() - 600);
    let (id, secret) = token_with(
        &server,
        None,
        json!({"quota": {"limit": 3, "period": "hour", "anchor": anchor.to_string()}}),
    )
    .await;
    let path = format!("/v1/tokens/{id}");
    let quota = quota_of(&server, &path).await;
    assert_eq!(quota["limit"], 3);
    assert_eq!(quota["period"], "hour");
    assert_eq!(quota["used"], 0);
    assert_eq!(quota["remaining"], 3);
    let resets_at = Timestamp::from_unix(anchor.unix() + 3600);
    assert_eq!(quota["resets_at"], resets_at.to_string());

    for left in [2, 1, 0] {
        let allowed = forward(&server, &secret, &[]).await;
        assert_eq!(allowed.status(), 200);
        assert_eq!(remaining(&allowed), Some(left));
    }
    let quota = quota_of(&server, &path).await;
    assert_eq!(
        (quota["used"].as_u64(), quota["remaining"].as_u64()),
        (Some(3), Some(0))
    );

    let refused = forward(&server, &secret, &[]).await;
    assert_eq!(
        refused.headers()["retry-after"],
        (resets_at.unix() - START.unix()).to_string().as_str()
    );
    let body = problem(refused, 429, "quota-exceeded").await;
    assert!(
        body["detail"].as_str().unwrap().contains("quota of 3"),
        "{body}"
    );
    // Verify says the same, with when the quota refills.
    let verdict = server
        .expect(
            200,
            Method::POST,
            "/v1/verify",
            &server.token,
            Some(json!({"credential": secret})),
        )
        .await;
    assert_eq!(verdict["code"], "QUOTA_EXCEEDED", "{verdict}");
    assert_eq!(
        verdict["quota"],
        json!({"limit": 3, "remaining": 0, "resets_at": resets_at.to_string()})
    );

    // A second before the refill, still spent; at it, full again.
    server.clock.set(Timestamp::from_unix(resets_at.unix() - 1));
    assert_eq!(forward(&server, &secret, &[]).await.status(), 429);
    server.clock.set(resets_at);
    let allowed = forward(&server, &secret, &[]).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(remaining(&allowed), Some(2));
    let quota = quota_of(&server, &path).await;
    assert_eq!(quota["used"], 1);
    assert_eq!(
        quota["resets_at"],
        Timestamp::from_unix(resets_at.unix() + 3600).to_string()
    );

    server.state.flush_usage().await;
    let usage = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/usage?granularity=day&group_by=outcome&credential_id={id}&since=2020-01-01T00:00:00Z"),
            &server.token,
            None,
        )
        .await;
    let count = |outcome: &str| -> u64 {
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["outcome"] == outcome)
            .map(|b| b["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("valid"), 4, "{usage}");
    // Two at forward-auth, one at verify.
    assert_eq!(count("quota_exceeded"), 3, "{usage}");
}

/// What a request costs: `X-Keygate-Cost` on forward-auth, `cost` in verify; a cost of 0 passes
/// even when the quota is spent; a refused request (a missing permission, an address outside the
/// allowlist, a cost larger than what is left) spends nothing; a bad cost is a 400.
#[tokio::test]
async fn requests_cost_what_the_proxy_says_and_refusals_cost_nothing() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]
    })
    .await;
    let (id, secret) = token_with(
        &server,
        None,
        json!({"role": "viewer", "allowed_ips": ["192.0.2.0/24"],
               "quota": {"limit": 10, "period": "total"}}),
    )
    .await;
    let path = format!("/v1/tokens/{id}");
    // Through a trusted proxy, from an address the token allows.
    let from = [("x-forwarded-for", "192.0.2.7")];
    let cost = |n: &'static str| [("x-forwarded-for", "192.0.2.7"), ("x-keygate-cost", n)];

    let allowed = forward(&server, &secret, &cost("4")).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(remaining(&allowed), Some(6));
    // On the check's own path, `?cost=` (a proxy that cannot add headers) wins over the header.
    let by_query = server
        .get("/v1/forward-auth?cost=0")
        .bearer_auth(&secret)
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-keygate-cost", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(remaining(&by_query), Some(6));
    // A cost given twice is the proxy's mistake: refused, naming it, nothing spent.
    let twice = forward(
        &server,
        &secret,
        &[
            ("x-forwarded-for", "192.0.2.7"),
            ("x-keygate-cost", "1"),
            ("x-keygate-cost", "1"),
        ],
    )
    .await;
    let body = problem(twice, 400, "invalid-request").await;
    assert_eq!(body["detail"], "X-Keygate-Cost is given more than once");

    // Refusals: a permission the token lacks (in the second of two headers that name
    // permissions), an address it does not allow.
    let forbidden = forward(
        &server,
        &secret,
        &[
            ("x-forwarded-for", "192.0.2.7"),
            ("x-keygate-require", "tokens:read"),
            ("x-keygate-require", "tokens:write"),
        ],
    )
    .await;
    assert_eq!(forbidden.status(), 403);
    let elsewhere = forward(&server, &secret, &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(elsewhere.status(), 403);
    assert_eq!(quota_of(&server, &path).await["remaining"], 6);

    // Verify spends `cost`, and says where the quota stands.
    let verify = |cost: Value| {
        server.call(
            Method::POST,
            "/v1/verify",
            &server.token,
            Some(json!({"credential": secret, "ip": "192.0.2.7", "cost": cost})),
        )
    };
    let verdict = ok_json(verify(json!(5)).await).await;
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(
        verdict["quota"],
        json!({"limit": 10, "remaining": 1, "resets_at": null})
    );

    // More than is left: refused, and nothing spent; a total quota never refills.
    let verdict = ok_json(verify(json!(2)).await).await;
    assert_eq!(verdict["code"], "QUOTA_EXCEEDED");
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["credential_id"], id.as_str());
    // The refusal says which quota and what is left of it (one, less than the cost).
    assert_eq!(
        verdict["quota"],
        json!({"limit": 10, "remaining": 1, "resets_at": null})
    );
    let refused = forward(&server, &secret, &cost("2")).await;
    assert!(
        refused.headers().get("retry-after").is_none(),
        "total never refills"
    );
    let body = problem(refused, 429, "quota-exceeded").await;
    assert_eq!(
        body["detail"],
        "this credential's quota of 10 requests has 1 left, less than this request costs, \
         and it does not refill"
    );
    assert_eq!(quota_of(&server, &path).await["remaining"], 1);

    let last = forward(&server, &secret, &from).await;
    assert_eq!(remaining(&last), Some(0));
    // Free calls still need the credential, and pass with nothing left.
    let free = forward(&server, &secret, &cost("0")).await;
    assert_eq!(free.status(), 200);
    assert_eq!(remaining(&free), Some(0));
    assert_eq!(ok_json(verify(json!(0)).await).await["code"], "VALID");
    assert_eq!(forward(&server, &secret, &from).await.status(), 429);

    // A cost that is not a count is the proxy's mistake.
    for bad in ["-1", "1.5", "many", "4294967297"] {
        let response = forward(&server, &secret, &cost(bad)).await;
        let body = problem(response, 400, "invalid-request").await;
        assert!(
            body["detail"].as_str().unwrap().contains("X-Keygate-Cost"),
            "{body}"
        );
    }
    let body = problem(
        verify(json!(4_294_967_297_u64)).await,
        400,
        "invalid-request",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "cost", "{body}");
    problem(verify(json!(-1)).await, 400, "invalid-request").await;
}

/// `PUT …/quota` sets, replaces (keeping the count while the period is unchanged) and removes a
/// token's and a client's quota, with an audit event each; a bad quota names its field and
/// changes nothing.
#[tokio::test]
async fn quotas_are_replaced_and_removed_and_bad_ones_change_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (id, secret) = token_with(&server, None, json!({})).await;
    let path = format!("/v1/tokens/{id}/quota");
    assert_eq!(
        quota_of(&server, &format!("/v1/tokens/{id}")).await,
        Value::Null
    );
    let allowed = forward(&server, &secret, &[]).await;
    assert_eq!(remaining(&allowed), None, "no quota, no header");

    let set = server
        .expect(
            200,
            Method::PUT,
            &path,
            &server.token,
            Some(json!({"limit": 5, "period": "day"})),
        )
        .await;
    assert_eq!(
        (set["limit"].as_u64(), set["remaining"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(set["anchor"], START.to_string());
    for _ in 0..2 {
        assert_eq!(forward(&server, &secret, &[]).await.status(), 200);
    }
    let anchor = START.to_string();
    let raised = server
        .expect(
            200,
            Method::PUT,
            &path,
            &server.token,
            Some(json!({"limit": 50, "period": "day", "anchor": anchor})),
        )
        .await;
    assert_eq!(
        (raised["used"].as_u64(), raised["remaining"].as_u64()),
        (Some(2), Some(48))
    );
    // Changed once this node holds a reserve of credits it took and has not spent (under a
    // larger limit it takes more than it spends): the answer counts what was spent, not the
    // reserve the change drained (given back to the store a moment later).
    let change = |limit: u64| {
        let body = json!({"limit": limit, "period": "day", "anchor": anchor});
        server.expect(200, Method::PUT, &path, &server.token, Some(body))
    };
    change(1_000).await;
    for _ in 0..3 {
        assert_eq!(forward(&server, &secret, &[]).await.status(), 200);
    }
    let lowered = change(50).await;
    assert_eq!(lowered["used"].as_u64(), Some(5), "{lowered}");
    assert_eq!(
        quota_of(&server, &format!("/v1/tokens/{id}")).await["used"].as_u64(),
        Some(5)
    );
    let allowed = forward(&server, &secret, &[]).await;
    assert_eq!(
        allowed.status(),
        200,
        "the drained reserve does not count as spent"
    );
    assert_eq!(remaining(&allowed), Some(44));

    for (body, field) in [
        (json!({"limit": 0, "period": "day"}), "limit"),
        (
            json!({"limit": 9_007_199_254_740_992_u64, "period": "day"}),
            "limit",
        ),
        (json!({"limit": 5, "period": "week"}), "period"),
        (
            json!({"limit": 5, "period": "day", "anchor": "2099-01-01T00:00:00Z"}),
            "anchor",
        ),
        (
            json!({"limit": 5, "period": "total", "anchor": "2099-01-01T00:00:00Z"}),
            "anchor",
        ),
    ] {
        let response = server
            .call(Method::PUT, &path, &server.token, Some(body))
            .await;
        let problem = problem(response, 400, "invalid-request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let response = server
        .call(Method::PUT, &path, &server.token, Some(json!({"limit": 5})))
        .await;
    problem(response, 400, "invalid-request").await;
    let token = quota_of(&server, &format!("/v1/tokens/{id}")).await;
    assert_eq!(token["limit"], 50, "refused changes changed nothing");

    // A bad quota at creation is refused with its field, and nothing is made.
    let response = server
        .call(Method::POST, "/v1/tokens", &server.token,
            Some(json!({"kind": "service", "name": "x", "role": "viewer", "quota": {"limit": 0, "period": "hour"}})))
        .await;
    let body = problem(response, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "quota.limit", "{body}");

    let removed = server
        .call(Method::PUT, &path, &server.token, Some(Value::Null))
        .await;
    assert_eq!(removed.status(), 204);
    assert_eq!(
        quota_of(&server, &format!("/v1/tokens/{id}")).await,
        Value::Null
    );
    let allowed = forward(&server, &secret, &[]).await;
    assert_eq!(
        (allowed.status().as_u16(), remaining(&allowed)),
        (200, None)
    );

    let unknown = server
        .call(
            Method::PUT,
            "/v1/tokens/tok_0000000000000000000000/quota",
            &server.token,
            Some(json!({"limit": 5, "period": "day"})),
        )
        .await;
    problem(unknown, 404, "not-found").await;

    // An OAuth client: created with a quota, which its access tokens spend.
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(
                json!({"name": "sync", "role": "viewer", "quota": {"limit": 2, "period": "month"}}),
            ),
        )
        .await;
    let client_id = client["client_id"].as_str().unwrap();
    assert_eq!(client["quota"]["limit"], 2);
    let issued: Value = server
        .post("/v1/oauth/token")
        .basic_auth(client_id, Some(client["client_secret"].as_str().unwrap()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(remaining(&forward(&server, access, &[]).await), Some(1));
    assert_eq!(remaining(&forward(&server, access, &[]).await), Some(0));
    assert_eq!(forward(&server, access, &[]).await.status(), 429);
    let replaced = server
        .expect(
            200,
            Method::PUT,
            &format!("/v1/oauth/clients/{client_id}/quota"),
            &server.token,
            Some(json!({"limit": 3, "period": "month", "anchor": START.to_string()})),
        )
        .await;
    assert_eq!(replaced["remaining"], 1);
    assert_eq!(
        forward(&server, access, &[]).await.status(),
        200,
        "the raise is seen at once"
    );

    let events = server
        .expect(
            200,
            Method::GET,
            "/v1/audit-events?action=quota.update&action=quota.delete",
            &server.token,
            None,
        )
        .await;
    let actions: Vec<(String, String)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("quota.update".to_owned(), client_id.to_owned()),
            ("quota.delete".to_owned(), id.clone()),
            ("quota.update".to_owned(), id.clone()),
            ("quota.update".to_owned(), id.clone()),
            ("quota.update".to_owned(), id.clone()),
            ("quota.update".to_owned(), id.clone()),
        ],
        "newest first, refused changes not recorded"
    );
}

/// A reseller's pool: set on the reseller by the platform, shared by its two customers' tokens,
/// which each also have a quota of their own; a customer's own pool is set by the reseller, never
/// by the customer itself (403), nor by a sibling (404).
#[tokio::test]
async fn a_tenant_pool_is_shared_below_it_and_set_from_above_only() {
    let server = TestServer::start(Backend::Sqlite).await;
    let tenant = |slug: &'static str, parent: Option<String>| {
        let server = &server;
        async move {
            let mut request = server
                .post("/v1/tenants")
                .bearer_auth(&server.token)
                .json(&json!({"name": slug, "slug": slug}));
            if let Some(parent) = parent {
                request = request.header("as-tenant", parent);
            }
            let made: Value = request.send().await.unwrap().json().await.unwrap();
            made["tenant"]["id"].as_str().unwrap().to_owned()
        }
    };
    let reseller = tenant("reseller", None).await;
    let alpha = tenant("alpha", Some(reseller.clone())).await;
    let beta = tenant("beta", Some(reseller.clone())).await;
    let (a_id, a) = token_with(
        &server,
        Some(&alpha),
        json!({"quota": {"limit": 4, "period": "hour"}}),
    )
    .await;
    let (_, b) = token_with(&server, Some(&beta), json!({})).await;

    server
        .expect(
            200,
            Method::PUT,
            &format!("/v1/tenants/{reseller}/quota"),
            &server.token,
            Some(json!({"limit": 6, "period": "hour"})),
        )
        .await;
    // Alpha's own quota is the tighter at first, then the pool.
    let first = forward(&server, &a, &[]).await;
    assert_eq!(remaining(&first), Some(3));
    for _ in 0..3 {
        assert_eq!(forward(&server, &b, &[]).await.status(), 200);
    }
    let last = forward(&server, &b, &[]).await;
    assert_eq!(remaining(&last), Some(1), "the pool: 6 less 5");
    assert_eq!(forward(&server, &a, &[]).await.status(), 200);
    for token in [&a, &b] {
        let refused = forward(&server, token, &[]).await;
        let body = problem(refused, 429, "quota-exceeded").await;
        assert!(body["detail"].as_str().unwrap().contains("pool"), "{body}");
    }
    assert_eq!(
        quota_of(&server, &format!("/v1/tenants/{reseller}")).await["remaining"],
        0
    );
    // Alpha's token spent 2 of its own 4: the pool's refusal gave back what its own quota paid.
    let own = server
        .request(Method::GET, &format!("/v1/tokens/{a_id}"))
        .bearer_auth(&server.token)
        .header("as-tenant", &alpha)
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(own).await["quota"]["remaining"], 2);

    // The reseller (an owner token of its own) sets alpha's pool; alpha cannot set its own,
    // nor reach beta's.
    let (_, reseller_admin) = token_with(&server, Some(&reseller), json!({"role": "owner"})).await;
    let (_, alpha_admin) = token_with(&server, Some(&alpha), json!({"role": "owner"})).await;
    let body = json!({"limit": 100, "period": "day"});
    let set = server
        .call(
            Method::PUT,
            &format!("/v1/tenants/{alpha}/quota"),
            &reseller_admin,
            Some(body.clone()),
        )
        .await;
    assert_eq!(set.status(), 200);
    let own = server
        .call(
            Method::PUT,
            &format!("/v1/tenants/{alpha}/quota"),
            &alpha_admin,
            Some(body.clone()),
        )
        .await;
    problem(own, 403, "forbidden").await;
    let sibling = server
        .call(
            Method::PUT,
            &format!("/v1/tenants/{beta}/quota"),
            &alpha_admin,
            Some(body.clone()),
        )
        .await;
    problem(sibling, 404, "not-found").await;
    let above = server
        .call(
            Method::PUT,
            &format!("/v1/tenants/{reseller}/quota"),
            &alpha_admin,
            Some(body),
        )
        .await;
    problem(above, 404, "not-found").await;
    // Alpha reads its pool, as its reseller set it.
    let read = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tenants/{alpha}"),
            &alpha_admin,
            None,
        )
        .await;
    assert_eq!(read["quota"]["limit"], 100);
}

/// A month anchored on the 31st refills on the last day of February (a leap year's 29th), then on
/// March 31st.
#[tokio::test]
async fn a_monthly_quota_anchored_on_the_31st_refills_on_the_last_day_of_february() {
    let server = TestServer::start(Backend::Sqlite).await;
    let at = |text: &str| Timestamp::parse(text).unwrap();
    server.clock.set(at("2028-01-31T12:00:00Z"));
    let (_, secret) = token_with(
        &server,
        None,
        json!({"expires_in": 31_536_000, "quota": {"limit": 1, "period": "month"}}),
    )
    .await;
    let spend = || forward(&server, &secret, &[]);
    assert_eq!(spend().await.status(), 200);
    let refused = spend().await;
    assert_eq!(refused.status(), 429);
    let wait: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        wait,
        at("2028-02-29T12:00:00Z").unix() - at("2028-01-31T12:00:00Z").unix()
    );
    server.clock.set(at("2028-02-29T11:59:59Z"));
    assert_eq!(spend().await.status(), 429);
    server.clock.set(at("2028-02-29T12:00:00Z"));
    assert_eq!(spend().await.status(), 200);
    server.clock.set(at("2028-03-30T12:00:00Z"));
    assert_eq!(spend().await.status(), 429, "March's refill is on the 31st");
    server.clock.set(at("2028-03-31T12:00:00Z"));
    assert_eq!(spend().await.status(), 200);
}

/// A daily quota refills at its anchor's time of day, in UTC, whatever the hour it is set.
#[tokio::test]
async fn a_daily_quota_refills_at_the_anchors_time_of_day() {
    let server = TestServer::start(Backend::Sqlite).await;
    let at = |text: &str| Timestamp::parse(text).unwrap();
    server.clock.set(at("2027-03-27T23:10:00Z"));
    let (_, secret) = token_with(
        &server,
        None,
        json!({"quota": {"limit": 2, "period": "day", "anchor": "2027-03-20T09:30:00Z"}}),
    )
    .await;
    let spend = || forward(&server, &secret, &[]);
    for _ in 0..2 {
        assert_eq!(spend().await.status(), 200);
    }
    let refused = spend().await;
    assert_eq!(
        refused.headers()["retry-after"],
        "37200",
        "until 09:30 the next day"
    );
    server.clock.set(at("2027-03-28T09:29:59Z"));
    assert_eq!(spend().await.status(), 429);
    server.clock.set(at("2027-03-28T09:30:00Z"));
    let allowed = spend().await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(remaining(&allowed), Some(1));
}

/// Six client threads hammer one credential with a quota of 1 000 through `nodes` nodes in turn:
/// the allowed requests, and every other answer's status.
async fn hammer(bases: Vec<String>, secret: String, per_thread: usize) -> (u64, Vec<u16>) {
    let allowed = Arc::new(AtomicU64::new(0));
    let others = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..6)
        .map(|thread| {
            let (bases, secret, allowed, others) = (
                bases.clone(),
                secret.clone(),
                allowed.clone(),
                others.clone(),
            );
            tokio::spawn(async move {
                let http = client();
                for n in 0..per_thread {
                    let base = &bases[(thread + n) % bases.len()];
                    let answer = http
                        .get(format!("{base}/v1/forward-auth"))
                        .bearer_auth(&secret)
                        .send()
                        .await;
                    match answer.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(status) => others.lock().unwrap().push(status),
                        // A killed node: its requests fail, and count as nothing.
                        Err(_) => others.lock().unwrap().push(0),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.await.unwrap();
    }
    let others = others.lock().unwrap().clone();
    (allowed.load(Ordering::Relaxed), others)
}

/// Three nodes on one PostgreSQL, six client threads, one credential with a quota of 1 000:
/// exactly 1 000 allowed, every other answer a 429; and far fewer store round trips than requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_admit_exactly_the_quota_between_them() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let c = a.join().await;
    let (_, secret) =
        token_with(&a, None, json!({"quota": {"limit": 1000, "period": "day"}})).await;
    let bases = vec![a.base.clone(), b.base.clone(), c.base.clone()];
    let (allowed, others) = hammer(bases, secret, 300).await;
    assert_eq!(allowed, 1_000);
    assert_eq!(others.len(), 800);
    assert!(others.iter().all(|s| *s == 429), "{others:?}");
    let takes: u64 = [&a, &b, &c]
        .iter()
        .map(|n| n.state.gate().credits().store_takes())
        .sum();
    assert!(takes < 400, "{takes} round trips for 1 800 requests");
}

/// The same with real processes, one of them killed with SIGKILL mid-run while holding credits:
/// never more than the limit, and at most one reserve (plus the requests it was answering) lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_run_never_lets_the_quota_be_passed() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let url = keygate_testkit::PgCluster::shared().create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let keygate = || crate::binary::keygate_in(dir.path(), &url);
    let init = keygate().args(["init", "--json"]).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let owner: Value = serde_json::from_slice(&init.stdout).unwrap();
    let owner = owner["token"].as_str().unwrap().to_owned();
    let mut nodes: Vec<crate::binary::Serve> = (0..3)
        .map(|_| {
            let mut command = keygate();
            command.arg("serve");
            crate::binary::Serve::spawn(command)
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let made: Value = client()
        .post(format!("{}/v1/tokens", bases[0]))
        .bearer_auth(&owner)
        .json(
            &json!({"kind": "service", "name": "metered", "role": "viewer",
                      "quota": {"limit": 1000, "period": "day"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = made["secret"].as_str().unwrap().to_owned();

    // Warm every node's reserve, then kill one while the threads run.
    let (warm, _) = hammer(bases.clone(), secret.clone(), 10).await;
    assert_eq!(warm, 60);
    let run = tokio::spawn(hammer(bases.clone(), secret.clone(), 600));
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes.remove(2).kill();
    let (allowed, others) = run.await.unwrap();
    let allowed = warm + allowed;
    let refused = others.iter().filter(|s| **s == 429).count();
    assert!(
        refused > 0,
        "the run must outlast the quota: {allowed} allowed"
    );
    assert!(allowed <= 1_000, "{allowed} allowed");
    // The dead node's reserve, and a request per thread it may have been answering.
    let bound = keygate_core::reserve::RESERVE + 6;
    assert!(
        allowed >= 1_000 - bound,
        "{allowed} allowed: more lost than the bound"
    );
    assert!(others.iter().all(|s| matches!(s, 0 | 429)), "{others:?}");
    for node in nodes {
        let (status, log) = node.stop();
        assert!(status.success(), "{log}");
    }
}

/// A rate limit of 10 a minute on two nodes sharing PostgreSQL: a burst of 10 between them, not
/// 10 each (a limit this small is taken one request at a time, so the bound is exact); a minute
/// later, 10 again. (On one node the limiter alone is exact.)
#[tokio::test]
async fn a_rate_limit_holds_across_two_nodes() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let a = TestServer::start(Backend::Postgres).await;
    let b = a.join().await;
    let (_, secret) = token_with(
        &a,
        None,
        json!({"rate_limit": {"requests": 10, "per_seconds": 60}}),
    )
    .await;
    let round = || async {
        let mut allowed = 0;
        for n in 0..40 {
            let node = if n % 2 == 0 { &a } else { &b };
            let answer = forward(node, &secret, &[]).await;
            match answer.status().as_u16() {
                200 => allowed += 1,
                429 => {
                    let body = problem(answer, 429, "rate-limited").await;
                    assert!(body["detail"].as_str().unwrap().contains("10 requests"));
                }
                other => panic!("{other}"),
            }
        }
        allowed
    };
    assert_eq!(round().await, 10, "10 between the two nodes, not 10 each");
    for node in [&a, &b] {
        node.clock.advance(Duration::from_secs(60));
    }
    assert_eq!(round().await, 10);
}

/// The token page shows the quota as a bar with what is used, what is left and when it refills,
/// read as a person reads them, and warns once it is spent; checked with axe-core.
#[tokio::test]
async fn in_a_browser_a_tokens_page_shows_its_quota() {
    use crate::console::{OWNER, audit, browser_session, sign_in};
    let Some((browser, axe, shots)) = browser_session("keygate-console-quota-").await else {
        return;
    };
    let server = TestServer::start(Backend::Sqlite).await;
    server
        .clock
        .set(Timestamp::parse("2026-12-14T09:30:00Z").unwrap());
    let (id, secret) = token_with(
        &server,
        None,
        json!({"name": "billing", "quota": {"limit": 40, "period": "month",
               "anchor": "2026-12-01T00:00:00Z"}}),
    )
    .await;
    for _ in 0..30 {
        assert_eq!(forward(&server, &secret, &[]).await.status(), 200);
    }
    let client = &browser.client;
    client
        .goto(&format!("{}/console/sign-in", server.base))
        .await
        .unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.find("main table").await;
    client
        .goto(&format!("{}/console/tokens/{id}", server.base))
        .await
        .unwrap();
    let browser = &browser;
    let text = |css: &'static str| async move {
        browser
            .find(css)
            .await
            .text()
            .await
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(
        text("label[for='quota-bar']").await,
        "30 of 40 requests used this month"
    );
    let bar = browser.find("#quota-bar").await;
    assert_eq!(bar.attr("value").await.unwrap().as_deref(), Some("30"));
    assert_eq!(bar.attr("max").await.unwrap().as_deref(), Some("40"));
    assert_eq!(
        text("#quota-left").await,
        "10 left. Refills on 2027-01-01 00:00 UTC."
    );
    audit(browser, axe.as_deref(), &shots, "token-quota").await;

    for _ in 0..10 {
        assert_eq!(forward(&server, &secret, &[]).await.status(), 200);
    }
    client.refresh().await.unwrap();
    assert!(
        text("#quota-left")
            .await
            .starts_with("None left: requests are refused with 429"),
        "spent"
    );
    audit(browser, axe.as_deref(), &shots, "token-quota-spent").await;

    // Raised from the page: the month goes on counting what it used.
    let limit = browser.find("#quota-limit").await;
    limit.clear().await.unwrap();
    limit.send_keys("100").await.unwrap();
    browser.click(".quota-form button:not([name=remove])").await;
    assert_eq!(
        text("#quota-notice").await,
        "Quota set: 100 requests a month. 40 used so far."
    );
    assert_eq!(
        text("#quota-left").await,
        "60 left. Refills on 2027-01-01 00:00 UTC."
    );
    assert_eq!(forward(&server, &secret, &[]).await.status(), 200);
    audit(browser, axe.as_deref(), &shots, "token-quota-raised").await;
}
