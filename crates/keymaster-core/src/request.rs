//! The code of an enrolment request (the service asks, the device answers): its URI
//! `keymaster:request:<code>`, what the service's QR code holds, and reading back what a person
//! or a scanner handed over.
//!
//! A request code is a [`Code`] like a key's (check symbol, normalisation); only the URI tells
//! the two apart, so that a device never sends a key to a request by mistake for a retrieval,
//! nor the other way round ([`crate::handoff::CodeUri::parse`] refuses a request URI).

use crate::code::{Code, CodeError};
use crate::handoff::CODE_URI_SCHEME;

/// What follows the scheme in a request's URI.
const REQUEST_PART: &str = "request:";

/// `keymaster:request:<code>`, the code in its normalised form.
pub fn request_code_uri(code: &Code) -> String {
    format!("{CODE_URI_SCHEME}{REQUEST_PART}{}", code.as_str())
}

/// Parses a request code as given: a bare code (as [`Code::parse`] takes it) or its URI
/// `keymaster:request:<code>` (scheme and `request:` in any case, surrounding whitespace
/// ignored, any query ignored so that later versions may add some). A key's code URI
/// (`keymaster:<code>?fp=…`) is not a request code: [`CodeError::BadCharacter`].
pub fn parse_request_code(input: &str) -> Result<Code, CodeError> {
    let text = input.trim();
    let prefix_len = CODE_URI_SCHEME.len() + REQUEST_PART.len();
    let scheme = text.get(..CODE_URI_SCHEME.len());
    if !scheme.is_some_and(|s| s.eq_ignore_ascii_case(CODE_URI_SCHEME)) {
        return Code::parse(text);
    }
    let is_request = text
        .get(CODE_URI_SCHEME.len()..prefix_len)
        .is_some_and(|s| s.eq_ignore_ascii_case(REQUEST_PART));
    if !is_request {
        return Err(CodeError::BadCharacter);
    }
    let rest = &text[prefix_len..];
    let code = rest.split_once('?').map_or(rest, |(c, _)| c);
    Code::parse(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CodeFormat;

    #[test]
    fn a_request_uri_and_its_bare_code_read_back_as_the_same_code() {
        let mut rng = rand::thread_rng();
        for format in [CodeFormat::Digits, CodeFormat::Base32] {
            let code = Code::generate(format, &mut rng);
            let uri = request_code_uri(&code);
            assert!(uri.starts_with("keymaster:request:"));
            assert_eq!(parse_request_code(&uri).unwrap().as_str(), code.as_str());
            let shouted = format!("  KEYMASTER:REQUEST:{}?v=2 ", code.as_str());
            assert_eq!(
                parse_request_code(&shouted).unwrap().as_str(),
                code.as_str()
            );
            assert_eq!(
                parse_request_code(&code.display()).unwrap().as_str(),
                code.as_str()
            );
        }
    }

    #[test]
    fn a_key_uri_or_a_mistyped_code_is_not_a_request_code() {
        let code = Code::generate(CodeFormat::Digits, &mut rand::thread_rng());
        let key_uri = format!("keymaster:{}", code.as_str());
        assert_eq!(
            parse_request_code(&key_uri).err(),
            Some(CodeError::BadCharacter)
        );
        let mut typo = code.as_str().to_owned();
        let last = typo.pop().unwrap();
        typo.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            parse_request_code(&typo).err(),
            Some(CodeError::CheckFailed)
        );
        assert_eq!(
            parse_request_code("keymaster:request:123").err(),
            Some(CodeError::WrongLength)
        );
    }
}
