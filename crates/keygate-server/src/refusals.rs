//! Refused requests of known credentials, for the audit log: a credential that was expired,
//! revoked or used from the wrong address (401/403 at authentication), and requests refused for
//! want of a permission (403). Unknown credentials are not recorded: there is nobody to attribute
//! them to, and they are what a flood is made of.
//!
//! Refusals are not changes, so they are not written in a transaction of their own per request:
//! identical refusals (same credential, tenant, address, status and request line) are counted in
//! memory and written every few seconds as one event with a `count`, so a client hammering with
//! a revoked key costs the store one row per interval. A std `Mutex`: nothing awaits while it is
//! held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use keygate_core::Timestamp;
use keygate_core::id::{CredentialId, EventId, TenantId};
use keygate_core::model::{Actor, AuditEvent, Outcome, Target};
use keygate_core::store::{DynStore, StoreError};
use keygate_core::verify::Verified;

/// Distinct refusals held between two writes. Past this, repeats of those held are still counted
/// but new kinds are dropped (with a warning) until the next write: memory stays bounded whatever
/// a flood looks like.
const MAX_PENDING: usize = 10_000;

/// What makes two refusals the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    credential: Option<CredentialId>,
    acting: Option<TenantId>,
    ip: Option<String>,
    status: u16,
    action: &'static str,
    target: Option<String>,
}

impl Key {
    fn of(event: &AuditEvent) -> Self {
        Self {
            credential: event.token_id.clone(),
            acting: event.acting_tenant_id.clone(),
            ip: event.ip.clone(),
            status: event.status,
            action: event.action,
            target: event.target.as_ref().map(|t| t.id.clone()),
        }
    }
}

/// A refused request, as the outer middleware saw it.
pub struct Refused<'a> {
    /// `auth.denied` (the credential itself was refused) or `access.denied` (it may not do this).
    pub action: &'static str,
    pub verified: &'a Verified,
    pub acting: Option<&'a TenantId>,
    pub status: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub request_id: &'a str,
}

impl Refused<'_> {
    /// The event recording this refusal (none if the system has no randomness for its id).
    pub fn event(&self, now: Timestamp) -> Option<AuditEvent> {
        let verified = self.verified;
        Some(AuditEvent {
            id: EventId::generate(now).ok()?,
            time: now,
            tenant_id: verified.tenant.id.clone(),
            acting_tenant_id: self.acting.cloned(),
            actor: Actor {
                kind: verified.principal.kind.as_str(),
                id: verified.principal.id.clone(),
            },
            token_id: Some(verified.credential.id.clone()),
            action: self.action,
            target: Some(Target {
                kind: "request",
                id: format!("{} {}", self.method, self.path),
            }),
            outcome: Outcome::Denied,
            status: self.status,
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.map(|a| a.chars().take(256).collect()),
            request_id: Some(self.request_id.to_owned()),
        })
    }
}

#[derive(Debug, Default)]
pub struct RefusalLog {
    pending: Mutex<HashMap<Key, (AuditEvent, u32)>>,
}

impl RefusalLog {
    /// Counts a refusal: the first of its kind since the last write is the event written.
    pub fn note(&self, event: AuditEvent) {
        let key = Key::of(&event);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = pending.get_mut(&key) {
            *count = count.saturating_add(1);
            return;
        }
        if pending.len() >= MAX_PENDING {
            tracing::warn!(
                "too many distinct refusals since the last audit write; dropping new kinds until the next"
            );
            return;
        }
        pending.insert(key, (event, 1));
    }

    /// Writes what was counted; on failure it is kept for the next attempt.
    pub async fn flush(&self, store: &DynStore) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        let (keys, events): (Vec<Key>, Vec<(AuditEvent, u32)>) = pending.into_iter().unzip();
        if let Err(error) = store.record_refusals(&events).await {
            let mut again = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (key, (event, count)) in keys.into_iter().zip(events) {
                again
                    .entry(key)
                    .and_modify(|(_, n)| *n = n.saturating_add(count))
                    .or_insert((event, count));
            }
            return Err(error);
        }
        Ok(())
    }
}
