//! The flag server (to come) and `flagctl`, its command-line client.
//!
//! # Layout
//! - `cli`: the `flagctl` commands. The offline ones (`validate`, `eval`) work on flag
//!   files with the same model and evaluator as the server and the SDK.
//!
//! Dependency rule: this crate uses `flagd-core` for the model, validation and
//! evaluation, and never the SDK.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
