//! JSON Web Keys: reading a public JWK (RFC 7517, 7518 §6, 8037), writing one, and the RFC 7638
//! thumbprint.
//!
//! Members other than the key's own (`alg`, `use`, `kid`, `key_ops`, …) are ignored on input
//! and not written on output. A JWK with private members is refused as a private key. RSA `n`
//! and `e` with leading zero octets are accepted and written back minimal; EC `x`/`y` must have
//! the full field length (RFC 7518 §6.2.1.2). Not here: validation of the values
//! (`material.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::material::Material;
use super::KeyError;

/// Members that only a private JWK carries (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Parses a public JWK into validated material.
pub(crate) fn parse_jwk(jwk: &Value) -> Result<Material, KeyError> {
    let obj = jwk
        .as_object()
        .ok_or_else(|| KeyError::invalid("a JWK must be a JSON object"))?;
    if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
        return Err(KeyError::PrivateKeyRejected);
    }
    match string_member(obj, "kty")? {
        "OKP" => {
            let crv = string_member(obj, "crv")?;
            let x = bytes_member(obj, "x")?;
            match crv {
                "Ed25519" => Material::ed25519(&x),
                "X25519" => Material::x25519(&x),
                other => Err(unsupported_curve(other, "Ed25519 or X25519")),
            }
        }
        "EC" => {
            let crv = string_member(obj, "crv")?;
            let len = match crv {
                "P-256" => 32,
                "P-384" => 48,
                other => return Err(unsupported_curve(other, "P-256 or P-384")),
            };
            let x = bytes_member(obj, "x")?;
            let y = bytes_member(obj, "y")?;
            if x.len() != len || y.len() != len {
                return Err(KeyError::invalid(format!(
                    "JWK \"x\" and \"y\" of a {crv} key must be {len} bytes each"
                )));
            }
            let mut sec1 = Vec::with_capacity(1 + 2 * len);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            if crv == "P-256" {
                Material::p256(&sec1)
            } else {
                Material::p384(&sec1)
            }
        }
        "RSA" => {
            let n = bytes_member(obj, "n")?;
            let e = bytes_member(obj, "e")?;
            Material::rsa(&n, &e)
        }
        "oct" => Err(KeyError::invalid(
            "a symmetric JWK (kty \"oct\") is not a public key; deposit it as a secret",
        )),
        other => Err(KeyError::invalid(format!(
            "unsupported JWK key type {other:?}; expected \"OKP\", \"EC\" or \"RSA\""
        ))),
    }
}

/// The public JWK of validated material.
pub(crate) fn to_jwk(material: &Material) -> Value {
    let mut obj = Map::new();
    for (name, value) in members(material) {
        obj.insert(name.to_owned(), json!(value));
    }
    Value::Object(obj)
}

/// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, without
/// whitespace; base64url without padding.
pub(crate) fn thumbprint(material: &Material) -> String {
    match material {
        // The members of an OKP key in their order, without building and sorting the list.
        Material::Ed25519(key) => {
            okp_thumbprint("Ed25519", &URL_SAFE_NO_PAD.encode(key.as_bytes()))
        }
        _ => thumbprint_of_members(material),
    }
}

/// The thumbprint of an OKP key (`crv` and `x`, base64url): what [`thumbprint`] computes.
pub(crate) fn okp_thumbprint(crv: &str, x: &str) -> String {
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let input = format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(input))
}

/// [`thumbprint`] from the list of required members, for every key type.
fn thumbprint_of_members(material: &Material) -> String {
    let mut members = members(material);
    members.sort_by(|a, b| a.0.cmp(b.0));
    // Member names and values are fixed ASCII names and base64url, so none needs JSON escaping.
    let body = members
        .iter()
        .map(|(name, value)| format!("\"{name}\":\"{value}\""))
        .collect::<Vec<_>>()
        .join(",");
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{body}}}")))
}

/// The required public members of the key's JWK (exactly those RFC 7638 hashes).
fn members(material: &Material) -> Vec<(&'static str, String)> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match material {
        Material::Ed25519(key) => vec![
            ("kty", "OKP".into()),
            ("crv", "Ed25519".into()),
            ("x", b64(key.as_bytes())),
        ],
        Material::X25519(key) => vec![
            ("kty", "OKP".into()),
            ("crv", "X25519".into()),
            ("x", b64(key)),
        ],
        Material::P256(key) => {
            let point = p256::EncodedPoint::from(key);
            ec_members(
                "P-256",
                point.x().map(|x| x.as_slice()),
                point.y().map(|y| y.as_slice()),
            )
        }
        Material::P384(key) => {
            let point = p384::EncodedPoint::from(key);
            ec_members(
                "P-384",
                point.x().map(|x| x.as_slice()),
                point.y().map(|y| y.as_slice()),
            )
        }
        Material::Rsa(key) => vec![
            ("kty", "RSA".into()),
            ("n", b64(&key.n().to_bytes_be())),
            ("e", b64(&key.e().to_bytes_be())),
        ],
    }
}

fn ec_members(crv: &str, x: Option<&[u8]>, y: Option<&[u8]>) -> Vec<(&'static str, String)> {
    // A validated point is never the identity, and EncodedPoint::from(PublicKey) is uncompressed,
    // so x and y are always present.
    vec![
        ("kty", "EC".into()),
        ("crv", crv.into()),
        ("x", URL_SAFE_NO_PAD.encode(x.unwrap_or_default())),
        ("y", URL_SAFE_NO_PAD.encode(y.unwrap_or_default())),
    ]
}

fn string_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(KeyError::invalid(format!(
            "JWK member {name:?} must be a string"
        ))),
        None => Err(KeyError::invalid(format!("JWK member {name:?} is missing"))),
    }
}

fn bytes_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(string_member(obj, name)?)
        .map_err(|_| KeyError::invalid(format!("JWK member {name:?} is not unpadded base64url")))
}

fn unsupported_curve(crv: &str, expected: &str) -> KeyError {
    KeyError::invalid(format!(
        "the JWK curve {crv:?} is not supported; use {expected}"
    ))
}

#[cfg(test)]
mod thumbprint_tests {
    use super::*;

    #[test]
    fn the_ed25519_thumbprint_is_that_of_its_sorted_members() {
        for _ in 0..8 {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
            let material = Material::Ed25519(key);
            assert_eq!(thumbprint(&material), thumbprint_of_members(&material));
        }
    }
}
