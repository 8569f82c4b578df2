//! The outside service's client: retrieving a key by code with a `kms_` service key, and
//! confirming receipt.

use keymaster_core::wire::{RetrievalRequest, RetrievalResponse};
use reqwest::Method;

use crate::http::{send_empty, send_json, Conn};
use crate::{check_code, Error};

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

    /// `POST /v1/retrievals`. The code is checked offline first: a mistyped code is
    /// [`Error::InvalidCode`] and no request is sent (so it never costs a failed retrieval).
    /// The code is sent as the person typed it; the server normalises it the same way.
    pub async fn retrieve(&self, request: &RetrievalRequest) -> Result<RetrievalResponse, Error> {
        check_code(&request.code).map_err(Error::InvalidCode)?;
        send_json(
            self.conn
                .request(Method::POST, &["v1", "retrievals"])?
                .json(request),
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
}
