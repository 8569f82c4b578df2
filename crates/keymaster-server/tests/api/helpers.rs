//! `spawn_app()` and shortcuts shared by the tests.

use std::path::PathBuf;
use std::time::Duration;

use keymaster_client::wire::{
    CreateServiceRequest, CreateTenantRequest, DepositRequest, DepositResponse, PolicyInput,
    RetrievalRequest,
};
use keymaster_client::{AdminClient, DeviceClient, HolderClient, ServiceClient};
use keymaster_core::key::{generate, GenerateAlgorithm};
use keymaster_server::config::Redacted;
use keymaster_server::{App, Settings};
use rand::rngs::OsRng;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A running server for one test.
pub struct TestApp {
    pub base: String,
    pub admin: AdminClient,
    pub http: reqwest::Client,
    pub db_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Settings for tests: short minimum TTL and sweep interval, private webhooks allowed.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: dir.join("keymaster.db").display().to_string(),
        admin_token: Some(Redacted(ADMIN_TOKEN.into())),
        min_ttl: Duration::from_secs(1),
        sweep_interval: Duration::from_millis(100),
        allow_private_webhooks: true,
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    tweak(&mut settings);
    let db_path = PathBuf::from(&settings.database_url);
    let app = App::build(settings).await.expect("server builds");
    let addr = app.local_addr().unwrap();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let base = format!("http://{addr}");
    TestApp {
        admin: AdminClient::new(&base, ADMIN_TOKEN).unwrap(),
        http: reqwest::Client::new(),
        base,
        db_path,
        _dir: dir,
    }
}

impl TestApp {
    /// A new tenant and a device client holding one of its app keys.
    pub async fn device(&self) -> (String, DeviceClient, String) {
        let t = self
            .admin
            .create_tenant(&CreateTenantRequest {
                name: "acme".into(),
                webhook_url: None,
            })
            .await
            .unwrap();
        let k = self.admin.create_app_key(&t.id).await.unwrap();
        (
            t.id,
            DeviceClient::new(&self.base, &k.token).unwrap(),
            k.token,
        )
    }

    /// A new enrolled service and its client.
    pub async fn service(
        &self,
        name: &str,
        domains: &[&str],
        cidrs: &[&str],
    ) -> (String, ServiceClient, String) {
        let s = self
            .admin
            .create_service(&CreateServiceRequest {
                name: name.into(),
                domains: domains.iter().map(|d| d.to_string()).collect(),
                allowed_cidrs: cidrs.iter().map(|d| d.to_string()).collect(),
            })
            .await
            .unwrap();
        (
            s.id,
            ServiceClient::new(&self.base, &s.token).unwrap(),
            s.token,
        )
    }

    pub fn holder(&self, dep: &DepositResponse) -> HolderClient {
        HolderClient::new(&self.base, &dep.id, &dep.holder_token).unwrap()
    }

    /// Raw POST with a bearer token, for bodies the SDK would never send.
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// GET with the admin token, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }

    /// Every byte the database files hold (main file and WAL).
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut all = std::fs::read(&self.db_path).unwrap_or_default();
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        all.extend(std::fs::read(wal).unwrap_or_default());
        all
    }
}

/// An OpenSSH Ed25519 public key line made for the test.
pub fn ssh_ed25519() -> String {
    let (key, _private) = generate(GenerateAlgorithm::Ed25519, &mut OsRng).unwrap();
    format!("{} laptop", key.to_openssh().unwrap())
}

pub fn deposit_request(public_key: String) -> DepositRequest {
    DepositRequest {
        public_key: Some(public_key),
        label: Some("github.com".into()),
        ..DepositRequest::default()
    }
}

pub fn with_policy(mut req: DepositRequest, policy: PolicyInput) -> DepositRequest {
    req.policy = Some(policy);
    req
}

pub fn retrieval(code: &str) -> RetrievalRequest {
    RetrievalRequest {
        code: code.into(),
        ..RetrievalRequest::default()
    }
}

/// Asserts that a failed call carries this status and problem code.
pub fn assert_problem<T: std::fmt::Debug>(
    r: Result<T, keymaster_client::Error>,
    status: u16,
    code: &str,
) {
    let err = r.expect_err("expected a refusal");
    assert_eq!(err.status(), Some(status), "{err:?}");
    assert_eq!(err.code(), Some(code), "{err:?}");
}

/// Checks a raw response is a problem+json with this status and code; returns the body.
pub async fn assert_raw_problem(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    body
}

/// Polls until `check` holds or two seconds pass.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within two seconds");
}
