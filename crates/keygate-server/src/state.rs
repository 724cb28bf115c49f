//! What every handler shares: the configuration, the store, the verifier and the clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keygate_core::allowlist::IpAllowlist;
use keygate_core::cache::CredentialCache;
use keygate_core::gate::Gate;
use keygate_core::grants::Grants;
use keygate_core::jwt::{KeyError, KeySealer};
use keygate_core::keyring::{KeyPolicy, KeyRing};
use keygate_core::leaks::GithubKeys;
use keygate_core::model::RateLimit;
use keygate_core::oauth::Lifetimes;
use keygate_core::password::{self, Hasher, PasswordError, PasswordHashString};
use keygate_core::permission::Catalog;
use keygate_core::ratelimit::{RateLimitStatus, RateLimiter};
use keygate_core::reserve::Credits;
use keygate_core::signin::Sessions;
use keygate_core::store::{ChangeListener, DynStore, Granularity, Listeners, Store, StoreError};
use keygate_core::throttle::LoginThrottle;
use keygate_core::usage;
use keygate_core::verify::Verifier;
use keygate_core::{Clock, Timestamp};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::refusals::RefusalLog;
use crate::tls::{Tls, TlsError};
use crate::upstreams::Gateway;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    catalog: Arc<Catalog>,
    store: DynStore,
    gate: Gate,
    keys: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    trusted_proxies: IpAllowlist,
    login_throttle: LoginThrottle,
    refusals: RefusalLog,
    metrics: Arc<Metrics>,
    shutting_down: AtomicBool,
    /// Seals webhook signing secrets, when `oauth.key_encryption_secret` is set.
    sealer: Option<KeySealer>,
    /// GitHub's secret-scanning keys, read from `leaks.github_public_keys_path`; replaced whole on
    /// reload.
    github_keys: RwLock<Option<Arc<GithubKeys>>>,
    /// The public revocation endpoint's limit, per address.
    revoke_limiter: AddressLimiter,
    gateway: Gateway,
    /// The certificate served, when keygate terminates TLS.
    tls: Option<Tls>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] keygate_store::OpenError),
    #[error("OAuth signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("leaks.github_public_keys_path `{path}`: {why}")]
    GithubKeys { path: String, why: String },
    #[error("{0}")]
    Gateway(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn read_github_keys(path: &std::path::Path) -> Result<GithubKeys, StartError> {
    let failed = |why: String| StartError::GithubKeys {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    GithubKeys::parse(&text).map_err(|e| failed(e.to_string()))
}

/// The public revocation endpoint's limit per client address, counted on this node by the same
/// GCRA as credentials' limits.
pub struct AddressLimiter {
    limit: RateLimit,
    limiter: RateLimiter<std::net::IpAddr>,
}

impl AddressLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            limiter: RateLimiter::new(),
        }
    }

    /// Counts one request from `ip` at `now_millis`.
    pub fn check(&self, ip: std::net::IpAddr, now_millis: i64) -> RateLimitStatus {
        self.limiter.check(&ip, self.limit, now_millis)
    }
}

impl AppState {
    /// Opens the configured store (running its migrations) and wires the verifier to it.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let format = config.credential_format()?;
        let catalog = Arc::new(config.catalog()?);
        let cache = Arc::new(CredentialCache::with_capacity(config.cache.max_credentials));
        let sealer = match &config.oauth.key_encryption_secret {
            Some(secret) => Some(KeySealer::new(&secret.0)?),
            None => None,
        };
        let keys = Arc::new(KeyRing::new(
            KeyPolicy {
                issuer: config.issuer(),
                audiences: config.audiences(),
                algorithm: config.oauth.signing_algorithm,
                access_ttl: Duration::from_secs(config.oauth.access_token_ttl_seconds),
                rotate_after: match config.oauth.signing_key_rotation_days {
                    0 => None,
                    days => Some(Duration::from_secs(u64::from(days) * 86_400)),
                },
            },
            sealer,
        ));
        // A node's quota reserves hear of quota changes as the cache does (reserve.rs).
        let credits = Arc::new(Credits::default());
        let listeners: Vec<Arc<dyn ChangeListener>> =
            vec![cache.clone(), keys.clone(), credits.clone()];
        let store = keygate_store::open(
            &config.database_url,
            &config.store.options(),
            Arc::new(Listeners(listeners)),
        )
        .await?;
        // The first start makes the first signing key, so the key set is never empty.
        prepare_keys(&keys, &*store, clock.now()).await?;
        let verifier = Verifier::new(format, catalog.clone(), store.clone(), cache, clock.clone())
            .serve_stale_on_store_outage(config.cache.serve_stale_on_store_outage)
            .with_access_tokens(keys.clone());
        let trusted_proxies =
            IpAllowlist::new(config.trusted_proxies.iter().map(|n| n.0).collect());
        let default_rate_limit = match (config.rate_limit.requests, config.rate_limit.per_seconds) {
            (Some(requests), Some(per_seconds)) => Some(RateLimit {
                requests,
                per_seconds,
            }),
            _ => None,
        };
        let gate = Gate::new(verifier, store.clone(), default_rate_limit).with_credits(credits);
        let webhook_sealer = match &config.oauth.key_encryption_secret {
            Some(secret) => Some(KeySealer::new(&secret.0)?),
            None => None,
        };
        let github_keys = match &config.leaks.github_public_keys_path {
            Some(path) => Some(Arc::new(read_github_keys(path)?)),
            None => None,
        };
        let metrics = Arc::<Metrics>::default();
        let gateway = Gateway::new(&config.routes()?, &metrics).map_err(StartError::Gateway)?;
        let tls = Tls::load(&config.tls)?;
        Ok(Self(Arc::new(Inner {
            trusted_proxies,
            config,
            catalog,
            store,
            gate,
            keys,
            clock,
            login_throttle: LoginThrottle::default(),
            refusals: RefusalLog::default(),
            metrics,
            gateway,
            tls,
            shutting_down: AtomicBool::new(false),
            sealer: webhook_sealer,
            github_keys: RwLock::new(github_keys),
            revoke_limiter: AddressLimiter::new(RateLimit {
                requests: 60,
                per_seconds: 3600,
            }),
        })))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// What seals webhook signing secrets, if the operator configured a secret for it.
    pub fn sealer(&self) -> Option<&KeySealer> {
        self.0.sealer.as_ref()
    }

    /// GitHub's secret-scanning keys, if configured.
    pub fn github_keys(&self) -> Option<Arc<GithubKeys>> {
        self.0
            .github_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads `leaks.github_public_keys_path` again (on SIGHUP). A file that cannot be read or
    /// used leaves the keys as they were; the error says why.
    pub fn reload_github_keys(&self) -> Result<usize, StartError> {
        let Some(path) = &self.0.config.leaks.github_public_keys_path else {
            return Ok(0);
        };
        let keys = read_github_keys(path)?;
        let count = keys.len();
        *self
            .0
            .github_keys
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
        Ok(count)
    }

    pub fn gateway(&self) -> &Gateway {
        &self.0.gateway
    }

    /// The certificate served, when keygate terminates TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.0.tls.as_ref()
    }

    /// Puts what `config` says of the gateway's routes and the TLS files in force (on SIGHUP),
    /// each only if it can be used; the errors say what was kept. The rest of the configuration
    /// is read at start only.
    pub fn reload(&self, config: &Config) -> Vec<String> {
        let mut kept = Vec::new();
        match config.routes() {
            Ok(table) => match self.0.gateway.replace(&table, &self.0.metrics) {
                Ok(routes) => tracing::info!(routes, "gateway routes reloaded"),
                Err(error) => kept.push(format!("kept the gateway routes: {error}")),
            },
            Err(error) => kept.push(format!("kept the gateway routes: {error}")),
        }
        match (&self.0.tls, config.tls.enabled()) {
            (Some(tls), true) => match tls.reload(&config.tls) {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(error) => kept.push(format!("kept the TLS certificate: {error}")),
            },
            (None, false) => {}
            (Some(_), false) | (None, true) => kept.push(
                "turning TLS on or off takes a restart; the listener is as it was".to_owned(),
            ),
        }
        kept
    }

    /// The public revocation endpoint's limit per address.
    pub fn revoke_limiter(&self) -> &AddressLimiter {
        &self.0.revoke_limiter
    }

    pub fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    pub fn store(&self) -> &DynStore {
        &self.0.store
    }

    /// Where every request's admission is decided.
    /// Reads quotas as this node sees them now.
    pub fn quota_reader(&self) -> crate::views::QuotaReader<'_> {
        crate::views::QuotaReader {
            credits: self.gate().credits(),
            now: self.clock().now(),
        }
    }

    pub fn gate(&self) -> &Gate {
        &self.0.gate
    }

    pub fn verifier(&self) -> &Verifier {
        self.0.gate.verifier()
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.0.clock
    }

    /// The keys OAuth access tokens are signed with.
    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    /// How long what the token endpoint issues lives.
    pub fn oauth_lifetimes(&self) -> Lifetimes {
        let oauth = &self.0.config.oauth;
        Lifetimes {
            access: Duration::from_secs(oauth.access_token_ttl_seconds),
            refresh: Duration::from_secs(u64::from(oauth.refresh_token_ttl_days) * 86_400),
        }
    }

    /// The proxies whose forwarding headers are believed (config `trusted_proxies`).
    pub fn trusted_proxies(&self) -> &IpAllowlist {
        &self.0.trusted_proxies
    }

    /// Counts a request of a credential against its limit (its own, else the configured
    /// default); `None` when no limit applies.
    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.0.login_throttle
    }

    /// Where argon2 runs: on tokio's blocking threads, never on the workers serving requests.
    pub fn hasher(&self) -> &dyn Hasher {
        &BlockingHasher
    }

    /// The token endpoint's grants, with this deployment's keys and token lifetimes.
    pub fn grants(&self) -> Grants<'_> {
        Grants {
            store: self.store().as_ref(),
            keys: self.keys(),
            format: self.verifier().format(),
            catalog: self.catalog(),
            lifetimes: self.oauth_lifetimes(),
        }
    }

    /// Signing in and out, with this deployment's store, throttle and session lifetime.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions {
            store: self.store().as_ref(),
            throttle: self.login_throttle(),
            hasher: self.hasher(),
            format: self.verifier().format(),
            lifetime: Duration::from_secs(u64::from(self.config().session.lifetime_hours) * 3600),
            refusals: self.refusals(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The counters, for the layer that counts routed requests.
    pub fn metrics_shared(&self) -> Arc<Metrics> {
        Arc::clone(&self.0.metrics)
    }

    /// Gives back quota credits this node has held unspent since the last call (every few
    /// seconds), so the other nodes can have them; `all` at shutdown.
    pub async fn give_back_credits(&self, all: bool) {
        let given = if all {
            self.0.gate.give_back_all_credits().await
        } else {
            self.0.gate.give_back_idle_credits().await
        };
        if given > 0 {
            tracing::debug!(credits = given, "gave back unspent quota credits");
        }
    }

    /// Writes pending `last_used_at` times now (also done every few seconds and at shutdown).
    pub async fn flush_usage(&self) {
        if let Err(error) = self.0.gate.usage().flush(&self.0.store).await {
            tracing::warn!(%error, "could not record when credentials were last used; will retry");
        }
    }

    pub fn refusals(&self) -> &RefusalLog {
        &self.0.refusals
    }

    /// Writes the refusals counted since the last call to the audit log.
    pub async fn flush_refusals(&self) {
        if let Err(error) = self.0.refusals.flush(&self.0.store).await {
            tracing::warn!(%error, "could not record refused requests in the audit log; will retry");
        }
    }

    /// Deletes the audit events older than `audit.retention_days`, a small batch at a time with a
    /// pause between batches, so requests writing events never wait long on it. Returns how many.
    pub async fn prune_audit(&self) -> Result<u64, StoreError> {
        const BATCH: u32 = 500;
        let days = u64::from(self.0.config.audit.retention_days);
        let before = self
            .0
            .clock
            .now()
            .saturating_sub(Duration::from_secs(days * 24 * 60 * 60));
        let mut deleted = 0;
        loop {
            let batch = self.0.store.prune_events(before, BATCH).await?;
            deleted += batch;
            if batch < u64::from(BATCH) {
                return Ok(deleted);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rolls the minute buckets of the hours that are over up into their hours and days, a few
    /// thousand at a time; returns how many. An hour is rolled up once
    /// [`usage::ROLL_UP_AFTER`] has passed since it ended: a minute that comes later is added to
    /// its hour and day by the batch that brings it.
    pub async fn roll_up_usage(&self) -> Result<u64, StoreError> {
        const CHUNK: u32 = 5_000;
        let now = self.0.clock.now();
        let before = Granularity::Hour.bucket(now.saturating_sub(usage::ROLL_UP_AFTER));
        let mut rolled = 0;
        loop {
            let chunk = self.0.store.roll_up_usage(before, CHUNK).await?;
            if chunk == 0 {
                return Ok(rolled);
            }
            rolled += chunk;
        }
    }

    /// Deletes the usage buckets past their retention (`usage.*`), minutes, hours and days each
    /// a small batch at a time with a pause between batches, as [`AppState::prune_audit`] does,
    /// after rolling up what is due ([`AppState::roll_up_usage`]). Returns how many.
    pub async fn prune_usage(&self) -> Result<u64, StoreError> {
        const BATCH: u32 = 1000;
        // Minutes are pruned only once in their hours and days.
        self.roll_up_usage().await?;
        let now = self.0.clock.now();
        let mut deleted = 0;
        for granularity in Granularity::ALL {
            let before = now.saturating_sub(self.0.config.usage.retention(granularity));
            loop {
                let batch = self.0.store.prune_usage(granularity, before, BATCH).await?;
                deleted += batch;
                if batch < u64::from(BATCH) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(deleted)
    }

    /// Deletes refresh tokens that have expired (every hour, off the request path).
    pub async fn delete_expired(&self) {
        match self
            .0
            .store
            .delete_expired_refresh_tokens(self.0.clock.now())
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted expired refresh tokens"),
            Err(error) => {
                tracing::warn!(%error, "could not delete expired refresh tokens; will retry")
            }
        }
    }

    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }

    /// Bootstraps an empty store; `None` if it already holds a root tenant.
    pub async fn bootstrap_if_empty(
        &self,
        email: &str,
    ) -> Result<Option<crate::bootstrap::Report>, crate::bootstrap::BootstrapError> {
        crate::bootstrap::run(
            self.store(),
            self.verifier().format(),
            email,
            self.clock().now(),
        )
        .await
        .map(Some)
        .or_else(|e| match e {
            crate::bootstrap::BootstrapError::AlreadyInitialized => Ok(None),
            other => Err(other),
        })
    }
}

/// Runs argon2 on tokio's blocking threads: one hash or check takes tens of milliseconds of CPU.
struct BlockingHasher;

#[async_trait::async_trait]
impl Hasher for BlockingHasher {
    async fn hash(&self, password: String) -> Result<PasswordHashString, PasswordError> {
        tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .unwrap_or_else(|e| {
                Err(PasswordError::Hashing(format!(
                    "the hashing task failed: {e}"
                )))
            })
    }

    async fn verify_each(&self, candidate: String, stored: Vec<PasswordHashString>) -> Vec<bool> {
        let count = stored.len();
        tokio::task::spawn_blocking(move || password::verify_each(&candidate, &stored))
            .await
            .unwrap_or_else(|e| {
                // Fail closed: a check that did not finish matched nothing.
                tracing::error!(error = %e, "a password check failed");
                vec![false; count]
            })
    }
}

/// [`KeyRing::prepare`], tried again for a while when the store says it is unavailable. SQLite
/// answers "database is locked" once its busy timeout has passed, and sometimes at once to a
/// process opening the file while another is closing or recovering it (sqlite.org/wal.html,
/// "Sometimes queries return SQLITE_BUSY in WAL mode"): what a restart beside another node looks
/// like. A node that cannot start waits for the database rather than exit.
async fn prepare_keys(keys: &KeyRing, store: &dyn Store, now: Timestamp) -> Result<(), KeyError> {
    const PATIENCE: Duration = Duration::from_secs(30);
    let started = std::time::Instant::now();
    loop {
        match keys.prepare(store, now).await {
            Err(KeyError::Store(StoreError::Unavailable(why))) if started.elapsed() < PATIENCE => {
                tracing::warn!(%why, "the database is busy; preparing the signing keys again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            prepared => return prepared,
        }
    }
}
