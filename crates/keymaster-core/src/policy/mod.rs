//! Retrieval policy (to be written).
