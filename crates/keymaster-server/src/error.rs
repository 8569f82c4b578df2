//! `ApiError`: every refusal the API can give, and the one place where status codes and
//! problem codes are chosen (RFC 9457 `application/problem+json`).
//!
//! Internal errors get a generic body; their cause is logged with the request's span, never
//! sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keymaster_core::policy::Denial;
use keymaster_core::wire::Problem;

use crate::store::StoreError;

/// A refusal, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, unknown fields, missing or contradictory fields, a bad policy.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Key material that is not an acceptable public key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A proof of possession that does not verify.
    #[error("invalid proof")]
    InvalidProof,
    /// A private key was sent where a public key belongs.
    #[error("private key rejected")]
    PrivateKeyRejected,
    /// A code that fails the format or check-symbol test.
    #[error("invalid code")]
    InvalidCode,
    /// E-mail notification asked for, but the server has no `smtp_url`.
    #[error("email not configured")]
    EmailNotConfigured,
    /// Missing, malformed or unknown credential.
    #[error("unauthorized")]
    Unauthorized,
    /// A valid credential of the wrong kind for this endpoint.
    #[error("forbidden")]
    Forbidden,
    /// A retrieval refused by a rule (the key's policy, or the service's `allowed_cidrs`);
    /// the rule names the error code and the detail. [`Denial::Gone`] is answered as
    /// [`ApiError::NotFound`].
    #[error("policy denied: {}", .0.code())]
    Denied(Denial),
    /// Nothing here, or nothing this caller may know about.
    #[error("not found")]
    NotFound,
    /// A method that the path does not serve (the router adds the `Allow` header).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The device revealed its SAS nonce before the service asked for the SAS.
    #[error("sas not requested")]
    SasNotRequested,
    /// A deposit answers an enrolment request that another deposit answered already.
    #[error("request fulfilled")]
    RequestFulfilled,
    /// Body over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A budget of the caller is spent (failed retrievals or previews, bad credentials, recodes,
    /// demo deposits); retry after this many seconds.
    #[error("rate limited")]
    RateLimited(u64),
    /// A bound on work that is held open (event streams, key generation) is reached; the text
    /// says which; retry after this many seconds.
    #[error("busy: {0}")]
    Busy(&'static str, u64),
    /// The database cannot be reached right now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or a failure of something we depend on; logged, not shown.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and the error code (`docs/api.md`, "Errors").
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            ApiError::InvalidProof => (StatusCode::BAD_REQUEST, "invalid_proof"),
            ApiError::PrivateKeyRejected => (StatusCode::BAD_REQUEST, "private_key_rejected"),
            ApiError::InvalidCode => (StatusCode::BAD_REQUEST, "invalid_code"),
            ApiError::EmailNotConfigured => (StatusCode::BAD_REQUEST, "email_not_configured"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound | ApiError::Denied(Denial::Gone) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Denied(denial) => (StatusCode::FORBIDDEN, denial.code()),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::SasNotRequested => (StatusCode::CONFLICT, "sas_not_requested"),
            ApiError::RequestFulfilled => (StatusCode::CONFLICT, "request_fulfilled"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RateLimited(_) | ApiError::Busy(..) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The error code alone, as written to the audit log.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn title_and_detail(&self) -> (&'static str, Option<String>) {
        match self {
            ApiError::InvalidRequest(m) => ("The request is not valid", Some(m.clone())),
            ApiError::InvalidKey(m) => ("The key is not valid", Some(m.clone())),
            ApiError::InvalidProof => (
                "The proof of possession does not verify",
                Some("proof must be a signature by the private key over \"keymaster-proof-of-possession:\" followed by the key's fingerprint".into()),
            ),
            ApiError::PrivateKeyRejected => (
                "This is a private key",
                Some("send the public key only; keymaster never holds a device's private key".into()),
            ),
            ApiError::InvalidCode => (
                "The code looks mistyped",
                Some("check the code: its length, characters or check digit are wrong".into()),
            ),
            ApiError::EmailNotConfigured => (
                "E-mail is not configured on this server",
                Some("notify.email needs the server setting smtp_url".into()),
            ),
            ApiError::Unauthorized => (
                "Missing or unknown credential",
                Some("send Authorization: Bearer <token>".into()),
            ),
            ApiError::Forbidden => ("This credential may not do that", None),
            ApiError::NotFound | ApiError::Denied(Denial::Gone) => ("Not found", None),
            ApiError::Denied(denial) => (
                "The key's policy refuses this retrieval",
                denial_detail(*denial).map(str::to_owned),
            ),
            ApiError::MethodNotAllowed => (
                "This path does not serve that method",
                Some("the Allow header lists the methods it serves".into()),
            ),
            ApiError::SasNotRequested => (
                "The service has not asked for the SAS yet",
                Some("reveal the nonce after the sas.requested event for this retrieval".into()),
            ),
            ApiError::RequestFulfilled => (
                "This enrolment request is answered already",
                Some("a request takes one key; ask the service for a new request".into()),
            ),
            ApiError::PayloadTooLarge => ("The body is too large", Some("the limit is 64 KiB".into())),
            ApiError::RateLimited(s) => (
                "Too many attempts in too short a time",
                Some(format!("retry after {s} seconds")),
            ),
            ApiError::Busy(what, s) => (
                "Too many at once",
                Some(format!("{what}; retry after {s} seconds")),
            ),
            ApiError::Unavailable(_) => ("The service is temporarily unavailable", None),
            ApiError::Internal(_) => ("Internal error", None),
        }
    }
}

/// The detail of a refusal by a rule. Matched on the rule itself, with no catch-all, so that a
/// new rule does not compile until it has its detail. `None` for [`Denial::Gone`], which is
/// answered as `404 not_found` with no detail.
fn denial_detail(denial: Denial) -> Option<&'static str> {
    Some(match denial {
        Denial::Gone => return None,
        Denial::PasswordRequired => "this key needs a password",
        Denial::PasswordIncorrect { now_locked: false } => "the password is wrong",
        Denial::Locked | Denial::PasswordIncorrect { now_locked: true } => {
            "too many wrong passwords; the key is locked"
        }
        Denial::ServiceNotAllowed => "this service may not retrieve the key",
        Denial::DomainNotAllowed => "this service's domain may not retrieve the key",
        Denial::IpNotAllowed => "requests from this address may not retrieve the key",
        Denial::OutsideTimeWindow => "the key may not be retrieved at this time",
        Denial::GeoDenied => "the key may not be retrieved from this place",
        Denial::GeoContextRequired => "the key's policy needs the retrieval's location in context",
        Denial::ProximityDenied => {
            "the key may be retrieved only from the network it was deposited from"
        }
        Denial::ProximityContextRequired => {
            "the key's policy needs the end user's address in context.ip"
        }
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "unavailable"),
            _ => {}
        }
        let (title, detail) = self.title_and_detail();
        problem_response(status, code, title, detail, &self)
    }
}

/// Builds a problem+json response.
fn problem_response(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: Option<String>,
    err: &ApiError,
) -> Response {
    let body = Problem {
        problem_type: "about:blank".to_owned(),
        title: title.to_owned(),
        status: status.as_u16(),
        code: code.to_owned(),
        detail,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let ApiError::RateLimited(secs) | ApiError::Busy(_, secs) = err {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule, one value each; the match below stops compiling when a rule is added and
    /// not listed here.
    const DENIALS: [Denial; 13] = [
        Denial::Gone,
        Denial::Locked,
        Denial::ServiceNotAllowed,
        Denial::DomainNotAllowed,
        Denial::IpNotAllowed,
        Denial::OutsideTimeWindow,
        Denial::GeoDenied,
        Denial::GeoContextRequired,
        Denial::ProximityDenied,
        Denial::ProximityContextRequired,
        Denial::PasswordRequired,
        Denial::PasswordIncorrect { now_locked: false },
        Denial::PasswordIncorrect { now_locked: true },
    ];

    #[allow(dead_code)]
    fn listed(d: Denial) {
        match d {
            Denial::Gone
            | Denial::Locked
            | Denial::ServiceNotAllowed
            | Denial::DomainNotAllowed
            | Denial::IpNotAllowed
            | Denial::OutsideTimeWindow
            | Denial::GeoDenied
            | Denial::GeoContextRequired
            | Denial::ProximityDenied
            | Denial::ProximityContextRequired
            | Denial::PasswordRequired
            | Denial::PasswordIncorrect { .. } => {}
        }
    }

    #[test]
    fn every_refusing_rule_is_403_with_its_code_and_own_detail() {
        let mut details = std::collections::HashMap::new();
        for denial in DENIALS.into_iter().filter(|d| *d != Denial::Gone) {
            let e = ApiError::Denied(denial);
            assert_eq!(
                e.status_and_code(),
                (StatusCode::FORBIDDEN, denial.code()),
                "{denial:?}"
            );
            let (title, detail) = e.title_and_detail();
            assert_eq!(title, "The key's policy refuses this retrieval");
            let detail = detail.unwrap_or_else(|| panic!("{denial:?} has no detail"));
            // One detail per error code: two rules with one code (a lock) share it.
            if let Some(other) = details.insert(denial.code(), detail.clone()) {
                assert_eq!(other, detail, "{denial:?}");
            }
        }
        let mut distinct: Vec<&String> = details.values().collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), details.len(), "two codes share a detail");
    }

    #[test]
    fn a_gone_key_is_answered_as_not_found() {
        let e = ApiError::Denied(Denial::Gone);
        assert_eq!(e.status_and_code(), ApiError::NotFound.status_and_code());
        assert_eq!(e.title_and_detail(), ApiError::NotFound.title_and_detail());
    }

    #[test]
    fn the_details_are_the_ones_the_api_gave_by_code() {
        for (denial, detail) in [
            (Denial::PasswordRequired, "this key needs a password"),
            (
                Denial::PasswordIncorrect { now_locked: false },
                "the password is wrong",
            ),
            (
                Denial::PasswordIncorrect { now_locked: true },
                "too many wrong passwords; the key is locked",
            ),
            (
                Denial::IpNotAllowed,
                "requests from this address may not retrieve the key",
            ),
        ] {
            let (_, got) = ApiError::Denied(denial).title_and_detail();
            assert_eq!(got.as_deref(), Some(detail), "{denial:?}");
        }
    }
}
