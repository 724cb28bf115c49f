//! An example upstream API for keygate's gateway: the zones of a DDoS mitigation portal, each
//! holding the subnets a customer wants protected.
//!
//! keygate's tests start it in-process ([`Zones::open`], [`Zones::router`], [`serve`]) and proxy to
//! it; the `zones` binary runs it on its own, for the walk-through in the README.
//!
//! # Trust model
//!
//! The example never sees a credential: keygate checks the `Authorization` header and forwards who
//! the caller is in `X-Keygate-*` headers. The example believes those headers without question,
//! which is only sound because nothing but keygate can reach it. So it must never listen on
//! anything but a loopback address (the binary refuses to), and it must never be given a
//! credential to check or a way to reach keygate's store.
//!
//! # Tenants
//!
//! A request belongs to the tenant in `X-Keygate-Acting-Tenant-Id`, or, when that header is absent,
//! to the one in `X-Keygate-Tenant-Id`. The acting tenant wins because a reseller acting for a
//! sub-customer (keygate's `as-tenant`) creates and manages the sub-customer's zones, not its own.
//! A request with neither header did not come through keygate and is refused with 401.
//!
//! A zone is visible to its tenant only: another tenant's zone answers 404, never 403, so a
//! caller cannot learn which zone ids exist. Subnets are the one thing shared across tenants: a
//! subnet may be in one zone of the whole platform only, and a clash with another tenant's subnet
//! says "already in use on the platform" without naming that zone or tenant.

mod api;
mod problem;
mod store;
mod subnet;

use std::future::Future;
use std::path::PathBuf;

use sqlx::SqlitePool;

/// Why [`Zones::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL is not one SQLite understands.
    #[error("invalid database URL {url:?} (expected sqlite://PATH or sqlite::memory:): {source}")]
    DatabaseUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        source: sqlx::Error,
    },
    /// The directory for the database file could not be created.
    #[error("cannot create the database directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it could not be created.
        source: std::io::Error,
    },
    /// Opening the database or creating its tables failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The app: its state is a pool of connections to one SQLite database.
#[derive(Clone, Debug)]
pub struct Zones {
    pool: SqlitePool,
}

impl Zones {
    /// Opens (creating it, and its parent directories, if missing) the database at
    /// `database_url` — `sqlite://PATH` or `sqlite::memory:` — and creates its tables.
    pub async fn open(database_url: &str) -> Result<Self, Error> {
        let pool = store::open(database_url).await?;
        Ok(Self { pool })
    }

    /// The API, ready to be served or nested in a test's router.
    pub fn router(&self) -> axum::Router {
        api::router(self.pool.clone())
    }
}

/// Serves `zones` on `listener` until `shutdown` completes, then lets requests in flight finish and
/// closes the database.
pub async fn serve(
    listener: tokio::net::TcpListener,
    zones: Zones,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = axum::serve(listener, zones.router())
        .with_graceful_shutdown(shutdown)
        .await;
    // Closing waits for the connections to be returned, so the WAL is checkpointed on the way out.
    zones.pool.close().await;
    served
}
