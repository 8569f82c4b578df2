//! Helpers shared by the key tests: reading test data inside the crate, hex.

use std::path::PathBuf;

/// Path of a file under `crates/keymaster-core/testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Text of a file under `testdata/`.
pub fn read_text(rel: &str) -> String {
    std::fs::read_to_string(testdata(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Bytes of a file under `testdata/`.
pub fn read_bytes(rel: &str) -> Vec<u8> {
    std::fs::read(testdata(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Decodes lowercase/uppercase hex.
pub fn hex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            assert_eq!(pair.len(), 2, "odd hex length");
            let digits = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(digits, 16).expect("hex digit")
        })
        .collect()
}
