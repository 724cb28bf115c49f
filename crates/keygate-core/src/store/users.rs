//! Users of a tenant, and how sign-in finds them.

use async_trait::async_trait;

use super::{Page, Paged, StoreError};
use crate::access::{Grant, Scope, perm};
use crate::allowlist::IpAllowlist;
use crate::id::UserId;
use crate::model::{AuditEvent, User};
use crate::password::PasswordHashString;

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
    pub tenant_allowlist: Option<IpAllowlist>,
}

/// What a change to a user or their deletion came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserWrite {
    Done,
    NotFound,
    /// It would leave the tenant with no active user holding the owner role: nothing changed.
    LastOwner,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn list_users(
        &self,
        scope: &Scope<perm::UsersRead>,
        page: &Page,
    ) -> Result<Paged<User>, StoreError>;

    async fn get_user(
        &self,
        scope: &Scope<perm::UsersRead>,
        id: &UserId,
    ) -> Result<Option<User>, StoreError>;

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
    ) -> Result<UserWrite, StoreError>;

    /// Deletes a user with their personal tokens and sessions; service tokens they created stay.
    async fn delete_user(
        &self,
        grant: &Grant<perm::UsersWrite>,
        id: &UserId,
        event: &AuditEvent,
    ) -> Result<UserWrite, StoreError>;

    /// The accounts that may be signing in with this email (compared case-insensitively), in
    /// every tenant, or only in the tenant whose slug is `organization`; oldest first, at most
    /// `limit`. No grant: this is how a person gets a credential in the first place.
    async fn find_logins(
        &self,
        email: &str,
        organization: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Login>, StoreError>;
}
