//! The OpenSSH public key line (`ssh-ed25519 AAAA… comment`) and the fingerprint `ssh-keygen -l`
//! prints.
//!
//! The wire format and its base64 are the `ssh-key` crate's. A line is accepted only when its
//! key blob is exactly the canonical encoding of the key it holds, so that the fingerprint
//! reported here is the one `ssh-keygen -lf` prints for the user's own file. X25519 has no
//! OpenSSH form. Not here: private OpenSSH keys (refused in `parse.rs`, used for signing in
//! `generate.rs`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rsa::traits::PublicKeyParts;
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData, RsaPublicKey};
use ssh_key::{HashAlg, Mpint};

use super::material::Material;
use super::KeyError;

/// Parses one OpenSSH public key line; the comment is ignored.
pub(crate) fn parse_line(text: &str) -> Result<Material, KeyError> {
    if text.lines().count() != 1 {
        return Err(KeyError::invalid(
            "expected a PEM public key or exactly one OpenSSH public key line",
        ));
    }
    let mut fields = text.split_ascii_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    match kind {
        "ssh-ed25519" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ssh-rsa" => {}
        "ecdsa-sha2-nistp521" => {
            return Err(KeyError::invalid(
                "the elliptic curve P-521 is not supported; use P-256 or P-384",
            ))
        }
        "ssh-dss" => return Err(KeyError::invalid("DSA keys are not supported")),
        k if k.starts_with("sk-") => {
            return Err(KeyError::invalid(
                "security-key (FIDO) SSH keys are not supported",
            ))
        }
        k if k.contains("-cert-v01@openssh.com") => {
            return Err(KeyError::invalid(
                "OpenSSH certificates are not accepted; send the public key",
            ))
        }
        _ => return Err(KeyError::invalid(
            "unrecognised key format: expected PEM \"PUBLIC KEY\" or \"RSA PUBLIC KEY\", or an \
                 OpenSSH line starting with ssh-ed25519, ecdsa-sha2-nistp256, \
                 ecdsa-sha2-nistp384 or ssh-rsa",
        )),
    }
    let parsed = ssh_key::PublicKey::from_openssh(text)
        .map_err(|e| KeyError::invalid(format!("malformed OpenSSH public key: {e}")))?;
    let material = match parsed.key_data() {
        KeyData::Ed25519(key) => Material::ed25519(&key.0)?,
        KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)) => Material::p256(point.as_bytes())?,
        KeyData::Ecdsa(EcdsaPublicKey::NistP384(point)) => Material::p384(point.as_bytes())?,
        KeyData::Rsa(key) => {
            let n = key.n.as_positive_bytes();
            let e = key.e.as_positive_bytes();
            match (n, e) {
                (Some(n), Some(e)) => Material::rsa(n, e)?,
                _ => return Err(KeyError::invalid("the RSA key has a negative number in it")),
            }
        }
        _ => return Err(KeyError::invalid("unsupported OpenSSH key type")),
    };
    // Refuse blobs that decode to the key but are not its canonical encoding (e.g. padded
    // integers), since their ssh-keygen fingerprint would differ from ours.
    let canonical =
        key_data(&material)?.and_then(|data| ssh_key::PublicKey::new(data, "").to_bytes().ok());
    let given = STANDARD.decode(blob).ok();
    if canonical.is_none() || canonical != given {
        return Err(KeyError::invalid(
            "the OpenSSH key blob is not canonically encoded",
        ));
    }
    Ok(material)
}

/// The OpenSSH line without comment and the `ssh-keygen -l` fingerprint; `None` for X25519.
pub(crate) fn openssh_forms(material: &Material) -> Result<Option<(String, String)>, KeyError> {
    let Some(data) = key_data(material)? else {
        return Ok(None);
    };
    let key = ssh_key::PublicKey::new(data, "");
    let line = key
        .to_openssh()
        .map_err(|_| KeyError::invalid("the key could not be encoded for OpenSSH"))?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok(Some((line, fingerprint)))
}

/// The `ssh-key` representation of validated material; `None` for X25519.
fn key_data(material: &Material) -> Result<Option<KeyData>, KeyError> {
    let unencodable = |_| KeyError::invalid("the key could not be encoded for OpenSSH");
    Ok(Some(match material {
        Material::X25519(_) => return Ok(None),
        Material::Ed25519(key) => KeyData::Ed25519(Ed25519PublicKey(key.to_bytes())),
        Material::P256(key) => KeyData::Ecdsa(
            EcdsaPublicKey::from_sec1_bytes(p256::EncodedPoint::from(key).as_bytes())
                .map_err(unencodable)?,
        ),
        Material::P384(key) => KeyData::Ecdsa(
            EcdsaPublicKey::from_sec1_bytes(p384::EncodedPoint::from(key).as_bytes())
                .map_err(unencodable)?,
        ),
        Material::Rsa(key) => KeyData::Rsa(RsaPublicKey {
            e: Mpint::from_positive_bytes(&key.e().to_bytes_be()).map_err(unencodable)?,
            n: Mpint::from_positive_bytes(&key.n().to_bytes_be()).map_err(unencodable)?,
        }),
    }))
}
