//! The audit log, and the bookkeeping written off the request path (refusals, last use).
//!
//! Changes write their events themselves, in their own transactions: nothing here records a
//! change.

use async_trait::async_trait;
use futures_core::stream::BoxStream;

use super::{Page, Paged, StoreError};
use crate::Timestamp;
use crate::access::{Scope, perm};
use crate::model::{AuditEvent, Outcome, StoredEvent};

/// Which audit events a list shows: an event matches when it matches one value of every list
/// that is not empty, and `since <= time < until`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub token_ids: Vec<String>,
    pub actions: Vec<String>,
    pub actor_ids: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Events that happened in the scope's tenant or below it, newest first.
    async fn list_events(
        &self,
        scope: &Scope<perm::AuditRead>,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Paged<StoredEvent>, StoreError>;

    /// The same selection as [`AuditStore::list_events`], all of it, newest first, read as it is
    /// consumed rather than held in memory.
    fn export_events(
        &self,
        scope: &Scope<perm::AuditRead>,
        filter: &EventFilter,
    ) -> BoxStream<'static, Result<StoredEvent, StoreError>>;

    /// Writes refused requests, each with the number of identical refusals it stands for. Not a
    /// change: there is nothing to roll back with them.
    async fn record_refusals(&self, events: &[(AuditEvent, u32)]) -> Result<(), StoreError>;

    /// Deletes at most `limit` of the oldest events from before `before`; returns how many.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
