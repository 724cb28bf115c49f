//! Personal and service tokens (API.md §4).
//!
//! A personal token belongs to a user and acts with that user's role *at request time*, narrowed
//! by its own list; only a signed-in user (a session or one of their personal tokens) creates one,
//! for themselves, and it must expire. A service token belongs to the tenant, acts with an explicit
//! role, and outlives whoever created it.

use std::time::Duration;

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::allowlist::{IpAllowlist, Normalised};
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::model::{Credential, RateLimit, Role};
use crate::permission::{Catalog, PermissionSet};
use crate::quota::{QuotaRequest, StoredQuota};
use crate::rule::{Conflict, RuleError};
use crate::validate::{self, Errors, Invalid};
use crate::verified::{PrincipalKind, role_permissions};

/// A token as a client asks for it.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub kind: CredentialKind,
    pub name: String,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
    pub expires_in: Option<u64>,
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<QuotaRequest>,
}

/// The deployment's limits on tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    pub personal_max_lifetime: Duration,
}

/// A token ready to store, its secret, and the `allowed_ips` entries stored in another form.
pub struct PlannedToken {
    pub credential: Credential,
    pub secret: Secret,
    pub normalised: Vec<Normalised>,
}

/// Checks a new token against the rules and the caller's own permissions. `role` is the resolved
/// role of a service token (`None` for personal tokens).
pub fn plan(
    grant: &Grant<perm::TokensWrite>,
    catalog: &Catalog,
    format: &CredentialFormat,
    policy: TokenPolicy,
    input: NewToken,
    role: Option<&Role>,
    now: Timestamp,
) -> Result<PlannedToken, RuleError> {
    let caller = grant.caller();
    let verified = caller.verified();
    let mut errors = Errors::default();
    let name = errors.check(validate::name("name", &input.name));
    let description = validate::description(&mut errors, input.description.as_deref());

    let expires_at = match (input.expires_at, input.expires_in) {
        (Some(_), Some(_)) => {
            errors.push("expires_in", "give expires_at or expires_in, not both");
            None
        }
        (Some(at), None) if at <= now => {
            errors.push("expires_at", "must be in the future");
            None
        }
        (Some(at), None) => Some(at),
        (None, Some(0)) => {
            errors.push("expires_in", "must be at least 1 second");
            None
        }
        (None, Some(seconds))
            if u64::try_from(Timestamp::MAX.unix() - now.unix())
                .is_ok_and(|left| seconds > left) =>
        {
            errors.push(
                "expires_in",
                format!(
                    "must end by {} (at most {} seconds from now); leave it out for a token that does not expire",
                    Timestamp::MAX,
                    Timestamp::MAX.unix() - now.unix()
                ),
            );
            None
        }
        (None, Some(seconds)) => Some(now.saturating_add(Duration::from_secs(seconds))),
        (None, None) => None,
    };

    let narrowing = input
        .permissions
        .inspect(|patterns| validate::narrowing(&mut errors, catalog, patterns));
    let mut normalised = Vec::new();
    let allowed_ips = match input
        .allowed_ips
        .as_deref()
        .map(|entries| IpAllowlist::parse(entries, "allowed_ips"))
    {
        None => None,
        Some(Ok((list, remarks))) => {
            normalised = remarks;
            Some(list.into_networks())
        }
        Some(Err(invalid)) => {
            errors.0.extend(invalid);
            None
        }
    };
    if let Some(limit) = input.rate_limit
        && (limit.requests == 0 || limit.per_seconds == 0)
    {
        errors.push(
            "rate_limit",
            "requests and per_seconds must both be at least 1",
        );
    }

    let quota = input
        .quota
        .and_then(|quota| errors.check(quota.check("quota", now)));

    let (user_id, role_permissions) = match input.kind {
        CredentialKind::Personal => {
            if verified.principal().kind != PrincipalKind::User {
                return Err(RuleError::forbidden(
                    "only a signed-in user (a session or a personal token) can create personal tokens",
                ));
            }
            match expires_at {
                None if input.expires_at.is_none() && input.expires_in.is_none() => errors.push(
                    "expires_at",
                    "personal tokens must expire: give expires_at or expires_in",
                ),
                Some(at) if at > now.saturating_add(policy.personal_max_lifetime) => errors.push(
                    if input.expires_in.is_some() {
                        "expires_in"
                    } else {
                        "expires_at"
                    },
                    format!(
                        "personal tokens may live at most {} days",
                        policy.personal_max_lifetime.as_secs() / 86_400
                    ),
                ),
                _ => {}
            }
            let user_id = verified
                .user_id()
                .ok_or_else(|| RuleError::Internal("a user principal without a user id".into()))?;
            (Some(user_id.clone()), verified.role_permissions().clone())
        }
        CredentialKind::Service => match role {
            Some(role) => (None, role_permissions(role, catalog)),
            None => {
                errors.push("role", "service tokens need a role");
                (None, Default::default())
            }
        },
        other => {
            return Err(RuleError::invalid(
                "kind",
                format!("`{}` tokens cannot be created here", other.as_str()),
            ));
        }
    };
    errors.into_result()?;

    let effective = match &narrowing {
        Some(patterns) => narrow(&role_permissions, patterns, catalog)?,
        None => role_permissions,
    };
    caller.check_no_escalation(&effective)?;

    let (mut credential, secret) = Credential::issue(
        format,
        input.kind,
        grant.tenant_id().clone(),
        name.unwrap_or_default(),
        Some(caller.actor_id()),
        now,
    )?;
    credential.description = description;
    credential.user_id = user_id;
    credential.role_id = role.map(|r| r.id.clone());
    credential.permissions = narrowing;
    credential.allowed_ips = allowed_ips;
    credential.rate_limit = input.rate_limit;
    credential.expires_at = expires_at;
    credential.quota = quota.map(|quota| StoredQuota::fresh(credential.id.as_str(), quota, now));
    Ok(PlannedToken {
        credential,
        secret,
        normalised,
    })
}

/// A role narrowed by a credential's own list, which may only name what the role grants: a name
/// beyond it is refused rather than silently dropped, so the creator learns that the credential
/// will not do what they asked. The refusal is the request's mistake, a 400 naming each entry
/// (`permissions[i]`), not a privilege escalation: whoever asks may well hold the permission
/// the role does not grant.
pub fn narrow(
    role: &PermissionSet,
    patterns: &[String],
    catalog: &Catalog,
) -> Result<PermissionSet, RuleError> {
    let beyond = role.lacks_patterns(patterns);
    if beyond.is_empty() {
        return Ok(role.intersect(&catalog.expand(patterns)));
    }
    let errors: Vec<Invalid> = patterns
        .iter()
        .enumerate()
        .filter(|(_, pattern)| beyond.contains(pattern))
        .map(|(i, pattern)| {
            Invalid::new(
                format!("permissions[{i}]"),
                format!(
                    "`{pattern}` is beyond what the role grants: a credential's permissions only narrow its role"
                ),
            )
        })
        .collect();
    Err(RuleError::Invalid(errors))
}

/// A token's status, computed from its dates.
pub fn status(credential: &Credential, now: Timestamp) -> &'static str {
    if credential.revoked_at.is_some() {
        "revoked"
    } else if credential.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

/// Whether the caller may revoke this token: their own personal tokens always; another user's
/// personal token with `users:write`; a service token only if they hold everything it grants, so
/// a member cannot cut off the owner's automation. `role` is a service token's role.
pub fn check_revoke(
    grant: &Grant<perm::TokensWrite>,
    catalog: &Catalog,
    token: &Credential,
    role: Option<&Role>,
) -> Result<(), RuleError> {
    let caller = grant.caller();
    match token.kind {
        CredentialKind::Personal => {
            let own = token
                .user_id
                .as_ref()
                .is_some_and(|user| user.as_str() == caller.verified().principal().id);
            if !own {
                caller.require::<perm::UsersWrite>()?;
            }
            Ok(())
        }
        _ => {
            let granted = role
                .map(|r| role_permissions(r, catalog))
                .unwrap_or_default();
            let effective = match &token.permissions {
                Some(patterns) => granted.intersect(&catalog.expand(patterns)),
                None => granted,
            };
            caller.check_no_escalation(&effective)?;
            Ok(())
        }
    }
}

/// How long a rolled token keeps working beside its successor by default, and at most
/// (API.md §14).
pub const ROLL_OVERLAP_DEFAULT_SECONDS: u64 = 3600;
pub const ROLL_OVERLAP_MAX_SECONDS: u64 = 604_800;

/// A roll ready to store: the successor, its secret (shown once), and when the rolled token now
/// expires.
pub struct PlannedRoll {
    pub successor: Credential,
    pub secret: Secret,
    pub previous_expires_at: Timestamp,
}

/// Plans the roll of `previous` (API.md §14), which needs what revoking it needs; only an active
/// token rolls. The successor is `previous` again (kind, owner, name, description, role,
/// narrowing, networks, rate limit) with a new secret and, if `previous` expires, as long a life
/// as `previous` was given, from now. `previous` keeps working for `overlap_seconds` (default an
/// hour, at most a week), or until its own expiry if that comes first.
pub fn plan_roll(
    grant: &Grant<perm::TokensWrite>,
    catalog: &Catalog,
    format: &CredentialFormat,
    previous: &Credential,
    role: Option<&Role>,
    overlap_seconds: Option<u64>,
    now: Timestamp,
) -> Result<PlannedRoll, RuleError> {
    let overlap = overlap_seconds.unwrap_or(ROLL_OVERLAP_DEFAULT_SECONDS);
    if overlap > ROLL_OVERLAP_MAX_SECONDS {
        return Err(RuleError::invalid(
            "expire_previous_in",
            format!("must be between 0 and {ROLL_OVERLAP_MAX_SECONDS} seconds (a week)"),
        ));
    }
    if status(previous, now) != "active" {
        return Err(RuleError::NotFound(format!(
            "`{}` is not an active token: only an active token can be rolled",
            previous.id
        )));
    }
    check_revoke(grant, catalog, previous, role)?;
    // A second roll would fork the token: two successors, the first left out of the chain, and
    // the second given the life left in the overlap. A retried roll learns where the first went.
    if let Some(successor) = &previous.rolled_to {
        return Err(RuleError::Conflict {
            conflict: Conflict::AlreadyRolled,
            detail: format!(
                "`{}` was already rolled to `{successor}`; roll that one instead",
                previous.id
            ),
        });
    }
    let (mut successor, secret) = Credential::issue(
        format,
        previous.kind,
        previous.tenant_id.clone(),
        previous.name.clone(),
        Some(grant.caller().actor_id()),
        now,
    )?;
    successor.description = previous.description.clone();
    successor.user_id = previous.user_id.clone();
    successor.role_id = previous.role_id.clone();
    successor.permissions = previous.permissions.clone();
    successor.allowed_ips = previous.allowed_ips.clone();
    successor.rate_limit = previous.rate_limit;
    // The quota goes on counting under the successor's id (the store moves its count).
    successor.quota = previous.quota.as_ref().map(|q| StoredQuota {
        subject: successor.id.to_string(),
        ..q.clone()
    });
    successor.expires_at = previous.expires_at.map(|at| {
        let lifetime = Duration::from_secs(
            u64::try_from(at.unix().saturating_sub(previous.created_at.unix())).unwrap_or(0),
        );
        now.saturating_add(lifetime)
    });
    successor.rolled_from = Some(previous.id.clone());
    let overlap_ends = now.saturating_add(Duration::from_secs(overlap));
    let previous_expires_at = match previous.expires_at {
        Some(at) if at < overlap_ends => at,
        _ => overlap_ends,
    };
    Ok(PlannedRoll {
        successor,
        secret,
        previous_expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::BuiltinRole;
    use crate::roles;
    use crate::testing::{NOW, caller, catalog, custom_role, format};

    const POLICY: TokenPolicy = TokenPolicy {
        personal_max_lifetime: Duration::from_secs(30 * 86_400),
    };

    fn input(kind: CredentialKind) -> NewToken {
        NewToken {
            kind,
            name: "ci".into(),
            description: None,
            permissions: None,
            expires_at: None,
            expires_in: Some(3600),
            allowed_ips: None,
            rate_limit: None,
            quota: None,
        }
    }

    fn plan_as(
        who: &crate::access::Caller,
        input: NewToken,
        role: Option<&Role>,
    ) -> Result<(Credential, Secret), RuleError> {
        let grant = who.require::<perm::TokensWrite>().unwrap();
        plan(&grant, &catalog(), &format(), POLICY, input, role, NOW)
            .map(|planned| (planned.credential, planned.secret))
    }

    fn fields(error: RuleError) -> Vec<String> {
        match error {
            RuleError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid fields, got {other:?}"),
        }
    }

    #[test]
    fn personal_tokens_belong_to_the_user_and_must_expire_within_the_cap() {
        let user = caller(CredentialKind::Session, BuiltinRole::Member, None);
        let (token, secret) = plan_as(&user, input(CredentialKind::Personal), None).unwrap();
        assert_eq!(
            token.user_id.as_ref().unwrap().as_str(),
            user.verified().principal().id
        );
        assert!(token.role_id.is_none());
        assert_eq!(
            token.expires_at,
            Some(NOW.saturating_add(Duration::from_secs(3600)))
        );
        assert!(secret.expose().starts_with("kg_live_"));
        assert_eq!(token.hash, secret.hash());

        let never = NewToken {
            expires_in: None,
            ..input(CredentialKind::Personal)
        };
        assert_eq!(
            fields(plan_as(&user, never, None).unwrap_err()),
            ["expires_at"]
        );
        let too_long = NewToken {
            expires_in: Some(31 * 86_400),
            ..input(CredentialKind::Personal)
        };
        assert_eq!(
            fields(plan_as(&user, too_long, None).unwrap_err()),
            ["expires_in"]
        );
        let both = NewToken {
            expires_at: Some(NOW),
            ..input(CredentialKind::Personal)
        };
        assert!(fields(plan_as(&user, both, None).unwrap_err()).contains(&"expires_in".to_owned()));
    }

    #[test]
    fn only_users_create_personal_tokens() {
        let service = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        assert!(matches!(
            plan_as(&service, input(CredentialKind::Personal), None),
            Err(RuleError::Forbidden { .. })
        ));
        let key = caller(CredentialKind::AccountKey, BuiltinRole::Admin, None);
        assert!(matches!(
            plan_as(&key, input(CredentialKind::Personal), None),
            Err(RuleError::Forbidden { .. })
        ));
    }

    #[test]
    fn nothing_grants_more_than_its_creator_holds() {
        let member = caller(CredentialKind::Session, BuiltinRole::Member, None);
        let admin = roles::builtin(BuiltinRole::Admin);
        let error = plan_as(&member, input(CredentialKind::Service), Some(&admin)).unwrap_err();
        let RuleError::Escalation(escalation) = error else {
            panic!("{error:?}")
        };
        assert!(escalation.beyond.contains(&"users:write".to_owned()));

        // Narrowed below the creator: fine, even on a wider role.
        let narrowed = NewToken {
            permissions: Some(vec!["tokens:read".into()]),
            ..input(CredentialKind::Service)
        };
        assert!(plan_as(&member, narrowed, Some(&admin)).is_ok());

        // A narrowed personal token cannot mint an un-narrowed one.
        let narrow_user = caller(
            CredentialKind::Personal,
            BuiltinRole::Admin,
            Some(&["tokens:*"]),
        );
        assert!(matches!(
            plan_as(&narrow_user, input(CredentialKind::Personal), None),
            Err(RuleError::Escalation(_))
        ));
        let zones = custom_role(&["zones:*"]);
        assert!(matches!(
            plan_as(&narrow_user, input(CredentialKind::Service), Some(&zones)),
            Err(RuleError::Escalation(_))
        ));
    }

    #[test]
    fn allowed_networks_are_normalised_and_bad_ones_named() {
        let owner = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        let grant = owner.require::<perm::TokensWrite>().unwrap();
        let viewer = roles::builtin(BuiltinRole::Viewer);
        let with_ips = |ips: &[&str]| NewToken {
            allowed_ips: Some(ips.iter().map(|i| i.to_string()).collect()),
            ..input(CredentialKind::Service)
        };
        let planned = plan(
            &grant,
            &catalog(),
            &format(),
            POLICY,
            with_ips(&["10.1.2.3/8", "2001:db8::1"]),
            Some(&viewer),
            NOW,
        )
        .unwrap();
        let shown: Vec<String> = planned
            .credential
            .allowed_ips
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::1/128"]);
        assert_eq!(planned.normalised.len(), 1);
        let error = plan(
            &grant,
            &catalog(),
            &format(),
            POLICY,
            with_ips(&["10.0.0.0/8", "x"]),
            Some(&viewer),
            NOW,
        );
        assert_eq!(fields(error.err().unwrap()), ["allowed_ips[1]"]);
    }

    #[test]
    fn revoking_follows_ownership_and_least_privilege() {
        let owner = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        let (owner_token, _) = plan_as(
            &owner,
            input(CredentialKind::Service),
            Some(&roles::builtin(BuiltinRole::Owner)),
        )
        .unwrap();
        let member = caller(CredentialKind::Session, BuiltinRole::Member, None);
        let grant = member.require::<perm::TokensWrite>().unwrap();
        let owner_role = roles::builtin(BuiltinRole::Owner);
        assert!(matches!(
            check_revoke(&grant, &catalog(), &owner_token, Some(&owner_role)),
            Err(RuleError::Escalation(_))
        ));
        let (own, _) = plan_as(&member, input(CredentialKind::Personal), None).unwrap();
        assert!(check_revoke(&grant, &catalog(), &own, None).is_ok());
        let other = caller(CredentialKind::Session, BuiltinRole::Viewer, None);
        let mut theirs = own.clone();
        theirs.user_id = other.verified().user_id().cloned();
        assert!(matches!(
            check_revoke(&grant, &catalog(), &theirs, None),
            Err(RuleError::Forbidden { .. })
        ));
    }

    #[test]
    fn status_is_computed_from_the_dates() {
        let owner = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        let (mut token, _) = plan_as(
            &owner,
            input(CredentialKind::Service),
            Some(&roles::builtin(BuiltinRole::Viewer)),
        )
        .unwrap();
        assert_eq!(status(&token, NOW), "active");
        assert_eq!(
            status(&token, NOW.saturating_add(Duration::from_secs(3600))),
            "expired"
        );
        token.revoked_at = Some(NOW);
        assert_eq!(status(&token, NOW), "revoked");
    }
}
