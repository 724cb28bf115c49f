//! Tenants. A scope sees its own tenant and every tenant below it.

use async_trait::async_trait;

use super::{Deletion, Page, Paged, StoreError};
use crate::access::{Grant, Scope, perm};
use crate::id::TenantId;
use crate::model::{AuditEvent, Tenant, User};
use crate::password::PasswordHashString;

#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// The tenant with this id or slug, if it is the scope's tenant or below it.
    async fn get_tenant(
        &self,
        scope: &Scope<perm::TenantsRead>,
        id_or_slug: &str,
    ) -> Result<Option<Tenant>, StoreError>;

    /// The children of `parent`, if `parent` is the scope's tenant or below it.
    async fn list_tenants(
        &self,
        scope: &Scope<perm::TenantsRead>,
        parent: &TenantId,
        page: &Page,
    ) -> Result<Paged<Tenant>, StoreError>;

    /// Creates a child of the grant's tenant, with its first user if any, in one transaction.
    /// Fails with `AlreadyExists("slug")` or `AlreadyExists("email")`.
    async fn create_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        first_user: Option<(&User, &PasswordHashString)>,
        events: &[AuditEvent],
    ) -> Result<(), StoreError>;

    /// Writes a tenant's name and status; `None` if it is not in the grant's subtree.
    async fn update_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        tenant: &Tenant,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Deletes a tenant of the grant's subtree with its users, roles and credentials;
    /// `InUse` while it has child tenants.
    async fn delete_tenant(
        &self,
        grant: &Grant<perm::TenantsWrite>,
        id: &TenantId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError>;
}
