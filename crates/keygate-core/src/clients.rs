//! OAuth clients (API.md §7): a tenant's machine identities for the client credentials grant.
//!
//! A client is a stored credential of kind `oauth_secret`: its id is the `client_id`, its secret a
//! credential in the opaque format, kept as a SHA-256 like every other (it carries 178 random bits,
//! so a slow password hash would buy nothing and cost every grant). Like a service token it acts
//! with an explicit role, optionally narrowed, and nothing it grants may exceed what its creator
//! holds. The secret is not accepted on the API itself, only at the token endpoint.

use crate::quota::{QuotaRequest, StoredQuota};
use std::time::Duration;

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::model::{Credential, Role};
use crate::permission::{Catalog, PermissionSet};
use crate::rule::RuleError;
use crate::tokens::{ROLL_OVERLAP_DEFAULT_SECONDS, ROLL_OVERLAP_MAX_SECONDS};
use crate::validate::{self, Errors};
use crate::verified::role_permissions;

/// A client as a request asks for it.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub quota: Option<QuotaRequest>,
}

/// What a client may do: its role's permissions, narrowed by its own list.
pub fn effective_permissions(client: &Credential, role: &Role, catalog: &Catalog) -> PermissionSet {
    let granted = role_permissions(role, catalog);
    match &client.permissions {
        Some(patterns) => granted.intersect(&catalog.expand(patterns)),
        None => granted,
    }
}

/// Checks a new client against the rules and the caller's own permissions; `role` is the resolved
/// role it will act with.
pub fn plan(
    grant: &Grant<perm::OauthClientsWrite>,
    catalog: &Catalog,
    format: &CredentialFormat,
    input: NewClient,
    role: &Role,
    now: Timestamp,
) -> Result<(Credential, Secret), RuleError> {
    let mut errors = Errors::default();
    let name = errors.check(validate::name("name", &input.name));
    let description = validate::description(&mut errors, input.description.as_deref());
    if let Some(patterns) = &input.permissions {
        validate::narrowing(&mut errors, catalog, patterns);
    }
    let quota = input
        .quota
        .as_ref()
        .and_then(|quota| errors.check(quota.check("quota", now)));
    errors.into_result()?;
    if let Some(patterns) = &input.permissions {
        crate::tokens::narrow(&role_permissions(role, catalog), patterns, catalog)?;
    }

    let (mut client, secret) = Credential::issue(
        format,
        CredentialKind::OauthSecret,
        grant.tenant_id().clone(),
        name.unwrap_or_default(),
        Some(grant.caller().actor_id()),
        now,
    )?;
    client.description = description;
    client.role_id = Some(role.id.clone());
    client.permissions = input.permissions;
    client.quota = quota.map(|quota| StoredQuota::fresh(client.id.as_str(), quota, now));
    grant
        .caller()
        .check_no_escalation(&effective_permissions(&client, role, catalog))?;
    Ok((client, secret))
}

/// A client may be deleted only by a caller who holds everything it grants, as for service
/// tokens: otherwise a member could cut off the owner's integrations.
pub fn check_delete(
    grant: &Grant<perm::OauthClientsWrite>,
    catalog: &Catalog,
    client: &Credential,
    role: Option<&Role>,
) -> Result<(), RuleError> {
    let granted = role
        .map(|role| effective_permissions(client, role, catalog))
        .unwrap_or_default();
    grant.caller().check_no_escalation(&granted)?;
    Ok(())
}

/// A client's new secret, and until when the secret it replaces keeps working.
#[derive(Debug)]
pub struct PlannedSecretRoll {
    pub secret: Secret,
    pub previous_until: Timestamp,
}

/// Checks rolling `client`'s secret (API.md §14): `overlap_seconds` (default an hour, at most a
/// week) is how long the current secret keeps working beside the new one. Rolling needs what
/// deleting the client needs: both cut off whoever holds the current secret.
pub fn plan_secret_roll(
    grant: &Grant<perm::OauthClientsWrite>,
    catalog: &Catalog,
    format: &CredentialFormat,
    client: &Credential,
    role: Option<&Role>,
    overlap_seconds: Option<u64>,
    now: Timestamp,
) -> Result<PlannedSecretRoll, RuleError> {
    let overlap = overlap_seconds.unwrap_or(ROLL_OVERLAP_DEFAULT_SECONDS);
    if overlap > ROLL_OVERLAP_MAX_SECONDS {
        return Err(RuleError::invalid(
            "expire_previous_in",
            format!("must be between 0 and {ROLL_OVERLAP_MAX_SECONDS} seconds (a week)"),
        ));
    }
    check_delete(grant, catalog, client, role)?;
    let secret = format.generate(CredentialKind::OauthSecret)?;
    Ok(PlannedSecretRoll {
        secret,
        previous_until: now.saturating_add(Duration::from_secs(overlap)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::BuiltinRole;
    use crate::roles;
    use crate::testing::{NOW, caller, catalog, custom_role, format};

    fn input(permissions: Option<&[&str]>) -> NewClient {
        NewClient {
            name: "billing sync".into(),
            description: None,
            permissions: permissions.map(|p| p.iter().map(|s| s.to_string()).collect()),
            quota: None,
        }
    }

    fn plan_as(
        who: &crate::access::Caller,
        input: NewClient,
        role: &Role,
    ) -> Result<(Credential, Secret), RuleError> {
        let grant = who.require::<perm::OauthClientsWrite>().unwrap();
        plan(&grant, &catalog(), &format(), input, role, NOW)
    }

    #[test]
    fn a_client_is_a_secret_credential_with_a_role() {
        let admin = caller(CredentialKind::Service, BuiltinRole::Admin, None);
        let viewer = roles::builtin(BuiltinRole::Viewer);
        let (client, secret) = plan_as(&admin, input(None), &viewer).unwrap();
        assert!(client.id.as_str().starts_with("cli_"));
        assert!(secret.expose().starts_with("kg_secret_live_"));
        assert_eq!(client.kind, CredentialKind::OauthSecret);
        assert_eq!(client.hash, secret.hash());
        assert_eq!(client.role_id, Some(viewer.id.clone()));
        assert_eq!(client.tenant_id, admin.verified().tenant().id);
        assert!(client.expires_at.is_none());
    }

    #[test]
    fn nothing_a_client_grants_exceeds_its_creator() {
        let member = caller(
            CredentialKind::Session,
            BuiltinRole::Admin,
            Some(&["oauth_clients:*", "zones:read"]),
        );
        let admin_role = roles::builtin(BuiltinRole::Admin);
        let Err(RuleError::Escalation(escalation)) = plan_as(&member, input(None), &admin_role)
        else {
            panic!("an admin client from a narrowed caller")
        };
        assert!(escalation.beyond.contains(&"users:write".to_owned()));
        // Narrowed to what the caller holds: fine, even on a wider role.
        assert!(plan_as(&member, input(Some(&["zones:read"])), &admin_role).is_ok());
        let zones = custom_role(&["zones:*"]);
        assert!(matches!(
            plan_as(&member, input(Some(&["zones:write"])), &zones),
            Err(RuleError::Escalation(_))
        ));
    }

    #[test]
    fn bad_input_names_its_fields() {
        let admin = caller(CredentialKind::Service, BuiltinRole::Admin, None);
        let viewer = roles::builtin(BuiltinRole::Viewer);
        let bad = NewClient {
            name: " ".into(),
            quota: Some(QuotaRequest {
                limit: 10,
                period: "week".into(),
                anchor: None,
            }),
            ..input(Some(&["zone:read"]))
        };
        let Err(RuleError::Invalid(errors)) = plan_as(&admin, bad, &viewer) else {
            panic!("expected invalid fields")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "permissions[0]", "quota.period"]);
        let Err(RuleError::Invalid(errors)) = plan_as(&admin, input(Some(&[])), &viewer) else {
            panic!("an empty narrowing is a mistake")
        };
        assert_eq!(errors[0].field, "permissions");
    }

    #[test]
    fn deleting_needs_everything_the_client_grants() {
        let owner = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        let admin_role = roles::builtin(BuiltinRole::Admin);
        let (client, _) = plan_as(&owner, input(None), &admin_role).unwrap();
        let narrow = caller(
            CredentialKind::Service,
            BuiltinRole::Admin,
            Some(&["oauth_clients:*"]),
        );
        let grant = narrow.require::<perm::OauthClientsWrite>().unwrap();
        assert!(matches!(
            check_delete(&grant, &catalog(), &client, Some(&admin_role)),
            Err(RuleError::Escalation(_))
        ));
        let (small, _) =
            plan_as(&owner, input(Some(&["oauth_clients:read"])), &admin_role).unwrap();
        assert!(check_delete(&grant, &catalog(), &small, Some(&admin_role)).is_ok());
        let grant = owner.require::<perm::OauthClientsWrite>().unwrap();
        assert!(check_delete(&grant, &catalog(), &client, Some(&admin_role)).is_ok());
    }
}
