//! `/metrics` in the Prometheus text format: requests by route and status, verifications by
//! verdict, requests of known credentials by outcome, the verification cache's hits and misses,
//! and how long its store reads take.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keygate_core::store::UsageOutcome;
use keygate_core::verify::LATENCY_BUCKETS;

use crate::state::AppState;

/// Prometheus metrics
///
/// Metrics for Prometheus. Public, like `/healthz`: aggregate counts only.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics().write_counts(&mut out);
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
    let _ = writeln!(
        out,
        "# HELP keygate_cache_credentials Verified credentials this node holds in memory (at \
         most cache.max_credentials).\n# TYPE keygate_cache_credentials gauge\n\
         keygate_cache_credentials {}",
        cache.len()
    );
    let _ = writeln!(
        out,
        "# HELP keygate_cache_evictions_total Cached credentials dropped to make room for \
         others (not those a change dropped).\n# TYPE keygate_cache_evictions_total counter\n\
         keygate_cache_evictions_total {}",
        cache.evictions.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP keygate_credential_requests_total Requests of known credentials on every path, by \
         outcome, as usage counts them (updated by each usage batch, every few seconds)."
    );
    let _ = writeln!(out, "# TYPE keygate_credential_requests_total counter");
    let counted = state.gate().usage().counted();
    for (outcome, count) in UsageOutcome::ALL.iter().zip(counted) {
        let _ = writeln!(
            out,
            "keygate_credential_requests_total{{outcome=\"{}\"}} {count}",
            outcome.as_str()
        );
    }
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
    let _ = writeln!(
        out,
        "# HELP keygate_quota_store_takes_total Round trips this node made to take quota credits \
         from the store (one per reserve while plenty are left)."
    );
    let _ = writeln!(out, "# TYPE keygate_quota_store_takes_total counter");
    let _ = writeln!(
        out,
        "keygate_quota_store_takes_total {}",
        state.gate().credits().store_takes()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
