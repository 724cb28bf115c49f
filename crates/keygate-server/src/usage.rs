//! `last_used_at` without a store write per request: uses are noted in memory and written in one
//! batch every few seconds (and at shutdown). A crash loses at most one interval of timestamps,
//! which is the trade this field can afford.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keygate_core::Timestamp;
use keygate_core::id::CredentialId;
use keygate_core::store::{DynStore, StoreError};

pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<CredentialId, Timestamp>>,
}

impl UsageRecorder {
    /// Notes a use. Allocates only for the first use of a credential in an interval.
    pub fn record(&self, id: &CredentialId, at: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(id) {
            Some(last) => *last = (*last).max(at),
            None => {
                pending.insert(id.clone(), at);
            }
        }
    }

    /// Writes what was noted; on failure the uses are kept for the next attempt.
    pub async fn flush(&self, store: &DynStore) -> Result<(), StoreError> {
        let batch: Vec<(CredentialId, Timestamp)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if let Err(error) = store.record_last_used(&batch).await {
            for (id, at) in batch {
                self.record(&id, at);
            }
            return Err(error);
        }
        Ok(())
    }
}
