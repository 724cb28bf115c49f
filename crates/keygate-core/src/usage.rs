//! What credentials did, written without a store write per request: every request of a known
//! credential is counted per minute and outcome (API.md §12), and every admitted one is its last
//! use (`last_used_at`, `last_used_ip`).
//!
//! Each request is noted on the cached verification itself (a few atomic operations, see
//! [`crate::verified::Usage`]); a credential joins the queue only on its first request since the
//! last batch. Batches are written every few seconds and at shutdown, each in one transaction: the
//! counts added to what other nodes wrote, so the stored sums are exact, and the last uses; what a
//! batch could not write stays here for the next one. A node killed outright loses at most one interval.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Timestamp;
use crate::store::{DynStore, LastUse, StoreError, UsageCount, UsageOutcome};
use crate::verified::{Counted, MinuteCount, Verified};

pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// How long after an hour ends its minutes are rolled up into hours and days: long after every
/// node's batch brought its counts of the hour's last minute (within [`FLUSH_EVERY`]). A batch
/// that brings a minute later, as a node back from a store outage does, adds it to its hour and
/// day itself.
pub const ROLL_UP_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct UsageRecorder {
    queued: Mutex<Vec<Arc<Verified>>>,
    /// Counts a batch could not write, and counts spilled by requests, for the next.
    unwritten: Mutex<Vec<UsageCount>>,
    /// Every request counted so far, by outcome, as batches took them: for `/metrics`, which
    /// must not cost the hot path a counter shared by every request.
    counted: [AtomicU64; UsageOutcome::ALL.len()],
    /// Held for a whole flush: a flush that finds another under way (the background batch, and
    /// one asked for at shutdown or by a test) waits for it, so that when it returns, everything
    /// noted before it was called is written, not merely taken by the other.
    flushing: futures_util::lock::Mutex<()>,
}

impl UsageRecorder {
    /// Notes an admitted request of `verified` at `at`, from `ip` when the path knows it.
    pub fn record(&self, verified: &Arc<Verified>, at: Timestamp, ip: Option<IpAddr>) {
        self.noted(verified, verified.usage.note(at.unix(), ip));
    }

    /// Counts a refused request of a known credential.
    pub fn refused(&self, verified: &Arc<Verified>, at: Timestamp, outcome: UsageOutcome) {
        self.noted(verified, verified.usage.count(at.unix(), outcome));
    }

    fn noted(&self, verified: &Arc<Verified>, counted: Counted) {
        if !counted.spilled.is_empty() {
            self.spill(verified, counted.spilled);
        }
        if counted.queue {
            self.queue(verified);
        }
    }

    /// Keeps counts a request moved out of its credential's counters (a minute no batch took:
    /// see [`crate::verified::Usage`]) for the next batch, as taken.
    #[cold]
    fn spill(&self, verified: &Verified, spilled: Vec<MinuteCount>) {
        let counts: Vec<_> = usage_counts(verified, spilled).collect();
        self.count_taken(&counts);
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(counts);
    }

    /// Adds counts just taken from credentials to what `/metrics` reports.
    fn count_taken(&self, counts: &[UsageCount]) {
        for count in counts {
            self.counted[count.outcome.index()].fetch_add(count.count, Ordering::Relaxed);
        }
    }

    fn queue(&self, verified: &Arc<Verified>) {
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(verified));
    }

    /// Every request counted so far, by outcome (in the order of [`UsageOutcome::ALL`]), as of
    /// the last batch.
    pub fn counted(&self) -> [u64; UsageOutcome::ALL.len()] {
        std::array::from_fn(|i| self.counted[i].load(Ordering::Relaxed))
    }

    /// Writes what was noted. What could not be written is kept for the next attempt: the
    /// counts as they were, the last uses noted again.
    pub async fn flush(&self, store: &DynStore) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().await;
        let queued = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()));
        let mut counts =
            std::mem::take(&mut *self.unwritten.lock().unwrap_or_else(|p| p.into_inner()));
        // The last uses, and beside them the verifications they were taken from, to note them
        // again should the batch fail.
        let mut uses = Vec::new();
        let mut used = Vec::new();
        let retried = counts.len();
        for verified in &queued {
            let taken = verified.usage.take();
            counts.extend(usage_counts(verified, taken.counts));
            if let Some(at) = taken.last_used {
                uses.push(LastUse {
                    credential_id: verified.owner_id().clone(),
                    at,
                    ip: taken.ip,
                });
                used.push(Arc::clone(verified));
            }
        }
        self.count_taken(&counts[retried..]);
        let written = store.add_usage(&counts, &uses).await;
        if written.is_err() {
            self.unwritten
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(counts);
            for (verified, last) in used.iter().zip(&uses) {
                if verified.usage.remember(last.at.unix(), last.ip) {
                    self.queue(verified);
                }
            }
        }
        written
    }
}

/// A credential's minute counts as the store takes them.
fn usage_counts(
    verified: &Verified,
    counts: Vec<MinuteCount>,
) -> impl Iterator<Item = UsageCount> + '_ {
    counts
        .into_iter()
        .map(move |(minute, outcome, count)| UsageCount {
            credential_id: verified.owner_id().clone(),
            tenant_id: verified.tenant().id.clone(),
            minute,
            outcome,
            count,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::permission::BuiltinRole;

    #[test]
    fn counts_a_request_moved_out_of_their_credential_are_kept_for_the_next_batch() {
        let record = crate::testing::record(CredentialKind::Service, BuiltinRole::Viewer, None);
        let verified = Arc::new(Verified::resolve(&record, &crate::testing::catalog()));
        let recorder = UsageRecorder::default();
        let minute = |m: i64| Timestamp::from_unix(1_790_000_040 + 60 * m);
        recorder.record(&verified, minute(0), None);
        recorder.refused(&verified, minute(0), UsageOutcome::Forbidden);
        recorder.record(&verified, minute(1), None);
        assert_eq!(recorder.queued.lock().unwrap().len(), 1, "queued once");
        assert!(recorder.unwritten.lock().unwrap().is_empty());

        // No batch ran for two minutes: minute 0's slot is needed again.
        recorder.record(&verified, minute(2), None);
        let unwritten = recorder.unwritten.lock().unwrap().clone();
        let kept = |outcome, count| UsageCount {
            credential_id: record.credential.id.clone(),
            tenant_id: record.tenant.id.clone(),
            minute: minute(0),
            outcome,
            count,
        };
        assert_eq!(
            unwritten,
            [
                kept(UsageOutcome::Valid, 1),
                kept(UsageOutcome::Forbidden, 1)
            ]
        );
        assert_eq!(
            recorder.counted(),
            [1, 0, 0, 0, 1, 0, 0],
            "counted as taken, for /metrics"
        );
        assert_eq!(recorder.queued.lock().unwrap().len(), 1);
    }
}
