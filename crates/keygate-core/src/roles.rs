//! Roles: the four built-ins every tenant has, and custom roles a tenant defines.

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::id::RoleId;
use crate::model::Role;
use crate::permission::{BuiltinRole, Catalog};
use crate::rule::{Conflict, RuleError};
use crate::validate::{self, Errors};
use crate::verified::role_permissions;

/// What a client sends to create or replace a role.
#[derive(Debug, Clone)]
pub struct RoleInput {
    pub name: String,
    pub permissions: Vec<String>,
}

/// How a request names a role: its id, or a built-in role's name.
pub enum RoleRef {
    Builtin(BuiltinRole),
    Id(RoleId),
}

impl RoleRef {
    /// `None` if the text is neither a built-in name nor shaped like a role id: such a role cannot
    /// exist, which callers answer as not found.
    pub fn parse(text: &str) -> Option<Self> {
        BuiltinRole::from_name(text)
            .map(RoleRef::Builtin)
            .or_else(|| {
                RoleId::parse(text)
                    .map(|id| BuiltinRole::from_id(&id).map_or(RoleRef::Id(id), RoleRef::Builtin))
            })
    }
}

/// The built-in role as a record (they have no tenant and no stored patterns).
pub fn builtin(role: BuiltinRole) -> Role {
    Role {
        id: role.id(),
        tenant_id: None,
        name: role.name().to_owned(),
        permissions: Vec::new(),
        created_at: Timestamp::from_unix(0),
    }
}

/// Checks a role definition and that the caller could hold everything it grants.
/// `existing` is the role being replaced, if any.
pub fn plan(
    grant: &Grant<perm::RolesWrite>,
    catalog: &Catalog,
    input: RoleInput,
    existing: Option<&Role>,
    now: Timestamp,
) -> Result<Role, RuleError> {
    if let Some(existing) = existing {
        check_may_change(grant, catalog, existing)?;
    }
    let mut errors = Errors::default();
    let name = errors.check(validate::name("name", &input.name));
    if let Some(name) = &name
        && BuiltinRole::from_name(&name.to_lowercase()).is_some()
    {
        errors.push("name", "is the name of a built-in role");
    }
    if input.permissions.is_empty() {
        errors.push("permissions", "must list at least one permission");
    }
    for (i, pattern) in input.permissions.iter().enumerate() {
        if let Err(e) = catalog.check_pattern(pattern) {
            errors.push(format!("permissions[{i}]"), e.to_string());
        }
    }
    errors.into_result()?;
    let mut permissions = input.permissions;
    permissions.sort();
    permissions.dedup();
    let role = Role {
        id: match existing {
            Some(role) => role.id.clone(),
            None => RoleId::generate(now)?,
        },
        tenant_id: Some(grant.tenant_id().clone()),
        name: name.unwrap_or_default(),
        permissions,
        created_at: existing.map_or(now, |role| role.created_at),
    };
    grant
        .caller()
        .check_no_escalation(&role_permissions(&role, catalog))?;
    Ok(role)
}

/// A role may be replaced or deleted only if it is a custom role and the caller holds everything
/// it grants: otherwise a member could strip an admin's role, or delete it.
pub fn check_may_change(
    grant: &Grant<perm::RolesWrite>,
    catalog: &Catalog,
    role: &Role,
) -> Result<(), RuleError> {
    if role.tenant_id.is_none() {
        return Err(RuleError::Conflict {
            conflict: Conflict::BuiltinRole,
            detail: "built-in roles cannot be changed or deleted; create a custom role".into(),
        });
    }
    grant
        .caller()
        .check_no_escalation(&role_permissions(role, catalog))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::testing::{NOW, caller, catalog, custom_role};

    fn plan_as(
        role: BuiltinRole,
        input: RoleInput,
        existing: Option<&Role>,
    ) -> Result<Role, RuleError> {
        let who = caller(CredentialKind::Service, role, None);
        let grant = who.require::<perm::RolesWrite>().unwrap();
        plan(&grant, &catalog(), input, existing, NOW)
    }

    fn input(name: &str, permissions: &[&str]) -> RoleInput {
        RoleInput {
            name: name.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn roles_are_checked_against_the_catalog_and_the_caller() {
        let role = plan_as(
            BuiltinRole::Admin,
            input("zones", &["zones:*", "tokens:read", "zones:*"]),
            None,
        )
        .unwrap();
        assert_eq!(role.permissions, ["tokens:read", "zones:*"]);
        let Err(RuleError::Invalid(errors)) =
            plan_as(BuiltinRole::Admin, input("Admin", &["zone:*", "*"]), None)
        else {
            panic!("expected invalid fields")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "permissions[0]"]);
        assert!(matches!(
            plan_as(BuiltinRole::Admin, input("all", &["*"]), None),
            Err(RuleError::Escalation(_))
        ));
    }

    #[test]
    fn built_in_roles_and_roles_above_the_caller_cannot_change() {
        let builtin = builtin(BuiltinRole::Viewer);
        assert!(matches!(
            plan_as(BuiltinRole::Owner, input("mine", &["*"]), Some(&builtin)),
            Err(RuleError::Conflict {
                conflict: Conflict::BuiltinRole,
                ..
            })
        ));
        // A role editor without users:write cannot touch a role that grants it.
        let editor = caller(
            CredentialKind::Service,
            BuiltinRole::Admin,
            Some(&["roles:*", "tokens:read"]),
        );
        let grant = editor.require::<perm::RolesWrite>().unwrap();
        let above = custom_role(&["users:write"]);
        assert!(matches!(
            plan(
                &grant,
                &catalog(),
                input("less", &["tokens:read"]),
                Some(&above),
                NOW
            ),
            Err(RuleError::Escalation(_))
        ));
        assert!(matches!(
            check_may_change(&grant, &catalog(), &above),
            Err(RuleError::Escalation(_))
        ));
        assert_eq!(
            RoleRef::parse("rol_admin").map(|r| matches!(r, RoleRef::Builtin(BuiltinRole::Admin))),
            Some(true)
        );
        assert!(RoleRef::parse("administrator").is_none());
    }
}
