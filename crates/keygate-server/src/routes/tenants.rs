//! Tenants (API.md §3): a reseller creates its sub-customers, with their first user in the same
//! request, and manages them, or acts inside them with `as-tenant`. A tenant sees itself and what
//! is below it; anything else is a 404, never a 403.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::access::{Caller, perm};
use keygate_core::id::TenantId;
use keygate_core::model::{LeakPolicy, RequestMeta, Target, Tenant, TenantStatus};
use keygate_core::store::Deletion;
use keygate_core::tenants::{self, NewTenant, TenantChange};
use keygate_core::users::NewUser;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::{ApiError, FieldError, ProblemCode};
use crate::request::{Meta, Query, page};
use crate::routes::users::UserView;
use crate::state::AppState;
use crate::views::{CreatedSecret, List, TenantView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstUser {
    #[schema(example = "owner@acme.example")]
    pub email: String,
    pub name: String,
    /// Generated and returned once if left out.
    pub password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Corp", "slug": "acme", "first_user": {"email": "owner@acme.example", "name": "Wile E. Coyote"}}))]
pub struct CreateTenant {
    #[schema(example = "Acme Corp", min_length = 1, max_length = 100)]
    pub name: String,
    /// Lowercase letters, digits and `-`; derived from the name when left out.
    #[schema(example = "acme")]
    pub slug: Option<String>,
    /// The new tenant's first user, with the `owner` role.
    pub first_user: Option<FirstUser>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_user: Option<UserView>,
    /// The first user's generated password, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Corporation"}))]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// `active` or `suspended`; only an ancestor may change it.
    #[schema(example = "suspended")]
    pub status: Option<String>,
    /// What a credential of the tenant reported as leaked comes to (API.md §15): `revoke` (the
    /// default) or `notify` (it keeps working; the tenant is told by audit event and webhook).
    #[schema(value_type = Option<String>, example = "revoke")]
    pub leak_policy: Option<LeakPolicy>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the items with these ids; repeat the key (`?id=a&id=b`).
    #[serde(default)]
    id: Vec<String>,
    /// A tenant at or below yours (id or slug); yours when left out.
    parent_id: Option<String>,
    /// How many items, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(pattern = "^[A-Za-z0-9_]{0,64}$")]
    cursor: Option<String>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("there is no tenant `{id}` here"))
}

fn target(id: &TenantId) -> Target {
    Target {
        kind: "tenant",
        id: id.to_string(),
    }
}

/// The tenant a grant acts in, as the store has it.
async fn home(
    state: &AppState,
    scope: &keygate_core::access::Scope<perm::TenantsRead>,
) -> Result<Tenant, ApiError> {
    state
        .store()
        .get_tenant(scope, scope.tenant_id().as_str())
        .await?
        .ok_or_else(|| ApiError::internal("the acting tenant is gone"))
}

/// Create a child tenant
///
/// Create a child tenant, optionally with its first (owner) user. Needs `tenants:write`, and with
/// a first user `users:write` and everything an owner holds.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "createTenant",
    request_body = CreateTenant,
    responses(
        (status = 201, body = CreatedTenant),
        (status = 409, description = "The slug or the first user's email is taken"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<CreateTenant>,
) -> Result<CreatedSecret<CreatedTenant>, ApiError> {
    let created = create_tenant(&state, &caller, &meta, request).await?;
    Ok(CreatedSecret(created))
}

/// Creates a child of the tenant `caller` acts in, with its first user if asked: the API's
/// `POST /v1/tenants` and the console's form.
pub(crate) async fn create_tenant(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    request: CreateTenant,
) -> Result<CreatedTenant, ApiError> {
    let grant = caller.require::<perm::TenantsWrite>()?;
    // Creating the first user is creating a user: it takes `users:write` too.
    let users_grant = match &request.first_user {
        Some(_) => Some(caller.require::<perm::UsersWrite>()?),
        None => None,
    };
    let now = state.clock().now();
    let parent = home(state, &grant.reads()).await?;
    let input = NewTenant {
        name: request.name,
        slug: request.slug,
        first_user: request.first_user.map(|u| NewUser {
            email: u.email,
            name: u.name,
            password: u.password,
        }),
    };
    let planned = tenants::plan(
        &grant,
        users_grant.as_ref(),
        state.catalog(),
        state.hasher(),
        &parent,
        input,
        now,
    )
    .await?;
    let mut events = vec![
        grant
            .event("tenant.create", Some(target(&planned.tenant.id)), now, meta)?
            .with_status(201)
            .with_detail("name", planned.tenant.name.clone())
            .with_detail("slug", planned.tenant.slug.as_str()),
    ];
    if let Some(user) = &planned.first_user {
        let user_target = Target {
            kind: "user",
            id: user.user.id.to_string(),
        };
        events.push(
            grant
                .event("user.create", Some(user_target), now, meta)?
                .with_status(201)
                .with_detail("name", user.user.name.clone()),
        );
    }
    let first_user = planned
        .first_user
        .as_ref()
        .map(|u| (&u.user, &u.password_hash));
    state
        .store()
        .create_tenant(&grant, &planned.tenant, first_user, &events)
        .await?;
    Ok(CreatedTenant {
        tenant: TenantView::new(&planned.tenant, None),
        initial_password: planned
            .first_user
            .as_ref()
            .and_then(|u| u.generated_password.clone()),
        first_user: planned.first_user.map(|u| u.user.into()),
    })
}

/// List child tenants
///
/// The children of the tenant the request acts in, or of `parent_id` below it. Needs
/// `tenants:read`.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "listTenants",
    params(ListQuery),
    responses(
        (status = 200, body = List<TenantView>),
        (status = 404, description = "parent_id is not at or below your tenant"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<List<TenantView>>, ApiError> {
    let grant = caller.require::<perm::TenantsRead>()?;
    let parent = match &query.parent_id {
        Some(id) => {
            state
                .store()
                .get_tenant(&grant.reads(), id)
                .await?
                .ok_or_else(|| not_found(id))?
                .id
        }
        None => grant.tenant_id().clone(),
    };
    let tenants = state
        .store()
        .list_tenants(
            &grant.reads(),
            &parent,
            &page(query.limit, query.cursor, query.id)?,
        )
        .await?;
    let quotas = state.quota_reader();
    Ok(axum::Json(List::from_paged(tenants, |t| {
        TenantView::new(&t, quotas.view(t.quota.as_ref()))
    })))
}

/// Get a tenant
///
/// A tenant: yours or one below it. Needs `tenants:read`.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "getTenant",
    params(("id" = String, Path, description = "A tenant id or slug")),
    responses(
        (status = 200, body = TenantView),
        (status = 404),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let grant = caller.require::<perm::TenantsRead>()?;
    let tenant = state
        .store()
        .get_tenant(&grant.reads(), &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let quota = state.quota_reader().view(tenant.quota.as_ref());
    Ok(axum::Json(TenantView::new(&tenant, quota)))
}

/// Rename, suspend or reactivate a tenant
///
/// Rename a tenant (yours or below), or suspend or reactivate one below yours. Suspension refuses
/// the tenant's credentials and its descendants' from the next request. Needs `tenants:write`.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "updateTenant",
    params(("id" = String, Path, description = "A tenant id or slug")),
    request_body = UpdateTenant,
    responses(
        (status = 200, body = TenantView),
        (status = 403, description = "Changing your own tenant's status, or a missing permission"),
        (status = 404),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(request): Json<UpdateTenant>,
) -> Result<axum::Json<TenantView>, ApiError> {
    Ok(axum::Json(
        update_tenant(&state, &caller, &meta, &id, request).await?,
    ))
}

/// Renames, suspends or reactivates a tenant at or below the caller's: the API's `PATCH` and the
/// console's forms.
pub(crate) async fn update_tenant(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    request: UpdateTenant,
) -> Result<TenantView, ApiError> {
    let grant = caller.require::<perm::TenantsWrite>()?;
    let status = match request.status.as_deref() {
        None => None,
        Some(text) => Some(TenantStatus::from_name(text).ok_or_else(|| {
            ApiError::invalid_fields(vec![FieldError {
                field: "status".into(),
                message: "must be `active` or `suspended`".into(),
            }])
        })?),
    };
    let tenant = state
        .store()
        .get_tenant(&grant.reads(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let home = home(state, &grant.reads()).await?;
    let change = TenantChange {
        name: request.name,
        status,
        leak_policy: request.leak_policy,
    };
    let changed = tenants::plan_change(&home, &tenant, change)?;
    let now = state.clock().now();
    // A suspension is its own action, so that webhooks can be told of it (`tenant.suspended`).
    let action = if changed.status == TenantStatus::Suspended && tenant.status != changed.status {
        "tenant.suspend"
    } else {
        "tenant.update"
    };
    let event = grant
        .event(action, Some(target(&tenant.id)), now, meta)?
        .with_detail("name", changed.name.clone());
    state
        .store()
        .update_tenant(&grant, &changed, &event)
        .await?
        .ok_or_else(|| not_found(id))?;
    let quota = state.quota_reader().view(changed.quota.as_ref());
    Ok(TenantView::new(&changed, quota))
}

/// Delete a tenant
///
/// Delete a tenant below yours, with its users, roles and credentials. Needs `tenants:write`.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "deleteTenant",
    params(("id" = String, Path, description = "A tenant id or slug")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Deleting your own tenant, or a missing permission"),
        (status = 404),
        (status = 409, description = "tenant-has-children"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_tenant(&state, &caller, &meta, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a tenant below the caller's that has no children: the API's `DELETE` and the
/// console's.
pub(crate) async fn delete_tenant(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
) -> Result<(), ApiError> {
    let grant = caller.require::<perm::TenantsWrite>()?;
    let tenant = state
        .store()
        .get_tenant(&grant.reads(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    tenants::check_delete(&home(state, &grant.reads()).await?, &tenant)?;
    let now = state.clock().now();
    let event = grant
        .event("tenant.delete", Some(target(&tenant.id)), now, meta)?
        .with_status(204);
    match state
        .store()
        .delete_tenant(&grant, &tenant.id, &event)
        .await?
    {
        Deletion::Deleted => Ok(()),
        Deletion::NotFound => Err(not_found(id)),
        Deletion::InUse => Err(ApiError::new(
            ProblemCode::TenantHasChildren,
            "the tenant still has child tenants; delete them first",
        )),
    }
}
