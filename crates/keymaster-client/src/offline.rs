//! Helpers that need no server: the typo check of a code (the same one the server runs, from
//! `keymaster_core::code`) and checking a signature against a retrieved public key (with
//! `keymaster_core::key`). Nothing here sends a request.

use keymaster_core::code::{Code, CodeError};
use keymaster_core::key::PublicKey;
use keymaster_core::wire::RetrievalResponse;

use crate::Error;

/// Checks a code as a person typed it (spaces, `-`, and for base32 case and `O`/`I`/`L` are
/// forgiven) and returns its normalised form. A code that fails here would be answered
/// `400 invalid_code`; checking first lets a form say "looks mistyped" at once.
///
/// # Examples
///
/// ```
/// use keymaster_client::check_code;
///
/// assert_eq!(check_code("4729 1047 5518 2035").unwrap(), "4729104755182035");
/// assert!(check_code("4729-1047-5518-2036").is_err()); // last digit mistyped
/// ```
pub fn check_code(input: &str) -> Result<String, CodeError> {
    Code::parse(input).map(|code| code.as_str().to_owned())
}

/// Verifies `signature` over `message` with the public key of a retrieval (Ed25519; ECDSA
/// P-256/SHA-256 and P-384/SHA-384 in DER; RSA PKCS#1 v1.5 with SHA-256) — e.g. a 2FA service
/// checking the device's answer to a challenge.
///
/// # Examples
///
/// ```no_run
/// # async fn run(service: keymaster_client::ServiceClient, challenge: &[u8], answer: &[u8])
/// #     -> Result<(), keymaster_client::Error> {
/// use keymaster_client::{verify_signature, wire::RetrievalRequest};
///
/// let key = service
///     .retrieve(&RetrievalRequest { code: "4729-1047-5518-2036".into(), ..Default::default() })
///     .await?;
/// verify_signature(&key, challenge, answer)?;
/// # Ok(()) }
/// ```
pub fn verify_signature(
    retrieved: &RetrievalResponse,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let pem = retrieved.public_key_pem.as_deref().ok_or_else(|| {
        Error::Decode(format!(
            "the retrieved key ({}) has no public key to verify with",
            retrieved.kind
        ))
    })?;
    let key = PublicKey::parse(pem).map_err(Error::Key)?;
    key.verify(message, signature).map_err(Error::Key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keymaster_core::key::{generate, sign, GenerateAlgorithm};

    fn retrieval(public_key_pem: Option<String>) -> RetrievalResponse {
        RetrievalResponse {
            retrieval_id: "r".into(),
            key_id: "k".into(),
            kind: "public".into(),
            algorithm: "ed25519".into(),
            public_key_pem,
            openssh: None,
            jwk: None,
            secret: None,
            fingerprint: None,
            ssh_fingerprint: None,
            jwk_thumbprint: None,
            label: None,
            proven: false,
            confirm_by: None,
            sas_commitment: None,
        }
    }

    #[test]
    fn check_code_normalises_and_refuses_typos() {
        let code = Code::generate(Default::default(), &mut rand_core_rng());
        let display = code.display();
        assert_eq!(check_code(&display).unwrap(), code.as_str());
        assert_eq!(check_code("12"), Err(CodeError::WrongLength));
        // Change one digit: the Damm check catches every single-digit error.
        let mut typo: Vec<char> = code.as_str().chars().collect();
        typo[3] = if typo[3] == '0' { '1' } else { '0' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(check_code(&typo), Err(CodeError::CheckFailed));
    }

    fn rand_core_rng() -> impl rand::RngCore + rand::CryptoRng {
        rand::rngs::OsRng
    }

    #[test]
    fn verify_signature_accepts_the_right_key_only() {
        for alg in [GenerateAlgorithm::Ed25519, GenerateAlgorithm::P256] {
            let (public, private) = generate(alg, &mut rand::rngs::OsRng).unwrap();
            let signature = sign(&private, b"challenge").unwrap();
            let key = retrieval(Some(public.to_pem()));
            verify_signature(&key, b"challenge", &signature).unwrap();
            let err = verify_signature(&key, b"other", &signature).unwrap_err();
            assert!(matches!(err, Error::Key(_)), "{err:?}");
        }
        assert!(matches!(
            verify_signature(&retrieval(None), b"m", b"s"),
            Err(Error::Decode(_))
        ));
    }
}
