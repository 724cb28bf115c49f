//! Tenants, the reseller tree and `as-tenant`, with tenant isolation proven as a matrix
//! (API.md §2, §3).

use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, ok_json, problem};

on_every_backend!(
    no_tenant_reaches_another_tenants_objects,
    tenants_see_themselves_and_below_and_manage_only_below,
    acting_for_a_descendant_and_never_up_or_sideways,
    suspension_reaches_every_descendant_and_reactivation_restores_them,
    creating_tenants_with_a_first_user_and_checked_slugs,
);

/// root → reseller (A) → customer (A1, the caller) → grandchild (A1a); A → sibling (A2).
struct Tree {
    server: TestServer,
    ids: [String; 4],
    /// Owner service tokens of A, A1 and A2.
    reseller: String,
    customer: String,
    sibling: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Own,
    Sibling,
    Parent,
    Child,
    ChildActingAs,
}

const RELATIONS: [Rel; 5] = [
    Rel::Own,
    Rel::Sibling,
    Rel::Parent,
    Rel::Child,
    Rel::ChildActingAs,
];

impl Tree {
    async fn new(backend: Backend) -> Self {
        let server = TestServer::start(backend).await;
        let root = server.token.clone();
        let reseller_id = create_tenant(&server, &root, None, "Reseller").await;
        let reseller = owner_token(&server, &reseller_id).await;
        let customer_id = create_tenant(&server, &reseller, None, "Customer").await;
        let sibling_id = create_tenant(&server, &reseller, None, "Sibling").await;
        let grandchild_id =
            create_tenant(&server, &reseller, Some(&customer_id), "Grandchild").await;
        let customer = owner_token(&server, &customer_id).await;
        let sibling = owner_token(&server, &sibling_id).await;
        Tree {
            server,
            ids: [reseller_id, customer_id, sibling_id, grandchild_id],
            reseller,
            customer,
            sibling,
        }
    }

    fn tenant(&self, rel: Rel) -> &str {
        match rel {
            Rel::Parent => &self.ids[0],
            Rel::Own => &self.ids[1],
            Rel::Sibling => &self.ids[2],
            Rel::Child | Rel::ChildActingAs => &self.ids[3],
        }
    }

    /// A request as the customer (A1), acting for its child when the relation says so.
    async fn as_customer(&self, rel: Rel, method: Method, path: &str, body: Option<Value>) -> u16 {
        let mut request = self
            .server
            .request(method, path)
            .bearer_auth(&self.customer);
        if rel == Rel::ChildActingAs {
            request = request.header("as-tenant", self.tenant(rel));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().status().as_u16()
    }
}

/// Creates a tenant as `token`, inside `acting` (a tenant below the token's) if given.
async fn create_tenant(
    server: &TestServer,
    token: &str,
    acting: Option<&str>,
    name: &str,
) -> String {
    let mut request = server
        .post("/v1/tenants")
        .bearer_auth(token)
        .json(&json!({"name": name}));
    if let Some(acting) = acting {
        request = request.header("as-tenant", acting);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenant"]["status"], "active");
    body["tenant"]["id"].as_str().unwrap().to_owned()
}

/// An owner service token inside `tenant`, made by the root owner acting for it.
async fn owner_token(server: &TestServer, tenant: &str) -> String {
    let body = in_tenant(
        server,
        tenant,
        Method::POST,
        "/v1/tokens",
        json!({"kind": "service", "name": "owner", "role": "owner"}),
    )
    .await;
    body["secret"].as_str().unwrap().to_owned()
}

/// A request by the root owner acting for `tenant`; expects 201 and returns the body.
async fn in_tenant(
    server: &TestServer,
    tenant: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    let response = server
        .request(method, path)
        .bearer_auth(&server.token)
        .header("as-tenant", tenant)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A request on one object: method, path with `{id}`, body, and its status when allowed.
type Verb = (&'static str, &'static str, Option<fn() -> Value>, u16);

/// One kind of tenant-owned object: how to make one in a tenant, and what may be done to it.
struct Kind {
    name: &'static str,
    create: fn(u32) -> (&'static str, Value),
    id_field: &'static str,
    verbs: &'static [Verb],
}

/// Every object type a tenant owns. A new one joins the matrix with one entry here.
const KINDS: &[Kind] = &[
    Kind {
        name: "user",
        create: |n| {
            (
                "/v1/users",
                json!({"email": format!("u{n}@example.com"), "name": "U", "role": "viewer"}),
            )
        },
        id_field: "id",
        verbs: &[
            ("GET", "/v1/users/{id}", None, 200),
            (
                "PATCH",
                "/v1/users/{id}",
                Some(|| json!({"name": "Renamed"})),
                200,
            ),
            ("DELETE", "/v1/users/{id}", None, 204),
        ],
    },
    Kind {
        name: "role",
        create: |n| {
            (
                "/v1/roles",
                json!({"name": format!("role-{n}"), "permissions": ["tokens:read"]}),
            )
        },
        id_field: "id",
        verbs: &[
            ("GET", "/v1/roles/{id}", None, 200),
            (
                "PUT",
                "/v1/roles/{id}",
                Some(|| json!({"name": "renamed", "permissions": ["tokens:read"]})),
                200,
            ),
            ("DELETE", "/v1/roles/{id}", None, 204),
        ],
    },
    Kind {
        name: "token",
        create: |n| {
            (
                "/v1/tokens",
                json!({"kind": "service", "name": format!("t{n}"), "role": "viewer"}),
            )
        },
        id_field: "id",
        verbs: &[
            ("GET", "/v1/tokens/{id}", None, 200),
            ("DELETE", "/v1/tokens/{id}", None, 204),
        ],
    },
    Kind {
        name: "account key",
        create: |_| ("/v1/account/keys", Value::Null),
        id_field: "id",
        verbs: &[("DELETE", "/v1/account/keys/{id}", None, 200)],
    },
];

async fn no_tenant_reaches_another_tenants_objects(backend: Backend) {
    let tree = Tree::new(backend).await;
    let mut table = Vec::new();
    for kind in KINDS {
        for (method, path, body, allowed) in kind.verbs {
            for rel in RELATIONS {
                let (create_path, create_body) =
                    (kind.create)(NEXT.fetch_add(1, Ordering::Relaxed));
                let body_to_send = if create_body.is_null() {
                    json!({})
                } else {
                    create_body
                };
                let object = in_tenant(
                    &tree.server,
                    tree.tenant(rel),
                    Method::POST,
                    create_path,
                    body_to_send,
                )
                .await;
                let id = object[kind.id_field].as_str().unwrap();
                let method: Method = method.parse().unwrap();
                let got = tree
                    .as_customer(
                        rel,
                        method.clone(),
                        &path.replace("{id}", id),
                        body.map(|b| b()),
                    )
                    .await;
                let expected = match rel {
                    Rel::Own | Rel::ChildActingAs => *allowed,
                    Rel::Sibling | Rel::Parent | Rel::Child => 404,
                };
                table.push((kind.name, method, rel, expected, got));
            }
        }
    }
    let wrong: Vec<_> = table
        .iter()
        .filter(|(_, _, _, expected, got)| expected != got)
        .collect();
    assert!(
        wrong.is_empty(),
        "(kind, verb, relation, expected, got): {wrong:#?}"
    );
    assert_eq!(
        table.len(),
        RELATIONS.len() * KINDS.iter().map(|k| k.verbs.len()).sum::<usize>()
    );
}

async fn tenants_see_themselves_and_below_and_manage_only_below(backend: Backend) {
    let tree = Tree::new(backend).await;
    let server = &tree.server;
    let rows: &[(Rel, &str, Option<Value>, u16)] = &[
        (Rel::Own, "GET", None, 200),
        (
            Rel::Own,
            "PATCH",
            Some(json!({"name": "Customer Inc"})),
            200,
        ),
        (Rel::Own, "PATCH", Some(json!({"status": "suspended"})), 403),
        (Rel::Own, "DELETE", None, 403),
        (Rel::Sibling, "GET", None, 404),
        (Rel::Sibling, "PATCH", Some(json!({"name": "x"})), 404),
        (Rel::Sibling, "DELETE", None, 404),
        (Rel::Parent, "GET", None, 404),
        (
            Rel::Parent,
            "PATCH",
            Some(json!({"status": "suspended"})),
            404,
        ),
        (Rel::Parent, "DELETE", None, 404),
        (Rel::Child, "GET", None, 200),
        (
            Rel::Child,
            "PATCH",
            Some(json!({"name": "Grandchild GmbH"})),
            200,
        ),
        (Rel::ChildActingAs, "GET", None, 200),
        (
            Rel::ChildActingAs,
            "PATCH",
            Some(json!({"status": "suspended"})),
            403,
        ),
    ];
    for (rel, method, body, expected) in rows {
        let path = format!("/v1/tenants/{}", tree.tenant(*rel));
        let got = tree
            .as_customer(*rel, method.parse().unwrap(), &path, body.clone())
            .await;
        assert_eq!(got, *expected, "{rel:?} {method} {body:?}");
    }
    // Lists: the customer's children only; deeper with parent_id, never upward.
    let children = server
        .expect(200, Method::GET, "/v1/tenants", &tree.customer, None)
        .await;
    let ids: Vec<&str> = children["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tree.tenant(Rel::Child)]);
    let reseller_children = server
        .expect(200, Method::GET, "/v1/tenants", &tree.reseller, None)
        .await;
    assert_eq!(reseller_children["data"].as_array().unwrap().len(), 2);
    let deeper = format!("/v1/tenants?parent_id={}", tree.tenant(Rel::Own));
    let deeper = server
        .expect(200, Method::GET, &deeper, &tree.reseller, None)
        .await;
    assert_eq!(deeper["data"][0]["parent_id"], tree.tenant(Rel::Own));
    let upward = format!("/v1/tenants?parent_id={}", tree.tenant(Rel::Parent));
    problem(
        server
            .call(Method::GET, &upward, &tree.customer, None)
            .await,
        404,
        "not-found",
    )
    .await;

    // A tenant with children cannot be deleted; a leaf can, by an ancestor.
    let path = format!("/v1/tenants/{}", tree.tenant(Rel::Own));
    problem(
        server
            .call(Method::DELETE, &path, &tree.reseller, None)
            .await,
        409,
        "tenant-has-children",
    )
    .await;
    let leaf = format!("/v1/tenants/{}", tree.tenant(Rel::Child));
    server
        .expect(204, Method::DELETE, &leaf, &tree.customer, None)
        .await;
    server
        .expect(204, Method::DELETE, &path, &tree.reseller, None)
        .await;
    problem(
        server.whoami(&[("apikey", &tree.customer)]).await,
        401,
        "unauthenticated",
    )
    .await;
    // The root can be neither suspended nor deleted.
    let root_id = ok_json(server.whoami(&[("apikey", &server.token)]).await).await["organization"]
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = format!("/v1/tenants/{root_id}");
    problem(
        server
            .call(Method::DELETE, &root, &server.token, None)
            .await,
        403,
        "forbidden",
    )
    .await;
    let suspend = json!({"status": "suspended"});
    problem(
        server
            .call(Method::PATCH, &root, &server.token, Some(suspend))
            .await,
        403,
        "forbidden",
    )
    .await;
}

async fn acting_for_a_descendant_and_never_up_or_sideways(backend: Backend) {
    let tree = Tree::new(backend).await;
    let server = &tree.server;
    let act = |token: &str, target: &str| {
        server
            .get("/v1/whoami")
            .bearer_auth(token)
            .header("as-tenant", target)
            .send()
    };
    // A grandparent acts for its grandchild, by id or by slug.
    let me = ok_json(act(&tree.reseller, tree.tenant(Rel::Child)).await.unwrap()).await;
    assert_eq!(me["acting_as"]["id"], tree.tenant(Rel::Child));
    let slug = me["acting_as"]["slug"].as_str().unwrap().to_owned();
    assert_eq!(
        me["organization"]["id"],
        tree.tenant(Rel::Parent),
        "still the reseller's credential"
    );
    ok_json(act(&tree.reseller, &slug).await.unwrap()).await;
    // Objects made while acting land in the target.
    let created = server
        .request(Method::POST, "/v1/users")
        .bearer_auth(&tree.reseller)
        .header("as-tenant", &slug)
        .json(&json!({"email": "acted@example.com", "name": "A", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let users = server
        .request(Method::GET, "/v1/users")
        .bearer_auth(&tree.customer)
        .header("as-tenant", &slug)
        .send()
        .await
        .unwrap();
    let users: Value = users.json().await.unwrap();
    assert!(
        users["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == "acted@example.com")
    );
    let own_users = server
        .expect(200, Method::GET, "/v1/users", &tree.reseller, None)
        .await;
    assert!(!own_users.to_string().contains("acted@example.com"));

    // Upward, sideways, itself, unknown: all 404.
    for target in [
        tree.tenant(Rel::Parent),
        tree.tenant(Rel::Sibling),
        tree.tenant(Rel::Own),
        "tnt_nobody",
        "no-such-slug",
    ] {
        problem(act(&tree.customer, target).await.unwrap(), 404, "not-found").await;
    }
    // Without tenants:impersonate: 403, before anything about the target is said.
    let admin = server
        .request(Method::POST, "/v1/tokens")
        .bearer_auth(&tree.customer)
        .json(&json!({"kind": "service", "name": "a", "role": "admin", "permissions": ["users:read"]}))
        .send()
        .await
        .unwrap();
    let admin: Value = admin.json().await.unwrap();
    let admin = admin["secret"].as_str().unwrap();
    let body = problem(
        act(admin, tree.tenant(Rel::Child)).await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["missing_permissions"], json!(["tenants:impersonate"]));
    problem(act(admin, "tnt_nobody").await.unwrap(), 403, "forbidden").await;

    // The Realm header may name the acted-as tenant (or the credential's own).
    let with_realm = server
        .get("/v1/whoami")
        .bearer_auth(&tree.reseller)
        .header("as-tenant", &slug)
        .header("realm", &slug)
        .send()
        .await
        .unwrap();
    assert_eq!(with_realm.status(), 200);
}

async fn suspension_reaches_every_descendant_and_reactivation_restores_them(backend: Backend) {
    let tree = Tree::new(backend).await;
    let server = &tree.server;
    let grandchild = owner_token(server, tree.tenant(Rel::Child)).await;
    let tokens = [&tree.reseller, &tree.customer, &grandchild];
    for token in tokens {
        ok_json(server.whoami(&[("apikey", token)]).await).await;
    }
    // The root suspends the reseller: three levels refused at once.
    let path = format!("/v1/tenants/{}", tree.tenant(Rel::Parent));
    let body = server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(body["status"], "suspended");
    for token in tokens {
        let refused = problem(
            server.whoami(&[("apikey", token)]).await,
            401,
            "unauthenticated",
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains("suspended"),
            "{refused}"
        );
    }
    problem(
        server.whoami(&[("apikey", &tree.sibling)]).await,
        401,
        "unauthenticated",
    )
    .await;
    ok_json(server.whoami(&[("apikey", &server.token)]).await).await;
    server
        .expect(
            200,
            Method::PATCH,
            &path,
            &server.token,
            Some(json!({"status": "active"})),
        )
        .await;
    for token in tokens.iter().chain([&&tree.sibling]) {
        ok_json(server.whoami(&[("apikey", token)]).await).await;
    }
    // The reseller suspends its customer: the customer and its child go, the reseller stays.
    let customer = format!("/v1/tenants/{}", tree.tenant(Rel::Own));
    server
        .expect(
            200,
            Method::PATCH,
            &customer,
            &tree.reseller,
            Some(json!({"status": "suspended"})),
        )
        .await;
    problem(
        server.whoami(&[("apikey", &tree.customer)]).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        server.whoami(&[("apikey", &grandchild)]).await,
        401,
        "unauthenticated",
    )
    .await;
    ok_json(server.whoami(&[("apikey", &tree.reseller)]).await).await;
    server
        .expect(
            200,
            Method::PATCH,
            &customer,
            &tree.reseller,
            Some(json!({"status": "active"})),
        )
        .await;
    ok_json(server.whoami(&[("apikey", &grandchild)]).await).await;
}

async fn creating_tenants_with_a_first_user_and_checked_slugs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .expect(201, Method::POST, "/v1/tenants", &server.token,
            Some(json!({"name": "Acme", "slug": "acme", "first_user": {"email": "boss@acme.example", "name": "Boss"}})))
        .await;
    assert_eq!(created["tenant"]["slug"], "acme");
    assert!(created["tenant"]["parent_id"].is_string());
    assert_eq!(created["first_user"]["role"], "rol_owner");
    let password = created["initial_password"].as_str().unwrap();
    let session = server.login("boss@acme.example", password).await;
    let me = ok_json(
        server
            .whoami(&[("cookie", &format!("keygate_session={session}"))])
            .await,
    )
    .await;
    assert_eq!(me["organization"]["slug"], "acme");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tenants:write"))
    );

    problem(
        server
            .call(
                Method::POST,
                "/v1/tenants",
                &server.token,
                Some(json!({"name": "Acme 2", "slug": "acme"})),
            )
            .await,
        409,
        "already-exists",
    )
    .await;
    for bad in ["Acme", "-acme", "ac_me", ""] {
        let response = server
            .call(
                Method::POST,
                "/v1/tenants",
                &server.token,
                Some(json!({"name": "x", "slug": bad})),
            )
            .await;
        let body = problem(response, 400, "invalid-request").await;
        assert_eq!(body["errors"][0]["field"], "slug", "{bad}");
    }
    let response = server
        .call(
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Bad", "first_user": {"email": "nope", "name": "N"}})),
        )
        .await;
    let body = problem(response, 400, "invalid-request").await;
    assert_eq!(body["errors"][0]["field"], "first_user.email");
    let derived = server
        .expect(
            201,
            Method::POST,
            "/v1/tenants",
            &server.token,
            Some(json!({"name": "Globex Corp"})),
        )
        .await;
    assert!(
        derived["tenant"]["slug"]
            .as_str()
            .unwrap()
            .starts_with("globex-corp-")
    );
}
