//! What verification reads on a cache miss: a credential by its hash, an access token's client.
//! A credential with its tenant line, user and role is one statement, so one snapshot (and one
//! round trip); so are the rows alone of the credentials missed at the same moment, and a
//! credential's tenant line, user and role alone (a miss reads the row alone when the verifier
//! keeps the rest). An access token's client and its revocation are one read transaction.

use async_trait::async_trait;
use keygate_core::credential::CredentialHash;
use keygate_core::id::CredentialId;
use keygate_core::model::Credential;
use keygate_core::store::{
    AccessTokenRecord, CredentialContext, CredentialRecord, CredentialSource, StoreError,
};

use super::shared::{RecordOf, credential_context, credential_record, credentials_alone};
use super::{SqlStore, store_error};

#[async_trait]
impl CredentialSource for SqlStore {
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        credential_record(&self.pool, RecordOf::Hash(hash)).await
    }

    async fn find_credentials_alone(
        &self,
        hashes: &[CredentialHash],
    ) -> Result<Vec<Credential>, StoreError> {
        credentials_alone(&self.pool, hashes).await
    }

    async fn find_context(
        &self,
        credential: &Credential,
    ) -> Result<Option<CredentialContext>, StoreError> {
        credential_context(&self.pool, credential).await
    }

    async fn find_access_token(
        &self,
        client: &CredentialId,
        jti: &CredentialId,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let Some(client_record) = credential_record(&mut *tx, RecordOf::Client(client)).await?
        else {
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
