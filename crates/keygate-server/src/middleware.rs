//! The outermost layer: request ids, the header-size limit, problem rendering and the access log.
//!
//! Every response leaves through here, so every response has `X-Request-Id`, and every error,
//! whether a handler's [`ApiError`] or a bare status from the router or a limit layer, leaves as an
//! `application/problem+json` body whose `instance` is the request id. The access log records the
//! path only, never the query string or headers: a query may carry a key (`?key=…`) and headers
//! carry credentials.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use keygate_core::allowlist::client_address;
use keygate_core::base62;
use tokio::net::TcpListener;
use tower::Service;
use tracing::{Instrument, Level};

use crate::auth::{NOTES, Notes, rate_limit_headers};
use crate::problem::{ApiError, PROBLEM_JSON, ProblemCode};
use crate::refusals::Refused;
use crate::routes::forward_auth;
use crate::state::AppState;
use crate::versions::VersionNotice;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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

fn client_ip(request: &Request, peer: IpAddr, state: &AppState) -> IpAddr {
    let headers = request.headers();
    // Looked up only if read, which is only when the peer is a trusted proxy.
    let values = |name: &'static HeaderName| {
        [name]
            .into_iter()
            .flat_map(|name| headers.get_all(name))
            .filter_map(|value| value.to_str().ok())
    };
    client_address(
        peer,
        state.trusted_proxies(),
        values(&X_FORWARDED_FOR),
        values(&header::FORWARDED),
    )
}

/// The caller's id if it is sane (1–128 characters of `A-Za-z0-9._:-`), else a new one. Kept as
/// the header value it is sent back in.
fn request_id(request: &Request) -> HeaderValue {
    let sane = |id: &[u8]| {
        (1..=128).contains(&id.len())
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match request.headers().get(&REQUEST_ID) {
        Some(id) if sane(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

/// `req_` + 12 random characters drawn once per process + a counter: unique, unguessable
/// across restarts, and without a system call per request.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = String::new();
        // Randomness failing is not a reason to refuse requests; the id is for correlation.
        if base62::push_random(&mut random, 12).is_err() {
            random = "000000000000".into();
        }
        let mut prefix = *b"req_000000000000";
        prefix[4..].copy_from_slice(&random.as_bytes()[..12]);
        prefix
    });
    let mut id = [0u8; 24];
    id[..16].copy_from_slice(prefix);
    base62::encode_fixed(
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        &mut id[16..],
    );
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

/// The size of the request's header section, as the limit counts it: names and values.
fn header_bytes(request: &Request) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The outermost service: every request enters here and every response leaves through here.
///
/// Forward-auth, the path proxies call for every request they pass on, is answered directly;
/// everything else goes through the router. The hot path thus skips route matching and the
/// router's per-route layers (it reads no body, so the body limits have nothing to do), and
/// gets everything else a request gets here: request id, header limit, client address,
/// rate-limit headers, problem rendering, metrics and the access log.
#[derive(Clone)]
pub struct Front {
    state: AppState,
    router: Router,
    /// The connection's peer, set per connection by [`Front::for_connection`].
    peer: IpAddr,
    /// `Deprecation`/`Sunset` for `/v1` responses, once the operator announced them.
    v1_notice: Option<Arc<VersionNotice>>,
}

impl Front {
    pub fn new(state: AppState, router: Router) -> Self {
        let v1_notice = VersionNotice::v1(&state.config().api.v1).map(Arc::new);
        Self {
            state,
            router,
            peer: IpAddr::from([0, 0, 0, 0]),
            v1_notice,
        }
    }

    /// The service for one connection from `peer`.
    pub fn for_connection(&self, peer: SocketAddr) -> Self {
        Self {
            peer: peer.ip(),
            ..self.clone()
        }
    }

    async fn serve(self, request: Request) -> Response {
        // The access log's timing costs two clock reads; only taken when the line is written.
        let started = tracing::enabled!(Level::INFO).then(Instant::now);
        let id_value = request_id(&request);
        // Sane by construction: visible ASCII.
        let id = id_value.to_str().unwrap_or_default();
        let method = request.method().clone();
        let ip = client_ip(&request, self.peer, &self.state);
        let span =
            tracing::info_span!("request", id = %id, %ip, %method, path = request.uri().path());
        let notice = self
            .v1_notice
            .clone()
            .filter(|notice| notice.applies_to(request.uri().path()));

        // For the audit record of a refusal; the clone shares the request's bytes.
        let uri = request.uri().clone();

        let limit = self.state.config().limits.header_bytes;
        let response = if header_bytes(&request) > limit {
            ApiError::new(
                ProblemCode::HeadersTooLarge,
                format!("the request headers exceed {limit} bytes in total"),
            )
            .into_response()
        } else {
            let (mut response, limit, caller) = NOTES
                .scope(Notes::default(), async {
                    let response = self.dispatch(request, id, ip).await;
                    let (limit, caller) = NOTES.with(|n| (n.rate_limit.get(), n.caller.take()));
                    (response, limit, caller)
                })
                .instrument(span.clone())
                .await;
            if let Some(status) = limit {
                for (name, value) in rate_limit_headers(&status) {
                    response.headers_mut().insert(name, value);
                }
            }
            let status = response.status().as_u16();
            if let (401 | 403, Some(caller)) = (status, caller) {
                // The credential itself refused (expired, revoked, wrong address), or refused
                // something it may not do.
                let code = response.extensions().get::<ApiError>().map(|e| e.code);
                let action = if status == 401 || code == Some(ProblemCode::IpNotAllowed) {
                    "auth.denied"
                } else {
                    "access.denied"
                };
                let refused = Refused {
                    action,
                    verified: &caller.verified,
                    acting: caller.acting.as_ref(),
                    status,
                    method: method.as_str(),
                    path: uri.path(),
                    ip: Some(ip),
                    user_agent: caller.user_agent.as_ref().and_then(|a| a.to_str().ok()),
                    request_id: id,
                };
                if let Some(event) = refused.event(self.state.clock().now()) {
                    self.state.refusals().note(event);
                }
            }
            response
        };

        let mut response = render(response, id, &method, &self.state);
        response.headers_mut().insert(REQUEST_ID, id_value.clone());
        if let Some(notice) = notice {
            notice.add_to(response.headers_mut());
        }
        if let Some(started) = started {
            let status = response.status().as_u16();
            let micros = started.elapsed().as_micros();
            span.in_scope(|| tracing::info!(status, micros, "served"));
        }
        response
    }

    async fn dispatch(&self, mut request: Request, id: &str, ip: IpAddr) -> Response {
        let path = request.uri().path();
        if let Some(route) = forward_auth::route(path) {
            let response = forward_auth::answer(&self.state, request.headers(), request.uri(), ip)
                .await
                .into_response();
            self.state
                .metrics()
                .count_request(route, response.status().as_u16());
            return response;
        }
        request.extensions_mut().insert(RequestId(id.to_owned()));
        request.extensions_mut().insert(ClientIp(ip));
        match self.router.clone().call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Makes the service for each accepted connection, knowing its peer.
impl Service<IncomingStream<'_, TcpListener>> for Front {
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        std::future::ready(Ok(self.for_connection(*stream.remote_addr())))
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.serve(request).await) })
    }
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
            let id = id.to_str().unwrap();
            assert!(id.starts_with("req_") && id.len() == 24, "{id}");
        }
        let new = request_id(&Request::new(Body::empty()));
        assert!(new.to_str().unwrap().starts_with("req_"));
        assert_ne!(new, request_id(&Request::new(Body::empty())));
    }
}
