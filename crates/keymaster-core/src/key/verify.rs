//! Signature verification with a validated public key: what checks a proof of possession.
//!
//! - Ed25519: RFC 8032 with `verify_strict` (canonical `s`, small-order `R` refused).
//! - ECDSA: P-256 with SHA-256, P-384 with SHA-384; the signature is a strict-DER
//!   `ECDSA-Sig-Value`. BER forms (long-form lengths, padded integers) are refused; high `s`
//!   values are accepted, as in X9.62 and OpenSSL (they are not a forgery).
//! - RSA: PKCS#1 v1.5 with SHA-256; the `DigestInfo` must be exactly the DER one with NULL
//!   parameters (the variant without NULL is refused).
//! - X25519 keys cannot sign: always [`KeyError::InvalidProof`].
//!
//! Not here: building the proof message (`fingerprint.rs`).

use signature::Verifier;

use super::material::Material;
use super::KeyError;

/// Verifies `signature` over `message`; every failure is [`KeyError::InvalidProof`].
pub(crate) fn verify(
    material: &Material,
    message: &[u8],
    signature: &[u8],
) -> Result<(), KeyError> {
    let valid = match material {
        Material::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        Material::X25519(_) => false,
        Material::P256(key) => p256::ecdsa::Signature::from_der(signature).is_ok_and(|sig| {
            p256::ecdsa::VerifyingKey::from(key)
                .verify(message, &sig)
                .is_ok()
        }),
        Material::P384(key) => p384::ecdsa::Signature::from_der(signature).is_ok_and(|sig| {
            p384::ecdsa::VerifyingKey::from(key)
                .verify(message, &sig)
                .is_ok()
        }),
        Material::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|sig| {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
                .verify(message, &sig)
                .is_ok()
        }),
    };
    if valid {
        Ok(())
    } else {
        Err(KeyError::InvalidProof)
    }
}
