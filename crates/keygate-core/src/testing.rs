//! Callers for unit tests of the rules: a verified credential of a given kind and role, without a
//! store.

use std::sync::Arc;

use crate::Timestamp;
use crate::access::Caller;
use crate::credential::{CredentialFormat, CredentialKind, Environment};
use crate::id::{TenantId, UserId};
use crate::model::{Credential, Role, Slug, Tenant, TenantStatus, User, UserStatus};
use crate::permission::{BuiltinRole, Catalog};
use crate::roles;
use crate::store::CredentialRecord;
use crate::verified::Verified;

pub const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

pub fn format() -> CredentialFormat {
    CredentialFormat::new("kg", Environment::Live).unwrap()
}

pub fn catalog() -> Catalog {
    Catalog::new(&["zones:read", "zones:write"]).unwrap()
}

/// A caller holding `kind` credential with `role` (a user's role for personal tokens and
/// sessions), optionally narrowed.
pub fn caller(kind: CredentialKind, role: BuiltinRole, narrowing: Option<&[&str]>) -> Caller {
    Caller::new(Arc::new(Verified::resolve(
        &record(kind, role, narrowing),
        &catalog(),
    )))
}

/// What the store would read for such a credential, in a tenant of its own.
pub fn record(
    kind: CredentialKind,
    role: BuiltinRole,
    narrowing: Option<&[&str]>,
) -> CredentialRecord {
    let id = TenantId::generate(NOW).unwrap();
    let tenant = Tenant {
        path: crate::model::TenantPath::root(&id),
        id,
        parent_id: None,
        name: "Acme".into(),
        slug: Slug::parse("acme").unwrap(),
        status: TenantStatus::Active,
        ip_restriction: Default::default(),
        created_at: NOW,
        quota: None,
        leak_policy: Default::default(),
    };
    let is_user = matches!(kind, CredentialKind::Personal | CredentialKind::Session);
    let user = is_user.then(|| User {
        id: UserId::generate(NOW).unwrap(),
        tenant_id: tenant.id.clone(),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        role_id: role.id(),
        status: UserStatus::Active,
        created_at: NOW,
        last_sign_in_at: None,
    });
    let (mut credential, _) =
        Credential::issue(&format(), kind, tenant.id.clone(), "test".into(), None, NOW).unwrap();
    credential.user_id = user.as_ref().map(|u| u.id.clone());
    credential.role_id = (!is_user).then(|| role.id());
    credential.permissions = narrowing.map(|n| n.iter().map(|p| p.to_string()).collect());
    CredentialRecord {
        credential,
        tenant,
        ancestors: vec![],
        user,
        role: Some(roles::builtin(role)),
    }
}

pub fn custom_role(patterns: &[&str]) -> Role {
    Role {
        id: crate::id::RoleId::generate(NOW).unwrap(),
        tenant_id: Some(TenantId::generate(NOW).unwrap()),
        name: "custom".into(),
        permissions: patterns.iter().map(|p| p.to_string()).collect(),
        created_at: NOW,
    }
}
