//! The console's webhooks (API.md §11, §15): the list, Add webhook with its signing secret shown
//! once, the webhook's page with its deliveries, Send again, Save (events, address, paused) and
//! Delete; checked against a real receiver that verifies every delivery with the
//! `standardwebhooks` crate; and in a browser, with axe-core.

use std::time::Duration;

use keygate_server::config::{Config, Network};
use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, audit, browser_session, csrf_of, once_of, page, person,
    post_form, secret_of, secret_on_page, sign_in,
};
use crate::console_clients::text_of;
use crate::harness::{Backend, TestServer};
use crate::webhooks::Receiver;

on_every_backend!(
    a_person_adds_a_webhook_and_its_receiver_checks_what_arrives,
    bad_input_is_shown_beside_its_field_and_adds_nothing,
    a_webhook_page_pauses_changes_sends_again_and_deletes_after_asking,
    a_member_sees_webhooks_and_deliveries_but_cannot_change_them,
    a_sub_customers_webhook_is_listed_with_its_name,
);

fn loopback_allowed(config: &mut Config) {
    config.webhooks.allowed_private_targets = vec!["127.0.0.0/8".parse::<Network>().unwrap()];
}

async fn webhooks(server: &TestServer) -> Vec<Value> {
    server
        .expect(200, Method::GET, "/v1/webhooks", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .clone()
}

async fn text(server: &TestServer, session: &str, path: &str) -> String {
    let shown = page(server, path, Some(session)).await;
    assert_eq!(shown.status(), 200, "{path}");
    assert_console_headers(shown.headers(), path);
    shown.text().await.unwrap()
}

/// Sends the Add webhook form as it comes (its CSRF token and one-time value) with `fields`;
/// the answer.
async fn add(server: &TestServer, session: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let new = text(server, session, "/console/webhooks/new").await;
    let (csrf, once) = (csrf_of(&new), once_of(&new));
    let mut form = vec![("csrf", csrf.as_str()), ("once", once.as_str())];
    form.extend_from_slice(fields);
    post_form(server, session, "/console/webhooks/new", &form).await
}

/// Makes a token through the API: one `token.created` event.
async fn make_token(server: &TestServer, name: &str) {
    server
        .expect(
            201,
            Method::POST,
            "/v1/tokens",
            &server.token,
            Some(json!({"kind": "service", "name": name, "role": "viewer"})),
        )
        .await;
}

/// Waits until the webhook's page shows a delivery in `state` (its words); the page.
async fn wait_for_page(server: &TestServer, session: &str, path: &str, state: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = text(server, session, path).await;
        if shown.contains(state) {
            return shown;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no “{state}” on {path}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_person_adds_a_webhook_and_its_receiver_checks_what_arrives(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let session = server.login(OWNER, &server.password).await;
    let tokens = text(&server, &session, "/console/tokens").await;
    assert!(tokens.contains("href=\"/console/webhooks\">Webhooks</a>"));
    let list = text(&server, &session, "/console/webhooks").await;
    assert!(list.contains("There are no webhooks yet"), "{list}");
    assert!(list.contains("href=\"/console/webhooks/new\""));
    let new = text(&server, &session, "/console/webhooks/new").await;
    for event in ["token.created", "credential.leaked", "quota.threshold"] {
        assert!(new.contains(&format!("value=\"{event}\"")), "{event}");
    }
    assert!(
        new.contains("name=\"which\" value=\"all\" checked"),
        "{new}"
    );

    let fields = [
        ("url", receiver.url.as_str()),
        ("which", "only"),
        ("event", "token.created"),
        ("event", "token.deleted"),
        ("description", "billing <sync>"),
    ];
    let created = add(&server, &session, &fields).await;
    assert_eq!(created.status(), 200);
    assert_console_headers(created.headers(), "webhook added");
    let created = created.text().await.unwrap();
    let secret = secret_of(&created);
    assert!(secret.starts_with("whsec_"), "{created}");
    assert!(created.contains("will not be shown again"));
    assert!(
        created.contains("billing ") && !created.contains("<sync>"),
        "escaped"
    );
    assert_eq!(text_of(&created, "webhook-url"), receiver.url);
    let stored = webhooks(&server).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["url"], receiver.url.as_str());
    assert_eq!(
        stored[0]["events"],
        json!(["token.created", "token.deleted"])
    );
    assert_eq!(stored[0]["description"], "billing <sync>");
    let id = stored[0]["id"].as_str().unwrap().to_owned();

    // The form sent again (a reload of the page that showed the secret) makes no second
    // webhook and shows no second secret; a new page of the form is a new form.
    let new = text(&server, &session, "/console/webhooks/new").await;
    let once = once_of(&new);
    let mut form = vec![("csrf", csrf_of(&new)), ("once", once.clone())];
    form.extend(fields.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = post_form(&server, &session, "/console/webhooks/new", &form).await;
    assert_eq!(first.status(), 200);
    let repeated = post_form(&server, &session, "/console/webhooks/new", &form).await;
    assert_eq!(repeated.status(), 409);
    assert!(repeated.text().await.unwrap().contains("Already done"));
    let stored = webhooks(&server).await;
    assert_eq!(
        stored.len(),
        2,
        "one a form, none for the repeat: {stored:?}"
    );
    for extra in stored.iter().filter(|w| w["id"] != id.as_str()) {
        server
            .expect(
                204,
                Method::DELETE,
                &format!("/v1/webhooks/{}", extra["id"].as_str().unwrap()),
                &server.token,
                None,
            )
            .await;
    }

    // What it asked for arrives, signed with the secret the page showed.
    receiver.expect_secret(&secret);
    make_token(&server, "ci deploy").await;
    let seen = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert!(seen[0].verified, "{:?}", seen[0]);
    assert_eq!(seen[0].body["type"], "token.created");

    // The list and the page show it, and what was delivered, never the secret.
    let list = text(&server, &session, "/console/webhooks").await;
    assert!(
        list.contains(&format!("href=\"/console/webhooks/{id}\"")),
        "{list}"
    );
    assert!(list.contains("token.created, token.deleted"));
    assert!(!list.contains(&secret));
    let path = format!("/console/webhooks/{id}");
    let shown = wait_for_page(&server, &session, &path, "Delivered ").await;
    assert_eq!(text_of(&shown, "webhook-id"), id);
    assert!(
        shown.contains(&format!("id=\"{}\"", seen[0].id)),
        "the delivery's row: {shown}"
    );
    assert!(shown.contains("HTTP 200"), "{shown}");
    assert!(!shown.contains(&secret));
    // An unknown or malformed id is a page saying so.
    for path in [
        "/console/webhooks/whk_0MqX1z8a9bCdEfGhIjKlMn",
        "/console/webhooks/nonsense",
    ] {
        assert_eq!(page(&server, path, Some(&session)).await.status(), 404);
    }
}

async fn bad_input_is_shown_beside_its_field_and_adds_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let refused = add(
        &server,
        &session,
        &[("url", "ftp://files.example.com/in"), ("which", "all")],
    )
    .await;
    assert_eq!(refused.status(), 200);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("id=\"url-error\""), "{refused}");
    assert!(refused.contains("<code>ftp</code>"), "{refused}");
    assert!(
        refused.contains("value=\"ftp://files.example.com/in\""),
        "kept"
    );

    // Loopback is not a place deliveries may go, unless the operator said so.
    let refused = add(
        &server,
        &session,
        &[("url", "http://127.0.0.1:9/hook"), ("which", "all")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(refused.contains("id=\"url-error\""), "{refused}");

    // "Only these", with none ticked, is said beside the events; what was typed stays.
    let refused = add(
        &server,
        &session,
        &[
            ("url", "https://hooks.example.com/k"),
            ("which", "only"),
            ("description", "ops"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(refused.contains("id=\"events-error\""), "{refused}");
    assert!(refused.contains("Tick at least one event"), "{refused}");
    assert!(!refused.contains("id=\"url-error\""), "{refused}");
    assert!(refused.contains("value=\"ops\""));
    assert!(refused.contains("name=\"which\" value=\"only\" data-only checked"));

    // An event keygate does not know, sent by hand, is named.
    let refused = add(
        &server,
        &session,
        &[
            ("url", "https://hooks.example.com/k"),
            ("which", "only"),
            ("event", "token.create"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        refused.contains("<code>token.created</code>"),
        "did you mean: {refused}"
    );
    assert!(webhooks(&server).await.is_empty(), "nothing was added");
}

async fn a_webhook_page_pauses_changes_sends_again_and_deletes_after_asking(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let session = server.login(OWNER, &server.password).await;
    let created = add(
        &server,
        &session,
        &[
            ("url", receiver.url.as_str()),
            ("which", "only"),
            ("event", "token.created"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    receiver.expect_secret(&secret_of(&created));
    let id = webhooks(&server).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/console/webhooks/{id}");
    make_token(&server, "first").await;
    let first = receiver.wait_for(1, Duration::from_secs(30)).await[0].clone();
    let shown = wait_for_page(&server, &session, &path, "Delivered ").await;
    let csrf = csrf_of(&shown);

    // Send again: the same delivery (the same webhook-id) arrives once more.
    let retry = format!("{path}/deliveries/{}/retry", first.id);
    let sent = post_form(&server, &session, &retry, &[("csrf", &csrf)]).await;
    assert_eq!(sent.status(), 200);
    let sent = sent.text().await.unwrap();
    assert!(sent.contains("is being sent again now"), "{sent}");
    let seen = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(seen[1].id, first.id);
    assert!(seen[1].verified);
    let unknown = format!("{path}/deliveries/msg_0MqX1z8a9bCdEfGhIjKlMn/retry");
    assert_eq!(
        post_form(&server, &session, &unknown, &[("csrf", &csrf)])
            .await
            .status(),
        404
    );

    // Paused, with every event now: nothing is sent, and the page says so.
    let save = |fields: Vec<(&'static str, String)>| {
        let server = &server;
        let session = &session;
        let path = &path;
        let csrf = csrf.clone();
        async move {
            let mut form = vec![("csrf", csrf)];
            form.extend(fields);
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(server, session, path, &form).await
        }
    };
    let paused = save(vec![
        ("url", receiver.url.clone()),
        ("which", "all".into()),
        ("description", "paused for maintenance".into()),
    ])
    .await;
    assert_eq!(paused.status(), 200);
    let paused = paused.text().await.unwrap();
    assert!(
        paused.contains("Nothing is sent to it until it is turned on again"),
        "{paused}"
    );
    assert!(text_of(&paused, "webhook-events").contains("every event"));
    let stored = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/webhooks/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["enabled"], false);
    assert_eq!(stored["events"], json!(["*"]));
    assert_eq!(stored["description"], "paused for maintenance");
    make_token(&server, "second").await;
    // Sent again while paused, the delivery waits for it to be turned on.
    let waits = post_form(&server, &session, &retry, &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    assert!(waits.contains("once the webhook is turned on"), "{waits}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.seen().len(), 2, "nothing is sent while paused");

    // A bad address changes nothing and is said beside the field.
    let refused = save(vec![
        ("url", "gopher://old.example".into()),
        ("which", "all".into()),
        ("enabled", "yes".into()),
    ])
    .await
    .text()
    .await
    .unwrap();
    assert!(refused.contains("id=\"url-error\""), "{refused}");
    assert!(refused.contains("Not saved"), "{refused}");
    assert!(
        refused.contains("value=\"gopher://old.example\""),
        "kept: {refused}"
    );
    let stored = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/webhooks/{id}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["url"], receiver.url.as_str());
    assert_eq!(stored["enabled"], false);

    // Turned on again: what waited arrives.
    let resumed = save(vec![
        ("url", receiver.url.clone()),
        ("which", "all".into()),
        ("enabled", "yes".into()),
    ])
    .await
    .text()
    .await
    .unwrap();
    assert!(resumed.contains("Saved."), "{resumed}");
    let seen = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(seen[2].id, first.id, "what was owed is sent");
    make_token(&server, "third").await;
    let seen = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(seen[3].body["data"]["name"], "third", "{:?}", seen[3].body);
    assert!(
        seen.iter().all(|r| r.body["data"]["name"] != "second"),
        "an event while it was off is not sent to it"
    );

    // Delete asks first, then deletes.
    let delete = format!("{path}/delete");
    let asked = post_form(&server, &session, &delete, &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    assert!(asked.contains("Delete the webhook to"), "{asked}");
    assert_eq!(webhooks(&server).await.len(), 1, "only asked");
    let deleted = post_form(
        &server,
        &session,
        &delete,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(deleted.status(), 200);
    assert!(deleted.text().await.unwrap().contains("Webhook deleted"));
    assert!(webhooks(&server).await.is_empty());
    assert_eq!(page(&server, &path, Some(&session)).await.status(), 404);
}

async fn a_member_sees_webhooks_and_deliveries_but_cannot_change_them(backend: Backend) {
    let server = TestServer::start_with(backend, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let owner = server.login(OWNER, &server.password).await;
    let created = add(
        &server,
        &owner,
        &[("url", receiver.url.as_str()), ("which", "all")],
    )
    .await
    .text()
    .await
    .unwrap();
    receiver.expect_secret(&secret_of(&created));
    let id = webhooks(&server).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = person(&server, "member@example.com", "member").await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let list = text(&server, &member, "/console/webhooks").await;
    assert!(list.contains(&format!("/console/webhooks/{id}")), "{list}");
    assert!(
        !list.contains("/console/webhooks/new"),
        "no Add for a member"
    );
    let path = format!("/console/webhooks/{id}");
    let shown = wait_for_page(&server, &member, &path, "Delivered ").await;
    assert!(shown.contains("user.created"), "{shown}");
    assert!(!shown.contains("Send again") && !shown.contains("Delete this webhook"));
    assert!(shown.contains("id=\"why-no-actions\""));
    assert_eq!(
        page(&server, "/console/webhooks/new", Some(&member))
            .await
            .status(),
        403
    );
    let csrf = csrf_of(&shown);
    let delivery = receiver.seen()[0].id.clone();
    for (path, fields) in [
        (
            path.clone(),
            vec![("url", "https://elsewhere.example/h"), ("which", "all")],
        ),
        (format!("{path}/delete"), vec![("confirm", "yes")]),
        (format!("{path}/deliveries/{delivery}/retry"), vec![]),
        (
            "/console/webhooks/new".to_owned(),
            vec![("url", "https://x.example/h"), ("which", "all")],
        ),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let refused = post_form(&server, &member, &path, &form).await;
        assert_eq!(refused.status(), 403, "{path}");
    }
    let stored = webhooks(&server).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["url"], receiver.url.as_str(), "untouched");
    assert_eq!(receiver.seen().len(), 1, "nothing sent again");
}

async fn a_sub_customers_webhook_is_listed_with_its_name(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme"})),
        )
        .await["tenant"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = server
        .request(Method::POST, "/v1/webhooks")
        .bearer_auth(&server.token)
        .header("as-tenant", &acme)
        .json(&json!({"url": "https://hooks.acme.example/k", "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    let session = server.login(OWNER, &server.password).await;
    let list = text(&server, &session, "/console/webhooks").await;
    assert!(
        list.contains("<th scope=\"col\">Organization</th>"),
        "{list}"
    );
    assert!(list.contains("<td>Acme</td>"), "{list}");
    assert!(list.contains("https://hooks.acme.example/k"));
}

#[tokio::test]
async fn in_a_browser_a_person_adds_a_webhook_and_sends_a_delivery_again() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-webhooks-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start_with(Backend::Sqlite, loopback_allowed).await;
    let receiver = Receiver::start().await;
    let client = &browser.client;
    client
        .goto(&format!("{}/console/sign-in", server.base))
        .await
        .unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.click("nav a[href='/console/webhooks']").await;
    browser.find("a.button[href='/console/webhooks/new']").await;
    audit(&browser, axe, &shots, "webhooks-empty").await;
    browser
        .click("a.button[href='/console/webhooks/new']")
        .await;
    browser
        .find("#url")
        .await
        .send_keys(&receiver.url)
        .await
        .unwrap();
    // Ticking an event chooses "only the events ticked" (the page's script).
    browser.click("input[value='token.created']").await;
    assert!(
        browser
            .find("input[name=which][value=only]")
            .await
            .is_selected()
            .await
            .unwrap()
    );
    audit(&browser, axe, &shots, "webhook-new").await;
    browser.click("main form button[type=submit]").await;
    let secret = secret_on_page(&browser).await;
    assert!(secret.starts_with("whsec_"));
    audit(&browser, axe, &shots, "webhook-created").await;
    receiver.expect_secret(&secret);
    make_token(&server, "ci").await;
    let first = receiver.wait_for(1, Duration::from_secs(30)).await[0].clone();
    assert!(first.verified);

    browser.click("a[href^='/console/webhooks/whk_']").await;
    let row = format!("tr[id='{}']", first.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !browser
        .find(&format!(
            "{row} td.status-delivered, {row} td.status-pending"
        ))
        .await
        .text()
        .await
        .unwrap()
        .starts_with("Delivered")
    {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.refresh().await.unwrap();
    }
    audit(&browser, axe, &shots, "webhook").await;
    browser.click(&format!("{row} button[type=submit]")).await;
    let notice = browser.find("p.notice").await.text().await.unwrap();
    assert!(notice.contains("being sent again"), "{notice}");
    let seen = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(seen[1].id, first.id);
    audit(&browser, axe, &shots, "webhook-sent-again").await;

    // A webhook that is not there: said in the console's frame, its navigation there to go on.
    client
        .goto(&format!(
            "{}/console/webhooks/whk_0MqX1z8a9bCdEfGhIjKlMn",
            server.base
        ))
        .await
        .unwrap();
    let said = browser.find("main p.error").await.text().await.unwrap();
    assert!(said.contains("There is no such webhook"), "{said}");
    browser.find("nav a[href='/console/webhooks']").await;
    audit(&browser, axe, &shots, "webhook-missing").await;
}
