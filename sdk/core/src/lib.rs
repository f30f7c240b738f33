//! The pure evaluation core of the flag service: flagd-format flag sets, their
//! validation, compiled targeting and murmur3 bucketing.
//!
//! One model and one evaluator serve everyone: the SDK evaluates in-process with it, the
//! server validates writes and answers remote evaluation (OFREP) with it, and the admin
//! UI's preview calls the server, which calls it. This crate does no IO and depends on
//! no runtime: no tokio, no logging, no network.
//!
//! ```
//! use flagd_core::{EvaluationContext, Snapshot};
//! let snapshot = Snapshot::from_json_str(r#"{"flags": {"new-checkout": {
//!     "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
//!     "targeting": {"if": [{"in": [{"var": "country"}, ["NO", "SE"]]}, "on", "off"]}}}}"#, 1)?;
//! let user = EvaluationContext::new("user-1").with("country", "NO");
//! assert!(snapshot.enabled("new-checkout", &user));
//! # Ok::<(), flagd_core::LoadError>(())
//! ```
//!
//! # Layout
//! - `model`: the document ([`FlagSet`], [`Flag`]), read leniently (as flagd loads
//!   files) or strictly (as the server accepts writes), written back losslessly.
//! - `validate`: the strict checks of targeting rules, with JSON paths.
//! - `logic`: JsonLogic compiled into an expression tree; flagd's custom operators.
//! - `bucket`: murmur3 x86_32 and the integer bucketing of `fractional`.
//! - `semver`: versions as `sem_ver` reads them.
//! - `eval`: [`Snapshot`], the compiled flag set, and [`Detail`], the result.
//! - [`limits`]: the one set of limits, enforced on write and honoured on read.
//! - [`shared_vec`]: the chunked vector that versions of a flag set share.
//!
//! Dependency rule: `flagd-core` depends on no other crate of this workspace; the SDK
//! and the server depend on it, never the other way round.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bucket;
mod context;
mod context_serde;
pub mod document;
mod eval;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod limits;
mod logic;
mod model;
mod parallel;
mod path;
mod problem;
mod semver;
pub mod shared_vec;
mod validate;
pub mod wire;

pub use bucket::{Murmur3, bucket, murmur3_x86_32};
pub use context::{EvaluationContext, InvalidContext, Map, Value};
pub use context_serde::LenientContext;
pub use eval::{Detail, ErrorCode, LoadError, Reason, Snapshot, ValueType};
pub use limits::check_key;
pub use model::{Flag, FlagSet, FlagState, Problem, Strictness, ValidationErrors, VariantType};
pub use parallel::on_this_thread;
