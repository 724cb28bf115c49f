//! keygate's HTTP server and command line.
//!
//! A request flows one way: [`front::Front`] (request id, header limit, problem rendering)
//! → body limit → router → [`auth::Authenticated`] (extraction, verification) → the access
//! decision (`Caller::require`) → handler → store → response. Nothing calls back up that line.

pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod connections;
pub mod console;
pub mod deliveries;
pub mod explorer;
pub mod front;
pub mod gateway;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod notes;
pub mod openapi;
pub mod paths;
pub mod problem;
pub mod refusals;
pub mod request;
pub mod routes;
pub mod state;
pub mod tls;
pub mod upstreams;
pub mod versions;
pub mod views;

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::ApiError;
pub use crate::state::AppState;

/// The API's routes with their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::ops::healthz))
        .routes(routes!(routes::ops::readyz))
        .routes(routes!(routes::metrics::metrics))
        .routes(routes!(routes::whoami::whoami))
        .routes(routes!(routes::verify::verify))
        .routes(routes!(
            routes::forward_auth::get,
            routes::forward_auth::post,
            routes::forward_auth::put,
            routes::forward_auth::patch,
            routes::forward_auth::delete,
            routes::forward_auth::head,
            routes::forward_auth::options
        ))
        .routes(routes!(routes::roles::permissions))
        .routes(routes!(routes::roles::list, routes::roles::create))
        .routes(routes!(
            routes::roles::get,
            routes::roles::replace,
            routes::roles::delete
        ))
        .routes(routes!(routes::users::list, routes::users::create))
        .routes(routes!(
            routes::users::get,
            routes::users::update,
            routes::users::delete
        ))
        .routes(routes!(
            routes::tokens::list,
            routes::tokens::create,
            routes::tokens::delete_many
        ))
        .routes(routes!(routes::tokens::get, routes::tokens::delete))
        .routes(routes!(routes::tokens::roll))
        .routes(routes!(routes::quotas::put_token_quota))
        .routes(routes!(routes::quotas::put_client_quota))
        .routes(routes!(routes::quotas::put_tenant_quota))
        .routes(routes!(
            routes::account::list,
            routes::account::create,
            routes::account::delete_by_query
        ))
        .routes(routes!(routes::account::delete))
        .routes(routes!(
            routes::account::get_ip_restriction,
            routes::account::put_ip_restriction,
            routes::account::post_ip_restriction
        ))
        .routes(routes!(routes::tenants::list, routes::tenants::create))
        .routes(routes!(
            routes::tenants::get,
            routes::tenants::update,
            routes::tenants::delete
        ))
        .routes(routes!(routes::audit::list))
        .routes(routes!(routes::audit::export))
        .routes(routes!(routes::webhooks::list, routes::webhooks::create))
        .routes(routes!(
            routes::webhooks::get,
            routes::webhooks::update,
            routes::webhooks::delete
        ))
        .routes(routes!(routes::webhooks::deliveries))
        .routes(routes!(routes::webhooks::retry))
        .routes(routes!(routes::leaks::github))
        .routes(routes!(routes::leaks::revoke))
        .routes(routes!(routes::usage::get))
        .routes(routes!(routes::usage::export))
        .routes(routes!(routes::sessions::login))
        .routes(routes!(routes::sessions::logout))
        .routes(routes!(
            routes::oauth::clients::list,
            routes::oauth::clients::create
        ))
        .routes(routes!(
            routes::oauth::clients::get,
            routes::oauth::clients::delete
        ))
        .routes(routes!(routes::oauth::clients::roll_secret))
        .routes(routes!(routes::oauth::token::token))
        .routes(routes!(routes::oauth::revocation::revoke))
        .routes(routes!(routes::oauth::revocation::introspect))
        .routes(routes!(routes::oauth::discovery::jwks))
        .routes(routes!(routes::oauth::discovery::metadata))
        .split_for_parts();
    // Envoy appends the original path to the check's: every path below forward-auth is the same
    // check. Registered by hand because axum spells the catch-all `{*path}` and OpenAPI `{path}`;
    // documented under the latter (openapi.rs).
    let router = router.route(
        "/v1/forward-auth/{*path}",
        axum::routing::any(routes::forward_auth::get_below),
    );
    openapi::ProblemResponses.modify(&mut document);
    openapi::ListItemsByReference.modify(&mut document);
    (router, document)
}

/// The whole application: the outer service around the API, the explorer and the body limits.
pub fn app(state: AppState) -> front::Front {
    front::Front::new(state.clone(), router(state))
}

/// Every route: the API, the explorer and the document, with the body limits; what
/// [`front::Front`] passes requests to.
pub fn router(state: AppState) -> Router {
    let (api, mut document) = api();
    if state.config().api.v1.deprecated_at.is_some() {
        openapi::announce_deprecation(&mut document, "/v1");
    }
    let body_limit = state.config().limits.body_bytes;
    api.route_layer(metrics::CountLayer::new(state.metrics_shared()))
        .merge(explorer::router(document))
        .merge(console::router(state.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/console/") {
                console::no_such_page()
            } else {
                axum::response::IntoResponse::into_response(no_route(uri.path()))
            }
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .with_state(state)
}

/// The 404 of a path no route takes; one with a trailing slash is told the routes take none.
fn no_route(path: &str) -> ApiError {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => ApiError::not_found(format!(
            "there is no such route; paths end without a slash: `{trimmed}`? (see /openapi.json)"
        )),
        _ => ApiError::not_found("there is no such route; see /openapi.json"),
    }
}

/// How often audit events past `audit.retention_days` and usage buckets past `usage.*` are
/// looked for.
const PRUNE_AUDIT_EVERY: Duration = Duration::from_secs(15 * 60);

/// How long after start the first of those looks waits.
const PRUNE_AFTER_START: Duration = Duration::from_secs(60);

/// How often the minutes of hours that are over are looked for, to be rolled up into hours and
/// days.
const ROLL_UP_EVERY: Duration = Duration::from_secs(60);

/// How often what has expired for good (refresh tokens) is deleted.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// Serves on `listener` until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish (for at most `shutdown_grace_seconds`) and closes the store.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config().shutdown_grace_seconds);
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let signalled = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.begin_shutdown();
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = stopping_tx.send(true);
        }
    };
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(keygate_core::usage::FLUSH_EVERY);
            loop {
                every.tick().await;
                state.flush_usage().await;
                state.flush_refusals().await;
                state.give_back_credits(false).await;
            }
        })
    };
    let pruner = {
        let state = state.clone();
        tokio::spawn(async move {
            // Not at the very start: a node starting up (or a test seeding old counts) is not
            // racing its own housekeeping, and a restart loop does not prune on every start.
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + PRUNE_AFTER_START,
                PRUNE_AUDIT_EVERY,
            );
            loop {
                every.tick().await;
                match state.prune_audit().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "pruned audit events past retention"),
                    Err(error) => {
                        tracing::warn!(%error, "could not prune the audit log; will retry")
                    }
                }
                if let Err(error) = state
                    .store()
                    .prune_rate_limits(state.clock().now_millis())
                    .await
                {
                    tracing::warn!(%error, "could not prune rate-limit counts; will retry");
                }
                match state.prune_usage().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "pruned usage buckets past retention"),
                    Err(error) => {
                        tracing::warn!(%error, "could not prune usage counts; will retry")
                    }
                }
                let days = u64::from(state.config().webhooks.retention_days);
                let before = state
                    .clock()
                    .now()
                    .saturating_sub(Duration::from_secs(days * 86_400));
                if let Err(error) = state.store().prune_deliveries(before, 10_000).await {
                    tracing::warn!(%error, "could not prune webhook deliveries; will retry");
                }
            }
        })
    };
    let roller = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ROLL_UP_EVERY);
            loop {
                every.tick().await;
                let started = std::time::Instant::now();
                match state.roll_up_usage().await {
                    Ok(0) => {}
                    Ok(rolled) => tracing::info!(
                        rolled,
                        elapsed_ms = started.elapsed().as_millis(),
                        "rolled usage minutes up into hours and days"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "could not roll usage up into hours and days; will retry")
                    }
                }
            }
        })
    };
    let housekeeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                every.tick().await;
                state.delete_expired().await;
            }
        })
    };
    let deliverer = tokio::spawn(
        deliveries::Deliverer::new(state.clone())
            .map_err(std::io::Error::other)?
            .run(),
    );
    let limits = connection_limits(state.config());
    let serve = serve(listener, app(state.clone()), limits, signalled);
    let grace_over = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = serve => result,
        () = grace_over => {
            tracing::warn!(seconds = grace.as_secs(), "grace period over; dropping requests still in flight");
            Ok(())
        }
    };
    flusher.abort();
    pruner.abort();
    roller.abort();
    housekeeper.abort();
    // A delivery cut off mid-attempt keeps its claim until it lapses, then is sent again.
    deliverer.abort();
    state.flush_usage().await;
    state.flush_refusals().await;
    state.give_back_credits(true).await;
    state.store().close().await;
    tracing::info!("stopped");
    result
}

/// The connection limits for `config`, the cap lowered to what the open-files limit allows;
/// logged, and so is the lowering.
fn connection_limits(config: &config::Config) -> connections::Limits {
    let open_files = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft);
    let (limits, lowered) = connections::Limits::new(config, open_files);
    if let (Some(configured), Some(open_files)) = (lowered, open_files) {
        tracing::warn!(
            configured,
            max_connections = limits.max_connections,
            open_files,
            reserved = connections::reserved_descriptors(config.store.max_connections),
            "server.max_connections lowered to what the open-files limit allows, less what the \
             store and the log keep; raise the hard limit (LimitNOFILE=) to allow more"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        per_address = limits.per_address(),
        header_read_timeout_ms = config.server.header_read_timeout_ms,
        idle_timeout_ms = config.server.idle_timeout_ms,
        "connection limits"
    );
    limits
}

/// Accepts connections and serves HTTP/1.1 on each with [`front::Front`] until `stop`
/// resolves; then stops accepting, asks every connection to finish the request it is serving
/// and close, and waits for them all. Connections are held to `limits` (see [`connections`]):
/// over the cap they are refused at once, and slow or idle ones are closed.
///
/// hyper's HTTP/1 connection directly, without a protocol-sniffing wrapper or a tower adapter
/// between it and `Front`: on the hot path each layer cost a clone, a box or a copy per request.
pub async fn serve(
    listener: TcpListener,
    front: front::Front,
    limits: connections::Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let http = hyper::server::conn::http1::Builder::new();
    let open = connections::Connections::new(limits);
    let _sweeper = AbortOnDrop(tokio::spawn(open.sweep()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut accept_errors = connections::OncePerSecond::default();
    let mut refusals = connections::OncePerSecond::default();
    let mut stop = pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error, &mut accept_errors).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match open.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                if let Some(suppressed) = refusals.admit(Instant::now()) {
                    tracing::warn!(%peer, suppressed, "refusing connections: {refusal}");
                }
                connections::refuse(stream);
                continue;
            }
        };
        let tls = front.state().tls().map(tls::Tls::acceptor);
        let service = front.for_connection(peer, tls.is_some());
        let Some(acceptor) = tls else {
            let connection = http.serve_connection(
                hyper_util::rt::TokioIo::new(slot.watch(stream)),
                slot.service(service),
            );
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                drop(slot);
            });
            continue;
        };
        // The handshake in the connection's own task, held to the head's deadline like a
        // request's head: a client that stalls it holds its slot no longer than a slow request.
        let watcher = graceful.watcher();
        let http = http.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(slot.watch(stream)).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let served = if io.inner().get_ref().1.alpn_protocol() == Some(tls::H2) {
                slot.multiplexed();
                let h2 =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                watcher.watch(h2.serve_connection(io, service)).await
            } else {
                watcher
                    .watch(http.serve_connection(io, slot.service(service)))
                    .await
            };
            if let Err(error) = served {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Ends a task when dropped: the sweep stops with [`serve`], however `serve` ends (`run` drops
/// it when the grace period is over).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A failed `accept`: a connection that went away before it was accepted is nobody's concern.
/// Anything else is logged, at most once a second (with a count of those not logged): out of
/// descriptors or memory, the loop pauses a second rather than spin on a failure that only
/// time (a connection closing) can cure; otherwise it pauses briefly, in case the failure
/// persists.
async fn accept_failed(error: std::io::Error, log: &mut connections::OncePerSecond) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    let exhausted = matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if let Some(suppressed) = log.admit(Instant::now()) {
        tracing::error!(%error, suppressed, "cannot accept a connection");
    }
    let pause = if exhausted { 1000 } else { 10 };
    tokio::time::sleep(Duration::from_millis(pause)).await;
}
