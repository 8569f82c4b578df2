//! `Cache-Control: no-store` on every answer under `/v1/` and `/demo/api/`: the ones that carry
//! a code, a token, a private key or a secret, and — so that no answer of the escrow is kept by
//! a cache on the way — every other one there too, refusals included.

use base64::Engine;
use keymaster_core::key::{generate, proof_message, sign, GenerateAlgorithm};
use rand::rngs::OsRng;
use serde_json::{json, Value};

use crate::helpers::*;

/// Asserts the answer's status and `Cache-Control: no-store`; returns the JSON body.
async fn no_store(what: &str, resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    let cache_control = resp
        .headers()
        .get("cache-control")
        .unwrap_or_else(|| panic!("{what}: no Cache-Control"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.split(',').any(|d| d.trim() == "no-store"),
        "{what}: Cache-Control: {cache_control}"
    );
    resp.json().await.unwrap_or(Value::Null)
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_raw(path, ADMIN_TOKEN, body.to_string()).await
}

#[tokio::test]
async fn answers_with_codes_tokens_private_keys_or_secrets_are_not_stored() {
    let app = spawn_app().await;

    let tenant = no_store(
        "tenant create (webhook_secret)",
        admin_post(&app, "/v1/admin/tenants", json!({"name": "acme"})).await,
        201,
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap();
    let app_key = no_store(
        "app-key create (token)",
        admin_post(
            &app,
            &format!("/v1/admin/tenants/{tenant_id}/app-keys"),
            json!({}),
        )
        .await,
        201,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let service_key = no_store(
        "service create (token)",
        admin_post(&app, "/v1/admin/services", json!({"name": "example-web"})).await,
        201,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    no_store(
        "webhook secret rotation",
        admin_post(
            &app,
            &format!("/v1/admin/tenants/{tenant_id}/webhook-secret"),
            json!({}),
        )
        .await,
        201,
    )
    .await;

    // A generated pair: code, holder token and private key in one answer.
    let generated = no_store(
        "deposit (generate)",
        app.post_raw(
            "/v1/keys",
            &app_key,
            json!({"generate": "ed25519"}).to_string(),
        )
        .await,
        201,
    )
    .await;
    assert!(generated["private_key"].is_string());
    let key_id = generated["id"].as_str().unwrap();
    let holder = generated["holder_token"].as_str().unwrap();

    let recoded = no_store(
        "recode",
        app.post_raw(&format!("/v1/keys/{key_id}/code"), holder, "")
            .await,
        201,
    )
    .await;
    no_store(
        "retrieval (public key)",
        app.post_raw(
            "/v1/retrievals",
            &service_key,
            json!({"code": recoded["code"]}).to_string(),
        )
        .await,
        200,
    )
    .await;

    // A symmetric secret, handed out in the retrieval's body.
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let deposited = no_store(
        "deposit (secret)",
        app.post_raw("/v1/keys", &app_key, json!({"secret": secret}).to_string())
            .await,
        201,
    )
    .await;
    let got = no_store(
        "retrieval (secret)",
        app.post_raw(
            "/v1/retrievals",
            &service_key,
            json!({"code": deposited["code"]}).to_string(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(got["secret"], secret);

    // The rest of /v1/ too, refusals included.
    let status = app
        .http
        .get(format!("{}/v1/keys/{key_id}", app.base))
        .bearer_auth(holder)
        .send()
        .await
        .unwrap();
    no_store("key status", status, 200).await;
    no_store(
        "a refused retrieval",
        app.post_raw(
            "/v1/retrievals",
            &service_key,
            json!({"code": deposited["code"]}).to_string(),
        )
        .await,
        404,
    )
    .await;
    no_store(
        "an unknown credential",
        app.post_raw("/v1/keys", "kma_nope", "{}").await,
        401,
    )
    .await;
}

#[tokio::test]
async fn the_demo_deposit_is_not_stored() {
    let app = spawn_app_with(|s| s.demo = true).await;
    let (public, private) = generate(GenerateAlgorithm::P256, &mut OsRng).unwrap();
    let proof = sign(&private, &proof_message(&public.fingerprint())).unwrap();
    let body = json!({
        "public_key": public.to_pem(),
        "proof": base64::engine::general_purpose::STANDARD.encode(proof),
        "label": "phone",
    });
    let resp = app
        .http
        .post(format!("{}/demo/api/deposit", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let dep = no_store("demo deposit", resp, 201).await;
    assert!(dep["code"].is_string());
}
