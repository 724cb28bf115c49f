//! Webhooks (API.md §15): the endpoints a tenant registers, the deliveries owed to them, and the
//! work queue nodes send them from; and leaked credentials, killed or reported by their tenant's
//! policy.
//!
//! A change's deliveries are written by the change itself, with its audit event (see
//! [`crate::webhooks::message_for`]): nothing here publishes an audited change. What is published
//! here is what no request causes: a token about to expire, a quota nearly spent.

use async_trait::async_trait;

use super::{Page, Paged, StoreError};
use crate::Timestamp;
use crate::access::{Grant, Scope, perm};
use crate::credential::{CredentialHash, CredentialKind};
use crate::id::{CredentialId, DeliveryId, TenantId, WebhookId};
use crate::model::{AuditEvent, RequestMeta};

use crate::webhooks::{Attempt, ClaimedDelivery, Delivery, StoredSecret, Webhook};

/// What an attempt came to, for the delivery's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx arrived in time.
    Delivered,
    /// Not delivered; tried again at this time.
    RetryAt(Timestamp),
    /// Not delivered, and no attempt is left.
    Failed,
}

/// A credential reported as leaked: by the hash of its text, found where, told by whom.
#[derive(Debug, Clone)]
pub struct LeakReport<'a> {
    pub hash: CredentialHash,
    /// Where it was found (a commit's URL), if the reporter said.
    pub url: Option<&'a str>,
    /// Who reported it: `github`, or `revoke_api` for the public revocation endpoint.
    pub source: &'a str,
    /// What the report's request answers, for the audit event.
    pub status: u16,
    pub at: Timestamp,
    pub meta: &'a RequestMeta,
}

/// What a leak report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakHandled {
    /// No credential of this deployment has that hash.
    Unknown,
    /// Revoked now, on every node (its tenant's policy is `revoke`).
    Revoked {
        id: CredentialId,
        kind: CredentialKind,
    },
    /// Its tenant's policy is `notify`: still working; the tenant was told.
    Notified {
        id: CredentialId,
        kind: CredentialKind,
    },
    /// Known, but already revoked or expired: nothing left to do.
    AlreadyDead {
        id: CredentialId,
        kind: CredentialKind,
    },
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Registers `webhook` for the grant's tenant, with its sealed signing secret.
    async fn create_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &Webhook,
        secret: &StoredSecret,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The webhooks of the scope's tenant and its descendants, newest first.
    async fn list_webhooks(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        page: &Page,
    ) -> Result<Paged<Webhook>, StoreError>;

    /// A webhook of the scope's tenant or below it.
    async fn get_webhook(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        id: &WebhookId,
    ) -> Result<Option<Webhook>, StoreError>;

    /// Writes a webhook's url, events and enabled flag; `None` if it is not in the grant's
    /// subtree.
    async fn update_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &Webhook,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Deletes a webhook with its deliveries; `None` if it is not in the grant's subtree.
    async fn delete_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        id: &WebhookId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// A webhook's deliveries with their attempts, newest first; `None` if the webhook is not in
    /// the scope's subtree.
    async fn list_deliveries(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        webhook: &WebhookId,
        page: &Page,
    ) -> Result<Option<Paged<Delivery>>, StoreError>;

    /// Makes a delivery due at `event.time` again, whatever it came to (a failed one is pending
    /// again, a delivered one is sent once more); `None` if it is not one of a webhook in the
    /// grant's subtree.
    async fn retry_delivery(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &WebhookId,
        delivery: &DeliveryId,
        event: &AuditEvent,
    ) -> Result<Option<Delivery>, StoreError>;

    /// Writes a delivery of `body` (an event of `event_type` in `tenant`) to every enabled webhook
    /// of `tenant` and its ancestors that wants it; how many.
    async fn publish(
        &self,
        tenant: &TenantId,
        event_type: &str,
        body: &str,
        at: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Claims up to `limit` deliveries due at `now` that no live claim holds, for `claimer`, for
    /// [`crate::webhooks::CLAIM_SECONDS`]: until then no other claimer gets them. Deliveries of
    /// disabled webhooks wait.
    async fn claim_deliveries(
        &self,
        claimer: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Records attempt `attempt.number` of a delivery `claimer` holds, and what follows it, and
    /// lets the claim go. `false` (and nothing written) if the claim was lost or that attempt is
    /// already recorded.
    async fn record_attempt(
        &self,
        claimer: &str,
        delivery: &DeliveryId,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError>;

    /// Publishes `token.expiring` for every token that expires within 7 days (or 1 day) of `now`
    /// and has not been told so yet: once each, however many nodes ask. How many notices.
    async fn notice_expiring_tokens(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Handles a leaked credential by its tenant's policy, in one transaction with its audit
    /// event `credential.leaked` (and so its webhooks); a revocation reaches every node.
    async fn report_leak(&self, report: &LeakReport<'_>) -> Result<LeakHandled, StoreError>;

    /// Deletes at most `limit` finished deliveries created before `before`; how many.
    async fn prune_deliveries(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;
}
