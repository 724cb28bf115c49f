//! The keys OAuth access tokens are signed with: read by the key ring, added one generation at a
//! time (two nodes rotating at once add one key, not two).

use async_trait::async_trait;
use keygate_core::Timestamp;
use keygate_core::jwt::{SEALING_SCHEME, Sealing, SigningAlgorithm, StoredSigningKey};
use keygate_core::store::{Change, SigningKeySource, SigningKeyStore, StoreError};
use sqlx::Row;

use super::shared::{corrupt, optional_timestamp, timestamp};
use super::{DbRow, SqlStore, store_error};

#[async_trait]
impl SigningKeySource for SqlStore {
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
impl SigningKeyStore for SqlStore {
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
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL",
        )
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

fn signing_key_from_row(row: &DbRow) -> Result<StoredSigningKey, StoreError> {
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
