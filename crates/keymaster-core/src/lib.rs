//! keymaster-core: the pure domain of keymaster.
//!
//! Layout:
//! - [`code`]: generating, normalising and checking the short codes people type.
//! - [`handoff`]: verified handoff: the code URI with its key commitment and the short
//!   authentication string (SAS) that both ends compute for themselves.
//! - [`key`]: key material: parsing, validation, fingerprints, format conversion, proof of
//!   possession, server-side generation.
//! - [`label`]: the holder's name for a key, refusing text that shows other than it is.
//! - [`policy`]: the retrieval policy: validation at deposit and the pure decision at retrieval.
//! - [`request`]: the code URI of an enrolment request (the service asks, the device answers).
//! - [`wire`]: the JSON bodies of the HTTP API, shared with the client SDK.
//!
//! Nothing here does I/O, reads the clock or spawns tasks: time is a parameter, randomness is
//! an injected RNG. That keeps every rule testable with a table and usable from any backend.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod code;
pub mod handoff;
pub mod key;
pub mod label;
pub mod policy;
pub mod request;
pub mod wire;
