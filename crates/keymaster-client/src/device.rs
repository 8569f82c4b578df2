//! The client application's client: depositing keys with a tenant's `kma_` app key.

use keymaster_core::wire::{DepositRequest, DepositResponse};
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
}
