//! The zones and their subnets in SQLite.
//!
//! Every query that reads or changes a zone names the tenant, so one tenant's request can never
//! reach another's zone whatever ids it sends. The one cross-tenant fact the store answers is
//! whether a subnet is already in use somewhere, which the platform must enforce.
//!
//! Timestamps are written by SQLite (`strftime(…, 'now')`), so the example never reads the clock.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

use crate::Error;

/// Tables are created if missing; there is no migration history, since the example's schema has
/// only ever had one shape.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS zones (
    -- AUTOINCREMENT: an id is never reused, so a URL never comes to mean another zone.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS zones_by_tenant ON zones (tenant_id, id);
CREATE TABLE IF NOT EXISTS subnets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    zone_id INTEGER NOT NULL REFERENCES zones (id),
    -- Canonical text (see subnet.rs), so equal subnets are equal strings: unique platform-wide.
    subnet TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX IF NOT EXISTS subnets_by_zone ON subnets (zone_id, id);
";

/// A zone's columns, as selected from `zones z`; the count is a range of `subnets_by_zone`.
macro_rules! zone_columns {
    () => {
        "z.id, z.name, z.created_at, \
         (SELECT count(*) FROM subnets s WHERE s.zone_id = z.id) AS subnet_count"
    };
}

/// A subnet's columns, in the order of [`Subnet`].
macro_rules! subnet_columns {
    () => {
        "id, zone_id, subnet, description, created_at"
    };
}

/// A zone as the API answers it.
#[derive(Debug, Serialize, FromRow)]
pub(crate) struct Zone {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub subnet_count: i64,
}

/// A subnet as the API answers it.
#[derive(Debug, Serialize, FromRow)]
pub(crate) struct Subnet {
    pub id: i64,
    pub zone_id: i64,
    pub subnet: String,
    pub description: Option<String>,
    pub created_at: String,
}

/// A subnet to add, already checked and in canonical form.
pub(crate) struct NewSubnet {
    pub subnet: String,
    pub description: Option<String>,
}

/// What became of a request to add subnets.
pub(crate) enum AddOutcome {
    Added(Vec<Subnet>),
    /// The zone is not the tenant's (or does not exist).
    NoZone,
    /// The `index`th subnet is already in a zone: `own_zone` names it if it is the tenant's own.
    Clash {
        index: usize,
        own_zone: Option<i64>,
    },
}

pub(crate) async fn open(url: &str) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::from_str(url).map_err(|source| Error::DatabaseUrl {
        url: url.to_owned(),
        source,
    })?;
    let options = options
        .create_if_missing(true)
        .foreign_keys(true)
        // Writers queue for the lock instead of failing while another transaction commits.
        .busy_timeout(Duration::from_secs(5));
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let (pool, options) = if in_memory {
        // An in-memory database lives only while a connection to it is open, and each connection
        // would otherwise see its own: keep exactly one, for good.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        (pool, options)
    } else {
        let file = options.get_filename();
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        // WAL: readers (the benchmark's GET /zones/{id}) never wait for a writer. NORMAL
        // synchronisation is durable enough with WAL and spares an fsync per commit.
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        (SqlitePoolOptions::new().max_connections(4), options)
    };
    let pool = pool.connect_with(options).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    Ok(pool)
}

pub(crate) async fn list_zones(pool: &SqlitePool, tenant: &str) -> sqlx::Result<Vec<Zone>> {
    sqlx::query_as(concat!(
        "SELECT ",
        zone_columns!(),
        " FROM zones z WHERE z.tenant_id = ?1 ORDER BY z.id"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// One statement, a primary-key lookup (sqlx keeps it prepared per connection): this is the
/// benchmark's upstream request.
pub(crate) async fn zone(pool: &SqlitePool, tenant: &str, id: i64) -> sqlx::Result<Option<Zone>> {
    sqlx::query_as(concat!(
        "SELECT ",
        zone_columns!(),
        " FROM zones z WHERE z.id = ?1 AND z.tenant_id = ?2"
    ))
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

pub(crate) async fn create_zone(pool: &SqlitePool, tenant: &str, name: &str) -> sqlx::Result<Zone> {
    sqlx::query_as(
        "INSERT INTO zones (tenant_id, name) VALUES (?1, ?2) \
         RETURNING id, name, created_at, 0 AS subnet_count",
    )
    .bind(tenant)
    .bind(name)
    .fetch_one(pool)
    .await
}

async fn zone_is_tenants(
    connection: &mut sqlx::SqliteConnection,
    tenant: &str,
    id: i64,
) -> sqlx::Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM zones WHERE id = ?1 AND tenant_id = ?2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(connection)
            .await?;
    Ok(found.is_some())
}

/// The zone's subnets, or `None` if the zone is not the tenant's.
pub(crate) async fn list_subnets(
    pool: &SqlitePool,
    tenant: &str,
    zone_id: i64,
) -> sqlx::Result<Option<Vec<Subnet>>> {
    let mut connection = pool.acquire().await?;
    if !zone_is_tenants(&mut connection, tenant, zone_id).await? {
        return Ok(None);
    }
    // Zones are never deleted, so the zone cannot vanish between the two reads.
    let subnets = sqlx::query_as(concat!(
        "SELECT ",
        subnet_columns!(),
        " FROM subnets WHERE zone_id = ?1 ORDER BY id"
    ))
    .bind(zone_id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(Some(subnets))
}

/// Adds all of `subnets` to the zone, or none of them.
pub(crate) async fn add_subnets(
    pool: &SqlitePool,
    tenant: &str,
    zone_id: i64,
    subnets: &[NewSubnet],
) -> sqlx::Result<AddOutcome> {
    // IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    // can fail outright (SQLITE_BUSY) when another writer commits in between.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if !zone_is_tenants(&mut tx, tenant, zone_id).await? {
        return Ok(AddOutcome::NoZone);
    }
    let mut added = Vec::with_capacity(subnets.len());
    for (index, new) in subnets.iter().enumerate() {
        let inserted = sqlx::query_as(concat!(
            "INSERT INTO subnets (zone_id, subnet, description) VALUES (?1, ?2, ?3) RETURNING ",
            subnet_columns!()
        ))
        .bind(zone_id)
        .bind(&new.subnet)
        .bind(&new.description)
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(subnet) => added.push(subnet),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                // The failed statement alone was undone; dropping `tx` undoes the rest.
                let (owner_zone, owner_is_tenant): (i64, bool) = sqlx::query_as(
                    "SELECT z.id, z.tenant_id = ?2 FROM subnets s JOIN zones z ON z.id = s.zone_id \
                     WHERE s.subnet = ?1",
                )
                .bind(&new.subnet)
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
                let own_zone = owner_is_tenant.then_some(owner_zone);
                return Ok(AddOutcome::Clash { index, own_zone });
            }
            Err(error) => return Err(error),
        }
    }
    tx.commit().await?;
    Ok(AddOutcome::Added(added))
}

/// Deletes the subnet if it is in that zone of that tenant; says whether it did.
pub(crate) async fn delete_subnet(
    pool: &SqlitePool,
    tenant: &str,
    zone_id: i64,
    subnet_id: i64,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query(
        "DELETE FROM subnets WHERE id = ?1 AND zone_id = ?2 \
         AND EXISTS (SELECT 1 FROM zones WHERE id = ?2 AND tenant_id = ?3)",
    )
    .bind(subnet_id)
    .bind(zone_id)
    .bind(tenant)
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected() > 0)
}
