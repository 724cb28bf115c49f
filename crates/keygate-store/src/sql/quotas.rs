//! Quotas: each take is one UPDATE of the quota's row, so concurrent takes from any number of
//! nodes are serialised by the row's lock and each sees what the one before it left. Every SET
//! reads the row as it was before the statement (SQL's rule, and SQLite's and PostgreSQL's), so
//! "the used count of the requested window" can be written once per column:
//!
//! - `current`: `used`, or 0 when the row still counts an older window;
//! - `left`: `lim - current`;
//! - the take: `want` or `left`, whichever is less, and 0 when `left < need`.
//!
//! The statement stores the take in `last_take` and returns it: RETURNING shows the new row, and
//! the take is not otherwise derivable from it. A row counting a *newer* window than the caller's
//! (a node whose clock is behind) is taken from as it is: credits of the newer window, counted
//! there, so never more than its limit.

use async_trait::async_trait;
use keygate_core::Timestamp;
use keygate_core::id::{CredentialId, TenantId};
use keygate_core::model::AuditEvent;
use keygate_core::quota::StoredQuota;
use keygate_core::store::{
    Change, QuotaStore, QuotaTarget, RateCell, RateTaken, StoreError, Taken,
};
use sqlx::{Row, Transaction};

use super::shared::{insert_deliveries, insert_event, stored_quota, upsert_quota};
use super::{Db, DbRow, SHARED_BY_NODES, SqlStore, store_error};

/// The stored TAT, or now ($2) if it has passed.
macro_rules! rate_base {
    () => {
        "(CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat ELSE $2 END)"
    };
}

/// The requests a rate take gets from `$base` (the TAT it starts from): what fits before now plus
/// the tolerance ($4) and one interval ($3), at most $6 (want), none if fewer than $5 (need).
macro_rules! rate_take {
    ($base:expr) => {
        concat!(
            "(CASE WHEN ($2 + $4 + $3 - ",
            $base,
            ") / $3 < $5 THEN 0",
            " WHEN ($2 + $4 + $3 - ",
            $base,
            ") / $3 < $6 THEN ($2 + $4 + $3 - ",
            $base,
            ") / $3",
            " ELSE $6 END)"
        )
    };
}

/// `used` as of the requested window ($2).
macro_rules! current {
    () => {
        "(CASE WHEN window_start < $2 THEN 0 ELSE used END)"
    };
}

/// The credits the statement takes: $4 (want) or what is left, and none when less than $3 (need)
/// is left.
macro_rules! take {
    () => {
        concat!(
            "(CASE WHEN lim - ",
            current!(),
            " < $3 THEN 0 WHEN lim - ",
            current!(),
            " < $4 THEN lim - ",
            current!(),
            " ELSE $4 END)"
        )
    };
}

#[async_trait]
impl QuotaStore for SqlStore {
    fn shared_by_nodes(&self) -> bool {
        SHARED_BY_NODES
    }

    async fn take_rate(
        &self,
        subject: &str,
        cell: RateCell,
        now_ms: i64,
        need: u64,
        want: u64,
    ) -> Result<RateTaken, StoreError> {
        let want = credits(want.max(need))?;
        let need = credits(need)?;
        // As `take_credits`, for GCRA: what is free at `now` ($2) is what fits between the TAT
        // (or now, if it has passed) and now plus the tolerance ($4) and one interval ($3). The
        // row is made by the first take; the existing one is named by the table's name.
        let row = sqlx::query(concat!(
            "INSERT INTO rate_limits (subject_id, tat, last_take)
             VALUES ($1, $2 + $3 * ",
            rate_take!("$2"),
            ", ",
            rate_take!("$2"),
            ")
             ON CONFLICT (subject_id) DO UPDATE SET
               tat = ",
            rate_base!(),
            " + $3 * ",
            rate_take!(rate_base!()),
            ",
               last_take = ",
            rate_take!(rate_base!()),
            "
             RETURNING last_take, tat"
        ))
        .bind(subject)
        .bind(now_ms)
        .bind(cell.interval_ms)
        .bind(cell.tolerance_ms)
        .bind(need)
        .bind(want)
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        let taken: i64 = row.try_get("last_take").map_err(store_error)?;
        Ok(RateTaken {
            taken: u64::try_from(taken).unwrap_or(0),
            tat_ms: row.try_get("tat").map_err(store_error)?,
        })
    }

    async fn prune_rate_limits(&self, now_ms: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM rate_limits WHERE tat <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(store_error)
    }

    async fn stored_quota(&self, subject: &str) -> Result<Option<StoredQuota>, StoreError> {
        sqlx::query(
            "SELECT subject_id AS quota_subject, lim AS quota_limit, period AS quota_period,
                    anchor AS quota_anchor, window_start AS quota_window, used AS quota_used
             FROM quotas WHERE subject_id = $1",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| stored_quota(&row))
        .transpose()
        .map(Option::flatten)
    }

    async fn set_quota(
        &self,
        target: QuotaTarget<'_>,
        quota: Option<&StoredQuota>,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Found where the grant reaches: a subject of another tenant is as good as absent.
        let (subject, tenant, change) = match target {
            QuotaTarget::Token(grant, id) => {
                let found =
                    credential_of(&mut tx, grant.tenant_id(), id, "('personal', 'service')")
                        .await?;
                (id.as_str(), found, Change::Credential(id.clone()))
            }
            QuotaTarget::Client(grant, id) => {
                let found =
                    credential_of(&mut tx, grant.tenant_id(), id, "('oauth_secret')").await?;
                (id.as_str(), found, Change::Credential(id.clone()))
            }
            QuotaTarget::Tenant(grant, id) => {
                let below: bool = sqlx::query_scalar(concat!(
                    "SELECT EXISTS (SELECT 1 FROM tenants t JOIN tenants s ON s.id = $1
                                    WHERE t.id = $2 AND t.id <> s.id AND ",
                    in_subtree!("t", "s"),
                    ")"
                ))
                .bind(grant.tenant_id().as_str())
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
                (
                    id.as_str(),
                    below.then(|| id.clone()),
                    Change::Tenant(id.clone()),
                )
            }
        };
        let Some(tenant) = tenant else {
            return Ok(None);
        };
        match quota {
            Some(quota) if quota.subject == subject => {
                upsert_quota(&mut tx, &tenant, quota).await?
            }
            Some(_) => return Err(StoreError::Internal("a quota for another subject".into())),
            None => {
                sqlx::query("DELETE FROM quotas WHERE subject_id = $1")
                    .bind(subject)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[change]).await?;
        Ok(Some(()))
    }

    async fn take_credits(
        &self,
        subject: &str,
        window: Timestamp,
        need: u64,
        want: u64,
        now: Timestamp,
    ) -> Result<Option<Taken>, StoreError> {
        let want = credits(want.max(need))?;
        let need = credits(need)?;
        let row = sqlx::query(concat!(
            "UPDATE quotas SET used = ",
            current!(),
            " + ",
            take!(),
            ", last_take = ",
            take!(),
            ", notified = CASE WHEN window_start < $2 THEN 0 ELSE notified END",
            ", window_start = CASE WHEN window_start < $2 THEN $2 ELSE window_start END
             WHERE subject_id = $1
             RETURNING last_take, lim - used AS remaining, used, lim, notified, tenant_id,
                       period, window_start"
        ))
        .bind(subject)
        .bind(window.unix())
        .bind(need)
        .bind(want)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let taken: i64 = row.try_get("last_take").map_err(store_error)?;
        let remaining: i64 = row.try_get("remaining").map_err(store_error)?;
        let used: i64 = row.try_get("used").map_err(store_error)?;
        let limit: i64 = row.try_get("lim").map_err(store_error)?;
        let notified: i64 = row.try_get("notified").map_err(store_error)?;
        let level = threshold_level(used, limit);
        if level > notified {
            // Not on the take's path if it fails: the next take sends it.
            if let Err(error) = self.notice_threshold(subject, &row, level, now).await {
                tracing::warn!(%error, subject, "could not publish quota.threshold; the next take will");
            }
        }
        Ok(Some(Taken {
            taken: u64::try_from(taken).unwrap_or(0),
            // A limit lowered below what was used leaves nothing, not a negative.
            remaining: u64::try_from(remaining).unwrap_or(0),
        }))
    }

    async fn give_back_credits(
        &self,
        subject: &str,
        window: Timestamp,
        credits_given: u64,
    ) -> Result<(), StoreError> {
        if credits_given == 0 {
            return Ok(());
        }
        sqlx::query(
            "UPDATE quotas SET used = CASE WHEN used < $3 THEN 0 ELSE used - $3 END
             WHERE subject_id = $1 AND window_start = $2",
        )
        .bind(subject)
        .bind(window.unix())
        .bind(credits(credits_given)?)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// The `quota.threshold` level (API.md §15) `used` of `limit` has reached: 0, 80 or 100.
fn threshold_level(used: i64, limit: i64) -> i64 {
    if limit > 0 && used >= limit {
        100
    } else if limit > 0 && used.saturating_mul(5) >= limit.saturating_mul(4) {
        80
    } else {
        0
    }
}

impl SqlStore {
    /// Publishes `quota.threshold` at `level` for the window `row` (a take's RETURNING) is in, once:
    /// the mark and the deliveries are written together, and only by the take that moves the
    /// mark.
    async fn notice_threshold(
        &self,
        subject: &str,
        row: &DbRow,
        level: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let window: i64 = row.try_get("window_start").map_err(store_error)?;
        let tenant = TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?);
        let mut tx = self.begin_write().await?;
        let marked = sqlx::query(
            "UPDATE quotas SET notified = $1
             WHERE subject_id = $2 AND window_start = $3 AND notified < $1",
        )
        .bind(level)
        .bind(subject)
        .bind(window)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if marked == 0 {
            return Ok(());
        }
        let used: i64 = row.try_get("used").map_err(store_error)?;
        let limit: i64 = row.try_get("lim").map_err(store_error)?;
        let period: String = row.try_get("period").map_err(store_error)?;
        let before: i64 = row.try_get("notified").map_err(store_error)?;
        // One notice per level crossed: a costly request may cross both at once.
        for percent in [80, 100]
            .into_iter()
            .filter(|p| (before + 1..=level).contains(p))
        {
            let mut data = serde_json::Map::new();
            data.insert("tenant_id".into(), tenant.as_str().into());
            data.insert("object".into(), "quota".into());
            data.insert("id".into(), subject.into());
            data.insert("percent".into(), percent.into());
            data.insert("limit".into(), limit.into());
            data.insert("used".into(), used.min(limit).into());
            data.insert("period".into(), period.clone().into());
            data.insert(
                "window_start".into(),
                Timestamp::from_unix(window).to_string().into(),
            );
            let body = keygate_core::webhooks::message_body("quota.threshold", now, data);
            insert_deliveries(&mut tx, &tenant, "quota.threshold", &body, now).await?;
        }
        tx.commit().await.map_err(store_error)
    }
}

/// The tenant of credential `id` of one of `kinds` (an SQL list), if it is `tenant`'s.
async fn credential_of(
    tx: &mut Transaction<'_, Db>,
    tenant: &TenantId,
    id: &CredentialId,
    kinds: &str,
) -> Result<Option<TenantId>, StoreError> {
    let found: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM credentials WHERE id = $1 AND tenant_id = $2
                        AND kind IN {kinds})"
    ))
    .bind(id.as_str())
    .bind(tenant.as_str())
    .fetch_one(&mut **tx)
    .await
    .map_err(store_error)?;
    Ok(found.then(|| tenant.clone()))
}

/// A count of credits as the database stores it.
fn credits(count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::Internal("a count of credits beyond 2^63".into()))
}
