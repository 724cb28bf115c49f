//! The access decision, as a capability.
//!
//! A handler holds a [`Caller`] (a verified credential). To reach a store operation it must ask
//! the caller for a [`Grant`] of the permission that operation names in its signature; a grant can
//! only be made here, by [`Caller::require`], so a forgotten check does not compile. The grant also
//! carries the tenant the request acts in, which is what the store scopes its queries to.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::Timestamp;
use crate::id::{CredentialId, TenantId};
pub use crate::model::RequestMeta;
use crate::model::{Actor, AuditEvent, Target};
use crate::permission::PermissionSet;
use crate::verified::{TenantSummary, Verified};

/// Permissions named as types, for operations whose permission is fixed.
pub mod perm {
    /// A permission that a store operation can demand in its signature.
    pub trait Required: Send + Sync + 'static {
        const NAME: &'static str;
    }

    macro_rules! required {
        ($($name:ident = $text:literal),* $(,)?) => {
            $(
                #[doc = concat!("`", $text, "`")]
                #[derive(Debug)]
                pub struct $name;
                impl Required for $name {
                    const NAME: &'static str = $text;
                }
            )*
            #[cfg(test)]
            pub(crate) const ALL_NAMES: &[&str] = &[$($text),*];
        };
    }

    /// Holding `Self` lets a request read what `R` reads. Every permission implies itself; a
    /// write implies reading its own resource (it must find what it changes), and the writes that
    /// assign a role imply looking roles up. Nothing else: a grant of one resource never reads
    /// another's list.
    pub trait Implies<R: Required>: Required {}

    impl<P: Required> Implies<P> for P {}

    macro_rules! implies {
        ($($write:ident => $($read:ident),+;)*) => {
            $($(impl Implies<$read> for $write {})+)*
        };
    }

    implies! {
        TenantsWrite => TenantsRead;
        UsersWrite => UsersRead, RolesRead;
        RolesWrite => RolesRead;
        TokensWrite => TokensRead, RolesRead;
        KeysWrite => KeysRead;
        IpRestrictionWrite => IpRestrictionRead;
        OauthClientsWrite => OauthClientsRead, RolesRead;
        WebhooksWrite => WebhooksRead;
    }

    required! {
        TenantsRead = "tenants:read",
        TenantsWrite = "tenants:write",
        TenantsImpersonate = "tenants:impersonate",
        UsersRead = "users:read",
        UsersWrite = "users:write",
        RolesRead = "roles:read",
        RolesWrite = "roles:write",
        TokensRead = "tokens:read",
        TokensWrite = "tokens:write",
        KeysRead = "keys:read",
        KeysWrite = "keys:write",
        IpRestrictionRead = "ip_restriction:read",
        IpRestrictionWrite = "ip_restriction:write",
        OauthClientsRead = "oauth_clients:read",
        OauthClientsWrite = "oauth_clients:write",
        AuditRead = "audit:read",
        UsageRead = "usage:read",
        CredentialsVerify = "credentials:verify",
        WebhooksRead = "webhooks:read",
        WebhooksWrite = "webhooks:write",
    }
}

/// The credential lacks permissions; lists which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing permissions: {}", missing.join(", "))]
pub struct Forbidden {
    pub missing: Vec<String>,
}

/// An authenticated request's identity: the verified credential and the tenant it acts in.
#[derive(Debug, Clone)]
pub struct Caller {
    verified: Arc<Verified>,
    acting_as: Option<TenantSummary>,
}

impl Caller {
    pub(crate) fn new(verified: Arc<Verified>) -> Self {
        Self {
            verified,
            acting_as: None,
        }
    }

    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// The shared verification, for keeping beyond the request (the `last_used_at` batch).
    pub fn verified_shared(&self) -> &Arc<Verified> {
        &self.verified
    }

    /// The tenant acted for with `as-tenant`, if any.
    pub fn acting_as(&self) -> Option<&TenantSummary> {
        self.acting_as.as_ref()
    }

    /// The tenant this request's objects belong to.
    pub fn scope(&self) -> &TenantId {
        self.acting_as
            .as_ref()
            .map_or(&self.verified.tenant().id, |t| &t.id)
    }

    /// The credential's own tenant and below, whatever the request acts in: for the gate's
    /// resolving of `as-tenant`, which must name a descendant of it, before any permission is
    /// asked for. Only core reads with it; acting for what it finds needs `tenants:impersonate`.
    pub(crate) fn home_scope(&self) -> Scope<perm::TenantsRead> {
        Scope::new(self.verified.tenant().id.clone())
    }

    /// The same caller acting inside `target`, a strict descendant of its own tenant (the caller
    /// checked that). Needs `tenants:impersonate`.
    pub fn acting_for(self, target: TenantSummary) -> Result<Caller, Forbidden> {
        self.require_all(&[<perm::TenantsImpersonate as perm::Required>::NAME])?;
        Ok(Caller {
            verified: self.verified,
            acting_as: Some(target),
        })
    }

    /// A grant of `P` if the credential holds it.
    pub fn require<P: perm::Required>(&self) -> Result<Grant<P>, Forbidden> {
        self.require_all(&[P::NAME])?;
        Ok(Grant {
            caller: self.clone(),
            _permission: PhantomData,
        })
    }

    /// Checks permissions named at run time (operator-declared ones, `X-Keygate-Require`).
    pub fn require_all<S: AsRef<str>>(&self, permissions: &[S]) -> Result<(), Forbidden> {
        let missing = self.verified.permissions.missing(permissions);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Forbidden {
                missing: missing.into_iter().map(str::to_owned).collect(),
            })
        }
    }
}

/// What a store read demands, as a write demands a [`Grant`]: the tenant a request acts in, as
/// only a grant of `P` (or of a permission that implies `P`, see [`perm::Implies`]) can vouch for
/// it. So a `Grant<TokensWrite>` cannot list users: no `Scope<UsersRead>` comes of it.
///
/// A grant of `users:read` lists users:
/// ```
/// # use keygate_core::access::{Grant, perm};
/// # use keygate_core::store::{Page, Store};
/// async fn list(store: &dyn Store, grant: &Grant<perm::UsersRead>, page: &Page) {
///     let _ = store.list_users(&grant.reads(), page).await;
/// }
/// ```
/// and so does `users:write`, which reads the users it changes; `tokens:write` does not compile:
/// ```compile_fail
/// # use keygate_core::access::{Grant, perm};
/// # use keygate_core::store::{Page, Store};
/// async fn list(store: &dyn Store, grant: &Grant<perm::TokensWrite>, page: &Page) {
///     let _ = store.list_users(&grant.reads(), page).await;
/// }
/// ```
pub struct Scope<P> {
    tenant: TenantId,
    _permission: PhantomData<fn() -> P>,
}

impl<P> Scope<P> {
    fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            _permission: PhantomData,
        }
    }

    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }
}

impl<P> Clone for Scope<P> {
    fn clone(&self) -> Self {
        Self::new(self.tenant.clone())
    }
}

impl<P> std::fmt::Debug for Scope<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scope").field(&self.tenant).finish()
    }
}

/// Why a request may not do what it asks, beyond a missing permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("that would grant permissions the caller does not hold: {}", beyond.join(", "))]
pub struct Escalation {
    pub beyond: Vec<String>,
}

/// Proof that the caller holds `P`, scoped to the tenant the request acts in.
#[derive(Debug)]
pub struct Grant<P> {
    caller: Caller,
    _permission: PhantomData<fn() -> P>,
}

impl<P: perm::Required> Grant<P> {
    /// The tenant whose objects this grant reaches.
    pub fn tenant_id(&self) -> &TenantId {
        self.caller.scope()
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// A successful audit event for `action` by this caller, to be written with the change.
    pub fn event(
        &self,
        action: &'static str,
        target: Option<Target>,
        time: Timestamp,
        meta: &RequestMeta,
    ) -> Result<AuditEvent, getrandom::Error> {
        let verified = &self.caller.verified;
        let actor = Actor {
            kind: verified.principal().kind.as_str(),
            id: verified.principal().id.to_owned(),
        };
        let event = AuditEvent::new(
            verified.tenant().id.clone(),
            actor,
            Some(verified.id().clone()),
            action,
            target,
            time,
            meta,
        )?;
        Ok(event.acting_in(self.caller.acting_as.as_ref().map(|t| t.id.clone())))
    }

    /// The id of the credential acting.
    pub fn credential_id(&self) -> &CredentialId {
        self.caller.verified.id()
    }

    /// The scope of a read that holding `P` allows: `P`'s own, if `P` reads; or one a write
    /// implies, since writing a resource reads it first and some writes look up what they assign
    /// (a role, for a user or a token).
    pub fn reads<R: perm::Required>(&self) -> Scope<R>
    where
        P: perm::Implies<R>,
    {
        Scope::new(self.caller.scope().clone())
    }
}

impl Caller {
    /// Least privilege: nothing the caller creates may grant what the caller does not hold.
    pub fn check_no_escalation(&self, granted: &PermissionSet) -> Result<(), Escalation> {
        let beyond = self.verified.permissions.lacks(granted);
        if beyond.is_empty() {
            Ok(())
        } else {
            Err(Escalation { beyond })
        }
    }

    /// Who is acting, for `created_by` fields: the user behind a session or personal token, else
    /// the credential itself.
    pub fn actor_id(&self) -> String {
        self.verified.principal().id.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::BUILTIN;

    #[test]
    fn events_record_the_credentials_tenant_and_the_one_acted_for() {
        use crate::credential::CredentialKind;
        use crate::permission::BuiltinRole;
        use crate::testing::{NOW, caller};
        let owner = caller(CredentialKind::Service, BuiltinRole::Owner, None);
        let child = TenantSummary {
            id: TenantId::generate(NOW).unwrap(),
            name: "Child".into(),
            slug: "child".into(),
            suspended: false,
        };
        let own_tenant = owner.verified().tenant().id.clone();
        let acting = owner.clone().acting_for(child.clone()).unwrap();
        assert_eq!(acting.scope(), &child.id);
        let grant = acting.require::<perm::UsersWrite>().unwrap();
        assert_eq!(
            grant.tenant_id(),
            &child.id,
            "objects land in the tenant acted for"
        );
        let event = grant
            .event("user.create", None, NOW, &RequestMeta::default())
            .unwrap();
        assert_eq!(event.tenant_id, own_tenant);
        assert_eq!(event.acting_tenant_id, Some(child.id.clone()));
        assert_eq!(event.token_id.as_ref(), Some(owner.verified().id()));

        let viewer = caller(CredentialKind::Service, BuiltinRole::Viewer, None);
        let refused = viewer.acting_for(child).unwrap_err();
        assert_eq!(refused.missing, ["tenants:impersonate"]);
    }

    #[test]
    fn every_builtin_permission_has_a_type_and_back() {
        let mut names = perm::ALL_NAMES.to_vec();
        names.sort_unstable();
        let mut builtin = BUILTIN.to_vec();
        builtin.sort_unstable();
        assert_eq!(names, builtin);
    }
}
