//! Account keys (API.md §5) and the tenant's IP restriction (§6): the settings a customer changes
//! at runtime without an outage and without locking themselves out.

use std::net::IpAddr;

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::allowlist::{IpAllowlist, Normalised};
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::id::CredentialId;
use crate::model::{Credential, IpRestriction};
use crate::permission::{BuiltinRole, Catalog};
use crate::rule::{Conflict, RuleError};

/// Two keys, both valid, so one can replace the other at runtime.
pub const MAX_KEYS: usize = 2;

/// A new account key for the grant's tenant. An account key acts as `admin`, so only a caller who
/// holds everything `admin` does may make one.
pub fn plan_key(
    grant: &Grant<perm::KeysWrite>,
    catalog: &Catalog,
    format: &CredentialFormat,
    now: Timestamp,
) -> Result<(Credential, Secret), RuleError> {
    grant
        .caller()
        .check_no_escalation(&catalog.builtin_role(BuiltinRole::Admin))?;
    Ok(Credential::issue(
        format,
        CredentialKind::AccountKey,
        grant.tenant_id().clone(),
        "account key".to_owned(),
        Some(grant.caller().actor_id()),
        now,
    )?)
}

/// The key that authenticates this very request cannot be deleted by it: rotate with the other.
pub fn check_delete_key(
    grant: &Grant<perm::KeysWrite>,
    key: &CredentialId,
) -> Result<(), RuleError> {
    if grant.credential_id() == key {
        return Err(RuleError::Conflict {
            conflict: Conflict::CannotDeleteCurrentKey,
            detail: "this key authenticates the request; delete it with the other key".into(),
        });
    }
    Ok(())
}

/// A new IP restriction, normalised. Enabling a list that does not cover the caller's own address
/// would lock the caller out, and is refused; disabling is always allowed.
pub fn plan_ip_restriction(
    enabled: bool,
    entries: &[String],
    caller_ip: IpAddr,
) -> Result<(IpRestriction, Vec<Normalised>), RuleError> {
    let (allowlist, normalised) = IpAllowlist::parse(entries, "allowlist")?;
    if enabled && !allowlist.covers(caller_ip) {
        return Err(RuleError::Conflict {
            conflict: Conflict::WouldLockOutCaller,
            detail: format!(
                "the allowlist does not cover your own address {}; add it, or leave the list disabled",
                caller_ip.to_canonical()
            ),
        });
    }
    Ok((IpRestriction { enabled, allowlist }, normalised))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, caller, catalog, format};

    fn strings(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn keys_act_as_admin_so_only_admins_make_them() {
        let admin = caller(CredentialKind::Service, BuiltinRole::Admin, None);
        let grant = admin.require::<perm::KeysWrite>().unwrap();
        let (key, secret) = plan_key(&grant, &catalog(), &format(), NOW).unwrap();
        assert!(secret.expose().starts_with("kg_key_live_"));
        assert!(key.id.as_str().starts_with("key_"));
        let narrow = caller(
            CredentialKind::Service,
            BuiltinRole::Admin,
            Some(&["keys:*"]),
        );
        let grant = narrow.require::<perm::KeysWrite>().unwrap();
        assert!(matches!(
            plan_key(&grant, &catalog(), &format(), NOW),
            Err(RuleError::Escalation(_))
        ));
    }

    #[test]
    fn the_current_key_cannot_delete_itself() {
        let key = caller(CredentialKind::AccountKey, BuiltinRole::Admin, None);
        let grant = key.require::<perm::KeysWrite>().unwrap();
        let own = key.verified().id().clone();
        assert!(matches!(
            check_delete_key(&grant, &own),
            Err(RuleError::Conflict {
                conflict: Conflict::CannotDeleteCurrentKey,
                ..
            })
        ));
        let other = CredentialId::generate_for(CredentialKind::AccountKey, NOW).unwrap();
        assert!(check_delete_key(&grant, &other).is_ok());
    }

    #[test]
    fn enabling_must_cover_the_caller_and_disabling_always_works() {
        let me: IpAddr = "203.0.113.7".parse().unwrap();
        let (on, _) = plan_ip_restriction(true, &strings(&["203.0.113.0/24"]), me).unwrap();
        assert!(on.enabled && on.allowlist.covers(me));
        assert!(matches!(
            plan_ip_restriction(true, &strings(&["10.0.0.0/8"]), me),
            Err(RuleError::Conflict {
                conflict: Conflict::WouldLockOutCaller,
                ..
            })
        ));
        assert!(matches!(
            plan_ip_restriction(true, &[], me),
            Err(RuleError::Conflict {
                conflict: Conflict::WouldLockOutCaller,
                ..
            })
        ));
        let (off, _) = plan_ip_restriction(false, &strings(&["10.0.0.0/8"]), me).unwrap();
        assert!(!off.enabled);
        assert!(matches!(
            plan_ip_restriction(true, &strings(&["bad"]), me),
            Err(RuleError::Invalid(_))
        ));
    }
}
