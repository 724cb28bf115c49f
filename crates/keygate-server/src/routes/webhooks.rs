//! Webhooks (API.md §15): a tenant registers endpoints, each told of the events it asks for in
//! the tenant and below it, and reads and retries what was delivered. Scoped like the audit log:
//! a tenant sees its own webhooks and its descendants'; anything else is a 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::id::{DeliveryId, WebhookId};
use keygate_core::model::{RequestMeta, Target};
use keygate_core::validate;
use keygate_core::webhooks::{Attempt, Delivery, EventSelection, SigningSecret, Webhook};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::deliveries::{Guard, TargetError};
use crate::json::{Json, NoBody};
use crate::problem::{ApiError, FieldError};
use crate::request::{Meta, PageQuery, Query};
use crate::state::AppState;
use crate::views::{CreatedSecret, List, Warning};

/// The longest URL a webhook may have.
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "whk_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    /// The tenant it belongs to: it hears of events there and below.
    pub tenant_id: String,
    #[schema(example = "https://hooks.example.com/keygate")]
    pub url: String,
    /// The event types it receives, or `["*"]` for all.
    #[schema(example = json!(["token.created", "credential.leaked"]))]
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            tenant_id: w.tenant_id.to_string(),
            url: w.url,
            events: w.events.names(),
            description: w.description,
            enabled: w.enabled,
            created_at: w.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The signing secret (`whsec_…`), shown this once: keep it to check `webhook-signature`.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/keygate", "events": ["token.created", "credential.leaked"]}))]
pub struct CreateWebhook {
    /// http or https, without credentials; it must reach a public address unless the operator
    /// allowed its network (`webhooks.allowed_private_targets`).
    #[schema(example = "https://hooks.example.com/keygate", max_length = 2048)]
    pub url: String,
    /// Event types (API.md §15), or `["*"]` for every one.
    #[schema(example = json!(["token.created"]), min_items = 1)]
    pub events: Vec<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": false}))]
pub struct UpdateWebhook {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub events: Option<Vec<String>>,
    /// A disabled webhook is sent nothing; what was owed to it waits until it is enabled again.
    pub enabled: Option<bool>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt.
    pub number: u32,
    #[schema(value_type = String, format = DateTime)]
    pub time: Timestamp,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// Why it did not count as delivered.
    pub error: Option<String>,
    /// The start of the receiver's answer (at most 1 KiB).
    pub response_body: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            number: a.number,
            time: a.time,
            status: a.status,
            duration_ms: a.duration_ms,
            error: a.error,
            response_body: a.response_body,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Also the message's `webhook-id`, the same on every attempt.
    #[schema(example = "msg_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    pub webhook_id: String,
    #[schema(example = "token.created")]
    pub event_type: String,
    /// `pending` (tried again at `next_attempt_at`), `delivered`, or `failed` (every attempt
    /// failed; retry it by hand).
    #[schema(example = "delivered")]
    pub status: &'static str,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Timestamp>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            webhook_id: d.webhook_id.to_string(),
            event_type: d.event_type,
            status: d.status.as_str(),
            created_at: d.created_at,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            attempts: d.attempts.into_iter().map(AttemptView::from).collect(),
        }
    }
}

fn webhook_id(text: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(text).ok_or_else(|| not_found(text))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("there is no webhook `{id}`"))
}

fn target(id: &WebhookId) -> Target {
    Target {
        kind: "webhook",
        id: id.to_string(),
    }
}

fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a webhook URL: http or https, a host, no credentials, an address deliveries may reach.
/// A name that does not resolve now is accepted with a warning: deliveries resolve it again.
pub async fn check_url(guard: &Guard, text: &str) -> Result<(String, Vec<Warning>), FieldError> {
    if text.len() > MAX_URL_LEN {
        return Err(field("url", format!("at most {MAX_URL_LEN} characters")));
    }
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| field("url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(field(
            "url",
            format!("must be http or https, not `{}`", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(field(
            "url",
            "must not carry credentials: receivers check the signature instead",
        ));
    }
    let Some(host) = url.host_str() else {
        return Err(field("url", "names no host"));
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let mut warnings = Vec::new();
    match guard.resolve(host, port).await {
        Ok(_) => {}
        Err(error @ TargetError::Unresolved(_)) => warnings.push(Warning {
            code: "unresolved",
            detail: format!("{error} now; deliveries will fail until it does"),
        }),
        Err(error) => return Err(field("url", error.to_string())),
    }
    Ok((url.to_string(), warnings))
}

fn check_events(events: &[String]) -> Result<EventSelection, FieldError> {
    EventSelection::parse(events).map_err(|(at, message)| match at {
        Some(at) => field(&format!("events[{at}]"), message),
        None => field("events", message),
    })
}

/// An optional description, checked as every other (at most its length as sent, no control
/// characters); empty or blank, there is none.
fn check_description(description: Option<String>) -> Result<Option<String>, FieldError> {
    match description {
        None => Ok(None),
        Some(d) if d.trim().is_empty() && d.chars().count() <= MAX_DESCRIPTION_LEN => Ok(None),
        Some(d) => validate::text("description", &d, MAX_DESCRIPTION_LEN)
            .map(Some)
            .map_err(|invalid| field(&invalid.field, invalid.message)),
    }
}

/// Collects every field's error, so one answer names them all.
fn all_or_errors<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// List webhooks
///
/// The webhooks of your tenant and below it, newest first. Needs `webhooks:read`.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    params(PageQuery),
    responses((status = 200, body = List<WebhookView>)))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<WebhookView>>, ApiError> {
    let grant = caller.require::<perm::WebhooksRead>()?;
    let page = query.page()?;
    let webhooks = state.store().list_webhooks(&grant.reads(), &page).await?;
    Ok(axum::Json(List::from_paged(webhooks, WebhookView::from)))
}

/// Create a webhook
///
/// Register an endpoint to be told of events in your tenant and below it. The answer holds its
/// signing secret, shown this once. Needs `webhooks:write`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 400, description = "A URL that is not http(s), carries credentials or reaches a private address; an unknown event type"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Json(request): Json<CreateWebhook>,
) -> Result<CreatedSecret<CreatedWebhook>, ApiError> {
    let created = create_webhook(&state, &caller, &meta, request).await?;
    Ok(CreatedSecret(created))
}

pub(crate) async fn create_webhook(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    request: CreateWebhook,
) -> Result<CreatedWebhook, ApiError> {
    let grant = caller.require::<perm::WebhooksWrite>()?;
    let guard = Guard::new(&state.config().webhooks);
    let mut errors = Vec::new();
    let url = all_or_errors(&mut errors, check_url(&guard, &request.url).await);
    let events = all_or_errors(&mut errors, check_events(&request.events));
    let description = all_or_errors(&mut errors, check_description(request.description));
    let (Some((url, warnings)), Some(events), Some(description)) = (url, events, description)
    else {
        return Err(ApiError::invalid_fields(errors));
    };
    let now = state.clock().now();
    let id = WebhookId::generate(now).map_err(|e| ApiError::internal(e.to_string()))?;
    let secret = SigningSecret::generate().map_err(|e| ApiError::internal(e.to_string()))?;
    let stored = secret
        .seal(&id, state.sealer())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let webhook = Webhook {
        id,
        tenant_id: grant.tenant_id().clone(),
        url,
        events,
        description,
        enabled: true,
        created_at: now,
    };
    let event = grant
        .event("webhook.create", Some(target(&webhook.id)), now, meta)?
        .with_status(201);
    state
        .store()
        .create_webhook(&grant, &webhook, &stored, &event)
        .await?;
    Ok(CreatedWebhook {
        webhook: webhook.into(),
        secret: secret.to_text(),
        warnings,
    })
}

/// Get a webhook
///
/// A webhook of your tenant or below it. Needs `webhooks:read`.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "getWebhook",
    params(("id" = String, Path, description = "A webhook id")),
    responses((status = 200, body = WebhookView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookView>, ApiError> {
    let grant = caller.require::<perm::WebhooksRead>()?;
    let webhook = state
        .store()
        .get_webhook(&grant.reads(), &webhook_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(webhook.into()))
}

/// Change a webhook
///
/// Change a webhook's URL, events, description, or turn it off and on. Needs `webhooks:write`.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "updateWebhook",
    params(("id" = String, Path, description = "A webhook id")),
    request_body = UpdateWebhook,
    responses((status = 200, body = UpdatedWebhook), (status = 400), (status = 404)))]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Json(request): Json<UpdateWebhook>,
) -> Result<axum::Json<UpdatedWebhook>, ApiError> {
    let (webhook, warnings) = update_webhook(&state, &caller, &meta, &id, request).await?;
    Ok(axum::Json(UpdatedWebhook {
        webhook: webhook.into(),
        warnings,
    }))
}

/// The webhook as changed, with what its new URL warns of.
pub(crate) async fn update_webhook(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    request: UpdateWebhook,
) -> Result<(Webhook, Vec<Warning>), ApiError> {
    let grant = caller.require::<perm::WebhooksWrite>()?;
    let mut webhook = state
        .store()
        .get_webhook(&grant.reads(), &webhook_id(id)?)
        .await?
        .ok_or_else(|| not_found(id))?;
    let guard = Guard::new(&state.config().webhooks);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Some(url) = &request.url
        && let Some((url, remarks)) = all_or_errors(&mut errors, check_url(&guard, url).await)
    {
        webhook.url = url;
        warnings = remarks;
    }
    if let Some(events) = &request.events
        && let Some(events) = all_or_errors(&mut errors, check_events(events))
    {
        webhook.events = events;
    }
    if request.description.is_some()
        && let Some(description) =
            all_or_errors(&mut errors, check_description(request.description))
    {
        webhook.description = description;
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    if let Some(enabled) = request.enabled {
        webhook.enabled = enabled;
    }
    let now = state.clock().now();
    let event = grant.event("webhook.update", Some(target(&webhook.id)), now, meta)?;
    state
        .store()
        .update_webhook(&grant, &webhook, &event)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((webhook, warnings))
}

/// Delete a webhook
///
/// Delete a webhook and what is still owed to it. Needs `webhooks:write`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = String, Path, description = "A webhook id")),
    responses((status = 204, description = "Deleted"), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_webhook(&state, &caller, &meta, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_webhook(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
) -> Result<(), ApiError> {
    let grant = caller.require::<perm::WebhooksWrite>()?;
    let webhook = webhook_id(id)?;
    let now = state.clock().now();
    let event = grant
        .event("webhook.delete", Some(target(&webhook)), now, meta)?
        .with_status(204);
    state
        .store()
        .delete_webhook(&grant, &webhook, &event)
        .await?
        .ok_or_else(|| not_found(id))
}

/// List a webhook's deliveries
///
/// What was sent to a webhook, newest first, each with its attempts: status, duration, the start
/// of the receiver's answer. Needs `webhooks:read`.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(("id" = String, Path, description = "A webhook id"), PageQuery),
    responses((status = 200, body = List<DeliveryView>), (status = 404)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<List<DeliveryView>>, ApiError> {
    let grant = caller.require::<perm::WebhooksRead>()?;
    let page = query.page()?;
    let deliveries = state
        .store()
        .list_deliveries(&grant.reads(), &webhook_id(&id)?, &page)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(List::from_paged(deliveries, DeliveryView::from)))
}

/// Retry a delivery
///
/// Send a delivery again now, whatever it came to: a failed one gets one more attempt, a
/// delivered one is sent once more (with the same `webhook-id`). Needs `webhooks:write`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    operation_id = "retryWebhookDelivery",
    params(
        ("id" = String, Path, description = "A webhook id"),
        ("delivery_id" = String, Path, description = "A delivery id"),
    ),
    responses(
        (status = 202, body = DeliveryView),
        (status = 400, description = "A body with fields: this takes none"),
        (status = 404),
        (status = 415, description = "A body that is not JSON"),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    Path((id, delivery_id)): Path<(String, String)>,
    _: NoBody,
) -> Result<(StatusCode, axum::Json<DeliveryView>), ApiError> {
    let retried = retry_delivery(&state, &caller, &meta, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(retried.into())))
}

pub(crate) async fn retry_delivery(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &str,
    delivery_id: &str,
) -> Result<Delivery, ApiError> {
    let grant = caller.require::<perm::WebhooksWrite>()?;
    let webhook = webhook_id(id)?;
    let missing = || ApiError::not_found(format!("there is no delivery `{delivery_id}`"));
    let delivery = DeliveryId::parse(delivery_id).ok_or_else(missing)?;
    let now = state.clock().now();
    let event = grant
        .event(
            "webhook_delivery.retry",
            Some(Target {
                kind: "webhook_delivery",
                id: delivery.to_string(),
            }),
            now,
            meta,
        )?
        .with_status(202);
    state
        .store()
        .retry_delivery(&grant, &webhook, &delivery, &event)
        .await?
        .ok_or_else(missing)
}
