//! OAuth 2.0 client credentials (API.md §7): clients, the token endpoint, revocation (RFC 7009),
//! introspection (RFC 7662) and discovery (RFC 8414, the JWKS).
//!
//! The management routes (`/v1/oauth/clients`) are ordinary keygate resources, answering problems.
//! The endpoints an OAuth client library talks to speak OAuth instead: form-encoded requests,
//! client authentication by HTTP Basic or in the body (RFC 6749 §2.3.1, never both), and RFC 6749
//! §5.2 error bodies that are never cached. What these endpoints decide is decided in
//! `keygate_core::oauth`; here is only what HTTP adds.

pub mod clients;
pub mod discovery;
pub mod revocation;
pub mod token;

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keygate_core::access::RequestMeta;
use keygate_core::id::CredentialId;
use keygate_core::model::{Actor, AuditEvent, Outcome};
use keygate_core::oauth::{
    AuthenticatedClient, ClientAuthError, ErrorCode, OauthError, client_target,
};
use keygate_core::store::UsageOutcome;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::ApiError;
use crate::problem::OwnErrorBody;
use crate::request::ClientIp;
use crate::state::AppState;

const REALM: &str = "realm";
const FORM: &str = "application/x-www-form-urlencoded";

/// An RFC 6749 §5.2 error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_scope", "error_description": "beyond what this grant allows: users:write"}))]
pub struct OauthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`, `unsupported_token_type` or `invalid_target`.
    pub error: &'static str,
    pub error_description: String,
}

/// Why an OAuth endpoint answers with an error: an OAuth error the client can act on, or one of
/// keygate's own (the store is unreachable; a credential refused on introspection), as a problem.
#[derive(Debug)]
pub enum Failure {
    /// To be recorded as a refused grant, once the client is known.
    Oauth(OauthError),
    /// Recorded already, with the change it made (a refresh token's family revoked).
    Recorded(OauthError),
    Api(ApiError),
}

impl From<OauthError> for Failure {
    fn from(error: OauthError) -> Self {
        Failure::Oauth(error)
    }
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Api(error.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Api(error) => error.into_response(),
            Failure::Oauth(error) | Failure::Recorded(error) => {
                let status =
                    StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let body = OauthErrorBody {
                    error: error.code.as_str(),
                    error_description: error.description,
                };
                let mut response = (status, no_store(), axum::Json(body)).into_response();
                if error.code == ErrorCode::InvalidClient {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"keygate\""),
                    );
                }
                response.extensions_mut().insert(OwnErrorBody);
                response
            }
        }
    }
}

/// RFC 6749 §5.1: nothing a token endpoint answers may be cached.
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// A form-encoded request body, each parameter at most once (RFC 6749 §3.2) but `resource`,
/// which RFC 8707 §2 lets a client repeat. A parameter sent without a value counts as omitted.
#[derive(Debug, Default)]
pub struct Params {
    single: HashMap<String, String>,
    resources: Vec<String>,
}

/// The one parameter that may be given more than once.
const RESOURCE: &str = "resource";

impl Params {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OauthError> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
        if !form {
            return Err(OauthError::invalid_request(format!(
                "the body must be form-encoded ({FORM})"
            )));
        }
        let pairs: Vec<(String, String)> = serde_html_form::from_bytes(body)
            .map_err(|e| OauthError::invalid_request(format!("the body is not a form: {e}")))?;
        let mut params = Self {
            single: HashMap::with_capacity(pairs.len()),
            resources: Vec::new(),
        };
        for (name, value) in pairs {
            if name == RESOURCE {
                if !value.is_empty() {
                    params.resources.push(value);
                }
                continue;
            }
            if params.single.contains_key(&name) {
                return Err(OauthError::invalid_request(format!(
                    "`{name}` is given more than once"
                )));
            }
            params.single.insert(name, value);
        }
        Ok(params)
    }

    /// Every `resource` given, in order (RFC 8707 §2).
    pub fn resources(&self) -> Vec<&str> {
        self.resources.iter().map(String::as_str).collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.single
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, OauthError> {
        self.get(name)
            .ok_or_else(|| OauthError::invalid_request(format!("`{name}` is missing")))
    }
}

/// The client's id and secret, from HTTP Basic or from the body.
pub struct ClientCredentials {
    pub id: String,
    pub secret: String,
}

/// Finds the client authentication of a request: `None` if there is none. Both ways at once is
/// `invalid_request` (RFC 6749 §2.3: a client uses one method per request).
pub fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<Option<ClientCredentials>, OauthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                OauthError::invalid_client("the Authorization header is not readable")
            })?;
            let (scheme, encoded) = value.trim().split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OauthError::invalid_client(
                    "authenticate the client with HTTP Basic, or client_id and client_secret in the body",
                ));
            }
            Some(decode_basic(encoded.trim())?)
        }
    };
    match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => Err(OauthError::invalid_request(
            "the client authenticated with both HTTP Basic and client_secret; use one",
        )),
        (Some(basic), None) => {
            if params.get("client_id").is_some_and(|id| id != basic.id) {
                return Err(OauthError::invalid_client(
                    "client_id in the body is not the one in HTTP Basic",
                ));
            }
            Ok(Some(basic))
        }
        (None, Some(secret)) => {
            let id = params.get("client_id").ok_or_else(|| {
                OauthError::invalid_client("client_secret was given without its client_id")
            })?;
            Ok(Some(ClientCredentials {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// `Basic base64(urlencode(client_id) ":" urlencode(client_secret))` (RFC 6749 §2.3.1).
fn decode_basic(encoded: &str) -> Result<ClientCredentials, OauthError> {
    let invalid =
        || OauthError::invalid_client("HTTP Basic must be base64 of `<client_id>:<client_secret>`");
    let bytes = STANDARD.decode(encoded).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(ClientCredentials { id, secret })
        }
        _ => Err(invalid()),
    }
}

/// Undoes `application/x-www-form-urlencoded` encoding; `None` if it is not valid.
fn form_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let (high, low) = (hex_digit(input.next()?)?, hex_digit(input.next()?)?);
                bytes.push(high << 4 | low);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The value of one hex digit. (Not `u8::from_str_radix`, which takes a leading `+`.)
fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Authenticates the client of a token-endpoint request: its secret, that it is the client named,
/// the `Realm` header, the tenant's allowlist and the rate limit. A refusal once the client is
/// known is recorded (a rate limit's is not: recording each would be the load it limits).
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    ip: Option<ClientIp>,
    meta: &RequestMeta,
) -> Result<AuthenticatedClient, Failure> {
    let credentials = client_credentials(headers, params)?.ok_or_else(|| {
        OauthError::invalid_client(
            "no client authentication: send HTTP Basic, or client_id and client_secret in the body",
        )
    })?;
    let client = match state
        .verifier()
        .authenticate_client(&credentials.secret, Some(&credentials.id))
        .await
    {
        Ok(client) => client,
        Err(ClientAuthError::Store(error)) => return Err(Failure::from(error)),
        Err(ClientAuthError::Refused(error)) => {
            note_refused_client(state, &credentials.id, meta).await;
            return Err(Failure::Oauth(error));
        }
    };
    let realm = headers
        .get(REALM)
        .map(|v| v.to_str().unwrap_or_default().trim());
    let now = state.clock().now();
    if realm.is_some_and(|realm| realm != client.verified().tenant().slug) {
        let error = OauthError::invalid_client(
            "the Realm header names a different tenant than the client's",
        );
        // Counted as the gate counts a wrong realm anywhere.
        let usage = state.gate().usage();
        usage.refused(client.verified(), now, UsageOutcome::Forbidden);
        return Err(refuse(state, &client, error, meta).await);
    }
    if let Some(ClientIp(ip)) = ip
        && !client.verified().allows_address(ip)
    {
        let usage = state.gate().usage();
        usage.refused(client.verified(), now, UsageOutcome::IpNotAllowed);
        let error = OauthError::new(
            ErrorCode::UnauthorizedClient,
            format!("requests from {ip} are not allowed for this client"),
        );
        return Err(refuse(state, &client, error, meta).await);
    }
    // A client's requests here count against its rate limit like any credential's anywhere.
    let metered = state
        .gate()
        .meter_and_note(
            client.verified(),
            state.clock().now_millis(),
            ip.map(|ClientIp(ip)| ip),
        )
        .await;
    let status = match metered {
        Ok(status) => status,
        Err(over) => Some(over),
    };
    if let Some(status) = status {
        let _ = crate::notes::NOTES.try_with(|notes| notes.rate_limit.set(Some(status)));
    }
    match metered {
        Ok(_) => Ok(client),
        Err(over) => Err(ApiError::rate_limited(over).into()),
    }
}

/// Records that `client` was refused (counted with identical refusals, written within seconds),
/// then answers `error`.
/// A client authentication refused (a wrong or revoked secret) for a client id that exists is
/// recorded in that client's tenant (API.md §8: every refused authentication), so that someone
/// guessing a client's secret shows in its owner's audit log. An unknown id is nobody's to tell.
async fn note_refused_client(state: &AppState, claimed: &str, meta: &RequestMeta) {
    let Some(id) = CredentialId::parse_any(claimed).filter(|id| id.as_str().starts_with("cli_"))
    else {
        return;
    };
    let client = match state.verifier().find_client(&id).await {
        Ok(Some(client)) => client,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "could not read the client of a refused authentication");
            return;
        }
    };
    let actor = Actor {
        kind: "oauth_client",
        id: client.id.to_string(),
    };
    let event = AuditEvent::new(
        client.tenant_id.clone(),
        actor,
        Some(client.id.clone()),
        "auth.denied",
        Some(client_target(&client.id)),
        state.clock().now(),
        meta,
    );
    if let Ok(event) = event {
        let event = event
            .with_outcome(Outcome::Denied)
            .with_status(ErrorCode::InvalidClient.status())
            .with_detail("reason", "client authentication refused: wrong secret");
        state.refusals().note(event);
    }
}

pub async fn refuse(
    state: &AppState,
    client: &AuthenticatedClient,
    error: OauthError,
    meta: &RequestMeta,
) -> Failure {
    let event = match client.event(
        "oauth.token",
        Outcome::Denied,
        error.code.status(),
        Some(client_target(client.id())),
        state.clock().now(),
        meta,
    ) {
        Ok(event) => event,
        Err(random) => return random.into(),
    };
    state.refusals().note(event);
    error.into()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn form(body: &str) -> Result<Params, OauthError> {
        Params::parse(
            &headers(&[(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )]),
            body.as_bytes(),
        )
    }

    #[test]
    fn forms_are_strict_about_their_type_and_repeated_parameters() {
        let params = form(
            "grant_type=client_credentials&scope=a%3Ab+c%3Ad&empty=\
             &resource=https%3A%2F%2Fa.example&resource=&resource=urn%3Ab",
        )
        .unwrap();
        assert_eq!(params.get("scope"), Some("a:b c:d"));
        assert_eq!(params.resources(), ["https://a.example", "urn:b"]);
        assert_eq!(params.get("empty"), None, "no value counts as omitted");
        assert_eq!(
            form("scope=a&scope=b").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let json = Params::parse(&headers(&[("content-type", "application/json")]), b"{}");
        assert_eq!(json.unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn client_authentication_is_basic_or_body_never_both() {
        let basic = format!("Basic {}", STANDARD.encode("cli_1:kg_secret_live_x%2By"));
        let found = client_credentials(&headers(&[("authorization", &basic)]), &form("").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.id.as_str(), found.secret.as_str()),
            ("cli_1", "kg_secret_live_x+y")
        );
        let body = form("client_id=cli_1&client_secret=s").unwrap();
        let found = client_credentials(&HeaderMap::new(), &body)
            .unwrap()
            .unwrap();
        assert_eq!(found.secret, "s");
        let both = client_credentials(&headers(&[("authorization", &basic)]), &body);
        assert_eq!(both.err().unwrap().code, ErrorCode::InvalidRequest);
        assert!(
            client_credentials(&HeaderMap::new(), &form("").unwrap())
                .unwrap()
                .is_none()
        );
        let bearer = client_credentials(
            &headers(&[("authorization", "Bearer x")]),
            &form("").unwrap(),
        );
        assert_eq!(bearer.err().unwrap().code, ErrorCode::InvalidClient);
        let no_id = client_credentials(&HeaderMap::new(), &form("client_secret=s").unwrap());
        assert_eq!(no_id.err().unwrap().code, ErrorCode::InvalidClient);
        assert_eq!(form_decode("a%zz"), None);
    }

    /// `application/x-www-form-urlencoded` decoding as the WHATWG URL standard reads it, but
    /// strict: `%` must be followed by two hex digits.
    fn decode_by_the_book(text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => decoded.push(b' '),
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                    i += 2;
                }
                other => decoded.push(other),
            }
            i += 1;
        }
        String::from_utf8(decoded).ok()
    }

    #[test]
    fn a_percent_sign_needs_two_hex_digits() {
        // Decoding used `u8::from_str_radix`, which takes a leading `+`: `%+1` decoded to 0x01.
        for bad in ["%+1", "%+f", "%-1", "% 1", "%1", "%", "%g0"] {
            assert_eq!(form_decode(bad), None, "{bad}");
        }
        assert_eq!(form_decode("%2B%2b+%41").as_deref(), Some("++ A"));
    }

    proptest! {
        #[test]
        fn form_decoding_is_by_the_book(
            text in "[%+0-9a-fA-FxyZ \u{e9}]{0,12}|.{0,12}",
        ) {
            prop_assert_eq!(form_decode(&text), decode_by_the_book(&text));
        }

        #[test]
        fn what_is_form_encoded_decodes_to_itself(text in ".{0,16}") {
            let encoded: String = text
                .bytes()
                .map(|b| match b {
                    b' ' => "+".to_owned(),
                    b if b.is_ascii_alphanumeric() || b"*-._".contains(&b) => (b as char).to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect();
            prop_assert_eq!(form_decode(&encoded), Some(text));
        }

        // The token endpoint's body and client authentication, whatever is sent: parameters,
        // or one of the documented refusals, `invalid_request` (400) or `invalid_client` (401).
        #[test]
        fn any_token_request_is_read_or_refused_as_documented(
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                "((grant_type|scope|client_id|client_secret|refresh_token|x)=[%+=&a-z0-9:]{0,8}&?){0,5}"
                    .prop_map(String::into_bytes),
            ],
            form in any::<bool>(),
            authorization in prop_oneof![
                Just(None),
                "[ -~]{0,24}".prop_map(Some),
                "[%+:a-z0-9]{0,12}".prop_map(|pair| Some(format!("Basic {}", STANDARD.encode(pair)))),
            ],
        ) {
            let content_type = if form { "application/x-www-form-urlencoded" } else { "text/plain" };
            let mut sent = vec![("content-type", content_type.to_owned())];
            sent.extend(authorization.map(|a| ("authorization", a)));
            let pairs: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let map = headers(&pairs);
            let outcome = Params::parse(&map, &body)
                .and_then(|params| client_credentials(&map, &params).map(|_| ()));
            if let Err(error) = outcome {
                let status = Failure::from(error).into_response().status();
                prop_assert!(status == 400 || status == 401, "{}", status);
            }
        }
    }
}
