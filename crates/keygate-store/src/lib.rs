//! keygate's storage: the traits of [`keygate_core::store`] implemented per database.
//!
//! The SQL is written once, one file per resource in `sql/`, and compiled into each backend
//! (`sqlite.rs`, `postgres.rs`), which adds what differs: connecting, transactions, change
//! notification and error mapping. Migrations live in one folder per backend
//! (`migrations/<backend>`), embedded in the binary and run when the store is opened. Which backend
//! is used follows from the database URL's scheme.

use std::sync::Arc;
use std::time::Duration;

use keygate_core::store::{ChangeListener, CredentialSource, Granularity, Store};

mod postgres;
mod sqlite;

pub use postgres::{CHANNEL, HEARTBEAT, PgStore, SILENCE_LIMIT};
pub use sqlite::SqliteStore;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before the store counts as unavailable.
    pub acquire_timeout: Duration,
    /// How long SQLite waits on a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// The longest a PostgreSQL statement may run before it is cancelled.
    pub statement_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL scheme `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedScheme(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("cannot apply the database migrations: {0}")]
    Migrate(String),
}

/// An opened store, before it is handed out: as a [`Store`] to whatever serves the management
/// API, and as a [`CredentialSource`] to the verifier alone (an `Arc<dyn Backend>` coerces to
/// either). Keeping the two apart keeps the unscoped reads, a credential by its hash above all,
/// away from handlers.
pub trait Backend: Store + CredentialSource {}

impl<T: Store + CredentialSource> Backend for T {}

/// Opens the store named by `url` and brings its schema up to date.
pub async fn open(
    url: &str,
    options: &StoreOptions,
    listener: Arc<dyn ChangeListener>,
) -> Result<Arc<dyn Backend>, OpenError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::open(url, options, listener).await?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = PgStore::open(url, options, listener).await?;
        return Ok(Arc::new(store));
    }
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    Err(OpenError::UnsupportedScheme(scheme.to_owned()))
}

/// The table holding the usage buckets of one size.
fn usage_table(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "usage_minutes",
        Granularity::Hour => "usage_hours",
        Granularity::Day => "usage_days",
    }
}

/// The key of a usage table, its columns in order. Minutes are keyed by their hour first
/// (migration `usage_rolled_up`): the roll-up reads an hour credential by credential. Their
/// `hour` is written with them, the start's hour.
fn usage_key(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "hour, credential_id, start, outcome",
        Granularity::Hour | Granularity::Day => "start, credential_id, outcome",
    }
}

/// The start of the hour a usage bucket starting at `start` (unix seconds) falls in: the minute
/// table's `hour`.
fn usage_hour(start: i64) -> i64 {
    Granularity::Hour
        .bucket(keygate_core::Timestamp::from_unix(start))
        .unix()
}

/// What a usage batch or the roll-up adds to one bucket (`sql/usage.rs`), in the order of the
/// bucket table's key. Each backend writes a batch of them its own way (`add_to_buckets`).
struct BucketAddition<'a> {
    start: i64,
    credential_id: &'a str,
    outcome: &'static str,
    /// The credential's tenant: usage rows go with it.
    tenant_id: &'a str,
    count: i64,
}

/// Which unique value a violated constraint or index protects, from its name or message.
fn unique_field(name: &str) -> &'static str {
    if name.contains("slug") {
        "slug"
    } else if name.contains("email") {
        "email"
    } else if name.contains("name") {
        "name"
    } else {
        "value"
    }
}

#[cfg(test)]
mod tests;
