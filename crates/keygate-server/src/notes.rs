//! What authentication learns about a request, handed to the front service beside the response:
//! the rate-limit status for the `RateLimit-*` headers, and the known credential behind a refused
//! request for the audit log. A task-local, so the hot path passes it without allocating.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use keygate_core::id::TenantId;
use keygate_core::ratelimit::RateLimitStatus;
use keygate_core::verified::Verified;

/// What authentication learned about a request, left for the front service: the rate-limit
/// status for the response's `RateLimit-*` headers, and the known credential behind the request
/// (with the tenant it acted in) for the audit log, should the request be refused.
#[derive(Default)]
pub struct Notes {
    pub rate_limit: Cell<Option<RateLimitStatus>>,
    pub caller: RefCell<Option<KnownCaller>>,
    /// Set when the request was admitted but not yet counted in its credential's usage: the
    /// management API's handlers check their own permissions, so its requests are counted once
    /// the answer says whether one was missing (`forbidden`) or not (`valid`).
    pub count_on_answer: Cell<bool>,
}

/// The credential behind a request, as far as authentication got.
pub struct KnownCaller {
    pub verified: Arc<Verified>,
    /// The tenant it acted in (`as-tenant`), if not its own.
    pub acting: Option<TenantId>,
    pub user_agent: Option<HeaderValue>,
}

tokio::task_local! {
    /// A task-local, so the hot path allocates nothing for it.
    pub static NOTES: Notes;
}

/// The `RateLimit-*` headers (IETF draft `ratelimit-headers`) for a status.
pub fn rate_limit_headers(status: &RateLimitStatus) -> [(HeaderName, HeaderValue); 3] {
    rate_limit_fields(
        u64::from(status.limit),
        u64::from(status.remaining),
        status.reset_seconds,
    )
}

/// The `RateLimit-*` headers of any limit: what it allows, what is left, seconds until it resets.
pub fn rate_limit_fields(
    limit: u64,
    remaining: u64,
    reset_seconds: u64,
) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(reset_seconds),
        ),
    ]
}
