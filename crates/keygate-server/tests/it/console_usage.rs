//! Usage in the console (API.md §11, §12): the tokens table's last day per token, a token's
//! usage by outcome for each period, and the tenant's usage page with its sub-customers, over
//! HTTP and in a browser. Every number is read off the page as text and must equal the requests
//! the test made, not merely be drawn.

use std::collections::BTreeMap;
use std::time::Duration;

use keygate_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{OWNER, assert_console_headers, audit, browser_session, page, sign_in};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    the_tokens_table_shows_each_tokens_last_day,
    a_token_page_shows_its_usage_by_outcome_for_each_period,
    the_usage_page_shows_the_tenant_and_its_sub_customers_but_no_sibling,
    a_bad_period_is_a_message_and_usage_needs_usage_read,
    account_keys_and_oauth_clients_are_named_on_the_usage_page,
);

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const PASSWORD: &str = "correct horse battery staple";

/// A service token made by the root's token, in `tenant` when given; (id, secret).
async fn made(
    server: &TestServer,
    name: &str,
    tenant: Option<&str>,
    extra: Value,
) -> (String, String) {
    let mut body = json!({"kind": "service", "name": name, "role": "viewer"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut request = server.post("/v1/tokens").bearer_auth(&server.token);
    if let Some(tenant) = tenant {
        request = request.header("as-tenant", tenant);
    }
    let response = request.json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{name}");
    let made: Value = response.json().await.unwrap();
    (
        made["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    )
}

/// `n` requests the token may make: each counted `valid`.
async fn valid(server: &TestServer, secret: &str, n: usize) {
    for _ in 0..n {
        let response = server
            .whoami(&[("authorization", &format!("Bearer {secret}"))])
            .await;
        assert_eq!(response.status(), 200);
    }
}

/// `n` requests for a permission the (viewer) token lacks: each counted `forbidden`.
async fn forbidden(server: &TestServer, secret: &str, n: usize) {
    for _ in 0..n {
        let response = server
            .get("/v1/forward-auth")
            .bearer_auth(secret)
            .header("x-keygate-require", "users:write")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
}

/// `n` requests of a token refused for another reason (its address, its revocation): `status`.
async fn refused(server: &TestServer, secret: &str, n: usize, status: u16) {
    for _ in 0..n {
        let response = server
            .whoami(&[("authorization", &format!("Bearer {secret}"))])
            .await;
        assert_eq!(response.status(), status);
    }
}

async fn html(server: &TestServer, path: &str, session: &str, acting: Option<&str>) -> String {
    let mut cookie = format!("keygate_session={session}");
    if let Some(tenant) = acting {
        cookie.push_str(&format!("; keygate_console_as={tenant}"));
    }
    let response = server
        .get(path)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_console_headers(response.headers(), path);
    response.text().await.unwrap()
}

/// A number as a page writes it ("1 204"), read back.
fn number(text: &str) -> u64 {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// The text between `start` (which must be there) and the next `end` after it.
fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in {html}"))
        + start.len();
    let rest = &html[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The row of a token in the tokens table.
fn token_row<'a>(html: &'a str, id: &str) -> &'a str {
    between(html, &format!("<tr id=\"{id}\">"), "</tr>")
}

/// The (valid, refused) a tokens-table sparkline gives as text.
fn spark_numbers(row: &str) -> (u64, u64) {
    (
        number(between(row, "<span class=\"n-valid\">", "<")),
        number(between(row, "<span class=\"n-refused\">", "<")),
    )
}

/// The totals of a chart's legend, by series (an outcome, or `refused`).
fn legend(html: &str) -> BTreeMap<String, u64> {
    let legend = between(html, "<ul class=\"legend\">", "</ul>");
    legend
        .split("<li data-series=\"")
        .skip(1)
        .map(|entry| {
            let key = entry.split('"').next().unwrap().to_owned();
            (key, number(between(entry, "<span class=\"count\">", "<")))
        })
        .collect()
}

/// The sums of a chart's table of numbers, by series: what the per-bucket text adds up to.
fn numbers(html: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    let table = between(html, "<details class=\"numbers\">", "</details>");
    for cell in table.split("<td data-series=\"").skip(1) {
        let key = cell.split('"').next().unwrap().to_owned();
        *sums.entry(key).or_default() += number(between(cell, ">", "<"));
    }
    sums
}

/// A chart's accessible name.
fn summary(html: &str) -> String {
    between(html, "<svg class=\"bars\" role=\"img\" aria-label=\"", "\"").to_owned()
}

/// The outcomes of a legend with requests; the rest must be there as zero.
fn nonzero(legend: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    legend
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

fn counts(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// A user of the root tenant with a role of only these permissions; their session.
async fn person_with(server: &TestServer, email: &str, permissions: &[&str]) -> String {
    let role = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({
                "name": email.split('@').next().unwrap(), "permissions": permissions
            })),
        )
        .await;
    server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({
                "email": email, "name": "Pat", "role": role["id"], "password": PASSWORD
            })),
        )
        .await;
    server.login(email, PASSWORD).await
}

async fn the_tokens_table_shows_each_tokens_last_day(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (busy, busy_secret) = made(&server, "busy", None, json!({})).await;
    let (fenced, fenced_secret) = made(
        &server,
        "fenced",
        None,
        json!({"allowed_ips": ["10.0.0.0/8"]}),
    )
    .await;
    let (quiet, _) = made(&server, "quiet", None, json!({})).await;
    // A day and more ago: not in the last 24 hours.
    valid(&server, &busy_secret, 4).await;
    forbidden(&server, &busy_secret, 1).await;
    server.clock.advance(DAY + 2 * HOUR);
    valid(&server, &busy_secret, 5).await;
    forbidden(&server, &busy_secret, 3).await;
    server.clock.advance(3 * HOUR);
    valid(&server, &busy_secret, 2).await;
    refused(&server, &fenced_secret, 2, 403).await;
    server.state.flush_usage().await;

    let session = server.login(OWNER, &server.password).await;
    let tokens = html(&server, "/console/tokens", &session, None).await;
    assert!(
        tokens.contains("<th scope=\"col\">Last 24 h</th>"),
        "{tokens}"
    );
    assert!(
        tokens.contains("href=\"/console/usage\">Usage</a>"),
        "the nav"
    );
    let row = token_row(&tokens, &busy);
    assert_eq!(spark_numbers(row), (7, 3), "{row}");
    assert!(
        row.contains("role=\"img\" aria-label=\"Last 24 hours: 7 valid, 3 refused\""),
        "{row}"
    );
    // Two hours with requests: two bars of valid, one of refused on top.
    assert_eq!(row.matches("<rect ").count(), 3, "{row}");
    assert_eq!(spark_numbers(token_row(&tokens, &fenced)), (0, 2));
    let quiet_row = token_row(&tokens, &quiet);
    assert_eq!(spark_numbers(quiet_row), (0, 0));
    assert_eq!(quiet_row.matches("<rect ").count(), 0, "a flat line");
    // The root's own token, which made the others, has a row of its own and a cell in it.
    assert_eq!(
        tokens.matches("<td class=\"usage\">").count(),
        tokens.matches("<tr id=\"tok_").count()
    );

    // The same as the API says for the same hours.
    let read = server
        .expect(
            200,
            Method::GET,
            &format!(
                "/v1/usage?credential_id={busy}&group_by=outcome&since={}",
                server.clock.now().saturating_sub(23 * HOUR)
            ),
            &server.token,
            None,
        )
        .await;
    let total: u64 = read["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 10);
}

async fn a_token_page_shows_its_usage_by_outcome_for_each_period(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = made(&server, "deployer", None, json!({})).await;
    // 23 days ago, 3 days ago, and now; revoked at the end, and used once more twice.
    valid(&server, &secret, 4).await;
    forbidden(&server, &secret, 1).await;
    server.clock.advance(20 * DAY);
    valid(&server, &secret, 3).await;
    forbidden(&server, &secret, 2).await;
    server.clock.advance(3 * DAY);
    valid(&server, &secret, 6).await;
    forbidden(&server, &secret, 1).await;
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            &server.token,
            None,
        )
        .await;
    refused(&server, &secret, 2, 401).await;
    server.state.flush_usage().await;
    let session = server.login(OWNER, &server.password).await;

    let path = format!("/console/tokens/{id}");
    for (query, title, expected, refusals) in [
        (
            "",
            "Last 24 hours",
            counts(&[("valid", 6), ("forbidden", 1), ("revoked", 2)]),
            3,
        ),
        (
            "?usage=24h",
            "Last 24 hours",
            counts(&[("valid", 6), ("forbidden", 1), ("revoked", 2)]),
            3,
        ),
        (
            "?usage=7d",
            "Last 7 days",
            counts(&[("valid", 9), ("forbidden", 3), ("revoked", 2)]),
            5,
        ),
        (
            "?usage=30d",
            "Last 30 days",
            counts(&[("valid", 13), ("forbidden", 4), ("revoked", 2)]),
            6,
        ),
    ] {
        let page = html(&server, &format!("{path}{query}"), &session, None).await;
        assert!(page.contains("<h2 id=\"usage\">Usage</h2>"), "{query}");
        let shown = legend(&page);
        assert_eq!(
            shown.len(),
            7,
            "{query}: every outcome in the legend: {shown:?}"
        );
        assert_eq!(nonzero(&shown), expected, "{query}");
        assert_eq!(
            nonzero(&numbers(&page)),
            expected,
            "{query}: the table adds up"
        );
        let valid = expected["valid"];
        assert!(
            summary(&page).starts_with(&format!("{title}: {valid} valid, {refusals} refused (")),
            "{query}: {}",
            summary(&page)
        );
        // The switch marks the period shown, and each link keeps to this token's section.
        let current = if query.is_empty() { "24h" } else { &query[7..] };
        assert!(
            page.contains(&format!(
                "href=\"{path}?usage={current}#usage\" aria-current=\"true\""
            )),
            "{query}"
        );
        assert_eq!(page.matches("aria-current=\"true\"").count(), 1);
        // The refusals in the request log, from the start of the period.
        let log = between(&page, "id=\"usage-log\" href=\"", "\"").replace("&#38;", "&");
        assert!(
            log.starts_with(&format!("/console/log?token_id={id}&outcome=denied&from=")),
            "{log}"
        );
    }
    // The log link leads to a page of this token's refusals.
    let page = html(&server, &format!("{path}?usage=7d"), &session, None).await;
    let log = between(&page, "id=\"usage-log\" href=\"", "\"")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    server.state.flush_refusals().await;
    let log = html(&server, &log, &session, None).await;
    assert!(!log.contains("id=\"no-events\""), "{log}");
    assert!(log.contains(&format!("<code>{id}</code>")));
}

/// A tenant made by the root (or, with `parent`, acting for it), with an owner who signs in.
async fn tenant(server: &TestServer, name: &str, parent: Option<&str>, email: &str) -> String {
    let mut request = server.post("/v1/tenants").bearer_auth(&server.token);
    if let Some(parent) = parent {
        request = request.header("as-tenant", parent);
    }
    let response = request
        .json(&json!({"name": name, "first_user": {
            "email": email, "name": "Owner", "password": PASSWORD
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{name}");
    let made: Value = response.json().await.unwrap();
    made["tenant"]["id"].as_str().unwrap().to_owned()
}

/// The (valid, refused, total) of a credential's row on the usage page, and the row.
fn credential_row<'a>(html: &'a str, id: &str) -> (u64, u64, u64, &'a str) {
    let row = between(html, &format!("<tr data-credential=\"{id}\">"), "</tr>");
    (
        number(between(row, "<td class=\"num valid\">", "<")),
        number(between(row, "<td class=\"num refused\">", "<")),
        number(between(row, "<td class=\"num total\">", "<")),
        row,
    )
}

/// The sums of the usage page's table, (valid, refused).
fn table_sums(html: &str) -> (u64, u64) {
    let table = between(html, "<table id=\"top-credentials\">", "</table>");
    let column = |class: &str| -> u64 {
        table
            .split(&format!("<td class=\"num {class}\">"))
            .skip(1)
            .map(|cell| number(cell.split('<').next().unwrap()))
            .sum()
    };
    (column("valid"), column("refused"))
}

async fn the_usage_page_shows_the_tenant_and_its_sub_customers_but_no_sibling(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The root sells to a reseller, which sells to Acme; Globex is the reseller's sibling.
    let reseller = tenant(&server, "Reseller", None, "boss@reseller.example").await;
    let acme = tenant(&server, "Acme", Some(&reseller), "owner@acme.example").await;
    let globex = tenant(&server, "Globex", None, "owner@globex.example").await;
    let (own, own_secret) = made(&server, "reseller's own", Some(&reseller), json!({})).await;
    let (sub, sub_secret) = made(&server, "acme's", Some(&acme), json!({})).await;
    let (sibling, sibling_secret) = made(&server, "globex's", Some(&globex), json!({})).await;
    let (root_token, root_secret) = made(&server, "root's", None, json!({})).await;
    valid(&server, &own_secret, 5).await;
    forbidden(&server, &own_secret, 2).await;
    server.clock.advance(2 * HOUR);
    valid(&server, &sub_secret, 3).await;
    forbidden(&server, &sub_secret, 1).await;
    valid(&server, &sibling_secret, 7).await;
    forbidden(&server, &sibling_secret, 4).await;
    valid(&server, &root_secret, 6).await;
    server.state.flush_usage().await;

    let session = server.login("boss@reseller.example", PASSWORD).await;
    for query in ["", "?period=24h", "?period=7d", "?period=30d"] {
        let page = html(&server, &format!("/console/usage{query}"), &session, None).await;
        assert!(
            page.contains("href=\"/console/usage\" aria-current=\"page\">Usage</a>"),
            "{query}"
        );
        let (v, r, t, row) = credential_row(&page, &own);
        assert_eq!((v, r, t), (5, 2, 7), "{query}: {row}");
        assert!(
            row.contains(&format!(
                "<a href=\"/console/tokens/{own}\">reseller&#39;s own</a>"
            )) || row.contains(&format!(
                "<a href=\"/console/tokens/{own}\">reseller&#x27;s own</a>"
            )),
            "named and linked: {row}"
        );
        assert!(row.contains("Service token"), "{row}");
        let (v, r, t, row) = credential_row(&page, &sub);
        assert_eq!((v, r, t), (3, 1, 4), "{query}: {row}");
        assert!(row.contains("Acme"), "the sub-customer's name: {row}");
        assert!(
            !row.contains("<a "),
            "no page of the reseller's for it: {row}"
        );
        for other in [&sibling, &root_token] {
            assert!(
                !page.contains(other.as_str()),
                "{query}: {other} is not below"
            );
        }
        // The chart is of all of it: the refusals exactly, the valid requests as the table
        // adds them (the reseller's session, signing in and reading, is a credential too).
        let shown = legend(&page);
        assert_eq!(shown["refused"], 3, "{query}: {shown:?}");
        let (table_valid, table_refused) = table_sums(&page);
        assert_eq!(table_refused, 3);
        assert_eq!(shown["valid"], table_valid, "{query}");
        assert!(table_valid >= 8);
        assert_eq!(
            numbers(&page),
            shown,
            "{query}: the per-bucket numbers add up"
        );
    }

    // Acting for Acme: its usage alone, exactly what its token did.
    let acting = html(&server, "/console/usage", &session, Some(&acme)).await;
    assert!(acting.contains("You are acting for <strong>Acme</strong>"));
    assert_eq!(legend(&acting), counts(&[("valid", 3), ("refused", 1)]));
    assert_eq!(summary(&acting), "Last 24 hours: 3 valid, 1 refused");
    let (v, r, t, row) = credential_row(&acting, &sub);
    assert_eq!((v, r, t), (3, 1, 4));
    assert!(
        row.contains(&format!("href=\"/console/tokens/{sub}\"")),
        "Acme's own token, named: {row}"
    );
    assert!(row.contains("100.0 %"), "{row}");
    assert!(!acting.contains(&own), "the reseller's own is above Acme");

    // Globex's owner sees Globex's only.
    let globex_owner = server.login("owner@globex.example", PASSWORD).await;
    let page = html(&server, "/console/usage", &globex_owner, None).await;
    let (v, r, _, _) = credential_row(&page, &sibling);
    assert_eq!((v, r), (7, 4));
    for other in [&own, &sub, &root_token] {
        assert!(!page.contains(other.as_str()));
    }
}

async fn a_bad_period_is_a_message_and_usage_needs_usage_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = made(&server, "busy", None, json!({})).await;
    valid(&server, &secret, 2).await;
    server.state.flush_usage().await;
    let session = server.login(OWNER, &server.password).await;
    for path in [
        "/console/usage?period=forever".to_owned(),
        format!("/console/tokens/{id}?usage=%3Cb%3E1y%3C%2Fb%3E"),
    ] {
        let page = html(&server, &path, &session, None).await;
        let message = between(&page, "id=\"usage-message\">", "<");
        assert!(
            message.contains("pick 24 hours, 7 days or 30 days"),
            "{path}: {message}"
        );
        assert!(!page.contains("<svg class=\"bars\""), "{path}: no chart");
        assert!(
            !page.contains("<b>1y"),
            "{path}: the visitor's text is escaped"
        );
        assert_eq!(
            page.matches("aria-current=\"true\"").count(),
            0,
            "{path}: no period is current"
        );
    }

    // Someone who may read tokens but not usage: no column, no section, no entry, no page.
    let reader = person_with(&server, "reader@example.com", &["tokens:read"]).await;
    let tokens = html(&server, "/console/tokens", &reader, None).await;
    assert!(tokens.contains(&format!("<tr id=\"{id}\">")));
    assert!(!tokens.contains("Last 24 h") && !tokens.contains("class=\"usage\""));
    assert!(!tokens.contains("href=\"/console/usage\""), "no nav entry");
    let token = html(&server, &format!("/console/tokens/{id}"), &reader, None).await;
    assert!(
        !token.contains("id=\"usage\"") && !token.contains("<svg"),
        "{token}"
    );
    let refused = page(&server, "/console/usage", Some(&reader)).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("usage:read"));

    // And someone who may read usage but not tokens reaches the usage page alone.
    let counter = person_with(&server, "counter@example.com", &["usage:read"]).await;
    let usage = html(&server, "/console/usage", &counter, None).await;
    let (v, r, _, row) = credential_row(&usage, &id);
    assert_eq!((v, r), (2, 0));
    assert!(
        row.contains("<code>") && !row.contains("<a "),
        "by id: {row}"
    );
    assert!(
        !usage.contains("href=\"/console/tokens\""),
        "no tokens entry"
    );
}

async fn account_keys_and_oauth_clients_are_named_on_the_usage_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let key = server
        .expect(201, Method::POST, "/v1/account/keys", &server.token, None)
        .await;
    let (key_id, key_secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    valid(&server, key_secret, 2).await;
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(json!({"name": "CRM sync", "role": "viewer"})),
        )
        .await;
    let client_id = client["client_id"].as_str().unwrap();
    let granted = server
        .post("/v1/oauth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client["client_secret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let access: Value = granted.json().await.unwrap();
    // An access token's requests are its client's.
    valid(&server, access["access_token"].as_str().unwrap(), 3).await;
    forbidden(&server, access["access_token"].as_str().unwrap(), 1).await;
    server.state.flush_usage().await;
    let session = server.login(OWNER, &server.password).await;
    let page = html(&server, "/console/usage", &session, None).await;

    let (v, r, t, row) = credential_row(&page, key_id);
    assert_eq!((v, r, t), (2, 0, 2), "{row}");
    assert!(row.contains("Account key") && row.contains("href=\"/console/account/keys\""));
    let (v, r, _, row) = credential_row(&page, client_id);
    assert!(
        row.contains(&format!(
            "<a href=\"/console/oauth/clients/{client_id}\">CRM sync</a>"
        )),
        "{row}"
    );
    assert!(row.contains("OAuth client"), "{row}");
    // The same as the API counts for the client, the grant included if it counts.
    let read = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/usage?credential_id={client_id}&group_by=outcome"),
            &server.token,
            None,
        )
        .await;
    let api = |outcome: &str| -> u64 {
        read["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["outcome"] == outcome)
            .map(|b| b["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((v, r), (api("valid"), api("forbidden")));
    assert!(v >= 3 && r == 1, "{row}");
}

/// The text of every element `css` finds, its white space as one space.
async fn texts(browser: &crate::browser::Browser, css: &str) -> Vec<String> {
    let mut found = Vec::new();
    for element in browser
        .client
        .find_all(fantoccini::Locator::Css(css))
        .await
        .unwrap()
    {
        let text = element.text().await.unwrap();
        found.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    found
}

#[tokio::test]
async fn in_a_browser_the_usage_charts_show_what_was_made() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-usage-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let sub = tenant(&server, "Acme", None, "owner@acme.example").await;
    let (deployer, deployer_secret) = made(&server, "deployer", None, json!({})).await;
    let (_, monitor_secret) = made(&server, "monitor", None, json!({})).await;
    let (idle, _) = made(&server, "idle", None, json!({})).await;
    let (fenced, fenced_secret) = made(
        &server,
        "fenced",
        None,
        json!({"allowed_ips": ["10.0.0.0/8"]}),
    )
    .await;
    let (acme_token, acme_secret) = made(&server, "acme", Some(&sub), json!({})).await;
    // Two days of traffic, hour by hour, in a pattern: what the charts will draw.
    let (mut deployer_valid, mut deployer_forbidden) = (0, 0);
    let (mut last_day_valid, mut last_day_forbidden) = (0, 0);
    for hour in 0..48usize {
        let v = [1, 3, 5, 2, 0, 4][hour % 6];
        let f = usize::from(hour % 7 == 3);
        valid(&server, &deployer_secret, v).await;
        forbidden(&server, &deployer_secret, f).await;
        valid(&server, &monitor_secret, hour % 3).await;
        deployer_valid += v;
        deployer_forbidden += f;
        // The clock ends an hour after the last of these: the last day is hours 25 to 47.
        if hour >= 25 {
            last_day_valid += v;
            last_day_forbidden += f;
        }
        server.clock.advance(HOUR);
    }
    refused(&server, &fenced_secret, 3, 403).await;
    valid(&server, &acme_secret, 4).await;
    server.state.flush_usage().await;
    let client = &browser.client;
    client
        .goto(&format!("{}/console/sign-in", server.base))
        .await
        .unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.find("td.usage svg").await;
    audit(&browser, axe, &shots, "usage-tokens").await;
    let row = texts(&browser, &format!("tr[id='{deployer}'] .spark-numbers")).await;
    assert_eq!(
        row,
        [format!(
            "{last_day_valid} valid, {last_day_forbidden} refused"
        )]
    );
    let fenced_row = texts(&browser, &format!("tr[id='{fenced}'] .spark-numbers")).await;
    assert_eq!(fenced_row, ["0 valid, 3 refused"]);

    // The token page, then its week, by the period switch.
    browser
        .click(&format!("a[href='/console/tokens/{deployer}']"))
        .await;
    browser.find("#usage").await;
    browser.click("nav.periods a[href$='usage=7d#usage']").await;
    browser
        .find("nav.periods a[aria-current][href$='usage=7d#usage']")
        .await;
    let legend = texts(&browser, "ul.legend li").await;
    assert!(
        legend.contains(&format!("Valid: {deployer_valid}")),
        "{legend:?}"
    );
    assert!(
        legend.contains(&format!("Forbidden: {deployer_forbidden}")),
        "{legend:?}"
    );
    assert!(legend.contains(&"Revoked: 0".to_owned()), "{legend:?}");
    audit(&browser, axe, &shots, "usage-token-week").await;
    // The numbers open on demand and read the same.
    browser.click("details.numbers summary").await;
    let cells = texts(&browser, "details.numbers td[data-series='valid']").await;
    let sum: u64 = cells.iter().map(|c| number(c)).sum();
    assert_eq!(sum, deployer_valid as u64);
    audit(&browser, axe, &shots, "usage-token-numbers").await;

    // The tenant's page, from the navigation.
    browser.click("nav a[href='/console/usage']").await;
    browser.find("#top-credentials").await;
    let acme_row = texts(&browser, &format!("tr[data-credential='{acme_token}'] td")).await;
    assert_eq!(
        acme_row[1..6],
        ["Token", "Acme", "4", "0", "4"],
        "{acme_row:?}"
    );
    audit(&browser, axe, &shots, "usage-tenant").await;
    browser.click("nav.periods a[href$='period=7d']").await;
    browser
        .find("nav.periods a[aria-current][href$='period=7d']")
        .await;
    let deployer_row = texts(&browser, &format!("tr[data-credential='{deployer}'] td")).await;
    assert_eq!(
        deployer_row[3..6],
        [
            deployer_valid.to_string(),
            deployer_forbidden.to_string(),
            (deployer_valid + deployer_forbidden).to_string()
        ],
        "{deployer_row:?}"
    );
    audit(&browser, axe, &shots, "usage-tenant-week").await;
    browser.click("nav.periods a[href$='period=30d']").await;
    browser
        .find("nav.periods a[aria-current][href$='period=30d']")
        .await;
    let legend = texts(&browser, "ul.legend li").await;
    assert_eq!(legend[1], "Refused: 10", "{legend:?}");
    audit(&browser, axe, &shots, "usage-tenant-month").await;

    // A token without requests: a flat chart that says so, and nothing in its numbers.
    client
        .goto(&format!("{}/console/tokens/{idle}?usage=30d", server.base))
        .await
        .unwrap();
    browser.find("#usage").await;
    let legend = texts(&browser, "ul.legend li").await;
    assert_eq!(legend[0], "Valid: 0", "{legend:?}");
    audit(&browser, axe, &shots, "usage-token-idle").await;
    // A period that does not exist: the message, where the chart would be.
    client
        .goto(&format!("{}/console/tokens/{idle}?usage=1y", server.base))
        .await
        .unwrap();
    let message = browser.find("#usage-message").await.text().await.unwrap();
    assert!(message.contains("“1y”"), "{message}");
    audit(&browser, axe, &shots, "usage-token-bad-period").await;
}
