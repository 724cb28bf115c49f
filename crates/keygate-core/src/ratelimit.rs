//! Per-credential rate limits with GCRA (the generic cell rate algorithm): exact on one node, and
//! without the fixed-window flaw that lets a client send twice its limit across a window boundary.
//!
//! A limit of `requests` per `per_seconds` admits one request every `T = per_seconds / requests`
//! on average, with a burst of up to `requests` at once. The state per credential is one number,
//! the theoretical arrival time (TAT) of its next request. A std `Mutex`: nothing awaits while it
//! is held, and the critical section is a few arithmetic operations.
//!
//! This limiter is one node's. On a store several nodes share, the gate also runs the same GCRA on
//! a TAT kept in the store, taken a few requests' worth at a time as quotas are
//! ([`crate::reserve::Credits::spend_rate`]): the nodes together admit what one node would, plus
//! at most what each holds unspent (one reserve), and each node's own limiter still applies.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::id::CredentialId;
use crate::model::RateLimit;
use crate::store::RateCell;

/// What a request learns about its credential's limit, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_seconds: u64,
    /// Set when the request is refused: seconds until one more is admitted.
    pub retry_after_seconds: Option<u64>,
}

impl RateLimitStatus {
    pub fn allowed(&self) -> bool {
        self.retry_after_seconds.is_none()
    }
}

/// Entries beyond this many are swept of credentials whose bucket is full again.
const SWEEP_ABOVE: usize = 100_000;

/// GCRA's state per key: a credential (the gate's limits), or whatever else is limited alike (a
/// client address, for the endpoints that take no credential).
#[derive(Debug)]
pub struct RateLimiter<K = CredentialId> {
    tats: Mutex<HashMap<K, i64>>,
}

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        Self {
            tats: Mutex::new(HashMap::new()),
        }
    }
}

fn ceil_seconds(millis: i64) -> u64 {
    u64::try_from((millis.max(0) + 999) / 1000).unwrap_or(u64::MAX)
}

/// GCRA's parameters for `limit`: the emission interval, rounded up so a limit is never exceeded
/// by rounding, and a tolerance of `requests - 1` intervals, so the burst is exactly `requests`.
pub fn cell(limit: RateLimit) -> RateCell {
    let requests = i64::from(limit.requests.max(1));
    let period = i64::from(limit.per_seconds.max(1)) * 1000;
    let interval = (period + requests - 1) / requests;
    RateCell {
        interval_ms: interval,
        tolerance_ms: interval * (requests - 1),
    }
}

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `credential` at `now_millis` against `limit`.
    pub fn check(&self, credential: &K, limit: RateLimit, now_millis: i64) -> RateLimitStatus {
        let RateCell {
            interval_ms: interval,
            tolerance_ms: tolerance,
        } = cell(limit);

        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() > SWEEP_ABOVE {
            tats.retain(|_, tat| *tat > now_millis);
        }
        let tat = tats
            .get(credential)
            .copied()
            .unwrap_or(now_millis)
            .max(now_millis);
        if tat - now_millis > tolerance {
            let retry = tat - tolerance - now_millis;
            return RateLimitStatus {
                limit: limit.requests,
                remaining: 0,
                reset_seconds: ceil_seconds(tat - now_millis),
                retry_after_seconds: Some(ceil_seconds(retry).max(1)),
            };
        }
        let new_tat = tat + interval;
        match tats.get_mut(credential) {
            Some(stored) => *stored = new_tat,
            None => {
                tats.insert(credential.clone(), new_tat);
            }
        }
        let remaining = (now_millis + tolerance + interval - new_tat) / interval;
        RateLimitStatus {
            limit: limit.requests,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            reset_seconds: ceil_seconds(new_tat - now_millis),
            retry_after_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::credential::CredentialKind;

    fn id() -> CredentialId {
        CredentialId::generate_for(CredentialKind::Service, Timestamp::from_unix(0)).unwrap()
    }

    const TEN_PER_SECOND: RateLimit = RateLimit {
        requests: 10,
        per_seconds: 1,
    };

    #[test]
    fn a_full_burst_then_one_per_interval() {
        let limiter = RateLimiter::new();
        let key = id();
        let start = 1_000_000;
        for expected_remaining in (0..10).rev() {
            let status = limiter.check(&key, TEN_PER_SECOND, start);
            assert!(status.allowed());
            assert_eq!(status.remaining, expected_remaining);
            assert_eq!(status.limit, 10);
        }
        let refused = limiter.check(&key, TEN_PER_SECOND, start);
        assert!(!refused.allowed());
        assert_eq!(refused.retry_after_seconds, Some(1));
        assert_eq!(refused.remaining, 0);
        // 99 ms later still refused; at 100 ms exactly one more.
        assert!(!limiter.check(&key, TEN_PER_SECOND, start + 99).allowed());
        assert!(limiter.check(&key, TEN_PER_SECOND, start + 100).allowed());
        assert!(!limiter.check(&key, TEN_PER_SECOND, start + 100).allowed());
        // Other credentials have their own bucket.
        assert!(limiter.check(&id(), TEN_PER_SECOND, start).allowed());
    }

    #[test]
    fn limits_that_do_not_divide_evenly_keep_their_burst() {
        let limiter = RateLimiter::new();
        let key = id();
        let three = RateLimit {
            requests: 3,
            per_seconds: 1,
        };
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check(&key, three, 0).remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        assert!(!limiter.check(&key, three, 0).allowed());
        assert!(!limiter.check(&key, three, 333).allowed());
        assert!(limiter.check(&key, three, 334).allowed());
    }

    #[test]
    fn no_double_burst_across_a_boundary() {
        // A fixed window would admit 10 at 0.999 s and 10 more at 1.000 s.
        let limiter = RateLimiter::new();
        let key = id();
        let admitted = |at: i64| {
            (0..20)
                .filter(|_| limiter.check(&key, TEN_PER_SECOND, at).allowed())
                .count()
        };
        assert_eq!(admitted(999), 10);
        assert_eq!(
            admitted(1000),
            0,
            "1 ms later only 1/100 of an interval has passed"
        );
        assert_eq!(admitted(2000), 10, "a full second later the burst is back");
    }

    #[test]
    fn over_any_window_no_more_than_the_burst_plus_the_rate() {
        let limiter = RateLimiter::new();
        let key = id();
        let limit = RateLimit {
            requests: 5,
            per_seconds: 2,
        };
        let interval = 400;
        // A request every 50 ms for 10 s.
        let admitted: Vec<i64> = (0..200)
            .map(|i| i * 50)
            .filter(|&at| limiter.check(&key, limit, at).allowed())
            .collect();
        // GCRA's guarantee: in any window of length W, at most the burst plus W / T requests.
        for window in [400, 2000, 5000] {
            for start in (0..10_000).step_by(50) {
                let inside = admitted
                    .iter()
                    .filter(|&&at| at >= start && at < start + window)
                    .count();
                let bound = 5 + usize::try_from(window / interval).unwrap();
                assert!(
                    inside <= bound,
                    "{inside} > {bound} in {window} ms from {start} ms"
                );
            }
        }
        // And the long-run rate is the limit's: the burst, then one per 400 ms.
        assert_eq!(admitted.len(), 5 + 10_000 / 400 - 1);
    }
}
