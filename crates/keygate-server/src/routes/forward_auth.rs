//! `/v1/forward-auth` (API.md §9): the check nginx `auth_request`, Traefik ForwardAuth and Envoy
//! `ext_authz` (HTTP) send for each request they are about to let through.
//!
//! The original request's credential headers are read as on any endpoint (so the same places,
//! realm, `as-tenant`, allowlists and rate limits apply), the client address from
//! `X-Forwarded-For` when the proxy is trusted, and `X-Keygate-Require` names permissions the
//! credential must hold. On the check's own path a `require` query parameter does too, for proxies
//! that cannot add a header (Traefik); below it the query is the original request's (Envoy
//! appends the path and query it is about to pass on), so it is never read there: a client must
//! not choose what it is checked for, and an API's own `require` parameter must not be refused.
//! An allowed request gets a 200 with an **empty body** (nginx keeps the
//! connection alive only for an empty answer) and identity headers for the upstream; a refused one
//! the problem response (401, 403 or 429) the proxy passes on.

use axum::body::Body;
use std::net::IpAddr;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::Response;
use keygate_core::access::Caller;
use keygate_core::reserve::MAX_COST;

use crate::auth::admit;
use crate::paths::ForwardAuthRoute;
use crate::problem::ApiError;
use crate::request::ClientIp;
use crate::state::AppState;

const REQUIRE: HeaderName = HeaderName::from_static("x-keygate-require");
const COST: HeaderName = HeaderName::from_static("x-keygate-cost");
const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-keygate-quota-remaining");

/// The values of the proxy's own headers to the check, `X-Keygate-Require` and `X-Keygate-Cost`,
/// found in one walk over the request's headers. A proxy sets them for some routes, so most
/// checks have neither: comparing the few names a check carries costs less than hashing both
/// names for lookups that find nothing (some 350 instructions of each check).
struct ProxyHeaders<'a> {
    require: Vec<&'a HeaderValue>,
    cost: Vec<&'a HeaderValue>,
}

impl<'a> ProxyHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut found = Self {
            require: Vec::new(),
            cost: Vec::new(),
        };
        for (name, value) in headers {
            if name == REQUIRE {
                found.require.push(value);
            } else if name == COST {
                found.cost.push(value);
            }
        }
        found
    }
}

/// What the request spends from quotas: a `cost` query parameter on the check's own path (for
/// proxies that cannot add a header to the check, Traefik; it wins over any header, which the
/// client may have sent), else `X-Keygate-Cost` (set by the proxy per route), else 1. Only the
/// proxy sets them, so a bad one is the operator's mistake: refused, naming it.
fn cost(headers: &ProxyHeaders, query: Option<&str>) -> Result<u64, ApiError> {
    let parse = |name: &str, text: Option<&str>| {
        text.and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|cost| *cost <= MAX_COST)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "{name} must be a whole number from 0 to {MAX_COST}"
                ))
            })
    };
    if let Some(query) = query {
        let pairs: Vec<(String, String)> = serde_html_form::from_str(query)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
        let mut costs = pairs.iter().filter(|(key, _)| key == "cost");
        if let Some((_, value)) = costs.next() {
            if costs.next().is_some() {
                return Err(ApiError::invalid("cost is given more than once"));
            }
            return parse("cost", Some(value));
        }
    }
    match headers.cost[..] {
        [] => Ok(1),
        [value] => parse("X-Keygate-Cost", value.to_str().ok()),
        _ => Err(ApiError::invalid("X-Keygate-Cost is given more than once")),
    }
}

/// The permissions asked for: `X-Keygate-Require` headers and, on the check's own path, `require`
/// query parameters (for proxies that cannot add a header to the check, such as Traefik), each
/// comma-separated. `query` is `None` below the check's path, where it is the client's.
fn required(headers: &ProxyHeaders, query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut permissions = Vec::new();
    for value in &headers.require {
        let value = value
            .to_str()
            .map_err(|_| ApiError::invalid("X-Keygate-Require is not readable text"))?;
        permissions.extend(value.split(',').map(str::trim).map(str::to_owned));
    }
    if let Some(query) = query {
        let pairs: Vec<(String, String)> = serde_html_form::from_str(query)
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
        for (key, value) in pairs {
            if key == "require" {
                permissions.extend(value.split(',').map(str::trim).map(str::to_owned));
            }
        }
    }
    permissions.retain(|p| !p.is_empty());
    Ok(permissions)
}

/// The check itself, for any method and any path [`route`] accepts, as `route` names it.
pub async fn answer(
    state: &AppState,
    route: ForwardAuthRoute,
    headers: &HeaderMap,
    uri: &Uri,
    client: IpAddr,
) -> Result<Response, ApiError> {
    let query = match route {
        ForwardAuthRoute::Check => uri.query(),
        // The original request's query, appended by the proxy with its path: not ours to read.
        ForwardAuthRoute::Below => None,
    };
    // A permission the catalog does not know is one no credential holds: refused, naming it.
    let proxy = ProxyHeaders::of(headers);
    let required = required(&proxy, query)?;
    let cost = cost(&proxy, query)?;
    let (caller, quota) = admit(state, headers, Some(client), &required, cost)
        .await
        .map_err(|error| unknown_to_keygate(state, error))?;
    let mut response = allowed(&caller);
    if let Some(quota) = quota {
        response
            .headers_mut()
            .insert(QUOTA_REMAINING, HeaderValue::from(quota.remaining));
    }
    Ok(response)
}

/// A refusal for a permission the catalog does not know is the proxy's configuration at fault,
/// not the credential: the detail says so, for the operator reading it (the answer is the same
/// 403 naming it, which no credential could have passed).
fn unknown_to_keygate(state: &AppState, error: ApiError) -> ApiError {
    let unknown: Vec<&str> = error
        .missing_permissions
        .iter()
        .map(String::as_str)
        .filter(|permission| !state.catalog().contains(permission))
        .collect();
    if unknown.is_empty() {
        return error;
    }
    let detail = format!(
        "the check asks for {}, which keygate does not know: see X-Keygate-Require or `require` \
         in the proxy's configuration, and the permissions in keygate's",
        unknown
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    error.with_detail(detail)
}

/// The identity headers of an admitted request (API.md §9), for forward-auth's answer and for
/// what the gateway sends upstream.
///
/// The values credentials have in common are rendered once and kept with what they share, so a
/// million cached credentials keep no header value of their own: the tenant's id with the
/// credential's tenant and role (`Verified::tenant_rendered`), and the permission list, which can
/// be hundreds of bytes to join and validate, with the permission set
/// (`PermissionSet::rendered`). Cloning a kept value copies no bytes. The credential's and its
/// principal's ids, a few dozen bytes each, are rendered for each answer: kept per credential,
/// they cost some 240 bytes of every cached credential that forward-auth answered.
pub(crate) fn identity_headers(caller: &Caller) -> HeaderMap {
    let verified = caller.verified();
    let tenant = verified
        .tenant_rendered(|tenant| header_value(tenant.id.as_str()))
        .cloned()
        .unwrap_or_else(|| header_value(verified.tenant().id.as_str()));
    let permissions = verified
        .permissions
        .rendered(|set| permission_list(set.iter().map(|p| p.as_str())))
        .cloned()
        .unwrap_or_else(|| permission_list(verified.permissions.iter().map(|p| p.as_str())));
    let acting = match caller.acting_as() {
        Some(tenant) => header_value(tenant.id.as_str()),
        None => tenant.clone(),
    };
    let values = [
        tenant,
        acting,
        header_value(verified.principal().id),
        header_value(verified.id().as_str()),
        permissions,
    ];
    // The names hashed once: a copy of the map with them is filled in, in their order.
    let mut headers = IDENTITY_NAMES.clone();
    for ((_, slot), value) in headers.iter_mut().zip(values) {
        *slot = value;
    }
    headers
}

/// The identity headers' names, in the order [`identity_headers`] gives their values, with empty
/// values.
static IDENTITY_NAMES: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
    [
        TENANT_ID,
        ACTING_TENANT_ID,
        PRINCIPAL_ID,
        CREDENTIAL_ID,
        PERMISSIONS,
    ]
    .into_iter()
    .map(|name| (name, HeaderValue::from_static("")))
    .collect()
});

/// The permission names, comma-separated.
fn permission_list<'a>(names: impl Iterator<Item = &'a str>) -> HeaderValue {
    let mut list = String::new();
    for name in names {
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(name);
    }
    header_value(&list)
}

/// Ids and permission names are header-safe by construction; anything else is left empty.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 200, an empty body and the identity headers.
fn allowed(caller: &Caller) -> Response {
    let mut response = Response::new(Body::empty());
    *response.headers_mut() = identity_headers(caller);
    response
}

const TENANT_ID: HeaderName = HeaderName::from_static("x-keygate-tenant-id");
const ACTING_TENANT_ID: HeaderName = HeaderName::from_static("x-keygate-acting-tenant-id");
const PRINCIPAL_ID: HeaderName = HeaderName::from_static("x-keygate-principal-id");
const CREDENTIAL_ID: HeaderName = HeaderName::from_static("x-keygate-credential-id");
const PERMISSIONS: HeaderName = HeaderName::from_static("x-keygate-permissions");

macro_rules! forward_auth {
    ($($route:ident: $method:ident => $handler:ident, $operation:literal, $path:literal, $summary:literal, $below:literal, [$($param:tt,)*];)*) => {
        $(
            #[doc = $summary]
            ///
            /// Empty body on allow, with `X-Keygate-Tenant-Id`, `X-Keygate-Acting-Tenant-Id` (the
            /// tenant acted in, the credential's own without `as-tenant`),
            /// `X-Keygate-Principal-Id`, `X-Keygate-Credential-Id` and `X-Keygate-Permissions`, and
            /// `X-Keygate-Quota-Remaining` where a quota applies (the least left of the
            /// credential's and its organization's). The request spends `X-Keygate-Cost` (default
            /// 1) from them; a refused request spends nothing.
            #[doc = $below]
            #[utoipa::path($method, path = $path, tag = "verification",
                operation_id = $operation,
                params(
                    $($param,)*
                    ("X-Keygate-Require" = Option<String>, Header, description = "Permissions the credential must hold, comma-separated"),
                    ("X-Keygate-Cost" = Option<String>, Header, description = "What the request spends from the credential's quotas: a whole number from 0 to 4294967296 (default 1), set by the proxy per route; anything else is a 400"),
                    ("X-Forwarded-For" = Option<String>, Header, description = "The client, as the (trusted) proxy saw it"),
                    ("X-Forwarded-Method" = Option<String>, Header, description = "The original method (also X-Original-Method)"),
                    ("X-Forwarded-Uri" = Option<String>, Header, description = "The original URI (also X-Original-URI)"),
                ),
                responses(
                    (status = 200, description = "Allowed; empty body, identity in the headers",
                        headers(("X-Keygate-Quota-Remaining" = u64, description = "What is left of the tightest quota that applies, after this request"))),
                    (status = 403, description = "forbidden (a required permission) or ip-not-allowed"),
                ))]
            pub async fn $handler(State(state): State<AppState>, client: Option<Extension<ClientIp>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
                let client = client.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ClientIp(ip))| ip);
                answer(&state, ForwardAuthRoute::$route, &headers, &uri, client).await
            }
        )*
    };
}

forward_auth! {
    Check: get => get, "forwardAuthGet", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: post => post, "forwardAuthPost", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: put => put, "forwardAuthPut", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: patch => patch, "forwardAuthPatch", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: delete => delete, "forwardAuthDelete", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: head => head, "forwardAuthHead", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Check: options => options, "forwardAuthOptions", "/v1/forward-auth", "Allow or refuse a request a proxy is about to pass on", "", [("require" = Option<String>, Query, description = "Permissions the credential must hold, comma-separated (as X-Keygate-Require), for proxies that cannot add a header to the check"), ("cost" = Option<u64>, Query, description = "What the request spends from quotas (as X-Keygate-Cost, which it overrides), for proxies that cannot add a header to the check"),];
    Below: get => get_below, "forwardAuthGetPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: post => post_below, "forwardAuthPostPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: put => put_below, "forwardAuthPutPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: patch => patch_below, "forwardAuthPatchPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: delete => delete_below, "forwardAuthDeletePath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: head => head_below, "forwardAuthHeadPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
    Below: options => options_below, "forwardAuthOptionsPath", "/v1/forward-auth/{path}", "Allow or refuse a request a proxy is about to pass on, its path appended", "\n\nEnvoy appends the original request's path and query to the check's. That query is the client's and is never read: here only `X-Keygate-Require` names permissions.", [("path" = String, Path, description = "The original request's path, as Envoy appends it"),];
}
