//! Key material (to be written).
