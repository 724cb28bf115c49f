//! `/v1/oauth/clients`: a tenant's OAuth clients. The secret is in the create response and nowhere
//! else; deleting a client stops its access tokens at once, on every node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, RequestMeta, perm};
use keygate_core::clients::{self, NewClient};
use keygate_core::id::CredentialId;
use keygate_core::model::Credential;
use keygate_core::oauth::client_target;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::{ApiError, Problem};
use crate::request::{Meta, PageQuery, Query};
use crate::routes::roles;
use crate::state::AppState;
use crate::views::{CreatedSecret, List, QuotaBody, QuotaReader, QuotaView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "billing sync", "role": "viewer", "permissions": ["tokens:read"]}))]
pub struct CreateClient {
    #[schema(example = "billing sync")]
    pub name: String,
    pub description: Option<String>,
    /// A role id or built-in role name: what the client acts with.
    #[schema(example = "viewer")]
    pub role: String,
    /// Narrows the role to these permissions (wildcards allowed).
    #[schema(example = json!(["zones:read"]))]
    pub permissions: Option<Vec<String>>,
    /// How many requests the client may make per period (API.md §13).
    pub quota: Option<QuotaBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    #[schema(example = "cli_0MqX1z8a9bCdEfGhIjKlMn")]
    pub client_id: String,
    pub name: String,
    pub description: Option<String>,
    /// The role id the client acts with.
    #[schema(example = "rol_viewer")]
    pub role: Option<String>,
    /// The narrowing list, if any.
    pub permissions: Option<Vec<String>>,
    pub created_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it last authenticated or one of its access tokens was last used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// The client address of the last use, when known.
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub last_used_ip: Option<String>,
    /// The secret's last four characters.
    #[schema(example = "x9Qa")]
    pub hint: String,
    /// Until when the secret replaced by the last roll keeps working (API.md §14); absent if
    /// the secret was never rolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<Timestamp>,
    pub quota: Option<QuotaView>,
    /// When its secret was revoked as leaked (API.md §15): the client and its access tokens no
    /// longer work. Absent while it works.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked: `leaked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

impl ClientView {
    pub fn new(client: Credential, quotas: &QuotaReader<'_>) -> Self {
        Self {
            quota: quotas.view(client.quota.as_ref()),
            client_id: client.id.to_string(),
            name: client.name,
            description: client.description,
            role: client.role_id.map(|r| r.to_string()),
            permissions: client.permissions,
            created_by: client.created_by,
            created_at: client.created_at,
            last_used_at: client.last_used_at,
            last_used_ip: client.last_used_ip.map(|ip| ip.to_string()),
            hint: client.hint,
            previous_secret_expires_at: client.previous_secret.map(|p| p.until),
            revoked_at: client.revoked_at,
            revoked_reason: client.revoked_reason,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    pub client: ClientView,
    /// The full secret. Shown this once: keygate keeps only its hash.
    #[schema(example = "kg_secret_live_…")]
    pub client_secret: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"expire_previous_in": 3600}))]
pub struct RollSecret {
    /// Seconds the current secret keeps working beside the new one (0 to 604800, default 3600).
    #[schema(minimum = 0, maximum = 604_800, example = 3600)]
    pub expire_previous_in: Option<u64>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("there is no OAuth client `{id}`"))
}

pub(crate) fn client_id(id: &str) -> Result<CredentialId, ApiError> {
    CredentialId::parse_any(id)
        .filter(|id| id.as_str().starts_with("cli_"))
        .ok_or_else(|| not_found(id))
}

/// Create an OAuth client
///
/// Create a client. Needs `oauth_clients:write`, and every permission the client would grant.
#[utoipa::path(post, path = "/v1/oauth/clients", tag = "oauth", operation_id = "createOauthClient",
    request_body = CreateClient,
    responses(
        (status = 201, description = "Created; `client_secret` is shown only here", body = CreatedClient),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden or privilege-escalation", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<CreateClient>,
) -> Result<CreatedSecret<CreatedClient>, ApiError> {
    let created = create_client(&state, &caller, &meta, request).await?;
    Ok(CreatedSecret(created))
}

/// Creates a client as `caller` (API and console alike); returns it with its secret.
pub(crate) async fn create_client(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    request: CreateClient,
) -> Result<CreatedClient, ApiError> {
    let grant = caller.require::<perm::OauthClientsWrite>()?;
    let now = state.clock().now();
    let role = roles::named(state, &grant.reads(), &request.role).await?;
    let input = NewClient {
        name: request.name,
        description: request.description,
        permissions: request.permissions,
        quota: request.quota.map(Into::into),
    };
    let (client, secret) = clients::plan(
        &grant,
        state.catalog(),
        state.verifier().format(),
        input,
        &role,
        now,
    )?;
    let event = grant
        .event(
            "oauth_client.create",
            Some(client_target(&client.id)),
            now,
            meta,
        )?
        .with_status(201)
        .with_detail("name", client.name.clone());
    state.store().create_client(&grant, &client, &event).await?;
    Ok(CreatedClient {
        client: ClientView::new(client, &state.quota_reader()),
        client_secret: secret.into_exposed(),
    })
}

/// List OAuth clients
///
/// List the tenant's clients, newest first (never their secrets). Needs `oauth_clients:read`.
#[utoipa::path(get, path = "/v1/oauth/clients", tag = "oauth", operation_id = "listOauthClients",
    params(PageQuery),
    responses(
        (status = 200, body = List<ClientView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<ClientView>>, ApiError> {
    let grant = caller.require::<perm::OauthClientsRead>()?;
    let page = query.page()?;
    let clients = state.store().list_clients(&grant.reads(), &page).await?;
    let quotas = state.quota_reader();
    Ok(axum::Json(List::from_paged(clients, |c| {
        ClientView::new(c, &quotas)
    })))
}

/// Get an OAuth client
///
/// Get a client (never its secret). Needs `oauth_clients:read`.
#[utoipa::path(get, path = "/v1/oauth/clients/{id}", tag = "oauth", operation_id = "getOauthClient",
    params(("id" = String, Path, description = "A client id")),
    responses(
        (status = 200, body = ClientView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let grant = caller.require::<perm::OauthClientsRead>()?;
    let client = state
        .store()
        .get_client(&grant.reads(), &client_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(ClientView::new(client, &state.quota_reader())))
}

/// Delete an OAuth client
///
/// Delete a client for good: its secret, refresh tokens and access tokens stop at once. Needs
/// `oauth_clients:write`, and every permission the client grants.
#[utoipa::path(delete, path = "/v1/oauth/clients/{id}", tag = "oauth", operation_id = "deleteOauthClient",
    params(("id" = String, Path, description = "A client id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_client(&state, &caller, &meta, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes client `id` as `caller` (API and console alike).
pub(crate) async fn delete_client(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
) -> Result<(), ApiError> {
    let grant = caller.require::<perm::OauthClientsWrite>()?;
    let client_id = client_id(id)?;
    let client = state
        .store()
        .get_client(&grant.reads(), &client_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let role = match &client.role_id {
        Some(role) => state.store().get_role(&grant.reads(), role).await?,
        None => None,
    };
    clients::check_delete(&grant, state.catalog(), &client, role.as_ref())?;
    let now = state.clock().now();
    let event = grant
        .event(
            "oauth_client.delete",
            Some(client_target(&client_id)),
            now,
            meta,
        )?
        .with_status(204);
    state
        .store()
        .delete_client(&grant, &client_id, &event)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(())
}

/// Roll an OAuth client's secret
///
/// Give a client a new secret without downtime (API.md §14): the client keeps its id, role and
/// permissions; its new `client_secret` is shown once, while the current secret keeps working
/// beside it for `expire_previous_in` seconds (default an hour, at most a week;
/// `previous_secret_expires_at` says until when). A secret replaced by an earlier roll stops at
/// once. Needs what deleting the client needs.
#[utoipa::path(post, path = "/v1/oauth/clients/{id}/secret/roll", tag = "oauth",
    operation_id = "rollOauthClientSecret",
    params(("id" = String, Path, description = "A client id")),
    request_body(content = RollSecret, description = "Optional; `{}` or no body takes the defaults"),
    responses(
        (status = 201, description = "Rolled; `client_secret` is the new secret, shown only here", body = CreatedClient),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden or privilege-escalation: deleting the client is not the caller's to do", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn roll_secret(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    request: Option<Json<RollSecret>>,
) -> Result<CreatedSecret<CreatedClient>, ApiError> {
    let request = request.map(|Json(request)| request).unwrap_or_default();
    let rolled =
        roll_client_secret(&state, &caller, &meta, &id, request.expire_previous_in).await?;
    Ok(CreatedSecret(rolled))
}

/// Rolls the secret of client `id` as `caller` (API and console alike); returns the client with
/// its new secret.
pub(crate) async fn roll_client_secret(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    expire_previous_in: Option<u64>,
) -> Result<CreatedClient, ApiError> {
    let grant = caller.require::<perm::OauthClientsWrite>()?;
    let client_id = client_id(id)?;
    let client = state
        .store()
        .get_client(&grant.reads(), &client_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let role = match &client.role_id {
        Some(role) => state.store().get_role(&grant.reads(), role).await?,
        None => None,
    };
    let now = state.clock().now();
    let planned = clients::plan_secret_roll(
        &grant,
        state.catalog(),
        state.verifier().format(),
        &client,
        role.as_ref(),
        expire_previous_in,
        now,
    )?;
    let event = grant
        .event(
            "oauth_client.secret_roll",
            Some(client_target(&client_id)),
            now,
            meta,
        )?
        .with_status(201);
    let client = state
        .store()
        .roll_client_secret(
            &grant,
            &client_id,
            &planned.secret.hash(),
            &planned.secret.hint(),
            planned.previous_until,
            &event,
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(CreatedClient {
        client: ClientView::new(client, &state.quota_reader()),
        client_secret: planned.secret.into_exposed(),
    })
}
