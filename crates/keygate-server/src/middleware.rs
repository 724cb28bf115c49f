//! The outermost layer: request ids, the header-size limit, problem rendering and the access log.
//!
//! Every response leaves through here, so every response has `X-Request-Id`, and every error,
//! whether a handler's [`ApiError`] or a bare status from the router or a limit layer, leaves as an
//! `application/problem+json` body whose `instance` is the request id. The access log records the
//! path only, never the query string or headers: a query may carry a key (`?key=…`) and headers
//! carry credentials.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_core::allowlist::client_address;
use keygate_core::base62;
use tracing::Instrument;

use crate::auth::{RATE_LIMIT, rate_limit_headers};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemCode};
use crate::state::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being served, for handlers that need it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Marks a response that carries an error body of its own (the OAuth endpoints answer RFC 6749
/// errors, which OAuth clients expect instead of problems): it leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorBody;

/// The client's address as keygate judges it (API.md §6): what allowlists are checked against,
/// and what the log and the audit record.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

fn client_ip(request: &Request, state: &AppState) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip());
    let headers = request.headers();
    let values = |name: &'static str| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|value| value.to_str().ok())
    };
    client_address(
        peer,
        state.trusted_proxies(),
        values("x-forwarded-for"),
        values("forwarded"),
    )
}

/// The caller's id if it is sane (1–128 characters of `A-Za-z0-9._:-`), else a new one.
fn request_id(request: &Request) -> String {
    let sane = |id: &str| {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match request.headers().get(REQUEST_ID).map(HeaderValue::to_str) {
        Some(Ok(id)) if sane(id) => id.to_owned(),
        _ => new_request_id(),
    }
}

/// `req_` + 12 random characters drawn once per process + a counter: unique, unguessable
/// across restarts, and without a system call per request.
fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut prefix = String::from("req_");
        // Randomness failing is not a reason to refuse requests; the id is for correlation.
        if base62::push_random(&mut prefix, 12).is_err() {
            prefix.push_str("000000000000");
        }
        prefix
    });
    let mut count = [0u8; 8];
    base62::encode_fixed(
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        &mut count,
    );
    let mut id = String::with_capacity(prefix.len() + count.len());
    id.push_str(prefix);
    id.extend(count.iter().map(|&b| b as char));
    id
}

/// The size of the request's header section, as the limit counts it: names and values.
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

pub async fn finish(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let ip = client_ip(&request, &state);
    let span = tracing::info_span!("request", id = %id, %ip, %method, %path);

    let limit = state.config().limits.header_bytes;
    let response = if header_bytes(&request) > limit {
        ApiError::new(
            ProblemCode::HeadersTooLarge,
            format!("the request headers exceed {limit} bytes in total"),
        )
        .into_response()
    } else {
        request.extensions_mut().insert(RequestId(id.clone()));
        request.extensions_mut().insert(ClientIp(ip));
        let (mut response, limit) = RATE_LIMIT
            .scope(std::cell::Cell::new(None), async {
                let response = next.run(request).await;
                (response, RATE_LIMIT.with(std::cell::Cell::get))
            })
            .instrument(span.clone())
            .await;
        if let Some(status) = limit {
            for (name, value) in rate_limit_headers(&status) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    };

    let mut response = render(response, &id, &method, &state);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros();
    span.in_scope(|| tracing::info!(status, micros, "served"));
    response
}

/// Writes the problem body of an error response, with the request id as `instance`.
fn render(mut response: Response, id: &str, method: &Method, state: &AppState) -> Response {
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if response.extensions().get::<OwnErrorBody>().is_some() => return response,
        None if response.status().is_client_error() || response.status().is_server_error() => {
            let is_problem = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if is_problem {
                return response;
            }
            bare_status_error(response.status(), method, state)
        }
        None => return response,
    };
    if let Some(internal) = &error.internal {
        tracing::error!(request_id = id, error = %internal, "request failed");
    }
    let body = match serde_json::to_vec(&error.problem(id)) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(request_id = id, error = %e, "cannot render a problem");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let (mut parts, _) = response.into_parts();
    parts.status = error.code.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

fn bare_status_error(status: StatusCode, method: &Method, state: &AppState) -> ApiError {
    let code = ProblemCode::for_status(status);
    match code {
        ProblemCode::NotFound => ApiError::not_found("there is no such route; see /openapi.json"),
        ProblemCode::MethodNotAllowed => ApiError::new(
            code,
            format!("this path does not accept {method}; the Allow header lists what it does"),
        ),
        ProblemCode::PayloadTooLarge => ApiError::new(
            code,
            format!(
                "the request body exceeds {} bytes",
                state.config().limits.body_bytes
            ),
        ),
        ProblemCode::Internal => ApiError::internal(format!("bare {status} response")),
        _ => ApiError::new(
            code,
            status.canonical_reason().unwrap_or("error").to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &[u8]) -> Request {
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
        request
    }

    #[test]
    fn sane_request_ids_are_kept_and_others_replaced() {
        assert_eq!(request_id(&with_header(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for insane in [&b"has space"[..], b"quote\"", &[b'a'; 129], b"caf\xc3\xa9"] {
            let id = request_id(&with_header(insane));
            assert!(id.starts_with("req_") && id.len() == 24, "{id}");
        }
        assert!(request_id(&Request::new(Body::empty())).starts_with("req_"));
    }
}
