//! What every console page shares: rendering, the frame around a signed-in page, the
//! extractors for a signed-in person and a posted form, and the page that shows a secret once.

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_core::Timestamp;
use keygate_core::access::Caller;
use keygate_core::credential::CredentialKind;
use serde::Deserialize;

use super::filters;
use super::{
    ACTING_COOKIE, acting_cookie, cookie, csrf_matches, csrf_token, refusal, session_secret,
};
use crate::auth::{AS_TENANT, authenticate};
use crate::problem::{ApiError, ProblemCode};
use crate::request::ClientIp;
use crate::request::over_tls;
use crate::state::AppState;
use keygate_core::store::Page;

/// Renders a template; a template that cannot render is a bug, shown as a plain refusal.
pub(super) fn render(template: &impl Template) -> String {
    template.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a console page did not render");
        "<!doctype html><title>keygate</title><p>This page could not be shown.</p>".to_owned()
    })
}

/// What every signed-in page shows around its content: who is signed in, in which tenant, the
/// navigation they may use, and the CSRF token its forms carry.
pub(super) struct Frame {
    pub name: String,
    pub email: String,
    pub tenant: String,
    pub csrf: String,
    /// The navigation entries the person may use: (path, label, current).
    pub nav: Vec<(&'static str, &'static str, bool)>,
    /// The explorer's section for this page.
    pub help: &'static str,
    /// The person's own tenant, and the sub-customer they act for, if they do.
    pub home: String,
    pub acting_for: Option<String>,
    /// Whether the sub-customer acted for is suspended.
    pub acting_suspended: bool,
    /// The one-time value of the page's creating form (see `sent_first`): new with every page.
    pub once: String,
}

impl Frame {
    pub(super) fn new(caller: &Caller, session: &str, current: &str, help: &'static str) -> Self {
        let verified = caller.verified();
        let may = |permission: &str| caller.require_all(&[permission]).is_ok();
        let nav = [
            ("/console/tokens", "API tokens", "tokens:read"),
            ("/console/users", "Users", "users:read"),
            ("/console/roles", "Roles", "roles:read"),
            ("/console/account/keys", "Account keys", "keys:read"),
            (
                "/console/account/ip-restriction",
                "IP restriction",
                "ip_restriction:read",
            ),
            (
                "/console/oauth/clients",
                "OAuth clients",
                "oauth_clients:read",
            ),
            ("/console/webhooks", "Webhooks", "webhooks:read"),
            ("/console/log", "Request log", "audit:read"),
            ("/console/usage", "Usage", "usage:read"),
            ("/console/tenants", "Sub-customers", "tenants:read"),
        ]
        .into_iter()
        .filter(|(_, _, permission)| may(permission))
        .map(|(path, label, _)| (path, label, path == current))
        .collect();
        Self {
            name: verified.principal().name.to_owned(),
            email: verified
                .principal()
                .email
                .map(str::to_owned)
                .unwrap_or_default(),
            tenant: caller
                .acting_as()
                .map_or(&verified.tenant().name, |t| &t.name)
                .clone(),
            csrf: csrf_token(session),
            nav,
            help,
            home: verified.tenant().name.clone(),
            acting_for: caller.acting_as().map(|t| t.name.clone()),
            acting_suspended: caller.acting_as().is_some_and(|t| t.suspended),
            once: one_time_value(),
        }
    }
}

/// 22 random base62 characters; empty if the system has no randomness to give, and the form
/// is then acted on as one without the value.
fn one_time_value() -> String {
    let mut value = String::with_capacity(22);
    match keygate_core::base62::push_random(&mut value, 22) {
        Ok(()) => value,
        Err(_) => String::new(),
    }
}

/// Whether a creating form (one carrying `frame.once`) is sent for the first time by this
/// session. Sent again (a reload of the page its post answered, which browsers send again, or
/// a second click), the answer is a page saying it was done, pointing to where what it made is:
/// nothing is made twice, and a secret shown once is not replaced by another. A form without
/// the value (not from a console page, yet with the session's CSRF token) is acted on.
pub(super) async fn sent_first(
    state: &AppState,
    caller: &Caller,
    once: &str,
    made: (String, &'static str),
) -> Result<(), Response> {
    if once.is_empty() {
        return Ok(());
    }
    if once.len() > 64 {
        return Err(csrf_refusal());
    }
    match state.store().note_form(caller.verified().id(), once).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let page = Refused {
                title: "Already done",
                message:
                    "This form was sent before, and keygate did what it asked then. It is not \
                          done twice: nothing new was made, and a secret shown then is not shown \
                          again."
                        .to_owned(),
                back: Some(made),
            };
            Err(super::refused(StatusCode::CONFLICT, page))
        }
        Err(error) => {
            tracing::error!(error = %error, "the console could not note a form");
            Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "keygate could not act on this form just now; try again in a moment.",
            ))
        }
    }
}

/// A form that carries nothing but its CSRF token and the page's one-time value.
#[derive(Debug, Default, Deserialize)]
pub(super) struct OnceForm {
    #[serde(default)]
    pub(super) once: String,
}

/// The signed-in person, or the way to the sign-in page.
pub(super) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<ClientIp>,
) -> Result<(Caller, String), Response> {
    let to_sign_in = || Redirect::to("/console/sign-in").into_response();
    let session = session_secret(headers).ok_or_else(to_sign_in)?.to_owned();
    let client = client.map(|ClientIp(ip)| ip);
    let caller = match cookie(headers, ACTING_COOKIE) {
        None => authenticate(state, headers, client).await,
        Some(tenant) => {
            // Acting for a sub-customer is `as-tenant` on every request: the gate checks the
            // permission and that the tenant is below, each time, as it does for the API.
            let mut headers = headers.clone();
            headers.remove(AS_TENANT);
            match HeaderValue::from_str(tenant) {
                Ok(value) => {
                    headers.insert(AS_TENANT, value);
                }
                Err(_) => return Err(no_such_sub_customer()),
            }
            let admitted = authenticate(state, &headers, client).await;
            match admitted {
                Err(error)
                    if matches!(error.code, ProblemCode::NotFound | ProblemCode::Forbidden) =>
                {
                    return Err(no_such_sub_customer());
                }
                admitted => admitted,
            }
        }
    }
    .map_err(|_| to_sign_in())?;
    if caller.verified().kind() != CredentialKind::Session {
        return Err(to_sign_in());
    }
    Ok((caller, session))
}

/// The answer to acting for a tenant that is not below the person's, or without the permission:
/// the same 404 the API gives, and the console back in the person's own tenant.
fn no_such_sub_customer() -> Response {
    cannot_act(
        StatusCode::NOT_FOUND,
        "There is no such sub-customer below your organization, or your role does not let you \
         act for it. The console is back in your own organization.",
    )
}

/// A refusal page that also ends acting for a sub-customer.
fn cannot_act(status: StatusCode, message: &str) -> Response {
    let mut response = refusal(status, message);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, acting_cookie(None));
    response
}

/// A request of a signed-in person: their caller and their session's secret (for the CSRF token
/// of the page's forms). Without a live session, the answer is the way to the sign-in page.
pub(super) struct SignedIn {
    pub(super) caller: Caller,
    pub(super) session: String,
}

impl axum::extract::FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        let client = parts.extensions.get::<ClientIp>().copied();
        let (caller, session) = signed_in(state, &parts.headers, client).await?;
        Ok(Self { caller, session })
    }
}

/// A state-changing form, read only once its CSRF token is the session's: a form from anywhere
/// else is refused before anything reads it. Fields a form does not know are ignored (a browser
/// sends what the page had), and a field it cannot read is left empty for the page to ask again.
pub(super) struct Posted<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned + Default> axum::extract::FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        #[derive(Default, Deserialize)]
        struct Token {
            #[serde(default)]
            csrf: String,
        }
        let headers = request.headers().clone();
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: Token = serde_html_form::from_bytes(&body).unwrap_or_default();
        if !csrf_matches(&headers, &token.csrf) {
            return Err(csrf_refusal());
        }
        Ok(Self(serde_html_form::from_bytes(&body).unwrap_or_default()))
    }
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Empty {}

#[derive(Clone, Template)]
#[template(path = "console/refused.html")]
pub(super) struct Refused {
    /// "Not found" for a page or object that is not there, "Not done" for a refused action.
    pub title: &'static str,
    pub message: String,
    /// A way to what the refused request was about, besides the console's start: (path, label).
    pub back: Option<(String, &'static str)>,
}

/// A refusal shown to a signed-in person: [`Refused`] inside the console's frame, so its
/// navigation is there to go on from (see `guard`).
#[derive(Template)]
#[template(path = "console/refused_framed.html")]
pub(super) struct RefusedFramed {
    pub frame: Frame,
    pub refused: Refused,
}

/// Where the person reaches keygate, for the example beside a new secret.
pub(super) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    let scheme = if over_tls(headers) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub(super) fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

pub(super) fn csrf_refusal() -> Response {
    refusal(
        axum::http::StatusCode::FORBIDDEN,
        "This form has expired or did not come from your console session, so keygate did not act \
         on it. Go back, reload the page and try again.",
    )
}

/// A time as a person reads it in a table: the day and the minute, in UTC.
pub(super) fn day(at: Timestamp) -> String {
    let text = at.to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

#[derive(Template)]
#[template(path = "console/secret.html")]
pub(super) struct SecretPage {
    pub(super) frame: Frame,
    pub(super) heading: String,
    /// What the secret is, in "Copy the … now".
    pub(super) what: &'static str,
    pub(super) back: &'static str,
    pub(super) back_label: &'static str,
    pub(super) secret: String,
    pub(super) origin: String,
    /// After a roll: until when the replaced secret still works.
    pub(super) previous_until: Option<String>,
    pub(super) warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    pub(super) confirm: String,
}

/// A refusal the API answers with a problem, as a sentence on the page.
pub(super) fn problem_text(error: &ApiError) -> String {
    match &error.detail {
        Some(detail) => format!("{}.", capitalised(detail.trim_end_matches('.'))),
        None if !error.missing_permissions.is_empty() => format!(
            "Your role does not allow this (it needs {}).",
            error.missing_permissions.join(", ")
        ),
        None => "keygate could not do this just now; try again in a moment.".to_owned(),
    }
}

/// A page of a console table: 50 rows, after the cursor of an "Older …" link, read leniently (a
/// link edited by hand shows the first page rather than an error).
pub(super) fn table_page(cursor: Option<String>) -> Page {
    Page {
        limit: 50,
        cursor: cursor.filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }),
        ids: Vec::new(),
    }
}
