//! `POST /v1/oauth/revoke` (RFC 7009) and `POST /v1/oauth/introspect` (RFC 7662).
//!
//! A client revokes its own tokens: an access token until it expires, a refresh token with every
//! token of its grant. Anything else, unknown, expired or another client's, is answered 200 all
//! the same, so the endpoint tells nobody which tokens exist. Introspection answers
//! `{"active": false}` for anything that is not alive and visible to the caller: a client sees its
//! own tokens, a credential with `credentials:verify` those of its tenant and the tenants below.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::access::{Grant, perm};
use keygate_core::credential::{CredentialHash, CredentialKind};
use keygate_core::grants::{RefreshAsker, RefreshView};
use keygate_core::id::CredentialId;
use keygate_core::jwt::{self, AccessClaims, JwtRefusal};
use keygate_core::model::{Outcome, Target};
use keygate_core::oauth::{AuthenticatedClient, RefreshToken};
use keygate_core::verified::Verified;
use keygate_core::verify::Refusal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ClientCredentials, Failure, OauthErrorBody, Params, authenticate_client, client_credentials,
    no_store,
};
use crate::problem::Problem;
use crate::request::ClientIp;
use crate::request::Meta;
use crate::state::AppState;

/// A revocation or introspection request, form-encoded.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenParam {
    /// An access token (JWT) or a refresh token.
    pub token: String,
    /// `access_token` or `refresh_token`; a hint only, the token is recognised by its shape.
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

fn client_ip(parts: &Parts) -> Option<ClientIp> {
    parts.extensions.get::<ClientIp>().copied()
}

/// Revoke an OAuth token (RFC 7009)
///
/// Revoke one of the client's tokens. The client authenticates as at the token endpoint.
#[utoipa::path(post, path = "/v1/oauth/revoke", tag = "oauth", operation_id = "oauthRevoke",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    security(()),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke: the answer is the same"),
        (status = 400, description = "invalid_request, or unauthorized_client (an address outside the tenant's allowlist)", body = OauthErrorBody),
        (status = 401, description = "invalid_client", body = OauthErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"keygate\"`"))),
        (status = 429, description = "rate-limited: the client is over its rate limit", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Meta(meta): Meta,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let params = Params::parse(&parts.headers, &body)?;
    let client =
        authenticate_client(&state, &parts.headers, &params, client_ip(&parts), &meta).await?;
    let token = params.require("token")?;
    let now = state.clock().now();
    let event = |kind: &'static str, id: &CredentialId| {
        client.event(
            "oauth_token.revoke",
            Outcome::Success,
            200,
            Some(Target {
                kind,
                id: id.to_string(),
            }),
            now,
            &meta,
        )
    };
    if jwt::looks_like_jwt(token) {
        if let Some((claims, jti)) = own_access_token(&state, &client, token)? {
            let event = event("access_token", &jti);
            state
                .store()
                .revoke_access_token(&client, &jti, claims_expiry(&claims), &event?)
                .await?;
        }
    } else if let Some(refresh) = own_refresh_token(&state, &client, token).await? {
        let event = event("refresh_token", &refresh.credential.id)?;
        state
            .store()
            .revoke_refresh_family(&client, &refresh.family_id, now, &event)
            .await?;
    }
    Ok((StatusCode::OK, no_store()).into_response())
}

fn claims_expiry(claims: &AccessClaims) -> keygate_core::Timestamp {
    keygate_core::Timestamp::from_unix(claims.exp)
}

/// The claims and id of an access token this client holds, signed by keygate and not expired.
fn own_access_token(
    state: &AppState,
    client: &AuthenticatedClient,
    token: &str,
) -> Result<Option<(AccessClaims, CredentialId)>, Failure> {
    let claims = match state.keys().decode(token, state.clock().now()) {
        Ok(claims) => claims,
        // Expired already, forged, or not keygate's: nothing to revoke.
        Err(JwtRefusal::Expired | JwtRefusal::Malformed | JwtRefusal::BadSignature)
        | Err(JwtRefusal::UnknownKey | JwtRefusal::WrongIssuer | JwtRefusal::WrongAudience) => {
            return Ok(None);
        }
    };
    if claims.client_id != client.id().as_str() {
        return Ok(None);
    }
    Ok(CredentialId::parse_any(&claims.jti).map(|jti| (claims, jti)))
}

/// The refresh token with this text, if it is this client's.
async fn own_refresh_token(
    state: &AppState,
    client: &AuthenticatedClient,
    token: &str,
) -> Result<Option<RefreshToken>, Failure> {
    if state.verifier().format().parse(token) != Ok(CredentialKind::Refresh) {
        return Ok(None);
    }
    Ok(state
        .store()
        .find_refresh_token(client, &CredentialHash::of(token))
        .await?)
}

/// What introspection says about a token (RFC 7662 §2.2). Everything but `active` is left out
/// when the token is not active.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    /// The permissions the token carries now, space-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// An access token's audiences (its `aud`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The token's tenant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Who asks: a client about its own tokens, or a credential holding `credentials:verify`.
enum Introspector {
    Client(AuthenticatedClient),
    Verifier(Grant<perm::CredentialsVerify>),
}

impl Introspector {
    fn sees(&self, verified: &Verified) -> bool {
        match self {
            Introspector::Client(client) => verified.owner_id() == client.id(),
            Introspector::Verifier(grant) => verified.is_within(grant.tenant_id()),
        }
    }
}

/// Whether the request authenticates as an OAuth client (a client secret in the body, or in HTTP
/// Basic) rather than with a keygate credential.
fn presents_client_secret(state: &AppState, headers: &HeaderMap, params: &Params) -> bool {
    params.get("client_secret").is_some()
        || client_credentials(headers, params).is_ok_and(|found| {
            found.is_some_and(|ClientCredentials { secret, .. }| {
                state.verifier().format().parse(&secret) == Ok(CredentialKind::OauthSecret)
            })
        })
}

/// Introspect an OAuth token (RFC 7662)
///
/// Whether a token is active, and what it is. Needs client authentication (the client's own
/// tokens) or a credential with `credentials:verify` (its tenant's tokens and below). A client is
/// refused with RFC 6749 errors, a keygate credential with problems, as everywhere else: the
/// 400 and 401 document both bodies.
#[utoipa::path(post, path = "/v1/oauth/introspect", tag = "oauth", operation_id = "oauthIntrospect",
    request_body(content = TokenParam, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`{\"active\": false}` for anything unknown, expired, revoked or not the caller's to see", body = Introspection),
        (status = 400, description = "invalid_request or unauthorized_client (RFC 6749 errors) for a client; \
            invalid-request or ambiguous-credentials (problems) for a keygate credential", body = OauthErrorBody),
        (status = 401, description = "invalid_client (an RFC 6749 error) for a client; unauthenticated (a problem) \
            for a keygate credential", body = OauthErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"keygate\"` for a client, \
                `Bearer realm=\"keygate\"` for a keygate credential"))),
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    Meta(meta): Meta,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let params = Params::parse(&parts.headers, &body)?;
    let asker = if presents_client_secret(&state, &parts.headers, &params) {
        Introspector::Client(
            authenticate_client(&state, &parts.headers, &params, client_ip(&parts), &meta).await?,
        )
    } else {
        let client = parts.extensions.get::<ClientIp>().map(|ClientIp(ip)| *ip);
        let caller = crate::auth::authenticate(&state, &parts.headers, client).await?;
        Introspector::Verifier(caller.require::<perm::CredentialsVerify>()?)
    };
    let token = params.require("token")?;
    let answer = if jwt::looks_like_jwt(token) {
        access_token(&state, &asker, token).await?
    } else {
        refresh_token(&state, &asker, token).await?
    };
    Ok((no_store(), axum::Json(answer.unwrap_or_default())).into_response())
}

async fn access_token(
    state: &AppState,
    asker: &Introspector,
    token: &str,
) -> Result<Option<Introspection>, Failure> {
    let verified = match state.verifier().verify(token).await {
        Ok(verified) => verified,
        Err(Refusal::Store(error)) => return Err(error.into()),
        Err(_) => return Ok(None),
    };
    if !asker.sees(&verified) {
        return Ok(None);
    }
    let Ok(claims) = state.keys().decode(token, state.clock().now()) else {
        return Ok(None);
    };
    Ok(Some(Introspection {
        active: true,
        scope: Some(crate::views::permission_names(&verified.permissions).join(" ")),
        client_id: Some(claims.client_id),
        token_type: Some("Bearer"),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        sub: Some(claims.sub),
        iss: Some(claims.iss),
        aud: Some(claims.aud.members().to_vec()),
        jti: Some(claims.jti),
        tenant: Some(claims.tenant),
    }))
}

async fn refresh_token(
    state: &AppState,
    asker: &Introspector,
    token: &str,
) -> Result<Option<Introspection>, Failure> {
    let now = state.clock().now();
    let asking = match asker {
        Introspector::Client(client) => RefreshAsker::Client(client),
        Introspector::Verifier(grant) => RefreshAsker::Within(grant),
    };
    let Some(RefreshView {
        token: refresh,
        client,
        scope,
    }) = state
        .grants()
        .live_refresh_token(asking, token, now)
        .await?
    else {
        return Ok(None);
    };
    if !asker.sees(&client) {
        return Ok(None);
    }
    Ok(Some(Introspection {
        active: true,
        scope: Some(crate::views::permission_names(&scope).join(" ")),
        client_id: Some(refresh.client_id.to_string()),
        token_type: Some("refresh_token"),
        exp: refresh.credential.expires_at.map(|t| t.unix()),
        iat: Some(refresh.credential.created_at.unix()),
        sub: Some(refresh.client_id.to_string()),
        iss: Some(state.keys().policy().issuer.clone()),
        aud: None,
        jti: None,
        tenant: Some(refresh.credential.tenant_id.to_string()),
    }))
}
