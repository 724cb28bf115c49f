//! The storage traits. The store crate implements them once per database; nothing here knows SQL.
//!
//! Each operation that changes something is one transaction in the store, with its audit event
//! inside it, and tells the [`ChangeListener`] what it changed once it has committed, so caches are
//! dropped in the same code path as the change and cannot be forgotten by a handler.
//! Operations on a tenant's objects take a [`Grant`](crate::access::Grant): they cannot be called
//! without the access decision, and they scope their query to the grant's tenant.

use std::sync::Arc;

use async_trait::async_trait;
use futures_core::stream::BoxStream;

use crate::Timestamp;
use crate::access::{Grant, Scope, perm};
use crate::credential::{CredentialHash, CredentialKind};
use crate::id::{CredentialId, RoleId, TenantId, UserId};
use crate::jwt::StoredSigningKey;
use crate::model::{
    AuditEvent, Credential, IpRestriction, Outcome, Role, StoredEvent, Tenant, User,
};
use crate::oauth::{AuthenticatedClient, RefreshToken, Rotation};
use crate::password::PasswordHashString;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out; the request may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A unique field is taken; the payload names it (`slug`, `email`, …).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("the store already holds a root tenant")]
    AlreadyInitialized,
    /// Anything else: a bug or corrupt data. Logged, never shown to clients.
    #[error("store failure: {0}")]
    Internal(String),
}

/// What a committed change affected, for dropping cached verifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Credential(CredentialId),
    User(UserId),
    Role(RoleId),
    /// A tenant and, through it, every descendant.
    Tenant(TenantId),
    /// The keys access tokens are signed with (a key added, or one retired).
    SigningKeys,
}

impl Change {
    /// The change as a short message for other nodes (`c:tok_…`, `u:usr_…`, `r:rol_…`, `t:tnt_…`,
    /// `k:keys`).
    pub fn to_message(&self) -> String {
        match self {
            Change::Credential(id) => format!("c:{id}"),
            Change::User(id) => format!("u:{id}"),
            Change::Role(id) => format!("r:{id}"),
            Change::Tenant(id) => format!("t:{id}"),
            Change::SigningKeys => "k:keys".to_owned(),
        }
    }

    pub fn from_message(message: &str) -> Option<Self> {
        let (kind, id) = message.split_once(':')?;
        match kind {
            "c" => CredentialId::parse_any(id).map(Change::Credential),
            "u" => UserId::parse(id).map(Change::User),
            "r" => RoleId::parse(id).map(Change::Role),
            "t" => TenantId::parse(id).map(Change::Tenant),
            "k" if id == "keys" => Some(Change::SigningKeys),
            _ => None,
        }
    }
}

/// Told of every committed change; implemented by the verification cache.
pub trait ChangeListener: Send + Sync {
    fn changed(&self, change: &Change);

    /// Changes made on other nodes may be going unseen (the channel that carries them is down):
    /// stop trusting what was cached until [`Self::resynced`].
    fn may_have_missed_changes(&self) {}

    /// The channel is back: forget what was cached before it broke, and trust the cache again.
    fn resynced(&self) {}
}

/// Several listeners told of the same changes: the credential cache and the signing keys.
pub struct Listeners(pub Vec<Arc<dyn ChangeListener>>);

impl ChangeListener for Listeners {
    fn changed(&self, change: &Change) {
        self.0.iter().for_each(|l| l.changed(change));
    }

    fn may_have_missed_changes(&self) {
        self.0.iter().for_each(|l| l.may_have_missed_changes());
    }

    fn resynced(&self) {
        self.0.iter().for_each(|l| l.resynced());
    }
}

/// Everything verification needs to know about a credential, read in one go on a cache miss.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub credential: Credential,
    pub tenant: Tenant,
    /// The tenant's ancestors, nearest first: a suspended ancestor suspends its descendants.
    pub ancestors: Vec<Tenant>,
    /// The owner of a personal token or session.
    pub user: Option<User>,
    /// The role the credential acts with: the user's for personal tokens and sessions, the
    /// credential's own otherwise; none for account keys (they act as `admin`).
    pub role: Option<Role>,
}

/// What verifying an access token needs beyond its signature: its client, as
/// [`CredentialSource::find_credential`] reads a credential, and whether the token was revoked.
#[derive(Debug, Clone)]
pub struct AccessTokenRecord {
    pub client: CredentialRecord,
    pub revoked: bool,
}

/// The first tenant, its owner and its first service token, created together or not at all.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub tenant: Tenant,
    pub user: User,
    pub password_hash: PasswordHashString,
    pub token: Credential,
    pub event: AuditEvent,
}

/// A page request: at most `limit` items older than `cursor` (an id), newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;
}

/// One page of a list, and the cursor of the next page if there is one.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Which audit events a list shows: an event matches when it matches one value of every list
/// that is not empty, and `since <= time < until`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub token_ids: Vec<String>,
    pub actions: Vec<String>,
    pub actor_ids: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// Which tokens a list shows.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub kinds: Vec<CredentialKind>,
    /// `active`, `expired`, `revoked`.
    pub statuses: Vec<String>,
    pub user_ids: Vec<UserId>,
    pub ids: Vec<CredentialId>,
    /// Which users' personal tokens the caller may see.
    pub personal: PersonalTokens,
}

/// Whose personal tokens a list may show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PersonalTokens {
    #[default]
    All,
    /// Only this user's (the caller's own).
    OfUser(UserId),
    /// None: the caller is not a user and may not see users' tokens.
    Hidden,
}

/// A user as sign-in needs it: the user, their password hash, and whether their tenant line is
/// active.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    /// The slug of the user's tenant: the organization a person names when their address has
    /// accounts in several.
    pub organization: String,
    pub password_hash: PasswordHashString,
    pub tenant_active: bool,
    /// The user's tenant's allowlist, if enabled: a session from elsewhere would be useless.
    pub tenant_allowlist: Option<crate::allowlist::IpAllowlist>,
}

/// The outcome of deleting something that others may depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    NotFound,
    /// Still referenced (a role held by users or tokens).
    InUse,
}

/// What verification reads: the operations on the hot path's cold side.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The credential with this hash, with its tenant line, user and role.
    async fn find_credential(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<CredentialRecord>, StoreError>;

    /// The OAuth client `client` as [`Self::find_credential`] reads it, and whether the access
    /// token `jti` was revoked; `None` if there is no such client.
    async fn find_access_token(
        &self,
        client: &CredentialId,
        jti: &CredentialId,
    ) -> Result<Option<AccessTokenRecord>, StoreError>;

    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
}

#[async_trait]
pub trait Store: CredentialSource {
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Waits for in-flight work and closes every connection; later calls fail as unavailable.
    async fn close(&self);

    // The audit log. Changes write their events themselves, in their own transactions.

    /// Events that happened in the scope's tenant or below it, newest first.
    async fn list_events(
        &self,
        scope: &Scope,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Paged<StoredEvent>, StoreError>;

    /// The same selection as [`Store::list_events`], all of it, newest first, read as it is
    /// consumed rather than held in memory.
    fn export_events(
        &self,
        scope: &Scope,
        filter: &EventFilter,
    ) -> BoxStream<'static, Result<StoredEvent, StoreError>>;

    /// Writes refused requests, each with the number of identical refusals it stands for. Not a
    /// change: there is nothing to roll back with them.
    async fn record_refusals(&self, events: &[(AuditEvent, u32)]) -> Result<(), StoreError>;

    /// Deletes at most `limit` of the oldest events from before `before`; returns how many.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// Whether the store already holds a root tenant.
    async fn is_initialized(&self) -> Result<bool, StoreError>;

    /// Creates the root tenant, its owner and its first token in one transaction; refuses with
    /// [`StoreError::AlreadyInitialized`] and changes nothing if the store is not empty.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> Result<(), StoreError>;

    // Tenants. A scope sees its own tenant and every tenant below it.

    /// The tenant with this id or slug, if it is the scope's tenant or below it.
    async fn get_tenant(
        &self,
        scope: &Scope,
        id_or_slug: &str,
    ) -> Result<Option<Tenant>, StoreError>;

    /// The children of `parent`, if `parent` is the scope's tenant or below it.
    async fn list_tenants(
        &self,
        scope: &Scope,
        parent: &TenantId,
        page: &Page,
    ) -> Result<Paged<Tenant>, StoreError>;

    /// Creates a child of the grant's tenant, with its first user if any, in one transaction.
    /// Fails with `AlreadyExists("slug")` or `AlreadyExists("email")`.
    async fn create_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        first_user: Option<(&User, &PasswordHashString)>,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// Writes a tenant's name and status; `None` if it is not in the grant's subtree.
    async fn update_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Deletes a tenant of the grant's subtree with its users, roles and credentials;
    /// `InUse` while it has child tenants.
    async fn delete_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        id: &TenantId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError>;

    // Roles. Built-in roles are visible in every tenant.

    async fn list_roles(&self, scope: &Scope, page: &Page) -> Result<Paged<Role>, StoreError>;

    /// A built-in role, or a custom role of the scope's tenant.
    async fn get_role(&self, scope: &Scope, id: &RoleId) -> Result<Option<Role>, StoreError>;

    /// Fails with `AlreadyExists("name")` if the tenant has a role of that name.
    async fn create_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Replaces a custom role's name and permissions; `None` if the tenant has no such role.
    async fn replace_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    async fn delete_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        id: &RoleId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError>;

    // Users.

    async fn list_users(&self, scope: &Scope, page: &Page) -> Result<Paged<User>, StoreError>;

    async fn get_user(&self, scope: &Scope, id: &UserId) -> Result<Option<User>, StoreError>;

    /// Fails with `AlreadyExists("email")` if the email is taken (case-insensitively).
    async fn create_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        user: &User,
        password_hash: &PasswordHashString,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Writes a user's name, role and status (and password, if given: then the user's sessions
    /// end, but for the one the event's credential is); `None` if not in scope.
    async fn update_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        user: &User,
        password_hash: Option<&PasswordHashString>,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Deletes a user with their personal tokens and sessions; service tokens they created stay.
    async fn delete_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        id: &UserId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// The accounts that may be signing in with this email (compared case-insensitively), in
    /// every tenant, or only in the tenant whose slug is `organization`; oldest first, at most
    /// `limit`. No grant: this is how a person gets a credential in the first place.
    async fn find_logins(
        &self,
        email: &str,
        organization: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Login>, StoreError>;

    // Tokens and sessions.

    async fn create_token(
        &self,
        grant: &Grant<perm::TokensWrite>,
        token: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Stores a session made by signing in.
    async fn create_session(
        &self,
        session: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Personal and service tokens of the scope's tenant, filtered; statuses are judged at `now`.
    async fn list_tokens(
        &self,
        scope: &Scope,
        filter: &TokenFilter,
        page: &Page,
        now: Timestamp,
    ) -> Result<Paged<Credential>, StoreError>;

    async fn get_token(
        &self,
        scope: &Scope,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError>;

    /// Revokes these tokens of the grant's tenant in one transaction, one event each (events
    /// pair with ids by position). Returns the ids that were active and are now revoked.
    async fn revoke_tokens(
        &self,
        grant: &Grant<perm::TokensWrite>,
        ids: &[CredentialId],
        at: Timestamp,
        events: &[AuditEvent],
    ) -> Result<Vec<CredentialId>, StoreError>;

    /// Ends a session (signing out). `None` if it was not an active session.
    async fn end_session(
        &self,
        id: &CredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    // Account keys and the IP restriction.

    /// The tenant's account keys, oldest first.
    async fn list_account_keys(&self, scope: &Scope) -> Result<Vec<Credential>, StoreError>;

    /// Adds a key unless the tenant already has `limit`; `false` if it has. Safe against
    /// concurrent creates: the tenant is locked while counting.
    async fn create_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        key: &Credential,
        limit: usize,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Deletes a key at once and for good; `None` if the tenant has no such key.
    async fn delete_account_key(
        &self,
        grant: &Grant<perm::KeysWrite>,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    async fn get_ip_restriction(&self, scope: &Scope) -> Result<IpRestriction, StoreError>;

    async fn set_ip_restriction(
        &self,
        grant: &Grant<perm::IpRestrictionWrite>,
        restriction: &IpRestriction,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Records when credentials were last used, in one batch, off the request path. Timestamps only
    /// move forward.
    async fn record_last_used(&self, uses: &[(CredentialId, Timestamp)]) -> Result<(), StoreError>;

    // OAuth clients.

    async fn create_client(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        client: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The tenant's clients, newest first.
    async fn list_clients(
        &self,
        scope: &Scope,
        page: &Page,
    ) -> Result<Paged<Credential>, StoreError>;

    async fn get_client(
        &self,
        scope: &Scope,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError>;

    /// Deletes a client for good, with its refresh tokens; its access tokens stop at once.
    /// `None` if the tenant has no such client.
    async fn delete_client(
        &self,
        grant: &Grant<perm::OauthClientsWrite>,
        id: &CredentialId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    // The token endpoint. The authenticated client scopes each operation to its own tokens.

    /// Stores the refresh token of a new grant, recording `event`.
    async fn issue_refresh_token(
        &self,
        client: &AuthenticatedClient,
        token: &RefreshToken,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The refresh token with this hash, whoever it belongs to.
    async fn find_refresh_token(
        &self,
        hash: &CredentialHash,
    ) -> Result<Option<RefreshToken>, StoreError>;

    /// Spends the client's refresh token `spent` and stores `replacement`, in one transaction. If
    /// `spent` can no longer be spent (a concurrent request spent it first), revokes its family
    /// instead, recording `refused`; else records `granted`.
    async fn rotate_refresh_token(
        &self,
        client: &AuthenticatedClient,
        spent: &CredentialId,
        replacement: &RefreshToken,
        refused: &AuditEvent,
        granted: &AuditEvent,
    ) -> Result<Rotation, StoreError>;

    /// Revokes every refresh token of the client's `family` that is not revoked yet, recording
    /// `event`; returns how many.
    async fn revoke_refresh_family(
        &self,
        client: &AuthenticatedClient,
        family: &CredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// Remembers that the client's access token `jti` is revoked until it expires, and drops it
    /// from every node's cache.
    async fn revoke_access_token(
        &self,
        client: &AuthenticatedClient,
        jti: &CredentialId,
        expires_at: Timestamp,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Deletes refresh tokens that expired before `before`; returns how many. Each grant stores
    /// one, so without this they would pile up for as long as the deployment lives.
    async fn delete_expired_refresh_tokens(&self, before: Timestamp) -> Result<u64, StoreError>;

    // Signing keys.

    /// Adds `key` as the newest signing key, retiring the others at `now` and deleting keys
    /// retired before `expired_before`. `false` (and nothing changed) if another key already has
    /// its generation: another node rotated first.
    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        now: Timestamp,
        expired_before: Timestamp,
    ) -> Result<bool, StoreError>;
}

/// A shared handle to whichever store is configured.
pub type DynStore = Arc<dyn Store>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;

    #[test]
    fn changes_travel_as_short_messages() {
        let now = Timestamp::from_unix(1_800_000_000);
        for change in [
            Change::Credential(CredentialId::generate_for(CredentialKind::Session, now).unwrap()),
            Change::User(UserId::generate(now).unwrap()),
            Change::Role(RoleId::generate(now).unwrap()),
            Change::Tenant(TenantId::generate(now).unwrap()),
            Change::SigningKeys,
            Change::Credential(
                CredentialId::generate_for(CredentialKind::AccessToken, now).unwrap(),
            ),
        ] {
            assert_eq!(Change::from_message(&change.to_message()), Some(change));
        }
        for junk in ["", "heartbeat", "x:tok_1", "c:usr_1", "u:", "k:tok_1"] {
            assert_eq!(Change::from_message(junk), None, "{junk}");
        }
    }
}
