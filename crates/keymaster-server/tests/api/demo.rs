//! The browser demo's server side: pages with their CSP, and the demo API (deposit with the
//! demo's app key, preview and enrol with its service key, the SAS exchange, activation and
//! dispute, sign in with a signed challenge, enrolment by scanning: a request of the demo's
//! service, its preview and answer, the long-poll); the demo off unless asked for, refused on a
//! non-loopback listen, and confined to its own tenant and service.

use keymaster_client::wire::{DepositRequest, DepositResponse, KeyStatus};
use keymaster_core::key::{generate, proof_message, sign, GenerateAlgorithm, PublicKey};
use keymaster_server::App;
use rand::rngs::OsRng;
use rand::RngCore;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    backend_settings, deposit_request, retrieval, spawn_app, spawn_app_with, ssh_ed25519, TestApp,
};

/// A server with the demo turned on (it is off unless asked for).
async fn spawn_demo() -> TestApp {
    spawn_app_with(|s| s.demo = true).await
}

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
    let app = spawn_demo().await;
    for (path, kind) in [
        ("/demo/", "text/html"),
        ("/demo/authenticator.html", "text/html"),
        ("/demo/example-app.html", "text/html"),
        ("/demo/authenticator.js", "text/javascript"),
        ("/demo/qrcodegen.js", "text/javascript"),
        ("/demo/sdk/index.js", "text/javascript"),
        ("/demo/sdk/sas.js", "text/javascript"),
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
    // The package's modules live only under sdk/, and the pages only at the top.
    for path in [
        "/demo/nothing-here.js",
        "/demo/sdk/nothing-here.js",
        "/demo/sdk/common.js",
        "/demo/index.js",
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.headers()["content-security-policy"], CSP, "{path}");
    }
}

#[tokio::test]
async fn the_demo_is_off_unless_asked_for() {
    // The test settings listen on 127.0.0.1, where the demo may run; it stays off unless asked for.
    let app = spawn_app().await;
    for path in ["/demo", "/demo/", "/demo/authenticator.html"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let (_, _, deposit) = key_and_body(GenerateAlgorithm::Ed25519);
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    for (path, body) in [
        ("/demo/api/deposit", deposit),
        ("/demo/api/preview", json!({"code": dep.code})),
        ("/demo/api/enrol", json!({"code": dep.code})),
        (
            "/demo/api/sas",
            json!({"account": "acct_x", "nonce": "AAAA"}),
        ),
        ("/demo/api/sas/nonces", json!({"account": "acct_x"})),
        ("/demo/api/activate", json!({"account": "acct_x"})),
        (
            "/demo/api/dispute",
            json!({"account": "acct_x", "reason": "sas_mismatch"}),
        ),
        ("/demo/api/challenge", json!({"account": "acct_x"})),
        ("/demo/api/request", json!({})),
        ("/demo/api/request/wait", json!({"request_id": "req_x"})),
        ("/demo/api/request/preview", json!({"code": dep.code})),
        (
            "/demo/api/verify",
            json!({"challenge_id": "chl_x", "signature": "AAAA"}),
        ),
    ] {
        let resp = app
            .http
            .post(format!("{}{path}", app.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_untouched(&app, &dep).await;
}

#[tokio::test]
async fn the_demo_refuses_to_start_on_a_non_loopback_listen() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:8080"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut settings, _pg) = backend_settings(dir.path()).await;
        settings.listen = listen.into();
        settings.demo = true;
        let Err(err) = App::build(settings).await else {
            panic!("{listen}: the demo started on a non-loopback listen");
        };
        let msg = err.to_string();
        assert!(
            msg.contains("demo") && msg.contains("listen") && !msg.contains('\n'),
            "{listen}: {msg}"
        );
    }
}

#[tokio::test]
async fn enrol_and_sign_in_through_the_demo_api() {
    let app = spawn_demo().await;
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
    let app = spawn_demo().await;
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
    let app = spawn_demo().await;
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
    let app = spawn_demo().await;
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

/// The holder's view of a key: its status and the types of its events.
async fn holder_view(app: &TestApp, dep: &DepositResponse) -> (KeyStatus, Vec<String>) {
    let status = app.holder(dep).status().await.unwrap();
    let types = status
        .history
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    (status, types)
}

/// A live key that nothing has touched since its deposit: active, never retrieved, and
/// nothing in its history but the deposit.
async fn assert_untouched(app: &TestApp, dep: &DepositResponse) {
    let (status, types) = holder_view(app, dep).await;
    assert_eq!(status.status, "active", "{}", dep.id);
    assert_eq!(status.retrievals, 0, "{}", dep.id);
    assert_eq!(types, ["key.deposited"], "{}", dep.id);
}

/// The 404 body of a code that names no key, as the demo answers it.
async fn unknown_code_body(app: &TestApp) -> Value {
    let unknown = keymaster_core::code::Code::generate(Default::default(), &mut OsRng);
    let (status, body) = post(app, "/demo/api/enrol", json!({"code": unknown.as_str()})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found", "{body}");
    body
}

/// The id of the demo's service, as a holder sees it in `key.retrieved`.
async fn demo_service_id(app: &TestApp) -> String {
    let (_, _, body) = key_and_body(GenerateAlgorithm::Ed25519);
    let (_, dep) = post(app, "/demo/api/deposit", body).await;
    let dep: DepositResponse = serde_json::from_value(dep).unwrap();
    let (status, _) = post(app, "/demo/api/enrol", json!({"code": dep.code})).await;
    assert_eq!(status, 200);
    let (status, _) = holder_view(app, &dep).await;
    let retrieved = status
        .history
        .iter()
        .find(|e| e.event_type == "key.retrieved")
        .unwrap();
    retrieved.data.service.as_ref().unwrap().id.clone()
}

/// Another tenant's keys of both kinds (and one whose policy names the demo's own service)
/// are, to the demo's enrol, codes that name nothing: the same 404 body as an unknown code,
/// nothing counted or told on the key, and a real service retrieves it afterwards.
#[tokio::test]
async fn enrol_of_another_tenants_code_is_404_and_leaves_the_key_alone() {
    let app = spawn_demo().await;
    let unknown = unknown_code_body(&app).await;
    let demo_service = demo_service_id(&app).await;
    let (_, device, _) = app.device().await;
    let (_, real, _) = app.service("real", &[], &[]).await;

    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let public = deposit_request(ssh_ed25519());
    let secret_req = DepositRequest {
        secret: Some(b64(&secret)),
        ..DepositRequest::default()
    };
    let mut for_demo_service = deposit_request(ssh_ed25519());
    for_demo_service.policy = Some(keymaster_client::wire::PolicyInput {
        services: Some(vec![demo_service]),
        ..Default::default()
    });
    for (kind, req) in [
        ("public", public),
        ("secret", secret_req),
        ("public, policy naming example-web", for_demo_service),
    ] {
        let dep = device.deposit(&req).await.unwrap();
        for code in [&dep.code, &dep.code_display] {
            for path in ["/demo/api/preview", "/demo/api/enrol"] {
                let (status, body) = post(&app, path, json!({"code": code})).await;
                assert_eq!(status, 404, "{kind} {path}: {body}");
                assert_eq!(
                    body, unknown,
                    "{kind} {path}: not the body of an unknown code"
                );
            }
        }
        assert_untouched(&app, &dep).await;
        if kind == "public, policy naming example-web" {
            continue;
        }
        let got = real.retrieve(&retrieval(&dep.code)).await.unwrap();
        assert_eq!(got.key_id, dep.id, "{kind}");
        if kind == "secret" {
            assert_eq!(got.secret.as_deref(), Some(b64(&secret).as_str()));
        } else {
            assert!(got.public_key_pem.is_some(), "{kind}");
        }
    }
}

/// A dead code of another tenant (consumed, or replaced by a new one) presented to the demo
/// is an unknown code too: its holder hears nothing (no `code.stale_used`), while a dead code
/// of the demo's own tenant is still reported to its holder.
#[tokio::test]
async fn enrol_of_another_tenants_dead_code_tells_its_holder_nothing() {
    let app = spawn_demo().await;
    let unknown = unknown_code_body(&app).await;
    let (_, device, _) = app.device().await;
    let (_, real, _) = app.service("real", &[], &[]).await;

    let consumed = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    real.retrieve(&retrieval(&consumed.code)).await.unwrap();
    let replaced = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    app.holder(&replaced).recode().await.unwrap();
    for (what, dep) in [("consumed", &consumed), ("replaced", &replaced)] {
        let before = holder_view(&app, dep).await.1;
        let (status, body) = post(&app, "/demo/api/enrol", json!({"code": dep.code})).await;
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body, unknown, "{what}");
        let after = holder_view(&app, dep).await.1;
        assert_eq!(before, after, "{what}: the holder was told");
        assert!(!after.iter().any(|t| t == "code.stale_used"), "{what}");
    }

    // The demo's own dead code is still reported to its holder.
    let (_, _, body) = key_and_body(GenerateAlgorithm::Ed25519);
    let (_, own) = post(&app, "/demo/api/deposit", body).await;
    let own: DepositResponse = serde_json::from_value(own).unwrap();
    assert_eq!(
        post(&app, "/demo/api/enrol", json!({"code": own.code}))
            .await
            .0,
        200
    );
    assert_eq!(
        post(&app, "/demo/api/enrol", json!({"code": own.code}))
            .await
            .0,
        404
    );
    let types = holder_view(&app, &own).await.1;
    assert!(types.iter().any(|t| t == "code.stale_used"), "{types:?}");
}

/// Whatever credentials or fields come with it, a demo deposit lands in the demo's tenant, and
/// another tenant's keys are not touched.
#[tokio::test]
async fn a_demo_deposit_lands_in_the_demo_tenant() {
    let app = spawn_demo().await;
    let (tenant, device, app_key) = app.device().await;
    let theirs = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();

    let (_, _, body) = key_and_body(GenerateAlgorithm::Ed25519);
    let resp = app
        .http
        .post(format!("{}/demo/api/deposit", app.base))
        .bearer_auth(&app_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let dep: DepositResponse = resp.json().await.unwrap();
    let (status, _) = holder_view(&app, &dep).await;
    let deposited = &status.history[0];
    assert_eq!(deposited.event_type, "key.deposited");
    assert_eq!(deposited.data.tenant_id, "ten_demo");
    assert_ne!(deposited.data.tenant_id, tenant);

    // Fields that would name a tenant, a key or a policy are refused, not obeyed.
    for extra in [
        json!({"tenant_id": tenant}),
        json!({"key_id": theirs.id}),
        json!({"policy": {"services": []}}),
    ] {
        let (_, _, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, p) = post(&app, "/demo/api/deposit", body).await;
        assert_eq!(status, 400, "{extra}: {p}");
    }
    assert_untouched(&app, &theirs).await;
}

/// The example app's sign-in knows only the accounts the demo's enrol made: another tenant's
/// key id, holder token or code opens nothing.
#[tokio::test]
async fn challenge_and_verify_know_nothing_of_other_tenants_keys() {
    let app = spawn_demo().await;
    let (_, device, _) = app.device().await;
    let theirs = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    for name in [&theirs.id, &theirs.holder_token, &theirs.code] {
        let (status, _) = post(&app, "/demo/api/challenge", json!({"account": name})).await;
        assert_eq!(status, 404);
        let (status, _) = post(
            &app,
            "/demo/api/verify",
            json!({"challenge_id": name, "signature": "AAAA"}),
        )
        .await;
        assert_eq!(status, 404);
    }
    assert_untouched(&app, &theirs).await;
}

/// The example app's verified handoff through the demo API: preview claims nothing; a key
/// deposited with a SAS commitment gives a pending account that cannot sign in until the
/// authenticator revealed the nonce that opens its commitment and the page activated it; a
/// dispute reaches the holder and forgets the account; other ids are `404`.
#[tokio::test]
async fn preview_sas_activation_and_dispute_through_the_demo_api() {
    use keymaster_core::handoff::{b64url, sas_commitment};

    let app = spawn_demo().await;
    let nd = [7u8; 32];
    let ns = [9u8; 32];
    let (public, private, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
    body["sas_commitment"] = sas_commitment(&nd).into();
    let (status, dep) = post(&app, "/demo/api/deposit", body).await;
    assert_eq!(status, 201, "{dep}");
    let dep_typed: DepositResponse = serde_json::from_value(dep.clone()).unwrap();
    let uri = dep["code_uri"].as_str().unwrap();
    assert!(uri.starts_with(&format!("keymaster:{}?fp=", dep["code"].as_str().unwrap())));

    // The preview answers who deposited it and claims nothing.
    let (status, preview) = post(&app, "/demo/api/preview", json!({"code": uri})).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["label"], "phone");
    assert_eq!(preview["tenant"]["name"], "keymaster demo");
    assert_eq!(preview["fingerprint"], public.fingerprint());
    assert_eq!(preview["origin"]["network"], "127.0.0.0/24");
    let (status, types) = holder_view(&app, &dep_typed).await;
    assert_eq!(status.status, "active");
    assert_eq!(types, ["key.deposited", "key.previewed"]);

    // Enrol by the code URI: pending, with what the page needs to check the key itself.
    let (status, enrolled) = post(&app, "/demo/api/enrol", json!({"code": uri})).await;
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["active"], false);
    assert_eq!(enrolled["sas_commitment"], sas_commitment(&nd));
    let pem = enrolled["public_key_pem"].as_str().unwrap();
    assert_eq!(PublicKey::parse(pem).unwrap().spki_der(), public.spki_der());
    let account = enrolled["account"].clone();
    let (status, p) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, p) = post(&app, "/demo/api/activate", json!({"account": account})).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );

    // The exchange: the page's nonce, the authenticator's reveal, both nonces read back.
    let (status, p) = post(
        &app,
        "/demo/api/sas",
        json!({"account": account, "nonce": "short"}),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, _) = post(
        &app,
        "/demo/api/sas",
        json!({"account": account, "nonce": b64url(&ns)}),
    )
    .await;
    assert_eq!(status, 202);
    let (status, nonces) = post(&app, "/demo/api/sas/nonces", json!({"account": account})).await;
    assert_eq!(status, 200, "{nonces}");
    assert_eq!(
        nonces,
        json!({"service_nonce": b64url(&ns), "device_nonce": null})
    );
    let rid = enrolled["retrieval_id"].as_str().unwrap();
    app.holder(&dep_typed).reveal_sas(rid, &nd).await.unwrap();
    let (_, nonces) = post(&app, "/demo/api/sas/nonces", json!({"account": account})).await;
    assert_eq!(nonces["device_nonce"], b64url(&nd));

    // Activated, the account signs in with the key.
    let (status, _) = post(&app, "/demo/api/activate", json!({"account": account})).await;
    assert_eq!(status, 204);
    let (status, ch) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
    assert_eq!(status, 200, "{ch}");
    let sig = sign(&private, ch["challenge"].as_str().unwrap().as_bytes()).unwrap();
    let (status, ok) = post(
        &app,
        "/demo/api/verify",
        json!({"challenge_id": ch["challenge_id"], "signature": b64(&sig)}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");

    // Unknown accounts are 404 on every call; a bad reason changes nothing.
    for path in ["/demo/api/sas/nonces", "/demo/api/activate"] {
        let (status, _) = post(&app, path, json!({"account": "acct_nobody"})).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = post(
        &app,
        "/demo/api/sas",
        json!({"account": "acct_nobody", "nonce": b64url(&ns)}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        "/demo/api/dispute",
        json!({"account": "acct_nobody", "reason": "sas_mismatch"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        "/demo/api/dispute",
        json!({"account": account, "reason": "because"}),
    )
    .await;
    assert_eq!(status, 400);

    // A dispute reaches the holder, and the account is forgotten.
    let (status, _) = post(
        &app,
        "/demo/api/dispute",
        json!({"account": account, "reason": "sas_mismatch"}),
    )
    .await;
    assert_eq!(status, 204);
    let (_, types) = holder_view(&app, &dep_typed).await;
    assert!(types.contains(&"key.disputed".to_owned()), "{types:?}");
    let (status, _) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &app,
        "/demo/api/dispute",
        json!({"account": account, "reason": "sas_mismatch"}),
    )
    .await;
    assert_eq!(status, 404);
}

/// A key deposited without a SAS commitment (as the demo's first version did, and as the API
/// allows) signs in at once: the new mechanisms are optional.
#[tokio::test]
async fn a_key_without_a_sas_commitment_is_active_at_once() {
    let app = spawn_demo().await;
    let (_, _, body) = key_and_body(GenerateAlgorithm::P256);
    let (_, dep) = post(&app, "/demo/api/deposit", body).await;
    let (status, enrolled) = post(&app, "/demo/api/enrol", json!({"code": dep["code"]})).await;
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["active"], true);
    assert_eq!(enrolled["sas_commitment"], Value::Null);
    let account = enrolled["account"].clone();
    let (status, _) = post(&app, "/demo/api/challenge", json!({"account": account})).await;
    assert_eq!(status, 200);
    let (status, _) = post(&app, "/demo/api/activate", json!({"account": account})).await;
    assert_eq!(status, 204);
}

/// "Enrol by scanning": example-web's request, the authenticator's preview (who asks) and
/// answer, and the long-poll that brings the key to a new account, within a second of the
/// answer; the request answers once.
#[tokio::test]
async fn enrol_by_scanning_through_the_demo_api() {
    let app = spawn_demo().await;
    let (status, req) = post(&app, "/demo/api/request", json!({})).await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_str().unwrap().to_owned();
    let uri = req["code_uri"].as_str().unwrap().to_owned();
    assert_eq!(
        uri,
        format!("keymaster:request:{}", req["code"].as_str().unwrap())
    );

    let (status, p) = post(&app, "/demo/api/request/preview", json!({"code": uri})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["request_id"], id.as_str());
    assert_eq!(p["service"]["name"], "example-web");
    assert_eq!(p["service"]["domains"], json!(["example-web.localhost"]));
    assert_eq!(p["label"], "example-web sign-in");

    // Nothing yet: a wait of 0 says pending.
    let (status, w) = post(&app, "/demo/api/request/wait", json!({"request_id": id})).await;
    assert_eq!(
        (status, w["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    assert_eq!(w["enrolled"], Value::Null);

    // The example app waits; the authenticator answers meanwhile.
    let waiter = {
        let app_base = app.base.clone();
        let http = app.http.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let resp = http
                .post(format!("{app_base}/demo/api/request/wait"))
                .json(&json!({"request_id": id, "wait": 20}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            (status, body, std::time::Instant::now())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (public, private, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
    body["request"] = json!(uri);
    let (status, dep) = post(&app, "/demo/api/deposit", body.clone()).await;
    let answered = std::time::Instant::now();
    assert_eq!(status, 201, "{dep}");
    assert_eq!(dep["request_id"], id.as_str());
    assert!(dep.get("code").is_none_or(Value::is_null), "{dep}");
    let (status, w, woke) = waiter.await.unwrap();
    assert_eq!(status, 200, "{w}");
    let after = woke.saturating_duration_since(answered);
    assert!(
        after < std::time::Duration::from_secs(1),
        "the long-poll answered {after:?} after the deposit"
    );
    assert_eq!(w["status"], "fulfilled");
    let enrolled = &w["enrolled"];
    assert_eq!(enrolled["fingerprint"], public.fingerprint());
    assert_eq!(enrolled["service"], "example-web");
    assert_eq!(enrolled["active"], true);

    // The account signs in with the key that answered.
    let (status, ch) = post(
        &app,
        "/demo/api/challenge",
        json!({"account": enrolled["account"]}),
    )
    .await;
    assert_eq!(status, 200, "{ch}");
    let sig = sign(&private, ch["challenge"].as_str().unwrap().as_bytes()).unwrap();
    let (status, ok) = post(
        &app,
        "/demo/api/verify",
        json!({"challenge_id": ch["challenge_id"], "signature": b64(&sig)}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");

    // The request answers once; the key came once.
    let (_, _, mut second) = key_and_body(GenerateAlgorithm::Ed25519);
    second["request"] = json!(uri);
    let (status, p) = post(&app, "/demo/api/deposit", second).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("request_fulfilled"))
    );
    let (status, w) = post(&app, "/demo/api/request/wait", json!({"request_id": id})).await;
    assert_eq!(status, 200);
    assert_eq!(w["status"], "fulfilled");
    assert_eq!(w["enrolled"], Value::Null);
    let (status, _) = post(&app, "/demo/api/request/preview", json!({"code": uri})).await;
    assert_eq!(status, 404);
}

/// Bad input to the scanning endpoints is refused with the API's codes.
#[tokio::test]
async fn enrol_by_scanning_refuses_bad_input() {
    let app = spawn_demo().await;
    let (_, req) = post(&app, "/demo/api/request", json!({})).await;
    let id = req["id"].as_str().unwrap();
    let (status, p) = post(
        &app,
        "/demo/api/request/wait",
        json!({"request_id": id, "wait": 26}),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, _) = post(
        &app,
        "/demo/api/request/wait",
        json!({"request_id": "req_0123456789abcdef0123456789abcdef"}),
    )
    .await;
    assert_eq!(status, 404);
    // A mistyped code: one digit changed.
    let code = req["code"].as_str().unwrap();
    let mut typo: Vec<u8> = code.bytes().collect();
    typo[3] = if typo[3] == b'9' { b'0' } else { typo[3] + 1 };
    let typo = String::from_utf8(typo).unwrap();
    let (status, p) = post(&app, "/demo/api/request/preview", json!({"code": typo})).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_code"))
    );
    let (_, _, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
    body["request"] = json!(typo);
    let (status, p) = post(&app, "/demo/api/deposit", body).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_code"))
    );
    // Unknown fields are refused.
    let (status, _) = post(
        &app,
        "/demo/api/request/preview",
        json!({"code": code, "x": 1}),
    )
    .await;
    assert_eq!(status, 400);
    // The request is still there to answer.
    let (status, p) = post(&app, "/demo/api/request/preview", json!({"code": code})).await;
    assert_eq!(status, 200, "{p}");
}

/// Another service's request is nothing to the demo: its preview is 404, an answer through
/// the demo is refused and leaves it pending, and its id reads 404; the service itself then
/// gets its answer from a device of its own.
#[tokio::test]
async fn enrol_by_scanning_is_confined_to_the_demo_service() {
    let app = spawn_demo().await;
    let (_, service, _) = app.service("other-web", &["other.example"], &[]).await;
    let req = service
        .request(&keymaster_client::wire::NewEnrolmentRequest::default())
        .await
        .unwrap();
    let (status, _) = post(
        &app,
        "/demo/api/request/preview",
        json!({"code": req.code_uri}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, _, mut body) = key_and_body(GenerateAlgorithm::Ed25519);
    body["request"] = json!(req.code_uri);
    let (status, p) = post(&app, "/demo/api/deposit", body).await;
    assert_eq!(status, 400, "{p}");
    let (status, _) = post(
        &app,
        "/demo/api/request/wait",
        json!({"request_id": req.id}),
    )
    .await;
    assert_eq!(status, 404);
    let st = service
        .request_status(&req.id, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(st.status, "pending");
    let (_, device, _) = app.device().await;
    let dep = device
        .answer(&req.code, &deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    assert_eq!(dep.request_id.as_deref(), Some(req.id.as_str()));
    // And the demo's own request is not the other service's to read.
    let (_, own) = post(&app, "/demo/api/request", json!({})).await;
    let err = service
        .request_status(own["id"].as_str().unwrap(), std::time::Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}
