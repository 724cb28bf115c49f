//! `POST /v1/verify` (API.md §9): other services ask whether a credential is good and may do
//! something. The answer is a 200 whatever the verdict; only the caller's own problems (its
//! credential, its permission, a malformed request) are errors.
//!
//! A caller only learns about credentials of its own tenant and its descendants; anything else is
//! `NOT_FOUND`, exactly as if it did not exist.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{self, HeaderValue, header};
use axum::response::Response;
use hyper::body::Incoming;
use keygate_core::Timestamp;
use keygate_core::access::Caller;
use keygate_core::access::perm;
use keygate_core::gate::{self, Denial};
use keygate_core::reserve::MAX_COST;
use keygate_core::verified::Verified;
use keygate_core::verify::Refusal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Asker, authenticate_asker};
use crate::json::{self, Json};
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;
use crate::views::{OrganizationView, PrincipalView, VerifyCode, permission_names};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"credential": "kg_live_…", "permissions": ["tokens:read"], "ip": "203.0.113.7"}))]
pub struct VerifyRequest {
    /// The credential to check, exactly as the client presented it.
    #[schema(example = "kg_live_…")]
    pub credential: String,
    /// Permissions the credential must hold for the answer to be `VALID`.
    #[serde(default)]
    #[schema(example = json!(["zones:read"]))]
    pub permissions: Vec<String>,
    /// The address the client connected from, checked against the credential's allowed networks.
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub ip: Option<String>,
    /// What the request spends from the credential's quotas, 0 to 2^32 (default 1). A verdict
    /// other than `VALID` spends nothing.
    #[schema(minimum = 0, maximum = 4_294_967_296_u64, example = 1)]
    pub cost: Option<u64>,
}

/// Where the credential's tightest quota stands after this request.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyQuota {
    #[schema(example = 100_000)]
    pub limit: u64,
    #[schema(example = 98_750)]
    pub remaining: u64,
    /// When it refills; `null` for a `total` quota.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resets_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub code: VerifyCode,
    /// Why, in words, when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub tenant: Option<OrganizationView>,
    pub acting_tenant: Option<OrganizationView>,
    pub principal: Option<PrincipalView>,
    pub credential_id: Option<String>,
    pub permissions: Vec<String>,
    /// With `FORBIDDEN`: the requested permissions the credential lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// With `VALID`, where a quota applies: the tightest of the credential's and its
    /// organization's, after this request. With `QUOTA_EXCEEDED`: the quota that refused it, what
    /// is left of it (less than the cost), and when it refills.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<VerifyQuota>,
}

impl VerifyResponse {
    /// A verdict about a credential that was found: whose it is and what it holds.
    fn about(
        verified: &Verified,
        code: VerifyCode,
        detail: Option<String>,
        missing_permissions: Vec<String>,
    ) -> Self {
        Self {
            valid: code == VerifyCode::Valid,
            code,
            detail,
            tenant: Some(OrganizationView::from(verified.tenant())),
            acting_tenant: None,
            principal: Some(PrincipalView::from(verified.principal())),
            credential_id: Some(verified.id().to_string()),
            permissions: permission_names(&verified.permissions),
            missing_permissions,
            expires_at: verified.expires_at(),
            quota: None,
        }
    }

    /// A valid verdict before the quota is known.
    fn valid(verified: &Verified) -> Self {
        Self::about(verified, VerifyCode::Valid, None, Vec::new())
    }

    fn refused(code: VerifyCode, detail: String) -> Self {
        Self {
            valid: false,
            code,
            detail: Some(detail),
            tenant: None,
            acting_tenant: None,
            principal: None,
            credential_id: None,
            permissions: Vec::new(),
            missing_permissions: Vec::new(),
            expires_at: None,
            quota: None,
        }
    }
}

/// Verify a credential for another service
///
/// Verify a credential for another service. Needs `credentials:verify`.
#[utoipa::path(post, path = "/v1/verify", tag = "verification", operation_id = "verifyCredential",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict, valid or not", body = VerifyResponse),
        (status = 400, description = "Malformed request, unknown permission or invalid ip"),
        (status = 403, description = "The caller lacks credentials:verify"),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    Asker(caller): Asker,
    Json(request): Json<VerifyRequest>,
) -> Result<Response, ApiError> {
    verdict(&state, caller, request).await
}

/// `POST /v1/verify` as the front service answers it, without the router (it is a hot path, like
/// forward-auth): the asking service authenticated first, then the body read and checked as the
/// JSON extractor does, then the verdict.
pub async fn answer(
    state: &AppState,
    request: http::Request<Incoming>,
    client: IpAddr,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let caller = authenticate_asker(state, &parts.headers, Some(client)).await?;
    let limit = state.config().limits.body_bytes;
    let request = json::read(&parts.headers, body, limit).await?;
    verdict(state, caller, request).await
}

/// The verdict as the answer's JSON body, counted by code.
async fn verdict(
    state: &AppState,
    caller: Caller,
    request: VerifyRequest,
) -> Result<Response, ApiError> {
    let (code, body) = decide(state, caller, request).await?;
    state.metrics().count_verification(code);
    // Built as it is sent: `(headers, body).into_response()` set the bytes' own content type
    // first and then replaced it, two inserts into the map.
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn decide(
    state: &AppState,
    caller: Caller,
    request: VerifyRequest,
) -> Result<(VerifyCode, Bytes), ApiError> {
    let grant = caller.require::<perm::CredentialsVerify>()?;
    let ip = validate(state, &request)?;

    // The verified credential's own request, made through the asking service: admitted (and
    // counted) by the same gate as any other, within the asker's tenants.
    let presented = gate::Presented {
        credential: &request.credential,
        ..Default::default()
    };
    let now_millis = state.clock().now_millis();
    let asked = gate::Request {
        client: ip,
        required: &request.permissions,
        within: Some(grant.tenant_id()),
        now_millis,
        counted: true,
        cost: Some(request.cost.unwrap_or(1)),
    };
    let denied = match state.gate().admit(presented, asked).await {
        Ok(admission) => {
            let verified = admission.caller.verified();
            // Rendered once per cached verification, and kept with it (so only for credentials
            // asked about here): the same for every valid answer about it.
            let valid = verified
                .rendered(|verified| render(&VerifyResponse::valid(verified)))
                .cloned()
                .unwrap_or_else(|| render(&VerifyResponse::valid(verified)));
            let body = match admission.quota {
                None => valid,
                Some(q) => with_quota(
                    &valid,
                    &VerifyQuota {
                        limit: q.limit,
                        remaining: q.remaining,
                        resets_at: q.resets_at,
                    },
                ),
            };
            return Ok((VerifyCode::Valid, body));
        }
        Err(denied) => denied,
    };
    let code = match &denied.denial {
        Denial::Store(_) => return Err(denied.denial.into()),
        Denial::Credential(refusal) => match refusal {
            Refusal::NotFound => VerifyCode::NotFound,
            Refusal::Expired => VerifyCode::Expired,
            Refusal::Revoked | Refusal::TenantSuspended | Refusal::UserDisabled => {
                VerifyCode::Revoked
            }
            Refusal::Format(_)
            | Refusal::WrongPlace(_)
            | Refusal::AccessToken(_)
            | Refusal::Store(_) => VerifyCode::Malformed,
        },
        Denial::IpNotAllowed(_) => VerifyCode::IpNotAllowed,
        Denial::RateLimited(_) => VerifyCode::RateLimited,
        Denial::QuotaExceeded { .. } => VerifyCode::QuotaExceeded,
        Denial::Forbidden(_) => VerifyCode::Forbidden,
        // Nothing here presents a Basic username, a realm or as-tenant.
        Denial::BasicUsername
        | Denial::Realm
        | Denial::ActingAsInvalid
        | Denial::ActingAsForbidden(_)
        | Denial::ActingAsUnknown(_) => VerifyCode::Malformed,
    };
    let detail = match &denied.denial {
        Denial::IpNotAllowed(_) if request.ip.is_none() => {
            "the credential may be used from some networks only: give the client's address as \
             `ip`"
                .to_owned()
        }
        Denial::IpNotAllowed(_) => {
            "the client address is outside the credential's allowed networks".to_owned()
        }
        Denial::RateLimited(_) => "the credential is over its rate limit".to_owned(),
        other => other.to_string(),
    };
    let spent = match &denied.denial {
        Denial::QuotaExceeded {
            limit,
            left,
            retry_after,
            ..
        } => Some(VerifyQuota {
            limit: *limit,
            remaining: *left,
            resets_at: retry_after.map(|seconds| {
                Timestamp::from_unix(now_millis.div_euclid(1000))
                    .saturating_add(Duration::from_secs(seconds))
            }),
        }),
        _ => None,
    };
    let missing = match denied.denial {
        Denial::Forbidden(forbidden) => forbidden.missing,
        _ => Vec::new(),
    };
    // Past the credential's own checks, the answer says whose it is.
    let answer = match (code, denied.known) {
        (
            VerifyCode::IpNotAllowed
            | VerifyCode::RateLimited
            | VerifyCode::QuotaExceeded
            | VerifyCode::Forbidden,
            Some(verified),
        ) => VerifyResponse {
            quota: spent,
            ..VerifyResponse::about(&verified, code, Some(detail), missing)
        },
        _ => VerifyResponse::refused(code, detail),
    };
    Ok((code, render(&answer)))
}

/// A verdict's JSON. It holds strings, numbers and timestamps only, which always serialize.
fn render(answer: &VerifyResponse) -> Bytes {
    serde_json::to_vec(answer)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// A valid answer rendered without a quota, with one: `quota` is its last field, so it goes
/// before the closing brace, exactly where serializing the whole answer would put it.
fn with_quota(valid: &[u8], quota: &VerifyQuota) -> Bytes {
    let Some(open) = valid.strip_suffix(b"}") else {
        return Bytes::copy_from_slice(valid);
    };
    let mut body = Vec::with_capacity(valid.len() + 96);
    body.extend_from_slice(open);
    body.extend_from_slice(b",\"quota\":");
    if serde_json::to_writer(&mut body, quota).is_err() {
        return Bytes::copy_from_slice(valid);
    }
    body.push(b'}');
    Bytes::from(body)
}

/// Unknown permissions and unparsable addresses are the caller's bug: a 400 naming each.
fn validate(state: &AppState, request: &VerifyRequest) -> Result<Option<IpAddr>, ApiError> {
    let mut errors: Vec<FieldError> = request
        .permissions
        .iter()
        .enumerate()
        .filter(|(_, p)| !state.catalog().contains(p))
        .map(|(i, p)| FieldError {
            field: format!("permissions[{i}]"),
            message: format!("`{p}` is not a known permission"),
        })
        .collect();
    if request.cost.is_some_and(|cost| cost > MAX_COST) {
        errors.push(FieldError {
            field: "cost".into(),
            message: format!("must be a whole number from 0 to {MAX_COST}"),
        });
    }
    let ip = match request.ip.as_deref().map(str::parse::<IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            errors.push(FieldError {
                field: "ip".into(),
                message: "is not an IPv4 or IPv6 address".into(),
            });
            None
        }
    };
    if errors.is_empty() {
        Ok(ip)
    } else {
        Err(ApiError::invalid_fields(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_spliced_where_serializing_the_whole_answer_puts_it() {
        let mut answer = VerifyResponse::refused(VerifyCode::Valid, "x".into());
        answer.detail = None;
        answer.valid = true;
        answer.permissions = vec!["zones:read".into()];
        let without = render(&answer);
        answer.quota = Some(VerifyQuota {
            limit: 100,
            remaining: 7,
            resets_at: None,
        });
        let spliced = with_quota(
            &without,
            &VerifyQuota {
                limit: 100,
                remaining: 7,
                resets_at: None,
            },
        );
        assert_eq!(spliced, render(&answer));
        let parsed: serde_json::Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(parsed["quota"]["remaining"], 7);
    }
}
