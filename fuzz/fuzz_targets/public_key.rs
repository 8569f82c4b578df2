//! Key material parsing: the same bytes as text (PEM SPKI, PEM PKCS#1, OpenSSH line), as a JWK
//! and as raw DER SubjectPublicKeyInfo. Never panics; an accepted key converts to every form
//! and its canonical DER reads back as the same key.
#![no_main]

use keymaster_core::key::PublicKey;
use libfuzzer_sys::fuzz_target;

fn check(key: PublicKey) {
    let again = PublicKey::from_spki_der(key.spki_der()).expect("canonical DER reads back");
    assert_eq!(again.spki_der(), key.spki_der());
    assert_eq!(again.fingerprint(), key.fingerprint());
    let _ = key.ssh_fingerprint();
    let _ = key.jwk_thumbprint();
    let _ = key.to_openssh();
    let pem = key.to_pem();
    PublicKey::parse(&pem).expect("its own PEM parses");
    let jwk = key.to_jwk();
    let from_jwk = PublicKey::from_jwk(&jwk).expect("its own JWK parses");
    assert_eq!(from_jwk.spki_der(), key.spki_der());
    let _ = key.verify_proof(b"not a signature");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PublicKey::from_spki_der(data) {
        check(key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = PublicKey::parse(text) {
            check(key);
        }
    }
    if let Ok(jwk) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(key) = PublicKey::from_jwk(&jwk) {
            check(key);
        }
    }
});
