//! The store as a whole: readiness, closing, and the first tenant (bootstrap).

use async_trait::async_trait;
use keygate_core::store::{Bootstrap, Store, StoreError};

use super::shared::{insert_credential, insert_event, insert_tenant, insert_user};
use super::{SqlStore, store_error};

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(store_error)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn is_initialized(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM tenants)")
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn bootstrap(&self, b: &Bootstrap) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let initialized: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants)")
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        if initialized {
            return Err(StoreError::AlreadyInitialized);
        }
        insert_tenant(&mut tx, &b.tenant).await?;
        // The built-in roles are as old as the deployment's first tenant.
        sqlx::query("UPDATE roles SET created_at = $1 WHERE tenant_id IS NULL")
            .bind(b.tenant.created_at.unix())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        insert_user(&mut tx, &b.user, &b.password_hash).await?;
        insert_credential(&mut tx, &b.token).await?;
        insert_event(&mut tx, &b.event).await?;
        self.commit(tx, &[]).await
    }
}
