//! Codes: generating, normalising and checking the short codes that people type.
//!
//! A code is what a person carries from the device to the outside service, so it is built to
//! survive being read aloud and typed: every format ends in a check symbol that catches every
//! single mistyped symbol and every swap of two neighbouring symbols, and input is normalised
//! (separators, case, look-alike letters) before it is checked.
//!
//! - [`CodeFormat::Digits`]: 15 uniformly random decimal digits and a Damm check digit.
//! - [`CodeFormat::Base32`]: 23 uniformly random Crockford base32 symbols (115 bits) and
//!   Crockford's mod-37 check symbol.
//!
//! This module is responsible for the syntax of a code only. Whether a code belongs to a live
//! key, how it is stored (HMAC under the server secret) and how guesses are limited are the
//! server's business. A [`Code`] zeroes its memory when dropped and never shows itself in
//! `Debug` output, so that it cannot leak into a log line by accident.
//!
//! The check algorithms are a few lines each and have no well-kept crate that implements both
//! exactly as specified (Damm with the standard table; Crockford's mod-37 check symbol), so they
//! are written here and proven by the property tests at the end of the file.

use std::fmt;

use rand::Rng;
use zeroize::Zeroizing;

pub use crate::wire::CodeFormat;

/// Number of symbols of a [`CodeFormat::Digits`] code, check digit included.
const DIGITS_LEN: usize = 16;
/// Number of symbols of a [`CodeFormat::Base32`] code, check symbol included.
const BASE32_LEN: usize = 24;

/// The Crockford base32 alphabet: digits and upper-case letters without `I`, `L`, `O`, `U`.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Crockford's check symbols: the 32 data symbols, then `*~$=U` for check values 32 to 36.
const CROCKFORD_CHECK: &[u8; 37] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

/// The standard Damm quasigroup of order 10 (weakly totally anti-symmetric), as published by
/// H. Michael Damm (2004). Row = interim digit, column = next digit.
const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// Why a typed code is not a code. Every variant means "looks mistyped": the server answers
/// `400 invalid_code` and never counts it as a guess against any key.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// Without spaces and `-`, the input is neither 16 digits nor 24 base32 symbols long.
    #[error("the code looks mistyped: it should have 16 digits or 24 letters and digits")]
    WrongLength,
    /// The input contains a character that cannot appear in a code of its length (a letter
    /// in a 16-symbol code, or a symbol outside Crockford base32).
    #[error("the code looks mistyped: it contains a character that is not part of any code")]
    BadCharacter,
    /// The symbols are all valid, but the check symbol does not match the others: most likely
    /// one symbol was mistyped or two neighbours were swapped.
    #[error("the code looks mistyped: its check symbol does not match; please compare it again")]
    CheckFailed,
}

/// A syntactically valid code, in normalised form (no separators, upper case).
///
/// The only ways to get one are [`Code::generate`] and [`Code::parse`], so a `Code` always has
/// the right length, alphabet and check symbol. Its memory is zeroed on drop, and `Debug`
/// prints `<redacted>` instead of the code.
#[derive(Clone)]
pub struct Code {
    /// The normalised symbols, check symbol last. Zeroed on drop.
    value: Zeroizing<String>,
    /// Which format the symbols are in (decided by length at parse time).
    format: CodeFormat,
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Code")
            .field("format", &self.format)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Code {
    /// Makes a fresh random code of the given format.
    ///
    /// Every data symbol is drawn uniformly (`gen_range` rejects out-of-range samples, so there
    /// is no modulo bias): 15 digits carry about 49.8 bits, 23 base32 symbols 115 bits.
    pub fn generate<R: rand::RngCore + rand::CryptoRng>(format: CodeFormat, rng: &mut R) -> Code {
        match format {
            CodeFormat::Digits => {
                let mut value = Zeroizing::new(String::with_capacity(DIGITS_LEN));
                let mut interim = 0u8;
                for _ in 0..DIGITS_LEN - 1 {
                    let digit: u8 = rng.gen_range(0..10);
                    interim = damm_step(interim, digit);
                    value.push(char::from(b'0' + digit));
                }
                value.push(char::from(b'0' + interim));
                Code { value, format }
            }
            CodeFormat::Base32 => {
                let mut value = Zeroizing::new(String::with_capacity(BASE32_LEN));
                let mut remainder = 0u8;
                for _ in 0..BASE32_LEN - 1 {
                    let symbol: u8 = rng.gen_range(0..32);
                    remainder = mod37_step(remainder, symbol);
                    value.push(char::from(CROCKFORD[usize::from(symbol)]));
                }
                value.push(char::from(CROCKFORD_CHECK[usize::from(remainder)]));
                Code { value, format }
            }
        }
    }

    /// Normalises and checks a code as a person typed it.
    ///
    /// Spaces (any ASCII whitespace, so that a pasted line end does no harm) and `-` are
    /// removed. Then 16 symbols must be decimal digits whose Damm check passes; 24 symbols are
    /// read as Crockford base32: upper-cased, `O` read as `0`, `I` and `L` as `1`, the first
    /// 23 from the 32-symbol alphabet and the last the mod-37 check symbol (which may also be
    /// `*`, `~`, `$`, `=` or `U`). Any other length is [`CodeError::WrongLength`].
    pub fn parse(input: &str) -> Result<Code, CodeError> {
        // Collect at most BASE32_LEN significant characters: a longer input is wrong whatever
        // it contains, and the buffer never reallocates, so no stray copy escapes zeroing.
        let mut chars = Zeroizing::new(String::with_capacity(BASE32_LEN * 4));
        let mut count = 0usize;
        for c in input.chars() {
            if c == '-' || c.is_ascii_whitespace() {
                continue;
            }
            count += 1;
            if count > BASE32_LEN {
                return Err(CodeError::WrongLength);
            }
            chars.push(c);
        }
        match count {
            DIGITS_LEN => parse_digits(&chars),
            BASE32_LEN => parse_base32(&chars),
            _ => Err(CodeError::WrongLength),
        }
    }

    /// The normalised code, e.g. `4729104755182035`: what is stored (as an HMAC) and compared.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The code as shown to a person: groups of four joined by `-`, e.g. `4729-1047-5518-2035`.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(self.value.len() + self.value.len() / 4);
        for (i, c) in self.value.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// The format of this code.
    pub fn format(&self) -> CodeFormat {
        self.format
    }
}

/// One step of the Damm algorithm. Both arguments are below 10 by construction.
fn damm_step(interim: u8, digit: u8) -> u8 {
    DAMM[usize::from(interim % 10)][usize::from(digit % 10)]
}

/// One step of the mod-37 remainder of a big-endian base-32 number.
fn mod37_step(remainder: u8, symbol: u8) -> u8 {
    // remainder < 37 and symbol < 37, so the sum fits in u16 without overflow.
    ((u16::from(remainder) * 32 + u16::from(symbol)) % 37) as u8
}

/// Checks 16 significant characters as a digits code.
fn parse_digits(chars: &str) -> Result<Code, CodeError> {
    let mut interim = 0u8;
    for b in chars.bytes() {
        if !b.is_ascii_digit() {
            return Err(CodeError::BadCharacter);
        }
        interim = damm_step(interim, b - b'0');
    }
    // A non-ASCII character would make the byte count differ from the char count; it is caught
    // by the digit test above, so here every byte is a digit and there are exactly 16 of them.
    if interim != 0 {
        return Err(CodeError::CheckFailed);
    }
    Ok(Code {
        value: Zeroizing::new(chars.to_owned()),
        format: CodeFormat::Digits,
    })
}

/// The value of a Crockford data symbol after normalisation, if it is one.
fn crockford_value(upper: u8) -> Option<u8> {
    let canonical = match upper {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        other => other,
    };
    CROCKFORD
        .iter()
        .position(|&s| s == canonical)
        .and_then(|p| u8::try_from(p).ok())
}

/// The value of a Crockford check symbol after normalisation, if it is one.
fn crockford_check_value(upper: u8) -> Option<u8> {
    crockford_value(upper).or_else(|| {
        CROCKFORD_CHECK[32..]
            .iter()
            .position(|&s| s == upper)
            .and_then(|p| u8::try_from(p + 32).ok())
    })
}

/// Checks 24 significant characters as a base32 code.
fn parse_base32(chars: &str) -> Result<Code, CodeError> {
    let mut value = Zeroizing::new(String::with_capacity(BASE32_LEN));
    let mut remainder = 0u8;
    let mut check = None;
    for (i, c) in chars.chars().enumerate() {
        if !c.is_ascii() {
            return Err(CodeError::BadCharacter);
        }
        // c is ASCII, so it is exactly one byte.
        let upper = (c as u8).to_ascii_uppercase();
        if i + 1 < BASE32_LEN {
            let symbol = crockford_value(upper).ok_or(CodeError::BadCharacter)?;
            remainder = mod37_step(remainder, symbol);
            value.push(char::from(CROCKFORD[usize::from(symbol)]));
        } else {
            let symbol = crockford_check_value(upper).ok_or(CodeError::BadCharacter)?;
            check = Some(symbol);
            value.push(char::from(CROCKFORD_CHECK[usize::from(symbol)]));
        }
    }
    if check != Some(remainder) {
        return Err(CodeError::CheckFailed);
    }
    Ok(Code {
        value,
        format: CodeFormat::Base32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    #[test]
    fn damm_check_digit_of_known_values() {
        // The textbook example: 572 has check digit 4.
        let interim = [5u8, 7, 2].iter().fold(0, |i, &d| damm_step(i, d));
        assert_eq!(interim, 4);
        // The often-quoted example code 4729-1047-5518-2036 fails its own check: the Damm digit
        // of 472910475518203 is 5. The tests use the valid neighbour ...-2035.
        assert_eq!(
            Code::parse("4729-1047-5518-2036").unwrap_err(),
            CodeError::CheckFailed
        );
        assert!(Code::parse("4729-1047-5518-2035").is_ok());
    }

    #[test]
    fn damm_table_is_a_weakly_totally_antisymmetric_quasigroup() {
        for (x, row) in DAMM.iter().enumerate() {
            assert_eq!(row[x], 0, "zero diagonal");
            let mut seen = [false; 10];
            for &v in row {
                seen[usize::from(v)] = true;
            }
            assert!(seen.iter().all(|&s| s), "row {x} is a permutation");
        }
        for col in 0..10 {
            let mut seen = [false; 10];
            for row in &DAMM {
                seen[usize::from(row[col])] = true;
            }
            assert!(seen.iter().all(|&s| s), "column {col} is a permutation");
        }
        for c in 0..10 {
            for x in 0..10 {
                for y in 0..10 {
                    if x != y {
                        assert_ne!(DAMM[DAMM[c][x] as usize][y], DAMM[DAMM[c][y] as usize][x]);
                    }
                }
            }
        }
    }

    #[test]
    fn normalises_separators_and_spaces() {
        let code = Code::parse("4729 1047-5518 2035").unwrap();
        assert_eq!(code.as_str(), "4729104755182035");
        assert_eq!(code.display(), "4729-1047-5518-2035");
        assert_eq!(code.format(), CodeFormat::Digits);
        assert_eq!(
            Code::parse(" 4729-1047-5518-2035\n").unwrap().as_str(),
            "4729104755182035"
        );
        assert_eq!(
            Code::parse("4-7-2-9-1-0-4-7-5-5-1-8-2-0-3-5")
                .unwrap()
                .as_str(),
            "4729104755182035"
        );
    }

    #[test]
    fn normalises_base32_case_and_lookalikes() {
        let code = Code::generate(CodeFormat::Base32, &mut rng(7));
        let canonical = code.as_str().to_owned();
        let lower = code.display().to_lowercase();
        assert_eq!(Code::parse(&lower).unwrap().as_str(), canonical);
        // Replace every 0 by O and every 1 by I or L, in either case.
        let lookalike: String = canonical
            .chars()
            .enumerate()
            .map(|(i, c)| match (c, i % 3) {
                ('0', 0) => 'O',
                ('0', _) => 'o',
                ('1', 0) => 'I',
                ('1', 1) => 'l',
                ('1', _) => 'L',
                (c, _) => c,
            })
            .collect();
        assert_eq!(Code::parse(&lookalike).unwrap().as_str(), canonical);
    }

    #[test]
    fn lookalikes_in_a_fixed_base32_code() {
        // 23 data symbols "0" * 22 + "1": value 1, check symbol "1".
        let canonical = format!("{}11", "0".repeat(22));
        assert!(Code::parse(&canonical).is_ok());
        let typed = format!("{}iL", "o".repeat(22));
        assert_eq!(Code::parse(&typed).unwrap().as_str(), canonical);
        let typed = format!("{}lI", "O".repeat(22));
        assert_eq!(Code::parse(&typed).unwrap().as_str(), canonical);
    }

    #[test]
    fn extra_check_symbols_are_accepted_and_lowercase_u_normalised() {
        // Find codes whose check value is each of 32..=36 and parse them in lower case.
        let mut found = [false; 5];
        let mut r = rng(1);
        while !found.iter().all(|&f| f) {
            let code = Code::generate(CodeFormat::Base32, &mut r);
            let last = code.as_str().as_bytes()[BASE32_LEN - 1];
            if let Some(p) = CROCKFORD_CHECK[32..].iter().position(|&s| s == last) {
                found[p] = true;
                let lower = code.as_str().to_lowercase();
                assert_eq!(Code::parse(&lower).unwrap().as_str(), code.as_str());
            }
        }
    }

    #[test]
    fn wrong_length_bad_character_check_failed() {
        assert_eq!(Code::parse("").unwrap_err(), CodeError::WrongLength);
        assert_eq!(
            Code::parse("4729-1047-5518-203").unwrap_err(),
            CodeError::WrongLength
        );
        assert_eq!(
            Code::parse("4729-1047-5518-20366").unwrap_err(),
            CodeError::WrongLength
        );
        assert_eq!(
            Code::parse(&"1".repeat(10_000)).unwrap_err(),
            CodeError::WrongLength
        );
        assert_eq!(
            Code::parse("4729-1047-5518-203A").unwrap_err(),
            CodeError::BadCharacter
        );
        // O is not read as 0 in a digits code: look-alikes are normalised for base32 only.
        assert_eq!(
            Code::parse("4729-1O47-5518-2035").unwrap_err(),
            CodeError::BadCharacter
        );
        assert_eq!(
            Code::parse("4729-1047-5518-2036").unwrap_err(),
            CodeError::CheckFailed
        );
        assert_eq!(
            Code::parse("4729_1047_5518_2035").unwrap_err(),
            CodeError::WrongLength
        );
        // Non-ASCII: 16 characters but not 16 digits.
        assert_eq!(
            Code::parse("472910475518203é").unwrap_err(),
            CodeError::BadCharacter
        );
        let b32 = format!("{}11", "0".repeat(22));
        assert!(Code::parse(&b32).is_ok());
        assert_eq!(
            Code::parse(&format!("{}U11", "0".repeat(21))).unwrap_err(),
            CodeError::BadCharacter,
            "U is only a check symbol"
        );
        assert_eq!(
            Code::parse(&format!("{}1*", "0".repeat(22))).unwrap_err(),
            CodeError::CheckFailed
        );
        assert_eq!(
            Code::parse(&format!("{}é1", "0".repeat(22))).unwrap_err(),
            CodeError::BadCharacter
        );
        assert_eq!(
            Code::parse(&format!("{}12", "0".repeat(22))).unwrap_err(),
            CodeError::CheckFailed
        );
    }

    #[test]
    fn debug_is_redacted() {
        let code = Code::generate(CodeFormat::Digits, &mut rng(3));
        let debug = format!("{code:?}");
        assert!(!debug.contains(code.as_str()), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn errors_say_looks_mistyped() {
        for e in [
            CodeError::WrongLength,
            CodeError::BadCharacter,
            CodeError::CheckFailed,
        ] {
            assert!(e.to_string().contains("looks mistyped"), "{e}");
        }
    }

    #[test]
    fn generated_digits_are_roughly_uniform() {
        // 15 * 4000 digits: each of the ten digits should appear about 6000 times. A bias
        // like "% 10 on a byte" (digits 0-5 at 26/256 vs 25/256) would still pass this, so it is
        // a smoke test; uniformity proper comes from `gen_range`.
        let mut counts = [0u32; 10];
        let mut r = rng(11);
        for _ in 0..4000 {
            let code = Code::generate(CodeFormat::Digits, &mut r);
            for b in code.as_str().bytes().take(15) {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        for (d, &n) in counts.iter().enumerate() {
            assert!((5500..6500).contains(&n), "digit {d}: {n}");
        }
    }

    fn any_format() -> impl Strategy<Value = CodeFormat> {
        prop_oneof![Just(CodeFormat::Digits), Just(CodeFormat::Base32)]
    }

    /// The symbols that may stand at position `i` of a code of `format`.
    fn alphabet(format: CodeFormat, i: usize) -> &'static [u8] {
        match format {
            CodeFormat::Digits => b"0123456789",
            CodeFormat::Base32 if i + 1 == BASE32_LEN => CROCKFORD_CHECK,
            CodeFormat::Base32 => CROCKFORD,
        }
    }

    proptest! {
        #[test]
        fn generate_parse_round_trips(seed in any::<u64>(), format in any_format()) {
            let code = Code::generate(format, &mut rng(seed));
            let parsed = Code::parse(code.as_str()).unwrap();
            prop_assert_eq!(parsed.as_str(), code.as_str());
            prop_assert_eq!(parsed.format(), format);
            let len = match format { CodeFormat::Digits => DIGITS_LEN, CodeFormat::Base32 => BASE32_LEN };
            prop_assert_eq!(code.as_str().len(), len);
        }

        #[test]
        fn display_parse_round_trips(seed in any::<u64>(), format in any_format()) {
            let code = Code::generate(format, &mut rng(seed));
            let shown = code.display();
            prop_assert!(shown.split('-').all(|g| g.len() == 4));
            let parsed = Code::parse(&shown).unwrap();
            prop_assert_eq!(parsed.as_str(), code.as_str());
        }

        #[test]
        fn every_substitution_is_caught(seed in any::<u64>(), format in any_format()) {
            let code = Code::generate(format, &mut rng(seed));
            let original = code.as_str().as_bytes().to_vec();
            for i in 0..original.len() {
                for &s in alphabet(format, i) {
                    if s == original[i] {
                        continue;
                    }
                    let mut typo = original.clone();
                    typo[i] = s;
                    let typo = String::from_utf8(typo).unwrap();
                    prop_assert!(Code::parse(&typo).is_err(), "substitution at {} accepted: {}", i, typo);
                }
            }
        }

        #[test]
        fn every_adjacent_transposition_is_caught(seed in any::<u64>(), format in any_format()) {
            let code = Code::generate(format, &mut rng(seed));
            let original = code.as_str().as_bytes().to_vec();
            for i in 0..original.len() - 1 {
                if original[i] == original[i + 1] {
                    continue;
                }
                let mut typo = original.clone();
                typo.swap(i, i + 1);
                let typo = String::from_utf8(typo).unwrap();
                prop_assert!(Code::parse(&typo).is_err(), "transposition at {} accepted: {}", i, typo);
            }
        }

        #[test]
        fn parse_never_panics(input in ".{0,40}") {
            let _ = Code::parse(&input);
        }

        #[test]
        fn parse_of_arbitrary_valid_symbols_is_consistent(
            digits in proptest::collection::vec(0u8..10, 15)
        ) {
            // Any 15 digits plus the right check digit is a code; any other last digit is not.
            let check = digits.iter().fold(0, |i, &d| damm_step(i, d));
            let body: String = digits.iter().map(|&d| char::from(b'0' + d)).collect();
            for last in 0..10u8 {
                let typed = format!("{body}{last}");
                prop_assert_eq!(Code::parse(&typed).is_ok(), last == check);
            }
        }
    }

    /// The algebra behind the base32 proptests, exhaustively: for check value c of a prefix
    /// S (c = 32·S + a mod 37), every substitution changes the value by (b − a)·32^k, and every
    /// transposition by (a − b)·31·32^k; 37 is prime and divides neither 32^k, 31 nor any
    /// |a − b| < 37, so both are non-zero mod 37. A swap of the last data symbol a with the check
    /// symbol c changes the check to 2c − a, equal to a only if c = a.
    #[test]
    fn mod37_catches_all_errors_exhaustively_for_short_prefixes() {
        for prefix in 0u8..37 {
            for a in 0u8..32 {
                let c = mod37_step(prefix, a);
                for b in 0u8..32 {
                    if a != b {
                        assert_ne!(mod37_step(prefix, b), c, "substitution");
                    }
                }
                // Swap the last data symbol with the check symbol.
                if c < 32 && c != a {
                    assert_ne!(mod37_step(prefix, c), a, "swap with check");
                }
                for b in 0u8..32 {
                    if a != b {
                        let ab = mod37_step(mod37_step(prefix, a), b);
                        let ba = mod37_step(mod37_step(prefix, b), a);
                        assert_ne!(ab, ba, "transposition");
                    }
                }
            }
        }
    }
}
