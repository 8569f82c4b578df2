//! The server's part of the verified handoff: preview before claiming, the SAS exchange
//! (request, reveal, read), and disputes.
//!
//! - `POST /v1/retrievals/preview` (service key): the retrieval's own checks and transaction
//!   (`retrievals::attempt`), answering provenance instead of the key and consuming nothing.
//! - `POST /v1/retrievals/{id}/sas` (service key): the service's nonce; `sas.requested` on the
//!   holder's event stream. `GET` of the same path: both nonces.
//! - `POST /v1/keys/{id}/sas` (holder token): the device reveals its nonce.
//! - `POST /v1/retrievals/{id}/dispute` (service key): `key.disputed` to every channel.
//!
//! Only the service that made a retrieval may use its `/sas` and `/dispute`; any other gets
//! `404`, the same answer as for an id that does not exist. The server computes no SAS and
//! checks no key commitment for anyone: the two ends do that from what they hold
//! (`keymaster_core::handoff`), so that a key master that lies is caught. Not responsible for
//! the event stream staying open for the reveal (`events`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use keymaster_core::handoff::{b64url, decode_32, Bytes32};
use keymaster_core::wire::{
    DisputeRequest, Origin, PreviewResponse, Problem, RetrievalRequest, SasNonces, SasRequest,
    SasReveal, TenantRef,
};

use crate::auth::{Holder, Service};
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::routes::{audit_record, retrievals};
use crate::state::AppState;
use crate::store::handoff::{DisputeOutcome, RevealOutcome, SasRequestOutcome};
use crate::store::RetrieveOutcome;

/// A nonce from a request body: base64url of exactly 32 bytes, else `400 invalid_request`.
fn nonce(text: &str, field: &str) -> Result<Bytes32, ApiError> {
    decode_32(text).ok_or_else(|| {
        ApiError::InvalidRequest(format!("{field}: must be base64url of 32 random bytes"))
    })
}

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
    match retrievals::attempt(&state, &service, ip, &req, true).await? {
        RetrieveOutcome::Previewed(p) => {
            metrics::counter!("keymaster_previews_total").increment(1);
            let p = *p;
            Ok(Json(PreviewResponse {
                key_id: p.key_id,
                label: p.label,
                kind: p.kind,
                algorithm: p.algorithm,
                fingerprint: p.fingerprint,
                tenant: TenantRef {
                    id: p.tenant_id,
                    name: p.tenant_name,
                },
                deposited_at: p.deposited_at,
                origin: Origin {
                    network: p.origin_network,
                },
                proven: p.proven,
            }))
        }
        _ => Err(ApiError::Internal(
            "a preview ended other than previewed or refused".into(),
        )),
    }
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
    let ns = nonce(&req.nonce, "nonce")?;
    let actor = format!("service:{}", service.id);
    let audit = audit_record(
        Timestamp::now(),
        &actor,
        "retrieval.sas_request",
        "success",
        None,
        Some(ip),
    );
    match state
        .store
        .request_sas(&retrieval_id, &service, ns, audit.clone())
        .await?
    {
        SasRequestOutcome::Requested | SasRequestOutcome::Repeated => Ok(StatusCode::ACCEPTED),
        SasRequestOutcome::NonceAlreadySet => Err(ApiError::InvalidRequest(
            "nonce: this retrieval's SAS was requested with another nonce, which stands".into(),
        )),
        SasRequestOutcome::NotFound => refused(&state, audit, ApiError::NotFound).await,
    }
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
    let nonces = state
        .store
        .sas_nonces(&retrieval_id, &service)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(SasNonces {
        service_nonce: nonces.service.as_deref().map(b64url),
        device_nonce: nonces.device.as_deref().map(b64url),
    }))
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
    if rec.id != id {
        return Err(ApiError::NotFound);
    }
    let nd = nonce(&req.nonce, "nonce")?;
    let actor = format!("holder:{}", rec.id);
    let mut audit = audit_record(
        Timestamp::now(),
        &actor,
        "key.sas_reveal",
        "success",
        Some(&rec.id),
        Some(ip),
    );
    audit.detail = Some(format!("retrieval {}", req.retrieval_id));
    let outcome = state
        .store
        .reveal_sas(&rec.id, &req.retrieval_id, nd, audit.clone())
        .await?;
    match outcome {
        RevealOutcome::Revealed | RevealOutcome::Repeated => Ok(StatusCode::NO_CONTENT),
        RevealOutcome::NotRequested => refused(&state, audit, ApiError::SasNotRequested).await,
        RevealOutcome::AlreadyRevealed => Err(ApiError::InvalidRequest(
            "nonce: another nonce was revealed for this retrieval".into(),
        )),
        RevealOutcome::CommitmentMismatch => Err(ApiError::InvalidRequest(
            "nonce: SHA-256 of it is not the key's sas_commitment".into(),
        )),
        RevealOutcome::NotFound => refused(&state, audit, ApiError::NotFound).await,
    }
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
    let reason = req.reason.as_str();
    let actor = format!("service:{}", service.id);
    let mut audit = audit_record(
        Timestamp::now(),
        &actor,
        "retrieval.dispute",
        "success",
        None,
        Some(ip),
    );
    audit.detail = Some(format!("retrieval {retrieval_id}: {reason}"));
    match state
        .store
        .dispute(&retrieval_id, &service, reason, audit.clone())
        .await?
    {
        DisputeOutcome::Disputed | DisputeOutcome::AlreadyDisputed => Ok(StatusCode::NO_CONTENT),
        DisputeOutcome::NotFound => refused(&state, audit, ApiError::NotFound).await,
    }
}

/// Audits a refusal that changed nothing (the row prepared for success, with the refusal's
/// code as its outcome), coalesced so that a service probing ids cannot grow the audit log
/// faster than a row a minute, and answers it.
async fn refused<T>(
    state: &AppState,
    mut audit: crate::store::AuditRecord,
    e: ApiError,
) -> Result<T, ApiError> {
    audit.outcome = e.code().to_owned();
    state.store.append_coalesced_audit(audit).await?;
    Err(e)
}
