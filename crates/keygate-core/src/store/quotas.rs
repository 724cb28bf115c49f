//! Quotas (API.md §13): the shared count of each quota's window, from which nodes take credits a
//! few at a time and to which they give back what they did not spend. [`crate::reserve`] holds the
//! design; this is the store's half, which alone makes a quota exact across nodes.

use async_trait::async_trait;

use super::StoreError;
use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::id::{CredentialId, TenantId};
use crate::model::AuditEvent;
use crate::quota::StoredQuota;

/// What a quota is set on, with the grant that allows it.
pub enum QuotaTarget<'a> {
    /// A personal or service token of the grant's tenant.
    Token(&'a Grant<perm::TokensWrite>, &'a CredentialId),
    /// An OAuth client of the grant's tenant.
    Client(&'a Grant<perm::OauthClientsWrite>, &'a CredentialId),
    /// A tenant strictly below the grant's: a pool is set by an ancestor, never by the tenant
    /// that spends it.
    Tenant(&'a Grant<perm::TenantsWrite>, &'a TenantId),
}

/// What a take got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The credits taken: 0 when fewer than the request needed were left.
    pub taken: u64,
    /// What the window has left after the take, for the size of the next one.
    pub remaining: u64,
}

#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// Sets the quota on `target` (its subject must be `quota.subject`), or removes it (`None`),
    /// recording `event` in the same transaction; every node's verification cache learns of it.
    /// `None` if the grant reaches no such token, client or tenant. A replaced quota keeps its
    /// count if its period and anchor are unchanged, else starts again.
    /// The quota on `subject`, as stored. Not scoped: for a caller that found `subject` where
    /// its grant reaches.
    async fn stored_quota(&self, subject: &str) -> Result<Option<StoredQuota>, StoreError>;

    async fn set_quota(
        &self,
        target: QuotaTarget<'_>,
        quota: Option<&StoredQuota>,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Takes credits of the quota on `subject` (a credential's or a tenant's id) for the window
    /// starting at `window`, in one statement: `want`, or what is left when that is less, but
    /// none when fewer than `need` are left. A quota still counting an older window starts the
    /// new one at zero. `None` when `subject` has no quota.
    ///
    /// Not scoped: the gate calls it for a credential it has verified, as it counts usage.
    async fn take_credits(
        &self,
        subject: &str,
        window: Timestamp,
        need: u64,
        want: u64,
    ) -> Result<Option<Taken>, StoreError>;

    /// Whether several nodes may share this store (PostgreSQL): then rate limits are counted in it
    /// too, as [`QuotaStore::take_rate_credits`], so that they hold across nodes.
    fn shared_by_nodes(&self) -> bool;

    /// Takes credits of the rate limit of `subject` (a credential's id), `limit` requests in the
    /// fixed window from `window` to `window_end`, as [`QuotaStore::take_credits`] takes a
    /// quota's: the first take makes the count, a take that first sees a newer window starts it
    /// at zero.
    async fn take_rate_credits(
        &self,
        subject: &str,
        limit: u64,
        window: Timestamp,
        window_end: Timestamp,
        need: u64,
        want: u64,
    ) -> Result<Taken, StoreError>;

    /// Deletes the rate-limit counts of windows over at `now`; how many.
    async fn prune_rate_windows(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Gives back credits taken for the window starting at `window` and not spent (a node
    /// stopping, or a reserve left idle). Nothing when the quota has moved on to another window:
    /// those credits ended with theirs.
    async fn give_back_credits(
        &self,
        subject: &str,
        window: Timestamp,
        credits: u64,
    ) -> Result<(), StoreError>;
}
