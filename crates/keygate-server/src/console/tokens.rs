//! API tokens: the table, Add token, Delete selected, one token's page and its Roll.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, Scope, perm};
use keygate_core::credential::CredentialKind;
use keygate_core::id::RoleId;
use keygate_core::model::{Credential, Role};
use keygate_core::store::{Page, TokenFilter};
use keygate_core::tokens;
use serde::Deserialize;

use super::chart::Sparkline;
use super::filters;
use super::frame::{
    Frame, Posted, SecretPage, SignedIn, day, origin, problem_text, render, sent_first, table_page,
};
use super::quotas::{QuotaForm, QuotaSection, quota_answer};
use super::usage::{self, UsageSection};
use super::{html, refusal};
use crate::request::Meta;
use crate::routes::quotas::set_token_quota;
use crate::state::AppState;

/// One row of the tokens table.
struct TokenRow {
    id: String,
    name: String,
    description: String,
    kind: &'static str,
    access: String,
    status: &'static str,
    created: String,
    expires: String,
    last_used: String,
    hint: String,
    /// Whether the person may delete (and so roll) it.
    may_delete: bool,
    /// Its last 24 hours, in the table of a person who may read usage.
    usage: Option<Sparkline>,
}

impl TokenRow {
    fn new(token: &Credential, now: Timestamp, roles: &RoleNames) -> Self {
        let status = tokens::status(token, now);
        Self {
            id: token.id.to_string(),
            name: token.name.clone(),
            description: token.description.clone().unwrap_or_default(),
            kind: match token.kind {
                CredentialKind::Personal => "Personal",
                _ => "Service",
            },
            access: match (&token.permissions, &token.role_id) {
                (Some(permissions), _) => permissions.join(", "),
                (None, Some(role)) => format!("{} role", roles.name(role)),
                (None, None) => "the user's role".to_owned(),
            },
            status: match status {
                "active" => "Active",
                "expired" => "Expired",
                _ => "Revoked",
            },
            created: day(token.created_at),
            expires: token.expires_at.map_or_else(|| "never".to_owned(), day),
            last_used: token.last_used_at.map_or_else(|| "never".to_owned(), day),
            hint: format!("…{}", token.hint),
            may_delete: false,
            usage: None,
        }
    }
}

/// The roles a page's tokens name, each read once, through whichever grant lets the person look
/// roles up: `tokens:write` (it assigns them) or `roles:read`. Without either, a custom role shows
/// by its id.
#[derive(Default)]
struct RoleNames(std::collections::HashMap<RoleId, Option<Role>>);

impl RoleNames {
    async fn read(state: &AppState, caller: &Caller, tokens: &[Credential]) -> Self {
        let scope = match caller.require::<perm::TokensWrite>() {
            Ok(grant) => grant.reads::<perm::RolesRead>(),
            Err(_) => match caller.require::<perm::RolesRead>() {
                Ok(grant) => grant.reads(),
                Err(_) => return Self::default(),
            },
        };
        let mut roles = std::collections::HashMap::new();
        for id in tokens.iter().filter_map(|token| token.role_id.as_ref()) {
            if !roles.contains_key(id) {
                let role = state.store().get_role(&scope, id).await.ok().flatten();
                roles.insert(id.clone(), role);
            }
        }
        Self(roles)
    }

    fn role(&self, id: &RoleId) -> Option<&Role> {
        self.0.get(id).and_then(Option::as_ref)
    }

    fn name(&self, id: &RoleId) -> String {
        match (
            self.role(id),
            keygate_core::permission::BuiltinRole::from_id(id),
        ) {
            (Some(role), _) => role.name.clone(),
            (None, Some(builtin)) => builtin.name().to_owned(),
            (None, None) => id.to_string(),
        }
    }
}

/// Marks the rows the person may delete, by the rule the API applies (a member cannot delete
/// the owner's automation).
fn mark_deletable(
    state: &AppState,
    caller: &Caller,
    tokens: &[Credential],
    roles: &RoleNames,
    rows: &mut [TokenRow],
) {
    let Ok(grant) = caller.require::<perm::TokensWrite>() else {
        return;
    };
    let now = state.clock().now();
    for (token, row) in tokens.iter().zip(rows.iter_mut()) {
        if tokens::status(token, now) == "revoked" {
            continue;
        }
        let role = token.role_id.as_ref().and_then(|id| roles.role(id));
        row.may_delete = tokens::check_revoke(&grant, state.catalog(), token, role).is_ok();
    }
}

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    frame: Frame,
    rows: Vec<TokenRow>,
    kind: String,
    status: String,
    next: Option<String>,
    message: Option<String>,
    may_create: bool,
    /// Whether the table has the "Last 24 h" column: the person may read usage.
    usage_column: bool,
}

/// The table's filters and page, read leniently: a link edited by hand shows the whole list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokensQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    cursor: Option<String>,
}

pub(super) async fn tokens(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: TokensQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let frame = Frame::new(&caller, &session, "/console/tokens", "tokens");
    let Ok(grant) = caller.require::<perm::TokensRead>() else {
        return refusal(
            axum::http::StatusCode::FORBIDDEN,
            "Your role does not let you see API tokens (it needs tokens:read).",
        );
    };
    let now = state.clock().now();
    let filter = TokenFilter {
        kinds: match query.kind.as_str() {
            "personal" => vec![CredentialKind::Personal],
            "service" => vec![CredentialKind::Service],
            _ => Vec::new(),
        },
        statuses: match query.status.as_str() {
            status @ ("active" | "expired" | "revoked") => vec![status.to_owned()],
            _ => Vec::new(),
        },
        personal: crate::routes::tokens::personal_visibility(&caller),
        ..TokenFilter::default()
    };
    let page = table_page(query.cursor);
    let listed = state
        .store()
        .list_tokens(&grant.reads(), &filter, &page, now)
        .await;
    let (rows, next, message) = match listed {
        Ok(listed) => {
            let roles = RoleNames::read(&state, &caller, &listed.items).await;
            let mut rows: Vec<TokenRow> = listed
                .items
                .iter()
                .map(|t| TokenRow::new(t, now, &roles))
                .collect();
            mark_deletable(&state, &caller, &listed.items, &roles, &mut rows);
            let ids: Vec<_> = listed.items.iter().map(|t| t.id.clone()).collect();
            let mut message = None;
            match usage::last_day(&state, &caller, &ids).await {
                Some(Ok(mut sparklines)) => {
                    for row in &mut rows {
                        row.usage = sparklines.remove(&row.id);
                    }
                }
                Some(Err(error)) => {
                    tracing::error!(detail = ?error.detail, "the console could not read usage");
                    message = Some(
                        "keygate could not read the tokens' usage just now; reload in a moment."
                            .to_owned(),
                    );
                }
                None => {}
            }
            (rows, listed.next_cursor, message)
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not list tokens");
            (
                Vec::new(),
                None,
                Some("keygate could not read the tokens just now; reload in a moment.".to_owned()),
            )
        }
    };
    html(render(&TokensPage {
        may_create: caller.require_all(&["tokens:write"]).is_ok(),
        usage_column: caller.require::<perm::UsageRead>().is_ok(),
        frame,
        rows,
        kind: query.kind,
        status: query.status,
        next,
        message,
    }))
}

/// The "Add token" form as sent, and as it is shown again with its messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenForm {
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    permission: Vec<String>,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    expiry_date: String,
    #[serde(default)]
    allowed_ips: String,
    #[serde(default)]
    rate_requests: String,
    #[serde(default)]
    rate_seconds: String,
    /// Requests per `quota_period`; none when left empty.
    #[serde(default)]
    quota_limit: String,
    #[serde(default)]
    quota_period: String,
}

#[derive(Template)]
#[template(path = "console/token_new.html")]
struct NewTokenPage {
    frame: Frame,
    form: TokenForm,
    /// Whether the person may make service tokens (their role may name another role).
    may_service: bool,
    roles: Vec<(String, String)>,
    /// The permissions the person holds, by resource.
    groups: Vec<(String, Vec<String>)>,
    expiries: Vec<(&'static str, &'static str)>,
    periods: [(&'static str, &'static str); 4],
    errors: Vec<(String, String)>,
    message: Option<String>,
}

impl NewTokenPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| {
                name == field
                    || name.starts_with(&format!("{field}["))
                    || name.starts_with(&format!("{field}."))
            })
            .map(|(_, message)| message.as_str())
    }
}

/// The permissions the person holds, by resource, for a form's checkboxes.
pub(super) fn permission_groups(caller: &Caller) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for permission in caller.verified().permissions.iter() {
        let name = permission.as_str();
        let resource = name.split(':').next().unwrap_or(name).to_owned();
        match groups.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, names)) => names.push(name.to_owned()),
            None => groups.push((resource, vec![name.to_owned()])),
        }
    }
    groups
}

/// The roles the person may give a new credential, as (value, label): only those the person
/// holds all of, as any other would be refused as an escalation. Built-in roles first, by rank,
/// then the tenant's own (read through `scope`, if the person may look them up) by name; the
/// value is what the API's `role` takes (a built-in name, or a custom role's id).
pub(super) async fn assignable_roles(
    state: &AppState,
    caller: &Caller,
    scope: Option<Scope<perm::RolesRead>>,
) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = keygate_core::permission::BuiltinRole::ALL
        .iter()
        .filter(|role| {
            caller
                .check_no_escalation(&state.catalog().builtin_role(**role))
                .is_ok()
        })
        .map(|role| (role.name().to_owned(), role.name().to_owned()))
        .collect();
    let mut custom = match &scope {
        Some(scope) => super::roles::custom_roles(state, scope).await,
        None => Vec::new(),
    };
    custom.retain(|role| {
        caller
            .check_no_escalation(&keygate_core::verified::role_permissions(
                role,
                state.catalog(),
            ))
            .is_ok()
    });
    roles.extend(
        custom
            .into_iter()
            .map(|role| (role.id.to_string(), format!("{} (custom)", role.name))),
    );
    roles
}

async fn new_token_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    form: TokenForm,
) -> NewTokenPage {
    let groups = permission_groups(caller);
    // `tokens:write` looks roles up: it assigns them.
    let scope = caller
        .require::<perm::TokensWrite>()
        .ok()
        .map(|grant| grant.reads::<perm::RolesRead>());
    let roles = assignable_roles(state, caller, scope).await;
    NewTokenPage {
        frame: Frame::new(caller, session, "/console/tokens", "tokens"),
        form,
        may_service: !roles.is_empty(),
        roles,
        groups,
        periods: super::quotas::PERIODS,
        expiries: vec![
            ("7", "In 7 days"),
            ("30", "In 30 days"),
            ("90", "In 90 days"),
            ("date", "On a date"),
            ("never", "Never (service tokens only)"),
        ],
        errors: Vec::new(),
        message: None,
    }
}

pub(super) async fn new_token(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    let form = TokenForm {
        kind: "personal".into(),
        expiry: "30".into(),
        role: "viewer".into(),
        quota_period: "month".into(),
        ..TokenForm::default()
    };
    html(render(
        &new_token_page(&state, &caller, &session, form).await,
    ))
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<TokenForm>,
) -> Response {
    let request = match token_request(&form, state.clock().now()) {
        Ok(request) => request,
        Err(errors) => {
            let mut page = new_token_page(&state, &caller, &session, form).await;
            page.errors = errors;
            return html(render(&page));
        }
    };
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        ("/console/tokens".to_owned(), "See your API tokens"),
    )
    .await
    {
        return page;
    }
    match crate::routes::tokens::create_token(&state, &caller, &meta, request).await {
        Ok(created) => {
            let page = SecretPage {
                frame: Frame::new(&caller, &session, "/console/tokens", "tokens"),
                heading: format!("Token “{}” created", created.token.name),
                what: "token",
                back: "/console/tokens",
                back_label: "Back to API tokens",
                secret: created.secret,
                origin: origin(&headers),
                previous_until: None,
                warnings: created
                    .warnings
                    .iter()
                    .map(|w| format!("Note: {}", w.detail))
                    .collect(),
            };
            html(render(&page))
        }
        Err(error) => {
            let mut page = new_token_page(&state, &caller, &session, form).await;
            page.errors = error
                .errors
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect();
            if page.errors.is_empty() {
                page.message = Some(problem_text(&error));
            }
            html(render(&page))
        }
    }
}

/// The API request the form stands for, or every field it cannot be read from (each at once,
/// rather than one per try); the API checks the rest.
fn token_request(
    form: &TokenForm,
    now: Timestamp,
) -> Result<crate::routes::tokens::CreateToken, Vec<(String, String)>> {
    use crate::routes::tokens::{CreateToken, RateLimitBody, TokenKind};
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut refuse = |field: &str, message: String| errors.push((field.to_owned(), message));
    let kind = match form.kind.as_str() {
        "service" => TokenKind::Service,
        _ => TokenKind::Personal,
    };
    if let Err(invalid) = keygate_core::validate::name("name", &form.name) {
        refuse("name", invalid.message);
    }
    let (expires_in, expires_at) = match form.expiry.as_str() {
        "never" if matches!(kind, TokenKind::Personal) => {
            refuse(
                "expires_at",
                "a personal token must expire: pick a number of days or a date".to_owned(),
            );
            (None, None)
        }
        "never" => (None, None),
        "date" => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            match time::Date::parse(form.expiry_date.trim(), &format) {
                Err(_) => {
                    refuse("expires_at", "pick the day the token expires".to_owned());
                    (None, None)
                }
                Ok(date) => {
                    let at = date.midnight().assume_utc().unix_timestamp();
                    if at <= now.unix() {
                        refuse("expires_at", "pick a day after today".to_owned());
                    }
                    (None, Some(Timestamp::from_unix(at)))
                }
            }
        }
        days @ ("7" | "30" | "90") => {
            let days: u64 = days.parse().unwrap_or(30);
            (Some(days * 86_400), None)
        }
        _ => {
            refuse("expires_at", "pick when the token expires".to_owned());
            (None, None)
        }
    };
    let mut number = |text: &str, what: &str| -> Option<u32> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let parsed = text.parse::<u32>().ok().filter(|n| *n > 0);
        if parsed.is_none() {
            refuse("rate_limit", format!("{what}: give a whole number above 0"));
        }
        parsed
    };
    let requests = number(&form.rate_requests, "requests");
    let per_seconds = number(&form.rate_seconds, "per seconds");
    let rate_limit = match (requests, per_seconds) {
        (Some(requests), Some(per_seconds)) => Some(RateLimitBody {
            requests,
            per_seconds,
        }),
        (None, None) => None,
        _ => {
            if form.rate_requests.trim().is_empty() != form.rate_seconds.trim().is_empty() {
                refuse(
                    "rate_limit",
                    "give both the number of requests and the seconds they are counted over".into(),
                );
            }
            None
        }
    };
    let quota = super::quotas::quota_at_creation(&form.quota_limit, &form.quota_period)
        .unwrap_or_else(|message| {
            refuse("quota", message);
            None
        });
    let allowed_ips: Vec<String> = form
        .allowed_ips
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if let Err(invalid) = keygate_core::allowlist::IpAllowlist::parse(&allowed_ips, "allowed_ips") {
        for invalid in invalid {
            refuse(&invalid.field, invalid.message);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let description = form.description.trim();
    Ok(CreateToken {
        kind,
        name: form.name.trim().to_owned(),
        description: (!description.is_empty()).then(|| description.to_owned()),
        role: matches!(kind, TokenKind::Service).then(|| form.role.clone()),
        permissions: (!form.permission.is_empty()).then(|| form.permission.clone()),
        expires_at,
        expires_in,
        allowed_ips: (!allowed_ips.is_empty()).then_some(allowed_ips),
        rate_limit,
        quota,
    })
}

#[derive(Template)]
#[template(path = "console/token_delete.html")]
struct DeletePage {
    frame: Frame,
    /// Asking: the (id, name) of each token to delete.
    selected: Vec<(String, String)>,
    /// Answering: whether they were deleted, which, and which were gone already.
    done: bool,
    deleted: Vec<String>,
    missing: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteForm {
    #[serde(default)]
    id: Vec<String>,
    #[serde(default)]
    confirm: String,
}

/// "Delete selected": the first post asks for confirmation, naming the tokens; the second
/// revokes them all in one transaction, as `DELETE /v1/tokens?id=…` does.
pub(super) async fn delete_tokens(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<DeleteForm>,
) -> Response {
    let frame = Frame::new(&caller, &session, "/console/tokens", "tokens");
    let ids: Vec<String> = form
        .id
        .into_iter()
        .filter(|id| !id.is_empty())
        .take(500)
        .collect();
    let names = token_names(&state, &caller, &ids).await;
    if form.confirm != "yes" || ids.is_empty() {
        let selected = ids
            .iter()
            .filter_map(|id| names.iter().find(|(i, _)| i == id).cloned())
            .collect();
        return html(render(&DeletePage {
            frame,
            selected,
            done: false,
            deleted: Vec::new(),
            missing: Vec::new(),
        }));
    }
    match crate::routes::tokens::revoke(&state, &caller, &meta, &ids, 200).await {
        Ok((deleted, missing)) => {
            let name_of = |id: &str| {
                names
                    .iter()
                    .find(|(i, _)| i == id)
                    .map_or_else(|| id.to_owned(), |(_, name)| name.clone())
            };
            html(render(&DeletePage {
                frame,
                selected: Vec::new(),
                done: true,
                deleted: deleted.iter().map(|id| name_of(id.as_str())).collect(),
                missing: missing.iter().map(|id| name_of(id)).collect(),
            }))
        }
        Err(error) => refusal(
            axum::http::StatusCode::FORBIDDEN,
            &format!(
                "No token was deleted: {}.",
                error
                    .detail
                    .as_deref()
                    .unwrap_or("keygate could not delete them just now")
            ),
        ),
    }
}

/// The (id, name) of the tokens with these ids that the person may see.
async fn token_names(state: &AppState, caller: &Caller, ids: &[String]) -> Vec<(String, String)> {
    let Ok(grant) = caller.require::<perm::TokensRead>() else {
        return Vec::new();
    };
    let wanted: Vec<_> = ids
        .iter()
        .filter_map(|id| keygate_core::id::CredentialId::parse_any(id))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let filter = TokenFilter {
        personal: crate::routes::tokens::personal_visibility(caller),
        ..TokenFilter::default()
    };
    let page = Page {
        ids: wanted.iter().map(|id| id.as_str().to_owned()).collect(),
        ..Page::first(Page::MAX_LIMIT)
    };
    state
        .store()
        .list_tokens(&grant.reads(), &filter, &page, state.clock().now())
        .await
        .map(|listed| {
            listed
                .items
                .into_iter()
                .map(|t| (t.id.to_string(), t.name))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/token.html")]
struct TokenPage {
    frame: Frame,
    row: TokenRow,
    /// The networks the token may be used from, in words ("any network" when not limited).
    networks: String,
    /// "100 requests per 60 seconds", or that the deployment's default applies.
    rate_limit: String,
    rolled_from: Option<String>,
    rolled_to: Option<String>,
    /// Whether the person may read the request log, which the page links to.
    may_read_log: bool,
    /// The token's usage, for a person who may read it.
    usage: Option<UsageSection>,
    quota: QuotaSection,
}

/// The period of a token page's usage, as the address carries it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TokenQuery {
    usage: Option<String>,
}

pub(super) async fn token(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    axum::extract::Path(id): axum::extract::Path<String>,
    uri: axum::http::Uri,
) -> Response {
    let query: TokenQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    match token_page(&state, &caller, &session, &id, query.usage.as_deref()).await {
        Ok(page) => html(render(&page)),
        Err(refused) => refused,
    }
}

/// The token's page, with its usage over `period` (the page's default when `None`); the
/// "not found" page for a token the person may not see.
async fn token_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    id: &str,
    period: Option<&str>,
) -> Result<TokenPage, Response> {
    let not_found = || {
        refusal(
            axum::http::StatusCode::NOT_FOUND,
            "There is no such token, or it is not yours to see.",
        )
    };
    let grant = caller
        .require::<perm::TokensRead>()
        .map_err(|_| not_found())?;
    let token_id = keygate_core::id::CredentialId::parse_any(id).ok_or_else(not_found)?;
    let token = state
        .store()
        .get_token(&grant.reads(), &token_id)
        .await
        .ok()
        .flatten()
        .filter(|t| {
            crate::routes::tokens::visible(t, &crate::routes::tokens::personal_visibility(caller))
        })
        .ok_or_else(not_found)?;
    let now = state.clock().now();
    let tokens = std::slice::from_ref(&token);
    let roles = RoleNames::read(state, caller, tokens).await;
    let mut rows = [TokenRow::new(&token, now, &roles)];
    mark_deletable(state, caller, tokens, &roles, &mut rows);
    let [row] = rows;
    let usage = usage::token_section(state, caller, &token.id, period).await;
    let quota = QuotaSection::new(
        state.quota_reader().view(token.quota.as_ref()).as_ref(),
        caller.require::<perm::TokensWrite>().is_ok() && row.status == "Active",
        format!("/console/tokens/{}/quota", token.id),
    );
    Ok(TokenPage {
        usage,
        quota,
        frame: Frame::new(caller, session, "/console/tokens", "tokens"),
        row,
        networks: match &token.allowed_ips {
            Some(networks) if !networks.is_empty() => networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            _ => "any (the organization's IP restriction still applies)".to_owned(),
        },
        rate_limit: match &token.rate_limit {
            Some(limit) => format!(
                "{} requests per {} seconds",
                limit.requests, limit.per_seconds
            ),
            None => "the deployment's default".to_owned(),
        },
        rolled_from: token.rolled_from.map(|id| id.to_string()),
        rolled_to: token.rolled_to.map(|id| id.to_string()),
        may_read_log: caller.require_all(&["audit:read"]).is_ok(),
    })
}

/// Set, change or remove the token's quota, as `PUT /v1/tokens/{id}/quota` does; the page shows
/// what it came to, or the form again with its message beside the field.
pub(super) async fn set_quota(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    axum::extract::Path(id): axum::extract::Path<String>,
    Posted(form): Posted<QuotaForm>,
) -> Response {
    let page = match token_page(&state, &caller, &session, &id, None).await {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    let outcome = match page.quota.body_of(&form) {
        Ok(body) => set_token_quota(&state, &caller, &meta, &id, body).await,
        Err(error) => Err(error),
    };
    let reread = token_page(&state, &caller, &session, &id, None);
    quota_answer(outcome, form, page, reread, |page| &mut page.quota).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RollForm {
    #[serde(default)]
    overlap: String,
}

pub(super) async fn roll_token(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    axum::extract::Path(id): axum::extract::Path<String>,
    Posted(form): Posted<RollForm>,
) -> Response {
    let overlap = form.overlap.parse::<u64>().ok();
    match crate::routes::tokens::roll_token(&state, &caller, &meta, &id, overlap).await {
        Ok((created, previous_until)) => html(render(&SecretPage {
            frame: Frame::new(&caller, &session, "/console/tokens", "tokens"),
            heading: format!("Token “{}” rolled", created.token.name),
            what: "new token",
            back: "/console/tokens",
            back_label: "Back to API tokens",
            secret: created.secret,
            origin: origin(&headers),
            previous_until: Some(day(previous_until)),
            warnings: Vec::new(),
        })),
        Err(error) => refusal(
            error.code.status(),
            &format!(
                "The token was not rolled: {}.",
                error
                    .detail
                    .as_deref()
                    .unwrap_or("keygate could not roll it just now")
            ),
        ),
    }
}
