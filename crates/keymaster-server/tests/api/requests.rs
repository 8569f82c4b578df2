//! Enrolment requests (the service asks, the device answers), each rule on the backend of the
//! run: the request and its code, the device's preview and its failure budget, the deposit
//! that answers (once: `409 request_fulfilled`), the service's read that retrieves the key
//! with its policy, the long-poll's timing, expiry, and who may see a request.

use std::time::{Duration, Instant};

use keymaster_client::wire::{NewEnrolmentRequest, PolicyInput, RequestStatus};
use keymaster_client::{DeviceClient, ServiceClient};
use keymaster_core::code::Code;
use keymaster_core::key::PublicKey;
use keymaster_core::wire::CodeFormat;
use serde_json::json;

use crate::helpers::*;

fn new_request(label: &str) -> NewEnrolmentRequest {
    NewEnrolmentRequest {
        label: Some(label.into()),
        ..NewEnrolmentRequest::default()
    }
}

/// A valid code that no request has.
fn unknown_code() -> String {
    Code::generate(CodeFormat::Digits, &mut rand::thread_rng())
        .as_str()
        .to_owned()
}

/// A code that fails its check digit.
fn mistyped(code: &str) -> String {
    let mut c = code.to_owned();
    let last = c.pop().unwrap();
    c.push(if last == '0' { '1' } else { '0' });
    c
}

async fn parties(app: &TestApp) -> (DeviceClient, String, ServiceClient, String) {
    let (_, device, app_key) = app.device().await;
    let (_, service, service_key) = app.service("example-web", &["example.com"], &[]).await;
    (device, app_key, service, service_key)
}

#[tokio::test]
async fn a_request_is_previewed_answered_and_read_once_by_its_service() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("web sign-in")).await.unwrap();
    assert!(req.id.starts_with("req_"));
    assert_eq!(req.code_uri, format!("keymaster:request:{}", req.code));
    assert_eq!(req.code.len(), 16);

    // The device sees who asks before it sends anything, from the scanned URI.
    let preview = device.preview_request(&req.code_uri).await.unwrap();
    assert_eq!(preview.request_id, req.id);
    assert_eq!(preview.service.name, "example-web");
    assert_eq!(preview.service.domains, vec!["example.com".to_string()]);
    assert_eq!(preview.label.as_deref(), Some("web sign-in"));
    assert_eq!(preview.expires_at, req.expires_at);

    let line = ssh_ed25519();
    let dep = device
        .answer(&req.code_display, &deposit_request(line.clone()))
        .await
        .unwrap();
    assert_eq!(dep.request_id.as_deref(), Some(req.id.as_str()));
    let body = serde_json::to_value(&dep).unwrap();
    for absent in ["code", "code_display", "code_uri"] {
        assert!(body.get(absent).is_none(), "{absent} in {body}");
    }

    // The first read retrieves the key; it is the same key the device holds.
    let first = service
        .request_status(&req.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.status, "fulfilled");
    let retrieval = first.retrieval.expect("the first read carries the key");
    assert_eq!(retrieval.key_id, dep.id);
    let sent = PublicKey::parse(&line).unwrap();
    let got = PublicKey::parse(retrieval.public_key_pem.as_deref().unwrap()).unwrap();
    assert_eq!(sent.spki_der(), got.spki_der());
    // Later reads say fulfilled, without the key (it is gone).
    let again = service
        .request_status(&req.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.status, "fulfilled");
    assert!(again.retrieval.is_none());

    // The holder's history: deposited for the requesting service, then retrieved by it.
    let status = app.holder(&dep).status().await.unwrap();
    assert_eq!(status.status, "retrieved");
    let types: Vec<_> = status
        .history
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["key.deposited", "key.retrieved"]);
    for e in &status.history {
        assert_eq!(e.data.service.as_ref().unwrap().name, "example-web");
    }
    assert_eq!(
        status.history[0].data.reason.as_deref(),
        Some("enrolment_request")
    );
}

#[tokio::test]
async fn an_answered_request_is_409_to_a_second_answer_and_404_to_a_preview() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("once")).await.unwrap();
    device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert_problem(
        device
            .answer(&req.code, &deposit_request(ssh_ed25519()))
            .await,
        409,
        "request_fulfilled",
    );
    assert_problem(device.preview_request(&req.code).await, 404, "not_found");
    // Another tenant's device cannot answer it either.
    let (_, other, _) = app.device().await;
    assert_problem(
        other
            .answer(&req.code, &deposit_request(ssh_ed25519()))
            .await,
        409,
        "request_fulfilled",
    );
}

#[tokio::test]
async fn mistyped_unknown_and_foreign_request_codes_are_refused() {
    let app = spawn_app().await;
    let (device, app_key, service, service_key) = parties(&app).await;
    let req = service.request(&new_request("codes")).await.unwrap();

    // A mistyped code is invalid_code, from the SDK offline (nothing sent) and 400 from the
    // server.
    let offline = device
        .preview_request(&mistyped(&req.code))
        .await
        .unwrap_err();
    assert_eq!(
        (offline.status(), offline.code()),
        (None, Some("invalid_code"))
    );
    let resp = app
        .post_raw(
            "/v1/requests/preview",
            &app_key,
            json!({"code": mistyped(&req.code)}).to_string(),
        )
        .await;
    assert_raw_problem(resp, 400, "invalid_code").await;
    let resp = app
        .post_raw(
            "/v1/keys",
            &app_key,
            json!({"public_key": ssh_ed25519(), "request": mistyped(&req.code)}).to_string(),
        )
        .await;
    assert_raw_problem(resp, 400, "invalid_code").await;

    // An unknown code is 404, for the preview and for an answer.
    assert_problem(
        device.preview_request(&unknown_code()).await,
        404,
        "not_found",
    );
    assert_problem(
        device
            .answer(&unknown_code(), &deposit_request(ssh_ed25519()))
            .await,
        404,
        "not_found",
    );

    // A key's code is not a request code, and a request code is not a key's code.
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert_problem(device.preview_request(&dep.code).await, 404, "not_found");
    assert_problem(
        service.retrieve(&retrieval(&req.code)).await,
        404,
        "not_found",
    );
    let resp = app
        .post_raw(
            "/v1/retrievals",
            &service_key,
            json!({"code": req.code_uri}).to_string(),
        )
        .await;
    assert_raw_problem(resp, 400, "invalid_code").await;
    // A service key may not preview or answer; an app key may not make a request.
    let resp = app
        .post_raw(
            "/v1/requests/preview",
            &service_key,
            json!({"code": req.code}).to_string(),
        )
        .await;
    assert_raw_problem(resp, 403, "forbidden").await;
    let resp = app
        .post_raw("/v1/requests", &app_key, json!({}).to_string())
        .await;
    assert_raw_problem(resp, 403, "forbidden").await;

    // None of it touched the request.
    let preview = device.preview_request(&req.code).await.unwrap();
    assert_eq!(preview.request_id, req.id);
}

#[tokio::test]
async fn another_service_reading_the_request_gets_404() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let (_, other, _) = app.service("other-web", &["other.example"], &[]).await;
    let req = service.request(&new_request("mine")).await.unwrap();
    assert_problem(
        other.request_status(&req.id, Duration::ZERO).await,
        404,
        "not_found",
    );
    device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert_problem(
        other.request_status(&req.id, Duration::ZERO).await,
        404,
        "not_found",
    );
    // ...and the key is still there for its own service.
    let status = service
        .request_status(&req.id, Duration::ZERO)
        .await
        .unwrap();
    assert!(status.retrieval.is_some());
    assert_problem(
        service.request_status("req_nope", Duration::ZERO).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn misses_count_against_the_app_keys_budget_then_429() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 3).await;
    let (device, app_key, service, _) = parties(&app).await;
    let req = service.request(&new_request("budget")).await.unwrap();
    // Mistyped codes never count.
    for _ in 0..5 {
        let resp = app
            .post_raw(
                "/v1/requests/preview",
                &app_key,
                json!({"code": mistyped(&req.code)}).to_string(),
            )
            .await;
        assert_raw_problem(resp, 400, "invalid_code").await;
    }
    for _ in 0..3 {
        assert_problem(
            device.preview_request(&unknown_code()).await,
            404,
            "not_found",
        );
    }
    let err = device.preview_request(&req.code).await.expect_err("spent");
    assert_eq!(err.code(), Some("rate_limited"));
    match err {
        keymaster_client::Error::Api { retry_after, .. } => {
            assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
        }
        other => panic!("{other:?}"),
    }
    assert_problem(
        device
            .answer(&req.code, &deposit_request(ssh_ed25519()))
            .await,
        429,
        "rate_limited",
    );
    // Another app key (another tenant's) has a budget of its own.
    let (_, other, _) = app.device().await;
    other.preview_request(&req.code).await.unwrap();
    other
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_request_is_404_to_the_device_and_expired_to_its_service() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service
        .request(&NewEnrolmentRequest {
            ttl_seconds: Some(1),
            ..new_request("short")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_problem(device.preview_request(&req.code).await, 404, "not_found");
    assert_problem(
        device
            .answer(&req.code, &deposit_request(ssh_ed25519()))
            .await,
        404,
        "not_found",
    );
    let status = service
        .request_status(&req.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(status.status, "expired");
    assert!(status.retrieval.is_none());
    // The sweeper (every 100 ms in tests) marks it expired in the database.
    eventually(|| async { request_state(&app, &req.id).await.as_deref() == Some("expired") }).await;
}

/// The stored state of a request, read from the database of the run.
async fn request_state(app: &TestApp, id: &str) -> Option<String> {
    if let Some(pg) = &app.pg {
        let mut conn = pg.connect().await;
        return sqlx::query_scalar("SELECT state FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&app.db_path).unwrap();
    conn.query_row("SELECT state FROM requests WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .ok()
}

#[tokio::test]
async fn lifetimes_outside_the_bounds_are_refused() {
    let app = spawn_app().await;
    let (_, _, service, _) = parties(&app).await;
    for ttl in [0, -5, 3601, 86_400] {
        assert_problem(
            service
                .request(&NewEnrolmentRequest {
                    ttl_seconds: Some(ttl),
                    ..new_request("ttl")
                })
                .await,
            400,
            "invalid_request",
        );
    }
    let req = service
        .request(&NewEnrolmentRequest::default())
        .await
        .unwrap();
    let ttl = req.expires_at.as_second() - jiff::Timestamp::now().as_second();
    assert!((595..=600).contains(&ttl), "{ttl}");
    let req = service
        .request(&NewEnrolmentRequest {
            ttl_seconds: Some(3600),
            code_format: Some(CodeFormat::Base32),
            ..new_request("long")
        })
        .await
        .unwrap();
    assert_eq!(req.code.len(), 24);
}

#[tokio::test]
async fn a_password_policy_is_refused_with_a_request_and_changes_nothing() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("pw")).await.unwrap();
    let with_password = with_policy(
        deposit_request(ssh_ed25519()),
        PolicyInput {
            password: Some("correct horse".into()),
            ..PolicyInput::default()
        },
    );
    assert_problem(
        device.answer(&req.code, &with_password).await,
        400,
        "invalid_request",
    );
    // A policy naming other services cannot be answered either.
    let (other_id, _, _) = app.service("other-web", &["other.example"], &[]).await;
    let elsewhere = with_policy(
        deposit_request(ssh_ed25519()),
        PolicyInput {
            services: Some(vec![other_id]),
            ..PolicyInput::default()
        },
    );
    assert_problem(
        device.answer(&req.code, &elsewhere).await,
        400,
        "invalid_request",
    );
    let status = service
        .request_status(&req.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(status.status, "pending");
    device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_long_poll_answers_within_a_second_of_the_deposit() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("wait")).await.unwrap();

    // Nobody answers: the long-poll holds for its `wait`, then says pending.
    let started = Instant::now();
    let status = service
        .request_status(&req.id, Duration::from_secs(1))
        .await
        .unwrap();
    let held = started.elapsed();
    assert_eq!(status.status, "pending");
    assert!(held >= Duration::from_millis(950), "{held:?}");
    assert!(held < Duration::from_secs(3), "{held:?}");

    let waiting = {
        let (service, id) = (service.clone(), req.id.clone());
        tokio::spawn(async move {
            let s: RequestStatus = service.wait(&id, Duration::from_secs(30)).await.unwrap();
            (s, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dep = device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let deposited = Instant::now();
    let (status, answered) = waiting.await.unwrap();
    let lag = answered.saturating_duration_since(deposited);
    assert!(
        lag < Duration::from_secs(1),
        "answered {lag:?} after the deposit"
    );
    assert_eq!(status.status, "fulfilled");
    assert_eq!(status.retrieval.unwrap().key_id, dep.id);
}

#[tokio::test]
async fn a_wait_over_a_minute_is_refused() {
    let app = spawn_app().await;
    let (_, _, service, service_key) = parties(&app).await;
    let req = service.request(&new_request("w")).await.unwrap();
    let resp = app
        .http
        .get(format!("{}/v1/requests/{}?wait=61", app.base, req.id))
        .bearer_auth(&service_key)
        .send()
        .await
        .unwrap();
    assert_raw_problem(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn request_codes_are_not_stored_in_clear() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("hmac")).await.unwrap();
    device.preview_request(&req.code).await.unwrap();
    let pending = service.request(&new_request("pending")).await.unwrap();
    device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let bytes = app.database_bytes().await;
    for code in [&req.code, &pending.code] {
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "a request code is in the database"
        );
    }
    assert!(
        bytes.windows(req.id.len()).any(|w| w == req.id.as_bytes()),
        "the dump holds the requests"
    );
}

#[tokio::test]
async fn the_key_of_a_request_keeps_its_policy_at_the_read() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let req = service.request(&new_request("policy")).await.unwrap();
    let dep = device
        .answer(
            &req.code,
            &with_policy(
                deposit_request(ssh_ed25519()),
                PolicyInput {
                    domains: Some(vec!["elsewhere.example".into()]),
                    ..PolicyInput::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_problem(
        service.request_status(&req.id, Duration::ZERO).await,
        403,
        "domain_not_allowed",
    );
    let history = app.holder(&dep).status().await.unwrap().history;
    assert!(history.iter().any(|e| e.event_type == "key.denied"));
}

#[tokio::test]
async fn a_service_key_used_outside_its_networks_neither_asks_nor_reads() {
    let app = spawn_app().await;
    let (device, _, service, _) = parties(&app).await;
    let (_, fenced, _) = app
        .service("fenced-web", &["fenced.example"], &["192.0.2.0/24"])
        .await;
    assert_problem(
        fenced.request(&new_request("x")).await,
        403,
        "ip_not_allowed",
    );
    let req = service.request(&new_request("y")).await.unwrap();
    device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert_problem(
        fenced.request_status(&req.id, Duration::ZERO).await,
        403,
        "ip_not_allowed",
    );
}
