//! The outside service's client: previewing and retrieving a key by code (or code URI) with a
//! `kms_` service key, checking the key received against the code URI's commitment, confirming
//! receipt and disputing a retrieval; asking a device for a key with an enrolment request and
//! waiting for its answer.

use std::time::Duration;

use keymaster_core::handoff::{
    b64url, commitment_matches, decode_32, sas, Bytes32, CodeUri, CodeUriError, Sas,
};
use keymaster_core::key::PublicKey;
use keymaster_core::wire::{
    DisputeReason, DisputeRequest, EnrolmentRequestCreated, NewEnrolmentRequest, PreviewResponse,
    RequestStatus, RetrievalRequest, RetrievalResponse, SasNonces, SasRequest,
};
use reqwest::Method;

use crate::http::{send_empty, send_json, Conn};
use crate::Error;

/// Retrieves keys for one enrolled service.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), keymaster_client::Error> {
/// use keymaster_client::{wire::RetrievalRequest, ServiceClient};
///
/// let service = ServiceClient::new("http://127.0.0.1:8080", "kms_…")?;
/// let key = service
///     .retrieve(&RetrievalRequest {
///         code: "4729-1047-5518-2036".into(),
///         ..Default::default()
///     })
///     .await?;
/// if key.confirm_by.is_some() {
///     service.confirm(&key.retrieval_id).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceClient {
    conn: Conn,
}

impl ServiceClient {
    /// A client for the key master at `base_url` with the service's key.
    pub fn new(base_url: &str, service_key: &str) -> Result<Self, Error> {
        Ok(ServiceClient {
            conn: Conn::new(base_url, service_key)?,
        })
    }

    /// Like [`ServiceClient::new`], sharing the caller's `reqwest::Client` pool.
    pub fn with_http_client(
        base_url: &str,
        service_key: &str,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(ServiceClient {
            conn: Conn::with_http(base_url, service_key, http)?,
        })
    }

    /// `POST /v1/retrievals`. `request.code` is a code as typed or a code URI
    /// (`keymaster:<code>?fp=…`, what the QR code holds). It is checked offline first: a
    /// mistyped code is [`Error::InvalidCode`], a malformed URI [`Error::InvalidCodeUri`], and
    /// no request is sent (so it never costs a failed retrieval). It is sent as given; the
    /// server normalises it the same way and ignores `fp`.
    ///
    /// When the URI carries `fp`, the key received must be the one it commits to: SHA-256 over
    /// the SPKI parsed from `public_key_pem` (and from `openssh` and `jwk`, when present, since
    /// a caller may use any of them) must equal `fp`. Fingerprints sent by the server are not
    /// trusted. Otherwise the retrieval is disputed (`key_mismatch`) and the answer is
    /// [`Error::KeyMismatch`]: the key is never returned.
    pub async fn retrieve(&self, request: &RetrievalRequest) -> Result<RetrievalResponse, Error> {
        let uri = parse_code(&request.code)?;
        let retrieved: RetrievalResponse = send_json(
            self.conn
                .request(Method::POST, &["v1", "retrievals"])?
                .json(request),
        )
        .await?;
        if uri.fp.is_none() || key_matches(&uri, &retrieved) {
            return Ok(retrieved);
        }
        let disputed = self
            .dispute(&retrieved.retrieval_id, DisputeReason::KeyMismatch)
            .await
            .is_ok();
        Err(Error::KeyMismatch {
            retrieval_id: retrieved.retrieval_id,
            disputed,
        })
    }

    /// `POST /v1/retrievals/preview`: who deposited the key behind the code, when and from
    /// which network, without claiming it, so that the person can be asked first. The code is
    /// checked offline as for [`ServiceClient::retrieve`]. A preview counts against the
    /// failure budget like a retrieval.
    pub async fn preview(&self, request: &RetrievalRequest) -> Result<PreviewResponse, Error> {
        parse_code(&request.code)?;
        send_json(
            self.conn
                .request(Method::POST, &["v1", "retrievals", "preview"])?
                .json(request),
        )
        .await
    }

    /// `POST /v1/retrievals/{retrieval_id}/sas`: starts the SAS exchange of a retrieval this
    /// service made with the service's nonce `ns`; the device is told with `sas.requested`.
    pub async fn request_sas(&self, retrieval_id: &str, ns: &Bytes32) -> Result<(), Error> {
        send_empty(
            self.conn
                .request(Method::POST, &["v1", "retrievals", retrieval_id, "sas"])?
                .json(&SasRequest { nonce: b64url(ns) }),
        )
        .await
    }

    /// `GET /v1/retrievals/{retrieval_id}/sas`: both nonces as far as they are known
    /// (`device_nonce` is `None` until the device reveals it). Check the device's nonce
    /// against the retrieval's `sas_commitment` before computing the SAS.
    pub async fn sas_nonces(&self, retrieval_id: &str) -> Result<SasNonces, Error> {
        send_json(
            self.conn
                .request(Method::GET, &["v1", "retrievals", retrieval_id, "sas"])?,
        )
        .await
    }

    /// The service's whole side of the SAS exchange for a key just retrieved: sends a fresh
    /// nonce, waits up to `timeout` for the device to reveal its own, checks it against the
    /// retrieval's `sas_commitment` and returns the six digits computed over the key bytes
    /// received (the DER SPKI, or a `secret`'s bytes). Show them and have the person compare
    /// them with the device's before using the key.
    ///
    /// A retrieval without a commitment is refused like a nonce that does not open it (a
    /// stripped commitment would let a key master search nonces offline): the retrieval is
    /// disputed (`sas_mismatch`) and the answer is [`Error::SasMismatch`]. No reveal in time is
    /// [`Error::SasTimeout`].
    pub async fn verify_sas(
        &self,
        retrieved: &RetrievalResponse,
        timeout: Duration,
    ) -> Result<Sas, Error> {
        let rid = retrieved.retrieval_id.as_str();
        let Some(commitment) = retrieved.sas_commitment.as_deref().and_then(decode_32) else {
            return Err(self
                .refuse_sas(rid, "the key was deposited without a SAS commitment")
                .await);
        };
        let key = key_bytes(retrieved)?;
        let ns: Bytes32 = rand::random();
        self.request_sas(rid, &ns).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let nd = loop {
            if let Some(nd) = self.sas_nonces(rid).await?.device_nonce {
                break nd;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::SasTimeout {
                    retrieval_id: rid.to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match decode_32(&nd) {
            Some(nd) if commitment_matches(&commitment, &nd) => Ok(sas(&key, &nd, &ns)),
            _ => Err(self
                .refuse_sas(rid, "the device's SAS nonce does not open its commitment")
                .await),
        }
    }

    async fn refuse_sas(&self, retrieval_id: &str, why: &'static str) -> Error {
        let disputed = self
            .dispute(retrieval_id, DisputeReason::SasMismatch)
            .await
            .is_ok();
        Error::SasMismatch {
            retrieval_id: retrieval_id.to_owned(),
            why,
            disputed,
        }
    }

    /// `POST /v1/retrievals/{retrieval_id}/dispute`: reports a retrieval this service made
    /// whose key is not the one the device deposited (or that nobody asked for); the holder
    /// is told with `key.disputed`.
    pub async fn dispute(&self, retrieval_id: &str, reason: DisputeReason) -> Result<(), Error> {
        send_empty(
            self.conn
                .request(Method::POST, &["v1", "retrievals", retrieval_id, "dispute"])?
                .json(&DisputeRequest { reason }),
        )
        .await
    }

    /// `POST /v1/retrievals/{retrieval_id}/confirm`: receipt of a key held for confirmation;
    /// the key master removes it.
    pub async fn confirm(&self, retrieval_id: &str) -> Result<(), Error> {
        send_empty(
            self.conn
                .request(Method::POST, &["v1", "retrievals", retrieval_id, "confirm"])?,
        )
        .await
    }

    /// `POST /v1/requests`: asks a device for a key. Show `code_uri` as a QR code (or
    /// `code_display` as text) to the person, then [`ServiceClient::wait`] for the answer.
    pub async fn request(
        &self,
        request: &NewEnrolmentRequest,
    ) -> Result<EnrolmentRequestCreated, Error> {
        send_json(
            self.conn
                .request(Method::POST, &["v1", "requests"])?
                .json(request),
        )
        .await
    }

    /// `GET /v1/requests/{id}?wait=N`: the request's status, held by the server until the
    /// request is fulfilled or `wait` (at most 60 s) has passed. The first answer after the
    /// request is fulfilled carries the key (`retrieval`); it is the only one that does.
    pub async fn request_status(&self, id: &str, wait: Duration) -> Result<RequestStatus, Error> {
        let secs = wait.as_secs().min(MAX_WAIT_SECS);
        let mut request = self
            .conn
            .request_untimed(Method::GET, &["v1", "requests", id])?
            .timeout(Duration::from_secs(secs) + WAIT_MARGIN);
        if secs > 0 {
            request = request.query(&[("wait", secs)]);
        }
        send_json(request).await
    }

    /// Waits up to `timeout` for the device's answer to request `id`, long-polling the server
    /// (one call per minute at most), and returns the last status: `fulfilled` with the key in
    /// `retrieval`, `expired`, or `pending` when `timeout` passed first.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<RequestStatus, Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let status = self.request_status(id, left).await?;
            if status.status != "pending" || left.as_secs() == 0 {
                return Ok(status);
            }
        }
    }
}

/// The offline check of a code or code URI, with the SDK's errors.
fn parse_code(input: &str) -> Result<CodeUri, Error> {
    CodeUri::parse(input).map_err(|err| match err {
        CodeUriError::Code(err) => Error::InvalidCode(err),
        other => Error::InvalidCodeUri(other),
    })
}

/// Whether every form of the key in `retrieved` is the key `uri` commits to. A retrieval
/// without a PEM (a `secret`, or a form the server left out) cannot match a commitment.
fn key_matches(uri: &CodeUri, retrieved: &RetrievalResponse) -> bool {
    let Some(pem) = &retrieved.public_key_pem else {
        return false;
    };
    let pem_ok = PublicKey::parse(pem).is_ok_and(|key| uri.matches_key(key.spki_der()));
    let openssh_ok = retrieved
        .openssh
        .as_deref()
        .is_none_or(|line| PublicKey::parse(line).is_ok_and(|key| uri.matches_key(key.spki_der())));
    let jwk_ok = retrieved.jwk.as_ref().is_none_or(|jwk| {
        PublicKey::from_jwk(jwk).is_ok_and(|key| uri.matches_key(key.spki_der()))
    });
    pem_ok && openssh_ok && jwk_ok
}

/// The bytes the SAS is computed over: the DER SPKI of the public key received, or the
/// secret's bytes.
fn key_bytes(retrieved: &RetrievalResponse) -> Result<Vec<u8>, Error> {
    match (&retrieved.public_key_pem, &retrieved.secret) {
        (Some(pem), _) => Ok(PublicKey::parse(pem)
            .map_err(Error::Key)?
            .spki_der()
            .to_vec()),
        (None, Some(secret)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(secret)
                .map_err(|_| Error::Decode("the secret received is not base64".into()))
        }
        (None, None) => Err(Error::Decode("the retrieval holds no key".into())),
    }
}

/// The longest `wait` the server holds a request's read for.
const MAX_WAIT_SECS: u64 = 60;
/// How much longer than its `wait` a long-poll may take before the client gives up.
const WAIT_MARGIN: Duration = Duration::from_secs(30);
