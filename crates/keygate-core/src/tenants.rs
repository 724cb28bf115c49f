//! Tenants: customers, and a reseller's sub-customers as its child tenants (API.md §3).
//!
//! A tenant is created inside the tenant the request acts in. Only an ancestor suspends,
//! reactivates or deletes a tenant; its own owners may rename it; the root tenant can be neither
//! suspended nor deleted (it has no ancestor).

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::base62;
use crate::id::TenantId;
use crate::model::{MAX_TENANT_DEPTH, Slug, Tenant, TenantStatus};
use crate::password::Hasher;
use crate::permission::{BuiltinRole, Catalog};
use crate::rule::RuleError;
use crate::users::{self, NewUser, PlannedUser};
use crate::validate::{self, Errors};

/// A new tenant as a client describes it.
pub struct NewTenant {
    pub name: String,
    pub slug: Option<String>,
    pub first_user: Option<NewUser>,
}

pub struct PlannedTenant {
    pub tenant: Tenant,
    pub first_user: Option<PlannedUser>,
}

/// Checks a new child of `parent` (the tenant the grant acts in). Its first user is its owner, so
/// the caller must hold everything an owner does.
pub async fn plan(
    grant: &Grant<perm::TenantsWrite>,
    users_grant: Option<&Grant<perm::UsersWrite>>,
    catalog: &Catalog,
    hasher: &dyn Hasher,
    parent: &Tenant,
    input: NewTenant,
    now: Timestamp,
) -> Result<PlannedTenant, RuleError> {
    let mut errors = Errors::default();
    let name = errors.check(validate::name("name", &input.name));
    let slug = match &input.slug {
        Some(text) => errors.check(
            Slug::parse(text).map_err(|e| crate::validate::Invalid::new("slug", e.to_string())),
        ),
        None => name.as_deref().map(derive_slug).transpose()?,
    };
    if parent.path.depth() >= MAX_TENANT_DEPTH {
        errors.push(
            "parent",
            format!("tenants nest at most {MAX_TENANT_DEPTH} levels deep"),
        );
    }
    errors.into_result()?;
    if input.first_user.is_some() {
        grant
            .caller()
            .check_no_escalation(&catalog.builtin_role(BuiltinRole::Owner))?;
    }
    let id = TenantId::generate(now)?;
    let tenant = Tenant {
        path: parent.path.child(&id),
        id,
        parent_id: Some(parent.id.clone()),
        name: name.unwrap_or_default(),
        slug: slug.unwrap_or_else(Slug::root),
        status: TenantStatus::Active,
        ip_restriction: Default::default(),
        created_at: now,
        quota: None,
        leak_policy: Default::default(),
    };
    let first_user = match (input.first_user, users_grant) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(RuleError::forbidden(
                "creating a first user needs users:write",
            ));
        }
        (Some(user), Some(users_grant)) => {
            let mut planned = users::plan_new(
                users_grant,
                catalog,
                hasher,
                user,
                &crate::roles::builtin(BuiltinRole::Owner),
                now,
            )
            .await
            .map_err(|e| prefix_fields(e, "first_user"))?;
            planned.user.tenant_id = tenant.id.clone();
            Some(planned)
        }
    };
    Ok(PlannedTenant { tenant, first_user })
}

/// A slug from a name: lowercase letters and digits, `-` between words, and a random suffix so
/// two customers called "Acme" do not collide.
fn derive_slug(name: &str) -> Result<Slug, RuleError> {
    let mut base = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.ends_with('-') && !base.is_empty() {
            base.push('-');
        }
    }
    let base: String = base.trim_matches('-').chars().take(40).collect();
    let base = base.trim_end_matches('-');
    let mut suffix = String::new();
    base62::push_random(&mut suffix, 6)?;
    let suffix = suffix.to_lowercase();
    let text = if base.is_empty() {
        format!("tenant-{suffix}")
    } else {
        format!("{base}-{suffix}")
    };
    Slug::parse(&text).map_err(|e| RuleError::Internal(e.to_string()))
}

fn prefix_fields(error: RuleError, prefix: &str) -> RuleError {
    match error {
        RuleError::Invalid(errors) => RuleError::Invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    e.field = format!("{prefix}.{}", e.field);
                    e
                })
                .collect(),
        ),
        other => other,
    }
}

/// A change to a tenant; absent fields stay.
pub struct TenantChange {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    /// What its leaked credentials come to: the tenant's own choice, or an ancestor's.
    pub leak_policy: Option<crate::model::LeakPolicy>,
}

/// Applies a change to `tenant`, which the caller sees from `home` (the tenant the request acts
/// in). Renaming is for the tenant itself or an ancestor; status only for a strict ancestor.
pub fn plan_change(
    home: &Tenant,
    tenant: &Tenant,
    change: TenantChange,
) -> Result<Tenant, RuleError> {
    let mut changed = tenant.clone();
    if let Some(name) = change.name {
        changed.name = validate::name("name", &name)?;
    }
    if let Some(status) = change.status {
        if !tenant.path.is_strictly_below(&home.path) {
            return Err(RuleError::forbidden(
                "only an ancestor suspends or reactivates a tenant",
            ));
        }
        changed.status = status;
    }
    if let Some(policy) = change.leak_policy {
        changed.leak_policy = policy;
    }
    Ok(changed)
}

/// Only a strict ancestor deletes a tenant (so the root can never be deleted).
pub fn check_delete(home: &Tenant, tenant: &Tenant) -> Result<(), RuleError> {
    if tenant.path.is_strictly_below(&home.path) {
        Ok(())
    } else {
        Err(RuleError::forbidden("only an ancestor deletes a tenant"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_slugs_are_valid_and_distinct() {
        let a = derive_slug("Acme Corp. (EU)").unwrap();
        assert!(a.as_str().starts_with("acme-corp-eu-"), "{a:?}");
        assert_ne!(a, derive_slug("Acme Corp. (EU)").unwrap());
        assert!(derive_slug("!!!").unwrap().as_str().starts_with("tenant-"));
        assert!(derive_slug(&"Ü".repeat(80)).is_ok());
    }
}
