//! The first start: a root tenant (slug `root`), its owner and one owner service token
//! (API.md §3). The plan is made here; the store writes it in one transaction or not at all.

use crate::Timestamp;
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::id::{CredentialId, EventId, TenantId, UserId};
use crate::model::{
    Actor, AuditEvent, Credential, Outcome, Slug, Target, Tenant, TenantStatus, User, UserStatus,
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
    };
    let user = User {
        id: UserId::generate(now)?,
        tenant_id: tenant.id.clone(),
        email: email.to_owned(),
        name: "Owner".to_owned(),
        role_id: BuiltinRole::Owner.id(),
        status: UserStatus::Active,
        created_at: now,
    };
    let password = password::generate()?;
    let password_hash = password::hash(&password)?;
    let secret = format.generate(CredentialKind::Service)?;
    let token = Credential {
        id: CredentialId::generate_for(CredentialKind::Service, now)?,
        tenant_id: tenant.id.clone(),
        kind: CredentialKind::Service,
        hash: secret.hash(),
        hint: secret.hint(),
        name: "bootstrap".to_owned(),
        description: Some("Created by keygate init; rotate it once you have your own.".to_owned()),
        user_id: None,
        created_by: Some(user.id.to_string()),
        role_id: Some(BuiltinRole::Owner.id()),
        permissions: None,
        allowed_ips: None,
        rate_limit: None,
        created_at: now,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    let event = AuditEvent {
        id: EventId::generate(now)?,
        time: now,
        tenant_id: tenant.id.clone(),
        acting_tenant_id: None,
        actor: Actor {
            kind: "system",
            id: "keygate".to_owned(),
        },
        token_id: None,
        action: "system.bootstrap",
        target: Some(Target {
            kind: "tenant",
            id: tenant.id.to_string(),
        }),
        outcome: Outcome::Success,
        status: 201,
        ip: None,
        user_agent: None,
        request_id: None,
    };
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
