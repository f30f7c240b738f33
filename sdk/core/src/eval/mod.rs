//! Compiled snapshots and evaluation: the hot path.
//!
//! `detail` (what an evaluation answers), `table` (the compiled flags, found by key),
//! `compile` (compiling each flag) and `snapshot` (a compiled flag set: made whole or
//! from another by a change, and evaluated).

mod compile;
mod detail;
mod parts;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;

pub use detail::{Detail, ErrorCode, Reason, ValueType};
#[cfg(feature = "fuzzing")]
pub(crate) use parts::load_in_parts;
pub use snapshot::{LoadError, Snapshot};
