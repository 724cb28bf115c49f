//! OAuth clients: the list, Add OAuth client (its secret shown once, with what a client library
//! needs to use it), one client's page, its Roll secret and its Delete.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keygate_core::access::{Caller, Scope, perm};
use keygate_core::clients;
use keygate_core::model::{Credential, Role};
use keygate_core::permission::BuiltinRole;
use serde::Deserialize;

use super::filters;
use super::frame::{
    ConfirmForm, Frame, Posted, SignedIn, capitalised, day, origin, render, sent_first, table_page,
};
use super::quotas::{QuotaForm, QuotaSection, quota_answer};
use super::tokens::{assignable_roles, permission_groups};
use super::{html, refusal};
use crate::request::Meta;
use crate::routes::oauth::clients::{
    CreateClient, CreatedClient, client_id, create_client, delete_client, roll_client_secret,
};
use crate::routes::quotas::set_client_quota;
use crate::state::AppState;

const HERE: &str = "/console/oauth/clients";

/// One client as the list and its page show it.
struct ClientRow {
    id: String,
    name: String,
    description: String,
    access: String,
    created: String,
    last_used: String,
    hint: String,
    /// Until when the secret replaced by the last roll works, while it still does.
    previous_until: Option<String>,
}

impl ClientRow {
    fn new(client: &Credential, role: Option<&Role>, state: &AppState) -> Self {
        let now = state.clock().now();
        Self {
            id: client.id.to_string(),
            name: client.name.clone(),
            description: client.description.clone().unwrap_or_default(),
            access: match (&client.permissions, &client.role_id) {
                (Some(permissions), _) => permissions.join(", "),
                (None, Some(id)) => format!(
                    "{} role",
                    match (role, BuiltinRole::from_id(id)) {
                        (Some(role), _) => role.name.clone(),
                        (None, Some(builtin)) => builtin.name().to_owned(),
                        (None, None) => id.to_string(),
                    }
                ),
                (None, None) => "nothing".to_owned(),
            },
            created: day(client.created_at),
            last_used: client.last_used_at.map_or_else(|| "never".to_owned(), day),
            hint: format!("…{}", client.hint),
            previous_until: client
                .previous_secret
                .as_ref()
                .filter(|p| p.until > now)
                .map(|p| day(p.until)),
        }
    }
}

/// Where a client library finds keygate: what the discovery document says.
struct Endpoints {
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
}

impl Endpoints {
    fn new(state: &AppState) -> Self {
        let issuer = state.keys().policy().issuer.clone();
        Self {
            token_endpoint: format!("{issuer}/v1/oauth/token"),
            jwks_uri: format!("{issuer}/.well-known/jwks.json"),
            issuer,
        }
    }
}

/// How the person may look roles up, for a client's role name: `oauth_clients:write` (it assigns
/// them) or `roles:read`. Without either, a custom role shows by its id.
fn roles_scope(caller: &Caller) -> Option<Scope<perm::RolesRead>> {
    match caller.require::<perm::OauthClientsWrite>() {
        Ok(grant) => Some(grant.reads()),
        Err(_) => caller.require::<perm::RolesRead>().ok().map(|g| g.reads()),
    }
}

/// The client's role, if the person may look it up: for its name, and for what deleting the
/// client needs.
async fn role_of(state: &AppState, caller: &Caller, client: &Credential) -> Option<Role> {
    let id = client.role_id.as_ref()?;
    state
        .store()
        .get_role(&roles_scope(caller)?, id)
        .await
        .ok()
        .flatten()
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    frame: Frame,
    rows: Vec<ClientRow>,
    next: Option<String>,
    message: Option<String>,
    may_create: bool,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ClientsQuery {
    cursor: Option<String>,
}

pub(super) async fn clients(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: ClientsQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let Ok(grant) = caller.require::<perm::OauthClientsRead>() else {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see OAuth clients (it needs oauth_clients:read).",
        );
    };
    let page = table_page(query.cursor);
    let (rows, next, message) = match state.store().list_clients(&grant.reads(), &page).await {
        Ok(listed) => {
            let mut rows = Vec::with_capacity(listed.items.len());
            for client in &listed.items {
                let role = role_of(&state, &caller, client).await;
                rows.push(ClientRow::new(client, role.as_ref(), &state));
            }
            (rows, listed.next_cursor, None)
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not list OAuth clients");
            (
                Vec::new(),
                None,
                Some("keygate could not read the clients just now; reload in a moment.".to_owned()),
            )
        }
    };
    html(render(&ClientsPage {
        frame: Frame::new(&caller, &session, HERE, "oauth"),
        rows,
        next,
        message,
        may_create: caller.require_all(&["oauth_clients:write"]).is_ok(),
    }))
}

/// The "Add OAuth client" form as sent, and as it is shown again with its messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ClientForm {
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    permission: Vec<String>,
    /// Requests per `quota_period` its access tokens may spend; none when left empty.
    #[serde(default)]
    quota_limit: String,
    #[serde(default)]
    quota_period: String,
}

#[derive(Template)]
#[template(path = "console/client_new.html")]
struct NewClientPage {
    frame: Frame,
    form: ClientForm,
    periods: [(&'static str, &'static str); 4],
    roles: Vec<(String, String)>,
    groups: Vec<(String, Vec<String>)>,
    errors: Vec<(String, String)>,
    message: Option<String>,
}

impl NewClientPage {
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

async fn new_client_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    form: ClientForm,
) -> NewClientPage {
    // `oauth_clients:write` looks roles up: it assigns them.
    let scope = caller
        .require::<perm::OauthClientsWrite>()
        .ok()
        .map(|grant| grant.reads::<perm::RolesRead>());
    NewClientPage {
        frame: Frame::new(caller, session, HERE, "oauth/createOauthClient"),
        roles: assignable_roles(state, caller, scope).await,
        groups: permission_groups(caller),
        periods: super::quotas::PERIODS,
        form,
        errors: Vec::new(),
        message: None,
    }
}

pub(super) async fn new_client(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
) -> Response {
    if caller.require::<perm::OauthClientsWrite>().is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you add OAuth clients (it needs oauth_clients:write).",
        );
    }
    let form = ClientForm {
        role: "viewer".into(),
        quota_period: "month".into(),
        ..ClientForm::default()
    };
    html(render(
        &new_client_page(&state, &caller, &session, form).await,
    ))
}

/// The page that answers a new client or a rolled secret: the secret, once, and what to do
/// with it.
#[derive(Template)]
#[template(path = "console/client_secret.html")]
struct ClientSecretPage {
    frame: Frame,
    heading: String,
    row: ClientRow,
    secret: String,
    endpoints: Endpoints,
    /// The grant as a command to paste: this deployment's address, HTTP Basic.
    curl: String,
    /// After a roll: until when the replaced secret still works.
    rolled_until: Option<String>,
}

fn secret_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    headers: &HeaderMap,
    created: CreatedClient,
    role: Option<&Role>,
) -> ClientSecretPage {
    let client = created.client;
    let curl = format!(
        "curl -sS -u '{}:{}' -d grant_type=client_credentials {}/v1/oauth/token",
        client.client_id,
        created.client_secret,
        origin(headers)
    );
    let row = ClientRow {
        access: match (&client.permissions, &client.role) {
            (Some(permissions), _) => permissions.join(", "),
            (None, Some(id)) => {
                let id = keygate_core::id::RoleId::from_trusted(id.clone());
                match (role, BuiltinRole::from_id(&id)) {
                    (Some(role), _) => format!("{} role", role.name),
                    (None, Some(builtin)) => format!("{} role", builtin.name()),
                    (None, None) => format!("{id} role"),
                }
            }
            (None, None) => "nothing".to_owned(),
        },
        created: day(client.created_at),
        last_used: client.last_used_at.map_or_else(|| "never".to_owned(), day),
        hint: format!("…{}", client.hint),
        previous_until: None,
        id: client.client_id,
        name: client.name,
        description: client.description.unwrap_or_default(),
    };
    ClientSecretPage {
        frame: Frame::new(caller, session, HERE, "oauth"),
        heading: String::new(),
        row,
        secret: created.client_secret,
        endpoints: Endpoints::new(state),
        curl,
        rolled_until: None,
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<ClientForm>,
) -> Response {
    let quota = match super::quotas::quota_at_creation(&form.quota_limit, &form.quota_period) {
        Ok(quota) => quota,
        Err(message) => {
            let mut page = new_client_page(&state, &caller, &session, form).await;
            page.errors = vec![("quota".to_owned(), message)];
            return html(render(&page));
        }
    };
    let description = form.description.trim();
    let request = CreateClient {
        name: form.name.trim().to_owned(),
        description: (!description.is_empty()).then(|| description.to_owned()),
        role: form.role.clone(),
        permissions: (!form.permission.is_empty()).then(|| form.permission.clone()),
        quota,
    };
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        (
            "/console/oauth/clients".to_owned(),
            "See your OAuth clients",
        ),
    )
    .await
    {
        return page;
    }
    match create_client(&state, &caller, &meta, request).await {
        Ok(created) => {
            let role = find(&state, &caller, &created.client.client_id)
                .await
                .ok()
                .and_then(|(_, role)| role);
            let heading = format!("OAuth client “{}” created", created.client.name);
            let mut page = secret_page(&state, &caller, &session, &headers, created, role.as_ref());
            page.heading = heading;
            html(render(&page))
        }
        Err(error) => {
            let mut page = new_client_page(&state, &caller, &session, form).await;
            page.errors = error
                .errors
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect();
            if page.errors.is_empty() {
                page.message = Some(match &error.detail {
                    Some(detail) => format!("{}.", capitalised(detail.trim_end_matches('.'))),
                    None => "keygate could not create the client just now; try again in a moment."
                        .to_owned(),
                });
            }
            html(render(&page))
        }
    }
}

#[derive(Template)]
#[template(path = "console/client.html")]
struct ClientPage {
    frame: Frame,
    row: ClientRow,
    endpoints: Endpoints,
    /// Whether the person may roll and delete it (what deleting it needs).
    may_manage: bool,
    quota: QuotaSection,
}

/// The client with this id, with its role, if the person may see it.
async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Credential, Option<Role>), Response> {
    let not_found = || {
        refusal(
            StatusCode::NOT_FOUND,
            "There is no such OAuth client, or it is not yours to see.",
        )
    };
    let grant = caller
        .require::<perm::OauthClientsRead>()
        .map_err(|_| not_found())?;
    let id = client_id(id).map_err(|_| not_found())?;
    let client = state
        .store()
        .get_client(&grant.reads(), &id)
        .await
        .ok()
        .flatten()
        .ok_or_else(not_found)?;
    let role = role_of(state, caller, &client).await;
    Ok((client, role))
}

pub(super) async fn client(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match client_page(&state, &caller, &session, &id).await {
        Ok(page) => html(render(&page)),
        Err(refused) => refused,
    }
}

async fn client_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    id: &str,
) -> Result<ClientPage, Response> {
    let (client, role) = find(state, caller, id).await?;
    let may_write = caller.require::<perm::OauthClientsWrite>();
    let may_manage = may_write.as_ref().is_ok_and(|grant| {
        clients::check_delete(grant, state.catalog(), &client, role.as_ref()).is_ok()
    });
    let mut quota = QuotaSection::new(
        state.quota_reader().view(client.quota.as_ref()).as_ref(),
        may_write.is_ok(),
        format!("{HERE}/{}/quota", client.id),
    );
    quota.about = "What the client's access tokens may spend between them.";
    Ok(ClientPage {
        frame: Frame::new(caller, session, HERE, "oauth/getOauthClient"),
        row: ClientRow::new(&client, role.as_ref(), state),
        endpoints: Endpoints::new(state),
        may_manage,
        quota,
    })
}

/// Set, change or remove the client's quota, as `PUT /v1/oauth/clients/{id}/quota` does; the
/// page shows what it came to, or the form again with its message beside the field.
pub(super) async fn set_quota(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<QuotaForm>,
) -> Response {
    let page = match client_page(&state, &caller, &session, &id).await {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    let outcome = match page.quota.body_of(&form) {
        Ok(body) => set_client_quota(&state, &caller, &meta, &id, body).await,
        Err(error) => Err(error),
    };
    let reread = client_page(&state, &caller, &session, &id);
    quota_answer(outcome, form, page, reread, |page| &mut page.quota).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RollForm {
    #[serde(default)]
    overlap: String,
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
}

pub(super) async fn roll(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<RollForm>,
) -> Response {
    if let Err(page) = sent_first(
        &state,
        &caller,
        &form.once,
        (format!("/console/oauth/clients/{id}"), "See the client"),
    )
    .await
    {
        return page;
    }
    let overlap = form.overlap.parse::<u64>().ok();
    match roll_client_secret(&state, &caller, &meta, &id, overlap).await {
        Ok(rolled) => {
            let role = find(&state, &caller, &id)
                .await
                .ok()
                .and_then(|(_, role)| role);
            let until = rolled.client.previous_secret_expires_at.map(day);
            let heading = format!("Secret of “{}” rolled", rolled.client.name);
            let mut page = secret_page(&state, &caller, &session, &headers, rolled, role.as_ref());
            page.heading = heading;
            page.rolled_until = until;
            html(render(&page))
        }
        Err(error) => refusal(
            error.code.status(),
            &format!(
                "The secret was not rolled: {}.",
                error
                    .detail
                    .as_deref()
                    .unwrap_or("keygate could not roll it just now")
                    .trim_end_matches('.')
            ),
        ),
    }
}

#[derive(Template)]
#[template(path = "console/client_delete.html")]
struct DeletePage {
    frame: Frame,
    id: String,
    name: String,
    done: bool,
}

/// Delete: the first post asks for confirmation, the second (`confirm=yes`) deletes, as
/// `DELETE /v1/oauth/clients/{id}` does.
pub(super) async fn delete(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    let (client, _) = match find(&state, &caller, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let frame = Frame::new(&caller, &session, HERE, "oauth/deleteOauthClient");
    if form.confirm != "yes" {
        return html(render(&DeletePage {
            frame,
            id: client.id.to_string(),
            name: client.name,
            done: false,
        }));
    }
    match delete_client(&state, &caller, &meta, &id).await {
        Ok(()) => html(render(&DeletePage {
            frame,
            id: client.id.to_string(),
            name: client.name,
            done: true,
        })),
        Err(error) => refusal(
            error.code.status(),
            &format!(
                "The client was not deleted: {}.",
                error
                    .detail
                    .as_deref()
                    .unwrap_or("keygate could not delete it just now")
                    .trim_end_matches('.')
            ),
        ),
    }
}
