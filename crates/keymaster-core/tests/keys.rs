//! Integration tests of `keymaster_core::key`: fixtures made with ssh-keygen and openssl,
//! the Wycheproof vectors, round trips and refusals. One test binary, one module per subject.

mod keys {
    pub mod fixtures;
    pub mod invalid;
    pub mod roundtrip;
    pub mod support;
    pub mod wycheproof;
}
