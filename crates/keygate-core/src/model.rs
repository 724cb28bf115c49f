//! The records keygate keeps: tenants, users, roles, credentials and audit events.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::allowlist::IpAllowlist;
use crate::credential::{CredentialFormat, CredentialHash, CredentialKind, Secret};
use crate::id::{CredentialId, EventId, RoleId, TenantId, UserId};
use crate::quota::StoredQuota;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            _ => None,
        }
    }
}

/// A customer, or a reseller's sub-customer (a child tenant). The root tenant has no parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub parent_id: Option<TenantId>,
    pub name: String,
    pub slug: Slug,
    pub status: TenantStatus,
    pub ip_restriction: IpRestriction,
    /// The tenant's place in the tree: every ancestor's id, readable in one step.
    pub path: TenantPath,
    pub created_at: Timestamp,
    /// The pool its credentials and its descendants' share (API.md §13), set by an ancestor.
    pub quota: Option<StoredQuota>,
    /// What its leaked credentials come to (API.md §15).
    pub leak_policy: LeakPolicy,
}

/// What a tenant does with its credentials reported as leaked (`leak_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakPolicy {
    /// Revoke the credential at once (the default).
    #[default]
    Revoke,
    /// Leave it working and only tell the tenant (audit event, webhook).
    Notify,
}

impl LeakPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Notify => "notify",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "revoke" => Some(Self::Revoke),
            "notify" => Some(Self::Notify),
            _ => None,
        }
    }
}

/// The deepest a reseller tree may go (the root is depth 1).
pub const MAX_TENANT_DEPTH: usize = 16;

/// The ids from the root down to a tenant, as `/tnt_root/tnt_child/`. Kept on the tenant's row, so
/// verification learns a credential's whole tenant line without walking the tree, and a subtree is
/// one index range (see [`TenantPath::subtree`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantPath(String);

impl TenantPath {
    pub fn root(id: &TenantId) -> Self {
        Self(format!("/{id}/"))
    }

    pub fn child(&self, id: &TenantId) -> Self {
        Self(format!("{}{id}/", self.0))
    }

    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ids on the path, root first, this tenant last.
    pub fn ids(&self) -> impl Iterator<Item = TenantId> + '_ {
        self.0
            .split('/')
            .filter(|part| !part.is_empty())
            .map(|part| TenantId::from_trusted(part.to_owned()))
    }

    pub fn depth(&self) -> usize {
        self.ids().count()
    }

    /// Whether this tenant is `ancestor` or below it.
    pub fn is_within(&self, ancestor: &TenantPath) -> bool {
        self.0.starts_with(&ancestor.0)
    }

    /// Whether this tenant is strictly below `ancestor` (a child, grandchild, …).
    pub fn is_strictly_below(&self, ancestor: &TenantPath) -> bool {
        self.is_within(ancestor) && self.0.len() > ancestor.0.len()
    }

    /// The half-open range of paths in this tenant's subtree (itself included): `path` up to the
    /// same with its final `/` replaced by the next character, `0`.
    pub fn subtree(&self) -> (String, String) {
        let upper = format!("{}0", &self.0[..self.0.len().saturating_sub(1)]);
        (self.0.clone(), upper)
    }
}

/// A tenant's IP restriction (API.md §6): when enabled, its credentials only work from addresses
/// its allowlist covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRestriction {
    pub enabled: bool,
    pub allowlist: IpAllowlist,
}

impl IpRestriction {
    /// The allowlist, if it is enforced.
    pub fn enforced(&self) -> Option<&IpAllowlist> {
        self.enabled.then_some(&self.allowlist)
    }
}

/// A tenant's slug: its realm in `Basic` auth and `Realm` headers, so it must be safe there:
/// 1 to 63 lowercase ASCII letters, digits and inner `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a valid slug: use 1 to 63 lowercase letters, digits and `-`, not at either end"
)]
pub struct BadSlug(pub String);

impl Slug {
    /// The root tenant's slug.
    pub fn root() -> Self {
        Self("root".to_owned())
    }

    pub fn parse(text: &str) -> Result<Self, BadSlug> {
        let valid = (1..=63).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(BadSlug(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = BadSlug;
    fn try_from(text: String) -> Result<Self, BadSlug> {
        Slug::parse(&text)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// The form of an email address that uniqueness and sign-in compare: emails are unique
/// case-insensitively (API.md §3), so `Ada@Example.com` and `ada@example.com` are one address.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A person who signs in with email and password.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub name: String,
    pub role_id: RoleId,
    pub status: UserStatus,
    pub created_at: Timestamp,
    /// When a session was last made for them; `None` before the first.
    pub last_sign_in_at: Option<Timestamp>,
}

/// A named set of permission patterns. Built-in roles (`tenant_id` none) have no stored patterns:
/// what they grant is computed from the catalog (see `Catalog::builtin_role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: RoleId,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
}

/// A per-credential rate limit: `requests` per `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// A stored credential: everything about it but its value, of which only the hash is kept.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: CredentialId,
    pub tenant_id: TenantId,
    pub kind: CredentialKind,
    pub hash: CredentialHash,
    pub hint: String,
    pub name: String,
    pub description: Option<String>,
    /// The user a personal token or session belongs to.
    pub user_id: Option<UserId>,
    /// Who created it (a user or credential id); kept after the creator is gone.
    pub created_by: Option<String>,
    /// The explicit role of a service token or OAuth client.
    pub role_id: Option<RoleId>,
    /// Patterns narrowing what the credential's role grants.
    pub permissions: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<IpNet>>,
    pub rate_limit: Option<RateLimit>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked, when not by its owner's hand (`leaked`).
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<Timestamp>,
    /// The client address of that last use, when it was known.
    pub last_used_ip: Option<std::net::IpAddr>,
    /// The token this one replaced by a roll (API.md §14).
    pub rolled_from: Option<CredentialId>,
    /// The token that replaced this one by a roll.
    pub rolled_to: Option<CredentialId>,
    /// An OAuth client's secret before its last roll, which keeps working for the overlap.
    pub previous_secret: Option<PreviousSecret>,
    /// A token's or an OAuth client's quota (API.md §13).
    pub quota: Option<StoredQuota>,
}

/// The secret a roll replaced (API.md §14): its hash, and until when it still authenticates.
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    pub hash: CredentialHash,
    pub until: Timestamp,
}

impl Credential {
    /// A new credential of `kind` in `tenant`, with its secret (to show once; only its hash is
    /// kept). Everything a kind adds (owner, role, narrowing, networks, expiry) is set on the
    /// result.
    pub fn issue(
        format: &CredentialFormat,
        kind: CredentialKind,
        tenant_id: TenantId,
        name: String,
        created_by: Option<String>,
        now: Timestamp,
    ) -> Result<(Self, Secret), getrandom::Error> {
        let secret = format.generate(kind)?;
        let credential = Self {
            id: CredentialId::generate_for(kind, now)?,
            tenant_id,
            kind,
            hash: secret.hash(),
            hint: secret.hint(),
            name,
            description: None,
            user_id: None,
            created_by,
            role_id: None,
            permissions: None,
            allowed_ips: None,
            rate_limit: None,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
            last_used_at: None,
            last_used_ip: None,
            rolled_from: None,
            rolled_to: None,
            previous_secret: None,
            quota: None,
        };
        Ok((credential, secret))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Who did something: a principal type (`user`, `service_token`, `system`, …) and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: &'static str,
    pub id: String,
}

/// A typed reference to the object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static str,
    pub id: String,
}

/// One audit record (API.md §8). Written in the same transaction as the change it records.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: EventId,
    pub time: Timestamp,
    pub tenant_id: TenantId,
    pub acting_tenant_id: Option<TenantId>,
    pub actor: Actor,
    pub token_id: Option<CredentialId>,
    pub action: &'static str,
    pub target: Option<Target>,
    pub outcome: Outcome,
    pub status: u16,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// What webhooks are told beyond ids (a name, a reason, a source URL): never a secret. Not
    /// part of the audit log's own record.
    pub detail: Vec<(&'static str, serde_json::Value)>,
}

/// Where a request comes from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl AuditEvent {
    /// A successful event (200) in `tenant_id`, by `actor` with credential `token_id`, from the
    /// request `meta` describes. The rest is set with the methods below.
    pub fn new(
        tenant_id: TenantId,
        actor: Actor,
        token_id: Option<CredentialId>,
        action: &'static str,
        target: Option<Target>,
        time: Timestamp,
        meta: &RequestMeta,
    ) -> Result<Self, getrandom::Error> {
        Ok(Self {
            id: EventId::generate(time)?,
            time,
            tenant_id,
            acting_tenant_id: None,
            actor,
            token_id,
            action,
            target,
            outcome: Outcome::Success,
            status: 200,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
            detail: Vec::new(),
        })
    }

    /// A detail for the webhook message this event becomes (API.md §15); never a secret.
    pub fn with_detail(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.push((key, value.into()));
        self
    }

    /// Done inside `tenant`, a descendant of the actor's own (`as-tenant`).
    pub fn acting_in(mut self, tenant: Option<TenantId>) -> Self {
        self.acting_tenant_id = tenant;
        self
    }

    /// How it ended, when not in success.
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The status the request answers with, when it is not 200.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

impl Outcome {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// An audit event as the store gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub time: Timestamp,
    pub tenant_id: String,
    pub acting_tenant_id: Option<String>,
    pub actor_type: String,
    pub actor_id: String,
    pub token_id: Option<String>,
    pub action: String,
    /// `(type, id)`.
    pub target: Option<(String, String)>,
    pub outcome: Outcome,
    pub status: u16,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// How many identical refusals this event stands for (1 for every change).
    pub count: u32,
    /// What the change recorded beyond ids (a name, a reason, a source URL), if anything.
    pub detail: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_realm_safe() {
        for good in ["root", "acme-corp", "a", "x1"] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Root",
            "-acme",
            "acme-",
            "a_b",
            "a b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn paths_know_their_ancestry_and_subtree() {
        let now = Timestamp::from_unix(1_800_000_000);
        let root_id = TenantId::generate(now).unwrap();
        let child_id = TenantId::generate(now).unwrap();
        let other_id = TenantId::generate(now).unwrap();
        let root = TenantPath::root(&root_id);
        let child = root.child(&child_id);
        let other = root.child(&other_id);
        assert_eq!(
            child.ids().collect::<Vec<_>>(),
            [root_id.clone(), child_id.clone()]
        );
        assert_eq!(child.depth(), 2);
        assert!(child.is_strictly_below(&root) && child.is_within(&root));
        assert!(root.is_within(&root) && !root.is_strictly_below(&root));
        assert!(!child.is_within(&other) && !root.is_within(&child));
        let (low, high) = root.subtree();
        for inside in [&root, &child, &other] {
            assert!(inside.as_str() >= low.as_str() && inside.as_str() < high.as_str());
        }
        let (low, high) = child.subtree();
        assert!(!(other.as_str() >= low.as_str() && other.as_str() < high.as_str()));
    }
}
