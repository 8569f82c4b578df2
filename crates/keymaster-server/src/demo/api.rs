//! The server side of the demo: what the two demo pages call under `/demo/api/`.
//!
//! - `POST /demo/api/deposit` — the authenticator's deposit, made with the demo's app key
//!   through the same use case as `POST /v1/keys`. The browser sends its public key (PEM) and
//!   proof of possession and gets the deposit body back (code, holder token, fingerprint);
//!   the holder token is the browser's own credential for its own key.
//! - `POST /demo/api/preview` — the example app asks who deposited the key behind a code
//!   before it claims it (the use case of `POST /v1/retrievals/preview`).
//! - `POST /demo/api/enrol` — the example app's settings page: retrieves the key for a typed
//!   code or a code URI with the demo's service key (the use case of `POST /v1/retrievals`) and
//!   keeps it for a demo account, in memory. An account whose key came with a SAS commitment
//!   stays pending (no sign-in) until the SAS exchange is done and the person confirmed it.
//! - `POST /demo/api/sas`, `POST /demo/api/sas/nonces`, `POST /demo/api/activate`,
//!   `POST /demo/api/dispute` — the example app's side of the verified handoff, for the
//!   account's retrieval: send the service's nonce, read both nonces, turn sign-in on once the
//!   person says the six digits match, or dispute the retrieval (and forget the account). The
//!   page checks the key against the code URI's commitment and computes the SAS itself, from
//!   the key bytes it received, as an outside service's own code would.
//! - `POST /demo/api/request`, `POST /demo/api/request/wait` — the example app's "Enrol by
//!   scanning": an enrolment request of the demo's service (the use case of `POST
//!   /v1/requests`), then its long-poll (of `GET /v1/requests/{id}?wait=`), which keeps the key
//!   that answered it for a new demo account, as `enrol` does.
//! - `POST /demo/api/request/preview` — the authenticator's "Scan a code": who asks (the use
//!   case of `POST /v1/requests/preview` with the demo's app key), for requests of the demo's
//!   service only; the answer itself is `deposit` with `request`.
//! - `POST /demo/api/challenge`, `POST /demo/api/verify` — the example app's sign-in: a random
//!   challenge, single-use and short-lived, and its signature checked with the stored key.
//!
//! Everything held here is bounded ([`MAX_ACCOUNTS`], [`MAX_CHALLENGES`],
//! [`DEPOSITS_PER_MINUTE`] for deposits and requests together, [`MAX_WAITING`], and the demo's
//! body limit), so that the demo cannot be used to
//! fill the server's memory or its database. Not responsible for the demo's credentials
//! (`bootstrap`) or for serving the pages (`demo`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use keymaster_core::handoff::{commitment_matches, decode_32, Bytes32};
use keymaster_core::key::PublicKey;
use keymaster_core::wire::{
    DepositRequest, DepositResponse, DisputeReason, DisputeRequest, EnrolmentRequestCreated,
    NewEnrolmentRequest, PolicyInput, PreviewResponse, RequestPreview, RequestPreviewRequest,
    RetrievalRequest, RetrievalResponse, SasNonces, SasRequest,
};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::bootstrap::{bootstrap, Credentials, SERVICE_NAME};
use crate::crypto::new_id;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::state::AppState;
use crate::store::{AppKeyAuth, ServiceAuth};
use crate::usecase;
use crate::usecase::requests;

/// Demo accounts of the example app held at once.
pub const MAX_ACCOUNTS: usize = 1000;
/// How long a demo account lasts.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(3600);
/// Open sign-in challenges held at once.
pub const MAX_CHALLENGES: usize = 1000;
/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Deposits through the demo per minute, all browsers together.
pub const DEPOSITS_PER_MINUTE: u32 = 30;
/// Lifetime asked for a demo key (clamped to the server's `min_ttl`..`max_ttl`).
pub const DEMO_KEY_TTL_SECONDS: i64 = 600;
/// What every sign-in challenge starts with; the authenticator signs nothing else, so that a
/// sign-in signature can never pass for a proof of possession or anything other.
pub const CHALLENGE_PREFIX: &str = "keymaster-demo-sign-in:";

/// The demo's state in this process: its credentials and the example app's memory.
#[derive(Default)]
pub struct Demo {
    /// Made on first use; remade if an operator deletes them.
    credentials: tokio::sync::Mutex<Option<Arc<Credentials>>>,
    /// The example app's accounts by id.
    accounts: Mutex<HashMap<String, Account>>,
    /// Open sign-in challenges by id.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Deposits in the current minute: (start of the minute, count).
    deposits: Mutex<Option<(Instant, u32)>>,
    /// Long-polls of enrolment requests under way.
    waiting: AtomicUsize,
}

/// An example-app account with two-factor sign-in enabled, or pending the SAS exchange.
struct Account {
    key: PublicKey,
    fingerprint: String,
    expires: Instant,
    /// The retrieval that brought the key (for the SAS exchange and a dispute).
    retrieval_id: String,
    /// The device's SAS commitment, when the deposit carried one.
    sas_commitment: Option<Bytes32>,
    /// Whether sign-in is on: at once for a key without a SAS commitment, else once the
    /// device's nonce opens the commitment and the person confirmed the six digits.
    active: bool,
}

/// A sign-in challenge waiting for its signature.
struct Challenge {
    account: String,
    challenge: String,
    expires: Instant,
}

/// Locks a map; a poisoned lock (a panic elsewhere while holding it) still holds a usable map
/// of independent entries, so it is taken as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Demo {
    /// This process's credentials, made on first use.
    async fn credentials(
        &self,
        state: &AppState,
        renew: bool,
    ) -> Result<Arc<Credentials>, ApiError> {
        let mut slot = self.credentials.lock().await;
        if renew {
            *slot = None;
        }
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(bootstrap(state).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The demo's app key and the service its keys are bound to.
    async fn app(&self, state: &AppState) -> Result<(AppKeyAuth, String), ApiError> {
        for renew in [false, true] {
            let c = self.credentials(state, renew).await?;
            if let Some(app) = c.app(state).await? {
                return Ok((app, c.service_id.clone()));
            }
        }
        Err(ApiError::Internal(
            "demo: app key vanished after renewal".into(),
        ))
    }

    /// The demo's service ("example-web").
    async fn service(&self, state: &AppState) -> Result<ServiceAuth, ApiError> {
        for renew in [false, true] {
            let c = self.credentials(state, renew).await?;
            if let Some(s) = c.service(state).await? {
                return Ok(s);
            }
        }
        Err(ApiError::Internal(
            "demo: service vanished after renewal".into(),
        ))
    }

    /// Counts a deposit against the demo's budget; `429` once this minute's is spent.
    fn take_deposit(&self, now: Instant) -> Result<(), ApiError> {
        let mut w = lock(&self.deposits);
        let (start, count) = match *w {
            Some((start, count)) if now.duration_since(start) < Duration::from_secs(60) => {
                (start, count)
            }
            _ => (now, 0),
        };
        if count >= DEPOSITS_PER_MINUTE {
            let wait = 60u64
                .saturating_sub(now.duration_since(start).as_secs())
                .max(1);
            return Err(ApiError::RateLimited(wait));
        }
        *w = Some((start, count + 1));
        Ok(())
    }

    /// The retrieval and SAS commitment of a live account; `404` for any other id.
    fn account_retrieval(
        &self,
        account: &str,
        now: Instant,
    ) -> Result<(String, Option<Bytes32>), ApiError> {
        lock(&self.accounts)
            .get(account)
            .filter(|a| a.expires > now)
            .map(|a| (a.retrieval_id.clone(), a.sas_commitment))
            .ok_or(ApiError::NotFound)
    }

    /// Whether one more account fits (after dropping expired ones).
    fn account_room(&self, now: Instant) -> Result<(), ApiError> {
        let mut accounts = lock(&self.accounts);
        if accounts.len() >= MAX_ACCOUNTS {
            accounts.retain(|_, a| a.expires > now);
        }
        if accounts.len() >= MAX_ACCOUNTS {
            return Err(ApiError::RateLimited(60));
        }
        Ok(())
    }
}

/// The authenticator's deposit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoDeposit {
    /// The public key, PEM `PUBLIC KEY` (SPKI), as WebCrypto exports it.
    pub public_key: String,
    /// Base64 signature over `keymaster-proof-of-possession:` + fingerprint (required here).
    pub proof: String,
    /// The key's label.
    #[serde(default)]
    pub label: Option<String>,
    /// Base64url of SHA-256 over the authenticator's 32-byte SAS nonce.
    #[serde(default)]
    pub sas_commitment: Option<String>,
    /// The code or code URI of an enrolment request of the demo's service that this key
    /// answers (the deposit then has no code of its own).
    #[serde(default)]
    pub request: Option<String>,
}

/// `POST /demo/api/deposit`: deposits with the demo's app key; the key may be retrieved only
/// by the demo's service, within [`DEMO_KEY_TTL_SECONDS`].
pub async fn deposit(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoDeposit>,
) -> Result<(StatusCode, Json<DepositResponse>), ApiError> {
    demo.take_deposit(Instant::now())?;
    let (app, service_id) = demo.app(&state).await?;
    let ttl =
        DEMO_KEY_TTL_SECONDS.clamp(state.limits.min_ttl_seconds, state.limits.max_ttl_seconds);
    let req = DepositRequest {
        public_key: Some(body.public_key),
        proof: Some(body.proof),
        label: Some(
            body.label
                .unwrap_or_else(|| "demo authenticator".to_owned()),
        ),
        policy: Some(PolicyInput {
            ttl_seconds: Some(ttl),
            services: Some(vec![service_id]),
            ..PolicyInput::default()
        }),
        sas_commitment: body.sas_commitment,
        request: body.request,
        ..DepositRequest::default()
    };
    let resp = usecase::deposit::deposit(&state, &app, ip, req).await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

/// The code typed into the example app's settings page, or the code URI of the QR code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoEnrol {
    /// The code as typed, or `keymaster:<code>?fp=…`.
    pub code: String,
}

/// `POST /demo/api/preview`: who deposited the key behind the code, as "example-web" may see
/// it, without claiming the key.
pub async fn preview(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoEnrol>,
) -> Result<Json<PreviewResponse>, ApiError> {
    let service = demo.service(&state).await?;
    let req = RetrievalRequest {
        code: body.code,
        ..RetrievalRequest::default()
    };
    usecase::retrieve::preview(&state, &service, ip, &req)
        .await
        .map(Json)
}

/// The example app's answer: the account, with sign-in on or pending the SAS (`active`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Enrolled {
    /// The demo account (the browser keeps it for the sign-in page).
    pub account: String,
    /// The retrieving service's name.
    pub service: String,
    /// `SHA256:…` of the retrieved key.
    pub fingerprint: String,
    /// `ed25519`, `p256`, …
    pub algorithm: String,
    /// The key's label, as the depositor gave it.
    pub label: Option<String>,
    /// Whether the deposit carried a good proof of possession.
    pub proven: bool,
    /// The retrieval, as the API names it.
    pub retrieval_id: String,
    /// The key as received (PEM SPKI), so that the page checks it against the code URI and
    /// computes the SAS from its own bytes.
    pub public_key_pem: String,
    /// The device's SAS commitment as the retrieval carried it (`null` without one).
    pub sas_commitment: Option<String>,
    /// Whether sign-in is on already; `false` until the SAS is confirmed (`activate`).
    pub active: bool,
}

/// `POST /demo/api/enrol`: retrieves the key for the code as "example-web" and keeps it for a
/// new demo account.
pub async fn enrol(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoEnrol>,
) -> Result<Json<Enrolled>, ApiError> {
    // Refuse before retrieving, so that a full demo does not use up someone's key.
    demo.account_room(Instant::now())?;
    let service = demo.service(&state).await?;
    let req = RetrievalRequest {
        code: body.code,
        ..RetrievalRequest::default()
    };
    let got = usecase::retrieve::retrieve(&state, &service, ip, &req).await?;
    keep_account(&demo, got).map(Json)
}

/// Keeps the retrieved key for a new demo account.
fn keep_account(demo: &Demo, got: RetrievalResponse) -> Result<Enrolled, ApiError> {
    let Some(pem) = got.public_key_pem else {
        return Err(ApiError::InvalidRequest(
            "example-web signs people in with a public key; this code was for a secret".into(),
        ));
    };
    let key = PublicKey::parse(&pem)
        .map_err(|e| ApiError::Internal(format!("retrieved key does not parse: {e}")))?;
    let fingerprint = key.fingerprint();
    let commitment = got.sas_commitment.as_deref().and_then(decode_32);
    let active = commitment.is_none();
    let account = new_id("acct_");
    lock(&demo.accounts).insert(
        account.clone(),
        Account {
            key,
            fingerprint: fingerprint.clone(),
            expires: Instant::now() + ACCOUNT_TTL,
            retrieval_id: got.retrieval_id.clone(),
            sas_commitment: commitment,
            active,
        },
    );
    Ok(Enrolled {
        account,
        service: SERVICE_NAME.to_owned(),
        fingerprint,
        algorithm: got.algorithm,
        label: got.label,
        proven: got.proven,
        retrieval_id: got.retrieval_id,
        public_key_pem: pem,
        sas_commitment: got.sas_commitment,
        active,
    })
}

/// The label of the demo's enrolment requests, shown by the authenticator.
pub const REQUEST_LABEL: &str = "example-web sign-in";
/// The longest wait of one long-poll through the demo.
pub const MAX_REQUEST_WAIT_SECONDS: u64 = 25;
/// Long-polls through the demo at once: each holds one of the server's request slots (the
/// demo's routes are bounded like the API's), so few may wait at a time.
pub const MAX_WAITING: usize = 8;
/// What a long-poll leaves of `request_timeout` for the read that follows its wait.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

/// `POST /demo/api/request`: a new enrolment request of "example-web", for its page to show
/// as a QR code. Counted against the demo's deposit budget: each request is a row.
pub async fn create_request(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
) -> Result<(StatusCode, Json<EnrolmentRequestCreated>), ApiError> {
    demo.take_deposit(Instant::now())?;
    let service = demo.service(&state).await?;
    let req = NewEnrolmentRequest {
        label: Some(REQUEST_LABEL.to_owned()),
        ..NewEnrolmentRequest::default()
    };
    let created = requests::create_request(&state, &service, ip, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One of the [`MAX_WAITING`] long-polls, given back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// A place among the waiting; `429` when all are taken.
    fn take(count: &'a AtomicUsize) -> Result<Self, ApiError> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING).then_some(n + 1)
            })
            .map(|_| Waiting(count))
            .map_err(|_| ApiError::RateLimited(1))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The example app waits for the answer to its request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoRequestWait {
    /// From `request`.
    pub request_id: String,
    /// Seconds to hold the answer (at most [`MAX_REQUEST_WAIT_SECONDS`]; default 0).
    #[serde(default)]
    pub wait: Option<u64>,
}

/// The request's status, with the new account once the key has come.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestWaited {
    /// `pending`, `fulfilled` or `expired`.
    pub status: String,
    /// The demo account made from the key that answered, in the answer that retrieved it.
    pub enrolled: Option<Enrolled>,
}

/// `POST /demo/api/request/wait`: the long-poll of the demo service's request; the key that
/// answered it goes to a new demo account. Another service's request is `404`, as for `GET
/// /v1/requests/{id}`.
pub async fn wait_request(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoRequestWait>,
) -> Result<Json<RequestWaited>, ApiError> {
    let wait = body.wait.unwrap_or(0);
    if wait > MAX_REQUEST_WAIT_SECONDS {
        return Err(ApiError::InvalidRequest(format!(
            "wait: at most {MAX_REQUEST_WAIT_SECONDS} seconds"
        )));
    }
    // Refuse before reading, so that a full demo does not use up someone's key.
    demo.account_room(Instant::now())?;
    let _slot = Waiting::take(&demo.waiting)?;
    // The demo's routes answer within `request_timeout`: the wait ends before it.
    let wait = wait.min(
        state
            .settings
            .request_timeout
            .saturating_sub(WAIT_MARGIN)
            .as_secs(),
    );
    let service = demo.service(&state).await?;
    let status = requests::read_request(&state, &service, ip, &body.request_id, wait).await?;
    let enrolled = status
        .retrieval
        .map(|got| keep_account(&demo, got))
        .transpose()?;
    Ok(Json(RequestWaited {
        status: status.status,
        enrolled,
    }))
}

/// `POST /demo/api/request/preview`: who asks for a key under the scanned code, as the demo's
/// app key may see it. Only the demo's own service's requests are shown; any other is `404`,
/// so that the demo cannot be used to answer other services.
pub async fn preview_request(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RequestPreviewRequest>,
) -> Result<Json<RequestPreview>, ApiError> {
    let (app, service_id) = demo.app(&state).await?;
    let preview = requests::preview_request(&state, &app, ip, &body).await?;
    if preview.service.id != service_id {
        return Err(ApiError::NotFound);
    }
    Ok(Json(preview))
}

/// A sign-in attempt of one demo account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoChallengeRequest {
    /// The account from `enrol`.
    pub account: String,
}

/// A challenge for the authenticator to sign.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChallengeIssued {
    /// Names the challenge in `verify`.
    pub challenge_id: String,
    /// The exact text to sign: [`CHALLENGE_PREFIX`] and 256 random bits, base64url.
    pub challenge: String,
    /// Seconds the challenge may be answered.
    pub expires_in: u64,
}

/// `POST /demo/api/challenge`: a fresh, single-use challenge for the account.
pub async fn challenge(
    Extension(demo): Extension<Arc<Demo>>,
    ApiJson(body): ApiJson<DemoChallengeRequest>,
) -> Result<Json<ChallengeIssued>, ApiError> {
    let now = Instant::now();
    {
        let accounts = lock(&demo.accounts);
        match accounts.get(&body.account) {
            Some(a) if a.expires > now && a.active => {}
            // Pending the SAS: the person has not yet confirmed that this is their key.
            Some(a) if a.expires > now => return Err(ApiError::Forbidden),
            _ => return Err(ApiError::NotFound),
        }
    }
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let challenge = format!("{CHALLENGE_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let challenge_id = new_id("chl_");
    let mut challenges = lock(&demo.challenges);
    if challenges.len() >= MAX_CHALLENGES {
        challenges.retain(|_, c| c.expires > now);
    }
    if challenges.len() >= MAX_CHALLENGES {
        return Err(ApiError::RateLimited(CHALLENGE_TTL.as_secs()));
    }
    challenges.insert(
        challenge_id.clone(),
        Challenge {
            account: body.account,
            challenge: challenge.clone(),
            expires: now + CHALLENGE_TTL,
        },
    );
    Ok(Json(ChallengeIssued {
        challenge_id,
        challenge,
        expires_in: CHALLENGE_TTL.as_secs(),
    }))
}

/// The authenticator's answer to a challenge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoVerify {
    /// From `challenge`.
    pub challenge_id: String,
    /// Base64 signature over the challenge text (Ed25519, or ECDSA in DER).
    pub signature: String,
}

/// A successful sign-in.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignedIn {
    /// The account now signed in.
    pub account: String,
    /// The fingerprint of the key that signed.
    pub fingerprint: String,
}

/// `POST /demo/api/verify`: checks the signature with the account's stored key. The
/// challenge is used up by the attempt, right or wrong.
pub async fn verify(
    Extension(demo): Extension<Arc<Demo>>,
    ApiJson(body): ApiJson<DemoVerify>,
) -> Result<Json<SignedIn>, ApiError> {
    let now = Instant::now();
    let challenge = lock(&demo.challenges)
        .remove(&body.challenge_id)
        .filter(|c| c.expires > now)
        .ok_or(ApiError::NotFound)?;
    let signature = STANDARD
        .decode(body.signature.trim())
        .map_err(|_| ApiError::InvalidRequest("signature: not valid base64".into()))?;
    let accounts = lock(&demo.accounts);
    let account = accounts
        .get(&challenge.account)
        .filter(|a| a.expires > now && a.active)
        .ok_or(ApiError::NotFound)?;
    account
        .key
        .verify(challenge.challenge.as_bytes(), &signature)
        .map_err(|_| ApiError::Unauthorized)?;
    Ok(Json(SignedIn {
        account: challenge.account,
        fingerprint: account.fingerprint.clone(),
    }))
}

/// One of the example app's accounts, named in the SAS and dispute calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAccount {
    /// The account from `enrol`.
    pub account: String,
}

/// The example app's SAS nonce for an account's retrieval.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSasRequest {
    /// The account from `enrol`.
    pub account: String,
    /// 32 random bytes drawn by the page, unpadded base64url.
    pub nonce: String,
}

/// `POST /demo/api/sas`: asks the authenticator for the SAS of the account's retrieval
/// (the use case of `POST /v1/retrievals/{id}/sas`).
pub async fn request_sas(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoSasRequest>,
) -> Result<StatusCode, ApiError> {
    let (retrieval_id, _) = demo.account_retrieval(&body.account, Instant::now())?;
    let service = demo.service(&state).await?;
    let req = SasRequest { nonce: body.nonce };
    usecase::handoff::request_sas(&state, &service, ip, &retrieval_id, &req).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /demo/api/sas/nonces`: both nonces of the account's retrieval (the use case of
/// `GET /v1/retrievals/{id}/sas`).
pub async fn sas_nonces(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ApiJson(body): ApiJson<DemoAccount>,
) -> Result<Json<SasNonces>, ApiError> {
    let (retrieval_id, _) = demo.account_retrieval(&body.account, Instant::now())?;
    let service = demo.service(&state).await?;
    usecase::handoff::sas_nonces(&state, &service, &retrieval_id)
        .await
        .map(Json)
}

/// `POST /demo/api/activate`: the person says both pages show the same six digits; sign-in
/// goes on. Refused (`400`) until the authenticator's nonce is revealed and opens its
/// commitment, so that sign-in never goes on for a key whose exchange did not take place.
pub async fn activate(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ApiJson(body): ApiJson<DemoAccount>,
) -> Result<StatusCode, ApiError> {
    let now = Instant::now();
    let (retrieval_id, commitment) = demo.account_retrieval(&body.account, now)?;
    if let Some(commitment) = commitment {
        let service = demo.service(&state).await?;
        let nonces = usecase::handoff::sas_nonces(&state, &service, &retrieval_id).await?;
        let opened = nonces
            .device_nonce
            .as_deref()
            .and_then(decode_32)
            .is_some_and(|nd| commitment_matches(&commitment, &nd));
        if !opened {
            return Err(ApiError::InvalidRequest(
                "the authenticator has not revealed a nonce that opens its commitment".into(),
            ));
        }
    }
    let mut accounts = lock(&demo.accounts);
    let account = accounts
        .get_mut(&body.account)
        .filter(|a| a.expires > now)
        .ok_or(ApiError::NotFound)?;
    account.active = true;
    Ok(StatusCode::NO_CONTENT)
}

/// The example app refuses the key of an account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoDispute {
    /// The account from `enrol`.
    pub account: String,
    /// `key_mismatch`, `sas_mismatch` or `not_requested`.
    pub reason: DisputeReason,
}

/// `POST /demo/api/dispute`: disputes the account's retrieval (the use case of
/// `POST /v1/retrievals/{id}/dispute`, so that the holder gets `key.disputed`) and forgets the
/// account and its key.
pub async fn dispute(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<DemoDispute>,
) -> Result<StatusCode, ApiError> {
    let (retrieval_id, _) = demo.account_retrieval(&body.account, Instant::now())?;
    // Forgotten first: whatever the dispute's fate, this key signs nobody in.
    lock(&demo.accounts).remove(&body.account);
    let service = demo.service(&state).await?;
    let req = DisputeRequest {
        reason: body.reason,
    };
    usecase::handoff::dispute(&state, &service, ip, &retrieval_id, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}
