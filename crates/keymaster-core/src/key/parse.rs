//! Text and DER input: detecting PEM vs. an OpenSSH line, refusing private keys, and strict
//! decoding of SubjectPublicKeyInfo and PKCS#1 `RSAPublicKey` DER.
//!
//! PEM framing and base64 are the `pem-rfc7468` crate's (via `der::pem`), ASN.1 is the `der`
//! crate's; both are strict, which is what refuses BER forms, headers and trailing garbage.
//! Not here: the OpenSSH line itself (`openssh.rs`), validation of the key values
//! (`material.rs`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use der::{Decode, Encode};

use super::material::{
    Material, OID_EC_PUBLIC_KEY, OID_ED25519, OID_P256, OID_P384, OID_RSA, OID_X25519,
};
use super::{openssh, KeyError};

/// Parses the text forms accepted by [`PublicKey::parse`](super::PublicKey::parse).
pub(crate) fn parse_text(text: &str) -> Result<Material, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::invalid("the key is empty"));
    }
    if looks_like_private_key(text) {
        return Err(KeyError::PrivateKeyRejected);
    }
    if text.starts_with("-----BEGIN ") {
        return parse_pem(text);
    }
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
        return Err(KeyError::invalid(
            "RFC 4716 (SSH2) public keys are not accepted; convert with `ssh-keygen -i -f FILE`",
        ));
    }
    if text.contains("-----BEGIN ") {
        return Err(KeyError::invalid(
            "unexpected text before the PEM \"-----BEGIN\" line",
        ));
    }
    openssh::parse_line(text)
}

/// True when any boundary line announces a private key (PEM or RFC 4716), or the text is a
/// PuTTY private key file. Checked before anything else so that a private key is refused as such
/// even when it is malformed.
fn looks_like_private_key(text: &str) -> bool {
    text.lines().map(str::trim).any(|line| {
        ((line.starts_with("-----BEGIN ") || line.starts_with("---- BEGIN "))
            && line.contains("PRIVATE KEY"))
            || line.starts_with("PuTTY-User-Key-File-")
    })
}

fn parse_pem(text: &str) -> Result<Material, KeyError> {
    let normalised = rewrap_pem(text);
    let text = normalised.as_deref().unwrap_or(text);
    let (label, der) = der::pem::decode_vec(text.as_bytes())
        .map_err(|e| KeyError::invalid(format!("malformed PEM: {e}")))?;
    match label {
        "PUBLIC KEY" => parse_spki_der(&der),
        "RSA PUBLIC KEY" => parse_pkcs1_der(&der),
        "CERTIFICATE" => Err(KeyError::invalid(
            "a certificate is not accepted; send its public key \
             (`openssl x509 -pubkey -noout -in FILE`)",
        )),
        other => Err(KeyError::invalid(format!(
            "unsupported PEM type {other:?}; expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\""
        ))),
    }
}

/// Re-wraps the base64 body of a single PEM block at 64 columns, so that PEM written with other
/// line widths (76-column MIME base64, one long line, or everything on one line as pasted into a
/// form field) is accepted. Only whitespace is changed: framing, labels and base64 are still
/// checked strictly by `pem-rfc7468`. `None` (use the text as it is, and get the parser's error)
/// when the text is not one `BEGIN`…`END` block with nothing after it.
fn rewrap_pem(text: &str) -> Option<String> {
    let rest = text.strip_prefix("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let (body, after) = rest.split_once(&format!("-----END {label}-----"))?;
    if !after.trim().is_empty() {
        return None;
    }
    let body: String = body.split_ascii_whitespace().collect();
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).ok()?);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    Some(out)
}

/// Strict DER SubjectPublicKeyInfo to validated material.
pub(crate) fn parse_spki_der(der_bytes: &[u8]) -> Result<Material, KeyError> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der_bytes)
        .map_err(|e| KeyError::invalid(format!("not a DER SubjectPublicKeyInfo: {e}")))?;
    // The der crate is strict already; this also pins down that nothing was skipped or
    // normalised on the way in.
    if spki.to_der().ok().as_deref() != Some(der_bytes) {
        return Err(KeyError::invalid(
            "the SubjectPublicKeyInfo is not canonical DER",
        ));
    }
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::invalid("the subjectPublicKey BIT STRING has unused bits"))?;
    let params = spki.algorithm.parameters;
    match spki.algorithm.oid {
        OID_ED25519 => {
            no_parameters(params.is_some(), "Ed25519")?;
            Material::ed25519(key)
        }
        OID_X25519 => {
            no_parameters(params.is_some(), "X25519")?;
            Material::x25519(key)
        }
        OID_EC_PUBLIC_KEY => {
            let params = params.ok_or_else(|| {
                KeyError::invalid("an EC public key must name its curve (parameters are missing)")
            })?;
            let curve = params
                .decode_as::<der::asn1::ObjectIdentifier>()
                .map_err(|_| {
                    KeyError::invalid(
                        "EC keys with explicit or implicit curve parameters are not accepted; \
                     use a named curve (P-256 or P-384)",
                    )
                })?;
            match curve {
                OID_P256 => Material::p256(key),
                OID_P384 => Material::p384(key),
                other => Err(KeyError::invalid(format!(
                    "the elliptic curve {} is not supported; use P-256 or P-384",
                    curve_name(&other)
                ))),
            }
        }
        OID_RSA => {
            let null_params = params.is_some_and(|p| p.decode_as::<der::asn1::Null>().is_ok());
            if !null_params {
                return Err(KeyError::invalid(
                    "an rsaEncryption algorithm identifier must have NULL parameters (RFC 3279)",
                ));
            }
            parse_pkcs1_der(key)
        }
        other => Err(KeyError::invalid(format!(
            "the key algorithm {} is not supported; use Ed25519, X25519, P-256, P-384 or RSA",
            algorithm_name(&other)
        ))),
    }
}

/// Strict DER PKCS#1 `RSAPublicKey` to validated material.
pub(crate) fn parse_pkcs1_der(der_bytes: &[u8]) -> Result<Material, KeyError> {
    let key = pkcs1::RsaPublicKey::from_der(der_bytes)
        .map_err(|e| KeyError::invalid(format!("not a DER PKCS#1 RSAPublicKey: {e}")))?;
    if key.to_der().ok().as_deref() != Some(der_bytes) {
        return Err(KeyError::invalid("the RSAPublicKey is not canonical DER"));
    }
    Material::rsa(key.modulus.as_bytes(), key.public_exponent.as_bytes())
}

/// PEM `PUBLIC KEY` of a DER SPKI, LF line endings: what `der::pem::encode_string` writes
/// (RFC 7468: the base64 in lines of 64 characters), without its fallible encoder.
pub(crate) fn spki_pem(spki_der: &[u8]) -> String {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----\n";
    const END: &str = "-----END PUBLIC KEY-----\n";
    let body = STANDARD.encode(spki_der);
    let mut pem = String::with_capacity(BEGIN.len() + body.len() + body.len() / 64 + 1 + END.len());
    pem.push_str(BEGIN);
    let mut rest = body.as_str();
    // At least one line, an empty one for no bytes (as der's encoder writes).
    loop {
        // Base64 is ASCII: any byte index is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        pem.push_str(line);
        pem.push('\n');
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    pem.push_str(END);
    pem
}

fn no_parameters(present: bool, name: &str) -> Result<(), KeyError> {
    if present {
        Err(KeyError::invalid(format!(
            "an {name} algorithm identifier must not have parameters (RFC 8410)"
        )))
    } else {
        Ok(())
    }
}

/// A readable name for curve OIDs people are likely to send, for error messages.
fn curve_name(oid: &der::asn1::ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.35" => "P-521 (secp521r1)",
        "1.3.132.0.33" => "P-224 (secp224r1)",
        "1.2.840.10045.3.1.1" => "P-192 (prime192v1)",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1",
        "1.2.156.10197.1.301" => "SM2",
        other => return format!("with OID {other}"),
    };
    name.to_owned()
}

/// A readable name for key algorithm OIDs people are likely to send, for error messages.
fn algorithm_name(oid: &der::asn1::ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.3.101.113" => "Ed448",
        "1.3.101.111" => "X448",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS (use a plain rsaEncryption key)",
        "1.2.840.10046.2.1" => "Diffie-Hellman",
        other => return format!("with OID {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pem_is_what_the_der_crate_writes() {
        for len in [0, 1, 2, 3, 44, 47, 48, 49, 91, 294, 550, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let reference =
                der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der).unwrap();
            assert_eq!(spki_pem(&der), reference, "{len} bytes");
        }
    }
}
