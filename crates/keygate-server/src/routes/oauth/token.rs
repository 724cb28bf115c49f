//! `POST /v1/oauth/token` (RFC 6749 §4.4 and §6): the client credentials grant, and the exchange
//! of a refresh token for a new pair.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keygate_core::credential::{CredentialHash, CredentialKind};
use keygate_core::model::{AuditEvent, Outcome};
use keygate_core::oauth::{
    self, AuthenticatedClient, ErrorCode, OauthError, RefreshToken, RefreshVerdict, Rotation,
    client_target,
};
use keygate_core::permission::PermissionSet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Failure, OauthErrorBody, Params, authenticate_client, no_store, refuse};
use crate::middleware::ClientIp;
use crate::problem::Problem;
use crate::request::Meta;
use crate::state::AppState;

/// A token request, form-encoded. The client authenticates with HTTP Basic
/// (`client_id:client_secret`) or with `client_id` and `client_secret` here, not both.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials` or `refresh_token`.
    #[schema(example = "client_credentials")]
    pub grant_type: String,
    /// Space-separated permissions, a subset of the client's (or, on refresh, of the grant's).
    #[schema(example = "zones:read tokens:read")]
    pub scope: Option<String>,
    /// With `refresh_token`: the refresh token to exchange.
    pub refresh_token: Option<String>,
    /// RFC 8707: the resource server(s) the access token is for (its `aud`), each one of
    /// config `oauth.audience`; repeat the parameter for several. Without it, the token is for
    /// the first configured audience (the issuer, unless configured). On refresh it is asked
    /// again, not inherited from the grant. Any other value is `invalid_target`.
    #[schema(example = json!(["https://api.example.com"]))]
    pub resource: Option<Vec<String>>,
    #[schema(example = "cli_0MqX1z8a9bCdEfGhIjKlMn")]
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT signed by keygate (`kid` in its header; keys at `/.well-known/jwks.json`).
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// Good for one exchange; `kg_refresh_live_…`.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    #[schema(example = 2_592_000)]
    pub refresh_token_expires_in: u64,
    /// The permissions the access token carries, space-separated.
    #[schema(example = "tokens:read zones:read")]
    pub scope: String,
}

/// Issue OAuth tokens (RFC 6749)
///
/// Issue tokens: `grant_type=client_credentials` for a new grant, `grant_type=refresh_token` to
/// exchange a refresh token (each is good for one exchange; presenting a spent one revokes every
/// token of its grant). `resource` (RFC 8707, repeatable) picks the access token's audience among
/// the configured ones. Refusals are RFC 6749 §5.2 errors, not problems; a rate limit, an
/// oversized body and an unreachable store are problems, as everywhere.
#[utoipa::path(post, path = "/v1/oauth/token", tag = "oauth", operation_id = "oauthToken",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    security(()),
    params(("Realm" = Option<String>, Header, description = "Must be the slug of the client's tenant, if sent")),
    responses(
        (status = 200, description = "Issued; never cached", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, unauthorized_client, unsupported_grant_type, invalid_scope or invalid_target (a resource keygate does not issue for)", body = OauthErrorBody),
        (status = 401, description = "invalid_client", body = OauthErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"keygate\"`"))),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate-limited: the client is over its rate limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn token(
    State(state): State<AppState>,
    Meta(meta): Meta,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let params = Params::parse(&headers, &body)?;
    let ip = ip.map(|axum::Extension(ip)| ip);
    let client = authenticate_client(&state, &headers, &params, ip, &meta).await?;
    let granted = match params.require("grant_type")? {
        "client_credentials" => client_credentials_grant(&state, &client, &params, &meta).await,
        "refresh_token" => refresh_grant(&state, &client, &params, &meta).await,
        other => Err(OauthError::new(
            ErrorCode::UnsupportedGrantType,
            format!(
                "`{}` is not a grant keygate supports: use client_credentials or refresh_token",
                other.chars().take(64).collect::<String>()
            ),
        )
        .into()),
    };
    match granted {
        Ok(response) => Ok((no_store(), axum::Json(response)).into_response()),
        Err(Failure::Oauth(error)) => Err(refuse(&state, &client, error, &meta).await),
        Err(other) => Err(other),
    }
}

async fn client_credentials_grant(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
    meta: &keygate_core::access::RequestMeta,
) -> Result<TokenResponse, Failure> {
    let scope = oauth::grant_scope(&client.verified().permissions, params.get("scope"))?;
    let (response, issued) = issue(state, client, &scope, params, None).await?;
    let event = granted(state, client, meta)?;
    state
        .store()
        .issue_refresh_token(client, &issued, &event)
        .await?;
    Ok(response)
}

/// The event of a grant: a refresh token stored (and, on refresh, one spent).
fn granted(
    state: &AppState,
    client: &AuthenticatedClient,
    meta: &keygate_core::access::RequestMeta,
) -> Result<AuditEvent, Failure> {
    Ok(client.event(
        "oauth.token",
        Outcome::Success,
        200,
        Some(client_target(client.id())),
        state.clock().now(),
        meta,
    )?)
}

async fn refresh_grant(
    state: &AppState,
    client: &AuthenticatedClient,
    params: &Params,
    meta: &keygate_core::access::RequestMeta,
) -> Result<TokenResponse, Failure> {
    let text = params.require("refresh_token")?;
    let unknown = || OauthError::invalid_grant(oauth::REFRESH_NOT_KNOWN);
    if state.verifier().format().parse(text) != Ok(CredentialKind::Refresh) {
        return Err(unknown().into());
    }
    let presented = state
        .store()
        .find_refresh_token(client, &CredentialHash::of(text))
        .await?
        .ok_or_else(unknown)?;
    let now = state.clock().now();
    let reused = || {
        OauthError::invalid_grant(
            "the refresh token was already used: every token of its grant is now revoked",
        )
    };
    let denied = client.event(
        "oauth.token",
        Outcome::Denied,
        400,
        Some(client_target(client.id())),
        now,
        meta,
    )?;
    match oauth::judge_refresh(&presented, client, now) {
        RefreshVerdict::Refuse(why) => return Err(OauthError::invalid_grant(why).into()),
        RefreshVerdict::RevokeFamily(family) => {
            // Recorded with the revocation, in its transaction: not refused a second time.
            state
                .store()
                .revoke_refresh_family(client, &family, now, &denied)
                .await?;
            return Err(Failure::Recorded(reused()));
        }
        RefreshVerdict::Redeem => {}
    }
    let scope = oauth::refresh_scope(&presented, client, state.catalog(), params.get("scope"))?;
    let (response, replacement) = issue(state, client, &scope, params, Some(&presented)).await?;
    match state
        .store()
        .rotate_refresh_token(
            client,
            &presented.credential.id,
            &replacement,
            &denied,
            &granted(state, client, meta)?,
        )
        .await?
    {
        Rotation::Rotated => Ok(response),
        Rotation::Reused => Err(Failure::Recorded(reused())),
    }
}

/// Signs an access token for the audience the request's `resource`s pick, and plans the refresh
/// token to store with it. A refresh asks for its audience again: any client may have a token for
/// any configured audience by a new grant, so tying it to the first grant would protect nothing.
async fn issue(
    state: &AppState,
    client: &AuthenticatedClient,
    scope: &PermissionSet,
    params: &Params,
    previous: Option<&RefreshToken>,
) -> Result<(TokenResponse, RefreshToken), Failure> {
    let now = state.clock().now();
    let keys = state.keys();
    let audience = oauth::grant_audience(&keys.policy().audiences, &params.resources())?;
    keys.prepare(&**state.store(), now).await?;
    let lifetimes = state.oauth_lifetimes();
    let issued = oauth::issue(
        client,
        scope,
        previous,
        state.verifier().format(),
        oauth::Parties {
            issuer: &keys.policy().issuer,
            audience,
        },
        lifetimes,
        now,
    )?;
    let access_token = keys.sign(&issued.claims)?;
    Ok((
        TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: lifetimes.access.as_secs(),
            refresh_token: issued.refresh_secret.into_exposed(),
            refresh_token_expires_in: lifetimes.refresh.as_secs(),
            scope: issued.claims.scope,
        },
        issued.refresh,
    ))
}
