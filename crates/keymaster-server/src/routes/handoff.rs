//! The server's part of the verified handoff: preview before claiming, the SAS exchange
//! (request, reveal, read), and disputes.
//!
//! - `POST /v1/retrievals/preview` (service key): the retrieval's own checks and transaction
//!   (`usecase::retrieve::preview`), answering provenance instead of the key and consuming
//!   nothing.
//! - `POST /v1/retrievals/{id}/sas` (service key): the service's nonce; `sas.requested` on the
//!   holder's event stream. `GET` of the same path: both nonces.
//! - `POST /v1/keys/{id}/sas` (holder token): the device reveals its nonce.
//! - `POST /v1/retrievals/{id}/dispute` (service key): `key.disputed` to every channel.
//!
//! Only the service that made a retrieval may use its `/sas` and `/dispute`; any other gets
//! `404`, the same answer as for an id that does not exist. The server computes no SAS and
//! checks no key commitment for anyone: the two ends do that from what they hold
//! (`keymaster_core::handoff`), so that a key master that lies is caught. Not responsible for
//! the event stream staying open for the reveal (`events`). The handlers extract and answer;
//! what they do is `usecase::retrieve::preview` and `usecase::handoff`, which the demo calls
//! too.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keymaster_core::wire::{
    DisputeRequest, PreviewResponse, Problem, RetrievalRequest, SasNonces, SasRequest, SasReveal,
};

use crate::auth::{Holder, Service};
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::usecase;

#[utoipa::path(
    post, path = "/v1/retrievals/preview", tag = "retrievals",
    request_body = RetrievalRequest,
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Who deposited the key, when and from where; nothing is consumed", body = PreviewResponse),
        (status = 400, description = "invalid_request or invalid_code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden, or the policy rule's code (exactly as the retrieval would answer)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: previews count against the service's failure budget like retrievals", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Shows a key's provenance before claiming it, answering what a retrieval would answer.
pub async fn preview(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<RetrievalRequest>,
) -> Result<Json<PreviewResponse>, ApiError> {
    usecase::retrieve::preview(&state, &service, ip, &req)
        .await
        .map(Json)
}

#[utoipa::path(
    post, path = "/v1/retrievals/{retrieval_id}/sas", tag = "retrievals",
    params(("retrieval_id" = String, Path, description = "The id returned by the retrieval")),
    request_body = SasRequest,
    security(("service_key" = [])),
    responses(
        (status = 202, description = "Asked: the holder's event stream gets sas.requested (a repeat of the same nonce changes nothing)"),
        (status = 400, description = "invalid_request: not 32 bytes of base64url, or a different nonce was given before", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such retrieval by this service", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Asks the device for the SAS of a retrieval: records the service's nonce.
pub async fn request_sas(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    Path(retrieval_id): Path<String>,
    ApiJson(req): ApiJson<SasRequest>,
) -> Result<StatusCode, ApiError> {
    usecase::handoff::request_sas(&state, &service, ip, &retrieval_id, &req).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(
    get, path = "/v1/retrievals/{retrieval_id}/sas", tag = "retrievals",
    params(("retrieval_id" = String, Path, description = "The id returned by the retrieval")),
    security(("service_key" = [])),
    responses(
        (status = 200, description = "Both nonces as far as known; device_nonce is null until the device reveals it", body = SasNonces),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such retrieval by this service", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Reads both SAS nonces of a retrieval.
pub async fn get_sas(
    State(state): State<AppState>,
    Service(service): Service,
    Path(retrieval_id): Path<String>,
) -> Result<Json<SasNonces>, ApiError> {
    usecase::handoff::sas_nonces(&state, &service, &retrieval_id)
        .await
        .map(Json)
}

#[utoipa::path(
    post, path = "/v1/keys/{id}/sas", tag = "holder",
    params(("id" = String, Path, description = "Key id")),
    request_body = SasReveal,
    security(("holder_token" = [])),
    responses(
        (status = 204, description = "Revealed (a repeat of the same nonce changes nothing)"),
        (status = 400, description = "invalid_request: not 32 bytes of base64url, not the nonce of the key's sas_commitment, or another nonce was revealed before", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such retrieval of this key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "sas_not_requested: the service has not asked for the SAS yet", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Reveals the device's SAS nonce for one retrieval of the key.
pub async fn reveal_sas(
    State(state): State<AppState>,
    Holder(rec): Holder,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SasReveal>,
) -> Result<StatusCode, ApiError> {
    usecase::handoff::reveal_sas(&state, &rec, ip, &id, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/retrievals/{retrieval_id}/dispute", tag = "retrievals",
    params(("retrieval_id" = String, Path, description = "The id returned by the retrieval")),
    request_body = DisputeRequest,
    security(("service_key" = [])),
    responses(
        (status = 204, description = "Disputed: key.disputed goes to every channel of the key (once per retrieval)"),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such retrieval by this service, or older than 7 days", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Reports that a retrieval handed over something the person did not mean.
pub async fn dispute(
    State(state): State<AppState>,
    Service(service): Service,
    ClientIp(ip): ClientIp,
    Path(retrieval_id): Path<String>,
    ApiJson(req): ApiJson<DisputeRequest>,
) -> Result<StatusCode, ApiError> {
    usecase::handoff::dispute(&state, &service, ip, &retrieval_id, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}
