//! Input that spoofs or confuses: labels with bidi controls and invisible characters, and
//! methods that a path does not serve.

use keymaster_client::wire::DepositRequest;

use crate::helpers::*;

fn labelled(label: &str) -> DepositRequest {
    DepositRequest {
        public_key: Some(ssh_ed25519()),
        label: Some(label.into()),
        ..DepositRequest::default()
    }
}

#[tokio::test]
async fn labels_with_bidi_controls_or_invisible_characters_are_refused_without_an_echo() {
    let app = spawn_app().await;
    let (_, _, app_key) = app.device().await;
    for (label, names) in [
        // "github.com" shown as "moc.buhtig" (RIGHT-TO-LEFT OVERRIDE).
        ("\u{202E}moc.buhtig", "U+202E"),
        ("git\u{200B}hub.com", "U+200B"),
        ("github.com\u{FEFF}", "U+FEFF"),
        ("git\u{2066}hub", "U+2066"),
    ] {
        let body = serde_json::to_string(&labelled(label)).unwrap();
        let resp = app.post_raw("/v1/keys", &app_key, body).await;
        let problem = assert_raw_problem(resp, 400, "invalid_request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("label"), "{detail}");
        assert!(detail.contains(names), "{detail} should name {names}");
        assert!(!detail.contains("hub"), "the label is echoed: {detail}");
    }

    // The joiners stay: an emoji ZWJ sequence and a ZWNJ as Persian writes it.
    let (_, device, _) = app.device().await;
    let (_, service, _) = app.service("example-web", &[], &[]).await;
    for label in [
        "laptop \u{1F469}\u{200D}\u{1F4BB}",
        "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
    ] {
        let dep = device.deposit(&labelled(label)).await.unwrap();
        let got = service.retrieve(&retrieval(&dep.code)).await.unwrap();
        assert_eq!(got.label.as_deref(), Some(label));
    }
}

#[tokio::test]
async fn a_method_a_path_does_not_serve_is_405_with_allow() {
    let app = spawn_app().await;
    let (_, device, _) = app.device().await;
    let dep = device
        .deposit(&deposit_request(ssh_ed25519()))
        .await
        .unwrap();
    let events = format!("/v1/keys/{}/events", dep.id);
    for (path, allowed) in [
        ("/v1/keys", "POST"),
        ("/v1/retrievals", "POST"),
        (events.as_str(), "GET"),
        ("/healthz", "GET"),
    ] {
        for method in ["OPTIONS", "PUT"] {
            let resp = app
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", app.base),
                )
                .bearer_auth(&dep.holder_token)
                .send()
                .await
                .unwrap();
            let allow = resp
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow"))
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                allow.split(',').any(|m| m.trim() == allowed),
                "{method} {path}: Allow: {allow}"
            );
            let problem = assert_raw_problem(resp, 405, "method_not_allowed").await;
            assert_eq!(problem["status"], 405, "{method} {path}");
        }
    }
}
