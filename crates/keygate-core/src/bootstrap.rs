//! The first start: a root tenant (slug `root`), its owner and one owner service token
//! (API.md §3). The plan is made here; the store writes it in one transaction or not at all.

use crate::Timestamp;
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::id::{TenantId, UserId};
use crate::model::{
    Actor, AuditEvent, Credential, RequestMeta, Slug, Target, Tenant, TenantStatus, User,
    UserStatus,
};
use crate::password::{self, PasswordError};
use crate::permission::BuiltinRole;
use crate::store::Bootstrap;

/// What the operator is shown once: the generated password and token.
pub struct BootstrapSecrets {
    pub password: String,
    pub token: Secret,
}

/// Plans the bootstrap for an owner with `email`.
pub fn plan(
    format: &CredentialFormat,
    email: &str,
    now: Timestamp,
) -> Result<(Bootstrap, BootstrapSecrets), PasswordError> {
    let id = TenantId::generate(now)?;
    let tenant = Tenant {
        path: crate::model::TenantPath::root(&id),
        id,
        parent_id: None,
        name: "Root".to_owned(),
        slug: Slug::root(),
        status: TenantStatus::Active,
        ip_restriction: Default::default(),
        created_at: now,
        quota: None,
        leak_policy: Default::default(),
    };
    let user = User {
        id: UserId::generate(now)?,
        tenant_id: tenant.id.clone(),
        email: email.to_owned(),
        name: "Owner".to_owned(),
        role_id: BuiltinRole::Owner.id(),
        status: UserStatus::Active,
        created_at: now,
        last_sign_in_at: None,
    };
    let password = password::generate()?;
    let password_hash = password::hash(&password)?;
    let (mut token, secret) = Credential::issue(
        format,
        CredentialKind::Service,
        tenant.id.clone(),
        "bootstrap".to_owned(),
        Some(user.id.to_string()),
        now,
    )?;
    token.description =
        Some("Created by keygate init; rotate it once you have your own.".to_owned());
    token.role_id = Some(BuiltinRole::Owner.id());
    let system = Actor {
        kind: "system",
        id: "keygate".to_owned(),
    };
    let target = Target {
        kind: "tenant",
        id: tenant.id.to_string(),
    };
    let event = AuditEvent::new(
        tenant.id.clone(),
        system,
        None,
        "system.bootstrap",
        Some(target),
        now,
        &RequestMeta::default(),
    )?
    .with_status(201);
    Ok((
        Bootstrap {
            tenant,
            user,
            password_hash,
            token,
            event,
        },
        BootstrapSecrets {
            password,
            token: secret,
        },
    ))
}
