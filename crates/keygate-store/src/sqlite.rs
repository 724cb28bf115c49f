//! The SQLite store: the embedded default, one file beside the binary.
//!
//! WAL mode so readers never wait for the writer; foreign keys on (SQLite has them off by
//! default); a busy timeout so concurrent writers queue instead of failing. Write transactions
//! start with `BEGIN IMMEDIATE`, which takes the write lock up front: a deferred transaction that
//! reads and then writes can fail with SQLITE_BUSY when another writer committed in between.

use std::str::FromStr;
use std::sync::Arc;

use keygate_core::store::{Change, ChangeListener, Granularity, LastUse, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use crate::{
    BucketAddition, OpenError, StoreOptions, unique_field, usage_hour, usage_key, usage_table,
};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows a query may hand over before the task reading them takes any.
const ROW_BUFFER: usize = 1024;
/// Rows per statement of a usage batch: five binds each, far below the 32 766 SQLite allows in
/// one statement, and few enough statements for a node's batch of a few seconds.
const USAGE_ROWS_PER_STATEMENT: usize = 200;

pub struct SqliteStore {
    pool: SqlitePool,
    listener: Arc<dyn ChangeListener>,
}

/// Opens the pool and applies the migrations the store lacks. Processes opening one file at
/// once (nodes started together, a restart overlapping the process it replaces) each do both,
/// and SQLite takes their writes in turn: a new file's switch to WAL can find it busy, and the
/// later migration fails on what the earlier made ("table … already exists"; sqlx locks
/// migrations on PostgreSQL only). Each migration is its own transaction, so a failed one left
/// nothing behind: tried again, the migrator reads what is applied now and goes on. What fails
/// for another reason fails every time, and is reported.
async fn open_pool(
    pool: SqlitePoolOptions,
    connect: SqliteConnectOptions,
) -> Result<SqlitePool, OpenError> {
    use sqlx::migrate::MigrateError;
    const TRIES: u32 = 5;
    let busy = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|e| e.code())
            .and_then(|code| code.parse::<i32>().ok())
            // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    };
    let mut tried = 1;
    loop {
        match pool.clone().connect_with(connect.clone()).await {
            Ok(opened) => match MIGRATOR.run(&opened).await {
                Ok(()) => return Ok(opened),
                Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                    if tried < TRIES =>
                {
                    opened.close().await;
                }
                Err(e) => return Err(OpenError::Migrate(e.to_string())),
            },
            Err(e) if busy(&e) && tried < TRIES => {}
            Err(e) => return Err(OpenError::Connect(e.to_string())),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(tried))).await;
        tried += 1;
    }
}

impl SqliteStore {
    pub async fn open(
        url: &str,
        options: &StoreOptions,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Self, OpenError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            // Rows cross from SQLite's thread to the request's task through a channel; sqlx's 50
            // makes a read of a thousand rows (30 days of a credential's usage by hour) wait on it
            // twenty times.
            .row_buffer_size(ROW_BUFFER);
        if let Some(dir) = connect
            .get_filename()
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Connect(format!("cannot create {}: {e}", dir.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection it takes from the pool, a trip to the connection's
            // thread before each statement; a connection to a local file does not go stale.
            .test_before_acquire(false);
        let pool = open_pool(pool, connect).await?;
        Ok(Self { pool, listener })
    }

    /// The journal mode, whether foreign keys are enforced, and whether query plans are kept
    /// independent of bound values (the build's `SQLITE_ENABLE_QPSG`, see `.cargo/config.toml`),
    /// as SQLite reports them.
    pub async fn pragmas(&self) -> Result<(String, bool, bool), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(store_error)?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(store_error)?;
        let foreign_keys: bool = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .map_err(store_error)?;
        let stable_plans: bool =
            sqlx::query_scalar("SELECT sqlite_compileoption_used('ENABLE_QPSG')")
                .fetch_one(&mut *conn)
                .await
                .map_err(store_error)?;
        Ok((mode, foreign_keys, stable_plans))
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }

    /// Commits, then tells the listener what changed: after the commit, so a reader that misses the
    /// cache right after the notification reads the new state.
    async fn commit(
        &self,
        tx: Transaction<'static, Sqlite>,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        tx.commit().await.map_err(store_error)?;
        self.listener.changed_all(changes);
        Ok(())
    }
}

// The SQL both backends share (`sql/`), compiled for SQLite: its files name the database,
// its rows and the store by these aliases. The other backend includes the same files (hence
// the allowed `duplicate_mod`): written once, compiled twice.
type Db = Sqlite;
type DbRow = SqliteRow;
type SqlStore = SqliteStore;
/// One node's file: counts kept in memory are exact, none is shared.
const SHARED_BY_NODES: bool = false;
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

/// Adds a usage batch's rows to the bucket table of `granularity`, in the rows' order, which is
/// the key's.
async fn add_to_buckets(
    tx: &mut Transaction<'static, Sqlite>,
    granularity: Granularity,
    rows: &[BucketAddition<'_>],
) -> Result<(), StoreError> {
    let (table, key) = (usage_table(granularity), usage_key(granularity));
    let minutes = granularity == Granularity::Minute;
    let hour = if minutes { "hour, " } else { "" };
    for chunk in rows.chunks(USAGE_ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO {table} ({hour}start, credential_id, outcome, tenant_id, count) "
        ));
        query.push_values(chunk, |mut row, added| {
            if minutes {
                row.push_bind(usage_hour(added.start));
            }
            row.push_bind(added.start)
                .push_bind(added.credential_id)
                .push_bind(added.outcome)
                .push_bind(added.tenant_id)
                .push_bind(added.count);
        });
        query.push(format_args!(
            " ON CONFLICT ({key}) DO UPDATE SET count = {table}.count + excluded.count"
        ));
        query
            .build()
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Writes the latest use of each credential (one each, in id order) where it is later than the
/// stored one.
async fn set_last_used(
    tx: &mut Transaction<'static, Sqlite>,
    uses: &[&LastUse],
) -> Result<(), StoreError> {
    for chunk in uses.chunks(USAGE_ROWS_PER_STATEMENT) {
        // VALUES names its columns column1, column2, ….
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE credentials SET last_used_at = v.column2,
                 last_used_ip = coalesce(v.column3, credentials.last_used_ip) FROM (",
        );
        query.push_values(chunk, |mut row, used| {
            row.push_bind(used.credential_id.as_str())
                .push_bind(used.at.unix())
                .push_bind(used.ip.map(|ip| ip.to_string()));
        });
        query.push(
            ") AS v WHERE credentials.id = v.column1
                 AND (credentials.last_used_at IS NULL OR credentials.last_used_at <= v.column2)",
        );
        query
            .build()
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Maps a driver error: a taken unique value names its column, an unreachable or locked database
/// is `Unavailable` (the client may retry), anything else is internal.
fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        // SQLite names the columns: "UNIQUE constraint failed: tenants.slug".
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::AlreadyExists(unique_field(db.message()))
        }
        sqlx::Error::Database(db) => {
            // Primary result codes: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, FULL 13,
            // CANTOPEN 14. Extended codes keep the primary code in their low byte.
            let code = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match code {
                Some(5 | 6 | 7 | 8 | 10 | 13 | 14) => StoreError::Unavailable(error.to_string()),
                _ => StoreError::Internal(error.to_string()),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}
