//! The retrieval (`POST /v1/retrievals`, and the demo's enrolment), its preview
//! (`POST /v1/retrievals/preview`) and its confirmation: an enrolled service presents a code
//! and receives the key, if the key's policy allows.
//!
//! Order of checks: the service's own `allowed_cidrs` (consumes nothing), the code's format
//! (`invalid_code`, never counted, audited coalesced), then the retrieval transaction in the
//! store. A password is checked (argon2, outside any transaction) only when the store answers
//! that every other rule hands the key to this service and has taken a slot of the service's
//! failure budget for the check; the key is then retrieved again with the verdict. So a
//! refusal (`404`, any `403` but a wrong password, `429`) never costs an argon2 run, and a
//! `404` takes the same path whatever its reason.
//!
//! The code may be a bare code or a code URI (`keymaster:<code>?fp=…`): the server uses the
//! code and ignores `fp`, which only the service can check, against the key it received.
//! A preview runs the same [`attempt`], so that it answers exactly what a retrieval would.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use keymaster_core::handoff::{b64url, CodeUri};
use keymaster_core::key::PublicKey;
use keymaster_core::policy::{Denial, PasswordCheck};
use keymaster_core::wire::{
    Origin, PreviewResponse, RetrievalRequest, RetrievalResponse, TenantRef,
};

use super::audit_record;
use super::password::verify_password;
use crate::crypto::new_id;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{RetrieveCommand, RetrieveOutcome, RetrievedKey, ServiceAuth};

/// Retrieves the key for `req.code` as `service`, from `ip`; counted in the metrics.
pub async fn retrieve(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    req: &RetrievalRequest,
) -> Result<RetrievalResponse, ApiError> {
    match attempt(state, service, ip, req, false).await? {
        RetrieveOutcome::Allowed(key) => {
            metrics::counter!("keymaster_retrievals_total", "outcome" => "success").increment(1);
            response(state, *key)
        }
        _ => Err(ApiError::Internal(
            "a retrieval ended other than allowed or refused".into(),
        )),
    }
}

/// What a retrieval of `req.code` by `service` would answer, with the key's provenance in
/// place of the key; nothing is consumed.
pub async fn preview(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    req: &RetrievalRequest,
) -> Result<PreviewResponse, ApiError> {
    match attempt(state, service, ip, req, true).await? {
        RetrieveOutcome::Previewed(p) => {
            metrics::counter!("keymaster_previews_total").increment(1);
            let p = *p;
            Ok(PreviewResponse {
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
            })
        }
        _ => Err(ApiError::Internal(
            "a preview ended other than previewed or refused".into(),
        )),
    }
}

/// Confirms that `service` received the key of its retrieval `retrieval_id`; the key is
/// removed. Any other retrieval id is `not_found`, audited.
pub async fn confirm(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    retrieval_id: &str,
) -> Result<(), ApiError> {
    let now = Timestamp::now();
    if state.store.confirm(retrieval_id, service, now).await? {
        Ok(())
    } else {
        let actor = format!("service:{}", service.id);
        let audit = audit_record(
            now,
            &actor,
            "retrieval.confirm",
            "not_found",
            None,
            Some(ip),
        );
        state.store.append_audit(audit).await?;
        Err(ApiError::NotFound)
    }
}

/// One retrieval or preview, up to the store's answer: every refusal (the service's
/// `allowed_cidrs`, `invalid_code`, `404`, the policy's `403`s, `429`) is returned as the
/// error it is answered with, counted in the metrics; `Ok` is `Allowed` for a retrieval and
/// `Previewed` for a preview.
async fn attempt(
    state: &AppState,
    service: &ServiceAuth,
    ip: IpAddr,
    req: &RetrievalRequest,
    preview: bool,
) -> Result<RetrieveOutcome, ApiError> {
    let now = Timestamp::now();
    let actor = format!("service:{}", service.id);
    let budget = state.settings.failed_retrievals_per_minute;
    let action = if preview {
        "key.preview"
    } else {
        "key.retrieve"
    };

    if !service.allowed_cidrs.is_empty() && !service.allowed_cidrs.iter().any(|n| n.contains(&ip)) {
        let audit = audit_record(now, &actor, action, "ip_not_allowed", None, Some(ip));
        if let Some(retry) = state.store.refuse_retrieval(service, budget, audit).await? {
            return Err(count(ApiError::RateLimited(retry)));
        }
        return Err(count(ApiError::Denied(Denial::IpNotAllowed)));
    }

    let Ok(CodeUri { code, .. }) = CodeUri::parse(&req.code) else {
        let audit = audit_record(now, &actor, action, "invalid_code", None, Some(ip));
        state.store.append_coalesced_audit(audit).await?;
        return Err(count(ApiError::InvalidCode));
    };
    let code_hash = state.keys.code_hash(code.as_str());

    let cmd = RetrieveCommand {
        code_hash,
        previous_code_hashes: state.keys.previous_code_hashes(code.as_str()),
        service: service.clone(),
        source_ip: ip,
        context: req.context.clone(),
        password: match req.password {
            None => PasswordCheck::NotGiven,
            Some(_) => PasswordCheck::Unverified,
        },
        now,
        budget_per_minute: budget,
        new_retrieval_id: new_id("ret_"),
        budget_slot: None,
        preview,
    };
    // Kept for a second round only when a password was given: the store asks for a password
    // check (`VerifyPassword`) of no other request, so the others need no copy.
    let again = req.password.is_some().then(|| cmd.clone());
    let mut outcome = state.store.retrieve(cmd).await?;
    if let RetrieveOutcome::VerifyPassword { hash, slot } = outcome {
        // Asked only of a request that carried a password (`PasswordCheck::Unverified`).
        let Some(mut cmd) = again else {
            return Err(ApiError::Internal(
                "the store asked for a password check of a request without one".into(),
            ));
        };
        let given = req.password.clone().unwrap_or_default();
        state.count_password_verification();
        cmd.password = verify_password(given, hash).await?;
        cmd.budget_slot = Some(slot);
        outcome = state.store.retrieve(cmd).await?;
    }
    match outcome {
        RetrieveOutcome::VerifyPassword { .. } => Err(ApiError::Internal(
            "the store asked twice for a password check".into(),
        )),
        RetrieveOutcome::RateLimited(s) => Err(count(ApiError::RateLimited(s))),
        RetrieveOutcome::NotFound => Err(count(ApiError::NotFound)),
        RetrieveOutcome::Denied(code) => Err(count(ApiError::Denied(code))),
        handed_out => Ok(handed_out),
    }
}

/// Counts a refused retrieval in the metrics (a spray over many services shows here).
fn count(e: ApiError) -> ApiError {
    let code = e.code();
    metrics::counter!("keymaster_retrievals_total", "outcome" => code).increment(1);
    if matches!(e, ApiError::NotFound | ApiError::Denied(_)) {
        metrics::counter!("keymaster_failed_retrievals_total").increment(1);
    }
    e
}

pub(crate) fn response(state: &AppState, key: RetrievedKey) -> Result<RetrievalResponse, ApiError> {
    let mut resp = RetrievalResponse {
        retrieval_id: key.retrieval_id,
        key_id: key.key_id.clone(),
        kind: key.kind,
        algorithm: key.algorithm,
        public_key_pem: None,
        openssh: None,
        jwk: None,
        secret: None,
        fingerprint: key.fingerprint,
        ssh_fingerprint: key.ssh_fingerprint,
        jwk_thumbprint: key.jwk_thumbprint,
        label: key.label,
        proven: key.proven,
        confirm_by: key.confirm_by,
        sas_commitment: key.sas_commitment.as_deref().map(b64url),
    };
    if let Some(spki) = key.spki {
        // Validated when it was deposited: not decompressed and checked again here.
        let forms = PublicKey::forms_of_stored_spki(&spki).map_err(|e| {
            ApiError::Internal(format!("stored key {} does not parse: {e}", key.key_id))
        })?;
        resp.public_key_pem = Some(forms.pem);
        resp.openssh = forms.openssh;
        resp.jwk = Some(forms.jwk);
        // Derived from the key rather than stored with it (the SQLite store keeps neither).
        resp.ssh_fingerprint = forms.ssh_fingerprint;
        resp.jwk_thumbprint = Some(forms.jwk_thumbprint);
    } else if let Some(sealed) = key.secret_sealed {
        let plain = state
            .keys
            .open(&sealed, key.key_id.as_bytes())
            .ok_or_else(|| ApiError::Internal(format!("secret of {} does not open", key.key_id)))?;
        resp.secret = Some(STANDARD.encode(plain.as_slice()));
    }
    Ok(resp)
}
