//! The request log (API.md §8): the tenant's audit events, newest first, filtered by credential,
//! action, outcome and time, a page at a time, with a link to the NDJSON export of the same
//! selection. The same read as `GET /v1/audit-events`.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::id::CredentialId;
use keygate_core::model::{Outcome, StoredEvent};
use keygate_core::store::{EventFilter, Page};
use serde::Deserialize;

use super::filters;
use super::frame::{Frame, SignedIn, render, table_page};
use super::usage::{Names, TenantNames};
use super::{html, refusal};
use crate::state::AppState;

const HERE: &str = "/console/log";

/// The filters and page as the address carries them, read leniently: what cannot be read is
/// said beside its field.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    token_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    cursor: Option<String>,
}

/// One event as the table shows it.
struct EventRow {
    time: String,
    actor: String,
    token: Option<String>,
    /// The credential's name and page, for one of this organization's the person may look up.
    token_name: Option<String>,
    token_link: Option<String>,
    action: String,
    target: String,
    outcome: &'static str,
    address: String,
    status: u16,
    request_id: String,
    count: u32,
}

/// The names a page of events shows instead of ids, each kind read once for the page.
struct Named {
    /// The organization's credentials the person may look up.
    credentials: Names,
    /// The organization's people, by id, if the person may read users.
    people: HashMap<String, String>,
    /// This organization and the sub-customers the person may see.
    tenants: TenantNames,
}

impl EventRow {
    /// `here`: the tenant the page shows the log of.
    fn new(event: StoredEvent, here: &str, named: &Named) -> Self {
        let Named {
            credentials: names,
            people,
            tenants,
        } = named;
        // Only this organization's own credentials are named and linked: one of the organization
        // acting for it (an ancestor), or of one below it, shows by id, without a link that
        // would 404.
        let known = event
            .token_id
            .as_deref()
            .filter(|_| event.tenant_id == here)
            .and_then(|id| names.get(id));
        let (token_name, token_link) = match known {
            Some(known) => (Some(known.name.clone()), known.link.clone()),
            None => (None, None),
        };
        Self {
            time: when(event.time),
            // The credential that acted is in its own column: the actor repeats only its kind.
            actor: {
                let who = if event.token_id.as_deref() == Some(event.actor_id.as_str()) {
                    event.actor_type.replace('_', " ")
                } else {
                    let actor = people
                        .get(&event.actor_id)
                        .filter(|_| event.tenant_id == here)
                        .unwrap_or(&event.actor_id);
                    format!("{} {actor}", event.actor_type.replace('_', " "))
                };
                // A reseller acting for a sub-customer: both tenants, as the API records them.
                let home = tenants.name(&event.tenant_id);
                match &event.acting_tenant_id {
                    Some(acting) if acting == here => {
                        format!("{who} of {home}, acting for this organization")
                    }
                    Some(acting) if event.tenant_id == here => {
                        format!("{who}, acting for {}", tenants.name(acting))
                    }
                    Some(acting) => {
                        format!("{who} of {home}, acting for {}", tenants.name(acting))
                    }
                    // A sub-customer's own event, in the log of an organization above it.
                    None if event.tenant_id != here => format!("{who} of {home}"),
                    None => who,
                }
            },
            token: event.token_id,
            token_name,
            token_link,
            action: event.action,
            // A token, key, client or person of this organization is named, as in the columns
            // before it.
            target: event
                .target
                .map(|(kind, id)| {
                    let named = match kind.as_str() {
                        "tenant" => Some(format!("“{}”", tenants.name(&id))),
                        _ if event.tenant_id != here => None,
                        "user" => people.get(&id).cloned(),
                        "token" | "account_key" | "oauth_client" => {
                            names.get(&id).map(|known| format!("“{}”", known.name))
                        }
                        _ => None,
                    };
                    format!("{} {}", kind.replace('_', " "), named.unwrap_or(id))
                })
                .unwrap_or_default(),
            outcome: match event.outcome {
                Outcome::Success => "Success",
                Outcome::Denied => "Denied",
                Outcome::Failed => "Failed",
            },
            address: event.ip.unwrap_or_default(),
            status: event.status,
            request_id: event.request_id.unwrap_or_default(),
            count: event.count,
        }
    }
}

/// The names of the organization's users who acted in `events`, by id, if the person may read
/// users (else they show by id).
async fn people(
    state: &AppState,
    caller: &Caller,
    events: &[StoredEvent],
    here: &str,
) -> HashMap<String, String> {
    let Ok(grant) = caller.require::<perm::UsersRead>() else {
        return HashMap::new();
    };
    // Who acted, and who was acted on.
    let mut ids: Vec<String> = events
        .iter()
        .filter(|event| event.tenant_id == here)
        .flat_map(|event| {
            let actor = (event.actor_type == "user").then_some(&event.actor_id);
            let target = event
                .target
                .as_ref()
                .filter(|(kind, _)| kind == "user")
                .map(|(_, id)| id);
            actor.into_iter().chain(target).cloned()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return HashMap::new();
    }
    let page = Page {
        ids,
        ..Page::first(Page::MAX_LIMIT)
    };
    match state.store().list_users(&grant.reads(), &page).await {
        Ok(users) => users
            .items
            .into_iter()
            .map(|user| (user.id.to_string(), user.name))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "the console could not name the log's users");
            HashMap::new()
        }
    }
}

/// A time to the second, as a person reads it.
fn when(at: Timestamp) -> String {
    let text = at.to_string();
    format!("{} {} UTC", &text[..10], &text[11..19])
}

#[derive(Template)]
#[template(path = "console/log.html")]
struct LogPage {
    frame: Frame,
    query: LogQuery,
    rows: Vec<EventRow>,
    /// Field messages: (field, message).
    errors: Vec<(&'static str, String)>,
    message: Option<String>,
    /// The link to the next page, with the same filters.
    older: Option<String>,
    /// The NDJSON export of the same selection.
    export: Option<String>,
    outcomes: [(&'static str, &'static str); 4],
}

impl LogPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, message)| message.as_str())
    }
}

/// A time a person typed: an RFC 3339 time, a `datetime-local` value (UTC), or a day. A day
/// starts at its midnight; as the end of a range (`end_of_day`), it includes the whole day.
fn parse_time(text: &str, end_of_day: bool) -> Result<Option<Timestamp>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = Timestamp::parse(text) {
        return Ok(Some(at));
    }
    let minute = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let second = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let spaced = text.replacen(' ', "T", 1);
    if let Ok(at) = time::PrimitiveDateTime::parse(&spaced, &second)
        .or_else(|_| time::PrimitiveDateTime::parse(&spaced, &minute))
    {
        return Ok(Some(Timestamp::from_unix(at.assume_utc().unix_timestamp())));
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &day) {
        let start = date.midnight().assume_utc().unix_timestamp();
        return Ok(Some(Timestamp::from_unix(if end_of_day {
            start + 86_400
        } else {
            start
        })));
    }
    Err("give a day (2026-11-22) or a time (2026-11-22T10:00, UTC)".to_owned())
}

/// An address with these parameters, empty ones left out.
fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = params
        .iter()
        .copied()
        .filter(|(_, value)| !value.is_empty())
        .collect();
    match serde_html_form::to_string(&kept) {
        Ok(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

pub(super) async fn log(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: LogQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    if caller.require::<perm::AuditRead>().is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see the request log (it needs audit:read).",
        );
    }
    let mut errors = Vec::new();
    let outcome = match query.outcome.as_str() {
        "" => None,
        text => match Outcome::parse(text) {
            Some(outcome) => Some(outcome),
            None => {
                errors.push(("outcome", "pick an outcome from the list".to_owned()));
                None
            }
        },
    };
    let since = parse_time(&query.from, false).unwrap_or_else(|message| {
        errors.push(("from", message));
        None
    });
    let until = parse_time(&query.to, true).unwrap_or_else(|message| {
        errors.push(("to", message));
        None
    });
    if let (Some(since), Some(until)) = (since, until)
        && until <= since
    {
        errors.push(("to", "pick a time after “From”".to_owned()));
    }
    let token_id = query.token_id.trim().to_owned();
    let action = query.action.trim().to_owned();
    let mut page = LogPage {
        frame: Frame::new(&caller, &session, HERE, "audit"),
        rows: Vec::new(),
        errors,
        message: None,
        older: None,
        export: None,
        outcomes: [
            ("", "Any outcome"),
            ("success", "Success"),
            ("denied", "Denied"),
            ("failed", "Failed"),
        ],
        query: LogQuery {
            token_id: token_id.clone(),
            action: action.clone(),
            ..query
        },
    };
    if !page.errors.is_empty() {
        return html(render(&page));
    }
    let filter = EventFilter {
        token_ids: Some(token_id.clone())
            .filter(|id| !id.is_empty())
            .into_iter()
            .collect(),
        actions: Some(action.clone())
            .filter(|action| !action.is_empty())
            .into_iter()
            .collect(),
        actor_ids: Vec::new(),
        outcomes: outcome.into_iter().collect(),
        since,
        until,
    };
    let read = crate::routes::audit::list_events(
        &state,
        &caller,
        &filter,
        &table_page(page.query.cursor.clone()),
    )
    .await;
    match read {
        Ok(events) => {
            let here = caller.scope().to_string();
            // The credentials that acted and those acted on.
            let mut credentials: Vec<CredentialId> = events
                .items
                .iter()
                .filter(|event| event.tenant_id == here)
                .flat_map(|event| {
                    let target = event.target.as_ref().map(|(_, id)| id.as_str());
                    event.token_id.as_deref().into_iter().chain(target)
                })
                .filter_map(CredentialId::parse_any)
                .collect();
            credentials.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            credentials.dedup();
            let mut tenants: Vec<String> = Vec::new();
            for event in &events.items {
                tenants.push(event.tenant_id.clone());
                tenants.extend(event.acting_tenant_id.clone());
                if let Some((kind, id)) = &event.target
                    && kind == "tenant"
                {
                    tenants.push(id.clone());
                }
            }
            tenants.sort_unstable();
            tenants.dedup();
            let named = Named {
                credentials: Names::read(&state, &caller, &credentials).await,
                people: people(&state, &caller, &events.items, &here).await,
                tenants: TenantNames::read(&state, &caller, tenants.iter().map(String::as_str))
                    .await,
            };
            page.rows = events
                .items
                .into_iter()
                .map(|event| EventRow::new(event, &here, &named))
                .collect();
            let outcome_text = page.query.outcome.clone();
            let (from, to) = (page.query.from.clone(), page.query.to.clone());
            page.older = events.next_cursor.map(|next| {
                with_query(
                    HERE,
                    &[
                        ("token_id", &token_id),
                        ("action", &action),
                        ("outcome", &outcome_text),
                        ("from", from.trim()),
                        ("to", to.trim()),
                        ("cursor", &next),
                    ],
                )
            });
            let since = since.map(|at| at.to_string()).unwrap_or_default();
            let until = until.map(|at| at.to_string()).unwrap_or_default();
            page.export = Some(with_query(
                "/v1/audit-events/export",
                &[
                    ("token_id", &token_id),
                    ("action", &action),
                    ("outcome", &outcome_text),
                    ("since", &since),
                    ("until", &until),
                ],
            ));
        }
        Err(error) => {
            tracing::error!(detail = ?error.detail, "the console could not read the audit log");
            page.message =
                Some("keygate could not read the request log just now; reload in a moment.".into());
        }
    }
    html(render(&page))
}
