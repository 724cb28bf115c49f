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

/// A rate limit as GCRA runs it: one request every `interval_ms`, and a burst of
/// `tolerance_ms / interval_ms + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCell {
    pub interval_ms: i64,
    pub tolerance_ms: i64,
}

/// What a rate take got, and the shared TAT after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTaken {
    pub taken: u64,
    pub tat_ms: i64,
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
    /// Not scoped: the gate calls it for a credential it has verified, as it counts usage. A take
    /// that brings what was taken to 80 % or 100 % of the limit publishes `quota.threshold` (API.md
    /// §15), once per window, as of `now`.
    async fn take_credits(
        &self,
        subject: &str,
        window: Timestamp,
        need: u64,
        want: u64,
        now: Timestamp,
    ) -> Result<Option<Taken>, StoreError>;

    /// Whether several nodes may share this store (PostgreSQL): then rate limits are counted in it
    /// too, as [`QuotaStore::take_rate`], so that they hold across nodes.
    fn shared_by_nodes(&self) -> bool;

    /// Takes up to `want` requests' worth (none if fewer than `need` are free) of the rate limit
    /// of `subject` (a credential's id) at `now_ms`, in one statement: GCRA as core's ratelimit.rs
    /// runs it on one node, its TAT shared and moved on by what the take gets. The first take
    /// makes the count.
    async fn take_rate(
        &self,
        subject: &str,
        cell: RateCell,
        now_ms: i64,
        need: u64,
        want: u64,
    ) -> Result<RateTaken, StoreError>;

    /// Deletes the rate-limit states whose TAT has passed at `now_ms` (they say no more than a
    /// missing one: a full burst); how many.
    async fn prune_rate_limits(&self, now_ms: i64) -> Result<u64, StoreError>;

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
