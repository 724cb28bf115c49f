//! Liveness and readiness, for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{ApiError, ProblemCode};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Check that the process is alive
///
/// Whether the process is alive. Never touches the store.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Check that this node can serve requests
///
/// Whether this node can serve requests: the store answers and it is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store is unreachable or the server is shutting down"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::new(
            ProblemCode::Unavailable,
            "the server is shutting down",
        ));
    }
    state.store().ping().await?;
    Ok(Json(Health { status: "ready" }))
}
