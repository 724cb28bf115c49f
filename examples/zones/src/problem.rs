//! Errors as RFC 9457 problem details, and the JSON body extractor whose every refusal is one.
//!
//! A problem's `detail` is for the caller, so it must never carry anything the caller may not
//! know: not another tenant's zone, not a database error's text (that goes to the log).

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error response: `{"type":"about:blank","title","status","detail","errors"?}`.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    detail: Cow<'static, str>,
    errors: Vec<FieldError>,
}

/// What is wrong with one field of the request body.
#[derive(Debug, Serialize)]
pub(crate) struct FieldError {
    /// Where, as a path into the body: `name`, `data[1].subnet`.
    pub field: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A problem with the fields of the body, each named.
    pub(crate) fn fields(
        status: StatusCode,
        detail: impl Into<Cow<'static, str>>,
        errors: Vec<FieldError>,
    ) -> Self {
        Self {
            errors,
            ..Self::new(status, detail)
        }
    }
}

/// A database failure: logged in full, answered as a bare 500.
impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(%error, "database request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the zones database failed; the example's log says why",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            title: &'static str,
            status: u16,
            detail: &'a str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            errors: &'a [FieldError],
        }
        let body = Body {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// A JSON request body of type `T`. Unlike `axum::Json`, a body that does not fit `T` (a missing
/// or unknown field, a wrong type) is a 400 naming the field, not a 422.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        // Refuses a body over the router's limit (413) or one cut short.
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(misfit)?;
        // Trailing characters after the value.
        deserializer.end().map_err(malformed)?;
        Ok(JsonBody(value))
    }
}

fn malformed(error: serde_json::Error) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {error}"))
}

/// A body that is not JSON, or JSON of the wrong shape: names the field where it can.
fn misfit(error: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = error.path().to_string();
    let error = error.into_inner();
    if !error.is_data() {
        return malformed(error);
    }
    let text = error.to_string();
    // The position is noise next to the field's name.
    let message = text
        .rsplit_once(" at line ")
        .map_or(&*text, |(message, _)| message);
    // serde places a missing field at its parent; the caller wants the field itself.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let path = match (missing, path.as_str()) {
        (Some(field), ".") => field.to_owned(),
        (Some(field), _) => format!("{path}.{field}"),
        // The body as a whole is the wrong shape: `[]` for an object.
        (None, ".") => return Problem::new(StatusCode::BAD_REQUEST, message.to_owned()),
        (None, _) => path,
    };
    Problem::fields(
        StatusCode::BAD_REQUEST,
        format!("{path}: {message}"),
        vec![FieldError {
            field: path,
            message: message.to_owned(),
        }],
    )
}

/// `application/json`, or any `+json` type, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}
