//! The OpenAPI document against the router it is generated with: no route without its
//! documentation and no documented operation without its route, and a document that code
//! generators and the explorer can use as it is.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use keygate_server::problem::{ApiError, ProblemCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::harness::{Backend, TestServer, ok_json, problem};

/// Routes that are not the API: `/` (to the console), the explorer, and the document itself.
const NOT_API: [&str; 6] = [
    "/",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/docs/swagger-initializer.js",
    "/openapi.json",
];

/// The methods probed on every route. `TRACE` and `CONNECT` are not: keygate routes neither on
/// purpose (forward-auth answers any method, but documents the ones proxies send).
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The router's path templates. axum has no API to list them; its `Debug` output names each
/// route as `RouteId(n): "/path"`. Should that output change, this finds nothing and the test
/// below fails instead of passing on an empty list.
fn routed_paths(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    debug
        .split("RouteId(")
        .skip(1)
        .filter_map(|rest| rest.split_once("): \"")?.1.split_once('"'))
        .map(|(path, _)| path.to_owned())
        .filter(|path| !path.contains("__private__axum"))
        .collect()
}

/// The template with its parameters filled in, and as OpenAPI spells it (`{*path}` → `{path}`).
fn concrete_and_documented(template: &str) -> (String, String) {
    let mut concrete = Vec::new();
    let mut documented = Vec::new();
    for segment in template.split('/') {
        match segment.strip_prefix("{*") {
            Some(name) => {
                concrete.push("x/y".to_owned());
                documented.push(format!("{{{name}"));
            }
            None if segment.starts_with('{') => {
                concrete.push("x".to_owned());
                documented.push(segment.to_owned());
            }
            None => {
                concrete.push(segment.to_owned());
                documented.push(segment.to_owned());
            }
        }
    }
    (concrete.join("/"), documented.join("/"))
}

/// Whether `router` has a handler for `method` on `path`: anything but a 405 or the fallback's
/// "no such route" means a handler answered (most with a 401: the probe carries no credential).
async fn routes(router: &axum::Router, method: &Method, path: &str) -> bool {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return false;
    }
    let fallback = response
        .extensions()
        .get::<ApiError>()
        .is_some_and(|error| {
            error.code == ProblemCode::NotFound
                && error
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("there is no such route"))
        });
    !fallback
}

/// `(documented path, method)` for every route `router` answers, found by probing.
async fn routed_operations(router: &axum::Router) -> BTreeSet<(String, String)> {
    let mut routed = BTreeSet::new();
    for template in routed_paths(router) {
        // The console's pages (API.md §11) are for browsers, not part of the API.
        if NOT_API.contains(&template.as_str()) || template.starts_with("/console") {
            continue;
        }
        let (concrete, documented) = concrete_and_documented(&template);
        for method in &METHODS {
            if routes(router, method, &concrete).await {
                routed.insert((documented.clone(), method.as_str().to_lowercase()));
            }
        }
    }
    routed
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    documented
}

/// What one side has and the other lacks. axum answers `HEAD` with the `GET` handler, which
/// needs no documentation of its own.
fn differences(
    routed: &BTreeSet<(String, String)>,
    documented: &BTreeSet<(String, String)>,
) -> (Vec<String>, Vec<String>) {
    let implicit_head = |(path, method): &&(String, String)| {
        method == "head"
            && routed.contains(&(path.clone(), "get".to_owned()))
            && !documented.contains(&(path.clone(), "head".to_owned()))
    };
    let undocumented = routed
        .difference(documented)
        .filter(|op| !implicit_head(op))
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    let unrouted = documented
        .difference(routed)
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    (undocumented, unrouted)
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_routed() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let documented = documented_operations(&doc);
    let router = keygate_server::router(server.state.clone());

    let paths = routed_paths(&router);
    assert!(
        paths.contains("/v1/whoami") && paths.contains("/v1/forward-auth/{*path}"),
        "the router's paths could not be read: {paths:?}"
    );
    let routed = routed_operations(&router).await;
    let (undocumented, unrouted) = differences(&routed, &documented);
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // And the check does catch a route added outside utoipa.
    let extended = router
        .route("/v1/undocumented/{id}", axum::routing::put(|| async { "" }))
        .route("/v1/whoami", axum::routing::delete(|| async { "" }));
    let (undocumented, _) = differences(&routed_operations(&extended).await, &documented);
    assert_eq!(
        undocumented,
        ["PUT /v1/undocumented/{id}", "DELETE /v1/whoami"]
    );
}

#[tokio::test]
async fn the_security_schemes_are_exactly_the_four_credential_places() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let mut schemes = doc["components"]["securitySchemes"].clone();
    for scheme in schemes.as_object_mut().unwrap().values_mut() {
        scheme.as_object_mut().unwrap().remove("description");
    }
    assert_eq!(
        schemes,
        json!({
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic"},
            "apikey": {"type": "apiKey", "in": "header", "name": "apikey"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "api_access_token"},
        })
    );
}

#[tokio::test]
async fn operations_are_named_tagged_and_answer_problems_for_code_generators() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let at = format!("{} {path}", method.to_uppercase());
            let id = operation["operationId"].as_str().unwrap_or_default();
            let camel = id.starts_with(|c: char| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric());
            assert!(camel, "{at}: operationId `{id}` is not camelCase");
            if let Some(other) = ids.insert(id.to_owned(), at.clone()) {
                panic!("{at} and {other} share the operationId `{id}`");
            }
            let own_tags = operation["tags"].as_array().unwrap();
            assert_eq!(own_tags.len(), 1, "{at}: one tag per resource");
            assert!(
                tags.contains(own_tags[0].as_str().unwrap()),
                "{at}: undeclared tag"
            );
            let summary = operation["summary"].as_str().unwrap_or_default();
            if let Some(why) = not_plain(summary) {
                panic!("{at}: the summary {summary:?} is {why}");
            }

            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success response"
            );
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(
                    response["headers"]["X-Request-Id"].is_object(),
                    "{at} {status}: X-Request-Id"
                );
                // A problem, unless the operation documents another error body of its own
                // (OAuth's token endpoint answers as RFC 6749 says).
                if status.starts_with(['4', '5']) {
                    let content = response["content"].as_object().unwrap();
                    let problem = &content.get("application/problem+json");
                    assert!(
                        problem
                            .is_none_or(|p| p["schema"]["$ref"] == "#/components/schemas/Problem")
                            && content.values().all(|c| c["schema"].is_object()),
                        "{at} {status}: an error without its body"
                    );
                    assert!(
                        !content.is_empty(),
                        "{at} {status}: an error without a body"
                    );
                }
            }
            let secured = operation.get("security") != Some(&json!([{}]));
            for status in ["431", "500"].into_iter().chain(
                secured
                    .then_some(["400", "401", "403", "429", "503"])
                    .into_iter()
                    .flatten(),
            ) {
                assert!(responses.contains_key(status), "{at}: no {status}");
            }
            if let Some(body) = operation.get("requestBody") {
                // The explorer fills "Try it out" with it. (The OAuth endpoints take forms, as
                // RFC 6749 says, and document their fields instead.)
                // A body that may also be `null` (a quota's removal) names its schema in a
                // `oneOf` beside the null.
                let schema = &body["content"]["application/json"]["schema"];
                let named = schema["$ref"].as_str().or_else(|| {
                    schema["oneOf"]
                        .as_array()?
                        .iter()
                        .find_map(|s| s["$ref"].as_str())
                });
                match named {
                    Some(schema) => {
                        let name = schema.rsplit('/').next().unwrap();
                        let example = &doc["components"]["schemas"][name]["example"];
                        // An object, or an array where the format is one (GitHub's reports).
                        assert!(
                            example.is_object() || example.is_array(),
                            "{at}: no example request"
                        );
                    }
                    None => assert!(
                        body["content"]["application/x-www-form-urlencoded"]["schema"].is_object(),
                        "{at}: a body that is neither JSON nor a documented form"
                    ),
                }
                // A JSON body can be malformed or not JSON at all; any body can be too large.
                let json = body["content"]["application/json"].is_object();
                let statuses: &[&str] = if json {
                    &["400", "413", "415"]
                } else {
                    &["413"]
                };
                for status in statuses {
                    assert!(responses.contains_key(*status), "{at}: no {status}");
                }
                if !json {
                    assert!(
                        !responses.contains_key("415"),
                        "{at}: a 415 it cannot answer"
                    );
                }
            }
        }
    }
    // The server is the one that serves the document, wherever that is reached; the license is
    // named by its SPDX identifier, the crate's own.
    assert_eq!(doc["servers"][0]["url"], "/");
    assert_eq!(doc["servers"].as_array().unwrap().len(), 1);
    assert_eq!(
        doc["info"]["license"]["identifier"],
        env!("CARGO_PKG_LICENSE")
    );

    let challenge = resolve(&doc, &doc["paths"]["/v1/whoami"]["get"]["responses"]["401"]);
    assert!(challenge["headers"]["WWW-Authenticate"].is_object());
    let limited = resolve(&doc, &doc["paths"]["/v1/whoami"]["get"]["responses"]["429"]);
    assert!(limited["headers"]["Retry-After"].is_object());
    let example = &challenge["content"]["application/problem+json"]["example"];
    assert_eq!(example["code"], "unauthenticated");
    assert_eq!(example["status"], 401);
}

/// Why `summary` is not a short line of plain text, if it is not. Explorers and generated
/// clients show a summary as it is, and utoipa makes it from a handler doc comment's first
/// paragraph, so Markdown there would show literally. Descriptions may use Markdown.
fn not_plain(summary: &str) -> Option<&'static str> {
    const MARKDOWN: [char; 9] = ['`', '*', '_', '[', ']', '<', '>', '#', '\\'];
    if summary.is_empty() {
        Some("empty")
    } else if summary.contains(MARKDOWN) {
        Some("Markdown")
    } else if summary.contains('\n') || summary.trim() != summary || summary.len() > 80 {
        Some("not one short line")
    } else {
        None
    }
}

#[test]
fn the_summary_check_catches_markdown() {
    for summary in [
        "Needs `tokens:read`",
        "**Create** a token",
        "See [the RFC](https://www.rfc-editor.org/rfc/rfc7662)",
        "List tokens, newest first; filters repeat\n(?status=active)",
        "",
    ] {
        assert!(not_plain(summary).is_some(), "{summary:?} passed");
    }
    assert_eq!(
        not_plain("Get the authorization server's metadata (RFC 8414)"),
        None
    );
}

/// Every `$ref` in `value`.
fn references<'a>(value: &'a Value, found: &mut BTreeSet<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => {
                        found.insert(reference);
                    }
                    _ => references(value, found),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn every_component_is_used_and_lists_name_their_items() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let mut found = BTreeSet::new();
    references(&doc, &mut found);
    for kind in ["schemas", "responses"] {
        for name in doc["components"][kind].as_object().unwrap().keys() {
            let reference = format!("#/components/{kind}/{name}");
            assert!(found.contains(reference.as_str()), "{reference} is unused");
        }
    }
    // A view that only a list answers is its items' schema, not an inlined copy beside it.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let lists: Vec<&String> = schemas.keys().filter(|n| n.starts_with("List_")).collect();
    assert!(lists.len() >= 5, "{lists:?}");
    for list in lists {
        let items = &schemas[list]["properties"]["data"]["items"];
        let view = list.strip_prefix("List_").unwrap();
        assert_eq!(
            items["$ref"],
            format!("#/components/schemas/{view}"),
            "{list}'s items"
        );
    }
    let permissions = &doc["paths"]["/v1/permissions"]["get"]["responses"]["200"];
    assert_eq!(
        permissions["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/List_PermissionView"
    );
}

/// A response, following its `$ref` into `components/responses`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["responses"][name]
        }
        None => response,
    }
}

#[tokio::test]
async fn only_the_forward_auth_check_itself_takes_require_and_cost_in_its_query() {
    let server = TestServer::start(Backend::Sqlite).await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let query = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
        assert_eq!(
            query("/v1/forward-auth", method),
            ["cost".to_owned(), "require".to_owned()].into()
        );
        // Below it, the query is the original request's (Envoy appends it), not keygate's.
        assert!(
            query("/v1/forward-auth/{path}", method).is_empty(),
            "{method}"
        );
    }
}

/// Whether the document says that `method path` may answer `status` with `content_type`.
fn documents(doc: &Value, method: &str, path: &str, status: u16, content_type: &str) -> bool {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    resolve(doc, response)["content"][content_type].is_object()
}

/// Asserts that the document describes `response`, the answer of `method path`.
fn assert_documented(doc: &Value, method: &str, path: &str, response: &reqwest::Response) {
    let status = response.status().as_u16();
    let Some(content_type) = response.headers().get("content-type") else {
        let documented = &doc["paths"][path][method]["responses"][status.to_string()];
        assert!(
            documented.is_object() && resolve(doc, documented).get("content").is_none(),
            "{method} {path} answered {status} without a body, which the document does not say"
        );
        return;
    };
    let content_type = content_type.to_str().unwrap();
    let media_type = content_type.split(';').next().unwrap().trim();
    assert!(
        documents(doc, method, path, status, media_type),
        "{method} {path} answered {status} {media_type}, which the document does not say"
    );
}

#[tokio::test]
async fn the_oauth_endpoints_document_their_problems_beside_their_own_errors() {
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.rate_limit.requests = Some(4);
        config.rate_limit.per_seconds = Some(3600);
    })
    .await;
    let doc: Value = ok_json(server.get("/openapi.json").send().await.unwrap()).await;
    let (id, secret) = crate::oauth::create_client(&server, "viewer", None).await;
    let introspect = |headers: &[(&str, &str)]| {
        let mut request = server.post("/v1/oauth/introspect").form(&[("token", "x")]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    // A keygate credential is refused with a problem, a client with an RFC 6749 error, and the
    // 400 and 401 document both. (An empty `apikey` is how schemathesis found the first.)
    let empty = introspect(&[("apikey", "")]).await.unwrap();
    assert_documented(&doc, "post", "/v1/oauth/introspect", &empty);
    problem(empty, 401, "unauthenticated").await;
    let twice = introspect(&[
        ("apikey", &server.token),
        ("x-api-key", "kg_service_live_another"),
    ])
    .await
    .unwrap();
    assert_documented(&doc, "post", "/v1/oauth/introspect", &twice);
    problem(twice, 400, "ambiguous-credentials").await;
    let wrong_secret = server
        .post("/v1/oauth/introspect")
        .basic_auth(&id, Some("kg_secret_live_wrong"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), 401);
    assert_documented(&doc, "post", "/v1/oauth/introspect", &wrong_secret);
    let no_token = server
        .post("/v1/oauth/introspect")
        .basic_auth(&id, Some(&secret))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 400);
    assert_documented(&doc, "post", "/v1/oauth/introspect", &no_token);

    // A client over its rate limit is told so with a problem wherever it authenticates.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let revoked = server
            .post("/v1/oauth/revoke")
            .basic_auth(&id, Some(&secret))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
        assert_documented(&doc, "post", "/v1/oauth/revoke", &revoked);
        statuses.push(revoked.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Forms are not JSON: a body in another type is an RFC 6749 error, never a 415.
    for path in [
        "/v1/oauth/token",
        "/v1/oauth/revoke",
        "/v1/oauth/introspect",
    ] {
        let responses = &doc["paths"][path]["post"]["responses"];
        assert!(responses.get("415").is_none(), "{path} documents a 415");
        assert!(responses.get("413").is_some(), "{path} lacks the 413");
    }
}
