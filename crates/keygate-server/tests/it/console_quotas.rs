//! Quotas in the console (API.md §11, §13): a token's page and a sub-customer's page show the
//! quota in place and, to a person who may set it, a form that sets, changes and removes it, as
//! `PUT …/quota` does; bad input is said beside its field and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, csrf_of, page, person, post_form, service_token,
};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    a_token_page_sets_changes_and_removes_its_quota,
    a_viewer_sees_a_tokens_quota_but_cannot_set_it,
    a_sub_customers_pool_is_set_from_its_page_and_never_by_itself,
    an_oauth_clients_page_sets_the_quota_its_access_tokens_spend,
    a_token_added_with_a_quota_has_it_and_a_bad_one_adds_nothing,
    an_oauth_client_added_with_a_quota_has_it,
);

async fn text(server: &TestServer, session: &str, path: &str) -> String {
    let shown = page(server, path, Some(session)).await;
    assert_eq!(shown.status(), 200, "{path}");
    assert_console_headers(shown.headers(), path);
    shown.text().await.unwrap()
}

/// Sends the quota form of the page at `path` with `fields`; the status and the page.
async fn send(
    server: &TestServer,
    session: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let csrf = csrf_of(&text(server, session, path).await);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let answer = post_form(server, session, &format!("{path}/quota"), &form).await;
    let status = answer.status().as_u16();
    assert_console_headers(answer.headers(), path);
    (status, answer.text().await.unwrap())
}

async fn token_quota(server: &TestServer, id: &str) -> Value {
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tokens/{id}"),
            &server.token,
            None,
        )
        .await["quota"]
        .clone()
}

async fn a_token_page_sets_changes_and_removes_its_quota(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, secret) = service_token(&server, "billing", "viewer").await;
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/tokens/{id}");
    let shown = text(&server, &session, &path).await;
    assert!(shown.contains("id=\"quota-none\""), "{shown}");
    assert!(shown.contains("Set quota"), "{shown}");

    let (status, set) = send(
        &server,
        &session,
        &path,
        &[("limit", "1,000"), ("period", "day")],
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert!(
        set.contains("Quota set: 1000 requests a day. 0 used so far."),
        "{set}"
    );
    assert!(set.contains("0 of 1000 requests used today"), "{set}");
    let quota = token_quota(&server, &id).await;
    assert_eq!(quota["limit"], 1000);
    assert_eq!(quota["period"], "day");

    // Three requests spent; changing the number alone goes on counting them.
    for _ in 0..3 {
        let checked = server
            .get("/v1/forward-auth")
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(checked.status(), 200);
    }
    let (status, changed) = send(
        &server,
        &session,
        &path,
        &[("limit", "2000"), ("period", "day")],
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert!(changed.contains("3 used so far"), "{changed}");
    let quota = token_quota(&server, &id).await;
    assert_eq!(
        (quota["limit"].as_u64(), quota["used"].as_u64()),
        (Some(2000), Some(3))
    );

    // Bad input is said beside its field, keeps what was typed, and changes nothing.
    for (limit, period, field) in [
        ("lots", "day", "quota-limit-error"),
        ("0", "day", "quota-limit-error"),
        ("10", "fortnight", "quota-period-error"),
    ] {
        let (status, refused) = send(
            &server,
            &session,
            &path,
            &[("limit", limit), ("period", period)],
        )
        .await;
        assert_eq!(status, 400, "{limit} {period}: {refused}");
        assert!(refused.contains(&format!("id=\"{field}\"")), "{refused}");
        assert!(
            refused.contains(&format!("value=\"{limit}\"")),
            "kept: {refused}"
        );
        assert!(refused.contains("aria-invalid=\"true\""));
    }
    assert_eq!(token_quota(&server, &id).await["limit"], 2000, "unchanged");

    let (status, removed) = send(&server, &session, &path, &[("remove", "yes")]).await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed.contains("Quota removed"), "{removed}");
    assert!(removed.contains("id=\"quota-none\""), "{removed}");
    assert_eq!(token_quota(&server, &id).await, Value::Null);
}

async fn a_viewer_sees_a_tokens_quota_but_cannot_set_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = service_token(&server, "billing", "viewer").await;
    server
        .expect(
            200,
            Method::PUT,
            &format!("/v1/tokens/{id}/quota"),
            &server.token,
            Some(json!({"limit": 500, "period": "month"})),
        )
        .await;
    let viewer = person(&server, "viewer@example.com", "viewer").await;
    let path = format!("/console/tokens/{id}");
    let shown = text(&server, &viewer, &path).await;
    assert!(
        shown.contains("0 of 500 requests used this month"),
        "{shown}"
    );
    assert!(
        !shown.contains("quota-limit"),
        "no form for a viewer: {shown}"
    );
    let csrf = csrf_of(&shown);
    let refused = post_form(
        &server,
        &viewer,
        &format!("{path}/quota"),
        &[("csrf", &csrf), ("remove", "yes")],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(token_quota(&server, &id).await["limit"], 500, "untouched");
}

async fn a_sub_customers_pool_is_set_from_its_page_and_never_by_itself(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Acme", "slug": "acme", "first_user": {
                "email": "owner@acme.example", "name": "Ana",
                "password": "correct horse battery staple"
            }})),
        )
        .await["tenant"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/tenants/{acme}");
    let shown = text(&server, &session, &path).await;
    assert!(shown.contains("what you sell it"), "{shown}");
    let (status, set) = send(
        &server,
        &session,
        &path,
        &[("limit", "5000000"), ("period", "month")],
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert!(
        set.contains("Quota set: 5000000 requests a month."),
        "{set}"
    );
    let stored = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tenants/{acme}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["quota"]["limit"], 5_000_000, "{stored}");

    // Acme's owner sees its pool on its own page, and cannot set it.
    let theirs = server
        .login("owner@acme.example", "correct horse battery staple")
        .await;
    let own = text(&server, &theirs, &path).await;
    assert!(
        own.contains("0 of 5000000 requests used this month"),
        "{own}"
    );
    assert!(
        !own.contains("quota-limit"),
        "no form on its own page: {own}"
    );
    let csrf = csrf_of(&own);
    let refused = post_form(
        &server,
        &theirs,
        &format!("{path}/quota"),
        &[("csrf", &csrf), ("limit", "99999999"), ("period", "month")],
    )
    .await;
    assert_eq!(refused.status(), 403);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("set by a tenant above it"), "{refused}");
    let stored = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/tenants/{acme}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(stored["quota"]["limit"], 5_000_000, "untouched");
}

async fn an_oauth_clients_page_sets_the_quota_its_access_tokens_spend(backend: Backend) {
    let server = TestServer::start(backend).await;
    let client = server
        .expect(
            201,
            Method::POST,
            "/v1/oauth/clients",
            &server.token,
            Some(json!({"name": "sync", "role": "viewer"})),
        )
        .await;
    let id = client["client_id"].as_str().unwrap();
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/oauth/clients/{id}");
    let (status, set) = send(
        &server,
        &session,
        &path,
        &[("limit", "1"), ("period", "total")],
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert!(set.contains("Quota set: 1 request in all."), "{set}");
    assert!(set.contains("it never refills"), "{set}");
    // Its access tokens spend it: one request, then 429.
    let issued: Value = server
        .post("/v1/oauth/token")
        .basic_auth(id, Some(client["client_secret"].as_str().unwrap()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = issued["access_token"].as_str().unwrap();
    let check = || server.get("/v1/forward-auth").bearer_auth(access).send();
    assert_eq!(check().await.unwrap().status(), 200);
    assert_eq!(check().await.unwrap().status(), 429);
    let shown = text(&server, &session, &path).await;
    assert!(shown.contains("None left"), "{shown}");
}

async fn a_token_added_with_a_quota_has_it_and_a_bad_one_adds_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let tokens = || async {
        server
            .expect(200, Method::GET, "/v1/tokens", &server.token, None)
            .await["data"]
            .as_array()
            .unwrap()
            .clone()
    };
    let before = tokens().await.len();
    let add = |limit: &'static str, period: &'static str| {
        let server = &server;
        let session = &session;
        async move {
            let form = text(server, session, "/console/tokens/new").await;
            assert!(form.contains("id=\"quota_limit\""), "{form}");
            let csrf = csrf_of(&form);
            let answer = post_form(
                server,
                session,
                "/console/tokens/new",
                &[
                    ("csrf", csrf.as_str()),
                    ("kind", "service"),
                    ("name", "metered"),
                    ("role", "viewer"),
                    ("expiry", "never"),
                    ("quota_limit", limit),
                    ("quota_period", period),
                ],
            )
            .await;
            answer.text().await.unwrap()
        }
    };
    for (limit, period) in [("many", "day"), ("0", "day"), ("10", "fortnight")] {
        let refused = add(limit, period).await;
        assert!(
            refused.contains("id=\"quota-error\""),
            "{limit} {period}: {refused}"
        );
        assert!(
            refused.contains(&format!("value=\"{limit}\"")),
            "kept: {refused}"
        );
        assert_eq!(tokens().await.len(), before, "nothing added");
    }
    let made = add("2,500", "day").await;
    assert!(made.contains("id=\"secret\""), "{made}");
    let listed = tokens().await;
    let token = listed.iter().find(|t| t["name"] == "metered").unwrap();
    assert_eq!(token["quota"]["limit"], 2500, "{token}");
    assert_eq!(token["quota"]["period"], "day");
}

async fn an_oauth_client_added_with_a_quota_has_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let clients = || async {
        server
            .expect(200, Method::GET, "/v1/oauth/clients", &server.token, None)
            .await["data"]
            .as_array()
            .unwrap()
            .clone()
    };
    for (limit, period, made) in [
        ("lots", "hour", false),
        ("0", "hour", false),
        ("300", "hour", true),
    ] {
        let form = text(&server, &session, "/console/oauth/clients/new").await;
        let csrf = csrf_of(&form);
        let answer = post_form(
            &server,
            &session,
            "/console/oauth/clients/new",
            &[
                ("csrf", csrf.as_str()),
                ("name", "metered sync"),
                ("role", "viewer"),
                ("quota_limit", limit),
                ("quota_period", period),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
        assert_eq!(
            answer.contains("id=\"quota-error\""),
            !made,
            "{limit}: {answer}"
        );
        assert_eq!(clients().await.len(), usize::from(made), "{limit}");
    }
    let client = &clients().await[0];
    assert_eq!(client["quota"]["limit"], 300, "{client}");
    assert_eq!(client["quota"]["period"], "hour");
}
