//! Roles: the built-in ones every tenant sees, and each tenant's own.

use async_trait::async_trait;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::id::RoleId;
use keygate_core::model::{AuditEvent, Role};
use keygate_core::store::{Change, Deletion, Page, Paged, RoleStore, StoreError};

use super::shared::{insert_event, role_from_row, scoped_page, to_json};
use super::{SqlStore, store_error};

#[async_trait]
impl RoleStore for SqlStore {
    async fn list_roles(
        &self,
        scope: &Scope<perm::RolesRead>,
        page: &Page,
    ) -> Result<Paged<Role>, StoreError> {
        // Newest first (API.md §1): the tenant's own roles by id, then the built-in ones, which
        // are older than any (their ids, `rol_owner` and the like, would sort before them). A
        // cursor names the last role of its page; the next starts after it in that order.
        scoped_page(
            &self.pool,
            "SELECT * FROM roles WHERE (tenant_id IS NULL OR tenant_id = $1)
               AND ($2 IS NULL
                    OR (CASE WHEN tenant_id IS NULL THEN 1 ELSE 0 END)
                       > coalesce((SELECT CASE WHEN c.tenant_id IS NULL THEN 1 ELSE 0 END
                                   FROM roles c WHERE c.id = $2), 0)
                    OR ((CASE WHEN tenant_id IS NULL THEN 1 ELSE 0 END)
                        = coalesce((SELECT CASE WHEN c.tenant_id IS NULL THEN 1 ELSE 0 END
                                    FROM roles c WHERE c.id = $2), 0)
                        AND id < $2)){ids}
             ORDER BY CASE WHEN tenant_id IS NULL THEN 1 ELSE 0 END, id DESC LIMIT $3",
            scope,
            page,
            role_from_row,
            |r| r.id.to_string(),
        )
        .await
    }

    async fn get_role(
        &self,
        scope: &Scope<perm::RolesRead>,
        id: &RoleId,
    ) -> Result<Option<Role>, StoreError> {
        sqlx::query("SELECT * FROM roles WHERE id = $1 AND (tenant_id IS NULL OR tenant_id = $2)")
            .bind(id.as_str())
            .bind(scope.tenant_id().as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| role_from_row(&row))
            .transpose()
    }

    async fn create_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO roles (id, tenant_id, name, permissions, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(role.id.as_str())
        .bind(grant.tenant_id().as_str())
        .bind(&role.name)
        .bind(to_json(&role.permissions)?)
        .bind(role.created_at.unix())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await
    }

    async fn replace_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE roles SET name = $1, permissions = $2 WHERE id = $3 AND tenant_id = $4",
        )
        .bind(&role.name)
        .bind(to_json(&role.permissions)?)
        .bind(role.id.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Role(role.id.clone())]).await?;
        Ok(Some(()))
    }

    async fn delete_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        id: &RoleId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM roles WHERE id = $1 AND tenant_id = $2)",
        )
        .bind(id.as_str())
        .bind(grant.tenant_id().as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if !exists {
            return Ok(Deletion::NotFound);
        }
        // Held by a user or by a credential that can still be used: in use. Revoked and expired
        // credentials only remember it, and let go.
        let in_use: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE role_id = $1)
                 OR EXISTS (SELECT 1 FROM credentials WHERE role_id = $1 AND revoked_at IS NULL
                                AND (expires_at IS NULL OR expires_at > $2))",
        )
        .bind(id.as_str())
        .bind(event.time.unix())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if in_use {
            return Ok(Deletion::InUse);
        }
        sqlx::query("UPDATE credentials SET role_id = NULL WHERE role_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query("DELETE FROM roles WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(grant.tenant_id().as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Role(id.clone())]).await?;
        Ok(Deletion::Deleted)
    }
}
