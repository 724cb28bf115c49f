//! What verification reads: a credential by its hash, an access token's client, and the signing
//! keys.
//!
//! The reads here are not scoped to a tenant: the verifier does not know whose a credential is
//! until it has read it. Only the verifier holds a [`CredentialSource`]; handlers hold a
//! [`Store`](super::Store), which does not extend it, so a handler cannot read another tenant's
//! credential by accident.

use async_trait::async_trait;

use super::{SigningKeySource, StoreError};
use crate::credential::CredentialHash;
use crate::id::CredentialId;
use crate::model::{Credential, Role, Tenant, User};

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

/// What a credential has in common with the others of its tenant, user and role: its tenant line,
/// user and role as [`CredentialSource::find_credential`] reads them. Verification keeps these
/// (dropped by the same changes as the verifications made from them), so that a cache miss for
/// one more credential of a known tenant and role reads the credential's row alone.
#[derive(Debug, Clone)]
pub struct CredentialContext {
    pub tenant: Tenant,
    /// Nearest first.
    pub ancestors: Vec<Tenant>,
    pub user: Option<User>,
    pub role: Option<Role>,
}

impl CredentialRecord {
    /// The record of `credential` in `context`.
    pub fn in_context(credential: Credential, context: &CredentialContext) -> Self {
        Self {
            credential,
            tenant: context.tenant.clone(),
            ancestors: context.ancestors.clone(),
            user: context.user.clone(),
            role: context.role.clone(),
        }
    }
}

/// What verifying an access token needs beyond its signature: its client, as
/// [`CredentialSource::find_credential`] reads a credential, and whether the token was revoked.
#[derive(Debug, Clone)]
pub struct AccessTokenRecord {
    pub client: CredentialRecord,
    pub revoked: bool,
}

/// The most hashes verification passes to [`CredentialSource::find_credentials_alone`] at once:
/// a store reads that many in one statement.
pub const MOST_HASHES_AT_ONCE: usize = 64;

/// What verification reads: the operations on the hot path's cold side. The signing keys come
/// with it ([`SigningKeySource`]), so that verifying an access token can reread them.
#[async_trait]
pub trait CredentialSource: SigningKeySource {
    /// The credential with this hash, with its tenant line, user and role, whatever its tenant.
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError>;

    /// The credentials whose current or previous secret has one of these hashes, with their
    /// quotas, without their tenant lines, users and roles: what cache misses read when those are
    /// known already ([`Self::find_context`]). Misses that arrive together are read together.
    async fn find_credentials_alone(
        &self,
        hashes: &[CredentialHash],
    ) -> Result<Vec<Credential>, StoreError> {
        let mut found = Vec::new();
        for hash in hashes {
            if let Some(record) = self.find_credential(hash).await? {
                found.push(record.credential);
            }
        }
        Ok(found)
    }

    /// The tenant line, user and role of `credential`, as [`Self::find_credential`] reads them;
    /// `None` if its tenant is gone (and so is the credential).
    async fn find_context(
        &self,
        credential: &Credential,
    ) -> Result<Option<CredentialContext>, StoreError> {
        Ok(self
            .find_credential(&credential.hash)
            .await?
            .map(|record| CredentialContext {
                tenant: record.tenant,
                ancestors: record.ancestors,
                user: record.user,
                role: record.role,
            }))
    }

    /// The OAuth client with this id, as [`Self::find_credential`] reads it, whatever its tenant:
    /// whose a refused client authentication was, for that tenant's audit log.
    async fn find_client(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError>;

    /// The OAuth client `client` as [`Self::find_credential`] reads it, and whether the access
    /// token `jti`, or the grant it descends from, was revoked; `None` if there is no such
    /// client.
    async fn find_access_token(
        &self,
        client: &CredentialId,
        jti: &CredentialId,
        grant: Option<&CredentialId>,
    ) -> Result<Option<AccessTokenRecord>, StoreError>;
}
