//! The API explorer at `/docs`: Swagger UI, vendored into the binary so that nothing is fetched
//! from anywhere but keygate, reading `/openapi.json`.
//!
//! It is started by keygate's own initializer (`explorer/initializer.js`) rather than the stock
//! one, for two reasons. The stock one has Swagger UI send the document's URL to
//! validator.swagger.io, from any host but localhost. And a page cannot put a `Cookie` header on a
//! request, so without help the `api_access_token` cookie would be the one credential place of
//! API.md §2 that "Try it out" cannot use: the initializer sets it as a cookie of this origin for
//! the requests that carry it.

use axum::Router;
use axum::http::header;
use axum::routing::get;
use utoipa_swagger_ui::SwaggerUi;

const INITIALIZER: &str = include_str!("explorer/initializer.js");

/// `/docs` (the explorer) and `/openapi.json` (`document`).
pub fn router<S: Clone + Send + Sync + 'static>(document: utoipa::openapi::OpenApi) -> Router<S> {
    Router::new()
        .route(
            "/docs/swagger-initializer.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], INITIALIZER) }),
        )
        .merge(SwaggerUi::new("/docs").url("/openapi.json", document))
}
