//! Round trips between the formats, generation + signing + proof, and the RFC 7638 thumbprint.

use keymaster_core::key::{
    generate, openssh_private_key, proof_message, sign, Algorithm, GenerateAlgorithm, KeyError,
    PublicKey,
};
use rand::SeedableRng;

use super::support::read_text;

/// One fixture per algorithm (and two RSA sizes).
const FIXTURES: [&str; 8] = [
    "ossl_ed25519.pem",
    "ossl_x25519.pem",
    "ossl_p256.pem",
    "ossl_p384.pem",
    "ossl_rsa2048.pem",
    "ossl_rsa4096.pem",
    "ssh_rsa3072.pub",
    "ssh_ecdsa384.pub",
];

#[test]
fn every_form_parses_back_to_the_same_key() {
    for file in FIXTURES {
        let key = PublicKey::parse(&read_text(&format!("keys/{file}"))).expect(file);
        assert_eq!(
            PublicKey::parse(&key.to_pem()).as_ref(),
            Ok(&key),
            "{file} pem"
        );
        assert_eq!(
            PublicKey::from_jwk(&key.to_jwk()).as_ref(),
            Ok(&key),
            "{file} jwk"
        );
        assert_eq!(
            PublicKey::from_spki_der(key.spki_der()).as_ref(),
            Ok(&key),
            "{file} der"
        );
        match key.to_openssh() {
            Some(line) => {
                assert_eq!(PublicKey::parse(&line).as_ref(), Ok(&key), "{file} openssh");
                // With a comment and surrounding whitespace, too.
                let commented = format!("\n\t{line} some comment with spaces \r\n");
                assert_eq!(PublicKey::parse(&commented).as_ref(), Ok(&key), "{file}");
            }
            None => assert_eq!(key.algorithm(), Algorithm::X25519),
        }
        // PEM with other line widths: 76 columns, one long line, all on one line.
        let pem = key.to_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let (begin, end) = ("-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----");
        let wrapped76: Vec<String> = body
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).expect("ascii"))
            .collect();
        for variant in [
            format!("{begin}\n{}\n{end}\n", wrapped76.join("\n")),
            format!("{begin}\n{body}\n{end}"),
            format!("{begin} {body} {end}"),
        ] {
            assert_eq!(
                PublicKey::parse(&variant).as_ref(),
                Ok(&key),
                "{file}: {variant}"
            );
        }
        // Surrounding whitespace and CRLF line endings in PEM.
        let crlf = format!("  \r\n{}\r\n ", key.to_pem().replace('\n', "\r\n"));
        assert_eq!(PublicKey::parse(&crlf).as_ref(), Ok(&key), "{file} crlf");
    }
}

#[test]
fn jwk_members() {
    let ed = PublicKey::parse(&read_text("keys/ossl_ed25519.pem")).expect("ed25519");
    let jwk = ed.to_jwk();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk.as_object().map(|o| o.len()), Some(3));
    let p = PublicKey::parse(&read_text("keys/ossl_p384.pem")).expect("p384");
    let jwk = p.to_jwk();
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-384"))
    );
    assert_eq!(jwk["x"].as_str().map(str::len), Some(64)); // 48 bytes
    let r = PublicKey::parse(&read_text("keys/ossl_rsa2048.pem")).expect("rsa");
    assert_eq!(r.to_jwk()["e"], "AQAB");
}

#[test]
fn rfc7638_thumbprint_example() {
    // RFC 7638 section 3.1.
    let jwk = serde_json::json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    let key = PublicKey::from_jwk(&jwk).expect("RFC 7638 key");
    assert_eq!(
        key.jwk_thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(key.algorithm(), Algorithm::Rsa(2048));
}

#[test]
fn rfc8037_thumbprint_example() {
    // RFC 8037 appendix A.3.
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let key = PublicKey::from_jwk(&jwk).expect("RFC 8037 key");
    assert_eq!(
        key.jwk_thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn generated_pairs_sign_valid_proofs() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (name, alg, expected) in [
        ("ed25519", GenerateAlgorithm::Ed25519, Algorithm::Ed25519),
        ("p256", GenerateAlgorithm::P256, Algorithm::P256),
        ("rsa-3072", GenerateAlgorithm::Rsa3072, Algorithm::Rsa(3072)),
    ] {
        assert_eq!(name.parse::<GenerateAlgorithm>(), Ok(alg));
        assert_eq!(alg.to_string(), name);
        let (public, private) = generate(alg, &mut rng).expect(name);
        assert_eq!(public.algorithm(), expected);
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}"
        );
        // The private half is never accepted as a public key.
        assert_eq!(
            PublicKey::parse(&private),
            Err(KeyError::PrivateKeyRejected)
        );
        // PKCS#8 version 1, without the public key: what OpenSSL 3.0, Python and Node read (the
        // e2e test `generated_keys` loads it in each).
        let (_, der) = pkcs8::der::pem::decode_vec(private.as_bytes()).expect(name);
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).expect(name);
        assert_eq!(info.version(), pkcs8::Version::V1, "{name}");
        let proof = sign(&private, &proof_message(&public.fingerprint())).expect(name);
        assert_eq!(public.verify_proof(&proof), Ok(()), "{name}");
        // The OpenSSH form is the same key, with the comment given.
        let openssh = openssh_private_key(&private, "laptop").expect(name);
        let parsed = ssh_key::PrivateKey::from_openssh(openssh.as_bytes()).expect(name);
        assert_eq!(parsed.comment(), "laptop", "{name}");
        assert!(!parsed.is_encrypted(), "{name}");
        let line = parsed.public_key().to_openssh().expect(name);
        assert_eq!(
            PublicKey::parse(&line).expect(name).fingerprint(),
            public.fingerprint(),
            "{name}"
        );
        let signed = sign(&openssh, b"from the OpenSSH form").expect(name);
        assert_eq!(
            public.verify(b"from the OpenSSH form", &signed),
            Ok(()),
            "{name}"
        );
        // A proof by another key of the same algorithm does not verify.
        let (other, other_private) = generate(alg, &mut rng).expect(name);
        let foreign = sign(&other_private, &proof_message(&public.fingerprint())).expect(name);
        assert_ne!(other, public);
        assert_eq!(
            public.verify_proof(&foreign),
            Err(KeyError::InvalidProof),
            "{name}"
        );
    }
    for bad in ["rsa-2048", "x25519", "P256", ""] {
        assert!(
            matches!(bad.parse::<GenerateAlgorithm>(), Err(KeyError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn proof_message_format() {
    assert_eq!(
        proof_message("SHA256:abc"),
        b"keymaster-proof-of-possession:SHA256:abc".to_vec()
    );
}

#[test]
fn compressed_ec_point_is_canonicalised() {
    use der::Encode;
    let key = PublicKey::parse(&read_text("keys/ossl_p256.pem")).expect("p256");
    let jwk = key.to_jwk();
    let y_last = {
        use base64::Engine;
        let y = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk["y"].as_str().expect("y"))
            .expect("b64");
        y[31]
    };
    let x = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().expect("x"))
            .expect("b64")
    };
    let mut compressed = vec![if y_last & 1 == 1 { 0x03 } else { 0x02 }];
    compressed.extend_from_slice(&x);
    let parsed = spki::SubjectPublicKeyInfoRef::try_from(key.spki_der()).expect("spki");
    let spki = spki::SubjectPublicKeyInfoRef {
        algorithm: parsed.algorithm,
        subject_public_key: der::asn1::BitStringRef::from_bytes(&compressed).expect("bits"),
    }
    .to_der()
    .expect("der");
    let from_compressed = PublicKey::from_spki_der(&spki).expect("compressed point");
    assert_eq!(from_compressed, key);
    assert_eq!(from_compressed.fingerprint(), key.fingerprint());
}
