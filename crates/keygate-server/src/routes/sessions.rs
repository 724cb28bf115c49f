//! Signing in and out (API.md §2). A session is a credential of kind `session`, carried in the
//! `keygate_session` cookie (HttpOnly, SameSite=Strict), and verified like any other.
//!
//! A wrong email and a wrong password are one and the same 401, and take the same time: an unknown
//! email is checked against a dummy hash. Repeated failures are slowed down with 429.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_core::Timestamp;
use keygate_core::credential::CredentialKind;
use keygate_core::id::{CredentialId, EventId};
use keygate_core::model::{Actor, AuditEvent, Credential, Outcome, Target, UserStatus};
use keygate_core::password;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Authenticated, SESSION_COOKIE};
use crate::json::Json;
use crate::middleware::ClientIp;
use crate::problem::{ApiError, ProblemCode};
use crate::request::Meta;
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

/// How many accounts of one address a sign-in without `organization` tries, oldest first: each
/// costs an argon2 check, so a tenant that makes many accounts with someone's address cannot make
/// that person's sign-in expensive. Past them, the person names the organization.
const ACCOUNTS_TRIED: u32 = 8;

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub user: UserView,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

fn wrong_credentials() -> ApiError {
    ApiError::unauthenticated("wrong email or password")
}

fn organization_required() -> ApiError {
    ApiError::new(
        ProblemCode::OrganizationRequired,
        "this email and password belong to accounts in several organizations: \
         repeat the sign-in with `organization`, the slug of the one to sign in to",
    )
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
    Json(request): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let client_ip = client.map(|axum::Extension(ClientIp(ip))| ip);
    let now = state.clock().now();
    let address = meta.ip.as_deref();
    // Reserved before argon2 runs: attempts sent at once must not all be checked.
    if let Err(wait) = state.login_throttle().reserve(&request.email, address, now) {
        return Err(ApiError::new(
            ProblemCode::RateLimited,
            "too many failed sign-ins; wait before trying again",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(wait)));
    }

    let organization = request
        .organization
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_lowercase);
    let logins = state
        .store()
        .find_logins(&request.email, organization.as_deref(), ACCOUNTS_TRIED + 1)
        .await?;
    let more_than_tried = logins.len() > ACCOUNTS_TRIED as usize;
    // argon2 takes tens of milliseconds of CPU: off the async workers. An unknown address is
    // checked against a dummy hash, so it takes as long as a wrong password.
    let candidate = request.password.clone();
    let stored: Vec<_> = logins
        .iter()
        .take(ACCOUNTS_TRIED as usize)
        .map(|l| l.password_hash.clone())
        .collect();
    let matches = tokio::task::spawn_blocking(move || {
        if stored.is_empty() {
            password::verify_against_dummy(&candidate);
            return Vec::new();
        }
        stored
            .iter()
            .map(|hash| password::verify(&candidate, hash))
            .collect::<Vec<bool>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("password check panicked: {e}")))?;

    // `zip` stops at the accounts tried.
    let mut matched: Vec<_> = logins
        .into_iter()
        .zip(matches)
        .filter_map(|(login, matches)| matches.then_some(login))
        .collect();
    let login = match (matched.len(), more_than_tried) {
        (0, _) => return Err(wrong_credentials()),
        (1, false) => matched.swap_remove(0),
        // The password is right for several accounts, or for one of more than were tried: the
        // caller knows the password, so saying so tells them nothing new.
        _ => {
            state.login_throttle().succeeded(&request.email, address);
            return Err(organization_required());
        }
    };
    // The password was right, so saying why the account cannot sign in leaks nothing.
    if login.user.status != UserStatus::Active {
        return Err(ApiError::unauthenticated("this user is disabled"));
    }
    if !login.tenant_active {
        return Err(ApiError::unauthenticated("the account is suspended"));
    }
    if let (Some(list), Some(ip)) = (&login.tenant_allowlist, client_ip)
        && !list.covers(ip)
    {
        return Err(ApiError::new(
            ProblemCode::IpNotAllowed,
            format!("signing in from {ip} is not allowed for this account"),
        ));
    }
    state.login_throttle().succeeded(&request.email, address);

    let lifetime = Duration::from_secs(u64::from(state.config().session.lifetime_hours) * 3600);
    let expires_at = now.saturating_add(lifetime);
    let secret = state
        .verifier()
        .format()
        .generate(CredentialKind::Session)?;
    let session = Credential {
        id: CredentialId::generate_for(CredentialKind::Session, now)?,
        tenant_id: login.user.tenant_id.clone(),
        kind: CredentialKind::Session,
        hash: secret.hash(),
        hint: secret.hint(),
        name: "session".to_owned(),
        description: meta.user_agent.clone(),
        user_id: Some(login.user.id.clone()),
        created_by: Some(login.user.id.to_string()),
        role_id: None,
        permissions: None,
        allowed_ips: None,
        rate_limit: None,
        created_at: now,
        expires_at: Some(expires_at),
        revoked_at: None,
        last_used_at: None,
    };
    let event = AuditEvent {
        id: EventId::generate(now)?,
        time: now,
        tenant_id: login.user.tenant_id.clone(),
        acting_tenant_id: None,
        actor: Actor {
            kind: "user",
            id: login.user.id.to_string(),
        },
        token_id: Some(session.id.clone()),
        action: "session.create",
        target: Some(Target {
            kind: "session",
            id: session.id.to_string(),
        }),
        outcome: Outcome::Success,
        status: 200,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        request_id: meta.request_id.clone(),
    };
    state.store().create_session(&session, &event).await?;

    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        secret.expose(),
        lifetime.as_secs()
    );
    let mut response = axum::Json(LoginResponse {
        user: login.user.into(),
        expires_at,
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
        (status = 400, description = "The credential is not a session"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Meta(meta): Meta,
) -> Result<Response, ApiError> {
    let verified = caller.verified();
    if verified.credential.kind != CredentialKind::Session {
        return Err(ApiError::invalid(
            "only a session signs out; revoke tokens with DELETE /v1/tokens/{id}",
        ));
    }
    let now = state.clock().now();
    let event = AuditEvent {
        id: EventId::generate(now)?,
        time: now,
        tenant_id: verified.tenant.id.clone(),
        acting_tenant_id: None,
        actor: Actor {
            kind: "user",
            id: verified.principal.id.clone(),
        },
        token_id: Some(verified.credential.id.clone()),
        action: "session.delete",
        target: Some(Target {
            kind: "session",
            id: verified.credential.id.to_string(),
        }),
        outcome: Outcome::Success,
        status: 204,
        ip: meta.ip,
        user_agent: meta.user_agent,
        request_id: meta.request_id,
    };
    state
        .store()
        .end_session(&verified.credential.id, now, &event)
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("keygate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}
