//! JSON shapes shared by several endpoints. Typed structs, never `serde_json::Value`, so the
//! OpenAPI document is generated from the same types the server writes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_core::model::Tenant;
use keygate_core::permission::PermissionSet;
use keygate_core::quota::{QuotaRequest, StoredQuota};
use keygate_core::reserve::Credits;
use keygate_core::verified::{Principal, TenantSummary};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant (API.md §3).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantView {
    #[schema(example = "tnt_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    pub name: String,
    #[schema(example = "acme")]
    pub slug: String,
    pub parent_id: Option<String>,
    #[schema(example = "active")]
    pub status: &'static str,
    #[schema(value_type = String, format = DateTime, example = "2026-11-22T10:00:00Z")]
    pub created_at: keygate_core::Timestamp,
    /// The pool the tenant's credentials and its descendants' share, set by an ancestor.
    pub quota: Option<QuotaView>,
    /// What its credentials reported as leaked come to: `revoke` or `notify` (API.md §15).
    #[schema(example = "revoke")]
    pub leak_policy: &'static str,
}

impl TenantView {
    /// `quota` as [`QuotaReader::view`] shows the tenant's.
    pub fn new(tenant: &Tenant, quota: Option<QuotaView>) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            slug: tenant.slug.as_str().to_owned(),
            parent_id: tenant.parent_id.as_ref().map(ToString::to_string),
            status: tenant.status.as_str(),
            created_at: tenant.created_at,
            quota,
            leak_policy: tenant.leak_policy.as_str(),
        }
    }
}

/// A quota as a request gives it (API.md §13).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"limit": 100000, "period": "month"}))]
pub struct QuotaBody {
    /// Requests (or units of cost) per period, 1 to 2^53 - 1.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_u64, example = 100_000)]
    pub limit: u64,
    /// `hour`, `day`, `month` or `total` (one-off credits that never refill).
    #[schema(example = "month")]
    pub period: String,
    /// When the first period starts (default: now); periods repeat from it, in UTC.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub anchor: Option<keygate_core::Timestamp>,
}

impl From<QuotaBody> for QuotaRequest {
    fn from(body: QuotaBody) -> Self {
        Self {
            limit: body.limit,
            period: body.period,
            anchor: body.anchor,
        }
    }
}

/// A quota as reads show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaView {
    #[schema(example = 100_000)]
    pub limit: u64,
    #[schema(example = "month")]
    pub period: &'static str,
    #[schema(value_type = String, format = DateTime, example = "2026-12-01T00:00:00Z")]
    pub anchor: keygate_core::Timestamp,
    /// Spent in the current period. With several nodes, also what the others hold in reserve
    /// (at most 64 each) until they spend it or give it back.
    #[schema(example = 1_250)]
    pub used: u64,
    #[schema(example = 98_750)]
    pub remaining: u64,
    /// When the next period starts; `null` for `total`.
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-01-01T00:00:00Z")]
    pub resets_at: Option<keygate_core::Timestamp>,
}

/// Reads quotas as this node sees them at one moment: the stored count less what this node holds
/// in reserve, which it has not spent.
pub struct QuotaReader<'a> {
    pub credits: &'a Credits,
    pub now: keygate_core::Timestamp,
}

impl QuotaReader<'_> {
    pub fn view(&self, stored: Option<&StoredQuota>) -> Option<QuotaView> {
        stored.map(|stored| self.view_of(stored))
    }

    pub fn view_of(&self, stored: &StoredQuota) -> QuotaView {
        let held = self.credits.held(&stored.subject, &stored.quota, self.now);
        let status = stored.status_at(self.now, held);
        QuotaView {
            limit: status.limit,
            period: stored.quota.period.as_str(),
            anchor: stored.quota.anchor,
            used: status.used,
            remaining: status.remaining,
            resets_at: status.resets_at,
        }
    }
}

/// A tenant as a credential's organization: id, name and slug.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrganizationView {
    #[schema(example = "tnt_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    pub name: String,
    #[schema(example = "root")]
    pub slug: String,
}

impl From<&TenantSummary> for OrganizationView {
    fn from(tenant: &TenantSummary) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            slug: tenant.slug.clone(),
        }
    }
}

/// Who a credential acts for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrincipalView {
    /// `user`, `service_token`, `account_key` or `oauth_client`.
    #[serde(rename = "type")]
    #[schema(example = "service_token")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl From<Principal<'_>> for PrincipalView {
    fn from(principal: Principal<'_>) -> Self {
        Self {
            kind: principal.kind.as_str(),
            id: principal.id.to_owned(),
            name: principal.name.to_owned(),
            email: principal.email.map(str::to_owned),
        }
    }
}

/// A permission set as the wire shows it: sorted names.
pub fn permission_names(permissions: &PermissionSet) -> Vec<String> {
    permissions.iter().map(|p| p.as_str().to_owned()).collect()
}

/// Every list answers `{"data": [...], "next_cursor": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> List<T> {
    pub fn from_paged<S>(paged: keygate_core::store::Paged<S>, view: impl Fn(S) -> T) -> Self {
        Self {
            data: paged.items.into_iter().map(view).collect(),
            next_cursor: paged.next_cursor,
        }
    }
}

/// A non-critical remark on a 2xx response (API.md §1).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Warning {
    #[schema(example = "normalised")]
    pub code: &'static str,
    pub detail: String,
}

impl Warning {
    /// An allowlist entry stored as its network.
    pub fn normalised(remark: &keygate_core::allowlist::Normalised) -> Self {
        Self {
            code: "normalised",
            detail: format!(
                "{}: `{}` has host bits set and is stored as {}",
                remark.field, remark.given, remark.stored
            ),
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(usize)]
pub enum VerifyCode {
    Valid,
    Malformed,
    NotFound,
    Expired,
    Revoked,
    IpNotAllowed,
    Forbidden,
    RateLimited,
    QuotaExceeded,
}

impl VerifyCode {
    pub const ALL: [VerifyCode; 9] = [
        VerifyCode::Valid,
        VerifyCode::Malformed,
        VerifyCode::NotFound,
        VerifyCode::Expired,
        VerifyCode::Revoked,
        VerifyCode::IpNotAllowed,
        VerifyCode::Forbidden,
        VerifyCode::RateLimited,
        VerifyCode::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::IpNotAllowed => "IP_NOT_ALLOWED",
            VerifyCode::Forbidden => "FORBIDDEN",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::QuotaExceeded => "QUOTA_EXCEEDED",
        }
    }
}

/// A 201 whose body holds a secret shown this once (a token's, a key's, a client's, a webhook's
/// signing secret, a first password): `Cache-Control: no-store`, so that no cache on the way or
/// in the browser keeps it, as the token endpoint's answers are not kept either.
pub struct CreatedSecret<T>(pub T);

impl<T: Serialize> IntoResponse for CreatedSecret<T> {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::CREATED, axum::Json(self.0)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
