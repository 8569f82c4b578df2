//! Enrolment requests (the service asks, the device answers): `POST /v1/requests` (service
//! key), `POST /v1/requests/preview` (app key), the deposit that answers a request (a hook of
//! `POST /v1/keys`, `usecase::deposit`) and `GET /v1/requests/{id}[?wait=N]` (the requesting
//! service).
//!
//! A request's code follows the rules of codes: checked and normalised before anything else
//! (`invalid_code`, never counted), stored only as its HMAC, its row kept as a tombstone for
//! the retention period after the request ended. Looking a code up from an app key (preview or
//! answer) counts every miss against that app key's failure budget, so that request codes
//! cannot be guessed faster than key codes.
//!
//! The key that answers a request has no code anyone holds: its code hash is the HMAC of
//! `request:<request id>` ([`answer_code_hash`]), which no typed code normalises to. Its policy
//! names the requesting service as the only one allowed. The service's first read of the
//! fulfilled request runs the ordinary retrieval transaction with that hash, so the key's
//! policy, counting, `key.retrieved` event and audit row are those of any retrieval.
//!
//! The long-poll (`wait`) waits on the store's commit signal (`Store::commits`, relayed across
//! PostgreSQL replicas by LISTEN/NOTIFY), not on a timer: the answer leaves as soon as the
//! deposit's transaction commits. It takes no request slot and is bounded by its own deadline.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use keymaster_core::code::Code;
use keymaster_core::label::Label;
use keymaster_core::policy::PasswordCheck;
use keymaster_core::request::{parse_request_code, request_code_uri};
use keymaster_core::wire::{
    CodeFormat, EnrolmentRequestCreated, NewEnrolmentRequest, PolicyInput, RequestPreview,
    RequestPreviewRequest, RequestStatus, ServiceInfo,
};

use crate::crypto::new_id;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::requests::{
    AnswerOutcome, FoundRequest, NewRequest, RequestLookup, RequestState,
};
use crate::store::{AppKeyAuth, AuditRecord, NewKey, RetrieveCommand, RetrieveOutcome};
use crate::usecase::{audit_record, retrieve as retrievals};

/// A request's lifetime when none is asked for.
const DEFAULT_TTL_SECONDS: i64 = 600;
/// The longest lifetime of a request.
const MAX_TTL_SECONDS: i64 = 3600;
/// The longest `wait` of a long-poll.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Attempts at a fresh code before giving up.
const CODE_ATTEMPTS: usize = 8;

/// The use case of `POST /v1/requests` (also the demo's example service's): a new request of
/// `service`, with its code.
pub async fn create_request(
    state: &AppState,
    service: &crate::store::ServiceAuth,
    ip: IpAddr,
    req: NewEnrolmentRequest,
) -> Result<EnrolmentRequestCreated, ApiError> {
    let now = Timestamp::now();
    let actor = format!("service:{}", service.id);
    if !ip_allowed(service, ip) {
        let a = audit_record(
            now,
            &actor,
            "request.create",
            "ip_not_allowed",
            None,
            Some(ip),
        );
        state.store.append_coalesced_audit(a).await?;
        return Err(ApiError::Denied(
            keymaster_core::policy::Denial::IpNotAllowed,
        ));
    }
    let label = req
        .label
        .as_deref()
        .map(Label::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()));
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let min = state.limits.min_ttl_seconds.min(MAX_TTL_SECONDS);
    let checked = label.and_then(|label| {
        if (min..=MAX_TTL_SECONDS).contains(&ttl) {
            Ok(label)
        } else {
            Err(ApiError::InvalidRequest(format!(
                "ttl_seconds: must be {min} to {MAX_TTL_SECONDS}"
            )))
        }
    });
    let label = match checked {
        Ok(l) => l,
        Err(e) => {
            let a = audit_record(now, &actor, "request.create", e.code(), None, Some(ip));
            state.store.append_audit(a).await?;
            return Err(e);
        }
    };
    let expires_at = crate::usecase::to_millis(now + Duration::from_secs(ttl.unsigned_abs()));
    let format = req.code_format.unwrap_or(CodeFormat::Digits);
    let id = new_id("req_");
    for _ in 0..CODE_ATTEMPTS {
        let code = Code::generate(format, &mut rand::thread_rng());
        let r = NewRequest {
            id: id.clone(),
            service_id: service.id.clone(),
            code_hash: state.keys.code_hash(code.as_str()),
            code_format: format,
            label: label.as_ref().map(|l| l.as_str().to_owned()),
            created_at: now,
            expires_at,
        };
        let mut a = audit_record(now, &actor, "request.create", "success", None, Some(ip));
        a.detail = Some(id.clone());
        if state.store.create_request(r, a).await? {
            metrics::counter!("keymaster_requests_total", "outcome" => "created").increment(1);
            return Ok(EnrolmentRequestCreated {
                id,
                code: code.as_str().to_owned(),
                code_display: code.display(),
                code_uri: request_code_uri(&code),
                expires_at,
            });
        }
    }
    Err(ApiError::Internal(
        "no free request code after several attempts".into(),
    ))
}

/// Whether the service's own `allowed_cidrs` admit `ip`: a service key used from elsewhere may
/// neither ask for keys nor read them, as for a retrieval.
fn ip_allowed(service: &crate::store::ServiceAuth, ip: IpAddr) -> bool {
    service.allowed_cidrs.is_empty() || service.allowed_cidrs.iter().any(|n| n.contains(&ip))
}

/// Looks up the request whose code an app key presents: `invalid_code` (audited, coalesced,
/// never counted) for a code that fails its checks, else the store's lookup against the app
/// key's failure budget.
async fn lookup(
    state: &AppState,
    app: &AppKeyAuth,
    ip: IpAddr,
    code: &str,
    action: &'static str,
    fulfilled_is_failure: bool,
    now: Timestamp,
) -> Result<RequestLookup, ApiError> {
    let actor = format!("app_key:{}", app.id);
    let Ok(code) = parse_request_code(code) else {
        let a = audit_record(now, &actor, action, "invalid_code", None, Some(ip));
        state.store.append_coalesced_audit(a).await?;
        return Err(ApiError::InvalidCode);
    };
    let audit = audit_record(now, &actor, action, "not_found", None, Some(ip));
    // During a rotation of the server secret, a request made before it has its hash under the
    // previous secret.
    let mut hashes = vec![state.keys.code_hash(code.as_str())];
    hashes.extend(state.keys.previous_code_hashes(code.as_str()));
    let found = state
        .store
        .lookup_request(
            hashes,
            app,
            now,
            state.settings.failed_retrievals_per_minute,
            fulfilled_is_failure,
            audit,
        )
        .await?;
    if let RequestLookup::RateLimited(s) = found {
        return Err(ApiError::RateLimited(s));
    }
    Ok(found)
}

/// The use case of `POST /v1/requests/preview` (also the demo authenticator's): who asks
/// for a key under the code.
pub async fn preview_request(
    state: &AppState,
    app: &AppKeyAuth,
    ip: IpAddr,
    req: &RequestPreviewRequest,
) -> Result<RequestPreview, ApiError> {
    let now = Timestamp::now();
    match lookup(state, app, ip, &req.code, "request.preview", true, now).await? {
        RequestLookup::Pending(found) => Ok(RequestPreview {
            request_id: found.id,
            service: ServiceInfo {
                id: found.service_id,
                name: found.service_name,
                domains: found.service_domains,
            },
            label: found.label,
            expires_at: found.expires_at,
        }),
        _ => Err(ApiError::NotFound),
    }
}

/// A deposit with `"request"`: refuses a policy that the requesting service's read could not
/// satisfy or that names other services than the requester could be (a password: the read
/// carries none).
pub fn check_answer_policy(input: &PolicyInput) -> Result<(), ApiError> {
    if input.password.is_some() {
        return Err(ApiError::InvalidRequest(
            "policy.password: a key that answers an enrolment request cannot have a password \
             (the requesting service reads it without one)"
                .into(),
        ));
    }
    Ok(())
}

/// A deposit with `"request"`: the pending request the code names, or the refusal (`400
/// invalid_code`, `404` unknown or expired, `409 request_fulfilled`, `429`). The policy's
/// `services`, when given, must allow the requesting service.
pub async fn find_for_answer(
    state: &AppState,
    app: &AppKeyAuth,
    ip: IpAddr,
    code: &str,
    services: Option<&[String]>,
    now: Timestamp,
) -> Result<FoundRequest, ApiError> {
    match lookup(state, app, ip, code, "request.answer", false, now).await? {
        RequestLookup::Pending(found) => {
            if services.is_some_and(|s| !s.contains(&found.service_id)) {
                return Err(ApiError::InvalidRequest(
                    "policy.services: does not include the requesting service".into(),
                ));
            }
            Ok(*found)
        }
        RequestLookup::Fulfilled => Err(ApiError::RequestFulfilled),
        _ => Err(ApiError::NotFound),
    }
}

/// The code hash of the key that answers request `request_id`: no typed code normalises to
/// `request:…`, so only the request's own read finds the key.
pub fn answer_code_hash(state: &AppState, request_id: &str) -> Vec<u8> {
    state.keys.code_hash(&format!("request:{request_id}"))
}

/// Stores the key that answers `found`, fulfilling it.
pub async fn answer(
    state: &AppState,
    found: &FoundRequest,
    key: NewKey,
    audit: AuditRecord,
) -> Result<(), ApiError> {
    let service = (found.service_id.clone(), found.service_name.clone());
    match state
        .store
        .answer_request(&found.id, service, key, audit)
        .await?
    {
        AnswerOutcome::Done => {
            metrics::counter!("keymaster_requests_total", "outcome" => "fulfilled").increment(1);
            Ok(())
        }
        AnswerOutcome::Fulfilled => Err(ApiError::RequestFulfilled),
        AnswerOutcome::NotFound => Err(ApiError::NotFound),
    }
}

/// The use case of `GET /v1/requests/{id}?wait=` (also the demo's example service's): the
/// request of `service`, held up to `wait` seconds for its answer.
pub async fn read_request(
    state: &AppState,
    service: &crate::store::ServiceAuth,
    ip: IpAddr,
    id: &str,
    wait: u64,
) -> Result<RequestStatus, ApiError> {
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::InvalidRequest(format!(
            "wait: at most {MAX_WAIT_SECONDS} seconds"
        )));
    }
    if !ip_allowed(service, ip) {
        let actor = format!("service:{}", service.id);
        let a = audit_record(
            Timestamp::now(),
            &actor,
            "request.read",
            "ip_not_allowed",
            None,
            Some(ip),
        );
        state.store.append_coalesced_audit(a).await?;
        return Err(ApiError::Denied(
            keymaster_core::policy::Denial::IpNotAllowed,
        ));
    }
    let wait = Duration::from_secs(wait);
    // Exempt from `request_timeout` like the event stream, but bounded all the same: the
    // wait, then the ordinary timeout for the read that follows it.
    let limit = wait + state.settings.request_timeout;
    match tokio::time::timeout(limit, read(state, service, ip, id, wait)).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::Unavailable("request timed out".into())),
    }
}

async fn read(
    state: &AppState,
    service: &crate::store::ServiceAuth,
    ip: IpAddr,
    id: &str,
    wait: Duration,
) -> Result<RequestStatus, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = state.store.commits();
    loop {
        // Marked seen before the read: a commit after it wakes the wait below.
        commits.borrow_and_update();
        let Some(rec) = state.store.request_for_service(id, &service.id).await? else {
            let now = Timestamp::now();
            let actor = format!("service:{}", service.id);
            let a = audit_record(now, &actor, "request.read", "not_found", None, Some(ip));
            state.store.append_coalesced_audit(a).await?;
            return Err(ApiError::NotFound);
        };
        let now = Timestamp::now();
        let status = rec.status_at(now);
        let answer = |retrieval| RequestStatus {
            id: rec.id.clone(),
            status: status.as_str().to_owned(),
            expires_at: rec.expires_at,
            retrieval,
        };
        match status {
            RequestState::Pending => {
                let to_expiry = Duration::try_from(rec.expires_at.duration_since(now))
                    .unwrap_or(Duration::ZERO);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Ok(answer(None));
                }
                // Wake at the next commit, at the request's expiry, or at the deadline.
                let nap = left.min(to_expiry + Duration::from_millis(1));
                tokio::select! {
                    changed = commits.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(nap).await;
                        }
                    }
                    _ = tokio::time::sleep(nap) => {}
                }
            }
            RequestState::Expired => return Ok(answer(None)),
            RequestState::Fulfilled if rec.retrieval_id.is_some() => return Ok(answer(None)),
            RequestState::Fulfilled => {
                let retrieval = first_read(state, service, ip, &rec.id, now).await?;
                return Ok(answer(retrieval));
            }
        }
    }
}

/// The first read of a fulfilled request: the ordinary retrieval transaction on the key that
/// answered it. `None` when the key is gone meanwhile (revoked, expired, or read by a
/// concurrent first read).
async fn first_read(
    state: &AppState,
    service: &crate::store::ServiceAuth,
    ip: IpAddr,
    request_id: &str,
    now: Timestamp,
) -> Result<Option<keymaster_core::wire::RetrievalResponse>, ApiError> {
    let cmd = RetrieveCommand {
        code_hash: answer_code_hash(state, request_id),
        // A key that answered before a rotation of the server secret has its hash under the
        // previous one.
        previous_code_hashes: state
            .keys
            .previous_code_hashes(&format!("request:{request_id}")),
        service: service.clone(),
        source_ip: ip,
        context: None,
        password: PasswordCheck::NotGiven,
        now,
        budget_per_minute: state.settings.failed_retrievals_per_minute,
        new_retrieval_id: new_id("ret_"),
        budget_slot: None,
        preview: false,
    };
    match state.store.retrieve(cmd).await? {
        RetrieveOutcome::Allowed(key) => {
            metrics::counter!("keymaster_retrievals_total", "outcome" => "success").increment(1);
            let retrieval_id = key.retrieval_id.clone();
            let body = retrievals::response(state, *key)?;
            state.store.request_read(request_id, &retrieval_id).await?;
            Ok(Some(body))
        }
        RetrieveOutcome::NotFound => Ok(None),
        RetrieveOutcome::RateLimited(s) => Err(ApiError::RateLimited(s)),
        RetrieveOutcome::Denied(code) => Err(ApiError::Denied(code)),
        RetrieveOutcome::VerifyPassword { .. } | RetrieveOutcome::Previewed(_) => Err(
            ApiError::Internal("a request's key asked for a password or a preview".into()),
        ),
    }
}
