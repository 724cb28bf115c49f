//! Usage (API.md §12): how many requests each credential made, per minute and per outcome.
//!
//! Each node counts in memory and adds its counts to the store every few seconds
//! ([`UsageStore::add_usage`]); the store keeps the sum, so what several nodes counted for the same
//! credential and minute adds up. The same counts go into minute, hour and day buckets at once,
//! each kept for its own time and pruned in batches.

use async_trait::async_trait;
use futures_core::stream::BoxStream;

use super::StoreError;
use crate::Timestamp;
use crate::access::{Scope, perm};
use crate::id::{CredentialId, TenantId};

/// What a request of a known credential came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageOutcome {
    Valid,
    Expired,
    Revoked,
    IpNotAllowed,
    Forbidden,
    RateLimited,
    QuotaExceeded,
}

impl UsageOutcome {
    pub const ALL: [UsageOutcome; 7] = [
        UsageOutcome::Valid,
        UsageOutcome::Expired,
        UsageOutcome::Revoked,
        UsageOutcome::IpNotAllowed,
        UsageOutcome::Forbidden,
        UsageOutcome::RateLimited,
        UsageOutcome::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Valid => "valid",
            UsageOutcome::Expired => "expired",
            UsageOutcome::Revoked => "revoked",
            UsageOutcome::IpNotAllowed => "ip_not_allowed",
            UsageOutcome::Forbidden => "forbidden",
            UsageOutcome::RateLimited => "rate_limited",
            UsageOutcome::QuotaExceeded => "quota_exceeded",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }

    /// Its place in [`UsageOutcome::ALL`], for counters kept in an array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The requests one node answered for one credential, in one minute, with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub credential_id: CredentialId,
    /// The credential's own tenant (not one it acted for): usage is read by the credential's
    /// owners and their ancestors.
    pub tenant_id: TenantId,
    /// The start of the minute, in whole minutes.
    pub minute: Timestamp,
    pub outcome: UsageOutcome,
    pub count: u64,
}

/// The size of a usage bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }

    pub fn seconds(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3_600,
            Granularity::Day => 86_400,
        }
    }

    /// The start of the bucket `at` falls in (UTC).
    pub fn bucket(self, at: Timestamp) -> Timestamp {
        let seconds = self.seconds();
        Timestamp::from_unix(at.unix().div_euclid(seconds) * seconds)
    }
}

/// Which usage a read returns: a bucket matches when it matches one value of every list that is
/// not empty, and `since <= start < until`. Buckets are summed over what `group_by` leaves out.
#[derive(Debug, Clone)]
pub struct UsageFilter {
    pub credential_ids: Vec<CredentialId>,
    /// Tenants at or below the scope's (a tenant's own credentials only, not its descendants').
    pub tenant_ids: Vec<TenantId>,
    pub since: Timestamp,
    pub until: Timestamp,
    pub granularity: Granularity,
    pub by_credential: bool,
    pub by_outcome: bool,
    pub by_tenant: bool,
}

/// One bucket of a usage read; the fields not grouped by are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    pub start: Timestamp,
    pub credential_id: Option<String>,
    pub tenant_id: Option<String>,
    pub outcome: Option<UsageOutcome>,
    pub count: u64,
}

/// A credential's latest use that a batch writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    pub credential_id: CredentialId,
    pub at: Timestamp,
    /// The client's address, when the path that admitted it knew it.
    pub ip: Option<std::net::IpAddr>,
}

/// The most minute buckets one credential has in an hour: one a minute and outcome.
pub const MINUTE_BUCKETS_PER_HOUR: u32 = 60 * UsageOutcome::ALL.len() as u32;

#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Writes a node's batch in one transaction, all of it or none (a node that cannot write
    /// keeps it for its next try): adds the counts to the stored sums of their minute buckets
    /// (and of their hour and day buckets too if [`UsageStore::roll_up_usage`] has passed them),
    /// and records when and from where credentials were last used (a timestamp only moves
    /// forward).
    async fn add_usage(&self, counts: &[UsageCount], uses: &[LastUse]) -> Result<(), StoreError>;

    /// Adds minute buckets of hours that start before `before` to their hour and day buckets,
    /// oldest hour first, an hour of one credential at a time and at most `limit` minute buckets
    /// in all (a credential's hour is at most [`MINUTE_BUCKETS_PER_HOUR`], so `limit` is raised
    /// to one more). Returns how many minute buckets it rolled up: 0 when none was left. Reads
    /// are exact before, during and after: a read of hours or days adds the minutes not yet
    /// rolled up.
    async fn roll_up_usage(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// The scope's usage and its descendants', oldest bucket first, buckets with no requests left
    /// out.
    async fn usage(
        &self,
        scope: &Scope<perm::UsageRead>,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageBucket>, StoreError>;

    /// The same selection as [`UsageStore::usage`], read as it is consumed.
    fn export_usage(
        &self,
        scope: &Scope<perm::UsageRead>,
        filter: &UsageFilter,
    ) -> BoxStream<'static, Result<UsageBucket, StoreError>>;

    /// Deletes at most `limit` buckets of `granularity` that start before `before`; returns how
    /// many.
    async fn prune_usage(
        &self,
        granularity: Granularity,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError>;
}
