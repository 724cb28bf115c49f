//! Roles and the permission catalog (API.md §2, §3).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, RequestMeta, Scope, perm};
use keygate_core::id::RoleId;
use keygate_core::model::{Role, Target};
use keygate_core::permission::{BUILTIN, Catalog};
use keygate_core::roles::{self, RoleInput, RoleRef};
use keygate_core::rule::{Conflict, RuleError};
use keygate_core::store::Deletion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::{ApiError, FieldError};
use crate::request::{Meta, PageQuery, Query, not_a_cursor};
use crate::state::AppState;
use crate::views::{List, permission_names};

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    #[schema(example = "rol_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    #[schema(example = "deployer")]
    pub name: String,
    /// What the role grants: a custom role's patterns as defined (`tokens:*`), a built-in role's
    /// permissions as the catalog expands them.
    #[schema(example = json!(["tokens:*", "zones:read"]))]
    pub permissions: Vec<String>,
    pub builtin: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl RoleView {
    pub(crate) fn new(role: Role, catalog: &Catalog) -> Self {
        let builtin = role.tenant_id.is_none();
        let permissions = if builtin {
            permission_names(&keygate_core::verified::role_permissions(&role, catalog))
        } else {
            role.permissions
        };
        Self {
            id: role.id.to_string(),
            name: role.name,
            permissions,
            builtin,
            created_at: role.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "deployer", "permissions": ["tokens:read", "tokens:write"]}))]
pub struct RoleRequest {
    #[schema(example = "deployer", min_length = 1, max_length = 100)]
    pub name: String,
    /// Permissions or wildcards (`*`, `tokens:*`) from the catalog.
    #[schema(example = json!(["tokens:*", "zones:read"]), min_items = 1)]
    pub permissions: Vec<String>,
}

/// A role named by id or built-in name, in the caller's scope; 404 otherwise.
pub async fn resolve(
    state: &AppState,
    scope: &Scope<perm::RolesRead>,
    text: &str,
) -> Result<Role, ApiError> {
    find(state, scope, text)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no role `{text}` in this tenant")))
}

/// The role a request body's `role` names (an id or a built-in name) in the caller's scope. One
/// it cannot see is a value like any invalid one: a 400 naming the field (a 404 would read as a
/// wrong URL), the same whether it exists in another tenant or nowhere.
pub async fn named(
    state: &AppState,
    scope: &Scope<perm::RolesRead>,
    text: &str,
) -> Result<Role, ApiError> {
    find(state, scope, text).await?.ok_or_else(|| {
        ApiError::invalid_fields(vec![FieldError {
            field: "role".into(),
            message: format!(
                "there is no role `{text}` in this tenant: give a role id (rol_…) or owner, \
                 admin, member or viewer"
            ),
        }])
    })
}

async fn find(
    state: &AppState,
    scope: &Scope<perm::RolesRead>,
    text: &str,
) -> Result<Option<Role>, ApiError> {
    match RoleRef::parse(text) {
        None => Ok(None),
        Some(RoleRef::Builtin(builtin)) => Ok(Some(roles::builtin(builtin))),
        Some(RoleRef::Id(id)) => Ok(state.store().get_role(scope, &id).await?),
    }
}

fn role_id(text: &str) -> Result<RoleId, ApiError> {
    RoleId::parse(text).ok_or_else(|| ApiError::not_found(format!("there is no role `{text}`")))
}

/// List roles
///
/// List roles: the built-ins, then the tenant's own. Needs `roles:read`.
#[utoipa::path(get, path = "/v1/roles", tag = "roles", operation_id = "listRoles",
    params(PageQuery),
    responses(
        (status = 200, body = List<RoleView>),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<RoleView>>, ApiError> {
    let grant = caller.require::<perm::RolesRead>()?;
    let page = query.page()?;
    let roles = state.store().list_roles(&grant.reads(), &page).await?;
    Ok(axum::Json(List::from_paged(roles, |r| {
        RoleView::new(r, state.catalog())
    })))
}

/// Create a custom role
///
/// Create a custom role. Needs `roles:write`, and every permission it grants.
#[utoipa::path(post, path = "/v1/roles", tag = "roles", operation_id = "createRole",
    request_body = RoleRequest,
    responses(
        (status = 201, body = RoleView),
        (status = 400, description = "Invalid name or unknown permission"),
        (status = 403, description = "Missing roles:write, or privilege-escalation"),
        (status = 409, description = "already-exists"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<RoleRequest>,
) -> Result<(StatusCode, axum::Json<RoleView>), ApiError> {
    let role = create_role(&state, &caller, &meta, request).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RoleView::new(role, state.catalog())),
    ))
}

/// Creates a custom role as `caller`, for the API and the console's role matrix alike.
pub(crate) async fn create_role(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    request: RoleRequest,
) -> Result<Role, ApiError> {
    let grant = caller.require::<perm::RolesWrite>()?;
    let now = state.clock().now();
    let input = RoleInput {
        name: request.name,
        permissions: request.permissions,
    };
    let role = roles::plan(&grant, state.catalog(), input, None, now)?;
    let event = grant
        .event("role.create", Some(target(&role)), now, meta)?
        .with_status(201);
    state.store().create_role(&grant, &role, &event).await?;
    Ok(role)
}

/// Get a role
///
/// Get a role. Needs `roles:read`.
#[utoipa::path(get, path = "/v1/roles/{id}", tag = "roles", operation_id = "getRole",
    params(("id" = String, Path, description = "A role id")),
    responses(
        (status = 200, body = RoleView),
        (status = 404),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<RoleView>, ApiError> {
    let grant = caller.require::<perm::RolesRead>()?;
    let role = state
        .store()
        .get_role(&grant.reads(), &role_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no role `{id}`")))?;
    Ok(axum::Json(RoleView::new(role, state.catalog())))
}

/// Replace a custom role
///
/// Replace a custom role's name and permissions; applies to the very next request of everyone
/// holding it. Needs `roles:write`, and every permission the role grants before and after.
#[utoipa::path(put, path = "/v1/roles/{id}", tag = "roles", operation_id = "replaceRole",
    params(("id" = String, Path, description = "A role id")),
    request_body = RoleRequest,
    responses(
        (status = 200, body = RoleView),
        (status = 404),
        (status = 409, description = "builtin-role or already-exists"),
    ))]
pub async fn replace(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(request): Json<RoleRequest>,
) -> Result<axum::Json<RoleView>, ApiError> {
    let role = replace_role(&state, &caller, &meta, &id, request).await?;
    Ok(axum::Json(RoleView::new(role, state.catalog())))
}

/// Replaces a custom role as `caller`, for the API's PUT and the console's role matrix alike.
pub(crate) async fn replace_role(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    request: RoleRequest,
) -> Result<Role, ApiError> {
    let grant = caller.require::<perm::RolesWrite>()?;
    let now = state.clock().now();
    let existing = state
        .store()
        .get_role(&grant.reads(), &role_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no role `{id}`")))?;
    let input = RoleInput {
        name: request.name,
        permissions: request.permissions,
    };
    let role = roles::plan(&grant, state.catalog(), input, Some(&existing), now)?;
    let event = grant.event("role.update", Some(target(&role)), now, meta)?;
    state
        .store()
        .replace_role(&grant, &role, &event)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no role `{id}`")))?;
    Ok(role)
}

/// Delete a custom role
///
/// Delete a custom role nobody holds. Needs `roles:write`.
#[utoipa::path(delete, path = "/v1/roles/{id}", tag = "roles", operation_id = "deleteRole",
    params(("id" = String, Path, description = "A role id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404),
        (status = 409, description = "role-in-use (users or usable tokens hold it) or builtin-role"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_role(&state, &caller, &meta, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a custom role as `caller`, for the API's DELETE and the console alike.
pub(crate) async fn delete_role(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
) -> Result<(), ApiError> {
    let grant = caller.require::<perm::RolesWrite>()?;
    let now = state.clock().now();
    let role = state
        .store()
        .get_role(&grant.reads(), &role_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no role `{id}`")))?;
    roles::check_may_change(&grant, state.catalog(), &role)?;
    let event = grant
        .event("role.delete", Some(target(&role)), now, meta)?
        .with_status(204);
    match state.store().delete_role(&grant, &role.id, &event).await? {
        Deletion::Deleted => Ok(()),
        Deletion::NotFound => Err(ApiError::not_found(format!("there is no role `{id}`"))),
        Deletion::InUse => Err(RuleError::Conflict {
            conflict: Conflict::RoleInUse,
            detail: "users, usable tokens or OAuth clients still hold this role; move them to another first"
                .into(),
        }
        .into()),
    }
}

fn target(role: &Role) -> Target {
    Target {
        kind: "role",
        id: role.id.to_string(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionView {
    #[schema(example = "tokens:read")]
    pub name: String,
    /// `false` for the permissions the operator declared for the APIs keygate protects.
    pub builtin: bool,
}

/// List the permission catalog
///
/// The permission catalog: keygate's own permissions and the operator's, in the catalog's order,
/// paged like every list (`limit`, `cursor`); a permission's name is its `id`. Any valid
/// credential.
#[utoipa::path(get, path = "/v1/permissions", tag = "roles", operation_id = "listPermissions",
    params(PageQuery),
    responses(
        (status = 200, body = List<PermissionView>),
    ))]
pub async fn permissions(
    State(state): State<AppState>,
    Authenticated(_caller): Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<PermissionView>>, ApiError> {
    let page = query.page()?;
    let catalog = state.catalog();
    // The cursor is where the next page starts in the catalog (which only a restart with
    // another configuration reorders).
    let start = match page.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix('p')
            .and_then(|at| at.parse::<usize>().ok())
            .ok_or_else(not_a_cursor)?,
    };
    let limit = page.limit as usize;
    // A permission's name is its id: `?id=tokens:read` asks for that one.
    let mut listed = catalog
        .iter()
        .filter(|p| page.ids.is_empty() || page.ids.iter().any(|id| id == p.as_str()))
        .skip(start);
    let data: Vec<PermissionView> = listed
        .by_ref()
        .take(limit)
        .map(|p| PermissionView {
            name: p.as_str().to_owned(),
            builtin: BUILTIN.contains(&p.as_str()),
        })
        .collect();
    let next_cursor = listed
        .next()
        .is_some()
        .then(|| format!("p{}", start + data.len()));
    Ok(axum::Json(List { data, next_cursor }))
}
