//! Tenants: a scope reads and writes its own tenant's subtree, found by path range
//! (`in_subtree!`).

use async_trait::async_trait;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::id::TenantId;
use keygate_core::model::{AuditEvent, Tenant, User};
use keygate_core::password::PasswordHashString;
use keygate_core::store::{Change, Deletion, Page, Paged, StoreError, TenantStore};

use super::shared::{
    among_ids, fetch_among_ids, insert_event, insert_tenant, insert_user, paged, tenant_from_row,
};
use super::{SqlStore, store_error};

#[async_trait]
impl TenantStore for SqlStore {
    async fn get_tenant(
        &self,
        scope: &Scope<perm::TenantsRead>,
        id_or_slug: &str,
    ) -> Result<Option<Tenant>, StoreError> {
        sqlx::query(concat!(
            "SELECT t.*, qv.* FROM tenants t",
            with_quota!("t"),
            "JOIN tenants s ON s.id = $1
             WHERE (t.id = $2 OR t.slug = $2) AND ",
            in_subtree!("t", "s")
        ))
        .bind(scope.tenant_id().as_str())
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| tenant_from_row(&row))
        .transpose()
    }

    async fn list_tenants(
        &self,
        scope: &Scope<perm::TenantsRead>,
        parent: &TenantId,
        page: &Page,
    ) -> Result<Paged<Tenant>, StoreError> {
        let sql = among_ids(
            concat!(
                "SELECT t.*, qv.* FROM tenants t",
                with_quota!("t"),
                "JOIN tenants s ON s.id = $1
                 WHERE t.parent_id = $2 AND ($3 IS NULL OR t.id < $3){ids} AND ",
                in_subtree!("t", "s"),
                " ORDER BY t.id DESC LIMIT $4"
            ),
            "t.id",
            4,
            page,
        );
        let query = sqlx::query(&sql)
            .bind(scope.tenant_id().as_str())
            .bind(parent.as_str())
            .bind(page.cursor.as_deref())
            .bind(i64::from(page.limit) + 1);
        let rows = fetch_among_ids(query, page, &self.pool).await?;
        paged(&rows, page, tenant_from_row, |t| t.id.to_string())
    }

    async fn create_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        first_user: Option<(&User, &PasswordHashString)>,
        events: &[AuditEvent],
    ) -> Result<(), StoreError> {
        if tenant.parent_id.as_ref() != Some(grant.tenant_id()) {
            return Err(StoreError::Internal(
                "a tenant outside the grant's tenant".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        insert_tenant(&mut tx, tenant).await?;
        if let Some((user, password_hash)) = first_user {
            insert_user(&mut tx, user, password_hash).await?;
        }
        for event in events {
            insert_event(&mut tx, event).await?;
        }
        self.commit(tx, &[]).await
    }

    async fn update_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(concat!(
            "UPDATE tenants SET name = $1, status = $2, leak_policy = $5
             WHERE id = $3 AND EXISTS (SELECT 1 FROM tenants s WHERE s.id = $4 AND ",
            in_subtree!("tenants", "s"),
            ")"
        ))
        .bind(&tenant.name)
        .bind(tenant.status.as_str())
        .bind(tenant.id.as_str())
        .bind(grant.tenant_id().as_str())
        .bind(tenant.leak_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Tenant(tenant.id.clone())])
            .await?;
        Ok(Some(()))
    }

    async fn delete_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        id: &TenantId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: bool = sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM tenants t JOIN tenants s ON s.id = $1
                            WHERE t.id = $2 AND ",
            in_subtree!("t", "s"),
            ")"
        ))
        .bind(grant.tenant_id().as_str())
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if !found {
            return Ok(Deletion::NotFound);
        }
        let has_children: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE parent_id = $1)")
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
        if has_children {
            return Ok(Deletion::InUse);
        }
        // In this order, so no foreign key is left pointing at a deleted row. Usage rows last:
        // on PostgreSQL they have no key (migration 0018), and deleting the tenant's row first
        // waits for any usage batch that locked it, so the rows that batch added are seen here.
        // (On SQLite the key already took them.)
        for sql in [
            "DELETE FROM credentials WHERE tenant_id = $1",
            "DELETE FROM users WHERE tenant_id = $1",
            "DELETE FROM roles WHERE tenant_id = $1",
            "DELETE FROM tenants WHERE id = $1",
            "DELETE FROM usage_minutes WHERE tenant_id = $1",
            "DELETE FROM usage_hours WHERE tenant_id = $1",
            "DELETE FROM usage_days WHERE tenant_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Tenant(id.clone())]).await?;
        Ok(Deletion::Deleted)
    }
}
