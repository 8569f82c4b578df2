//! The SDK's one error type. It keeps the server's RFC 9457 problem body intact, so that callers
//! can branch on the API's error codes (`not_found`, `rate_limited`, …) rather than on text.

use keymaster_core::code::CodeError;
use keymaster_core::handoff::CodeUriError;
use keymaster_core::key::KeyError;
use keymaster_core::wire::Problem;

/// Everything a call of this SDK can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a problem body (`application/problem+json`).
    #[error("{} ({}): {}", problem.title, problem.code, problem.detail.as_deref().unwrap_or("no detail"))]
    Api {
        /// The HTTP status of the answer.
        status: u16,
        /// The problem body; `problem.code` is one of the API's error codes.
        problem: Problem,
        /// Seconds from a `Retry-After` header (sent with `429 rate_limited`).
        retry_after: Option<u64>,
    },
    /// The code failed the offline check (no request was sent).
    #[error("{0}")]
    InvalidCode(CodeError),
    /// The code URI failed the offline check: a bad code, a `fp` that is not 32 bytes of
    /// base64url, or the URI of an enrolment request (no request was sent).
    #[error("{0}")]
    InvalidCodeUri(CodeUriError),
    /// The key the key master handed over is not the one the code URI commits to (SHA-256
    /// over the SPKI received differs from `fp`): the key was refused and, if `disputed`,
    /// reported with `POST /v1/retrievals/{retrieval_id}/dispute`.
    #[error("the key received is not the one the code commits to (retrieval {retrieval_id}{}); it was refused", if *.disputed { ", disputed" } else { ", the dispute could not be sent" })]
    KeyMismatch {
        /// The retrieval that handed over the wrong key.
        retrieval_id: String,
        /// Whether the key master accepted the dispute.
        disputed: bool,
    },
    /// The SAS exchange of a retrieval failed its check ([`crate::ServiceClient::verify_sas`]):
    /// the key was deposited without a commitment, or the device's nonce does not open it. The
    /// key was refused and, if `disputed`, reported with reason `sas_mismatch`.
    #[error("key_mismatch: {why} (retrieval {retrieval_id}); the key was refused ({})", if *.disputed { "disputed" } else { "the dispute could not be sent" })]
    SasMismatch {
        /// The retrieval whose key was refused.
        retrieval_id: String,
        /// What failed, in words.
        why: &'static str,
        /// Whether the key master accepted the dispute.
        disputed: bool,
    },
    /// The device did not reveal its SAS nonce within the time given to
    /// [`crate::ServiceClient::verify_sas`].
    #[error("the device did not reveal its SAS nonce in time (retrieval {retrieval_id})")]
    SasTimeout {
        /// The retrieval whose exchange is still open.
        retrieval_id: String,
    },
    /// A key given to [`crate::verify_signature`] could not be read, or the signature does not
    /// verify ([`KeyError::InvalidProof`]).
    #[error("{0}")]
    Key(KeyError),
    /// The request could not be sent or the answer not read (connection, TLS, timeout).
    #[error("cannot reach the key master: {}", chain(.0))]
    Transport(reqwest::Error),
    /// The server answered with something that is not the expected body, or a key or signature
    /// handed to an offline helper could not be used.
    #[error("{0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status the server answered with, for [`Error::Api`]; `None` where no answer
    /// came (or, for [`Error::InvalidCode`], no request was sent).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code: the problem body's `code` for [`Error::Api`], and
    /// `invalid_code` for a code refused offline — the same code the server would answer with —
    /// and `key_mismatch` for a key that is not the one its code URI or SAS commitment commits
    /// to.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { problem, .. } => Some(problem.code.as_str()),
            Error::InvalidCode(_) | Error::InvalidCodeUri(_) => Some("invalid_code"),
            Error::KeyMismatch { .. } | Error::SasMismatch { .. } => Some("key_mismatch"),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(err: reqwest::Error) -> Self {
        Error::Transport(err)
    }
}

/// `err` and its causes joined with `: ` (reqwest's own message omits them: "error sending
/// request" says nothing without "connection refused").
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = source.and_then(std::error::Error::source);
    }
    text
}
