//! The Rust SDK of the flag service: evaluate flags in-process, on a snapshot that flagd
//! keeps current over a websocket.
//!
//! ```no_run
//! # async fn run() -> Result<(), flagd_sdk::BuildError> {
//! let sdk = flagd_sdk::Client::builder("http://127.0.0.1:8080", "fdsdk_…").build().await?;
//! let user = flagd_sdk::EvaluationContext::new("user-42").with("country", "NO");
//! if sdk.enabled("new-checkout", &user) { /* the new checkout */ }
//! # Ok(()) }
//! ```
//!
//! Evaluation (`enabled`, the typed getters, [`Client::with_detail`]) reads the current
//! snapshot through an `ArcSwap`: no lock, no network, no IO, and for the common
//! shapes no allocation. A change committed in flagd arrives as a delta and replaces the
//! snapshot in one atomic store. When flagd is away the SDK keeps serving the last
//! snapshot it applied (never expiring it) and reconnects with jittered backoff; it can
//! start from a bootstrap file and keeps a cache file of the last applied snapshot.
//!
//! # Layout
//! - `shared`: what the client and the stream task share: the served snapshot,
//!   [`Status`], [`ChangeEvent`], the settings.
//! - `client`: [`Client`] and its builder; starts the stream task.
//! - `doc`: the document as flagd sent it, its items shared between versions.
//! - `state`: what the stream task holds, and the rules that apply flagd's frames to it
//!   (snapshots, deltas, reverts, store resets, acks): pure, tested without a network.
//! - `sync`: the stream connection's transport: connect, hello, frames in and replies
//!   out, heartbeats, reconnects with backoff, the cache file.
//! - `openfeature` (feature `openfeature`): an OpenFeature provider over the client.
//!
//! Dependency rule: this crate builds on `flagd-core` (model, evaluator, wire types) and
//! never on the server.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod doc;
#[cfg(feature = "openfeature")]
pub mod openfeature;
mod shared;
mod state;
mod sync;

pub use client::{BuildError, Client, ClientBuilder};
pub use flagd_core::{Detail, ErrorCode, EvaluationContext, Reason, Value, ValueType};
pub use shared::{ChangeEvent, Status};
