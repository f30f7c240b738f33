//! Cross-crate harnesses that are not tests: the propagation load harness's parts.

pub mod load;
