//! Refusals: each input must be `Invalid` (with a message saying why) — or, for private keys,
//! `PrivateKeyRejected`.

use der::Encode;
use keymaster_core::key::{KeyError, PublicKey};

use super::support::read_text;

/// Asserts `result` is `Invalid` and its message contains `needle` (case-insensitive).
#[track_caller]
fn assert_invalid(result: Result<PublicKey, KeyError>, needle: &str) {
    match result {
        Err(KeyError::Invalid(msg)) => assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "message {msg:?} does not mention {needle:?}"
        ),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

fn fixture(rel: &str) -> String {
    read_text(&format!("keys/{rel}"))
}

fn rsa_pkcs1_pem(n: &[u8], e: &[u8]) -> String {
    let der = pkcs1::RsaPublicKey {
        modulus: der::asn1::UintRef::new(n).expect("n"),
        public_exponent: der::asn1::UintRef::new(e).expect("e"),
    }
    .to_der()
    .expect("der");
    der::pem::encode_string("RSA PUBLIC KEY", der::pem::LineEnding::LF, &der).expect("pem")
}

/// The modulus of the 2048-bit fixture.
fn modulus_2048() -> Vec<u8> {
    let key = PublicKey::parse(&fixture("ossl_rsa2048.pem")).expect("rsa");
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key.to_jwk()["n"].as_str().expect("n"))
        .expect("b64")
}

#[test]
fn refused_algorithms_and_sizes() {
    assert_invalid(
        PublicKey::parse(&fixture("refused/rsa1024.pem")),
        "2048 to 8192 bits",
    );
    assert_invalid(
        PublicKey::parse(&fixture("refused/secp256k1.pem")),
        "secp256k1",
    );
    assert_invalid(PublicKey::parse(&fixture("refused/p521.pem")), "P-521");
    assert_invalid(
        PublicKey::parse(&fixture("refused/brainpool256.pem")),
        "brainpoolP256r1",
    );
    assert_invalid(PublicKey::parse(&fixture("refused/ed448.pem")), "Ed448");
    assert_invalid(
        PublicKey::parse(&fixture("refused/rsa_pss.pem")),
        "RSASSA-PSS",
    );
    assert_invalid(
        PublicKey::parse(&fixture("refused/p256_explicit.pem")),
        "named curve",
    );
    assert_invalid(PublicKey::parse(&fixture("refused/ssh_p521.pub")), "P-521");
    assert_invalid(
        PublicKey::parse(&fixture("refused/certificate.pem")),
        "certificate",
    );
    let jwk = serde_json::json!({"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"});
    assert_invalid(PublicKey::from_jwk(&jwk), "secp256k1");
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed448","x":"AA"});
    assert_invalid(PublicKey::from_jwk(&jwk), "Ed448");
    let jwk = serde_json::json!({"kty":"oct","k":"AAAA"});
    assert_invalid(PublicKey::from_jwk(&jwk), "symmetric");
}

#[test]
fn rsa_exponent_bounds() {
    let n = modulus_2048();
    assert_invalid(PublicKey::parse(&rsa_pkcs1_pem(&n, &[1])), "exponent");
    assert_invalid(
        PublicKey::parse(&rsa_pkcs1_pem(&n, &[0x01, 0x00, 0x00])),
        "exponent",
    );
    assert_invalid(
        PublicKey::parse(&rsa_pkcs1_pem(&n, &[1, 0, 0, 0, 3])),
        "exponent",
    );
    assert!(PublicKey::parse(&rsa_pkcs1_pem(&n, &[3])).is_ok());
    assert!(PublicKey::parse(&rsa_pkcs1_pem(&n, &[1, 0, 0, 0, 1])).is_ok()); // 2^32 + 1
                                                                             // Even modulus.
    let mut even = n.clone();
    *even.last_mut().expect("n") &= 0xfe;
    assert_invalid(PublicKey::parse(&rsa_pkcs1_pem(&even, &[1, 0, 1])), "even");
    // Too large: 8200 bits.
    let mut big = vec![0xff; 1025];
    big[0] = 0xff;
    assert_invalid(PublicKey::parse(&rsa_pkcs1_pem(&big, &[1, 0, 1])), "8192");
    // Via JWK too.
    let jwk = serde_json::json!({"kty":"RSA","n": base64_url(&n),"e":"AQ"});
    assert_invalid(PublicKey::from_jwk(&jwk), "exponent");
}

#[test]
fn points_off_the_curve() {
    let key = PublicKey::parse(&fixture("ossl_p256.pem")).expect("p256");
    let mut der = key.spki_der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1; // y changed: not on the curve any more
    assert_invalid(PublicKey::from_spki_der(&der), "not a point on the curve");
    let mut jwk = key.to_jwk();
    jwk["y"] = serde_json::json!(base64_url(&[7u8; 32]));
    assert_invalid(PublicKey::from_jwk(&jwk), "not a point on the curve");
    jwk["y"] = serde_json::json!(base64_url(&[7u8; 31]));
    assert_invalid(PublicKey::from_jwk(&jwk), "32 bytes");
    // The identity, SEC1-encoded as a single zero byte.
    let identity = spki_with_key(key.spki_der(), &[0]);
    assert_invalid(PublicKey::from_spki_der(&identity), "infinity");

    let p384 = PublicKey::parse(&fixture("ossl_p384.pem")).expect("p384");
    let mut der = p384.spki_der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    assert_invalid(PublicKey::from_spki_der(&der), "not a point on the curve");
    // An OpenSSH line whose point is off the curve.
    let ssh = PublicKey::parse(&fixture("ssh_ecdsa256.pub")).expect("ssh p256");
    let line = ssh.to_openssh().expect("line");
    let (kind, blob) = line.split_once(' ').expect("two fields");
    let mut raw = base64_std_decode(blob);
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let bad_line = format!("{kind} {}", base64_std(&raw));
    assert!(matches!(
        PublicKey::parse(&bad_line),
        Err(KeyError::Invalid(_))
    ));
}

#[test]
fn ed25519_small_order_and_non_canonical_points() {
    // The identity (y = 1) and the point of order 2 (y = -1) have small order.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x": base64_url(&identity)});
    assert_invalid(PublicKey::from_jwk(&jwk), "small-order");
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x": base64_url(&minus_one)});
    assert_invalid(PublicKey::from_jwk(&jwk), "small-order");
    // y + p for small y: the same point as y, encoded non-canonically.
    let mut checked = 0;
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x": base64_url(&canonical)});
        if PublicKey::from_jwk(&jwk).is_err() {
            continue; // not on the curve, or small order
        }
        let mut alias = [0xffu8; 32];
        alias[0] = 0xed + y; // p = 2^255 - 19 = ed ff .. ff 7f (little-endian)
        alias[31] = 0x7f;
        let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x": base64_url(&alias)});
        assert_invalid(PublicKey::from_jwk(&jwk), "canonically");
        checked += 1;
    }
    assert!(checked > 0, "no valid small y found");
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x": base64_url(&[1u8; 31])});
    assert_invalid(PublicKey::from_jwk(&jwk), "32 bytes");
}

#[test]
fn x25519_low_order_and_wrong_length() {
    let jwk = serde_json::json!({"kty":"OKP","crv":"X25519","x": base64_url(&[0u8; 32])});
    assert_invalid(PublicKey::from_jwk(&jwk), "low-order");
    let jwk = serde_json::json!({"kty":"OKP","crv":"X25519","x": base64_url(&[9u8; 33])});
    assert_invalid(PublicKey::from_jwk(&jwk), "32 bytes");
    let jwk = serde_json::json!({"kty":"OKP","crv":"X25519","x": base64_url(&[0xffu8; 32])});
    assert_invalid(PublicKey::from_jwk(&jwk), "canonically");
}

#[test]
fn garbage_and_malformed_text() {
    assert_invalid(PublicKey::parse(""), "empty");
    assert_invalid(PublicKey::parse("   \n"), "empty");
    assert_invalid(PublicKey::parse("ssh-ed25519 AAAA!!!not-base64"), "OpenSSH");
    assert_invalid(PublicKey::parse("ssh-ed25519"), "OpenSSH");
    assert_invalid(PublicKey::parse("hello world"), "unrecognised key format");
    assert_invalid(
        PublicKey::parse("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n"),
        "malformed PEM",
    );
    assert_invalid(
        PublicKey::parse("-----BEGIN FOO BAR-----\nAAAA\n-----END FOO BAR-----\n"),
        "\"FOO BAR\"",
    );
    let pem = fixture("ossl_ed25519.pem");
    assert_invalid(
        PublicKey::parse(&format!("{pem}trailing garbage")),
        "malformed PEM",
    );
    assert_invalid(PublicKey::parse(&format!("{pem}{pem}")), "malformed PEM");
    assert_invalid(
        PublicKey::parse(&format!("leading text\n{pem}")),
        "before the PEM",
    );
    // Two OpenSSH lines.
    let line = fixture("ssh_ed25519.pub");
    assert_invalid(PublicKey::parse(&format!("{line}{line}")), "exactly one");
    // Type name and blob disagree.
    let rsa_line = fixture("ssh_rsa2048.pub");
    let blob = line.split_whitespace().nth(1).expect("blob");
    let _ = rsa_line;
    assert!(matches!(
        PublicKey::parse(&format!("ssh-rsa {blob}")),
        Err(KeyError::Invalid(_))
    ));
    assert_invalid(PublicKey::parse("ssh-dss AAAAB3NzaC1kc3MAAACBAP"), "DSA");
    assert_invalid(
        PublicKey::parse("ssh-ed25519-cert-v01@openssh.com AAAA"),
        "certificates",
    );
    assert_invalid(
        PublicKey::from_jwk(&serde_json::json!("a string")),
        "object",
    );
    assert_invalid(
        PublicKey::from_jwk(&serde_json::json!({"crv":"P-256"})),
        "\"kty\"",
    );
    assert_invalid(
        PublicKey::from_jwk(&serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"A+B/"})),
        "base64url",
    );
    assert_invalid(
        PublicKey::from_jwk(&serde_json::json!({"kty":"OKP","crv":"Ed25519","x":5})),
        "string",
    );
}

#[test]
fn strict_der() {
    let key = PublicKey::parse(&fixture("ossl_ed25519.pem")).expect("ed25519");
    let der = key.spki_der().to_vec();
    assert_eq!(der[0..2], [0x30, 0x2a]);
    // Trailing bytes after the SPKI.
    let mut trailing = der.clone();
    trailing.push(0);
    assert_invalid(PublicKey::from_spki_der(&trailing), "SubjectPublicKeyInfo");
    // BER long-form length where the short form is required.
    let mut ber = vec![0x30, 0x81, 0x2a];
    ber.extend_from_slice(&der[2..]);
    assert_invalid(PublicKey::from_spki_der(&ber), "SubjectPublicKeyInfo");
    // The same inside PEM.
    let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &ber).expect("pem");
    assert_invalid(PublicKey::parse(&pem), "SubjectPublicKeyInfo");
    // Truncated.
    assert_invalid(
        PublicKey::from_spki_der(&der[..der.len() - 1]),
        "SubjectPublicKeyInfo",
    );
    // Ed25519 with (NULL) parameters.
    let with_params = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: der::asn1::ObjectIdentifier::new_unwrap("1.3.101.112"),
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: der::asn1::BitString::from_bytes(&der[12..]).expect("bits"),
    }
    .to_der()
    .expect("der");
    assert_invalid(PublicKey::from_spki_der(&with_params), "parameters");
    // RSA without the NULL parameters.
    let rsa = PublicKey::parse(&fixture("ossl_rsa2048.pem")).expect("rsa");
    let parsed = spki::SubjectPublicKeyInfoRef::try_from(rsa.spki_der()).expect("spki");
    let no_null = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifier {
            oid: parsed.algorithm.oid,
            parameters: None,
        },
        subject_public_key: parsed.subject_public_key,
    }
    .to_der()
    .expect("der");
    assert_invalid(PublicKey::from_spki_der(&no_null), "NULL");
    // PKCS#1 with a non-minimal (padded) INTEGER.
    let n = modulus_2048();
    let mut padded = vec![0x30, 0x82, 0x01, 0x0b, 0x02, 0x82, 0x01, 0x02, 0x00, 0x00];
    padded.extend_from_slice(&n);
    padded.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
    let pem =
        der::pem::encode_string("RSA PUBLIC KEY", der::pem::LineEnding::LF, &padded).expect("pem");
    assert_invalid(PublicKey::parse(&pem), "PKCS#1");
}

/// Replaces the subjectPublicKey of an SPKI, keeping its algorithm identifier.
fn spki_with_key(spki_der: &[u8], key: &[u8]) -> Vec<u8> {
    let parsed = spki::SubjectPublicKeyInfoRef::try_from(spki_der).expect("spki");
    spki::SubjectPublicKeyInfoRef {
        algorithm: parsed.algorithm,
        subject_public_key: der::asn1::BitStringRef::from_bytes(key).expect("bits"),
    }
    .to_der()
    .expect("der")
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_std_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("b64")
}
