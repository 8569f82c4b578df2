//! The holder's own key: status with history, new expiry, revoke, a fresh code.
//!
//! A holder token opens exactly one key; asking for any other id is `404`, the same answer as
//! for an id that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use keymaster_core::code::Code;
use keymaster_core::handoff::code_uri_from_fingerprint;
use keymaster_core::policy::resolve_expiry;
use keymaster_core::wire::{KeyStatus, PatchKeyRequest, Problem, RecodeResponse};

use crate::auth::Holder;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::store::{KeyRecord, RecodeOutcome};
use crate::usecase::audit_record;

/// The key the token opens, if it is the one asked for.
fn own(rec: KeyRecord, id: &str) -> Result<KeyRecord, ApiError> {
    if rec.id == id {
        Ok(rec)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn status_body(
    state: &AppState,
    rec: &KeyRecord,
    now: Timestamp,
) -> Result<KeyStatus, ApiError> {
    let history = state
        .store
        .key_events(&rec.id, 0)
        .await?
        .into_iter()
        .map(|e| e.event)
        .collect();
    Ok(KeyStatus {
        id: rec.id.clone(),
        status: rec.status_at(now).as_str().to_owned(),
        label: rec.label.clone(),
        algorithm: rec.algorithm.clone(),
        fingerprint: rec.fingerprint.clone(),
        expires_at: rec.expires_at,
        retrievals: rec.retrievals,
        max_retrievals: rec.max_retrievals,
        history,
    })
}

#[utoipa::path(
    get, path = "/v1/keys/{id}", tag = "holder",
    params(("id" = String, Path, description = "Key id")),
    security(("holder_token" = [])),
    responses(
        (status = 200, description = "Status and history", body = KeyStatus),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// The key's status and history.
pub async fn get_key(
    State(state): State<AppState>,
    Holder(rec): Holder,
    Path(id): Path<String>,
) -> Result<Json<KeyStatus>, ApiError> {
    let rec = own(rec, &id)?;
    Ok(Json(status_body(&state, &rec, Timestamp::now()).await?))
}

#[utoipa::path(
    patch, path = "/v1/keys/{id}", tag = "holder",
    params(("id" = String, Path, description = "Key id")),
    request_body = PatchKeyRequest,
    security(("holder_token" = [])),
    responses(
        (status = 200, description = "New status", body = KeyStatus),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Shortens or extends a live key's life.
pub async fn patch_key(
    State(state): State<AppState>,
    Holder(rec): Holder,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchKeyRequest>,
) -> Result<Json<KeyStatus>, ApiError> {
    let mut rec = own(rec, &id)?;
    let now = Timestamp::now();
    if req.ttl_seconds.is_none() && req.expires_at.is_none() {
        return Err(ApiError::InvalidRequest(
            "give ttl_seconds or expires_at".into(),
        ));
    }
    let expires_at = resolve_expiry(req.ttl_seconds, req.expires_at, now, &state.limits)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let expires_at = crate::usecase::to_millis(expires_at);
    let actor = format!("holder:{}", rec.id);
    let mut audit = audit_record(now, &actor, "key.patch", "success", Some(&rec.id), Some(ip));
    audit.detail = Some(format!("expires_at {expires_at}"));
    if !state.store.set_expiry(&rec.id, expires_at, audit).await? {
        return Err(ApiError::NotFound);
    }
    rec.expires_at = expires_at;
    Ok(Json(status_body(&state, &rec, now).await?))
}

#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "holder",
    params(("id" = String, Path, description = "Key id")),
    security(("holder_token" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Revokes the key: it is gone at once.
pub async fn delete_key(
    State(state): State<AppState>,
    Holder(rec): Holder,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rec = own(rec, &id)?;
    let actor = format!("holder:{}", rec.id);
    let audit = audit_record(
        Timestamp::now(),
        &actor,
        "key.revoke",
        "success",
        Some(&rec.id),
        Some(ip),
    );
    if state.store.revoke(&rec.id, audit).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[utoipa::path(
    post, path = "/v1/keys/{id}/code", tag = "holder",
    params(("id" = String, Path, description = "Key id")),
    security(("holder_token" = [])),
    responses(
        (status = 201, description = "A fresh code; the old one is dead", body = RecodeResponse),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the key had recodes_per_hour new codes within the last hour", body = Problem, content_type = "application/problem+json"),
    )
)]
/// Issues a fresh code for the same key, at most `recodes_per_hour` times within an hour.
pub async fn recode(
    State(state): State<AppState>,
    Holder(rec): Holder,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RecodeResponse>), ApiError> {
    let rec = own(rec, &id)?;
    let actor = format!("holder:{}", rec.id);
    for _ in 0..8 {
        let now = Timestamp::now();
        let code = Code::generate(rec.code_format, &mut rand::thread_rng());
        if crate::usecase::deposit::answered_under_previous_secret(&state, &code).await? {
            continue;
        }
        let hash = state.keys.code_hash(code.as_str());
        let audit = audit_record(
            now,
            &actor,
            "key.recode",
            "success",
            Some(&rec.id),
            Some(ip),
        );
        let per_hour = state.settings.recodes_per_hour;
        match state.store.recode(&rec.id, hash, per_hour, audit).await? {
            RecodeOutcome::Done(expires_at) => {
                metrics::counter!("keymaster_recodes_total", "outcome" => "success").increment(1);
                return Ok((
                    StatusCode::CREATED,
                    Json(RecodeResponse {
                        code: code.as_str().to_owned(),
                        code_display: code.display(),
                        expires_at,
                        // The stored fingerprint is SHA-256 over the SPKI: the key commitment.
                        code_uri: rec
                            .fingerprint
                            .as_deref()
                            .and_then(|fp| code_uri_from_fingerprint(&code, fp)),
                    }),
                ));
            }
            RecodeOutcome::NotLive => return Err(ApiError::NotFound),
            RecodeOutcome::RateLimited(retry) => {
                metrics::counter!("keymaster_recodes_total", "outcome" => "rate_limited")
                    .increment(1);
                return Err(ApiError::RateLimited(retry));
            }
            RecodeOutcome::CodeTaken => continue,
        }
    }
    Err(ApiError::Internal(
        "no free code after several attempts".into(),
    ))
}
