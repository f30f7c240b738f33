//! The flag server (its command-line client, `flagctl`, is the crate in `flagd/cli`).
//!
//! # Layout (README, "Code layout"; imports point down this list)
//! - `server`: the composition root: start-up, bootstrap, graceful shutdown.
//! - `http`: the REST API under `/api/v1`, OFREP, the UI's files and the health
//!   endpoints; one module per resource.
//! - `grpc`: OpenFeature flagd's gRPC services (sync and evaluation), for the official
//!   OpenFeature flagd providers.
//! - `state`: the application state every handler gets.
//! - `hub`: live push of every change to connected SDKs, the fleet, flagd's heads.
//! - `bus`: the one path out of every committed change.
//! - `metrics`: the Prometheus registry.
//! - `plans`: release plans, ramped step by step by the server (the runner, and the
//!   step logic the API shares).
//! - `notify`: outgoing notifications (Slack, Teams, Feishu, DingTalk, WeCom, signed
//!   webhooks) from the store's outbox, off the commit path.
//! - `auth`, `error`, `conn`: roles and permissions, the JSON error shape, the accept
//!   loop.
//! - `store`: environments, versioned flag sets, tokens and the audit log on SQLite or
//!   PostgreSQL (one implementation over sqlx's Any driver).
//!
//! Dependency rule: this crate uses `flagd-core` for the model, validation and
//! evaluation, and never the SDK (its tests use the SDK as a real client).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod announce;
pub mod auth;
pub mod bus;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod notify;
pub mod people;
pub mod plans;
pub mod server;
pub mod state;
pub mod store;
