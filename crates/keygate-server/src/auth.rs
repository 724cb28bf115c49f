//! Credential extraction (API.md §2): the five places a credential may be, the ambiguity rule,
//! Basic's realm and the `Realm` header, then verification.
//!
//! Extraction borrows from the request's headers; only `Basic` allocates (it must decode). A
//! request that holds two *different* credentials is refused, so a proxy adding its own credential
//! can never silently change who a request acts as.

use keygate_core::quota::QuotaStatus;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::FutureExt;
use keygate_core::Timestamp;
use keygate_core::access::Caller;
use keygate_core::gate;
use keygate_core::id::TenantId;
use keygate_core::verified::Verified;

use crate::notes::{KnownCaller, NOTES};
use crate::problem::{ApiError, ProblemCode};
use crate::request::ClientIp;
use crate::state::AppState;

const APIKEY: HeaderName = HeaderName::from_static("apikey");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const REALM: HeaderName = HeaderName::from_static("realm");
pub(crate) const AS_TENANT: HeaderName = HeaderName::from_static("as-tenant");
pub const COOKIE_NAME: &str = "api_access_token";
/// The cookie a signed-in browser session travels in.
pub const SESSION_COOKIE: &str = "keygate_session";

/// A credential as found in a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub credential: Cow<'a, str>,
    /// The username of `Basic`, which must be the credential's tenant slug.
    pub basic_username: Option<String>,
    /// The `Realm` header, which must name the credential's tenant.
    pub realm: Option<&'a str>,
    /// The `as-tenant` header: the tenant to act in, below the credential's own.
    pub as_tenant: Option<&'a HeaderValue>,
    /// For the audit record, should the request be refused.
    pub user_agent: Option<&'a HeaderValue>,
}

fn unreadable(place: &str) -> ApiError {
    ApiError::unauthenticated(format!("the {place} header is not readable text"))
}

/// The one credential seen so far; a different second one makes the request ambiguous.
#[derive(Default)]
struct Found<'a>(Option<Cow<'a, str>>);

impl<'a> Found<'a> {
    fn push(&mut self, credential: Cow<'a, str>) -> Result<(), ApiError> {
        match &self.0 {
            None => self.0 = Some(credential),
            Some(first) if *first == credential => {}
            Some(_) => {
                return Err(ApiError::new(
                    ProblemCode::AmbiguousCredentials,
                    "the request carries different credentials in different places; send exactly one",
                ));
            }
        }
        Ok(())
    }
}

/// Finds the request's credential, in one pass over the headers. `Ok(None)` when there is none.
pub fn extract(headers: &HeaderMap) -> Result<Option<Presented<'_>>, ApiError> {
    let mut found = Found::default();
    let mut basic_username = None;
    let mut realm = None;
    let mut as_tenant = None;
    let mut user_agent = None;

    for (name, value) in headers {
        if name == header::AUTHORIZATION {
            let value = value
                .to_str()
                .map_err(|_| unreadable("Authorization"))?
                .trim();
            // The scheme ends at the first space: found by a byte loop (`to_str` let through
            // visible ASCII alone), some 150 instructions a request less than `split_once`'s
            // general searcher.
            let (scheme, rest) = match value.bytes().position(|b| b == b' ') {
                Some(space) => (&value[..space], value[space + 1..].trim()),
                None => (value, ""),
            };
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
                if rest.is_empty() {
                    return Err(ApiError::unauthenticated(format!(
                        "the {scheme} scheme needs a credential after it"
                    )));
                }
                found.push(Cow::Borrowed(rest))?;
            } else if scheme.eq_ignore_ascii_case("basic") {
                let (username, credential) = decode_basic(rest)?;
                basic_username = Some(username);
                found.push(Cow::Owned(credential))?;
            } else if rest.is_empty() {
                // One word: most likely a credential sent without its scheme, which is never
                // repeated back (answers end up in logs).
                return Err(ApiError::unauthenticated(
                    "the Authorization header needs a scheme before the credential: \
                     `Bearer <credential>`, `Token <credential>` or Basic"
                        .to_owned(),
                ));
            } else if is_scheme_name(scheme) {
                return Err(ApiError::unauthenticated(format!(
                    "the Authorization scheme `{scheme}` is not supported; use Bearer, Token or Basic"
                )));
            } else {
                return Err(ApiError::unauthenticated(
                    "the Authorization scheme is not supported; use Bearer, Token or Basic"
                        .to_owned(),
                ));
            }
        } else if name == APIKEY || name == X_API_KEY {
            let value = value
                .to_str()
                .map_err(|_| unreadable(name.as_str()))?
                .trim();
            if value.is_empty() {
                return Err(ApiError::unauthenticated(format!(
                    "the {name} header is empty"
                )));
            }
            found.push(Cow::Borrowed(value))?;
        } else if name == header::COOKIE {
            // Other cookies are not ours to judge: a cookie header we cannot read as text, or
            // pairs that are not `name=value`, are skipped rather than refused.
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                let Some((name, credential)) = pair.trim().split_once('=') else {
                    continue;
                };
                let credential = credential.trim().trim_matches('"');
                let name = name.trim();
                if (name == COOKIE_NAME || name == SESSION_COOKIE) && !credential.is_empty() {
                    found.push(Cow::Borrowed(credential))?;
                }
            }
        } else if name == REALM {
            realm.get_or_insert(value);
        } else if name == AS_TENANT {
            as_tenant.get_or_insert(value);
        } else if name == header::USER_AGENT {
            user_agent.get_or_insert(value);
        }
    }

    let Some(credential) = found.0 else {
        return Ok(None);
    };
    let realm = match realm {
        Some(value) => Some(value.to_str().map_err(|_| unreadable("Realm"))?.trim()),
        None => None,
    };
    Ok(Some(Presented {
        credential,
        basic_username,
        realm,
        as_tenant,
        user_agent,
    }))
}

/// Whether `scheme` reads as the name of an HTTP authentication scheme (`Digest`, `Negotiate`,
/// `AWS4-HMAC-SHA256`) rather than a credential: short, letters, digits and dashes, no `_`
/// (which every keygate credential has).
fn is_scheme_name(scheme: &str) -> bool {
    scheme.len() <= 20
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn decode_basic(encoded: &str) -> Result<(String, String), ApiError> {
    let invalid = || {
        ApiError::unauthenticated(
            "Basic credentials must be base64 of `<tenant slug>:<credential>`",
        )
    };
    let bytes = STANDARD.decode(encoded).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (username, credential) = text.split_once(':').ok_or_else(invalid)?;
    if credential.is_empty() {
        return Err(invalid());
    }
    Ok((username.to_owned(), credential.to_owned()))
}

/// Authenticates a request to the management API: its credential, where and from where it was
/// presented, as the gate decides (`keygate_core::gate`). Handlers require their own permissions.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    decide(state, headers, client, &[], Counting::All, None)
        .await
        .map(|(caller, _)| caller)
}

/// Authenticates a request of the management API, whose handler checks the permissions it needs
/// after this. A refusal is counted here; an admitted request is counted by the front service
/// once the answer says whether the handler found a permission missing ([`Notes::count_on_answer`]),
/// or here when there is no front service to do it.
///
/// [`Notes::count_on_answer`]: crate::notes::Notes::count_on_answer
pub async fn authenticate_for_handler(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let (caller, _) = decide(state, headers, client, &[], Counting::Refusals, None).await?;
    if NOTES
        .try_with(|notes| notes.count_on_answer.set(true))
        .is_err()
    {
        let now = state.clock().now();
        state
            .gate()
            .usage()
            .record(caller.verified_shared(), now, client);
    }
    Ok(caller)
}

/// Authenticates the service asking `/v1/verify`: checked like any caller, but its request is not
/// counted in its usage, since the credential it asks about is (API.md §12).
///
/// Not an `async fn`, as [`admit`] is not.
pub fn authenticate_asker(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> impl Future<Output = Result<Caller, ApiError>> {
    decide(state, headers, client, &[], Counting::Never, None)
        .map(|decided| decided.map(|(caller, _)| caller))
}

/// Admits a request whose path requires `required` besides (forward-auth): [`extract`] reads the
/// headers, the gate decides, and what it learnt is left for the front service (the rate-limit
/// status for the `RateLimit-*` headers, the credential behind a refusal for the audit log). The
/// request spends `cost` from the credential's quotas; with the caller comes the tightest of
/// them, if any applied.
///
/// Not an `async fn`: one would hold [`decide`]'s future inside its own, copied there on every
/// request of the hot path.
pub fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    required: &[String],
    cost: u64,
) -> impl Future<Output = Result<(Caller, Option<QuotaStatus>), ApiError>> {
    decide(state, headers, client, required, Counting::All, Some(cost))
}

/// Which of a request's outcomes [`decide`] counts in its credential's usage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counting {
    All,
    /// Refusals only: the admitted request is counted once its answer is known.
    Refusals,
    Never,
}

async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    required: &[String],
    counting: Counting,
    cost: Option<u64>,
) -> Result<(Caller, Option<QuotaStatus>), ApiError> {
    let presented = extract(headers)?.ok_or_else(|| {
        ApiError::unauthenticated(
            "no credential: send `Authorization: Bearer <token>` (or see /docs for the other ways)",
        )
    })?;
    let request = gate::Request {
        client,
        required,
        within: None,
        // One clock read for the whole request: expiry, rate limit and last use.
        now_millis: state.clock().now_millis(),
        counted: counting == Counting::All,
        cost,
    };
    let asked = gate::Presented {
        credential: &presented.credential,
        basic_username: presented.basic_username.as_deref(),
        realm: presented.realm,
        // An unreadable header names no tenant: refused as one that is not an id or slug.
        as_tenant: presented.as_tenant.map(|v| v.to_str().unwrap_or_default()),
    };
    let admitted = state.gate().admit(asked, request).await;
    let rate_limit = match &admitted {
        Ok(admission) => admission.rate_limit,
        Err(denied) => denied.rate_limit,
    };
    if let Some(status) = rate_limit {
        let _ = NOTES.try_with(|notes| notes.rate_limit.set(Some(status)));
    }
    match admitted {
        Ok(admission) => {
            let caller = admission.caller;
            let acting = caller.acting_as().map(|t| t.id.clone());
            note_caller(&presented, Arc::clone(caller.verified_shared()), acting);
            Ok((caller, admission.quota))
        }
        Err(denied) => {
            if counting == Counting::Refusals {
                let now = Timestamp::from_unix(request.now_millis.div_euclid(1000));
                state.gate().count_refused(&denied, now);
            }
            if let Some(known) = denied.known {
                note_caller(&presented, known, denied.acting);
            }
            Err(denied.denial.into())
        }
    }
}

fn note_caller(presented: &Presented<'_>, verified: Arc<Verified>, acting: Option<TenantId>) {
    let known = KnownCaller {
        verified,
        acting,
        user_agent: presented.user_agent.cloned(),
    };
    let _ = NOTES.try_with(|notes| notes.caller.replace(Some(known)));
}

/// An authenticated request: the extractor every protected handler takes.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = parts.extensions.get::<ClientIp>().map(|ClientIp(ip)| *ip);
        authenticate_for_handler(state, &parts.headers, client)
            .await
            .map(Authenticated)
    }
}

/// The service asking `POST /v1/verify`, authenticated by [`authenticate_asker`].
pub struct Asker(pub Caller);

impl FromRequestParts<AppState> for Asker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = parts.extensions.get::<ClientIp>().map(|ClientIp(ip)| *ip);
        authenticate_asker(state, &parts.headers, client)
            .await
            .map(Asker)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn credential(pairs: &[(&str, &[u8])]) -> Result<Option<String>, ProblemCode> {
        extract(&headers(pairs))
            .map(|p| p.map(|p| p.credential.into_owned()))
            .map_err(|e| e.code)
    }

    #[test]
    fn every_place_and_scheme_spelling() {
        let basic = format!("Basic {}", STANDARD.encode("root:kg_live_x"));
        for pairs in [
            vec![("authorization", &b"Bearer kg_live_x"[..])],
            vec![("authorization", b"bearer kg_live_x")],
            vec![("authorization", b"TOKEN   kg_live_x ")],
            vec![("authorization", basic.as_bytes())],
            vec![("apikey", b"kg_live_x")],
            vec![("x-api-key", b"kg_live_x")],
            vec![("cookie", b"theme=dark; api_access_token=kg_live_x; x=1")],
            vec![
                ("authorization", b"Bearer kg_live_x"),
                ("apikey", b"kg_live_x"),
            ],
        ] {
            assert_eq!(
                credential(&pairs),
                Ok(Some("kg_live_x".into())),
                "{pairs:?}"
            );
        }
        assert_eq!(credential(&[]), Ok(None));
        assert_eq!(credential(&[("cookie", b"theme=dark")]), Ok(None));
    }

    #[test]
    fn different_credentials_are_ambiguous() {
        assert_eq!(
            credential(&[("authorization", b"Bearer a"), ("x-api-key", b"b")]),
            Err(ProblemCode::AmbiguousCredentials)
        );
        assert_eq!(
            credential(&[
                ("cookie", b"api_access_token=a"),
                ("cookie", b"api_access_token=b")
            ]),
            Err(ProblemCode::AmbiguousCredentials)
        );
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for pairs in [
            vec![("authorization", &b"Bearer"[..])],
            vec![("authorization", b"Bearer   ")],
            vec![("authorization", b"Basic !!!not-base64")],
            vec![("authorization", b"Basic bm9jb2xvbg==")],
            vec![("authorization", b"Digest abc")],
            vec![("authorization", b"Bearer \xff\xfe")],
            vec![("apikey", b"")],
        ] {
            assert_eq!(
                credential(&pairs),
                Err(ProblemCode::Unauthenticated),
                "{pairs:?}"
            );
        }
        // Someone else's unreadable cookie does not stop the request.
        assert_eq!(credential(&[("cookie", b"x=\xff")]), Ok(None));
    }

    /// Bytes a header value may hold (what hyper lets through): visible ASCII, space, tab and
    /// anything above 0x7f.
    fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..48)
    }

    /// What the credential headers carry: anything, and what is nearly right.
    fn near_valid() -> impl Strategy<Value = Vec<u8>> {
        let credential = "[A-Za-z0-9_]{0,12}|[ -~]{0,12}";
        prop_oneof![
            value_bytes(),
            ("(?i)(bearer|token|basic|digest)?[ \t]{0,2}", credential)
                .prop_map(|(scheme, c)| format!("{scheme}{c}").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(|raw| format!(
                "Basic {}",
                STANDARD.encode(raw)
            )
            .into_bytes()),
            ("[^:]{0,8}", ":?", credential).prop_map(|(user, colon, c)| {
                format!("Basic {}", STANDARD.encode(format!("{user}{colon}{c}"))).into_bytes()
            }),
            ("[ -~]{0,8}", credential).prop_map(|(other, c)| {
                format!("{other}; api_access_token={c};keygate_session=\"{c}\"").into_bytes()
            }),
        ]
    }

    proptest! {
        // Whatever the five places and the Realm header hold, extraction finds a credential,
        // finds none, or refuses with one of the two documented answers: 401 `unauthenticated`
        // (with its challenge) or 400 `ambiguous-credentials`. Never a panic, never an empty
        // credential.
        #[test]
        fn any_headers_are_found_or_refused_as_documented(
            sent in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("authorization"), Just("apikey"), Just("x-api-key"),
                        Just("cookie"), Just("realm"), Just("as-tenant"),
                    ],
                    near_valid(),
                ),
                0..4,
            ),
        ) {
            let pairs: Vec<(&str, &[u8])> =
                sent.iter().map(|(name, value)| (*name, value.as_slice())).collect();
            match extract(&headers(&pairs)) {
                Ok(None) => {}
                Ok(Some(presented)) => prop_assert!(!presented.credential.is_empty()),
                Err(error) => {
                    let response = error.into_response();
                    let error = response.extensions().get::<ApiError>().unwrap();
                    match error.code {
                        ProblemCode::Unauthenticated => {
                            prop_assert_eq!(response.status(), 401);
                            prop_assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
                        }
                        ProblemCode::AmbiguousCredentials => prop_assert_eq!(response.status(), 400),
                        other => prop_assert!(false, "undocumented {:?}", other),
                    }
                }
            }
        }

        // Basic carries any username without a colon and any non-empty credential, unchanged.
        #[test]
        fn basic_round_trips_what_it_carries(user in "[^:]{0,16}", credential in ".{1,24}") {
            let value = format!("Basic {}", STANDARD.encode(format!("{user}:{credential}")));
            let map = headers(&[("authorization", value.as_bytes())]);
            let presented = extract(&map).unwrap().unwrap();
            prop_assert_eq!(presented.credential.as_ref(), credential.as_str());
            prop_assert_eq!(presented.basic_username.as_deref(), Some(user.as_str()));
        }
    }

    #[test]
    fn basic_keeps_its_username_and_the_realm_header_is_read() {
        let basic = format!("basic {}", STANDARD.encode("acme:kg_live_x"));
        let map = headers(&[("authorization", basic.as_bytes()), ("realm", b"acme")]);
        let presented = extract(&map).unwrap().unwrap();
        assert_eq!(presented.basic_username.as_deref(), Some("acme"));
        assert_eq!(presented.realm, Some("acme"));
    }
}
