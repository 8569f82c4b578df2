//! The HTTP plumbing shared by every client: base URL handling, bearer authentication, request
//! timeouts, and turning an answer into a body or an [`Error`]. Not responsible for which
//! endpoints exist; that is each client's module.

use std::fmt;
use std::time::Duration;

use keymaster_core::wire::Problem;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::Error;

/// How long an ordinary call may take. The event stream is exempt: it lives as long as the key.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take, for every call including the event stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One credential at one key master, with a pooled HTTP client. Cheap to clone: the pool is
/// shared between clones.
#[derive(Clone)]
pub(crate) struct Conn {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl fmt::Debug for Conn {
    // The token is a credential: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("base", &self.base.as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Conn {
    /// A connection with a fresh pool.
    pub(crate) fn new(base_url: &str, token: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("keymaster-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Self::with_http(base_url, token, http)
    }

    /// A connection that uses the caller's pool.
    pub(crate) fn with_http(
        base_url: &str,
        token: &str,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        let base = Url::parse(base_url)
            .map_err(|err| Error::Decode(format!("invalid server URL {base_url:?}: {err}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Decode(format!(
                "invalid server URL {base_url:?}: expected http:// or https://"
            )));
        }
        Ok(Conn {
            http,
            base,
            token: token.to_owned(),
        })
    }

    /// The URL of `segments` below the base URL; each segment is percent-encoded, so an id
    /// can never change the path's shape.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| Error::Decode("the server URL cannot take a path".to_owned()))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    /// A request with the bearer token and the ordinary timeout.
    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder, Error> {
        Ok(self
            .request_untimed(method, segments)?
            .timeout(REQUEST_TIMEOUT))
    }

    /// A request with the bearer token and no overall timeout (for streams).
    pub(crate) fn request_untimed(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder, Error> {
        Ok(self
            .http
            .request(method, self.url(segments)?)
            .bearer_auth(&self.token))
    }
}

/// Sends `request` and decodes a `2xx` JSON body as `T`.
pub(crate) async fn send_json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Error> {
    let response = checked(request.send().await?).await?;
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::Decode(format!("unexpected answer from the key master: {err}")))
}

/// Sends `request` and expects a `2xx` answer whose body does not matter (`204`).
pub(crate) async fn send_empty(request: RequestBuilder) -> Result<(), Error> {
    checked(request.send().await?).await.map(drop)
}

/// Passes a `2xx` answer through and turns anything else into an [`Error`].
pub(crate) async fn checked(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let bytes = response.bytes().await?;
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Err(Error::Api {
            status: status.as_u16(),
            problem,
            retry_after,
        }),
        Err(_) => Err(Error::Decode(format!(
            "the key master answered {status} without a problem body"
        ))),
    }
}

/// `Retry-After` in delta-seconds; an HTTP-date (which the key master never sends) is ignored.
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}
