//! The account's own settings: its (at most two) account keys (API.md §5) and its IP restriction
//! (§6). Rotating a key: create the second, switch your systems over, delete the first with the
//! second. Changes apply to the very next request, on every node.

use axum::extract::{Path, State};
use keygate_core::Timestamp;
use keygate_core::access::{Caller, RequestMeta, perm};
use keygate_core::account::{self, MAX_KEYS};
use keygate_core::credential::CredentialHash;
use keygate_core::id::CredentialId;
use keygate_core::model::{Credential, IpRestriction, Target};
use keygate_core::store::KeyDeletion;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::json::{Json, NoBody};
use crate::problem::{ApiError, FieldError, ProblemCode};
use crate::request::ClientIp;
use crate::request::{Meta, Query};
use crate::state::AppState;
use crate::views::{CreatedSecret, Warning};

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountKeyView {
    #[schema(example = "key_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    /// The key's last four characters.
    pub hint: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// The client address of the last use, when known.
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub last_used_ip: Option<String>,
    /// Whether this key authenticates the request that lists it.
    pub current: bool,
    /// When it was revoked as leaked (API.md §15); absent while it works. A revoked key no
    /// longer counts towards the limit of two: delete it when you have replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked: `leaked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountKeys {
    pub data: Vec<AccountKeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[schema(example = "key_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    /// The full key. Shown this once: keygate keeps only its hash.
    #[schema(example = "kg_key_live_…")]
    pub key: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Which key to delete: by id or by the full key, under either spelling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(alias = "deleteApiKeyId")]
    id: Option<String>,
    #[serde(alias = "deleteApiKey")]
    key: Option<String>,
}

pub(crate) async fn keys_view(state: &AppState, caller: &Caller) -> Result<AccountKeys, ApiError> {
    let grant = caller.require::<perm::KeysRead>()?;
    let keys = state.store().list_account_keys(&grant.reads()).await?;
    let current = caller.verified().id();
    Ok(AccountKeys {
        data: keys
            .into_iter()
            .map(|key: Credential| AccountKeyView {
                current: key.id == *current,
                id: key.id.to_string(),
                hint: key.hint,
                created_at: key.created_at,
                last_used_at: key.last_used_at,
                last_used_ip: key.last_used_ip.map(|ip| ip.to_string()),
                revoked_at: key.revoked_at,
                revoked_reason: key.revoked_reason,
            })
            .collect(),
    })
}

/// List the account keys
///
/// List the account keys. Needs `keys:read`.
#[utoipa::path(get, path = "/v1/account/keys", tag = "account", operation_id = "listAccountKeys",
    responses(
        (status = 200, body = AccountKeys),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<AccountKeys>, ApiError> {
    Ok(axum::Json(keys_view(&state, &caller).await?))
}

/// Create an account key
///
/// Create an account key (it acts as `admin`); at most two exist. Needs `keys:write`. Takes no
/// body (or `{}`).
#[utoipa::path(post, path = "/v1/account/keys", tag = "account", operation_id = "createAccountKey",
    responses(
        (status = 201, description = "Created; `key` is shown only here", body = CreatedKey),
        (status = 400, description = "A body with fields: this takes none"),
        (status = 415, description = "A body that is not JSON"),
        (status = 409, description = "key-limit-reached: the account has two keys"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    _: NoBody,
) -> Result<CreatedSecret<CreatedKey>, ApiError> {
    let created = create_key(&state, &caller, &meta).await?;
    Ok(CreatedSecret(created))
}

/// Creates an account key as `caller`: the API's create and the console's button.
pub(crate) async fn create_key(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
) -> Result<CreatedKey, ApiError> {
    let grant = caller.require::<perm::KeysWrite>()?;
    let now = state.clock().now();
    let (key, secret) = account::plan_key(&grant, state.catalog(), state.verifier().format(), now)?;
    let target = Target {
        kind: "account_key",
        id: key.id.to_string(),
    };
    let event = grant
        .event("account_key.create", Some(target), now, meta)?
        .with_status(201);
    if !state
        .store()
        .create_account_key(&grant, &key, MAX_KEYS, &event)
        .await?
    {
        return Err(ApiError::new(
            ProblemCode::KeyLimitReached,
            format!("the account already has {MAX_KEYS} keys; delete one first"),
        ));
    }
    Ok(CreatedKey {
        id: key.id.to_string(),
        key: secret.into_exposed(),
        created_at: key.created_at,
    })
}

/// Delete an account key
///
/// Delete an account key by id; answers the keys that remain. Needs `keys:write` and `keys:read`.
#[utoipa::path(delete, path = "/v1/account/keys/{id}", tag = "account", operation_id = "deleteAccountKey",
    params(("id" = String, Path, description = "An account key id")),
    responses(
        (status = 200, description = "Deleted at once and for good; the remaining keys", body = AccountKeys),
        (status = 404),
        (status = 409, description = "cannot-delete-current-key"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<axum::Json<AccountKeys>, ApiError> {
    let key = CredentialId::parse_any(&id).ok_or_else(|| no_key(&id))?;
    remove(&state, &caller, &meta, &key, &id).await
}

/// Delete an account key by id or by the key itself
///
/// Delete an account key named by `id` or by the full `key` (also spelt `deleteApiKeyId` and
/// `deleteApiKey`); answers the keys that remain. Needs `keys:write` and `keys:read`.
#[utoipa::path(delete, path = "/v1/account/keys", tag = "account", operation_id = "deleteAccountKeyByQuery",
    params(
        ("id" = Option<String>, Query, description = "The key's id (or `deleteApiKeyId`)"),
        ("key" = Option<String>, Query, description = "The full key (or `deleteApiKey`)"),
    ),
    responses(
        (status = 200, description = "Deleted at once and for good; the remaining keys", body = AccountKeys),
        (status = 404),
        (status = 409, description = "cannot-delete-current-key"),
    ))]
pub async fn delete_by_query(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Query(query): Query<DeleteQuery>,
) -> Result<axum::Json<AccountKeys>, ApiError> {
    let grant = caller.require::<perm::KeysWrite>()?;
    // The answer lists the keys that remain: checked before anything changes.
    caller.require::<perm::KeysRead>()?;
    match (query.id, query.key) {
        (Some(id), None) => {
            let key = CredentialId::parse_any(&id).ok_or_else(|| no_key(&id))?;
            remove(&state, &caller, &meta, &key, &id).await
        }
        (None, Some(full)) => {
            // Never echo the full key back: name it by its hint.
            let named = format!("…{}", keygate_core::credential::hint(&full));
            let key = state
                .store()
                .find_account_key(&grant.reads(), &CredentialHash::of(&full))
                .await?
                .ok_or_else(|| no_key(&named))?;
            remove(&state, &caller, &meta, &key.id, &named).await
        }
        _ => Err(ApiError::invalid_fields(vec![FieldError {
            field: "id".into(),
            message: "name the key with exactly one of `id` (or `deleteApiKeyId`) and `key` (or `deleteApiKey`)".into(),
        }])),
    }
}

fn no_key(named: &str) -> ApiError {
    ApiError::not_found(format!("there is no account key `{named}`"))
}

pub(crate) async fn remove(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    key: &CredentialId,
    named: &str,
) -> Result<axum::Json<AccountKeys>, ApiError> {
    let grant = caller.require::<perm::KeysWrite>()?;
    // The answer lists the keys that remain, which needs keys:read: refused before the delete,
    // not after it.
    caller.require::<perm::KeysRead>()?;
    account::check_delete_key(&grant, key)?;
    let now = state.clock().now();
    let target = Target {
        kind: "account_key",
        id: key.to_string(),
    };
    let event = grant.event("account_key.delete", Some(target), now, meta)?;
    match state
        .store()
        .delete_account_key(&grant, key, &event)
        .await?
    {
        KeyDeletion::Deleted => Ok(axum::Json(keys_view(state, caller).await?)),
        KeyDeletion::NotFound => Err(no_key(named)),
        // Deleted by the very key this request is deleting, a moment before: as if this request
        // had come after that one.
        KeyDeletion::CallerGone => Err(ApiError::unauthenticated(
            "the account key authenticating this request has been deleted",
        )),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IpRestrictionView {
    pub enabled: bool,
    /// Normalised networks.
    #[schema(example = json!(["203.0.113.7/32", "10.0.0.0/8", "2001:db8::/32"]))]
    pub allowlist: Vec<String>,
    /// Entries stored in another form than given (host bits cleared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

impl From<IpRestriction> for IpRestrictionView {
    fn from(restriction: IpRestriction) -> Self {
        Self {
            enabled: restriction.enabled,
            allowlist: restriction.allowlist.to_strings(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": false, "allowlist": ["203.0.113.7", "10.0.0.0/8"]}))]
pub struct IpRestrictionRequest {
    pub enabled: bool,
    /// IPv4 or IPv6 addresses or networks; a bare address is one host.
    #[schema(example = json!(["203.0.113.7", "10.0.0.0/8"]))]
    pub allowlist: Option<Vec<String>>,
    /// Accepted for `allowlist`.
    #[serde(rename = "whiteList")]
    pub white_list: Option<Vec<String>>,
}

/// Get the IP restriction
///
/// The account's IP restriction. Needs `ip_restriction:read`.
#[utoipa::path(get, path = "/v1/account/ip-restriction", tag = "account", operation_id = "getIpRestriction",
    responses(
        (status = 200, body = IpRestrictionView),
    ))]
pub async fn get_ip_restriction(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<IpRestrictionView>, ApiError> {
    let grant = caller.require::<perm::IpRestrictionRead>()?;
    let restriction = state.store().get_ip_restriction(&grant.reads()).await?;
    Ok(axum::Json(restriction.into()))
}

/// Replace the IP restriction
///
/// Replace the account's IP restriction (idempotent); applies to the very next request. Enabling a
/// list that does not cover your own address is refused. Needs `ip_restriction:write`.
#[utoipa::path(put, path = "/v1/account/ip-restriction", tag = "account", operation_id = "setIpRestriction",
    request_body = IpRestrictionRequest,
    responses(
        (status = 200, description = "The setting as stored, normalised", body = IpRestrictionView),
        (status = 400, description = "A bad entry, named as `allowlist[i]`"),
        (status = 409, description = "would-lock-out-caller"),
    ))]
pub async fn put_ip_restriction(
    state: State<AppState>,
    caller: Authenticated,
    meta: Meta,
    ip: axum::Extension<ClientIp>,
    request: Json<IpRestrictionRequest>,
) -> Result<axum::Json<IpRestrictionView>, ApiError> {
    set_ip_restriction(state, caller, meta, ip, request).await
}

/// Replace the IP restriction, by POST
///
/// The same as `PUT`, for clients that only send `POST`.
#[utoipa::path(post, path = "/v1/account/ip-restriction", tag = "account", operation_id = "postIpRestriction",
    request_body = IpRestrictionRequest,
    responses(
        (status = 200, description = "The setting as stored, normalised", body = IpRestrictionView),
        (status = 400, description = "A bad entry, named as `allowlist[i]`"),
        (status = 409, description = "would-lock-out-caller"),
    ))]
pub async fn post_ip_restriction(
    state: State<AppState>,
    caller: Authenticated,
    meta: Meta,
    ip: axum::Extension<ClientIp>,
    request: Json<IpRestrictionRequest>,
) -> Result<axum::Json<IpRestrictionView>, ApiError> {
    set_ip_restriction(state, caller, meta, ip, request).await
}

async fn set_ip_restriction(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    Json(request): Json<IpRestrictionRequest>,
) -> Result<axum::Json<IpRestrictionView>, ApiError> {
    let entries = match (request.allowlist, request.white_list) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_fields(vec![FieldError {
                field: "whiteList".into(),
                message: "send `allowlist` or `whiteList`, not both".into(),
            }]));
        }
        (Some(list), None) | (None, Some(list)) => list,
        (None, None) => Vec::new(),
    };
    let view = apply_ip_restriction(&state, &caller, &meta, ip, request.enabled, &entries).await?;
    Ok(axum::Json(view))
}

/// Sets the tenant's IP restriction as `caller`, who connects from `ip` (the API's PUT and POST,
/// and the console's form).
pub(crate) async fn apply_ip_restriction(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    ip: std::net::IpAddr,
    enabled: bool,
    entries: &[String],
) -> Result<IpRestrictionView, ApiError> {
    let grant = caller.require::<perm::IpRestrictionWrite>()?;
    let (restriction, normalised) = account::plan_ip_restriction(enabled, entries, ip)?;
    let now = state.clock().now();
    let target = Target {
        kind: "tenant",
        id: grant.tenant_id().to_string(),
    };
    let event = grant.event("ip_restriction.update", Some(target), now, meta)?;
    state
        .store()
        .set_ip_restriction(&grant, &restriction, &event)
        .await?;
    let mut view = IpRestrictionView::from(restriction);
    view.warnings = normalised.iter().map(Warning::normalised).collect();
    Ok(view)
}
