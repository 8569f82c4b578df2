//! Input that spoofs or confuses: labels with bidi controls and invisible characters, and
//! methods that a path does not serve.

use crate::helpers::*;

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
