//! What handlers take from a request besides its credential and body: its id and the client's
//! address (set by the front service), where it came from (for the audit log), query strings
//! (strict, repeated keys allowed) and list paging.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use keygate_core::access::RequestMeta;
use keygate_core::store::Page;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::problem::{ApiError, FieldError};

/// The request id's header, on every response and on what the gateway sends upstream.
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The id of the request being served, for handlers that need it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The client's address as keygate judges it (API.md §6): what allowlists are checked against,
/// and what the log and the audit record.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Whether the request came over TLS: ended by keygate itself (the front service says so as a
/// proxy would) or by a trusted proxy in front (`X-Forwarded-Proto`; the front service drops the
/// header from anyone else). Cookies are then `Secure`.
pub fn over_tls(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The request's origin, for audit events.
pub struct Meta(pub RequestMeta);

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ClientIp>()
            .map(|ClientIp(ip)| ip.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        Ok(Meta(RequestMeta {
            ip,
            user_agent,
            request_id,
        }))
    }
}

/// What a parameter that is never text should have been, for one sent empty.
fn not_text(name: &str) -> Option<String> {
    match name {
        "limit" => Some(format!(
            "must be a number between 1 and {}",
            Page::MAX_LIMIT
        )),
        "since" | "until" => Some("must be a time, such as 2026-11-22T10:00:00Z".into()),
        "unused_for_days" => Some("must be a number of days from 1 to 36500".into()),
        // Names from a list: an empty one is none of them.
        "granularity" => Some("must be `minute`, `hour` or `day`".into()),
        "group_by" => Some("must be `credential`, `outcome` or `tenant`".into()),
        _ => None,
    }
}

/// A query string parsed strictly: unknown keys are a 400 (a typo in a filter must not silently
/// list everything), repeated keys fill lists (`?id=a&id=b`).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        // The form parser reads an empty value as absent, which suits text filters; a page size,
        // a number of days or a time is not text, and `limit=` is a mistake to answer, not a
        // request for the default.
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if value.is_empty()
                && let Some(wanted) = not_text(name)
            {
                return Err(ApiError::invalid_fields(vec![FieldError {
                    field: name.to_owned(),
                    message: wanted,
                }]));
            }
        }
        let parsed = serde_html_form::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(parsed)
            .map(Query)
            .map_err(|e| match e.path().to_string().as_str() {
                // An unknown key, or a query that is not a form at all: nothing to point at.
                "" | "." => ApiError::invalid(format!("invalid query string: {}", e.inner())),
                field => ApiError::invalid_fields(vec![FieldError {
                    field: field.to_owned(),
                    message: format!("cannot be read: {}", e.inner()),
                }]),
            })
    }
}

/// The query of a list that takes nothing but its page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Only the items with these ids; repeat the key (`?id=a&id=b`).
    #[serde(default)]
    pub id: Vec<String>,
    /// How many items, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(pattern = "^[A-Za-z0-9_]{0,64}$")]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(self) -> Result<Page, ApiError> {
        page(self.limit, self.cursor, self.id)
    }
}

/// The page a list asks for with `limit` (default 50, at most 500) and `cursor`, among `ids`
/// (`?id=a&id=b`, at most 500) when any are given.
pub fn page(
    limit: Option<u32>,
    cursor: Option<String>,
    ids: Vec<String>,
) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(Page::DEFAULT_LIMIT);
    if !(1..=Page::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: "limit".into(),
            message: format!("must be between 1 and {}", Page::MAX_LIMIT),
        }]));
    }
    if ids.len() > Page::MAX_LIMIT as usize {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: "id".into(),
            message: format!("at most {} ids at once", Page::MAX_LIMIT),
        }]));
    }
    let cursor = cursor.filter(|c| !c.is_empty());
    let sane = |c: &str| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if cursor.as_deref().is_some_and(|c| !sane(c)) {
        return Err(not_a_cursor());
    }
    Ok(Page { limit, cursor, ids })
}

/// A `cursor` that no page of this list returned.
pub fn not_a_cursor() -> ApiError {
    ApiError::invalid_fields(vec![FieldError {
        field: "cursor".into(),
        message: "is not a cursor this API returned".into(),
    }])
}
