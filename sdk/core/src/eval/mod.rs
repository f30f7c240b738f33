//! Compiled snapshots and evaluation: the hot path.
//!
//! `detail` (what an evaluation answers), `table` (the compiled flags, found by key) and
//! `snapshot` (compiling a flag set, and evaluating it).

mod detail;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;

pub use detail::{Detail, ErrorCode, Reason, ValueType};
pub use snapshot::{LoadError, Snapshot};
