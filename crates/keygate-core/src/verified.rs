//! A credential as verification resolved it: who it acts for, in which tenant, with which
//! permissions, from where, and whether it can be used at all.
//!
//! Values only: resolving a stored record into a [`Verified`] is pure, so the cache, the access
//! decision and the OAuth grants share these types without importing the verifier (the service in
//! [`crate::verify`]) or the store's traits.

use std::any::Any;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::Serialize;

use crate::Timestamp;
use crate::allowlist::IpAllowlist;
use crate::credential::{CredentialHash, CredentialKind};
use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::jwt::AccessClaims;
use crate::model::{RateLimit, Role, Tenant, TenantStatus, UserStatus};
use crate::permission::{BuiltinRole, Catalog, PermissionSet};
use crate::store::{AccessTokenRecord, CredentialRecord};

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
    /// An access token's client: a change to it affects the token.
    pub(crate) client_id: Option<CredentialId>,
}

impl Verified {
    /// Resolves a stored credential against the catalog: its principal, its effective permissions
    /// (role narrowed by the credential's own list) and whether it can be used at all.
    pub(crate) fn resolve(record: &CredentialRecord, catalog: &Catalog) -> Self {
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
            client_id: None,
        }
    }

    /// What `make` derives from this verification, made on the first call and kept with it.
    /// One type per program: `None` if a different type was kept first.
    pub fn rendered<T: Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.rendered
            .get_or_init(|| Box::new(make(self)))
            .downcast_ref()
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
            credential: CredentialSummary {
                id: jti,
                kind: CredentialKind::AccessToken,
                name: client.credential.name.clone(),
                expires_at: Some(Timestamp::from_unix(claims.exp)),
            },
            permissions: client.permissions.only(&scope),
            standing: if record.revoked {
                Standing::Revoked
            } else {
                client.standing
            },
            hash,
            client_id: Some(client.credential.id.clone()),
            usage: Usage::default(),
            ..client
        }
    }

    /// The stored credential this one stands for, which rate limits and `last_used_at` count
    /// against: an access token's client, else the credential itself.
    pub fn owner_id(&self) -> &CredentialId {
        self.client_id.as_ref().unwrap_or(&self.credential.id)
    }

    /// Whether a change to `credential` affects this verification.
    pub(crate) fn depends_on(&self, credential: &CredentialId) -> bool {
        self.credential.id == *credential || self.client_id.as_ref() == Some(credential)
    }

    /// Why the credential may not be used at `now`, if it may not.
    pub fn unusable_at(&self, now: Timestamp) -> Option<Unusable> {
        match self.standing {
            Standing::Revoked => Some(Unusable::Revoked),
            Standing::TenantSuspended => Some(Unusable::TenantSuspended),
            Standing::UserDisabled => Some(Unusable::UserDisabled),
            Standing::Usable => self
                .credential
                .expires_at
                .is_some_and(|expires_at| expires_at <= now)
                .then_some(Unusable::Expired),
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
/// `last_used_at` and `last_used_ip`.
#[derive(Debug, Default)]
pub struct Usage {
    last_used: std::sync::atomic::AtomicI64,
    /// Written with `try_lock`, never waited for: when two requests of one credential note their
    /// address at the same instant, either is the latest.
    last_ip: std::sync::Mutex<Option<IpAddr>>,
    pending: std::sync::atomic::AtomicBool,
}

impl Usage {
    /// Notes a use at `now` (unix seconds) from `ip`; `true` if the credential was not yet
    /// waiting to be written, so the caller should queue it.
    pub fn note(&self, now: i64, ip: Option<IpAddr>) -> bool {
        use std::sync::atomic::Ordering;
        self.last_used.fetch_max(now, Ordering::Relaxed);
        if let Some(ip) = ip
            && let Ok(mut last) = self.last_ip.try_lock()
        {
            *last = Some(ip);
        }
        !self.pending.swap(true, Ordering::AcqRel)
    }

    /// The latest use and its address, no longer waiting to be written.
    pub fn take(&self) -> (Timestamp, Option<IpAddr>) {
        use std::sync::atomic::Ordering;
        self.pending.store(false, Ordering::Release);
        let ip = *self.last_ip.lock().unwrap_or_else(|p| p.into_inner());
        (
            Timestamp::from_unix(self.last_used.load(Ordering::Relaxed)),
            ip,
        )
    }
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
        self.tenant_allowlist
            .as_ref()
            .is_none_or(|list| list.covers(ip))
            && self.allowed_ips.as_ref().is_none_or(|list| list.covers(ip))
    }

    /// Whether the credential may be used at `now`: not revoked, suspended, disabled or expired.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.unusable_at(now).is_none()
    }

    /// Whether the credential belongs to `tenant` or one of its descendants.
    pub fn is_within(&self, tenant: &TenantId) -> bool {
        self.tenant_line.contains(tenant)
    }

    pub(crate) fn hash(&self) -> &CredentialHash {
        &self.hash
    }
}
