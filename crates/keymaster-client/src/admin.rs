//! The operator's client: everything under `/v1/admin`, authenticated with the admin token.

use keymaster_core::wire::{
    AppKeyCreated, AuditPage, CreateServiceRequest, CreateTenantRequest, ServiceCreated,
    TenantCreated,
};
use reqwest::Method;

use crate::http::{send_empty, send_json, Conn};
use crate::Error;

/// The operator's calls: tenants, app keys, services and the audit log.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), keymaster_client::Error> {
/// use keymaster_client::{wire::CreateTenantRequest, AdminClient};
///
/// let admin = AdminClient::new("http://127.0.0.1:8080", "the-admin-token")?;
/// let tenant = admin
///     .create_tenant(&CreateTenantRequest { name: "acme".into(), webhook_url: None })
///     .await?;
/// let app_key = admin.create_app_key(&tenant.id).await?;
/// println!("app key for {}: {}", tenant.name, app_key.token);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdminClient {
    conn: Conn,
}

impl AdminClient {
    /// A client for the key master at `base_url` (e.g. `http://127.0.0.1:8080`) with its own
    /// connection pool. Fails only on a malformed URL or when no TLS backend can be set up.
    pub fn new(base_url: &str, admin_token: &str) -> Result<Self, Error> {
        Ok(AdminClient {
            conn: Conn::new(base_url, admin_token)?,
        })
    }

    /// Like [`AdminClient::new`], sharing the caller's `reqwest::Client` pool.
    pub fn with_http_client(
        base_url: &str,
        admin_token: &str,
        http: reqwest::Client,
    ) -> Result<Self, Error> {
        Ok(AdminClient {
            conn: Conn::with_http(base_url, admin_token, http)?,
        })
    }

    /// `POST /v1/admin/tenants`: a new tenant and its webhook secret (shown once).
    pub async fn create_tenant(
        &self,
        request: &CreateTenantRequest,
    ) -> Result<TenantCreated, Error> {
        send_json(
            self.conn
                .request(Method::POST, &["v1", "admin", "tenants"])?
                .json(request),
        )
        .await
    }

    /// `POST /v1/admin/tenants/{id}/app-keys`: a `kma_` app key for the tenant (shown once).
    pub async fn create_app_key(&self, tenant_id: &str) -> Result<AppKeyCreated, Error> {
        send_json(self.conn.request(
            Method::POST,
            &["v1", "admin", "tenants", tenant_id, "app-keys"],
        )?)
        .await
    }

    /// `DELETE /v1/admin/app-keys/{id}`.
    pub async fn delete_app_key(&self, id: &str) -> Result<(), Error> {
        send_empty(
            self.conn
                .request(Method::DELETE, &["v1", "admin", "app-keys", id])?,
        )
        .await
    }

    /// `POST /v1/admin/services`: enrols an outside service; its `kms_` key is shown once.
    pub async fn create_service(
        &self,
        request: &CreateServiceRequest,
    ) -> Result<ServiceCreated, Error> {
        send_json(
            self.conn
                .request(Method::POST, &["v1", "admin", "services"])?
                .json(request),
        )
        .await
    }

    /// `DELETE /v1/admin/services/{id}`.
    pub async fn delete_service(&self, id: &str) -> Result<(), Error> {
        send_empty(
            self.conn
                .request(Method::DELETE, &["v1", "admin", "services", id])?,
        )
        .await
    }

    /// `GET /v1/admin/audit?limit=&before=`: audit entries, newest first. `before` is an entry
    /// id: pass the last id of one page to get the next.
    pub async fn audit(&self, limit: Option<u32>, before: Option<i64>) -> Result<AuditPage, Error> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        send_json(
            self.conn
                .request(Method::GET, &["v1", "admin", "audit"])?
                .query(&query),
        )
        .await
    }
}
