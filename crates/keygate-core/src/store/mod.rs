//! The storage traits. The store crate implements them once per database; nothing here knows SQL.
//!
//! One module per resource holds that resource's trait and the values only it uses; this module
//! holds what they share and [`Store`], the list of them that handlers reach through
//! [`DynStore`]. Adding a resource: its module and what it exports here, and its trait in
//! `Store`'s list. (A caller needs no import to call a resource's method on a `dyn Store`: a trait
//! object's supertrait methods are its own.)
//!
//! Each operation that changes something is one transaction in the store, with its audit event
//! inside it, and tells the [`ChangeListener`] what it changed once it has committed, so caches are
//! dropped in the same code path as the change and cannot be forgotten by a handler.
//! Operations on a tenant's objects take a [`Grant`](crate::access::Grant) or a
//! [`Scope`](crate::access::Scope): they cannot be called without the access decision, and they
//! scope their query to its tenant. The reads that are not scoped (a credential by its hash, an
//! OAuth client by its id) are on [`CredentialSource`], which only the verifier holds: `Store`
//! does not extend it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::model::{AuditEvent, Credential, Tenant, User};
use crate::password::PasswordHashString;

mod account;
mod audit;
mod keys;
mod oauth;
mod quotas;
mod roles;
mod tenants;
mod tokens;
mod usage;
mod users;
mod verification;
mod webhooks;

pub use crate::model::LeakPolicy;
pub use account::{AccountStore, KeyDeletion};
pub use audit::{AuditStore, EventFilter};
pub use keys::{SigningKeySource, SigningKeyStore};
pub use oauth::OAuthStore;
pub use quotas::{QuotaStore, QuotaTarget, RateCell, RateTaken, Taken};
pub use roles::RoleStore;
pub use tenants::TenantStore;
pub use tokens::{PersonalTokens, TokenFilter, TokenStore};
pub use usage::{
    Granularity, LastUse, MINUTE_BUCKETS_PER_HOUR, UsageBucket, UsageCount, UsageFilter,
    UsageOutcome, UsageStore,
};
pub use users::{Login, UserStore, UserWrite};
pub use verification::{
    AccessTokenRecord, CredentialContext, CredentialRecord, CredentialSource, MOST_HASHES_AT_ONCE,
};
pub use webhooks::{AttemptOutcome, LeakHandled, LeakReport, WebhookStore};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out; the request may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A unique field is taken; the payload names it (`slug`, `email`, …).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("the store already holds a root tenant")]
    AlreadyInitialized,
    /// Anything else: a bug or corrupt data. Logged, never shown to clients.
    #[error("store failure: {0}")]
    Internal(String),
}

/// What a committed change affected, for dropping cached verifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Credential(CredentialId),
    User(UserId),
    Role(RoleId),
    /// A tenant and, through it, every descendant.
    Tenant(TenantId),
    /// The keys access tokens are signed with (a key added, or one retired).
    SigningKeys,
}

impl Change {
    /// The id the change names; `None` for the signing keys, which no cached verification
    /// depends on.
    pub fn id(&self) -> Option<&str> {
        match self {
            Change::Credential(id) => Some(id.as_str()),
            Change::User(id) => Some(id.as_str()),
            Change::Role(id) => Some(id.as_str()),
            Change::Tenant(id) => Some(id.as_str()),
            Change::SigningKeys => None,
        }
    }

    /// The change as a short message for other nodes (`c:tok_…`, `u:usr_…`, `r:rol_…`, `t:tnt_…`,
    /// `k:keys`).
    pub fn to_message(&self) -> String {
        match self {
            Change::Credential(id) => format!("c:{id}"),
            Change::User(id) => format!("u:{id}"),
            Change::Role(id) => format!("r:{id}"),
            Change::Tenant(id) => format!("t:{id}"),
            Change::SigningKeys => "k:keys".to_owned(),
        }
    }

    pub fn from_message(message: &str) -> Option<Self> {
        let (kind, id) = message.split_once(':')?;
        match kind {
            "c" => CredentialId::parse_any(id).map(Change::Credential),
            "u" => UserId::parse(id).map(Change::User),
            "r" => RoleId::parse(id).map(Change::Role),
            "t" => TenantId::parse(id).map(Change::Tenant),
            "k" if id == "keys" => Some(Change::SigningKeys),
            _ => None,
        }
    }
}

/// Told of every committed change; implemented by the verification cache.
pub trait ChangeListener: Send + Sync {
    fn changed(&self, change: &Change);

    /// Changes committed together (a bulk revocation, a batch of notifications from another
    /// node); by default told one at a time.
    fn changed_all(&self, changes: &[Change]) {
        changes.iter().for_each(|change| self.changed(change));
    }

    /// Changes made on other nodes may be going unseen (the channel that carries them is down):
    /// stop trusting what was cached until [`Self::resynced`].
    fn may_have_missed_changes(&self) {}

    /// The channel is back: forget what was cached before it broke, and trust the cache again.
    fn resynced(&self) {}
}

/// Several listeners told of the same changes: the credential cache and the signing keys.
pub struct Listeners(pub Vec<Arc<dyn ChangeListener>>);

impl ChangeListener for Listeners {
    fn changed(&self, change: &Change) {
        self.0.iter().for_each(|l| l.changed(change));
    }

    fn changed_all(&self, changes: &[Change]) {
        self.0.iter().for_each(|l| l.changed_all(changes));
    }

    fn may_have_missed_changes(&self) {
        self.0.iter().for_each(|l| l.may_have_missed_changes());
    }

    fn resynced(&self) {
        self.0.iter().for_each(|l| l.resynced());
    }
}

/// The first tenant, its owner and its first service token, created together or not at all.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub tenant: Tenant,
    pub user: User,
    pub password_hash: PasswordHashString,
    pub token: Credential,
    pub event: AuditEvent,
}

/// A page request: at most `limit` items older than `cursor` (an id), newest first, only those
/// among `ids` when any are given (API.md §1: `?id=a&id=b`).
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
    pub ids: Vec<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    /// The first `limit` items of the whole list.
    pub fn first(limit: u32) -> Self {
        Page {
            limit,
            cursor: None,
            ids: Vec::new(),
        }
    }
}

/// One page of a list, and the cursor of the next page if there is one.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The outcome of deleting something that others may depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// Still referenced (a role held by users or tokens).
    InUse,
}

/// Everything the management API stores: one trait per resource, and the store's own lifecycle.
#[async_trait]
pub trait Store:
    TenantStore
    + UserStore
    + RoleStore
    + TokenStore
    + AccountStore
    + AuditStore
    + OAuthStore
    + SigningKeyStore
    + UsageStore
    + QuotaStore
    + WebhookStore
{
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Waits for in-flight work and closes every connection; later calls fail as unavailable.
    async fn close(&self);

    /// Whether the store already holds a root tenant.
    async fn is_initialized(&self) -> Result<bool, StoreError>;

    /// Creates the root tenant, its owner and its first token in one transaction; refuses with
    /// [`StoreError::AlreadyInitialized`] and changes nothing if the store is not empty.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError>;
}

/// A shared handle to whichever store is configured.
pub type DynStore = Arc<dyn Store>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::credential::CredentialKind;

    #[test]
    fn changes_travel_as_short_messages() {
        let now = Timestamp::from_unix(1_800_000_000);
        for change in [
            Change::Credential(CredentialId::generate_for(CredentialKind::Session, now).unwrap()),
            Change::User(UserId::generate(now).unwrap()),
            Change::Role(RoleId::generate(now).unwrap()),
            Change::Tenant(TenantId::generate(now).unwrap()),
            Change::SigningKeys,
            Change::Credential(
                CredentialId::generate_for(CredentialKind::AccessToken, now).unwrap(),
            ),
        ] {
            assert_eq!(Change::from_message(&change.to_message()), Some(change));
        }
        for junk in ["", "heartbeat", "x:tok_1", "c:usr_1", "u:", "k:tok_1"] {
            assert_eq!(Change::from_message(junk), None, "{junk}");
        }
    }
}
