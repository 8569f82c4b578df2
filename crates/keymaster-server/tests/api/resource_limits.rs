//! Work that outlives a request slot is bounded on its own: open event streams (per holder
//! token and server-wide, `max_event_streams`) and server-side key generation
//! (`max_concurrent_generations`). Beyond a bound the answer is `429 rate_limited` with
//! `Retry-After` at once, and the rest of the API keeps answering.

use std::time::{Duration, Instant};

use keymaster_client::wire::{DepositRequest, DepositResponse};
use keymaster_core::key::PublicKey;

use crate::helpers::*;

/// Longest a cheap request may take while every stream slot is taken; generous for a busy
/// two-core machine, far below "never" (today's failure mode was no answer at all).
const PROMPT: Duration = Duration::from_secs(3);

/// `GET /v1/keys/{id}/events` with the key's holder token; the response once its head came.
async fn open_stream(app: &TestApp, dep: &DepositResponse) -> reqwest::Response {
    tokio::time::timeout(
        PROMPT,
        app.http
            .get(format!("{}/v1/keys/{}/events", app.base, dep.id))
            .bearer_auth(&dep.holder_token)
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .expect("the event stream answers promptly, with a stream or a refusal")
    .unwrap()
}

/// Asserts a `429 rate_limited` problem with a positive `Retry-After`.
async fn assert_limited(resp: reqwest::Response) {
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_raw_problem(resp, 429, "rate_limited").await;
}

async fn deposit(device: &keymaster_client::DeviceClient) -> DepositResponse {
    device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap()
}

/// `GET path` answers 200 within [`PROMPT`].
async fn answers_promptly(app: &TestApp, path: &str) {
    let started = Instant::now();
    let resp = tokio::time::timeout(PROMPT, app.http.get(format!("{}{path}", app.base)).send())
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within {PROMPT:?}"))
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    assert!(started.elapsed() < PROMPT);
}

/// A retrieval answers 200 within [`PROMPT`].
async fn retrieval_answers_promptly(service: &keymaster_client::ServiceClient, code: &str) {
    let got = tokio::time::timeout(PROMPT, service.retrieve(&retrieval(code)))
        .await
        .expect("a retrieval answers while the streams are open")
        .unwrap();
    assert_eq!(got.kind, "public");
}

#[tokio::test]
async fn the_fifth_stream_of_one_holder_token_is_429_and_a_closed_one_frees_its_place() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = deposit(&device).await;

    let mut open = Vec::new();
    for _ in 0..4 {
        let resp = open_stream(&app, &dep).await;
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    assert_limited(open_stream(&app, &dep).await).await;

    // The limit is per holder token: another key's holder still gets a stream.
    let other = deposit(&device).await;
    let other_stream = open_stream(&app, &other).await;
    assert_eq!(other_stream.status(), 200);

    // A client that goes away gives its place back: closing one of the four lets a new one in.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = open_stream(&app, &dep).await;
        if resp.status() == 200 {
            break;
        }
        assert_limited(resp).await;
        assert!(
            Instant::now() < deadline,
            "a closed stream's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_every_stream_slot_taken_health_readiness_and_retrievals_still_answer() {
    let app = spawn_app_with(|s| {
        s.max_event_streams = 4;
        s.max_connections = 8;
    })
    .await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    let target = deposit(&device).await;

    // Twelve holders each try to open a stream; four get one, the others are refused at once
    // instead of holding a connection each (before the cap, the eighth took the last one).
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        let dep = deposit(&device).await;
        let resp = open_stream(&app, &dep).await;
        if resp.status() == 200 {
            open.push(resp);
        } else {
            assert_limited(resp).await;
            refused += 1;
        }
    }
    assert_eq!(open.len(), 4, "max_event_streams is 4");
    assert_eq!(refused, 8);

    answers_promptly(&app, "/healthz").await;
    answers_promptly(&app, "/readyz").await;
    retrieval_answers_promptly(&service, &target.code).await;
}

#[tokio::test]
async fn open_streams_take_no_request_slots() {
    let app = spawn_app_with(|s| s.max_concurrent_requests = 2).await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    let target = deposit(&device).await;

    let mut open = Vec::new();
    for _ in 0..2 {
        let dep = deposit(&device).await;
        for _ in 0..3 {
            let resp = open_stream(&app, &dep).await;
            assert_eq!(resp.status(), 200);
            open.push(resp);
        }
    }
    assert_eq!(open.len(), 6, "more streams than request slots");

    answers_promptly(&app, "/healthz").await;
    retrieval_answers_promptly(&service, &target.code).await;
}

#[tokio::test]
async fn server_side_generation_beyond_its_bound_is_429_at_once() {
    let app = spawn_app_with(|s| s.max_concurrent_generations = 1).await;
    let (_, _, app_key) = app.device().await;
    let request = serde_json::to_string(&DepositRequest {
        generate: Some("rsa-3072".into()),
        label: Some("device".into()),
        ..DepositRequest::default()
    })
    .unwrap();

    // Fired together: one generation runs, the others find no free place and are not queued.
    let answers = futures::future::join_all(
        (0..6).map(|_| app.post_raw("/v1/keys", &app_key, request.clone())),
    )
    .await;
    let mut created = 0;
    let mut limited = 0;
    for resp in answers {
        match resp.status().as_u16() {
            201 => {
                let dep: DepositResponse = resp.json().await.unwrap();
                assert_eq!(dep.algorithm, "rsa-3072");
                let private = dep.private_key.expect("a generated pair's private key");
                assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
                let fingerprint = dep.fingerprint.expect("a fingerprint");
                // The public half the server kept is the one whose fingerprint it returned.
                assert!(fingerprint.starts_with("SHA256:"));
                assert!(!dep.code.is_empty() && dep.holder_token.starts_with("kmh_"));
                created += 1;
            }
            429 => {
                assert_limited(resp).await;
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(created >= 1, "no generation ran");
    assert!(
        limited >= 1,
        "six generations at once with max_concurrent_generations = 1"
    );

    // The bound frees once the generation is done: a later deposit succeeds, and its key is
    // the one retrieved.
    let dep: DepositResponse = app
        .post_raw("/v1/keys", &app_key, request.clone())
        .await
        .json()
        .await
        .unwrap();
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let pem = got.public_key_pem.unwrap();
    assert_eq!(
        PublicKey::parse(&pem).unwrap().fingerprint(),
        dep.fingerprint.unwrap()
    );
}
