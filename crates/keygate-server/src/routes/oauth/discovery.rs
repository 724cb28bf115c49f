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

/// One public key: `EC` with `crv` `P-256`, `x` and `y` (`ES256`; RFC 7518 §6.2); `RSA` with `n`
/// and `e` (`RS256`; RFC 7518 §6.3); or `OKP` with `crv` `Ed25519` and `x` (`EdDSA`; RFC 8037).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkView {
    /// `EC`, `RSA` or `OKP`.
    #[schema(example = "EC")]
    pub kty: &'static str,
    /// `P-256` (`EC`) or `Ed25519` (`OKP`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "P-256")]
    pub crv: Option<&'static str>,
    /// The x coordinate (`EC`) or the public key (`OKP`), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The y coordinate (`EC`), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The modulus (`RSA`), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The public exponent (`RSA`), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Its RFC 7638 thumbprint, as in the tokens' `kid` header.
    pub kid: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub usage: &'static str,
    /// `ES256`, `EdDSA` or `RS256`: the only algorithm tokens signed with this key use.
    #[schema(example = "ES256")]
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
            y: k.y,
            n: k.n,
            e: k.e,
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
    /// `["none"]`: keygate has no authorization endpoint, so an authorization request gets
    /// nothing from it.
    #[schema(example = json!(["none"]))]
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
        // RFC 8414 §2 makes this member REQUIRED and non-empty (Authlib's metadata validator
        // refuses `[]`). keygate has no authorization endpoint (none is published, and no grant
        // that needs one is listed), so it issues nothing in answer to an authorization request:
        // `none` (OAuth 2.0 Multiple Response Type Encoding Practices §4, in IANA's registry) is
        // the response type that says exactly that, and the only one that claims no flow.
        response_types_supported: vec!["none"],
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
