//! The web console (API.md §11) over HTTP: redirects, sign-in, the tokens page, and what every
//! page must send and refuse, with the helpers the other console tests share; and the browser tests
//! of part 1.

use reqwest::header::HeaderMap;

use crate::browser::Browser;
use crate::harness::{Backend, TestServer};

on_every_backend!(
    a_refusal_to_a_signed_in_person_keeps_the_console_around_it,
    a_visitor_is_sent_to_sign_in_and_a_person_signs_in_to_the_tokens_page,
    only_a_trusted_proxy_makes_the_session_cookie_secure,
    sign_in_failures_read_the_same_for_an_unknown_email_and_a_wrong_password,
    forms_need_the_sessions_csrf_token_and_a_same_site_origin,
    a_person_adds_a_token_sees_its_secret_once_and_uses_it,
    delete_selected_asks_then_stops_the_tokens_at_once,
    a_member_sees_no_delete_for_the_owners_token_and_a_crafted_post_is_refused,
    a_token_page_rolls_the_secret_with_an_overlap,
    custom_roles_are_offered_to_who_holds_them_and_named_in_the_table,
    account_keys_are_created_shown_once_limited_to_two_and_deleted,
    the_ip_restriction_form_shows_the_address_and_refuses_a_lock_out,
    a_creating_form_sent_again_is_not_acted_on_twice,
);

pub(crate) const OWNER: &str = "owner@example.com";

/// The headers API.md §11 asks of every console page.
pub(crate) fn assert_console_headers(headers: &HeaderMap, page: &str) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{page}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{page}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{page}: {csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{page}");
    assert_eq!(headers["referrer-policy"], "same-origin", "{page}");
    assert_eq!(headers["cache-control"], "no-store", "{page}");
}

pub(crate) async fn page(
    server: &TestServer,
    path: &str,
    session: Option<&str>,
) -> reqwest::Response {
    let mut request = server.get(path);
    if let Some(session) = session {
        request = request.header("cookie", format!("keygate_session={session}"));
    }
    request.send().await.unwrap()
}

/// The value of the page's first hidden field `name`.
fn hidden_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("a form with {name}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The CSRF token of the page's forms.
pub(crate) fn csrf_of(html: &str) -> String {
    hidden_of(html, "csrf")
}

/// Behind a trusted proxy that ended TLS (`X-Forwarded-Proto: https`), the session cookie is
/// `Secure`, from the console's sign-in and the API's alike; the same header from anyone else
/// is ignored (API.md §11), and was not: any client could make its cookie `Secure` over plain
/// HTTP, where a browser never sends it back.
async fn only_a_trusted_proxy_makes_the_session_cookie_secure(backend: Backend) {
    for trusted in [false, true] {
        let server = TestServer::start_with(backend, |c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        })
        .await;
        let console = server
            .post("/console/sign-in")
            .header("x-forwarded-proto", "https")
            .form(&[("email", OWNER), ("password", server.password.as_str())])
            .send()
            .await
            .unwrap();
        let api = server
            .post("/v1/auth/login")
            .header("x-forwarded-proto", "https")
            .json(&serde_json::json!({"email": OWNER, "password": server.password}))
            .send()
            .await
            .unwrap();
        for (response, what) in [(console, "console"), (api, "API")] {
            let cookie = response.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                cookie.contains("; Secure"),
                trusted,
                "{what}, trusted {trusted}: {cookie}"
            );
        }
    }
}

async fn a_visitor_is_sent_to_sign_in_and_a_person_signs_in_to_the_tokens_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let root = page(&server, "/", None).await;
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/console/");
    let console = page(&server, "/console/", None).await;
    assert_eq!(console.status(), 303);
    assert_eq!(console.headers()["location"], "/console/sign-in");
    assert_console_headers(console.headers(), "/console/");
    let tokens = page(&server, "/console/tokens", None).await;
    assert_eq!(tokens.status(), 303, "no session, no tokens page");

    let form = page(&server, "/console/sign-in", None).await;
    assert_eq!(form.status(), 200);
    assert_console_headers(form.headers(), "/console/sign-in");
    let html = form.text().await.unwrap();
    assert!(html.contains("<label for=\"email\">Email</label>"));
    assert!(!html.contains("<script>"), "no inline script");

    let signed_in = server
        .post("/console/sign-in")
        .header("origin", &server.base)
        .form(&[("email", OWNER), ("password", server.password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/console/tokens");
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: a Secure cookie would never come back"
    );
    let session = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("keygate_session="))
        .unwrap();

    let tokens = page(&server, "/console/tokens", Some(session)).await;
    assert_eq!(tokens.status(), 200);
    assert_console_headers(tokens.headers(), "/console/tokens");
    let html = tokens.text().await.unwrap();
    assert!(
        html.contains("bootstrap"),
        "the bootstrap token is listed: {html}"
    );
    assert!(
        html.contains(
            "Signed in as <strong>Owner</strong> (owner@example.com) in <strong>Root</strong>"
        ),
        "the header says who is signed in, in which tenant: {html}"
    );
    assert!(
        html.contains("aria-current=\"page\""),
        "the navigation marks the page"
    );
    assert!(
        !html.contains(session),
        "the page never shows the session's secret"
    );
    let filtered = page(&server, "/console/tokens?kind=personal", Some(session)).await;
    assert!(filtered.text().await.unwrap().contains("No tokens match."));

    // A client saying it came over TLS is not believed: only a trusted proxy says so (below).
    let claimed = server
        .post("/console/sign-in")
        .header("x-forwarded-proto", "https")
        .form(&[("email", OWNER), ("password", server.password.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = claimed.headers()["set-cookie"].to_str().unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");

    // Signing out ends the session for the API too.
    let csrf = csrf_of(&html);
    let out = server
        .post("/console/sign-out")
        .header("cookie", format!("keygate_session={session}"))
        .header("origin", &server.base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], "/console/sign-in");
    let after = server
        .whoami(&[("cookie", &format!("keygate_session={session}"))])
        .await;
    assert_eq!(after.status(), 401);
}

async fn sign_in_failures_read_the_same_for_an_unknown_email_and_a_wrong_password(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let attempt = |email: &'static str| {
        let server = &server;
        async move {
            let response = server
                .post("/console/sign-in")
                .form(&[("email", email), ("password", "not the password at all")])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "the form again, with a message");
            let html = response.text().await.unwrap();
            assert!(
                html.contains("value=\"") && html.contains(email),
                "the email is kept"
            );
            let start = html.find("role=\"alert\"").expect("a message");
            html[start..].split('<').next().unwrap().to_owned()
        }
    };
    let unknown = attempt("nobody@example.com").await;
    let wrong = attempt(OWNER).await;
    assert!(unknown.contains("Wrong email or password."), "{unknown}");
    assert_eq!(unknown, wrong);

    // The throttle of §2 reads as a wait.
    let mut last = String::new();
    for _ in 0..6 {
        last = attempt(OWNER).await;
    }
    assert!(last.contains("Too many failed sign-ins. Wait"), "{last}");
}

async fn forms_need_the_sessions_csrf_token_and_a_same_site_origin(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let cookie = format!("keygate_session={session}");
    let html = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&html);
    let other = server.login(OWNER, &server.password).await;
    let others_csrf = csrf_of(
        &page(&server, "/console/tokens", Some(&other))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_ne!(csrf, others_csrf, "bound to the session");

    let sign_out = |token: String, headers: Vec<(&'static str, String)>| {
        let server = &server;
        let cookie = cookie.clone();
        async move {
            let mut request = server.post("/console/sign-out").header("cookie", cookie);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.form(&[("csrf", token)]).send().await.unwrap()
        }
    };
    for (token, headers, why) in [
        (String::new(), vec![], "no CSRF token"),
        (others_csrf.clone(), vec![], "another session's token"),
        (
            csrf.clone(),
            vec![("origin", "https://evil.example".to_owned())],
            "a foreign Origin",
        ),
        (
            csrf.clone(),
            vec![("sec-fetch-site", "cross-site".to_owned())],
            "a cross-site fetch",
        ),
    ] {
        let refused = sign_out(token, headers).await;
        assert_eq!(refused.status(), 403, "{why}");
        assert_console_headers(refused.headers(), why);
        assert!(
            refused.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{why}: a page a person reads, not a problem document"
        );
        let page = refused.text().await.unwrap();
        assert!(page.contains("keygate did not act on it"), "{why}: {page}");
        // Nothing changed: the session still works.
        let still = server.whoami(&[("cookie", &cookie)]).await;
        assert_eq!(still.status(), 200, "{why} changed nothing");
    }
    let done = sign_out(csrf, vec![("sec-fetch-site", "same-origin".to_owned())]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(server.whoami(&[("cookie", &cookie)]).await.status(), 401);
    // A foreign site cannot sign a person in either (login CSRF).
    let planted = server
        .post("/console/sign-in")
        .header("origin", "https://evil.example")
        .form(&[("email", OWNER), ("password", server.password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 403);
}

/// The secret shown on the page that answers a creation.
pub(crate) fn secret_of(html: &str) -> String {
    let marker = "<code id=\"secret\">";
    let start = html.find(marker).expect("the secret on the page") + marker.len();
    html[start..].split('<').next().unwrap().to_owned()
}

async fn a_person_adds_a_token_sees_its_secret_once_and_uses_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let cookie = format!("keygate_session={session}");
    let form_page = page(&server, "/console/tokens/new", Some(&session)).await;
    assert_eq!(form_page.status(), 200);
    assert_console_headers(form_page.headers(), "/console/tokens/new");
    let html = form_page.text().await.unwrap();
    assert!(
        html.contains("value=\"tokens:read\""),
        "the owner is offered tokens:read"
    );
    let csrf = csrf_of(&html);
    let add = |fields: Vec<(&'static str, &'static str)>| {
        let server = &server;
        let cookie = cookie.clone();
        let csrf = csrf.clone();
        async move {
            let mut form = vec![("csrf", csrf.as_str().to_owned())];
            form.extend(fields.into_iter().map(|(k, v)| (k, v.to_owned())));
            let response = server
                .post("/console/tokens/new")
                .header("cookie", cookie)
                .header("origin", &server.base)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_console_headers(response.headers(), "POST /console/tokens/new");
            response.text().await.unwrap()
        }
    };

    // Bad input: the form again, the message beside its field, nothing created.
    let before = server
        .expect(200, reqwest::Method::GET, "/v1/tokens", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .len();
    let refused = add(vec![("kind", "personal"), ("name", ""), ("expiry", "7")]).await;
    assert!(refused.contains("id=\"name-error\""), "{refused}");
    assert!(refused.contains("aria-invalid=\"true\""));
    let never = add(vec![
        ("kind", "personal"),
        ("name", "forever"),
        ("expiry", "never"),
    ])
    .await;
    assert!(
        never.contains("role=\"alert\"") || never.contains("field-error"),
        "{never}"
    );
    assert!(!never.contains("id=\"secret\""));
    let odd = add(vec![
        ("kind", "personal"),
        ("name", "odd"),
        ("expiry", "36500"),
    ])
    .await;
    assert!(odd.contains("pick when the token expires"), "{odd}");
    // Several mistakes at once are all told at once, each beside its field.
    let many = add(vec![
        ("kind", "service"),
        ("name", " "),
        ("role", "viewer"),
        ("expiry", "date"),
        ("expiry_date", "2020-01-01"),
        ("allowed_ips", "10.0.0.0/8\nnot-a-network"),
        ("rate_requests", "5"),
    ])
    .await;
    for said in [
        "pick a day after today",
        // What the person typed is quoted as code, not between backticks.
        "<code>not-a-network</code> is not an IPv4",
        "give both the number of requests",
        "id=\"name-error\"",
    ] {
        assert!(many.contains(said), "{said}: {many}");
    }
    let after = server
        .expect(200, reqwest::Method::GET, "/v1/tokens", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .len();
    // Quoted or not, what was typed is text, never markup.
    let hostile = add(vec![
        ("kind", "personal"),
        ("name", "hostile"),
        ("expiry", "7"),
        ("allowed_ips", "<b>x</b>"),
    ])
    .await;
    assert!(
        hostile.contains("<code>&lt;b&gt;x&lt;/b&gt;</code> is not an IPv4"),
        "{hostile}"
    );
    assert!(!hostile.contains("<b>x"), "{hostile}");
    assert_eq!(before, after, "refused forms create nothing");

    // A personal token narrowed to two permissions, for a week.
    let created = add(vec![
        ("kind", "personal"),
        ("name", "Laptop"),
        ("description", "my dev machine"),
        ("permission", "tokens:read"),
        ("permission", "users:read"),
        ("expiry", "7"),
    ])
    .await;
    assert!(created.contains("you will not see it again"), "{created}");
    // A Copy button, hidden in the page itself: only the console's script makes it work, and
    // shows it.
    assert!(
        created.contains("<button type=\"button\" hidden data-copy=\"secret\">Copy</button>"),
        "a Copy button, hidden without the script"
    );
    let secret = secret_of(&created);
    let whoami = server
        .whoami(&[("authorization", &format!("Bearer {secret}"))])
        .await;
    assert_eq!(whoami.status(), 200);
    let whoami: serde_json::Value = whoami.json().await.unwrap();
    let mut permissions: Vec<&str> = whoami["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    permissions.sort_unstable();
    assert_eq!(permissions, ["tokens:read", "users:read"]);
    // The list shows it, without its secret.
    let list = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains("Laptop") && list.contains("my dev machine"));
    assert!(!list.contains(&secret));

    // A service token with a role, never expiring.
    let service = add(vec![
        ("kind", "service"),
        ("name", "CI deploy"),
        ("role", "viewer"),
        ("expiry", "never"),
        ("rate_requests", "100"),
        ("rate_seconds", "60"),
    ])
    .await;
    let secret = secret_of(&service);
    let listed = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/tokens?kind=service",
            &server.token,
            None,
        )
        .await;
    let token = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "CI deploy")
        .unwrap();
    assert_eq!(token["role"], "rol_viewer");
    assert_eq!(token["expires_at"], serde_json::Value::Null);
    assert_eq!(token["rate_limit"]["requests"], 100);
    assert_eq!(
        server.whoami(&[("apikey", secret.as_str())]).await.status(),
        200
    );
}

/// Creates a service token through the API; returns (id, secret).
pub(crate) async fn service_token(server: &TestServer, name: &str, role: &str) -> (String, String) {
    let created = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(serde_json::json!({"kind": "service", "name": name, "role": role})),
        )
        .await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// A person with `role` in the root tenant, made through the API and signed in: their session.
pub(crate) async fn person(server: &TestServer, email: &str, role: &str) -> String {
    const PASSWORD: &str = "correct horse battery staple";
    server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/users",
            &server.token,
            Some(serde_json::json!({
                "email": email, "name": role, "role": role, "password": PASSWORD
            })),
        )
        .await;
    server.login(email, PASSWORD).await
}

/// Posts a console form as the session's browser would.
pub(crate) async fn post_form(
    server: &TestServer,
    session: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    server
        .post(path)
        .header("cookie", format!("keygate_session={session}"))
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn delete_selected_asks_then_stops_the_tokens_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (a, a_secret) = service_token(&server, "first", "viewer").await;
    let (b, b_secret) = service_token(&server, "second", "viewer").await;
    let (_, kept) = service_token(&server, "kept", "viewer").await;
    let session = server.login(OWNER, &server.password).await;
    let html = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("name=\"id\" value=\"{a}\"")),
        "a checkbox per token"
    );
    let csrf = csrf_of(&html);
    let asked = post_form(
        &server,
        &session,
        "/console/tokens/delete",
        &[("csrf", &csrf), ("id", &a), ("id", &b)],
    )
    .await;
    assert_eq!(asked.status(), 200);
    let asked = asked.text().await.unwrap();
    assert!(
        asked.contains("Delete 2 tokens?") && asked.contains("first") && asked.contains("second")
    );
    // Each named with its id: two tokens may share a name.
    assert!(
        asked.contains(&format!("first <code>{a}</code>")),
        "{asked}"
    );
    let none = post_form(
        &server,
        &session,
        "/console/tokens/delete",
        &[("csrf", &csrf)],
    )
    .await;
    assert!(
        none.text()
            .await
            .unwrap()
            .contains("<h1>No token selected</h1>"),
        "not \"Delete 0 tokens?\""
    );
    assert_eq!(
        server
            .whoami(&[("apikey", a_secret.as_str())])
            .await
            .status(),
        200,
        "asking changes nothing"
    );
    let done = post_form(
        &server,
        &session,
        "/console/tokens/delete",
        &[("csrf", &csrf), ("confirm", "yes"), ("id", &a), ("id", &b)],
    )
    .await;
    assert_eq!(done.status(), 200);
    let done = done.text().await.unwrap();
    assert!(done.contains("<h1>Tokens revoked</h1>"), "{done}");
    assert!(done.contains("no longer work"), "{done}");
    assert!(
        done.contains("marked Revoked"),
        "as the list shows them: {done}"
    );
    for secret in [&a_secret, &b_secret] {
        assert_eq!(
            server.whoami(&[("apikey", secret.as_str())]).await.status(),
            401
        );
    }
    assert_eq!(
        server.whoami(&[("apikey", kept.as_str())]).await.status(),
        200
    );
}

async fn a_member_sees_no_delete_for_the_owners_token_and_a_crafted_post_is_refused(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let (owners, owners_secret) = service_token(&server, "owner automation", "owner").await;
    server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/users",
            &server.token,
            Some(serde_json::json!({
                "email": "member@example.com", "name": "Mia", "role": "member",
                "password": "correct horse battery staple"
            })),
        )
        .await;
    let session = server
        .login("member@example.com", "correct horse battery staple")
        .await;
    let html = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("owner automation"), "listed");
    assert!(
        !html.contains(&format!("name=\"id\" value=\"{owners}\"")),
        "no checkbox for the owner's token"
    );
    let detail = page(
        &server,
        &format!("/console/tokens/{owners}"),
        Some(&session),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!detail.contains("Delete this token") && !detail.contains(">Roll<"));
    let csrf = csrf_of(&html);
    let crafted = post_form(
        &server,
        &session,
        "/console/tokens/delete",
        &[("csrf", &csrf), ("confirm", "yes"), ("id", &owners)],
    )
    .await;
    assert_eq!(crafted.status(), 403);
    let roll = post_form(
        &server,
        &session,
        &format!("/console/tokens/{owners}/roll"),
        &[("csrf", &csrf), ("overlap", "0")],
    )
    .await;
    assert_eq!(roll.status(), 403);
    assert_eq!(
        server
            .whoami(&[("apikey", owners_secret.as_str())])
            .await
            .status(),
        200,
        "the owner's token still works"
    );
}

async fn custom_roles_are_offered_to_who_holds_them_and_named_in_the_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    let role = |name: &str, permissions: &[&str]| {
        server.expect(
            201,
            reqwest::Method::POST,
            "/v1/roles",
            &server.token,
            Some(serde_json::json!({"name": name, "permissions": permissions})),
        )
    };
    let reader = role("Auditor", &["tokens:read", "audit:read"]).await;
    let reader = reader["id"].as_str().unwrap().to_owned();
    let writer = role("User manager", &["users:read", "users:write"]).await;
    let writer = writer["id"].as_str().unwrap().to_owned();

    let session = server.login(OWNER, &server.password).await;
    let form = page(&server, "/console/tokens/new", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    for (id, name) in [(&reader, "Auditor"), (&writer, "User manager")] {
        assert!(
            form.contains(&format!("<option value=\"{id}\">{name} (custom)</option>")),
            "the owner holds {name}'s permissions: {form}"
        );
    }
    let created = post_form(
        &server,
        &session,
        "/console/tokens/new",
        &[
            ("csrf", &csrf_of(&form)),
            ("kind", "service"),
            ("name", "audit export"),
            ("role", &reader),
            ("expiry", "never"),
        ],
    )
    .await;
    assert_eq!(created.status(), 200);
    let secret = secret_of(&created.text().await.unwrap());
    let whoami: serde_json::Value = server
        .whoami(&[("apikey", secret.as_str())])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        whoami["permissions"],
        serde_json::json!(["audit:read", "tokens:read"])
    );
    let table = page(&server, "/console/tokens", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        table.contains("<td>Auditor role</td>"),
        "named, not {reader}: {table}"
    );

    // A member holds every read and tokens:write, so Auditor, but not users:write.
    server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/users",
            &server.token,
            Some(serde_json::json!({
                "email": "member@example.com", "name": "Mia", "role": "member",
                "password": "correct horse battery staple"
            })),
        )
        .await;
    let member = server
        .login("member@example.com", "correct horse battery staple")
        .await;
    let form = page(&server, "/console/tokens/new", Some(&member))
        .await
        .text()
        .await
        .unwrap();
    assert!(form.contains(&format!("value=\"{reader}\"")));
    assert!(
        !form.contains(&writer),
        "a role beyond the member is not offered"
    );
}

async fn a_token_page_rolls_the_secret_with_an_overlap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, old) = service_token(&server, "deploy", "viewer").await;
    let session = server.login(OWNER, &server.password).await;
    let detail = page(&server, &format!("/console/tokens/{id}"), Some(&session)).await;
    assert_eq!(detail.status(), 200);
    assert_console_headers(detail.headers(), "token page");
    let detail = detail.text().await.unwrap();
    assert!(detail.contains("Roll") && detail.contains("Delete this token"));
    let csrf = csrf_of(&detail);
    let rolled = post_form(
        &server,
        &session,
        &format!("/console/tokens/{id}/roll"),
        &[("csrf", &csrf), ("overlap", "3600")],
    )
    .await;
    assert_eq!(rolled.status(), 200);
    assert_eq!(rolled.headers()["cache-control"], "no-store");
    let rolled = rolled.text().await.unwrap();
    assert!(rolled.contains("keeps working until"), "{rolled}");
    let new = secret_of(&rolled);
    assert_ne!(new, old);
    // In its overlap, the rolled token offers no second roll (it would be refused): it points
    // to its successor.
    let overlapping = page(&server, &format!("/console/tokens/{id}"), Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(!overlapping.contains("<h2>Roll</h2>"), "{overlapping}");
    assert!(
        overlapping.contains("the token that replaced it"),
        "{overlapping}"
    );
    for secret in [&old, &new] {
        assert_eq!(
            server.whoami(&[("apikey", secret.as_str())]).await.status(),
            200
        );
    }
    server.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(
        server.whoami(&[("apikey", old.as_str())]).await.status(),
        401
    );
    assert_eq!(
        server.whoami(&[("apikey", new.as_str())]).await.status(),
        200
    );
    let after = page(&server, &format!("/console/tokens/{id}"), Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(after.contains("Replaced by"));
    // Its networks and rate limit are shown, as set (here: none, so what applies).
    assert!(
        after.contains("<dd id=\"networks\">any (the organization"),
        "{after}"
    );
    assert!(
        after.contains("<dd id=\"rate-limit\">the deployment"),
        "{after}"
    );
    let limited = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/tokens",
            &server.token,
            Some(
                serde_json::json!({"kind": "service", "name": "pinned", "role": "viewer",
                "allowed_ips": ["203.0.113.0/24", "2001:db8::/32"],
                "rate_limit": {"requests": 100, "per_seconds": 60}}),
            ),
        )
        .await;
    let shown = page(
        &server,
        &format!("/console/tokens/{}", limited["id"].as_str().unwrap()),
        Some(&session),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        shown.contains("<dd id=\"networks\">203.0.113.0/24, 2001:db8::/32</dd>"),
        "{shown}"
    );
    assert!(
        shown.contains("<dd id=\"rate-limit\">100 requests per 60 seconds</dd>"),
        "{shown}"
    );
    // A console address that is no page is a page saying so, not the API's JSON.
    let nowhere = page(&server, "/console/nope", Some(&session)).await;
    assert_eq!(nowhere.status(), 404);
    assert_console_headers(nowhere.headers(), "no such page");
    assert!(
        nowhere.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let nowhere = nowhere.text().await.unwrap();
    assert!(nowhere.contains("<h1>Not found</h1>"), "{nowhere}");
    assert!(nowhere.contains("href=\"/console/\""), "{nowhere}");
}

/// Checks the page with axe-core, failing on serious or critical violations, and saves its
/// screenshot as `name.png` in `shots`.
pub(crate) async fn audit(
    browser: &Browser,
    axe: Option<&str>,
    shots: &std::path::Path,
    name: &str,
) {
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(shots.join(format!("{name}.png")), png).unwrap();
    let Some(axe) = axe else {
        return;
    };
    browser.client.execute(axe, vec![]).await.unwrap();
    let found = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then((results) => done(
               results.violations
                 .filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target).join(', ')}`)));",
            vec![],
        )
        .await
        .unwrap();
    let violations: Vec<String> = serde_json::from_value(found).unwrap();
    assert!(violations.is_empty(), "{name}: {violations:#?}");
}

#[tokio::test]
async fn in_a_browser_a_person_signs_in_adds_a_token_and_uses_it() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let client = &browser.client;

    client.goto(&format!("{}/", server.base)).await.unwrap();
    browser.find("#email").await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/sign-in")
    );
    audit(&browser, axe, &shots, "sign-in").await;
    sign_in(&browser, OWNER, &server.password).await;
    browser.find("a.button[href='/console/tokens/new']").await;
    audit(&browser, axe, &shots, "tokens").await;
    browser.click("a.button[href='/console/tokens/new']").await;
    browser
        .find("#name")
        .await
        .send_keys("Laptop")
        .await
        .unwrap();
    browser
        .find("#description")
        .await
        .send_keys("my dev machine")
        .await
        .unwrap();
    browser.click("input[value='tokens:read']").await;
    browser.click("input[value='users:read']").await;
    browser
        .find("#expiry")
        .await
        .select_by_value("7")
        .await
        .unwrap();
    audit(&browser, axe, &shots, "add-token").await;
    browser.click("main form button[type=submit]").await;

    let secret = browser.find("#secret").await.text().await.unwrap();
    assert!(
        browser
            .find("button[data-copy=secret]")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "the script shows the Copy button"
    );
    audit(&browser, axe, &shots, "token-created").await;
    let whoami = server
        .whoami(&[("authorization", &format!("Bearer {}", secret.trim()))])
        .await;
    assert_eq!(whoami.status(), 200, "the secret read off the page works");
    let whoami: serde_json::Value = whoami.json().await.unwrap();
    assert_eq!(whoami["permissions"].as_array().unwrap().len(), 2);

    client
        .goto(&format!("{}/console/tokens", server.base))
        .await
        .unwrap();
    let row = browser.find("tbody tr").await.text().await.unwrap();
    assert!(row.contains("Laptop") && row.contains("Personal"), "{row}");
    audit(&browser, axe, &shots, "tokens-after").await;
    // The README's picture of the console is this page, remade with `README_SCREENSHOT=1`.
    if std::env::var_os("README_SCREENSHOT").is_some() {
        client.set_window_size(1280, 720).await.unwrap();
        let png = client.screenshot().await.unwrap();
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::write(docs.join("console-tokens.png"), png).unwrap();
        client.set_window_size(1280, 2000).await.unwrap();
    }

    // A key reported as leaked, so the keys page shows one in its list.
    let leaked = server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/account/keys",
            &server.token,
            None,
        )
        .await;
    let revoked = server
        .post("/v1/credentials/revoke")
        .json(&serde_json::json!({"credentials": [leaked["key"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 202);
    for (path, name) in [
        ("/console/account/keys", "account-keys"),
        ("/console/account/ip-restriction", "ip-restriction"),
    ] {
        client
            .goto(&format!("{}{path}", server.base))
            .await
            .unwrap();
        browser.find("main h1").await;
        audit(&browser, axe, &shots, name).await;
    }
    client
        .goto(&format!("{}/console/account/keys", server.base))
        .await
        .unwrap();
    let table = browser.find("main table").await.text().await.unwrap();
    assert!(table.contains("reported as leaked"), "{table}");
    client
        .goto(&format!("{}/console/tokens", server.base))
        .await
        .unwrap();
    browser.click("a[href^='/console/tokens/tok_']").await;
    browser.find("#overlap").await;
    audit(&browser, axe, &shots, "token").await;
}

/// Fills in the sign-in form on the page the browser shows and sends it.
pub(crate) async fn sign_in(browser: &Browser, email: &str, password: &str) {
    browser.find("#email").await.send_keys(email).await.unwrap();
    browser
        .find("#password")
        .await
        .send_keys(password)
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
}

/// The browser's start for a test of its own: axe-core (when installed), a folder for the
/// screenshots, and a server.
pub(crate) async fn browser_session(
    prefix: &str,
) -> Option<(Browser, Option<String>, std::path::PathBuf)> {
    let browser = Browser::start().await?;
    let axe = crate::tools::tool("axe-core/node_modules/axe-core/axe.min.js")
        .map(|path| std::fs::read_to_string(path).unwrap());
    let shots = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("console screenshots in {}", shots.display());
    Some((browser, axe, shots))
}

/// The secret the page shows once, read as a person reads it.
pub(crate) async fn secret_on_page(browser: &Browser) -> String {
    browser
        .find("#secret")
        .await
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) async fn whoami_status(server: &TestServer, secret: &str) -> u16 {
    server
        .whoami(&[("authorization", &format!("Bearer {secret}"))])
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn in_a_browser_tokens_are_deleted_and_rolled_keys_made_and_a_lock_out_refused() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-manage-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let client = &browser.client;
    let go = |path: &str| {
        let url = format!("{}{path}", server.base);
        async move { client.goto(&url).await }
    };

    go("/console/sign-in").await.unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.find("a.button[href='/console/tokens/new']").await;

    // A service token, made by clicking.
    browser.click("a.button[href='/console/tokens/new']").await;
    browser
        .find("#name")
        .await
        .send_keys("CI deploy")
        .await
        .unwrap();
    browser.click("input[name=kind][value=service]").await;
    browser
        .find("#role")
        .await
        .select_by_value("member")
        .await
        .unwrap();
    browser
        .find("#expiry")
        .await
        .select_by_value("never")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let deploy = secret_on_page(&browser).await;
    assert_eq!(whoami_status(&server, &deploy).await, 200);

    // Delete selected: two of three, asked first, refused at once after.
    let (first, first_secret) = service_token(&server, "nightly export", "viewer").await;
    let (second, second_secret) = service_token(&server, "old laptop", "viewer").await;
    go("/console/tokens").await.unwrap();
    browser
        .click(&format!("input[name=id][value='{first}']"))
        .await;
    browser
        .click(&format!("input[name=id][value='{second}']"))
        .await;
    browser
        .click("form[action='/console/tokens/delete'] button[type=submit]")
        .await;
    // Only the confirmation page has the `confirm` field; waiting for it waits for the page.
    browser.find("input[name=confirm]").await;
    let asked = browser.find("main h1").await.text().await.unwrap();
    assert_eq!(asked, "Delete 2 tokens?");
    audit(&browser, axe, &shots, "delete-selected").await;
    assert_eq!(
        whoami_status(&server, &first_secret).await,
        200,
        "asking changes nothing"
    );
    browser.click("main form button.danger").await;
    let done = browser
        .find("main [role=status]")
        .await
        .text()
        .await
        .unwrap();
    assert!(done.contains("no longer work"), "{done}");
    audit(&browser, axe, &shots, "deleted").await;
    for secret in [&first_secret, &second_secret] {
        assert_eq!(whoami_status(&server, secret).await, 401, "refused at once");
    }
    assert_eq!(
        whoami_status(&server, &deploy).await,
        200,
        "the third is untouched"
    );

    // Roll: the new secret shown once, and both work during the overlap. The one active token
    // left is the service token made above.
    go("/console/tokens?status=active").await.unwrap();
    browser.click("a[href^='/console/tokens/tok_']").await;
    browser
        .find("#overlap")
        .await
        .select_by_value("3600")
        .await
        .unwrap();
    browser
        .click("form[action$='/roll'] button[type=submit]")
        .await;
    let rolled = secret_on_page(&browser).await;
    let until = browser.find("#previous-until").await;
    assert!(until.text().await.unwrap().ends_with("UTC"));
    audit(&browser, axe, &shots, "rolled").await;
    assert_ne!(rolled, deploy);
    assert_eq!(
        whoami_status(&server, &deploy).await,
        200,
        "the old one, in the overlap"
    );
    assert_eq!(whoami_status(&server, &rolled).await, 200, "the new one");

    // Account keys: with one already there, a second made and used, the limit explained, then
    // deleted after asking.
    server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/account/keys",
            &server.token,
            None,
        )
        .await;
    go("/console/account/keys").await.unwrap();
    assert_eq!(
        browser
            .find("form[action='/console/account/keys'] button")
            .await
            .text()
            .await
            .unwrap(),
        "Create second key"
    );
    browser
        .click("form[action='/console/account/keys'] button")
        .await;
    let key = secret_on_page(&browser).await;
    assert_eq!(whoami_status(&server, &key).await, 200);
    go("/console/account/keys").await.unwrap();
    assert!(
        browser
            .find("#key-limit")
            .await
            .text()
            .await
            .unwrap()
            .contains("at most two")
    );
    let hint = &key[key.len() - 4..];
    browser
        .click(&format!(
            "button[aria-label='Delete the key ending in …{hint}']"
        ))
        .await;
    browser.find("input[name=confirm]").await;
    audit(&browser, axe, &shots, "key-delete").await;
    browser.click("main form button.danger").await;
    browser
        .find("form[action='/console/account/keys'] button")
        .await;
    assert_eq!(
        whoami_status(&server, &key).await,
        401,
        "the deleted key stops"
    );

    // IP restriction: a list that leaves the browser out is refused with its reason; one that
    // covers it is saved.
    go("/console/account/ip-restriction").await.unwrap();
    let address = browser
        .find("main p strong code")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(address, "127.0.0.1");
    browser.click("input[name=enabled]").await;
    browser
        .find("#allowlist")
        .await
        .send_keys("10.0.0.0/8")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let refused = browser.find("#allowlist-error").await.text().await.unwrap();
    assert!(
        refused.contains("does not cover your own address 127.0.0.1"),
        "{refused}"
    );
    audit(&browser, axe, &shots, "ip-lock-out").await;
    let restriction = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(
        restriction["enabled"], false,
        "a refused save changes nothing"
    );
    browser.find("#allowlist").await.clear().await.unwrap();
    browser
        .find("#allowlist")
        .await
        .send_keys("127.0.0.0/8\n10.0.0.0/8")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let saved = browser.find("main p.notice").await.text().await.unwrap();
    assert!(saved.starts_with("Saved"), "{saved}");
    audit(&browser, axe, &shots, "ip-saved").await;

    // A member sees the owner's service token without a way to delete it, and a post crafted in
    // the page for it is refused.
    server
        .expect(
            201,
            reqwest::Method::POST,
            "/v1/users",
            &server.token,
            Some(serde_json::json!({
                "email": "member@example.com", "name": "Mia", "role": "member",
                "password": "correct horse battery staple"
            })),
        )
        .await;
    let (owners, owners_secret) = service_token(&server, "owner automation", "owner").await;
    browser.click("header form button").await;
    sign_in(
        &browser,
        "member@example.com",
        "correct horse battery staple",
    )
    .await;
    browser.find(&format!("tr[id='{owners}']")).await;
    assert!(
        client
            .find_all(fantoccini::Locator::Css(&format!(
                "input[value='{owners}']"
            )))
            .await
            .unwrap()
            .is_empty(),
        "no checkbox for the owner's token"
    );
    go(&format!("/console/tokens/{owners}")).await.unwrap();
    browser.find("dl.details").await;
    assert!(
        client
            .find_all(fantoccini::Locator::Css("button.danger"))
            .await
            .unwrap()
            .is_empty(),
        "no Delete on the owner's token's page"
    );
    let why = browser.find("#why-no-actions").await.text().await.unwrap();
    assert!(why.contains("every permission the token holds"), "{why}");
    audit(&browser, axe, &shots, "member-token").await;
    let crafted = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value,
                                               confirm: 'yes', id: arguments[0]});
             fetch('/console/tokens/delete', {method: 'POST', body}).then((r) => done(r.status));",
            vec![serde_json::json!(owners)],
        )
        .await
        .unwrap();
    assert_eq!(crafted, 403);
    assert_eq!(whoami_status(&server, &owners_secret).await, 200);
}

async fn account_keys_are_created_shown_once_limited_to_two_and_deleted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let html = page(&server, "/console/account/keys", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("no account key") && html.contains("Create a key"));
    let csrf = csrf_of(&html);
    let mut secrets = Vec::new();
    for _ in 0..2 {
        let created = post_form(
            &server,
            &session,
            "/console/account/keys",
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(created.status(), 200);
        assert_eq!(created.headers()["cache-control"], "no-store");
        let created = created.text().await.unwrap();
        assert!(created.contains("you will not see it again"));
        let secret = secret_of(&created);
        assert_eq!(
            server.whoami(&[("apikey", secret.as_str())]).await.status(),
            200
        );
        secrets.push(secret);
    }
    let full = page(&server, "/console/account/keys", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        full.contains("id=\"key-limit\""),
        "the limit explained in place"
    );
    assert!(!full.contains("Create second key"));
    for secret in &secrets {
        assert!(!full.contains(secret.as_str()), "never shown again");
    }
    // Newest first, as the API lists them, and the table says so (it said oldest first).
    assert!(full.contains("Account keys, newest first"), "{full}");
    let hint_at = |secret: &str| {
        let shown = format!("{}</code>", &secret[secret.len() - 4..]);
        full.find(&shown).unwrap()
    };
    assert!(hint_at(&secrets[1]) < hint_at(&secrets[0]), "{full}");
    // A third is refused with the limit's message, even posted by hand.
    let third = post_form(
        &server,
        &session,
        "/console/account/keys",
        &[("csrf", &csrf)],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(third.contains("already has 2 keys"), "{third}");

    let keys = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/account/keys",
            &server.token,
            None,
        )
        .await;
    // Newest first: the first key made is the last listed.
    let first = keys["data"][1]["id"].as_str().unwrap().to_owned();
    let path = format!("/console/account/keys/{first}/delete");
    let asked = post_form(&server, &session, &path, &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    assert!(asked.contains("stops working at once"));
    assert_eq!(
        server
            .whoami(&[("apikey", secrets[0].as_str())])
            .await
            .status(),
        200
    );
    let done = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        server
            .whoami(&[("apikey", secrets[0].as_str())])
            .await
            .status(),
        401
    );
    assert_eq!(
        server
            .whoami(&[("apikey", secrets[1].as_str())])
            .await
            .status(),
        200
    );
}

async fn the_ip_restriction_form_shows_the_address_and_refuses_a_lock_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let html = page(&server, "/console/account/ip-restriction", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<code>127.0.0.1</code>"),
        "the address keygate sees"
    );
    let csrf = csrf_of(&html);
    let path = "/console/account/ip-restriction";
    let locked = post_form(
        &server,
        &session,
        path,
        &[
            ("csrf", &csrf),
            ("enabled", "on"),
            ("allowlist", "10.0.0.0/8"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(locked.contains("role=\"alert\""), "{locked}");
    assert!(locked.contains("10.0.0.0/8"), "what was typed is kept");
    let bad = post_form(
        &server,
        &session,
        path,
        &[
            ("csrf", &csrf),
            ("enabled", "on"),
            ("allowlist", "127.0.0.1\nnot-a-network"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(bad.contains("Line 2:"), "{bad}");
    let stored = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["enabled"], false, "refused forms changed nothing");

    let saved = post_form(
        &server,
        &session,
        path,
        &[
            ("csrf", &csrf),
            ("enabled", "on"),
            ("allowlist", "127.0.0.1\n10.1.2.3/8"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(saved.contains("Saved: only these networks"), "{saved}");
    assert!(saved.contains("10.0.0.0/8"), "normalised: {saved}");
    let stored = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/account/ip-restriction",
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["enabled"], true);
}

/// The one-time value of the page's creating form.
pub(crate) fn once_of(html: &str) -> String {
    hidden_of(html, "once")
}

/// A reload of the page that answered a creating form makes the browser send the form again, as
/// does a second click. keygate acts on it once: the second answer says so, points to what was
/// made, and makes nothing (a token, a key, a user, a password, a sub-customer, a client or its
/// secret) a second time, so the secret shown the first time stays the one that works. A new page
/// of the form is a new form.
async fn a_creating_form_sent_again_is_not_acted_on_twice(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let count = |path: &'static str| {
        let server = &server;
        async move {
            server
                .expect(200, reqwest::Method::GET, path, &server.token, None)
                .await["data"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    // Opens the form's page, sends its form twice and returns both answers (status, page).
    let twice = |form_page: String, action: String, fields: Vec<(&'static str, String)>| {
        let server = &server;
        let session = &session;
        async move {
            let html = page(server, &form_page, Some(session))
                .await
                .text()
                .await
                .unwrap();
            let mut form = vec![("csrf", csrf_of(&html)), ("once", once_of(&html))];
            form.extend(fields);
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut answers = Vec::new();
            for _ in 0..2 {
                let response = post_form(server, session, &action, &form).await;
                let status = response.status().as_u16();
                assert_console_headers(response.headers(), &action);
                answers.push((status, response.text().await.unwrap()));
            }
            (html, answers.remove(0), answers.remove(0))
        }
    };
    let already = |(status, html): &(u16, String), back: &str| {
        assert_eq!(*status, 409, "{html}");
        assert!(html.contains("Already done"), "{html}");
        assert!(html.contains(&format!("href=\"{back}\"")), "{back}: {html}");
        assert!(!html.contains("id=\"secret\""), "no secret the second time");
    };

    // A token: one made, and its secret works.
    let tokens = count("/v1/tokens").await;
    let fields = vec![
        ("kind", "personal".to_owned()),
        ("name", "Once".to_owned()),
        ("expiry", "7".to_owned()),
    ];
    let (form_html, first, second) = twice(
        "/console/tokens/new".into(),
        "/console/tokens/new".into(),
        fields.clone(),
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, "/console/tokens");
    assert_eq!(count("/v1/tokens").await, tokens + 1);
    assert_eq!(whoami_status(&server, &secret_of(&first.1)).await, 200);
    // Another page of the form is another form, acted on.
    let (again_html, third, _) = twice(
        "/console/tokens/new".into(),
        "/console/tokens/new".into(),
        fields,
    )
    .await;
    assert_ne!(once_of(&form_html), once_of(&again_html));
    assert_eq!(third.0, 200);
    assert_eq!(count("/v1/tokens").await, tokens + 2);

    // An account key.
    let (_, first, second) = twice(
        "/console/account/keys".into(),
        "/console/account/keys".into(),
        Vec::new(),
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, "/console/account/keys");
    assert_eq!(count("/v1/account/keys").await, 1);

    // A user, then a new password for them: the one shown first is the one that works.
    let users = count("/v1/users").await;
    let (_, first, second) = twice(
        "/console/users/new".into(),
        "/console/users/new".into(),
        vec![
            ("email", "nia@example.com".to_owned()),
            ("name", "Nia".to_owned()),
            ("role", "member".to_owned()),
        ],
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, "/console/users");
    assert_eq!(count("/v1/users").await, users + 1);
    let listed = server
        .expect(200, reqwest::Method::GET, "/v1/users", &server.token, None)
        .await;
    let nia = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "nia@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/console/users/{nia}");
    let (_, first, second) = twice(
        path.clone(),
        path.clone(),
        vec![("password", "new".to_owned())],
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, &path);
    server.login("nia@example.com", &secret_of(&first.1)).await;

    // A sub-customer.
    let tenants = count("/v1/tenants").await;
    let (_, first, second) = twice(
        "/console/tenants/new".into(),
        "/console/tenants/new".into(),
        vec![
            ("name", "Once Ltd".to_owned()),
            ("email", "ops@once.example".to_owned()),
            ("user_name", "Ops".to_owned()),
        ],
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, "/console/tenants");
    assert_eq!(count("/v1/tenants").await, tenants + 1);

    // An OAuth client, then a new secret for it.
    let (_, first, second) = twice(
        "/console/oauth/clients/new".into(),
        "/console/oauth/clients/new".into(),
        vec![
            ("name", "Billing sync".to_owned()),
            ("role", "viewer".to_owned()),
        ],
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, "/console/oauth/clients");
    let clients = server
        .expect(
            200,
            reqwest::Method::GET,
            "/v1/oauth/clients",
            &server.token,
            None,
        )
        .await;
    let clients = clients["data"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    let client = clients[0]["client_id"].as_str().unwrap();
    let path = format!("/console/oauth/clients/{client}");
    let (_, first, second) = twice(
        path.clone(),
        format!("{path}/roll"),
        vec![("overlap", "0".to_owned())],
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    already(&second, &path);
    let issued = server
        .post("/v1/oauth/token")
        .basic_auth(client, Some(secret_of(&first.1)))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 200, "the secret shown first works");
}

/// A refusal (a page or object not there, a form refused, a form sent twice) shown to a signed-in
/// person keeps the console's navigation and who is signed in, so they go on from there; its
/// status is the refusal's. A visitor without a session is still sent to sign in.
async fn a_refusal_to_a_signed_in_person_keeps_the_console_around_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let framed =
        |html: &str| html.contains("<nav aria-label=\"Console\">") && html.contains("Signed in as");
    let missing = page(
        &server,
        "/console/tokens/tok_0MqX1z8a9bCdEfGhIjKlMn",
        Some(&session),
    )
    .await;
    assert_eq!(missing.status(), 404);
    assert_console_headers(missing.headers(), "a missing token");
    let missing = missing.text().await.unwrap();
    assert!(framed(&missing), "{missing}");
    assert!(missing.contains("There is no such token"), "{missing}");

    let forged = post_form(
        &server,
        &session,
        "/console/tokens/new",
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert!(framed(&forged.text().await.unwrap()));

    let form = page(&server, "/console/tokens/new", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    let (csrf, once) = (csrf_of(&form), once_of(&form));
    let fields = [
        ("csrf", csrf.as_str()),
        ("once", once.as_str()),
        ("kind", "personal"),
        ("name", "twice"),
        ("expiry", "7"),
    ];
    assert_eq!(
        post_form(&server, &session, "/console/tokens/new", &fields)
            .await
            .status(),
        200
    );
    let again = post_form(&server, &session, "/console/tokens/new", &fields).await;
    assert_eq!(again.status(), 409);
    let again = again.text().await.unwrap();
    assert!(framed(&again) && again.contains("Already done"), "{again}");

    let visitor = page(&server, "/console/tokens/tok_0MqX1z8a9bCdEfGhIjKlMn", None).await;
    assert_eq!(visitor.status(), 303);
    let stale = page(
        &server,
        "/console/tokens/tok_0MqX1z8a9bCdEfGhIjKlMn",
        Some("not-a-session"),
    )
    .await;
    assert_eq!(
        stale.status(),
        303,
        "a session that is not one is sent to sign in"
    );
}
