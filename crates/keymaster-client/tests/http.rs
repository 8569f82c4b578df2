//! The SDK against a canned HTTP server on `127.0.0.1:0`: request shape (path, method, bearer
//! token, body), the mapping of answers to `Error`, and the event stream over a real socket.

use std::time::Duration;

use futures::StreamExt;
use keymaster_client::wire::{
    CreateTenantRequest, DepositRequest, DisputeReason, RetrievalRequest,
};
use keymaster_client::{AdminClient, DeviceClient, Error, HolderClient, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A canned answer: status line, extra headers, body chunks written with a pause between them.
struct Canned {
    status: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    chunks: Vec<String>,
}

impl Canned {
    fn json(status: &'static str, content_type: &'static str, body: &str) -> Self {
        Canned {
            status,
            headers: vec![("content-type", content_type)],
            chunks: vec![body.to_owned()],
        }
    }
}

/// Serves `canned` to one connection and returns the base URL and the request it received
/// (head and body, as text).
async fn serve_once(canned: Canned) -> (String, JoinHandle<String>) {
    let (base, task) = serve_each(vec![canned]).await;
    (
        base,
        tokio::spawn(async move { task.await.unwrap().remove(0) }),
    )
}

/// Serves each of `answers` to one connection in turn and returns the base URL and the
/// requests received, in order.
async fn serve_each(answers: Vec<Canned>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut requests = Vec::new();
        for canned in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as many body bytes as Content-Length says.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let mut head = format!("HTTP/1.1 {}\r\nconnection: close\r\n", canned.status);
            for (name, value) in &canned.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let streaming = canned.chunks.len() > 1;
            if !streaming {
                let len = canned.chunks.first().map_or(0, String::len);
                head.push_str(&format!("content-length: {len}\r\n"));
            }
            head.push_str("\r\n");
            socket.write_all(head.as_bytes()).await.unwrap();
            for chunk in &canned.chunks {
                socket.write_all(chunk.as_bytes()).await.unwrap();
                socket.flush().await.unwrap();
                if streaming {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            socket.shutdown().await.ok();
            requests.push(String::from_utf8(request).unwrap());
        }
        requests
    });
    (base, task)
}

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn admin_call_sends_bearer_token_and_json_and_decodes_the_answer() {
    let (base, request) = serve_once(Canned::json(
        "201 Created",
        "application/json",
        r#"{"id":"t1","name":"acme","webhook_secret":"whsec_x"}"#,
    ))
    .await;
    let admin = AdminClient::new(&base, "admintok").unwrap();
    let created = admin
        .create_tenant(&CreateTenantRequest {
            name: "acme".into(),
            webhook_url: None,
        })
        .await
        .unwrap();
    assert_eq!(created.id, "t1");
    assert_eq!(created.webhook_secret, "whsec_x");
    let request = request.await.unwrap();
    assert!(
        request.starts_with("POST /v1/admin/tenants HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request
        .to_ascii_lowercase()
        .contains("authorization: bearer admintok\r\n"));
    assert!(request.ends_with(r#"{"name":"acme"}"#), "{request}");
}

#[tokio::test]
async fn base_url_path_is_kept_and_ids_are_percent_encoded() {
    let (base, request) = serve_once(Canned::json("204 No Content", "text/plain", "")).await;
    let admin = AdminClient::new(&format!("{base}/km/"), "t").unwrap();
    admin.delete_service("a/b c").await.unwrap();
    let request = request.await.unwrap();
    assert!(
        request.starts_with("DELETE /km/v1/admin/services/a%2Fb%20c HTTP/1.1"),
        "{request}"
    );
}

#[tokio::test]
async fn audit_sends_limit_and_before_as_query() {
    let (base, request) = serve_once(Canned::json(
        "200 OK",
        "application/json",
        r#"{"entries":[]}"#,
    ))
    .await;
    let page = AdminClient::new(&base, "t")
        .unwrap()
        .audit(Some(5), Some(42))
        .await
        .unwrap();
    assert!(page.entries.is_empty());
    assert!(request
        .await
        .unwrap()
        .starts_with("GET /v1/admin/audit?limit=5&before=42 HTTP/1.1"));
}

#[tokio::test]
async fn a_problem_body_becomes_error_api_with_retry_after() {
    let mut canned = Canned::json(
        "429 Too Many Requests",
        PROBLEM,
        r#"{"type":"about:blank","title":"Too many failed retrievals","status":429,"code":"rate_limited"}"#,
    );
    canned.headers.push(("retry-after", "17"));
    let (base, _) = serve_once(canned).await;
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    let err = service
        .retrieve(&RetrievalRequest {
            code: "4729-1047-5518-2035".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.code(), Some("rate_limited"));
    match err {
        Error::Api {
            retry_after,
            problem,
            ..
        } => {
            assert_eq!(retry_after, Some(17));
            assert_eq!(problem.title, "Too many failed retrievals");
        }
        other => panic!("expected Error::Api, got {other:?}"),
    }
}

#[tokio::test]
async fn a_problem_without_type_defaults_to_about_blank() {
    let (base, _) = serve_once(Canned::json(
        "404 Not Found",
        PROBLEM,
        r#"{"title":"Not found","status":404,"code":"not_found","detail":"no such key"}"#,
    ))
    .await;
    let err = HolderClient::new(&base, "k1", "kmh_x")
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"));
    assert_eq!(err.to_string(), "Not found (not_found): no such key");
    match err {
        Error::Api {
            problem,
            retry_after,
            ..
        } => {
            assert_eq!(problem.problem_type, "about:blank");
            assert_eq!(retry_after, None);
        }
        other => panic!("expected Error::Api, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_without_a_problem_body_is_a_decode_error() {
    let (base, _) = serve_once(Canned::json(
        "502 Bad Gateway",
        "text/html",
        "<html>bad gateway</html>",
    ))
    .await;
    let err = DeviceClient::new(&base, "kma_x")
        .unwrap()
        .deposit(&DepositRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(err.status(), None);
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn a_success_with_an_unexpected_body_is_a_decode_error() {
    let (base, _) = serve_once(Canned::json(
        "201 Created",
        "application/json",
        r#"{"id":1}"#,
    ))
    .await;
    let err = AdminClient::new(&base, "t")
        .unwrap()
        .create_app_key("t1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    // Bind and drop, so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = AdminClient::new(&format!("http://127.0.0.1:{port}"), "t")
        .unwrap()
        .audit(None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[test]
fn a_bad_base_url_is_refused_at_construction() {
    assert!(AdminClient::new("not a url", "t").is_err());
    assert!(AdminClient::new("ftp://example.net", "t").is_err());
}

#[test]
fn debug_output_never_shows_the_token() {
    let client = ServiceClient::new("http://127.0.0.1:1", "kms_secret").unwrap();
    assert!(!format!("{client:?}").contains("kms_secret"));
}

fn event_json(id: &str, kind: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"{kind}","timestamp":"2026-01-02T03:04:05Z","data":{{"key_id":"k1","tenant_id":"t1","label":"laptop","service":{{"id":"s1","name":"ssh-host"}}}}}}"#
    )
}

#[tokio::test]
async fn events_are_parsed_from_a_chunked_stream_until_the_server_closes() {
    let first = format!(
        "id: evt_1\nevent: key.deposited\ndata: {}\n\n",
        event_json("evt_1", "key.deposited")
    );
    let second = format!(
        "id: evt_2\nevent: key.retrieved\ndata: {}\n\n",
        event_json("evt_2", "key.retrieved")
    );
    // Split the second event mid-line, with a keep-alive comment between.
    let (a, b) = second.split_at(25);
    let canned = Canned {
        status: "200 OK",
        headers: vec![("content-type", "text/event-stream")],
        chunks: vec![first, ": keep-alive\n\n".into(), a.into(), b.into()],
    };
    let (base, request) = serve_once(canned).await;
    let holder = HolderClient::new(&base, "k1", "kmh_tok").unwrap();
    let events: Vec<_> = holder.events(Some("evt_0")).collect().await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, "evt_1");
    assert_eq!(events[1].event_type, "key.retrieved");
    assert_eq!(events[1].data.service.as_ref().unwrap().name, "ssh-host");
    let request = request.await.unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with("get /v1/keys/k1/events http/1.1"),
        "{request}"
    );
    assert!(request.contains("last-event-id: evt_0\r\n"), "{request}");
    assert!(
        request.contains("accept: text/event-stream\r\n"),
        "{request}"
    );
    assert!(
        request.contains("authorization: bearer kmh_tok\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_refused_event_stream_yields_the_error_once() {
    let (base, _) = serve_once(Canned::json(
        "401 Unauthorized",
        PROBLEM,
        r#"{"title":"Unauthorized","status":401,"code":"unauthorized"}"#,
    ))
    .await;
    let items: Vec<_> = HolderClient::new(&base, "k1", "bad")
        .unwrap()
        .events(None)
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().code(), Some("unauthorized"));
}

#[tokio::test]
async fn an_unreadable_event_is_an_error_item_and_the_stream_goes_on() {
    let canned = Canned {
        status: "200 OK",
        headers: vec![("content-type", "text/event-stream")],
        chunks: vec![
            "data: {not json}\n\n".into(),
            format!("data: {}\n\n", event_json("evt_3", "key.revoked")),
        ],
    };
    let (base, _) = serve_once(canned).await;
    let items: Vec<_> = HolderClient::new(&base, "k1", "kmh")
        .unwrap()
        .events(None)
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert!(matches!(items[0], Err(Error::Decode(_))));
    assert_eq!(items[1].as_ref().unwrap().event_type, "key.revoked");
}

#[tokio::test]
async fn a_mistyped_code_is_refused_offline_without_a_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    let err = service
        .retrieve(&RetrievalRequest {
            code: "4729-1047-5518-2036".into(), // last digit mistyped
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCode(_)), "{err:?}");
    assert_eq!(err.code(), Some("invalid_code"));
    assert_eq!(err.status(), None);
    // Nobody connected.
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a request was sent");
}

/// A public key made for a test, and a code URI that commits to it.
fn key_and_uri() -> (keymaster_core::key::PublicKey, String) {
    use keymaster_core::key::{generate, GenerateAlgorithm};
    let (key, _private) = generate(GenerateAlgorithm::Ed25519, &mut rand::thread_rng()).unwrap();
    let code = keymaster_core::code::Code::parse("4729-1047-5518-2035").unwrap();
    let uri = keymaster_core::handoff::code_uri(&code, key.spki_der());
    (key, uri)
}

/// A retrieval body handing over `key`, with every form and fingerprint consistent with it.
fn retrieval_of(key: &keymaster_core::key::PublicKey) -> serde_json::Value {
    serde_json::json!({
        "retrieval_id": "ret_1",
        "key_id": "key_1",
        "kind": "public",
        "algorithm": "ed25519",
        "public_key_pem": key.to_pem(),
        "openssh": key.to_openssh(),
        "jwk": key.to_jwk(),
        "fingerprint": key.fingerprint(),
        "ssh_fingerprint": key.ssh_fingerprint(),
        "jwk_thumbprint": key.jwk_thumbprint(),
        "label": "laptop",
        "proven": false,
        "confirm_by": null,
        "sas_commitment": null
    })
}

#[tokio::test]
async fn the_key_a_code_uri_commits_to_is_returned() {
    let (key, uri) = key_and_uri();
    let (base, requests) = serve_each(vec![Canned::json(
        "200 OK",
        "application/json",
        &retrieval_of(&key).to_string(),
    )])
    .await;
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    let retrieved = service
        .retrieve(&RetrievalRequest {
            code: uri.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        retrieved.public_key_pem.as_deref(),
        Some(key.to_pem().as_str())
    );
    let requests = requests.await.unwrap();
    assert!(requests[0].starts_with("POST /v1/retrievals HTTP/1.1"));
    // The URI goes to the server as given: it uses the code and ignores fp.
    assert!(
        requests[0].contains(&format!(r#""code":"{uri}""#)),
        "{}",
        requests[0]
    );
}

#[tokio::test]
async fn a_swapped_key_is_refused_as_key_mismatch_and_disputed() {
    let (_deposited, uri) = key_and_uri();
    let (swapped, _) = key_and_uri();
    // A key master in the middle hands over another key, with fingerprints to match it.
    let (base, requests) = serve_each(vec![
        Canned::json(
            "200 OK",
            "application/json",
            &retrieval_of(&swapped).to_string(),
        ),
        Canned::json("204 No Content", "text/plain", ""),
    ])
    .await;
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    let err = service
        .retrieve(&RetrievalRequest {
            code: uri,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::KeyMismatch { retrieval_id, disputed: true } if retrieval_id == "ret_1"),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("key_mismatch"));
    let requests = requests.await.unwrap();
    assert!(
        requests[1].starts_with("POST /v1/retrievals/ret_1/dispute HTTP/1.1"),
        "{}",
        requests[1]
    );
    assert!(
        requests[1].ends_with(r#"{"reason":"key_mismatch"}"#),
        "{}",
        requests[1]
    );
}

#[tokio::test]
async fn a_swapped_openssh_or_jwk_form_is_refused_even_with_the_right_pem() {
    let (deposited, uri) = key_and_uri();
    let (swapped, _) = key_and_uri();
    for (field, value) in [
        ("openssh", serde_json::json!(swapped.to_openssh())),
        ("jwk", swapped.to_jwk()),
    ] {
        let mut body = retrieval_of(&deposited);
        body[field] = value;
        let (base, requests) = serve_each(vec![
            Canned::json("200 OK", "application/json", &body.to_string()),
            Canned::json("204 No Content", "text/plain", ""),
        ])
        .await;
        let err = ServiceClient::new(&base, "kms_x")
            .unwrap()
            .retrieve(&RetrievalRequest {
                code: uri.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("key_mismatch"), "{field}: {err:?}");
        assert!(requests.await.unwrap()[1].contains("/dispute"), "{field}");
    }
}

#[tokio::test]
async fn a_mismatch_is_still_refused_when_the_dispute_fails() {
    let (_deposited, uri) = key_and_uri();
    let (swapped, _) = key_and_uri();
    let (base, _requests) = serve_each(vec![
        Canned::json(
            "200 OK",
            "application/json",
            &retrieval_of(&swapped).to_string(),
        ),
        Canned::json(
            "404 Not Found",
            PROBLEM,
            r#"{"type":"about:blank","title":"Not Found","status":404,"code":"not_found"}"#,
        ),
    ])
    .await;
    let err = ServiceClient::new(&base, "kms_x")
        .unwrap()
        .retrieve(&RetrievalRequest {
            code: uri,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyMismatch {
                disputed: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn preview_and_dispute_send_their_requests() {
    let (base, requests) = serve_each(vec![
        Canned::json(
            "200 OK",
            "application/json",
            r#"{"key_id":"key_1","label":"laptop","kind":"public","algorithm":"ed25519",
                "fingerprint":"SHA256:x","tenant":{"id":"ten_1","name":"Acme"},
                "deposited_at":"2026-01-01T00:00:00Z","origin":{"network":"203.0.113.0/24"},
                "proven":true}"#,
        ),
        Canned::json("204 No Content", "text/plain", ""),
    ])
    .await;
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    let preview = service
        .preview(&RetrievalRequest {
            code: "4729-1047-5518-2035".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(preview.tenant.name, "Acme");
    assert_eq!(preview.origin.network.as_deref(), Some("203.0.113.0/24"));
    service
        .dispute("ret_9", DisputeReason::NotRequested)
        .await
        .unwrap();
    let requests = requests.await.unwrap();
    assert!(requests[0].starts_with("POST /v1/retrievals/preview HTTP/1.1"));
    assert!(requests[1].starts_with("POST /v1/retrievals/ret_9/dispute HTTP/1.1"));
    assert!(requests[1].ends_with(r#"{"reason":"not_requested"}"#));
}

#[tokio::test]
async fn a_malformed_code_uri_is_refused_offline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    for code in [
        "keymaster:4729104755182035?fp=short",
        "keymaster:request:4729104755182035",
    ] {
        let err = service
            .retrieve(&RetrievalRequest {
                code: code.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidCodeUri(_)), "{code}: {err:?}");
        assert_eq!(err.code(), Some("invalid_code"));
    }
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a request was sent");
}

#[tokio::test]
async fn the_sas_calls_send_their_nonces_in_base64url() {
    let (base, requests) = serve_each(vec![
        Canned::json("202 Accepted", "text/plain", ""),
        Canned::json(
            "200 OK",
            "application/json",
            r#"{"service_nonce":"AQ","device_nonce":null}"#,
        ),
        Canned::json("204 No Content", "text/plain", ""),
    ])
    .await;
    let service = ServiceClient::new(&base, "kms_x").unwrap();
    service.request_sas("ret_1", &[0xfb; 32]).await.unwrap();
    let nonces = service.sas_nonces("ret_1").await.unwrap();
    assert_eq!(nonces.service_nonce.as_deref(), Some("AQ"));
    assert_eq!(nonces.device_nonce, None);
    HolderClient::new(&base, "key_1", "kmh_x")
        .unwrap()
        .reveal_sas("ret_1", &[0xfb; 32])
        .await
        .unwrap();
    let requests = requests.await.unwrap();
    // 32 bytes of 0xfb: unpadded base64url uses `-` and `_`, never `+`, `/` or `=`.
    let nonce = format!("{}-_s", "-_v7".repeat(10));
    assert!(requests[0].starts_with("POST /v1/retrievals/ret_1/sas HTTP/1.1"));
    assert!(
        requests[0].ends_with(&format!(r#"{{"nonce":"{nonce}"}}"#)),
        "{}",
        requests[0]
    );
    assert!(requests[1].starts_with("GET /v1/retrievals/ret_1/sas HTTP/1.1"));
    assert!(requests[2].starts_with("POST /v1/keys/key_1/sas HTTP/1.1"));
    assert!(
        requests[2].ends_with(&format!(r#"{{"retrieval_id":"ret_1","nonce":"{nonce}"}}"#)),
        "{}",
        requests[2]
    );
}
