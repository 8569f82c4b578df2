//! Enrolment requests from the command line: the host asks (`keymaster service request --wait
//! --format openssh >> authorized_keys`), the laptop answers with its existing SSH key
//! (`keymaster device answer CODE --public-key ~/.ssh/…pub --yes`), and a real `ssh` login
//! with that key works. Without a terminal and without `--yes` the answer is refused and sends
//! nothing.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{require, run_tool, ssh_login, Setup};

#[test]
fn ssh_login_with_a_key_the_host_asked_for_and_the_laptop_sent() {
    require("ssh-keygen", "openssh-client");
    require("ssh", "openssh-client");
    require("/usr/sbin/sshd", "openssh-server");
    let s = Setup::new();
    let key = s.server.path("id_ed25519");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f"])
            .arg(&key),
    );
    let pubkey = key.with_extension("pub");

    // The host: `keymaster service request --wait --format openssh >> authorized_keys`.
    let authorized_keys = s.server.path("authorized_keys");
    let appended = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&authorized_keys)
        .unwrap();
    let mut host = s
        .server
        .command(
            &[
                "service", "request", "--label", "bastion", "--ttl", "2m", "--wait", "--format",
                "openssh",
            ],
            &[("KEYMASTER_SERVICE_KEY", s.service_key.as_str())],
        )
        .stdin(Stdio::null())
        .stdout(appended)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = host.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let uri = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no request URI on stderr: {shown:?}"));
        shown.push(line.clone());
        if let Some(uri) = line.strip_prefix("uri: ") {
            break uri.to_owned();
        }
    };
    assert!(uri.starts_with("keymaster:request:"), "{uri}");
    let code = shown
        .iter()
        .find_map(|l| l.strip_prefix("code: "))
        .expect("the code is shown")
        .to_owned();
    // A QR code of the URI is drawn in the terminal (half blocks).
    let qr_rows = loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        if line.starts_with("expires: ") {
            break shown.len();
        }
        shown.push(line);
    };
    assert!(
        shown.iter().any(|l| l.contains('▀') || l.contains('▄')),
        "no QR code among {qr_rows} lines"
    );

    let envs = [("KEYMASTER_APP_KEY", s.app_key.as_str())];
    // The laptop without a terminal and without --yes: refused, nothing sent.
    let refused = s.server.run(
        &[
            "device",
            "answer",
            &code,
            "--public-key",
            pubkey.to_str().unwrap(),
        ],
        &envs,
        b"y\n",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("ssh-host (example.net) asks for a key"),
        "{err}"
    );
    assert!(err.contains("--yes"), "{err}");

    // The laptop answers with its existing SSH key, after seeing who asks.
    let answered = s.server.run(
        &[
            "device",
            "answer",
            &uri,
            "--public-key",
            pubkey.to_str().unwrap(),
            "--yes",
        ],
        &envs,
        b"",
    );
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(stdout.starts_with("sent bastion to ssh-host"), "{stdout}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.server.path("keystore/bastion.json")).unwrap())
            .unwrap();
    assert!(
        stored["private_key"].is_null(),
        "the keystore must not hold a key it did not make"
    );

    // The host's command ends with the key appended to authorized_keys.
    let status = host.wait().unwrap();
    assert!(
        status.success(),
        "service request failed: {:?}",
        lines.try_iter().collect::<Vec<_>>()
    );
    let written = std::fs::read_to_string(&authorized_keys).unwrap();
    assert!(written.starts_with("ssh-ed25519 "), "{written}");
    assert_eq!(written.lines().count(), 1, "{written}");
    let fp_sent = run_tool(Command::new("ssh-keygen").arg("-lf").arg(&pubkey));
    let fp_written = run_tool(Command::new("ssh-keygen").arg("-lf").arg(&authorized_keys));
    let fp = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(fp(&fp_sent), fp(&fp_written));

    // A second answer to the same request is refused: the device's preview already finds no
    // pending request behind the code.
    let again = s.server.run(
        &["device", "answer", &code, "--label", "again", "--yes"],
        &envs,
        b"",
    );
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not_found"), "{err}");
    assert!(!s.server.path("keystore/again.json").exists());

    ssh_login(&s.server, &key, &authorized_keys);
}
