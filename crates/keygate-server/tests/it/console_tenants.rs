//! Sub-customers in the console (API.md §3, §11): the tree, adding one with its first user,
//! renaming, suspending, deleting, and acting for one, over HTTP and in a browser.

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, audit, browser_session, csrf_of, secret_of, secret_on_page,
    sign_in, whoami_status,
};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    a_reseller_adds_a_sub_customer_whose_first_user_signs_in_with_the_password_shown_once,
    bad_input_is_a_message_beside_its_field_and_adds_nothing,
    acting_for_a_sub_customer_lands_actions_there_and_the_log_names_both,
    acting_outside_the_tree_or_without_the_permission_is_refused,
    rename_suspend_reactivate_and_delete_with_children_refused,
);

const ACTING: &str = "keygate_console_as";

/// A request with the session's cookie, and the acting cookie when given.
fn with_cookies(
    request: reqwest::RequestBuilder,
    session: &str,
    acting: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut cookie = format!("keygate_session={session}");
    if let Some(tenant) = acting {
        cookie.push_str(&format!("; {ACTING}={tenant}"));
    }
    request.header("cookie", cookie)
}

async fn get(
    server: &TestServer,
    path: &str,
    session: &str,
    acting: Option<&str>,
) -> reqwest::Response {
    with_cookies(server.get(path), session, acting)
        .send()
        .await
        .unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    session: &str,
    acting: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    with_cookies(server.post(path), session, acting)
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A child of the root tenant made through the API, with its owner; returns its id.
async fn sub_customer(server: &TestServer, name: &str, slug: &str, email: &str) -> String {
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": name, "slug": slug, "first_user": {
                "email": email, "name": "Owner", "password": "correct horse battery staple"
            }})),
        )
        .await;
    created["tenant"]["id"].as_str().unwrap().to_owned()
}

/// The acting cookie a response sets: `Some("")` when it clears it.
fn acting_set(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{ACTING}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

async fn tenant_count(server: &TestServer) -> usize {
    server
        .expect(200, Method::GET, "/v1/tenants", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .len()
}

async fn a_reseller_adds_a_sub_customer_whose_first_user_signs_in_with_the_password_shown_once(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let form = get(&server, "/console/tenants/new", &session, None).await;
    assert_console_headers(form.headers(), "/console/tenants/new");
    let csrf = csrf_of(&form.text().await.unwrap());
    let created = post(
        &server,
        "/console/tenants/new",
        &session,
        None,
        &[
            ("csrf", &csrf),
            ("name", "Acme Corp"),
            ("slug", ""),
            ("email", "ops@acme.example"),
            ("user_name", "Ada"),
            ("password", ""),
        ],
    )
    .await;
    assert_eq!(created.status(), 200);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let html = created.text().await.unwrap();
    assert!(html.contains("you will not see it again"), "{html}");
    assert!(
        html.contains("the organization to enter is <code>acme-corp"),
        "the slug to sign in with: {html}"
    );
    let password = secret_of(&html);
    assert!(password.len() >= 16, "a generated password: {password}");
    // The first user signs in with it, as the owner of the new tenant.
    let theirs = server.login("ops@acme.example", &password).await;
    let whoami: Value = with_cookies(server.get("/v1/whoami"), &theirs, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slug = whoami["organization"]["slug"].as_str().unwrap();
    assert!(
        html.contains(&format!("<code>{slug}</code>")),
        "the page names the slug: {slug}"
    );
    assert!(
        whoami["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tenants:write")),
        "the first user is the owner: {whoami}"
    );

    let list = get(&server, "/console/tenants", &session, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("Acme Corp") && list.contains("Act for Acme Corp"),
        "{list}"
    );
    assert!(
        !list.contains(&password),
        "the password is shown on the answer alone"
    );
}

async fn bad_input_is_a_message_beside_its_field_and_adds_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    sub_customer(&server, "Taken", "taken", "taken@example.com").await;
    let session = server.login(OWNER, &server.password).await;
    let csrf = csrf_of(
        &get(&server, "/console/tenants/new", &session, None)
            .await
            .text()
            .await
            .unwrap(),
    );
    for (fields, field, says) in [
        (
            [
                ("name", "Beta"),
                ("slug", "taken"),
                ("email", "b@example.com"),
                ("user_name", "B"),
            ],
            "slug-error",
            "",
        ),
        (
            [
                ("name", "Beta"),
                ("slug", "Not A Slug!"),
                ("email", "b@example.com"),
                ("user_name", "B"),
            ],
            "slug-error",
            "",
        ),
        (
            [
                ("name", "Beta"),
                ("slug", ""),
                ("email", ""),
                ("user_name", "B"),
            ],
            "email-error",
            "first user",
        ),
        (
            [
                ("name", ""),
                ("slug", ""),
                ("email", "b@example.com"),
                ("user_name", "B"),
            ],
            "name-error",
            "",
        ),
    ] {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let answer = post(&server, "/console/tenants/new", &session, None, &form).await;
        assert_eq!(answer.status(), 200);
        let html = answer.text().await.unwrap();
        assert!(
            html.contains(&format!("id=\"{field}\"")) && html.contains(says),
            "{fields:?}: {html}"
        );
        assert!(
            html.contains("value=\"Beta\"") || fields[0].1.is_empty(),
            "the values entered are kept"
        );
        assert_eq!(tenant_count(&server).await, 1, "{fields:?} added nothing");
    }
    let forged = post(
        &server,
        "/console/tenants/new",
        &session,
        None,
        &[
            ("name", "Forged"),
            ("email", "f@example.com"),
            ("user_name", "F"),
        ],
    )
    .await;
    assert_eq!(forged.status(), 403, "no CSRF token");
    assert_eq!(tenant_count(&server).await, 1);
}

async fn acting_for_a_sub_customer_lands_actions_there_and_the_log_names_both(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = sub_customer(&server, "Acme", "acme", "owner@acme.example").await;
    let session = server.login(OWNER, &server.password).await;
    let list = get(&server, "/console/tenants", &session, None)
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&list);
    let act = post(
        &server,
        &format!("/console/tenants/{acme}/act"),
        &session,
        None,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(act.status(), 303);
    assert_eq!(act.headers()["location"], "/console/tokens");
    assert_eq!(acting_set(&act).as_deref(), Some(acme.as_str()));

    let tokens = get(&server, "/console/tokens", &session, Some(&acme)).await;
    assert_eq!(tokens.status(), 200);
    let html = tokens.text().await.unwrap();
    assert!(
        html.contains("You are acting for <strong>Acme</strong>") && html.contains("Back to Root"),
        "a banner names the tenant acted for: {html}"
    );
    assert!(
        !html.contains("acting-suspended"),
        "an active one is not said suspended"
    );
    let made = post(
        &server,
        "/console/tokens/new",
        &session,
        Some(&acme),
        &[
            ("csrf", &csrf),
            ("kind", "service"),
            ("name", "acme deploy"),
            ("role", "viewer"),
            ("expiry", "never"),
        ],
    )
    .await;
    assert_eq!(made.status(), 200);
    let secret = secret_of(&made.text().await.unwrap());
    let whoami: Value = server
        .whoami(&[("apikey", secret.as_str())])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["organization"]["id"], acme.as_str(), "made in Acme");

    // Acme's own owner sees the token, and the event names the reseller's session and both
    // tenants.
    let theirs = server
        .login("owner@acme.example", "correct horse battery staple")
        .await;
    let listed: Value = with_cookies(server.get("/v1/tokens"), &theirs, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "acme deploy")
    );
    let events: Value = with_cookies(
        server.get("/v1/audit-events?action=token.create"),
        &theirs,
        None,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let event = &events["data"][0];
    assert_eq!(event["acting_tenant_id"], acme.as_str(), "{events}");
    assert_ne!(
        event["tenant_id"],
        acme.as_str(),
        "the reseller's own tenant"
    );
    assert_eq!(event["actor"]["type"], "user");
    // The reseller's own request log names the sub-customer it acted for.
    let log = get(&server, "/console/log?action=token.create", &session, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains(", acting for Acme</td>"), "by its name: {log}");

    let back = post(
        &server,
        "/console/act/stop",
        &session,
        Some(&acme),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(back.status(), 303);
    assert_eq!(
        acting_set(&back).as_deref(),
        Some(""),
        "the cookie is cleared"
    );

    // A suspended sub-customer can still be acted for (to set right what got it suspended),
    // while its own credentials are refused.
    server
        .expect(
            200,
            Method::PATCH,
            &format!("/v1/tenants/{acme}"),
            &server.token,
            Some(json!({"status": "suspended"})),
        )
        .await;
    let suspended = get(&server, "/console/tokens", &session, Some(&acme)).await;
    assert_eq!(suspended.status(), 200);
    let suspended = suspended.text().await.unwrap();
    assert!(suspended.contains("acme deploy"));
    // The banner says so, on every page.
    assert!(
        suspended.contains("id=\"acting-suspended\">Acme is suspended:"),
        "{suspended}"
    );
    assert_eq!(whoami_status(&server, &secret).await, 401);
}

async fn acting_outside_the_tree_or_without_the_permission_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = sub_customer(&server, "Acme", "acme", "owner@acme.example").await;
    let globex = sub_customer(&server, "Globex", "globex", "owner@globex.example").await;
    // Acme's owner acts for its sibling, by a crafted post and by a crafted cookie.
    let acme_owner = server
        .login("owner@acme.example", "correct horse battery staple")
        .await;
    let csrf = csrf_of(
        &get(&server, "/console/tenants", &acme_owner, None)
            .await
            .text()
            .await
            .unwrap(),
    );
    let crafted = post(
        &server,
        &format!("/console/tenants/{globex}/act"),
        &acme_owner,
        None,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(crafted.status(), 404);
    assert_eq!(acting_set(&crafted), None, "nothing remembered");
    let unknown = post(
        &server,
        "/console/tenants/tnt_0000000000000000000000/act",
        &acme_owner,
        None,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(unknown.status(), 404, "an unknown tenant reads the same");
    assert_eq!(
        crafted.text().await.unwrap(),
        unknown
            .text()
            .await
            .unwrap()
            .replace("tnt_0000000000000000000000", &globex),
        "a sibling and an unknown tenant answer alike"
    );
    let cookie = get(&server, "/console/tokens", &acme_owner, Some(&globex)).await;
    assert_eq!(cookie.status(), 404);
    assert_eq!(acting_set(&cookie).as_deref(), Some(""), "and forgets it");
    let detail = get(
        &server,
        &format!("/console/tenants/{globex}"),
        &acme_owner,
        None,
    )
    .await;
    assert_eq!(detail.status(), 404, "a sibling's page is not found either");

    // A member may read sub-customers but not act for them.
    server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(
                json!({"email": "member@example.com", "name": "Mia", "role": "member",
                        "password": "correct horse battery staple"}),
            ),
        )
        .await;
    let member = server
        .login("member@example.com", "correct horse battery staple")
        .await;
    let list = get(&server, "/console/tenants", &member, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("Acme") && !list.contains("Act for Acme"),
        "{list}"
    );
    assert!(!list.contains("Add sub-customer"));
    let refused = post(
        &server,
        &format!("/console/tenants/{acme}/act"),
        &member,
        None,
        &[("csrf", &csrf_of(&list))],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(acting_set(&refused), None);
}

async fn rename_suspend_reactivate_and_delete_with_children_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = sub_customer(&server, "Acme", "acme", "owner@acme.example").await;
    // A grandchild, made by acting for Acme through the API.
    let child = server
        .request(Method::POST, "/v1/tenants")
        .bearer_auth(&server.token)
        .header("as-tenant", &acme)
        .json(&json!({"name": "Acme EU", "slug": "acme-eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(child.status(), 201);
    let (_, acme_token) = {
        let made = server
            .request(Method::POST, "/v1/tokens")
            .bearer_auth(&server.token)
            .header("as-tenant", &acme)
            .json(&json!({"kind": "service", "name": "acme ci", "role": "viewer"}))
            .send()
            .await
            .unwrap();
        let made: Value = made.json().await.unwrap();
        (
            made["id"].as_str().unwrap().to_owned(),
            made["secret"].as_str().unwrap().to_owned(),
        )
    };
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/tenants/{acme}");
    let detail = get(&server, &path, &session, None).await;
    assert_console_headers(detail.headers(), "tenant page");
    let csrf = csrf_of(&detail.text().await.unwrap());
    let deeper = get(
        &server,
        &format!("/console/tenants?parent={acme}"),
        &session,
        None,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        deeper.contains("Sub-customers of Acme") && deeper.contains("Acme EU"),
        "deeper levels on demand: {deeper}"
    );

    let renamed = post(
        &server,
        &format!("{path}/change"),
        &session,
        None,
        &[("csrf", &csrf), ("name", "Acme Inc")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(renamed.contains("Renamed.") && renamed.contains("<h1>Acme Inc</h1>"));

    let suspended = post(
        &server,
        &format!("{path}/change"),
        &session,
        None,
        &[("csrf", &csrf), ("status", "suspended")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(suspended.contains("Suspended:"), "{suspended}");
    assert_eq!(
        whoami_status(&server, &acme_token).await,
        401,
        "refused at once"
    );
    let reactivated = post(
        &server,
        &format!("{path}/change"),
        &session,
        None,
        &[("csrf", &csrf), ("status", "active")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(reactivated.contains("Reactivated"));
    assert_eq!(whoami_status(&server, &acme_token).await, 200);

    let asked = post(
        &server,
        &format!("{path}/delete"),
        &session,
        None,
        &[("csrf", &csrf)],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(asked.contains("Delete Acme Inc?") && asked.contains("cannot be undone"));
    let refused = post(
        &server,
        &format!("{path}/delete"),
        &session,
        None,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(refused.status(), 409);
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains("still has child tenants"),
        "the reason, in words: {refused}"
    );
    assert_eq!(tenant_count(&server).await, 1, "nothing deleted");
    assert_eq!(whoami_status(&server, &acme_token).await, 200);
}

/// The done-means of the issue, by clicking: a reseller adds a sub-customer with its first user,
/// acts for it, adds a token there; the sub-customer's owner sees the token and the event naming
/// the reseller; acting for a sibling by a crafted request is a 404 page.
#[tokio::test]
async fn in_a_browser_a_reseller_provisions_a_sub_customer_and_acts_for_it() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-tenants-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    // The reseller is a customer of the operator, beside another one.
    sub_customer(&server, "Reseller", "reseller", "ops@reseller.example").await;
    let sibling = sub_customer(&server, "Globex", "globex", "owner@globex.example").await;
    let client = &browser.client;
    let go = |path: &str| {
        let url = format!("{}{path}", server.base);
        async move { client.goto(&url).await }
    };
    go("/console/sign-in").await.unwrap();
    sign_in(
        &browser,
        "ops@reseller.example",
        "correct horse battery staple",
    )
    .await;
    browser.click("header nav a[href='/console/tenants']").await;
    browser.find("a.button[href='/console/tenants/new']").await;
    audit(&browser, axe, &shots, "tenants").await;
    browser.click("a.button[href='/console/tenants/new']").await;
    browser
        .find("#name")
        .await
        .send_keys("Acme Corp")
        .await
        .unwrap();
    browser
        .find("#email")
        .await
        .send_keys("ops@acme.example")
        .await
        .unwrap();
    browser
        .find("#user_name")
        .await
        .send_keys("Ada")
        .await
        .unwrap();
    audit(&browser, axe, &shots, "tenant-new").await;
    browser.click("main form button[type=submit]").await;
    let password = secret_on_page(&browser).await;
    audit(&browser, axe, &shots, "tenant-created").await;

    // Act for it, from the answer page, and add a token there.
    browser.click("form[action$='/act'] button").await;
    let banner = browser.find(".acting").await.text().await.unwrap();
    assert!(banner.contains("You are acting for Acme Corp"), "{banner}");
    browser.click("a.button[href='/console/tokens/new']").await;
    browser
        .find("#name")
        .await
        .send_keys("made by the reseller")
        .await
        .unwrap();
    browser
        .find("#expiry")
        .await
        .select_by_value("30")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let secret = secret_on_page(&browser).await;
    assert_eq!(whoami_status(&server, &secret).await, 200);
    audit(&browser, axe, &shots, "acting-token-created").await;

    // Still acting for it: an OAuth client for the sub-customer, whose curl line gets a token
    // that belongs to the sub-customer.
    go("/console/oauth/clients/new").await.unwrap();
    browser
        .find("#name")
        .await
        .send_keys("Acme billing")
        .await
        .unwrap();
    browser
        .find("#role")
        .await
        .select_by_value("viewer")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let curl = browser.find("#curl").await.text().await.unwrap();
    let issued: Value =
        serde_json::from_str(&crate::console_clients::run(curl.trim()).await).unwrap();
    let access = issued["access_token"].as_str().unwrap();
    let whoami: Value = server
        .whoami(&[("authorization", &format!("Bearer {access}"))])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["organization"]["name"], "Acme Corp", "{whoami}");

    // A sibling, by a crafted request from the page: the 404 page.
    let crafted = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value});
             fetch('/console/tenants/' + arguments[0] + '/act', {method: 'POST', body, redirect: 'manual'})
               .then((r) => done(r.status));",
            vec![json!(sibling)],
        )
        .await
        .unwrap();
    assert_eq!(crafted, 404);
    go(&format!("/console/tenants/{sibling}")).await.unwrap();
    let refused = browser.find("main").await.text().await.unwrap();
    assert!(refused.contains("no such sub-customer"), "{refused}");

    // Back home, then the sub-customer's own owner signs in.
    go("/console/tokens").await.unwrap();
    browser.click(".acting form button").await;
    browser.find("a.button[href='/console/tenants/new']").await;
    browser.click("header form button").await;
    sign_in(&browser, "ops@acme.example", &password).await;
    let row = browser.find("tbody tr").await.text().await.unwrap();
    assert!(row.contains("made by the reseller"), "{row}");
    // What that token did, and who made it, from the token's page to the request log.
    browser
        .click("tbody tr a[href^='/console/tokens/tok_']")
        .await;
    browser.click("a[href^='/console/log?token_id=']").await;
    // It has only answered whoami, which changes nothing, so nothing is logged for it.
    browser.find("#no-events").await;
    audit(&browser, axe, &shots, "log-of-a-token").await;
    go("/console/log?action=token.create").await.unwrap();
    let made = browser.find("#events tbody tr").await.text().await.unwrap();
    assert!(
        made.contains("acting for this organization") && made.contains("token.create"),
        "the event names the reseller acting for Acme: {made}"
    );
    audit(&browser, axe, &shots, "log-acting").await;
    let theirs = server.login("ops@acme.example", &password).await;
    let events: Value = with_cookies(
        server.get("/v1/audit-events?action=token.create"),
        &theirs,
        None,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(events["data"][0]["actor"]["type"], "user", "{events}");
    assert!(
        events["data"][0]["acting_tenant_id"].is_string(),
        "{events}"
    );
}
