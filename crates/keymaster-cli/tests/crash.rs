//! Crash consistency and orderly stops of the built `keymaster serve`.
//!
//! - `kill_minus_nine_loses_no_acknowledged_deposit`: deposits under concurrent load, SIGKILL
//!   at random moments, restarts on the same database and secret file; afterwards every deposit
//!   that was answered `201` is retrievable exactly once and its `key.deposited` event is in
//!   its history. The servers log at `debug`, and no code or token appears in their logs.
//! - `sigterm_drains_and_exits_zero`: SIGTERM with an event stream open and requests in flight
//!   ends the process with status 0, promptly.
//! - `deliveries_in_flight_at_kill_minus_nine_go_out_soon_after_the_restart`: webhooks being
//!   sent (to a receiver that holds them unanswered) when the process is killed reach the
//!   receiver within seconds of the restart, not when their claims would have expired.

#[path = "support/webhook_sink.rs"]
mod webhook_sink;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keymaster_client::wire::{
    CreateServiceRequest, CreateTenantRequest, DepositRequest, PolicyInput, RetrievalRequest,
};
use keymaster_client::{AdminClient, DeviceClient, HolderClient, ServiceClient};
use keymaster_core::key::{generate, GenerateAlgorithm};
use rand::Rng;

const ADMIN_TOKEN: &str = "crash-admin-token-0123456789abcdef";
/// Concurrent depositors per round.
const WORKERS: usize = 16;
/// Kill-and-restart rounds.
const ROUNDS: usize = 5;

/// A `keymaster serve` child on `127.0.0.1:0` with the database in `dir`.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Server {
        Server::start_logging(dir, Arc::default())
    }

    /// Starts a server whose stderr lines are also appended to `log`.
    fn start_logging(dir: &Path, log: Arc<Mutex<String>>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keymaster"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(dir.join("keymaster.db"))
            .current_dir(dir)
            .env("KEYMASTER_ADMIN_TOKEN", ADMIN_TOKEN)
            // Every second retrieval below is a 404 by design: keep the budget out of the way.
            .env("KEYMASTER_FAILED_RETRIEVALS_PER_MINUTE", "1000000")
            .env_remove("KEYMASTER_LISTEN")
            .env_remove("KEYMASTER_DATABASE_URL")
            .env_remove("KEYMASTER_SECRET")
            // The webhook receiver of the delivery test is on loopback.
            .env("KEYMASTER_ALLOW_PRIVATE_WEBHOOKS", "true")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start `keymaster serve`");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(at) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let url = line[at + "listening on ".len()..].trim().to_owned();
                        let _ = tx.send(url);
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "`keymaster serve` printed no address (exit: {:?})",
                    child.try_wait()
                )
            });
        Server { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// One acknowledged deposit.
#[derive(Clone)]
struct Acked {
    id: String,
    code: String,
    holder_token: String,
}

fn deposit_request() -> DepositRequest {
    let (key, _private) = generate(GenerateAlgorithm::Ed25519, &mut rand::rngs::OsRng).unwrap();
    DepositRequest {
        public_key: Some(key.to_openssh().unwrap()),
        label: Some("crash".into()),
        policy: Some(PolicyInput {
            ttl_seconds: Some(3600),
            ..PolicyInput::default()
        }),
        ..DepositRequest::default()
    }
}

/// Tenant, app key and service on a fresh server: (app key, service key).
async fn enrol(url: &str) -> (String, String) {
    let admin = AdminClient::new(url, ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&CreateTenantRequest {
            name: "crash".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let service = admin
        .create_service(&CreateServiceRequest {
            name: "crash-svc".into(),
            domains: vec![],
            allowed_cidrs: vec![],
        })
        .await
        .unwrap();
    (app_key, service.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_minus_nine_loses_no_acknowledged_deposit() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let server = Server::start_logging(dir.path(), log.clone());
    let (app_key, service_key) = enrol(&server.url).await;
    drop(server); // SIGKILL before the first round, too.

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut failed = 0usize;
    for _ in 0..ROUNDS {
        let mut server = Server::start_logging(dir.path(), log.clone());
        let device = DeviceClient::new(&server.url, &app_key).unwrap();
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let device = device.clone();
                let acked = acked.clone();
                tokio::spawn(async move {
                    // Deposit until the server is gone; the first error ends the worker.
                    loop {
                        match device.deposit(&deposit_request()).await {
                            Ok(dep) => acked.lock().unwrap().push(Acked {
                                id: dep.id,
                                code: dep.code,
                                holder_token: dep.holder_token,
                            }),
                            Err(_) => return 1usize,
                        }
                    }
                })
            })
            .collect();
        let wait = rand::thread_rng().gen_range(50..=400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.child.kill().unwrap(); // SIGKILL on Unix.
        server.child.wait().unwrap();
        for w in workers {
            failed += tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a depositor hangs after the server died")
                .unwrap();
        }
    }
    assert_eq!(failed, ROUNDS * WORKERS, "every worker ends on the kill");

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= ROUNDS,
        "too few deposits were acknowledged to show anything: {}",
        acked.len()
    );

    // After the last kill: a clean start on the same database and secret file.
    let server = Server::start_logging(dir.path(), log.clone());
    let service = ServiceClient::new(&server.url, &service_key).unwrap();
    let url = server.url.clone();
    let results: Vec<Result<(), String>> = futures::stream::iter(acked.iter().cloned())
        .map(|a| {
            let service = service.clone();
            let url = url.clone();
            async move {
                let holder = HolderClient::new(&url, &a.id, &a.holder_token).unwrap();
                let status = holder
                    .status()
                    .await
                    .map_err(|e| format!("{}: status: {e}", a.id))?;
                if !status
                    .history
                    .iter()
                    .any(|e| e.event_type == "key.deposited")
                {
                    return Err(format!("{}: key.deposited event lost", a.id));
                }
                let req = RetrievalRequest {
                    code: a.code.clone(),
                    ..RetrievalRequest::default()
                };
                let got = service
                    .retrieve(&req)
                    .await
                    .map_err(|e| format!("{}: first retrieval: {e}", a.id))?;
                if got.key_id != a.id {
                    return Err(format!("{}: the code opened key {}", a.id, got.key_id));
                }
                match service.retrieve(&req).await {
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => Err(format!("{}: second retrieval: {other:?}", a.id)),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        errors.is_empty(),
        "{} of {} acknowledged deposits broken after kill -9:\n{}",
        errors.len(),
        acked.len(),
        errors.join("\n")
    );
    drop(server);
    let log = log.lock().unwrap().clone();
    assert!(log.contains("listening on"), "the log was not captured");
    for secret in [ADMIN_TOKEN, &app_key, &service_key] {
        assert!(!log.contains(secret), "a token is in the server's log");
    }
    for a in &acked {
        assert!(!log.contains(&a.code), "a code is in the server's log");
        assert!(
            !log.contains(&a.holder_token),
            "a holder token is in the log"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    eprintln!(
        "{} acknowledged deposits over {ROUNDS} kills, all retrievable once",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (app_key, _) = enrol(&server.url).await;
    let device = DeviceClient::new(&server.url, &app_key).unwrap();
    let dep = device.deposit(&deposit_request()).await.unwrap();

    // An event stream held open by the holder: long-lived, must not hold up the stop.
    let holder = HolderClient::new(&server.url, &dep.id, &dep.holder_token).unwrap();
    let mut events = Box::pin(holder.events(None));
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream sends the deposit event")
        .expect("the stream is open")
        .unwrap();
    assert_eq!(first.event_type, "key.deposited");

    // A burst of requests in flight.
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let device = device.clone();
            tokio::spawn(async move { device.deposit(&deposit_request()).await.is_ok() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(8));
        (status, server)
    })
    .await
    .unwrap();
    let (status, _server) = status;
    let status = status.expect("`keymaster serve` still running 8 s after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(sent.elapsed() < Duration::from_secs(8));

    // The stream ended (rather than being cut mid-event), and the burst got answers or
    // connection errors, never a hang.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = events.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the event stream stayed open after the stop");
    for b in burst {
        tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("a request hangs after the stop")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_in_flight_at_kill_minus_nine_go_out_soon_after_the_restart() {
    let sink = webhook_sink::Sink::start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let admin = AdminClient::new(&server.url, ADMIN_TOKEN).unwrap();
    let tenant = admin
        .create_tenant(&CreateTenantRequest {
            name: "hooked".into(),
            webhook_url: Some(sink.url.clone()),
        })
        .await
        .unwrap();
    let app_key = admin.create_app_key(&tenant.id).await.unwrap().token;
    let device = DeviceClient::new(&server.url, &app_key).unwrap();
    for _ in 0..3 {
        device.deposit(&deposit_request()).await.unwrap();
    }
    // All three are claimed and being sent: the receiver holds them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.received() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.received(), 3, "the deliveries were not sent");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    sink.answer();

    let restarted = Instant::now();
    let _server = Server::start(dir.path());
    while sink.answered_ids().len() < 3 && restarted.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sink.answered_ids().len(),
        3,
        "not delivered after the restart"
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(5),
        "delivered {:?} after the restart",
        restarted.elapsed()
    );
}
