//! The console's Users and Roles pages (API.md §3, §11): over HTTP on both stores, and in a
//! browser.

use reqwest::Method;
use serde_json::{Value, json};

use crate::console::{
    OWNER, assert_console_headers, audit, browser_session, csrf_of, page, post_form, secret_of,
    secret_on_page, sign_in, whoami_status,
};
use crate::harness::{Backend, TestServer};

on_every_backend!(
    the_users_list_shows_when_each_last_signed_in,
    user_and_role_forms_refuse_a_missing_csrf_token_and_change_nothing,
    a_person_adds_users_with_a_typed_or_a_generated_password,
    a_users_role_changes_and_a_disabled_user_cannot_sign_in_until_enabled,
    deleting_a_user_asks_then_stops_personal_tokens_and_keeps_service_tokens,
    a_role_made_in_the_matrix_grants_a_token_exactly_its_permissions,
    a_role_in_use_is_not_deleted_and_the_page_says_why,
    escalations_are_refused_with_a_message_and_change_nothing,
    a_member_sees_no_write_actions_and_crafted_posts_are_refused,
    a_user_who_lost_their_password_is_given_a_new_one_shown_once,
);

const PASSWORD: &str = "correct horse battery staple";

/// Creates a user through the API with a known password; returns their id.
async fn user(server: &TestServer, email: &str, name: &str, role: &str) -> String {
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/users",
            &server.token,
            Some(json!({"email": email, "name": name, "role": role, "password": PASSWORD})),
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn get_user(server: &TestServer, id: &str) -> Value {
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/users/{id}"),
            &server.token,
            None,
        )
        .await
}

async fn user_count(server: &TestServer) -> usize {
    server
        .expect(200, Method::GET, "/v1/users?limit=500", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .len()
}

/// Creates a custom role through the API; returns its id.
async fn role(server: &TestServer, name: &str, permissions: &[&str]) -> String {
    let created = server
        .expect(
            201,
            Method::POST,
            "/v1/roles",
            &server.token,
            Some(json!({"name": name, "permissions": permissions})),
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

/// The status of a sign-in with this email and password.
async fn login_status(server: &TestServer, email: &str, password: &str) -> u16 {
    server
        .post("/v1/auth/login")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn text(server: &TestServer, path: &str, session: &str) -> String {
    let response = page(server, path, Some(session)).await;
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

async fn user_and_role_forms_refuse_a_missing_csrf_token_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mia = user(&server, "mia@example.com", "Mia", "member").await;
    let deployer = role(&server, "deployer", &["tokens:read"]).await;
    let session = server.login(OWNER, &server.password).await;
    for path in [
        "/console/users".to_owned(),
        "/console/users/new".to_owned(),
        format!("/console/users/{mia}"),
        "/console/roles".to_owned(),
        "/console/roles/new".to_owned(),
        format!("/console/roles/{deployer}"),
    ] {
        let response = page(&server, &path, Some(&session)).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_console_headers(response.headers(), &path);
    }
    let users_before = user_count(&server).await;
    for (path, form) in [
        (
            "/console/users/new".to_owned(),
            vec![
                ("email", "eve@example.com"),
                ("name", "Eve"),
                ("role", "viewer"),
            ],
        ),
        (format!("/console/users/{mia}"), vec![("role", "viewer")]),
        (
            format!("/console/users/{mia}"),
            vec![("status", "disabled")],
        ),
        (
            format!("/console/users/{mia}/delete"),
            vec![("confirm", "yes")],
        ),
        (
            "/console/roles/new".to_owned(),
            vec![("name", "sneaky"), ("permission", "users:read")],
        ),
        (
            format!("/console/roles/{deployer}"),
            vec![("name", "renamed"), ("permission", "users:read")],
        ),
        (
            format!("/console/roles/{deployer}/delete"),
            vec![("confirm", "yes")],
        ),
    ] {
        let refused = post_form(&server, &session, &path, &form).await;
        assert_eq!(refused.status(), 403, "{path} without a CSRF token");
        assert_console_headers(refused.headers(), &path);
        let with_foreign = post_form(
            &server,
            &session,
            &path,
            &[
                form.clone(),
                vec![("csrf", "0123456789abcdef0123456789abcdef")],
            ]
            .concat(),
        )
        .await;
        assert_eq!(with_foreign.status(), 403, "{path} with a wrong CSRF token");
    }
    assert_eq!(user_count(&server).await, users_before, "no user added");
    let mia = get_user(&server, &mia).await;
    assert_eq!(mia["role"], "rol_member");
    assert_eq!(mia["status"], "active");
    let role = server
        .expect(
            200,
            Method::GET,
            &format!("/v1/roles/{deployer}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(role["name"], "deployer");
    assert_eq!(role["permissions"], json!(["tokens:read"]));
    let roles = server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await;
    assert!(
        !roles.to_string().contains("sneaky"),
        "no role made: {roles}"
    );
}

async fn the_users_list_shows_when_each_last_signed_in(backend: Backend) {
    let server = TestServer::start(backend).await;
    let id = user(&server, "ada@example.com", "Ada", "member").await;
    assert_eq!(get_user(&server, &id).await["last_sign_in_at"], Value::Null);
    let session = server.login(OWNER, &server.password).await;
    let list = text(&server, "/console/users", &session).await;
    let row = |html: &str| {
        let start = html.find("ada@example.com").expect("Ada's row");
        html[start..html[start..].find("</tr>").unwrap() + start].to_owned()
    };
    assert!(row(&list).contains(">never</td>"), "{}", row(&list));

    server.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(
        login_status(&server, "ada@example.com", PASSWORD).await,
        200
    );
    let signed_in = get_user(&server, &id).await["last_sign_in_at"].clone();
    assert_eq!(
        signed_in.as_str().map(str::len),
        Some("2026-11-18T12:06:00Z".len()),
        "a time: {signed_in}"
    );
    let list = text(&server, "/console/users", &session).await;
    let minute = &signed_in.as_str().unwrap()[..16].replace('T', " ");
    assert!(
        row(&list).contains(&format!(">{minute} UTC</td>")),
        "{}",
        row(&list)
    );
}

async fn a_person_adds_users_with_a_typed_or_a_generated_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let form = text(&server, "/console/users/new", &session).await;
    let csrf = csrf_of(&form);
    for role in ["owner", "admin", "member", "viewer"] {
        assert!(
            form.contains(&format!("<option value=\"{role}\"")),
            "{role}"
        );
    }

    // A typed password: no secret on the answer, and it signs in.
    let typed = post_form(
        &server,
        &session,
        "/console/users/new",
        &[
            ("csrf", &csrf),
            ("email", "ada@example.com"),
            ("name", "Ada"),
            ("role", "member"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(typed.status(), 200);
    assert_console_headers(typed.headers(), "user added");
    let typed = typed.text().await.unwrap();
    assert!(typed.contains("User ada@example.com added"), "{typed}");
    assert!(!typed.contains("id=\"secret\"") && !typed.contains(PASSWORD));
    assert_eq!(
        login_status(&server, "ada@example.com", PASSWORD).await,
        200
    );

    // None typed: a long random one, shown once, that signs in.
    let generated = post_form(
        &server,
        &session,
        "/console/users/new",
        &[
            ("csrf", &csrf),
            ("email", "bob@example.com"),
            ("name", "Bob"),
            ("role", "viewer"),
            ("password", ""),
        ],
    )
    .await;
    assert_eq!(generated.status(), 200);
    assert_eq!(generated.headers()["cache-control"], "no-store");
    let generated = generated.text().await.unwrap();
    assert!(
        generated.contains("you will not see it again"),
        "{generated}"
    );
    let password = secret_of(&generated);
    assert!(password.len() >= 20, "long: {password}");
    assert_eq!(
        login_status(&server, "bob@example.com", &password).await,
        200
    );

    // The table: email, name, role by name, status, created.
    let list = text(&server, "/console/users", &session).await;
    for expected in [
        "ada@example.com",
        "Ada",
        "bob@example.com",
        "Bob",
        "member",
        "viewer",
    ] {
        assert!(list.contains(expected), "{expected} in the list");
    }
    assert!(list.contains("Active") && list.contains("UTC"));
    assert!(list.contains("href=\"/console/users/new\""), "Add user");
    // A custom role shows by its name.
    let deployer = role(&server, "deployer", &["tokens:read"]).await;
    user(&server, "dee@example.com", "Dee", &deployer).await;
    let list = text(&server, "/console/users", &session).await;
    assert!(list.contains("<td>deployer</td>"), "{list}");

    // Bad input: messages beside the fields, the values kept, nothing added.
    let before = user_count(&server).await;
    let bad = post_form(
        &server,
        &session,
        "/console/users/new",
        &[
            ("csrf", &csrf),
            ("email", "not an email"),
            ("name", "Cy"),
            ("role", "member"),
            ("password", "short"),
        ],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let bad = bad.text().await.unwrap();
    assert!(bad.contains("id=\"email-error\""), "{bad}");
    assert!(bad.contains("id=\"password-error\""), "{bad}");
    assert!(bad.contains("value=\"Cy\""), "the name kept");
    assert!(
        !bad.contains("value=\"short\""),
        "the password is not sent back"
    );
    let taken = post_form(
        &server,
        &session,
        "/console/users/new",
        &[
            ("csrf", &csrf),
            ("email", "ADA@example.com"),
            ("name", "Ada again"),
            ("role", "member"),
        ],
    )
    .await;
    assert_eq!(taken.status(), 409);
    let taken = taken.text().await.unwrap();
    assert!(
        taken.contains("id=\"email-error\">is already taken"),
        "{taken}"
    );
    assert_eq!(user_count(&server).await, before);
}

async fn a_users_role_changes_and_a_disabled_user_cannot_sign_in_until_enabled(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mia = user(&server, "mia@example.com", "Mia", "member").await;
    let mias = server.login("mia@example.com", PASSWORD).await;
    let mias_cookie = format!("keygate_session={mias}");
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/users/{mia}");
    let html = text(&server, &path, &session).await;
    assert!(html.contains("Change role") && html.contains("Disable Mia"));
    let csrf = csrf_of(&html);

    let changed = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("role", "viewer")],
    )
    .await;
    assert_eq!(changed.status(), 200);
    let changed = changed.text().await.unwrap();
    assert!(
        changed.contains("role is now viewer, from their next request"),
        "{changed}"
    );
    assert_eq!(get_user(&server, &mia).await["role"], "rol_viewer");
    let whoami: Value = server
        .whoami(&[("cookie", &mias_cookie)])
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !whoami["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tokens:write")),
        "a viewer from the next request"
    );

    let disabled = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("status", "disabled")],
    )
    .await;
    assert_eq!(disabled.status(), 200);
    let disabled = disabled.text().await.unwrap();
    assert!(disabled.contains("Mia is disabled"), "{disabled}");
    assert!(disabled.contains("Enable Mia"), "the way back");
    assert_eq!(get_user(&server, &mia).await["status"], "disabled");
    assert_eq!(
        login_status(&server, "mia@example.com", PASSWORD).await,
        401
    );
    assert_eq!(
        server.whoami(&[("cookie", &mias_cookie)]).await.status(),
        401,
        "her session stops at once"
    );

    let enabled = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("status", "active")],
    )
    .await;
    assert_eq!(enabled.status(), 200);
    assert!(
        enabled
            .text()
            .await
            .unwrap()
            .contains("Mia is active again")
    );
    assert_eq!(
        login_status(&server, "mia@example.com", PASSWORD).await,
        200
    );

    // A role that is not offered is a message, and changes nothing.
    let unknown = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("role", "rol_0000000000000000000000")],
    )
    .await;
    assert_eq!(unknown.status(), 400);
    let page = unknown.text().await.unwrap();
    assert!(page.contains("Nothing was changed"), "{page}");
    assert!(page.contains("there is no role"), "{page}");
    assert_eq!(get_user(&server, &mia).await["role"], "rol_viewer");
}

async fn deleting_a_user_asks_then_stops_personal_tokens_and_keeps_service_tokens(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mia = user(&server, "mia@example.com", "Mia", "member").await;
    let mias = server.login("mia@example.com", PASSWORD).await;
    let form = text(&server, "/console/tokens/new", &mias).await;
    let csrf = csrf_of(&form);
    let mut made = Vec::new();
    for (kind, name, expiry) in [
        ("personal", "laptop", "7"),
        ("service", "backup job", "never"),
    ] {
        let created = post_form(
            &server,
            &mias,
            "/console/tokens/new",
            &[
                ("csrf", &csrf),
                ("kind", kind),
                ("name", name),
                ("role", "viewer"),
                ("expiry", expiry),
            ],
        )
        .await;
        assert_eq!(created.status(), 200, "{kind}");
        made.push(secret_of(&created.text().await.unwrap()));
    }
    let [personal, service] = [made[0].clone(), made[1].clone()];

    let session = server.login(OWNER, &server.password).await;
    let html = text(&server, &format!("/console/users/{mia}"), &session).await;
    let csrf = csrf_of(&html);
    let path = format!("/console/users/{mia}/delete");
    let asked = post_form(&server, &session, &path, &[("csrf", &csrf)]).await;
    assert_eq!(asked.status(), 200);
    let asked = asked.text().await.unwrap();
    assert!(asked.contains("Delete Mia?"), "{asked}");
    assert!(
        asked.contains("personal tokens stop working at once"),
        "{asked}"
    );
    assert!(
        asked.contains("Service tokens they made go on working"),
        "{asked}"
    );
    assert!(asked.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(
        whoami_status(&server, &personal).await,
        200,
        "asking changes nothing"
    );

    let done = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Mia deleted"));
    assert_eq!(
        whoami_status(&server, &personal).await,
        401,
        "personal: stopped"
    );
    assert_eq!(
        whoami_status(&server, &service).await,
        200,
        "service: goes on"
    );
    assert_eq!(
        login_status(&server, "mia@example.com", PASSWORD).await,
        401
    );
    let gone = page(&server, &format!("/console/users/{mia}"), Some(&session)).await;
    assert_eq!(gone.status(), 404);
}

/// The permissions `/v1/whoami` lists for a credential.
async fn permissions_of(server: &TestServer, secret: &str) -> Vec<String> {
    let whoami: Value = server
        .whoami(&[("authorization", &format!("Bearer {secret}"))])
        .await
        .json()
        .await
        .unwrap();
    let mut permissions: Vec<String> =
        serde_json::from_value(whoami["permissions"].clone()).unwrap();
    permissions.sort();
    permissions
}

async fn a_role_made_in_the_matrix_grants_a_token_exactly_its_permissions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let session = server.login(OWNER, &server.password).await;
    let form = text(&server, "/console/roles/new", &session).await;
    for offered in [
        "tokens:read",
        "users:write",
        "tenants:impersonate",
        "credentials:verify",
    ] {
        assert!(
            form.contains(&format!("name=\"permission\" value=\"{offered}\"")),
            "{offered}"
        );
    }
    for wildcard in ["tokens:*", "*"] {
        assert!(
            form.contains(&format!("value=\"{wildcard}\"")),
            "{wildcard}"
        );
    }
    let csrf = csrf_of(&form);

    // Nothing named, nothing ticked: both messages, beside their fields, and no role.
    let bad = post_form(
        &server,
        &session,
        "/console/roles/new",
        &[("csrf", &csrf), ("name", " ")],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let bad = bad.text().await.unwrap();
    assert!(bad.contains("id=\"name-error\""), "{bad}");
    assert!(bad.contains("id=\"permissions-error\""), "{bad}");

    let created = post_form(
        &server,
        &session,
        "/console/roles/new",
        &[
            ("csrf", &csrf),
            ("name", "auditor"),
            ("permission", "audit:read"),
            ("permission", "users:read"),
        ],
    )
    .await;
    assert_eq!(created.status(), 200);
    let created = created.text().await.unwrap();
    assert!(created.contains("Role “auditor” created"), "{created}");
    let roles = server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await;
    let auditor = roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "auditor")
        .expect("the role")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, secret) = crate::console::service_token(&server, "audit export", &auditor).await;
    assert_eq!(
        permissions_of(&server, &secret).await,
        ["audit:read", "users:read"]
    );

    // Edited: a wildcard added, a box unticked; the token has it from its next request.
    let path = format!("/console/roles/{auditor}");
    let edit = text(&server, &path, &session).await;
    assert!(
        edit.contains("value=\"audit:read\" checked"),
        "ticked as stored"
    );
    let saved = post_form(
        &server,
        &session,
        &path,
        &[
            ("csrf", &csrf),
            ("name", "auditor"),
            ("permission", "audit:read"),
            ("permission", "roles:*"),
        ],
    )
    .await;
    assert_eq!(saved.status(), 200);
    assert!(saved.text().await.unwrap().contains("Role “auditor” saved"));
    assert_eq!(
        permissions_of(&server, &secret).await,
        ["audit:read", "roles:read", "roles:write"]
    );
    let list = text(&server, "/console/roles", &session).await;
    assert!(
        list.contains("auditor") && list.contains("<code>roles:*</code>"),
        "{list}"
    );
    assert!(list.contains("Built-in roles") && list.contains("<code>tenants:write</code>"));
}

async fn a_role_in_use_is_not_deleted_and_the_page_says_why(backend: Backend) {
    let server = TestServer::start(backend).await;
    let held = role(&server, "deployer", &["tokens:read"]).await;
    let (token, secret) = crate::console::service_token(&server, "deploy", &held).await;
    let session = server.login(OWNER, &server.password).await;
    let html = text(&server, &format!("/console/roles/{held}"), &session).await;
    let csrf = csrf_of(&html);
    let path = format!("/console/roles/{held}/delete");
    let asked = post_form(&server, &session, &path, &[("csrf", &csrf)]).await;
    assert_eq!(asked.status(), 200);
    assert!(
        asked
            .text()
            .await
            .unwrap()
            .contains("Delete role “deployer”?")
    );
    let refused = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(refused.status(), 409);
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains("was not deleted: it is still in use"),
        "{refused}"
    );
    assert!(
        refused.contains("Give those users another role"),
        "{refused}"
    );
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/roles/{held}"),
            &server.token,
            None,
        )
        .await;
    assert_eq!(whoami_status(&server, &secret).await, 200);

    // Once nothing holds it, it goes.
    server
        .expect(
            204,
            Method::DELETE,
            &format!("/v1/tokens/{token}"),
            &server.token,
            None,
        )
        .await;
    let done = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("Role “deployer” deleted")
    );
    server
        .expect(
            404,
            Method::GET,
            &format!("/v1/roles/{held}"),
            &server.token,
            None,
        )
        .await;
}

async fn escalations_are_refused_with_a_message_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    user(&server, "adam@example.com", "Adam", "admin").await;
    let owners = server
        .expect(200, Method::GET, "/v1/users", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == OWNER)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = server.login("adam@example.com", PASSWORD).await;

    // An admin lacks tenants:write: the owner role and that box are not offered.
    let form = text(&server, "/console/users/new", &session).await;
    assert!(
        !form.contains("<option value=\"owner\""),
        "owner not offered"
    );
    assert!(form.contains("<option value=\"admin\""));
    let csrf = csrf_of(&form);
    let before = user_count(&server).await;
    let crafted = post_form(
        &server,
        &session,
        "/console/users/new",
        &[
            ("csrf", &csrf),
            ("email", "boss@example.com"),
            ("name", "Boss"),
            ("role", "owner"),
        ],
    )
    .await;
    assert_eq!(crafted.status(), 403);
    let crafted = crafted.text().await.unwrap();
    assert!(
        crafted.contains("permissions you do not hold yourself")
            && crafted.contains("tenants:write"),
        "{crafted}"
    );
    assert!(crafted.contains("<h1>Add user</h1>"), "the form again");
    assert_eq!(user_count(&server).await, before);

    let matrix = text(&server, "/console/roles/new", &session).await;
    assert!(!matrix.contains("value=\"tenants:write\""), "not offered");
    assert!(!matrix.contains("value=\"*\""), "no `*` for an admin");
    assert!(matrix.contains("value=\"tokens:*\""));
    assert!(matrix.contains("tenants:write: not yours to grant"));
    let crafted = post_form(
        &server,
        &session,
        "/console/roles/new",
        &[
            ("csrf", &csrf),
            ("name", "landlord"),
            ("permission", "tenants:write"),
        ],
    )
    .await;
    assert_eq!(crafted.status(), 403);
    assert!(
        crafted
            .text()
            .await
            .unwrap()
            .contains("You cannot grant what you do not hold yourself: tenants:write")
    );

    // The owner's page: no actions, and a crafted change is a message that changes nothing.
    let path = format!("/console/users/{owners}");
    let owner_page = text(&server, &path, &session).await;
    assert!(!owner_page.contains("Change role") && owner_page.contains("why-no-actions"));
    let crafted = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf), ("status", "disabled")],
    )
    .await;
    assert_eq!(crafted.status(), 403);
    assert!(
        crafted
            .text()
            .await
            .unwrap()
            .contains("Nothing was changed")
    );
    assert_eq!(get_user(&server, &owners).await["status"], "active");
    assert_eq!(login_status(&server, OWNER, &server.password).await, 200);
}

async fn a_member_sees_no_write_actions_and_crafted_posts_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mia = user(&server, "mia@example.com", "Mia", "member").await;
    let viewer = user(&server, "vic@example.com", "Vic", "viewer").await;
    let held = role(&server, "deployer", &["tokens:read"]).await;
    let session = server.login("mia@example.com", PASSWORD).await;
    let users = text(&server, "/console/users", &session).await;
    assert!(users.contains("href=\"/console/users\"") && users.contains("href=\"/console/roles\""));
    assert!(!users.contains("Add user"));
    let roles = text(&server, "/console/roles", &session).await;
    assert!(roles.contains("deployer") && !roles.contains("New role"));
    let role_page = text(&server, &format!("/console/roles/{held}"), &session).await;
    assert!(!role_page.contains("Delete this role") && !role_page.contains("Save role"));
    let vic_page = text(&server, &format!("/console/users/{viewer}"), &session).await;
    assert!(!vic_page.contains("Change role") && !vic_page.contains("Delete Vic"));
    for path in ["/console/users/new", "/console/roles/new"] {
        assert_eq!(
            page(&server, path, Some(&session)).await.status(),
            403,
            "{path}"
        );
    }
    let csrf = csrf_of(&users);
    let before = user_count(&server).await;
    for (path, form) in [
        (
            "/console/users/new".to_owned(),
            vec![
                ("email", "eve@example.com"),
                ("name", "Eve"),
                ("role", "viewer"),
            ],
        ),
        (
            format!("/console/users/{viewer}"),
            vec![("status", "disabled")],
        ),
        (
            format!("/console/users/{viewer}/delete"),
            vec![("confirm", "yes")],
        ),
        (
            "/console/roles/new".to_owned(),
            vec![("name", "mine"), ("permission", "users:read")],
        ),
        (
            format!("/console/roles/{held}/delete"),
            vec![("confirm", "yes")],
        ),
    ] {
        let refused = post_form(
            &server,
            &session,
            &path,
            &[form, vec![("csrf", &csrf)]].concat(),
        )
        .await;
        assert_eq!(refused.status(), 403, "{path}");
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("Nothing was changed")
        );
    }
    assert_eq!(user_count(&server).await, before);
    assert_eq!(get_user(&server, &viewer).await["status"], "active");
    assert_eq!(get_user(&server, &mia).await["role"], "rol_member");
    server
        .expect(
            200,
            Method::GET,
            &format!("/v1/roles/{held}"),
            &server.token,
            None,
        )
        .await;
}

/// How many elements the page the browser shows has for `css`.
async fn count(browser: &crate::browser::Browser, css: &str) -> usize {
    browser
        .client
        .find_all(fantoccini::Locator::Css(css))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn in_a_browser_an_owner_adds_a_member_who_finds_no_user_or_role_write_actions() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-people-").await else {
        return;
    };
    let axe = axe.as_deref();
    let server = TestServer::start(Backend::Sqlite).await;
    let client = &browser.client;
    let go = |path: &str| {
        let url = format!("{}{path}", server.base);
        async move { client.goto(&url).await }
    };
    let leaving = user(&server, "leo@example.com", "Leo", "viewer").await;

    go("/console/sign-in").await.unwrap();
    sign_in(&browser, OWNER, &server.password).await;
    browser.find("nav a[href='/console/users']").await;
    browser.click("nav a[href='/console/users']").await;
    browser.find("a.button[href='/console/users/new']").await;
    audit(&browser, axe, &shots, "users").await;
    browser.click("a.button[href='/console/users/new']").await;
    browser
        .find("#email")
        .await
        .send_keys("mia@example.com")
        .await
        .unwrap();
    browser.find("#name").await.send_keys("Mia").await.unwrap();
    browser
        .find("#role")
        .await
        .select_by_value("member")
        .await
        .unwrap();
    audit(&browser, axe, &shots, "add-user").await;
    browser.click("main form button[type=submit]").await;
    let password = secret_on_page(&browser).await;
    audit(&browser, axe, &shots, "user-added").await;
    assert!(password.len() >= 20);

    // The new user's page, and another's deletion, asked then done.
    browser.click("main a[href^='/console/users/usr_']").await;
    browser.find("#role").await;
    audit(&browser, axe, &shots, "user").await;
    go(&format!("/console/users/{leaving}")).await.unwrap();
    browser.click("form[action$='/delete'] button.danger").await;
    browser.find("input[name=confirm]").await;
    let warning = browser.find("main .warning").await.text().await.unwrap();
    assert!(
        warning.contains("personal tokens stop working at once")
            && warning.contains("Service tokens they made go on working"),
        "{warning}"
    );
    audit(&browser, axe, &shots, "user-delete").await;
    browser.click("main form button.danger").await;
    let done = browser
        .find("main [role=status]")
        .await
        .text()
        .await
        .unwrap();
    assert!(done.contains("can no longer sign in"), "{done}");
    audit(&browser, axe, &shots, "user-deleted").await;

    // Signed out, then in as the member with the password read off the page.
    browser
        .click("form[action='/console/sign-out'] button")
        .await;
    browser.find("#email").await;
    sign_in(&browser, "mia@example.com", &password).await;
    browser.find("nav a[href='/console/users']").await;
    go("/console/users").await.unwrap();
    browser.find("main table").await;
    assert_eq!(
        count(&browser, "a[href='/console/users/new']").await,
        0,
        "no Add user"
    );
    browser.click("main a[href^='/console/users/usr_']").await;
    browser.find("#why-no-actions").await;
    assert_eq!(
        count(&browser, "main form").await,
        0,
        "no change, disable or delete"
    );
    go("/console/roles").await.unwrap();
    browser.find("main h1").await;
    assert_eq!(
        count(&browser, "a[href='/console/roles/new']").await,
        0,
        "no New role"
    );
    assert_eq!(count(&browser, "button.danger").await, 0, "no Delete");
    audit(&browser, axe, &shots, "roles-as-member").await;

    // A crafted post from the page, with the page's own CSRF token: refused, nothing added.
    let before = user_count(&server).await;
    let crafted = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value,
                                               email: 'eve@example.com', name: 'Eve', role: 'viewer'});
             fetch('/console/users/new', {method: 'POST', body}).then((r) => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(crafted, 403);
    let crafted = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value,
                                               name: 'mine', permission: 'users:read'});
             fetch('/console/roles/new', {method: 'POST', body}).then((r) => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(crafted, 403);
    assert_eq!(user_count(&server).await, before);
    let roles = server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await;
    assert!(!roles.to_string().contains("\"mine\""));
}

#[tokio::test]
async fn in_a_browser_a_role_ticked_in_the_matrix_is_at_once_a_tokens_role() {
    let Some((browser, axe, shots)) = browser_session("keygate-console-roles-").await else {
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
    browser.find("nav a[href='/console/roles']").await;
    browser.click("nav a[href='/console/roles']").await;
    browser.find("a.button[href='/console/roles/new']").await;
    audit(&browser, axe, &shots, "roles").await;
    browser.click("a.button[href='/console/roles/new']").await;
    browser
        .find("#name")
        .await
        .send_keys("reporter")
        .await
        .unwrap();
    browser.click("input[value='audit:read']").await;
    browser.click("input[value='credentials:verify']").await;
    browser.click("input[value='users:read']").await;
    audit(&browser, axe, &shots, "role-new").await;
    browser.click("main form button[type=submit]").await;
    let notice = browser.find("main .notice").await.text().await.unwrap();
    assert!(notice.contains("Role “reporter” created"), "{notice}");
    audit(&browser, axe, &shots, "role").await;

    // Add token → service, with that role, read off the page, used at once.
    let id = server
        .expect(200, Method::GET, "/v1/roles", &server.token, None)
        .await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "reporter")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    go("/console/tokens/new").await.unwrap();
    browser
        .find("#name")
        .await
        .send_keys("monthly report")
        .await
        .unwrap();
    browser.click("input[name=kind][value=service]").await;
    let label = browser
        .find(&format!("#role option[value='{id}']"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(label, "reporter (custom)");
    browser
        .find("#role")
        .await
        .select_by_value(&id)
        .await
        .unwrap();
    browser
        .find("#expiry")
        .await
        .select_by_value("never")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    let secret = secret_on_page(&browser).await;
    assert_eq!(
        permissions_of(&server, &secret).await,
        ["audit:read", "credentials:verify", "users:read"]
    );

    // In use by that token: deletion is refused, and the page says why.
    go(&format!("/console/roles/{id}")).await.unwrap();
    browser.click("form[action$='/delete'] button.danger").await;
    browser.find("input[name=confirm]").await;
    audit(&browser, axe, &shots, "role-delete").await;
    browser.click("main form button.danger").await;
    let why = browser
        .find("main [role=alert]")
        .await
        .text()
        .await
        .unwrap();
    assert!(why.contains("still in use"), "{why}");
    audit(&browser, axe, &shots, "role-in-use").await;
    assert_eq!(whoami_status(&server, &secret).await, 200);
}

/// Someone who lost their password gets a new one from whoever manages users: made by keygate,
/// shown once; the old one stops working and the user's sessions end.
async fn a_user_who_lost_their_password_is_given_a_new_one_shown_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mia = user(&server, "mia@example.com", "Mia", "member").await;
    let mias = server.login("mia@example.com", PASSWORD).await;
    let session = server.login(OWNER, &server.password).await;
    let path = format!("/console/users/{mia}");
    let before = text(&server, &path, &session).await;
    assert!(before.contains("Make a new password"), "{before}");
    let made = post_form(
        &server,
        &session,
        &path,
        &[("csrf", &csrf_of(&before)), ("password", "new")],
    )
    .await;
    assert_eq!(made.status(), 200);
    let made = made.text().await.unwrap();
    assert!(
        made.contains("A new password for mia@example.com"),
        "{made}"
    );
    let password = secret_of(&made);
    assert_eq!(
        login_status(&server, "mia@example.com", PASSWORD).await,
        401
    );
    assert_eq!(
        login_status(&server, "mia@example.com", &password).await,
        200
    );
    assert_eq!(
        whoami_status(&server, &mias).await,
        401,
        "her old session ended"
    );
    // Shown once: her page does not show it again.
    assert!(!text(&server, &path, &session).await.contains(&password));
}
