//! Keys, fingerprints and signatures made by the real tools (see `testdata/keys/make.sh`):
//! our fingerprints must equal what `ssh-keygen -lf` and `openssl … | sha256` printed, the
//! OpenSSH and PEM forms of one key must be the same key, private keys must be refused, and
//! signatures made by openssl must verify.

use std::collections::HashMap;

use keymaster_core::key::{sign, Algorithm, KeyError, PublicKey};

use super::support::{read_bytes, read_text};

/// One line of `fingerprints.txt`: the file it describes and its `key=value` fields.
fn manifest() -> Vec<(String, HashMap<String, String>)> {
    let text = read_text("keys/fingerprints.txt");
    let rows: Vec<_> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let file = parts.next().expect("file name").to_owned();
            let fields = parts
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    (k.to_owned(), v.to_owned())
                })
                .collect();
            (file, fields)
        })
        .collect();
    assert!(rows.len() >= 13, "manifest has {} rows", rows.len());
    rows
}

fn parse_file(rel: &str) -> PublicKey {
    PublicKey::parse(&read_text(&format!("keys/{rel}")))
        .unwrap_or_else(|e| panic!("{rel} does not parse: {e}"))
}

#[test]
fn fingerprints_match_ssh_keygen_and_openssl() {
    let mut checked_ssh = 0;
    let mut checked_spki = 0;
    for (file, fields) in manifest() {
        let key = parse_file(&file);
        if let Some(spki) = fields.get("spki") {
            assert_eq!(&key.fingerprint(), spki, "SPKI fingerprint of {file}");
            checked_spki += 1;
        }
        if let Some(ssh) = fields.get("ssh") {
            assert_eq!(
                key.ssh_fingerprint().as_ref(),
                Some(ssh),
                "ssh fingerprint of {file}"
            );
            checked_ssh += 1;
        }
        // The other form of the same key: same SPKI, so same fingerprints.
        for other in ["pem", "openssh"] {
            if let Some(other_file) = fields.get(other) {
                let other_key = parse_file(other_file);
                assert_eq!(other_key, key, "{file} and {other_file} differ");
                assert_eq!(other_key.spki_der(), key.spki_der());
                if let Some(spki) = fields.get("spki") {
                    assert_eq!(
                        &other_key.fingerprint(),
                        spki,
                        "fingerprint of {other_file}"
                    );
                }
                if let Some(ssh) = fields.get("ssh") {
                    assert_eq!(other_key.ssh_fingerprint().as_ref(), Some(ssh));
                }
            }
        }
    }
    assert!(
        checked_ssh >= 10 && checked_spki >= 12,
        "{checked_ssh} {checked_spki}"
    );
}

#[test]
fn detected_algorithms() {
    let cases = [
        ("ssh_ed25519.pub", Algorithm::Ed25519),
        ("ssh_ecdsa256.pub", Algorithm::P256),
        ("ssh_ecdsa384.pub", Algorithm::P384),
        ("ssh_rsa2048.pub", Algorithm::Rsa(2048)),
        ("ssh_rsa3072.pem", Algorithm::Rsa(3072)),
        ("ossl_ed25519.pem", Algorithm::Ed25519),
        ("ossl_x25519.pem", Algorithm::X25519),
        ("ossl_p256.pem", Algorithm::P256),
        ("ossl_p384.pem", Algorithm::P384),
        ("ossl_rsa2048_pkcs1.pem", Algorithm::Rsa(2048)),
        ("ossl_rsa4096.pub", Algorithm::Rsa(4096)),
    ];
    for (file, alg) in cases {
        assert_eq!(parse_file(file).algorithm(), alg, "{file}");
    }
    assert_eq!(Algorithm::Rsa(4096).to_string(), "rsa-4096");
    assert_eq!("p384".parse::<Algorithm>(), Ok(Algorithm::P384));
    assert!("rsa-1024".parse::<Algorithm>().is_err());
}

#[test]
fn pkcs1_and_spki_forms_are_the_same_key() {
    for bits in [2048, 4096] {
        let spki = parse_file(&format!("ossl_rsa{bits}.pem"));
        let pkcs1 = parse_file(&format!("ossl_rsa{bits}_pkcs1.pem"));
        assert_eq!(spki, pkcs1);
        // Our PEM output is byte-for-byte what openssl wrote.
        assert_eq!(
            spki.to_pem(),
            read_text(&format!("keys/ossl_rsa{bits}.pem"))
        );
    }
}

#[test]
fn openssl_pem_output_is_reproduced_exactly() {
    for file in [
        "ossl_ed25519.pem",
        "ossl_x25519.pem",
        "ossl_p256.pem",
        "ossl_p384.pem",
    ] {
        assert_eq!(
            parse_file(file).to_pem(),
            read_text(&format!("keys/{file}")),
            "{file}"
        );
    }
}

#[test]
fn openssh_output_is_the_line_ssh_keygen_wrote() {
    for file in [
        "ssh_ed25519.pub",
        "ssh_ecdsa256.pub",
        "ssh_ecdsa384.pub",
        "ssh_rsa3072.pub",
    ] {
        let text = read_text(&format!("keys/{file}"));
        let without_comment: Vec<_> = text.split_whitespace().take(2).collect();
        assert_eq!(
            parse_file(file).to_openssh(),
            Some(without_comment.join(" ")),
            "{file}"
        );
    }
    assert_eq!(parse_file("ossl_x25519.pem").to_openssh(), None);
    assert_eq!(parse_file("ossl_x25519.pem").ssh_fingerprint(), None);
}

#[test]
fn private_keys_are_rejected_in_every_format() {
    let files = [
        "pkcs8_p256.pem",      // PRIVATE KEY
        "pkcs8_ed25519.pem",   // PRIVATE KEY
        "pkcs8_rsa2048.pem",   // PRIVATE KEY
        "pkcs8_x25519.pem",    // PRIVATE KEY
        "pkcs1_rsa2048.pem",   // RSA PRIVATE KEY
        "sec1_p256.pem",       // EC PRIVATE KEY
        "encrypted_p256.pem",  // ENCRYPTED PRIVATE KEY
        "openssh_ed25519.key", // OPENSSH PRIVATE KEY
        "openssh_ecdsa256.key",
        "openssh_rsa2048.key",
    ];
    for file in files {
        let text = read_text(&format!("keys/private/{file}"));
        assert_eq!(
            PublicKey::parse(&text),
            Err(KeyError::PrivateKeyRejected),
            "{file}"
        );
        // Even surrounded by whitespace, or with its first line of base64 cut out.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        let damaged = format!("\n  {}\n\n", lines.join("\n"));
        assert_eq!(
            PublicKey::parse(&damaged),
            Err(KeyError::PrivateKeyRejected),
            "{file}"
        );
    }
}

#[test]
fn private_jwk_is_rejected() {
    // The RFC 8037 Appendix A.1 Ed25519 private key.
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519",
        "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(PublicKey::from_jwk(&jwk), Err(KeyError::PrivateKeyRejected));
    let mut public = jwk.clone();
    public.as_object_mut().unwrap().remove("d");
    assert!(PublicKey::from_jwk(&public).is_ok());
    // RSA private members other than d count too.
    let rsa = serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB","p":"AQAB"});
    assert_eq!(PublicKey::from_jwk(&rsa), Err(KeyError::PrivateKeyRejected));
}

#[test]
fn openssl_signatures_verify() {
    let message = read_bytes("keys/message.txt");
    for name in ["ed25519", "p256", "p384", "rsa2048", "rsa4096"] {
        let key = parse_file(&format!("ossl_{name}.pem"));
        let sig = read_bytes(&format!("keys/sig/ossl_{name}.sig"));
        assert_eq!(key.verify(&message, &sig), Ok(()), "{name}");
        // A different message, and a flipped bit in the signature, fail.
        assert_eq!(
            key.verify(b"another message", &sig),
            Err(KeyError::InvalidProof),
            "{name}"
        );
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            key.verify(&message, &bad),
            Err(KeyError::InvalidProof),
            "{name}"
        );
    }
}

#[test]
fn sign_with_openssl_and_openssh_private_keys() {
    let message = b"sign me";
    let cases = [
        ("pkcs8_ed25519.pem", "ossl_ed25519.pem"),
        ("pkcs8_p256.pem", "ossl_p256.pem"),
        ("pkcs8_rsa2048.pem", "ossl_rsa2048.pem"),
        ("pkcs1_rsa2048.pem", "ossl_rsa2048.pem"),
        ("sec1_p256.pem", "ossl_p256.pem"),
        ("openssh_ed25519.key", "ssh_ed25519.pub"),
        ("openssh_ecdsa256.key", "ssh_ecdsa256.pub"),
        ("openssh_rsa2048.key", "ssh_rsa2048.pub"),
    ];
    for (private, public) in cases {
        let sig = sign(&read_text(&format!("keys/private/{private}")), message)
            .unwrap_or_else(|e| panic!("{private}: {e}"));
        let key = parse_file(public);
        assert_eq!(key.verify(message, &sig), Ok(()), "{private}");
        let proof = sign(
            &read_text(&format!("keys/private/{private}")),
            &keymaster_core::key::proof_message(&key.fingerprint()),
        )
        .expect("sign proof");
        assert_eq!(key.verify_proof(&proof), Ok(()), "{private}");
        // A proof for another key's fingerprint is not a proof for this one.
        let wrong = sign(
            &read_text(&format!("keys/private/{private}")),
            &keymaster_core::key::proof_message("SHA256:something-else"),
        )
        .expect("sign");
        assert_eq!(
            key.verify_proof(&wrong),
            Err(KeyError::InvalidProof),
            "{private}"
        );
    }
    // Signing keys that cannot sign here.
    for private in ["pkcs8_x25519.pem", "encrypted_p256.pem"] {
        assert!(matches!(
            sign(&read_text(&format!("keys/private/{private}")), message),
            Err(KeyError::Invalid(_))
        ));
    }
}

#[test]
fn x25519_cannot_verify() {
    let key = parse_file("ossl_x25519.pem");
    assert_eq!(key.verify(b"m", &[0u8; 64]), Err(KeyError::InvalidProof));
}
