//! `PUT …/quota` (API.md §13): set, replace or remove the quota on a token, an OAuth client, or a
//! tenant (a reseller's pool, set by an ancestor only). The body is the quota, or `null` to remove
//! it; the answer is the quota as reads show it, or 204 once removed.
//!
//! Who may: `tokens:write` for a token the caller can see, `oauth_clients:write` for a client,
//! `tenants:write` for a tenant strictly below the caller's: a customer may divide what it has
//! among its own tokens, but never set the pool it spends itself.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::id::CredentialId;
use keygate_core::model::{AuditEvent, RequestMeta, Target};
use keygate_core::quota::{Quota, QuotaRequest, StoredQuota};
use keygate_core::rule::RuleError;
use keygate_core::store::QuotaTarget;
use keygate_core::validate::Invalid;

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::ApiError;
use crate::request::Meta;
use crate::routes::oauth::clients::client_id;
use crate::routes::tokens::{personal_visibility, visible};
use crate::state::AppState;
use crate::views::{QuotaBody, QuotaView};

/// The quota a `PUT` asks for, checked at `now`: errors name the body's own fields.
fn check(body: QuotaBody, now: Timestamp) -> Result<Quota, ApiError> {
    QuotaRequest::from(body)
        .check_at(now)
        .map_err(|error| ApiError::from(RuleError::Invalid(vec![Invalid::from(error)])))
}

/// The audit action of a `PUT` with `body`.
fn action(body: &Option<QuotaBody>) -> &'static str {
    if body.is_some() {
        "quota.update"
    } else {
        "quota.delete"
    }
}

/// What a `PUT` came to: the quota as reads now show it, or `None` once it is removed.
pub(crate) type Set = Option<QuotaView>;

/// The answer to a `PUT`: the quota, or 204 once removed.
fn answer(set: Set) -> Response {
    match set {
        Some(view) => axum::Json(view).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Stores `body` (or its removal) on `subject`, recording `event`. `None` when the store found no
/// such subject where the grant reaches.
async fn put(
    state: &AppState,
    target: QuotaTarget<'_>,
    subject: &str,
    body: Option<QuotaBody>,
    event: AuditEvent,
) -> Result<Option<Set>, ApiError> {
    let now = event.time;
    let quota = body
        .map(|body| check(body, now))
        .transpose()?
        .map(|quota| StoredQuota::fresh(subject, quota, now));
    if state
        .store()
        .set_quota(target, quota.as_ref(), &event)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let Some(quota) = quota else {
        return Ok(Some(None));
    };
    // Read back: a replaced quota whose period is unchanged goes on counting.
    let stored = state.store().stored_quota(subject).await?;
    let view = state
        .quota_reader()
        .view_of(stored.as_ref().unwrap_or(&quota));
    Ok(Some(Some(view)))
}

/// Set a token's quota
///
/// Set, replace or (with `null`) remove a token's quota (API.md §13). Replacing keeps what the
/// current period used if the period and anchor are unchanged. Needs `tokens:write`.
#[utoipa::path(put, path = "/v1/tokens/{id}/quota", tag = "tokens", operation_id = "putTokenQuota",
    params(("id" = String, Path, description = "A token id")),
    request_body(content = Option<QuotaBody>, description = "The quota, or the JSON `null` to remove it"),
    responses(
        (status = 200, description = "Set", body = QuotaView),
        (status = 204, description = "Removed"),
        (status = 404, description = "Unknown or not visible"),
    ))]
pub async fn put_token_quota(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(body): Json<Option<QuotaBody>>,
) -> Result<Response, ApiError> {
    set_token_quota(&state, &caller, &meta, &id, body)
        .await
        .map(answer)
}

pub(crate) async fn set_token_quota(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    body: Option<QuotaBody>,
) -> Result<Set, ApiError> {
    let grant = caller.require::<perm::TokensWrite>()?;
    let not_found = || ApiError::not_found(format!("there is no token `{id}`"));
    let token_id = CredentialId::parse_any(id).ok_or_else(not_found)?;
    // A personal token the caller may not see is as good as absent.
    state
        .store()
        .get_token(&grant.reads(), &token_id)
        .await?
        .filter(|t| visible(t, &personal_visibility(grant.caller())))
        .ok_or_else(not_found)?;
    let subject = Target {
        kind: "token",
        id: token_id.to_string(),
    };
    let event = grant.event(action(&body), Some(subject), state.clock().now(), meta)?;
    let target = QuotaTarget::Token(&grant, &token_id);
    put(state, target, token_id.as_str(), body, event)
        .await?
        .ok_or_else(not_found)
}

/// Set an OAuth client's quota
///
/// Set, replace or (with `null`) remove an OAuth client's quota (API.md §13); its access tokens
/// spend from it. Needs `oauth_clients:write`.
#[utoipa::path(put, path = "/v1/oauth/clients/{id}/quota", tag = "oauth", operation_id = "putOauthClientQuota",
    params(("id" = String, Path, description = "A client id")),
    request_body(content = Option<QuotaBody>, description = "The quota, or the JSON `null` to remove it"),
    responses(
        (status = 200, description = "Set", body = QuotaView),
        (status = 204, description = "Removed"),
        (status = 404, description = "Unknown"),
    ))]
pub async fn put_client_quota(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(body): Json<Option<QuotaBody>>,
) -> Result<Response, ApiError> {
    set_client_quota(&state, &caller, &meta, &id, body)
        .await
        .map(answer)
}

pub(crate) async fn set_client_quota(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    body: Option<QuotaBody>,
) -> Result<Set, ApiError> {
    let grant = caller.require::<perm::OauthClientsWrite>()?;
    let client = client_id(id)?;
    let subject = Target {
        kind: "oauth_client",
        id: client.to_string(),
    };
    let event = grant.event(action(&body), Some(subject), state.clock().now(), meta)?;
    let target = QuotaTarget::Client(&grant, &client);
    put(state, target, client.as_str(), body, event)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no OAuth client `{id}`")))
}

/// Set a tenant's pool
///
/// Set, replace or (with `null`) remove the quota a tenant's credentials and its descendants'
/// share (API.md §13): a reseller's pool. Only an ancestor sets it: a tenant cannot set its own.
/// Needs `tenants:write`.
#[utoipa::path(put, path = "/v1/tenants/{id}/quota", tag = "tenants", operation_id = "putTenantQuota",
    params(("id" = String, Path, description = "A tenant id or slug, strictly below yours")),
    request_body(content = Option<QuotaBody>, description = "The quota, or the JSON `null` to remove it"),
    responses(
        (status = 200, description = "Set", body = QuotaView),
        (status = 204, description = "Removed"),
        (status = 403, description = "Your own tenant: its pool is set by an ancestor"),
        (status = 404, description = "Not at or below your tenant"),
    ))]
pub async fn put_tenant_quota(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(body): Json<Option<QuotaBody>>,
) -> Result<Response, ApiError> {
    set_tenant_quota(&state, &caller, &meta, &id, body)
        .await
        .map(answer)
}

pub(crate) async fn set_tenant_quota(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    body: Option<QuotaBody>,
) -> Result<Set, ApiError> {
    let grant = caller.require::<perm::TenantsWrite>()?;
    let not_found = || ApiError::not_found(format!("there is no tenant `{id}` here"));
    let tenant = state
        .store()
        .get_tenant(&grant.reads(), id)
        .await?
        .ok_or_else(not_found)?;
    if tenant.id == *grant.tenant_id() {
        return Err(ApiError::from(RuleError::forbidden(
            "a tenant's pool is set by a tenant above it, not by the tenant itself",
        )));
    }
    let subject = Target {
        kind: "tenant",
        id: tenant.id.to_string(),
    };
    let event = grant.event(action(&body), Some(subject), state.clock().now(), meta)?;
    let target = QuotaTarget::Tenant(&grant, &tenant.id);
    put(state, target, tenant.id.as_str(), body, event)
        .await?
        .ok_or_else(not_found)
}
