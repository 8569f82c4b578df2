//! The server's part of the verified handoff after a retrieval: the SAS exchange (request,
//! read, reveal) and disputes, for the API's handlers and the demo. (The preview is a
//! retrieval that claims nothing: `usecase::retrieve`.)
//!
//! Only the service that made a retrieval may use its SAS and its dispute; any other gets
//! `404`, the same answer as for an id that does not exist. The server computes no SAS and
//! checks no key commitment for anyone: the two ends do that from what they hold
//! (`keymaster_core::handoff`), so that a key master that lies is caught.

use std::net::IpAddr;

use jiff::Timestamp;
use keymaster_core::handoff::{b64url, decode_32, Bytes32};
use keymaster_core::wire::{DisputeRequest, SasNonces, SasRequest, SasReveal};

use super::audit_record;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::handoff::{DisputeOutcome, RevealOutcome, SasRequestOutcome};
use crate::store::{AuditRecord, KeyRecord, ServiceAuth};

/// A nonce from a request body: base64url of exactly 32 bytes, else `400 invalid_request`.
fn nonce(text: &str, field: &str) -> Result<Bytes32, ApiError> {
    decode_32(text).ok_or_else(|| {
        ApiError::InvalidRequest(format!("{field}: must be base64url of 32 random bytes"))
    })
}

/// `service` asks the device for the SAS of its retrieval `retrieval_id`: records the
/// service's nonce; the holder's event stream gets `sas.requested`. A repeat of the same nonce
/// changes nothing.
pub async fn request_sas(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    retrieval_id: &str,
    req: &SasRequest,
) -> Result<(), ApiError> {
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
        .request_sas(retrieval_id, service, ns, audit.clone())
        .await?
    {
        SasRequestOutcome::Requested | SasRequestOutcome::Repeated => Ok(()),
        SasRequestOutcome::NonceAlreadySet => Err(ApiError::InvalidRequest(
            "nonce: this retrieval's SAS was requested with another nonce, which stands".into(),
        )),
        SasRequestOutcome::NotFound => refused(state, audit, ApiError::NotFound).await,
    }
}

/// Both SAS nonces of `service`'s retrieval `retrieval_id`, as far as known.
pub async fn sas_nonces(
    state: &AppState,
    service: &ServiceAuth,
    retrieval_id: &str,
) -> Result<SasNonces, ApiError> {
    let nonces = state
        .store
        .sas_nonces(retrieval_id, service)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(SasNonces {
        service_nonce: nonces.service.as_deref().map(b64url),
        device_nonce: nonces.device.as_deref().map(b64url),
    })
}

/// The holder of `rec` reveals the device's SAS nonce for one retrieval of the key `id` (the
/// key of the path, which must be the holder's own).
pub async fn reveal_sas(
    state: &AppState,
    rec: &KeyRecord,
    ip: IpAddr,
    id: &str,
    req: &SasReveal,
) -> Result<(), ApiError> {
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
        RevealOutcome::Revealed | RevealOutcome::Repeated => Ok(()),
        RevealOutcome::NotRequested => refused(state, audit, ApiError::SasNotRequested).await,
        RevealOutcome::AlreadyRevealed => Err(ApiError::InvalidRequest(
            "nonce: another nonce was revealed for this retrieval".into(),
        )),
        RevealOutcome::CommitmentMismatch => Err(ApiError::InvalidRequest(
            "nonce: SHA-256 of it is not the key's sas_commitment".into(),
        )),
        RevealOutcome::NotFound => refused(state, audit, ApiError::NotFound).await,
    }
}

/// `service` reports that its retrieval `retrieval_id` handed over something the person did not
/// mean: `key.disputed` to every channel of the key, once per retrieval.
pub async fn dispute(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    retrieval_id: &str,
    req: &DisputeRequest,
) -> Result<(), ApiError> {
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
        .dispute(retrieval_id, service, reason, audit.clone())
        .await?
    {
        DisputeOutcome::Disputed | DisputeOutcome::AlreadyDisputed => Ok(()),
        DisputeOutcome::NotFound => refused(state, audit, ApiError::NotFound).await,
    }
}

/// Audits a refusal that changed nothing (the row prepared for success, with the refusal's
/// code as its outcome), coalesced so that a service probing ids cannot grow the audit log
/// faster than a row a minute, and answers it.
async fn refused<T>(state: &AppState, mut audit: AuditRecord, e: ApiError) -> Result<T, ApiError> {
    audit.outcome = e.code().to_owned();
    state.store.append_coalesced_audit(audit).await?;
    Err(e)
}
