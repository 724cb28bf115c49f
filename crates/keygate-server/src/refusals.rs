//! Refused requests of known credentials, for the audit log: a credential that was expired,
//! revoked or used from the wrong address (401/403 at authentication), and requests refused for
//! want of a permission (403). Unknown credentials are not recorded: there is nobody to attribute
//! them to, and they are what a flood is made of.
//!
//! Refusals are not changes, so they are not written in a transaction of their own per request:
//! identical refusals are counted in memory and written every few seconds as one event with a
//! `count`, so a client hammering with a revoked key costs the store one row per interval.
//!
//! What makes two refusals "identical" is chosen so that a client cannot multiply the rows: the
//! credential, the tenant acted for, the address, the status and the action, never the request
//! line (the first one seen is kept as a sample). Rows are rationed besides: the first refusal of a
//! credential in an interval always gets its row, a credential gets at most
//! [`KINDS_PER_CREDENTIAL`] and a tenant's credentials at most [`KINDS_PER_TENANT`], so one tenant's
//! flood cannot crowd out another's refusals; a refusal beyond its share is counted on its
//! credential's first row of the interval, so no refusal goes uncounted. A std `Mutex`: nothing
//! awaits while it is held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use keygate_core::Timestamp;
use keygate_core::id::{CredentialId, TenantId};
use keygate_core::model::{Actor, AuditEvent, Outcome, RequestMeta, Target};
use keygate_core::store::{DynStore, StoreError};
use keygate_core::verified::Verified;

use crate::notes::KnownCaller;

/// Rows one credential's refusals may take per interval (other addresses, statuses, actions).
pub const KINDS_PER_CREDENTIAL: u32 = 4;
/// Rows one tenant's credentials may take per interval, beyond each credential's first.
pub const KINDS_PER_TENANT: u32 = 1_000;
/// Rows held between two writes, beyond each credential's first: memory stays bounded whatever
/// a flood looks like. (Each credential's first row is bounded by the credentials that exist.)
const MAX_PENDING: usize = 10_000;

/// What makes two refusals the same event: nothing the client chooses freely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    credential: Option<CredentialId>,
    acting: Option<TenantId>,
    ip: Option<String>,
    status: u16,
    action: &'static str,
}

impl Key {
    fn of(event: &AuditEvent) -> Self {
        Self {
            credential: event.token_id.clone(),
            acting: event.acting_tenant_id.clone(),
            ip: event.ip.clone(),
            status: event.status,
            action: event.action,
        }
    }
}

/// A refused request, as the front service saw it.
struct Refused<'a> {
    /// `auth.denied` (the credential itself was refused) or `access.denied` (it may not do this).
    action: &'static str,
    verified: &'a Verified,
    acting: Option<&'a TenantId>,
    status: u16,
    method: &'a str,
    path: &'a str,
    ip: Option<IpAddr>,
    user_agent: Option<&'a str>,
    request_id: &'a str,
}

/// The request a refusal is recorded with: never its query string or headers, which may carry
/// credentials.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub ip: IpAddr,
    pub id: &'a str,
}

impl Refused<'_> {
    /// The event recording this refusal (none if the system has no randomness for its id).
    fn event(&self, now: Timestamp) -> Option<AuditEvent> {
        let verified = self.verified;
        let actor = Actor {
            kind: verified.principal().kind.as_str(),
            id: verified.principal().id.to_owned(),
        };
        let target = Target {
            kind: "request",
            id: format!("{} {}", self.method, self.path),
        };
        let meta = RequestMeta {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.map(|a| a.chars().take(256).collect()),
            request_id: Some(self.request_id.to_owned()),
        };
        let event = AuditEvent::new(
            verified.tenant().id.clone(),
            actor,
            Some(verified.id().clone()),
            self.action,
            Some(target),
            now,
            &meta,
        )
        .ok()?;
        Some(
            event
                .acting_in(self.acting.cloned())
                .with_outcome(Outcome::Denied)
                .with_status(self.status),
        )
    }
}

/// The refusals counted since the last write.
#[derive(Debug, Default)]
struct Pending {
    events: HashMap<Key, (AuditEvent, u32)>,
    /// Each credential's first row of the interval, and how many rows it has.
    credentials: HashMap<Option<CredentialId>, (Key, u32)>,
    /// Rows beyond their credential's first, per tenant and in all.
    tenants: HashMap<TenantId, u32>,
    extra: usize,
    /// Whether folding was logged in this interval: one line per interval, not per request.
    warned: bool,
}

impl Pending {
    /// Counts `times` refusals like `event`.
    fn add(&mut self, event: AuditEvent, times: u32) {
        let key = Key::of(&event);
        if let Some((_, count)) = self.events.get_mut(&key) {
            *count = count.saturating_add(times);
            return;
        }
        let Some((first, rows)) = self.credentials.get_mut(&key.credential) else {
            self.credentials
                .insert(key.credential.clone(), (key.clone(), 1));
            self.events.insert(key, (event, times));
            return;
        };
        let tenant_rows = self.tenants.entry(event.tenant_id.clone()).or_default();
        if *rows < KINDS_PER_CREDENTIAL
            && *tenant_rows < KINDS_PER_TENANT
            && self.extra < MAX_PENDING
        {
            *rows += 1;
            *tenant_rows += 1;
            self.extra += 1;
            self.events.insert(key, (event, times));
            return;
        }
        // Beyond its share: counted on the credential's first row.
        if let Some((_, count)) = self.events.get_mut(first) {
            *count = count.saturating_add(times);
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                tenant = %event.tenant_id,
                "many kinds of refusal since the last audit write; counting the rest on each credential's first event"
            );
        }
    }
}

#[derive(Debug, Default)]
pub struct RefusalLog {
    pending: Mutex<Pending>,
}

impl RefusalLog {
    /// Notes the refusal of a request whose credential was known: `auth.denied` when the
    /// credential itself was refused (401: expired, revoked; or used from an address it may not
    /// be used from), `access.denied` when it may not do what it asked (403).
    pub fn note_refused(
        &self,
        caller: &KnownCaller,
        status: u16,
        address_refused: bool,
        line: &RequestLine<'_>,
        now: Timestamp,
    ) {
        let action = if status == 401 || address_refused {
            "auth.denied"
        } else {
            "access.denied"
        };
        let refused = Refused {
            action,
            verified: &caller.verified,
            acting: caller.acting.as_ref(),
            status,
            method: line.method,
            path: line.path,
            ip: Some(line.ip),
            user_agent: caller.user_agent.as_ref().and_then(|a| a.to_str().ok()),
            request_id: line.id,
        };
        if let Some(event) = refused.event(now) {
            self.note(event);
        }
    }

    /// Counts a refusal: the first of its kind since the last write is the event written.
    /// (Also how sign-in notes its refusals: [`keygate_core::signin::RefusalSink`].)
    pub fn note(&self, event: AuditEvent) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(event, 1);
    }

    /// Writes what was counted; on failure it is kept for the next attempt.
    pub async fn flush(&self, store: &DynStore) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.events.is_empty() {
            return Ok(());
        }
        let events: Vec<(AuditEvent, u32)> = pending.events.into_values().collect();
        if let Err(error) = store.record_refusals(&events).await {
            let mut again = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (event, count) in events {
                again.add(event, count);
            }
            return Err(error);
        }
        Ok(())
    }
}

impl keygate_core::signin::RefusalSink for RefusalLog {
    fn refused(&self, event: AuditEvent) {
        self.note(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(tenant: &str, credential: &str, ip: &str, path: &str) -> AuditEvent {
        let actor = Actor {
            kind: "service_token",
            id: credential.to_owned(),
        };
        let target = Target {
            kind: "request",
            id: format!("GET {path}"),
        };
        let meta = RequestMeta {
            ip: Some(ip.to_owned()),
            ..RequestMeta::default()
        };
        AuditEvent::new(
            TenantId::from_trusted(tenant.to_owned()),
            actor,
            Some(CredentialId::from_trusted(credential.to_owned())),
            "access.denied",
            Some(target),
            Timestamp::from_unix(1_000),
            &meta,
        )
        .unwrap()
        .with_outcome(Outcome::Denied)
        .with_status(403)
    }

    fn rows(pending: &Pending, credential: &str) -> Vec<u32> {
        let mut counts: Vec<u32> = pending
            .events
            .values()
            .filter(|(e, _)| {
                e.token_id
                    .as_ref()
                    .is_some_and(|t| t.as_str() == credential)
            })
            .map(|(_, count)| *count)
            .collect();
        counts.sort_unstable();
        counts
    }

    #[test]
    fn distinct_paths_are_one_row_with_the_first_path_as_its_sample() {
        let mut pending = Pending::default();
        for i in 0..50_000 {
            pending.add(
                refusal("tnt_a", "tok_flood", "10.0.0.1", &format!("/x/{i}")),
                1,
            );
        }
        assert_eq!(rows(&pending, "tok_flood"), [50_000]);
        let (event, _) = pending.events.values().next().unwrap();
        assert_eq!(event.target.as_ref().unwrap().id, "GET /x/0");
    }

    #[test]
    fn a_credential_gets_a_bounded_number_of_rows_and_every_refusal_is_counted() {
        let mut pending = Pending::default();
        for i in 0..1_000 {
            pending.add(
                refusal(
                    "tnt_a",
                    "tok_flood",
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    "/",
                ),
                1,
            );
        }
        let counts = rows(&pending, "tok_flood");
        assert_eq!(counts.len(), KINDS_PER_CREDENTIAL as usize);
        assert_eq!(counts.iter().sum::<u32>(), 1_000);
    }

    #[test]
    fn one_tenants_flood_never_costs_another_credential_its_first_row() {
        let mut pending = Pending::default();
        // Tenant A: many credentials, each from many addresses, until A's share is spent.
        for credential in 0..2_000 {
            for address in 0..8 {
                pending.add(
                    refusal(
                        "tnt_a",
                        &format!("tok_a{credential}"),
                        &format!("10.0.0.{address}"),
                        "/",
                    ),
                    1,
                );
            }
        }
        let extra_of_a = pending.tenants.get(&TenantId::from_trusted("tnt_a".into()));
        assert_eq!(extra_of_a, Some(&KINDS_PER_TENANT));
        // Every credential of A still has its first row, with all its refusals counted.
        assert_eq!(rows(&pending, "tok_a1999").iter().sum::<u32>(), 8);
        // Tenant B's refusals keep their rows: the first, and more kinds within B's share.
        pending.add(
            refusal("tnt_b", "tok_revoked", "192.0.2.1", "/v1/whoami"),
            1,
        );
        pending.add(
            refusal("tnt_b", "tok_revoked", "192.0.2.2", "/v1/whoami"),
            1,
        );
        assert_eq!(rows(&pending, "tok_revoked"), [1, 1]);
    }
}
