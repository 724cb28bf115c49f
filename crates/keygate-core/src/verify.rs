//! Verification: from the text a client presented to a [`Verified`] credential, or a refusal.
//!
//! The hot path: parse and checksum (no allocation), one SHA-256, one map lookup. Only a cache miss
//! reaches the store. What is cached is the credential's resolved state (tenant line, user, role,
//! permissions), and the checks that depend on time (expiry) run on every request.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use std::net::IpAddr;

use serde::Serialize;

use crate::Clock;
use crate::Timestamp;
use crate::allowlist::IpAllowlist;
use crate::cache::CredentialCache;
use crate::credential::{CredentialFormat, CredentialHash, CredentialKind, FormatError};
use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::model::{RateLimit, Role, Tenant, TenantStatus, UserStatus};
use crate::permission::{BuiltinRole, Catalog, PermissionSet};
use crate::store::{CredentialRecord, CredentialSource, StoreError};

/// What kind of party a credential acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ServiceToken,
    AccountKey,
    OauthClient,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServiceToken => "service_token",
            PrincipalKind::AccountKey => "account_key",
            PrincipalKind::OauthClient => "oauth_client",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
    pub name: String,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummary {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
}

impl From<&Tenant> for TenantSummary {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.clone(),
            name: tenant.name.clone(),
            slug: tenant.slug.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSummary {
    pub id: CredentialId,
    pub kind: CredentialKind,
    pub name: String,
    pub expires_at: Option<Timestamp>,
}

/// Why a credential that exists cannot be used, decided when it is read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Usable,
    Revoked,
    TenantSuspended,
    UserDisabled,
}

/// A credential as verification resolved it; shared by the cache and the requests using it.
#[derive(Debug)]
pub struct Verified {
    pub credential: CredentialSummary,
    pub tenant: TenantSummary,
    pub principal: Principal,
    /// What the credential may do: its role's permissions, narrowed by its own list.
    pub permissions: PermissionSet,
    /// What its role grants before narrowing (for a personal token, the user's role).
    pub role_permissions: PermissionSet,
    /// The token's own networks, if it is restricted.
    pub allowed_ips: Option<IpAllowlist>,
    /// The tenant's allowlist, if enabled.
    pub tenant_allowlist: Option<IpAllowlist>,
    pub rate_limit: Option<RateLimit>,
    /// When it was last used, kept here (two atomics per request) until written in a batch.
    pub usage: Usage,
    /// What a front end derives from this verification for its answers (forward-auth's identity
    /// headers), made on first use and kept as long as the verification is cached.
    rendered: OnceLock<Box<dyn Any + Send + Sync>>,
    standing: Standing,
    hash: CredentialHash,
    /// The credential's tenant and its ancestors: a change to any of them affects it.
    pub(crate) tenant_line: Vec<TenantId>,
    pub(crate) user_id: Option<UserId>,
    pub(crate) role_id: Option<RoleId>,
}

impl Verified {
    /// Resolves a stored credential against the catalog: its principal, its effective permissions
    /// (role narrowed by the credential's own list) and whether it can be used at all.
    pub fn resolve(record: &CredentialRecord, catalog: &Catalog) -> Self {
        let credential = &record.credential;
        let role_permissions = match (&record.role, credential.kind) {
            (_, CredentialKind::AccountKey) => catalog.builtin_role(BuiltinRole::Admin),
            (Some(role), _) => role_permissions(role, catalog),
            (None, _) => PermissionSet::default(),
        };
        let permissions = match &credential.permissions {
            Some(narrowing) => role_permissions.intersect(&catalog.expand(narrowing)),
            None => role_permissions.clone(),
        };

        let principal = match (credential.kind, &record.user) {
            (CredentialKind::Personal | CredentialKind::Session, Some(user)) => Principal {
                kind: PrincipalKind::User,
                id: user.id.to_string(),
                name: user.name.clone(),
                email: Some(user.email.clone()),
            },
            (CredentialKind::AccountKey, _) => Principal {
                kind: PrincipalKind::AccountKey,
                id: credential.id.to_string(),
                name: credential.name.clone(),
                email: None,
            },
            (CredentialKind::OauthSecret, _) => Principal {
                kind: PrincipalKind::OauthClient,
                id: credential.id.to_string(),
                name: credential.name.clone(),
                email: None,
            },
            _ => Principal {
                kind: PrincipalKind::ServiceToken,
                id: credential.id.to_string(),
                name: credential.name.clone(),
                email: None,
            },
        };

        let suspended = std::iter::once(&record.tenant)
            .chain(&record.ancestors)
            .any(|t| t.status == TenantStatus::Suspended);
        let user_disabled = record
            .user
            .as_ref()
            .is_some_and(|u| u.status != UserStatus::Active)
            || (matches!(
                credential.kind,
                CredentialKind::Personal | CredentialKind::Session
            ) && record.user.is_none());
        let standing = if credential.revoked_at.is_some() {
            Standing::Revoked
        } else if suspended {
            Standing::TenantSuspended
        } else if user_disabled {
            Standing::UserDisabled
        } else {
            Standing::Usable
        };

        Self {
            credential: CredentialSummary {
                id: credential.id.clone(),
                kind: credential.kind,
                name: credential.name.clone(),
                expires_at: credential.expires_at,
            },
            tenant: TenantSummary::from(&record.tenant),
            principal,
            permissions,
            role_permissions,
            allowed_ips: credential.allowed_ips.clone().map(IpAllowlist::new),
            tenant_allowlist: record.tenant.ip_restriction.enforced().cloned(),
            rate_limit: credential.rate_limit,
            usage: Usage::default(),
            rendered: OnceLock::new(),
            standing,
            hash: credential.hash,
            tenant_line: record.tenant.path.ids().collect(),
            user_id: record.user.as_ref().map(|u| u.id.clone()),
            role_id: record.role.as_ref().map(|r| r.id.clone()),
        }
    }

    /// What `make` derives from this verification, made on the first call and kept with it.
    /// One type per program: `None` if a different type was kept first.
    pub fn rendered<T: Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.rendered
            .get_or_init(|| Box::new(make(self)))
            .downcast_ref()
    }

    /// Whether the credential may be used at `now`.
    fn check(&self, now: Timestamp) -> Result<(), Refusal> {
        match self.standing {
            Standing::Revoked => return Err(Refusal::Revoked),
            Standing::TenantSuspended => return Err(Refusal::TenantSuspended),
            Standing::UserDisabled => return Err(Refusal::UserDisabled),
            Standing::Usable => {}
        }
        match self.credential.expires_at {
            Some(expires_at) if expires_at <= now => Err(Refusal::Expired),
            _ => Ok(()),
        }
    }
}

/// What a role grants in this catalog: built-in roles follow the catalog, custom roles expand
/// their patterns.
pub fn role_permissions(role: &Role, catalog: &Catalog) -> PermissionSet {
    match BuiltinRole::from_id(&role.id) {
        Some(builtin) => catalog.builtin_role(builtin),
        None => catalog.expand(&role.permissions),
    }
}

/// A credential's last use, noted on every request and taken by the batch that writes
/// `last_used_at`.
#[derive(Debug, Default)]
pub struct Usage {
    last_used: std::sync::atomic::AtomicI64,
    pending: std::sync::atomic::AtomicBool,
}

impl Usage {
    /// Notes a use at `now` (unix seconds); `true` if the credential was not yet waiting to be
    /// written, so the caller should queue it.
    pub fn note(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        self.last_used.fetch_max(now, Ordering::Relaxed);
        !self.pending.swap(true, Ordering::AcqRel)
    }

    /// The latest use, no longer waiting to be written.
    pub fn take(&self) -> Timestamp {
        use std::sync::atomic::Ordering;
        self.pending.store(false, Ordering::Release);
        Timestamp::from_unix(self.last_used.load(Ordering::Relaxed))
    }
}

/// Why a presented credential was refused. Each variant's message is safe to show the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("the credential is not known")]
    NotFound,
    #[error("the credential has expired")]
    Expired,
    #[error("the credential has been revoked")]
    Revoked,
    #[error("the account is suspended")]
    TenantSuspended,
    #[error("the user this credential belongs to is disabled")]
    UserDisabled,
    #[error("{} credentials are only accepted at the OAuth token endpoint", .0.as_str())]
    WrongPlace(CredentialKind),
    /// Not the client's fault: the store could not answer.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Verifies presented credentials, through the cache, against the store.
pub struct Verifier {
    format: CredentialFormat,
    catalog: Arc<Catalog>,
    store: Arc<dyn CredentialSource>,
    cache: Arc<CredentialCache>,
    clock: Arc<dyn Clock>,
    serve_stale_on_store_outage: bool,
    store_latency: LatencyHistogram,
}

/// Upper bounds, in seconds, of the store-latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus-style histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`] (not cumulative), then above.
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: std::sync::atomic::AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, duration: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let seconds = duration.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is +Inf, the total) and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        use std::sync::atomic::Ordering;
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (
            cumulative,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

impl Verifier {
    pub fn new(
        format: CredentialFormat,
        catalog: Arc<Catalog>,
        store: Arc<dyn CredentialSource>,
        cache: Arc<CredentialCache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            format,
            catalog,
            store,
            cache,
            clock,
            serve_stale_on_store_outage: false,
            store_latency: LatencyHistogram::default(),
        }
    }

    /// How long verification's store reads take.
    pub fn store_latency(&self) -> &LatencyHistogram {
        &self.store_latency
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// While the store is unreachable, answer from cache entries that can no longer be
    /// confirmed: availability over freshness (a revocation made meanwhile is not seen).
    pub fn serve_stale_on_store_outage(mut self, serve: bool) -> Self {
        self.serve_stale_on_store_outage = serve;
        self
    }

    pub fn format(&self) -> &CredentialFormat {
        &self.format
    }

    /// Verifies an opaque credential usable on the API (not an OAuth secret or refresh token).
    pub async fn verify(&self, text: &str) -> Result<Arc<Verified>, Refusal> {
        self.verify_at(text, self.clock.now()).await
    }

    /// [`Verifier::verify`] at `now`, for a caller that has read the clock already.
    pub async fn verify_at(&self, text: &str, now: Timestamp) -> Result<Arc<Verified>, Refusal> {
        let kind = self.format.parse(text)?;
        if matches!(kind, CredentialKind::OauthSecret | CredentialKind::Refresh) {
            return Err(Refusal::WrongPlace(kind));
        }
        let hash = CredentialHash::of(text);
        if self.cache.is_known_unknown(&hash) {
            return Err(Refusal::NotFound);
        }
        let verified = match self.cache.get(&hash) {
            Some(hit) => hit,
            None => match self.load(hash).await {
                Ok(loaded) => loaded,
                Err(Refusal::Store(StoreError::Unavailable(why)))
                    if self.serve_stale_on_store_outage =>
                {
                    self.cache
                        .get_stale(&hash)
                        .ok_or(Refusal::Store(StoreError::Unavailable(why)))?
                }
                Err(refusal) => return Err(refusal),
            },
        };
        verified.check(now)?;
        Ok(verified)
    }

    /// Who a credential that was just refused (expired, revoked, suspended) belongs to, from the
    /// cache, for the audit log. Never a reason to let a request through.
    pub fn known(&self, text: &str) -> Option<Arc<Verified>> {
        self.cache.get_stale(&CredentialHash::of(text))
    }

    async fn load(&self, hash: CredentialHash) -> Result<Arc<Verified>, Refusal> {
        let generation = self.cache.generation();
        let started = std::time::Instant::now();
        let found = self.store.find_credential(&hash).await;
        self.store_latency.observe(started.elapsed());
        let Some(record) = found? else {
            self.cache.remember_unknown(&hash);
            return Err(Refusal::NotFound);
        };
        // The store looked the hash up through an index; compare the whole hash in constant time
        // all the same, so nothing about a near miss can show in timing.
        if !record.credential.hash.ct_eq(&hash) {
            return Err(Refusal::NotFound);
        }
        let verified = Arc::new(Verified::resolve(&record, &self.catalog));
        self.cache
            .insert_unless_changed_since(generation, hash, Arc::clone(&verified));
        Ok(verified)
    }
}

impl Verified {
    /// Whether a request from `ip` may use this credential: inside the tenant's allowlist if it
    /// is enabled, and inside the token's own networks if it has any.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.tenant_allowlist
            .as_ref()
            .is_none_or(|list| list.covers(ip))
            && self.allowed_ips.as_ref().is_none_or(|list| list.covers(ip))
    }

    /// Whether the credential belongs to `tenant` or one of its descendants.
    pub fn is_within(&self, tenant: &TenantId) -> bool {
        self.tenant_line.contains(tenant)
    }

    pub(crate) fn hash(&self) -> &CredentialHash {
        &self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::credential::Environment;
    use crate::id::RoleId;
    use crate::model::{Credential, Role, Slug, User};
    use crate::store::{Change, ChangeListener};
    use crate::{ManualClock, Timestamp};

    /// A store in a map, counting how often verification reaches it.
    #[derive(Default)]
    struct MapStore {
        records: Mutex<HashMap<[u8; 32], CredentialRecord>>,
        finds: AtomicUsize,
    }

    #[async_trait]
    impl CredentialSource for MapStore {
        async fn find_credential(
            &self,
            hash: &CredentialHash,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            self.finds.fetch_add(1, Ordering::SeqCst);
            Ok(self.records.lock().unwrap().get(hash.as_bytes()).cloned())
        }
    }

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

    fn tenant(slug: &str, parent: Option<&Tenant>) -> Tenant {
        let id = TenantId::generate(NOW).unwrap();
        Tenant {
            path: match parent {
                Some(parent) => parent.path.child(&id),
                None => crate::model::TenantPath::root(&id),
            },
            id,
            parent_id: parent.map(|p| p.id.clone()),
            name: slug.to_uppercase(),
            slug: Slug::parse(slug).unwrap(),
            status: TenantStatus::Active,
            ip_restriction: Default::default(),
            created_at: NOW,
        }
    }

    struct Fixture {
        store: Arc<MapStore>,
        cache: Arc<CredentialCache>,
        clock: Arc<ManualClock>,
        verifier: Verifier,
        format: CredentialFormat,
    }

    fn fixture() -> Fixture {
        let format = CredentialFormat::new("kg", Environment::Live).unwrap();
        let store = Arc::new(MapStore::default());
        let cache = Arc::new(CredentialCache::new());
        let clock = Arc::new(ManualClock::new(NOW));
        let verifier = Verifier::new(
            format.clone(),
            Arc::new(Catalog::new(&["zones:read"]).unwrap()),
            store.clone(),
            cache.clone(),
            clock.clone(),
        );
        Fixture {
            store,
            cache,
            clock,
            verifier,
            format,
        }
    }

    impl Fixture {
        /// Stores a credential of `kind` in a child tenant of a root tenant; returns its text.
        fn add(
            &self,
            kind: CredentialKind,
            role: Option<Role>,
            user: Option<User>,
            expires_at: Option<Timestamp>,
        ) -> (String, CredentialRecord) {
            let root = tenant("root", None);
            let child = tenant("acme", Some(&root));
            let secret = self.format.generate(kind).unwrap();
            let record = CredentialRecord {
                credential: Credential {
                    id: CredentialId::generate_for(kind, NOW).unwrap(),
                    tenant_id: child.id.clone(),
                    kind,
                    hash: secret.hash(),
                    hint: secret.hint(),
                    name: "ci".into(),
                    description: None,
                    user_id: user.as_ref().map(|u| u.id.clone()),
                    created_by: None,
                    role_id: role.as_ref().map(|r| r.id.clone()),
                    permissions: None,
                    allowed_ips: None,
                    rate_limit: None,
                    created_at: NOW,
                    expires_at,
                    revoked_at: None,
                    last_used_at: None,
                },
                tenant: child,
                ancestors: vec![root],
                user,
                role,
            };
            self.store
                .records
                .lock()
                .unwrap()
                .insert(*secret.hash().as_bytes(), record.clone());
            (secret.into_exposed(), record)
        }

        fn update(&self, text: &str, change: impl FnOnce(&mut CredentialRecord)) {
            let mut records = self.store.records.lock().unwrap();
            change(
                records
                    .get_mut(CredentialHash::of(text).as_bytes())
                    .unwrap(),
            );
        }

        fn finds(&self) -> usize {
            self.store.finds.load(Ordering::SeqCst)
        }
    }

    fn custom_role(patterns: &[&str]) -> Role {
        Role {
            id: RoleId::generate(NOW).unwrap(),
            tenant_id: None,
            name: "deployer".into(),
            permissions: patterns.iter().map(|p| p.to_string()).collect(),
            created_at: NOW,
        }
    }

    fn builtin(role: BuiltinRole) -> Role {
        Role {
            id: role.id(),
            tenant_id: None,
            name: role.name().into(),
            permissions: vec![],
            created_at: NOW,
        }
    }

    #[tokio::test]
    async fn a_warm_cache_answers_without_the_store() {
        let f = fixture();
        let (text, _) = f.add(
            CredentialKind::Service,
            Some(builtin(BuiltinRole::Viewer)),
            None,
            None,
        );
        let first = f.verifier.verify(&text).await.unwrap();
        assert_eq!(f.finds(), 1);
        for _ in 0..10 {
            let again = f.verifier.verify(&text).await.unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(f.finds(), 1);
        assert_eq!(first.principal.kind, PrincipalKind::ServiceToken);
        assert!(first.permissions.contains("zones:read"));
        assert!(!first.permissions.contains("tokens:write"));
    }

    #[tokio::test]
    async fn bad_checksums_and_unknown_credentials() {
        let f = fixture();
        let (text, _) = f.add(CredentialKind::Personal, None, None, None);
        let mut flipped = text.clone();
        let i = flipped.len() - 7;
        let c = if &flipped[i..=i] == "a" { "b" } else { "a" };
        flipped.replace_range(i..=i, c);
        assert!(matches!(
            f.verifier.verify(&flipped).await,
            Err(Refusal::Format(FormatError::BadChecksum))
        ));
        assert_eq!(f.finds(), 0, "a bad checksum must not reach the store");
        let unknown = f.format.generate(CredentialKind::Service).unwrap();
        for _ in 0..5 {
            assert!(matches!(
                f.verifier.verify(unknown.expose()).await,
                Err(Refusal::NotFound)
            ));
        }
        assert_eq!(f.finds(), 1, "an unknown credential reaches the store once");
        assert!(f.cache.is_empty(), "and is not cached as a credential");
    }

    #[tokio::test]
    async fn expiry_is_checked_on_every_request_against_the_clock() {
        let f = fixture();
        let expires = NOW.saturating_add(Duration::from_secs(60));
        let (text, _) = f.add(CredentialKind::Service, None, None, Some(expires));
        assert!(f.verifier.verify(&text).await.is_ok());
        f.clock.advance(Duration::from_secs(59));
        assert!(f.verifier.verify(&text).await.is_ok());
        f.clock.advance(Duration::from_secs(1));
        assert!(matches!(
            f.verifier.verify(&text).await,
            Err(Refusal::Expired)
        ));
    }

    #[tokio::test]
    async fn changes_drop_exactly_the_affected_entries() {
        let f = fixture();
        let role = custom_role(&["tokens:*"]);
        let (a, rec_a) = f.add(CredentialKind::Service, Some(role.clone()), None, None);
        let (b, rec_b) = f.add(CredentialKind::Service, None, None, None);
        f.verifier.verify(&a).await.unwrap();
        f.verifier.verify(&b).await.unwrap();
        assert_eq!(f.cache.len(), 2);

        f.update(&a, |r| r.credential.revoked_at = Some(NOW));
        assert!(
            f.verifier.verify(&a).await.is_ok(),
            "cached until told of the change"
        );
        f.cache
            .changed(&Change::Credential(rec_a.credential.id.clone()));
        assert!(matches!(f.verifier.verify(&a).await, Err(Refusal::Revoked)));
        assert!(f.verifier.verify(&b).await.is_ok());

        f.cache.changed(&Change::Role(role.id.clone()));
        f.cache
            .changed(&Change::User(crate::id::UserId::generate(NOW).unwrap()));
        assert_eq!(
            f.cache.len(),
            1,
            "the revoked entry went with its role; b stays"
        );

        // Suspending the root tenant reaches the credential of its child.
        f.update(&b, |r| r.ancestors[0].status = TenantStatus::Suspended);
        f.cache
            .changed(&Change::Tenant(rec_b.ancestors[0].id.clone()));
        assert!(matches!(
            f.verifier.verify(&b).await,
            Err(Refusal::TenantSuspended)
        ));
    }

    #[tokio::test]
    async fn a_miss_that_raced_a_change_is_not_cached() {
        let f = fixture();
        let (text, record) = f.add(CredentialKind::Service, None, None, None);
        let generation = f.cache.generation();
        let stale = Arc::new(Verified::resolve(
            &record,
            &Catalog::new::<&str>(&[]).unwrap(),
        ));
        f.cache
            .changed(&Change::Credential(record.credential.id.clone()));
        f.cache
            .insert_unless_changed_since(generation, record.credential.hash, stale);
        assert!(f.cache.is_empty());
        assert!(f.verifier.verify(&text).await.is_ok());
        assert_eq!(f.cache.len(), 1);
    }

    /// A source that can be switched off, as a database goes down.
    struct Flaky {
        inner: Arc<MapStore>,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl CredentialSource for Flaky {
        async fn find_credential(
            &self,
            hash: &CredentialHash,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.find_credential(hash).await
        }
    }

    #[tokio::test]
    async fn an_untrusted_cache_reads_the_store_and_serves_stale_only_if_allowed() {
        let f = fixture();
        let (text, record) = f.add(CredentialKind::Service, None, None, None);
        for serve_stale in [false, true] {
            let flaky = Arc::new(Flaky {
                inner: f.store.clone(),
                down: false.into(),
            });
            let cache = Arc::new(CredentialCache::new());
            let verifier = Verifier::new(
                f.format.clone(),
                Arc::new(Catalog::new::<&str>(&[]).unwrap()),
                flaky.clone(),
                cache.clone(),
                f.clock.clone(),
            )
            .serve_stale_on_store_outage(serve_stale);
            verifier.verify(&text).await.unwrap();
            let finds = f.finds();
            verifier.verify(&text).await.unwrap();
            assert_eq!(f.finds(), finds, "trusted: answered from the cache");

            cache.may_have_missed_changes();
            verifier.verify(&text).await.unwrap();
            assert_eq!(f.finds(), finds + 1, "untrusted: confirmed with the store");

            flaky.down.store(true, Ordering::SeqCst);
            let outcome = verifier.verify(&text).await;
            assert_eq!(outcome.is_ok(), serve_stale, "serve_stale = {serve_stale}");

            flaky.down.store(false, Ordering::SeqCst);
            cache.resynced();
            assert!(cache.is_empty(), "a resync starts from nothing");
            verifier.verify(&text).await.unwrap();
            assert_eq!(cache.len(), 1);
        }
        let _ = record;
    }

    #[tokio::test]
    async fn personal_tokens_follow_their_user_and_narrowing() {
        let f = fixture();
        let user = User {
            id: crate::id::UserId::generate(NOW).unwrap(),
            tenant_id: TenantId::generate(NOW).unwrap(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            role_id: BuiltinRole::Member.id(),
            status: UserStatus::Active,
            created_at: NOW,
        };
        let (text, _) = f.add(
            CredentialKind::Personal,
            Some(builtin(BuiltinRole::Member)),
            Some(user.clone()),
            None,
        );
        f.update(&text, |r| {
            r.credential.permissions = Some(vec!["tokens:*".into(), "users:write".into()])
        });
        let verified = f.verifier.verify(&text).await.unwrap();
        assert_eq!(verified.principal.kind, PrincipalKind::User);
        assert_eq!(verified.principal.email.as_deref(), Some("ada@example.com"));
        let granted: Vec<&str> = verified.permissions.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            granted,
            ["tokens:read", "tokens:write"],
            "narrowed, never widened"
        );

        f.update(&text, |r| {
            r.user.as_mut().unwrap().status = UserStatus::Disabled
        });
        f.cache.changed(&Change::User(user.id.clone()));
        assert!(matches!(
            f.verifier.verify(&text).await,
            Err(Refusal::UserDisabled)
        ));
    }

    #[tokio::test]
    async fn oauth_secrets_are_not_api_credentials_and_account_keys_act_as_admin() {
        let f = fixture();
        let (secret, _) = f.add(CredentialKind::OauthSecret, None, None, None);
        assert!(matches!(
            f.verifier.verify(&secret).await,
            Err(Refusal::WrongPlace(CredentialKind::OauthSecret))
        ));
        let (key, _) = f.add(CredentialKind::AccountKey, None, None, None);
        let verified = f.verifier.verify(&key).await.unwrap();
        assert_eq!(verified.principal.kind, PrincipalKind::AccountKey);
        assert!(verified.permissions.contains("users:write"));
        assert!(!verified.permissions.contains("tenants:write"));
    }
}
