//! The HTTP face of enrolment requests: `POST /v1/requests` (service key),
//! `POST /v1/requests/preview` (app key) and `GET /v1/requests/{id}[?wait=N]` (the requesting
//! service). Extract, call `usecase::requests`, answer; the rules live there.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use keymaster_core::wire::{
    EnrolmentRequestCreated, NewEnrolmentRequest, Problem, RequestPreview, RequestPreviewRequest,
    RequestStatus,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{App, Service};
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::usecase::requests::{create_request, preview_request, read_request};

#[utoipa::path(
    post, path = "/v1/requests", tag = "requests", operation_id = "create_request",
    request_body = NewEnrolmentRequest,
    security(("service_key" = [])),
    responses(
        (status = 201, description = "The request, with its code (shown once)", body = EnrolmentRequestCreated),
        (status = 400, description = "invalid_request: a bad label, ttl_seconds or code_format", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, or ip_not_allowed (the service's allowed_cidrs)", body = Problem, content_type = "application/problem+json"),
    )
)]
/// A service asks a device for a key.
pub async fn create(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<NewEnrolmentRequest>,
) -> Result<(StatusCode, Json<EnrolmentRequestCreated>), ApiError> {
    let created = create_request(&state, &service, ip, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    post, path = "/v1/requests/preview", tag = "requests", operation_id = "preview_request",
    request_body = RequestPreviewRequest,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "Who asks for the key", body = RequestPreview),
        (status = 400, description = "invalid_request or invalid_code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: an unknown, used or expired request code (counted against the app key's failure budget)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the app key's failure budget is spent", body = Problem, content_type = "application/problem+json"),
    )
)]
/// The device looks at a request before answering it.
pub async fn preview(
    State(state): State<AppState>,
    App(app): App,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RequestPreviewRequest>,
) -> Result<Json<RequestPreview>, ApiError> {
    preview_request(&state, &app, ip, &req).await.map(Json)
}

/// `?wait=` of `GET /v1/requests/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Hold the answer until the request is fulfilled or this many seconds (at most 60) have
    /// passed.
    pub wait: Option<u64>,
}

#[utoipa::path(
    get, path = "/v1/requests/{id}", tag = "requests", operation_id = "get_request",
    params(("id" = String, Path, description = "The request's id"), WaitQuery),
    security(("service_key" = [])),
    responses(
        (status = 200, description = "The request's status; the first answer after it is fulfilled carries the retrieval (the key)", body = RequestStatus),
        (status = 400, description = "invalid_request: wait over 60", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, ip_not_allowed (the service's allowed_cidrs), or the key's policy rule's code", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such request of this service", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    )
)]
/// The requesting service reads its request, waiting for the answer with `wait`.
pub async fn get(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RequestStatus>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    read_request(&state, &service, ip, &id, q.wait.unwrap_or(0))
        .await
        .map(Json)
}
