//! `POST /v1/retrievals` and `POST /v1/retrievals/{id}/confirm`: an enrolled service presents
//! a code and receives the key, if the key's policy allows ([`usecase::retrieve`], shared with
//! the demo and the preview).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keymaster_core::wire::{Problem, RetrievalRequest, RetrievalResponse};

use crate::auth::Service;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::usecase;

#[utoipa::path(
    post, path = "/v1/retrievals", tag = "retrievals",
    request_body = RetrievalRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "The key", body = RetrievalResponse),
        (status = 400, description = "invalid_request or invalid_code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, or the policy rule's code", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: unknown, expired, consumed, revoked or replaced code", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Retrieves a key by its code.
pub async fn retrieve(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RetrievalRequest>,
) -> Result<Json<RetrievalResponse>, ApiError> {
    usecase::retrieve::retrieve(&state, &service, ip, &req)
        .await
        .map(Json)
}

#[utoipa::path(
    post, path = "/v1/retrievals/{retrieval_id}/confirm", tag = "retrievals",
    params(("retrieval_id" = String, Path, description = "The id returned by the retrieval")),
    security(("service_key" = [])),
    responses(
        (status = 204, description = "Confirmed; the key is removed"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Confirms receipt of a held key.
pub async fn confirm(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    Path(retrieval_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    usecase::retrieve::confirm(&state, &service, ip, &retrieval_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
