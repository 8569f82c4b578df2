//! Issue 3: key kinds over HTTP — `generate`, `secret`, `proof` — plus `max_retrievals` under
//! concurrency and the refusals of `notify`.

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keymaster_client::wire::{DepositRequest, DepositResponse, Notify, PolicyInput};
use keymaster_core::key::{self, generate, GenerateAlgorithm, PublicKey};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::helpers::*;

// ---- helpers of this module ----

fn generate_request(alg: &str) -> DepositRequest {
    DepositRequest {
        generate: Some(alg.into()),
        label: Some("device".into()),
        ..DepositRequest::default()
    }
}

fn secret_request(secret_b64: String) -> DepositRequest {
    DepositRequest {
        secret: Some(secret_b64),
        ..DepositRequest::default()
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    b
}

/// The DER inside a PEM.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).unwrap()
}

/// Whether `haystack` holds any `W`-byte run of `secret` that is not also a run of `public`
/// (PKCS#8 of an EC key carries the public point, which the database may hold).
fn leaks<const W: usize>(haystack: &[u8], secret: &[u8], public: &[u8]) -> bool {
    let public: HashSet<&[u8]> = public.windows(W).collect();
    let stored: HashSet<&[u8]> = haystack.windows(W).collect();
    secret
        .windows(W)
        .any(|w| !public.contains(w) && stored.contains(w))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- generate ----

/// Deposits `generate: alg` over raw HTTP, without the SDK's 30-second timeout: RSA-3072
/// generation in an unoptimised test build can take longer than that.
async fn deposit_generated(app: &TestApp, app_key: &str, alg: &str) -> DepositResponse {
    let resp = app
        .post_raw(
            "/v1/keys",
            app_key,
            serde_json::to_string(&generate_request(alg)).unwrap(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201, "{alg}");
    resp.json().await.unwrap()
}

/// Generates a pair of `alg` on the server, checks it signs and verifies, and that the private
/// half is neither in the database nor in anything the server tells the holder or the operator.
async fn generated_pair_signs_and_is_not_kept(alg: &str) {
    let app = spawn_app().await;
    let (_, _, app_key) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let dep = deposit_generated(&app, &app_key, alg).await;
    assert_eq!(dep.kind, "public");
    assert_eq!(dep.algorithm, alg);
    let private = dep.private_key.clone().expect("private_key with generate");
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM: {private:?}"
    );
    let openssh = dep
        .private_key_openssh
        .clone()
        .expect("private_key_openssh with generate");
    assert!(
        openssh.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "OpenSSH: {openssh:?}"
    );

    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(got.algorithm, alg);
    assert_eq!(got.fingerprint, dep.fingerprint);
    let public = PublicKey::parse(got.public_key_pem.as_deref().unwrap()).unwrap();
    let message = format!("hello from {alg}");
    let sig = key::sign(&private, message.as_bytes()).unwrap();
    public.verify(message.as_bytes(), &sig).unwrap();
    assert!(public.verify(b"another message", &sig).is_err());
    let sig = key::sign(&openssh, message.as_bytes()).unwrap();
    public.verify(message.as_bytes(), &sig).unwrap();

    // The private half is nowhere the server keeps or tells.
    let der = pem_der(&private);
    let db = app.database_bytes().await;
    assert!(
        !leaks::<16>(&db, &der, public.spki_der()),
        "{alg}: in the db"
    );
    let body_lines: Vec<&str> = private
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .collect();
    assert!(!body_lines.is_empty());
    let st = app.holder(&dep).status().await.unwrap();
    let audit = app.admin.audit(Some(1000), None).await.unwrap();
    let told = serde_json::to_string(&st).unwrap() + &serde_json::to_string(&audit).unwrap();
    for line in &body_lines {
        assert!(!contains(&db, line.as_bytes()), "{alg}: PEM text in the db");
        assert!(!told.contains(line), "{alg}: in status or audit");
    }
    assert!(!told.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn generate_ed25519() {
    generated_pair_signs_and_is_not_kept("ed25519").await;
}

#[tokio::test]
async fn generate_p256() {
    generated_pair_signs_and_is_not_kept("p256").await;
}

#[tokio::test]
async fn generate_rsa_3072() {
    generated_pair_signs_and_is_not_kept("rsa-3072").await;
}

#[tokio::test]
async fn unknown_generate_value_is_400() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    for bad in ["rsa-1024", "ed448", "", "ED25519 "] {
        assert_problem(
            device.deposit(&generate_request(bad)).await,
            400,
            "invalid_request",
        );
    }
}

// ---- secret ----

#[tokio::test]
async fn secrets_round_trip_and_are_sealed_at_rest() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    for len in [16, 32, 64] {
        let raw = random_bytes(len);
        let b64 = STANDARD.encode(&raw);
        let dep = device.deposit(&secret_request(b64.clone())).await.unwrap();
        assert_eq!(dep.kind, "secret");
        assert_eq!(dep.algorithm, "secret");
        assert!(dep.private_key.is_none() && dep.private_key_openssh.is_none());
        assert!(dep.fingerprint.is_none());

        let db = app.database_bytes().await;
        assert!(!contains(&db, &raw), "{len} raw bytes in the db");
        assert!(
            !contains(&db, b64.as_bytes()),
            "{len} bytes' base64 in the db"
        );
        // Nor any 16-byte run of it.
        assert!(!leaks::<16>(&db, &raw, &[]));

        let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
        assert_eq!(got.kind, "secret");
        assert_eq!(got.algorithm, "secret");
        assert_eq!(got.secret.as_deref(), Some(b64.as_str()));
        assert!(got.public_key_pem.is_none());
        assert!(got.openssh.is_none());
        assert!(got.jwk.is_none());
        assert!(got.fingerprint.is_none());

        let st = app.holder(&dep).status().await.unwrap();
        let audit = app.admin.audit(Some(1000), None).await.unwrap();
        let told = serde_json::to_string(&st).unwrap() + &serde_json::to_string(&audit).unwrap();
        assert!(!told.contains(&b64));
    }
}

#[tokio::test]
async fn secret_length_bounds() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    for len in [0, 15, 65, 128] {
        assert_problem(
            device
                .deposit(&secret_request(STANDARD.encode(random_bytes(len))))
                .await,
            400,
            "invalid_request",
        );
    }
    assert_problem(
        device
            .deposit(&secret_request("not base64 at all!".into()))
            .await,
        400,
        "invalid_request",
    );
}

// ---- proof ----

#[tokio::test]
async fn proof_of_possession() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("svc", &[], &[]).await;
    for alg in [GenerateAlgorithm::Ed25519, GenerateAlgorithm::P256] {
        let (public, private) = generate(alg, &mut OsRng).unwrap();
        let (_, stranger) = generate(alg, &mut OsRng).unwrap();
        let message = key::proof_message(&public.fingerprint());

        // A proof by another key.
        let mut req = deposit_request(public.to_pem());
        req.proof = Some(STANDARD.encode(key::sign(&stranger, &message).unwrap()));
        assert_problem(device.deposit(&req).await, 400, "invalid_proof");
        // Not base64, or a signature over another message.
        req.proof = Some("***".into());
        assert_problem(device.deposit(&req).await, 400, "invalid_proof");
        req.proof = Some(
            STANDARD.encode(key::sign(&private, &key::proof_message("SHA256:other")).unwrap()),
        );
        assert_problem(device.deposit(&req).await, 400, "invalid_proof");

        // A good proof.
        req.proof = Some(STANDARD.encode(key::sign(&private, &message).unwrap()));
        let dep = device.deposit(&req).await.unwrap();
        let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
        assert!(got.proven);

        // No proof.
        let dep = device
            .deposit(&deposit_request(public.to_pem()))
            .await
            .unwrap();
        let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
        assert!(!got.proven);
    }
}

// ---- max_retrievals under concurrency ----

#[tokio::test]
async fn max_retrievals_five_under_forty_concurrent_requests() {
    let app = spawn_app_with(|s| s.failed_retrievals_per_minute = 1000).await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&with_policy(
            deposit_request(ssh_ed25519()),
            PolicyInput {
                max_retrievals: Some(5),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let (_, service, _) = app.service("svc", &[], &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let service = service.clone();
        let code = dep.code.clone();
        tasks.push(tokio::spawn(async move {
            service.retrieve(&retrieval(&code)).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(got) => assert!(ids.insert(got.retrieval_id)),
            Err(e) => assert_eq!(e.status(), Some(404), "{e:?}"),
        }
    }
    assert_eq!(ids.len(), 5);
    let st = app.holder(&dep).status().await.unwrap();
    assert_eq!(st.retrievals, 5);
    assert_eq!(st.status, "retrieved");
    assert_eq!(
        st.history
            .iter()
            .filter(|e| e.event_type == "key.retrieved")
            .count(),
        5
    );
}

// ---- notify ----

#[tokio::test]
async fn email_without_smtp_is_refused() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let mut req = deposit_request(ssh_ed25519());
    req.notify = Some(Notify {
        webhook_url: None,
        email: Some("me@example.net".into()),
    });
    assert_problem(device.deposit(&req).await, 400, "email_not_configured");
}

#[tokio::test]
async fn private_webhook_refused_unless_allowed() {
    let app = spawn_app_with(|s| s.allow_private_webhooks = false).await;
    let (_, device, _) = app.device().await;
    for url in ["http://127.0.0.1/", "http://10.0.0.1/hook", "http://[::1]/"] {
        let mut req = deposit_request(ssh_ed25519());
        req.notify = Some(Notify {
            webhook_url: Some(url.into()),
            email: None,
        });
        assert_problem(device.deposit(&req).await, 400, "invalid_request");
    }
    // The same URL is fine where the server allows private webhooks.
    let open = spawn_app().await;
    let (_, device, _) = open.device().await;
    let mut req = deposit_request(ssh_ed25519());
    req.notify = Some(Notify {
        webhook_url: Some("http://127.0.0.1/".into()),
        email: None,
    });
    device.deposit(&req).await.unwrap();
}
