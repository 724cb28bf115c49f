//! keygate as the gateway itself (API.md §16): a request on a configured route passes the same
//! admission as forward-auth ([`crate::auth::admit`]: one code path), then is proxied to the
//! route's upstream with its body streamed both ways.
//!
//! What the upstream sees is decided here, and it must never see a credential: every place a
//! credential can travel in (API.md §2) is removed, and so is every incoming `X-Keygate-*`
//! header, before keygate adds the identity it vouches for. The upstream trusts those headers
//! because only keygate can reach it; a client that sends its own gets them thrown away.
//!
//! Bodies are never read whole: the request body goes to the upstream as it arrives and the
//! upstream's answer back the same way, so a 50 MB upload costs a few buffers, and the body
//! limit of §1 (which is about what keygate itself reads) does not apply.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{self, HeaderName};
use axum::http::uri::{PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderValue, Request, Uri, Version};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use keygate_core::routes::Needs;

use crate::auth::{AS_TENANT, COOKIE_NAME, SESSION_COOKIE, admit};
use crate::problem::{ApiError, OwnErrorBody, ProblemCode};
use crate::routes::forward_auth;
use crate::state::AppState;
use crate::upstreams::GatewayRoute;

/// Marks a response that came from an upstream: it leaves as the upstream sent it, and a 401
/// or 403 in it is the upstream's, not a refusal of keygate's to audit.
#[derive(Debug, Clone, Copy)]
pub struct Proxied;

/// Where the request came from, as the front service saw it.
pub struct Origin<'a> {
    /// The client, through trusted proxies.
    pub client: IpAddr,
    /// The connection's peer.
    pub peer: IpAddr,
    /// Whether the peer is a proxy whose `X-Forwarded-*` headers are believed.
    pub peer_trusted: bool,
    pub tls: bool,
    pub request_id: &'a HeaderValue,
}

/// Admits `request` on `route` and proxies it; what the client gets back.
pub async fn proxy(
    state: &AppState,
    route: &GatewayRoute,
    request: Request<Incoming>,
    origin: Origin<'_>,
) -> Response {
    let response = match admit_and_send(state, route, request, &origin).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    route.counts.count(response.status().as_u16());
    response
}

/// Who an admitted request's quotas were spent for, and when: to give it back should the
/// request not be served.
struct Paid {
    caller: keygate_core::access::Caller,
    admitted_at: keygate_core::Timestamp,
}

async fn admit_and_send(
    state: &AppState,
    gateway_route: &GatewayRoute,
    request: Request<Incoming>,
    origin: &Origin<'_>,
) -> Result<Response, ApiError> {
    let route = &gateway_route.route;
    let path = request.uri().path();
    if has_dot_segment(path) {
        // The upstream could resolve `/public/../admin` to a path of another route.
        return Err(ApiError::invalid(
            "the path has a `.` or `..` segment; send it resolved",
        ));
    }
    let identity = match route.needs(request.method().as_str()) {
        Needs::Nothing => None,
        Needs::Credential(required) => {
            let admitted_at = state.clock().now();
            let (caller, quota) = admit(
                state,
                request.headers(),
                Some(origin.client),
                required,
                route.cost,
            )
            .await?;
            let identity = forward_auth::identity_headers(&caller);
            Some((
                identity,
                quota,
                Paid {
                    caller,
                    admitted_at,
                },
            ))
        }
        Needs::MethodNotAllowed(allowed) => {
            let allow = allowed.join(", ");
            let mut response = ApiError::new(
                ProblemCode::MethodNotAllowed,
                format!(
                    "this route does not accept {}; it accepts {allow}",
                    request.method()
                ),
            )
            .into_response();
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return Ok(response);
        }
    };

    let (mut parts, body) = request.into_parts();
    let upstream_path = route.upstream_path(parts.uri.path());
    let path_and_query = match parts.uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{upstream_path}?{query}")),
        None => PathAndQuery::try_from(upstream_path),
    }
    .map_err(|_| ApiError::invalid("the request path cannot be passed on"))?;
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(gateway_route.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ApiError::internal(format!("upstream URI: {e}")))?;
    std::mem::swap(&mut parts.uri, &mut uri);
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    remove_credentials(headers);
    forwarded(headers, origin, original_host);
    headers.insert(header::HOST, gateway_route.host.clone());
    headers.insert(crate::request::REQUEST_ID, origin.request_id.clone());
    let mut quota_left = None;
    let mut paid = None;
    if let Some((identity, quota, payer)) = identity {
        headers.extend(identity);
        quota_left = quota.map(|q| q.remaining);
        paid = Some(payer);
    }
    // Not served after all (the upstream refused it, or did not answer): what it spent comes back.
    let refund = || {
        if let Some(Paid {
            caller,
            admitted_at,
        }) = &paid
        {
            state
                .gate()
                .refund(caller.verified(), route.cost, *admitted_at);
        }
    };
    let upstream_request = Request::from_parts(parts, body);

    let started = Instant::now();
    let sent = tokio::time::timeout(route.timeout, state.gateway().send(upstream_request)).await;
    let answered = match sent {
        Err(_) => {
            gateway_route.counts.observe(started.elapsed());
            refund();
            tracing::warn!(
                request_id = ?origin.request_id,
                route = %route.prefix,
                timeout_ms = route.timeout.as_millis(),
                "upstream did not answer in time"
            );
            return Err(ApiError::new(
                ProblemCode::UpstreamTimeout,
                format!(
                    "the API behind `{}` did not answer within {} ms",
                    route.prefix,
                    route.timeout.as_millis()
                ),
            ));
        }
        Ok(Err(error)) => {
            refund();
            tracing::warn!(
                request_id = ?origin.request_id,
                route = %route.prefix,
                error = %error_chain(&error),
                "upstream unavailable"
            );
            return Err(ApiError::new(
                ProblemCode::UpstreamUnavailable,
                format!(
                    "the API behind `{}` refused or dropped the connection",
                    route.prefix
                ),
            ));
        }
        Ok(Ok(answered)) => answered,
    };
    gateway_route.counts.observe(started.elapsed());
    let (mut parts, body) = answered.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(left) = quota_left {
        parts
            .headers
            .insert(QUOTA_REMAINING, HeaderValue::from(left));
    }
    parts.extensions.insert(Proxied);
    parts.extensions.insert(OwnErrorBody);
    Ok(Response::from_parts(parts, Body::new(body)))
}

const QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-keygate-quota-remaining");

/// The error and its causes, for the log: hyper's outer error alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether the path has a `.` or `..` segment, literally or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    const DOTS: [&str; 6] = [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."];
    path.split('/')
        .any(|segment| DOTS.iter().any(|dots| segment.eq_ignore_ascii_case(dots)))
}

/// RFC 9110 §7.6.1: the connection's own headers, and those `Connection` names, are not passed
/// on (`Proxy-Authorization` with them: it is for keygate, if for anyone).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const APIKEY: HeaderName = HeaderName::from_static("apikey");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const REALM: HeaderName = HeaderName::from_static("realm");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Every place a credential travels in (API.md §2), keygate's own request headers (`as-tenant`,
/// `Realm`), and every `X-Keygate-*` header: only keygate says who the caller is.
fn remove_credentials(headers: &mut HeaderMap) {
    for name in [header::AUTHORIZATION, APIKEY, X_API_KEY, AS_TENANT, REALM] {
        headers.remove(name);
    }
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-keygate-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
    // Other cookies are the upstream's own; only keygate's leave.
    let cookies: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::COOKIE);
    let kept: Vec<&str> = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name).trim();
            !pair.is_empty() && name != COOKIE_NAME && name != SESSION_COOKIE
        })
        .collect();
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// `X-Forwarded-For`, `-Proto` and `-Host`: a trusted proxy's are extended or kept; anyone
/// else's (and their `Forwarded`, `X-Real-IP`) are replaced by what keygate saw.
fn forwarded(headers: &mut HeaderMap, origin: &Origin<'_>, host: Option<HeaderValue>) {
    let peer = origin.peer.to_string();
    let chain = if origin.peer_trusted {
        let before: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if before.is_empty() {
            peer
        } else {
            format!("{}, {peer}", before.join(", "))
        }
    } else {
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REAL_IP,
            header::FORWARDED,
        ] {
            headers.remove(name);
        }
        peer
    };
    if let Ok(chain) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, chain);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if origin.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::TE, "trailers".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn credentials_and_keygates_headers_are_removed_and_other_cookies_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "token kg_live_x".parse().unwrap());
        headers.insert("apikey", "kg_live_x".parse().unwrap());
        headers.insert("x-api-key", "kg_live_x".parse().unwrap());
        headers.insert("as-tenant", "tnt_x".parse().unwrap());
        headers.insert("x-keygate-tenant-id", "tnt_forged".parse().unwrap());
        headers.insert("X-Keygate-Permissions", "admin".parse().unwrap());
        headers.append(
            header::COOKIE,
            "theme=dark; api_access_token=kg_live_x".parse().unwrap(),
        );
        headers.append(
            header::COOKIE,
            "keygate_session=s; lang=en".parse().unwrap(),
        );
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        remove_credentials(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[header::COOKIE], "theme=dark; lang=en");

        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, "api_access_token=kg".parse().unwrap());
        remove_credentials(&mut only_ours);
        assert!(only_ours.is_empty());
    }

    #[test]
    fn dot_segments_are_found_however_spelt() {
        for path in ["/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/..", "/a/%2E"] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in ["/a/b", "/a/..b", "/a/.well", "/a/b.c/"] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let id = HeaderValue::from_static("req_1");
        let origin = |trusted| Origin {
            client: IpAddr::from([203, 0, 113, 9]),
            peer: IpAddr::from([10, 0, 0, 2]),
            peer_trusted: trusted,
            tls: true,
            request_id: &id,
        };
        let incoming = || {
            let mut headers = HeaderMap::new();
            headers.insert(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
            headers.insert(X_FORWARDED_PROTO, "http".parse().unwrap());
            headers.insert(header::FORWARDED, "for=1.2.3.4".parse().unwrap());
            headers
        };
        let host = Some(HeaderValue::from_static("api.example.com"));

        let mut spoofed = incoming();
        forwarded(&mut spoofed, &origin(false), host.clone());
        assert_eq!(spoofed[&X_FORWARDED_FOR], "10.0.0.2");
        assert_eq!(spoofed[&X_FORWARDED_PROTO], "https");
        assert_eq!(spoofed[&X_FORWARDED_HOST], "api.example.com");
        assert!(!spoofed.contains_key(header::FORWARDED));

        let mut proxied = incoming();
        forwarded(&mut proxied, &origin(true), host);
        assert_eq!(proxied[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.2");
        assert_eq!(proxied[&X_FORWARDED_PROTO], "http");
        assert!(proxied.contains_key(header::FORWARDED));
    }
}
