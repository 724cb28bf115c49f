//! The storage traits. The store crate implements them once per database; nothing here knows SQL.
//!
//! Each operation that changes something is one transaction in the store, with its audit event
//! inside it, and tells the [`ChangeListener`] what it changed once it has committed, so caches are
//! dropped in the same code path as the change and cannot be forgotten by a handler.
//! Operations on a tenant's objects take a [`Grant`](crate::access::Grant): they cannot be called
//! without the access decision, and they scope their query to the grant's tenant.

use std::sync::Arc;

use async_trait::async_trait;

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::credential::CredentialHash;
use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::model::{AuditEvent, Credential, Role, Tenant, User};
use crate::password::PasswordHashString;

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
}

/// Told of every committed change; implemented by the verification cache.
pub trait ChangeListener: Send + Sync {
    fn changed(&self, change: &Change);
}

/// Everything verification needs to know about a credential, read in one go on a cache miss.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub credential: Credential,
    pub tenant: Tenant,
    /// The tenant's ancestors, nearest first: a suspended ancestor suspends its descendants.
    pub ancestors: Vec<Tenant>,
    /// The owner of a personal token or session.
    pub user: Option<User>,
    /// The role the credential acts with: the user's for personal tokens and sessions, the
    /// credential's own otherwise; none for account keys (they act as `admin`).
    pub role: Option<Role>,
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Waits for in-flight work and closes every connection; later calls fail as unavailable.
    async fn close(&self);

    /// Whether the store already holds a root tenant.
    async fn is_initialized(&self) -> Result<bool, StoreError>;

    /// Creates the root tenant, its owner and its first token in one transaction; refuses with
    /// [`StoreError::AlreadyInitialized`] and changes nothing if the store is not empty.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError>;

    /// The credential with this hash, with its tenant line, user and role.
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError>;

    /// Marks a credential of the grant's tenant revoked. `None` if there is no such credential in
    /// that tenant (or it was already revoked).
    async fn revoke_credential(
        &self,
        grant: &Grant<perm::TokensWrite>,
        id: &CredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Records when credentials were last used, in one batch, off the request path. Timestamps only
    /// move forward.
    async fn record_last_used(&self, uses: &[(CredentialId, Timestamp)]) -> Result<(), StoreError>;
}

/// A shared handle to whichever store is configured.
pub type DynStore = Arc<dyn Store>;
