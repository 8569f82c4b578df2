//! Wycheproof vectors (copied into `testdata/wycheproof/`, Apache-2.0, see the LICENSE there).
//!
//! For every test group: each form of the key that the file gives (DER, PEM, JWK, raw) parses
//! to the same key and fingerprint; and every test case gets the expected verdict.
//!
//! Verdicts for "acceptable" cases (the only ones in the signature files used):
//! - RSA `MissingNull` (a `DigestInfo` without the NULL parameters): **rejected**. PKCS#1 v1.5
//!   verification compares against the one DER encoding with NULL; the variant is a legacy
//!   encoding no current signer produces.
//! - X25519 `LowOrderPublic` and `NonCanonicalPublic`: **rejected** at parse time (see the
//!   module docs of `keymaster_core::key`); every other X25519 public key (twist points, edge
//!   cases of the multiplication) is accepted.

use keymaster_core::key::{KeyError, PublicKey};
use serde_json::Value;

use super::support::{hex, read_text};

fn load(file: &str) -> Value {
    serde_json::from_str(&read_text(&format!("wycheproof/{file}"))).expect("wycheproof json")
}

fn groups(doc: &Value) -> &Vec<Value> {
    doc["testGroups"].as_array().expect("testGroups")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Parses the DER and PEM forms of a group's key, checks they agree, returns the key.
fn der_and_pem(group: &Value) -> PublicKey {
    let from_der = PublicKey::from_spki_der(&hex(str_of(group, "publicKeyDer")))
        .unwrap_or_else(|e| panic!("publicKeyDer: {e}"));
    let from_pem =
        PublicKey::parse(str_of(group, "publicKeyPem")).unwrap_or_else(|e| panic!("PEM: {e}"));
    assert_eq!(from_der, from_pem);
    assert_eq!(from_der.fingerprint(), from_pem.fingerprint());
    // The canonical DER is the one Wycheproof gives.
    assert_eq!(
        from_der.spki_der(),
        hex(str_of(group, "publicKeyDer")).as_slice()
    );
    from_der
}

/// Parses a JWK form and checks it is the same key as `key`, with the same thumbprint.
fn same_as_jwk(key: &PublicKey, jwk: &Value) {
    let from_jwk = PublicKey::from_jwk(jwk).unwrap_or_else(|e| panic!("JWK {jwk}: {e}"));
    assert_eq!(&from_jwk, key);
    assert_eq!(from_jwk.fingerprint(), key.fingerprint());
    assert_eq!(from_jwk.jwk_thumbprint(), key.jwk_thumbprint());
}

/// Runs the signature cases of one group; returns how many ran.
fn run_cases(
    key: &PublicKey,
    group: &Value,
    mut acceptable_ok: impl FnMut(&Value) -> bool,
) -> usize {
    let tests = group["tests"].as_array().expect("tests");
    for case in tests {
        let id = &case["tcId"];
        let msg = hex(str_of(case, "msg"));
        let sig = hex(str_of(case, "sig"));
        let got = key.verify(&msg, &sig);
        let want_ok = match str_of(case, "result") {
            "valid" => true,
            "invalid" => false,
            "acceptable" => acceptable_ok(case),
            other => panic!("result {other}"),
        };
        if want_ok {
            assert_eq!(got, Ok(()), "tcId {id} ({}) should verify", case["comment"]);
        } else {
            assert_eq!(
                got,
                Err(KeyError::InvalidProof),
                "tcId {id} ({}) should fail",
                case["comment"]
            );
        }
    }
    tests.len()
}

#[test]
fn ed25519() {
    let doc = load("ed25519_test.json");
    let mut cases = 0;
    for group in groups(&doc) {
        let key = der_and_pem(group);
        let raw = hex(str_of(&group["publicKey"], "pk"));
        // The raw key as an OpenSSH line (its only raw form we accept) and as JWK.
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": base64_url(&raw)});
        same_as_jwk(&key, &jwk);
        same_as_jwk(&key, &group["publicKeyJwk"]);
        let openssh = key.to_openssh().expect("ed25519 has an OpenSSH form");
        assert_eq!(PublicKey::parse(&openssh).as_ref(), Ok(&key));
        cases += run_cases(&key, group, |_| unreachable!("no acceptable ed25519 cases"));
    }
    assert_eq!(
        cases,
        doc["numberOfTests"].as_u64().expect("count") as usize
    );
}

fn ecdsa(file: &str, field_len: usize, crv: &str) {
    let doc = load(file);
    let mut cases = 0;
    for group in groups(&doc) {
        let key = der_and_pem(group);
        let jwk = serde_json::json!({"kty": "EC", "crv": crv,
            "x": base64_url(&fixed(&hex(str_of(&group["publicKey"], "wx")), field_len)),
            "y": base64_url(&fixed(&hex(str_of(&group["publicKey"], "wy")), field_len))});
        same_as_jwk(&key, &jwk);
        let openssh = key.to_openssh().expect("ecdsa has an OpenSSH form");
        assert_eq!(PublicKey::parse(&openssh).as_ref(), Ok(&key));
        cases += run_cases(&key, group, |_| unreachable!("no acceptable ecdsa cases"));
    }
    assert_eq!(
        cases,
        doc["numberOfTests"].as_u64().expect("count") as usize
    );
}

#[test]
fn ecdsa_p256_sha256() {
    ecdsa("ecdsa_secp256r1_sha256_test.json", 32, "P-256");
}

#[test]
fn ecdsa_p384_sha384() {
    ecdsa("ecdsa_secp384r1_sha384_test.json", 48, "P-384");
}

#[test]
fn rsa_pkcs1v15_sha256() {
    let doc = load("rsa_signature_2048_sha256_test.json");
    let mut cases = 0;
    let mut acceptable = 0;
    for group in groups(&doc) {
        let key = der_and_pem(group);
        same_as_jwk(&key, &group["keyJwk"]);
        // The PKCS#1 RSAPublicKey form, as PEM "RSA PUBLIC KEY".
        let pkcs1 = hex(str_of(group, "publicKeyAsn"));
        let pem = der::pem::encode_string("RSA PUBLIC KEY", der::pem::LineEnding::LF, &pkcs1)
            .expect("pem");
        assert_eq!(PublicKey::parse(&pem).as_ref(), Ok(&key));
        let openssh = key.to_openssh().expect("rsa has an OpenSSH form");
        assert_eq!(PublicKey::parse(&openssh).as_ref(), Ok(&key));
        cases += run_cases(&key, group, |case| {
            acceptable += 1;
            let flags = case["flags"].as_array().expect("flags");
            assert_eq!(
                flags,
                &vec![Value::from("MissingNull")],
                "unexpected acceptable case"
            );
            false
        });
    }
    assert_eq!(acceptable, 1);
    assert_eq!(
        cases,
        doc["numberOfTests"].as_u64().expect("count") as usize
    );
}

#[test]
fn x25519_public_keys_parse_and_private_keys_are_rejected() {
    let doc = load("x25519_pem_test.json");
    let (mut accepted, mut refused) = (0, 0);
    for group in groups(&doc) {
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let flags: Vec<&str> = case["flags"]
                .as_array()
                .expect("flags")
                .iter()
                .map(|f| f.as_str().expect("flag"))
                .collect();
            let must_refuse =
                flags.contains(&"LowOrderPublic") || flags.contains(&"NonCanonicalPublic");
            // A "valid" case is never one we refuse.
            assert!(!(must_refuse && case["result"] == "valid"), "tcId {id}");
            match PublicKey::parse(str_of(case, "public")) {
                Ok(key) => {
                    assert!(!must_refuse, "tcId {id} {flags:?} should be refused");
                    assert_eq!(key.algorithm(), keymaster_core::key::Algorithm::X25519);
                    let again = PublicKey::from_jwk(&key.to_jwk()).expect("jwk round trip");
                    assert_eq!(again, key);
                    accepted += 1;
                }
                Err(KeyError::Invalid(_)) => {
                    assert!(must_refuse, "tcId {id} {flags:?} should parse");
                    refused += 1;
                }
                Err(other) => panic!("tcId {id}: {other:?}"),
            }
            assert_eq!(
                PublicKey::parse(str_of(case, "private")),
                Err(KeyError::PrivateKeyRejected),
                "tcId {id}"
            );
        }
    }
    assert_eq!((accepted, refused), (474, 44));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Left-pads or strips leading zeros of a big-endian number to `len` bytes.
fn fixed(bytes: &[u8], len: usize) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(trimmed.len() <= len);
    let mut out = vec![0; len - trimmed.len()];
    out.extend(trimmed);
    out
}
