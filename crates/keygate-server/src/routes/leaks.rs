//! Leaked credentials (API.md §15): reports from GitHub's secret-scanning partner programme, and
//! the public revocation endpoint, where whoever holds a secret may kill it. Neither takes a
//! credential. Each credential of this deployment reported is handled by its tenant's
//! `leak_policy` (see the store's `report_leak`); what is not one of ours is left alone, and the
//! answer never says whose a credential was.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use keygate_core::credential::CredentialHash;
use keygate_core::model::RequestMeta;
use keygate_core::store::{LeakHandled, LeakReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::json::Json;
use crate::problem::{ApiError, FieldError, ProblemCode};
use crate::request::{ClientIp, Meta};
use crate::state::AppState;

/// The most credentials one revocation request may name.
pub const MAX_REVOKED_PER_CALL: usize = 1000;

/// One match in a GitHub report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GithubMatch {
    /// The string that matched the registered pattern.
    pub token: String,
    /// The pattern's name as registered with GitHub.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it was found.
    pub url: Option<String>,
    /// What kind of place that is (`content`, `commit`, `npm`, …).
    pub source: Option<String>,
}

/// A GitHub report: the matches found, in one signed body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!([{"token": "kg_live_…", "type": "keygate_token",
    "url": "https://github.com/acme/app/blob/4f2a/.env", "source": "content"}]))]
pub struct GithubReport(pub Vec<GithubMatch>);

/// GitHub's feedback on one match.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLabel {
    /// The hex SHA-256 of the token, so the feedback carries no secret.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` for a credential this keygate issued, else `false_positive`.
    #[schema(example = "true_positive")]
    pub label: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"credentials": ["kg_live_…"]}))]
pub struct RevokeRequest {
    /// Credentials of this deployment to revoke (at most 1000); anything else is ignored.
    #[schema(max_items = 1000)]
    pub credentials: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeAccepted {
    /// How many credentials the request named. It never says which were known.
    pub received: usize,
}

/// Handles one reported text: `Ok(true)` if it was a credential of this deployment.
async fn report(
    state: &AppState,
    text: &str,
    url: Option<&str>,
    (source, status): (&str, u16),
    meta: &RequestMeta,
) -> Result<bool, ApiError> {
    // Only this deployment's format can be ours: the checksum rules out most others unread.
    if state.gate().verifier().format().parse(text).is_err() {
        return Ok(false);
    }
    let handled = state
        .store()
        .report_leak(&LeakReport {
            hash: CredentialHash::of(text),
            url,
            source,
            status,
            at: state.clock().now(),
            meta,
        })
        .await?;
    match &handled {
        LeakHandled::Unknown => return Ok(false),
        LeakHandled::Revoked { id, kind } => {
            tracing::warn!(credential = %id, kind = kind.as_str(), source, "revoked a leaked credential")
        }
        LeakHandled::Notified { id, kind } => tracing::warn!(
            credential = %id, kind = kind.as_str(), source,
            "a credential was reported leaked; its tenant's policy keeps it working"
        ),
        LeakHandled::AlreadyDead { .. } => {}
    }
    Ok(true)
}

/// Report leaked credentials (GitHub)
///
/// GitHub's secret-scanning partner endpoint: a signed report of credentials found in public
/// places. The signature (`Github-Public-Key-Signature`, ECDSA P-256 over the raw body) is
/// checked against the key `Github-Public-Key-Identifier` names, from
/// `leaks.github_public_keys_path`; a report that does not verify changes nothing. The answer is
/// GitHub's feedback, one label per match.
#[utoipa::path(post, path = "/v1/leaks/github", tag = "leaks", operation_id = "reportGithubLeaks",
    security(()),
    request_body = GithubReport,
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "The key the report is signed with"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 of the ASN.1 DER ECDSA signature of the raw body"),
    ),
    responses(
        (status = 200, body = Vec<GithubLabel>),
        (status = 401, description = "No keys are configured, the key is unknown, or the signature does not verify"),
    ))]
pub async fn github(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Vec<GithubLabel>>, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let keys = state.github_keys().ok_or_else(|| {
        ApiError::unauthenticated(
            "this keygate has no GitHub keys configured (leaks.github_public_keys_path), so no report can be verified",
        )
    })?;
    keys.verify(
        &header("github-public-key-identifier"),
        &header("github-public-key-signature"),
        &body,
    )
    .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
    let GithubReport(matches) = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "not a report of GitHub's secret-scanning format: {e}"
        ))
    })?;
    let mut labels = Vec::with_capacity(matches.len());
    for m in &matches {
        let known = report(&state, &m.token, m.url.as_deref(), ("github", 200), &meta).await?;
        labels.push(GithubLabel {
            token_hash: CredentialHash::of(&m.token).to_hex(),
            token_type: m.kind.clone(),
            label: if known {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Ok(axum::Json(labels))
}

/// Revoke credentials you found
///
/// Whoever holds a credential may kill it: name up to 1000 and each one this keygate issued is
/// handled as leaked (revoked, unless its tenant's `leak_policy` is `notify`). Always 202,
/// whatever they were. No credential needed; 60 requests an hour per address.
#[utoipa::path(post, path = "/v1/credentials/revoke", tag = "leaks",
    operation_id = "revokeCredentials", security(()),
    request_body = RevokeRequest,
    responses(
        (status = 202, body = RevokeAccepted),
        (status = 400, description = "More than 1000 credentials"),
        (status = 429, description = "More than 60 requests this hour from this address"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Meta(meta): Meta,
    ip: Option<axum::Extension<ClientIp>>,
    Json(request): Json<RevokeRequest>,
) -> Result<(StatusCode, axum::Json<RevokeAccepted>), ApiError> {
    if let Some(axum::Extension(ClientIp(ip))) = ip {
        let status = state.revoke_limiter().check(ip, state.clock().now_millis());
        if let Some(wait) = status.retry_after_seconds {
            return Err(ApiError::new(
                ProblemCode::RateLimited,
                format!("an address may make 60 revocation requests an hour; retry in {wait} s"),
            )
            .with_rate_limit(u64::from(status.limit), 0, wait));
        }
    }
    if request.credentials.len() > MAX_REVOKED_PER_CALL {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: "credentials".into(),
            message: format!(
                "at most {MAX_REVOKED_PER_CALL} per request, got {}",
                request.credentials.len()
            ),
        }]));
    }
    for text in &request.credentials {
        report(&state, text.trim(), None, ("revoke_api", 202), &meta).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RevokeAccepted {
            received: request.credentials.len(),
        }),
    ))
}
