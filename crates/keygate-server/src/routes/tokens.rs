//! Personal and service tokens (API.md §4). The secret is in the create response and nowhere
//! else; lists show its `hint`. Revocation applies to the very next request.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::credential::CredentialKind;
use keygate_core::id::{CredentialId, RoleId, UserId};
use keygate_core::model::{Credential, RateLimit, Role, Target};
use keygate_core::store::{Page, PersonalTokens, TokenFilter};
use keygate_core::tokens::{self, NewToken, TokenPolicy};
use keygate_core::verified::PrincipalKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authenticated;
use crate::json::Json;
use crate::problem::{ApiError, FieldError, ProblemCode};
use crate::request::{Meta, Query, page};
use crate::routes::roles;
use crate::state::AppState;
use crate::views::{CreatedSecret, List, QuotaBody, QuotaReader, QuotaView, Warning};

/// The most ids one bulk delete takes.
const MAX_BULK: usize = 500;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Personal,
    Service,
}

impl TokenKind {
    fn credential_kind(self) -> CredentialKind {
        match self {
            TokenKind::Personal => CredentialKind::Personal,
            TokenKind::Service => CredentialKind::Service,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    #[schema(example = 100, minimum = 1)]
    pub requests: u32,
    #[schema(example = 60, minimum = 1)]
    pub per_seconds: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "service", "name": "CI deploy", "role": "member", "expires_in": 2_592_000}))]
pub struct CreateToken {
    pub kind: TokenKind,
    #[schema(example = "CI deploy", min_length = 1, max_length = 100)]
    pub name: String,
    pub description: Option<String>,
    /// Service tokens: a role id or built-in role name. Personal tokens take their user's role.
    #[schema(example = "member")]
    pub role: Option<String>,
    /// Narrows the role to these permissions (wildcards allowed).
    #[schema(example = json!(["tokens:read"]), min_items = 1)]
    pub permissions: Option<Vec<String>>,
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-01-01T00:00:00Z")]
    pub expires_at: Option<Timestamp>,
    /// Seconds from now; instead of `expires_at`.
    #[schema(example = 2_592_000, minimum = 1)]
    pub expires_in: Option<u64>,
    /// Networks the token may be used from (CIDR or bare addresses).
    #[schema(example = json!(["203.0.113.0/24"]))]
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
    /// How many requests the token may make per period (API.md §13).
    pub quota: Option<QuotaBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    #[schema(example = "tok_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    pub kind: TokenKind,
    pub name: String,
    pub description: Option<String>,
    /// A service token's role id; `null` for personal tokens (they act with their user's role).
    pub role: Option<String>,
    /// The narrowing list, if any.
    pub permissions: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub created_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// The client address of the last use, when known.
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub last_used_ip: Option<String>,
    /// `active`, `expired` or `revoked`.
    #[schema(example = "active")]
    pub status: &'static str,
    /// Why it was revoked, when not by a person's hand: `leaked` (API.md §15).
    #[schema(example = json!(null))]
    pub revoked_reason: Option<String>,
    /// The secret's last four characters.
    #[schema(example = "x9Qa")]
    pub hint: String,
    pub allowed_ips: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitBody>,
    /// The token this one replaced by a roll.
    #[schema(example = json!(null))]
    pub rolled_from: Option<String>,
    /// The token that replaced this one by a roll (it expires at the end of the overlap).
    #[schema(example = json!(null))]
    pub rolled_to: Option<String>,
    pub quota: Option<QuotaView>,
}

impl TokenView {
    pub(crate) fn new(token: Credential, quotas: &QuotaReader<'_>) -> Self {
        let now = quotas.now;
        Self {
            quota: quotas.view(token.quota.as_ref()),
            status: tokens::status(&token, now),
            revoked_reason: token.revoked_reason.clone(),
            id: token.id.to_string(),
            kind: match token.kind {
                CredentialKind::Personal => TokenKind::Personal,
                _ => TokenKind::Service,
            },
            name: token.name,
            description: token.description,
            role: token.role_id.map(|r| r.to_string()),
            permissions: token.permissions,
            user_id: token.user_id.map(|u| u.to_string()),
            created_by: token.created_by,
            created_at: token.created_at,
            expires_at: token.expires_at,
            last_used_at: token.last_used_at,
            last_used_ip: token.last_used_ip.map(|ip| ip.to_string()),
            hint: token.hint,
            allowed_ips: token
                .allowed_ips
                .map(|ips| ips.iter().map(ToString::to_string).collect()),
            rate_limit: token.rate_limit.map(|r| RateLimitBody {
                requests: r.requests,
                per_seconds: r.per_seconds,
            }),
            rolled_from: token.rolled_from.map(|id| id.to_string()),
            rolled_to: token.rolled_to.map(|id| id.to_string()),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"expire_previous_in": 3600}))]
pub struct RollToken {
    /// Seconds the rolled token keeps working beside its successor (0 to 604800, default 3600);
    /// never past its own expiry.
    #[schema(minimum = 0, maximum = 604_800, example = 3600)]
    pub expire_previous_in: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// The full token. Shown this once: keygate keeps only its hash.
    #[schema(example = "kg_service_live_…")]
    pub secret: String,
    /// `allowed_ips` entries stored in another form than given (host bits cleared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// Filters repeat (`?status=active&status=expired`); within one, any value matches.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    kind: Vec<TokenKind>,
    /// `active`, `expired` or `revoked`.
    #[serde(default)]
    status: Vec<String>,
    #[serde(default)]
    user_id: Vec<String>,
    #[serde(default)]
    id: Vec<String>,
    /// Only tokens not used for this many days, or never used: the stale-credential report.
    #[param(minimum = 1, maximum = 36500)]
    unused_for_days: Option<u32>,
    /// How many items, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(pattern = "^[A-Za-z0-9_]{0,64}$")]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    #[serde(default)]
    id: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkDeleted {
    /// The ids revoked by this request.
    pub deleted: Vec<String>,
    /// One `not-found` per id that is unknown, not visible or already revoked.
    pub warnings: Vec<Warning>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("there is no token `{id}`"))
}

fn target(id: &CredentialId) -> Target {
    Target {
        kind: "token",
        id: id.to_string(),
    }
}

/// Whose personal tokens this caller may see: all with `users:read`, else only their own.
pub(crate) fn personal_visibility(caller: &Caller) -> PersonalTokens {
    let verified = caller.verified();
    if caller.require_all(&["users:read"]).is_ok() {
        PersonalTokens::All
    } else if verified.principal().kind == PrincipalKind::User {
        verified.user_id().map_or(PersonalTokens::Hidden, |user| {
            PersonalTokens::OfUser(user.clone())
        })
    } else {
        PersonalTokens::Hidden
    }
}

pub(crate) fn visible(token: &Credential, visibility: &PersonalTokens) -> bool {
    match (token.kind, visibility) {
        (CredentialKind::Personal, PersonalTokens::Hidden) => false,
        (CredentialKind::Personal, PersonalTokens::OfUser(user)) => {
            token.user_id.as_ref() == Some(user)
        }
        _ => true,
    }
}

/// Create a token
///
/// Create a personal or service token. Needs `tokens:write`, and every permission it grants.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", operation_id = "createToken",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = CreatedToken),
        (status = 403, description = "forbidden (e.g. a service token creating a personal one) or privilege-escalation"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<CreateToken>,
) -> Result<CreatedSecret<CreatedToken>, ApiError> {
    let created = create_token(&state, &caller, &meta, request).await?;
    Ok(CreatedSecret(created))
}

/// Creates a token as `caller`: the API's create and the console's "Add token" are this one
/// operation, with the same checks and the same event.
pub(crate) async fn create_token(
    state: &AppState,
    caller: &Caller,
    meta: &keygate_core::access::RequestMeta,
    request: CreateToken,
) -> Result<CreatedToken, ApiError> {
    let grant = caller.require::<perm::TokensWrite>()?;
    let now = state.clock().now();
    let role = match (request.kind, &request.role) {
        (TokenKind::Personal, Some(_)) => {
            return Err(ApiError::invalid_fields(vec![FieldError {
                field: "role".into(),
                message:
                    "personal tokens act with their user's role; narrow them with `permissions`"
                        .into(),
            }]));
        }
        (TokenKind::Service, Some(role)) => Some(roles::named(state, &grant.reads(), role).await?),
        _ => None,
    };
    let input = NewToken {
        kind: request.kind.credential_kind(),
        name: request.name,
        description: request.description,
        permissions: request.permissions,
        expires_at: request.expires_at,
        expires_in: request.expires_in,
        allowed_ips: request.allowed_ips,
        rate_limit: request.rate_limit.map(|r| RateLimit {
            requests: r.requests,
            per_seconds: r.per_seconds,
        }),
        quota: request.quota.map(Into::into),
    };
    let policy = TokenPolicy {
        personal_max_lifetime: Duration::from_secs(
            u64::from(state.config().tokens.personal_max_days) * 86_400,
        ),
    };
    let planned = tokens::plan(
        &grant,
        state.catalog(),
        state.verifier().format(),
        policy,
        input,
        role.as_ref(),
        now,
    )?;
    let token = planned.credential;
    let event = grant
        .event("token.create", Some(target(&token.id)), now, meta)?
        .with_status(201)
        .with_detail("name", token.name.clone())
        .with_detail("kind", token.kind.as_str());
    state.store().create_token(&grant, &token, &event).await?;
    Ok(CreatedToken {
        token: TokenView::new(token, &state.quota_reader()),
        secret: planned.secret.into_exposed(),
        warnings: planned.normalised.iter().map(Warning::normalised).collect(),
    })
}

/// Roll a token
///
/// Replace a token's secret without downtime (API.md §14): a new token like it (same kind, owner,
/// name, description, role, permissions, networks and rate limit; if it expires, as long a life
/// from now) with its `secret` shown once, while the old one keeps working for
/// `expire_previous_in` seconds (default an hour, at most a week, never past its own expiry). Needs
/// what revoking the old token needs.
#[utoipa::path(post, path = "/v1/tokens/{id}/roll", tag = "tokens", operation_id = "rollToken",
    params(("id" = String, Path, description = "The id of the token to roll")),
    request_body(content = RollToken, description = "Optional; `{}` or no body takes the defaults"),
    responses(
        (status = 201, description = "Rolled; `secret` is the successor's, shown only here", body = CreatedToken),
        (status = 403, description = "forbidden or privilege-escalation: revoking the token is not the caller's to do"),
        (status = 404, description = "Unknown, not visible, revoked or expired"),
        (status = 409, description = "already-rolled: the token was rolled before; roll its successor (`rolled_to`)"),
    ))]
pub async fn roll(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    request: Option<Json<RollToken>>,
) -> Result<CreatedSecret<CreatedToken>, ApiError> {
    let request = request.map(|Json(request)| request).unwrap_or_default();
    let (created, _) = roll_token(&state, &caller, &meta, &id, request.expire_previous_in).await?;
    Ok(CreatedSecret(created))
}

/// Rolls token `id` as `caller` (API and console alike); returns the successor with its secret,
/// and when the rolled token now expires.
pub(crate) async fn roll_token(
    state: &AppState,
    caller: &Caller,
    meta: &keygate_core::access::RequestMeta,
    id: &str,
    expire_previous_in: Option<u64>,
) -> Result<(CreatedToken, Timestamp), ApiError> {
    let grant = caller.require::<perm::TokensWrite>()?;
    let now = state.clock().now();
    let token_id = CredentialId::parse_any(id).ok_or_else(|| not_found(id))?;
    let previous = state
        .store()
        .get_token(&grant.reads(), &token_id)
        .await?
        .filter(|t| visible(t, &personal_visibility(caller)))
        .ok_or_else(|| not_found(id))?;
    let role = match &previous.role_id {
        Some(role_id) => state.store().get_role(&grant.reads(), role_id).await?,
        None => None,
    };
    let planned = tokens::plan_roll(
        &grant,
        state.catalog(),
        state.verifier().format(),
        &previous,
        role.as_ref(),
        expire_previous_in,
        now,
    )?;
    let event = grant
        .event("token.roll", Some(target(&previous.id)), now, meta)?
        .with_status(201)
        .with_detail("name", previous.name.clone())
        .with_detail("successor_id", planned.successor.id.to_string())
        .with_detail(
            "previous_expires_at",
            planned.previous_expires_at.to_string(),
        );
    let rolled = state
        .store()
        .roll_token(
            &grant,
            &previous.id,
            planned.previous_expires_at,
            &planned.successor,
            &event,
        )
        .await?;
    if rolled.is_none() {
        // Revoked meanwhile, or rolled by a request that raced this one: read again to say which.
        let now_stored = state.store().get_token(&grant.reads(), &token_id).await?;
        return Err(match now_stored.and_then(|t| t.rolled_to) {
            Some(successor) => ApiError::new(
                ProblemCode::AlreadyRolled,
                format!("`{id}` was already rolled to `{successor}`; roll that one instead"),
            ),
            None => not_found(id),
        });
    }
    let created = CreatedToken {
        token: TokenView::new(planned.successor, &state.quota_reader()),
        secret: planned.secret.into_exposed(),
        warnings: Vec::new(),
    };
    Ok((created, planned.previous_expires_at))
}

/// List tokens
///
/// List tokens, newest first; filters repeat (`?status=active&status=expired`). Needs
/// `tokens:read`; other users' personal tokens also need `users:read`.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", operation_id = "listTokens",
    params(ListQuery),
    responses(
        (status = 200, body = List<TokenView>),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<List<TokenView>>, ApiError> {
    let grant = caller.require::<perm::TokensRead>()?;
    let now = state.clock().now();
    let mut errors = Vec::new();
    for (i, status) in query.status.iter().enumerate() {
        if !matches!(status.as_str(), "active" | "expired" | "revoked") {
            errors.push(FieldError {
                field: format!("status[{i}]"),
                message: "must be `active`, `expired` or `revoked`".into(),
            });
        }
    }
    if query
        .unused_for_days
        .is_some_and(|days| !(1..=36_500).contains(&days))
    {
        errors.push(FieldError {
            field: "unused_for_days".into(),
            message: "must be a number of days from 1 to 36500".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let filter = TokenFilter {
        unused_since: query
            .unused_for_days
            .map(|days| Timestamp::from_unix(now.unix() - i64::from(days) * 86_400)),
        kinds: query.kind.iter().map(|k| k.credential_kind()).collect(),
        statuses: query.status,
        // Ids that cannot exist match nothing, as they would in the store.
        user_ids: query
            .user_id
            .iter()
            .map(|u| UserId::parse(u).unwrap_or_else(|| UserId::from_trusted(u.clone())))
            .collect(),
        personal: personal_visibility(grant.caller()),
    };
    let page = page(query.limit, query.cursor, query.id)?;
    let tokens = state
        .store()
        .list_tokens(&grant.reads(), &filter, &page, now)
        .await?;
    let quotas = state.quota_reader();
    Ok(axum::Json(List::from_paged(tokens, |t| {
        TokenView::new(t, &quotas)
    })))
}

/// Get a token
///
/// Get a token (never its secret). Needs `tokens:read`.
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "getToken",
    params(("id" = String, Path, description = "A token id")),
    responses(
        (status = 200, body = TokenView),
        (status = 404),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<TokenView>, ApiError> {
    let grant = caller.require::<perm::TokensRead>()?;
    let token_id = CredentialId::parse_any(&id).ok_or_else(|| not_found(&id))?;
    let token = state
        .store()
        .get_token(&grant.reads(), &token_id)
        .await?
        .filter(|t| visible(t, &personal_visibility(grant.caller())))
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(TokenView::new(token, &state.quota_reader())))
}

/// Revoke a token
///
/// Revoke a token, from the very next request on. Needs `tokens:write` (another user's personal
/// token also `users:write`; a service token, every permission it grants).
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "deleteToken",
    params(("id" = String, Path, description = "A token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "Unknown, not visible, or already revoked"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (deleted, _) = revoke(&state, &caller, &meta, std::slice::from_ref(&id), 204).await?;
    if deleted.is_empty() {
        return Err(not_revoked(&state, &caller, &id).await);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Why `id` was not revoked: a token the caller can read that was revoked before is said to be
/// (reads still show it); anything else does not exist, as far as the caller may know.
async fn not_revoked(state: &AppState, caller: &Caller, id: &str) -> ApiError {
    let (Ok(grant), Some(token_id)) = (
        caller.require::<perm::TokensRead>(),
        CredentialId::parse_any(id),
    ) else {
        return not_found(id);
    };
    match state.store().get_token(&grant.reads(), &token_id).await {
        Ok(Some(token))
            if token.revoked_at.is_some() && visible(&token, &personal_visibility(caller)) =>
        {
            ApiError::not_found(format!("token `{id}` is already revoked"))
        }
        _ => not_found(id),
    }
}

/// Revoke several tokens
///
/// Revoke several tokens at once (`?id=a&id=b`). Unknown ids are warnings, not errors; if any
/// token may not be revoked by the caller, nothing is.
#[utoipa::path(delete, path = "/v1/tokens", tag = "tokens", operation_id = "deleteTokens",
    params(("id" = Vec<String>, Query, description = "Token ids; repeat the key")),
    responses(
        (status = 200, body = BulkDeleted),
    ))]
pub async fn delete_many(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Query(query): Query<BulkQuery>,
) -> Result<axum::Json<BulkDeleted>, ApiError> {
    if query.id.is_empty() || query.id.len() > MAX_BULK {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: "id".into(),
            message: format!("give 1 to {MAX_BULK} token ids: ?id=tok_…&id=tok_…"),
        }]));
    }
    // `?id=` is a mistake (a form sent with nothing selected, a variable left empty), not the id
    // of a token that does not exist.
    let empty: Vec<FieldError> = query
        .id
        .iter()
        .enumerate()
        .filter(|(_, id)| id.trim().is_empty())
        .map(|(i, _)| FieldError {
            field: if query.id.len() == 1 {
                "id".into()
            } else {
                format!("id[{i}]")
            },
            message: "is empty: give a token id (tok_…)".into(),
        })
        .collect();
    if !empty.is_empty() {
        return Err(ApiError::invalid_fields(empty));
    }
    let (deleted, missing) = revoke(&state, &caller, &meta, &query.id, 200).await?;
    Ok(axum::Json(BulkDeleted {
        deleted: deleted.iter().map(ToString::to_string).collect(),
        warnings: missing
            .into_iter()
            .map(|id| Warning {
                code: "not-found",
                detail: id,
            })
            .collect(),
    }))
}

/// Checks every id first and revokes the allowed ones in one transaction. Returns what was
/// revoked and the ids that were not found (or not visible, or already revoked).
pub(crate) async fn revoke(
    state: &AppState,
    caller: &Caller,
    meta: &keygate_core::access::RequestMeta,
    ids: &[String],
    status: u16,
) -> Result<(Vec<CredentialId>, Vec<String>), ApiError> {
    let grant = caller.require::<perm::TokensWrite>()?;
    let now = state.clock().now();
    // One read for all the ids (up to 500), and one per distinct role, not one per id.
    let wanted: Vec<CredentialId> = ids
        .iter()
        .filter_map(|id| CredentialId::parse_any(id))
        .collect();
    let found = if wanted.is_empty() {
        Vec::new()
    } else {
        let filter = TokenFilter {
            personal: personal_visibility(caller),
            ..TokenFilter::default()
        };
        let page = Page {
            limit: u32::try_from(wanted.len()).unwrap_or(u32::MAX),
            cursor: None,
            ids: wanted.iter().map(|id| id.as_str().to_owned()).collect(),
        };
        state
            .store()
            .list_tokens(&grant.reads(), &filter, &page, now)
            .await?
            .items
    };
    let found: HashMap<&CredentialId, &Credential> = found.iter().map(|t| (&t.id, t)).collect();
    let mut roles: HashMap<RoleId, Option<Role>> = HashMap::new();
    let mut targets = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        let token = CredentialId::parse_any(id)
            .and_then(|id| found.get(&id).copied())
            .filter(|t| t.revoked_at.is_none());
        let Some(token) = token else {
            missing.push(id.clone());
            continue;
        };
        let role = match &token.role_id {
            Some(role_id) => {
                if !roles.contains_key(role_id) {
                    let role = state.store().get_role(&grant.reads(), role_id).await?;
                    roles.insert(role_id.clone(), role);
                }
                roles.get(role_id).and_then(Option::as_ref)
            }
            None => None,
        };
        tokens::check_revoke(&grant, state.catalog(), token, role)?;
        // An id given twice is revoked, and recorded, once: the store takes each once.
        targets.push(token.id.clone());
    }
    let events = targets
        .iter()
        .map(|id| {
            grant
                .event("token.delete", Some(target(id)), now, meta)
                .map(|e| e.with_status(status))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let revoked = state
        .store()
        .revoke_tokens(&grant, &targets, now, &events)
        .await?;
    // Revoked meanwhile by someone else: as good as not found.
    let done: HashSet<&CredentialId> = revoked.iter().collect();
    missing.extend(
        targets
            .iter()
            .filter(|id| !done.contains(id))
            .map(ToString::to_string),
    );
    Ok((revoked, missing))
}
