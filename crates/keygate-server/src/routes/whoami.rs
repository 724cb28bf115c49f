//! `GET /v1/whoami` (API.md §3): what the presented credential is and may do.

use axum::Json;
use keygate_core::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::views::{OrganizationView, PrincipalView, permission_names};

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    #[schema(example = "tok_0MqX1z8a9bCdEfGhIjKlMn")]
    pub id: String,
    /// `personal`, `service`, `account_key`, `session` or `access_token` (an OAuth access token,
    /// whose id is its `jti`).
    #[schema(example = "service")]
    pub kind: &'static str,
    pub name: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The credential's tenant.
    pub organization: OrganizationView,
    pub principal: PrincipalView,
    pub credential: CredentialView,
    /// Everything the credential may do, expanded from its role.
    #[schema(example = json!(["tokens:read", "tokens:write"]))]
    pub permissions: Vec<String>,
    /// The tenant acted for with `as-tenant`, if any.
    pub acting_as: Option<OrganizationView>,
}

/// Who am I
///
/// Who am I? Answers for any valid credential.
#[utoipa::path(get, path = "/v1/whoami", tag = "identity", operation_id = "whoami",
    responses(
        (status = 200, description = "The credential and what it may do", body = WhoAmI),
    ))]
pub async fn whoami(Authenticated(caller): Authenticated) -> Json<WhoAmI> {
    let verified = caller.verified();
    Json(WhoAmI {
        organization: OrganizationView::from(verified.tenant()),
        principal: PrincipalView::from(verified.principal()),
        credential: CredentialView {
            id: verified.id().to_string(),
            kind: verified.kind().as_str(),
            name: verified.name().to_string(),
            expires_at: verified.expires_at(),
        },
        permissions: permission_names(&verified.permissions),
        acting_as: caller.acting_as().map(OrganizationView::from),
    })
}
