//! The browser demo's server side: pages with their CSP, and the demo API (deposit with the
//! demo's app key, enrol with its service key, sign in with a signed challenge).

use keymaster_core::key::{generate, proof_message, sign, GenerateAlgorithm, PublicKey};
use rand::rngs::OsRng;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn post(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-security-policy"],
        CSP,
        "every demo response carries the CSP"
    );
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Whether HTML has an attribute like `onclick=` (an inline script the CSP would block).
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.chars().take_while(|c| c.is_ascii_lowercase()).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

/// A key pair made as the authenticator would, and its deposit body with a proof.
fn key_and_body(alg: GenerateAlgorithm) -> (PublicKey, zeroize::Zeroizing<String>, Value) {
    let (public, private) = generate(alg, &mut OsRng).unwrap();
    let proof = sign(&private, &proof_message(&public.fingerprint())).unwrap();
    let body = json!({"public_key": public.to_pem(), "proof": b64(&proof), "label": "phone"});
    (public, private, body)
}

#[tokio::test]
async fn pages_are_served_with_a_strict_csp() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/demo/", "text/html"),
        ("/demo/authenticator.html", "text/html"),
        ("/demo/example-app.html", "text/html"),
        ("/demo/authenticator.js", "text/javascript"),
        ("/demo/qrcodegen.js", "text/javascript"),
        ("/demo/demo.css", "text/css"),
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-security-policy"], CSP, "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let body = resp.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        if kind == "text/html" {
            // No inline script or style: every <script> has a src, no style attributes.
            assert!(!body.contains("<script>"), "{path}");
            assert!(!body.contains("style="), "{path}");
            assert!(!has_inline_handler(&body), "{path}: inline event handler");
        }
    }
    let resp = app
        .http
        .get(format!("{}/demo/nothing-here.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-security-policy"], CSP);
}

#[tokio::test]
async fn demo_can_be_switched_off() {
    let app = spawn_app_with(|s| s.demo = Some(false)).await;
    for path in ["/demo/", "/demo/authenticator.html"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let (status, _) = (
        app.http
            .post(format!("{}/demo/api/deposit", app.base))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 404);
}

#[tokio::test]
async fn enrol_and_sign_in_through_the_demo_api() {
    let app = spawn_app().await;
    for alg in [GenerateAlgorithm::Ed25519, GenerateAlgorithm::P256] {
        let (public, private, body) = key_and_body(alg);
        let (status, dep) = post(&app, "/demo/api/deposit", body).await;
        assert_eq!(status, 201, "{dep}");
        assert_eq!(dep["fingerprint"], public.fingerprint());
        let holder = dep["holder_token"].as_str().unwrap();
        assert!(holder.starts_with("kmh_"));
        let text = dep.to_string();
        assert!(!text.contains("kma_") && !text.contains("kms_"), "{text}");

        // A mistyped code is refused before any lookup.
        let code = dep["code"].as_str().unwrap();
        let mut typo: Vec<u8> = code.bytes().collect();
        typo[3] = if typo[3] == b'9' { b'0' } else { typo[3] + 1 };
        let (status, p) = post(
            &app,
            "/demo/api/enrol",
            json!({"code": String::from_utf8(typo).unwrap()}),
        )
        .await;
        assert_eq!(
            (status, p["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_code"))
        );

        let (status, enrolled) = post(
            &app,
            "/demo/api/enrol",
            json!({"code": dep["code_display"]}),
        )
        .await;
        assert_eq!(status, 200, "{enrolled}");
        assert_eq!(enrolled["fingerprint"], public.fingerprint());
        assert_eq!(enrolled["service"], "example-web");
        assert_eq!(enrolled["proven"], true);

        // The holder sees who retrieved it.
        let status: Value = app
            .http
            .get(format!(
                "{}/v1/keys/{}",
                app.base,
                dep["id"].as_str().unwrap()
            ))
            .bearer_auth(holder)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["status"], "retrieved");
        let retrieved = status["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "key.retrieved")
            .expect("key.retrieved in the history");
        assert_eq!(retrieved["data"]["service"]["name"], "example-web");

        // The code is single-use.
        let (status, _) = post(&app, "/demo/api/enrol", json!({"code": code})).await;
        assert_eq!(status, 404);

        // Sign in: challenge, signature by the private key, verification.
        let account = enrolled["account"].as_str().unwrap();
        let (status, ch) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
        assert_eq!(status, 200, "{ch}");
        let challenge = ch["challenge"].as_str().unwrap();
        assert!(challenge.starts_with("keymaster-demo-sign-in:"));
        let sig = sign(&private, challenge.as_bytes()).unwrap();
        let (status, ok) = post(
            &app,
            "/demo/api/verify",
            json!({"challenge_id": ch["challenge_id"], "signature": b64(&sig)}),
        )
        .await;
        assert_eq!(status, 200, "{ok}");
        assert_eq!(ok["fingerprint"], public.fingerprint());
        // A challenge answers once.
        let (status, _) = post(
            &app,
            "/demo/api/verify",
            json!({"challenge_id": ch["challenge_id"], "signature": b64(&sig)}),
        )
        .await;
        assert_eq!(status, 404);

        // A signature by another key does not sign in.
        let (_, other, _) = key_and_body(alg);
        let (_, ch) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
        let sig = sign(&other, ch["challenge"].as_str().unwrap().as_bytes()).unwrap();
        let (status, p) = post(
            &app,
            "/demo/api/verify",
            json!({"challenge_id": ch["challenge_id"], "signature": b64(&sig)}),
        )
        .await;
        assert_eq!(status, 401, "{p}");
    }
}

#[tokio::test]
async fn a_bad_proof_or_an_unknown_account_is_refused() {
    let app = spawn_app().await;
    let (_, _, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
    let (_, other, _) = key_and_body(GenerateAlgorithm::Ed25519);
    body["proof"] = json!(b64(&sign(&other, b"something else").unwrap()));
    let (status, p) = post(&app, "/demo/api/deposit", body).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_proof"))
    );

    let (status, _) = post(&app, "/demo/api/challenge", json!({"account": "acct_nope"})).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        "/demo/api/verify",
        json!({"challenge_id": "chl_nope", "signature": "AAAA"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn demo_keys_are_only_for_the_demo_service() {
    let app = spawn_app().await;
    let (_, _, body) = key_and_body(GenerateAlgorithm::Ed25519);
    let (_, dep) = post(&app, "/demo/api/deposit", body).await;
    let (_, svc, _) = app.service("elsewhere", &[], &[]).await;
    let err = svc
        .retrieve(&crate::helpers::retrieval(dep["code"].as_str().unwrap()))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("service_not_allowed"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_demo_is_bounded() {
    let app = spawn_app().await;
    // Bodies over the demo's limit.
    let (status, p) = post(
        &app,
        "/demo/api/enrol",
        json!({"code": "1".repeat(10 * 1024)}),
    )
    .await;
    assert_eq!(status, 413, "{p}");
    // Deposits per minute, all browsers together.
    let mut statuses = Vec::new();
    for _ in 0..31 {
        let (_, _, body) = key_and_body(GenerateAlgorithm::Ed25519);
        statuses.push(post(&app, "/demo/api/deposit", body).await.0);
    }
    assert!(statuses[..30].iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(statuses[30], 429);
}
