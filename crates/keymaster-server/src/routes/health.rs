//! Service endpoints: liveness, readiness, metrics, the OpenAPI description, and the
//! problem+json answers for unknown paths and methods.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::routes::ApiDoc;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process is up")))]
/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "The database answers"),
        (status = 503, description = "The database does not answer", body = keymaster_core::wire::Problem, content_type = "application/problem+json"),
    ))]
/// The database answers.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
/// Prometheus metrics (`keymaster_` series).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    let verifications = state
        .password_verifications
        .load(std::sync::atomic::Ordering::Relaxed);
    text.push_str(&format!(
        "# HELP keymaster_password_verifications_total argon2 verifications of retrieval passwords\n\
         # TYPE keymaster_password_verifications_total counter\n\
         keymaster_password_verifications_total {verifications}\n"
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The OpenAPI 3.1 description of the whole API.
pub async fn openapi() -> Response {
    let mut doc = ApiDoc::openapi();
    doc.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This OpenAPI description"))
                .response(
                    "200",
                    utoipa::openapi::ResponseBuilder::new()
                        .description("OpenAPI 3.1")
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new().build(),
                        )
                        .build(),
                )
                .build(),
        ),
    );
    // This operation is behind the same request timeout as the others.
    utoipa::Modify::modify(&super::ServerLimits, &mut doc);
    match doc.to_json() {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => ApiError::Internal(format!("openapi: {e}")).into_response(),
    }
}

/// Unknown path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Known path, wrong method: `405 method_not_allowed`; the router adds `Allow`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
