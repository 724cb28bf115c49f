//! Users: people who sign in with email and password, each with one role.

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::id::UserId;
use crate::model::{Role, User, UserStatus};
use crate::password::{self, Hasher, PasswordHashString};
use crate::permission::Catalog;
use crate::rule::RuleError;
use crate::validate::{self, Errors};
use crate::verified::role_permissions;

/// A new user, as a client describes it; the role is already resolved in the caller's scope.
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password: Option<String>,
}

/// A user ready to store, with the password to show once if keygate generated it.
pub struct PlannedUser {
    pub user: User,
    pub password_hash: PasswordHashString,
    pub generated_password: Option<String>,
}

/// Checks a new user and that the caller holds everything its role grants.
pub async fn plan_new(
    grant: &Grant<perm::UsersWrite>,
    catalog: &Catalog,
    hasher: &dyn Hasher,
    input: NewUser,
    role: &Role,
    now: Timestamp,
) -> Result<PlannedUser, RuleError> {
    let mut errors = Errors::default();
    let email = errors.check(validate::email("email", &input.email));
    let name = errors.check(validate::name("name", &input.name));
    if let Some(Err(e)) = input.password.as_deref().map(password::validate) {
        errors.push("password", e.to_string());
    }
    errors.into_result()?;
    grant
        .caller()
        .check_no_escalation(&role_permissions(role, catalog))?;
    let (password, generated) = match input.password {
        Some(password) => (password, false),
        None => (password::generate()?, true),
    };
    let password_hash = hasher.hash(password.clone()).await?;
    Ok(PlannedUser {
        user: User {
            id: UserId::generate(now)?,
            tenant_id: grant.tenant_id().clone(),
            email: email.unwrap_or_default(),
            name: name.unwrap_or_default(),
            role_id: role.id.clone(),
            status: UserStatus::Active,
            created_at: now,
            last_sign_in_at: None,
        },
        password_hash,
        generated_password: generated.then_some(password),
    })
}

/// A change to a user; absent fields stay as they are.
#[derive(Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub status: Option<UserStatus>,
    pub password: Option<String>,
}

/// Applies a change. The caller must hold everything the user's current role grants (so a member
/// cannot disable an owner) and, with a new role, everything that one grants.
#[allow(clippy::too_many_arguments)]
pub async fn plan_change(
    grant: &Grant<perm::UsersWrite>,
    catalog: &Catalog,
    hasher: &dyn Hasher,
    user: &User,
    current_role: &Role,
    change: UserChange,
    new_role: Option<&Role>,
) -> Result<(User, Option<PasswordHashString>), RuleError> {
    let mut errors = Errors::default();
    let name = change
        .name
        .as_deref()
        .and_then(|name| errors.check(validate::name("name", name)));
    if let Some(Err(e)) = change.password.as_deref().map(password::validate) {
        errors.push("password", e.to_string());
    }
    errors.into_result()?;
    let caller = grant.caller();
    caller.check_no_escalation(&role_permissions(current_role, catalog))?;
    if let Some(role) = new_role {
        caller.check_no_escalation(&role_permissions(role, catalog))?;
    }
    let mut changed = user.clone();
    if let Some(name) = name {
        changed.name = name;
    }
    if let Some(status) = change.status {
        changed.status = status;
    }
    if let Some(role) = new_role {
        changed.role_id = role.id.clone();
    }
    let hash = match change.password {
        Some(password) => Some(hasher.hash(password).await?),
        None => None,
    };
    Ok((changed, hash))
}

/// A user may be deleted by a caller who holds everything the user's role grants.
pub fn check_delete(
    grant: &Grant<perm::UsersWrite>,
    catalog: &Catalog,
    role: &Role,
) -> Result<(), RuleError> {
    grant
        .caller()
        .check_no_escalation(&role_permissions(role, catalog))?;
    Ok(())
}
