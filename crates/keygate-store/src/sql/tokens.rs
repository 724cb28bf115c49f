//! Personal and service tokens of a tenant, and sessions.

use std::collections::HashSet;

use async_trait::async_trait;
use keygate_core::Timestamp;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::id::CredentialId;
use keygate_core::model::{AuditEvent, Credential};
use keygate_core::store::{
    Change, Page, Paged, PersonalTokens, StoreError, TokenFilter, TokenStore,
};
use sqlx::QueryBuilder;

use super::shared::{credential_from_row, insert_credential, insert_event, insert_events, paged};
use super::{Db, SqlStore, store_error};

#[async_trait]
impl TokenStore for SqlStore {
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
        if let Some(user) = &session.user_id {
            sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
                .bind(session.created_at.unix())
                .bind(user.as_str())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await
    }

    async fn list_tokens(
        &self,
        scope: &Scope<perm::TokensRead>,
        filter: &TokenFilter,
        page: &Page,
        now: Timestamp,
    ) -> Result<Paged<Credential>, StoreError> {
        let mut query = QueryBuilder::<Db>::new(concat!(
            "SELECT c.*, qv.* FROM credentials c",
            with_quota!(credential "c"),
            "WHERE kind IN ('personal', 'service') AND tenant_id = "
        ));
        query.push_bind(scope.tenant_id().as_str());
        and_in!(query, "kind", &filter.kinds);
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
        and_in!(query, "user_id", &filter.user_ids);
        and_in!(query, "id", &page.ids);
        if let Some(since) = filter.unused_since {
            query
                .push(" AND (last_used_at IS NULL OR last_used_at < ")
                .push_bind(since.unix())
                .push(")");
        }
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
        scope: &Scope<perm::TokensRead>,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError> {
        sqlx::query(concat!(
            "SELECT c.*, qv.* FROM credentials c",
            with_quota!(credential "c"),
            "WHERE id = $1 AND tenant_id = $2 AND kind IN ('personal', 'service')"
        ))
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
        // `IN ()` is an error in PostgreSQL.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut changed = HashSet::with_capacity(ids.len());
        // Each statement well under the most either database binds (32 766 in SQLite).
        for chunk in ids.chunks(1_000) {
            let mut update = QueryBuilder::<Db>::new("UPDATE credentials SET revoked_at = ");
            update
                .push_bind(at.unix())
                .push(" WHERE tenant_id = ")
                .push_bind(grant.tenant_id().as_str())
                .push(" AND revoked_at IS NULL AND kind IN ('personal', 'service') AND id IN (");
            let mut listed = update.separated(", ");
            for id in chunk {
                listed.push_bind(id.as_str());
            }
            update.push(") RETURNING id");
            let rows: Vec<String> = update
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
            changed.extend(rows);
        }
        // In the order asked, each with its event; an id named twice, once.
        let (revoked, events): (Vec<CredentialId>, Vec<&AuditEvent>) = ids
            .iter()
            .zip(events)
            .filter(|(id, _)| changed.remove(id.as_str()))
            .map(|(id, event)| (id.clone(), event))
            .unzip();
        insert_events(&mut tx, &events).await?;
        let changes: Vec<Change> = revoked.iter().cloned().map(Change::Credential).collect();
        self.commit(tx, &changes).await?;
        Ok(revoked)
    }

    async fn roll_token(
        &self,
        grant: &Grant<perm::TokensWrite>,
        previous: &CredentialId,
        previous_expires_at: Timestamp,
        successor: &Credential,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        if successor.tenant_id != *grant.tenant_id() {
            return Err(StoreError::Internal(
                "a token outside the grant's tenant".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let rolled = sqlx::query(
            "UPDATE credentials SET rolled_to = $1, expires_at = $2
             WHERE id = $3 AND tenant_id = $4 AND revoked_at IS NULL AND rolled_to IS NULL
               AND kind IN ('personal', 'service')",
        )
        .bind(successor.id.as_str())
        .bind(previous_expires_at.unix())
        .bind(previous.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if rolled == 0 {
            return Ok(None);
        }
        // The quota, and what it has used, passes to the successor.
        sqlx::query("UPDATE quotas SET subject_id = $1 WHERE subject_id = $2")
            .bind(successor.id.as_str())
            .bind(previous.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        insert_credential(&mut tx, successor).await?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[Change::Credential(previous.clone())])
            .await?;
        Ok(Some(()))
    }

    async fn note_form(&self, session: &CredentialId, form: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // An upsert that changes nothing when the form is the one already noted: no row
        // affected then, on both databases.
        let noted = sqlx::query(
            "INSERT INTO console_forms (session_id, form) VALUES ($1, $2)
             ON CONFLICT (session_id) DO UPDATE SET form = excluded.form
             WHERE console_forms.form <> excluded.form",
        )
        .bind(session.as_str())
        .bind(form)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        self.commit(tx, &[]).await?;
        Ok(noted == 1)
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
}
