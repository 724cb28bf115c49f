//! The keys OAuth access tokens are signed with, as the key ring reads and adds them.
//!
//! Reading is its own trait, [`SigningKeySource`], because two holders need it: the verifier
//! (through its [`CredentialSource`](super::CredentialSource)) rereads the keys when a token names
//! one it has not seen, and the store's users prepare and publish them.

use async_trait::async_trait;

use super::StoreError;
use crate::Timestamp;
use crate::jwt::StoredSigningKey;

/// Reads the signing keys.
#[async_trait]
pub trait SigningKeySource: Send + Sync + 'static {
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
}

/// Adds signing keys, retiring the ones they replace.
#[async_trait]
pub trait SigningKeyStore: SigningKeySource {
    /// Adds `key` as the newest signing key, retiring the others at `now` and deleting keys
    /// retired before `expired_before`. `false` (and nothing changed) if another key already has
    /// its generation: another node rotated first.
    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        now: Timestamp,
        expired_before: Timestamp,
    ) -> Result<bool, StoreError>;
}
