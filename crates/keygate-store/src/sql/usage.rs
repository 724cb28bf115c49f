//! Usage: the counts nodes add every few seconds, summed per credential, bucket and outcome in one
//! table per bucket size (migration 0011), and read back summed over whatever a read does not
//! group by, within a scope's subtree.
//!
//! Every write adds (`count = count + excluded.count`) and never sets: several nodes add to the
//! same bucket, and only the sum is exact. Rows are written in key order, so two nodes adding to
//! the same buckets take their locks in the same order. A count of nothing is never written, so a
//! read never returns an empty bucket.
//!
//! A batch adds to minutes; hours and days are rolled up from them once the hour is over
//! (migration `usage_rolled_up`), up to a position, `usage_rolled`: every minute whose hour and
//! credential are at or before it is in its hour and day. A batch reads the position and adds a
//! minute at or before it (a late one) to its hour and day itself; a read of hours or days adds the
//! minutes past it. On PostgreSQL a batch holds the position with a shared lock and the roll-up
//! with an exclusive one, so neither moves the other's ground; SQLite has one writer.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use keygate_core::Timestamp;
use keygate_core::access::{Scope, perm};
use keygate_core::store::{
    Granularity, LastUse, MINUTE_BUCKETS_PER_HOUR, StoreError, UsageBucket, UsageCount,
    UsageFilter, UsageOutcome, UsageStore,
};
use sqlx::{QueryBuilder, Row, Transaction};

use super::shared::{corrupt, timestamp};
use super::{
    BucketAddition, Db, DbRow, SHARED_BY_NODES, SqlStore, add_to_buckets, set_last_used,
    store_error, usage_hour, usage_key, usage_table,
};

/// Tenants a statement asks after: one bind each, far below what either database allows.
const TENANTS_PER_STATEMENT: usize = 200;

/// The minutes of `m` not yet rolled up past the position `r` (`usage_rolled`). `m.start >= r.hour`
/// follows from the rest; it is there for the index by credential.
const NOT_ROLLED_UP: &str = "m.hour >= r.hour AND m.start >= r.hour
     AND (m.hour > r.hour OR m.credential_id > r.credential_id)";

/// How far the roll-up has come: every minute whose hour and credential are at or before it is in
/// its hour and day buckets.
struct Rolled {
    hour: i64,
    credential_id: String,
}

impl Rolled {
    /// Reads the position; `lock` is how a statement of this backend holds it.
    async fn read(tx: &mut Transaction<'static, Db>, lock: &str) -> Result<Self, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT hour, credential_id FROM usage_rolled{lock}"
        ))
        .fetch_one(&mut **tx)
        .await
        .map_err(store_error)?;
        Ok(Self {
            hour: row.try_get("hour").map_err(store_error)?,
            credential_id: row.try_get("credential_id").map_err(store_error)?,
        })
    }

    /// Whether the minutes of `credential_id` in `hour` were rolled up (ids compare byte by byte,
    /// as the databases' do).
    fn passed(&self, hour: i64, credential_id: &str) -> bool {
        (hour, credential_id) <= (self.hour, self.credential_id.as_str())
    }
}

/// A bucket's key, in the order of its table's key: the leading column (the minute's hour for
/// minutes, the start for hours and days), the start, the credential and the outcome.
type Key<'a> = (i64, i64, &'a str, &'static str);

/// What is added to one bucket: the credential's tenant, and the sum.
type Addition<'a> = (&'a str, i64);

/// What a batch or a roll-up adds to the buckets of one size, summed per bucket first: one
/// statement may not touch a row twice (PostgreSQL refuses), and the minutes of one hour all land
/// in the same hour bucket. Kept in key order.
struct Sums<'a> {
    granularity: Granularity,
    buckets: BTreeMap<Key<'a>, Addition<'a>>,
}

impl<'a> Sums<'a> {
    fn new(granularity: Granularity) -> Self {
        Self {
            granularity,
            buckets: BTreeMap::new(),
        }
    }

    /// Adds `count` requests of `minute` to their bucket.
    fn add(
        &mut self,
        minute: i64,
        credential_id: &'a str,
        outcome: UsageOutcome,
        tenant_id: &'a str,
        count: i64,
    ) -> Result<(), StoreError> {
        let start = self.granularity.bucket(Timestamp::from_unix(minute)).unix();
        let lead = match self.granularity {
            Granularity::Minute => usage_hour(start),
            Granularity::Hour | Granularity::Day => start,
        };
        let key = (lead, start, credential_id, outcome.as_str());
        let bucket = self.buckets.entry(key).or_insert((tenant_id, 0));
        bucket.1 = bucket
            .1
            .checked_add(count)
            .ok_or_else(|| StoreError::Internal("a usage bucket's sum beyond 2^63".into()))?;
        Ok(())
    }

    async fn write(self, tx: &mut Transaction<'static, Db>) -> Result<(), StoreError> {
        let rows: Vec<BucketAddition> = self
            .buckets
            .into_iter()
            .map(
                |((_, start, credential_id, outcome), (tenant_id, count))| BucketAddition {
                    start,
                    credential_id,
                    outcome,
                    tenant_id,
                    count,
                },
            )
            .collect();
        add_to_buckets(tx, self.granularity, &rows).await
    }
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn add_usage(&self, counts: &[UsageCount], uses: &[LastUse]) -> Result<(), StoreError> {
        let counts: Vec<&UsageCount> = counts.iter().filter(|c| c.count > 0).collect();
        if counts.is_empty() && uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        add_counts(&mut tx, &counts).await?;
        set_last_uses(&mut tx, uses).await?;
        // Not a change verification depends on: nothing to drop from caches.
        self.commit(tx, &[]).await
    }

    async fn usage(
        &self,
        scope: &Scope<perm::UsageRead>,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        select_usage(scope, filter)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?
            .iter()
            .map(|row| bucket_from_row(row, filter))
            .collect()
    }

    fn export_usage(
        &self,
        scope: &Scope<perm::UsageRead>,
        filter: &UsageFilter,
    ) -> BoxStream<'static, Result<UsageBucket, StoreError>> {
        let pool = self.pool.clone();
        let scope = scope.clone();
        let filter = filter.clone();
        Box::pin(async_stream::try_stream! {
            let mut query = select_usage(&scope, &filter);
            let mut rows = query.build().fetch(&pool);
            while let Some(row) = rows.try_next().await.map_err(store_error)? {
                yield bucket_from_row(&row, &filter)?;
            }
        })
    }

    async fn roll_up_usage(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let limit = limit.max(MINUTE_BUCKETS_PER_HOUR + 1);
        // Most calls find nothing to do: asked without a write transaction.
        let waiting: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM usage_minutes m, usage_rolled r
                            WHERE {NOT_ROLLED_UP} AND m.hour < $1)"
        ))
        .bind(before.unix())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        if !waiting {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        // Waits for the batches under way, and makes new ones wait until this one is done.
        Rolled::read(&mut tx, if SHARED_BY_NODES { " FOR UPDATE" } else { "" }).await?;
        let mut minutes = sqlx::query(&format!(
            "SELECT m.hour, m.credential_id, m.start, m.outcome, m.tenant_id, m.count
             FROM usage_minutes m, usage_rolled r
             WHERE {NOT_ROLLED_UP} AND m.hour < $1
             ORDER BY m.hour, m.credential_id LIMIT $2"
        ))
        .bind(before.unix())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| -> Result<Minute, StoreError> {
            let outcome: String = row.try_get("outcome").map_err(store_error)?;
            Ok(Minute {
                hour: row.try_get("hour").map_err(store_error)?,
                credential_id: row.try_get("credential_id").map_err(store_error)?,
                start: row.try_get("start").map_err(store_error)?,
                outcome: UsageOutcome::from_name(&outcome)
                    .ok_or_else(|| corrupt("usage outcome", &outcome))?,
                tenant_id: row.try_get("tenant_id").map_err(store_error)?,
                count: row.try_get("count").map_err(store_error)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        // A full chunk may end within a credential's hour: that hour waits for the next.
        if minutes.len() == limit as usize {
            let last = minutes.last().map(|m| (m.hour, m.credential_id.clone()));
            if let Some((hour, credential_id)) = last {
                minutes.retain(|m| m.hour != hour || m.credential_id != credential_id);
            }
        }
        let Some(last) = minutes.last() else {
            return Ok(0);
        };
        let living = living_tenants(&mut tx, minutes.iter().map(|m| m.tenant_id.as_str())).await?;
        for granularity in [Granularity::Hour, Granularity::Day] {
            let mut sums = Sums::new(granularity);
            for minute in minutes.iter().filter(|m| living.contains(&m.tenant_id)) {
                sums.add(
                    minute.start,
                    &minute.credential_id,
                    minute.outcome,
                    &minute.tenant_id,
                    minute.count,
                )?;
            }
            sums.write(&mut tx).await?;
        }
        sqlx::query("UPDATE usage_rolled SET hour = $1, credential_id = $2")
            .bind(last.hour)
            .bind(last.credential_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        self.commit(tx, &[]).await?;
        Ok(minutes.len() as u64)
    }

    async fn prune_usage(
        &self,
        granularity: Granularity,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let (table, key) = (usage_table(granularity), usage_key(granularity));
        // The key leads with the start (for minutes, with the hour): the oldest buckets are the
        // first of the key's index. Minutes not yet rolled up into their hours and days stay.
        let oldest = match granularity {
            Granularity::Minute => format!(
                "SELECT m.hour, m.credential_id, m.start, m.outcome
                 FROM usage_minutes m, usage_rolled r
                 WHERE m.hour < $1 AND m.start < $1 AND NOT ({NOT_ROLLED_UP})
                 ORDER BY m.hour LIMIT $2"
            ),
            Granularity::Hour | Granularity::Day => {
                format!("SELECT {key} FROM {table} WHERE start < $1 ORDER BY start LIMIT $2")
            }
        };
        sqlx::query(&format!("DELETE FROM {table} WHERE ({key}) IN ({oldest})"))
            .bind(before.unix())
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(store_error)
    }
}

/// A minute bucket as the roll-up reads it.
struct Minute {
    hour: i64,
    credential_id: String,
    start: i64,
    outcome: UsageOutcome,
    tenant_id: String,
    count: i64,
}

/// Writes each credential's latest use. Never moves a use back (another node may have written a
/// later one); within the same second, this batch's address wins. In id order, so two nodes
/// writing the same credentials lock them in the same order.
async fn set_last_uses(
    tx: &mut Transaction<'static, Db>,
    uses: &[LastUse],
) -> Result<(), StoreError> {
    // One row per credential, its latest use: an UPDATE … FROM takes any one of several.
    let mut latest: BTreeMap<&str, &LastUse> = BTreeMap::new();
    for used in uses {
        let entry = latest.entry(used.credential_id.as_str()).or_insert(used);
        if used.at >= entry.at {
            *entry = used;
        }
    }
    let latest: Vec<&LastUse> = latest.into_values().collect();
    set_last_used(tx, &latest).await
}

/// Adds counts to their minute buckets, and the late ones (at or before the roll-up's position)
/// to their hour and day buckets too, within the batch's transaction.
async fn add_counts(
    tx: &mut Transaction<'static, Db>,
    counts: &[&UsageCount],
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    // The position before the tenants, as the roll-up takes them: a batch waiting for the
    // roll-up then holds no tenant that a deletion the roll-up waits for would wait on.
    let rolled = Rolled::read(tx, if SHARED_BY_NODES { " FOR SHARE" } else { "" }).await?;
    let living = living_tenants(tx, counts.iter().map(|c| c.tenant_id.as_str())).await?;
    let [mut minutes, mut hours, mut days] = Granularity::ALL.map(Sums::new);
    for count in counts
        .iter()
        .filter(|c| living.contains(c.tenant_id.as_str()))
    {
        let added = i64::try_from(count.count)
            .map_err(|_| StoreError::Internal("a usage count beyond 2^63".into()))?;
        let (credential_id, tenant_id) = (count.credential_id.as_str(), count.tenant_id.as_str());
        let minute = count.minute.unix();
        minutes.add(minute, credential_id, count.outcome, tenant_id, added)?;
        if rolled.passed(usage_hour(minute), credential_id) {
            hours.add(minute, credential_id, count.outcome, tenant_id, added)?;
            days.add(minute, credential_id, count.outcome, tenant_id, added)?;
        }
    }
    for sums in [minutes, hours, days] {
        sums.write(tx).await?;
    }
    Ok(())
}

/// Which of `tenants` still exist. A tenant deleted since its credentials were counted took its
/// usage with it: its counts are dropped rather than refused, or a node would keep them and fail
/// again forever. On PostgreSQL the tenants found stay locked against deletion until the
/// transaction commits (usage rows have no foreign key there, migration 0018): a deletion waiting
/// for the lock deletes the rows added here after, and a writer waiting for a deletion's finds
/// its tenant gone.
async fn living_tenants<'a>(
    tx: &mut Transaction<'static, Db>,
    tenants: impl Iterator<Item = &'a str>,
) -> Result<HashSet<String>, StoreError> {
    let tenants: BTreeSet<&str> = tenants.collect();
    let tenants: Vec<&str> = tenants.into_iter().collect();
    let lock = if SHARED_BY_NODES {
        " ORDER BY id FOR KEY SHARE"
    } else {
        ""
    };
    let mut living = HashSet::new();
    for chunk in tenants.chunks(TENANTS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Db>::new("SELECT id FROM tenants WHERE id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")").push(lock);
        for row in query
            .build()
            .fetch_all(&mut **tx)
            .await
            .map_err(store_error)?
        {
            living.insert(row.try_get::<String, _>("id").map_err(store_error)?);
        }
    }
    Ok(living)
}

/// The buckets of a granularity whose credential's tenant lies in the scope's subtree, filtered,
/// summed over what the filter does not group by, ordered by start and then the grouped keys.
fn select_usage<'q>(
    scope: &'q Scope<perm::UsageRead>,
    filter: &'q UsageFilter,
) -> QueryBuilder<'q, Db> {
    let mut keys = vec!["u.start"];
    for (grouped, column) in [
        (filter.by_credential, "u.credential_id"),
        (filter.by_tenant, "u.tenant_id"),
        (filter.by_outcome, "u.outcome"),
    ] {
        if grouped {
            keys.push(column);
        }
    }
    let keys = keys.join(", ");
    let table = usage_table(filter.granularity);
    // Hours and days: the rows rolled up, and the minutes not yet.
    let buckets = match filter.granularity {
        Granularity::Minute => table.to_owned(),
        Granularity::Hour | Granularity::Day => {
            let start = if filter.granularity == Granularity::Hour {
                "m.hour"
            } else {
                "m.hour - m.hour % 86400"
            };
            format!(
                "(SELECT start, credential_id, tenant_id, outcome, count FROM {table}
                  UNION ALL
                  SELECT {start}, m.credential_id, m.tenant_id, m.outcome, m.count
                  FROM usage_minutes m, usage_rolled r WHERE {NOT_ROLLED_UP})"
            )
        }
    };
    // SUM of a BIGINT is a NUMERIC on PostgreSQL: cast back to what both backends decode.
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT {keys}, CAST(SUM(u.count) AS BIGINT) AS total
         FROM {buckets} u JOIN tenants t ON t.id = u.tenant_id, tenants s WHERE s.id = "
    ));
    query
        .push_bind(scope.tenant_id().as_str())
        .push(concat!(" AND ", in_subtree!("t", "s")));
    query
        .push(" AND u.start >= ")
        .push_bind(filter.since.unix());
    query.push(" AND u.start < ").push_bind(filter.until.unix());
    and_in!(query, "u.credential_id", &filter.credential_ids);
    and_in!(query, "u.tenant_id", &filter.tenant_ids);
    query.push(format_args!(" GROUP BY {keys} ORDER BY {keys}"));
    query
}

fn bucket_from_row(row: &DbRow, filter: &UsageFilter) -> Result<UsageBucket, StoreError> {
    let text = |grouped: bool, column: &str| -> Result<Option<String>, StoreError> {
        if grouped {
            row.try_get(column).map(Some).map_err(store_error)
        } else {
            Ok(None)
        }
    };
    let outcome = match text(filter.by_outcome, "outcome")? {
        Some(name) => {
            Some(UsageOutcome::from_name(&name).ok_or_else(|| corrupt("usage outcome", &name))?)
        }
        None => None,
    };
    let total: i64 = row.try_get("total").map_err(store_error)?;
    Ok(UsageBucket {
        start: timestamp(row, "start")?,
        credential_id: text(filter.by_credential, "credential_id")?,
        tenant_id: text(filter.by_tenant, "tenant_id")?,
        outcome,
        count: u64::try_from(total).map_err(|_| corrupt("usage count", &total.to_string()))?,
    })
}
