//! Roles. Built-in roles are visible in every tenant; custom roles belong to one.

use async_trait::async_trait;

use super::{Deletion, Page, Paged, StoreError};
use crate::access::{Grant, Scope, perm};
use crate::id::RoleId;
use crate::model::{AuditEvent, Role};

#[async_trait]
pub trait RoleStore: Send + Sync + 'static {
    async fn list_roles(
        &self,
        scope: &Scope<perm::RolesRead>,
        page: &Page,
    ) -> Result<Paged<Role>, StoreError>;

    /// A built-in role, or a custom role of the scope's tenant.
    async fn get_role(
        &self,
        scope: &Scope<perm::RolesRead>,
        id: &RoleId,
    ) -> Result<Option<Role>, StoreError>;

    /// Fails with `AlreadyExists("name")` if the tenant has a role of that name.
    async fn create_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Replaces a custom role's name and permissions; `None` if the tenant has no such role.
    async fn replace_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        role: &Role,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Deletes a custom role; `InUse` while a user or a usable credential holds it.
    async fn delete_role(
        &self,
        grant: &Grant<perm::RolesWrite>,
        id: &RoleId,
        event: &AuditEvent,
    ) -> Result<Deletion, StoreError>;
}
