//! The SPKI fingerprint (`SHA256:` + unpadded base64 of SHA-256 over the DER SPKI) and the
//! proof-of-possession message built from it.
//!
//! The OpenSSH fingerprint is in `openssh.rs`, the JWK thumbprint in `jwk.rs`.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Prefix of the proof-of-possession message.
const PROOF_PREFIX: &[u8] = b"keymaster-proof-of-possession:";

/// `SHA256:` + unpadded standard base64 of SHA-256 over `spki_der`.
pub(crate) fn spki_fingerprint(spki_der: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(Sha256::digest(spki_der))
    )
}

/// The message a proof of possession signs: the ASCII bytes
/// `keymaster-proof-of-possession:` followed by the key's `fingerprint`.
pub fn proof_message(fingerprint: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(PROOF_PREFIX.len() + fingerprint.len());
    message.extend_from_slice(PROOF_PREFIX);
    message.extend_from_slice(fingerprint.as_bytes());
    message
}
