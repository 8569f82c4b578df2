//! Several `keymaster serve` processes on one PostgreSQL database (PostgreSQL only: built with
//! `--features postgres-tests`, needs `KEYMASTER_TEST_DATABASE_URL`; `scripts/test` runs it in its
//! PostgreSQL step and it fails, never skips, without the database).
//!
//! - exactly one `200` among 80 concurrent retrievals of a single-use code split between two
//!   processes;
//! - the failed-retrieval budget is shared: failures on one process spend it on the other;
//! - a key that expires is reported once (`key.expired`), with both processes sweeping;
//! - `kill -9` of one process loses no acknowledged deposit; the other carries on.
//! - webhooks that a process was sending when it was killed are sent by the other process
//!   within seconds (its claims are short leases that only a live process renews).

#[allow(dead_code)]
#[path = "support/keymaster_process.rs"]
mod keymaster_process;
#[path = "support/webhook_sink.rs"]
mod webhook_sink;

use std::process::Command;
use std::time::{Duration, Instant};

use keymaster_client::wire::{
    CreateServiceRequest, CreateTenantRequest, DepositRequest, PolicyInput, RetrievalRequest,
};
use keymaster_client::{AdminClient, DeviceClient, HolderClient, ServiceClient};
use keymaster_core::code::Code;
use keymaster_core::key::{generate, GenerateAlgorithm};
use keymaster_process::{Server, ADMIN_TOKEN};

const ENV: &str = "KEYMASTER_TEST_DATABASE_URL";

/// A database of this test's own, dropped at the end.
struct Database {
    maintenance: String,
    name: String,
    url: String,
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql (Debian package postgresql-client) must be installed");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Database {
    fn create() -> Database {
        let maintenance = std::env::var(ENV).unwrap_or_else(|_| {
            panic!("set {ENV} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run this test")
        });
        let name = format!("km_proc_{:016x}", rand::random::<u64>());
        psql(&maintenance, &format!("CREATE DATABASE {name}"));
        let base = maintenance
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("the URL names a database");
        let url = format!("{base}/{name}");
        Database {
            maintenance,
            name,
            url,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.maintenance,
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn ssh_key() -> String {
    let (key, _) = generate(GenerateAlgorithm::Ed25519, &mut rand::rngs::OsRng).unwrap();
    key.to_openssh().unwrap()
}

fn deposit(ttl: Option<i64>) -> DepositRequest {
    DepositRequest {
        public_key: Some(ssh_key()),
        label: Some("replica test".into()),
        policy: Some(PolicyInput {
            ttl_seconds: ttl,
            ..PolicyInput::default()
        }),
        ..DepositRequest::default()
    }
}

fn retrieval(code: &str) -> RetrievalRequest {
    RetrievalRequest {
        code: code.into(),
        ..RetrievalRequest::default()
    }
}

#[tokio::test]
async fn two_processes_share_one_database() {
    let db = Database::create();
    let a = Server::start(&db.url);
    let b = Server::start(&db.url);

    let admin = AdminClient::new(&a.url, ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let mut service_keys = Vec::new();
    for name in ["one", "two", "three"] {
        let s = admin
            .create_service(&CreateServiceRequest {
                name: name.into(),
                ..CreateServiceRequest::default()
            })
            .await
            .unwrap();
        service_keys.push(s.token);
    }
    let device_a = DeviceClient::new(&a.url, &app_key).unwrap();
    let services: Vec<ServiceClient> = [&a.url, &b.url]
        .iter()
        .map(|u| ServiceClient::new(u, &service_keys[0]).unwrap())
        .collect();

    // Exactly once across processes.
    let dep = device_a.deposit(&deposit(None)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..80 {
        let s = services[i % 2].clone();
        let code = dep.code.clone();
        tasks.push(tokio::spawn(
            async move { s.retrieve(&retrieval(&code)).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(matches!(e.status(), Some(404) | Some(429)), "{e:?}"),
        }
    }
    assert_eq!(ok, 1, "one 200 among 80 retrievals over two processes");

    // The budget of the second service is shared: 20 failures split over both processes,
    // then both refuse with 429.
    let two: Vec<ServiceClient> = [&a.url, &b.url]
        .iter()
        .map(|u| ServiceClient::new(u, &service_keys[1]).unwrap())
        .collect();
    for i in 0..20 {
        let unknown = Code::generate(Default::default(), &mut rand::rngs::OsRng);
        let e = two[i % 2]
            .retrieve(&retrieval(unknown.as_str()))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(404), "{e:?}");
    }
    let live = device_a.deposit(&deposit(None)).await.unwrap();
    for s in &two {
        let e = s.retrieve(&retrieval(&live.code)).await.unwrap_err();
        assert_eq!(e.status(), Some(429), "{e:?}");
    }

    // One key.expired, with both processes sweeping.
    let short = device_a.deposit(&deposit(Some(1))).await.unwrap();
    let holder_b = HolderClient::new(&b.url, &short.id, &short.holder_token).unwrap();
    let started = Instant::now();
    loop {
        let st = holder_b.status().await.unwrap();
        let expired = st
            .history
            .iter()
            .filter(|e| e.event_type == "key.expired")
            .count();
        if expired > 0 {
            // Give the other sweeper a few rounds to (wrongly) report it again.
            tokio::time::sleep(Duration::from_millis(800)).await;
            let st = holder_b.status().await.unwrap();
            let n = st
                .history
                .iter()
                .filter(|e| e.event_type == "key.expired")
                .count();
            assert_eq!(n, 1, "each expiry is reported once");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no key.expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 of process A loses no acknowledged deposit; B carries on.
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.push(device_a.deposit(&deposit(None)).await.unwrap());
    }
    drop(a); // SIGKILL
    let device_b = DeviceClient::new(&b.url, &app_key).unwrap();
    acked.push(device_b.deposit(&deposit(None)).await.unwrap());
    let three_on_b = ServiceClient::new(&b.url, &service_keys[2]).unwrap();
    for d in &acked {
        let got = three_on_b.retrieve(&retrieval(&d.code)).await.unwrap();
        assert_eq!(got.key_id, d.id);
    }
    drop(b);
}

#[tokio::test]
async fn deliveries_of_a_killed_process_are_sent_by_the_other_within_seconds() {
    let sink = webhook_sink::Sink::start(true).await;
    let db = Database::create();
    let a = Server::start(&db.url);
    let admin = AdminClient::new(&a.url, ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&CreateTenantRequest {
            name: "hooked".into(),
            webhook_url: Some(sink.url.clone()),
        })
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let device = DeviceClient::new(&a.url, &app_key).unwrap();
    for _ in 0..3 {
        device.deposit(&deposit(None)).await.unwrap();
    }
    // A claimed all three and is sending them: the receiver holds them unanswered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.received() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.received(), 3, "the deliveries were not sent");
    let b = Server::start(&db.url);
    sink.answer();
    let killed = Instant::now();
    drop(a); // SIGKILL
    while sink.answered_ids().len() < 3 && killed.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sink.answered_ids().len(),
        3,
        "not delivered by the other process"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "delivered {:?} after the kill",
        killed.elapsed()
    );
    drop(b);
}
