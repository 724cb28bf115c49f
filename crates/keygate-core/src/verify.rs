//! Verification: from the text a client presented to a [`Verified`] credential, or a refusal.
//!
//! The hot path: parse and checksum (no allocation), one SHA-256, one map lookup. Only a cache miss
//! reaches the store. What is cached is the credential's resolved state (tenant line, user, role,
//! permissions), and the checks that depend on time (expiry) run on every request.
//!
//! OAuth access tokens (JWTs) take the same path, keyed by the SHA-256 of the token's text: the
//! signature is checked once per node, on the miss, which also reads the token's client from the
//! store. The cached entry goes when its client changes or is deleted, so a deleted client's tokens
//! stop at once, on every node, without a store access per request.

use std::sync::Arc;

use crate::Clock;
use crate::Timestamp;
use crate::cache::CredentialCache;
use crate::credential::{CredentialFormat, CredentialHash, CredentialKind, FormatError};
use crate::id::{CredentialId, TenantId};
use crate::jwt::{self, JwtRefusal};
use crate::keyring::KeyRing;
use crate::misses::Misses;
use crate::oauth::{AuthenticatedClient, ClientAuthError, OauthError};
use crate::permission::Catalog;
use crate::store::{CredentialRecord, CredentialSource, StoreError};
use crate::verified::{Unusable, Verified};

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
    /// An access token that is not one keygate issued, signed, and still vouches for.
    #[error("{0}")]
    AccessToken(JwtRefusal),
    /// Not the client's fault: the store could not answer.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<Unusable> for Refusal {
    fn from(unusable: Unusable) -> Self {
        match unusable {
            Unusable::Expired => Refusal::Expired,
            Unusable::Revoked => Refusal::Revoked,
            Unusable::TenantSuspended => Refusal::TenantSuspended,
            Unusable::UserDisabled => Refusal::UserDisabled,
        }
    }
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
    keys: Option<Arc<KeyRing>>,
    misses: Misses,
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
            keys: None,
            misses: Misses::default(),
        }
    }

    /// Accepts OAuth access tokens signed with these keys.
    pub fn with_access_tokens(mut self, keys: Arc<KeyRing>) -> Self {
        self.keys = Some(keys);
        self
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

    /// Verifies a credential usable on the API: an opaque one (not an OAuth secret or refresh
    /// token), or an OAuth access token.
    pub async fn verify(&self, text: &str) -> Result<Arc<Verified>, Refusal> {
        self.verify_at(text, self.clock.now()).await
    }

    /// [`Verifier::verify`] at `now`, for a caller that has read the clock already.
    pub async fn verify_at(&self, text: &str, now: Timestamp) -> Result<Arc<Verified>, Refusal> {
        if jwt::looks_like_jwt(text) {
            return self.verify_cached(text, Lookup::AccessToken, now).await;
        }
        let kind = self.format.parse(text)?;
        if matches!(kind, CredentialKind::OauthSecret | CredentialKind::Refresh) {
            return Err(Refusal::WrongPlace(kind));
        }
        self.verify_cached(text, Lookup::Stored, now).await
    }

    /// [`Verifier::verify_at`] for a caller that may only learn about the credentials of `scope`
    /// and its descendants (`POST /v1/verify`): any other credential is [`Refusal::NotFound`],
    /// whatever its state, so that expired, revoked and live credentials of another tenant cannot
    /// be told apart from unknown ones.
    pub async fn verify_within(
        &self,
        text: &str,
        scope: &TenantId,
        now: Timestamp,
    ) -> Result<Arc<Verified>, Refusal> {
        match self.verify_at(text, now).await {
            Ok(verified) if verified.is_within(scope) => Ok(verified),
            Ok(_) => Err(Refusal::NotFound),
            Err(
                refusal @ (Refusal::Expired
                | Refusal::Revoked
                | Refusal::TenantSuspended
                | Refusal::UserDisabled),
            ) => match self.owner_of_refused(text).await? {
                Some(owner) if owner.iter().any(|id| id == scope) => Err(refusal),
                _ => Err(Refusal::NotFound),
            },
            Err(refusal) => Err(refusal),
        }
    }

    /// The tenant line (root first) of a credential that was just refused for its state. Only
    /// called after verification checked the credential itself: an opaque credential was found
    /// by its hash, and an access token's signature and issuer were checked before its expiry,
    /// so its claims are keygate's own.
    async fn owner_of_refused(&self, text: &str) -> Result<Option<Vec<TenantId>>, Refusal> {
        let hash = CredentialHash::of(text);
        if let Some(known) = self.cache.get_stale(&hash) {
            return Ok(Some(known.tenant_line().to_vec()));
        }
        if !jwt::looks_like_jwt(text) {
            let found = self.store.find_credential(&hash).await?;
            return Ok(found.map(|record| record.tenant.path.ids().collect()));
        }
        // An expired access token is refused before its client is read: read it now.
        let Some(claims) = checked_claims(text) else {
            return Ok(None);
        };
        let (Some(client), Some(jti)) = (
            CredentialId::parse_any(&claims.sub),
            CredentialId::parse_any(&claims.jti),
        ) else {
            return Ok(None);
        };
        // Whose it is, revoked or not: its grant does not matter here.
        let found = self.store.find_access_token(&client, &jti, None).await?;
        Ok(found
            .filter(|record| record.client.tenant.id.as_str() == claims.tenant)
            .map(|record| record.client.tenant.path.ids().collect()))
    }

    /// Authenticates an OAuth client by its secret, for the token endpoint: the secret must be a
    /// usable client secret and, if the request named a `client_id` (`claimed`), that client's.
    /// The OAuth client with this id, whatever its tenant and whatever its state: whose a refused
    /// client authentication was, for its tenant's audit log.
    pub async fn find_client(
        &self,
        id: &CredentialId,
    ) -> Result<Option<crate::model::Credential>, StoreError> {
        Ok(self
            .store
            .find_client(id)
            .await?
            .map(|record| record.credential))
    }

    pub async fn authenticate_client(
        &self,
        secret: &str,
        claimed: Option<&str>,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let verified = match self.format.parse(secret) {
            Ok(CredentialKind::OauthSecret) => {
                self.verify_cached(secret, Lookup::Stored, self.clock.now())
                    .await
            }
            Ok(_) => Err(Refusal::NotFound),
            Err(malformed) => Err(Refusal::Format(malformed)),
        };
        match verified {
            Ok(verified) => {
                AuthenticatedClient::new(verified, claimed).map_err(ClientAuthError::Refused)
            }
            Err(Refusal::Store(error)) => Err(ClientAuthError::Store(error)),
            Err(refusal) => Err(ClientAuthError::Refused(OauthError::invalid_client(
                format!("the client could not be authenticated: {refusal}"),
            ))),
        }
    }

    async fn verify_cached(
        &self,
        text: &str,
        lookup: Lookup,
        now: Timestamp,
    ) -> Result<Arc<Verified>, Refusal> {
        let hash = CredentialHash::of(text);
        // Boxed: a miss's read is a few kilobytes of future, and inline it would make every
        // request's (each a hit but the first) as large, copied as requests move it.
        let loaded = self
            .cache
            .get_or_load(&hash, now, || Box::pin(lookup.load(self, text, hash)))
            .await;
        let verified = match loaded {
            Ok(Some(verified)) => verified,
            Ok(None) => return Err(Refusal::NotFound),
            Err(Refusal::Store(StoreError::Unavailable(why)))
                if self.serve_stale_on_store_outage =>
            {
                self.cache
                    .get_stale(&hash)
                    .ok_or(Refusal::Store(StoreError::Unavailable(why)))?
            }
            Err(refusal) => return Err(refusal),
        };
        if let Some(unusable) = verified.unusable_at(now) {
            return Err(unusable.into());
        }
        Ok(verified)
    }

    /// Who a credential that was just refused (expired, revoked, suspended) belongs to, from the
    /// cache, for the audit log. Never a reason to let a request through.
    pub fn known(&self, text: &str) -> Option<Arc<Verified>> {
        self.cache.get_stale(&CredentialHash::of(text))
    }

    /// The credential with this hash from the store; `None` if the store does not know it.
    ///
    /// The credential's row is read alone, with the other misses of the moment ([`Misses`]); its
    /// tenant line, user and role come from what the cache keeps for credentials of the same
    /// tenant, user and role, and from a second read only when it keeps none: most misses are a
    /// share of one narrow read, not the whole line again.
    async fn load(&self, hash: CredentialHash) -> Result<Option<Arc<Verified>>, Refusal> {
        let started = std::time::Instant::now();
        let found = self.misses.find(&*self.store, hash).await;
        let Some(mut credential) = found? else {
            self.store_latency.observe(started.elapsed());
            return Ok(None);
        };
        // The store looked the hash up through an index; compare the whole hash in constant time
        // all the same, so nothing about a near miss can show in timing. A client's previous
        // secret (API.md §14) is compared as well, whichever matched: `|`, not `||`.
        let current = credential.hash.ct_eq(&hash);
        let previous = match &credential.previous_secret {
            Some(previous) => previous.hash.ct_eq(&hash),
            None => false,
        };
        if !(current | previous) {
            return Err(Refusal::NotFound);
        }
        if !current {
            // The previous secret works as the client does, until its overlap ends: as this
            // secret's expiry, it is refused from then on, from the cache as from the store.
            // It is cached under its own hash, so it is read as that hash's credential.
            credential.hash = hash;
            let until = credential.previous_secret.as_ref().map(|p| p.until);
            credential.expires_at = match (credential.expires_at, until) {
                (Some(at), Some(until)) => Some(at.min(until)),
                (at, until) => at.or(until),
            };
        }
        let context = match self.cache.context(&credential) {
            Some(context) => context,
            None => {
                let generation = self.cache.generation();
                // No tenant: it was deleted since, and the credential with it.
                let Some(context) = self.store.find_context(&credential).await? else {
                    self.store_latency.observe(started.elapsed());
                    return Ok(None);
                };
                self.cache.keep_context(generation, &credential, context)
            }
        };
        self.store_latency.observe(started.elapsed());
        let record = CredentialRecord::in_context(credential, &context);
        Ok(Some(Arc::new(Verified::resolve(&record, &self.catalog))))
    }

    /// An access token the cache does not hold: its signature, issuer and expiry first (no store
    /// access for a forged or expired one), then its client and revocation from the store.
    async fn load_access_token(
        &self,
        text: &str,
        hash: CredentialHash,
    ) -> Result<Option<Arc<Verified>>, Refusal> {
        let keys = self
            .keys
            .as_ref()
            .ok_or(Refusal::AccessToken(JwtRefusal::Malformed))?;
        let now = self.clock.now();
        let claims = match keys.decode(text, now) {
            // A key this node has not read yet (another node rotated): read the set, once.
            Err(JwtRefusal::UnknownKey) if keys.may_be_behind(now) => {
                keys.reload(&*self.store, now)
                    .await
                    .map_err(|error| match error {
                        crate::jwt::KeyError::Store(error) => Refusal::Store(error),
                        other => Refusal::Store(StoreError::Internal(other.to_string())),
                    })?;
                keys.decode(text, now)
            }
            decoded => decoded,
        }
        .map_err(|refusal| match refusal {
            JwtRefusal::Expired => Refusal::Expired,
            other => Refusal::AccessToken(other),
        })?;
        let (Some(client), Some(jti)) = (
            CredentialId::parse_any(&claims.sub).filter(|id| id.as_str().starts_with("cli_")),
            CredentialId::parse_any(&claims.jti).filter(|id| id.as_str().starts_with("atk_")),
        ) else {
            return Err(Refusal::AccessToken(JwtRefusal::Malformed));
        };
        let grant = claims.grant.as_deref().and_then(CredentialId::parse_any);
        let started = std::time::Instant::now();
        let found = self
            .store
            .find_access_token(&client, &jti, grant.as_ref())
            .await;
        self.store_latency.observe(started.elapsed());
        let record = match found? {
            Some(record) if record.client.tenant.id.as_str() == claims.tenant => record,
            // The client was deleted (ids are never reused, so it stays unknown).
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(Verified::resolve_access_token(
            &record,
            &claims,
            jti,
            hash,
            &self.catalog,
        ))))
    }
}

/// Who an access token names, read from its payload without checking it again: only for a token
/// whose signature and issuer were checked already.
#[derive(serde::Deserialize)]
struct Names {
    sub: String,
    jti: String,
    tenant: String,
}

fn checked_claims(token: &str) -> Option<Names> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where a cache miss reads a credential from.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    /// The store, by the credential's hash.
    Stored,
    /// The token's own signature, then its client in the store.
    AccessToken,
}

impl Lookup {
    async fn load(
        self,
        verifier: &Verifier,
        text: &str,
        hash: CredentialHash,
    ) -> Result<Option<Arc<Verified>>, Refusal> {
        match self {
            Lookup::Stored => verifier.load(hash).await,
            Lookup::AccessToken => verifier.load_access_token(text, hash).await,
        }
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
    use crate::id::{RoleId, UserId};
    use crate::jwt::AccessClaims;
    use crate::model::{Credential, Role, Slug, User};
    use crate::model::{Tenant, TenantStatus, UserStatus};
    use crate::permission::BuiltinRole;
    use crate::store::{AccessTokenRecord, CredentialContext, CredentialRecord};
    use crate::store::{Change, ChangeListener, SigningKeySource};
    use crate::verified::PrincipalKind;
    use crate::{ManualClock, Timestamp};

    /// A store in a map, counting how often verification reaches it.
    #[derive(Default)]
    struct MapStore {
        records: Mutex<HashMap<[u8; 32], CredentialRecord>>,
        revoked: Mutex<Vec<CredentialId>>,
        keys: Mutex<Vec<crate::jwt::StoredSigningKey>>,
        /// Reads of a credential (with its context or alone), and of a context alone.
        finds: AtomicUsize,
        context_reads: AtomicUsize,
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

        async fn find_context(
            &self,
            credential: &Credential,
        ) -> Result<Option<CredentialContext>, StoreError> {
            self.context_reads.fetch_add(1, Ordering::SeqCst);
            let records = self.records.lock().unwrap();
            let found = records.values().find(|r| r.credential.id == credential.id);
            Ok(found.map(|r| CredentialContext {
                tenant: r.tenant.clone(),
                ancestors: r.ancestors.clone(),
                user: r.user.clone(),
                role: r.role.clone(),
            }))
        }

        async fn find_client(
            &self,
            id: &CredentialId,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            let records = self.records.lock().unwrap();
            let found = records.values().find(|r| {
                r.credential.id == *id && r.credential.kind == CredentialKind::OauthSecret
            });
            Ok(found.cloned())
        }

        async fn find_access_token(
            &self,
            client: &CredentialId,
            jti: &CredentialId,
            grant: Option<&CredentialId>,
        ) -> Result<Option<AccessTokenRecord>, StoreError> {
            self.finds.fetch_add(1, Ordering::SeqCst);
            let records = self.records.lock().unwrap();
            let client = records
                .values()
                .find(|r| {
                    r.credential.id == *client && r.credential.kind == CredentialKind::OauthSecret
                })
                .cloned();
            Ok(client.map(|client| AccessTokenRecord {
                client,
                revoked: {
                    let revoked = self.revoked.lock().unwrap();
                    revoked.contains(jti) || grant.is_some_and(|grant| revoked.contains(grant))
                },
            }))
        }
    }

    #[async_trait]
    impl SigningKeySource for MapStore {
        async fn signing_keys(&self) -> Result<Vec<crate::jwt::StoredSigningKey>, StoreError> {
            Ok(self.keys.lock().unwrap().clone())
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
            quota: None,
            leak_policy: Default::default(),
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
        fixture_with(CredentialCache::new())
    }

    fn fixture_with(cache: CredentialCache) -> Fixture {
        let format = CredentialFormat::new("kg", Environment::Live).unwrap();
        let store = Arc::new(MapStore::default());
        let cache = Arc::new(cache);
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
            let (mut credential, secret) =
                Credential::issue(&self.format, kind, child.id.clone(), "ci".into(), None, NOW)
                    .unwrap();
            credential.user_id = user.as_ref().map(|u| u.id.clone());
            credential.role_id = role.as_ref().map(|r| r.id.clone());
            credential.expires_at = expires_at;
            let record = CredentialRecord {
                credential,
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

        fn context_reads(&self) -> usize {
            self.store.context_reads.load(Ordering::SeqCst)
        }

        /// Stores another credential of `beside`'s tenant, user and role, in the state `change`
        /// leaves them in; returns its text.
        fn add_beside(
            &self,
            beside: &CredentialRecord,
            change: impl FnOnce(&mut CredentialRecord),
        ) -> String {
            let (mut credential, secret) = Credential::issue(
                &self.format,
                beside.credential.kind,
                beside.tenant.id.clone(),
                "beside".into(),
                None,
                NOW,
            )
            .unwrap();
            credential.user_id = beside.credential.user_id.clone();
            credential.role_id = beside.credential.role_id.clone();
            let mut record = CredentialRecord {
                credential,
                ..beside.clone()
            };
            change(&mut record);
            self.store
                .records
                .lock()
                .unwrap()
                .insert(*secret.hash().as_bytes(), record);
            secret.into_exposed()
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
        assert_eq!(first.principal().kind, PrincipalKind::ServiceToken);
        assert!(first.permissions.contains("zones:read"));
        assert!(!first.permissions.contains("tokens:write"));
    }

    #[tokio::test]
    async fn a_miss_beside_a_known_credential_reads_the_credential_alone() {
        let f = fixture();
        let (text, first) = f.add(
            CredentialKind::Service,
            Some(builtin(BuiltinRole::Viewer)),
            None,
            None,
        );
        f.verifier.verify(&text).await.unwrap();
        assert_eq!((f.finds(), f.context_reads()), (1, 1));
        let beside = f.add_beside(&first, |_| {});
        let second = f.verifier.verify(&beside).await.unwrap();
        assert_eq!(
            (f.finds(), f.context_reads()),
            (2, 1),
            "the tenant line and role were kept from the first"
        );
        assert_eq!(second.tenant().id, first.tenant.id);
        assert!(second.permissions.contains("zones:read"));

        // Untrusted, the cache keeps nothing it would answer from: the context is read again.
        f.cache.may_have_missed_changes();
        let third = f.add_beside(&first, |_| {});
        f.verifier.verify(&third).await.unwrap();
        assert_eq!((f.finds(), f.context_reads()), (3, 2));
    }

    #[tokio::test]
    async fn a_change_to_a_tenant_user_or_role_drops_what_was_kept_of_it() {
        let user = || User {
            id: UserId::generate(NOW).unwrap(),
            tenant_id: TenantId::generate(NOW).unwrap(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            role_id: BuiltinRole::Viewer.id(),
            status: UserStatus::Active,
            created_at: NOW,
            last_sign_in_at: None,
        };
        type Changed = fn(&mut CredentialRecord);
        type Announced = fn(&CredentialRecord) -> Change;
        let cases: [(&str, Changed, Announced); 3] = [
            (
                "the parent tenant suspended",
                |r| r.ancestors[0].status = TenantStatus::Suspended,
                |r| Change::Tenant(r.ancestors[0].id.clone()),
            ),
            (
                "the user disabled",
                |r| r.user.as_mut().unwrap().status = UserStatus::Disabled,
                |r| Change::User(r.credential.user_id.clone().unwrap()),
            ),
            (
                "the role's permissions narrowed",
                |r| r.role.as_mut().unwrap().permissions = vec![],
                |r| Change::Role(r.role.as_ref().unwrap().id.clone()),
            ),
        ];
        for (what, changed, change) in cases {
            let f = fixture();
            let (text, first) = f.add(
                CredentialKind::Personal,
                Some(custom_role(&["zones:read"])),
                Some(user()),
                None,
            );
            f.verifier.verify(&text).await.unwrap();
            // The store changes, and says so.
            let beside = f.add_beside(&first, changed);
            let mut now = first.clone();
            changed(&mut now);
            f.cache.changed(&change(&now));
            let verified = f.verifier.verify(&beside).await;
            assert_eq!(f.context_reads(), 2, "{what}: read again");
            match verified {
                Ok(v) => assert!(!v.permissions.contains("zones:read"), "{what}: {v:?}"),
                Err(refusal) => assert!(
                    matches!(refusal, Refusal::TenantSuspended | Refusal::UserDisabled),
                    "{what}: {refusal:?}"
                ),
            }
        }
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
        let stale = Arc::new(Verified::resolve(
            &record,
            &Catalog::new::<&str>(&[]).unwrap(),
        ));
        let change = Change::Credential(record.credential.id.clone());
        // The credential changes while its record is being read.
        let raced = async {
            f.cache.changed(&change);
            Ok::<_, ()>(Some(stale))
        };
        let used = f
            .cache
            .get_or_load(&record.credential.hash, NOW, || raced)
            .await
            .unwrap();
        assert!(used.is_some(), "what was read answers this request");
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

        async fn find_context(
            &self,
            credential: &Credential,
        ) -> Result<Option<CredentialContext>, StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.find_context(credential).await
        }

        async fn find_client(
            &self,
            id: &CredentialId,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            self.inner.find_client(id).await
        }

        async fn find_access_token(
            &self,
            client: &CredentialId,
            jti: &CredentialId,
            grant: Option<&CredentialId>,
        ) -> Result<Option<AccessTokenRecord>, StoreError> {
            self.inner.find_access_token(client, jti, grant).await
        }
    }

    #[async_trait]
    impl SigningKeySource for Flaky {
        async fn signing_keys(&self) -> Result<Vec<crate::jwt::StoredSigningKey>, StoreError> {
            self.inner.signing_keys().await
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
            last_sign_in_at: None,
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
        assert_eq!(verified.principal().kind, PrincipalKind::User);
        assert_eq!(verified.principal().email, Some("ada@example.com"));
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
        assert_eq!(verified.principal().kind, PrincipalKind::AccountKey);
        assert!(verified.permissions.contains("users:write"));
        assert!(!verified.permissions.contains("tenants:write"));
    }

    /// A verifier that accepts access tokens, one signing key, and an OAuth client in the store.
    struct Oauth {
        f: Fixture,
        keys: Arc<KeyRing>,
        verifier: Verifier,
        client: CredentialRecord,
    }

    const ISSUER: &str = "https://keygate.example";
    /// The grant (refresh-token family) the test access tokens descend from, unless told.
    const GRANT: &str = "rft_0Grant";

    async fn oauth() -> Oauth {
        oauth_with(fixture()).await
    }

    async fn oauth_with(f: Fixture) -> Oauth {
        let keys = Arc::new(KeyRing::new(
            crate::keyring::KeyPolicy {
                issuer: ISSUER.into(),
                audiences: vec![ISSUER.into()],
                algorithm: crate::jwt::SigningAlgorithm::Es256,
                access_ttl: Duration::from_secs(900),
                rotate_after: None,
            },
            None,
        ));
        f.store.keys.lock().unwrap().push(
            crate::jwt::generate_key(crate::jwt::SigningAlgorithm::Es256, 1, NOW, None).unwrap(),
        );
        keys.reload(&*f.store, NOW).await.unwrap();
        let verifier = Verifier::new(
            f.format.clone(),
            Arc::new(Catalog::new(&["zones:read", "zones:write"]).unwrap()),
            f.store.clone(),
            f.cache.clone(),
            f.clock.clone(),
        )
        .with_access_tokens(keys.clone());
        let role = custom_role(&["zones:*", "tokens:read"]);
        let (_, client) = f.add(CredentialKind::OauthSecret, Some(role), None, None);
        Oauth {
            f,
            keys,
            verifier,
            client,
        }
    }

    impl Oauth {
        fn token(&self, scope: &str, lifetime: u64) -> (String, AccessClaims) {
            self.token_of(GRANT, scope, lifetime)
        }

        fn token_of(&self, grant: &str, scope: &str, lifetime: u64) -> (String, AccessClaims) {
            let claims = AccessClaims {
                iss: ISSUER.into(),
                aud: crate::jwt::Audience::new(vec![ISSUER.into()]).unwrap(),
                sub: self.client.credential.id.to_string(),
                client_id: self.client.credential.id.to_string(),
                tenant: self.client.tenant.id.to_string(),
                scope: scope.into(),
                iat: NOW.unix(),
                exp: NOW.unix() + i64::try_from(lifetime).unwrap(),
                jti: CredentialId::generate_for(CredentialKind::AccessToken, NOW)
                    .unwrap()
                    .to_string(),
                grant: Some(grant.into()),
            };
            (self.keys.sign(&claims).unwrap(), claims)
        }
    }

    #[tokio::test]
    async fn an_access_token_is_checked_once_then_answered_from_the_cache() {
        let o = oauth().await;
        let (token, claims) = o.token("zones:read tokens:read", 900);
        let verified = o.verifier.verify(&token).await.unwrap();
        assert_eq!(verified.principal().kind, PrincipalKind::OauthClient);
        assert_eq!(verified.principal().id, claims.sub);
        assert_eq!(verified.kind(), CredentialKind::AccessToken);
        assert_eq!(verified.id().as_str(), claims.jti);
        assert_eq!(verified.owner_id(), &o.client.credential.id);
        let granted: Vec<&str> = verified.permissions.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            granted,
            ["tokens:read", "zones:read"],
            "the scope, not the role"
        );
        let finds = o.f.finds();
        for _ in 0..5 {
            assert!(Arc::ptr_eq(
                &verified,
                &o.verifier.verify(&token).await.unwrap()
            ));
        }
        assert_eq!(o.f.finds(), finds, "a warm token never reaches the store");

        o.f.clock.advance(Duration::from_secs(900));
        assert!(matches!(
            o.verifier.verify(&token).await,
            Err(Refusal::Expired)
        ));
    }

    #[tokio::test]
    async fn deleting_the_client_stops_its_tokens_at_once() {
        let o = oauth().await;
        let (token, _) = o.token("zones:read", 900);
        o.verifier.verify(&token).await.unwrap();
        o.f.store.records.lock().unwrap().clear();
        assert!(o.verifier.verify(&token).await.is_ok(), "until told");
        o.f.cache
            .changed(&Change::Credential(o.client.credential.id.clone()));
        assert!(matches!(
            o.verifier.verify(&token).await,
            Err(Refusal::NotFound)
        ));
        let finds = o.f.finds();
        assert!(o.verifier.verify(&token).await.is_err());
        assert_eq!(
            o.f.finds(),
            finds,
            "a deleted client's token is remembered as unknown"
        );
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_and_its_neighbours_are_not() {
        let o = oauth().await;
        let (token, claims) = o.token("zones:read", 900);
        let (other, _) = o.token("zones:read", 900);
        o.verifier.verify(&token).await.unwrap();
        o.verifier.verify(&other).await.unwrap();
        let jti = CredentialId::parse_any(&claims.jti).unwrap();
        o.f.store.revoked.lock().unwrap().push(jti.clone());
        o.f.cache.changed(&Change::Credential(jti));
        assert!(matches!(
            o.verifier.verify(&token).await,
            Err(Refusal::Revoked)
        ));
        assert!(o.verifier.verify(&other).await.is_ok());
    }

    /// A grant revoked (its refresh token replayed, or revoked) ends every access token issued
    /// from it, cached or not, once the change naming its client arrives; another grant's stay.
    #[tokio::test]
    async fn a_revoked_grant_ends_its_access_tokens_and_no_others() {
        let o = oauth().await;
        let (first, _) = o.token("zones:read", 900);
        let (second, _) = o.token("zones:read", 900);
        let (other, _) = o.token_of("rft_0Other", "zones:read", 900);
        for token in [&first, &other] {
            o.verifier.verify(token).await.unwrap();
        }
        o.f.store
            .revoked
            .lock()
            .unwrap()
            .push(CredentialId::parse_any(GRANT).unwrap());
        o.f.cache
            .changed(&Change::Credential(o.client.credential.id.clone()));
        for token in [&first, &second] {
            assert!(matches!(
                o.verifier.verify(token).await,
                Err(Refusal::Revoked)
            ));
        }
        assert!(o.verifier.verify(&other).await.is_ok());
    }

    #[tokio::test]
    async fn forged_tampered_and_foreign_tokens_never_reach_the_store() {
        let o = oauth().await;
        let (token, _) = o.token("zones:read", 900);
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        // The same header and signature over claims widened to everything.
        let widened = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"scope":"zones:write"}"#,
        );
        let tampered = format!("{head}.{widened}.{signature}");
        let finds = o.f.finds();
        assert!(matches!(
            o.verifier.verify(&tampered).await,
            Err(Refusal::AccessToken(
                JwtRefusal::BadSignature | JwtRefusal::Malformed
            ))
        ));
        let stranger = KeyRing::new(o.keys.policy().clone(), None);
        let store = MapStore::default();
        store.keys.lock().unwrap().push(
            crate::jwt::generate_key(crate::jwt::SigningAlgorithm::Es256, 1, NOW, None).unwrap(),
        );
        stranger.reload(&store, NOW).await.unwrap();
        let (_, claims) = o.token("zones:read", 900);
        let foreign = stranger.sign(&claims).unwrap();
        assert!(matches!(
            o.verifier.verify(&foreign).await,
            Err(Refusal::AccessToken(JwtRefusal::UnknownKey))
        ));
        let expired = o.token("zones:read", 0).0;
        assert!(matches!(
            o.verifier.verify(&expired).await,
            Err(Refusal::Expired)
        ));
        assert_eq!(o.f.finds(), finds);
    }

    #[tokio::test]
    async fn expired_access_tokens_do_not_pile_up_in_the_cache() {
        let o = oauth_with(fixture_with(CredentialCache::with_access_token_limit(3))).await;
        let cached_before = o.f.cache.len();
        let (short, _) = o.token("zones:read", 60);
        let (long, _) = o.token("zones:read", 900);
        o.verifier.verify(&short).await.unwrap();
        o.verifier.verify(&long).await.unwrap();
        assert_eq!(o.f.cache.len(), cached_before + 2);
        o.f.clock.advance(Duration::from_secs(60));
        // The third insert sweeps: the expired token goes, the live one stays.
        let (third, _) = o.token("zones:read", 900);
        o.verifier.verify(&third).await.unwrap();
        assert_eq!(o.f.cache.len(), cached_before + 2);
        let finds = o.f.finds();
        o.verifier.verify(&long).await.unwrap();
        assert_eq!(o.f.finds(), finds, "the live one is still cached");
        // As many live ones as the limit: they all go, and come back on their next use.
        for _ in 0..3 {
            let (token, _) = o.token("zones:read", 900);
            o.verifier.verify(&token).await.unwrap();
        }
        assert!(o.f.cache.len() <= cached_before + 3);
        o.verifier.verify(&long).await.unwrap();
    }

    #[tokio::test]
    async fn a_verification_does_not_carry_a_misses_read_in_its_future() {
        // Every request's future holds a verification's, and is copied as it moves: the read a
        // miss makes is boxed when it is made, not carried by every hit.
        let f = fixture();
        let (text, _) = f.add(CredentialKind::Service, None, None, None);
        let hash = CredentialHash::of(&text);
        let verification = size_of_val(&f.verifier.verify_at(&text, NOW));
        let read = size_of_val(&Lookup::Stored.load(&f.verifier, &text, hash));
        assert!(verification < read, "{verification} bytes, a read {read}");
    }

    #[tokio::test]
    async fn a_full_cache_drops_the_least_recently_used_and_reads_them_again() {
        let f = fixture_with(CredentialCache::with_capacity(16));
        let mut texts = Vec::new();
        for _ in 0..16 {
            let (text, _) = f.add(CredentialKind::Service, None, None, None);
            let verified = f.verifier.verify(&text).await.unwrap();
            texts.push((text, verified));
        }
        assert_eq!(f.cache.len(), 16);
        // The first two are used last, the others in the order they came.
        for (i, (_, verified)) in texts.iter().enumerate() {
            let at = if i < 2 { 1_000 } else { i as i64 };
            let _ = verified.usage.note(NOW.unix() + at, None);
        }
        // One more is an insert into a full cache: an eighth (two) goes, the two used longest ago.
        let (extra, _) = f.add(CredentialKind::Service, None, None, None);
        f.verifier.verify(&extra).await.unwrap();
        assert_eq!(f.cache.len(), 15);
        assert_eq!(f.cache.evictions.load(Ordering::Relaxed), 2);
        let finds = f.finds();
        for (text, _) in &texts[..2] {
            f.verifier.verify(text).await.unwrap();
        }
        assert_eq!(f.finds(), finds, "the most recently used stayed");
        f.verifier.verify(&texts[2].0).await.unwrap();
        assert_eq!(
            f.finds(),
            finds + 1,
            "the least recently used is read again"
        );
        assert!(f.cache.len() <= 16);
    }
}
