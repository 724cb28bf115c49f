//! Usage (API.md §12): the read and its exports against counts added to the store as nodes add
//! them, for credentials and tenants made through the API. Exact counts per minute, hour and day,
//! every grouping, the bounds, tenant scoping, the permission, every bad parameter, the exports,
//! and retention on the test clock.
//!
//! The counts are put where no request of these tests falls: days before the clock's time (every
//! request is counted at the time it is made), so that the test's own calls never add to them.

use std::collections::BTreeMap;
use std::time::Duration;

use keygate_core::Timestamp;
use keygate_core::id::{CredentialId, TenantId};
use keygate_core::store::{Granularity, UsageCount, UsageOutcome};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, START, TestServer, ok_json, problem};

on_every_backend!(
    counts_are_exact_by_minute_and_outcome,
    hours_and_days_sum_the_minutes,
    hours_and_days_read_the_same_once_rolled_up,
    every_grouping_sums_what_it_leaves_out,
    since_and_until_bound_whole_buckets,
    a_tenant_sees_its_subtree_only,
    reading_usage_needs_usage_read,
    bad_parameters_are_named,
    exports_carry_the_same_data,
    buckets_past_retention_are_pruned,
    the_longest_range_follows_the_configured_retention,
    every_path_counts_each_request_once_by_outcome,
    the_token_endpoint_counts_a_known_clients_grants_and_refusals,
);

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Midnight five days before the clock's start: where the counts go.
fn base() -> i64 {
    Granularity::Day.bucket(START).unix() - 5 * DAY
}

fn at(offset: i64) -> String {
    Timestamp::from_unix(base() + offset).to_string()
}

/// A count added: (credential, tenant, minute as an offset from [`base`], outcome, count).
type Seed = (String, String, i64, UsageOutcome, u64);

/// A bucket of the expected answer: its start (an offset) and the keys grouped by.
type Key<'a> = (i64, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// The tenants and credentials of a reseller (root) with two sub-customers, and counts for them.
struct World {
    server: TestServer,
    root: String,
    child: String,
    sibling: String,
    /// An owner token of the child, made by the reseller.
    child_owner: String,
    sibling_owner: String,
    r1: String,
    r2: String,
    c1: String,
    s1: String,
    /// Everything added.
    seeded: Vec<Seed>,
}

/// A service token with `role` made by `token`, in `tenant` if given; its secret and id.
async fn token_in(
    server: &TestServer,
    token: &str,
    tenant: Option<&str>,
    role: &str,
) -> (String, String) {
    let mut request = server.post("/v1/tokens").bearer_auth(token);
    if let Some(tenant) = tenant {
        request = request.header("as-tenant", tenant);
    }
    let response = request
        .json(&json!({"kind": "service", "name": format!("t {role}"), "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    (
        made["secret"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    )
}

async fn tenant(server: &TestServer, name: &str) -> String {
    let made = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": name})),
        )
        .await;
    made["tenant"]["id"].as_str().unwrap().to_owned()
}

async fn add(server: &TestServer, counts: &[Seed]) {
    let counts: Vec<UsageCount> = counts
        .iter()
        .map(|(credential, tenant, offset, outcome, count)| UsageCount {
            credential_id: CredentialId::parse_any(credential).unwrap(),
            tenant_id: TenantId::parse(tenant).unwrap(),
            minute: Timestamp::from_unix(base() + offset),
            outcome: *outcome,
            count: *count,
        })
        .collect();
    server.state.store().add_usage(&counts, &[]).await.unwrap();
}

async fn world(backend: Backend) -> World {
    let server = TestServer::start(backend).await;
    let root_token = server.token.clone();
    let me = ok_json(server.whoami(&[("apikey", &root_token)]).await).await;
    let root = me["organization"]["id"].as_str().unwrap().to_owned();
    let child = tenant(&server, "Child").await;
    let sibling = tenant(&server, "Sibling").await;
    let (child_owner, _) = token_in(&server, &root_token, Some(&child), "owner").await;
    let (sibling_owner, _) = token_in(&server, &root_token, Some(&sibling), "owner").await;
    let (_, r1) = token_in(&server, &root_token, None, "viewer").await;
    let (_, r2) = token_in(&server, &root_token, None, "viewer").await;
    let (_, c1) = token_in(&server, &root_token, Some(&child), "viewer").await;
    let (_, s1) = token_in(&server, &root_token, Some(&sibling), "viewer").await;

    use UsageOutcome::*;
    let row = |c: &str, t: &str, offset: i64, outcome, count| {
        (c.to_owned(), t.to_owned(), offset, outcome, count)
    };
    let ten = 10 * HOUR;
    let seeded = vec![
        row(&r1, &root, ten, Valid, 5),
        row(&r1, &root, ten, Forbidden, 2),
        row(&r1, &root, ten + MINUTE, Valid, 3),
        row(&r1, &root, ten + 90 * MINUTE, Expired, 1),
        row(&r1, &root, DAY + 9 * HOUR, Valid, 7),
        row(&r2, &root, ten, Valid, 4),
        row(&c1, &child, ten, Valid, 6),
        row(&c1, &child, ten + 5 * MINUTE, RateLimited, 2),
        row(&s1, &sibling, ten, Valid, 8),
    ];
    // Two nodes' flushes of the same minute add up: r1's first minute arrives in two parts.
    let (first, rest) = seeded.split_at(1);
    let mut part = first[0].clone();
    part.4 = 3;
    add(&server, &[part.clone()]).await;
    part.4 = 2;
    let mut second = vec![part];
    second.extend_from_slice(rest);
    add(&server, &second).await;

    World {
        server,
        root,
        child,
        sibling,
        child_owner,
        sibling_owner,
        r1,
        r2,
        c1,
        s1,
        seeded,
    }
}

impl World {
    async fn usage(&self, token: &str, query: &str) -> Value {
        self.server
            .expect(200, Method::GET, &format!("/v1/usage?{query}"), token, None)
            .await
    }

    async fn data(&self, query: &str) -> Value {
        self.usage(&self.server.token, query).await["data"].clone()
    }

    /// What the read should answer, worked out here from what was added: the seeded counts of
    /// `tenants` in `[since, until)` (offsets), summed per bucket and grouped key, in the read's
    /// order (start, then credential, tenant, outcome).
    fn expected(
        &self,
        tenants: &[&str],
        granularity: Granularity,
        (since, until): (i64, i64),
        groups: &[&str],
    ) -> Value {
        let mut sums: BTreeMap<Key, u64> = BTreeMap::new();
        let grouped = |name: &str| groups.contains(&name);
        for (credential, tenant, offset, outcome, count) in &self.seeded {
            let start = Granularity::bucket(granularity, Timestamp::from_unix(base() + offset));
            let start = start.unix() - base();
            if !tenants.contains(&tenant.as_str()) || start < since || start >= until {
                continue;
            }
            let key = (
                start,
                grouped("credential").then_some(credential.as_str()),
                grouped("tenant").then_some(tenant.as_str()),
                grouped("outcome").then_some(outcome.as_str()),
            );
            *sums.entry(key).or_default() += count;
        }
        sums.into_iter()
            .map(|((start, credential, tenant, outcome), count)| {
                let mut row = json!({"start": at(start), "count": count});
                for (name, value) in [
                    ("credential_id", credential),
                    ("tenant_id", tenant),
                    ("outcome", outcome),
                ] {
                    if let Some(value) = value {
                        row[name] = value.into();
                    }
                }
                row
            })
            .collect()
    }
}

async fn counts_are_exact_by_minute_and_outcome(backend: Backend) {
    let w = world(backend).await;
    let query = format!(
        "credential_id={}&granularity=minute&since={}&until={}&group_by=outcome",
        w.r1,
        at(10 * HOUR),
        at(12 * HOUR)
    );
    let answer = w.usage(&w.server.token, &query).await;
    assert_eq!(
        answer,
        json!({
            "granularity": "minute",
            "since": at(10 * HOUR),
            "until": at(12 * HOUR),
            "data": [
                {"start": at(10 * HOUR), "outcome": "forbidden", "count": 2},
                {"start": at(10 * HOUR), "outcome": "valid", "count": 5},
                {"start": at(10 * HOUR + MINUTE), "outcome": "valid", "count": 3},
                {"start": at(10 * HOUR + 90 * MINUTE), "outcome": "expired", "count": 1},
            ],
        })
    );
    // Both credentials of the root, by credential and outcome, in the first minute.
    let query = format!(
        "credential_id={}&credential_id={}&granularity=minute&since={}&until={}\
         &group_by=credential&group_by=outcome",
        w.r1,
        w.r2,
        at(10 * HOUR),
        at(10 * HOUR + MINUTE)
    );
    let mut expected = vec![
        json!({"start": at(10 * HOUR), "credential_id": w.r1, "outcome": "forbidden", "count": 2}),
        json!({"start": at(10 * HOUR), "credential_id": w.r1, "outcome": "valid", "count": 5}),
        json!({"start": at(10 * HOUR), "credential_id": w.r2, "outcome": "valid", "count": 4}),
    ];
    expected.sort_by_key(|row| row["credential_id"].as_str().unwrap().to_owned());
    assert_eq!(w.data(&query).await, json!(expected));
}

async fn hours_and_days_sum_the_minutes(backend: Backend) {
    let w = world(backend).await;
    let range = format!("since={}&until={}", at(0), at(2 * DAY));
    let hours = w
        .usage(
            &w.server.token,
            &format!("credential_id={}&granularity=hour&{range}", w.r1),
        )
        .await;
    assert_eq!(hours["granularity"], "hour");
    assert_eq!(
        hours["data"],
        json!([
            {"start": at(10 * HOUR), "count": 10},
            {"start": at(11 * HOUR), "count": 1},
            {"start": at(DAY + 9 * HOUR), "count": 7},
        ])
    );
    let days = w
        .usage(
            &w.server.token,
            &format!("credential_id={}&granularity=day&{range}", w.r1),
        )
        .await;
    assert_eq!(days["granularity"], "day");
    assert_eq!(
        days["data"],
        json!([
            {"start": at(0), "count": 11},
            {"start": at(DAY), "count": 7},
        ])
    );
    // By outcome, per day, everything the root sees.
    let all = [w.root.as_str(), w.child.as_str(), w.sibling.as_str()];
    assert_eq!(
        w.data(&format!("granularity=day&{range}&group_by=outcome"))
            .await,
        w.expected(&all, Granularity::Day, (0, 2 * DAY), &["outcome"])
    );
    // Hour is the default granularity.
    assert_eq!(
        w.data(&format!("credential_id={}&{range}", w.r1)).await,
        hours["data"]
    );
}

/// Every read of hours and days of the seeded two days, the reseller's with each grouping and a
/// sub-customer's, against what was added.
async fn read_hours_and_days(w: &World, when: &str) {
    let all = [w.root.as_str(), w.child.as_str(), w.sibling.as_str()];
    let range = (0, 2 * DAY);
    let window = format!("since={}&until={}", at(range.0), at(range.1));
    for granularity in [Granularity::Hour, Granularity::Day] {
        for groups in [
            &[][..],
            &["credential"],
            &["tenant", "outcome"],
            &["credential", "outcome"],
        ] {
            let mut query = format!("granularity={}&{window}", granularity.as_str());
            for group in groups {
                query.push_str(&format!("&group_by={group}"));
            }
            assert_eq!(
                w.data(&query).await,
                w.expected(&all, granularity, range, groups),
                "{when}: {query}"
            );
        }
        let query = format!("granularity={}&{window}", granularity.as_str());
        assert_eq!(
            w.usage(&w.child_owner, &query).await["data"],
            w.expected(&[w.child.as_str()], granularity, range, &[]),
            "{when}: the child's {query}"
        );
    }
}

/// Hours and days are rolled up from minutes once the hour is over: every read answers the same
/// before and after, and a minute that comes after its hour was rolled up (from a node back
/// from a database outage) is counted once in its hour and day.
async fn hours_and_days_read_the_same_once_rolled_up(backend: Backend) {
    let mut w = world(backend).await;
    read_hours_and_days(&w, "before the roll-up").await;
    let buckets = w.seeded.len() as u64;
    assert_eq!(w.server.state.roll_up_usage().await.unwrap(), buckets);
    assert_eq!(w.server.state.roll_up_usage().await.unwrap(), 0, "done");
    read_hours_and_days(&w, "after the roll-up").await;

    let late = [
        (
            w.r1.clone(),
            w.root.clone(),
            10 * HOUR,
            UsageOutcome::Valid,
            4,
        ),
        (
            w.c1.clone(),
            w.child.clone(),
            11 * HOUR,
            UsageOutcome::Revoked,
            1,
        ),
    ];
    add(&w.server, &late).await;
    w.seeded.extend(late);
    read_hours_and_days(&w, "with late minutes").await;
    assert_eq!(w.server.state.roll_up_usage().await.unwrap(), 0);
    read_hours_and_days(&w, "with late minutes, after another roll-up").await;
}

async fn every_grouping_sums_what_it_leaves_out(backend: Backend) {
    let w = world(backend).await;
    let all = [w.root.as_str(), w.child.as_str(), w.sibling.as_str()];
    let range = (10 * HOUR, 11 * HOUR);
    let query = format!(
        "granularity=minute&since={}&until={}",
        at(range.0),
        at(range.1)
    );
    assert_eq!(
        w.data(&query).await,
        json!([
            {"start": at(10 * HOUR), "count": 25},
            {"start": at(10 * HOUR + MINUTE), "count": 3},
            {"start": at(10 * HOUR + 5 * MINUTE), "count": 2},
        ])
    );
    for groups in [
        &["credential"][..],
        &["outcome"],
        &["tenant"],
        &["credential", "outcome"],
        &["tenant", "outcome"],
        &["credential", "tenant"],
        &["outcome", "tenant", "credential"],
    ] {
        let mut query = query.clone();
        for group in groups {
            query.push_str(&format!("&group_by={group}"));
        }
        let data = w.data(&query).await;
        assert_eq!(
            data,
            w.expected(&all, Granularity::Minute, range, groups),
            "{groups:?}"
        );
        assert!(!data.as_array().unwrap().is_empty());
    }
    // A tenant by itself, and the same group asked twice.
    let by_tenant = w
        .data(&format!(
            "{query}&group_by=tenant&group_by=tenant&tenant_id={}",
            w.child
        ))
        .await;
    assert_eq!(
        by_tenant,
        json!([
            {"start": at(10 * HOUR), "tenant_id": w.child, "count": 6},
            {"start": at(10 * HOUR + 5 * MINUTE), "tenant_id": w.child, "count": 2},
        ])
    );
}

async fn since_and_until_bound_whole_buckets(backend: Backend) {
    let w = world(backend).await;
    let minutes = |since: String, until: String| {
        format!(
            "credential_id={}&granularity=minute&since={since}&until={until}",
            w.r1
        )
    };
    // `since` inclusive, `until` exclusive.
    let answer = w
        .usage(
            &w.server.token,
            &minutes(at(10 * HOUR + MINUTE), at(10 * HOUR + 90 * MINUTE)),
        )
        .await;
    assert_eq!(
        answer["data"],
        json!([{"start": at(10 * HOUR + MINUTE), "count": 3}])
    );
    // Times inside a bucket take the whole bucket: since back, until on.
    let answer = w
        .usage(
            &w.server.token,
            &minutes(at(10 * HOUR + 30), at(10 * HOUR + 61)),
        )
        .await;
    assert_eq!(answer["since"], at(10 * HOUR));
    assert_eq!(answer["until"], at(10 * HOUR + 2 * MINUTE));
    assert_eq!(
        answer["data"],
        json!([
            {"start": at(10 * HOUR), "count": 7},
            {"start": at(10 * HOUR + MINUTE), "count": 3},
        ])
    );
    let answer = w
        .usage(
            &w.server.token,
            &format!(
                "credential_id={}&since={}&until={}",
                w.r1,
                at(10 * HOUR + 59 * MINUTE),
                at(11 * HOUR + 1)
            ),
        )
        .await;
    assert_eq!(
        (&answer["since"], &answer["until"]),
        (&json!(at(10 * HOUR)), &json!(at(12 * HOUR)))
    );
    assert_eq!(
        answer["data"],
        json!([
            {"start": at(10 * HOUR), "count": 10},
            {"start": at(11 * HOUR), "count": 1},
        ])
    );
    // An offset other than Z is the same instant.
    let eastern = Timestamp::from_unix(base() + 10 * HOUR);
    let plus_two = format!("{}T{:02}:00:00%2B02:00", &eastern.to_string()[..10], 10 + 2);
    let answer = w
        .usage(
            &w.server.token,
            &format!(
                "credential_id={}&granularity=minute&since={plus_two}&until={}",
                w.r1,
                at(10 * HOUR + MINUTE)
            ),
        )
        .await;
    assert_eq!(answer["data"][0]["count"], 7, "{answer}");

    // Without bounds: the day before now, in whole hours.
    add(
        &w.server,
        &[(
            w.r2.clone(),
            w.root.clone(),
            Granularity::Minute.bucket(START).unix() - base() - HOUR,
            UsageOutcome::Valid,
            9,
        )],
    )
    .await;
    let answer = w
        .usage(&w.server.token, &format!("credential_id={}", w.r2))
        .await;
    let hour = Granularity::Hour.bucket(START).unix();
    assert_eq!(answer["granularity"], "hour");
    assert_eq!(
        answer["until"],
        Timestamp::from_unix(hour + HOUR).to_string()
    );
    assert_eq!(
        answer["since"],
        Timestamp::from_unix(hour - 24 * HOUR).to_string()
    );
    assert_eq!(
        answer["data"],
        json!([{"start": Timestamp::from_unix(hour - HOUR).to_string(), "count": 9}])
    );
    // `until` alone reads the day before it; `since` alone, up to now.
    let answer = w
        .usage(
            &w.server.token,
            &format!("credential_id={}&until={}", w.r1, at(DAY)),
        )
        .await;
    assert_eq!(answer["since"], at(0));
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    let answer = w
        .usage(
            &w.server.token,
            &format!("credential_id={}&since={}", w.r1, at(DAY)),
        )
        .await;
    assert_eq!(
        answer["data"],
        json!([{"start": at(DAY + 9 * HOUR), "count": 7}])
    );
}

async fn a_tenant_sees_its_subtree_only(backend: Backend) {
    let w = world(backend).await;
    let range = (0, 2 * DAY);
    let query = format!(
        "since={}&until={}&group_by=credential&group_by=tenant",
        at(range.0),
        at(range.1)
    );
    let child_view = w.usage(&w.child_owner, &query).await["data"].clone();
    assert_eq!(
        child_view,
        w.expected(
            &[w.child.as_str()],
            Granularity::Hour,
            range,
            &["credential", "tenant"]
        )
    );
    assert!(!child_view.as_array().unwrap().is_empty());
    let sibling_view = w.usage(&w.sibling_owner, &query).await["data"].clone();
    assert_eq!(
        sibling_view,
        w.expected(
            &[w.sibling.as_str()],
            Granularity::Hour,
            range,
            &["credential", "tenant"]
        )
    );
    // The parent's and the sibling's credentials and tenants, asked for by id, match nothing.
    for other in [&w.r1, &w.s1] {
        let data = w
            .usage(&w.child_owner, &format!("{query}&credential_id={other}"))
            .await;
        assert_eq!(data["data"], json!([]), "{other}");
    }
    for other in [&w.root, &w.sibling] {
        let data = w
            .usage(&w.child_owner, &format!("{query}&tenant_id={other}"))
            .await;
        assert_eq!(data["data"], json!([]), "{other}");
    }
    // The reseller sees its own and its sub-customers', all or by tenant.
    assert_eq!(
        w.data(&query).await,
        w.expected(
            &[w.root.as_str(), w.child.as_str(), w.sibling.as_str()],
            Granularity::Hour,
            range,
            &["credential", "tenant"]
        )
    );
    assert_eq!(
        w.data(&format!("{query}&tenant_id={}", w.child)).await,
        child_view
    );
    assert_eq!(
        w.data(&format!("{query}&credential_id={}", w.c1)).await,
        child_view
    );
    // A tenant's own credentials only: the root's id does not bring in its sub-customers'.
    assert_eq!(
        w.data(&format!("{query}&tenant_id={}", w.root)).await,
        w.expected(
            &[w.root.as_str()],
            Granularity::Hour,
            range,
            &["credential", "tenant"]
        )
    );
    // Acting for the child, the reseller sees what the child sees.
    let response = w
        .server
        .get(&format!("/v1/usage?{query}"))
        .bearer_auth(&w.server.token)
        .header("as-tenant", &w.child)
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(response).await["data"], child_view);
    // And the child's export is its own too.
    let export = w
        .server
        .get(&format!("/v1/usage/export?{query}"))
        .bearer_auth(&w.child_owner)
        .send()
        .await
        .unwrap();
    let lines = ndjson(export).await;
    assert_eq!(Value::Array(lines), child_view);
}

async fn reading_usage_needs_usage_read(backend: Backend) {
    let w = world(backend).await;
    let role = w
        .server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &w.server.token,
            Some(json!({"name": "token reader", "permissions": ["tokens:read"]})),
        )
        .await;
    let (narrow, _) = token_in(
        &w.server,
        &w.server.token,
        None,
        role["id"].as_str().unwrap(),
    )
    .await;
    for path in ["/v1/usage", "/v1/usage/export"] {
        let response = w
            .server
            .get(path)
            .bearer_auth(&narrow)
            .send()
            .await
            .unwrap();
        let body = problem(response, 403, "forbidden").await;
        assert_eq!(body["missing_permissions"], json!(["usage:read"]), "{path}");
        let response = w.server.get(path).send().await.unwrap();
        problem(response, 401, "unauthenticated").await;
    }
    // Every built-in role reads usage: a viewer does.
    let (viewer, _) = token_in(&w.server, &w.server.token, None, "viewer").await;
    let data = w
        .usage(
            &viewer,
            &format!("credential_id={}&since={}&until={}", w.r2, at(0), at(DAY)),
        )
        .await;
    assert_eq!(data["data"], json!([{"start": at(10 * HOUR), "count": 4}]));
}

async fn bad_parameters_are_named(backend: Backend) {
    let w = world(backend).await;
    let many = |name: &str, id: &str| {
        (0..101)
            .map(|_| format!("{name}={id}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let now = START.to_string();
    let later = Timestamp::from_unix(START.unix() + HOUR).to_string();
    let day = |n: i64| at(n * DAY);
    let cases: Vec<(String, &str)> = vec![
        ("granularity=week".into(), "granularity"),
        ("group_by=credential&group_by=color".into(), "group_by[1]"),
        ("since=yesterday".into(), "since"),
        // Empty is not "the default": a time was meant and is missing.
        ("since=".into(), "since"),
        ("until=".into(), "until"),
        ("granularity=".into(), "granularity"),
        ("group_by=".into(), "group_by"),
        ("until=2026-13-01T00:00:00Z".into(), "until"),
        (format!("since={}&until={}", day(1), day(0)), "until"),
        (format!("since={}&until={}", day(1), day(1)), "until"),
        (format!("since={later}"), "since"),
        (format!("since={now}"), "since"),
        (
            format!(
                "granularity=minute&since={}&until={}",
                day(0),
                at(48 * HOUR + 1)
            ),
            "since",
        ),
        (
            format!("granularity=hour&since={}&until={}", day(0), day(91)),
            "since",
        ),
        (format!("granularity=minute&since={}", day(3)), "since"),
        (many("credential_id", &w.r1), "credential_id"),
        (many("tenant_id", &w.root), "tenant_id"),
        (
            format!("credential_id={}&credential_id=usr_x", w.r1),
            "credential_id[1]",
        ),
        ("tenant_id=tok_abc".into(), "tenant_id[0]"),
        (
            "granularity=day&since=9999-12-01T00:00:00Z&until=9999-12-31T23:59:59Z".into(),
            "until",
        ),
    ];
    for (query, field) in &cases {
        for path in ["/v1/usage", "/v1/usage/export"] {
            let response = w
                .server
                .get(&format!("{path}?{query}"))
                .bearer_auth(&w.server.token)
                .header("accept", "text/csv")
                .send()
                .await
                .unwrap();
            let body = problem(response, 400, "invalid-request").await;
            let fields: Vec<&str> = body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}?{query}: {body}"))
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert_eq!(fields, [*field], "{path}?{query}: {body}");
        }
    }
    // At the limits: 48 hours of minutes, 90 days of hours, 100 ids, and any range of days.
    for query in [
        format!(
            "granularity=minute&since={}&until={}",
            day(0),
            at(48 * HOUR)
        ),
        format!("granularity=hour&since={}&until={}", day(0), day(90)),
        format!(
            "granularity=day&since=2000-01-01T00:00:00Z&until={}",
            day(3)
        ),
        many("credential_id", &w.r1)
            .split_once('&')
            .unwrap()
            .1
            .to_owned(),
    ] {
        w.data(&query).await;
    }
    // An unknown parameter is refused too, not ignored.
    let response = w
        .server
        .get("/v1/usage?outcome=valid")
        .bearer_auth(&w.server.token)
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid-request").await;
}

async fn ndjson(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn exports_carry_the_same_data(backend: Backend) {
    let w = world(backend).await;
    let range = format!(
        "granularity=minute&since={}&until={}",
        at(10 * HOUR),
        at(11 * HOUR)
    );
    for groups in [
        "",
        "&group_by=credential&group_by=outcome",
        "&group_by=tenant",
    ] {
        let query = format!("{range}{groups}");
        let data = w.data(&query).await;
        assert!(!data.as_array().unwrap().is_empty());
        let export = |accept: &'static str| {
            w.server
                .get(&format!("/v1/usage/export?{query}"))
                .bearer_auth(&w.server.token)
                .header("accept", accept)
                .send()
        };

        // NDJSON, asked for or by default: one line per bucket, as in `data`.
        for accept in ["application/x-ndjson", "*/*"] {
            let lines = ndjson(export(accept).await.unwrap()).await;
            assert_eq!(Value::Array(lines), data, "{query} {accept}");
        }

        // CSV: a header, then every column on every line, empty where not grouped by.
        let response = export("text/csv").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        let text = response.text().await.unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("start,credential_id,tenant_id,outcome,count")
        );
        let rows: Vec<Value> = lines
            .map(|line| {
                let cells: Vec<&str> = line.split(',').collect();
                assert_eq!(cells.len(), 5, "{line}");
                let mut row = json!({"start": cells[0], "count": cells[4].parse::<u64>().unwrap()});
                for (name, cell) in [
                    ("credential_id", cells[1]),
                    ("tenant_id", cells[2]),
                    ("outcome", cells[3]),
                ] {
                    if !cell.is_empty() {
                        row[name] = cell.into();
                    }
                }
                row
            })
            .collect();
        assert_eq!(Value::Array(rows), data, "{query} as CSV");
        assert!(text.ends_with('\n'));
    }
    // Nothing selected: the CSV is its header alone, the NDJSON empty.
    let query = format!(
        "credential_id={}&granularity=minute&since={}&until={}",
        w.s1,
        at(12 * HOUR),
        at(13 * HOUR)
    );
    let response = w
        .server
        .get(&format!("/v1/usage/export?{query}"))
        .bearer_auth(&w.server.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "start,credential_id,tenant_id,outcome,count\n"
    );
    let response = w
        .server
        .get(&format!("/v1/usage/export?{query}"))
        .bearer_auth(&w.server.token)
        .send()
        .await
        .unwrap();
    assert!(ndjson(response).await.is_empty());
}

async fn buckets_past_retention_are_pruned(backend: Backend) {
    let w = &world(backend).await;
    // Counts around now: one an hour ago, one an hour from now (a node's clock ahead).
    let now = Granularity::Minute.bucket(START).unix() - base();
    let recent = [
        (
            w.r2.clone(),
            w.root.clone(),
            now - HOUR,
            UsageOutcome::Valid,
            1,
        ),
        (
            w.r2.clone(),
            w.root.clone(),
            now + HOUR,
            UsageOutcome::Valid,
            2,
        ),
    ];
    add(&w.server, &recent).await;
    let read = |granularity: &'static str, (since, until): (i64, i64)| {
        let query = format!(
            "credential_id={}&granularity={granularity}&since={}&until={}",
            w.r2,
            at(since),
            at(until)
        );
        async move {
            let data = w.data(&query).await;
            data.as_array()
                .unwrap()
                .iter()
                .map(|row| row["count"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        }
    };
    let none = Vec::<u64>::new();
    let window = (now - 2 * HOUR, now + 2 * HOUR);
    let days = (now - 2 * DAY, now + 2 * DAY);
    let seeded = (0, 2 * DAY);
    assert_eq!(read("minute", window).await, [1, 2]);
    // Nothing is past retention yet but the seeded minutes, five days old.
    let pruned = w.server.state.prune_usage().await.unwrap();
    assert_eq!(pruned, u64::try_from(w.seeded.len()).unwrap());
    assert_eq!(read("minute", seeded).await, none);
    assert_eq!(read("hour", seeded).await, [4]);

    // 48 hours on, the minute an hour before start is 49 hours old and goes; the one an hour
    // after start is 47 hours old and stays; their hours and days stay.
    w.server.clock.advance(Duration::from_secs(48 * 3600));
    w.server.state.prune_usage().await.unwrap();
    assert_eq!(read("minute", window).await, [2]);
    assert_eq!(read("hour", window).await, [1, 2]);
    assert_eq!(read("day", days).await.iter().sum::<u64>(), 3);

    // 91 days after start, every hour is past 90 days; the days stay.
    w.server.clock.advance(Duration::from_secs(89 * 24 * 3600));
    w.server.state.prune_usage().await.unwrap();
    assert_eq!(read("hour", window).await, none);
    assert_eq!(read("hour", seeded).await, none);
    assert_eq!(read("day", days).await.iter().sum::<u64>(), 3);
    assert_eq!(read("day", seeded).await, [4]);

    // 729 days after start, the seeded days (734 days old) go and start's day stays; two days
    // later it goes too.
    w.server.clock.advance(Duration::from_secs(638 * 24 * 3600));
    w.server.state.prune_usage().await.unwrap();
    assert_eq!(read("day", seeded).await, none);
    assert_eq!(read("day", days).await.iter().sum::<u64>(), 3);
    w.server.clock.advance(Duration::from_secs(2 * 24 * 3600));
    w.server.state.prune_usage().await.unwrap();
    assert_eq!(read("day", days).await, none);
}

async fn the_longest_range_follows_the_configured_retention(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.usage.minute_retention_hours = 6;
        c.usage.hour_retention_days = 2;
    })
    .await;
    let read = |query: String| {
        server
            .get(&format!("/v1/usage?{query}"))
            .bearer_auth(&server.token)
            .send()
    };
    // Without `since`, minutes are read for as long as they are kept when that is under a day.
    let answer = ok_json(read("granularity=minute".into()).await.unwrap()).await;
    // `until` is now, moved on to its minute's end; `since` six hours before now, moved back.
    let minute = Granularity::Minute.bucket(START).unix();
    assert_eq!(
        answer["until"],
        Timestamp::from_unix(minute + MINUTE).to_string()
    );
    assert_eq!(
        answer["since"],
        Timestamp::from_unix(minute - 6 * HOUR).to_string()
    );
    for (granularity, longest) in [("minute", 6 * HOUR), ("hour", 2 * DAY)] {
        let range = |span: i64| {
            format!(
                "granularity={granularity}&since={}&until={}",
                at(0),
                at(span)
            )
        };
        ok_json(read(range(longest)).await.unwrap()).await;
        let body = problem(
            read(range(longest + 1)).await.unwrap(),
            400,
            "invalid-request",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "since", "{body}");
        let said = if granularity == "minute" {
            "6 hours"
        } else {
            "2 days"
        };
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(said), "{message}");
    }
}

#[test]
fn the_document_describes_both_operations_and_both_export_formats() {
    let (_, document) = keygate_server::api();
    let doc = serde_json::to_value(&document).unwrap();
    let read = &doc["paths"]["/v1/usage"]["get"];
    assert_eq!(read["operationId"], "getUsage");
    assert_eq!(read["tags"], json!(["usage"]));
    let names: Vec<&str> = read["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "credential_id",
            "tenant_id",
            "since",
            "until",
            "granularity",
            "group_by"
        ]
    );
    let export = &doc["paths"]["/v1/usage/export"]["get"];
    assert_eq!(export["operationId"], "exportUsage");
    let content = export["responses"]["200"]["content"].as_object().unwrap();
    let types: Vec<&String> = content.keys().collect();
    assert_eq!(types, ["application/x-ndjson", "text/csv"]);
    // A key not grouped by is absent, never null.
    let row = &doc["components"]["schemas"]["UsageRow"];
    assert_eq!(row["required"], json!(["start", "count"]));
    for key in ["credential_id", "tenant_id", "outcome"] {
        assert_eq!(row["properties"][key]["type"], "string", "{key}");
    }
}

/// A service token made through the API with `extra` fields; (secret, id).
async fn made(server: &TestServer, name: &str, role: &str, extra: Value) -> (String, String) {
    let mut body = json!({"kind": "service", "name": name, "role": role});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let made = server
        .expect(201, Method::POST, "/v1/tokens", &server.token, Some(body))
        .await;
    (
        made["secret"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    )
}

/// Requests through the management API, forward-auth and `/v1/verify`, each refused or admitted
/// for a reason of its own (a management handler's missing permission among them), are counted
/// once each under the credential they were about, by outcome, and readable once the node has written its batch. The service asking `/v1/verify` is
/// not counted; the credential it asks about is.
async fn every_path_counts_each_request_once_by_outcome(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (used, used_id) = made(&server, "used", "viewer", json!({})).await;
    let (fenced, fenced_id) = made(
        &server,
        "fenced",
        "viewer",
        json!({"allowed_ips": ["10.0.0.0/8"]}),
    )
    .await;
    let (limited, limited_id) = made(
        &server,
        "limited",
        "viewer",
        json!({"rate_limit": {"requests": 1, "per_seconds": 3600}}),
    )
    .await;
    let (revoked, revoked_id) = made(&server, "revoked", "viewer", json!({})).await;
    let (expiring, expiring_id) =
        made(&server, "expiring", "viewer", json!({"expires_in": 60})).await;
    let (asker, asker_id) = made(&server, "asker", "admin", json!({})).await;
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{revoked_id}"),
            &server.token,
            None,
        )
        .await;
    server.clock.advance(Duration::from_secs(120));

    let whoami = async |secret: &str| {
        server
            .whoami(&[("authorization", &format!("Bearer {secret}"))])
            .await
            .status()
            .as_u16()
    };
    let forward = async |secret: &str, require: Option<&str>| {
        let mut request = server
            .get("/v1/forward-auth")
            .header("authorization", format!("Bearer {secret}"));
        if let Some(require) = require {
            request = request.header("x-keygate-require", require);
        }
        request.send().await.unwrap().status().as_u16()
    };
    for _ in 0..3 {
        assert_eq!(whoami(&used).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(forward(&used, None).await, 200);
    }
    assert_eq!(forward(&used, Some("users:write")).await, 403);
    // A management handler that finds a permission missing: `forbidden`, not `valid`; one that
    // answers 404 was still a request the credential made.
    let made_by_viewer = server
        .call(
            Method::POST,
            "/v1/tokens",
            &used,
            Some(json!({"name": "not mine to make", "kind": "service", "role": "viewer"})),
        )
        .await;
    problem(made_by_viewer, 403, "forbidden").await;
    let missing = server
        .call(
            Method::GET,
            "/v1/tokens/tok_0VcgGH9Gnjdar3Ed5gCbA4",
            &used,
            None,
        )
        .await;
    assert_eq!(missing.status(), 404);
    for _ in 0..2 {
        let verdict = server
            .post("/v1/verify")
            .header("apikey", &asker)
            .json(&json!({"credential": used}))
            .send()
            .await
            .unwrap();
        assert_eq!(verdict.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(whoami(&fenced).await, 403);
    }
    assert_eq!(whoami(&limited).await, 200);
    for _ in 0..2 {
        assert_eq!(whoami(&limited).await, 429);
    }
    for _ in 0..2 {
        assert_eq!(whoami(&revoked).await, 401);
    }
    assert_eq!(whoami(&expiring).await, 401);
    server.state.flush_usage().await;

    let mut path = "/v1/usage?granularity=day&group_by=credential&group_by=outcome".to_owned();
    for id in [
        &used_id,
        &fenced_id,
        &limited_id,
        &revoked_id,
        &expiring_id,
        &asker_id,
    ] {
        path.push_str(&format!("&credential_id={id}"));
    }
    let read = ok_json(server.call(Method::GET, &path, &server.token, None).await).await;
    let counted: BTreeMap<(String, String), u64> = read["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                (
                    b["credential_id"].as_str().unwrap().to_owned(),
                    b["outcome"].as_str().unwrap().to_owned(),
                ),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<(String, String), u64> = [
        (&used_id, "valid", 3 + 2 + 2 + 1),
        (&used_id, "forbidden", 2),
        (&fenced_id, "ip_not_allowed", 2),
        (&limited_id, "valid", 1),
        (&limited_id, "rate_limited", 2),
        (&revoked_id, "revoked", 2),
        (&expiring_id, "expired", 1),
    ]
    .into_iter()
    .map(|(id, outcome, n)| ((id.clone(), outcome.to_owned()), n))
    .collect();
    assert_eq!(counted, expected, "the asker ({asker_id}) is not counted");

    // The same counts, without credentials, in /metrics (every request here came after the
    // tokens were made, and the refusals are these tests' alone).
    let metrics = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (outcome, n) in [
        ("forbidden", 2),
        ("ip_not_allowed", 2),
        ("rate_limited", 2),
        ("revoked", 2),
        ("expired", 1),
        ("quota_exceeded", 0),
    ] {
        let line = format!("keygate_credential_requests_total{{outcome=\"{outcome}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}: {metrics}");
    }
    assert!(!metrics.contains(&used_id), "no per-credential labels");
}

/// The OAuth token endpoint authenticates a client by its secret, in a way of its own; what it
/// grants is `valid`, and a known client it refuses is counted too: over its rate limit as
/// `rate_limited`, and for a `Realm` that is not its tenant as `forbidden`.
async fn the_token_endpoint_counts_a_known_clients_grants_and_refusals(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.rate_limit.requests = Some(3);
        c.rate_limit.per_seconds = Some(3600);
    })
    .await;
    let (id, secret) = crate::oauth::create_client(&server, "viewer", None).await;
    let params = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let grant = async |realm: Option<&str>| {
        let mut request = server.post("/v1/oauth/token").form(&params);
        if let Some(realm) = realm {
            request = request.header("realm", realm);
        }
        request.send().await.unwrap().status().as_u16()
    };
    for _ in 0..3 {
        assert_eq!(grant(None).await, 200);
    }
    assert_eq!(grant(None).await, 429);
    assert_eq!(grant(Some("somebody-else")).await, 401);
    server.state.flush_usage().await;

    let path = format!("/v1/usage?granularity=day&group_by=outcome&credential_id={id}");
    let read = ok_json(server.call(Method::GET, &path, &server.token, None).await).await;
    let counted: BTreeMap<String, u64> = read["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["outcome"].as_str().unwrap().to_owned(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<String, u64> = [("valid", 3), ("rate_limited", 1), ("forbidden", 1)]
        .into_iter()
        .map(|(outcome, n)| (outcome.to_owned(), n))
        .collect();
    assert_eq!(counted, expected);
}
