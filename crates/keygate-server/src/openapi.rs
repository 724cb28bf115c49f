//! The OpenAPI 3.1 document, generated from the handlers and types themselves (utoipa), so the
//! routes and their documentation cannot drift apart.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "API access platform: tenants, users, roles, tokens, account keys, \
            IP allowlists, OAuth clients, audit log, and verification for other services.\n\n\
            Every error is an RFC 9457 problem (`application/problem+json`) with a stable `code`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::routes::forward_auth::get_below,
        crate::routes::forward_auth::post_below,
        crate::routes::forward_auth::put_below,
        crate::routes::forward_auth::patch_below,
        crate::routes::forward_auth::delete_below,
        crate::routes::forward_auth::head_below,
        crate::routes::forward_auth::options_below,
    ),
    modifiers(&SecuritySchemes),
    // Every operation takes a credential in any of the four places, unless it says otherwise.
    security(("bearer" = []), ("basic" = []), ("apikey" = []), ("cookie" = [])),
    tags(
        (name = "identity", description = "Who a credential is and what it may do"),
        (name = "sessions", description = "Signing in and out with email and password"),
        (name = "tenants", description = "Customers and a reseller's sub-customers; act in one with `as-tenant`"),
        (name = "users", description = "People who sign in, each with one role"),
        (name = "roles", description = "Named sets of permissions, and the permission catalog"),
        (name = "tokens", description = "Personal and service tokens"),
        (name = "account", description = "Account keys (rotation) and the IP restriction"),
        (name = "audit", description = "What every credential did: the audit log and its export"),
        (name = "oauth", description = "OAuth 2.0 client credentials: clients, the token endpoint (form-encoded, RFC 6749 errors), revocation, introspection, keys and metadata"),
        (name = "verification", description = "Checking credentials for other services"),
        (name = "operations", description = "Health and readiness"),
    ),
)]
pub struct ApiDoc;

/// The four places a credential can be sent from the explorer (API.md §2). `X-API-Key` works
/// the same as `apikey` and is documented in its description.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <credential>` (or the `Token` scheme)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Username: the tenant's slug (its realm). Password: the credential.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "apikey",
                "`apikey: <credential>`; `X-API-Key` is accepted the same way",
            ))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "api_access_token",
                "Cookie `api_access_token=<credential>`",
            ))),
        );
    }
}
