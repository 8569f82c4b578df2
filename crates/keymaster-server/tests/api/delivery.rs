//! Delivery under trouble: one tenant's hanging or failing webhook does not delay another
//! tenant's, an endpoint that keeps failing is paused and probed (and the operator sees it), and
//! the holder's event stream is pushed at the commit rather than polled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::future::join_all;
use futures::StreamExt;
use keymaster_client::wire::CreateTenantRequest;
use keymaster_client::{DeviceClient, HolderClient};

use crate::helpers::*;

/// A webhook receiver: answers 500 while `failing`, else 204, and notes when each id arrived.
#[derive(Clone)]
struct Sink {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    arrived: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Sink {
    async fn start(failing: bool) -> Sink {
        let sink = Sink {
            addr: "127.0.0.1:0".parse().unwrap(),
            failing: Arc::new(AtomicBool::new(failing)),
            requests: Arc::default(),
            arrived: Arc::default(),
        };
        let s = sink.clone();
        let handler = move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                s.requests.fetch_add(1, Ordering::SeqCst);
                if s.failing.load(Ordering::SeqCst) {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                s.arrived.lock().unwrap().push((id, Instant::now()));
                StatusCode::NO_CONTENT
            }
        };
        let app = axum::Router::new().route("/{*path}", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink { addr, ..sink }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn arrived(&self) -> usize {
        self.arrived.lock().unwrap().len()
    }
}

/// A receiver that accepts connections, reads, and never answers.
async fn hanging_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    format!("http://{addr}/hook")
}

async fn tenant(app: &TestApp, url: String) -> DeviceClient {
    let t = app
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "t".into(),
            webhook_url: Some(url),
        })
        .await
        .unwrap();
    let k = app.admin.create_app_key(&t.id).await.unwrap();
    DeviceClient::new(&app.base, &k.token).unwrap()
}

async fn deposit_many(device: &DeviceClient, n: usize) {
    for chunk in 0..n.div_ceil(20) {
        let batch = (chunk * 20..n.min(chunk * 20 + 20)).map(|_| {
            let device = device.clone();
            async move {
                device
                    .deposit(&deposit_request(ssh_ed25519()))
                    .await
                    .unwrap()
            }
        });
        join_all(batch).await;
    }
}

/// Tenant A's endpoint is in trouble with `queued` deliveries; tenant B's 5 must still arrive
/// within 2 s of their deposits.
async fn healthy_tenant_is_not_delayed_by(bad_url: String, queued: usize) {
    let app = spawn_app_with(|s| {
        s.webhook_timeout = Duration::from_secs(5);
        s.webhook_backoff_base = Duration::from_millis(50);
    })
    .await;
    let a = tenant(&app, bad_url).await;
    let good = Sink::start(false).await;
    let b = tenant(&app, good.url()).await;
    deposit_many(&a, queued).await;
    let started = Instant::now();
    deposit_many(&b, 5).await;
    while good.arrived() < 5 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        good.arrived(),
        5,
        "tenant B's deliveries did not all arrive within 10 s"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "tenant B's deliveries took {took:?} behind tenant A's endpoint"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_delays_only_its_own_deliveries() {
    healthy_tenant_is_not_delayed_by(hanging_receiver().await, 100).await;
}

#[tokio::test]
async fn an_endpoint_answering_500_delays_only_its_own_deliveries() {
    let bad = Sink::start(true).await;
    // Failing fast, A's deliveries and their retries are a backlog that takes seconds to work
    // through in claim order.
    healthy_tenant_is_not_delayed_by(bad.url(), 400).await;
}

async fn endpoint_state(app: &TestApp, endpoint: &str) -> serde_json::Value {
    let all = app.admin_get("/v1/admin/endpoints").await;
    all["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_paused_probed_and_resumed() {
    let sink = Sink::start(true).await;
    let app = spawn_app_with(|s| {
        s.webhook_backoff_base = Duration::from_millis(20);
        s.webhook_max_attempts = 1000;
        s.webhook_breaker_failures = 3;
        s.webhook_breaker_pause = Duration::from_millis(600);
    })
    .await;
    let device = tenant(&app, sink.url()).await;
    deposit_many(&device, 10).await;
    let endpoint = format!("http://{}", sink.addr);

    // Three failures open the breaker; then nothing is sent until the pause ends.
    eventually(|| async { endpoint_state(&app, &endpoint).await["state"] == "open" }).await;
    let state = endpoint_state(&app, &endpoint).await;
    assert!(
        state["consecutive_failures"].as_u64().unwrap() >= 3,
        "{state}"
    );
    assert_eq!(state["pending"], 10, "{state}");
    assert!(state["paused_until"].is_string(), "{state}");
    assert!(
        state["last_error"].as_str().unwrap().contains("500"),
        "{state}"
    );
    let at_open = sink.requests.load(Ordering::SeqCst);
    assert!(at_open <= 3 + 16, "{at_open} requests before the pause");
    // Over 1.5 s (the first pause, then a failed probe and a pause twice as long) at most one
    // probe per pause goes out, where retries every 20 ms would make dozens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probes = sink.requests.load(Ordering::SeqCst) - at_open;
    assert!(
        (1..=2).contains(&probes),
        "{probes} requests while paused (expected one probe per pause)"
    );

    // The receiver recovers: the next probe succeeds, the breaker closes, everything goes out.
    sink.failing.store(false, Ordering::SeqCst);
    for _ in 0..200 {
        if sink.arrived() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.arrived(), 10);
    let state = endpoint_state(&app, &endpoint).await;
    assert_eq!(state["state"], "closed", "{state}");
    assert_eq!(state["consecutive_failures"], 0, "{state}");
    eventually(|| async { endpoint_state(&app, &endpoint).await["pending"] == 0 }).await;
}

/// The stream shows an event at its commit, not at a poll: the median lag from the answer to the
/// event stays under 50 ms, where a stream polling every 200 ms would lag 100 ms on average.
#[tokio::test]
async fn the_event_stream_is_pushed_at_the_commit() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let holder = HolderClient::new(&app.base, &dep.id, &dep.holder_token).unwrap();
    let mut events = Box::pin(holder.events(None));
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.event_type, "key.deposited");
    let mut lags = Vec::new();
    for _ in 0..9 {
        // Let the stream go back to waiting.
        tokio::time::sleep(Duration::from_millis(30)).await;
        holder.recode().await.unwrap();
        let answered = Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        lags.push(answered.elapsed());
        assert_eq!(e.event_type, "code.reissued");
    }
    lags.sort();
    let median = lags[lags.len() / 2];
    assert!(
        median < Duration::from_millis(50),
        "median lag {median:?} from the answer to the event ({lags:?})"
    );
}
