//! A credential as verification resolved it: who it acts for, in which tenant, with which
//! permissions, from where, and whether it can be used at all.
//!
//! Values only: resolving a stored record into a [`Verified`] is pure, so the cache, the access
//! decision and the OAuth grants share these types without importing the verifier (the service in
//! [`crate::verify`]) or the store's traits.

use std::any::Any;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use serde::Serialize;

use crate::Timestamp;
use crate::allowlist::IpAllowlist;
use crate::credential::{CredentialHash, CredentialKind};
use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::jwt::AccessClaims;
use crate::model::{RateLimit, Role, Tenant, TenantStatus, UserStatus};
use crate::permission::{BuiltinRole, Catalog, PermissionSet};
use crate::reserve::QuotaOn;
use crate::share::{Derived, Interner};
use crate::store::{AccessTokenRecord, CredentialRecord, UsageOutcome};

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

/// Who a credential acts for, as [`Verified::principal`] reads it off the verification: a
/// user (personal tokens, sessions) or the credential itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub kind: PrincipalKind,
    pub id: &'a str,
    pub name: &'a str,
    pub email: Option<&'a str>,
}

/// The user a credential belongs to, kept with its verification.
#[derive(Debug)]
struct Person {
    id: UserId,
    name: Box<str>,
    email: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantSummary {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    /// Whether it was suspended when read: its own credentials are refused, while an ancestor
    /// may still act for it.
    pub suspended: bool,
}

impl From<&Tenant> for TenantSummary {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.clone(),
            name: tenant.name.clone(),
            slug: tenant.slug.as_str().to_owned(),
            suspended: tenant.status == crate::model::TenantStatus::Suspended,
        }
    }
}

/// What a credential has in common with every other of its tenant and role: held once and
/// shared (see [`crate::share`]), one pointer in each cached verification.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Membership {
    tenant: TenantSummary,
    /// The tenant and its ancestors: a change to any of them affects the credential.
    tenant_line: Vec<TenantId>,
    /// Its role (for a personal token, its user's).
    role_id: Option<RoleId>,
    /// What the role grants (an account key: the admin role's permissions).
    role_permissions: PermissionSet,
    /// What a front end derives from the tenant (forward-auth's tenant header), made once for
    /// every credential of this membership.
    rendered: Derived,
}

/// The memberships of cached verifications, one of each (equal values are the same value whoever
/// made them, so one set serves the whole process).
static MEMBERSHIPS: LazyLock<Interner<Membership>> = LazyLock::new(Interner::default);

/// `expires` of a credential that does not expire.
const NEVER: i64 = i64::MAX;

/// Why a credential that exists cannot be used, decided when it is read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Usable,
    Revoked,
    TenantSuspended,
    UserDisabled,
}

/// A credential as verification resolved it; shared by the cache and the requests using it.
///
/// A million cached credentials pay for every byte kept inline here: it is 176 bytes, so that
/// with its reference counts it takes the allocator's 192-byte size class. What credentials
/// share is behind pointers held once, what few have (a user, allowlists, limits) is behind one
/// optional box, and the credential's own fields are read through accessors ([`Verified::id`],
/// [`Verified::name`], [`Verified::kind`], [`Verified::expires_at`]).
#[derive(Debug)]
pub struct Verified {
    id: CredentialId,
    name: Box<str>,
    /// Unix seconds, [`NEVER`] if it does not expire.
    expires: i64,
    kind: CredentialKind,
    /// Its tenant and role, shared with the other cached credentials of both.
    membership: Arc<Membership>,
    /// What it acts as; [`Verified::principal`] says who.
    principal_kind: PrincipalKind,
    /// What the credential may do: its role's permissions, narrowed by its own list.
    pub permissions: PermissionSet,
    /// Allowlists, a rate limit, quotas, an access token's client: what most credentials lack,
    /// behind one pointer (`None` if it has none of them). A million cached credentials pay for
    /// every byte kept inline here.
    extras: Option<Box<Extras>>,
    /// When it was last used, kept here (two atomics per request) until written in a batch.
    pub usage: Usage,
    /// What a front end derives from this verification alone for its answers (`POST
    /// /v1/verify`'s body), made on first use and kept as long as the verification is cached.
    /// One word until then. What credentials derive alike is kept with what they share instead
    /// ([`Verified::tenant_rendered`], [`PermissionSet::rendered`]).
    rendered: Derived,
    standing: Standing,
    hash: CredentialHash,
}

/// The parts of a [`Verified`] few credentials have.
#[derive(Debug, Default)]
struct Extras {
    /// The token's own networks, if it is restricted.
    allowed_ips: Option<IpAllowlist>,
    /// The tenant's allowlist, if enabled.
    tenant_allowlist: Option<IpAllowlist>,
    rate_limit: Option<RateLimit>,
    /// The quotas each request spends from (API.md §13): the credential's own first, then its
    /// tenant's pool and each ancestor's, nearest first.
    quotas: Box<[QuotaOn]>,
    /// An access token's client: a change to it affects the token.
    client_id: Option<CredentialId>,
    /// The user it belongs to (personal tokens, sessions).
    person: Option<Person>,
}

impl Extras {
    /// `None` when there is nothing to keep.
    fn boxed(self) -> Option<Box<Self>> {
        let empty = self.allowed_ips.is_none()
            && self.tenant_allowlist.is_none()
            && self.rate_limit.is_none()
            && self.quotas.is_empty()
            && self.client_id.is_none()
            && self.person.is_none();
        (!empty).then(|| Box::new(self))
    }
}

impl Verified {
    /// Resolves a stored credential against the catalog: its principal, its effective permissions
    /// (role narrowed by the credential's own list) and whether it can be used at all.
    pub(crate) fn resolve(record: &CredentialRecord, catalog: &Catalog) -> Self {
        let credential = &record.credential;
        // Shared with every other cached credential of the same grant, not copied into each.
        let role_permissions = match (&record.role, credential.kind) {
            (_, CredentialKind::AccountKey) => catalog.builtin_role(BuiltinRole::Admin),
            (Some(role), _) => catalog.share(role_permissions(role, catalog)),
            (None, _) => PermissionSet::default(),
        };
        let permissions = match &credential.permissions {
            Some(narrowing) => {
                catalog.share(role_permissions.intersect(&catalog.expand(narrowing)))
            }
            None => role_permissions.clone(),
        };

        let principal_kind = match (credential.kind, &record.user) {
            (CredentialKind::Personal | CredentialKind::Session, Some(_)) => PrincipalKind::User,
            (CredentialKind::AccountKey, _) => PrincipalKind::AccountKey,
            (CredentialKind::OauthSecret, _) => PrincipalKind::OauthClient,
            _ => PrincipalKind::ServiceToken,
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
            id: credential.id.clone(),
            name: credential.name.as_str().into(),
            expires: credential.expires_at.map_or(NEVER, Timestamp::unix),
            kind: credential.kind,
            membership: MEMBERSHIPS.share(Arc::new(Membership {
                tenant: TenantSummary::from(&record.tenant),
                tenant_line: record.tenant.path.ids().collect(),
                role_id: record.role.as_ref().map(|role| role.id.clone()),
                role_permissions,
                rendered: Derived::default(),
            })),
            principal_kind,
            permissions,
            extras: Extras {
                allowed_ips: credential.allowed_ips.clone().map(IpAllowlist::new),
                tenant_allowlist: record.tenant.ip_restriction.enforced().cloned(),
                rate_limit: credential.rate_limit,
                quotas: credential
                    .quota
                    .iter()
                    .chain(
                        std::iter::once(&record.tenant)
                            .chain(&record.ancestors)
                            .filter_map(|t| t.quota.as_ref()),
                    )
                    .map(QuotaOn::from)
                    .collect(),
                client_id: None,
                person: record.user.as_ref().map(|user| Person {
                    id: user.id.clone(),
                    name: user.name.as_str().into(),
                    email: user.email.as_str().into(),
                }),
            }
            .boxed(),
            usage: Usage::default(),
            rendered: Derived::default(),
            standing,
            hash: credential.hash,
        }
    }

    /// What `make` derives from this verification, made on the first call and kept with it.
    /// One type per program: `None` if a different type was kept first.
    pub fn rendered<T: Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.rendered.get_or_init(|| make(self))
    }

    /// What `make` derives from the tenant, made once and kept for every cached credential of
    /// the same tenant and role. One type per program, as [`Verified::rendered`].
    pub fn tenant_rendered<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce(&TenantSummary) -> T,
    ) -> Option<&T> {
        let membership = &self.membership;
        membership.rendered.get_or_init(|| make(&membership.tenant))
    }

    /// Resolves an access token whose signature was checked: it acts as its client, with the
    /// client's permissions *now* narrowed to the token's scope, and lives until its `exp`.
    pub(crate) fn resolve_access_token(
        record: &AccessTokenRecord,
        claims: &AccessClaims,
        jti: CredentialId,
        hash: CredentialHash,
        catalog: &Catalog,
    ) -> Self {
        let client = Self::resolve(&record.client, catalog);
        let scope: Vec<&str> = claims.scope_items().collect();
        Self {
            id: jti,
            kind: CredentialKind::AccessToken,
            name: client.name.clone(),
            expires: claims.exp,
            permissions: catalog.share(client.permissions.only(&scope)),
            standing: if record.revoked {
                Standing::Revoked
            } else {
                client.standing
            },
            hash,
            extras: Extras {
                client_id: Some(client.id.clone()),
                ..client.extras.map(|extras| *extras).unwrap_or_default()
            }
            .boxed(),
            usage: Usage::default(),
            ..client
        }
    }

    /// Who the credential acts for: its user, or (service tokens, account keys, OAuth clients
    /// and their access tokens) the stored credential itself.
    pub fn principal(&self) -> Principal<'_> {
        match (self.principal_kind, self.person()) {
            (PrincipalKind::User, Some(person)) => Principal {
                kind: PrincipalKind::User,
                id: person.id.as_str(),
                name: &person.name,
                email: Some(&person.email),
            },
            (kind, _) => Principal {
                kind,
                id: self.owner_id().as_str(),
                name: &self.name,
                email: None,
            },
        }
    }

    /// The user the credential belongs to, if it is a user's.
    pub fn user_id(&self) -> Option<&UserId> {
        self.person().map(|person| &person.id)
    }

    fn person(&self) -> Option<&Person> {
        self.extras.as_ref()?.person.as_ref()
    }

    /// The stored credential this one stands for, which rate limits and `last_used_at` count
    /// against: an access token's client, else the credential itself.
    pub fn owner_id(&self) -> &CredentialId {
        self.client_id().unwrap_or(&self.id)
    }

    /// The credential's id (an access token's: its `jti`).
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The credential's name (an access token's: its client's).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        (self.expires != NEVER).then(|| Timestamp::from_unix(self.expires))
    }

    /// The tenant it belongs to.
    pub fn tenant(&self) -> &TenantSummary {
        &self.membership.tenant
    }

    /// What its role grants before narrowing (for a personal token, the user's role; for an
    /// account key, the admin role's).
    pub fn role_permissions(&self) -> &PermissionSet {
        &self.membership.role_permissions
    }

    /// An access token's client.
    pub(crate) fn client_id(&self) -> Option<&CredentialId> {
        self.extras.as_ref()?.client_id.as_ref()
    }

    /// Every id that a change could name and affect this verification by: its own, its client's,
    /// and those of its context.
    pub(crate) fn ids_depended_on(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str())
            .chain(self.client_id().map(CredentialId::as_str))
            .chain(self.context_ids())
    }

    /// The ids of its context that a change could name: its user's, its role's and its tenant
    /// line's ([`Self::user_id`], [`Self::role_id`], [`Self::is_within`]).
    pub(crate) fn context_ids(&self) -> impl Iterator<Item = &str> {
        self.user_id()
            .map(UserId::as_str)
            .into_iter()
            .chain(self.role_id().map(RoleId::as_str))
            .chain(self.tenant_line().iter().map(TenantId::as_str))
    }

    /// Its role's id (for a personal token, its user's role).
    pub(crate) fn role_id(&self) -> Option<&RoleId> {
        self.membership.role_id.as_ref()
    }

    /// The token's own networks, if it is restricted.
    pub fn allowed_ips(&self) -> Option<&IpAllowlist> {
        self.extras.as_ref()?.allowed_ips.as_ref()
    }

    /// The tenant's allowlist, if enabled.
    pub fn tenant_allowlist(&self) -> Option<&IpAllowlist> {
        self.extras.as_ref()?.tenant_allowlist.as_ref()
    }

    /// The credential's own rate limit, if it has one.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.extras.as_ref()?.rate_limit
    }

    /// The quotas each request spends from (API.md §13): the credential's own first, then its
    /// tenant's pool and each ancestor's, nearest first.
    pub fn quotas(&self) -> &[QuotaOn] {
        self.extras.as_ref().map_or(&[], |extras| &extras.quotas)
    }

    /// Why the credential may not be used at `now`, if it may not.
    pub fn unusable_at(&self, now: Timestamp) -> Option<Unusable> {
        match self.standing {
            Standing::Revoked => Some(Unusable::Revoked),
            Standing::TenantSuspended => Some(Unusable::TenantSuspended),
            Standing::UserDisabled => Some(Unusable::UserDisabled),
            Standing::Usable => (self.expires <= now.unix()).then_some(Unusable::Expired),
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

/// A credential's requests, noted on every one and taken by the batch that writes them: its last
/// use (`last_used_at`, `last_used_ip`) and how many requests it made per minute and outcome
/// (API.md §12).
///
/// Counting costs a request two atomic operations on this credential's own counters (no lock,
/// no allocation). The counters hold two minutes, by the minute's parity: the one requests are
/// counting into, and the one before it, which the batch empties within seconds. A slot is reused
/// two minutes later; the request that finds it holding an older minute (a batch that could not
/// run, a store out) empties it, hands those counts to its caller ([`Counted::spilled`]) and
/// claims the slot; so does a request that wraps a 16-bit counter, with the 65 536 it held. While a slot is being emptied (by that request or by the batch) its tag reads
/// [`MOVING`], and the other requests of the same credential wait the few instructions it takes.
///
/// 64 bytes, kept in every cached credential: what is rare (spilled counts) is the caller's to
/// keep, times are 32-bit seconds, counters 16 bits, and the address's lock is one byte.
#[derive(Debug, Default)]
pub struct Usage {
    /// Unix seconds (32 bits last until 2106), 0 before the first admitted request.
    last_used: std::sync::atomic::AtomicU32,
    /// Written with `try_lock`, never waited for: when two requests of one credential note their
    /// address at the same instant, either is the latest.
    last_ip: parking_lot::Mutex<Option<IpAddr>>,
    pending: std::sync::atomic::AtomicBool,
    minutes: [MinuteCounts; 2],
}

const OUTCOMES: usize = UsageOutcome::ALL.len();
/// A slot's tag while its counts are being moved out.
const MOVING: u32 = u32::MAX;
/// A slot's tag before its first request.
const EMPTY: u32 = 0;

/// One minute's requests per outcome; `minute` is the minute's number (unix seconds / 60: 32 bits
/// last until the year 10 000).
#[derive(Debug, Default)]
struct MinuteCounts {
    minute: std::sync::atomic::AtomicU32,
    /// 16 bits, kept for every cached credential: a batch takes them within seconds, and the
    /// request that wraps one (the 65 536th since it was taken) hands the 65 536 to its caller
    /// as spilled counts ([`WRAP`]), so no count is lost however busy the credential.
    counts: [std::sync::atomic::AtomicU16; OUTCOMES],
}

/// What a counter held when it wrapped to 0.
const WRAP: u64 = 1 << 16;

impl MinuteCounts {
    /// Claims the slot (its tag `MOVING`) if it is tagged `tag`, empties it, and tags it
    /// `then`; the counts it held, or `None` if another thread claimed it first.
    fn empty_if(&self, tag: u32, then: u32) -> Option<[u64; OUTCOMES]> {
        use std::sync::atomic::Ordering;
        self.minute
            .compare_exchange(tag, MOVING, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let taken = std::array::from_fn(|i| u64::from(self.counts[i].swap(0, Ordering::AcqRel)));
        self.minute.store(then, Ordering::Release);
        Some(taken)
    }
}

/// A minute's counts as (minute start, outcome, count), none of them zero.
pub type MinuteCount = (Timestamp, UsageOutcome, u64);

/// What [`Usage::count`] did beside counting.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Counted {
    /// The credential was not waiting to be written yet: the caller should queue it.
    pub queue: bool,
    /// The counts of an older minute that no batch took before its slot was needed again, no
    /// longer kept here: the caller's to write. Empty (no allocation) but when a batch fell
    /// two minutes behind.
    pub spilled: Vec<MinuteCount>,
}

impl Usage {
    /// Notes an admitted request at `now` (unix seconds) from `ip`: counted as `valid`, and the
    /// credential's last use.
    pub fn note(&self, now: i64, ip: Option<IpAddr>) -> Counted {
        self.set_last_use(now, ip);
        self.count(now, UsageOutcome::Valid)
    }

    /// Notes a last use again without counting a request (a batch that could not write it);
    /// `true` if the credential should be queued.
    pub fn remember(&self, at: i64, ip: Option<IpAddr>) -> bool {
        self.set_last_use(at, ip);
        !self.pending.swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// The latest admitted request noted, in unix seconds; 0 if none since it was loaded.
    pub fn last_used(&self) -> i64 {
        i64::from(self.last_used.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set_last_use(&self, now: i64, ip: Option<IpAddr>) {
        // Before 1970 is its first second, after 2106 its last.
        let seconds = u32::try_from(now.max(0)).unwrap_or(u32::MAX);
        self.last_used
            .fetch_max(seconds, std::sync::atomic::Ordering::Relaxed);
        if let Some(ip) = ip
            && let Some(mut last) = self.last_ip.try_lock()
        {
            *last = Some(ip);
        }
    }

    /// Counts a request at `now` with `outcome`.
    pub fn count(&self, now: i64, outcome: UsageOutcome) -> Counted {
        use std::sync::atomic::Ordering;
        let minute = minute_of(now);
        let slot = &self.minutes[(minute % 2) as usize];
        let mut spilled = Vec::new();
        let mut spins = 0_u32;
        loop {
            match slot.minute.load(Ordering::Acquire) {
                tag if tag == minute => {
                    if slot.counts[outcome.index()].fetch_add(1, Ordering::Relaxed) == u16::MAX {
                        spilled.push((minute_start(minute), outcome, WRAP));
                    }
                    break;
                }
                MOVING => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                older => {
                    if let Some(taken) = slot.empty_if(older, minute)
                        && older != EMPTY
                    {
                        spilled.extend(nonzero(older, taken));
                    }
                }
            }
        }
        Counted {
            queue: !self.pending.swap(true, Ordering::AcqRel),
            spilled,
        }
    }

    /// Everything noted since the last take, no longer waiting to be written: the latest use and
    /// its address, and the counts, none of them zero.
    pub fn take(&self) -> Taken {
        use std::sync::atomic::Ordering;
        self.pending.store(false, Ordering::Release);
        let ip = *self.last_ip.lock();
        let mut counts = Vec::new();
        for slot in &self.minutes {
            loop {
                match slot.minute.load(Ordering::Acquire) {
                    EMPTY => break,
                    MOVING => std::hint::spin_loop(),
                    tag => {
                        if let Some(taken) = slot.empty_if(tag, tag) {
                            counts.extend(nonzero(tag, taken));
                            break;
                        }
                    }
                }
            }
        }
        let last_used = self.last_used();
        Taken {
            last_used: (last_used > 0).then(|| Timestamp::from_unix(last_used)),
            ip,
            counts,
        }
    }
}

/// The number of the minute `now` (unix seconds) falls in; times before 1970 count as its first
/// minute.
fn minute_of(now: i64) -> u32 {
    u32::try_from(now.div_euclid(60)).unwrap_or(EMPTY)
}

/// When minute number `minute` starts.
fn minute_start(minute: u32) -> Timestamp {
    Timestamp::from_unix(i64::from(minute) * 60)
}

/// Minute `minute`'s counts that are not zero.
fn nonzero(minute: u32, counts: [u64; OUTCOMES]) -> impl Iterator<Item = MinuteCount> {
    let start = minute_start(minute);
    UsageOutcome::ALL
        .into_iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(move |(outcome, n)| (start, outcome, n))
}

/// What [`Usage::take`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The latest admitted request, if there was one since the credential was loaded.
    pub last_used: Option<Timestamp>,
    pub ip: Option<IpAddr>,
    pub counts: Vec<MinuteCount>,
}

/// Why a credential that exists may not be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Expired,
    Revoked,
    TenantSuspended,
    UserDisabled,
}

impl Verified {
    /// Whether a request from `ip` may use this credential: inside the tenant's allowlist if it
    /// is enabled, and inside the token's own networks if it has any.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.tenant_allowlist().is_none_or(|list| list.covers(ip))
            && self.allowed_ips().is_none_or(|list| list.covers(ip))
    }

    /// Whether the credential may be used at `now`: not revoked, suspended, disabled or expired.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.unusable_at(now).is_none()
    }

    /// Whether the credential belongs to `tenant` or one of its descendants.
    pub fn is_within(&self, tenant: &TenantId) -> bool {
        self.tenant_line().contains(tenant)
    }

    /// Its tenant and that tenant's ancestors: a change to any of them affects it.
    pub(crate) fn tenant_line(&self) -> &[TenantId] {
        &self.membership.tenant_line
    }

    pub(crate) fn hash(&self) -> &CredentialHash {
        &self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_cached_verification_fits_the_192_byte_size_class() {
        // With the `Arc`'s two counts: 192 bytes, the allocator's class below 224. Every field
        // added here is paid a million times over.
        assert!(size_of::<Verified>() + 2 * size_of::<usize>() <= 192);
    }

    #[test]
    fn what_credentials_derive_alike_is_made_once_for_all_of_them() {
        let catalog = crate::testing::catalog();
        let record = crate::testing::record(CredentialKind::Service, BuiltinRole::Viewer, None);
        let mut sibling = record.clone();
        (sibling.credential, _) = crate::model::Credential::issue(
            &crate::testing::format(),
            CredentialKind::Service,
            record.tenant.id.clone(),
            "sibling".into(),
            None,
            crate::testing::NOW,
        )
        .unwrap();
        sibling.credential.role_id = record.credential.role_id.clone();
        let (one, other) = (
            Verified::resolve(&record, &catalog),
            Verified::resolve(&sibling, &catalog),
        );
        assert_ne!(one.id(), other.id());

        // The tenant's value: made once, for both credentials of the tenant and role.
        let tenant = |v: &Verified| v.tenant_rendered(|t| t.id.to_string()).unwrap().as_ptr();
        assert_eq!(tenant(&one), tenant(&other));
        assert!(
            other
                .tenant_rendered(|_| -> String { unreachable!() })
                .is_some()
        );
        // The permission list's: made once, for both holders of the set.
        let list = |v: &Verified| {
            let made = v.permissions.rendered(|set| format!("{set:?}"));
            made.unwrap().as_ptr()
        };
        assert_eq!(list(&one), list(&other));
        // Neither took the credential's own slot, which stays free for what is its alone.
        assert_eq!(
            one.rendered(|v| v.id().to_string()),
            Some(&one.id().to_string())
        );
        assert_ne!(
            one.rendered(|v| v.id().to_string()),
            other.rendered(|v| v.id().to_string())
        );
    }

    const T: i64 = 1_790_000_040; // a whole minute

    fn total(taken: &Taken) -> u64 {
        taken.counts.iter().map(|(_, _, n)| n).sum()
    }

    #[test]
    fn requests_are_counted_per_minute_and_outcome_and_taken_once() {
        let usage = Usage::default();
        assert!(
            usage.note(T, None).queue,
            "the first request queues the credential"
        );
        assert!(!usage.note(T + 1, None).queue, "later ones do not");
        assert_eq!(
            usage.count(T + 2, UsageOutcome::Expired),
            Counted::default()
        );
        assert_eq!(
            usage.count(T + 61, UsageOutcome::RateLimited),
            Counted::default()
        );
        let taken = usage.take();
        assert_eq!(taken.last_used, Some(Timestamp::from_unix(T + 1)));
        let mut counts = taken.counts.clone();
        counts.sort();
        assert_eq!(
            counts,
            [
                (Timestamp::from_unix(T), UsageOutcome::Valid, 2),
                (Timestamp::from_unix(T), UsageOutcome::Expired, 1),
                (Timestamp::from_unix(T + 60), UsageOutcome::RateLimited, 1),
            ]
        );
        assert_eq!(total(&usage.take()), 0, "taken once");
        assert!(
            usage.count(T + 62, UsageOutcome::Valid).queue,
            "queued again after a take"
        );
    }

    #[test]
    fn a_minute_not_yet_taken_survives_its_slot_being_reused() {
        let usage = Usage::default();
        let _ = usage.count(T, UsageOutcome::Forbidden);
        let _ = usage.count(T + 1, UsageOutcome::Valid);
        let _ = usage.count(T + 60, UsageOutcome::Valid);
        // Two minutes on, minute T's slot is needed again before any batch ran: its counts go
        // to the request's caller, to be kept until the next batch.
        let third = usage.count(T + 120, UsageOutcome::Valid);
        assert_eq!(
            third.spilled,
            [
                (Timestamp::from_unix(T), UsageOutcome::Valid, 1),
                (Timestamp::from_unix(T), UsageOutcome::Forbidden, 1),
            ]
        );
        assert!(!third.queue, "still waiting from the first request");
        let fourth = usage.count(T + 180, UsageOutcome::Valid);
        assert_eq!(
            fourth.spilled,
            [(Timestamp::from_unix(T + 60), UsageOutcome::Valid, 1)]
        );
        let mut counts = usage.take().counts;
        counts.sort();
        assert_eq!(
            counts,
            [
                (Timestamp::from_unix(T + 120), UsageOutcome::Valid, 1),
                (Timestamp::from_unix(T + 180), UsageOutcome::Valid, 1),
            ]
        );
    }

    #[test]
    fn a_counter_that_wraps_hands_its_65_536_to_the_caller() {
        let usage = Usage::default();
        let spilled: Vec<_> = (0..65_541)
            .flat_map(|_| usage.count(T, UsageOutcome::RateLimited).spilled)
            .collect();
        assert_eq!(
            spilled,
            [(Timestamp::from_unix(T), UsageOutcome::RateLimited, 65_536)],
            "the request that wrapped the counter"
        );
        assert_eq!(
            usage.take().counts,
            [(Timestamp::from_unix(T), UsageOutcome::RateLimited, 5)]
        );
    }

    #[test]
    fn counters_wrapped_by_concurrent_requests_lose_and_double_nothing() {
        let usage = Arc::new(Usage::default());
        const THREADS: u64 = 4;
        const EACH: u64 = 100_000;
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let usage = Arc::clone(&usage);
                std::thread::spawn(move || {
                    (0..EACH)
                        .flat_map(|_| usage.count(T, UsageOutcome::Valid).spilled)
                        .map(|(_, _, n)| n)
                        .sum::<u64>()
                })
            })
            .collect();
        let spilled: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(spilled, THREADS * EACH / 65_536 * 65_536);
        assert_eq!(spilled + total(&usage.take()), THREADS * EACH);
    }

    #[test]
    fn refusals_alone_are_no_last_use() {
        let usage = Usage::default();
        let _ = usage.count(T, UsageOutcome::Revoked);
        assert_eq!(usage.take().last_used, None);
    }

    #[test]
    fn concurrent_requests_and_batches_lose_and_double_nothing() {
        let usage = Arc::new(Usage::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        const THREADS: i64 = 4;
        const EACH: i64 = 50_000;
        let taker = {
            let (usage, stop) = (Arc::clone(&usage), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut taken = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    taken += total(&usage.take());
                }
                taken + total(&usage.take())
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let usage = Arc::clone(&usage);
                std::thread::spawn(move || {
                    let mut spilled = 0;
                    for i in 0..EACH {
                        // Minutes move on under the batches, through both slots and past them.
                        let now = T + (i * 600 / EACH) + t;
                        let outcome = UsageOutcome::ALL[(i % 7) as usize];
                        let counted = usage.count(now, outcome);
                        spilled += counted.spilled.iter().map(|(_, _, n)| n).sum::<u64>();
                    }
                    spilled
                })
            })
            .collect();
        let spilled: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(taker.join().unwrap() + spilled, (THREADS * EACH) as u64);
    }
}
