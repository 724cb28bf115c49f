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
use crate::verified::Verified;

pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// How long after an hour ends its minutes are rolled up into hours and days: long after every
/// node's batch brought its counts of the hour's last minute (within [`FLUSH_EVERY`]). A batch
/// that brings a minute later, as a node back from a store outage does, adds it to its hour and
/// day itself.
pub const ROLL_UP_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct UsageRecorder {
    queued: Mutex<Vec<Arc<Verified>>>,
    /// Counts a batch could not write, for the next.
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
        if verified.usage.note(at.unix(), ip) {
            self.queue(verified);
        }
    }

    /// Counts a refused request of a known credential.
    pub fn refused(&self, verified: &Arc<Verified>, at: Timestamp, outcome: UsageOutcome) {
        if verified.usage.count(at.unix(), outcome) {
            self.queue(verified);
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
            let credential_id = verified.owner_id().clone();
            counts.extend(
                taken
                    .counts
                    .into_iter()
                    .map(|(minute, outcome, count)| UsageCount {
                        credential_id: credential_id.clone(),
                        tenant_id: verified.tenant().id.clone(),
                        minute,
                        outcome,
                        count,
                    }),
            );
            if let Some(at) = taken.last_used {
                uses.push(LastUse {
                    credential_id,
                    at,
                    ip: taken.ip,
                });
                used.push(Arc::clone(verified));
            }
        }
        for count in &counts[retried..] {
            self.counted[count.outcome.index()].fetch_add(count.count, Ordering::Relaxed);
        }
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
