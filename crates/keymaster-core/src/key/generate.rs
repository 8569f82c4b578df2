//! Key pair generation (for `generate` deposits) and signing with a private key (for the CLI's
//! `device sign` and for tests that make proofs).
//!
//! The private key only passes through: it is returned to the caller as PKCS#8 PEM in a
//! [`Zeroizing`] string (and, on request, in OpenSSH's format), and the parsed signing keys
//! zeroize themselves on drop. Not here: refusing private keys offered as public input
//! (`parse.rs`, `jwk.rs`).
//!
//! The PEM is PKCS#8 version 1 (RFC 5208) for every algorithm, the form every common tool reads.
//! An Ed25519 key in version 2 (RFC 5958, with the public key), which `ed25519-dalek` writes by
//! default, is refused by OpenSSL 3.0 (`openssl pkey`), Python's `cryptography`, Node's `crypto`
//! and `ssh-keygen`; the public key is derived from the private one anyway.

use std::fmt;
use std::str::FromStr;

use der::pem::LineEnding;
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use signature::{SignatureEncoding, Signer};
use zeroize::Zeroizing;

use super::material::{Material, OID_EC_PUBLIC_KEY, OID_ED25519, OID_P256, OID_P384, OID_RSA};
use super::{KeyError, PublicKey};

/// The algorithms the key master can generate a pair for (`generate` in a deposit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GenerateAlgorithm {
    /// Ed25519 (`"ed25519"`).
    Ed25519,
    /// ECDSA P-256 (`"p256"`).
    P256,
    /// RSA with a 3072-bit modulus and e = 65537 (`"rsa-3072"`).
    Rsa3072,
}

impl GenerateAlgorithm {
    /// The API name: `"ed25519"`, `"p256"` or `"rsa-3072"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GenerateAlgorithm::Ed25519 => "ed25519",
            GenerateAlgorithm::P256 => "p256",
            GenerateAlgorithm::Rsa3072 => "rsa-3072",
        }
    }
}

impl fmt::Display for GenerateAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GenerateAlgorithm {
    type Err = KeyError;

    /// Parses `"ed25519"`, `"p256"` or `"rsa-3072"`; anything else is [`KeyError::Invalid`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519" => Ok(GenerateAlgorithm::Ed25519),
            "p256" => Ok(GenerateAlgorithm::P256),
            "rsa-3072" => Ok(GenerateAlgorithm::Rsa3072),
            other => Err(KeyError::invalid(format!(
                "cannot generate {other:?}; expected \"ed25519\", \"p256\" or \"rsa-3072\""
            ))),
        }
    }
}

/// Makes a key pair; returns the public key and the private key as PKCS#8 v1 PEM
/// (`PRIVATE KEY`).
pub fn generate<R: rand::RngCore + rand::CryptoRng>(
    alg: GenerateAlgorithm,
    rng: &mut R,
) -> Result<(PublicKey, Zeroizing<String>), KeyError> {
    let failed = |_| KeyError::invalid("key generation failed");
    let (material, pem) = match alg {
        GenerateAlgorithm::Ed25519 => {
            let key = ed25519_dalek::SigningKey::generate(rng);
            // Without the public key: version 1 (see the module docs). Zeroizes on drop.
            let v1 = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            };
            let pem = v1.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            (Material::ed25519(key.verifying_key().as_bytes())?, pem)
        }
        GenerateAlgorithm::P256 => {
            let key = p256::SecretKey::random(rng);
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            (Material::P256(key.public_key()), pem)
        }
        GenerateAlgorithm::Rsa3072 => {
            let key = rsa::RsaPrivateKey::new(rng, 3072)
                .map_err(|_| KeyError::invalid("key generation failed"))?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            (
                Material::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be())?,
                pem,
            )
        }
    };
    Ok((PublicKey::from_material(material)?, pem))
}

/// The private key `private_key` (any form [`sign`] reads) in OpenSSH's private key format
/// (`OPENSSH PRIVATE KEY`, unencrypted), with `comment` as the key's comment: what
/// `ssh-keygen -y` and `ssh -i` read. Ed25519, P-256, P-384 and RSA; an unreadable or other key
/// is [`KeyError::Invalid`].
pub fn openssh_private_key(
    private_key: &str,
    comment: &str,
) -> Result<Zeroizing<String>, KeyError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};
    let failed = |_| KeyError::invalid("the private key has no OpenSSH form");
    let data = match load_private_key(private_key.trim())? {
        SigningKey::Ed25519(key) => KeypairData::Ed25519(Ed25519Keypair::from(&key)),
        SigningKey::P256(key) => {
            let secret = p256::SecretKey::from(&key);
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 {
                public: secret.public_key().to_encoded_point(false),
                private: secret.into(),
            })
        }
        SigningKey::P384(key) => {
            let secret = p384::SecretKey::from(&key);
            KeypairData::Ecdsa(EcdsaKeypair::NistP384 {
                public: secret.public_key().to_encoded_point(false),
                private: secret.into(),
            })
        }
        SigningKey::Rsa(key) => KeypairData::Rsa(RsaKeypair::try_from(&key).map_err(failed)?),
    };
    ssh_key::PrivateKey::new(data, comment)
        .map_err(failed)?
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(failed)
}

/// A parsed private key, ready to sign.
enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

/// Signs `message` with a private key given as PKCS#8 PEM (`PRIVATE KEY`), an unencrypted
/// OpenSSH private key, or (also accepted) PKCS#1 `RSA PRIVATE KEY` / SEC1 `EC PRIVATE KEY` PEM.
///
/// Ed25519 gives the 64-byte signature; ECDSA P-256/SHA-256 and P-384/SHA-384 give a DER
/// `ECDSA-Sig-Value` (deterministic, RFC 6979); RSA gives PKCS#1 v1.5 with SHA-256.
/// An unreadable, encrypted or unsupported key is [`KeyError::Invalid`].
pub fn sign(private_key: &str, message: &[u8]) -> Result<Vec<u8>, KeyError> {
    Ok(match load_private_key(private_key.trim())? {
        SigningKey::Ed25519(key) => key.sign(message).to_vec(),
        SigningKey::P256(key) => {
            let sig: p256::ecdsa::Signature = key.sign(message);
            sig.to_der().to_vec()
        }
        SigningKey::P384(key) => {
            let sig: p384::ecdsa::Signature = key.sign(message);
            sig.to_der().to_vec()
        }
        SigningKey::Rsa(key) => {
            // The signature is deterministic; the OS RNG only blinds the private-key operation
            // against timing attacks.
            let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
            signature::RandomizedSigner::try_sign_with_rng(&signer, &mut rand::rngs::OsRng, message)
                .map_err(|_| KeyError::invalid("RSA signing failed"))?
                .to_vec()
        }
    })
}

fn load_private_key(text: &str) -> Result<SigningKey, KeyError> {
    let unreadable = |what: &str| KeyError::invalid(format!("the {what} could not be read"));
    let label = der::pem::decode_label(text.as_bytes())
        .map_err(|_| KeyError::invalid("the private key is not PEM"))?;
    match label {
        "PRIVATE KEY" => {
            let (_, der) = der::pem::decode_vec(text.as_bytes())
                .map_err(|_| unreadable("PKCS#8 private key"))?;
            let der = Zeroizing::new(der);
            let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice())
                .map_err(|_| unreadable("PKCS#8 private key"))?;
            match info.algorithm.oid {
                OID_ED25519 => ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                    .map(SigningKey::Ed25519)
                    .map_err(|_| unreadable("Ed25519 private key")),
                OID_RSA => rsa::RsaPrivateKey::from_pkcs8_der(&der)
                    .map(SigningKey::Rsa)
                    .map_err(|_| unreadable("RSA private key")),
                OID_EC_PUBLIC_KEY => match info.algorithm.parameters_oid().ok() {
                    Some(OID_P256) => p256::SecretKey::from_pkcs8_der(&der)
                        .map(|k| SigningKey::P256(k.into()))
                        .map_err(|_| unreadable("P-256 private key")),
                    Some(OID_P384) => p384::SecretKey::from_pkcs8_der(&der)
                        .map(|k| SigningKey::P384(k.into()))
                        .map_err(|_| unreadable("P-384 private key")),
                    _ => Err(KeyError::invalid(
                        "only P-256 and P-384 EC private keys can sign",
                    )),
                },
                _ => Err(KeyError::invalid(
                    "this private key type cannot sign (X25519 or an unsupported algorithm)",
                )),
            }
        }
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            rsa::RsaPrivateKey::from_pkcs1_pem(text)
                .map(SigningKey::Rsa)
                .map_err(|_| unreadable("RSA private key"))
        }
        "EC PRIVATE KEY" => {
            use p256::elliptic_curve::SecretKey;
            if let Ok(key) = SecretKey::<p256::NistP256>::from_sec1_pem(text) {
                Ok(SigningKey::P256(key.into()))
            } else if let Ok(key) = SecretKey::<p384::NistP384>::from_sec1_pem(text) {
                Ok(SigningKey::P384(key.into()))
            } else {
                Err(KeyError::invalid(
                    "the EC private key could not be read (only P-256 and P-384 can sign)",
                ))
            }
        }
        "OPENSSH PRIVATE KEY" => load_openssh(text),
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::invalid(
            "encrypted private keys are not supported; decrypt it first",
        )),
        other => Err(KeyError::invalid(format!(
            "unsupported private key PEM type {other:?}"
        ))),
    }
}

fn load_openssh(text: &str) -> Result<SigningKey, KeyError> {
    use ssh_key::private::{EcdsaKeypair, KeypairData};
    let key = ssh_key::PrivateKey::from_openssh(text)
        .map_err(|_| KeyError::invalid("the OpenSSH private key could not be read"))?;
    if key.is_encrypted() {
        return Err(KeyError::invalid(
            "encrypted OpenSSH private keys are not supported; decrypt it first",
        ));
    }
    let unreadable = |_| KeyError::invalid("the OpenSSH private key could not be read");
    match key.key_data() {
        KeypairData::Ed25519(pair) => ed25519_dalek::SigningKey::try_from(pair)
            .map(SigningKey::Ed25519)
            .map_err(unreadable),
        KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => {
            p256::ecdsa::SigningKey::from_slice(private.as_slice())
                .map(SigningKey::P256)
                .map_err(|_| KeyError::invalid("the OpenSSH P-256 private key is invalid"))
        }
        KeypairData::Ecdsa(EcdsaKeypair::NistP384 { private, .. }) => {
            p384::ecdsa::SigningKey::from_slice(private.as_slice())
                .map(SigningKey::P384)
                .map_err(|_| KeyError::invalid("the OpenSSH P-384 private key is invalid"))
        }
        KeypairData::Rsa(pair) => {
            // Not `rsa::RsaPrivateKey::try_from(pair)`: ssh-key 0.6.7 passes `p` twice as the
            // primes there, which makes the key unusable.
            let big = |m: &ssh_key::Mpint| {
                m.as_positive_bytes()
                    .map(rsa::BigUint::from_bytes_be)
                    .ok_or_else(|| KeyError::invalid("the OpenSSH RSA private key is invalid"))
            };
            let primes = vec![big(&pair.private.p)?, big(&pair.private.q)?];
            rsa::RsaPrivateKey::from_components(
                big(&pair.public.n)?,
                big(&pair.public.e)?,
                big(&pair.private.d)?,
                primes,
            )
            .map(SigningKey::Rsa)
            .map_err(|_| KeyError::invalid("the OpenSSH RSA private key is invalid"))
        }
        _ => Err(KeyError::invalid(
            "this OpenSSH private key type cannot sign here (Ed25519, P-256, P-384, RSA only)",
        )),
    }
}
