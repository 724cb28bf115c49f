//! The example over real HTTP: the app served on 127.0.0.1:0 with a SQLite file, spoken to with
//! reqwest as keygate would, identity headers and all. And the binary's refusal to listen where
//! anyone but keygate could reach it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use zones_example::{Zones, serve};

const ALICE: &str = "ten_alice";
const BOB: &str = "ten_bob";

/// A running app; dropping it stops the server with the test's runtime and removes the database.
struct App {
    base: String,
    client: Client,
    _dir: TempDir,
}

async fn start() -> App {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: open creates it.
    let url = format!("sqlite://{}", dir.path().join("data/zones.db").display());
    let zones = Zones::open(&url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, zones, std::future::pending()));
    App {
        base,
        client: Client::new(),
        _dir: dir,
    }
}

impl App {
    /// A request as keygate forwards it for `tenant`.
    fn request(&self, method: Method, tenant: &str, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-keygate-tenant-id", tenant)
            .header("x-keygate-acting-tenant-id", tenant)
            .header("x-keygate-principal-id", "prn_test")
            .header("x-keygate-credential-id", "crd_test")
            .header("x-keygate-permissions", "zones:read,zones:write")
            .header("x-request-id", "req_test")
    }

    async fn get(&self, tenant: &str, path: &str) -> (StatusCode, Value) {
        read(
            self.request(Method::GET, tenant, path)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, tenant: &str, path: &str, body: Value) -> (StatusCode, Value) {
        read(
            self.request(Method::POST, tenant, path)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn create_zone(&self, tenant: &str, name: &str) -> i64 {
        let (status, zone) = self.post(tenant, "/zones", json!({ "name": name })).await;
        assert_eq!(status, StatusCode::CREATED, "{zone}");
        zone["id"].as_i64().unwrap()
    }

    async fn subnets(&self, tenant: &str, zone: i64) -> Vec<String> {
        let (status, body) = self.get(tenant, &format!("/zones/{zone}/subnets")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|subnet| subnet["subnet"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The status and JSON body; an error body must be a problem document.
async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    if text.is_empty() {
        return (status, Value::Null);
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    if !status.is_success() {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{text}"
        );
        assert_eq!(body["type"], "about:blank", "{text}");
        assert_eq!(body["status"], status.as_u16(), "{text}");
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{text}"
        );
    }
    (status, body)
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn zones_are_created_listed_and_read_per_tenant() {
    let app = start().await;
    let response = app
        .request(Method::POST, ALICE, "/zones")
        .json(&json!({ "name": "edge" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, edge) = read(response).await;
    let id = edge["id"].as_i64().unwrap();
    assert_eq!(location, format!("/zones/{id}"));
    assert_eq!(edge["name"], "edge");
    assert_eq!(edge["subnet_count"], 0);
    let created_at = edge["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z'),
        "{created_at}"
    );

    let core = app.create_zone(ALICE, "core").await;
    let bobs = app.create_zone(BOB, "bob's").await;
    assert!(id < core && core < bobs, "ids are global and ascending");

    let (status, list) = app.get(ALICE, "/zones").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| &z["name"])
        .collect();
    assert_eq!(names, ["edge", "core"]);
    let (_, list) = app.get(BOB, "/zones").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], bobs);

    let (status, zone) = app.get(ALICE, &format!("/zones/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(zone, edge);

    // Another tenant's zone, a missing one and a non-numeric id all answer the same 404.
    for path in [
        format!("/zones/{id}"),
        "/zones/999".to_owned(),
        "/zones/abc".to_owned(),
    ] {
        let (status, _) = app.get(BOB, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = app.get(BOB, &format!("/zones/{id}/subnets")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            BOB,
            &format!("/zones/{id}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.9" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(app.subnets(ALICE, id).await.is_empty());
}

#[tokio::test]
async fn the_acting_tenant_owns_the_request() {
    let app = start().await;
    // A reseller acting for its sub-customer creates the sub-customer's zone.
    let (status, _) = read(
        app.client
            .post(format!("{}/zones", app.base))
            .header("x-keygate-tenant-id", "ten_reseller")
            .header("x-keygate-acting-tenant-id", "ten_customer")
            .json(&json!({ "name": "for the customer" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, customer) = app.get("ten_customer", "/zones").await;
    assert_eq!(customer["data"].as_array().unwrap().len(), 1);
    let (_, reseller) = app.get("ten_reseller", "/zones").await;
    assert!(reseller["data"].as_array().unwrap().is_empty());

    // Without the acting header, the credential's tenant.
    let only_tenant = app
        .client
        .get(format!("{}/zones", app.base))
        .header("x-keygate-tenant-id", "ten_customer")
        .send()
        .await
        .unwrap();
    let (status, list) = read(only_tenant).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_request_without_a_tenant_did_not_come_through_keygate() {
    let app = start().await;
    let (status, problem) = read(
        app.client
            .get(format!("{}/zones", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("through keygate"),
        "{problem}"
    );
}

#[tokio::test]
async fn subnets_are_stored_in_canonical_form() {
    let app = start().await;
    let zone = app.create_zone(ALICE, "edge").await;
    let (status, added) = app
        .post(
            ALICE,
            &format!("/zones/{zone}/subnets"),
            json!({ "data": [
                { "subnet": "192.0.2.0/24", "description": "edge" },
                { "subnet": "198.51.100.7" },
                { "subnet": "2001:DB8:0000::1" },
                { "subnet": "2001:db8:1::/48", "description": null },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let added = added["data"].as_array().unwrap();
    let texts: Vec<_> = added
        .iter()
        .map(|s| s["subnet"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "192.0.2.0/24",
            "198.51.100.7/32",
            "2001:db8::1/128",
            "2001:db8:1::/48"
        ]
    );
    assert_eq!(added[0]["description"], "edge");
    assert_eq!(added[1]["description"], Value::Null);
    assert_eq!(added[0]["zone_id"], zone);
    assert!(added[0]["id"].as_i64().unwrap() < added[1]["id"].as_i64().unwrap());

    assert_eq!(app.subnets(ALICE, zone).await, texts);
    let (_, read_zone) = app.get(ALICE, &format!("/zones/{zone}")).await;
    assert_eq!(read_zone["subnet_count"], 4);
}

#[tokio::test]
async fn a_subnet_is_in_one_zone_of_the_whole_platform() {
    let app = start().await;
    let alices = app.create_zone(ALICE, "edge").await;
    let bobs = app.create_zone(BOB, "edge").await;
    let (status, _) = app
        .post(
            ALICE,
            &format!("/zones/{alices}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.0/24" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Bob's request clashes in its third subnet: nothing of it is added.
    let (status, problem) = app
        .post(
            BOB,
            &format!("/zones/{bobs}/subnets"),
            json!({ "data": [
                { "subnet": "198.51.100.0/24" },
                { "subnet": "203.0.113.1" },
                { "subnet": "192.0.2.0/24" },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("192.0.2.0/24 is already in use on the platform"),
        "{detail}"
    );
    // Neither Alice's zone nor her tenant is named.
    assert!(
        !detail.contains(&format!("zone {alices}")) && !detail.contains(ALICE),
        "{detail}"
    );
    assert_eq!(fields(&problem), ["data[2].subnet"]);
    assert!(app.subnets(BOB, bobs).await.is_empty());

    // The same network in another spelling is the same subnet.
    let (status, problem) = app
        .post(
            BOB,
            &format!("/zones/{bobs}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.0/24" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");

    // Alice's own clash may name her own zone.
    let other = app.create_zone(ALICE, "core").await;
    let (status, problem) = app
        .post(
            ALICE,
            &format!("/zones/{other}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.0/24" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("already in zone {alices}"))
    );
}

#[tokio::test]
async fn a_subnet_repeated_in_one_request_adds_nothing() {
    let app = start().await;
    let zone = app.create_zone(ALICE, "edge").await;
    let (status, problem) = app
        .post(
            ALICE,
            &format!("/zones/{zone}/subnets"),
            json!({ "data": [
                { "subnet": "192.0.2.1" },
                { "subnet": "2001:db8::1" },
                { "subnet": "2001:DB8::1/128" },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(fields(&problem), ["data[2].subnet"]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("2001:db8::1/128"),
        "{problem}"
    );
    assert!(app.subnets(ALICE, zone).await.is_empty());
}

#[tokio::test]
async fn invalid_subnets_are_refused_by_field() {
    let app = start().await;
    let zone = app.create_zone(ALICE, "edge").await;
    let path = format!("/zones/{zone}/subnets");
    let (status, problem) = app
        .post(
            ALICE,
            &path,
            json!({ "data": [
                { "subnet": "192.0.2.0/24" },
                { "subnet": "192.0.2.300" },
                { "subnet": "192.0.2.0/33" },
                { "subnet": "10.0.0.5/24" },
                { "subnet": "2001:db8::/129", "description": "x".repeat(201) },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(
        fields(&problem),
        [
            "data[1].subnet",
            "data[2].subnet",
            "data[3].subnet",
            "data[4].subnet",
            "data[4].description"
        ]
    );
    let host_bits = problem["errors"][2]["message"].as_str().unwrap();
    assert!(host_bits.contains("10.0.0.0/24"), "{host_bits}");
    assert!(app.subnets(ALICE, zone).await.is_empty());

    for (body, field) in [
        (json!({ "data": [] }), "data"),
        (json!({}), "data"),
        (json!([]), "."),
        (
            json!({ "data": [{ "description": "no subnet" }] }),
            "data[0].subnet",
        ),
        (json!({ "data": [{ "subnet": 42 }] }), "data[0].subnet"),
        (
            json!({ "data": [{ "subnet": "192.0.2.1", "zone": 2 }] }),
            "data[0].zone",
        ),
    ] {
        let (status, problem) = app.post(ALICE, &path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let expected: &[&str] = if field == "." { &[] } else { &[field] };
        assert_eq!(fields(&problem), expected, "{body}: {problem}");
    }
    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({ "subnet": format!("10.0.{}.{}", i / 256, i % 256) }))
        .collect();
    let (status, problem) = app.post(ALICE, &path, json!({ "data": too_many })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(fields(&problem), ["data"]);
}

#[tokio::test]
async fn zone_names_and_bodies_are_checked() {
    let app = start().await;
    for body in [
        json!({ "name": "" }),
        json!({ "name": "x".repeat(101) }),
        json!({ "name": "edge", "tenant_id": "ten_bob" }),
        json!({}),
    ] {
        let (status, problem) = app.post(ALICE, "/zones", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    for body in [json!({ "name": "" }), json!({})] {
        let (status, problem) = app.post(ALICE, "/zones", body).await;
        assert_eq!(
            (status, fields(&problem)),
            (StatusCode::BAD_REQUEST, vec!["name"])
        );
    }
    let (status, problem) = app
        .post(ALICE, "/zones", json!({ "name": "edge", "extra": 1 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `extra`"),
        "{problem}"
    );
    assert_eq!(app.create_zone(ALICE, &"é".repeat(100)).await, 1);

    let (status, _) = read(
        app.request(Method::POST, ALICE, "/zones")
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = read(
        app.request(Method::POST, ALICE, "/zones")
            .header("content-type", "text/plain")
            .body("{\"name\": \"edge\"}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = read(
        app.request(Method::POST, ALICE, "/zones")
            .header("content-type", "application/json")
            .body(vec![b' '; 1024 * 1024 + 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = start().await;
    let (status, _) = app.get(ALICE, "/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .request(Method::DELETE, ALICE, "/zones")
        .send()
        .await
        .unwrap();
    let allow = response
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, _) = read(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.as_deref(), Some("GET,HEAD,POST"));
}

#[tokio::test]
async fn a_subnet_is_deleted_by_its_tenant_only() {
    let app = start().await;
    let zone = app.create_zone(ALICE, "edge").await;
    let (_, added) = app
        .post(
            ALICE,
            &format!("/zones/{zone}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.1" }, { "subnet": "192.0.2.2" }] }),
        )
        .await;
    let first = added["data"][0]["id"].as_i64().unwrap();
    let path = format!("/zones/{zone}/subnets/{first}");

    let other = app.create_zone(ALICE, "core").await;
    for (tenant, path) in [
        (BOB, path.clone()),
        (ALICE, format!("/zones/{other}/subnets/{first}")),
        (ALICE, format!("/zones/{zone}/subnets/x")),
    ] {
        let (status, _) = read(
            app.request(Method::DELETE, tenant, &path)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{tenant} {path}");
    }
    assert_eq!(app.subnets(ALICE, zone).await.len(), 2);

    let (status, body) = read(
        app.request(Method::DELETE, ALICE, &path)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(app.subnets(ALICE, zone).await, ["192.0.2.2/32"]);
    let (status, _) = read(
        app.request(Method::DELETE, ALICE, &path)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Freed, the subnet can be added again, by anyone.
    let bobs = app.create_zone(BOB, "edge").await;
    let (status, _) = app
        .post(
            BOB,
            &format!("/zones/{bobs}/subnets"),
            json!({ "data": [{ "subnet": "192.0.2.1/32" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_in_memory_database_keeps_its_data() {
    let zones = Zones::open("sqlite::memory:").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, zones, std::future::pending()));
    let app = App {
        base,
        client: Client::new(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let zone = app.create_zone(ALICE, "edge").await;
    let (status, _) = app.get(ALICE, &format!("/zones/{zone}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn the_binary_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("zones.db").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zones"))
        .args(["--listen", "0.0.0.0:0", "--database", &database])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0: it is not a loopback address"),
        "{stderr}"
    );
    assert!(!dir.path().join("zones.db").exists(), "nothing is created");
}

#[cfg(unix)]
#[test]
fn the_binary_serves_on_loopback_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut zones = Command::new(env!("CARGO_BIN_EXE_zones"))
        .env("ZONES_LISTEN", "127.0.0.1:0")
        .env(
            "ZONES_DATABASE",
            format!("sqlite://{}", dir.path().join("zones.db").display()),
        )
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(zones.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let address = line
        .split("zones listening on http://")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        Client::new()
            .get(format!("http://{address}/zones"))
            .header("x-keygate-tenant-id", ALICE)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, StatusCode::OK);

    let killed = Command::new("kill")
        .args(["-TERM", &zones.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(zones.wait().unwrap().success(), "stops cleanly on SIGTERM");
    assert!(dir.path().join("zones.db").exists());
}
