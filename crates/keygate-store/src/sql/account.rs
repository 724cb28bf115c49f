//! Account keys (at most a few per tenant, counted under a lock) and the tenant's IP restriction.

use async_trait::async_trait;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::credential::{CredentialHash, CredentialKind};
use keygate_core::id::CredentialId;
use keygate_core::model::{AuditEvent, Credential, IpRestriction};
use keygate_core::store::{AccountStore, Change, KeyDeletion, StoreError};

use super::shared::{
    credential_from_row, delete_credential_in, insert_credential, insert_event, lock_tenant,
    tenant_from_row, to_json,
};
use super::{SqlStore, store_error};

#[async_trait]
impl AccountStore for SqlStore {
    async fn list_account_keys(
        &self,
        scope: &Scope<perm::KeysRead>,
    ) -> Result<Vec<Credential>, StoreError> {
        sqlx::query(
            "SELECT * FROM credentials WHERE tenant_id = $1 AND kind = 'account_key'
             ORDER BY id DESC",
        )
        .bind(scope.tenant_id().as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(credential_from_row)
        .collect()
    }

    async fn find_account_key(
        &self,
        scope: &Scope<perm::KeysRead>,
        hash: &CredentialHash,
    ) -> Result<Option<Credential>, StoreError> {
        sqlx::query(
            "SELECT * FROM credentials
             WHERE secret_hash = $1 AND tenant_id = $2 AND kind = 'account_key'",
        )
        .bind(hash.as_bytes().as_slice())
        .bind(scope.tenant_id().as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| credential_from_row(&row))
        .transpose()
    }

    async fn create_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        key: &Credential,
        limit: usize,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // Lock the tenant row, so two creates cannot both count one key and both add one.
        lock_tenant(&mut tx, grant.tenant_id()).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM credentials
             WHERE tenant_id = $1 AND kind = 'account_key' AND revoked_at IS NULL",
        )
        .bind(grant.tenant_id().as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
            return Ok(false);
        }
        insert_credential(&mut tx, key).await?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await?;
        Ok(true)
    }

    async fn delete_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<KeyDeletion, StoreError> {
        let mut tx = self.begin_write().await?;
        // Lock the tenant row, so that of two deletes under way at once the second sees what the
        // first deleted: its own key, if the two keys were deleting each other.
        lock_tenant(&mut tx, grant.tenant_id()).await?;
        let caller = grant.credential_id();
        if caller
            .as_str()
            .starts_with(CredentialKind::AccountKey.id_prefix())
        {
            let alive: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM credentials
                                WHERE id = $1 AND tenant_id = $2 AND kind = 'account_key')",
            )
            .bind(caller.as_str())
            .bind(grant.tenant_id().as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
            if !alive {
                return Ok(KeyDeletion::CallerGone);
            }
        }
        let tenant = grant.tenant_id();
        let kind = CredentialKind::AccountKey;
        Ok(
            match delete_credential_in(self, tx, tenant, id, kind, event).await? {
                Some(()) => KeyDeletion::Deleted,
                None => KeyDeletion::NotFound,
            },
        )
    }

    async fn get_ip_restriction(
        &self,
        scope: &Scope<perm::IpRestrictionRead>,
    ) -> Result<IpRestriction, StoreError> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(scope.tenant_id().as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(tenant_from_row(&row)?.ip_restriction)
    }

    async fn set_ip_restriction(
        &self,
        grant: &Grant<perm::IpRestrictionWrite>,
        restriction: &IpRestriction,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE tenants SET allowlist_enabled = $1, allowlist = $2 WHERE id = $3")
            .bind(restriction.enabled)
            .bind(to_json(&restriction.allowlist.to_strings())?)
            .bind(grant.tenant_id().as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Tenant(grant.tenant_id().clone())])
            .await
    }
}
