//! keymaster-client: the SDK that outside services, client applications and the `keymaster`
//! command use to talk to a key master over HTTP.
//!
//! Layout:
//! - [`AdminClient`]: the operator's calls under `/v1/admin` (tenants, app keys, services, audit).
//! - [`DeviceClient`]: a client application depositing a key with its tenant's app key.
//! - [`ServiceClient`]: an outside service retrieving a key by code and confirming receipt.
//! - [`HolderClient`]: the holder of one deposit following, re-coding and revoking its key,
//!   including the live event stream ([`HolderClient::events`]).
//! - [`check_code`] and [`verify_signature`]: offline helpers that need no server.
//! - [`Error`]: every failure, with the server's problem body where there is one.
//!
//! What this crate is not: it holds no keys and keeps no state besides a connection pool; the
//! request and response bodies are [`keymaster_core::wire`]'s, so the SDK and the server cannot
//! drift apart. It must never depend on the server crate or a database driver, because outside
//! services embed it.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

mod admin;
mod device;
mod error;
mod holder;
mod http;
mod offline;
mod service;
mod sse;

pub use admin::AdminClient;
pub use device::DeviceClient;
pub use error::Error;
pub use holder::HolderClient;
pub use offline::{check_code, verify_signature};
pub use service::ServiceClient;

/// The JSON bodies of the API, re-exported so that users of the SDK need not depend on
/// `keymaster-core` themselves.
pub use keymaster_core::wire;
