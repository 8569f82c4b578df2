//! The public forms of a key that this service encoded and validated itself at deposit, as a
//! retrieval hands them out.
//!
//! [`PublicKey::from_spki_der`] validates the key again (for Ed25519: point decompression, the
//! canonical-encoding and small-order checks), which a key read back from the store has passed
//! already. For Ed25519 the forms are plain encodings of the 32 key bytes, so they are built
//! here without curve arithmetic; other algorithms go through the full parse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::material::ED25519_SPKI_PREFIX;
use super::openssh;
use super::{KeyError, PublicKey};

/// A key's PEM `PUBLIC KEY`, OpenSSH line (`None` for X25519) and public JWK, with the
/// fingerprints of the last two (so that the store need not keep them).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicForms {
    /// As [`PublicKey::to_pem`].
    pub pem: String,
    /// As [`PublicKey::to_openssh`].
    pub openssh: Option<String>,
    /// As [`PublicKey::ssh_fingerprint`].
    pub ssh_fingerprint: Option<String>,
    /// As [`PublicKey::to_jwk`].
    pub jwk: serde_json::Value,
    /// As [`PublicKey::jwk_thumbprint`].
    pub jwk_thumbprint: String,
}

impl PublicKey {
    /// The forms of a canonical DER SPKI that [`PublicKey::spki_der`] produced (a key validated
    /// when it was deposited). Identical to parsing it with [`PublicKey::from_spki_der`] and
    /// asking for each form, but an Ed25519 key is not validated a second time. Never use this
    /// for DER from outside: it does not check that an Ed25519 key is a valid point.
    pub fn forms_of_stored_spki(der: &[u8]) -> Result<PublicForms, KeyError> {
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            if let Ok(raw) = <&[u8; 32]>::try_from(raw) {
                let wire = openssh::ed25519_wire(raw);
                let x = URL_SAFE_NO_PAD.encode(raw);
                let jwk_thumbprint = super::jwk::okp_thumbprint("Ed25519", &x);
                return Ok(PublicForms {
                    pem: super::parse::spki_pem(der),
                    openssh: Some(openssh::line(&wire)),
                    ssh_fingerprint: Some(openssh::wire_fingerprint(&wire)),
                    jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                    jwk_thumbprint,
                });
            }
        }
        let key = PublicKey::from_spki_der(der)?;
        Ok(PublicForms {
            pem: key.to_pem(),
            openssh: key.to_openssh(),
            ssh_fingerprint: key.ssh_fingerprint(),
            jwk: key.to_jwk(),
            jwk_thumbprint: key.jwk_thumbprint(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{generate, GenerateAlgorithm};

    #[test]
    fn stored_forms_equal_the_full_parse() {
        for alg in [GenerateAlgorithm::Ed25519, GenerateAlgorithm::P256] {
            for _ in 0..8 {
                let (key, _) = generate(alg, &mut rand::rngs::OsRng).unwrap();
                let full = PublicKey::from_spki_der(key.spki_der()).unwrap();
                let forms = PublicKey::forms_of_stored_spki(key.spki_der()).unwrap();
                assert_eq!(forms.pem, full.to_pem());
                assert_eq!(forms.openssh, full.to_openssh());
                assert_eq!(forms.jwk, full.to_jwk());
                assert_eq!(forms.ssh_fingerprint, full.ssh_fingerprint());
                assert_eq!(forms.jwk_thumbprint, full.jwk_thumbprint());
            }
        }
    }
}
