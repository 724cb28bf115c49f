//! What every list shares (API.md §1): `?id=a&id=b` picks items by id, newest first as always,
//! paged by `limit` and `cursor` like the whole list, and never shows another tenant's.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, problem};

on_every_backend!(every_list_filters_by_repeated_ids);

/// The ids a list page shows, in its order.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {page}"))
        .iter()
        .map(|item| {
            // A client's id is `client_id`; a permission's, its name.
            ["id", "client_id", "name"]
                .iter()
                .find_map(|key| item[key].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Every page of `path` (which already has a query) read `limit` items at a time.
async fn all_pages(server: &TestServer, token: &str, path: &str, limit: u32) -> Vec<String> {
    let mut found = Vec::new();
    let mut next = format!("{path}&limit={limit}");
    loop {
        let page = server.expect(200, Method::GET, &next, token, None).await;
        let shown = ids(&page);
        assert!(shown.len() <= limit as usize, "{page}");
        found.extend(shown);
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}&limit={limit}&cursor={cursor}"),
            None => return found,
        }
    }
}

/// Makes three of a resource (`body` of each number); their ids, oldest first.
async fn three(server: &TestServer, path: &str, body: impl Fn(usize) -> Value) -> Vec<String> {
    let mut made = Vec::new();
    for n in 0..3 {
        let created = server
            .expect(201, Method::POST, path, &server.token, Some(body(n)))
            .await;
        let id = ["id", "client_id"]
            .iter()
            .find_map(|key| created[key].as_str())
            .or_else(|| created["tenant"]["id"].as_str())
            .unwrap_or_else(|| panic!("no id in {created}"));
        made.push(id.to_owned());
    }
    made
}

async fn every_list_filters_by_repeated_ids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let lists = [
        (
            "/v1/users",
            three(&server, "/v1/users", |n| {
                json!({"email": format!("u{n}@example.com"), "name": "U", "role": "viewer"})
            })
            .await,
        ),
        (
            "/v1/roles",
            three(&server, "/v1/roles", |n| {
                json!({"name": format!("role{n}"), "permissions": ["tokens:read"]})
            })
            .await,
        ),
        (
            "/v1/tokens",
            three(&server, "/v1/tokens", |n| {
                json!({"kind": "service", "name": format!("t{n}"), "role": "viewer"})
            })
            .await,
        ),
        (
            "/v1/oauth/clients",
            three(&server, "/v1/oauth/clients", |n| {
                json!({"name": format!("c{n}"), "role": "viewer"})
            })
            .await,
        ),
        (
            "/v1/tenants",
            three(&server, "/v1/tenants", |n| json!({"name": format!("Customer {n}")})).await,
        ),
        (
            "/v1/webhooks",
            three(&server, "/v1/webhooks", |n| {
                json!({"url": format!("https://hooks.example.com/{n}"), "events": ["token.created"]})
            })
            .await,
        ),
    ];
    for (path, made) in &lists {
        // The first and the last, newest first; a page of one at a time gives the same.
        let query = format!("{path}?id={}&id={}", made[0], made[2]);
        let picked = ids(&server
            .expect(200, Method::GET, &query, &server.token, None)
            .await);
        assert_eq!(picked, [made[2].clone(), made[0].clone()], "{query}");
        assert_eq!(
            all_pages(&server, &server.token, &query, 1).await,
            picked,
            "{query}"
        );
        // An id that names nothing here only matches nothing.
        let none = format!("{path}?id=usr_0000000000000000000000&id=nonsense");
        let answer = server
            .expect(200, Method::GET, &none, &server.token, None)
            .await;
        assert_eq!(answer, json!({"data": [], "next_cursor": null}), "{none}");
        // Without the filter the list is whole.
        let whole = ids(&server
            .expect(200, Method::GET, path, &server.token, None)
            .await);
        assert!(
            made.iter().all(|id| whole.contains(id)),
            "{path}: {whole:?}"
        );
    }

    // The audit log and the permission catalog take it too (a permission's id is its name).
    let events = ids(&server
        .expect(
            200,
            Method::GET,
            "/v1/audit-events?limit=3",
            &server.token,
            None,
        )
        .await);
    let query = format!("/v1/audit-events?id={}&id={}", events[2], events[0]);
    let picked = ids(&server
        .expect(200, Method::GET, &query, &server.token, None)
        .await);
    assert_eq!(picked, [events[0].clone(), events[2].clone()]);
    let permissions = all_pages(
        &server,
        &server.token,
        "/v1/permissions?id=users:read&id=tokens:write&id=nothing:here",
        1,
    )
    .await;
    assert_eq!(
        permissions,
        ["tokens:write", "users:read"],
        "in the catalog's order"
    );

    // A child tenant's token sees none of its parent's objects, named by id or not.
    let child = &lists[4].1[0];
    let child_service = server
        .client
        .post(format!("{}/v1/tokens", server.base))
        .bearer_auth(&server.token)
        .header("as-tenant", child.as_str())
        .json(&json!({"kind": "service", "name": "child's", "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(child_service.status(), 201);
    let child_secret = child_service.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, made) in &lists[..4] {
        let query = format!("{path}?id={}&id={}", made[0], made[1]);
        let answer = server
            .expect(200, Method::GET, &query, &child_secret, None)
            .await;
        assert_eq!(ids(&answer), Vec::<String>::new(), "{query} from the child");
    }

    // At most 500 ids at once, and the refusal names the key.
    let many: Vec<String> = (0..501).map(|n| format!("id=usr_{n}")).collect();
    let response = server
        .client
        .get(format!("{}/v1/users?{}", server.base, many.join("&")))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let refused = problem(response, 400, "invalid-request").await;
    assert_eq!(refused["errors"][0]["field"], "id", "{refused}");
}
