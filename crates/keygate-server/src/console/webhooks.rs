//! Webhooks: the list, Add webhook (its signing secret shown once, with how a receiver checks
//! it), one webhook's page with what was delivered to it, Send again, its changes, and Delete.
//! Each is the API's operation (API.md §15) with its checks and its audit event.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::id::WebhookId;
use keygate_core::webhooks::{Delivery, DeliveryStatus, EVENT_TYPES, EventSelection, Webhook};
use serde::Deserialize;

use super::filters;
use super::frame::{
    ConfirmForm, Frame, Posted, SignedIn, day, problem_text, render, sent_first, table_page,
};
use super::usage::TenantNames;
use super::{html, refusal};
use crate::problem::ApiError;
use crate::request::Meta;
use crate::routes::webhooks::{
    CreateWebhook, UpdateWebhook, create_webhook, delete_webhook, retry_delivery, update_webhook,
};
use crate::state::AppState;

const HERE: &str = "/console/webhooks";

/// What each event type means, as the form offers it.
fn described(event: &str) -> &'static str {
    match event {
        "token.created" => "An API token was created",
        "token.deleted" => "An API token was deleted",
        "token.rolled" => "An API token was rolled to a new secret",
        "token.expiring" => "An API token expires in 7 days, and again 1 day before",
        "account_key.created" => "An account key was created",
        "account_key.deleted" => "An account key was deleted",
        "ip_restriction.updated" => "The IP restriction was changed",
        "user.created" => "A user was added",
        "user.deleted" => "A user was deleted",
        "tenant.created" => "A sub-customer was created",
        "tenant.suspended" => "A sub-customer was suspended",
        "oauth_client.created" => "An OAuth client was added",
        "oauth_client.deleted" => "An OAuth client was deleted",
        "credential.leaked" => "A credential was reported leaked (and revoked, by default)",
        "quota.threshold" => "A quota reached 80 % or 100 % of its period",
        _ => "",
    }
}

/// The event types the form offers, with what they mean.
fn catalogue() -> Vec<(&'static str, &'static str)> {
    EVENT_TYPES.iter().map(|e| (*e, described(e))).collect()
}

/// One webhook as the list and its page show it.
struct WebhookRow {
    id: String,
    url: String,
    events: String,
    description: String,
    enabled: bool,
    created: String,
    /// The organization it belongs to, when it is a sub-customer's.
    organization: Option<String>,
}

impl WebhookRow {
    fn new(webhook: &Webhook, organization: Option<String>) -> Self {
        Self {
            id: webhook.id.to_string(),
            url: webhook.url.clone(),
            events: events_text(&webhook.events.names()),
            description: webhook.description.clone().unwrap_or_default(),
            enabled: webhook.enabled,
            created: day(webhook.created_at),
            organization,
        }
    }
}

/// A webhook's events as its API view names them (`*` for all), in words.
fn events_text(names: &[String]) -> String {
    match names {
        [all] if all == "*" => "every event".to_owned(),
        names => names.join(", "),
    }
}

/// The tenant the person is in: the one they act for, else their own.
fn here(caller: &Caller) -> String {
    caller
        .acting_as()
        .map_or_else(|| caller.verified().tenant().id.clone(), |t| t.id.clone())
        .to_string()
}

/// Rows for `webhooks`, with the names of the organizations they belong to.
async fn rows(state: &AppState, caller: &Caller, webhooks: &[Webhook]) -> Vec<WebhookRow> {
    let tenants =
        TenantNames::read(state, caller, webhooks.iter().map(|w| w.tenant_id.as_str())).await;
    let here = here(caller);
    webhooks
        .iter()
        .map(|webhook| {
            let tenant = webhook.tenant_id.as_str();
            WebhookRow::new(webhook, (tenant != here).then(|| tenants.name(tenant)))
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    frame: Frame,
    rows: Vec<WebhookRow>,
    /// Whether any row is a sub-customer's (the table then says whose each is).
    any_other: bool,
    next: Option<String>,
    message: Option<String>,
    may_create: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CursorQuery {
    cursor: Option<String>,
}

fn cursor_of(uri: &axum::http::Uri) -> Option<String> {
    serde_html_form::from_str::<CursorQuery>(uri.query().unwrap_or_default())
        .unwrap_or_default()
        .cursor
}

pub(super) async fn webhooks(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let Ok(grant) = caller.require::<perm::WebhooksRead>() else {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see webhooks (it needs webhooks:read).",
        );
    };
    let page = table_page(cursor_of(&uri));
    let (rows, next, message) = match state.store().list_webhooks(&grant.reads(), &page).await {
        Ok(listed) => (
            rows(&state, &caller, &listed.items).await,
            listed.next_cursor,
            None,
        ),
        Err(error) => {
            tracing::error!(error = %error, "the console could not list webhooks");
            (
                Vec::new(),
                None,
                Some(
                    "keygate could not read the webhooks just now; reload in a moment.".to_owned(),
                ),
            )
        }
    };
    html(render(&WebhooksPage {
        frame: Frame::new(&caller, &session, HERE, "webhooks"),
        any_other: rows.iter().any(|row| row.organization.is_some()),
        rows,
        next,
        message,
        may_create: caller.require::<perm::WebhooksWrite>().is_ok(),
    }))
}

/// The webhook form, for adding one and for changing one, as sent and as shown again.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WebhookForm {
    /// The page's one-time value (`frame::sent_first`), on the form that adds one.
    #[serde(default)]
    once: String,
    #[serde(default)]
    url: String,
    /// `all` for every event (and those added later), `only` for the ticked ones.
    #[serde(default)]
    which: String,
    #[serde(default)]
    event: Vec<String>,
    #[serde(default)]
    description: String,
    /// On the form that changes one: `yes` while deliveries are sent.
    #[serde(default)]
    enabled: String,
}

impl WebhookForm {
    fn of(webhook: &Webhook) -> Self {
        let (which, event) = match &webhook.events {
            EventSelection::All => ("all", Vec::new()),
            EventSelection::Only(types) => ("only", types.clone()),
        };
        Self {
            once: String::new(),
            url: webhook.url.clone(),
            which: which.to_owned(),
            event,
            description: webhook.description.clone().unwrap_or_default(),
            enabled: if webhook.enabled { "yes" } else { "" }.to_owned(),
        }
    }

    /// The events as the API takes them: `*`, or the ticked ones (none ticked is refused there,
    /// naming the field).
    fn events(&self) -> Vec<String> {
        if self.which == "only" {
            self.event.clone()
        } else {
            vec!["*".to_owned()]
        }
    }

    fn all(&self) -> bool {
        self.which != "only"
    }

    fn ticked(&self, event: &str) -> bool {
        self.event.iter().any(|e| e == event)
    }
}

/// The field errors of a refusal, by the form's field names; a refusal without them as the
/// page's message.
fn field_errors(error: &ApiError) -> (Vec<(String, String)>, Option<String>) {
    let errors: Vec<(String, String)> = error
        .errors
        .iter()
        .map(|e| {
            let field = if e.field.starts_with("events") {
                "events".to_owned()
            } else {
                e.field.clone()
            };
            let message = if field == "events" && e.message.starts_with("name at least one") {
                "Tick at least one event, or choose every event.".to_owned()
            } else {
                e.message.clone()
            };
            (field, message)
        })
        .collect();
    let message = errors.is_empty().then(|| problem_text(error));
    (errors, message)
}

#[derive(Template)]
#[template(path = "console/webhook_new.html")]
struct NewWebhookPage {
    frame: Frame,
    form: WebhookForm,
    events: Vec<(&'static str, &'static str)>,
    errors: Vec<(String, String)>,
    message: Option<String>,
}

impl NewWebhookPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        error_in(&self.errors, field)
    }
}

fn error_in<'a>(errors: &'a [(String, String)], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|(name, _)| name == field)
        .map(|(_, message)| message.as_str())
}

pub(super) async fn new_webhook(SignedIn { caller, session }: SignedIn) -> Response {
    if caller.require::<perm::WebhooksWrite>().is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you add webhooks (it needs webhooks:write).",
        );
    }
    html(render(&NewWebhookPage {
        frame: Frame::new(&caller, &session, HERE, "webhooks/createWebhook"),
        form: WebhookForm {
            which: "all".to_owned(),
            ..WebhookForm::default()
        },
        events: catalogue(),
        errors: Vec::new(),
        message: None,
    }))
}

/// The page that answers a new webhook: its signing secret, once, and how a receiver checks it.
#[derive(Template)]
#[template(path = "console/webhook_secret.html")]
struct SecretPage {
    frame: Frame,
    row: WebhookRow,
    secret: String,
    warnings: Vec<String>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<WebhookForm>,
) -> Response {
    if caller.require::<perm::WebhooksWrite>().is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you add webhooks (it needs webhooks:write).",
        );
    }
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        (HERE.to_owned(), "See your webhooks"),
    )
    .await
    {
        return page;
    }
    let description = form.description.trim();
    let request = CreateWebhook {
        url: form.url.trim().to_owned(),
        events: form.events(),
        description: (!description.is_empty()).then(|| description.to_owned()),
    };
    match create_webhook(&state, &caller, &meta, request).await {
        Ok(created) => {
            let row = WebhookRow {
                events: events_text(&created.webhook.events),
                description: created.webhook.description.unwrap_or_default(),
                enabled: created.webhook.enabled,
                created: day(created.webhook.created_at),
                organization: None,
                id: created.webhook.id,
                url: created.webhook.url,
            };
            html(render(&SecretPage {
                frame: Frame::new(&caller, &session, HERE, "webhooks/createWebhook"),
                row,
                secret: created.secret,
                warnings: created.warnings.into_iter().map(|w| w.detail).collect(),
            }))
        }
        Err(error) => {
            let (errors, message) = field_errors(&error);
            html(render(&NewWebhookPage {
                frame: Frame::new(&caller, &session, HERE, "webhooks/createWebhook"),
                form,
                events: catalogue(),
                errors,
                message,
            }))
        }
    }
}

/// One delivery as the webhook's page lists it.
struct DeliveryRow {
    id: String,
    event_type: String,
    created: String,
    /// `delivered`, `pending` or `failed`, for its style.
    status: &'static str,
    /// Where it stands, in words.
    state: String,
    attempts: usize,
    /// What the receiver said to the last attempt, or why there was no answer.
    last_answer: String,
}

impl DeliveryRow {
    fn new(delivery: &Delivery, now: Timestamp) -> Self {
        let when = |at: Option<Timestamp>| at.map(day).unwrap_or_default();
        let state = match (delivery.status, delivery.next_attempt_at) {
            (DeliveryStatus::Delivered, _) => {
                format!("Delivered {}", when(delivery.delivered_at))
            }
            (DeliveryStatus::Pending, Some(next)) if next > now => {
                format!("Not yet: next try {}", day(next))
            }
            (DeliveryStatus::Pending, _) => "Being sent".to_owned(),
            (DeliveryStatus::Failed, _) => {
                "Failed: every try went unanswered or refused".to_owned()
            }
        };
        let last_answer = delivery.attempts.last().map_or_else(String::new, |last| {
            let mut answer = match (last.status, &last.error) {
                (Some(status), _) => format!("HTTP {status}"),
                (None, Some(error)) => error.clone(),
                (None, None) => String::new(),
            };
            if let (Some(_), Some(error)) = (last.status, &last.error) {
                answer.push_str(": ");
                answer.push_str(error);
            }
            answer
        });
        Self {
            id: delivery.id.to_string(),
            event_type: delivery.event_type.clone(),
            created: day(delivery.created_at),
            status: delivery.status.as_str(),
            state,
            attempts: delivery.attempts.len(),
            last_answer,
        }
    }
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct WebhookPage {
    frame: Frame,
    row: WebhookRow,
    form: WebhookForm,
    events: Vec<(&'static str, &'static str)>,
    errors: Vec<(String, String)>,
    message: Option<String>,
    notice: Option<String>,
    deliveries: Vec<DeliveryRow>,
    next: Option<String>,
    may_write: bool,
}

impl WebhookPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        error_in(&self.errors, field)
    }
}

/// The webhook with this id, if the person may see it; else the page saying there is none.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Webhook, Response> {
    let not_found = || {
        refusal(
            StatusCode::NOT_FOUND,
            "There is no such webhook, or it is not yours to see.",
        )
    };
    let grant = caller
        .require::<perm::WebhooksRead>()
        .map_err(|_| not_found())?;
    let id = WebhookId::parse(id).ok_or_else(not_found)?;
    state
        .store()
        .get_webhook(&grant.reads(), &id)
        .await
        .ok()
        .flatten()
        .ok_or_else(not_found)
}

/// The webhook's page, with a page of its deliveries (after `cursor`).
async fn webhook_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    webhook: &Webhook,
    cursor: Option<String>,
) -> WebhookPage {
    let mut message = None;
    let (deliveries, next) = match caller.require::<perm::WebhooksRead>() {
        Ok(grant) => match state
            .store()
            .list_deliveries(&grant.reads(), &webhook.id, &table_page(cursor))
            .await
        {
            Ok(Some(listed)) => (
                listed
                    .items
                    .iter()
                    .map(|delivery| DeliveryRow::new(delivery, state.clock().now()))
                    .collect(),
                listed.next_cursor,
            ),
            Ok(None) => (Vec::new(), None),
            Err(error) => {
                tracing::error!(error = %error, "the console could not list deliveries");
                message = Some(
                    "keygate could not read the deliveries just now; reload in a moment."
                        .to_owned(),
                );
                (Vec::new(), None)
            }
        },
        Err(_) => (Vec::new(), None),
    };
    let row = rows(state, caller, std::slice::from_ref(webhook))
        .await
        .pop()
        .unwrap_or_else(|| WebhookRow::new(webhook, None));
    WebhookPage {
        frame: Frame::new(caller, session, HERE, "webhooks/getWebhook"),
        row,
        form: WebhookForm::of(webhook),
        events: catalogue(),
        errors: Vec::new(),
        message,
        notice: None,
        deliveries,
        next,
        may_write: caller.require::<perm::WebhooksWrite>().is_ok(),
    }
}

pub(super) async fn webhook(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    let webhook = match find(&state, &caller, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    html(render(
        &webhook_page(&state, &caller, &session, &webhook, cursor_of(&uri)).await,
    ))
}

/// Save: the form's address, events, description and whether deliveries are sent, as
/// `PATCH /v1/webhooks/{id}` changes them.
pub(super) async fn change(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<WebhookForm>,
) -> Response {
    let webhook = match find(&state, &caller, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let request = UpdateWebhook {
        url: Some(form.url.trim().to_owned()),
        events: Some(form.events()),
        enabled: Some(form.enabled == "yes"),
        description: Some(form.description.trim().to_owned()),
    };
    match update_webhook(&state, &caller, &meta, &id, request).await {
        Ok((changed, warnings)) => {
            let mut page = webhook_page(&state, &caller, &session, &changed, None).await;
            let mut notice = if changed.enabled {
                "Saved.".to_owned()
            } else {
                "Saved. Nothing is sent to it until it is turned on again, and events until then \
                 are not kept for it."
                    .to_owned()
            };
            for warning in warnings {
                notice.push(' ');
                notice.push_str(&warning.detail);
                notice.push('.');
            }
            page.notice = Some(notice);
            html(render(&page))
        }
        Err(error) if error.errors.is_empty() => refusal(
            error.code.status(),
            &format!("It was not saved: {}", not_done(&error)),
        ),
        Err(error) => {
            let mut page = webhook_page(&state, &caller, &session, &webhook, None).await;
            (page.errors, _) = field_errors(&error);
            page.message = Some("Not saved: see the messages beside the fields below.".into());
            page.form = form;
            html(render(&page))
        }
    }
}

/// Send again: a delivery gets one more attempt now, whatever it came to.
pub(super) async fn retry(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path((id, delivery)): Path<(String, String)>,
    Posted(_): Posted<super::frame::Empty>,
) -> Response {
    let webhook = match find(&state, &caller, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    match retry_delivery(&state, &caller, &meta, &id, &delivery).await {
        Ok(retried) => {
            let mut page = webhook_page(&state, &caller, &session, &webhook, None).await;
            page.notice = Some(if webhook.enabled {
                format!(
                    "The `{}` delivery `{}` is being sent again now.",
                    retried.event_type, retried.id
                )
            } else {
                format!(
                    "The `{}` delivery `{}` will be sent again once the webhook is turned on.",
                    retried.event_type, retried.id
                )
            });
            html(render(&page))
        }
        Err(error) => refusal(
            error.code.status(),
            &format!("It was not sent again: {}", not_done(&error)),
        ),
    }
}

#[derive(Template)]
#[template(path = "console/webhook_delete.html")]
struct DeletePage {
    frame: Frame,
    row: WebhookRow,
    done: bool,
}

/// Delete: the first post asks for confirmation, the second (`confirm=yes`) deletes, as
/// `DELETE /v1/webhooks/{id}` does.
pub(super) async fn delete(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    let webhook = match find(&state, &caller, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let frame = Frame::new(&caller, &session, HERE, "webhooks/deleteWebhook");
    let row = WebhookRow::new(&webhook, None);
    if form.confirm != "yes" {
        return html(render(&DeletePage {
            frame,
            row,
            done: false,
        }));
    }
    match delete_webhook(&state, &caller, &meta, &id).await {
        Ok(()) => html(render(&DeletePage {
            frame,
            row,
            done: true,
        })),
        Err(error) => refusal(
            error.code.status(),
            &format!("The webhook was not deleted: {}", not_done(&error)),
        ),
    }
}

/// Why an action was refused, to follow "…: ".
fn not_done(error: &ApiError) -> String {
    match &error.detail {
        Some(detail) => format!("{}.", detail.trim_end_matches('.')),
        None => problem_text(error),
    }
}
