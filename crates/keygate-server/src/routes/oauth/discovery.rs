//! Discovery: the public keys access tokens are signed with (`/.well-known/jwks.json`, RFC 7517)
//! and the authorization server's metadata (`/.well-known/oauth-authorization-server`, RFC 8414).
//! Both are public, and read from memory: the key set is decoded once per change, not per request.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// One public key (RFC 8037, `OKP` / `Ed25519`).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkView {
    #[schema(example = "OKP")]
    pub kty: &'static str,
    #[schema(example = "Ed25519")]
    pub crv: &'static str,
    /// The public key, base64url.
    pub x: String,
    /// Its RFC 7638 thumbprint, as in the tokens' `kid` header.
    pub kid: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub usage: &'static str,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    /// The signing key, then replaced keys whose tokens may not have expired yet.
    pub keys: Vec<JwkView>,
}

/// Get the keys that sign access tokens (JWKS)
///
/// The keys to check access tokens with. Cache for a minute at most: a rotation adds a key.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth", operation_id = "jwks",
    security(()),
    responses(
        (status = 200, body = JwkSet),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let now = state.clock().now();
    state.keys().refresh_if_stale(&**state.store(), now).await?;
    let keys = state
        .keys()
        .published(now)
        .into_iter()
        .map(|k| JwkView {
            kty: k.kty,
            crv: k.crv,
            x: k.x,
            kid: k.kid,
            usage: k.usage,
            alg: k.alg,
        })
        .collect();
    Ok((
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(JwkSet { keys }),
    ))
}

/// RFC 8414 metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    #[schema(example = "https://auth.example.com")]
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    #[schema(example = json!(["client_credentials", "refresh_token"]))]
    pub grant_types_supported: Vec<&'static str>,
    /// None: keygate has no authorization endpoint.
    pub response_types_supported: Vec<&'static str>,
    #[schema(example = json!(["client_secret_basic", "client_secret_post"]))]
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    /// Every permission of the catalog: a scope is a space-separated list of them.
    pub scopes_supported: Vec<String>,
    pub service_documentation: String,
}

/// Get the authorization server's metadata (RFC 8414)
///
/// The authorization server's metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    operation_id = "oauthMetadata", security(()),
    responses((status = 200, body = ServerMetadata)))]
pub async fn metadata(State(state): State<AppState>) -> axum::Json<ServerMetadata> {
    let issuer = state.keys().policy().issuer.clone();
    let client_auth = vec!["client_secret_basic", "client_secret_post"];
    axum::Json(ServerMetadata {
        token_endpoint: format!("{issuer}/v1/oauth/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        revocation_endpoint: format!("{issuer}/v1/oauth/revoke"),
        introspection_endpoint: format!("{issuer}/v1/oauth/introspect"),
        grant_types_supported: vec!["client_credentials", "refresh_token"],
        response_types_supported: Vec::new(),
        revocation_endpoint_auth_methods_supported: client_auth.clone(),
        introspection_endpoint_auth_methods_supported: vec![
            "client_secret_basic",
            "client_secret_post",
            "bearer",
        ],
        token_endpoint_auth_methods_supported: client_auth,
        scopes_supported: state
            .catalog()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        service_documentation: format!("{issuer}/docs"),
        issuer,
    })
}
