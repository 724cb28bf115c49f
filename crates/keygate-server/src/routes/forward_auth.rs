//! `/v1/forward-auth` (API.md §9): the check nginx `auth_request`, Traefik ForwardAuth and Envoy
//! `ext_authz` (HTTP) send for each request they are about to let through.
//!
//! The original request's credential headers are read as on any endpoint (so the same places,
//! realm, `as-tenant`, allowlists and rate limits apply), the client address from
//! `X-Forwarded-For` when the proxy is trusted, and `X-Keygate-Require` names permissions the
//! credential must hold. An allowed request gets a 200 with an **empty body** (nginx keeps the
//! connection alive only for an empty answer) and identity headers for the upstream; a refused one
//! the problem response (401, 403 or 429) the proxy passes on.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::access::Caller;

use crate::auth::Authenticated;
use crate::problem::{ApiError, Problem};

const REQUIRE: HeaderName = HeaderName::from_static("x-keygate-require");

/// The permissions `X-Keygate-Require` asks for: comma-separated, in any number of headers.
fn required(headers: &HeaderMap) -> Result<Vec<&str>, ApiError> {
    let mut permissions = Vec::new();
    for value in headers.get_all(REQUIRE) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid("X-Keygate-Require is not readable text"))?;
        permissions.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
    }
    Ok(permissions)
}

fn identity_headers(caller: &Caller) -> Vec<(&'static str, String)> {
    let verified = caller.verified();
    let permissions: Vec<&str> = verified.permissions.iter().map(|p| p.as_str()).collect();
    vec![
        ("x-keygate-tenant-id", verified.tenant.id.to_string()),
        ("x-keygate-acting-tenant-id", caller.scope().to_string()),
        ("x-keygate-principal-id", verified.principal.id.clone()),
        (
            "x-keygate-credential-id",
            verified.credential.id.to_string(),
        ),
        ("x-keygate-permissions", permissions.join(",")),
    ]
}

async fn check(
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A permission the catalog does not know is one no credential holds: refused, naming it.
    caller.require_all(&required(&headers)?)?;
    let mut response = StatusCode::OK.into_response();
    for (name, value) in identity_headers(&caller) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

macro_rules! forward_auth {
    ($($method:ident => $handler:ident, $operation:literal;)*) => {
        $(
            /// Allow or refuse a request a proxy is about to pass on. Empty body on allow, with
            /// `X-Keygate-Tenant-Id`, `X-Keygate-Acting-Tenant-Id` (the tenant acted in, the
            /// credential's own without `as-tenant`), `X-Keygate-Principal-Id`,
            /// `X-Keygate-Credential-Id` and `X-Keygate-Permissions`.
            #[utoipa::path($method, path = "/v1/forward-auth", tag = "verification",
                operation_id = $operation,
                params(
                    ("X-Keygate-Require" = Option<String>, Header, description = "Permissions the credential must hold, comma-separated"),
                    ("X-Forwarded-For" = Option<String>, Header, description = "The client, as the (trusted) proxy saw it"),
                    ("X-Forwarded-Method" = Option<String>, Header, description = "The original method (also X-Original-Method)"),
                    ("X-Forwarded-Uri" = Option<String>, Header, description = "The original URI (also X-Original-URI)"),
                ),
                responses(
                    (status = 200, description = "Allowed; empty body, identity in the headers"),
                    (status = 400, body = Problem, content_type = "application/problem+json"),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, description = "forbidden (X-Keygate-Require) or ip-not-allowed", body = Problem, content_type = "application/problem+json"),
                    (status = 429, description = "rate-limited", body = Problem, content_type = "application/problem+json"),
                ))]
            pub async fn $handler(caller: Authenticated, headers: HeaderMap) -> Result<Response, ApiError> {
                check(caller, headers).await
            }
        )*
    };
}

forward_auth! {
    get => get, "forwardAuthGet";
    post => post, "forwardAuthPost";
    put => put, "forwardAuthPut";
    patch => patch, "forwardAuthPatch";
    delete => delete, "forwardAuthDelete";
    head => head, "forwardAuthHead";
    options => options, "forwardAuthOptions";
}
