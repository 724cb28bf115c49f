//! What verification reads on a cache miss: a credential by its hash, an access token's client.
//! A credential with its tenant line, user and role is one statement, so one snapshot (and one
//! round trip); so are the rows alone of the credentials missed at the same moment, and a
//! credential's tenant line, user and role alone (a miss reads the row alone when the verifier
//! keeps the rest). An access token's client and its revocation are one statement too.

use async_trait::async_trait;
use keygate_core::credential::CredentialHash;
use keygate_core::id::CredentialId;
use keygate_core::model::Credential;
use keygate_core::store::{
    AccessTokenRecord, CredentialContext, CredentialRecord, CredentialSource, StoreError,
};

use super::SqlStore;
use super::shared::{RecordOf, credential_context, credential_record, credentials_alone};

#[async_trait]
impl CredentialSource for SqlStore {
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let found = credential_record(&self.pool, RecordOf::Hash(hash)).await?;
        Ok(found.map(|(record, _)| record))
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

    async fn find_client(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        let found = credential_record(&self.pool, RecordOf::Client(id)).await?;
        Ok(found.map(|(client, _)| client))
    }

    async fn find_access_token(
        &self,
        client: &CredentialId,
        jti: &CredentialId,
        grant: Option<&CredentialId>,
    ) -> Result<Option<AccessTokenRecord>, StoreError> {
        let of = RecordOf::AccessToken { client, jti, grant };
        let found = credential_record(&self.pool, of).await?;
        Ok(found.map(|(client, revoked)| AccessTokenRecord { client, revoked }))
    }
}
