//! Rotation of the server secret (`previous_secrets`): codes, sealed `secret` keys and tenants'
//! webhook secrets made under the old secret keep working after a restart under a new one, are
//! moved to the new secret (re-sealed at start, codes rehashed when presented), and then work
//! without the old secret. On both backends (with `KEYMASTER_TEST_DATABASE_URL`, PostgreSQL).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::future::join_all;
use keymaster_client::wire::{CreateTenantRequest, DepositRequest, DepositResponse, PolicyInput};
use keymaster_client::{AdminClient, DeviceClient, HolderClient, ServiceClient};
use keymaster_server::config::Redacted;
use keymaster_server::crypto::Keys;
use keymaster_server::{App, Settings};
use sqlx::Connection;

use crate::helpers::*;

const OLD_SECRET: &str = "rotation-test-old-secret-0123456789abcdef";
const NEW_SECRET: &str = "rotation-test-new-secret-fedcba9876543210";
/// More `secret` keys than one page of the re-sealing task, so that its gauge is seen counting.
const MANY: usize = 700;

/// A server of this test, stopped and started again on the same database.
struct Server {
    base: String,
    admin: AdminClient,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(settings: &Settings, secret: &str, previous: &[&str]) -> Server {
    let mut settings = settings.clone();
    settings.secret = Some(Redacted(secret.into()));
    settings.previous_secrets = previous.iter().map(|s| Redacted(s.to_string())).collect();
    let app = App::build(settings).await.expect("server builds");
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Server {
        admin: AdminClient::new(&base, ADMIN_TOKEN).unwrap(),
        http: reqwest::Client::new(),
        base,
        stop,
        handle,
    }
}

impl Server {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.handle.await.unwrap().unwrap();
    }

    fn service(&self, token: &str) -> ServiceClient {
        ServiceClient::new(&self.base, token).unwrap()
    }

    fn holder(&self, dep: &DepositResponse) -> HolderClient {
        HolderClient::new(&self.base, &dep.id, &dep.holder_token).unwrap()
    }

    /// The gauge of blobs left under a previous secret, if `/metrics` shows it.
    async fn left_under_previous(&self) -> Option<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("keymaster_sealed_under_previous_secret "))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
    }
}

/// One webhook request: headers and body.
type Delivery = (HeaderMap, Vec<u8>);

/// Webhook requests as they arrived.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Delivery>>>);

impl Inbox {
    async fn listen(&self) -> String {
        let got = self.0.clone();
        let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push((headers, body.to_vec()));
                StatusCode::NO_CONTENT
            }
        };
        let app = axum::Router::new().route("/hook", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Waits for a delivery of `key_id`'s deposit and checks its signature with `secret`.
    async fn deposit_signed_with(&self, key_id: &str, secret: &str) -> bool {
        let found = || {
            self.0.lock().unwrap().iter().find_map(|(h, b)| {
                let v: serde_json::Value = serde_json::from_slice(b).ok()?;
                (v["data"]["key_id"] == key_id && v["type"] == "key.deposited")
                    .then(|| (h.clone(), b.clone()))
            })
        };
        for _ in 0..250 {
            if let Some((headers, body)) = found() {
                let wh = standardwebhooks::Webhook::new(secret).unwrap();
                return wh.verify(&body, &headers).is_ok();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no webhook for {key_id}");
    }
}

fn secret_deposit(raw: &[u8], max_retrievals: u32) -> DepositRequest {
    DepositRequest {
        secret: Some(STANDARD.encode(raw)),
        policy: Some(PolicyInput {
            max_retrievals: Some(max_retrievals),
            ..PolicyInput::default()
        }),
        ..DepositRequest::default()
    }
}

fn history(status: &keymaster_client::wire::KeyStatus) -> Vec<String> {
    status
        .history
        .iter()
        .map(|e| e.event_type.clone())
        .collect()
}

/// How many sealed blobs in the database start with this key id, and how many in all.
async fn sealed_with(settings: &Settings, pg: Option<&PgDatabase>, key_id: [u8; 4]) -> (u64, u64) {
    let places = [
        ("keys", "secret_sealed"),
        ("tenants", "webhook_secret_sealed"),
        ("tenants", "previous_secret_sealed"),
    ];
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    for (table, column) in places {
        let sql = format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL");
        match pg {
            Some(pg) => {
                let mut c = pg.connect().await;
                blobs.extend(
                    sqlx::query_scalar::<_, Vec<u8>>(&sql)
                        .fetch_all(&mut c)
                        .await
                        .unwrap(),
                );
                c.close().await.unwrap();
            }
            None => {
                let c = rusqlite::Connection::open_with_flags(
                    &settings.database_url,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut s = c.prepare(&sql).unwrap();
                let rows = s.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
                blobs.extend(rows.map(Result::unwrap));
            }
        }
    }
    let with = blobs.iter().filter(|b| b[..4] == key_id).count() as u64;
    (with, blobs.len() as u64)
}

#[tokio::test]
async fn a_rotation_keeps_codes_sealed_keys_and_webhook_secrets_working() {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, pg) = backend_settings(dir.path()).await;
    settings.webhook_backoff_base = Duration::from_millis(50);
    let old_id = Keys::derive(OLD_SECRET.as_bytes()).current_key_id();
    let new_id = Keys::derive(NEW_SECRET.as_bytes()).current_key_id();
    let inbox = Inbox::default();
    let hook = inbox.listen().await;

    // ---- Under the old secret: a tenant with a (rotated) webhook secret, live codes, sealed
    // secrets, a used code and a replaced one.
    let a = start(&settings, OLD_SECRET, &[]).await;
    let tenant = a
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: Some(hook),
        })
        .await
        .unwrap();
    let first_whsec = tenant.webhook_secret.clone();
    let rotated: serde_json::Value = a
        .http
        .post(format!(
            "{}/v1/admin/tenants/{}/webhook-secret",
            a.base, tenant.id
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whsec = rotated["webhook_secret"].as_str().unwrap().to_owned();
    let app_key = a.admin.create_app_key(&tenant.id).await.unwrap();
    let device = DeviceClient::new(&a.base, &app_key.token).unwrap();
    let svc = a
        .admin
        .create_service(&keymaster_client::wire::CreateServiceRequest {
            name: "svc".into(),
            domains: vec![],
            allowed_cidrs: vec![],
        })
        .await
        .unwrap();

    let twice_raw = b"used twice, across both rotations";
    let twice = device.deposit(&secret_deposit(twice_raw, 2)).await.unwrap();
    let public = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let untouched = device
        .deposit(&secret_deposit(b"never presented since rotation", 1))
        .await
        .unwrap();
    let used = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    a.service(&svc.token)
        .retrieve(&retrieval(&used.code))
        .await
        .unwrap();
    let replaced = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let fresh = a.holder(&replaced).recode().await.unwrap();
    for chunk in (0..MANY).collect::<Vec<_>>().chunks(25) {
        join_all(chunk.iter().map(|i| {
            let device = &device;
            async move {
                device
                    .deposit(&secret_deposit(
                        format!("bulk secret number {i:04}").as_bytes(),
                        1,
                    ))
                    .await
                    .unwrap()
            }
        }))
        .await;
    }
    assert!(inbox.deposit_signed_with(&twice.id, &whsec).await);
    a.stop().await;

    let (under_old, all) = sealed_with(&settings, pg.as_ref(), old_id).await;
    // The tenant's current and previous webhook secrets and every `secret` key.
    assert_eq!((under_old, all), (2 + 2 + MANY as u64, under_old));

    // ---- Under the new secret, with the old one as a previous secret.
    let b = start(&settings, NEW_SECRET, &[OLD_SECRET]).await;
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let left = b.left_under_previous().await;
        seen.extend(left);
        if left == Some(0) && sealed_with(&settings, pg.as_ref(), old_id).await.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        sealed_with(&settings, pg.as_ref(), new_id).await,
        (all, all)
    );
    // The task sets the gauge right after its last page commits.
    eventually(|| async { b.left_under_previous().await == Some(0) }).await;
    assert!(
        seen.iter().any(|&n| n > 0 && n <= all),
        "the gauge showed what was left: {seen:?}"
    );

    let service = b.service(&svc.token);
    let got = service.retrieve(&retrieval(&twice.code)).await.unwrap();
    assert_eq!(
        got.secret.as_deref(),
        Some(STANDARD.encode(twice_raw).as_str())
    );
    let got = service.retrieve(&retrieval(&public.code)).await.unwrap();
    assert_eq!(got.key_id, public.id);
    service.retrieve(&retrieval(&fresh.code)).await.unwrap();
    // Dead codes of the old secret are still recognised as such: their holders are told.
    for (dep, code) in [(&used, &used.code), (&replaced, &replaced.code)] {
        assert_problem(service.retrieve(&retrieval(code)).await, 404, "not_found");
        let st = b.holder(dep).status().await.unwrap();
        assert_eq!(history(&st).last().unwrap(), "code.stale_used", "{dep:?}");
    }
    // Holder tokens are not bound to the secret.
    b.holder(&untouched).status().await.unwrap();
    let device = DeviceClient::new(&b.base, &app_key.token).unwrap();
    let new_key = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert!(inbox.deposit_signed_with(&new_key.id, &whsec).await);
    assert!(inbox.deposit_signed_with(&new_key.id, &first_whsec).await);
    b.stop().await;

    // ---- Without the old secret: what was re-sealed or presented under B works; a code never
    // presented since the rotation needed the old secret (why it stays until codes expire).
    let c = start(&settings, NEW_SECRET, &[]).await;
    let service = c.service(&svc.token);
    let got = service.retrieve(&retrieval(&twice.code)).await.unwrap();
    assert_eq!(
        got.secret.as_deref(),
        Some(STANDARD.encode(twice_raw).as_str())
    );
    service.retrieve(&retrieval(&new_key.code)).await.unwrap();
    assert_problem(
        service.retrieve(&retrieval(&untouched.code)).await,
        404,
        "not_found",
    );
    let device = DeviceClient::new(&c.base, &app_key.token).unwrap();
    let last = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert!(inbox.deposit_signed_with(&last.id, &whsec).await);
    c.stop().await;

    // ---- The old secret alone opens nothing any more; a server given the new one as previous
    // reads it all again.
    let d = start(&settings, OLD_SECRET, &[NEW_SECRET]).await;
    let got = d.service(&svc.token).retrieve(&retrieval(&last.code)).await;
    assert_eq!(got.unwrap().key_id, last.id);
    d.stop().await;
}
