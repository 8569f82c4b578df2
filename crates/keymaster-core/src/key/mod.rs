//! Key material: parsing, validation, fingerprints, format conversion, proof of possession and
//! server-side generation of asymmetric keys.
//!
//! Every accepted input — PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1), an OpenSSH
//! public key line, a public JWK, or stored SPKI DER — is turned once into a [`PublicKey`], whose
//! value is valid by construction: the point is on the curve, the RSA modulus and exponent are in
//! bounds, and the canonical SPKI DER is computed. Everything else (fingerprints, the other
//! formats, signature checks) works from that value.
//!
//! Layout:
//! - `material.rs`: the validated key material and its canonical SPKI DER;
//!   all validation rules live here.
//! - `parse.rs`: text input (PEM, OpenSSH line detection) and strict SPKI / PKCS#1 DER.
//! - `openssh.rs`: the OpenSSH public key line and `ssh-keygen -l` fingerprint.
//! - `jwk.rs`: JWK import/export and the RFC 7638 thumbprint.
//! - `fingerprint.rs`: the `SHA256:` SPKI fingerprint and the proof-of-possession message.
//! - `verify.rs`: signature verification (proofs).
//! - `generate.rs`: key pair generation (PKCS#8 v1 PEM, and the OpenSSH private key format) and
//!   signing with a private key (CLI and tests).
//!
//! Not here: symmetric secrets (kind `secret`), storage, HTTP status codes. This module never
//! keeps a private key: private keys offered as public input are refused with
//! [`KeyError::PrivateKeyRejected`]; [`generate`] hands its private key straight back.
//!
//! # Decisions
//!
//! - **Ed25519**: the 32-byte point must decompress, must be the canonical encoding (y < p, no
//!   "negative zero" x), and must not have small order. A small-order key lets anyone forge
//!   signatures for it (so a proof of possession would prove nothing), and a non-canonical
//!   encoding would give the same key two fingerprints. Signatures are checked with
//!   `verify_strict` (RFC 8032 plus rejection of small-order `R`).
//! - **X25519**: 32 bytes, canonical (u < 2^255 − 19, top bit clear) and not one of the
//!   low-order points (u = 0, 1, p − 1 and the two points of order 8), which would make every
//!   shared secret predictable. Twist points are accepted, as in RFC 7748.
//! - **EC**: named curves P-256 and P-384 only; the point must be on the curve and not the
//!   identity. Compressed points are accepted and canonicalised to the uncompressed form, so the
//!   SPKI, OpenSSH and JWK forms of a key have one fingerprint.
//! - **RSA**: modulus odd, 2048 to 8192 bits; public exponent odd, 3 ≤ e ≤ 2^32 + 1 (covers 3,
//!   17, 65537 and every exponent mainstream tools make; e = 1 is no encryption at all and even
//!   exponents are not RSA). The `rsaEncryption` algorithm identifier must carry NULL parameters
//!   (RFC 3279); RSA-PSS-only keys are refused.
//! - **DER** must be strict: the `der` crate refuses BER forms, trailing bytes after the SPKI are
//!   refused, and the decoded structure must re-encode to exactly the input.

mod fingerprint;
mod generate;
mod jwk;
mod material;
mod openssh;
mod parse;
mod stored;
mod verify;

use std::fmt;
use std::str::FromStr;

pub use fingerprint::proof_message;
pub use generate::{generate, openssh_private_key, sign, GenerateAlgorithm};
pub use stored::PublicForms;

use material::Material;

/// The algorithm (and for RSA the size) of a public key.
///
/// Its text form (`Display`, [`Algorithm::as_str`], `FromStr`) is the `algorithm` field of the
/// HTTP API: `ed25519`, `x25519`, `p256`, `p384`, `rsa-<bits>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 signature key (RFC 8032).
    Ed25519,
    /// X25519 key agreement key (RFC 7748); cannot sign.
    X25519,
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// RSA with a modulus of this many bits (2048 to 8192).
    Rsa(u32),
}

impl Algorithm {
    /// The API name: `"ed25519"`, `"x25519"`, `"p256"`, `"p384"` or `"rsa-2048"` etc.
    pub fn as_str(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Algorithm::Ed25519 => "ed25519".into(),
            Algorithm::X25519 => "x25519".into(),
            Algorithm::P256 => "p256".into(),
            Algorithm::P384 => "p384".into(),
            Algorithm::Rsa(bits) => format!("rsa-{bits}").into(),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Parses the API name; RSA sizes outside 2048..=8192 are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519" => Ok(Algorithm::Ed25519),
            "x25519" => Ok(Algorithm::X25519),
            "p256" => Ok(Algorithm::P256),
            "p384" => Ok(Algorithm::P384),
            other => other
                .strip_prefix("rsa-")
                .and_then(|bits| bits.parse::<u32>().ok())
                .filter(|bits| (material::RSA_MIN_BITS..=material::RSA_MAX_BITS).contains(bits))
                .map(Algorithm::Rsa)
                .ok_or_else(|| KeyError::Invalid(format!("unknown algorithm {other:?}"))),
        }
    }
}

/// Why key material or a proof was refused. The HTTP layer maps each variant to one error code.
///
/// Messages never contain key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not a valid or accepted public key (bad encoding, unsupported algorithm or curve, point
    /// not on the curve, RSA size or exponent out of bounds, …); the message says precisely what
    /// is wrong. Maps to `invalid_key`.
    #[error("invalid key: {0}")]
    Invalid(String),
    /// A private key in any recognised format (PEM `PRIVATE KEY`, `RSA PRIVATE KEY`,
    /// `EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, a JWK with private
    /// members) where a public key was expected. Maps to `private_key_rejected`.
    #[error("a private key was given where a public key is expected; send only the public key")]
    PrivateKeyRejected,
    /// A signature that does not verify, is malformed, or was checked against a key that cannot
    /// sign (X25519). Maps to `invalid_proof`.
    #[error("the signature does not verify")]
    InvalidProof,
}

impl KeyError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        KeyError::Invalid(msg.into())
    }
}

/// A validated asymmetric public key with its canonical DER SubjectPublicKeyInfo.
///
/// Two `PublicKey`s are equal exactly when they are the same key: every input form is reduced to
/// one canonical SPKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The parsed, validated key, used for verification and format conversion.
    material: Material,
    /// Canonical DER SPKI of `material`: what is stored and what `fingerprint` hashes.
    spki: Vec<u8>,
    /// OpenSSH blob and `ssh-keygen -l` fingerprint; `None` for X25519. Made at construction,
    /// so that a key `ssh-key` cannot encode is refused then; the PEM and the OpenSSH line are
    /// plain encodings of `spki` and of the blob, made only when asked for (a deposit answers
    /// with neither).
    openssh: Option<openssh::SshForms>,
}

impl PublicKey {
    fn from_material(material: Material) -> Result<Self, KeyError> {
        let spki = material.to_spki_der()?;
        let openssh = openssh::openssh_forms(&material)?;
        Ok(PublicKey {
            material,
            spki,
            openssh,
        })
    }

    /// Parses a PEM `PUBLIC KEY` (SPKI), a PEM `RSA PUBLIC KEY` (PKCS#1) or one OpenSSH public
    /// key line (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`, `ssh-rsa`; the
    /// comment is ignored). The type is detected; surrounding whitespace is tolerated.
    ///
    /// Private keys in any recognised format give [`KeyError::PrivateKeyRejected`].
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_material(parse::parse_text(text)?)
    }

    /// Parses a public JWK (RFC 7517/7518/8037): OKP Ed25519/X25519, EC P-256/P-384 or RSA.
    /// A JWK with private members (`d`, or RSA `p`, `q`, …) gives
    /// [`KeyError::PrivateKeyRejected`].
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        Self::from_material(jwk::parse_jwk(jwk)?)
    }

    /// Parses strict DER SubjectPublicKeyInfo (what the server stores and reloads). Trailing
    /// bytes and non-DER encodings are refused.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_material(parse::parse_spki_der(der)?)
    }

    /// The key's algorithm (and RSA size).
    pub fn algorithm(&self) -> Algorithm {
        self.material.algorithm()
    }

    /// The canonical DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// `SHA256:` + unpadded standard base64 of SHA-256 over the canonical DER SPKI.
    pub fn fingerprint(&self) -> String {
        fingerprint::spki_fingerprint(&self.spki)
    }

    /// Exactly what `ssh-keygen -lf` prints as the fingerprint (`SHA256:…`); `None` for X25519,
    /// which has no OpenSSH form.
    pub fn ssh_fingerprint(&self) -> Option<String> {
        self.openssh.as_ref().map(|forms| forms.fingerprint.clone())
    }

    /// The RFC 7638 JWK thumbprint (SHA-256), base64url without padding.
    pub fn jwk_thumbprint(&self) -> String {
        jwk::thumbprint(&self.material)
    }

    /// The key as PEM `PUBLIC KEY` (SPKI), LF line endings, 64-column base64.
    pub fn to_pem(&self) -> String {
        parse::spki_pem(&self.spki)
    }

    /// The OpenSSH public key line without comment (`ssh-ed25519 AAAA…`); `None` for X25519.
    pub fn to_openssh(&self) -> Option<String> {
        self.openssh
            .as_ref()
            .map(|forms| openssh::line(&forms.wire))
    }

    /// The public JWK as a JSON object with the members of RFC 7517/7518/8037 (`kty`, `crv`,
    /// `x`, `y`, `n`, `e`); no `alg`, `use` or `kid`.
    pub fn to_jwk(&self) -> serde_json::Value {
        jwk::to_jwk(&self.material)
    }

    /// Verifies `signature` over `message`: Ed25519 (strict); ECDSA P-256 with SHA-256 and
    /// P-384 with SHA-384, signature in strict DER; RSA PKCS#1 v1.5 with SHA-256.
    ///
    /// Any failure, including a malformed signature or an X25519 key, is
    /// [`KeyError::InvalidProof`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        verify::verify(&self.material, message, signature)
    }

    /// Verifies a proof of possession: [`verify`](Self::verify) over
    /// [`proof_message`]`(&self.fingerprint())`.
    pub fn verify_proof(&self, signature: &[u8]) -> Result<(), KeyError> {
        self.verify(&proof_message(&self.fingerprint()), signature)
    }
}
