//! keymaster-core: the pure domain of keymaster.
