//! Codes: generation, normalisation and check symbols (to be written).
