//! The flag-set document in flagd's JSON format: reading its structure, and writing it
//! back without losing key order or unknown keys.
//!
//! The entry points that read at a chosen [`Strictness`] (`FlagSet::parse`,
//! `FlagSet::parse_str`, `FlagSet::validate`) are in `validate`, which runs the strict
//! checks of the whole after `read_set`: the model never calls back into validation.

mod flag;
mod flag_set;
mod read;
#[cfg(test)]
mod tests;
mod view;

pub use crate::problem::{Problem, ValidationErrors};
pub use flag::{Flag, FlagState, VariantType};
pub use flag_set::FlagSet;
pub use read::Strictness;
pub(crate) use read::{read_isolated, read_set};
pub(crate) use view::{FlagRef, SetRef};
