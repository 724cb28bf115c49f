//! The console's request log (API.md §8, §11): the tenant's audit events filtered by credential,
//! action, outcome and time, a page at a time, the export of the same selection, and each token
//! page's link to what the token did.

use keygate_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, audit, browser_session, page, service_token, sign_in,
};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    the_log_filters_by_credential_outcome_action_and_time,
    the_log_pages_with_its_filters_and_exports_the_same_selection,
    a_bad_filter_is_a_message_beside_its_field,
    a_token_page_links_to_what_the_token_did,
    only_the_organizations_own_tokens_are_linked,
);

/// The credential cell of each event row on a log page, in order.
fn token_cells(html: &str) -> Vec<String> {
    html.split("<td class=\"token\">")
        .skip(1)
        .map(|cell| {
            let cell = cell.split("</td>").next().unwrap();
            cell.split("<code>")
                .nth(1)
                .map(|rest| rest.split('<').next().unwrap().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// The outcome cell of each event row on a log page, in order.
fn outcome_cells(html: &str) -> Vec<String> {
    html.split("<span class=\"status status-")
        .skip(1)
        .map(|cell| {
            cell.split('>')
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn log(server: &TestServer, session: &str, query: &str) -> String {
    let response = page(server, &format!("/console/log{query}"), Some(session)).await;
    assert_eq!(response.status(), 200, "{query}");
    assert_console_headers(response.headers(), "request log");
    response.text().await.unwrap()
}

/// The events the API lists for this query, as the owner.
async fn api_events(server: &TestServer, query: &str) -> Vec<Value> {
    server.state.flush_refusals().await;
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/audit-events?limit=500&{query}"),
            &server.token,
            None,
        )
        .await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Has `secret` create `n` viewer tokens.
async fn create_tokens(server: &TestServer, secret: &str, n: usize) {
    for i in 0..n {
        server
            .expect(
                201,
                Method::POST,
                "/v1/tokens",
                secret,
                Some(json!({"kind": "service", "name": format!("made {i}"), "role": "viewer"})),
            )
            .await;
    }
}

async fn the_log_filters_by_credential_outcome_action_and_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, a_secret) = service_token(&server, "deployer", "admin").await;
    let (b, b_secret) = service_token(&server, "other", "admin").await;
    let (c, c_secret) = service_token(&server, "reader", "viewer").await;
    create_tokens(&server, &a_secret, 3).await;
    create_tokens(&server, &b_secret, 2).await;
    // A viewer may not create tokens: refused, and logged as such.
    let refused = server
        .call(
            Method::POST,
            "/v1/tokens",
            &c_secret,
            Some(json!({"kind": "service", "name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(refused.status(), 403);
    server.state.flush_refusals().await;
    let session = server.login(OWNER, &server.password).await;

    let all = log(&server, &session, "").await;
    assert!(all.contains("href=\"/console/log\" aria-current=\"page\">Request log</a>"));
    let everything = token_cells(&all);
    assert!(everything.contains(&a) && everything.contains(&b) && everything.contains(&c));
    // A person who acted is named: the owner signing in.
    assert!(all.contains("<td>user Owner</td>"), "{all}");
    assert!(!all.contains("<td>user usr_"), "{all}");
    // And so is what was acted on: the tokens made.
    assert!(all.contains("<td>token “made 0”</td>"), "{all}");
    assert!(!all.contains("<td>token tok_"), "{all}");
    assert!(all.contains("<td>tenant “Root”</td>"), "{all}");

    // By credential: exactly that token's events, every one of them, and nothing else.
    let only_a = log(&server, &session, &format!("?token_id={a}")).await;
    let cells = token_cells(&only_a);
    assert_eq!(cells.len(), 3, "{only_a}");
    assert!(cells.iter().all(|cell| *cell == a), "{cells:?}");
    assert_eq!(
        cells.len(),
        api_events(&server, &format!("token_id={a}")).await.len()
    );
    // Named, linked to its page, and its id beside the name.
    assert!(
        only_a.contains(&format!(
            "<a href=\"/console/tokens/{a}\">deployer</a><br><code>{a}</code>"
        )),
        "named and linked: {only_a}"
    );
    assert!(only_a.contains("token.create"));
    assert!(!only_a.contains(&b) && !only_a.contains(&c));

    // By outcome: the refusal and nothing that succeeded.
    let denied = log(&server, &session, "?outcome=denied").await;
    let outcomes = outcome_cells(&denied);
    assert!(!outcomes.is_empty(), "{denied}");
    assert!(outcomes.iter().all(|o| o == "Denied"), "{outcomes:?}");
    assert!(token_cells(&denied).contains(&c));
    let succeeded = log(&server, &session, &format!("?token_id={c}&outcome=success")).await;
    assert!(succeeded.contains("id=\"no-events\""), "{succeeded}");

    // By action, and by time: a day, a datetime-local value, an RFC 3339 time.
    let by_action = log(
        &server,
        &session,
        &format!("?token_id={b}&action=token.create"),
    )
    .await;
    assert_eq!(token_cells(&by_action).len(), 2);
    let today = server.clock.now().to_string()[..10].to_owned();
    let today_only = log(
        &server,
        &session,
        &format!("?token_id={a}&from={today}&to={today}"),
    )
    .await;
    assert_eq!(
        token_cells(&today_only).len(),
        3,
        "a day as To includes the whole day"
    );
    let minute = server.clock.now().to_string()[..16].to_owned();
    let earlier = log(&server, &session, &format!("?token_id={a}&to={minute}")).await;
    let later = log(
        &server,
        &session,
        &format!("?token_id={a}&from={today}T23:59:59Z"),
    )
    .await;
    assert!(token_cells(&earlier).len() <= 3);
    assert!(later.contains("id=\"no-events\""), "{later}");
}

async fn the_log_pages_with_its_filters_and_exports_the_same_selection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, a_secret) = service_token(&server, "busy", "admin").await;
    let (_, b_secret) = service_token(&server, "quiet", "admin").await;
    create_tokens(&server, &a_secret, 53).await;
    create_tokens(&server, &b_secret, 2).await;
    let session = server.login(OWNER, &server.password).await;

    let first = log(&server, &session, &format!("?token_id={a}")).await;
    let first_cells = token_cells(&first);
    assert_eq!(first_cells.len(), 50);
    let marker = "id=\"older\" href=\"";
    let start = first.find(marker).expect("an Older events link") + marker.len();
    let older = first[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(older.starts_with("/console/log?"), "{older}");
    assert!(
        older.contains(&format!("token_id={a}")),
        "the filter goes along: {older}"
    );
    let response = page(&server, &older, Some(&session)).await;
    assert_eq!(response.status(), 200);
    let second = response.text().await.unwrap();
    let second_cells = token_cells(&second);
    assert_eq!(second_cells.len(), 3);
    assert!(second_cells.iter().all(|cell| *cell == a));
    assert!(!second.contains("id=\"older\""), "the last page");

    // The export link: the same selection, read with the console's own session.
    let marker = "id=\"export\" href=\"";
    let start = first.find(marker).expect("an export link") + marker.len();
    let export = first[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(export.starts_with("/v1/audit-events/export?"), "{export}");
    let exported = page(&server, &export, Some(&session)).await;
    assert_eq!(exported.status(), 200, "{export}");
    assert_eq!(exported.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = exported
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 53);
    assert!(lines.iter().all(|event| event["token_id"] == a.as_str()));
    // A time filter reaches the export as RFC 3339.
    let today = server.clock.now().to_string()[..10].to_owned();
    let dated = log(&server, &session, &format!("?token_id={a}&from={today}")).await;
    let start = dated.find(marker).unwrap() + marker.len();
    let export = dated[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(
        export.contains(&format!("since={today}T00%3A00%3A00Z")),
        "{export}"
    );
    let exported = page(&server, &export, Some(&session)).await;
    assert_eq!(exported.status(), 200, "{export}");
    assert_eq!(exported.text().await.unwrap().lines().count(), 53);
}

async fn a_bad_filter_is_a_message_beside_its_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, a_secret) = service_token(&server, "busy", "admin").await;
    create_tokens(&server, &a_secret, 1).await;
    let session = server.login(OWNER, &server.password).await;
    for (query, field) in [
        ("?from=2026-13-45", "from"),
        ("?to=yesterday", "to"),
        ("?outcome=maybe", "outcome"),
        ("?from=2026-11-20&to=2026-11-19", "to"),
    ] {
        let html = log(&server, &session, &format!("{query}&token_id={a}")).await;
        assert!(
            html.contains(&format!("id=\"{field}-error\"")),
            "{query}: {html}"
        );
        assert!(html.contains("aria-invalid=\"true\""), "{query}");
        assert!(
            token_cells(&html).is_empty(),
            "{query}: no events under a bad filter"
        );
        assert!(
            html.contains(&format!("value=\"{a}\"")),
            "{query}: the filters stay"
        );
    }
    // A person without audit:read is refused the page and finds no entry for it.
    server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({
                "email": "viewer@example.com", "name": "Vic", "role": "viewer",
                "password": "correct horse battery staple"
            })),
        )
        .await;
    let viewer = server
        .login("viewer@example.com", "correct horse battery staple")
        .await;
    let caller: Value = server
        .whoami(&[("cookie", &format!("keygate_session={viewer}"))])
        .await
        .json()
        .await
        .unwrap();
    let may = caller["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("audit:read"));
    let response = page(&server, "/console/log", Some(&viewer)).await;
    assert_eq!(response.status(), if may { 200 } else { 403 });
    let tokens = page(&server, "/console/tokens", Some(&viewer))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tokens.contains("href=\"/console/log\""), may);
}

async fn a_token_page_links_to_what_the_token_did(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, _) = service_token(&server, "busy", "admin").await;
    let session = server.login(OWNER, &server.password).await;
    let token = page(&server, &format!("/console/tokens/{a}"), Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        token.contains(&format!(
            "<a id=\"token-log\" href=\"/console/log?token_id={a}\">What this token did</a>"
        )),
        "{token}"
    );
}

#[tokio::test]
async fn in_a_browser_the_log_reached_from_a_token_page_shows_exactly_its_actions() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-log-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let (a, a_secret) = service_token(&server, "deployer", "admin").await;
    let (_, b_secret) = service_token(&server, "other", "admin").await;
    create_tokens(&server, &a_secret, 4).await;
    create_tokens(&server, &b_secret, 3).await;
    let client = &browser.client;
    client
        .goto(&format!("{}/console/sign-in", server.base))
        .await
        .unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.click("nav a[href='/console/log']").await;
    browser.find("#events").await;
    audit(&browser, axe, &shots, "log").await;

    client
        .goto(&format!("{}/console/tokens/{a}", server.base))
        .await
        .unwrap();
    browser.find("#token-log").await;
    audit(&browser, axe, &shots, "token-with-log-link").await;
    browser.click("#token-log").await;
    browser.find("#events").await;
    let token_field = browser.find("#token_id").await.prop("value").await.unwrap();
    assert_eq!(token_field.as_deref(), Some(a.as_str()));
    let mut shown = Vec::new();
    for cell in client
        .find_all(fantoccini::Locator::Css("#events td.token"))
        .await
        .unwrap()
    {
        shown.push(cell.text().await.unwrap().trim().to_owned());
    }
    let expected = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/audit-events?token_id={a}"),
            &server.token,
            None,
        )
        .await["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(shown.len(), 4);
    assert_eq!(shown.len(), expected);
    // Each the token's name over its id.
    assert!(
        shown.iter().all(|cell| *cell == format!("deployer\n{a}")),
        "{shown:?}"
    );
    audit(&browser, axe, &shots, "log-by-token").await;

    // A bad date: a message beside the field, on the page.
    browser
        .find("#from")
        .await
        .send_keys("someday")
        .await
        .unwrap();
    browser.click("form.filters button[type=submit]").await;
    browser.find("#from-error").await;
    audit(&browser, axe, &shots, "log-bad-date").await;
}

/// A token of the organization acting for a sub-customer is named in the sub-customer's log, but
/// not linked: its page is not the sub-customer's to see (the link was a 404). The same for a
/// sub-customer's token in the parent's log. The organization's own tokens stay linked.
async fn only_the_organizations_own_tokens_are_linked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme", "slug": "acme",
                "first_user": {"email": "ops@acme.example", "name": "Ops"}})),
        )
        .await;
    let password = created["initial_password"].as_str().unwrap().to_owned();
    let acting = server
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&server.token)
        .header("as-tenant", "acme")
        .json(&json!({"kind": "service", "name": "made for acme", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(acting.status(), 201);
    let made: Value = acting.json().await.unwrap();
    let (theirs, their_secret) = (
        made["id"].as_str().unwrap().to_owned(),
        made["secret"].as_str().unwrap().to_owned(),
    );
    // Acme's own token does something logged: a write its viewer role may not make.
    let refused = server
        .call(
            Method::POST,
            "/v1/tokens",
            &their_secret,
            Some(json!({"kind": "service", "name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(refused.status(), 403);
    server.state.flush_refusals().await;
    let root_token = server
        .expect(200, Method::GET, "/v1/whoami", &server.token, None)
        .await["credential"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let session = server.login("ops@acme.example", &password).await;
    let html = log(&server, &session, "").await;
    assert!(token_cells(&html).contains(&root_token), "named: {html}");
    assert!(
        !html.contains(&format!("href=\"/console/tokens/{root_token}\"")),
        "not linked: {html}"
    );
    // An ancestor's token is shown by its id alone: its name is not the sub-customer's to read.
    assert!(
        html.contains(&format!(
            "<td class=\"token\"><code>{root_token}</code></td>"
        )),
        "by id alone: {html}"
    );
    assert!(
        html.contains(&format!("href=\"/console/tokens/{theirs}\"")),
        "its own linked: {html}"
    );
    // From above: the sub-customer's token is named in the parent's log, not linked.
    let owner = server.login(OWNER, &server.password).await;
    let html = log(&server, &owner, "").await;
    assert!(token_cells(&html).contains(&theirs), "named: {html}");
    assert!(
        !html.contains(&format!("href=\"/console/tokens/{theirs}\"")),
        "not linked: {html}"
    );
    // The sub-customer made, and the one its events happened in, by name.
    assert!(html.contains("<td>tenant “Acme”</td>"), "{html}");
    assert!(html.contains(" of Acme</td>"), "{html}");
}
