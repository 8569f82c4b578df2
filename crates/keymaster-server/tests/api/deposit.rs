//! `POST /v1/keys`: key material, codes, bad input, and what the database holds.

use keymaster_client::wire::{CodeFormat, DepositRequest, PolicyInput};
use keymaster_core::code::Code;
use keymaster_core::key::{generate, GenerateAlgorithm, PublicKey};
use rand::rngs::OsRng;

use crate::helpers::*;

#[tokio::test]
async fn openssh_deposit_returns_code_fingerprints_and_holder_token() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let line = ssh_ed25519();
    let dep = device
        .deposit(&deposit_request(line.clone()))
        .await
        .unwrap();
    let key = PublicKey::parse(&line).unwrap();
    assert_eq!(dep.kind, "public");
    assert_eq!(dep.algorithm, "ed25519");
    assert_eq!(dep.fingerprint.as_deref(), Some(key.fingerprint().as_str()));
    assert_eq!(dep.ssh_fingerprint, key.ssh_fingerprint());
    assert_eq!(
        dep.jwk_thumbprint.as_deref(),
        Some(key.jwk_thumbprint().as_str())
    );
    assert!(dep.holder_token.starts_with("kmh_"));
    assert!(dep.private_key.is_none() && dep.private_key_openssh.is_none());
    // digits: 16 digits with a valid check digit, displayed in groups of four.
    assert_eq!(dep.code.len(), 16);
    assert!(dep.code.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(Code::parse(&dep.code).unwrap().as_str(), dep.code);
    assert_eq!(dep.code_display.replace('-', ""), dep.code);
    assert_eq!(dep.code_display.len(), 19);
    // Default lifetime: one day.
    let ttl = dep
        .expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs();
    assert!((86_300..=86_400).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn base32_codes_and_other_key_forms() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let (p256, _) = generate(GenerateAlgorithm::P256, &mut OsRng).unwrap();
    let mut req = DepositRequest {
        public_key: Some(p256.to_pem()),
        code_format: Some(CodeFormat::Base32),
        ..DepositRequest::default()
    };
    let dep = device.deposit(&req).await.unwrap();
    assert_eq!(dep.algorithm, "p256");
    assert_eq!(dep.code.len(), 24);
    assert_eq!(
        Code::parse(&dep.code.to_lowercase()).unwrap().as_str(),
        dep.code
    );
    // The same key as a JWK has the same fingerprints.
    req.public_key = None;
    req.jwk = Some(p256.to_jwk());
    let dep2 = device.deposit(&req).await.unwrap();
    assert_eq!(dep2.fingerprint, dep.fingerprint);
    assert_ne!(dep2.code, dep.code);
}

#[tokio::test]
async fn bad_key_material_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (_, device, app_key) = app.device().await;
    let (_, private_pem) = generate(GenerateAlgorithm::Ed25519, &mut OsRng).unwrap();
    assert_problem(
        device
            .deposit(&deposit_request(private_pem.to_string()))
            .await,
        400,
        "private_key_rejected",
    );
    let jwk_private = serde_json::json!({"kty":"OKP","crv":"Ed25519",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"});
    assert_problem(
        device
            .deposit(&DepositRequest {
                jwk: Some(jwk_private),
                ..Default::default()
            })
            .await,
        400,
        "private_key_rejected",
    );
    assert_problem(
        device
            .deposit(&deposit_request("ssh-ed25519 AAAAnotbase64!!".into()))
            .await,
        400,
        "invalid_key",
    );
    assert_problem(
        device.deposit(&DepositRequest::default()).await,
        400,
        "invalid_request",
    );
    let two = DepositRequest {
        public_key: Some(ssh_ed25519()),
        secret: Some("AAAAAAAAAAAAAAAAAAAAAA==".into()),
        ..Default::default()
    };
    assert_problem(device.deposit(&two).await, 400, "invalid_request");
    let short_ttl = with_policy(
        deposit_request(ssh_ed25519()),
        PolicyInput {
            ttl_seconds: Some(0),
            ..Default::default()
        },
    );
    assert_problem(device.deposit(&short_ttl).await, 400, "invalid_request");
    let long_ttl = with_policy(
        deposit_request(ssh_ed25519()),
        PolicyInput {
            ttl_seconds: Some(31 * 86_400),
            ..Default::default()
        },
    );
    assert_problem(device.deposit(&long_ttl).await, 400, "invalid_request");

    // Unknown fields, malformed JSON and oversized bodies: 400, 400, 413, all problem+json.
    let resp = app
        .post_raw("/v1/keys", &app_key, r#"{"public_key":"x","colour":"red"}"#)
        .await;
    let body = assert_raw_problem(resp, 400, "invalid_request").await;
    assert!(
        body["detail"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let resp = app.post_raw("/v1/keys", &app_key, "{not json").await;
    assert_raw_problem(resp, 400, "invalid_request").await;
    let big = format!(r#"{{"public_key":"{}"}}"#, "A".repeat(70 * 1024));
    let resp = app.post_raw("/v1/keys", &app_key, big).await;
    assert_raw_problem(resp, 413, "payload_too_large").await;

    // None of it left anything behind: the audit log shows only refusals.
    let audit = app.admin.audit(None, None).await.unwrap().entries;
    assert!(audit
        .iter()
        .filter(|e| e.action == "key.deposit")
        .all(|e| e.outcome != "success"));
}

#[tokio::test]
async fn codes_and_tokens_are_not_stored_in_clear() {
    let app = spawn_app().await;
    let (_, device, app_key) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let (_, _, service_key) = app.service("svc", &[], &[]).await;
    // SQLite: the raw bytes of the files; PostgreSQL: the text of every row (bytea as hex).
    let bytes = app.database_bytes().await;
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!bytes.is_empty());
    for secret in [
        &dep.code,
        &dep.code_display,
        &dep.holder_token,
        &app_key,
        &service_key,
        &helpers_admin_token().to_owned(),
    ] {
        assert!(!contains(secret), "a secret is in the database in clear");
        assert!(
            !contains(&hex::encode(secret)),
            "a secret is in the database as hex"
        );
    }
    // Sanity: the database does hold the deposit's non-secret facts.
    assert!(contains(&dep.id));
}

fn helpers_admin_token() -> &'static str {
    ADMIN_TOKEN
}

#[tokio::test]
async fn deposits_survive_a_restart() {
    // SQLite: a file in `dir` and its generated secret file; PostgreSQL: the test's own
    // database (kept by `_pg`) and the fixed secret.
    let dir = tempfile::tempdir().unwrap();
    let (settings, _pg) = backend_settings(dir.path()).await;
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
        .create_tenant(&keymaster_client::wire::CreateTenantRequest {
            name: "a".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    let k = admin.create_app_key(&t.id).await.unwrap();
    let s = admin
        .create_service(&keymaster_client::wire::CreateServiceRequest {
            name: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let device = keymaster_client::DeviceClient::new(&base, &k.token).unwrap();
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();

    // Same database, same secret: the code still opens the key.
    let app = keymaster_server::App::build(settings).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let service = keymaster_client::ServiceClient::new(&base, &s.token).unwrap();
    let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
    assert_eq!(got.key_id, dep.id);
}

#[tokio::test]
async fn a_long_unknown_unicode_field_is_a_400_not_a_dropped_connection() {
    // Found by schemathesis: the error message was cut inside a 4-byte character.
    let app = spawn_app().await;
    let (_, _, app_key) = app.device().await;
    for pad in 0..4 {
        let field = format!("{}{}", "x".repeat(pad), "\u{1D54B}".repeat(120));
        let body = serde_json::json!({ field: [], "public_key": "x" }).to_string();
        let resp = app.post_raw("/v1/keys", &app_key, body).await;
        assert_raw_problem(resp, 400, "invalid_request").await;
    }
}
