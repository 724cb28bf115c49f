//! The SQL both backends share, written once.
//!
//! SQLite and PostgreSQL agree on almost all of keygate's SQL: `$n` parameters (sqlx maps them for
//! SQLite too), recursive CTEs, `coalesce`, `EXISTS`. What differs lives in each backend's module:
//! connecting, how a write transaction begins, how changes reach other nodes, and how driver
//! errors map to [`StoreError`](keygate_core::store::StoreError). [`sql_store!`] writes the
//! storage traits for a backend from that shared SQL; the backend module provides `begin_write`,
//! `commit` and `store_error`.

/// SQL saying tenant `$t` is tenant `$s` or below it: its path is in `$s`'s subtree range (see
/// `TenantPath::subtree`), which an index on `path` answers.
macro_rules! in_subtree {
    ($t:literal, $s:literal) => {
        concat!(
            "(",
            $t,
            ".path >= ",
            $s,
            ".path AND ",
            $t,
            ".path < substr(",
            $s,
            ".path, 1, length(",
            $s,
            ".path) - 1) || '0')"
        )
    };
}
pub(crate) use in_subtree;

/// What the shared code names; each backend module imports it whole.
pub(crate) mod prelude {
    pub use async_trait::async_trait;
    pub use futures_core::stream::BoxStream;
    pub use futures_util::TryStreamExt;
    pub use keygate_core::Timestamp;
    pub use keygate_core::access::{Grant, Scope, perm};
    pub use keygate_core::allowlist::IpAllowlist;
    pub use keygate_core::credential::{CredentialHash, CredentialKind};
    pub use keygate_core::id::{CredentialId, RoleId, TenantId, UserId};
    pub use keygate_core::jwt::{SEALING_SCHEME, Sealing, SigningAlgorithm, StoredSigningKey};
    pub use keygate_core::model::{
        AuditEvent, Credential, IpRestriction, Outcome, RateLimit, Role, Slug, StoredEvent, Tenant,
        TenantPath, TenantStatus, User, UserStatus, email_key,
    };
    pub use keygate_core::oauth::{AuthenticatedClient, RefreshToken, Rotation};
    pub use keygate_core::password::PasswordHashString;
    pub use keygate_core::store::{
        AccessTokenRecord, Bootstrap, Change, ChangeListener, CredentialRecord, CredentialSource,
        Deletion, EventFilter, Login, Page, Paged, PersonalTokens, Store, StoreError, TokenFilter,
    };
    pub use sqlx::{QueryBuilder, Row, Transaction};
}

/// Which unique value a violated constraint or index protects, from its name or message.
pub(crate) fn unique_field(name: &str) -> &'static str {
    if name.contains("slug") {
        "slug"
    } else if name.contains("email") {
        "email"
    } else if name.contains("name") {
        "name"
    } else {
        "value"
    }
}

/// Implements `CredentialSource` and `Store` for `$store` over database `$db` with rows `$row`.
/// Appends ` AND <column> IN (…)` with one bind per value, or nothing when there are no values
/// (a filter that was not given).
macro_rules! and_in {
    ($query:expr, $column:expr, $values:expr) => {{
        let values = $values;
        if !values.is_empty() {
            $query.push(format_args!(" AND {} IN (", $column));
            let mut list = $query.separated(", ");
            for value in values {
                list.push_bind(value.as_str());
            }
            $query.push(")");
        }
    }};
}
pub(crate) use and_in;

macro_rules! sql_store {
    ($store:ident, $db:ty, $row:ty) => {
        #[async_trait]
        impl CredentialSource for $store {
            async fn find_credential(
                &self,
                hash: &CredentialHash,
            ) -> Result<Option<CredentialRecord>, StoreError> {
                // One read transaction, so the credential, its tenant line, user and role are one snapshot.
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let Some(row) = sqlx::query(
                    "SELECT c.*, t.path AS tenant_path FROM credentials c
                     JOIN tenants t ON t.id = c.tenant_id WHERE c.secret_hash = $1",
                )
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
                let Some(row) = sqlx::query(
                    "SELECT c.*, t.path AS tenant_path FROM credentials c
                     JOIN tenants t ON t.id = c.tenant_id WHERE c.id = $1 AND c.kind = 'oauth_secret'",
                )
                .bind(client.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?
                else {
                    return Ok(None);
                };
                let client_record = credential_record(&mut tx, &row).await?;
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

            async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
                sqlx::query("SELECT * FROM signing_keys ORDER BY generation")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?
                    .iter()
                    .map(signing_key_from_row)
                    .collect()
            }
        }

        #[async_trait]
        impl Store for $store {
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
                insert_user(&mut tx, &b.user, &b.password_hash).await?;
                insert_credential(&mut tx, &b.token).await?;
                insert_event(&mut tx, &b.event).await?;
                self.commit(tx, &[]).await
            }

            async fn get_tenant(
                &self,
                scope: &Scope,
                id_or_slug: &str,
            ) -> Result<Option<Tenant>, StoreError> {
                sqlx::query(concat!(
                    "SELECT t.* FROM tenants t JOIN tenants s ON s.id = $1
                     WHERE (t.id = $2 OR t.slug = $2) AND ",
                    $crate::sql::in_subtree!("t", "s")
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
                scope: &Scope,
                parent: &TenantId,
                page: &Page,
            ) -> Result<Paged<Tenant>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT t.* FROM tenants t JOIN tenants s ON s.id = $1
                     WHERE t.parent_id = $2 AND ($3 IS NULL OR t.id < $3) AND ",
                    $crate::sql::in_subtree!("t", "s"),
                    " ORDER BY t.id DESC LIMIT $4"
                ))
                .bind(scope.tenant_id().as_str())
                .bind(parent.as_str())
                .bind(page.cursor.as_deref())
                .bind(i64::from(page.limit) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
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
                    return Err(StoreError::Internal("a tenant outside the grant's tenant".into()));
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
                    "UPDATE tenants SET name = $1, status = $2
                     WHERE id = $3 AND EXISTS (SELECT 1 FROM tenants s WHERE s.id = $4 AND ",
                    $crate::sql::in_subtree!("tenants", "s"),
                    ")"
                ))
                .bind(&tenant.name)
                .bind(tenant.status.as_str())
                .bind(tenant.id.as_str())
                .bind(grant.tenant_id().as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                if updated == 0 {
                    return Ok(None);
                }
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[Change::Tenant(tenant.id.clone())]).await?;
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
                    $crate::sql::in_subtree!("t", "s"),
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
                // In this order, so no foreign key is left pointing at a deleted row.
                for sql in [
                    "DELETE FROM credentials WHERE tenant_id = $1",
                    "DELETE FROM users WHERE tenant_id = $1",
                    "DELETE FROM roles WHERE tenant_id = $1",
                    "DELETE FROM tenants WHERE id = $1",
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

            async fn list_roles(&self, scope: &Scope, page: &Page) -> Result<Paged<Role>, StoreError> {
                scoped_page(
                    &self.pool,
                    "SELECT * FROM roles WHERE (tenant_id IS NULL OR tenant_id = $1)
                       AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                    scope,
                    page,
                    role_from_row,
                    |r| r.id.to_string(),
                )
                .await
            }

            async fn get_role(&self, scope: &Scope, id: &RoleId) -> Result<Option<Role>, StoreError> {
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
                    "INSERT INTO roles (id, tenant_id, name, permissions, created_at) VALUES ($1, $2, $3, $4, $5)",
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

            async fn list_users(&self, scope: &Scope, page: &Page) -> Result<Paged<User>, StoreError> {
                scoped_page(
                    &self.pool,
                    "SELECT * FROM users WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                    scope,
                    page,
                    user_from_row,
                    |u| u.id.to_string(),
                )
                .await
            }

            async fn get_user(&self, scope: &Scope, id: &UserId) -> Result<Option<User>, StoreError> {
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
            ) -> Result<Option<()>, StoreError> {
                let mut tx = self.begin_write().await?;
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
                    return Ok(None);
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
                Ok(Some(()))
            }

            async fn delete_user(
                &self,
                grant: &Grant<perm::UsersWrite>,
                id: &UserId,
                event: &AuditEvent,
            ) -> Result<Option<()>, StoreError> {
                let mut tx = self.begin_write().await?;
                // Personal tokens and sessions go with the user (ON DELETE CASCADE).
                let deleted = sqlx::query("DELETE FROM users WHERE id = $1 AND tenant_id = $2")
                    .bind(id.as_str())
                    .bind(grant.tenant_id().as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(None);
                }
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[Change::User(id.clone())]).await?;
                Ok(Some(()))
            }

            async fn find_logins(
                &self,
                email: &str,
                organization: Option<&str>,
                limit: u32,
            ) -> Result<Vec<Login>, StoreError> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT u.*, t.slug AS tenant_slug
                     FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.email_folded = ",
                );
                query.push_bind(email_key(email));
                if let Some(organization) = organization {
                    query.push(" AND t.slug = ").push_bind(organization.to_owned());
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
                    let password_hash: String =
                        row.try_get("password_hash").map_err(store_error)?;
                    let organization: String = row.try_get("tenant_slug").map_err(store_error)?;
                    let tenant = sqlx::query("SELECT * FROM tenants WHERE id = $1")
                        .bind(user.tenant_id.as_str())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(store_error)?;
                    let tenant = tenant_from_row(&tenant)?;
                    let mut query = QueryBuilder::<$db>::new(
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

            async fn create_token(
                &self,
                grant: &Grant<perm::TokensWrite>,
                token: &Credential,
                event: &AuditEvent,
            ) -> Result<(), StoreError> {
                if token.tenant_id != *grant.tenant_id() {
                    return Err(StoreError::Internal(
                        "a token outside the grant's tenant".into(),
                    ));
                }
                let mut tx = self.begin_write().await?;
                insert_credential(&mut tx, token).await?;
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[]).await
            }

            async fn create_session(
                &self,
                session: &Credential,
                event: &AuditEvent,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                insert_credential(&mut tx, session).await?;
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[]).await
            }

            async fn list_tokens(
                &self,
                scope: &Scope,
                filter: &TokenFilter,
                page: &Page,
                now: Timestamp,
            ) -> Result<Paged<Credential>, StoreError> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT * FROM credentials WHERE kind IN ('personal', 'service') AND tenant_id = ",
                );
                query.push_bind(scope.tenant_id().as_str());
                $crate::sql::and_in!(query, "kind", &filter.kinds);
                if !filter.statuses.is_empty() {
                    query.push(" AND (FALSE");
                    for status in &filter.statuses {
                        match status.as_str() {
                            "active" => query
                                .push(" OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                                .push_bind(now.unix())
                                .push("))"),
                            "expired" => query
                                .push(" OR (revoked_at IS NULL AND expires_at <= ")
                                .push_bind(now.unix())
                                .push(")"),
                            "revoked" => query.push(" OR revoked_at IS NOT NULL"),
                            _ => &mut query,
                        };
                    }
                    query.push(")");
                }
                $crate::sql::and_in!(query, "user_id", &filter.user_ids);
                $crate::sql::and_in!(query, "id", &filter.ids);
                match &filter.personal {
                    PersonalTokens::All => {}
                    PersonalTokens::OfUser(user) => {
                        query
                            .push(" AND (kind = 'service' OR user_id = ")
                            .push_bind(user.as_str())
                            .push(")");
                    }
                    PersonalTokens::Hidden => {
                        query.push(" AND kind = 'service'");
                    }
                }
                if let Some(cursor) = &page.cursor {
                    query.push(" AND id < ").push_bind(cursor.as_str());
                }
                query
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind(i64::from(page.limit) + 1);
                let rows = query
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                paged(&rows, page, credential_from_row, |c| c.id.to_string())
            }

            async fn get_token(
                &self,
                scope: &Scope,
                id: &CredentialId,
            ) -> Result<Option<Credential>, StoreError> {
                sqlx::query(
                    "SELECT * FROM credentials
                     WHERE id = $1 AND tenant_id = $2 AND kind IN ('personal', 'service')",
                )
                .bind(id.as_str())
                .bind(scope.tenant_id().as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
                .map(|row| credential_from_row(&row))
                .transpose()
            }

            async fn revoke_tokens(
                &self,
                grant: &Grant<perm::TokensWrite>,
                ids: &[CredentialId],
                at: Timestamp,
                events: &[AuditEvent],
            ) -> Result<Vec<CredentialId>, StoreError> {
                let mut tx = self.begin_write().await?;
                let mut revoked = Vec::with_capacity(ids.len());
                for (id, event) in ids.iter().zip(events) {
                    let changed = sqlx::query(
                        "UPDATE credentials SET revoked_at = $1
                         WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL
                           AND kind IN ('personal', 'service')",
                    )
                    .bind(at.unix())
                    .bind(id.as_str())
                    .bind(grant.tenant_id().as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                    if changed > 0 {
                        insert_event(&mut tx, event).await?;
                        revoked.push(id.clone());
                    }
                }
                let changes: Vec<Change> = revoked.iter().cloned().map(Change::Credential).collect();
                self.commit(tx, &changes).await?;
                Ok(revoked)
            }

            async fn end_session(
                &self,
                id: &CredentialId,
                at: Timestamp,
                event: &AuditEvent,
            ) -> Result<Option<()>, StoreError> {
                let mut tx = self.begin_write().await?;
                let ended = sqlx::query(
                    "UPDATE credentials SET revoked_at = $1
                     WHERE id = $2 AND kind = 'session' AND revoked_at IS NULL",
                )
                .bind(at.unix())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                if ended == 0 {
                    return Ok(None);
                }
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[Change::Credential(id.clone())]).await?;
                Ok(Some(()))
            }

            async fn list_account_keys(&self, scope: &Scope) -> Result<Vec<Credential>, StoreError> {
                sqlx::query(
                    "SELECT * FROM credentials WHERE tenant_id = $1 AND kind = 'account_key' ORDER BY id",
                )
                .bind(scope.tenant_id().as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?
                .iter()
                .map(credential_from_row)
                .collect()
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
                sqlx::query("UPDATE tenants SET id = id WHERE id = $1")
                    .bind(grant.tenant_id().as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM credentials WHERE tenant_id = $1 AND kind = 'account_key'",
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
            ) -> Result<Option<()>, StoreError> {
                delete_credential(self, grant.tenant_id(), id, CredentialKind::AccountKey, event).await
            }

            async fn get_ip_restriction(&self, scope: &Scope) -> Result<IpRestriction, StoreError> {
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
                self.commit(tx, &[Change::Tenant(grant.tenant_id().clone())]).await
            }

            async fn list_events(
                &self,
                scope: &Scope,
                filter: &EventFilter,
                page: &Page,
            ) -> Result<Paged<StoredEvent>, StoreError> {
                let mut query = select_events(scope, filter, page.cursor.as_deref());
                query.push(" LIMIT ").push_bind(i64::from(page.limit) + 1);
                let rows = query
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                paged(&rows, page, event_from_row, |e| e.id.clone())
            }

            fn export_events(
                &self,
                scope: &Scope,
                filter: &EventFilter,
            ) -> BoxStream<'static, Result<StoredEvent, StoreError>> {
                let pool = self.pool.clone();
                let scope = scope.clone();
                let filter = filter.clone();
                Box::pin(async_stream::try_stream! {
                    let mut query = select_events(&scope, &filter, None);
                    let mut rows = query.build().fetch(&pool);
                    while let Some(row) = rows.try_next().await.map_err(store_error)? {
                        yield event_from_row(&row)?;
                    }
                })
            }

            async fn record_refusals(&self, events: &[(AuditEvent, u32)]) -> Result<(), StoreError> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                for (event, count) in events {
                    insert_event_counted(&mut *tx, event, *count).await?;
                }
                tx.commit().await.map_err(store_error)
            }

            async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
                sqlx::query(
                    "DELETE FROM audit_events WHERE id IN
                         (SELECT id FROM audit_events WHERE time < $1 ORDER BY time LIMIT $2)",
                )
                .bind(before.unix())
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(store_error)
            }

            async fn record_last_used(&self, uses: &[(CredentialId, Timestamp)]) -> Result<(), StoreError> {
                if uses.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                for (id, at) in uses {
                    sqlx::query(
                        "UPDATE credentials SET last_used_at = $1
                         WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                    )
                    .bind(at.unix())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                }
                // Not a change verification depends on: nothing to drop from caches.
                self.commit(tx, &[]).await
            }

            async fn create_client(
                &self,
                grant: &Grant<perm::OauthClientsWrite>,
                client: &Credential,
                event: &AuditEvent,
            ) -> Result<(), StoreError> {
                if client.tenant_id != *grant.tenant_id() || client.kind != CredentialKind::OauthSecret {
                    return Err(StoreError::Internal("a client outside the grant's tenant".into()));
                }
                let mut tx = self.begin_write().await?;
                insert_credential(&mut tx, client).await?;
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[]).await
            }

            async fn list_clients(&self, scope: &Scope, page: &Page) -> Result<Paged<Credential>, StoreError> {
                scoped_page(
                    &self.pool,
                    "SELECT * FROM credentials WHERE tenant_id = $1 AND kind = 'oauth_secret'
                       AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                    scope,
                    page,
                    credential_from_row,
                    |c| c.id.to_string(),
                )
                .await
            }

            async fn get_client(
                &self,
                scope: &Scope,
                id: &CredentialId,
            ) -> Result<Option<Credential>, StoreError> {
                sqlx::query(
                    "SELECT * FROM credentials WHERE id = $1 AND tenant_id = $2 AND kind = 'oauth_secret'",
                )
                .bind(id.as_str())
                .bind(scope.tenant_id().as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
                .map(|row| credential_from_row(&row))
                .transpose()
            }

            async fn delete_client(
                &self,
                grant: &Grant<perm::OauthClientsWrite>,
                id: &CredentialId,
                event: &AuditEvent,
            ) -> Result<Option<()>, StoreError> {
                // Its refresh tokens and revoked access tokens go with it (ON DELETE CASCADE).
                delete_credential(self, grant.tenant_id(), id, CredentialKind::OauthSecret, event).await
            }

            async fn issue_refresh_token(
                &self,
                client: &AuthenticatedClient,
                token: &RefreshToken,
                event: &AuditEvent,
            ) -> Result<(), StoreError> {
                check_lineage(client, token)?;
                let mut tx = self.begin_write().await?;
                insert_refresh_token(&mut tx, token).await?;
                insert_event(&mut tx, event).await?;
                // A refresh token is never cached: nothing to announce.
                self.commit(tx, &[]).await
            }

            async fn find_refresh_token(
                &self,
                hash: &CredentialHash,
            ) -> Result<Option<RefreshToken>, StoreError> {
                sqlx::query("SELECT * FROM credentials WHERE secret_hash = $1 AND kind = 'refresh'")
                    .bind(hash.as_bytes().as_slice())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?
                    .map(|row| refresh_from_row(&row))
                    .transpose()
            }

            async fn rotate_refresh_token(
                &self,
                client: &AuthenticatedClient,
                spent: &CredentialId,
                replacement: &RefreshToken,
                refused: &AuditEvent,
                granted: &AuditEvent,
            ) -> Result<Rotation, StoreError> {
                check_lineage(client, replacement)?;
                let at = replacement.credential.created_at;
                let mut tx = self.begin_write().await?;
                let spendable = sqlx::query(
                    "UPDATE credentials SET spent_at = $1
                     WHERE id = $2 AND client_id = $3 AND kind = 'refresh'
                       AND spent_at IS NULL AND revoked_at IS NULL",
                )
                .bind(at.unix())
                .bind(spent.as_str())
                .bind(client.id().as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                if spendable == 0 {
                    // Spent by a request that got here first: two parties hold this token.
                    revoke_family(&mut tx, client, &replacement.family_id, at).await?;
                    insert_event(&mut tx, refused).await?;
                    self.commit(tx, &[]).await?;
                    return Ok(Rotation::Reused);
                }
                insert_refresh_token(&mut tx, replacement).await?;
                insert_event(&mut tx, granted).await?;
                self.commit(tx, &[]).await?;
                Ok(Rotation::Rotated)
            }

            async fn revoke_refresh_family(
                &self,
                client: &AuthenticatedClient,
                family: &CredentialId,
                at: Timestamp,
                event: &AuditEvent,
            ) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await?;
                let revoked = revoke_family(&mut tx, client, family, at).await?;
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[]).await?;
                Ok(revoked)
            }

            async fn revoke_access_token(
                &self,
                client: &AuthenticatedClient,
                jti: &CredentialId,
                expires_at: Timestamp,
                event: &AuditEvent,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                // Revocations of tokens that have expired since are of no more use.
                sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= $1")
                    .bind(event.time.unix())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query(
                    "INSERT INTO revoked_access_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti.as_str())
                .bind(client.id().as_str())
                .bind(expires_at.unix())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                insert_event(&mut tx, event).await?;
                self.commit(tx, &[Change::Credential(jti.clone())]).await
            }

            async fn delete_expired_refresh_tokens(&self, before: Timestamp) -> Result<u64, StoreError> {
                let mut tx = self.begin_write().await?;
                let deleted = sqlx::query("DELETE FROM credentials WHERE kind = 'refresh' AND expires_at < $1")
                    .bind(before.unix())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                // Never cached, and refused already: nothing to announce.
                self.commit(tx, &[]).await?;
                Ok(deleted)
            }

            async fn add_signing_key(
                &self,
                key: &StoredSigningKey,
                now: Timestamp,
                expired_before: Timestamp,
            ) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO signing_keys (kid, generation, algorithm, public_key, private_key,
                                               encryption, salt, nonce, created_at, retired_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&key.kid)
                .bind(key.generation)
                .bind(key.algorithm.as_str())
                .bind(key.public_key.as_slice())
                .bind(key.private_key.as_slice())
                .bind(key.sealing.as_ref().map(|_| SEALING_SCHEME))
                .bind(key.sealing.as_ref().map(|s| s.salt.as_slice()))
                .bind(key.sealing.as_ref().map(|s| s.nonce.as_slice()))
                .bind(key.created_at.unix())
                .bind(key.retired_at.map(Timestamp::unix))
                .execute(&mut *tx)
                .await
                .map_err(store_error);
                match inserted {
                    Ok(_) => {}
                    // Another node rotated first; the transaction is dropped, changing nothing.
                    Err(StoreError::AlreadyExists(_)) => return Ok(false),
                    Err(error) => return Err(error),
                }
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL")
                    .bind(now.unix())
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
                    .bind(expired_before.unix())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                self.commit(tx, &[Change::SigningKeys]).await?;
                Ok(true)
            }
        }

        /// Deletes `tenant`'s credential `id` of `kind` for good, recording `event`, and drops it
        /// from every node's cache; `None` if the tenant has no such credential.
        async fn delete_credential(
            store: &$store,
            tenant: &TenantId,
            id: &CredentialId,
            kind: CredentialKind,
            event: &AuditEvent,
        ) -> Result<Option<()>, StoreError> {
            let mut tx = store.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM credentials WHERE id = $1 AND tenant_id = $2 AND kind = $3")
                .bind(id.as_str())
                .bind(tenant.as_str())
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if deleted == 0 {
                return Ok(None);
            }
            insert_event(&mut tx, event).await?;
            store.commit(tx, &[Change::Credential(id.clone())]).await?;
            Ok(Some(()))
        }

        /// A refresh token must belong to the client that stores it, in the client's tenant.
        fn check_lineage(client: &AuthenticatedClient, token: &RefreshToken) -> Result<(), StoreError> {
            if token.client_id != *client.id()
                || token.credential.tenant_id != *client.tenant_id()
                || token.credential.kind != CredentialKind::Refresh
            {
                return Err(StoreError::Internal("a refresh token of another client".into()));
            }
            Ok(())
        }

        async fn revoke_family(
            tx: &mut Transaction<'_, $db>,
            client: &AuthenticatedClient,
            family: &CredentialId,
            at: Timestamp,
        ) -> Result<u64, StoreError> {
            sqlx::query(
                "UPDATE credentials SET revoked_at = $1
                 WHERE family_id = $2 AND client_id = $3 AND kind = 'refresh' AND revoked_at IS NULL",
            )
            .bind(at.unix())
            .bind(family.as_str())
            .bind(client.id().as_str())
            .execute(&mut **tx)
            .await
            .map(|done| done.rows_affected())
            .map_err(store_error)
        }

        async fn insert_refresh_token(
            tx: &mut Transaction<'_, $db>,
            token: &RefreshToken,
        ) -> Result<(), StoreError> {
            insert_row(tx, &token.credential, Some((&token.client_id, &token.family_id))).await
        }

        fn refresh_from_row(row: &$row) -> Result<RefreshToken, StoreError> {
            let credential = credential_from_row(row)?;
            let client_id: Option<String> = row.try_get("client_id").map_err(store_error)?;
            let family_id: Option<String> = row.try_get("family_id").map_err(store_error)?;
            let (Some(client_id), Some(family_id)) = (client_id, family_id) else {
                return Err(corrupt("refresh token lineage", credential.id.as_str()));
            };
            Ok(RefreshToken {
                credential,
                client_id: CredentialId::from_trusted(client_id),
                family_id: CredentialId::from_trusted(family_id),
                spent_at: optional_timestamp(row, "spent_at")?,
            })
        }

        fn signing_key_from_row(row: &$row) -> Result<StoredSigningKey, StoreError> {
            let kid: String = row.try_get("kid").map_err(store_error)?;
            let encryption: Option<String> = row.try_get("encryption").map_err(store_error)?;
            let salt: Option<Vec<u8>> = row.try_get("salt").map_err(store_error)?;
            let nonce: Option<Vec<u8>> = row.try_get("nonce").map_err(store_error)?;
            let sealing = match (encryption.as_deref(), salt, nonce) {
                (None, _, _) => None,
                (Some(SEALING_SCHEME), Some(salt), Some(nonce)) => Some(Sealing { salt, nonce }),
                (Some(other), _, _) => return Err(corrupt("key sealing", other)),
            };
            let algorithm: String = row.try_get("algorithm").map_err(store_error)?;
            Ok(StoredSigningKey {
                generation: row.try_get("generation").map_err(store_error)?,
                algorithm: SigningAlgorithm::parse(&algorithm)
                    .ok_or_else(|| corrupt("signing algorithm", &algorithm))?,
                public_key: row.try_get("public_key").map_err(store_error)?,
                private_key: row.try_get("private_key").map_err(store_error)?,
                sealing,
                created_at: timestamp(row, "created_at")?,
                retired_at: optional_timestamp(row, "retired_at")?,
                kid,
            })
        }

        /// A credential's row (with its tenant's path as `tenant_path`) as verification needs it:
        /// with its tenant line, user and role, read in the transaction `tx`.
        async fn credential_record(
            tx: &mut Transaction<'_, $db>,
            row: &$row,
        ) -> Result<CredentialRecord, StoreError> {
            let credential = credential_from_row(row)?;
            // The tenant and all its ancestors, in one query whatever the depth: their ids
            // are on the tenant's path.
            let path = TenantPath::from_stored(row.try_get("tenant_path").map_err(store_error)?);
            let ids: Vec<TenantId> = path.ids().collect();
            let mut query = QueryBuilder::<$db>::new("SELECT * FROM tenants WHERE id IN (");
            let mut list = query.separated(", ");
            for id in &ids {
                list.push_bind(id.as_str());
            }
            query.push(")");
            let mut line = query
                .build()
                .fetch_all(&mut **tx)
                .await
                .map_err(store_error)?
                .iter()
                .map(tenant_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            // Nearest first: the credential's own tenant, then its parent, …
            line.sort_by_key(|t| std::cmp::Reverse(t.path.depth()));
            if line.first().map(|t| &t.id) != Some(&credential.tenant_id) {
                return Err(StoreError::Internal(format!(
                    "credential {} has no tenant",
                    credential.id
                )));
            }
            let tenant = line.remove(0);

            let user = match &credential.user_id {
                Some(user_id) => sqlx::query("SELECT * FROM users WHERE id = $1")
                    .bind(user_id.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?
                    .map(|row| user_from_row(&row))
                    .transpose()?,
                None => None,
            };
            let role_id = match (&credential.role_id, &user) {
                (Some(role_id), _) => Some(role_id.clone()),
                (None, Some(user)) => Some(user.role_id.clone()),
                (None, None) => None,
            };
            let role = match role_id {
                Some(role_id) => sqlx::query("SELECT * FROM roles WHERE id = $1")
                    .bind(role_id.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?
                    .map(|row| role_from_row(&row))
                    .transpose()?,
                None => None,
            };
            Ok(CredentialRecord {
                credential,
                tenant,
                ancestors: line,
                user,
                role,
            })
        }

        async fn insert_tenant(tx: &mut Transaction<'_, $db>, t: &Tenant) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO tenants (id, parent_id, name, slug, status, allowlist_enabled, allowlist,
                                      path, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(t.id.as_str())
            .bind(t.parent_id.as_ref().map(TenantId::as_str))
            .bind(&t.name)
            .bind(t.slug.as_str())
            .bind(t.status.as_str())
            .bind(t.ip_restriction.enabled)
            .bind(to_json(&t.ip_restriction.allowlist.to_strings())?)
            .bind(t.path.as_str())
            .bind(t.created_at.unix())
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(store_error)
        }

        async fn insert_user(
            tx: &mut Transaction<'_, $db>,
            u: &User,
            password_hash: &PasswordHashString,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO users (id, tenant_id, email, email_key, email_folded, name, role_id, password_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(u.id.as_str())
            .bind(u.tenant_id.as_str())
            .bind(&u.email)
            // Unique per tenant (migration 0007); the folded address alone is what sign-in finds.
            .bind(format!("{}:{}", u.tenant_id, email_key(&u.email)))
            .bind(email_key(&u.email))
            .bind(&u.name)
            .bind(u.role_id.as_str())
            .bind(password_hash.as_str())
            .bind(u.status.as_str())
            .bind(u.created_at.unix())
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(store_error)
        }

        async fn insert_credential(
            tx: &mut Transaction<'_, $db>,
            c: &Credential,
        ) -> Result<(), StoreError> {
            insert_row(tx, c, None).await
        }

        /// Inserts a credential; `lineage` is a refresh token's client and family.
        async fn insert_row(
            tx: &mut Transaction<'_, $db>,
            c: &Credential,
            lineage: Option<(&CredentialId, &CredentialId)>,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO credentials (id, tenant_id, kind, secret_hash, hint, name, description, user_id,
                     created_by, role_id, permissions, allowed_ips, rate_limit_requests,
                     rate_limit_per_seconds, created_at, expires_at, revoked_at, last_used_at,
                     client_id, family_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                         $19, $20)",
            )
            .bind(c.id.as_str())
            .bind(c.tenant_id.as_str())
            .bind(c.kind.as_str())
            .bind(c.hash.as_bytes().as_slice())
            .bind(&c.hint)
            .bind(&c.name)
            .bind(&c.description)
            .bind(c.user_id.as_ref().map(UserId::as_str))
            .bind(&c.created_by)
            .bind(c.role_id.as_ref().map(RoleId::as_str))
            .bind(c.permissions.as_ref().map(to_json).transpose()?)
            .bind(c.allowed_ips.as_ref().map(to_json).transpose()?)
            .bind(c.rate_limit.map(|r| i64::from(r.requests)))
            .bind(c.rate_limit.map(|r| i64::from(r.per_seconds)))
            .bind(c.created_at.unix())
            .bind(c.expires_at.map(Timestamp::unix))
            .bind(c.revoked_at.map(Timestamp::unix))
            .bind(c.last_used_at.map(Timestamp::unix))
            .bind(lineage.map(|(client, _)| client.as_str()))
            .bind(lineage.map(|(_, family)| family.as_str()))
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(store_error)
        }

        /// A change's event, in the change's transaction. A change that cannot be recorded does
        /// not happen: the failure rolls it back, and is reported as the store being unavailable
        /// (a retry may succeed), whatever the database said.
        async fn insert_event(tx: &mut Transaction<'_, $db>, e: &AuditEvent) -> Result<(), StoreError> {
            insert_event_counted(&mut **tx, e, 1).await.map_err(|error| match error {
                StoreError::Unavailable(why) | StoreError::Internal(why) => {
                    StoreError::Unavailable(format!("the audit event could not be written: {why}"))
                }
                other => other,
            })
        }

        async fn insert_event_counted<'c, E>(executor: E, e: &AuditEvent, count: u32) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            sqlx::query(
                "INSERT INTO audit_events (id, time, tenant_id, acting_tenant_id, actor_type, actor_id,
                     token_id, action, target_type, target_id, outcome, status, ip, user_agent, request_id,
                     count, scope_path)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     COALESCE((SELECT path FROM tenants WHERE id = COALESCE($4, $3)),
                              '/' || COALESCE($4, $3) || '/'))",
            )
            .bind(e.id.as_str())
            .bind(e.time.unix())
            .bind(e.tenant_id.as_str())
            .bind(e.acting_tenant_id.as_ref().map(TenantId::as_str))
            .bind(e.actor.kind)
            .bind(&e.actor.id)
            .bind(e.token_id.as_ref().map(CredentialId::as_str))
            .bind(e.action)
            .bind(e.target.as_ref().map(|t| t.kind))
            .bind(e.target.as_ref().map(|t| t.id.as_str()))
            .bind(e.outcome.as_str())
            .bind(i64::from(e.status))
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(&e.request_id)
            .bind(i64::from(count))
            .execute(executor)
            .await
            .map(drop)
            .map_err(store_error)
        }

        /// `SELECT * FROM audit_events` for a scope and filter, newest first, from `cursor` on.
        fn select_events<'q>(
            scope: &'q Scope,
            filter: &'q EventFilter,
            cursor: Option<&'q str>,
        ) -> QueryBuilder<'q, $db> {
            let mut query = QueryBuilder::<$db>::new(
                "SELECT e.* FROM audit_events e, tenants s WHERE s.id = ",
            );
            query.push_bind(scope.tenant_id().as_str()).push(concat!(
                " AND e.scope_path >= s.path",
                " AND e.scope_path < substr(s.path, 1, length(s.path) - 1) || '0'"
            ));
            for (column, values) in [
                ("e.token_id", &filter.token_ids),
                ("e.action", &filter.actions),
                ("e.actor_id", &filter.actor_ids),
            ] {
                $crate::sql::and_in!(query, column, values);
            }
            $crate::sql::and_in!(query, "e.outcome", &filter.outcomes);
            if let Some(since) = filter.since {
                query.push(" AND e.time >= ").push_bind(since.unix());
            }
            if let Some(until) = filter.until {
                query.push(" AND e.time < ").push_bind(until.unix());
            }
            if let Some(cursor) = cursor {
                query.push(" AND e.id < ").push_bind(cursor);
            }
            query.push(" ORDER BY e.id DESC");
            query
        }

        fn event_from_row(row: &$row) -> Result<StoredEvent, StoreError> {
            let outcome: String = row.try_get("outcome").map_err(store_error)?;
            let target_type: Option<String> = row.try_get("target_type").map_err(store_error)?;
            let target_id: Option<String> = row.try_get("target_id").map_err(store_error)?;
            let status: i64 = row.try_get("status").map_err(store_error)?;
            let count: i64 = row.try_get("count").map_err(store_error)?;
            Ok(StoredEvent {
                id: row.try_get("id").map_err(store_error)?,
                time: timestamp(row, "time")?,
                tenant_id: row.try_get("tenant_id").map_err(store_error)?,
                acting_tenant_id: row.try_get("acting_tenant_id").map_err(store_error)?,
                actor_type: row.try_get("actor_type").map_err(store_error)?,
                actor_id: row.try_get("actor_id").map_err(store_error)?,
                token_id: row.try_get("token_id").map_err(store_error)?,
                action: row.try_get("action").map_err(store_error)?,
                target: target_type.zip(target_id),
                outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
                status: u16::try_from(status).map_err(|_| corrupt("status", &status.to_string()))?,
                ip: row.try_get("ip").map_err(store_error)?,
                user_agent: row.try_get("user_agent").map_err(store_error)?,
                request_id: row.try_get("request_id").map_err(store_error)?,
                count: u32::try_from(count).unwrap_or(u32::MAX),
            })
        }

        /// One page of a list in a scope: `sql` takes the scope's tenant as `$1`, the cursor as `$2`
        /// (`$2 IS NULL OR id < $2`) and the limit as `$3`.
        async fn scoped_page<T>(
            pool: &sqlx::Pool<$db>,
            sql: &'static str,
            scope: &Scope,
            page: &Page,
            map: fn(&$row) -> Result<T, StoreError>,
            id: fn(&T) -> String,
        ) -> Result<Paged<T>, StoreError> {
            let rows = sqlx::query(sql)
                .bind(scope.tenant_id().as_str())
                .bind(page.cursor.as_deref())
                .bind(i64::from(page.limit) + 1)
                .fetch_all(pool)
                .await
                .map_err(store_error)?;
            paged(&rows, page, map, id)
        }

        /// Maps the rows of a `LIMIT page.limit + 1` query: the extra row only says there is a next page.
        fn paged<T>(
            rows: &[$row],
            page: &Page,
            map: fn(&$row) -> Result<T, StoreError>,
            id: fn(&T) -> String,
        ) -> Result<Paged<T>, StoreError> {
            let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
            let mut items = rows
                .iter()
                .take(limit)
                .map(map)
                .collect::<Result<Vec<T>, _>>()?;
            let next_cursor = if rows.len() > limit {
                items.last().map(id)
            } else {
                None
            };
            items.truncate(limit);
            Ok(Paged { items, next_cursor })
        }

        fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
            serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
        }

        fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
            serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("stored JSON: {e}")))
        }

        fn corrupt(what: &str, value: &str) -> StoreError {
            StoreError::Internal(format!("unexpected stored {what} `{value}`"))
        }

        fn tenant_from_row(row: &$row) -> Result<Tenant, StoreError> {
            let slug: String = row.try_get("slug").map_err(store_error)?;
            let status: String = row.try_get("status").map_err(store_error)?;
            Ok(Tenant {
                id: TenantId::from_trusted(row.try_get("id").map_err(store_error)?),
                parent_id: row
                    .try_get::<Option<String>, _>("parent_id")
                    .map_err(store_error)?
                    .map(TenantId::from_trusted),
                name: row.try_get("name").map_err(store_error)?,
                slug: Slug::parse(&slug).map_err(|_| corrupt("slug", &slug))?,
                status: TenantStatus::from_name(&status).ok_or_else(|| corrupt("status", &status))?,
                ip_restriction: IpRestriction {
                    enabled: row.try_get("allowlist_enabled").map_err(store_error)?,
                    allowlist: IpAllowlist::new(
                        optional_json::<Vec<ipnet::IpNet>>(row, "allowlist")?.unwrap_or_default(),
                    ),
                },
                path: TenantPath::from_stored(row.try_get("path").map_err(store_error)?),
                created_at: timestamp(row, "created_at")?,
            })
        }

        fn user_from_row(row: &$row) -> Result<User, StoreError> {
            let status: String = row.try_get("status").map_err(store_error)?;
            Ok(User {
                id: UserId::from_trusted(row.try_get("id").map_err(store_error)?),
                tenant_id: TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?),
                email: row.try_get("email").map_err(store_error)?,
                name: row.try_get("name").map_err(store_error)?,
                role_id: RoleId::from_trusted(row.try_get("role_id").map_err(store_error)?),
                status: UserStatus::from_name(&status).ok_or_else(|| corrupt("status", &status))?,
                created_at: timestamp(row, "created_at")?,
            })
        }

        fn role_from_row(row: &$row) -> Result<Role, StoreError> {
            let permissions: String = row.try_get("permissions").map_err(store_error)?;
            Ok(Role {
                id: RoleId::from_trusted(row.try_get("id").map_err(store_error)?),
                tenant_id: row
                    .try_get::<Option<String>, _>("tenant_id")
                    .map_err(store_error)?
                    .map(TenantId::from_trusted),
                name: row.try_get("name").map_err(store_error)?,
                permissions: from_json(&permissions)?,
                created_at: timestamp(row, "created_at")?,
            })
        }

        fn credential_from_row(row: &$row) -> Result<Credential, StoreError> {
            let kind: String = row.try_get("kind").map_err(store_error)?;
            let hash: Vec<u8> = row.try_get("secret_hash").map_err(store_error)?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| StoreError::Internal("stored credential hash is not 32 bytes".into()))?;
            let requests: Option<i64> = row.try_get("rate_limit_requests").map_err(store_error)?;
            let per_seconds: Option<i64> = row.try_get("rate_limit_per_seconds").map_err(store_error)?;
            let rate_limit = match (requests, per_seconds) {
                (Some(requests), Some(per_seconds)) => Some(RateLimit {
                    requests: u32::try_from(requests).map_err(|_| corrupt("rate limit", "requests"))?,
                    per_seconds: u32::try_from(per_seconds)
                        .map_err(|_| corrupt("rate limit", "per_seconds"))?,
                }),
                _ => None,
            };
            Ok(Credential {
                id: CredentialId::from_trusted(row.try_get("id").map_err(store_error)?),
                tenant_id: TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?),
                kind: CredentialKind::from_name(&kind).ok_or_else(|| corrupt("kind", &kind))?,
                hash: CredentialHash::from_bytes(hash),
                hint: row.try_get("hint").map_err(store_error)?,
                name: row.try_get("name").map_err(store_error)?,
                description: row.try_get("description").map_err(store_error)?,
                user_id: row
                    .try_get::<Option<String>, _>("user_id")
                    .map_err(store_error)?
                    .map(UserId::from_trusted),
                created_by: row.try_get("created_by").map_err(store_error)?,
                role_id: row
                    .try_get::<Option<String>, _>("role_id")
                    .map_err(store_error)?
                    .map(RoleId::from_trusted),
                permissions: optional_json(row, "permissions")?,
                allowed_ips: optional_json(row, "allowed_ips")?,
                rate_limit,
                created_at: timestamp(row, "created_at")?,
                expires_at: optional_timestamp(row, "expires_at")?,
                revoked_at: optional_timestamp(row, "revoked_at")?,
                last_used_at: optional_timestamp(row, "last_used_at")?,
            })
        }

        fn optional_json<T: serde::de::DeserializeOwned>(
            row: &$row,
            column: &str,
        ) -> Result<Option<T>, StoreError> {
            row.try_get::<Option<String>, _>(column)
                .map_err(store_error)?
                .map(|text| from_json(&text))
                .transpose()
        }

        fn timestamp(row: &$row, column: &str) -> Result<Timestamp, StoreError> {
            row.try_get::<i64, _>(column)
                .map(Timestamp::from_unix)
                .map_err(store_error)
        }

        fn optional_timestamp(row: &$row, column: &str) -> Result<Option<Timestamp>, StoreError> {
            row.try_get::<Option<i64>, _>(column)
                .map(|t| t.map(Timestamp::from_unix))
                .map_err(store_error)
        }

    };
}
pub(crate) use sql_store;
