//! The PostgreSQL store: for several keygate nodes sharing one database.
//!
//! Coherence across nodes: every write transaction that changes something verification depends on
//! also sends `pg_notify('keygate_changes', …)`, which PostgreSQL delivers only if, and as soon as,
//! the transaction commits. Each node listens on its own connection and drops the affected cache
//! entries, so a revocation on one node is seen by the others within milliseconds, not after a TTL.
//!
//! A notification channel can break without anyone saying so. Each node therefore sends itself a
//! heartbeat through the same channel every [`HEARTBEAT`]; if nothing at all arrives for
//! [`SILENCE_LIMIT`], or the connection reports an error, the node stops trusting its cache (every
//! verification goes to the database) until it has listened again, and then starts from an empty
//! cache, since notifications sent meanwhile are lost. A node thus serves a stale cache entry for
//! at most [`SILENCE_LIMIT`] after its channel silently dies.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use keygate_core::store::{Change, ChangeListener, Granularity, LastUse, StoreError};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use crate::{BucketAddition, OpenError, StoreOptions, unique_field, usage_key, usage_table};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel changes travel on.
pub const CHANNEL: &str = "keygate_changes";
/// How often a node checks its own channel.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// How long a pooled connection may sit idle before it is checked when taken.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// How long a silent channel is trusted.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(1);
const HEARTBEAT_MESSAGE: &str = "heartbeat";
/// Rows per statement of a usage batch. Its columns are bound as arrays, five binds whatever the
/// count, so what bounds a statement is its time: a thousand rows take about ten milliseconds,
/// far inside the `statement_timeout`, even in the batch of a node that could not write for a
/// while. Larger statements gained little (5 000: 1.9 s for the batch below, against 2.0 s).
const USAGE_ROWS_PER_STATEMENT: usize = 1000;

pub struct PgStore {
    pool: PgPool,
    listener: Arc<dyn ChangeListener>,
    watcher: tokio::task::JoinHandle<()>,
    /// Tags this node's notifications, so it skips its own (it applied them at commit).
    node: Arc<str>,
}

impl PgStore {
    pub async fn open(
        url: &str,
        options: &StoreOptions,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Self, OpenError> {
        let statement_timeout = format!("{}", options.statement_timeout.as_millis());
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| OpenError::InvalidUrl(e.to_string()))?
            .application_name("keygate")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection it takes from the pool: a round trip before each
            // statement, doubling a cache miss's. A connection in steady use has just answered;
            // one that sat idle may have been cut (a restart, a middlebox), so only that one is
            // checked, and dropped if it does not answer.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < IDLE_BEFORE_PING {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        // The migrator holds an advisory lock, so nodes starting together migrate once.
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;
        let mut node = String::new();
        keygate_core::base62::push_random(&mut node, 12)
            .map_err(|e| OpenError::Connect(format!("no randomness for a node id: {e}")))?;
        let node: Arc<str> = node.into();
        let watcher = tokio::spawn(watch(pool.clone(), listener.clone(), node.clone()));
        Ok(Self {
            pool,
            listener,
            watcher,
            node,
        })
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    /// Announces the changes to every node (delivered at commit), commits, then applies them
    /// here at once rather than waiting for the notification to come back.
    async fn commit(
        &self,
        mut tx: Transaction<'static, Postgres>,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        // One statement for all of them: a bulk revocation names up to 500 credentials, and a
        // statement each was a round trip each inside the transaction.
        if !changes.is_empty() {
            let messages: Vec<String> = changes
                .iter()
                .map(|change| format!("{} {}", self.node, change.to_message()))
                .collect();
            sqlx::query("SELECT pg_notify($1, message) FROM unnest($2::text[]) AS message")
                .bind(CHANNEL)
                .bind(&messages)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        self.listener.changed_all(changes);
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

// The SQL both backends share (`sql/`), compiled for PostgreSQL: its files name the database,
// its rows and the store by these aliases. The other backend includes the same files (hence
// the allowed `duplicate_mod`): written once, compiled twice.
type Db = Postgres;
type DbRow = PgRow;
type SqlStore = PgStore;
/// Several nodes may share the database: counts that must hold across them live in it.
const SHARED_BY_NODES: bool = true;
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

/// Adds a usage batch's rows to the bucket table of `granularity`, in the rows' order, which is
/// the key's. The rows go as one array per column, unnested: five parameters for a thousand rows,
/// where a `VALUES` list has five a row, each bound, parsed and planned (`bench/cold-verify` on
/// PostgreSQL shows what a batch's writes cost the misses around it).
async fn add_to_buckets(
    tx: &mut Transaction<'static, Postgres>,
    granularity: Granularity,
    rows: &[BucketAddition<'_>],
) -> Result<(), StoreError> {
    let (table, key) = (usage_table(granularity), usage_key(granularity));
    let (hour, of_start) = match granularity {
        Granularity::Minute => ("hour, ", "start - start % 3600, "),
        Granularity::Hour | Granularity::Day => ("", ""),
    };
    let statement = format!(
        "INSERT INTO {table} ({hour}start, credential_id, outcome, tenant_id, count)
         SELECT {of_start}start, credential_id, outcome, tenant_id, count
         FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])
              WITH ORDINALITY AS added (start, credential_id, outcome, tenant_id, count, n)
         ORDER BY n
         ON CONFLICT ({key}) DO UPDATE SET count = {table}.count + excluded.count"
    );
    for chunk in rows.chunks(USAGE_ROWS_PER_STATEMENT) {
        sqlx::query(&statement)
            .bind(column(chunk, |added| added.start))
            .bind(column(chunk, |added| added.credential_id))
            .bind(column(chunk, |added| added.outcome))
            .bind(column(chunk, |added| added.tenant_id))
            .bind(column(chunk, |added| added.count))
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Writes the latest use of each credential (one each, in id order) where it is later than the
/// stored one, as arrays like [`add_to_buckets`]. Among many credentials, PostgreSQL finds a
/// thousand ids through the primary key one after the other, in the arrays' order, so two nodes
/// lock the rows they share in the same order; a small table it may read whole instead, in its
/// own order, the same for both. Should two nodes still lock in opposite orders, PostgreSQL
/// fails one batch, which that node writes with its next.
async fn set_last_used(
    tx: &mut Transaction<'static, Postgres>,
    uses: &[&LastUse],
) -> Result<(), StoreError> {
    for chunk in uses.chunks(USAGE_ROWS_PER_STATEMENT) {
        sqlx::query(
            "UPDATE credentials SET last_used_at = used.at,
                 last_used_ip = coalesce(used.ip, credentials.last_used_ip)
             FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[]) AS used (id, at, ip)
             WHERE credentials.id = used.id
               AND (credentials.last_used_at IS NULL OR credentials.last_used_at <= used.at)",
        )
        .bind(column(chunk, |used| used.credential_id.as_str()))
        .bind(column(chunk, |used| used.at.unix()))
        .bind(column(chunk, |used| used.ip.map(|ip| ip.to_string())))
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    }
    Ok(())
}

/// One column of a usage batch's rows, as the array a statement unnests.
fn column<'a, R, T>(rows: &'a [R], field: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// Listens for other nodes' changes for as long as the store lives, reconnecting as needed.
async fn watch(pool: PgPool, cache: Arc<dyn ChangeListener>, node: Arc<str>) {
    let mut healthy_before = true;
    loop {
        match listen(&pool, &cache, &node).await {
            Ok(()) => {}
            Err(error) => {
                if healthy_before {
                    tracing::warn!(%error, "lost the change channel; verifying against the database until it is back");
                }
            }
        }
        cache.may_have_missed_changes();
        healthy_before = false;
        tokio::time::sleep(HEARTBEAT).await;
        if pool.is_closed() {
            return;
        }
    }
}

/// One listening session: returns when the channel fails or goes silent.
async fn listen(
    pool: &PgPool,
    cache: &Arc<dyn ChangeListener>,
    node: &str,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    // Listening again: whatever was cached may have missed changes sent while we were away.
    cache.resynced();
    tracing::info!("listening for changes from other nodes");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            received = listener.try_recv() => match received? {
                Some(notification) => {
                    last_heard = tokio::time::Instant::now();
                    // With those already received behind it (another node's bulk revocation
                    // arrives as one notification per credential): applied together, in one
                    // pass over the cache rather than one each.
                    let mut changes = Vec::new();
                    let mut understood = true;
                    for notification in std::iter::once(notification)
                        .chain(std::iter::from_fn(|| listener.next_buffered()))
                    {
                        match notification.payload().split_once(' ') {
                            Some((from, _)) if from == node => {}
                            Some((_, message)) => match Change::from_message(message) {
                                Some(change) => changes.push(change),
                                None => understood = false,
                            },
                            None => {} // a heartbeat
                        }
                    }
                    if understood {
                        cache.changed_all(&changes);
                    } else {
                        // Unknown news: the safe reading is that anything may have changed.
                        cache.resynced();
                    }
                }
                None => return Err(sqlx::Error::Protocol("the listening connection closed".into())),
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err(sqlx::Error::Protocol("the change channel went silent".into()));
                }
                // Sent through the pool, received on the listening connection: proves both ends.
                let _ = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(HEARTBEAT_MESSAGE)
                    .execute(pool)
                    .await;
            }
        }
    }
}

/// Maps a driver error: a taken unique value names what it protects, anything that says the
/// database is unreachable, overloaded, shutting down or timed out is `Unavailable` (the client may
/// retry), anything else is internal.
fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::AlreadyExists(unique_field(db.constraint().unwrap_or(db.message())))
        }
        sqlx::Error::Database(db) => {
            // SQLSTATE classes: 08 connection, 53 resources, 57 operator intervention (shutdown,
            // statement timeout); 40001/40P01 serialization failure and deadlock; 25006 read-only.
            let code = db.code().unwrap_or_default();
            let transient = ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || matches!(code.as_ref(), "40001" | "40P01" | "25006");
            if transient {
                StoreError::Unavailable(error.to_string())
            } else {
                StoreError::Internal(error.to_string())
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}
