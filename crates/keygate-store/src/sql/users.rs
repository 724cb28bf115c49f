//! Users of a tenant, and the accounts sign-in may be looking for.

use async_trait::async_trait;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::id::{TenantId, UserId};
use keygate_core::model::{AuditEvent, User, UserStatus, email_key};
use keygate_core::password::PasswordHashString;
use keygate_core::permission::BuiltinRole;
use keygate_core::store::{Change, Login, Page, Paged, StoreError, UserStore, UserWrite};
use sqlx::{QueryBuilder, Row};

use super::shared::{
    insert_event, insert_user, lock_tenant, scoped_page, tenant_from_row, user_from_row,
};
use super::{Db, SqlStore, store_error};

#[async_trait]
impl UserStore for SqlStore {
    async fn list_users(
        &self,
        scope: &Scope<perm::UsersRead>,
        page: &Page,
    ) -> Result<Paged<User>, StoreError> {
        scoped_page(
            &self.pool,
            "SELECT * FROM users WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2){ids}
             ORDER BY id DESC LIMIT $3",
            scope,
            page,
            user_from_row,
            |u| u.id.to_string(),
        )
        .await
    }

    async fn get_user(
        &self,
        scope: &Scope<perm::UsersRead>,
        id: &UserId,
    ) -> Result<Option<User>, StoreError> {
        sqlx::query("SELECT * FROM users WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(scope.tenant_id().as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| user_from_row(&row))
            .transpose()
    }

    async fn create_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        user: &User,
        password_hash: &PasswordHashString,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        if user.tenant_id != *grant.tenant_id() {
            return Err(StoreError::Internal(
                "a user outside the grant's tenant".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        insert_user(&mut tx, user, password_hash).await?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await
    }

    async fn update_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        user: &User,
        password_hash: Option<&PasswordHashString>,
        event: &AuditEvent,
    ) -> Result<UserWrite, StoreError> {
        let mut tx = self.begin_write().await?;
        let stays_owner =
            user.role_id == BuiltinRole::Owner.id() && user.status == UserStatus::Active;
        if let Some(refused) =
            owners_kept(&mut tx, grant.tenant_id(), &user.id, stays_owner).await?
        {
            return Ok(refused);
        }
        let updated = sqlx::query(
            "UPDATE users SET name = $1, role_id = $2, status = $3,
                              password_hash = coalesce($4, password_hash)
             WHERE id = $5 AND tenant_id = $6",
        )
        .bind(&user.name)
        .bind(user.role_id.as_str())
        .bind(user.status.as_str())
        .bind(password_hash.map(PasswordHashString::as_str))
        .bind(user.id.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(UserWrite::NotFound);
        }
        if password_hash.is_some() {
            // A new password ends the user's sessions, whoever set it: whoever knew the
            // old one is signed out. The session making the change, if it is one of
            // theirs, stays.
            sqlx::query(
                "UPDATE credentials SET revoked_at = $1
                 WHERE user_id = $2 AND kind = 'session' AND revoked_at IS NULL
                   AND id <> $3",
            )
            .bind(event.time.unix())
            .bind(user.id.as_str())
            .bind(event.token_id.as_ref().map_or("", |id| id.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::User(user.id.clone())]).await?;
        Ok(UserWrite::Done)
    }

    async fn delete_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        id: &UserId,
        event: &AuditEvent,
    ) -> Result<UserWrite, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(refused) = owners_kept(&mut tx, grant.tenant_id(), id, false).await? {
            return Ok(refused);
        }
        // Personal tokens and sessions go with the user (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(grant.tenant_id().as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        if deleted == 0 {
            return Ok(UserWrite::NotFound);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::User(id.clone())]).await?;
        Ok(UserWrite::Done)
    }

    async fn find_logins(
        &self,
        email: &str,
        organization: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Login>, StoreError> {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT u.*, t.slug AS tenant_slug
             FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.email_folded = ",
        );
        query.push_bind(email_key(email));
        if let Some(organization) = organization {
            query
                .push(" AND t.slug = ")
                .push_bind(organization.to_owned());
        }
        query
            .push(" ORDER BY u.created_at, u.id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut logins = Vec::with_capacity(rows.len());
        for row in rows {
            let user = user_from_row(&row)?;
            let password_hash: String = row.try_get("password_hash").map_err(store_error)?;
            let organization: String = row.try_get("tenant_slug").map_err(store_error)?;
            let tenant = sqlx::query("SELECT * FROM tenants WHERE id = $1")
                .bind(user.tenant_id.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            let tenant = tenant_from_row(&tenant)?;
            let mut query = QueryBuilder::<Db>::new(
                "SELECT count(*) FROM tenants WHERE status = 'suspended' AND id IN (",
            );
            let mut list = query.separated(", ");
            for id in tenant.path.ids() {
                list.push_bind(id.to_string());
            }
            query.push(")");
            let suspended: i64 = query
                .build_query_scalar()
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            logins.push(Login {
                user,
                organization,
                password_hash: PasswordHashString::from_stored(password_hash),
                tenant_active: suspended == 0,
                tenant_allowlist: tenant.ip_restriction.enforced().cloned(),
            });
        }
        Ok(logins)
    }
}

/// Whether a change leaves `tenant` an active owner, read with the tenant locked so that two
/// owners demoting each other at once cannot both succeed: `Some` with the refusal when `user`
/// is the tenant's last active owner and will not be one after (`stays_owner`), or `NotFound`
/// when there is no such user; `None` when the change may go ahead. A tenant that has no active
/// owner already (one made without a first user) is not held to one.
async fn owners_kept(
    tx: &mut sqlx::Transaction<'static, Db>,
    tenant: &TenantId,
    user: &UserId,
    stays_owner: bool,
) -> Result<Option<UserWrite>, StoreError> {
    lock_tenant(tx, tenant).await?;
    let row = sqlx::query(
        "SELECT role_id = $3 AND status = 'active' AS owner,
                (SELECT count(*) FROM users o
                 WHERE o.tenant_id = $2 AND o.role_id = $3 AND o.status = 'active'
                   AND o.id <> $1) AS others
         FROM users WHERE id = $1 AND tenant_id = $2",
    )
    .bind(user.as_str())
    .bind(tenant.as_str())
    .bind(BuiltinRole::Owner.id().as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(store_error)?;
    let Some(row) = row else {
        return Ok(Some(UserWrite::NotFound));
    };
    let owner: bool = row.try_get("owner").map_err(store_error)?;
    let others: i64 = row.try_get("others").map_err(store_error)?;
    Ok((owner && !stays_owner && others == 0).then_some(UserWrite::LastOwner))
}
