//! The counters behind `/metrics` (served by [`crate::routes::metrics`]): requests by route and
//! status, verifications by verdict.
//!
//! Counting is cheap on the request path: a read lock on the route table (written once per route,
//! the first time it is served) and an atomic add; forward-auth, the hot path, has its own
//! counters and takes no lock; everything else is atomic too.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use crate::paths::{self, ForwardAuthRoute};
use crate::views::VerifyCode;

/// One counter per status code, 100 to 599.
struct StatusCounts([AtomicU64; 500]);

impl StatusCounts {
    fn new() -> Box<Self> {
        Box::new(Self(std::array::from_fn(|_| AtomicU64::new(0))))
    }

    fn add(&self, status: u16) {
        if let Some(count) = status
            .checked_sub(100)
            .and_then(|i| self.0.get(usize::from(i)))
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(status, count)` for every status seen.
    fn seen(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (100..)
            .zip(&self.0)
            .map(|(status, count)| (status, count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
    }
}

pub struct Metrics {
    /// Route template → counts by status.
    requests: RwLock<HashMap<Box<str>, Box<StatusCounts>>>,
    /// Forward-auth's routes, by [`ForwardAuthRoute`]: no lookup on the hot path.
    forward_auth: [Box<StatusCounts>; ForwardAuthRoute::ALL.len()],
    /// `/v1/verify`'s, for the same reason: neither a lookup nor the map's lock, which every
    /// worker thread would take for every verification.
    verify: Box<StatusCounts>,
    verifications: [AtomicU64; VerifyCode::ALL.len()],
    /// Webhook attempts: delivered (a 2xx), and not.
    webhook_attempts: [AtomicU64; 2],
    /// Gateway routes by prefix; kept across reloads, so a route's counts go on.
    gateway: RwLock<BTreeMap<String, Arc<GatewayCounts>>>,
}

/// Latency buckets of the gateway's upstream histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A gateway route's counts: requests by the status the client got, and how long the upstream
/// took to answer (its response head).
pub struct GatewayCounts {
    statuses: Box<StatusCounts>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    answered: AtomicU64,
    sum_micros: AtomicU64,
}

impl GatewayCounts {
    fn new() -> Self {
        Self {
            statuses: StatusCounts::new(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            answered: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn count(&self, status: u16) {
        self.statuses.add(status);
    }

    /// One upstream answer (or timeout) after `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .and_then(|i| self.buckets.get(i))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn write(&self, route: &str, out: &mut String) {
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keygate_gateway_upstream_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.answered.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "keygate_gateway_upstream_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "keygate_gateway_upstream_seconds_sum{{route=\"{route}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "keygate_gateway_upstream_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: RwLock::default(),
            forward_auth: std::array::from_fn(|_| StatusCounts::new()),
            verify: StatusCounts::new(),
            verifications: std::array::from_fn(|_| AtomicU64::new(0)),
            webhook_attempts: std::array::from_fn(|_| AtomicU64::new(0)),
            gateway: RwLock::default(),
        }
    }
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if route == paths::VERIFY {
            return self.verify.add(status);
        }
        let requests = self.requests.read().unwrap_or_else(|p| p.into_inner());
        if let Some(counts) = requests.get(route) {
            return counts.add(status);
        }
        drop(requests);
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.into())
            .or_insert_with(StatusCounts::new)
            .add(status);
    }

    pub fn count_forward_auth(&self, route: ForwardAuthRoute, status: u16) {
        self.forward_auth[route as usize].add(status);
    }

    pub fn count_verification(&self, code: VerifyCode) {
        self.verifications[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of the gateway route with `prefix`, made the first time it is asked for.
    pub fn gateway_route(&self, prefix: &str) -> Arc<GatewayCounts> {
        let mut routes = self.gateway.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            routes
                .entry(prefix.to_owned())
                .or_insert_with(|| Arc::new(GatewayCounts::new())),
        )
    }

    /// One webhook attempt, delivered or not.
    pub fn webhook_attempt(&self, delivered: bool) {
        self.webhook_attempts[usize::from(!delivered)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts each routed request by its route template and final status: a route layer, where the
/// router has set [`MatchedPath`]. Written out rather than `from_fn`, which would clone the
/// route's boxed service for every request.
#[derive(Clone)]
pub struct CountLayer(Arc<Metrics>);

impl CountLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self(metrics)
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Count<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let response = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let response = response.await?;
            if let Some(route) = route {
                metrics.count_request(route.as_str(), response.status().as_u16());
            }
            Ok(response)
        })
    }
}

impl Metrics {
    /// The request and verification counters, in the Prometheus text format.
    pub fn write_counts(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP keygate_http_requests_total Requests by route template and status."
        );
        let _ = writeln!(out, "# TYPE keygate_http_requests_total counter");
        {
            let requests = self.requests.read().unwrap_or_else(|p| p.into_inner());
            let forward_auth = ForwardAuthRoute::ALL
                .iter()
                .map(|&route| (route.template(), &*self.forward_auth[route as usize]));
            let mut routes: Vec<(&str, &StatusCounts)> = requests
                .iter()
                .map(|(route, counts)| (&**route, &**counts))
                .chain(forward_auth)
                .chain([(paths::VERIFY, &*self.verify)])
                .collect();
            routes.sort_by_key(|&(route, _)| route);
            for (route, counts) in routes {
                for (status, count) in counts.seen() {
                    let _ = writeln!(
                        out,
                        "keygate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP keygate_verifications_total POST /v1/verify verdicts by code."
        );
        let _ = writeln!(out, "# TYPE keygate_verifications_total counter");
        for code in VerifyCode::ALL {
            let count = self.verifications[code as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keygate_verifications_total{{code=\"{}\"}} {count}",
                code.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP keygate_webhook_attempts_total Webhook delivery attempts by outcome."
        );
        let _ = writeln!(out, "# TYPE keygate_webhook_attempts_total counter");
        for (outcome, count) in ["delivered", "failed"].iter().zip(&self.webhook_attempts) {
            let _ = writeln!(
                out,
                "keygate_webhook_attempts_total{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let gateway = self.gateway.read().unwrap_or_else(|p| p.into_inner());
        if gateway.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP keygate_gateway_requests_total Gateway requests by route prefix and the status answered."
        );
        let _ = writeln!(out, "# TYPE keygate_gateway_requests_total counter");
        for (route, counts) in gateway.iter() {
            for (status, count) in counts.statuses.seen() {
                let _ = writeln!(
                    out,
                    "keygate_gateway_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP keygate_gateway_upstream_seconds How long upstreams took to answer, by route prefix."
        );
        let _ = writeln!(out, "# TYPE keygate_gateway_upstream_seconds histogram");
        for (route, counts) in gateway.iter() {
            counts.write(route, out);
        }
    }
}
