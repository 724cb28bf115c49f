//! The outermost layer: request ids, the header-size limit, problem rendering and the access log.
//!
//! Every response leaves through here, so every response has `X-Request-Id`, and every error,
//! whether a handler's [`ApiError`] or a bare status from the router or a limit layer, leaves as an
//! `application/problem+json` body whose `instance` is the request id. The access log records the
//! path only, never the query string or headers: a query may carry a key (`?key=…`) and headers
//! carry credentials.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{self, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use keygate_core::allowlist::client_address;
use keygate_core::base62;
use keygate_core::store::UsageOutcome;
use tower::Service;
use tracing::Instrument;

use crate::gateway;
use crate::logging::{self, AccessLine};
use crate::notes::{NOTES, Notes, rate_limit_headers};
use crate::paths;
use crate::problem::{self, ApiError, ProblemCode};
use crate::refusals::RequestLine;
use crate::request::{ClientIp, REQUEST_ID, RequestId};
use crate::routes::{forward_auth, verify};
use crate::state::AppState;
use crate::versions::VersionNotice;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn client_ip<B>(request: &http::Request<B>, peer: IpAddr, state: &AppState) -> IpAddr {
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
fn request_id<B>(request: &http::Request<B>) -> HeaderValue {
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
pub(crate) fn new_request_id() -> HeaderValue {
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
fn header_bytes<B>(request: &http::Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The outermost service: every request enters here and every response leaves through here.
///
/// Forward-auth, the path proxies call for every request they pass on, and `POST /v1/verify`,
/// which services call for every request they serve, are answered directly; everything else goes
/// through the router. The hot paths thus skip route matching and the router's per-route layers
/// (forward-auth reads no body; verify reads its own within the body limit), and get everything
/// else a request gets here: request id, header limit, client address, rate-limit headers,
/// problem rendering, metrics and the access log.
///
/// It makes hyper's service for each connection ([`Front::for_connection`], see
/// [`crate::serve`]), so the request's body reaches the router as it came, and the hot path boxes
/// neither the body nor the request's future.
#[derive(Clone)]
pub struct Front {
    shared: Arc<Shared>,
    /// The connection's peer, set per connection by [`Front::for_connection`].
    peer: IpAddr,
    /// Whether the connection is TLS that keygate terminates.
    tls: bool,
}

/// What every connection's service shares: one reference count per request.
struct Shared {
    state: AppState,
    router: Router,
    /// `Deprecation`/`Sunset` for `/v1` responses, once the operator announced them.
    v1_notice: Option<VersionNotice>,
}

impl Front {
    pub fn new(state: AppState, router: Router) -> Self {
        let v1_notice = VersionNotice::v1(&state.config().api.v1);
        Self {
            shared: Arc::new(Shared {
                state,
                router,
                v1_notice,
            }),
            peer: IpAddr::from([0, 0, 0, 0]),
            tls: false,
        }
    }

    /// hyper's service for one connection from `peer`, over TLS or not. Its future is
    /// [`Front::serve`]'s own, which hyper keeps in a place it makes once per connection: a
    /// request's future is neither boxed nor copied into a box of its own (3.3 KB a request).
    pub fn for_connection(
        &self,
        peer: SocketAddr,
        tls: bool,
    ) -> impl hyper::service::Service<
        http::Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static {
        let front = Self {
            shared: Arc::clone(&self.shared),
            peer: peer.ip(),
            tls,
        };
        hyper::service::service_fn(move |request| front.clone().serve(request))
    }

    /// The state every connection shares.
    pub fn state(&self) -> &AppState {
        &self.shared.state
    }

    async fn serve(self, request: http::Request<Incoming>) -> Result<Response, Infallible> {
        let Shared {
            state, v1_notice, ..
        } = &*self.shared;
        // The access log's timing costs two clock reads; only taken when the line is written.
        let access_log = logging::access_log();
        let started = access_log.is_some().then(Instant::now);
        let id_value = request_id(&request);
        // Sane by construction: visible ASCII.
        let id = id_value.to_str().unwrap_or_default();
        let method = request.method().clone();
        let ip = client_ip(&request, self.peer, state);
        let notice = v1_notice
            .as_ref()
            .filter(|notice| notice.applies_to(request.uri().path()));

        let limit = state.config().limits.header_bytes;
        let (response, uri) = if header_bytes(&request) > limit {
            let response = ApiError::new(
                ProblemCode::HeadersTooLarge,
                format!("the request headers exceed {limit} bytes in total"),
            )
            .into_response();
            (response, Cow::Borrowed(request.uri()))
        } else {
            // Forward-auth is answered here from a borrowed request; everything else goes to
            // the router, which takes the request, so its URI is kept for the audit record.
            let (mut response, notes, uri) = match paths::forward_auth(request.uri().path()) {
                Some(route) => {
                    let check =
                        forward_auth::answer(state, route, request.headers(), request.uri(), ip);
                    let (response, notes) = noted(check).await;
                    let response = response.into_response();
                    let status = response.status().as_u16();
                    state.metrics().count_forward_auth(route, status);
                    (response, notes, Cow::Borrowed(request.uri()))
                }
                None if request.method() == http::Method::POST
                    && request.uri().path() == paths::VERIFY =>
                {
                    let uri = request.uri().clone();
                    let (response, notes) = noted(verify::answer(state, request, ip)).await;
                    let response = response.into_response();
                    let status = response.status().as_u16();
                    state.metrics().count_request(paths::VERIFY, status);
                    (response, notes, Cow::Owned(uri))
                }
                None => {
                    let uri = request.uri().clone();
                    let (response, notes) = match state.gateway().find(uri.path()) {
                        Some(route) => {
                            let origin = gateway::Origin {
                                client: ip,
                                peer: self.peer,
                                peer_trusted: state.trusted_proxies().covers(self.peer),
                                tls: self.tls,
                                request_id: &id_value,
                            };
                            // Boxed: the proxy's future, a client request and all, is
                            // several kilobytes, which every request's future would otherwise
                            // carry (and copy) whichever path it takes.
                            noted(Box::pin(gateway::proxy(state, &route, request, origin))).await
                        }
                        None => {
                            // The management API's and the console's lines about a request say
                            // which; the hot paths' (forward-auth, the gateway) have none to
                            // spare the cost, and their few warnings name what they need.
                            let span = tracing::info_span!(
                                "request", id = %id, %ip, %method, path = uri.path()
                            );
                            noted(self.route(request, id, ip).instrument(span)).await
                        }
                    };
                    (response, notes, Cow::Owned(uri))
                }
            };
            if let Some(status) = notes.rate_limit.get() {
                for (name, value) in rate_limit_headers(&status) {
                    response.headers_mut().insert(name, value);
                }
            }
            let status = response.status().as_u16();
            if notes.count_on_answer.get() {
                count_answered(state, &notes, &response, ip);
            }
            let upstreams = response.extensions().get::<gateway::Proxied>().is_some();
            if let (401 | 403, false, Some(caller)) = (status, upstreams, notes.caller.take()) {
                let code = response.extensions().get::<ApiError>().map(|e| e.code);
                let line = RequestLine {
                    method: method.as_str(),
                    path: uri.path(),
                    ip,
                    id,
                };
                state.refusals().note_refused(
                    &caller,
                    status,
                    code == Some(ProblemCode::IpNotAllowed),
                    &line,
                    state.clock().now(),
                );
            }
            (response, uri)
        };

        let mut response = problem::render(response, id, &method, state.config().limits.body_bytes);
        if let Some(notice) = notice {
            notice.add_to(response.headers_mut());
        }
        if let (Some(log), Some(started)) = (access_log, started) {
            log.access(&AccessLine {
                id,
                ip,
                method: method.as_str(),
                path: uri.path(),
                status: response.status().as_u16(),
                micros: started.elapsed().as_micros(),
            });
        }
        // Moved, not cloned: a clone of a fresh value would allocate to share it.
        response.headers_mut().insert(REQUEST_ID, id_value);
        Ok(response)
    }

    /// Everything but forward-auth: through the router.
    async fn route(&self, request: http::Request<Incoming>, id: &str, ip: IpAddr) -> Response {
        let mut request = request.map(Body::new);
        if self.tls {
            // Said as a proxy ending TLS would say it, so the console's cookies are `Secure`.
            request
                .headers_mut()
                .insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        } else if request.headers().contains_key(X_FORWARDED_PROTO)
            && !self.shared.state.trusted_proxies().covers(self.peer)
        {
            // Only a trusted proxy says how its client connected (API.md §11); anyone else's word
            // would make a cookie `Secure` that a browser on plain HTTP never sends back.
            request.headers_mut().remove(X_FORWARDED_PROTO);
        }
        request.extensions_mut().insert(RequestId(id.to_owned()));
        request.extensions_mut().insert(ClientIp(ip));
        // Boxed: the router's future is large, and the hot path should not carry its size.
        match Box::pin(self.shared.router.clone().call(request)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Counts an admitted management request in its credential's usage, now that its answer is
/// known: `forbidden` when the handler found a permission missing, else `valid` (a 404 or a 400
/// was still the credential's request, made and answered).
fn count_answered(state: &AppState, notes: &Notes, response: &Response, ip: IpAddr) {
    let Some(caller) = &*notes.caller.borrow() else {
        return;
    };
    let now = state.clock().now();
    let usage = state.gate().usage();
    let code = response.extensions().get::<ApiError>().map(|e| e.code);
    if response.status() == http::StatusCode::FORBIDDEN && code == Some(ProblemCode::Forbidden) {
        usage.refused(&caller.verified, now, UsageOutcome::Forbidden);
    } else {
        usage.record(&caller.verified, now, Some(ip));
    }
}

/// Runs `future` with fresh [`Notes`] for authentication to leave its findings in, and hands
/// them back with its output.
fn noted<F: Future>(future: F) -> Noted<F> {
    Noted {
        scoped: NOTES.scope(Notes::default(), future),
    }
}

pin_project_lite::pin_project! {
    /// [`noted`]'s future: the scoped future alone. (An `async fn` taking `future` would keep it
    /// twice, as its argument and inside the scope: the size of each request's future, which
    /// hyper and the runtime copy as they move it, doubled.)
    struct Noted<F: Future> {
        #[pin]
        scoped: tokio::task::futures::TaskLocalFuture<Notes, F>,
    }
}

impl<F: Future> Future for Noted<F> {
    type Output = (F::Output, Notes);

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut scoped = self.project().scoped;
        let output = std::task::ready!(scoped.as_mut().poll(cx));
        std::task::Poll::Ready((output, scoped.take_value().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::Request;

    use super::*;

    fn with_header(value: &[u8]) -> Request {
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
        request
    }

    #[test]
    fn a_noted_future_holds_the_future_it_runs_once() {
        // As large as a request's future gets; every byte of it is copied as requests move.
        let large = std::future::ready([0_u8; 4096]);
        let noted = noted(large);
        assert!(size_of_val(&noted) < 4096 + 512, "{}", size_of_val(&noted));
    }

    #[tokio::test]
    async fn a_noted_future_hands_back_what_it_left_in_the_notes() {
        let (output, notes) = noted(async {
            NOTES.with(|notes| notes.count_on_answer.set(true));
            7
        })
        .await;
        assert_eq!(output, 7);
        assert!(notes.count_on_answer.get());
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
