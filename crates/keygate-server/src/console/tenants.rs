//! Sub-customers: the tenant tree below the person's tenant, creating one with its first user,
//! renaming, suspending, deleting, and acting for one (`as-tenant`, kept in a console cookie and
//! checked again by the gate on every page).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_core::access::{Caller, perm};
use keygate_core::model::Tenant;
use serde::Deserialize;

use super::filters;
use super::frame::{
    ConfirmForm, Empty, Frame, Posted, SignedIn, capitalised, day, origin, problem_text, render,
    sent_first, table_page,
};
use super::quotas::{QuotaForm, QuotaSection, quota_answer};
use super::{acting_cookie, html, refusal};
use crate::auth::{AS_TENANT, authenticate};
use crate::problem::ApiError;
use crate::request::{ClientIp, Meta};
use crate::routes::quotas::set_tenant_quota;
use crate::routes::tenants::{CreateTenant, FirstUser, UpdateTenant};
use crate::state::AppState;

/// One sub-customer as a row or a page shows it.
struct TenantRow {
    id: String,
    name: String,
    slug: String,
    status: &'static str,
    created: String,
}

impl TenantRow {
    fn new(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            slug: tenant.slug.clone().into(),
            status: match tenant.status.as_str() {
                "active" => "Active",
                _ => "Suspended",
            },
            created: day(tenant.created_at),
        }
    }
}

/// What the person may do to sub-customers, read once per page.
struct Abilities {
    write: bool,
    act: bool,
}

impl Abilities {
    fn of(caller: &Caller) -> Self {
        Self {
            write: caller.require_all(&["tenants:write"]).is_ok(),
            act: caller.require_all(&["tenants:impersonate"]).is_ok(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    frame: Frame,
    /// The tenant whose children are listed, when it is not the one the person is in.
    parent: Option<TenantRow>,
    rows: Vec<TenantRow>,
    next: Option<String>,
    may: Abilities,
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TenantsQuery {
    #[serde(default)]
    parent: String,
    cursor: Option<String>,
}

fn not_found() -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "There is no such sub-customer below your organization.",
    )
}

fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::error!(error = %error, "the console could not read sub-customers");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "keygate could not read the sub-customers just now; reload in a moment.",
    )
}

/// A tenant at or below the one the person is in, by id or slug.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Tenant, Response> {
    let Ok(grant) = caller.require::<perm::TenantsRead>() else {
        return Err(not_found());
    };
    match state.store().get_tenant(&grant.reads(), id).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => Err(not_found()),
        Err(error) => Err(unavailable(error)),
    }
}

pub(super) async fn tenants(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: TenantsQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let Ok(grant) = caller.require::<perm::TenantsRead>() else {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see sub-customers (it needs tenants:read).",
        );
    };
    let parent = match query.parent.trim() {
        "" => None,
        id => match find(&state, &caller, id).await {
            Ok(tenant) if &tenant.id != grant.tenant_id() => Some(tenant),
            Ok(_) => None,
            Err(refused) => return refused,
        },
    };
    let page = table_page(query.cursor);
    let of = parent
        .as_ref()
        .map_or_else(|| grant.tenant_id().clone(), |p| p.id.clone());
    let listed = match state.store().list_tenants(&grant.reads(), &of, &page).await {
        Ok(listed) => listed,
        Err(error) => return unavailable(error),
    };
    html(render(&TenantsPage {
        frame: Frame::new(&caller, &session, "/console/tenants", "tenants"),
        parent: parent.as_ref().map(TenantRow::new),
        rows: listed.items.iter().map(TenantRow::new).collect(),
        next: listed.next_cursor,
        may: Abilities::of(&caller),
        message: None,
    }))
}

/// The "Add sub-customer" form as sent, and as it is shown again with its messages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TenantForm {
    /// The page's one-time value (`frame::sent_first`).
    #[serde(default)]
    once: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "console/tenant_new.html")]
struct NewTenantPage {
    frame: Frame,
    form: TenantForm,
    errors: Vec<(String, String)>,
    message: Option<String>,
}

impl NewTenantPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, message)| message.as_str())
    }
}

pub(super) async fn new_tenant(SignedIn { caller, session }: SignedIn) -> Response {
    html(render(&NewTenantPage {
        frame: Frame::new(
            &caller,
            &session,
            "/console/tenants",
            "tenants/createTenant",
        ),
        form: TenantForm::default(),
        errors: Vec::new(),
        message: None,
    }))
}

#[derive(Template)]
#[template(path = "console/tenant_created.html")]
struct CreatedTenantPage {
    frame: Frame,
    tenant: TenantRow,
    email: String,
    /// The first user's password when keygate made it: shown this once.
    password: Option<String>,
    origin: String,
}

/// The API's field names, as the form calls them.
fn form_field(field: &str) -> &str {
    match field {
        "first_user.email" => "email",
        "first_user.name" => "user_name",
        "first_user.password" => "password",
        "first_user" => "email",
        other => other,
    }
}

pub(super) async fn create_tenant(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    SignedIn { caller, session }: SignedIn,
    Posted(form): Posted<TenantForm>,
) -> Response {
    let mut errors = Vec::new();
    if form.email.trim().is_empty() {
        errors.push((
            "email".to_owned(),
            "give the email of the sub-customer's first user".to_owned(),
        ));
    }
    if form.user_name.trim().is_empty() {
        errors.push((
            "user_name".to_owned(),
            "give the first user's name".to_owned(),
        ));
    }
    let request = CreateTenant {
        name: form.name.trim().to_owned(),
        slug: Some(form.slug.trim().to_owned()).filter(|s| !s.is_empty()),
        first_user: Some(FirstUser {
            email: form.email.trim().to_owned(),
            name: form.user_name.trim().to_owned(),
            password: Some(form.password.clone()).filter(|p| !p.is_empty()),
        }),
    };
    if errors.is_empty()
        && let Err(page) = sent_first(
            &state,
            &caller,
            &form.once,
            ("/console/tenants".to_owned(), "See your sub-customers"),
        )
        .await
    {
        return page;
    }
    let outcome = if errors.is_empty() {
        crate::routes::tenants::create_tenant(&state, &caller, &meta, request).await
    } else {
        Err(ApiError::invalid_fields(Vec::new()))
    };
    match outcome {
        Ok(created) => {
            let tenant = TenantRow {
                id: created.tenant.id,
                name: created.tenant.name,
                slug: created.tenant.slug,
                status: "Active",
                created: day(created.tenant.created_at),
            };
            html(render(&CreatedTenantPage {
                frame: Frame::new(&caller, &session, "/console/tenants", "tenants"),
                tenant,
                email: form.email.trim().to_owned(),
                password: created.initial_password,
                origin: origin(&headers),
            }))
        }
        Err(error) => {
            errors.extend(
                error
                    .errors
                    .iter()
                    .map(|e| (form_field(&e.field).to_owned(), e.message.clone())),
            );
            let message = errors.is_empty().then(|| problem_text(&error));
            let mut form = form;
            form.password.clear();
            html(render(&NewTenantPage {
                frame: Frame::new(
                    &caller,
                    &session,
                    "/console/tenants",
                    "tenants/createTenant",
                ),
                form,
                errors,
                message,
            }))
        }
    }
}

#[derive(Template)]
#[template(path = "console/tenant.html")]
struct TenantPage {
    frame: Frame,
    tenant: TenantRow,
    /// Whether it is the tenant the person is in (theirs, or the one acted for): it can only be
    /// renamed from here.
    own: bool,
    may: Abilities,
    /// Asking before deleting.
    confirm_delete: bool,
    saved: Option<String>,
    message: Option<String>,
    /// Its pool (API.md §13), set by a tenant above it.
    quota: QuotaSection,
}

async fn tenant_page(
    state: &AppState,
    caller: &Caller,
    session: &str,
    id: &str,
) -> Result<TenantPage, Response> {
    let tenant = find(state, caller, id).await?;
    let own = &tenant.id == caller.scope();
    let mut quota = QuotaSection::new(
        state.quota_reader().view(tenant.quota.as_ref()).as_ref(),
        !own && caller.require::<perm::TenantsWrite>().is_ok(),
        format!("/console/tenants/{}/quota", tenant.id),
    );
    quota.about = if own {
        "The pool this organization's credentials, and its sub-customers', share, set by the \
         organization above it. A request spends from it and from its credential's own quota."
    } else {
        "The pool its credentials, and its sub-customers', share: what you sell it. A request \
         spends from it and from its credential's own quota, if it has one."
    };
    Ok(TenantPage {
        quota,
        frame: Frame::new(caller, session, "/console/tenants", "tenants/getTenant"),
        own,
        tenant: TenantRow::new(&tenant),
        may: Abilities::of(caller),
        confirm_delete: false,
        saved: None,
        message: None,
    })
}

pub(super) async fn tenant(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match tenant_page(&state, &caller, &session, &id).await {
        Ok(page) => html(render(&page)),
        Err(refused) => refused,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ChangeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
}

/// Renames, suspends or reactivates, as `PATCH /v1/tenants/{id}` does; the page shows the
/// outcome.
pub(super) async fn change_tenant(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ChangeForm>,
) -> Response {
    let request = UpdateTenant {
        name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
        status: Some(form.status.clone()).filter(|s| !s.is_empty()),
        leak_policy: None,
    };
    let what = match (&request.name, request.status.as_deref()) {
        (Some(_), _) => "Renamed.",
        (None, Some("suspended")) => {
            "Suspended: its credentials, and its sub-customers', are refused from their next \
             request."
        }
        (None, Some(_)) => "Reactivated: its credentials work again.",
        (None, None) => "Nothing to change.",
    };
    let outcome = crate::routes::tenants::update_tenant(&state, &caller, &meta, &id, request).await;
    let mut page = match tenant_page(&state, &caller, &session, &id).await {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    match outcome {
        Ok(_) => page.saved = Some(what.to_owned()),
        Err(error) => {
            page.message = Some(match error.errors.first() {
                Some(field) => format!("{}: {}.", capitalised(&field.field), field.message),
                None => problem_text(&error),
            });
            return (error.code.status(), html(render(&page))).into_response();
        }
    }
    html(render(&page))
}

/// Sets, changes or removes its pool, as `PUT /v1/tenants/{id}/quota` does; the page shows what
/// it came to, or the form again with its message beside the field.
pub(super) async fn set_quota(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<QuotaForm>,
) -> Response {
    let page = match tenant_page(&state, &caller, &session, &id).await {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    // By its id: the address may name it by its slug, which a rename does not change.
    let tenant = page.tenant.id.clone();
    let outcome = match page.quota.body_of(&form) {
        Ok(body) => set_tenant_quota(&state, &caller, &meta, &tenant, body).await,
        Err(error) => Err(error),
    };
    let reread = tenant_page(&state, &caller, &session, &id);
    quota_answer(outcome, form, page, reread, |page| &mut page.quota).await
}

/// Delete: the first post asks, the second (with `confirm=yes`) deletes, as `DELETE
/// /v1/tenants/{id}` does; a tenant with children is refused with the reason.
pub(super) async fn delete_tenant(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, session }: SignedIn,
    Path(id): Path<String>,
    Posted(form): Posted<ConfirmForm>,
) -> Response {
    let mut page = match tenant_page(&state, &caller, &session, &id).await {
        Ok(page) => page,
        Err(refused) => return refused,
    };
    if !page.may.write {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you delete sub-customers (it needs tenants:write).",
        );
    }
    if form.confirm != "yes" {
        page.confirm_delete = true;
        return html(render(&page));
    }
    match crate::routes::tenants::delete_tenant(&state, &caller, &meta, &id).await {
        Ok(()) => Redirect::to("/console/tenants").into_response(),
        Err(error) => {
            page.message = Some(problem_text(&error));
            (error.code.status(), html(render(&page))).into_response()
        }
    }
}

/// Act as: checked now the way every page will check it (the gate, with `as-tenant`), so a
/// tenant that is not below, or a role without `tenants:impersonate`, is refused here with the
/// API's 404 or 403, and nothing is remembered.
pub(super) async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientIp>>,
    SignedIn { caller, .. }: SignedIn,
    Path(id): Path<String>,
    _: Posted<Empty>,
) -> Response {
    if caller.require_all(&["tenants:impersonate"]).is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you act for sub-customers (it needs tenants:impersonate).",
        );
    }
    // Acting is relative to the person's own tenant, as `as-tenant` is to the credential's.
    let home = &caller.verified().tenant().id;
    let mut asking = headers.clone();
    asking.remove(header::COOKIE);
    let Ok(value) = axum::http::HeaderValue::from_str(&id) else {
        return not_found();
    };
    asking.insert(AS_TENANT, value);
    if let Some(session) = super::session_secret(&headers)
        && let Ok(cookie) =
            axum::http::HeaderValue::from_str(&format!("{}={session}", crate::auth::SESSION_COOKIE))
    {
        asking.insert(header::COOKIE, cookie);
    }
    let client = client.map(|axum::Extension(ClientIp(ip))| ip);
    let acting = match authenticate(&state, &asking, client).await {
        Ok(acting) => acting,
        Err(_) => return not_found(),
    };
    let Some(target) = acting.acting_as() else {
        // `as-tenant` naming the person's own tenant: nothing to act for.
        return Redirect::to("/console/tenants").into_response();
    };
    if &target.id == home {
        return Redirect::to("/console/tenants").into_response();
    }
    let mut response = Redirect::to("/console/tokens").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, acting_cookie(Some(target.id.as_str())));
    response
}

/// Back to the person's own tenant.
pub(super) async fn stop_acting(_: SignedIn, _: Posted<Empty>) -> Response {
    let mut response = Redirect::to("/console/tenants").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, acting_cookie(None));
    response
}
