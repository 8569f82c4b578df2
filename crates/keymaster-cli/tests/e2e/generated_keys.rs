//! Private keys that the key master generates (`generate` in a deposit) load in the tools people
//! use, not only in our own parser: `private_key` (PKCS#8 v1 PEM) in `openssl pkey`, Python's
//! `cryptography` and Node's `crypto`, and `private_key_openssh` in `ssh-keygen`. Each tool
//! derives the public key from the private one, and it must be the deposited key: the same
//! `fingerprint` (SHA-256 of the SPKI) and `ssh_fingerprint` (what `ssh-keygen -lf` prints).
//! A missing tool fails the test with the package to install; it never skips.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use keymaster_client::wire::DepositRequest;
use keymaster_client::DeviceClient;
use sha2::{Digest, Sha256};

use super::{require, run_tool, Setup};

/// Prints the base64 DER SubjectPublicKeyInfo of the public key derived from the private key in
/// `argv[2]`, a PEM (`argv[1]` = `pem`) or OpenSSH (`openssh`) private key.
const PYTHON: &str = r#"
import base64, sys
from cryptography.hazmat.primitives import serialization as s
load = {"pem": s.load_pem_private_key, "openssh": s.load_ssh_private_key}[sys.argv[1]]
key = load(open(sys.argv[2], "rb").read(), password=None)
spki = key.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo)
print(base64.b64encode(spki).decode())
"#;

/// Prints the base64 DER SubjectPublicKeyInfo of the public key derived from the PEM private
/// key in `argv[1]`.
const NODE: &str = r#"
const crypto = require("crypto");
const fs = require("fs");
const key = crypto.createPrivateKey(fs.readFileSync(process.argv[1]));
const spki = crypto.createPublicKey(key).export({ type: "spki", format: "der" });
process.stdout.write(spki.toString("base64") + "\n");
"#;

/// `SHA256:` and unpadded base64 of the SHA-256 of `spki_der`, as in the API's `fingerprint`.
fn fingerprint(spki_der: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(spki_der))
    )
}

/// Writes `text` to a new file only its owner can read (ssh-keygen refuses other private keys).
fn write_private(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run_tool(cmd).stdout).unwrap()
}

/// The fingerprint of the base64 SPKI a script printed.
fn fingerprint_of(printed: &str) -> String {
    fingerprint(&STANDARD.decode(printed.trim()).unwrap())
}

fn require_all() {
    require("openssl", "openssl");
    require("ssh-keygen", "openssh-client");
    require("python3", "python3");
    require("node", "nodejs");
    let import = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "this test needs Python's `cryptography` package: pip install cryptography ({})",
        String::from_utf8_lossy(&import.stderr).trim()
    );
}

#[test]
fn server_generated_private_keys_load_in_openssl_openssh_python_and_node() {
    require_all();
    let s = Setup::new();
    let device = DeviceClient::new(&s.server.url, &s.app_key).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for algorithm in ["ed25519", "p256", "rsa-3072"] {
        let label = format!("made-{algorithm}");
        let deposit = runtime
            .block_on(device.deposit(&DepositRequest {
                generate: Some(algorithm.to_owned()),
                label: Some(label.clone()),
                ..Default::default()
            }))
            .unwrap();
        let expected = deposit.fingerprint.clone().unwrap();

        // `private_key`, PKCS#8 PEM: each tool derives the SPKI of the deposited key from it.
        let pem = deposit.private_key.as_deref().unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{algorithm}"
        );
        let pem_file = s.server.path(&format!("{algorithm}.pem"));
        write_private(&pem_file, pem);
        let spki = run_tool(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&pem_file),
        )
        .stdout;
        assert_eq!(fingerprint(&spki), expected, "{algorithm}: openssl pkey");
        let python = stdout(
            Command::new("python3")
                .args(["-c", PYTHON, "pem"])
                .arg(&pem_file),
        );
        assert_eq!(
            fingerprint_of(&python),
            expected,
            "{algorithm}: python cryptography, PEM"
        );
        let node = stdout(Command::new("node").args(["-e", NODE]).arg(&pem_file));
        assert_eq!(fingerprint_of(&node), expected, "{algorithm}: node crypto");

        // `private_key_openssh`: `ssh-keygen -y` prints the public key (with the label as
        // comment), whose `ssh-keygen -lf` fingerprint is the deposit's `ssh_fingerprint`.
        let openssh = deposit
            .private_key_openssh
            .as_deref()
            .unwrap_or_else(|| panic!("{algorithm}: no private_key_openssh"));
        assert!(
            openssh.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
            "{algorithm}"
        );
        let openssh_file = s.server.path(&format!("{algorithm}_openssh"));
        write_private(&openssh_file, openssh);
        let line = stdout(
            Command::new("ssh-keygen")
                .arg("-y")
                .arg("-f")
                .arg(&openssh_file),
        );
        assert_eq!(
            line.split_whitespace().nth(2),
            Some(label.as_str()),
            "{algorithm}: the comment is not the label: {line}"
        );
        let pub_file = PathBuf::from(format!("{}.pub", openssh_file.display()));
        std::fs::write(&pub_file, &line).unwrap();
        let listed = stdout(Command::new("ssh-keygen").arg("-lf").arg(&pub_file));
        assert_eq!(
            listed.split_whitespace().nth(1),
            deposit.ssh_fingerprint.as_deref(),
            "{algorithm}: ssh-keygen -lf: {listed}"
        );
        // Its private half signs what the public half verifies.
        signs_with_ssh_keygen(&s, &openssh_file, algorithm);
        let python = stdout(
            Command::new("python3")
                .args(["-c", PYTHON, "openssh"])
                .arg(&openssh_file),
        );
        assert_eq!(
            fingerprint_of(&python),
            expected,
            "{algorithm}: python cryptography, OpenSSH"
        );
    }
}

/// `ssh-keygen -Y sign` with the private key, checked against the key in the signature.
fn signs_with_ssh_keygen(s: &Setup, key: &Path, algorithm: &str) {
    let message = s.server.path(&format!("{algorithm}.message"));
    std::fs::write(&message, b"signed by a key the key master made").unwrap();
    run_tool(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(key)
            .arg(&message),
    );
    let signature = PathBuf::from(format!("{}.sig", message.display()));
    let check = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", "file", "-s"])
        .arg(&signature)
        .stdin(Stdio::from(std::fs::File::open(&message).unwrap()))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{algorithm}: ssh-keygen does not verify its own signature: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn device_add_generate_on_server_keeps_a_key_openssl_loads_and_signs_with() {
    require("openssl", "openssl");
    let s = Setup::new();
    let deposit = s.device(&[
        "device",
        "add",
        "--label",
        "server-made",
        "--generate-on-server",
        "--json",
    ]);
    for secret in ["holder_token", "private_key", "private_key_openssh"] {
        assert!(deposit.get(secret).is_none(), "--json prints {secret}");
    }
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.server.path("keystore/server-made.json")).unwrap())
            .unwrap();
    let pem_file = s.server.path("server-made.pem");
    write_private(&pem_file, stored["private_key"].as_str().unwrap());
    let public = s.server.path("server-made.pub.pem");
    run_tool(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&pem_file)
            .arg("-out")
            .arg(&public),
    );
    let spki = run_tool(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(&public),
    )
    .stdout;
    assert_eq!(
        Some(fingerprint(&spki)),
        deposit["fingerprint"].as_str().map(str::to_owned)
    );

    // The keystore's key signs, and OpenSSL verifies with the public key it derived.
    let message = b"a challenge for a server-made key";
    let signature = s
        .server
        .ok_with_stdin(&["device", "sign", "server-made"], &[], message);
    let sig_file = s.server.path("server-made.sig");
    std::fs::write(&sig_file, STANDARD.decode(signature.trim()).unwrap()).unwrap();
    let message_file = s.server.path("server-made.msg");
    std::fs::write(&message_file, message).unwrap();
    run_tool(
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&public)
            .arg("-in")
            .arg(&message_file)
            .arg("-sigfile")
            .arg(&sig_file),
    );
}
