//! Verified handoff: the code URI, the SAS exchange (commit, request, reveal, read), preview
//! before claiming, the `proximity` rule and disputes, each on the backend of the run.
//!
//! The new endpoints are spoken to over raw HTTP (the SDK learns them separately); the SAS is
//! computed on both sides with `keymaster_core::handoff`, each side from the key bytes it
//! holds, as a real device and service do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keymaster_client::wire::{
    CreateTenantRequest, DepositRequest, DepositResponse, PolicyInput, Proximity, RetrievalContext,
    RetrievalRequest,
};
use keymaster_core::handoff::{
    b64url, commitment_matches, decode_32, key_commitment, sas, sas_commitment, CodeUri,
};
use keymaster_core::key::PublicKey;
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};

use crate::helpers::*;

fn random_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    OsRng.fill_bytes(&mut n);
    n
}

/// The DER SPKI of a PEM public key, as a service derives it from what it received.
fn spki_of(pem: &str) -> Vec<u8> {
    PublicKey::parse(pem).unwrap().spki_der().to_vec()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, token, Some(body)).await
}

async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, token, None).await
}

/// A device key deposited with the commitment of a fresh `nd`; returns the deposit and `nd`.
async fn deposit_committed(device: &keymaster_client::DeviceClient) -> (DepositResponse, [u8; 32]) {
    let nd = random_nonce();
    let dep = device
        .deposit(&DepositRequest {
            sas_commitment: Some(sas_commitment(&nd)),
            ..deposit_request(ssh_ed25519())
        })
        .await
        .unwrap();
    (dep, nd)
}

/// The holder's history, as event types.
async fn history(app: &TestApp, dep: &DepositResponse) -> Vec<keymaster_client::wire::Event> {
    app.holder(dep).status().await.unwrap().history
}

#[tokio::test]
async fn deposit_and_recode_answer_a_code_uri_that_commits_to_the_key() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, _, token) = app.service("web", &[], &[]).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let uri = dep
        .code_uri
        .clone()
        .expect("an asymmetric key has a code_uri");
    let parsed = CodeUri::parse(&uri).unwrap();
    assert_eq!(parsed.code.as_str(), dep.code);
    assert!(
        uri.starts_with(&format!("keymaster:{}?fp=", dep.code)),
        "{uri}"
    );

    // The service checks the commitment against the key it received, not a server fingerprint.
    // (Raw HTTP: the SDK's offline code check learns code URIs separately.)
    let resp = post(&app, "/v1/retrievals", &token, json!({"code": uri})).await;
    assert_eq!(resp.status(), 200);
    let got: keymaster_client::wire::RetrievalResponse = resp.json().await.unwrap();
    let spki = spki_of(got.public_key_pem.as_deref().unwrap());
    assert!(parsed.matches_key(&spki));
    assert_eq!(
        uri,
        format!("keymaster:{}?fp={}", dep.code, key_commitment(&spki))
    );

    // A fresh code comes with its own URI for the same key.
    let dep2 = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let recoded = app.holder(&dep2).recode().await.unwrap();
    let uri2 = recoded.code_uri.expect("recode answers a code_uri");
    assert!(uri2.starts_with(&format!("keymaster:{}?fp=", recoded.code)));
    assert_eq!(
        uri2.split_once("?fp=").unwrap().1,
        dep2.code_uri.unwrap().split_once("?fp=").unwrap().1
    );

    // A secret has no SPKI to commit to: no code_uri, in the deposit or the recode.
    let secret = device
        .deposit(&DepositRequest {
            secret: Some("c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into()),
            ..DepositRequest::default()
        })
        .await
        .unwrap();
    assert!(secret.code_uri.is_none());
    assert!(app
        .holder(&secret)
        .recode()
        .await
        .unwrap()
        .code_uri
        .is_none());
}

#[tokio::test]
async fn a_retrieval_takes_a_code_uri_and_ignores_its_fp() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, _, token) = app.service("web", &[], &[]).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    // The server uses the code and does not look at fp: checking it is the service's job.
    let other_fp = b64url(&[9u8; 32]);
    let uri = format!("KEYMASTER:{}?fp={other_fp}", dep.code_display);
    let resp = post(&app, "/v1/retrievals", &token, json!({"code": uri})).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["key_id"], dep.id.as_str());

    // A URI whose code or fp is malformed looks mistyped, like a bad code.
    for bad in [
        format!("keymaster:{}?fp=short", dep.code),
        "keymaster:1234-5678".to_owned(),
        format!("keymaster:request:{}", dep.code),
    ] {
        let resp = post(&app, "/v1/retrievals", &token, json!({"code": bad})).await;
        assert_raw_problem(resp, 400, "invalid_code").await;
    }
}

#[tokio::test]
async fn the_sas_commitment_round_trips_and_both_ends_agree() {
    let app = spawn_app().await;
    let (_, device, app_key) = app.device().await;
    let (_, service, token) = app.service("web", &[], &[]).await;
    let public_key = ssh_ed25519();
    let device_spki = spki_of(&public_key);
    let nd = random_nonce();
    let dep = device
        .deposit(&DepositRequest {
            sas_commitment: Some(sas_commitment(&nd)),
            ..deposit_request(public_key)
        })
        .await
        .unwrap();

    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let commitment = got
        .sas_commitment
        .clone()
        .expect("the commitment is handed on");
    assert_eq!(commitment, sas_commitment(&nd));
    let rid = got.retrieval_id.clone();

    let ns = random_nonce();
    let sas_path = format!("/v1/retrievals/{rid}/sas");
    let before: Value = get(&app, &sas_path, &token).await.json().await.unwrap();
    assert_eq!(before, json!({"service_nonce": null, "device_nonce": null}));
    let resp = post(&app, &sas_path, &token, json!({"nonce": b64url(&ns)})).await;
    assert_eq!(resp.status(), 202);
    // A retried request with the same nonce changes nothing; another nonce is refused.
    let resp = post(&app, &sas_path, &token, json!({"nonce": b64url(&ns)})).await;
    assert_eq!(resp.status(), 202);
    let resp = post(
        &app,
        &sas_path,
        &token,
        json!({"nonce": b64url(&random_nonce())}),
    )
    .await;
    assert_raw_problem(resp, 400, "invalid_request").await;

    // The device learns the service's nonce from its event stream (history shows the same).
    let events = history(&app, &dep).await;
    let requested: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "sas.requested")
        .collect();
    assert_eq!(requested.len(), 1, "{events:?}");
    assert_eq!(
        requested[0].data.retrieval_id.as_deref(),
        Some(rid.as_str())
    );
    let seen_ns = decode_32(requested[0].data.nonce.as_deref().unwrap()).unwrap();
    assert_eq!(seen_ns, ns);

    let reveal = |nonce: [u8; 32]| {
        let (app, dep, rid) = (&app, &dep, &rid);
        async move {
            post(
                app,
                &format!("/v1/keys/{}/sas", dep.id),
                &dep.holder_token,
                json!({"retrieval_id": rid, "nonce": b64url(&nonce)}),
            )
            .await
        }
    };
    // A nonce that does not open the commitment is refused, and changes nothing.
    assert_raw_problem(reveal(random_nonce()).await, 400, "invalid_request").await;
    assert_eq!(reveal(nd).await.status(), 204);
    assert_eq!(
        reveal(nd).await.status(),
        204,
        "a repeated reveal is harmless"
    );

    let after: Value = get(&app, &sas_path, &token).await.json().await.unwrap();
    assert_eq!(after["service_nonce"], b64url(&ns));
    let revealed = decode_32(after["device_nonce"].as_str().unwrap()).unwrap();
    assert!(commitment_matches(
        &decode_32(&commitment).unwrap(),
        &revealed
    ));

    // Each end computes the SAS from what it holds: the device from its own key, the service
    // from the key bytes it received.
    let service_spki = spki_of(got.public_key_pem.as_deref().unwrap());
    let device_sas = sas(&device_spki, &nd, &seen_ns);
    let service_sas = sas(&service_spki, &revealed, &ns);
    assert_eq!(device_sas, service_sas);
    assert_eq!(device_sas.to_string().len(), 7);

    // Without a commitment the retrieval says so (null, not absent); a malformed one is refused.
    let plain = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let resp = post(&app, "/v1/retrievals", &token, json!({"code": plain.code})).await;
    let body: Value = resp.json().await.unwrap();
    assert!(
        body.as_object().unwrap().contains_key("sas_commitment"),
        "{body}"
    );
    assert_eq!(body["sas_commitment"], Value::Null);
    for bad in [b64url(&[1u8; 31]), "not base64url!".to_owned()] {
        let mut req = serde_json::to_value(deposit_request(ssh_ed25519())).unwrap();
        req["sas_commitment"] = json!(bad);
        let resp = post(&app, "/v1/keys", &app_key, req).await;
        assert_raw_problem(resp, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_reveal_before_the_request_is_409_and_unknown_retrievals_are_404() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("web", &[], &[]).await;
    let (dep, nd) = deposit_committed(&device).await;
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let path = format!("/v1/keys/{}/sas", dep.id);
    let resp = post(
        &app,
        &path,
        &dep.holder_token,
        json!({"retrieval_id": got.retrieval_id, "nonce": b64url(&nd)}),
    )
    .await;
    assert_raw_problem(resp, 409, "sas_not_requested").await;
    let resp = post(
        &app,
        &path,
        &dep.holder_token,
        json!({"retrieval_id": "ret_unknown", "nonce": b64url(&nd)}),
    )
    .await;
    assert_raw_problem(resp, 404, "not_found").await;

    // Another key's holder cannot reveal for this retrieval.
    let (other, _) = deposit_committed(&device).await;
    let resp = post(
        &app,
        &format!("/v1/keys/{}/sas", other.id),
        &other.holder_token,
        json!({"retrieval_id": got.retrieval_id, "nonce": b64url(&nd)}),
    )
    .await;
    assert_raw_problem(resp, 404, "not_found").await;
}

#[tokio::test]
async fn only_the_retrieving_service_may_use_a_retrievals_sas_and_dispute() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("web", &[], &[]).await;
    let (_, _, foreign) = app.service("other", &[], &[]).await;
    let (dep, _) = deposit_committed(&device).await;
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let rid = &got.retrieval_id;
    let nonce = json!({"nonce": b64url(&random_nonce())});

    let resp = post(&app, &format!("/v1/retrievals/{rid}/sas"), &foreign, nonce).await;
    assert_raw_problem(resp, 404, "not_found").await;
    let resp = get(&app, &format!("/v1/retrievals/{rid}/sas"), &foreign).await;
    assert_raw_problem(resp, 404, "not_found").await;
    let resp = post(
        &app,
        &format!("/v1/retrievals/{rid}/dispute"),
        &foreign,
        json!({"reason": "key_mismatch"}),
    )
    .await;
    assert_raw_problem(resp, 404, "not_found").await;

    // Nothing reached the holder.
    let types: Vec<_> = history(&app, &dep)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["key.deposited", "key.retrieved"]);
}

/// A loopback receiver of webhooks that keeps every body.
async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let handler = move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            sink.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            axum::http::StatusCode::NO_CONTENT
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, got)
}

#[tokio::test]
async fn a_dispute_reaches_the_holders_history_and_the_tenant_webhook_but_sas_requests_do_not() {
    let app = spawn_app().await;
    let (addr, hooks) = webhook_receiver().await;
    let tenant = app
        .admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: Some(format!("http://{addr}/hook")),
        })
        .await
        .unwrap();
    let app_key = app.admin.create_app_key(&tenant.id).await.unwrap();
    let device = keymaster_client::DeviceClient::new(&app.base, &app_key.token).unwrap();
    let (service_id, service, token) = app.service("web", &[], &[]).await;
    let (dep, _) = deposit_committed(&device).await;
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let rid = got.retrieval_id.clone();

    let resp = post(
        &app,
        &format!("/v1/retrievals/{rid}/sas"),
        &token,
        json!({"nonce": b64url(&random_nonce())}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let dispute = |reason: &'static str| {
        let (app, rid, token) = (&app, &rid, &token);
        async move {
            post(
                app,
                &format!("/v1/retrievals/{rid}/dispute"),
                token,
                json!({"reason": reason}),
            )
            .await
        }
    };
    assert_raw_problem(dispute("changed_my_mind").await, 400, "invalid_request").await;
    assert_eq!(dispute("sas_mismatch").await.status(), 204);
    // Once per retrieval: a repeat is answered alike but sends nothing more.
    assert_eq!(dispute("not_requested").await.status(), 204);

    let events = history(&app, &dep).await;
    let disputed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "key.disputed")
        .collect();
    assert_eq!(disputed.len(), 1, "{events:?}");
    assert_eq!(disputed[0].data.reason.as_deref(), Some("sas_mismatch"));
    assert_eq!(disputed[0].data.retrieval_id.as_deref(), Some(rid.as_str()));
    assert_eq!(disputed[0].data.service.as_ref().unwrap().id, service_id);

    // The tenant's webhook gets the dispute, never the stream-only sas.requested.
    let types = || -> Vec<String> {
        hooks
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["type"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(|| {
        let t = types();
        async move { t.iter().any(|t| t == "key.disputed") }
    })
    .await;
    let hook = hooks
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "key.disputed")
        .cloned()
        .unwrap();
    assert_eq!(hook["data"]["reason"], "sas_mismatch");
    assert_eq!(hook["data"]["retrieval_id"], rid.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !types().iter().any(|t| t == "sas.requested"),
        "{:?}",
        types()
    );

    let audit = app.admin_get("/v1/admin/audit?limit=50").await;
    let rows: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "retrieval.dispute" && e["outcome"] == "success")
        .collect();
    assert!(!rows.is_empty(), "{audit}");
    assert_eq!(rows[0]["key_id"], dep.id.as_str());
}

#[tokio::test]
async fn a_committed_keys_stream_stays_open_after_retrieval_until_the_reveal() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, token) = app.service("web", &[], &[]).await;

    // Without a commitment the stream ends once the key is gone and its last event sent.
    let plain = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    service.retrieve(&retrieval(&plain.code)).await.unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        app.holder(&plain).events(None).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream of a gone key without commitment ends");
    assert_eq!(ended.len(), 2);

    let (dep, nd) = deposit_committed(&device).await;
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    let mut stream = Box::pin(app.holder(&dep).events(None));
    macro_rules! next {
        () => {
            tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("an event within 5 s")
        };
    }
    assert_eq!(next!().unwrap().unwrap().event_type, "key.deposited");
    assert_eq!(next!().unwrap().unwrap().event_type, "key.retrieved");
    // The key is gone, yet the stream waits for the service's request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ns = random_nonce();
    let resp = post(
        &app,
        &format!("/v1/retrievals/{}/sas", got.retrieval_id),
        &token,
        json!({"nonce": b64url(&ns)}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let requested = next!().unwrap().unwrap();
    assert_eq!(requested.event_type, "sas.requested");
    assert_eq!(requested.data.nonce, Some(b64url(&ns)));

    let resp = post(
        &app,
        &format!("/v1/keys/{}/sas", dep.id),
        &dep.holder_token,
        json!({"retrieval_id": got.retrieval_id, "nonce": b64url(&nd)}),
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert!(next!().is_none(), "after the reveal the stream ends");
}

#[tokio::test]
async fn a_preview_consumes_nothing_and_shows_provenance() {
    let app = spawn_app().await;
    let (tenant_id, device, _) = app.device().await;
    let (service_id, service, token) = app.service("web", &[], &[]).await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    for _ in 0..2 {
        let resp = post(
            &app,
            "/v1/retrievals/preview",
            &token,
            json!({"code": dep.code_uri}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["key_id"], dep.id.as_str());
        assert_eq!(body["label"], "github.com");
        assert_eq!(body["kind"], "public");
        assert_eq!(body["algorithm"], "ed25519");
        assert_eq!(body["fingerprint"], dep.fingerprint.as_deref().unwrap());
        assert_eq!(body["tenant"], json!({"id": tenant_id, "name": "acme"}));
        // The test client connects from 127.0.0.1: its /24, never the address itself.
        assert_eq!(body["origin"], json!({"network": "127.0.0.0/24"}));
        assert_eq!(body["proven"], false);
        let deposited: jiff::Timestamp = body["deposited_at"].as_str().unwrap().parse().unwrap();
        assert!(deposited <= jiff::Timestamp::now());
        for key_material in ["public_key_pem", "openssh", "jwk", "secret", "retrieval_id"] {
            assert!(body.get(key_material).is_none(), "{body}");
        }
    }
    // Nothing was consumed: the single-use key is still there to retrieve.
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(got.key_id, dep.id);
    let events = history(&app, &dep).await;
    let previewed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "key.previewed")
        .collect();
    assert_eq!(previewed.len(), 2, "{events:?}");
    assert_eq!(previewed[0].data.service.as_ref().unwrap().id, service_id);
    // Once retrieved, a preview answers what the retrieval would: 404.
    let resp = post(
        &app,
        "/v1/retrievals/preview",
        &token,
        json!({"code": dep.code}),
    )
    .await;
    assert_raw_problem(resp, 404, "not_found").await;
}

#[tokio::test]
async fn a_preview_answers_every_refusal_of_a_retrieval_and_counts_against_the_budget() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 3).await;
    let (_, device, _) = app.device().await;
    let (_, _, token) = app.service("web", &[], &[]).await;
    let (other_id, _, _) = app.service("other", &[], &[]).await;
    let preview = |body: Value| {
        let (app, token) = (&app, &token);
        async move { post(app, "/v1/retrievals/preview", token, body).await }
    };

    // A policy refusal is the rule's 403 and key.denied, as for a retrieval.
    let held = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                services: Some(vec![other_id]),
                ..PolicyInput::default()
            },
        ))
        .await
        .unwrap();
    assert_raw_problem(
        preview(json!({"code": held.code})).await,
        403,
        "service_not_allowed",
    )
    .await;
    let denied: Vec<_> = history(&app, &held)
        .await
        .into_iter()
        .filter(|e| e.event_type == "key.denied")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        denied[0].data.reason.as_deref(),
        Some("service_not_allowed")
    );
    // A password is checked as a retrieval checks it.
    let locked = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                password: Some("correct horse".into()),
                ..PolicyInput::default()
            },
        ))
        .await
        .unwrap();
    assert_raw_problem(
        preview(json!({"code": locked.code})).await,
        403,
        "password_required",
    )
    .await;
    // A mistyped code is 400 and never counts.
    assert_raw_problem(
        preview(json!({"code": "1234-5678-9012-3456"})).await,
        400,
        "invalid_code",
    )
    .await;
    // Two 403s so far; one 404 spends the budget of 3.
    let unknown = keymaster_core::code::Code::generate(
        keymaster_core::code::CodeFormat::Digits,
        &mut rand::thread_rng(),
    );
    assert_raw_problem(
        preview(json!({"code": unknown.as_str()})).await,
        404,
        "not_found",
    )
    .await;
    // Spent: the next preview and the next retrieval are 429, whatever the code.
    let good = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let resp = preview(json!({"code": good.code})).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_raw_problem(resp, 429, "rate_limited").await;
    let resp = post(&app, "/v1/retrievals", &token, json!({"code": good.code})).await;
    assert_raw_problem(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_preview_checks_the_password_like_a_retrieval_and_gives_its_budget_slot_back() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 2).await;
    let (_, device, _) = app.device().await;
    let (_, _, token) = app.service("web", &[], &[]).await;
    let dep = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                password: Some("correct horse".into()),
                ..PolicyInput::default()
            },
        ))
        .await
        .unwrap();
    // Each correct preview takes a budget slot for argon2 and gives it back: more previews
    // than the budget holds all succeed.
    for _ in 0..3 {
        let resp = post(
            &app,
            "/v1/retrievals/preview",
            &token,
            json!({"code": dep.code, "password": "correct horse"}),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let resp = post(
        &app,
        "/v1/retrievals/preview",
        &token,
        json!({"code": dep.code, "password": "wrong"}),
    )
    .await;
    assert_raw_problem(resp, 403, "password_incorrect").await;
    let resp = post(
        &app,
        "/v1/retrievals",
        &token,
        json!({"code": dep.code, "password": "correct horse"}),
    )
    .await;
    assert_eq!(resp.status(), 200, "the preview consumed nothing");
}

#[tokio::test]
async fn proximity_admits_the_depositors_network_only() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, token) = app.service("web", &[], &[]).await;
    let near = || {
        with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                proximity: Some(Proximity::SameNetwork),
                ..PolicyInput::default()
            },
        )
    };
    let from = |code: &str, ip: Option<&str>| RetrievalRequest {
        code: code.into(),
        context: Some(RetrievalContext {
            ip: ip.map(str::to_owned),
            ..RetrievalContext::default()
        }),
        ..RetrievalRequest::default()
    };

    // The deposit came from 127.0.0.1: its /24 is 127.0.0.0/24.
    let dep = device.deposit(&near()).await.unwrap();
    assert_problem(
        service
            .retrieve(&from(&dep.code, Some("198.51.100.7")))
            .await,
        403,
        "proximity_denied",
    );
    assert_problem(
        service.retrieve(&from(&dep.code, None)).await,
        403,
        "proximity_context_required",
    );
    assert_problem(
        service.retrieve(&retrieval(&dep.code)).await,
        403,
        "proximity_context_required",
    );
    // A preview is refused alike.
    let resp = post(
        &app,
        "/v1/retrievals/preview",
        &token,
        json!({"code": dep.code, "context": {"ip": "198.51.100.7"}}),
    )
    .await;
    assert_raw_problem(resp, 403, "proximity_denied").await;
    let got = service
        .retrieve(&from(&dep.code, Some("127.0.0.200")))
        .await
        .unwrap();
    assert_eq!(got.key_id, dep.id);

    let reasons: Vec<_> = history(&app, &dep)
        .await
        .into_iter()
        .filter(|e| e.event_type == "key.denied")
        .map(|e| e.data.reason.unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "proximity_denied",
            "proximity_context_required",
            "proximity_context_required",
            "proximity_denied"
        ]
    );
    // An unknown proximity rule is a bad policy.
    let mut req = serde_json::to_value(deposit_request(ssh_ed25519())).unwrap();
    req["policy"] = json!({"proximity": "same_city"});
    let (_, _, app_key) = app.device().await;
    let resp = post(&app, "/v1/keys", &app_key, req).await;
    assert_raw_problem(resp, 400, "invalid_request").await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_handoff() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = &doc["paths"];
    assert!(paths["/v1/retrievals/preview"]["post"].is_object());
    assert!(paths["/v1/retrievals/{retrieval_id}/sas"]["post"]["responses"]["202"].is_object());
    assert!(paths["/v1/retrievals/{retrieval_id}/sas"]["get"].is_object());
    assert!(paths["/v1/retrievals/{retrieval_id}/dispute"]["post"].is_object());
    assert!(paths["/v1/keys/{id}/sas"]["post"]["responses"]["409"].is_object());
    let schemas = &doc["components"]["schemas"];
    for name in [
        "PreviewResponse",
        "SasNonces",
        "SasRequest",
        "SasReveal",
        "DisputeRequest",
    ] {
        assert!(schemas[name].is_object(), "{name}");
    }
    assert!(schemas["DepositResponse"]["properties"]["code_uri"].is_object());
    assert!(schemas["DepositRequest"]["properties"]["sas_commitment"].is_object());
    assert!(schemas["RetrievalResponse"]["properties"]["sas_commitment"].is_object());
    assert!(schemas["PolicyInput"]["properties"]["proximity"].is_object());
}
