//! The OpenAPI 3.1 document, generated from the handlers and types themselves (utoipa), so the
//! routes and their documentation cannot drift apart.
//!
//! A handler's `#[utoipa::path]` lists what is particular to it: its success, and the problems
//! only it answers (a 404 for its object, a 409 for its conflict), each with a description.
//! The problems that follow from an operation's shape are added here, from that shape, so they
//! are never forgotten and never written twice: every operation can meet the header limit (431)
//! and a bug (500); one that takes a credential, a refused or ambiguous credential (400, 401),
//! an address outside the allowlist or a missing permission (403), a rate limit (429) and an
//! unreachable store (503); one with a JSON body, a bad, oversized or non-JSON body (400, 413,
//! 415), and one with another body (OAuth's forms), an oversized one (413); one with query
//! parameters, a bad query (400). Every error response is a [`Problem`], unless the handler
//! documents a body of its own for its status (OAuth's RFC 6749 errors): then the problem that
//! the shape implies is documented next to it, as a second content type, since the server may
//! answer either. Every response carries `X-Request-Id`.

use std::collections::btree_map::Entry;

use serde_json::Value;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayItems, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Deprecated, Header, HeaderBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::problem::{ApiError, FieldError, PROBLEM_JSON, ProblemCode};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "API access platform: tenants, users, roles, tokens, account keys, \
            IP allowlists, OAuth clients, audit log, usage, and verification for other services.\n\n\
            Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    // Relative: the keygate that serves this document, wherever it is reached (the explorer and
    // generated clients resolve it against the document's own URL).
    servers((url = "/", description = "The keygate that serves this document")),
    paths(
        crate::routes::forward_auth::get_below,
        crate::routes::forward_auth::post_below,
        crate::routes::forward_auth::put_below,
        crate::routes::forward_auth::patch_below,
        crate::routes::forward_auth::delete_below,
        crate::routes::forward_auth::head_below,
        crate::routes::forward_auth::options_below,
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&SecuritySchemes),
    // Every operation takes a credential in any of the four places, unless it says otherwise.
    security(("bearer" = []), ("basic" = []), ("apikey" = []), ("cookie" = [])),
    tags(
        (name = "identity", description = "Who a credential is and what it may do"),
        (name = "sessions", description = "Signing in and out with email and password"),
        (name = "tenants", description = "Customers and a reseller's sub-customers; act in one with `as-tenant`"),
        (name = "users", description = "People who sign in, each with one role"),
        (name = "roles", description = "Named sets of permissions, and the permission catalog"),
        (name = "tokens", description = "Personal and service tokens"),
        (name = "account", description = "Account keys (rotation) and the IP restriction"),
        (name = "audit", description = "What every credential did: the audit log and its export"),
        (name = "usage", description = "How many requests each credential made, per minute, hour or day and per outcome"),
        (name = "oauth", description = "OAuth 2.0 client credentials: clients, the token endpoint (form-encoded, RFC 6749 errors), revocation, introspection, keys and metadata"),
        (name = "webhooks", description = "Being told of events (Standard Webhooks): endpoints, their deliveries and attempts, retries"),
        (name = "leaks", description = "Leaked credentials: GitHub's secret-scanning reports, and revocation by whoever holds a secret"),
        (name = "verification", description = "Checking credentials for other services"),
        (name = "operations", description = "Health and readiness"),
    ),
)]
pub struct ApiDoc;

/// The four places a credential can be sent from the explorer (API.md §2). `X-API-Key` works
/// the same as `apikey` and is documented in its description.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <credential>` (or the `Token` scheme)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Username: the tenant's slug (its realm). Password: the credential.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "apikey",
                "`apikey: <credential>`; `X-API-Key` is accepted the same way",
            ))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "api_access_token",
                "Cookie `api_access_token=<credential>`",
            ))),
        );
    }
}

/// Adds the problems each operation answers because of its shape (see the module's comment), as
/// shared responses in `components/responses`. Called on the whole document, once every route's
/// operation is in it.
pub struct ProblemResponses;

/// One shared problem response: its name in `components/responses`, its status, and what the
/// example says.
struct Shared {
    name: &'static str,
    code: ProblemCode,
    description: &'static str,
    example_detail: &'static str,
}

const INVALID_REQUEST: Shared = Shared {
    name: "InvalidRequest",
    code: ProblemCode::InvalidRequest,
    description: "invalid-request: malformed JSON, an unknown field or query key, or a value \
        that fails validation (`errors` names each); or ambiguous-credentials: different \
        credentials in different places",
    example_detail: "permissions[0]: `zones:reed` is not a known permission",
};
const UNAUTHENTICATED: Shared = Shared {
    name: "Unauthenticated",
    code: ProblemCode::Unauthenticated,
    description: "unauthenticated: no credential, or one that is malformed, unknown, expired, \
        revoked, of a suspended tenant or of another realm",
    example_detail: "the credential has been revoked",
};
const FORBIDDEN: Shared = Shared {
    name: "Forbidden",
    code: ProblemCode::Forbidden,
    description: "forbidden: the credential lacks a permission (`missing_permissions`); or \
        ip-not-allowed: the caller's address is outside the allowlist",
    example_detail: "this needs tokens:write",
};
const NOT_FOUND: Shared = Shared {
    name: "NotFound",
    code: ProblemCode::NotFound,
    description: "not-found: no such object, or one in a tenant the caller may not see",
    example_detail: "there is no token `tok_0MqX1z8a9bCdEfGhIjKlMn`",
};
const PAYLOAD_TOO_LARGE: Shared = Shared {
    name: "PayloadTooLarge",
    code: ProblemCode::PayloadTooLarge,
    description: "payload-too-large: the body is over the limit (config `limits.body_bytes`)",
    example_detail: "the request body exceeds 1048576 bytes",
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    name: "UnsupportedMediaType",
    code: ProblemCode::UnsupportedMediaType,
    description: "unsupported-media-type: the body is not sent as `application/json`",
    example_detail: "the body must be JSON, sent with Content-Type: application/json",
};
const RATE_LIMITED: Shared = Shared {
    name: "RateLimited",
    code: ProblemCode::RateLimited,
    description: "rate-limited: the credential is over its rate limit; retry after `Retry-After` \
        seconds",
    example_detail: "the credential is over its rate limit",
};
/// Forward-auth's 429: it meets quotas (API.md §13) as well as rate limits.
const QUOTA_EXCEEDED: Shared = Shared {
    name: "QuotaExceeded",
    code: ProblemCode::QuotaExceeded,
    description: "quota-exceeded: the credential's quota (or its organization's pool) for the \
        period is spent; `Retry-After` says when it refills, and is absent for a `total` quota, \
        which never does. Or rate-limited: the credential is over its rate limit; retry after \
        `Retry-After` seconds",
    example_detail: "this credential's quota of 1000 requests is spent; it refills in 1800 s",
};
const HEADERS_TOO_LARGE: Shared = Shared {
    name: "HeadersTooLarge",
    code: ProblemCode::HeadersTooLarge,
    description: "headers-too-large: the request headers are over the limit (config \
        `limits.header_bytes`)",
    example_detail: "the request headers exceed 8192 bytes in total",
};
const UNAVAILABLE: Shared = Shared {
    name: "Unavailable",
    code: ProblemCode::Unavailable,
    description: "unavailable: the store is unreachable or the server is shutting down; retry \
        later",
    example_detail: "the store is unreachable; retry later",
};
const INTERNAL: Shared = Shared {
    name: "Internal",
    code: ProblemCode::Internal,
    description: "internal: a bug, logged with the request id; the body says nothing more",
    example_detail: "",
};

const ALL_SHARED: [&Shared; 11] = [
    &INVALID_REQUEST,
    &UNAUTHENTICATED,
    &FORBIDDEN,
    &NOT_FOUND,
    &PAYLOAD_TOO_LARGE,
    &UNSUPPORTED_MEDIA_TYPE,
    &RATE_LIMITED,
    &QUOTA_EXCEEDED,
    &HEADERS_TOO_LARGE,
    &UNAVAILABLE,
    &INTERNAL,
];

impl Shared {
    fn status(&self) -> String {
        self.code.status().as_u16().to_string()
    }

    fn response(&self) -> Response {
        let error = match self.code {
            ProblemCode::Internal => ApiError::internal(""),
            ProblemCode::Unauthenticated => ApiError::unauthenticated(self.example_detail),
            ProblemCode::InvalidRequest => ApiError::invalid_fields(vec![FieldError {
                field: "permissions[0]".into(),
                message: "`zones:reed` is not a known permission".into(),
            }]),
            code => ApiError::new(code, self.example_detail),
        };
        let example = serde_json::to_value(error.problem("req_0f3kQ2mW9xYbN4")).ok();
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content(PROBLEM_JSON, problem_content(example))
            .header("X-Request-Id", request_id_header())
            .build();
        match self.code {
            ProblemCode::Unauthenticated => {
                let challenge = "The challenge: `Bearer realm=\"keygate\"`";
                response
                    .headers
                    .insert("WWW-Authenticate".into(), text_header(challenge));
            }
            ProblemCode::QuotaExceeded => {
                response.headers.insert(
                    "Retry-After".into(),
                    integer_header("Seconds until the quota refills; absent for a `total` quota"),
                );
            }
            ProblemCode::RateLimited => {
                for (name, description) in [
                    ("Retry-After", "Seconds to wait before retrying"),
                    (
                        "RateLimit-Limit",
                        "Requests the credential may make in the window",
                    ),
                    ("RateLimit-Remaining", "Requests left in the window"),
                    ("RateLimit-Reset", "Seconds until the window is full again"),
                ] {
                    response
                        .headers
                        .insert(name.into(), integer_header(description));
                }
            }
            _ => {}
        }
        response
    }
}

fn problem_content(example: Option<Value>) -> Content {
    let mut content = Content::new(Some(Ref::from_schema_name("Problem")));
    content.example = example;
    content
}

fn text_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

fn request_id_header() -> Header {
    text_header("The request's id: the caller's `X-Request-Id` if sane, else a new one")
}

/// The operations of a path, with their methods.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("get", &item.get),
        ("put", &item.put),
        ("post", &item.post),
        ("delete", &item.delete),
        ("options", &item.options),
        ("head", &item.head),
        ("patch", &item.patch),
        ("trace", &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_ref()?)))
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Whether the operation takes a credential: it has no `security` of its own (so the document's
/// four schemes apply), or one that is not `[{}]`.
fn is_secured(operation: &Operation) -> bool {
    operation
        .security
        .as_ref()
        .is_none_or(|requirements| requirements.iter().any(|r| r != &Default::default()))
}

/// Whether the operation takes a JSON body (and so can meet a malformed or non-JSON one).
fn has_json_body(operation: &Operation) -> bool {
    operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"))
}

fn has_query(operation: &Operation) -> bool {
    operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
}

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for shared in ALL_SHARED {
            components
                .responses
                .insert(shared.name.into(), RefOr::T(shared.response()));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The paths that spend quotas answer both 429s.
            let too_many = if path.starts_with("/v1/forward-auth") {
                &QUOTA_EXCEEDED
            } else {
                &RATE_LIMITED
            };
            for operation in operations_mut(item) {
                let mut shared = vec![&HEADERS_TOO_LARGE, &INTERNAL];
                if is_secured(operation) {
                    shared.extend([
                        &INVALID_REQUEST,
                        &UNAUTHENTICATED,
                        &FORBIDDEN,
                        too_many,
                        &UNAVAILABLE,
                    ]);
                }
                if has_json_body(operation) {
                    shared.extend([
                        &INVALID_REQUEST,
                        &PAYLOAD_TOO_LARGE,
                        &UNSUPPORTED_MEDIA_TYPE,
                    ]);
                } else if operation.request_body.is_some() {
                    shared.push(&PAYLOAD_TOO_LARGE);
                }
                if has_query(operation) {
                    shared.push(&INVALID_REQUEST);
                }
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    complete(status, response);
                }
                for shared in shared {
                    match responses.entry(shared.status()) {
                        Entry::Vacant(entry) => {
                            entry.insert(RefOr::Ref(Ref::from_response_name(shared.name)));
                        }
                        Entry::Occupied(mut entry) => also_a_problem(entry.get_mut(), shared),
                    }
                }
            }
        }
    }
}

/// A handler's own response, completed: the request id header; for an error, the problem body,
/// or the shared response of its status when the handler said nothing more than the status.
fn complete(status: &str, response: &mut RefOr<Response>) {
    let RefOr::T(inline) = response else { return };
    let is_error = status.starts_with(['4', '5']);
    if is_error
        && inline.description.is_empty()
        && inline.content.is_empty()
        && let Some(shared) = ALL_SHARED.iter().find(|s| s.status() == status)
    {
        *response = RefOr::Ref(Ref::from_response_name(shared.name));
        return;
    }
    inline
        .headers
        .entry("X-Request-Id".into())
        .or_insert_with(request_id_header);
    if !is_error {
        return;
    }
    if inline.content.is_empty() {
        inline
            .content
            .insert(PROBLEM_JSON.into(), problem_content(None));
    }
    // A 401 is challenged and a 429 says when to retry, whoever answers them.
    if let Some(shared) = ALL_SHARED.iter().find(|s| s.status() == status) {
        for (name, header) in shared.response().headers {
            inline.headers.entry(name).or_insert(header);
        }
    }
}

/// A handler's own response for a status at which the operation's shape also answers `shared`'s
/// problem: if the handler documented another body (an RFC 6749 error), the problem is added
/// beside it, so that both bodies the server may send are documented.
fn also_a_problem(response: &mut RefOr<Response>, shared: &Shared) {
    let RefOr::T(inline) = response else { return };
    if inline.content.contains_key(PROBLEM_JSON) {
        return;
    }
    let mut problem = shared.response();
    if let Some(content) = problem.content.shift_remove(PROBLEM_JSON) {
        inline.content.insert(PROBLEM_JSON.into(), content);
    }
    for (name, header) in problem.headers {
        inline.headers.entry(name).or_insert(header);
    }
}

/// Makes each list's items a reference to their schema. utoipa writes `List<TokenView>` out as
/// `List_TokenView` with a copy of `TokenView` inlined as its items, which leaves a view that only
/// appears in a list (`PermissionView`) unreferenced, and gives generated clients a second class
/// for every view. The copy is replaced only where it is exactly the named schema.
pub struct ListItemsByReference;

impl Modify for ListItemsByReference {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let named = components.schemas.clone();
        for (name, schema) in components.schemas.iter_mut() {
            let Some(item) = name.strip_prefix("List_") else {
                continue;
            };
            let (Some(RefOr::T(view)), RefOr::T(Schema::Object(list))) = (named.get(item), schema)
            else {
                continue;
            };
            let Some(RefOr::T(Schema::Array(data))) = list.properties.get_mut("data") else {
                continue;
            };
            if let ArrayItems::RefOrSchema(items) = &mut data.items
                && matches!(&**items, RefOr::T(inlined) if inlined == view)
            {
                **items = RefOr::Ref(Ref::from_schema_name(item));
            }
        }
    }
}

/// Marks every operation under `prefix` deprecated and documents the headers its responses then
/// carry (see [`crate::versions`]), once the operator has announced it: the explorer strikes the
/// operations through and generated clients warn.
pub fn announce_deprecation(openapi: &mut utoipa::openapi::OpenApi, prefix: &str) {
    let shared = openapi
        .components
        .as_ref()
        .map(|c| c.responses.clone())
        .unwrap_or_default();
    let resolve = |response: &RefOr<Response>| match response {
        RefOr::T(response) => Some(response.clone()),
        RefOr::Ref(reference) => {
            let name = reference.ref_location.rsplit('/').next()?;
            match shared.get(name)? {
                RefOr::T(response) => Some(response.clone()),
                RefOr::Ref(_) => None,
            }
        }
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let labelled = path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !labelled {
            continue;
        }
        for operation in operations_mut(item) {
            operation.deprecated = Some(Deprecated::True);
            for response in operation.responses.responses.values_mut() {
                let Some(mut inline) = resolve(response) else {
                    continue;
                };
                inline.headers.extend(lifecycle_headers());
                *response = RefOr::T(inline);
            }
        }
    }
    // A shared response that only labelled operations used is now copied into each of them.
    let mut used = std::collections::BTreeSet::new();
    for item in openapi.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for response in operation.responses.responses.values() {
                if let RefOr::Ref(reference) = response {
                    used.insert(reference.ref_location.clone());
                }
            }
        }
    }
    if let Some(components) = openapi.components.as_mut() {
        components
            .responses
            .retain(|name, _| used.contains(&format!("#/components/responses/{name}")));
    }
}

fn lifecycle_headers() -> [(String, Header); 3] {
    let pattern = |description: &str, pattern: &str| {
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern)),
            )
            .description(Some(description))
            .build()
    };
    [
        (
            "Deprecation".into(),
            pattern(
                "RFC 9745: when this version was deprecated, as `@` and Unix seconds",
                "^@-?[0-9]+$",
            ),
        ),
        (
            "Sunset".into(),
            pattern(
                "RFC 8594: when this version stops answering, as an HTTP-date",
                "^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$",
            ),
        ),
        (
            "Link".into(),
            text_header("The policy page, as `rel=\"deprecation\"` and `rel=\"sunset\"` links"),
        ),
    ]
}
