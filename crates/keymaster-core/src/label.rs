//! Labels: the name a holder gives a key (`"github.com"`, `"laptop"`), shown back in status
//! answers, events, e-mails and the pages of services that retrieve the key.
//!
//! Because a label is shown to people who decide by it, text that looks different from what
//! it is has no place in one. [`Label::parse`] refuses:
//!
//! - control characters (Unicode `Cc`: C0, DEL, C1) and the line and paragraph separators
//!   U+2028/U+2029, which break lines in a subject or a log;
//! - bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), which
//!   reorder what is shown (`"\u{202E}moc.buhtig"` reads as `github.com`);
//! - invisible characters that change nothing visible but the bytes: U+200B, U+2060, U+FEFF,
//!   and likewise U+00AD (soft hyphen), U+180E, U+2061–U+2064 (invisible operators).
//!
//! The joiners U+200C (ZWNJ) and U+200D (ZWJ) are allowed: emoji sequences and scripts such as
//! Persian and the Indic ones need them.
//!
//! Not responsible for uniqueness or for confusable letters from different scripts (a Cyrillic
//! `а` in `pаypal`): a label is the holder's own note, never an identifier that anyone checks.

use std::fmt;

/// Longest label, in characters (Unicode scalar values).
pub const MAX_LABEL_CHARS: usize = 200;

/// A label that is safe to show: at most [`MAX_LABEL_CHARS`] characters, none of them a
/// control, bidi control or invisible filler. Only [`Label::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

/// Why a label was refused. The messages name the offending character by its code point and
/// position, never by echoing the label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// More than [`MAX_LABEL_CHARS`] characters.
    #[error("label: at most {MAX_LABEL_CHARS} characters")]
    TooLong,
    /// A control character or a line/paragraph separator.
    #[error("label: control character {} at position {position} is not allowed", codepoint(*.found))]
    Control {
        /// The character.
        found: char,
        /// Its position in the label, counted in characters from 1.
        position: usize,
    },
    /// A bidirectional control, which reorders the text around it.
    #[error("label: bidirectional control character {} at position {position} is not allowed (it reorders how the label is shown)", codepoint(*.found))]
    Bidi {
        /// The character.
        found: char,
        /// Its position in the label, counted in characters from 1.
        position: usize,
    },
    /// An invisible character that is neither a joiner nor needed by any script.
    #[error("label: invisible character {} at position {position} is not allowed", codepoint(*.found))]
    Invisible {
        /// The character.
        found: char,
        /// Its position in the label, counted in characters from 1.
        position: usize,
    },
}

/// `U+202E`.
fn codepoint(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Refuses `c` at `position` if it is a control, bidi control or invisible filler.
fn check(found: char, position: usize) -> Result<(), LabelError> {
    match found {
        '\u{2028}' | '\u{2029}' => Err(LabelError::Control { found, position }),
        c if c.is_control() => Err(LabelError::Control { found, position }),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Err(LabelError::Bidi { found, position }),
        '\u{00AD}' | '\u{180E}' | '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' => {
            Err(LabelError::Invisible { found, position })
        }
        _ => Ok(()),
    }
}

impl Label {
    /// Checks `text` and keeps it as it is (no normalisation: the holder's text is shown back
    /// byte for byte).
    pub fn parse(text: &str) -> Result<Label, LabelError> {
        let mut count = 0;
        for (i, c) in text.chars().enumerate() {
            check(c, i + 1)?;
            count = i + 1;
        }
        if count > MAX_LABEL_CHARS {
            return Err(LabelError::TooLong);
        }
        Ok(Label(text.to_owned()))
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Label, LabelError> {
        Label::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIDI: &[char] = &[
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ];
    const INVISIBLE: &[char] = &[
        '\u{200B}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{180E}', '\u{2061}', '\u{2062}',
        '\u{2063}', '\u{2064}',
    ];

    #[test]
    fn every_bidi_control_is_refused_by_name_without_an_echo() {
        for &c in BIDI {
            let err = Label::parse(&format!("github{c}.com")).unwrap_err();
            assert_eq!(
                err,
                LabelError::Bidi {
                    found: c,
                    position: 7
                }
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("U+{:04X}", c as u32)), "{msg}");
            assert!(msg.contains("bidirectional"), "{msg}");
            assert!(!msg.contains("github"), "{msg}");
        }
    }

    #[test]
    fn every_invisible_filler_is_refused() {
        for &c in INVISIBLE {
            for text in [
                format!("{c}laptop"),
                format!("lap{c}top"),
                format!("laptop{c}"),
            ] {
                let err = Label::parse(&text).unwrap_err();
                assert!(
                    matches!(err, LabelError::Invisible { found, .. } if found == c),
                    "{:04X}: {err:?}",
                    c as u32
                );
                assert!(err.to_string().contains("invisible"));
            }
        }
    }

    #[test]
    fn control_characters_and_line_separators_are_refused() {
        for c in ('\u{0}'..='\u{1F}').chain([
            '\u{7F}', '\u{80}', '\u{85}', '\u{9F}', '\u{2028}', '\u{2029}',
        ]) {
            let err = Label::parse(&format!("a{c}b")).unwrap_err();
            assert_eq!(
                err,
                LabelError::Control {
                    found: c,
                    position: 2
                }
            );
        }
        assert!(Label::parse("line\nbreak")
            .unwrap_err()
            .to_string()
            .contains("U+000A"));
    }

    #[test]
    fn joiners_and_emoji_sequences_are_kept_as_given() {
        for text in [
            // woman technologist: WOMAN, ZWJ, LAPTOP
            "\u{1F469}\u{200D}\u{1F4BB}",
            // family: man ZWJ woman ZWJ girl ZWJ boy
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}",
            // rainbow flag: WAVING WHITE FLAG, VS16, ZWJ, RAINBOW
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            // England's flag: a tag sequence
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            // Persian "mi-khaham" with a ZWNJ
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
            // Devanagari with ZWJ and ZWNJ
            "\u{0915}\u{094D}\u{200D}\u{0937} \u{0915}\u{094D}\u{200C}\u{0937}",
            // right-to-left script on its own needs no controls
            "\u{05E9}\u{05DC}\u{05D5}\u{05DD}",
            "github.com",
            "",
        ] {
            let label = Label::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(label.as_str(), text);
        }
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(Label::parse(&"é".repeat(MAX_LABEL_CHARS)).is_ok());
        assert_eq!(
            Label::parse(&"a".repeat(MAX_LABEL_CHARS + 1)),
            Err(LabelError::TooLong)
        );
    }
}
