//! Integration tests of keymaster-server over real HTTP, through the client SDK.
//!
//! All modules compile into this one binary (one link step). Every test starts its own server
//! on `127.0.0.1:0` with a fresh database.

mod admin;
mod delivery;
mod demo;
mod deposit;
mod handoff;
mod helpers;
mod holder;
mod hygiene;
mod kinds;
mod limits;
mod no_store;
mod notify;
mod passwords;
mod policy;
mod refusals;
mod requests;
mod resource_limits;
mod retrieve;
mod rotation;
mod service_endpoints;
