//! `/metrics` in the Prometheus text format: requests by route and status, verifications by
//! verdict, the verification cache's hits and misses, and how long its store reads take.
//!
//! Counting is cheap on the request path: one short lock per request for the (route, status)
//! table, whose keys share the router's own route strings; everything else is atomic.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_core::verify::LATENCY_BUCKETS;

use crate::routes::verify::VerifyCode;
use crate::state::AppState;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Route template → status → count. Looked up by `&str`: a route's key is allocated once.
    requests: Mutex<HashMap<Arc<str>, BTreeMap<u16, u64>>>,
    verifications: [AtomicU64; VerifyCode::ALL.len()],
}

impl Metrics {
    pub fn count_request(&self, route: &MatchedPath, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let statuses = match requests.get_mut(route.as_str()) {
            Some(statuses) => statuses,
            None => requests.entry(Arc::from(route.as_str())).or_default(),
        };
        *statuses.entry(status).or_insert(0) += 1;
    }

    pub fn count_verification(&self, code: VerifyCode) {
        self.verifications[code as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts each routed request by its route template and final status.
pub async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    if let Some(route) = route {
        state
            .metrics()
            .count_request(&route, response.status().as_u16());
    }
    response
}

/// Metrics for Prometheus. Public, like `/healthz`: aggregate counts only.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let metrics = state.metrics();
    let _ = writeln!(
        out,
        "# HELP keygate_http_requests_total Requests by route template and status."
    );
    let _ = writeln!(out, "# TYPE keygate_http_requests_total counter");
    let requests = metrics
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut routes: Vec<_> = requests.into_iter().collect();
    routes.sort();
    for (route, statuses) in routes {
        for (status, count) in statuses {
            let _ = writeln!(
                out,
                "keygate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP keygate_verifications_total POST /v1/verify verdicts by code."
    );
    let _ = writeln!(out, "# TYPE keygate_verifications_total counter");
    for code in VerifyCode::ALL {
        let count = metrics.verifications[code as usize].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "keygate_verifications_total{{code=\"{}\"}} {count}",
            code.as_str()
        );
    }
    let cache = state.verifier().cache();
    let _ = writeln!(
        out,
        "# HELP keygate_cache_lookups_total Verification cache lookups by result."
    );
    let _ = writeln!(out, "# TYPE keygate_cache_lookups_total counter");
    let _ = writeln!(
        out,
        "keygate_cache_lookups_total{{result=\"hit\"}} {}",
        cache.hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "keygate_cache_lookups_total{{result=\"miss\"}} {}",
        cache.misses.load(Ordering::Relaxed)
    );
    let (cumulative, sum) = state.verifier().store_latency().snapshot();
    let _ = writeln!(
        out,
        "# HELP keygate_store_read_seconds How long verification's store reads take."
    );
    let _ = writeln!(out, "# TYPE keygate_store_read_seconds histogram");
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&cumulative) {
        let _ = writeln!(
            out,
            "keygate_store_read_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let total = cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "keygate_store_read_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(out, "keygate_store_read_seconds_sum {sum}");
    let _ = writeln!(out, "keygate_store_read_seconds_count {total}");
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
