//! The console's OAuth clients (API.md §7, §11, §14): the list, Add OAuth client with its secret
//! and the ready grant shown once, the client's page, Roll secret and Delete; and in a browser,
//! the curl line shown on the page run as it is.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, audit, browser_session, csrf_of, page, person, post_form,
    secret_of, secret_on_page, sign_in, whoami_status,
};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    a_person_adds_an_oauth_client_and_gets_what_a_client_library_needs,
    bad_input_is_shown_beside_its_field_and_adds_nothing,
    a_client_page_rolls_the_secret_with_an_overlap_and_deletes_after_asking,
    a_member_sees_the_clients_but_cannot_roll_or_delete_them,
);

/// The text of the element with this id on a page, unescaped as a browser shows it.
pub(crate) fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("#{id} on the page"))
        + marker.len();
    html[start..]
        .split('<')
        .next()
        .unwrap()
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Runs a command line as a shell would; its standard output. (Off the test's thread: the
/// server it calls answers on that one.)
pub(crate) async fn run(line: &str) -> String {
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(line);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The token endpoint's status for a client credentials grant with this secret.
async fn grant_status(server: &TestServer, id: &str, secret: &str) -> u16 {
    server
        .post("/v1/oauth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn clients(server: &TestServer) -> Vec<Value> {
    server
        .expect(200, Method::GET, "/v1/oauth/clients", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Adds a client through the form as the owner; the page that answers.
async fn add(server: &TestServer, session: &str, form: &[(&str, &str)]) -> String {
    let new = page(server, "/console/oauth/clients/new", Some(session))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&new);
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend_from_slice(form);
    let created = post_form(server, session, "/console/oauth/clients/new", &fields).await;
    assert_eq!(created.status(), 200);
    assert_console_headers(created.headers(), "client created");
    created.text().await.unwrap()
}

async fn a_person_adds_an_oauth_client_and_gets_what_a_client_library_needs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let tokens = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(tokens.contains("href=\"/console/oauth/clients\">OAuth clients</a>"));
    let list = page(&server, "/console/oauth/clients", Some(&session)).await;
    assert_eq!(list.status(), 200);
    assert_console_headers(list.headers(), "clients");
    let list = list.text().await.unwrap();
    assert!(list.contains("There are no OAuth clients yet"));
    assert!(list.contains("href=\"/console/oauth/clients/new\""));
    let new = page(&server, "/console/oauth/clients/new", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    for role in ["owner", "admin", "member", "viewer"] {
        assert!(new.contains(&format!("<option value=\"{role}\"")), "{role}");
    }
    assert!(new.contains("name=\"permission\" value=\"tokens:read\""));

    let created = add(
        &server,
        &session,
        &[
            ("name", "billing sync"),
            ("description", "nightly"),
            ("role", "member"),
            ("permission", "tokens:read"),
            ("permission", "users:read"),
        ],
    )
    .await;
    let stored = clients(&server).await;
    assert_eq!(stored.len(), 1);
    let id = stored[0]["client_id"].as_str().unwrap();
    assert_eq!(stored[0]["role"], "rol_member");
    assert_eq!(
        stored[0]["permissions"],
        json!(["tokens:read", "users:read"])
    );
    assert_eq!(text_of(&created, "client-id"), id);
    assert!(created.contains("you will not see it again"));
    let secret = secret_of(&created);
    // What the discovery document says, word for word.
    let metadata: Value = server
        .get("/.well-known/oauth-authorization-server")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        text_of(&created, "token-endpoint"),
        metadata["token_endpoint"]
    );
    assert_eq!(text_of(&created, "issuer"), metadata["issuer"]);
    assert_eq!(text_of(&created, "jwks-uri"), metadata["jwks_uri"]);
    let curl = text_of(&created, "curl");
    assert!(curl.contains(&format!("{id}:{secret}")), "{curl}");
    assert!(
        curl.contains(&format!("{}/v1/oauth/token", server.base)),
        "{curl}"
    );
    assert!(curl.contains("grant_type=client_credentials"), "{curl}");
    let issued: Value = serde_json::from_str(&run(&curl).await).unwrap();
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(whoami_status(&server, access).await, 200);

    // The list and the client's page show it, never its secret.
    for path in [
        "/console/oauth/clients".to_owned(),
        format!("/console/oauth/clients/{id}"),
    ] {
        let shown = page(&server, &path, Some(&session)).await;
        assert_eq!(shown.status(), 200, "{path}");
        assert_console_headers(shown.headers(), &path);
        let shown = shown.text().await.unwrap();
        assert!(
            shown.contains("billing sync") && shown.contains(id),
            "{path}"
        );
        assert!(shown.contains("tokens:read, users:read"), "{path}");
        assert!(!shown.contains(&secret), "{path}");
    }
    // An unknown or malformed id is a page saying so.
    for path in [
        "/console/oauth/clients/cli_0MqX1z8a9bCdEfGhIjKlMn",
        "/console/oauth/clients/nonsense",
    ] {
        assert_eq!(page(&server, path, Some(&session)).await.status(), 404);
    }
}

async fn bad_input_is_shown_beside_its_field_and_adds_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let refused = add(&server, &session, &[("name", "  "), ("role", "viewer")]).await;
    assert!(refused.contains("id=\"name-error\""), "{refused}");
    assert!(refused.contains("aria-invalid=\"true\""));
    let refused = add(
        &server,
        &session,
        &[
            ("name", "typo"),
            ("role", "viewer"),
            ("permission", "zone:read"),
        ],
    )
    .await;
    assert!(refused.contains("class=\"error field-error\""), "{refused}");
    assert!(
        refused.contains("value=\"typo\""),
        "the form keeps what was typed"
    );
    let refused = add(
        &server,
        &session,
        &[("name", "x"), ("role", "no such role")],
    )
    .await;
    assert!(refused.contains("class=\"error"), "{refused}");
    assert!(clients(&server).await.is_empty(), "nothing was added");
}

async fn a_client_page_rolls_the_secret_with_an_overlap_and_deletes_after_asking(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let created = add(&server, &session, &[("name", "sync"), ("role", "viewer")]).await;
    let id = text_of(&created, "client-id");
    let old = secret_of(&created);
    let detail = page(
        &server,
        &format!("/console/oauth/clients/{id}"),
        Some(&session),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(detail.contains("Roll secret") && detail.contains("Delete this client"));
    let csrf = csrf_of(&detail);
    let rolled = post_form(
        &server,
        &session,
        &format!("/console/oauth/clients/{id}/roll"),
        &[("csrf", &csrf), ("overlap", "3600")],
    )
    .await;
    assert_eq!(rolled.status(), 200);
    assert_eq!(rolled.headers()["cache-control"], "no-store");
    let rolled = rolled.text().await.unwrap();
    assert!(rolled.contains("keeps working until"), "{rolled}");
    let new = secret_of(&rolled);
    assert_ne!(new, old);
    assert!(text_of(&rolled, "curl").contains(&new));
    assert_eq!(grant_status(&server, &id, &old).await, 200);
    assert_eq!(grant_status(&server, &id, &new).await, 200);
    let detail = page(
        &server,
        &format!("/console/oauth/clients/{id}"),
        Some(&session),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        detail.contains("id=\"previous-until\""),
        "the page says until when"
    );
    server.clock.advance(Duration::from_secs(3600));
    assert_eq!(grant_status(&server, &id, &old).await, 401);
    assert_eq!(grant_status(&server, &id, &new).await, 200);

    // A bad overlap rolls nothing.
    let refused = post_form(
        &server,
        &session,
        &format!("/console/oauth/clients/{id}/roll"),
        &[("csrf", &csrf), ("overlap", "999999")],
    )
    .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(grant_status(&server, &id, &new).await, 200);

    // Delete asks first, then deletes.
    let asked = post_form(
        &server,
        &session,
        &format!("/console/oauth/clients/{id}/delete"),
        &[("csrf", &csrf)],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(asked.contains("name=\"confirm\" value=\"yes\""), "{asked}");
    assert_eq!(clients(&server).await.len(), 1, "asking deletes nothing");
    let done = post_form(
        &server,
        &session,
        &format!("/console/oauth/clients/{id}/delete"),
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("OAuth client deleted"));
    assert!(clients(&server).await.is_empty());
    assert_eq!(grant_status(&server, &id, &new).await, 401);
    // Without the session's CSRF token nothing happens.
    let kept = add(&server, &session, &[("name", "kept"), ("role", "viewer")]).await;
    let other = text_of(&kept, "client-id");
    let forged = post_form(
        &server,
        &session,
        &format!("/console/oauth/clients/{other}/delete"),
        &[("csrf", "0000"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(clients(&server).await.len(), 1);
}

async fn a_member_sees_the_clients_but_cannot_roll_or_delete_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.login(OWNER, &server.password).await;
    let created = add(&server, &owner, &[("name", "owner's"), ("role", "admin")]).await;
    let id = text_of(&created, "client-id");
    let secret = secret_of(&created);
    let member = person(&server, "member@example.com", "member").await;
    let list = page(&server, "/console/oauth/clients", Some(&member))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("owner&#39;s") || list.contains("owner's"),
        "{list}"
    );
    assert!(
        !list.contains("/console/oauth/clients/new"),
        "no Add for a member"
    );
    let detail = page(
        &server,
        &format!("/console/oauth/clients/{id}"),
        Some(&member),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!detail.contains("Roll secret") && !detail.contains("Delete this client"));
    assert!(detail.contains("id=\"why-no-actions\""));
    let csrf = csrf_of(&detail);
    for (path, form) in [
        (
            format!("/console/oauth/clients/{id}/roll"),
            vec![("overlap", "0")],
        ),
        (
            format!("/console/oauth/clients/{id}/delete"),
            vec![("confirm", "yes")],
        ),
    ] {
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let refused = post_form(&server, &member, &path, &fields).await;
        assert_eq!(refused.status(), 403, "{path}");
    }
    assert_eq!(grant_status(&server, &id, &secret).await, 200, "untouched");
    assert_eq!(clients(&server).await.len(), 1);
}

#[tokio::test]
async fn in_a_browser_an_oauth_clients_curl_line_works_and_its_secret_rolls() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-clients-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let client = &browser.client;
    client
        .goto(&format!("{}/console/sign-in", server.base))
        .await
        .unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.click("nav a[href='/console/oauth/clients']").await;
    browser
        .find("a.button[href='/console/oauth/clients/new']")
        .await;
    audit(&browser, axe, &shots, "clients-empty").await;
    browser
        .click("a.button[href='/console/oauth/clients/new']")
        .await;
    browser
        .find("#name")
        .await
        .send_keys("Billing sync")
        .await
        .unwrap();
    browser
        .find("#role")
        .await
        .select_by_value("member")
        .await
        .unwrap();
    browser.click("input[value='tokens:read']").await;
    audit(&browser, axe, &shots, "client-new").await;
    browser.click("main form button[type=submit]").await;

    let curl = browser.find("#curl").await.text().await.unwrap();
    let first = secret_on_page(&browser).await;
    let id = browser.find("#client-id").await.text().await.unwrap();
    audit(&browser, axe, &shots, "client-created").await;
    // The line as shown, run as a person would paste it.
    let issued: Value = serde_json::from_str(&run(curl.trim()).await).unwrap();
    let access = issued["access_token"].as_str().unwrap();
    let whoami = server
        .whoami(&[("authorization", &format!("Bearer {access}"))])
        .await;
    assert_eq!(whoami.status(), 200);
    let whoami: Value = whoami.json().await.unwrap();
    assert_eq!(whoami["permissions"], json!(["tokens:read"]));

    client
        .goto(&format!("{}/console/oauth/clients", server.base))
        .await
        .unwrap();
    let row = browser.find("tbody tr").await.text().await.unwrap();
    assert!(
        row.contains("Billing sync") && row.contains(id.trim()),
        "{row}"
    );
    audit(&browser, axe, &shots, "clients").await;
    browser
        .click(&format!("a[href='/console/oauth/clients/{}']", id.trim()))
        .await;
    browser
        .find("#overlap")
        .await
        .select_by_value("3600")
        .await
        .unwrap();
    audit(&browser, axe, &shots, "client").await;
    browser
        .click("form[action$='/roll'] button[type=submit]")
        .await;
    browser.find("#previous-until").await;
    let second = secret_on_page(&browser).await;
    let rolled_curl = browser.find("#curl").await.text().await.unwrap();
    audit(&browser, axe, &shots, "client-rolled").await;
    assert_ne!(first, second);
    // Both get tokens during the overlap: the new one through the line shown, the old one too.
    let issued: Value = serde_json::from_str(&run(rolled_curl.trim()).await).unwrap();
    assert_eq!(
        whoami_status(&server, issued["access_token"].as_str().unwrap()).await,
        200
    );
    assert_eq!(grant_status(&server, id.trim(), &first).await, 200);
    assert_eq!(grant_status(&server, id.trim(), &second).await, 200);
    server.clock.advance(Duration::from_secs(3600));
    assert_eq!(grant_status(&server, id.trim(), &first).await, 401);
    assert_eq!(grant_status(&server, id.trim(), &second).await, 200);

    // Delete, after the confirmation page.
    client
        .goto(&format!(
            "{}/console/oauth/clients/{}",
            server.base,
            id.trim()
        ))
        .await
        .unwrap();
    browser
        .click("form[action$='/delete'] button[type=submit]")
        .await;
    browser.find("input[name='confirm']").await;
    audit(&browser, axe, &shots, "client-delete").await;
    browser
        .click("form[action$='/delete'] button[type=submit]")
        .await;
    browser.find("p[role='status']").await;
    audit(&browser, axe, &shots, "client-deleted").await;
    assert_eq!(grant_status(&server, id.trim(), &second).await, 401);
}
