//! keymaster-client
