//! `/v1/forward-auth` (API.md §9): the check nginx `auth_request`, Traefik ForwardAuth and Envoy
//! `ext_authz` (HTTP) send for each request they are about to let through.
//!
//! The original request's credential headers are read as on any endpoint (so the same places,
//! realm, `as-tenant`, allowlists and rate limits apply), the client address from
//! `X-Forwarded-For` when the proxy is trusted, and `X-Keygate-Require` names permissions the
//! credential must hold. An allowed request gets a 200 with an **empty body** (nginx keeps the
//! connection alive only for an empty answer) and identity headers for the upstream; a refused one
//! the problem response (401, 403 or 429) the proxy passes on.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use keygate_core::access::Caller;

use crate::auth::Authenticated;
use crate::problem::{ApiError, Problem};

const REQUIRE: HeaderName = HeaderName::from_static("x-keygate-require");

/// The permissions asked for: `X-Keygate-Require` headers and `require` query parameters (for
/// proxies that cannot add a header to the check, such as Traefik), each comma-separated.
fn required(headers: &HeaderMap, query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut permissions = Vec::new();
    for value in headers.get_all(REQUIRE) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid("X-Keygate-Require is not readable text"))?;
        permissions.extend(value.split(',').map(str::trim).map(str::to_owned));
    }
    let pairs: Vec<(String, String)> = serde_html_form::from_str(query.unwrap_or_default())
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    for (key, value) in pairs {
        if key == "require" {
            permissions.extend(value.split(',').map(str::trim).map(str::to_owned));
        }
    }
    permissions.retain(|p| !p.is_empty());
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
    uri: Uri,
) -> Result<Response, ApiError> {
    // A permission the catalog does not know is one no credential holds: refused, naming it.
    caller.require_all(&required(&headers, uri.query())?)?;
    let mut response = StatusCode::OK.into_response();
    for (name, value) in identity_headers(&caller) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

macro_rules! forward_auth {
    ($($method:ident => $handler:ident, $operation:literal, $path:literal $(, $extra:tt)?;)*) => {
        $(
            /// Allow or refuse a request a proxy is about to pass on. Empty body on allow, with
            /// `X-Keygate-Tenant-Id`, `X-Keygate-Acting-Tenant-Id` (the tenant acted in, the
            /// credential's own without `as-tenant`), `X-Keygate-Principal-Id`,
            /// `X-Keygate-Credential-Id` and `X-Keygate-Permissions`. Any path below
            /// `/v1/forward-auth/` is the same check (Envoy appends the original path).
            #[utoipa::path($method, path = $path, tag = "verification",
                operation_id = $operation,
                params(
                    $($extra,)?
                    ("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require)"),
                    ("X-Keygate-Require" = Option<String>, Header, description = "Permissions the credential must hold, comma-separated"),
                    ("X-Forwarded-For" = Option<String>, Header, description = "The client, as the (trusted) proxy saw it"),
                    ("X-Forwarded-Method" = Option<String>, Header, description = "The original method (also X-Original-Method)"),
                    ("X-Forwarded-Uri" = Option<String>, Header, description = "The original URI (also X-Original-URI)"),
                ),
                responses(
                    (status = 200, description = "Allowed; empty body, identity in the headers"),
                    (status = 400, body = Problem, content_type = "application/problem+json"),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, description = "forbidden (a required permission) or ip-not-allowed", body = Problem, content_type = "application/problem+json"),
                    (status = 429, description = "rate-limited", body = Problem, content_type = "application/problem+json"),
                ))]
            pub async fn $handler(caller: Authenticated, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
                check(caller, headers, uri).await
            }
        )*
    };
}

forward_auth! {
    get => get, "forwardAuthGet", "/v1/forward-auth";
    post => post, "forwardAuthPost", "/v1/forward-auth";
    put => put, "forwardAuthPut", "/v1/forward-auth";
    patch => patch, "forwardAuthPatch", "/v1/forward-auth";
    delete => delete, "forwardAuthDelete", "/v1/forward-auth";
    head => head, "forwardAuthHead", "/v1/forward-auth";
    options => options, "forwardAuthOptions", "/v1/forward-auth";
    get => get_below, "forwardAuthGetPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    post => post_below, "forwardAuthPostPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    put => put_below, "forwardAuthPutPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    patch => patch_below, "forwardAuthPatchPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    delete => delete_below, "forwardAuthDeletePath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    head => head_below, "forwardAuthHeadPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
    options => options_below, "forwardAuthOptionsPath", "/v1/forward-auth/{path}", ("path" = String, Path, description = "The original request's path, as Envoy appends it");
}
