//! Verified handoff: what the two ends of a handoff compute for themselves, so that neither the
//! key master nor anyone who can write its database can swap the key unnoticed.
//!
//! - The **code URI** `keymaster:<code>?fp=<commitment>` ([`code_uri`], [`CodeUri::parse`]):
//!   the QR code carries, next to the code, a commitment to the key ([`key_commitment`]:
//!   unpadded base64url of SHA-256 over the DER SubjectPublicKeyInfo). A service that scanned
//!   it recomputes the commitment from the key bytes it received ([`CodeUri::matches_key`]).
//! - The **short authentication string** ([`sas`], shown as [`Sas`]'s `123 456`): a
//!   commit-then-reveal exchange of two 32-byte nonces through the key master
//!   ([`sas_commitment`], [`commitment_matches`]), after which both people compare six digits.
//!
//! The threat model, the arithmetic and a test vector for other implementations are in
//! `docs/security.md`, section "Verified handoff".
//!
//! This module is pure: it neither draws the nonces (callers pass in 32 random bytes of their
//! own) nor talks to the server, and it does not decide what a mismatch means (a client refuses
//! the key and disputes the retrieval; the server never trusts any of these values for itself).

use std::fmt;

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::code::{Code, CodeError};

/// The scheme of a code URI, with its colon. Compared without regard to case (RFC 3986 §3.1).
pub const CODE_URI_SCHEME: &str = "keymaster:";

/// Domain separation of the SAS hash, so that its digest can never stand for any other hash.
pub const SAS_DOMAIN: &[u8] = b"keymaster-sas-v1";

/// Length of each SAS nonce (`nd` of the device, `ns` of the service), in bytes.
pub const NONCE_LEN: usize = 32;

/// Number of distinct SAS values: six decimal digits.
pub const SAS_MODULUS: u32 = 1_000_000;

/// A SAS nonce or a commitment: 32 bytes.
pub type Bytes32 = [u8; 32];

/// Unpadded base64url; decoding also accepts the padded form that some libraries emit.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Unpadded base64url of `bytes`, the encoding of every value of this module on the wire.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url (padded or not) that must hold exactly 32 bytes: a nonce, a commitment or
/// the `fp` of a code URI. `None` for anything else.
pub fn decode_32(text: &str) -> Option<Bytes32> {
    // 32 bytes are 43 symbols unpadded, 44 padded: refuse anything longer before decoding.
    if text.len() > 44 {
        return None;
    }
    let bytes = B64URL_LENIENT.decode(text.trim_end_matches('=')).ok()?;
    bytes.try_into().ok()
}

/// The key commitment of a code URI: unpadded base64url of SHA-256 over the DER SPKI.
///
/// The same digest as the key's `fingerprint` (`SHA256:` + standard base64), in the URL-safe
/// alphabet so that it needs no escaping in a URI.
pub fn key_commitment(spki_der: &[u8]) -> String {
    b64url(&Sha256::digest(spki_der))
}

/// The code URI of an asymmetric key: `keymaster:<code>?fp=<key_commitment(spki_der)>`, with
/// the code in its normalised form (no separators).
pub fn code_uri(code: &Code, spki_der: &[u8]) -> String {
    format!(
        "{CODE_URI_SCHEME}{}?fp={}",
        code.as_str(),
        key_commitment(spki_der)
    )
}

/// The same URI from a key's `fingerprint` (`SHA256:` + unpadded standard base64 of the SPKI
/// digest), for a key whose SPKI is not at hand: `None` if `fingerprint` is not of that form.
pub fn code_uri_from_fingerprint(code: &Code, fingerprint: &str) -> Option<String> {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    let digest = STANDARD_NO_PAD
        .decode(fingerprint.strip_prefix("SHA256:")?)
        .ok()?;
    let digest: Bytes32 = digest.try_into().ok()?;
    Some(format!(
        "{CODE_URI_SCHEME}{}?fp={}",
        code.as_str(),
        b64url(&digest)
    ))
}

/// Why a text is not a usable code URI.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum CodeUriError {
    /// The code inside the URI (or the bare code) does not pass [`Code::parse`].
    #[error(transparent)]
    Code(#[from] CodeError),
    /// A `keymaster:request:` URI: the code of an enrolment request, not of a key.
    #[error("this is the code of an enrolment request, not of a key")]
    RequestUri,
    /// `fp` is not unpadded base64url of 32 bytes, or is given twice.
    #[error("the key commitment (fp) of the code URI is not valid")]
    BadCommitment,
}

/// A code URI, parsed: the code and, when the URI carried one, the key commitment.
///
/// `Debug` does not show the code ([`Code`] redacts itself).
#[derive(Debug, Clone)]
pub struct CodeUri {
    /// The code, checked.
    pub code: Code,
    /// SHA-256 over the DER SPKI of the key the code stands for, from `fp`.
    pub fp: Option<Bytes32>,
}

impl CodeUri {
    /// Parses what a person or a scanner handed over: a bare code (as [`Code::parse`] takes
    /// it) or a code URI `keymaster:<code>[?fp=<b64url>]`.
    ///
    /// The scheme is matched without regard to case and surrounding whitespace is ignored.
    /// Query parameters other than `fp` are ignored, so that later versions may add some; `fp`
    /// must be base64url of exactly 32 bytes and appear at most once. A `keymaster:request:`
    /// URI is refused ([`CodeUriError::RequestUri`]).
    pub fn parse(input: &str) -> Result<CodeUri, CodeUriError> {
        let text = input.trim();
        let scheme_len = CODE_URI_SCHEME.len();
        let is_uri = text
            .get(..scheme_len)
            .is_some_and(|s| s.eq_ignore_ascii_case(CODE_URI_SCHEME));
        if !is_uri {
            return Ok(CodeUri {
                code: Code::parse(text)?,
                fp: None,
            });
        }
        let rest = &text[scheme_len..];
        if rest
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("request:"))
        {
            return Err(CodeUriError::RequestUri);
        }
        let (code, query) = match rest.split_once('?') {
            Some((code, query)) => (code, Some(query)),
            None => (rest, None),
        };
        let mut fp = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if name != "fp" {
                continue;
            }
            if fp.is_some() {
                return Err(CodeUriError::BadCommitment);
            }
            fp = Some(decode_32(value).ok_or(CodeUriError::BadCommitment)?);
        }
        Ok(CodeUri {
            code: Code::parse(code)?,
            fp,
        })
    }

    /// Whether the key whose DER SPKI is `spki_der` is the one this URI commits to: `true`
    /// when the URI carries no commitment (there is nothing to check), else whether SHA-256
    /// over `spki_der` equals `fp`. Compute `spki_der` from the key bytes received, never take
    /// a fingerprint the server sent.
    pub fn matches_key(&self, spki_der: &[u8]) -> bool {
        match &self.fp {
            None => true,
            Some(fp) => Sha256::digest(spki_der).as_slice() == fp.as_slice(),
        }
    }
}

/// The device's SAS commitment: unpadded base64url of SHA-256(`nd`), sent at deposit as
/// `sas_commitment`.
pub fn sas_commitment(nd: &Bytes32) -> String {
    b64url(&Sha256::digest(nd))
}

/// Whether `nd` opens `commitment` (the 32 bytes of a `sas_commitment`): SHA-256(`nd`) equals
/// it.
pub fn commitment_matches(commitment: &Bytes32, nd: &Bytes32) -> bool {
    Sha256::digest(nd).as_slice() == commitment.as_slice()
}

/// A short authentication string: six decimal digits, shown as `123 456`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sas(u32);

impl Sas {
    /// The value, below [`SAS_MODULUS`].
    pub fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Sas {
    /// Two groups of three digits with leading zeros, e.g. `004 271`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// `SAS = u32_be(SHA-256("keymaster-sas-v1" ‖ K ‖ nd ‖ ns)[0..4]) mod 10⁶`.
///
/// `key` (K) is the DER SPKI of an asymmetric key, or the bytes of a `secret`; `nd` is the
/// device's nonce, `ns` the service's. The nonces have a fixed length and come last, so the
/// concatenation is unambiguous although K's length varies. The reduction mod 10⁶ of a 32-bit
/// value is biased by less than 2.4 × 10⁻⁴ relative (4294 or 4295 preimages per value),
/// which leaves the chance of a matching SAS for a swapped key at about 10⁻⁶.
pub fn sas(key: &[u8], nd: &Bytes32, ns: &Bytes32) -> Sas {
    let digest = Sha256::new()
        .chain_update(SAS_DOMAIN)
        .chain_update(key)
        .chain_update(nd)
        .chain_update(ns)
        .finalize();
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Sas(first % SAS_MODULUS)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::*;
    use crate::code::CodeFormat;

    /// The published test vector (docs/security.md, "Verified handoff"): K is the DER SPKI of
    /// the Ed25519 public key of RFC 8032's first test, `nd` the bytes 0x00..0x1f, `ns` the
    /// bytes 0x20..0x3f.
    fn vector() -> (Vec<u8>, Bytes32, Bytes32) {
        let mut spki = hex("302a300506032b6570032100");
        spki.extend(hex(
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        ));
        let mut nd = [0u8; 32];
        let mut ns = [0u8; 32];
        for i in 0..32u8 {
            nd[usize::from(i)] = i;
            ns[usize::from(i)] = 0x20 + i;
        }
        (spki, nd, ns)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_published_test_vector_holds() {
        let (spki, nd, ns) = vector();
        assert_eq!(
            key_commitment(&spki),
            "BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k"
        );
        assert_eq!(
            sas_commitment(&nd),
            "Yw3NKWbEM2aRElRIu7JbT_QSpJxzLbLIq8G4WBvXEN0"
        );
        let digest = Sha256::new()
            .chain_update(SAS_DOMAIN)
            .chain_update(&spki)
            .chain_update(nd)
            .chain_update(ns)
            .finalize();
        assert_eq!(
            digest.as_slice(),
            hex("fbd6350f8dd2af5b79b9694de3709d1a665982ca527f018074df0c64929729e5")
        );
        let s = sas(&spki, &nd, &ns);
        assert_eq!(s.value(), 119_503);
        assert_eq!(s.to_string(), "119 503");
    }

    #[test]
    fn sas_is_shown_as_two_groups_of_three_digits_with_leading_zeros() {
        assert_eq!(Sas(0).to_string(), "000 000");
        assert_eq!(Sas(4_271).to_string(), "004 271");
        assert_eq!(Sas(999_999).to_string(), "999 999");
    }

    #[test]
    fn a_code_uri_round_trips_and_checks_its_key() {
        let (spki, _, _) = vector();
        let code = Code::parse("4729-1047-5518-2035").unwrap();
        let uri = code_uri(&code, &spki);
        assert_eq!(
            uri,
            "keymaster:4729104755182035?fp=BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k"
        );
        let parsed = CodeUri::parse(&uri).unwrap();
        assert_eq!(parsed.code.as_str(), "4729104755182035");
        assert!(parsed.matches_key(&spki));
        let mut other = spki.clone();
        other[20] ^= 1;
        assert!(!parsed.matches_key(&other));

        let fingerprint = format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&spki))
        );
        assert_eq!(code_uri_from_fingerprint(&code, &fingerprint), Some(uri));
        assert_eq!(code_uri_from_fingerprint(&code, "MD5:abc"), None);
    }

    #[test]
    fn code_uris_are_read_leniently_where_harmless_and_strictly_where_not() {
        let (spki, _, _) = vector();
        let fp = key_commitment(&spki);
        // Bare codes, display forms, upper-case scheme, padding, extra parameters.
        for ok in [
            "4729-1047-5518-2035".to_owned(),
            "keymaster:4729-1047-5518-2035".to_owned(),
            format!(" KEYMASTER:4729104755182035?fp={fp}= "),
            format!("keymaster:4729104755182035?v=2&fp={fp}"),
        ] {
            let parsed = CodeUri::parse(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(parsed.code.as_str(), "4729104755182035", "{ok}");
            assert!(parsed.matches_key(&spki), "{ok}");
        }
        assert!(CodeUri::parse("keymaster:4729104755182035")
            .unwrap()
            .fp
            .is_none());
        let bad = [
            (
                format!("keymaster:4729104755182036?fp={fp}"),
                CodeUriError::Code(CodeError::CheckFailed),
            ),
            (
                "keymaster:4729104755182035?fp=abc".to_owned(),
                CodeUriError::BadCommitment,
            ),
            (
                format!("keymaster:4729104755182035?fp={fp}&fp={fp}"),
                CodeUriError::BadCommitment,
            ),
            (
                format!("keymaster:4729104755182035?fp={fp}AAAA"),
                CodeUriError::BadCommitment,
            ),
            (
                "keymaster:request:4729104755182035".to_owned(),
                CodeUriError::RequestUri,
            ),
            (
                "keymaster:".to_owned(),
                CodeUriError::Code(CodeError::WrongLength),
            ),
        ];
        for (text, want) in bad {
            assert_eq!(CodeUri::parse(&text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn nonces_must_be_base64url_of_exactly_32_bytes() {
        let n = [7u8; 32];
        assert_eq!(decode_32(&b64url(&n)), Some(n));
        assert_eq!(decode_32(&format!("{}=", b64url(&n))), Some(n));
        assert_eq!(decode_32(&b64url(&[7u8; 31])), None);
        assert_eq!(decode_32(&b64url(&[7u8; 33])), None);
        assert_eq!(decode_32("not base64url!"), None);
        assert_eq!(decode_32(&"A".repeat(1000)), None);
    }

    /// A fixed seed: a change of input leaves the SAS unchanged with probability 10⁻⁶ by
    /// design (six digits), and the check must not fail on such a legitimate collision in a
    /// random run. Every case asserts the 32-bit prefix changes too (probability 2⁻³² of not).
    fn fixed() -> Config {
        Config {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x6b65_796d_6173_7472),
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn nonce() -> impl Strategy<Value = Bytes32> {
        any::<[u8; 32]>()
    }

    fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 16..600)
    }

    proptest! {
        #![proptest_config(fixed())]

        /// The device and the service compute the SAS apart, each from what it holds; when
        /// both hold the same key and nonces (and the commitment opens), they agree.
        #[test]
        fn both_ends_agree_on_the_same_key_and_nonces(
            key in key_bytes(), nd in nonce(), ns in nonce(),
        ) {
            let device_commitment = sas_commitment(&nd);
            let service_view_commitment = decode_32(&device_commitment).unwrap();
            prop_assert!(commitment_matches(&service_view_commitment, &nd));
            let device = sas(&key, &nd, &ns);
            let service = sas(&key.clone(), &nd, &ns);
            prop_assert_eq!(device, service);
            prop_assert!(device.value() < SAS_MODULUS);
            prop_assert_eq!(device.to_string().len(), 7);
        }

        /// Any change of the key (a flipped bit, a byte more or less) changes the SAS.
        #[test]
        fn any_change_of_the_key_changes_the_sas(
            key in key_bytes(), nd in nonce(), ns in nonce(),
            at in any::<prop::sample::Index>(), bit in 0u8..8, extend in any::<bool>(),
        ) {
            let mut flipped = key.clone();
            flipped[at.index(key.len())] ^= 1 << bit;
            let mut resized = key.clone();
            if extend { resized.push(0) } else { resized.pop(); }
            let original = sas(&key, &nd, &ns);
            for other in [flipped, resized] {
                prop_assert_ne!(prefix(&other, &nd, &ns), prefix(&key, &nd, &ns));
                prop_assert_ne!(sas(&other, &nd, &ns), original);
            }
        }

        /// Any change of either nonce changes the SAS, and so does swapping them.
        #[test]
        fn any_change_of_a_nonce_changes_the_sas(
            key in key_bytes(), nd in nonce(), ns in nonce(),
            at in 0usize..32, bit in 0u8..8,
        ) {
            let original = sas(&key, &nd, &ns);
            let mut nd2 = nd;
            nd2[at] ^= 1 << bit;
            let mut ns2 = ns;
            ns2[at] ^= 1 << bit;
            prop_assert_ne!(sas(&key, &nd2, &ns), original);
            prop_assert_ne!(sas(&key, &nd, &ns2), original);
            prop_assert!(!commitment_matches(&decode_32(&sas_commitment(&nd)).unwrap(), &nd2));
            if nd != ns {
                prop_assert_ne!(sas(&key, &ns, &nd), original);
            }
        }
    }

    /// The 32-bit value before the reduction mod 10⁶.
    fn prefix(key: &[u8], nd: &Bytes32, ns: &Bytes32) -> [u8; 4] {
        let d = Sha256::new()
            .chain_update(SAS_DOMAIN)
            .chain_update(key)
            .chain_update(nd)
            .chain_update(ns)
            .finalize();
        [d[0], d[1], d[2], d[3]]
    }

    #[test]
    fn generated_codes_of_both_formats_survive_a_uri() {
        let (spki, _, _) = vector();
        for format in [CodeFormat::Digits, CodeFormat::Base32] {
            let code = Code::generate(format, &mut rand::thread_rng());
            let parsed = CodeUri::parse(&code_uri(&code, &spki)).unwrap();
            assert_eq!(parsed.code.as_str(), code.as_str());
        }
    }
}
