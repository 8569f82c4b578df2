//! The validated key material behind a [`PublicKey`](super::PublicKey) and its canonical SPKI DER.
//!
//! Every input format ends up in one of the `Material::*` constructors here, so every validation
//! rule (curve membership, small-order points, canonical encodings, RSA bounds) is written once.
//! This file does not know any text format; parsing lives in `parse.rs`, `openssh.rs`, `jwk.rs`.

use der::asn1::ObjectIdentifier;
use der::Encode;
use rsa::traits::PublicKeyParts;
use rsa::BigUint;

use super::{Algorithm, KeyError};

/// Smallest accepted RSA modulus, in bits.
pub(crate) const RSA_MIN_BITS: u32 = 2048;
/// Largest accepted RSA modulus, in bits.
pub(crate) const RSA_MAX_BITS: u32 = 8192;
/// Largest accepted RSA public exponent: 2^32 + 1.
const RSA_MAX_EXPONENT: u64 = (1 << 32) + 1;

/// id-Ed25519 (RFC 8410).
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// id-X25519 (RFC 8410).
pub(crate) const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
/// id-ecPublicKey (RFC 5480).
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / P-256.
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 / P-384.
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// rsaEncryption (RFC 3279).
pub(crate) const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410) before its 32 key bytes.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Little-endian u-coordinates of the low-order points of Curve25519 and its twist, in canonical
/// form (u < p): 0, 1, the two points of order 8, and p − 1. (As in libsodium's blocklist; with
/// non-canonical encodings refused separately, this list is complete.)
const X25519_LOW_ORDER: [[u8; 32]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// A public key that has passed every validation rule of this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Material {
    /// A canonical, decompressible Ed25519 point of large order.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// A canonical, non-low-order X25519 u-coordinate (little-endian).
    X25519([u8; 32]),
    /// A P-256 point on the curve, not the identity.
    P256(p256::PublicKey),
    /// A P-384 point on the curve, not the identity.
    P384(p384::PublicKey),
    /// An RSA key within the size and exponent bounds.
    Rsa(rsa::RsaPublicKey),
}

impl Material {
    /// Validates a raw 32-byte Ed25519 public key (RFC 8032 encoding).
    pub(crate) fn ed25519(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            KeyError::invalid(format!(
                "an Ed25519 public key is 32 bytes, this one is {}",
                bytes.len()
            ))
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::invalid("the Ed25519 public key is not a point on the curve"))?;
        if !ed25519_is_canonical(&bytes) {
            return Err(KeyError::invalid(
                "the Ed25519 public key is not canonically encoded",
            ));
        }
        if key.is_weak() {
            return Err(KeyError::invalid(
                "the Ed25519 public key is a small-order point, for which anyone can forge signatures",
            ));
        }
        Ok(Material::Ed25519(key))
    }

    /// Validates a raw 32-byte X25519 public key (RFC 7748 u-coordinate, little-endian).
    pub(crate) fn x25519(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            KeyError::invalid(format!(
                "an X25519 public key is 32 bytes, this one is {}",
                bytes.len()
            ))
        })?;
        if !x25519_is_canonical(&bytes) {
            return Err(KeyError::invalid(
                "the X25519 public key is not canonically encoded (u must be below 2^255-19)",
            ));
        }
        if X25519_LOW_ORDER.contains(&bytes) {
            return Err(KeyError::invalid(
                "the X25519 public key is a low-order point, which makes every shared secret predictable",
            ));
        }
        Ok(Material::X25519(bytes))
    }

    /// Validates a SEC1 point (compressed or uncompressed) on P-256.
    pub(crate) fn p256(sec1: &[u8]) -> Result<Self, KeyError> {
        check_sec1_form(sec1, 32, "P-256")?;
        p256::PublicKey::from_sec1_bytes(sec1)
            .map(Material::P256)
            .map_err(|_| KeyError::invalid("the P-256 public key is not a point on the curve"))
    }

    /// Validates a SEC1 point (compressed or uncompressed) on P-384.
    pub(crate) fn p384(sec1: &[u8]) -> Result<Self, KeyError> {
        check_sec1_form(sec1, 48, "P-384")?;
        p384::PublicKey::from_sec1_bytes(sec1)
            .map(Material::P384)
            .map_err(|_| KeyError::invalid("the P-384 public key is not a point on the curve"))
    }

    /// Validates an RSA key from big-endian unsigned modulus and exponent (leading zero bytes
    /// are ignored).
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = BigUint::from_bytes_be(n);
        let e = BigUint::from_bytes_be(e);
        let bits = n.bits();
        if bits < RSA_MIN_BITS as usize || bits > RSA_MAX_BITS as usize {
            return Err(KeyError::invalid(format!(
                "RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, this one has {bits}"
            )));
        }
        if !is_odd(&n) {
            return Err(KeyError::invalid("the RSA modulus is even"));
        }
        if e < BigUint::from(3u8) || e > BigUint::from(RSA_MAX_EXPONENT) || !is_odd(&e) {
            return Err(KeyError::invalid(
                "the RSA public exponent must be odd and between 3 and 2^32+1 (usually 65537)",
            ));
        }
        rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS as usize)
            .map(Material::Rsa)
            .map_err(|_| KeyError::invalid("the RSA public key is not valid"))
    }

    /// The algorithm (and RSA size) of this key.
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Material::Ed25519(_) => Algorithm::Ed25519,
            Material::X25519(_) => Algorithm::X25519,
            Material::P256(_) => Algorithm::P256,
            Material::P384(_) => Algorithm::P384,
            // The size was checked to be at most 8192 bits at construction.
            Material::Rsa(key) => Algorithm::Rsa(u32::try_from(key.n().bits()).unwrap_or(u32::MAX)),
        }
    }

    /// The canonical DER SubjectPublicKeyInfo: RFC 8410 for Ed25519/X25519 (no parameters),
    /// RFC 5480 with a named curve and an uncompressed point for EC, RFC 3279 `rsaEncryption`
    /// with NULL parameters for RSA.
    pub(crate) fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        if let Material::Ed25519(key) = self {
            // A fixed layout: the prefix, then the 32 key bytes (what the DER encoder below
            // writes, without its allocations).
            let mut der = Vec::with_capacity(ED25519_SPKI_PREFIX.len() + 32);
            der.extend_from_slice(&ED25519_SPKI_PREFIX);
            der.extend_from_slice(key.as_bytes());
            return Ok(der);
        }
        self.to_spki_der_by_encoder()
    }

    /// [`Material::to_spki_der`] by the `spki` crate's DER encoder, for every algorithm.
    fn to_spki_der_by_encoder(&self) -> Result<Vec<u8>, KeyError> {
        let (algorithm, key): (spki::AlgorithmIdentifierOwned, Vec<u8>) = match self {
            Material::Ed25519(key) => (plain_alg(OID_ED25519), key.to_bytes().to_vec()),
            Material::X25519(key) => (plain_alg(OID_X25519), key.to_vec()),
            Material::P256(key) => (
                ec_alg(OID_P256)?,
                p256::EncodedPoint::from(key).as_bytes().to_vec(),
            ),
            Material::P384(key) => (
                ec_alg(OID_P384)?,
                p384::EncodedPoint::from(key).as_bytes().to_vec(),
            ),
            Material::Rsa(key) => (
                spki::AlgorithmIdentifierOwned {
                    oid: OID_RSA,
                    parameters: Some(der::asn1::Null.into()),
                },
                rsa_pkcs1_der(key)?,
            ),
        };
        let spki = spki::SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: der::asn1::BitString::from_bytes(&key).map_err(encode_error)?,
        };
        spki.to_der().map_err(encode_error)
    }
}

/// PKCS#1 RSAPublicKey DER of an RSA key.
pub(crate) fn rsa_pkcs1_der(key: &rsa::RsaPublicKey) -> Result<Vec<u8>, KeyError> {
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    pkcs1::RsaPublicKey {
        modulus: der::asn1::UintRef::new(&n).map_err(encode_error)?,
        public_exponent: der::asn1::UintRef::new(&e).map_err(encode_error)?,
    }
    .to_der()
    .map_err(encode_error)
}

/// An encoding failure of a value we built ourselves; it cannot happen for validated material,
/// but is reported rather than panicking.
fn encode_error(_: der::Error) -> KeyError {
    KeyError::invalid("the key could not be DER-encoded")
}

fn plain_alg(oid: ObjectIdentifier) -> spki::AlgorithmIdentifierOwned {
    spki::AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

fn ec_alg(curve: ObjectIdentifier) -> Result<spki::AlgorithmIdentifierOwned, KeyError> {
    Ok(spki::AlgorithmIdentifierOwned {
        oid: OID_EC_PUBLIC_KEY,
        parameters: Some(der::Any::encode_from(&curve).map_err(encode_error)?),
    })
}

/// Checks the SEC1 form byte and length so that the message says what is wrong; the identity
/// (a single 0x00 byte) is refused here too.
fn check_sec1_form(sec1: &[u8], field_len: usize, curve: &str) -> Result<(), KeyError> {
    match sec1.first() {
        Some(0x04) if sec1.len() == 1 + 2 * field_len => Ok(()),
        Some(0x02 | 0x03) if sec1.len() == 1 + field_len => Ok(()),
        Some(0x00) => Err(KeyError::invalid(format!(
            "the {curve} public key is the point at infinity"
        ))),
        _ => Err(KeyError::invalid(format!(
            "the {curve} public key is not a SEC1 point of the right length ({} bytes uncompressed)",
            1 + 2 * field_len
        ))),
    }
}

fn is_odd(n: &BigUint) -> bool {
    n.to_bytes_be().last().is_some_and(|b| b & 1 == 1)
}

/// For an encoding that decompressed: true when it is the one that compressing the point gives
/// back (y < p, and no sign bit on x = 0, which only y = ±1 have). The same answer as
/// `compress(decompress(b)) == b` without compressing, whose field inversion cost about as much
/// as the decompression itself.
fn ed25519_is_canonical(b: &[u8; 32]) -> bool {
    let mut y = *b;
    let sign = y[31] & 0x80 != 0;
    y[31] &= 0x7f;
    if !x25519_is_canonical(&y) {
        return false; // y >= p
    }
    let one = y[0] == 1 && y[1..].iter().all(|&v| v == 0);
    let minus_one = y[0] == 0xec && y[1..31].iter().all(|&v| v == 0xff) && y[31] == 0x7f;
    !(sign && (one || minus_one))
}

/// u < 2^255 − 19 with the top bit clear.
fn x25519_is_canonical(u: &[u8; 32]) -> bool {
    // p = 2^255 - 19 = 0x7fff…ffed (little-endian: ed ff … ff 7f).
    if u[31] & 0x80 != 0 {
        return false;
    }
    if u[31] != 0x7f || u[1..31].iter().any(|&b| b != 0xff) {
        return true;
    }
    u[0] < 0xed
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ed25519_spki_is_what_the_der_encoder_writes() {
        for _ in 0..16 {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
            let material = super::Material::Ed25519(key);
            assert_eq!(
                material.to_spki_der().unwrap(),
                material.to_spki_der_by_encoder().unwrap()
            );
        }
    }

    use super::ed25519_is_canonical;
    use proptest::prelude::*;

    /// What `ed25519_is_canonical` replaces: decompress, compress, compare.
    fn by_round_trip(b: &[u8; 32]) -> Option<bool> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(b).ok()?;
        Some(key.to_edwards().compress().to_bytes() == *b)
    }

    /// Encodings near the edges: y in [p - 3, 2^255), and y = 0, 1, 2 and p - 1, each with and
    /// without the sign bit.
    fn edge_cases() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for low in [0xea, 0xeb, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xfe, 0xff] {
            let mut y = [0xff; 32];
            y[0] = low;
            y[31] = 0x7f;
            out.push(y);
        }
        for small in [0u8, 1, 2] {
            let mut y = [0; 32];
            y[0] = small;
            out.push(y);
        }
        let with_sign: Vec<[u8; 32]> = out
            .iter()
            .map(|y| {
                let mut s = *y;
                s[31] |= 0x80;
                s
            })
            .collect();
        out.extend(with_sign);
        out
    }

    #[test]
    fn canonical_check_agrees_with_the_round_trip_at_the_edges() {
        let mut decompressed = 0;
        for b in edge_cases() {
            if let Some(expected) = by_round_trip(&b) {
                decompressed += 1;
                assert_eq!(ed25519_is_canonical(&b), expected, "{b:02x?}");
            }
        }
        // y = 1 (the identity) and y = p - 1 (order 2) decompress, with and without the sign
        // bit, and so do some non-canonical y >= p.
        assert!(
            decompressed >= 6,
            "only {decompressed} edge encodings decompressed"
        );
    }

    proptest! {
        #[test]
        fn canonical_check_agrees_with_the_round_trip(b in any::<[u8; 32]>()) {
            if let Some(expected) = by_round_trip(&b) {
                prop_assert_eq!(ed25519_is_canonical(&b), expected);
            }
        }
    }
}
