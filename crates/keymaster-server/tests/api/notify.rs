//! Events leaving the service: signed webhooks with retries, rotation, failed deliveries for the
//! operator, e-mail over SMTP, and the refusals at deposit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use keymaster_client::wire::{CreateTenantRequest, DepositRequest, Notify};
use keymaster_client::DeviceClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A loopback webhook receiver that fails the first `fail_first` requests with 500.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::new(Mutex::new(0usize));
        let got2 = got.clone();
        let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let got = got2.clone();
            let seen = seen.clone();
            async move {
                got.lock().unwrap().push(Received {
                    path: uri.path().to_owned(),
                    headers,
                    body: body.to_vec(),
                });
                let mut n = seen.lock().unwrap();
                *n += 1;
                if *n <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        };
        let app = axum::Router::new().route("/{*path}", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn event_type(r: &Received) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

/// Verifies with the independent `standardwebhooks` implementation.
fn verify(secret: &str, r: &Received) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&r.body, &r.headers).is_ok()
}

async fn tenant_with_webhook(app: &TestApp, url: String) -> (String, String, DeviceClient) {
    let t = app
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: Some(url),
        })
        .await
        .unwrap();
    let k = app.admin.create_app_key(&t.id).await.unwrap();
    (
        t.id,
        t.webhook_secret,
        DeviceClient::new(&app.base, &k.token).unwrap(),
    )
}

fn with_notify(url: Option<String>, email: Option<String>) -> DepositRequest {
    DepositRequest {
        notify: Some(Notify {
            webhook_url: url,
            email,
        }),
        ..deposit_request(ssh_ed25519())
    }
}

#[tokio::test]
async fn signed_webhooks_reach_the_key_and_the_tenant() {
    let rx = Receiver::start(0).await;
    let app = spawn_app().await;
    let (_, secret, device) = tenant_with_webhook(&app, rx.url("/tenant")).await;
    let dep = device
        .deposit(&with_notify(Some(rx.url("/key")), None))
        .await
        .unwrap();
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();

    eventually(|| async { rx.received().len() >= 4 }).await;
    let got = rx.received();
    for path in ["/tenant", "/key"] {
        let mut types: Vec<String> = got
            .iter()
            .filter(|r| r.path == path)
            .map(event_type)
            .collect();
        types.sort();
        assert_eq!(types, ["key.deposited", "key.retrieved"], "{path}");
    }
    for r in &got {
        assert!(verify(&secret, r), "signature must verify independently");
        let body = String::from_utf8(r.body.clone()).unwrap();
        assert!(
            !body.contains(&dep.code) && !body.contains("BEGIN"),
            "no code or key material"
        );
        let id = r.headers["webhook-id"].to_str().unwrap();
        assert!(id.starts_with("evt_"));
        assert!(body.contains(id));
    }
    // A tampered body does not verify.
    let mut bad = got[0].clone();
    bad.body.push(b' ');
    assert!(!verify(&secret, &bad));
}

/// A key without notification targets of its own still tells its tenant's webhook about its
/// deposit and its retrieval.
#[tokio::test]
async fn a_key_without_targets_still_reaches_the_tenant_webhook() {
    let rx = Receiver::start(0).await;
    let app = spawn_app().await;
    let (_, _, device) = tenant_with_webhook(&app, rx.url("/tenant")).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();

    eventually(|| async { rx.received().len() >= 2 }).await;
    let mut types: Vec<String> = rx.received().iter().map(event_type).collect();
    types.sort();
    assert_eq!(types, ["key.deposited", "key.retrieved"]);
}

#[tokio::test]
async fn failing_receiver_gets_retries_with_the_same_id() {
    let rx = Receiver::start(2).await;
    let app = spawn_app_with(|s| s.webhook_backoff_base = Duration::from_millis(50)).await;
    let (_, secret, device) = tenant_with_webhook(&app, rx.url("/t")).await;
    device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    eventually(|| async { rx.received().len() >= 3 }).await;
    let got = rx.received();
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert!(got.iter().all(|r| verify(&secret, r)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.received().len(),
        3,
        "delivered once it succeeded, then no more"
    );
    let failed = app.admin_get("/v1/admin/deliveries?status=failed").await;
    assert_eq!(failed["deliveries"].as_array().unwrap().len(), 0);
    let done = app.admin_get("/v1/admin/deliveries?status=delivered").await;
    assert_eq!(done["deliveries"][0]["attempts"], 3);
}

#[tokio::test]
async fn a_delivery_that_finally_fails_is_visible_to_the_operator() {
    let rx = Receiver::start(usize::MAX).await;
    let app = spawn_app_with(|s| {
        s.webhook_backoff_base = Duration::from_millis(20);
        s.webhook_max_attempts = 3;
    })
    .await;
    let (tenant, _, device) = tenant_with_webhook(&app, rx.url("/t")).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let mut failed = serde_json::Value::Null;
    for _ in 0..100 {
        failed = app.admin_get("/v1/admin/deliveries?status=failed").await;
        if !failed["deliveries"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let d = &failed["deliveries"][0];
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["tenant_id"], tenant.as_str());
    assert_eq!(d["key_id"], dep.id.as_str());
    assert_eq!(d["event_type"], "key.deposited");
    assert!(d["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(rx.received().len(), 3);
}

#[tokio::test]
async fn during_rotation_both_secrets_sign() {
    let rx = Receiver::start(0).await;
    let app = spawn_app().await;
    let (tenant, old_secret, device) = tenant_with_webhook(&app, rx.url("/t")).await;
    let resp = app
        .http
        .post(format!(
            "{}/v1/admin/tenants/{tenant}/webhook-secret",
            app.base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let rotated: serde_json::Value = resp.json().await.unwrap();
    let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    eventually(|| async { !rx.received().is_empty() }).await;
    let r = &rx.received()[0];
    assert_eq!(
        r.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert!(verify(&old_secret, r));
    assert!(verify(&new_secret, r));
}

#[tokio::test]
async fn undelivered_events_survive_a_restart() {
    let rx = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    // First run: the receiver's port is wrong, so nothing can be delivered.
    settings.webhook_backoff_base = Duration::from_millis(50);
    let app = keymaster_server::App::build(settings.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let admin = keymaster_client::AdminClient::new(&base, ADMIN_TOKEN).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/t", closed.local_addr().unwrap());
    drop(closed);
    let t = admin
        .create_tenant(&CreateTenantRequest {
            name: "a".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let k = admin.create_app_key(&t.id).await.unwrap();
    let device = DeviceClient::new(&base, &k.token).unwrap();
    device
        .deposit(&with_notify(Some(dead_url), None))
        .await
        .unwrap();
    device
        .deposit(&with_notify(Some(rx.url("/later")), None))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    // The second deposit's event may or may not have gone out before the stop; after the
    // restart it is delivered for certain.
    let app = keymaster_server::App::build(settings).await.unwrap();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    eventually(|| async { rx.received().iter().any(|r| r.path == "/later") }).await;
}

#[tokio::test]
async fn notify_targets_are_checked_at_deposit() {
    let app = spawn_app_with(|s| s.allow_private_webhooks = false).await;
    let (_, device, _) = app.device().await;
    for url in [
        "http://127.0.0.1:9/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/h",
        "http://[::ffff:192.168.0.1]/h",
        "http://localhost/h",
        "ftp://example.net/h",
    ] {
        assert_problem(
            device.deposit(&with_notify(Some(url.into()), None)).await,
            400,
            "invalid_request",
        );
    }
    // A public name is accepted (it is checked again when sending).
    device
        .deposit(&with_notify(Some("https://example.net/hook".into()), None))
        .await
        .unwrap();
    assert_problem(
        device
            .deposit(&with_notify(None, Some("me@example.net".into())))
            .await,
        400,
        "email_not_configured",
    );
    assert_problem(
        app.admin
            .create_tenant(&CreateTenantRequest {
                name: "x".into(),
                webhook_url: Some("http://192.168.1.1/".into()),
            })
            .await,
        400,
        "invalid_request",
    );
}

/// Special-purpose blocks beyond the classic private ones, and the IPv6 forms that carry a
/// refused IPv4 address: refused as literal targets (the full table is tested row by row in
/// `netguard`'s unit tests).
#[tokio::test]
async fn special_purpose_targets_are_refused_at_deposit_and_tenant_creation() {
    let app = spawn_app_with(|s| s.allow_private_webhooks = false).await;
    let (_, device, _) = app.device().await;
    for url in [
        "http://198.18.0.1/h",
        "http://240.0.0.1/h",
        "http://192.0.0.1/h",
        "http://192.0.0.9/h",
        "http://192.0.2.1/h",
        "http://[64:ff9b::10.0.0.1]/h",
        "http://[64:ff9b:1::1]/h",
        "http://[2002:a00:1::1]/h",
        "http://[2001::1]/h",
        "http://[::ffff:0:a00:1]/h",
        "http://[::a00:1]/h",
        "http://[fec0::1]/h",
        "http://[5f00::1]/h",
        "http://[3fff::1]/h",
        "http://[100:0:0:1::1]/h",
    ] {
        assert_problem(
            device.deposit(&with_notify(Some(url.into()), None)).await,
            400,
            "invalid_request",
        );
        assert_problem(
            app.admin
                .create_tenant(&CreateTenantRequest {
                    name: "x".into(),
                    webhook_url: Some(url.into()),
                })
                .await,
            400,
            "invalid_request",
        );
    }
}

/// A target stored while private targets were allowed, whose name resolves to a refused
/// address, is checked again when sending: nothing reaches it and the operator sees why.
#[tokio::test]
async fn delivery_checks_the_resolved_address_again() {
    let rx = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, _pg) = backend_settings(dir.path()).await;
    settings.webhook_backoff_base = Duration::from_millis(20);
    settings.webhook_max_attempts = 2;
    let app = keymaster_server::App::build(settings.clone())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let admin = keymaster_client::AdminClient::new(&base, ADMIN_TOKEN).unwrap();
    let t = admin
        .create_tenant(&CreateTenantRequest {
            name: "a".into(),
            webhook_url: Some(format!("http://localhost:{}/t", rx.addr.port())),
        })
        .await
        .unwrap();
    let k = admin.create_app_key(&t.id).await.unwrap();
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let before = rx.received().len();

    settings.allow_private_webhooks = false;
    let app = keymaster_server::App::build(settings).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let device = DeviceClient::new(&base, &k.token).unwrap();
    device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut failed = serde_json::Value::Null;
    for _ in 0..200 {
        failed = http
            .get(format!("{base}/v1/admin/deliveries?status=failed"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = failed["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["event_type"] == "key.deposited");
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let d = failed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_type"] == "key.deposited")
        .expect("the delivery failed for good")
        .clone();
    let error = d["last_error"].as_str().unwrap();
    assert!(
        error.contains("localhost resolves to an address in Loopback"),
        "{error}"
    );
    assert_eq!(rx.received().len(), before, "nothing reached the receiver");
}

/// A minimal SMTP sink: accepts every message and keeps its DATA.
async fn smtp_sink() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = mails.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut in_data = false;
                let mut data = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            store.lock().unwrap().push(std::mem::take(&mut data));
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            data.push_str(&line);
                            data.push('\n');
                        }
                        continue;
                    }
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if cmd.starts_with("DATA") {
                        in_data = true;
                        b"354 go on\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, mails)
}

#[tokio::test]
async fn email_tells_the_owner_in_plain_words() {
    let (smtp, mails) = smtp_sink().await;
    let app = spawn_app_with(|s| {
        s.smtp_url = Some(keymaster_server::config::Redacted(format!("smtp://{smtp}")));
        s.smtp_from = "keymaster@example.net".into();
    })
    .await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&with_notify(None, Some("me@example.net".into())))
        .await
        .unwrap();
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    service.retrieve(&retrieval(&dep.code)).await.unwrap();
    eventually(|| async {
        mails
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("was retrieved by example-web"))
    })
    .await;
    let all = mails.lock().unwrap().join("\n---\n");
    assert!(
        all.contains("Your key \"github.com\" was retrieved by example-web at "),
        "{all}"
    );
    assert!(
        all.contains("Your key \"github.com\" was deposited"),
        "{all}"
    );
    assert!(!all.contains(&dep.code) && !all.contains(&dep.holder_token));
}
