//! The account's own settings: its account keys and its IP restriction.

use async_trait::async_trait;

use super::StoreError;
use crate::access::{Grant, Scope, perm};
use crate::credential::CredentialHash;
use crate::id::CredentialId;
use crate::model::{AuditEvent, Credential, IpRestriction};

/// What [`AccountStore::delete_account_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDeletion {
    Deleted,
    /// The tenant has no such key.
    NotFound,
    /// The account key that authenticates the request was deleted by another request first:
    /// nothing was deleted, as if this request had come after that one.
    CallerGone,
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// The tenant's account keys, newest first (as every list: API.md §1).
    async fn list_account_keys(
        &self,
        scope: &Scope<perm::KeysRead>,
    ) -> Result<Vec<Credential>, StoreError>;

    /// The scope's tenant's account key with this hash (a key named by its full secret); `None`
    /// for any other credential, and for another tenant's key.
    async fn find_account_key(
        &self,
        scope: &Scope<perm::KeysRead>,
        hash: &CredentialHash,
    ) -> Result<Option<Credential>, StoreError>;

    /// Adds a key unless the tenant already has `limit`; `false` if it has. Safe against
    /// concurrent creates: the tenant is locked while counting.
    async fn create_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        key: &Credential,
        limit: usize,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Deletes a key at once and for good. A request authenticated by one of the tenant's
    /// account keys deletes nothing if that key is gone by the time it commits: two keys deleting
    /// each other at once would otherwise both succeed, and leave the tenant with none. Safe
    /// against concurrent deletes: the tenant is locked while checking.
    async fn delete_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<KeyDeletion, StoreError>;

    async fn get_ip_restriction(
        &self,
        scope: &Scope<perm::IpRestrictionRead>,
    ) -> Result<IpRestriction, StoreError>;

    async fn set_ip_restriction(
        &self,
        grant: &Grant<perm::IpRestrictionWrite>,
        restriction: &IpRestriction,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
}
