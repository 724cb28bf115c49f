//! Signing in and out of the console.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_core::signin::{SignIn, SignInError};
use serde::Deserialize;

use super::filters;
use super::frame::{Empty, Posted, SignedIn, capitalised, render, signed_in};
use super::{acting_cookie, html};
use crate::auth::SESSION_COOKIE;
use crate::request::over_tls;
use crate::request::{ClientIp, Meta};
use crate::state::AppState;

pub(super) async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientIp>>,
) -> Response {
    match signed_in(&state, &headers, client.map(|e| e.0)).await {
        Ok(_) => Redirect::to("/console/tokens").into_response(),
        Err(to_sign_in) => to_sign_in,
    }
}

#[derive(Template, Default)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    email: String,
    organization: String,
    /// Whether to ask for the organization: the address has accounts in several.
    ask_organization: bool,
    message: Option<String>,
}

pub(super) async fn sign_in_form() -> Response {
    html(render(&SignInPage::default()))
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    email: String,
    password: String,
    #[serde(default)]
    organization: String,
}

pub(super) async fn sign_in(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientIp>>,
    Form(form): Form<SignInForm>,
) -> Response {
    let organization = form.organization.trim().to_owned();
    let request = SignIn {
        email: form.email.clone(),
        password: form.password,
        organization: (!organization.is_empty()).then(|| organization.clone()),
        client: client.map(|axum::Extension(ClientIp(ip))| ip),
    };
    let sessions = state.sessions();
    let lifetime = sessions.lifetime;
    match sessions.sign_in(request, &meta, state.clock().now()).await {
        Ok(signed_in) => {
            let secure = over_tls(&headers);
            let cookie = format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
                signed_in.secret.expose(),
                lifetime.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to("/console/tokens").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            // A new session starts in the person's own tenant.
            response
                .headers_mut()
                .append(header::SET_COOKIE, acting_cookie(None));
            response
        }
        Err(error) => {
            let ask_organization =
                matches!(error, SignInError::OrganizationRequired) || !organization.is_empty();
            let message = match &error {
                SignInError::Throttled {
                    retry_after_seconds,
                    ..
                } => format!(
                    "Too many failed sign-ins. Wait {} before trying again.",
                    wait_text(*retry_after_seconds)
                ),
                SignInError::WrongCredentials => "Wrong email or password.".to_owned(),
                SignInError::OrganizationRequired => "This email and password belong to \
                     accounts in several organizations: enter the one to sign in to."
                    .to_owned(),
                SignInError::Store(_) | SignInError::Random(_) => {
                    tracing::error!(error = %error, "console sign-in failed");
                    "keygate could not sign you in just now; try again in a moment.".to_owned()
                }
                other => format!("{}.", capitalised(&other.to_string())),
            };
            let page = SignInPage {
                email: form.email,
                organization,
                ask_organization,
                message: Some(message),
            };
            html(render(&page))
        }
    }
}

fn wait_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} seconds"),
        60..=119 => "a minute".to_owned(),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

pub(super) async fn sign_out(
    State(state): State<AppState>,
    Meta(meta): Meta,
    SignedIn { caller, .. }: SignedIn,
    _: Posted<Empty>,
) -> Response {
    if let Err(error) = state
        .sessions()
        .sign_out(&caller, &meta, state.clock().now())
        .await
    {
        tracing::error!(error = %error, "console sign-out failed");
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("keygate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    // Whoever signs in next starts in their own tenant.
    headers.append(header::SET_COOKIE, acting_cookie(None));
    response
}
