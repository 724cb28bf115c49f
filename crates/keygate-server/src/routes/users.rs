//! Users (API.md §3): people who sign in, each with one role. Disabling or deleting a user, or
//! changing their role, applies to their sessions and personal tokens on the very next request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, RequestMeta, perm};
use keygate_core::id::UserId;
use keygate_core::model::{Target, User, UserStatus};
use keygate_core::rule::{Conflict, RuleError};
use keygate_core::store::UserWrite;
use keygate_core::users::{self, NewUser, UserChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::{ApiError, FieldError};
use crate::request::{Meta, PageQuery, Query};
use crate::routes::roles;
use crate::state::AppState;
use crate::views::{CreatedSecret, List};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    #[schema(example = "usr_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    #[schema(example = "ada@example.com")]
    pub email: String,
    pub name: String,
    /// The role's id (`rol_admin` for the built-in admin role).
    #[schema(example = "rol_member")]
    pub role: String,
    /// `active` or `disabled`.
    #[schema(example = "active")]
    pub status: &'static str,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When they last signed in; `null` if they never have.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_sign_in_at: Option<Timestamp>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email,
            name: user.name,
            role: user.role_id.to_string(),
            status: user.status.as_str(),
            created_at: user.created_at,
            last_sign_in_at: user.last_sign_in_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "name": "Ada Lovelace", "role": "member"}))]
pub struct CreateUser {
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 100)]
    pub name: String,
    /// A role id, or a built-in role's name (`owner`, `admin`, `member`, `viewer`).
    #[schema(example = "member")]
    pub role: String,
    /// At least 12 characters; one is generated and returned once if left out.
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: UserView,
    /// The generated password, shown this once, when none was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "viewer"}))]
pub struct UpdateUser {
    pub name: Option<String>,
    /// A role id or built-in role name.
    pub role: Option<String>,
    /// `active` or `disabled`.
    #[schema(example = "disabled")]
    pub status: Option<String>,
    pub password: Option<String>,
}

fn user_id(text: &str) -> Result<UserId, ApiError> {
    UserId::parse(text).ok_or_else(|| not_found(text))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("there is no user `{id}`"))
}

fn target(id: &UserId) -> Target {
    Target {
        kind: "user",
        id: id.to_string(),
    }
}

/// List users
///
/// List the tenant's users. Needs `users:read`.
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "listUsers",
    params(PageQuery),
    responses(
        (status = 200, body = List<UserView>),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<UserView>>, ApiError> {
    let grant = caller.require::<perm::UsersRead>()?;
    let users = state
        .store()
        .list_users(&grant.reads(), &query.page()?)
        .await?;
    Ok(axum::Json(List::from_paged(users, UserView::from)))
}

/// Create a user
///
/// Create a user. Needs `users:write`, and every permission the user's role grants.
#[utoipa::path(post, path = "/v1/users", tag = "users", operation_id = "createUser",
    request_body = CreateUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 403, description = "Missing users:write, or privilege-escalation"),
        (status = 409, description = "The email is taken"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<CreateUser>,
) -> Result<CreatedSecret<CreatedUser>, ApiError> {
    let created = create_user(&state, &caller, &meta, request).await?;
    Ok(CreatedSecret(created))
}

/// Creates a user as `caller`: the API's create and the console's "Add user" are this one
/// operation, with the same checks and the same event.
pub(crate) async fn create_user(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    request: CreateUser,
) -> Result<CreatedUser, ApiError> {
    let grant = caller.require::<perm::UsersWrite>()?;
    let now = state.clock().now();
    let role = roles::named(state, &grant.reads(), &request.role).await?;
    let input = NewUser {
        email: request.email,
        name: request.name,
        password: request.password,
    };
    let planned =
        users::plan_new(&grant, state.catalog(), state.hasher(), input, &role, now).await?;
    let event = grant
        .event("user.create", Some(target(&planned.user.id)), now, meta)?
        .with_status(201)
        .with_detail("name", planned.user.name.clone());
    state
        .store()
        .create_user(&grant, &planned.user, &planned.password_hash, &event)
        .await?;
    Ok(CreatedUser {
        user: planned.user.into(),
        initial_password: planned.generated_password,
    })
}

/// Get a user
///
/// Get a user. Needs `users:read`.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", operation_id = "getUser",
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 200, body = UserView),
        (status = 404),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    let grant = caller.require::<perm::UsersRead>()?;
    let user = state
        .store()
        .get_user(&grant.reads(), &user_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(user.into()))
}

/// Change a user
///
/// Change a user's name, role, status or password. Needs `users:write`, and every permission of
/// the user's current and new role. The organization's last active owner stays one.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", operation_id = "updateUser",
    params(("id" = String, Path, description = "A user id")),
    request_body = UpdateUser,
    responses(
        (status = 200, body = UserView),
        (status = 404),
        (status = 409, description = "last-owner: the organization's last active owner would no longer be one"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(request): Json<UpdateUser>,
) -> Result<axum::Json<UserView>, ApiError> {
    Ok(axum::Json(
        update_user(&state, &caller, &meta, &id, request).await?,
    ))
}

/// Changes a user as `caller`, for the API's PATCH and the console's user page alike.
pub(crate) async fn update_user(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    request: UpdateUser,
) -> Result<UserView, ApiError> {
    let grant = caller.require::<perm::UsersWrite>()?;
    let now = state.clock().now();
    let status = match request.status.as_deref() {
        None => None,
        Some(text) => Some(UserStatus::from_name(text).ok_or_else(|| {
            ApiError::invalid_fields(vec![FieldError {
                field: "status".into(),
                message: "must be `active` or `disabled`".into(),
            }])
        })?),
    };
    let user = state
        .store()
        .get_user(&grant.reads(), &user_id(id)?)
        .await?
        .ok_or_else(|| not_found(id))?;
    let current_role = roles::resolve(state, &grant.reads(), user.role_id.as_str()).await?;
    let new_role = match &request.role {
        Some(role) => Some(roles::named(state, &grant.reads(), role).await?),
        None => None,
    };
    let change = UserChange {
        name: request.name,
        status,
        password: request.password,
    };
    let (changed, password_hash) = users::plan_change(
        &grant,
        state.catalog(),
        state.hasher(),
        &user,
        &current_role,
        change,
        new_role.as_ref(),
    )
    .await?;
    let event = grant.event("user.update", Some(target(&user.id)), now, meta)?;
    let written = state
        .store()
        .update_user(&grant, &changed, password_hash.as_ref(), &event)
        .await?;
    written_or_refused(written, id)?;
    Ok(changed.into())
}

/// Delete a user
///
/// Delete a user with their sessions and personal tokens; service tokens they created keep
/// working. Needs `users:write`, and every permission of the user's role. The organization's
/// last active owner is not deleted.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", operation_id = "deleteUser",
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404),
        (status = 409, description = "last-owner: the organization's last active owner"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_user(&state, &caller, &meta, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user as `caller`, for the API's DELETE and the console's user page alike.
pub(crate) async fn delete_user(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
) -> Result<(), ApiError> {
    let grant = caller.require::<perm::UsersWrite>()?;
    let now = state.clock().now();
    let user = state
        .store()
        .get_user(&grant.reads(), &user_id(id)?)
        .await?
        .ok_or_else(|| not_found(id))?;
    let role = roles::resolve(state, &grant.reads(), user.role_id.as_str()).await?;
    users::check_delete(&grant, state.catalog(), &role)?;
    let event = grant
        .event("user.delete", Some(target(&user.id)), now, meta)?
        .with_status(204)
        .with_detail("name", user.name.clone());
    let written = state.store().delete_user(&grant, &user.id, &event).await?;
    written_or_refused(written, id)
}

/// The answer to a user's change or deletion as the store came to it.
fn written_or_refused(written: UserWrite, id: &str) -> Result<(), ApiError> {
    match written {
        UserWrite::Done => Ok(()),
        UserWrite::NotFound => Err(not_found(id)),
        UserWrite::LastOwner => Err(RuleError::Conflict {
            conflict: Conflict::LastOwner,
            detail: format!(
                "`{id}` is the organization's last active owner: make another user owner first"
            ),
        }
        .into()),
    }
}
