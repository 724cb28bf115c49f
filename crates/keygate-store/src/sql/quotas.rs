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
use keygate_core::store::{QuotaStore, StoreError, Taken};
use sqlx::Row;

use super::{SqlStore, store_error};

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
    async fn take_credits(
        &self,
        subject: &str,
        window: Timestamp,
        need: u64,
        want: u64,
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
            ", window_start = CASE WHEN window_start < $2 THEN $2 ELSE window_start END
             WHERE subject_id = $1
             RETURNING last_take, lim - used AS remaining"
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

/// A count of credits as the database stores it.
fn credits(count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| StoreError::Internal("a count of credits beyond 2^63".into()))
}
