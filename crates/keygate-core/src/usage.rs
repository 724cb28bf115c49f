//! `last_used_at` and `last_used_ip` without a store write per request, and nearly without a lock: each use is noted
//! on the cached verification itself (two atomic operations); a credential joins the queue only
//! on its first use since the last batch. Batches are written every few seconds and at shutdown. A
//! crash loses at most one interval of timestamps, which is the trade this field can afford.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Timestamp;
use crate::store::{DynStore, LastUse, StoreError};
use crate::verified::Verified;

pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct UsageRecorder {
    queued: Mutex<Vec<Arc<Verified>>>,
}

impl UsageRecorder {
    /// Notes a use of `verified` at `at`, from `ip` when the path knows it.
    pub fn record(&self, verified: &Arc<Verified>, at: Timestamp, ip: Option<IpAddr>) {
        if verified.usage.note(at.unix(), ip) {
            self.queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(verified));
        }
    }

    /// Writes what was noted; on failure the uses are queued again for the next attempt.
    pub async fn flush(&self, store: &DynStore) -> Result<(), StoreError> {
        let queued = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()));
        let batch: Vec<_> = queued
            .iter()
            .map(|v| {
                let (at, ip) = v.usage.take();
                LastUse {
                    credential_id: v.owner_id().clone(),
                    at,
                    ip,
                }
            })
            .collect();
        if let Err(error) = store.record_last_used(&batch).await {
            for (verified, last) in queued.iter().zip(&batch) {
                self.record(verified, last.at, last.ip);
            }
            return Err(error);
        }
        Ok(())
    }
}
