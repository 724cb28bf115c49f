//! OAuth clients and their refresh tokens: each token operation is scoped to the authenticated
//! client, and a refresh token is spent once (a second spend revokes its whole family).

use async_trait::async_trait;
use keygate_core::Timestamp;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::credential::{CredentialHash, CredentialKind};
use keygate_core::id::CredentialId;
use keygate_core::model::{AuditEvent, Credential};
use keygate_core::oauth::{AuthenticatedClient, RefreshToken, Rotation};
use keygate_core::store::{Change, CredentialRecord, OAuthStore, Page, Paged, StoreError};
use sqlx::{Row, Transaction};

use super::shared::{
    RecordOf, corrupt, credential_from_row, credential_record, delete_credential,
    insert_credential, insert_event, insert_row, optional_timestamp, scoped_page,
};
use super::{Db, DbRow, SqlStore, store_error};

#[async_trait]
impl OAuthStore for SqlStore {
    async fn create_client(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        client: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        if client.tenant_id != *grant.tenant_id() || client.kind != CredentialKind::OauthSecret {
            return Err(StoreError::Internal(
                "a client outside the grant's tenant".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        insert_credential(&mut tx, client).await?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await
    }

    async fn list_clients(
        &self,
        scope: &Scope<perm::OauthClientsRead>,
        page: &Page,
    ) -> Result<Paged<Credential>, StoreError> {
        scoped_page(
            &self.pool,
            concat!(
                "SELECT c.*, qv.* FROM credentials c",
                with_quota!(credential "c"),
                "WHERE tenant_id = $1 AND kind = 'oauth_secret' AND ($2 IS NULL OR id < $2){ids}
                 ORDER BY id DESC LIMIT $3"
            ),
            scope,
            page,
            credential_from_row,
            |c| c.id.to_string(),
        )
        .await
    }

    async fn get_client(
        &self,
        scope: &Scope<perm::OauthClientsRead>,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError> {
        sqlx::query(concat!(
            "SELECT c.*, qv.* FROM credentials c",
            with_quota!(credential "c"),
            "WHERE id = $1 AND tenant_id = $2 AND kind = 'oauth_secret'"
        ))
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
        delete_credential(
            self,
            grant.tenant_id(),
            id,
            CredentialKind::OauthSecret,
            event,
        )
        .await
    }

    async fn roll_client_secret(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        id: &CredentialId,
        hash: &CredentialHash,
        hint: &str,
        previous_until: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<Credential>, StoreError> {
        let mut tx = self.begin_write().await?;
        // The right-hand sides read the row as it was: the current secret becomes the previous.
        let Some(row) = sqlx::query(
            "UPDATE credentials SET previous_secret_hash = secret_hash,
                 previous_secret_until = $1, secret_hash = $2, hint = $3
             WHERE id = $4 AND tenant_id = $5 AND kind = 'oauth_secret'
             RETURNING *",
        )
        .bind(previous_until.unix())
        .bind(hash.as_bytes().as_slice())
        .bind(hint)
        .bind(id.as_str())
        .bind(grant.tenant_id().as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?
        else {
            return Ok(None);
        };
        let client = credential_from_row(&row)?;
        insert_event(&mut tx, event).await?;
        // Every node drops what it cached for the client: the secret rolled away before this one
        // stops, and the one rolled away now is read again with its end.
        self.commit(tx, &[Change::Credential(id.clone())]).await?;
        Ok(Some(client))
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
        client: &AuthenticatedClient,
        hash: &CredentialHash,
    ) -> Result<Option<RefreshToken>, StoreError> {
        sqlx::query(
            "SELECT * FROM credentials
             WHERE secret_hash = $1 AND client_id = $2 AND kind = 'refresh'",
        )
        .bind(hash.as_bytes().as_slice())
        .bind(client.id().as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| refresh_from_row(&row))
        .transpose()
    }

    async fn find_refresh_token_within(
        &self,
        grant: &Grant<perm::CredentialsVerify>,
        hash: &CredentialHash,
    ) -> Result<Option<(RefreshToken, CredentialRecord)>, StoreError> {
        // One read transaction, so the token and its client are one snapshot.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let Some(row) = sqlx::query(concat!(
            "SELECT r.* FROM credentials r
             JOIN tenants t ON t.id = r.tenant_id JOIN tenants s ON s.id = $2
             WHERE r.secret_hash = $1 AND r.kind = 'refresh' AND ",
            in_subtree!("t", "s")
        ))
        .bind(hash.as_bytes().as_slice())
        .bind(grant.tenant_id().as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?
        else {
            return Ok(None);
        };
        let token = refresh_from_row(&row)?;
        let Some((client, _)) =
            credential_record(&mut *tx, RecordOf::Client(&token.client_id)).await?
        else {
            return Ok(None);
        };
        tx.commit().await.map_err(store_error)?;
        Ok(Some((token, client)))
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
            self.commit(tx, &family_revoked(client)).await?;
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
        self.commit(tx, &family_revoked(client)).await?;
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
        let deleted =
            sqlx::query("DELETE FROM credentials WHERE kind = 'refresh' AND expires_at < $1")
                .bind(before.unix())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
        // Never cached, and refused already: nothing to announce.
        self.commit(tx, &[]).await?;
        Ok(deleted)
    }
}

/// A refresh token must belong to the client that stores it, in the client's tenant.
fn check_lineage(client: &AuthenticatedClient, token: &RefreshToken) -> Result<(), StoreError> {
    if token.client_id != *client.id()
        || token.credential.tenant_id != *client.tenant_id()
        || token.credential.kind != CredentialKind::Refresh
    {
        return Err(StoreError::Internal(
            "a refresh token of another client".into(),
        ));
    }
    Ok(())
}

/// Revokes a grant: its refresh tokens, and the access tokens issued from it (their `grant`
/// claim names the family, remembered among the revoked access tokens for as long as any of them
/// could live: no longer than the family's last refresh token, issued with the last of them).
/// Returns how many refresh tokens it revoked. The caller's commit must announce the client
/// ([`family_revoked`]), so that every node drops its cached access tokens.
async fn revoke_family(
    tx: &mut Transaction<'_, Db>,
    client: &AuthenticatedClient,
    family: &CredentialId,
    at: Timestamp,
) -> Result<u64, StoreError> {
    let revoked = sqlx::query(
        "UPDATE credentials SET revoked_at = $1
         WHERE family_id = $2 AND client_id = $3 AND kind = 'refresh' AND revoked_at IS NULL",
    )
    .bind(at.unix())
    .bind(family.as_str())
    .bind(client.id().as_str())
    .execute(&mut **tx)
    .await
    .map(|done| done.rows_affected())
    .map_err(store_error)?;
    sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, client_id, expires_at)
         SELECT $1, $2, coalesce(max(expires_at), $3) FROM credentials
         WHERE family_id = $1 AND client_id = $2 AND kind = 'refresh'
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(family.as_str())
    .bind(client.id().as_str())
    .bind(at.unix())
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(revoked)
}

/// What a commit that revoked a family of `client` announces: the client, on which its access
/// tokens' cached verifications depend.
fn family_revoked(client: &AuthenticatedClient) -> [Change; 1] {
    [Change::Credential(client.id().clone())]
}

async fn insert_refresh_token(
    tx: &mut Transaction<'_, Db>,
    token: &RefreshToken,
) -> Result<(), StoreError> {
    insert_row(
        tx,
        &token.credential,
        Some((&token.client_id, &token.family_id)),
    )
    .await
}

fn refresh_from_row(row: &DbRow) -> Result<RefreshToken, StoreError> {
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
