//! The audit log: listing and exporting events in a scope, writing refusals, pruning old events;
//! and when credentials were last used, written in batches off the request path.

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use keygate_core::Timestamp;
use keygate_core::access::{Scope, perm};
use keygate_core::model::{AuditEvent, Outcome, StoredEvent};
use keygate_core::store::{AuditStore, EventFilter, Page, Paged, StoreError};
use sqlx::{QueryBuilder, Row};

use super::shared::{corrupt, insert_events_counted, paged, timestamp};
use super::{Db, DbRow, SqlStore, store_error};

#[async_trait]
impl AuditStore for SqlStore {
    async fn list_events(
        &self,
        scope: &Scope<perm::AuditRead>,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Paged<StoredEvent>, StoreError> {
        let mut query = select_events(scope, filter, page.cursor.as_deref(), &page.ids);
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
        scope: &Scope<perm::AuditRead>,
        filter: &EventFilter,
    ) -> BoxStream<'static, Result<StoredEvent, StoreError>> {
        let pool = self.pool.clone();
        let scope = scope.clone();
        let filter = filter.clone();
        Box::pin(async_stream::try_stream! {
            let mut query = select_events(&scope, &filter, None, &[]);
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
        let events: Vec<(&AuditEvent, u32)> = events.iter().map(|(e, n)| (e, *n)).collect();
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        insert_events_counted(&mut tx, &events).await?;
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
}

/// `SELECT * FROM audit_events` for a scope and filter, newest first, from `cursor` on.
fn select_events<'q>(
    scope: &'q Scope<perm::AuditRead>,
    filter: &'q EventFilter,
    cursor: Option<&'q str>,
    ids: &'q [String],
) -> QueryBuilder<'q, Db> {
    let mut query =
        QueryBuilder::<Db>::new("SELECT e.* FROM audit_events e, tenants s WHERE s.id = ");
    query.push_bind(scope.tenant_id().as_str()).push(concat!(
        " AND e.scope_path >= s.path",
        " AND e.scope_path < substr(s.path, 1, length(s.path) - 1) || '0'"
    ));
    for (column, values) in [
        ("e.token_id", &filter.token_ids),
        ("e.action", &filter.actions),
        ("e.actor_id", &filter.actor_ids),
    ] {
        and_in!(query, column, values);
    }
    and_in!(query, "e.outcome", &filter.outcomes);
    and_in!(query, "e.id", ids);
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

fn event_from_row(row: &DbRow) -> Result<StoredEvent, StoreError> {
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
        detail: row
            .try_get::<Option<String>, _>("detail")
            .map_err(store_error)?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}
