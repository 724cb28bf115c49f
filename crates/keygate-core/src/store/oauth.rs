//! OAuth clients, and what the token, revocation and introspection endpoints store and read.
//!
//! The authenticated client scopes each token operation to its own tokens: a client cannot read,
//! spend or revoke another client's refresh token, whatever it presents.

use async_trait::async_trait;

use super::{CredentialRecord, Page, Paged, StoreError};
use crate::Timestamp;
use crate::access::{Grant, Scope, perm};
use crate::credential::CredentialHash;
use crate::id::CredentialId;
use crate::model::{AuditEvent, Credential};
use crate::oauth::{AuthenticatedClient, RefreshToken, Rotation};

#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    async fn create_client(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        client: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The tenant's clients, newest first.
    async fn list_clients(
        &self,
        scope: &Scope<perm::OauthClientsRead>,
        page: &Page,
    ) -> Result<Paged<Credential>, StoreError>;

    async fn get_client(
        &self,
        scope: &Scope<perm::OauthClientsRead>,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError>;

    /// Deletes a client for good, with its refresh tokens; its access tokens stop at once.
    /// `None` if the tenant has no such client.
    async fn delete_client(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Gives the client a new secret (`hash`, `hint`); its current one becomes the previous one,
    /// working until `previous_until`, and one rolled away before stops. `None` if the tenant has
    /// no such client.
    async fn roll_client_secret(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        id: &CredentialId,
        hash: &CredentialHash,
        hint: &str,
        previous_until: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<Credential>, StoreError>;

    /// Stores the refresh token of a new grant, recording `event`.
    async fn issue_refresh_token(
        &self,
        client: &AuthenticatedClient,
        token: &RefreshToken,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The client's refresh token with this hash; `None` if there is none, or it is another
    /// client's.
    async fn find_refresh_token(
        &self,
        client: &AuthenticatedClient,
        hash: &CredentialHash,
    ) -> Result<Option<RefreshToken>, StoreError>;

    /// For introspection by a credential holding `credentials:verify`: the refresh token with
    /// this hash if its client is in the grant's tenant or below it, with that client as
    /// verification reads it; `None` otherwise.
    async fn find_refresh_token_within(
        &self,
        grant: &Grant<perm::CredentialsVerify>,
        hash: &CredentialHash,
    ) -> Result<Option<(RefreshToken, CredentialRecord)>, StoreError>;

    /// Spends the client's refresh token `spent` and stores `replacement`, in one transaction. If
    /// `spent` can no longer be spent (a concurrent request spent it first), revokes its family
    /// instead, recording `refused`; else records `granted`.
    async fn rotate_refresh_token(
        &self,
        client: &AuthenticatedClient,
        spent: &CredentialId,
        replacement: &RefreshToken,
        refused: &AuditEvent,
        granted: &AuditEvent,
    ) -> Result<Rotation, StoreError>;

    /// Revokes every refresh token of the client's `family` that is not revoked yet, recording
    /// `event`; returns how many.
    async fn revoke_refresh_family(
        &self,
        client: &AuthenticatedClient,
        family: &CredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// Remembers that the client's access token `jti` is revoked until it expires, and drops it
    /// from every node's cache.
    async fn revoke_access_token(
        &self,
        client: &AuthenticatedClient,
        jti: &CredentialId,
        expires_at: Timestamp,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Deletes refresh tokens that expired before `before`; returns how many. Each grant stores
    /// one, so without this they would pile up for as long as the deployment lives.
    async fn delete_expired_refresh_tokens(&self, before: Timestamp) -> Result<u64, StoreError>;
}
