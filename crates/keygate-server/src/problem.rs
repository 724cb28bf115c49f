//! One error type and one mapping to RFC 9457 problem responses (API.md §1).
//!
//! Handlers return [`ApiError`]. Turning it into a response does not write the body yet: the
//! request id is only known to the front service ([`crate::front`]), which calls [`render`] with it:
//! problem with `instance` set, logs 5xx detail with that id, and never sends that detail out.

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_core::access::Forbidden;
use keygate_core::gate::Denial;
use keygate_core::ratelimit::RateLimitStatus;
use keygate_core::rule::{Conflict, RuleError};
use keygate_core::signin::{SignInError, SignOutError};
use keygate_core::store::StoreError;
use keygate_core::verify::Refusal;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable, machine-readable problem codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemCode {
    InvalidRequest,
    AmbiguousCredentials,
    Unauthenticated,
    Forbidden,
    IpNotAllowed,
    PrivilegeEscalation,
    NotFound,
    MethodNotAllowed,
    KeyLimitReached,
    CannotDeleteCurrentKey,
    WouldLockOutCaller,
    AlreadyRolled,
    LastOwner,
    AlreadyExists,
    TenantHasChildren,
    RoleInUse,
    BuiltinRole,
    OrganizationRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    QuotaExceeded,
    HeadersTooLarge,
    NotImplemented,
    UpstreamUnavailable,
    UpstreamTimeout,
    Unavailable,
    Internal,
}

impl ProblemCode {
    pub fn status(self) -> StatusCode {
        use ProblemCode::*;
        match self {
            InvalidRequest | AmbiguousCredentials => StatusCode::BAD_REQUEST,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            Forbidden | IpNotAllowed | PrivilegeEscalation => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            KeyLimitReached
            | CannotDeleteCurrentKey
            | WouldLockOutCaller
            | AlreadyRolled
            | LastOwner
            | AlreadyExists
            | TenantHasChildren
            | RoleInUse
            | BuiltinRole
            | OrganizationRequired => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RateLimited | QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            NotImplemented => StatusCode::NOT_IMPLEMENTED,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ProblemCode::*;
        match self {
            InvalidRequest => "invalid-request",
            AmbiguousCredentials => "ambiguous-credentials",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            IpNotAllowed => "ip-not-allowed",
            PrivilegeEscalation => "privilege-escalation",
            NotFound => "not-found",
            MethodNotAllowed => "method-not-allowed",
            KeyLimitReached => "key-limit-reached",
            CannotDeleteCurrentKey => "cannot-delete-current-key",
            WouldLockOutCaller => "would-lock-out-caller",
            AlreadyRolled => "already-rolled",
            LastOwner => "last-owner",
            AlreadyExists => "already-exists",
            TenantHasChildren => "tenant-has-children",
            RoleInUse => "role-in-use",
            BuiltinRole => "builtin-role",
            OrganizationRequired => "organization-required",
            PayloadTooLarge => "payload-too-large",
            UnsupportedMediaType => "unsupported-media-type",
            RateLimited => "rate-limited",
            QuotaExceeded => "quota-exceeded",
            HeadersTooLarge => "headers-too-large",
            NotImplemented => "not-implemented",
            UpstreamUnavailable => "upstream-unavailable",
            UpstreamTimeout => "upstream-timeout",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        use ProblemCode::*;
        match self {
            InvalidRequest => "The request is invalid",
            AmbiguousCredentials => "The request carries more than one credential",
            Unauthenticated => "Authentication is required",
            Forbidden => "The credential lacks a permission",
            IpNotAllowed => "The caller's address is not allowed",
            PrivilegeEscalation => "That would grant more than the caller holds",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            KeyLimitReached => "The account already has two keys",
            CannotDeleteCurrentKey => "The key authenticating this request cannot be deleted",
            WouldLockOutCaller => "That allowlist would lock the caller out",
            AlreadyRolled => "The credential was already rolled",
            LastOwner => "The organization's last owner stays",
            AlreadyExists => "It already exists",
            TenantHasChildren => "The tenant still has child tenants",
            RoleInUse => "The role is still held by users or tokens",
            BuiltinRole => "Built-in roles cannot be changed",
            OrganizationRequired => "Name the organization to sign in to",
            PayloadTooLarge => "The request body is too large",
            UnsupportedMediaType => "Unsupported media type",
            RateLimited => "Too many requests",
            QuotaExceeded => "The quota for this period is spent",
            HeadersTooLarge => "The request headers are too large",
            NotImplemented => "Not implemented yet",
            UpstreamUnavailable => "The upstream API is unavailable",
            UpstreamTimeout => "The upstream API did not answer in time",
            Unavailable => "Service unavailable",
            Internal => "Internal error",
        }
    }

    /// The problem's `type`, a URI made from its code.
    pub fn type_uri(self) -> String {
        format!("urn:keygate:problem:{}", self.as_str())
    }

    /// The code a bare status stands for, for responses made outside keygate's handlers (a route
    /// that does not exist, a method not routed, a body over the limit).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => ProblemCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemCode::UnsupportedMediaType,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ProblemCode::HeadersTooLarge,
            StatusCode::UNAUTHORIZED => ProblemCode::Unauthenticated,
            StatusCode::FORBIDDEN => ProblemCode::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => ProblemCode::RateLimited,
            StatusCode::NOT_IMPLEMENTED => ProblemCode::NotImplemented,
            StatusCode::BAD_GATEWAY => ProblemCode::UpstreamUnavailable,
            StatusCode::GATEWAY_TIMEOUT => ProblemCode::UpstreamTimeout,
            StatusCode::SERVICE_UNAVAILABLE => ProblemCode::Unavailable,
            s if s.is_client_error() => ProblemCode::InvalidRequest,
            _ => ProblemCode::Internal,
        }
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// Where in the request: `allowlist[2]`, `permissions[0]`, `email`.
    #[schema(example = "permissions[0]")]
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem, as every non-2xx response carries it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:keygate:problem:unauthenticated",
    "title": "Authentication is required",
    "status": 401,
    "detail": "the credential has been revoked",
    "instance": "req_0f3kQ2mW9xYbN4",
    "code": "unauthenticated"
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id (also in the `X-Request-Id` header).
    pub instance: String,
    /// The stable, machine-readable name of the problem.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<String>,
}

/// Every error a handler or extractor can return. Boxed, so the `Result`s of the hot path stay
/// one pointer wide on the error side.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug, Clone)]
pub struct ErrorParts {
    pub code: ProblemCode,
    /// Shown to the client; never set for 5xx.
    pub detail: Option<Cow<'static, str>>,
    pub errors: Vec<FieldError>,
    pub missing_permissions: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Logged with the request id, never shown: what went wrong inside.
    pub internal: Option<String>,
    /// The body rendered once, for an error that is always the same but for the request id.
    fixed: Option<&'static FixedProblem>,
}

impl std::ops::Deref for ApiError {
    type Target = ErrorParts;
    fn deref(&self) -> &ErrorParts {
        &self.0
    }
}

impl ApiError {
    pub fn new(code: ProblemCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(ErrorParts {
            code,
            detail: Some(detail.into()),
            errors: Vec::new(),
            missing_permissions: Vec::new(),
            headers: Vec::new(),
            internal: None,
            fixed: None,
        }))
    }

    pub fn invalid(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ProblemCode::InvalidRequest, detail)
    }

    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        let mut error = Self::new(ProblemCode::InvalidRequest, detail);
        error.0.errors = errors;
        error
    }

    /// A 401 with the challenge RFC 6750 asks for. Only `Bearer` is offered, not `Basic`: a
    /// `Basic` challenge makes browsers (and the API explorer) pop up a login dialog.
    pub fn unauthenticated(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ProblemCode::Unauthenticated, detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keygate\""),
        )
    }

    /// [`ApiError::unauthenticated`] for a refusal said in the same words every time (an unknown
    /// credential, a revoked one): its body is rendered once, and each answer only splices in its
    /// request id.
    fn unauthenticated_fixed(fixed: &'static FixedProblem) -> Self {
        let mut error = Self::unauthenticated(Cow::Borrowed(fixed.detail.as_str()));
        error.0.fixed = Some(fixed);
        error
    }

    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ProblemCode::NotFound, detail)
    }

    /// A failure the client cannot fix: logged in full, answered without detail.
    pub fn internal(what: impl Into<String>) -> Self {
        let mut error = Self::new(ProblemCode::Internal, "");
        error.0.detail = None;
        error.0.internal = Some(what.into());
        error
    }

    pub fn unavailable(what: impl Into<String>) -> Self {
        let mut error = Self::new(
            ProblemCode::Unavailable,
            "the store is unreachable; retry later",
        );
        error.0.internal = Some(what.into());
        error
    }

    pub fn with_code(mut self, code: ProblemCode) -> Self {
        self.0.code = code;
        self.0.fixed = None;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The same problem, said otherwise.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.0.detail = Some(detail.into());
        self.0.fixed = None;
        self
    }

    /// The problem body, for a request with this id.
    pub fn problem(&self, request_id: &str) -> Problem {
        Problem {
            kind: self.code.type_uri(),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: self.detail.as_deref().map(str::to_owned),
            instance: request_id.to_owned(),
            code: self.code.as_str(),
            errors: self.errors.clone(),
            missing_permissions: self.missing_permissions.clone(),
        }
    }
}

impl ErrorParts {
    /// [`ApiError::problem`] as JSON, written straight from the error: a refusal on the hot path
    /// (an unknown credential, say) copies no string into a [`Problem`] to serialize it, and one
    /// said the same way every time is not serialized at all (see [`FixedProblem`]).
    fn body(&self, request_id: &str) -> serde_json::Result<Vec<u8>> {
        if let Some(body) = self.fixed.and_then(|fixed| fixed.body(request_id)) {
            return Ok(body);
        }
        let mut body = self.head()?;
        serde_json::to_writer(&mut body, request_id)?;
        self.write_tail(&mut body)?;
        Ok(body)
    }

    /// The body up to `instance`'s value: `…,"instance":`.
    fn head(&self) -> serde_json::Result<Vec<u8>> {
        let detail = self.detail.as_deref();
        let mut body = Vec::with_capacity(160 + detail.map_or(0, str::len));
        let code = self.code.as_str();
        body.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut body, &format_args!("urn:keygate:problem:{code}"))?;
        body.extend_from_slice(b",\"title\":");
        serde_json::to_writer(&mut body, self.code.title())?;
        body.extend_from_slice(b",\"status\":");
        serde_json::to_writer(&mut body, &self.code.status().as_u16())?;
        if let Some(detail) = detail {
            body.extend_from_slice(b",\"detail\":");
            serde_json::to_writer(&mut body, detail)?;
        }
        body.extend_from_slice(b",\"instance\":");
        Ok(body)
    }

    /// The body after `instance`'s value.
    fn write_tail(&self, body: &mut Vec<u8>) -> serde_json::Result<()> {
        body.extend_from_slice(b",\"code\":");
        serde_json::to_writer(&mut *body, self.code.as_str())?;
        if !self.errors.is_empty() {
            body.extend_from_slice(b",\"errors\":");
            serde_json::to_writer(&mut *body, &self.errors)?;
        }
        if !self.missing_permissions.is_empty() {
            body.extend_from_slice(b",\"missing_permissions\":");
            serde_json::to_writer(&mut *body, &self.missing_permissions)?;
        }
        body.push(b'}');
        Ok(())
    }
}

/// A problem that is the same on every answer but for its `instance` (the request id): its body
/// is rendered once, in two halves, and an answer is the two with the id between them — one
/// allocation of the exact size, nothing escaped or formatted per request. The refusals of the
/// verification hot paths (an unknown, expired or revoked credential) are answered so.
#[derive(Debug)]
pub(crate) struct FixedProblem {
    detail: String,
    /// Through `"instance":"`.
    head: Vec<u8>,
    /// From the id's closing quote to the end.
    tail: Vec<u8>,
}

impl FixedProblem {
    fn new(code: ProblemCode, detail: String) -> serde_json::Result<Self> {
        let parts = ErrorParts {
            code,
            detail: Some(Cow::Owned(detail.clone())),
            errors: Vec::new(),
            missing_permissions: Vec::new(),
            headers: Vec::new(),
            internal: None,
            fixed: None,
        };
        let mut head = parts.head()?;
        head.push(b'"');
        let mut tail = vec![b'"'];
        parts.write_tail(&mut tail)?;
        Ok(Self { detail, head, tail })
    }

    /// The body for `request_id`; `None` if the id would need escaping in JSON (ids keygate
    /// sends back never do: see `front::request_id`).
    fn body(&self, request_id: &str) -> Option<Vec<u8>> {
        let plain = request_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !plain {
            return None;
        }
        let mut body = Vec::with_capacity(self.head.len() + request_id.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(request_id.as_bytes());
        body.extend_from_slice(&self.tail);
        Some(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.code.status().into_response();
        for (name, value) in &self.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(what) => ApiError::unavailable(what),
            StoreError::AlreadyExists(field) => ApiError::invalid_fields(vec![FieldError {
                field: field.to_owned(),
                message: "is already taken".into(),
            }])
            .with_code(ProblemCode::AlreadyExists),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<Forbidden> for ApiError {
    fn from(forbidden: Forbidden) -> Self {
        let mut error = ApiError::new(ProblemCode::Forbidden, forbidden.to_string());
        error.0.missing_permissions = forbidden.missing;
        error
    }
}

impl From<keygate_core::jwt::KeyError> for ApiError {
    fn from(error: keygate_core::jwt::KeyError) -> Self {
        match error {
            keygate_core::jwt::KeyError::Store(error) => error.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<keygate_core::RandomError> for ApiError {
    fn from(error: keygate_core::RandomError) -> Self {
        ApiError::internal(format!("no randomness: {error}"))
    }
}

impl From<RuleError> for ApiError {
    fn from(error: RuleError) -> Self {
        match error {
            RuleError::Invalid(errors) => ApiError::invalid_fields(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: e.field,
                        message: e.message,
                    })
                    .collect(),
            ),
            RuleError::Escalation(escalation) => {
                let mut error =
                    ApiError::new(ProblemCode::PrivilegeEscalation, escalation.to_string());
                error.0.missing_permissions = escalation.beyond;
                error
            }
            RuleError::Forbidden { detail, missing } => {
                let mut error = ApiError::new(ProblemCode::Forbidden, detail);
                error.0.missing_permissions = missing;
                error
            }
            RuleError::NotFound(detail) => ApiError::not_found(detail),
            RuleError::Conflict { conflict, detail } => {
                let code = match conflict {
                    Conflict::RoleInUse => ProblemCode::RoleInUse,
                    Conflict::BuiltinRole => ProblemCode::BuiltinRole,
                    Conflict::CannotDeleteCurrentKey => ProblemCode::CannotDeleteCurrentKey,
                    Conflict::WouldLockOutCaller => ProblemCode::WouldLockOutCaller,
                    Conflict::AlreadyRolled => ProblemCode::AlreadyRolled,
                    Conflict::LastOwner => ProblemCode::LastOwner,
                };
                ApiError::new(code, detail)
            }
            RuleError::Internal(what) => ApiError::internal(what),
        }
    }
}

impl ApiError {
    /// A 429's headers (API.md §1): `Retry-After`, and the `RateLimit-*` fields of the limit
    /// reached.
    pub fn with_rate_limit(self, limit: u64, remaining: u64, reset_seconds: u64) -> Self {
        let fields = crate::notes::rate_limit_fields(limit, remaining, reset_seconds);
        fields.into_iter().fold(
            self.with_header(header::RETRY_AFTER, HeaderValue::from(reset_seconds)),
            |error, (name, value)| error.with_header(name, value),
        )
    }

    /// 429 `rate-limited` with `Retry-After`.
    pub fn rate_limited(status: RateLimitStatus) -> Self {
        let wait = status.retry_after_seconds.unwrap_or(1);
        ApiError::new(
            ProblemCode::RateLimited,
            format!(
                "this credential may make {} requests in its window; retry in {wait} s",
                status.limit
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(wait))
    }
}

impl From<SignInError> for ApiError {
    fn from(error: SignInError) -> Self {
        let message = error.to_string();
        match error {
            SignInError::Throttled {
                retry_after_seconds,
                limit,
            } => ApiError::new(ProblemCode::RateLimited, message).with_rate_limit(
                u64::from(limit),
                0,
                retry_after_seconds,
            ),
            SignInError::WrongCredentials
            | SignInError::UserDisabled
            | SignInError::TenantSuspended => ApiError::unauthenticated(message),
            SignInError::OrganizationRequired => {
                ApiError::new(ProblemCode::OrganizationRequired, message)
            }
            SignInError::AddressNotAllowed(_) => ApiError::new(ProblemCode::IpNotAllowed, message),
            SignInError::Store(e) => e.into(),
            SignInError::Random(e) => e.into(),
        }
    }
}

impl From<SignOutError> for ApiError {
    fn from(error: SignOutError) -> Self {
        match error {
            SignOutError::NotASession => ApiError::invalid(error.to_string()),
            SignOutError::Store(e) => e.into(),
            SignOutError::Random(e) => e.into(),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Credential(refusal) => refusal.into(),
            Denial::BasicUsername | Denial::Realm => ApiError::unauthenticated(denial.to_string()),
            Denial::ActingAsInvalid => ApiError::invalid(denial.to_string()),
            Denial::ActingAsForbidden(forbidden) | Denial::Forbidden(forbidden) => forbidden.into(),
            Denial::ActingAsUnknown(_) => ApiError::not_found(denial.to_string()),
            Denial::IpNotAllowed(_) => ApiError::new(ProblemCode::IpNotAllowed, denial.to_string()),
            Denial::RateLimited(status) => ApiError::rate_limited(status),
            Denial::QuotaExceeded { retry_after, .. } => {
                let error = ApiError::new(ProblemCode::QuotaExceeded, denial.to_string());
                match retry_after {
                    Some(seconds) => {
                        error.with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
                    }
                    None => error,
                }
            }
            Denial::Store(error) => error.into(),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        // The refusals said the same way every time, each rendered on its first use.
        static FIXED: [OnceLock<Option<FixedProblem>>; 5] = [const { OnceLock::new() }; 5];
        let slot = match refusal {
            Refusal::Store(error) => return error.into(),
            Refusal::NotFound => 0,
            Refusal::Expired => 1,
            Refusal::Revoked => 2,
            Refusal::TenantSuspended => 3,
            Refusal::UserDisabled => 4,
            other => return ApiError::unauthenticated(other.to_string()),
        };
        let fixed = FIXED[slot].get_or_init(|| {
            FixedProblem::new(ProblemCode::Unauthenticated, refusal.to_string()).ok()
        });
        match fixed {
            Some(fixed) => ApiError::unauthenticated_fixed(fixed),
            None => ApiError::unauthenticated(refusal.to_string()),
        }
    }
}

/// Marks a response that carries an error body of its own (the OAuth endpoints answer RFC 6749
/// errors, which OAuth clients expect instead of problems): it leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct OwnErrorBody;

/// Writes the problem body of an error response, with the request id as `instance`.
pub fn render(mut response: Response, id: &str, method: &Method, body_limit: usize) -> Response {
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if response.extensions().get::<OwnErrorBody>().is_some() => return response,
        None if response.status().is_client_error() || response.status().is_server_error() => {
            let is_problem = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if is_problem {
                return response;
            }
            bare_status_error(response.status(), method, body_limit)
        }
        None => return response,
    };
    if let Some(internal) = &error.internal {
        tracing::error!(request_id = id, error = %internal, "request failed");
    }
    let body = match error.body(id) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(request_id = id, error = %e, "cannot render a problem");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let (mut parts, _) = response.into_parts();
    parts.status = error.code.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, Body::from(body))
}

fn bare_status_error(status: StatusCode, method: &Method, body_limit: usize) -> ApiError {
    let code = ProblemCode::for_status(status);
    match code {
        ProblemCode::NotFound => ApiError::not_found("there is no such route; see /openapi.json"),
        ProblemCode::MethodNotAllowed => ApiError::new(
            code,
            format!("this path does not accept {method}; the Allow header lists what it does"),
        ),
        ProblemCode::PayloadTooLarge => {
            ApiError::new(code, format!("the request body exceeds {body_limit} bytes"))
        }
        ProblemCode::Internal => ApiError::internal(format!("bare {status} response")),
        _ => ApiError::new(
            code,
            status.canonical_reason().unwrap_or("error").to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_documented_statuses() {
        for (code, status) in [
            (ProblemCode::AmbiguousCredentials, 400),
            (ProblemCode::IpNotAllowed, 403),
            (ProblemCode::WouldLockOutCaller, 409),
            (ProblemCode::AlreadyRolled, 409),
            (ProblemCode::LastOwner, 409),
            (ProblemCode::HeadersTooLarge, 431),
            (ProblemCode::NotImplemented, 501),
            (ProblemCode::UpstreamUnavailable, 502),
            (ProblemCode::UpstreamTimeout, 504),
        ] {
            assert_eq!(code.status().as_u16(), status, "{}", code.as_str());
        }
        assert_eq!(
            ProblemCode::for_status(StatusCode::METHOD_NOT_ALLOWED),
            ProblemCode::MethodNotAllowed
        );
        assert_eq!(
            ProblemCode::for_status(StatusCode::IM_A_TEAPOT),
            ProblemCode::InvalidRequest
        );
    }

    #[test]
    fn the_written_body_is_the_problem_serialized() {
        let mut forbidden = ApiError::new(ProblemCode::Forbidden, "needs \"tokens:write\"");
        forbidden.0.missing_permissions = vec!["tokens:write".into(), "users:read".into()];
        for error in [
            ApiError::unauthenticated("the credential is not known"),
            ApiError::internal("hidden"),
            ApiError::invalid_fields(vec![FieldError {
                field: "data[0].subnet".into(),
                message: "is taken \u{e9}".into(),
            }]),
            forbidden,
            ApiError::from(Refusal::NotFound),
            ApiError::from(Refusal::Revoked),
            ApiError::from(Refusal::NotFound).with_code(ProblemCode::Forbidden),
        ] {
            // The second id is not one keygate sends back, but a body must stay JSON whatever
            // it is given.
            for id in ["req_1:x", "odd \"id\"\\"] {
                let expected = serde_json::to_vec(&error.problem(id)).unwrap();
                assert_eq!(
                    String::from_utf8(error.body(id).unwrap()).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }

    #[test]
    fn refusals_said_the_same_way_every_time_are_rendered_once() {
        let unknown = ApiError::from(Refusal::NotFound);
        let again = ApiError::from(Refusal::NotFound);
        let (Some(first), Some(second)) = (unknown.fixed, again.fixed) else {
            panic!("an unknown credential's refusal has a fixed body");
        };
        assert!(std::ptr::eq(first, second));
        assert_eq!(
            unknown.detail.as_deref(),
            Some("the credential is not known")
        );
        assert!(
            unknown
                .headers
                .iter()
                .any(|(name, _)| name == header::WWW_AUTHENTICATE)
        );
        assert!(ApiError::from(Refusal::Revoked).fixed.is_some());
        // Changing the code would make the rendered body wrong: it is dropped.
        assert!(unknown.with_code(ProblemCode::Forbidden).fixed.is_none());
    }

    #[test]
    fn store_outages_are_503_and_internal_detail_stays_inside() {
        let unavailable = ApiError::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(unavailable.code, ProblemCode::Unavailable);
        let problem = unavailable.problem("req_1");
        assert!(!problem.detail.unwrap_or_default().contains("refused"));

        let internal = ApiError::from(StoreError::Internal("SELECT failed near x".into()));
        assert_eq!(internal.code, ProblemCode::Internal);
        assert!(internal.problem("req_1").detail.is_none());
        assert_eq!(
            internal.internal.as_deref(),
            Some("store failure: SELECT failed near x")
        );

        let taken = ApiError::from(StoreError::AlreadyExists("slug"));
        assert_eq!(taken.code, ProblemCode::AlreadyExists);
    }
}
