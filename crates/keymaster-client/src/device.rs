//! The client application's client: depositing keys with a tenant's `kma_` app key, and
//! answering a service's enrolment request (preview who asks, then deposit to it).

use keymaster_core::request::parse_request_code;
use keymaster_core::wire::{
    DepositRequest, DepositResponse, RequestPreview, RequestPreviewRequest,
};
use reqwest::Method;

use crate::http::{send_json, Conn};
use crate::Error;

/// Deposits keys for one tenant.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), keymaster_client::Error> {
/// use keymaster_client::{wire::DepositRequest, DeviceClient};
///
/// let device = DeviceClient::new("http://127.0.0.1:8080", "kma_…")?;
/// let deposit = device
///     .deposit(&DepositRequest {
///         public_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… laptop".into()),
///         label: Some("laptop".into()),
///         ..Default::default()
///     })
///     .await?;
/// println!("type {} into the service", deposit.code_display);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeviceClient {
    conn: Conn,
}

impl DeviceClient {
    /// A client for the key master at `base_url` with the tenant's app key.
    pub fn new(base_url: &str, app_key: &str) -> Result<Self, Error> {
        Ok(DeviceClient {
            conn: Conn::new(base_url, app_key)?,
        })
    }

    /// Like [`DeviceClient::new`], sharing the caller's `reqwest::Client` pool.
    pub fn with_http_client(
        base_url: &str,
        app_key: &str,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(DeviceClient {
            conn: Conn::with_http(base_url, app_key, http)?,
        })
    }

    /// `POST /v1/keys`: deposits a key and returns its code and the holder token (both shown
    /// once; keep the holder token to follow the key with a [`crate::HolderClient`]).
    pub async fn deposit(&self, request: &DepositRequest) -> Result<DepositResponse, Error> {
        send_json(
            self.conn
                .request(Method::POST, &["v1", "keys"])?
                .json(request),
        )
        .await
    }

    /// `POST /v1/requests/preview`: who asks for a key with this request code (a bare code or
    /// the `keymaster:request:` URI the service's QR code holds), so that the person can be
    /// asked "Send your key to example-web (example.com)?". The code is checked offline
    /// first: a mistyped one is [`Error::InvalidCode`] and no request is sent. An unknown, used
    /// or expired request is `404 not_found`, and counts against the app key's failure budget.
    pub async fn preview_request(&self, code: &str) -> Result<RequestPreview, Error> {
        parse_request_code(code).map_err(Error::InvalidCode)?;
        send_json(
            self.conn
                .request(Method::POST, &["v1", "requests", "preview"])?
                .json(&RequestPreviewRequest {
                    code: code.to_owned(),
                }),
        )
        .await
    }

    /// `POST /v1/keys` with `"request"`: deposits `key` (any key material, no password policy)
    /// in answer to the request `code`; only the requesting service may take it. The answer
    /// carries `request_id` and no code. A request answered already is `409
    /// request_fulfilled`; an unknown or expired one `404`.
    pub async fn answer(&self, code: &str, key: &DepositRequest) -> Result<DepositResponse, Error> {
        parse_request_code(code).map_err(Error::InvalidCode)?;
        let request = DepositRequest {
            request: Some(code.to_owned()),
            ..key.clone()
        };
        self.deposit(&request).await
    }
}
