//! The verified handoff from the command line: `service fetch` given the code URI of a QR code
//! refuses a key that a party in the middle swapped (here a proxy between the command and the
//! key master that rewrites every form and fingerprint of the key consistently), and so does
//! the Rust SDK; `service fetch --verify` refuses a retrieval whose SAS commitment a proxy
//! swapped, and shows other digits than the device for a swapped key; `service fetch
//! --preview` asks before claiming, and `--verify` on both ends shows the same SAS.

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Stdio};

use keymaster_core::handoff::sas_commitment;
use keymaster_core::key::{generate, GenerateAlgorithm, PublicKey};
use serde_json::Value;

use super::{read_request, Setup};

/// Puts `other` in place of the key of a retrieval body, its forms and fingerprints all
/// consistent with `other`.
fn swap_key(retrieval: &mut Value, other: &PublicKey) {
    retrieval["public_key_pem"] = other.to_pem().into();
    retrieval["openssh"] = other.to_openssh().into();
    retrieval["jwk"] = other.to_jwk();
    retrieval["fingerprint"] = other.fingerprint().into();
    retrieval["ssh_fingerprint"] = other.ssh_fingerprint().into();
    retrieval["jwk_thumbprint"] = other.jwk_thumbprint().into();
}

/// A proxy that swaps the key of every retrieval for `other` ([`tampering_proxy`]).
fn swapping_proxy(upstream: &str, other: PublicKey) -> String {
    tampering_proxy(upstream, move |retrieval| swap_key(retrieval, &other))
}

/// A proxy in front of `upstream` (`http://host:port`) on a thread, answering one connection
/// at a time. It applies `change` to the body of every `200` answer to `POST /v1/retrievals`
/// and passes everything else through. Returns the proxy's base URL.
fn tampering_proxy(upstream: &str, change: impl Fn(&mut Value) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let request = read_request(&mut client);
            // `read_request` gives the head's lines (each ending in CRLF) then the body.
            let split = request.rfind("\r\n").map_or(0, |at| at + 2);
            let (head, body) = request.split_at(split);
            let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
            let request_line = lines.next().unwrap_or_default().to_owned();
            let mut forwarded = format!("{request_line}\r\n");
            for line in lines {
                let name = line
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !matches!(name.as_str(), "connection" | "accept-encoding") {
                    forwarded.push_str(&format!("{line}\r\n"));
                }
            }
            forwarded.push_str("connection: close\r\n\r\n");
            forwarded.push_str(body);
            let mut server = TcpStream::connect(&upstream).unwrap();
            server.write_all(forwarded.as_bytes()).unwrap();
            let mut answer = Vec::new();
            server.read_to_end(&mut answer).unwrap();
            let answer = String::from_utf8(answer).unwrap();
            let (answer_head, answer_body) = answer.split_once("\r\n\r\n").unwrap();
            let swap = request_line.starts_with("POST /v1/retrievals ")
                && answer_head.starts_with("HTTP/1.1 200");
            let answer = if swap {
                let mut retrieval: Value = serde_json::from_str(answer_body).unwrap();
                change(&mut retrieval);
                let body = retrieval.to_string();
                let mut head = String::new();
                for line in answer_head.split("\r\n") {
                    let name = line
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if !matches!(name.as_str(), "content-length" | "connection") {
                        head.push_str(&format!("{line}\r\n"));
                    }
                }
                format!(
                    "{head}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                answer
            };
            let _ = client.write_all(answer.as_bytes());
        }
    });
    url
}

#[test]
fn a_key_swapped_in_the_middle_is_refused_and_disputed() {
    let s = Setup::new();
    let deposit = s.device(&["device", "add", "--label", "laptop", "--json"]);
    let uri = deposit["code_uri"].as_str().unwrap();
    let (other, _private) = generate(GenerateAlgorithm::Ed25519, &mut rand::thread_rng()).unwrap();
    let proxy = swapping_proxy(&s.server.url, other);

    let out = s.server.run(
        &["service", "fetch", uri, "--format", "openssh"],
        &[
            ("KEYMASTER_SERVICE_KEY", s.service_key.as_str()),
            ("KEYMASTER_URL", proxy.as_str()),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the swapped key was accepted");
    assert!(out.stdout.is_empty(), "the swapped key reached stdout");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.contains("not the one the code commits to"),
        "{stderr}"
    );

    // The holder learns of it.
    assert_eq!(disputes(&s, "laptop"), ["key_mismatch"]);
}

#[test]
fn a_code_uri_fetches_its_key_and_preview_asks_first() {
    let s = Setup::new();
    let deposit = s.device(&["device", "add", "--label", "phone", "--json"]);
    let uri = deposit["code_uri"].as_str().unwrap();
    let service = [("KEYMASTER_SERVICE_KEY", s.service_key.as_str())];

    // Without a terminal, --preview shows the key's origin but cannot ask: nothing is claimed.
    let out = s
        .server
        .run(&["service", "fetch", uri, "--preview"], &service, b"y\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "claimed without asking");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("\"phone\"") && stderr.contains("acme"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
    let status = s.device(&["device", "status", "phone", "--json"]);
    assert_eq!(status["status"], "active", "the preview claimed the key");

    // With --yes it claims, and the key checked against the URI is printed.
    let pem = s.fetch(&["service", "fetch", uri, "--preview", "--yes"]);
    let key = PublicKey::parse(&pem).unwrap();
    assert_eq!(key.fingerprint(), deposit["fingerprint"].as_str().unwrap());
}

/// The `compare: 123 456` line of `text`, if any.
fn compare_line(text: &str) -> Option<String> {
    text.lines()
        .find(|line| line.starts_with("compare: "))
        .map(str::to_owned)
}

/// Starts `device add --label LABEL --verify` and reads its code off its stdout, as a person
/// would read it off the device's screen; returns the process and the rest of its stdout.
fn device_add_verify(s: &Setup, label: &str) -> (Child, String, Lines<BufReader<ChildStdout>>) {
    let mut device = s
        .server
        .command(
            &["device", "add", "--label", label, "--verify"],
            &[("KEYMASTER_APP_KEY", s.app_key.as_str())],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(device.stdout.take().unwrap()).lines();
    let code = loop {
        let line = lines
            .next()
            .expect("device add ended before its code")
            .unwrap();
        if let Some(code) = line.strip_prefix("code: ") {
            break code.to_owned();
        }
    };
    (device, code, lines)
}

/// Waits for `device add --verify` and returns its `compare:` line.
fn device_compare_line(mut device: Child, lines: Lines<BufReader<ChildStdout>>) -> String {
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = device.wait().unwrap();
    assert!(status.success(), "device add --verify failed: {rest:?}");
    compare_line(&rest.join("\n")).expect("no compare line from the device")
}

/// The reasons of the `key.disputed` events in the holder's history of the key `label`.
fn disputes(s: &Setup, label: &str) -> Vec<String> {
    let status = s.device(&["device", "status", label, "--json"]);
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "key.disputed")
        .map(|event| event["data"]["reason"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn device_and_service_show_the_same_sas_with_verify() {
    let s = Setup::new();
    let (device, code, lines) = device_add_verify(&s, "typed");

    let out = s.server.run(
        &["service", "fetch", &code, "--verify", "--timeout", "30s"],
        &[("KEYMASTER_SERVICE_KEY", s.service_key.as_str())],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let service_sas = compare_line(&stderr).expect("no compare line from the service");
    PublicKey::parse(&String::from_utf8(out.stdout).unwrap()).expect("no key on stdout");

    let device_sas = device_compare_line(device, lines);
    assert_eq!(device_sas, service_sas);
    assert_eq!(device_sas.len(), "compare: 123 456".len());
    assert!(disputes(&s, "typed").is_empty());
}

/// A party in the middle replaces the retrieval's SAS commitment with one of its own, so that
/// it could choose the nonce the service sees. The device's real nonce does not open it: the
/// service refuses the key (non-zero exit, nothing on stdout) and disputes the retrieval, and
/// the holder receives `key.disputed`.
#[test]
fn a_swapped_sas_commitment_is_refused_and_disputed_with_verify() {
    let s = Setup::new();
    let (device, code, lines) = device_add_verify(&s, "typed");
    let forged = sas_commitment(&rand::random());
    let proxy = tampering_proxy(&s.server.url, move |retrieval| {
        assert!(retrieval["sas_commitment"].is_string(), "{retrieval}");
        retrieval["sas_commitment"] = forged.clone().into();
    });

    let out = s.server.run(
        &["service", "fetch", &code, "--verify", "--timeout", "30s"],
        &[
            ("KEYMASTER_SERVICE_KEY", s.service_key.as_str()),
            ("KEYMASTER_URL", proxy.as_str()),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a swapped commitment was accepted");
    assert!(out.stdout.is_empty(), "the key reached stdout");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.contains("key_mismatch") && stderr.contains("does not open its commitment"),
        "{stderr}"
    );
    assert!(compare_line(&stderr).is_none(), "digits shown: {stderr}");
    // The device revealed its nonce (the key master holds the real commitment) and ended.
    device_compare_line(device, lines);
    assert_eq!(disputes(&s, "typed"), ["sas_mismatch"]);
}

/// A party in the middle swaps the key of a typed code's retrieval (no commitment to check it
/// against): the service computes the SAS over the key it received, so it shows other digits
/// than the device, which the person sees. (The chance that they agree is 10⁻⁶.)
#[test]
fn a_swapped_key_shows_other_digits_than_the_device_with_verify() {
    let s = Setup::new();
    let (device, code, lines) = device_add_verify(&s, "typed");
    let (other, _private) = generate(GenerateAlgorithm::Ed25519, &mut rand::thread_rng()).unwrap();
    let proxy = swapping_proxy(&s.server.url, other.clone());

    let out = s.server.run(
        &["service", "fetch", &code, "--verify", "--timeout", "30s"],
        &[
            ("KEYMASTER_SERVICE_KEY", s.service_key.as_str()),
            ("KEYMASTER_URL", proxy.as_str()),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let service_sas = compare_line(&stderr).expect("no compare line from the service");
    let printed = PublicKey::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.fingerprint(), other.fingerprint());
    let device_sas = device_compare_line(device, lines);
    assert_ne!(
        device_sas, service_sas,
        "the swapped key gave the device's digits"
    );
}

/// The Rust SDK given the code URI refuses a key that a proxy swapped (`KeyMismatch`, the key
/// never returned) and disputes the retrieval, so that the holder receives `key.disputed`.
#[test]
fn the_sdk_refuses_and_disputes_a_key_swapped_in_the_middle() {
    let s = Setup::new();
    let deposit = s.device(&["device", "add", "--label", "laptop", "--json"]);
    let uri = deposit["code_uri"].as_str().unwrap().to_owned();
    let (other, _private) = generate(GenerateAlgorithm::Ed25519, &mut rand::thread_rng()).unwrap();
    let proxy = swapping_proxy(&s.server.url, other);

    let service = keymaster_client::ServiceClient::new(&proxy, &s.service_key).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(service.retrieve(&keymaster_client::wire::RetrievalRequest {
            code: uri,
            ..Default::default()
        }))
        .unwrap_err();
    assert!(
        matches!(
            err,
            keymaster_client::Error::KeyMismatch { disputed: true, .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("key_mismatch"));
    assert_eq!(disputes(&s, "laptop"), ["key_mismatch"]);
}

/// The Rust SDK's `verify_sas` refuses a retrieval whose SAS commitment a proxy replaced: the
/// device's real nonce does not open it, so the answer is `SasMismatch` (no digits) and the
/// holder receives `key.disputed` with `sas_mismatch`.
#[test]
fn the_sdk_refuses_and_disputes_a_swapped_sas_commitment() {
    let s = Setup::new();
    let (device, code, lines) = device_add_verify(&s, "typed");
    let forged = sas_commitment(&rand::random());
    let proxy = tampering_proxy(&s.server.url, move |retrieval| {
        retrieval["sas_commitment"] = forged.clone().into();
    });

    let service = keymaster_client::ServiceClient::new(&proxy, &s.service_key).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(async {
            let retrieved = service
                .retrieve(&keymaster_client::wire::RetrievalRequest {
                    code,
                    ..Default::default()
                })
                .await?;
            service
                .verify_sas(&retrieved, std::time::Duration::from_secs(30))
                .await
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            keymaster_client::Error::SasMismatch { disputed: true, .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("key_mismatch"));
    device_compare_line(device, lines);
    assert_eq!(disputes(&s, "typed"), ["sas_mismatch"]);
}

#[test]
fn verify_refuses_a_key_deposited_without_a_commitment() {
    let s = Setup::new();
    let deposit = s.device(&["device", "add", "--label", "plain", "--json"]);
    let out = s.server.run(
        &[
            "service",
            "fetch",
            deposit["code"].as_str().unwrap(),
            "--verify",
        ],
        &[("KEYMASTER_SERVICE_KEY", s.service_key.as_str())],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("key_mismatch"), "{stderr}");
    let status = s.device(&["device", "status", "plain", "--json"]);
    let disputed =
        status["history"].as_array().unwrap().iter().any(|event| {
            event["type"] == "key.disputed" && event["data"]["reason"] == "sas_mismatch"
        });
    assert!(disputed, "{status}");
}
