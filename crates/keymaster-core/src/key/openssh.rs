//! The OpenSSH public key line (`ssh-ed25519 AAAA… comment`) and the fingerprint `ssh-keygen -l`
//! prints.
//!
//! The wire format and its base64 are the `ssh-key` crate's. A line is accepted only when its
//! key blob is exactly the canonical encoding of the key it holds, so that the fingerprint
//! reported here is the one `ssh-keygen -lf` prints for the user's own file. X25519 has no
//! OpenSSH form. Not here: private OpenSSH keys (refused in `parse.rs`, used for signing in
//! `generate.rs`).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData, RsaPublicKey};
use ssh_key::Mpint;

use super::material::Material;
use super::KeyError;

/// The OpenSSH wire encoding of an Ed25519 key (RFC 8709) before its 32 key bytes: the
/// length-prefixed name `ssh-ed25519`, then the length of the key.
const ED25519_WIRE_PREFIX: [u8; 19] = [
    0, 0, 0, 11, b's', b's', b'h', b'-', b'e', b'd', b'2', b'5', b'5', b'1', b'9', 0, 0, 0, 32,
];

/// A key's OpenSSH wire encoding (the blob of its public key line) and the fingerprint
/// `ssh-keygen -l` prints for it. The line itself is made from the blob when asked for
/// ([`line`]): a deposit answers with the fingerprint only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SshForms {
    /// The key blob (`string` algorithm name, then the key's fields).
    pub(crate) wire: Vec<u8>,
    /// `SHA256:` + unpadded standard base64 of SHA-256 over `wire`.
    pub(crate) fingerprint: String,
}

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
    if let Some(raw) = canonical_ed25519_line(text) {
        return Material::ed25519(&raw);
    }
    parse_line_with_ssh_key(blob, text)
}

/// The 32 key bytes of an `ssh-ed25519` line whose blob is exactly the canonical encoding, read
/// without the `ssh-key` crate's parse and re-encoding; `None` for anything else, which then
/// takes the general path (and gets its answer, an error included, from there).
///
/// Accepts only what [`parse_line_with_ssh_key`] accepts with the same key: the name and a
/// single space, then a base64 field of the characters `ssh-key` reads as one (ended by a space
/// or the end; what follows is the comment, which `ssh-key` takes as it is), in strict padded
/// base64 (as `ssh-key`'s reader), decoding to the 51 bytes of the canonical encoding.
fn canonical_ed25519_line(text: &str) -> Option<[u8; 32]> {
    let rest = text.strip_prefix("ssh-ed25519 ")?;
    let end = rest
        .bytes()
        .position(|b| !is_ssh_field_byte(b))
        .unwrap_or(rest.len());
    if end < rest.len() && rest.as_bytes()[end] != b' ' {
        return None;
    }
    let wire = STANDARD.decode(&rest[..end]).ok()?;
    wire.strip_prefix(&ED25519_WIRE_PREFIX[..])?.try_into().ok()
}

/// A byte that `ssh-key` reads as part of a field of a public key line.
fn is_ssh_field_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'/' | b'=' | b'@' | b'.')
}

/// [`parse_line`] by the `ssh-key` crate, for every key type and every malformed line; `blob`
/// is the line's second field.
fn parse_line_with_ssh_key(blob: &str, text: &str) -> Result<Material, KeyError> {
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

/// The OpenSSH blob and `ssh-keygen -l` fingerprint of a key; `None` for X25519.
pub(crate) fn openssh_forms(material: &Material) -> Result<Option<SshForms>, KeyError> {
    let wire = match material {
        Material::X25519(_) => return Ok(None),
        // The fixed layout, without the `ssh-key` crate's encoder.
        Material::Ed25519(key) => ed25519_wire(key.as_bytes()),
        _ => {
            let Some(data) = key_data(material)? else {
                return Ok(None);
            };
            ssh_key::PublicKey::new(data, "")
                .to_bytes()
                .map_err(|_| KeyError::invalid("the key could not be encoded for OpenSSH"))?
        }
    };
    let fingerprint = wire_fingerprint(&wire);
    Ok(Some(SshForms { wire, fingerprint }))
}

/// The OpenSSH blob of an Ed25519 key.
pub(crate) fn ed25519_wire(raw: &[u8; 32]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(ED25519_WIRE_PREFIX.len() + 32);
    wire.extend_from_slice(&ED25519_WIRE_PREFIX);
    wire.extend_from_slice(raw);
    wire
}

/// What `ssh-keygen -l` prints for a key blob: `SHA256:` + unpadded base64 of its SHA-256.
pub(crate) fn wire_fingerprint(wire: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(wire)))
}

/// The public key line without comment of a key blob: the algorithm name the blob starts with,
/// a space, the blob in base64 (what `ssh_key::PublicKey::to_openssh` writes).
pub(crate) fn line(wire: &[u8]) -> String {
    let name = wire
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .and_then(|len| wire.get(4..4 + u32::from_be_bytes(len) as usize))
        .and_then(|name| std::str::from_utf8(name).ok())
        .unwrap_or_default();
    format!("{name} {}", STANDARD.encode(wire))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{generate, GenerateAlgorithm};
    use proptest::prelude::*;

    /// The line with the fast path, against the `ssh-key` crate's path alone.
    fn both(text: &str) -> (Result<Material, KeyError>, Result<Material, KeyError>) {
        let blob = text.split_ascii_whitespace().nth(1).unwrap_or_default();
        (parse_line(text), parse_line_with_ssh_key(blob, text))
    }

    fn ed25519_line(raw: &[u8; 32]) -> String {
        line(&ed25519_wire(raw))
    }

    #[test]
    fn the_ed25519_fast_path_answers_as_ssh_key_does() {
        let (key, _) = generate(GenerateAlgorithm::Ed25519, &mut rand::rngs::OsRng).unwrap();
        let good = key.to_openssh().unwrap();
        let (name, blob) = good.split_once(' ').unwrap();
        let mut flipped_bits = blob.to_owned();
        // The last character before the padding carries two unused bits: set one.
        let at = flipped_bits.len() - 2;
        let c = flipped_bits.as_bytes()[at];
        let replacement = if c == b'A' { "B" } else { "A" };
        flipped_bits.replace_range(at..at + 1, replacement);
        let mut other_name = ed25519_wire(&[7; 32]);
        other_name[4] = b'S';
        let variants = [
            good.clone(),
            format!("{good} user@host"),
            format!("{good} two words  and\tspaces"),
            format!("{good} "),
            format!("{name}  {blob}"),
            format!("{name}\t{blob}"),
            format!("{name} {blob}\tcomment"),
            format!("{name} {}", blob.trim_end_matches('=')),
            format!("{name} {blob}="),
            format!("{name} {flipped_bits}"),
            format!("{name} {blob}AAAA"),
            format!("{name} {}", &blob[4..]),
            format!("{name} {}", STANDARD.encode(&other_name)),
            format!("{name} {}", STANDARD.encode(&ed25519_wire(&[0; 32])[..50])),
            format!("{name} @{blob}"),
            format!("{name} {blob}@ comment"),
            ed25519_line(&[0; 32]),
            ed25519_line(&[1; 32]),
            ed25519_line(&[0xff; 32]),
            format!("{name} "),
            name.to_owned(),
        ];
        for text in variants {
            let (fast, general) = both(&text);
            assert_eq!(fast, general, "{text:?}");
        }
        assert!(both(&good).0.is_ok());
    }

    #[test]
    fn forms_are_what_ssh_key_writes() {
        for alg in [GenerateAlgorithm::Ed25519, GenerateAlgorithm::P256] {
            let (key, _) = generate(alg, &mut rand::rngs::OsRng).unwrap();
            let data = key_data(&key.material).unwrap().unwrap();
            let reference = ssh_key::PublicKey::new(data, "");
            let forms = openssh_forms(&key.material).unwrap().unwrap();
            assert_eq!(forms.wire, reference.to_bytes().unwrap());
            assert_eq!(line(&forms.wire), reference.to_openssh().unwrap());
            assert_eq!(
                forms.fingerprint,
                reference.fingerprint(ssh_key::HashAlg::Sha256).to_string()
            );
        }
    }

    proptest! {
        #[test]
        fn any_ed25519_line_parses_as_ssh_key_parses_it(
            raw in any::<[u8; 32]>(),
            comment in "[ -~]{0,12}",
        ) {
            let text = format!("{} {comment}", ed25519_line(&raw));
            let text = text.trim();
            let (fast, general) = both(text);
            prop_assert_eq!(fast, general);
        }
    }
}
