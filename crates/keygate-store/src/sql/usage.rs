//! Usage: the counts nodes add every few seconds, summed per credential, bucket and outcome in one
//! table per bucket size (migration 0011), and read back summed over whatever a read does not
//! group by, within a scope's subtree.
//!
//! Every write adds (`count = count + excluded.count`) and never sets: several nodes add to the
//! same bucket, and only the sum is exact. Rows are written in key order, so two nodes adding to
//! the same buckets take their locks in the same order. A count of nothing is never written, so a
//! read never returns an empty bucket.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use keygate_core::Timestamp;
use keygate_core::access::{Scope, perm};
use keygate_core::store::{
    Granularity, LastUse, StoreError, UsageBucket, UsageCount, UsageFilter, UsageOutcome,
    UsageStore,
};
use sqlx::{QueryBuilder, Row, Transaction};

use super::shared::{corrupt, timestamp};
use super::{
    BucketAddition, Db, DbRow, SHARED_BY_NODES, SqlStore, add_to_buckets, set_last_used,
    store_error,
};

/// Tenants a statement asks after: one bind each, far below what either database allows.
const TENANTS_PER_STATEMENT: usize = 200;

/// The table holding the buckets of one size.
fn table(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "usage_minutes",
        Granularity::Hour => "usage_hours",
        Granularity::Day => "usage_days",
    }
}

/// A bucket's key, in the order of the table's primary key: start, credential, outcome.
type Key<'a> = (i64, &'a str, &'static str);

/// What is added to one bucket: the credential's tenant, and the sum.
type Addition<'a> = (&'a str, i64);

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

    async fn prune_usage(
        &self,
        granularity: Granularity,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let table = table(granularity);
        // The key leads with the start: the oldest buckets are the first of the key's index.
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE (start, credential_id, outcome) IN
                 (SELECT start, credential_id, outcome FROM {table}
                  WHERE start < $1 ORDER BY start LIMIT $2)"
        ))
        .bind(before.unix())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(store_error)
    }
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

/// Adds counts to their minute, hour and day buckets, within the batch's transaction.
async fn add_counts(
    tx: &mut Transaction<'static, Db>,
    counts: &[&UsageCount],
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    // A tenant deleted since its credentials were counted took its usage with it: its counts
    // are dropped rather than refused, or the node would keep them and fail again forever. On
    // PostgreSQL the tenants found stay locked against deletion until the batch commits (usage
    // rows have no foreign key there, migration 0018): a deletion waiting for the lock deletes
    // the rows added here after, and a batch waiting for a deletion's finds its tenant gone.
    let tenants: BTreeSet<&str> = counts.iter().map(|c| c.tenant_id.as_str()).collect();
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

    for granularity in Granularity::ALL {
        // Summed here first: one statement may not touch a row twice (PostgreSQL refuses), and
        // the minutes of one hour all land in the same hour bucket.
        let mut buckets: BTreeMap<Key, Addition> = BTreeMap::new();
        for count in counts
            .iter()
            .filter(|c| living.contains(c.tenant_id.as_str()))
        {
            let added = i64::try_from(count.count)
                .map_err(|_| StoreError::Internal("a usage count beyond 2^63".into()))?;
            let key = (
                granularity.bucket(count.minute).unix(),
                count.credential_id.as_str(),
                count.outcome.as_str(),
            );
            let bucket = buckets.entry(key).or_insert((count.tenant_id.as_str(), 0));
            bucket.1 = bucket
                .1
                .checked_add(added)
                .ok_or_else(|| StoreError::Internal("a usage bucket's sum beyond 2^63".into()))?;
        }
        let rows: Vec<BucketAddition> = buckets
            .into_iter()
            .map(
                |((start, credential_id, outcome), (tenant_id, count))| BucketAddition {
                    start,
                    credential_id,
                    outcome,
                    tenant_id,
                    count,
                },
            )
            .collect();
        add_to_buckets(tx, table(granularity), &rows).await?;
    }
    Ok(())
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
    let table = table(filter.granularity);
    // SUM of a BIGINT is a NUMERIC on PostgreSQL: cast back to what both backends decode.
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT {keys}, CAST(SUM(u.count) AS BIGINT) AS total
         FROM {table} u JOIN tenants t ON t.id = u.tenant_id, tenants s WHERE s.id = "
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
