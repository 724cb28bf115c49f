//! The JSON body extractor: axum's, with its rejections turned into problems.
//! Bodies are parsed strictly: a body is a JSON object, and request types deny unknown fields, so a
//! typo is a 400, not ignored.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Collected, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, FieldError, ProblemCode};

pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json(request.headers())?;
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => too_large(),
                    _ => ApiError::invalid(rejection.body_text()),
                })?;
        parse(&bytes).map(Json)
    }
}

/// The JSON body of a request the front service answers without the router (`POST /v1/verify`):
/// the same checks as the extractor, the body read up to `limit` bytes, as hyper hands it over
/// (not boxed into axum's body first).
pub async fn read<T, B>(headers: &HeaderMap, body: B, limit: usize) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    require_json(headers)?;
    let collected = Limited::new(body, limit).collect().await;
    let bytes = collected.map(Collected::to_bytes).map_err(|error| {
        let mut source: &dyn std::error::Error = &*error;
        loop {
            if source.is::<LengthLimitError>() {
                return too_large();
            }
            match source.source() {
                Some(inner) => source = inner,
                None => return ApiError::invalid("the request body could not be read"),
            }
        }
    })?;
    parse(&bytes)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "the body must be JSON, sent with Content-Type: application/json",
        ))
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ProblemCode::PayloadTooLarge,
        "the request body is too large",
    )
}

fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    // serde also reads a struct from an array of its fields in order; every body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid(
            "the body must be a JSON object, not an array",
        ));
    }
    // The body read once, as it is; only a body refused is read again, by axum's extractor,
    // whose tracking of where in the body the error is costs every body.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(rejection_error(rejection)),
    }
}

/// The body of a request that takes none: no body, or an empty JSON object. Anything else is
/// refused as [`Json`] refuses it (a field is unknown, a body that is not JSON is a 415), so a
/// client sending fields it believes mean something learns that they do not (API.md §1).
pub struct NoBody;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        <Json<NoFields> as axum::extract::OptionalFromRequest<S>>::from_request(request, state)
            .await
            .map(|_| NoBody)
    }
}

/// A body that may be left out (`Option<Json<T>>`): no body at all is `None`; anything sent is
/// held to what [`Json`] requires.
impl<S, T> axum::extract::OptionalFromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        if request.headers().contains_key(CONTENT_TYPE) {
            return <Self as FromRequest<S>>::from_request(request, state)
                .await
                .map(Some);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        if bytes.is_empty() {
            Ok(None)
        } else {
            Err(ApiError::new(
                ProblemCode::UnsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
            ))
        }
    }
}

/// `application/json`, or any `application/…+json`, as axum's own extractor judges it.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let (Some(head), Some(tail)) = (essence.get(..12), essence.last_chunk::<5>()) else {
        return false;
    };
    head.eq_ignore_ascii_case(b"application/")
        && (essence.eq_ignore_ascii_case(b"application/json")
            || tail.eq_ignore_ascii_case(b"+json"))
}

fn rejection_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::invalid(format!("the body is not valid JSON: {}", source_text(&e)))
        }
        JsonRejection::JsonDataError(e) => match field_error(&e) {
            // A value of the wrong type, out of range, or a field unknown: named like every
            // other failed validation (API.md §1, `errors`), so a client can point at it.
            Some(field) => ApiError::invalid_fields(vec![field]),
            None => ApiError::invalid(source_text(&e)),
        },
        other => ApiError::invalid(other.body_text()),
    }
}

/// The field a data error is about, from the path serde followed to it (`permissions[0]`,
/// `quota.limit`), with serde's message less its position in the text; `None` for an error
/// about the body as a whole (a missing field is reported by its parent).
fn field_error(error: &(dyn std::error::Error + 'static)) -> Option<FieldError> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = found.path().to_string();
            if path == "." || path.is_empty() {
                return None;
            }
            let message = found.inner().to_string();
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            return Some(FieldError {
                field: path,
                message,
            });
        }
        source = error.source();
    }
    None
}

/// The serde message (with its JSON path) without axum's generic preamble.
fn source_text(error: &dyn std::error::Error) -> String {
    let mut source = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_is_application_json_or_any_json_suffix_in_any_case() {
        let judged = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=utf-8",
            "application/problem+json",
            "application/vnd.api+JSON",
            "APPLICATION/merge-patch+json; x=y",
        ] {
            assert!(judged(json), "{json}");
        }
        for other in [
            "",
            "text/json",
            "application/jsonx",
            "application/xml",
            "application/+jso",
            "text/plain+json",
            "json",
            "application/",
            "application/json5",
        ] {
            assert!(!judged(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn a_body_refused_is_explained_as_before() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Asked {
            credential: String,
            permissions: Option<Vec<String>>,
        }
        let parsed = |body: &str| parse::<Asked>(&Bytes::copy_from_slice(body.as_bytes()));
        assert_eq!(
            parsed(r#"{"credential": "x", "permissions": ["a"]}"#)
                .unwrap()
                .credential,
            "x"
        );
        for (body, field) in [
            (r#"{"credential": 7}"#, Some("credential")),
            (
                r#"{"credential": "x", "permissions": [1]}"#,
                Some("permissions[0]"),
            ),
            (r#"{"credential": "x", "extra": 1}"#, Some("extra")),
            (r#"{"permissions": []}"#, None),
        ] {
            let error = parsed(body).unwrap_err();
            let named: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(named, field.into_iter().collect::<Vec<_>>(), "{body}");
            for named in &error.errors {
                assert!(
                    !named.message.contains("at line"),
                    "{body}: {}",
                    named.message
                );
            }
        }
        for (body, says) in [
            (r#"{"credential": 7}"#, "credential: invalid type"),
            (
                r#"{"credential": "x", "permissions": [1]}"#,
                "permissions[0]: invalid type",
            ),
            (
                r#"{"credential": "x", "extra": 1}"#,
                "unknown field `extra`",
            ),
            (r#"{"credential": "#, "the body is not valid JSON"),
            ("[\"x\"]", "not an array"),
        ] {
            let error = parsed(body).unwrap_err();
            let detail = error.detail.as_deref().unwrap_or_default();
            assert!(detail.contains(says), "{body}: {detail}");
        }
    }
}
