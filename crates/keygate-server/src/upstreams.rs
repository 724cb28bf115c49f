//! The gateway's routes in force and the pooled client to their upstreams (API.md §16): what the
//! state holds, below the proxying itself ([`crate::gateway`]), which decides what is sent.
//! Replaced whole on reload; a request holds the route it started with.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::uri::Authority;
use axum::http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use keygate_core::routes::{Route, RouteTable};

use crate::metrics::GatewayCounts;

/// A route with what proxying to it needs, made once per (re)load.
pub struct GatewayRoute {
    pub route: Arc<Route>,
    pub(crate) authority: Authority,
    pub(crate) host: HeaderValue,
    pub counts: Arc<GatewayCounts>,
}

/// The routes in force and the pooled client to their upstreams.
pub struct Gateway {
    routes: RwLock<Arc<Vec<Arc<GatewayRoute>>>>,
    client: Client<HttpConnector, Incoming>,
}

/// How long an idle kept-alive connection to an upstream is kept: under the 60 s or more most
/// servers keep one, so keygate drops it first and never sends on a connection being closed.
const POOL_IDLE: Duration = Duration::from_secs(50);

impl Gateway {
    pub fn new(table: &RouteTable, metrics: &crate::metrics::Metrics) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1024)
            // Set from the route, never from the client's request.
            .set_host(false)
            .build(connector);
        Ok(Self {
            routes: RwLock::new(Arc::new(prepare(table, metrics)?)),
            client,
        })
    }

    /// Puts `table` in force for requests that start from now; those in flight finish on the
    /// routes they started with.
    pub fn replace(
        &self,
        table: &RouteTable,
        metrics: &crate::metrics::Metrics,
    ) -> Result<usize, String> {
        let routes = Arc::new(prepare(table, metrics)?);
        let count = routes.len();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
        Ok(count)
    }

    /// Sends `request` to its upstream (its URI names it) on a pooled connection.
    pub fn send(&self, request: Request<Incoming>) -> ResponseFuture {
        self.client.request(request)
    }

    /// The route `path` takes, if any: the longest prefix it is on.
    pub fn find(&self, path: &str) -> Option<Arc<GatewayRoute>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.iter().find(|r| r.route.matches(path)).cloned()
    }
}

fn prepare(
    table: &RouteTable,
    metrics: &crate::metrics::Metrics,
) -> Result<Vec<Arc<GatewayRoute>>, String> {
    table
        .iter()
        .map(|route| {
            let authority =
                Authority::try_from(route.upstream.authority.as_str()).map_err(|_| {
                    format!(
                        "gateway route `{}`: `{}` is not a host and port",
                        route.prefix, route.upstream.authority
                    )
                })?;
            let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
            Ok(Arc::new(GatewayRoute {
                route: Arc::clone(route),
                authority,
                host,
                counts: metrics.gateway_route(&route.prefix),
            }))
        })
        .collect()
}
