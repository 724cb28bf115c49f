//! The audit log (API.md §8): what every credential did, found by its id. Read-only: no endpoint
//! changes or deletes an event; only retention removes them (see [`crate::refusals`] for how
//! refused requests get in, and `audit.retention_days`).
//!
//! A tenant sees the events that happened in it and below it: its own credentials' actions, its
//! sub-customers', and a reseller's actions taken for it (`as-tenant`), never its parent's or its
//! siblings' own.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::model::{Outcome, StoredEvent};
use keygate_core::store::{EventFilter, Page, Paged};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authenticated;
use crate::problem::{ApiError, FieldError, Problem};
use crate::request::{Query, page};
use crate::state::AppState;
use crate::views::List;

/// Who acted, or what was acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reference {
    #[serde(rename = "type")]
    #[schema(example = "service_token")]
    pub kind: String,
    #[schema(example = "tok_0Vbgid…")]
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    #[schema(example = "evt_0VbgiQA4b2D33bZBLrLual")]
    pub id: String,
    #[schema(value_type = String, format = DateTime, example = "2026-11-22T10:00:00Z")]
    pub time: Timestamp,
    /// The tenant of the credential that acted.
    pub tenant_id: String,
    /// The tenant it acted in, when that was a sub-customer (`as-tenant`).
    pub acting_tenant_id: Option<String>,
    pub actor: Reference,
    /// The credential that acted: for a signed-in user, the session's id.
    pub token_id: Option<String>,
    #[schema(example = "token.create")]
    pub action: String,
    pub target: Option<Reference>,
    /// `success`, `denied` or `failed`.
    #[schema(example = "success")]
    pub outcome: &'static str,
    #[schema(example = 201)]
    pub status: u16,
    /// The client address, as allowlists judge it.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// How many identical refusals this event stands for (1 for every change).
    #[schema(example = 1)]
    pub count: u32,
    /// What the change recorded beyond ids, where it did: a name, a reason, a leaked credential's
    /// source URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"source": "github", "url": "https://github.com/o/r/blob/abc/.env"}))]
    pub detail: Option<serde_json::Value>,
}

impl From<StoredEvent> for EventView {
    fn from(event: StoredEvent) -> Self {
        Self {
            id: event.id,
            time: event.time,
            tenant_id: event.tenant_id,
            acting_tenant_id: event.acting_tenant_id,
            actor: Reference {
                kind: event.actor_type,
                id: event.actor_id,
            },
            token_id: event.token_id,
            action: event.action,
            target: event.target.map(|(kind, id)| Reference { kind, id }),
            outcome: event.outcome.as_str(),
            status: event.status,
            ip: event.ip,
            user_agent: event.user_agent,
            request_id: event.request_id,
            count: event.count,
            detail: event.detail,
        }
    }
}

/// The selection, shared by the list and the export. Every key may repeat; values of one key
/// are alternatives, different keys must all match.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Selection {
    /// The acting credential's id.
    #[serde(default)]
    token_id: Vec<String>,
    /// e.g. `token.create`, `account_key.delete`, `auth.denied`.
    #[serde(default)]
    action: Vec<String>,
    /// The actor's id (a user, a token, an account key…).
    #[serde(default)]
    actor_id: Vec<String>,
    /// `success`, `denied` or `failed`.
    #[serde(default)]
    outcome: Vec<String>,
    /// Events at or after this time (RFC 3339).
    since: Option<String>,
    /// Events before this time (RFC 3339).
    until: Option<String>,
}

impl Selection {
    fn filter(self) -> Result<EventFilter, ApiError> {
        let mut errors = Vec::new();
        let mut outcomes = Vec::new();
        for (i, outcome) in self.outcome.iter().enumerate() {
            match Outcome::parse(outcome) {
                Some(outcome) => outcomes.push(outcome),
                None => errors.push(FieldError {
                    field: format!("outcome[{i}]"),
                    message: "must be `success`, `denied` or `failed`".into(),
                }),
            }
        }
        let mut time = |field: &str, text: Option<String>| {
            let text = text?;
            Timestamp::parse(&text)
                .map_err(|_| {
                    errors.push(FieldError {
                        field: field.into(),
                        message: "must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z".into(),
                    });
                })
                .ok()
        };
        let since = time("since", self.since);
        let until = time("until", self.until);
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(errors));
        }
        Ok(EventFilter {
            token_ids: self.token_id,
            actions: self.action,
            actor_ids: self.actor_id,
            outcomes,
            since,
            until,
        })
    }
}

/// [`Selection`] and a page. (Spelled out: serde cannot flatten into a struct that refuses
/// unknown keys.)
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the items with these ids; repeat the key (`?id=a&id=b`).
    #[serde(default)]
    id: Vec<String>,
    #[serde(default)]
    token_id: Vec<String>,
    #[serde(default)]
    action: Vec<String>,
    #[serde(default)]
    actor_id: Vec<String>,
    #[serde(default)]
    outcome: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    /// At most this many events (1–500, default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List audit events
///
/// List audit events, newest first, of the caller's tenant and the tenants below it. Needs
/// `audit:read`.
#[utoipa::path(get, path = "/v1/audit-events", tag = "audit", operation_id = "listAuditEvents",
    params(ListQuery),
    responses(
        (status = 200, body = List<EventView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<List<EventView>>, ApiError> {
    let page = page(query.limit, query.cursor, query.id)?;
    let filter = Selection {
        token_id: query.token_id,
        action: query.action,
        actor_id: query.actor_id,
        outcome: query.outcome,
        since: query.since,
        until: query.until,
    }
    .filter()?;
    let events = list_events(&state, &caller, &filter, &page).await?;
    Ok(axum::Json(List::from_paged(events, EventView::from)))
}

/// One page of the events `caller` may read that match `filter`, newest first (API and console
/// alike): the caller's tenant and the tenants below it. Needs `audit:read`.
pub(crate) async fn list_events(
    state: &AppState,
    caller: &Caller,
    filter: &EventFilter,
    page: &Page,
) -> Result<Paged<StoredEvent>, ApiError> {
    let grant = caller.require::<perm::AuditRead>()?;
    Ok(state
        .store()
        .list_events(&grant.reads(), filter, page)
        .await?)
}

/// Export audit events as newline-delimited JSON
///
/// The same selection as the list, all of it, as newline-delimited JSON (one event per line,
/// newest first) for SIEM ingestion. Streamed: read from the store as it is sent.
#[utoipa::path(get, path = "/v1/audit-events/export", tag = "audit",
    operation_id = "exportAuditEvents",
    params(Selection),
    responses(
        (status = 200, description = "One event per line", content_type = "application/x-ndjson", body = EventView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(selection): Query<Selection>,
) -> Result<Response, ApiError> {
    let grant = caller.require::<perm::AuditRead>()?;
    let filter = selection.filter()?;
    let lines = state
        .store()
        .export_events(&grant.reads(), &filter)
        .map(|event| {
            let event = event.inspect_err(|error| {
                // Too late for a problem response: the status is sent. The body ends early,
                // which the client sees as a broken transfer, not as the end of the log.
                tracing::error!(%error, "the audit export stopped");
            })?;
            let mut line = serde_json::to_vec(&EventView::from(event))
                .map_err(|e| keygate_core::store::StoreError::Internal(e.to_string()))?;
            line.push(b'\n');
            Ok::<_, keygate_core::store::StoreError>(Bytes::from(line))
        });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
