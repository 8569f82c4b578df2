//! keymaster-server
