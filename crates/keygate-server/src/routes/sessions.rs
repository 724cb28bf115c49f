//! Signing in and out (API.md §2) over HTTP: the session's secret travels in the
//! `keygate_session` cookie (HttpOnly, SameSite=Strict). The rules (throttle, password check,
//! standing, allowlist, the session and its events) are [`keygate_core::signin`]'s.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_core::Timestamp;
use keygate_core::signin::SignIn;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Authenticated, SESSION_COOKIE};
use crate::json::{Json, NoBody};
use crate::problem::ApiError;
use crate::request::Meta;
use crate::request::{ClientIp, over_tls};
use crate::routes::users::UserView;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "owner@example.com", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    #[schema(example = "ada@example.com")]
    pub email: String,
    pub password: String,
    /// The slug of the tenant to sign in to, needed only when the address has accounts in
    /// several (answered 409 `organization-required`).
    #[schema(example = "acme")]
    pub organization: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: UserView,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// Sign in with email and password
///
/// Sign in with email and password; the session comes back in the `keygate_session` cookie.
#[utoipa::path(post, path = "/v1/auth/login", tag = "sessions", operation_id = "login",
    request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie: keygate_session=…`", body = LoginResponse),
        (status = 401, description = "Wrong email or password (one answer for both)"),
        (status = 409, description = "organization-required: the email and password match accounts in several tenants; repeat with `organization`"),
        (status = 403, description = "ip-not-allowed: the account's allowlist does not cover this address"),
        (status = 429, description = "Too many failures for this email or address; see Retry-After"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    client: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Json(request): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let sign_in = SignIn {
        email: request.email,
        password: request.password,
        organization: request.organization,
        client: client.map(|axum::Extension(ClientIp(ip))| ip),
    };
    let sessions = state.sessions();
    let lifetime = sessions.lifetime;
    let signed_in = sessions
        .sign_in(sign_in, &meta, state.clock().now())
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        signed_in.secret.expose(),
        lifetime.as_secs(),
        if over_tls(&headers) { "; Secure" } else { "" }
    );
    let mut response = axum::Json(LoginResponse {
        user: signed_in.user.into(),
        expires_at: signed_in.expires_at,
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(response)
}

/// Sign out
///
/// Sign out: ends the session this request carries and clears its cookie.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "sessions", operation_id = "logout",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "The credential is not a session, or a body with fields (this takes none)"),
        (status = 415, description = "A body that is not JSON"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
    _: NoBody,
) -> Result<Response, ApiError> {
    state
        .sessions()
        .sign_out(&caller, &meta, state.clock().now())
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("keygate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}
