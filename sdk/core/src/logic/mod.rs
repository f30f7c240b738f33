//! JsonLogic, compiled: a targeting rule is parsed once into an [`Expr`] tree whose
//! evaluation neither parses nor, on the common shapes, allocates.
//!
//! Semantics follow jsonlogic.com (JavaScript truthiness, `==` with coercion, lazy `if`,
//! `and`, `or`) plus flagd's custom operators `fractional`, `sem_ver`, `starts_with` and
//! `ends_with`, which return `null` on bad input instead of failing. Where flagd's own
//! engine fails a whole evaluation (`cat` of a boolean, an array or an object), the
//! rule records a fault in [`Env`] and the flag evaluates to `PARSE_ERROR`.
//!
//! # Layout
//! A file per responsibility, so that an operator is read and changed in one place:
//! `operators` (the table of operators and arities), `expr` (the compiled tree),
//! `compile`, `refs` (`$evaluators` compiled once per snapshot), `size` (the compiled
//! size of a rule), `value` (values and their conversions), `evaluate` (the evaluator
//! and the generic operators), `compare` (equality, order, `in`, `sem_ver`), `strings`
//! (`cat`, `substr`), `fractional` (all of it, bucketing included) and `outcome` (a
//! rule in result position). Only `mod.rs` is seen from outside `logic`.

mod compare;
mod compile;
mod evaluate;
mod expr;
mod fractional;
mod operators;
mod outcome;
mod refs;
mod size;
mod strings;
#[cfg(test)]
mod tests;
mod value;

pub(crate) use compile::{CompileCx, compile};
pub(crate) use evaluate::Env;
pub(crate) use expr::Expr;
pub(crate) use fractional::Fractional;
pub(crate) use operators::arity;
pub(crate) use outcome::{Outcome, resolve_variants};
pub(crate) use refs::Shared;
pub(crate) use size::rule_size;
pub(crate) use value::{Val, format_number};
