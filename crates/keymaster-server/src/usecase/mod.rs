//! The use cases that the API's handlers and the demo both call: each takes typed inputs (the
//! caller's principal, its address, the request's wire type) and returns the answer's wire type
//! or the refusal ([`ApiError`]), with its events, audit rows and metrics. Nothing here
//! extracts from or builds an HTTP message: that is `routes` (and `demo` for its own pages).
//!
//! - [`deposit`]: `POST /v1/keys`.
//! - [`retrieve`]: `POST /v1/retrievals`, its preview and its confirmation.
//! - [`handoff`]: the SAS exchange and disputes of a retrieval.
//! - [`password`]: argon2id for a policy's password, bounded and off the async threads.

pub mod deposit;
pub mod handoff;
pub mod password;
pub mod requests;
pub mod retrieve;

use std::net::IpAddr;

use jiff::Timestamp;

use crate::store::AuditRecord;

/// An audit row with the common fields.
pub fn audit_record(
    at: Timestamp,
    actor: &str,
    action: &'static str,
    outcome: &str,
    key_id: Option<&str>,
    ip: Option<IpAddr>,
) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.to_owned(),
        action,
        outcome: outcome.to_owned(),
        key_id: key_id.map(str::to_owned),
        ip,
        detail: None,
    }
}

/// Times are stored to the millisecond; answers carry the stored value.
pub fn to_millis(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}
