//! What verification reads on a cache miss: a credential by its hash, an access token's client.
//! Each read is one read transaction, so the credential, its tenant line, user and role are one
//! snapshot.

use async_trait::async_trait;
use keygate_core::credential::CredentialHash;
use keygate_core::id::CredentialId;
use keygate_core::store::{AccessTokenRecord, CredentialRecord, CredentialSource, StoreError};

use super::shared::{client_record, credential_record};
use super::{SqlStore, store_error};

#[async_trait]
impl CredentialSource for SqlStore {
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let Some(row) = sqlx::query(concat!(
            "SELECT c.*, t.path AS tenant_path, qv.* FROM credentials c
                 JOIN tenants t ON t.id = c.tenant_id",
            with_quota!(credential "c"),
            "WHERE c.secret_hash = $1 OR c.previous_secret_hash = $1"
        ))
        // A client's previous secret finds its client too; whether it still works is the
        // verifier's to decide (`previous_secret_until`).
        .bind(hash.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?
        else {
            return Ok(None);
        };
        let record = credential_record(&mut tx, &row).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(Some(record))
    }

    async fn find_access_token(
        &self,
        client: &CredentialId,
        jti: &CredentialId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let Some(client_record) = client_record(&mut tx, client).await? else {
            return Ok(None);
        };
        let revoked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $1 AND client_id = $2)",
        )
        .bind(jti.as_str())
        .bind(client.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Some(AccessTokenRecord {
            client: client_record,
            revoked,
        }))
    }
}
