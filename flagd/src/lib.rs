//! The flag server (its command-line client, `flagctl`, is the crate in `flagd/cli`).
//!
//! # Layout
//! - `store`: environments, versioned flag sets, tokens and the audit log on SQLite or
//!   PostgreSQL (one implementation over sqlx's Any driver).
//! - `http`: the REST API under `/api/v1` and the health endpoints.
//! - `stream`: live push of every change to connected SDKs, and the fleet view.
//! - `auth`: tokens, roles and the permission matrix.
//! - `server`: start-up, bootstrap, graceful shutdown.
//! - `conn`: the accept loop: header-read and idle timeouts, the connection cap.
//! - `error`: the one JSON error shape.
//!
//! Dependency rule: this crate uses `flagd-core` for the model, validation and
//! evaluation, and never the SDK (its tests use the SDK as a real client).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod bus;
pub mod conn;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod state;
pub mod store;
