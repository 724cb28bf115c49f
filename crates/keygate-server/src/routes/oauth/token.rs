//! `POST /v1/oauth/token` (RFC 6749 §4.4 and §6) over HTTP: the client credentials grant, and the
//! exchange of a refresh token for a new pair, as [`keygate_core::grants`] decides them.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keygate_core::grants::{GrantError, GrantRequest, Granted};
use keygate_core::oauth::{ErrorCode, OauthError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Failure, OauthErrorBody, Params, authenticate_client, no_store, refuse};
use crate::problem::Problem;
use crate::request::ClientIp;
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
    let resources = params.resources();
    let request = GrantRequest {
        scope: params.get("scope"),
        resources: &resources,
    };
    let grants = state.grants();
    let now = state.clock().now();
    let granted = match params.require("grant_type")? {
        "client_credentials" => {
            grants
                .client_credentials(&client, &request, &meta, now)
                .await
        }
        "refresh_token" => match params.require("refresh_token") {
            Ok(presented) => {
                grants
                    .refresh(&client, presented, &request, &meta, now)
                    .await
            }
            Err(missing) => Err(GrantError::Refused(missing)),
        },
        other => Err(GrantError::Refused(OauthError::new(
            ErrorCode::UnsupportedGrantType,
            format!(
                "`{}` is not a grant keygate supports: use client_credentials or refresh_token",
                other.chars().take(64).collect::<String>()
            ),
        ))),
    };
    match granted {
        Ok(granted) => Ok((no_store(), axum::Json(TokenResponse::from(granted))).into_response()),
        Err(GrantError::Refused(error)) => Err(refuse(&state, &client, error, &meta).await),
        Err(GrantError::Recorded(error)) => Err(Failure::Recorded(error)),
        Err(GrantError::Store(e)) => Err(e.into()),
        Err(GrantError::Key(e)) => Err(e.into()),
        Err(GrantError::Random(e)) => Err(e.into()),
    }
}

impl From<Granted> for TokenResponse {
    fn from(granted: Granted) -> Self {
        Self {
            access_token: granted.access_token,
            token_type: "Bearer",
            expires_in: granted.lifetimes.access.as_secs(),
            refresh_token: granted.refresh_token,
            refresh_token_expires_in: granted.lifetimes.refresh.as_secs(),
            scope: granted.scope,
        }
    }
}
