//! `Code::parse` on any text: never panics; an accepted code is canonical (parsing its own
//! form and its display form gives it back), so normalisation is idempotent.
#![no_main]

use keymaster_core::code::Code;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = Code::parse(text) {
        let again = Code::parse(code.as_str()).expect("a parsed code parses again");
        assert_eq!(again.as_str(), code.as_str());
        let shown = Code::parse(&code.display()).expect("the display form parses");
        assert_eq!(shown.as_str(), code.as_str());
        assert_eq!(shown.format(), code.format());
    }
});
