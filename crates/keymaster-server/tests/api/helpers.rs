//! `spawn_app()` and shortcuts shared by the tests.
//!
//! With `KEYMASTER_TEST_DATABASE_URL` set (a PostgreSQL maintenance URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`), every test gets a fresh PostgreSQL database
//! of its own (`km_test_<random>`, dropped when the test ends) instead of a SQLite file.

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
use rand::RngCore;
use sqlx::{Connection, PgConnection};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// The server secret of PostgreSQL test runs (PostgreSQL requires one in the settings).
pub const PG_SECRET: &str = "test-server-secret-0123456789abcdef0123456789";

/// The environment variable that switches the suite to PostgreSQL.
pub const PG_ENV: &str = "KEYMASTER_TEST_DATABASE_URL";

/// The PostgreSQL maintenance URL, when the suite runs against PostgreSQL.
pub fn pg_url() -> Option<String> {
    std::env::var(PG_ENV).ok().filter(|u| !u.is_empty())
}

/// A PostgreSQL database made for one test; dropped (connections and all) when this is.
pub struct PgDatabase {
    maintenance_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates `km_test_<random>` through the maintenance connection.
    pub async fn create(maintenance_url: &str) -> PgDatabase {
        let name = format!("km_test_{}", hex::encode(random_bytes::<8>()));
        let mut conn = PgConnection::connect(maintenance_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV}={maintenance_url}: cannot connect: {e}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(maintenance_url).unwrap();
        url.set_path(&format!("/{name}"));
        PgDatabase {
            maintenance_url: maintenance_url.to_owned(),
            name,
            url: url.to_string(),
        }
    }

    /// A connection to this database, for looking at what the server wrote.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop cannot await, and the test's runtime may
        // be the one calling this.
        let (url, name) = (self.maintenance_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

/// A running server for one test.
pub struct TestApp {
    pub base: String,
    pub admin: AdminClient,
    pub http: reqwest::Client,
    pub db_path: PathBuf,
    /// The test's own PostgreSQL database, when the suite runs against PostgreSQL.
    pub pg: Option<PgDatabase>,
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

/// [`test_settings`] for the backend of this run: with [`PG_ENV`] set, a fresh PostgreSQL
/// database (returned, so that it lives as long as the caller keeps it) and a fixed secret.
pub async fn backend_settings(dir: &std::path::Path) -> (Settings, Option<PgDatabase>) {
    let mut settings = test_settings(dir);
    let pg = match pg_url() {
        Some(url) => {
            let db = PgDatabase::create(&url).await;
            settings.database_url = db.url.clone();
            settings.secret = Some(Redacted(PG_SECRET.into()));
            Some(db)
        }
        None => None,
    };
    (settings, pg)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, pg) = backend_settings(dir.path()).await;
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
        pg,
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

    /// Everything the database holds: with SQLite every byte of its files (main file and
    /// WAL); with PostgreSQL the text form of every row of every table (`bytea` as hex).
    pub async fn database_bytes(&self) -> Vec<u8> {
        if let Some(pg) = &self.pg {
            let mut conn = pg.connect().await;
            let mut all = Vec::new();
            for table in [
                "meta",
                "tenants",
                "app_keys",
                "services",
                "keys",
                "tombstones",
                "events",
                "audit",
                "failure_budget",
                "deliveries",
                "requests",
                "schema_migrations",
            ] {
                let dump: String = sqlx::query_scalar(&format!(
                    "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"
                ))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                all.extend(dump.into_bytes());
            }
            return all;
        }
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
