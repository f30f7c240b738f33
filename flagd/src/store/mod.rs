//! The store: environments, versioned flag sets, tokens and the audit log, on SQLite
//! (the embedded default) or PostgreSQL, through one implementation.
//!
//! A flag set is stored as items (each flag, each shared evaluator, each other
//! top-level key such as `metadata`) with the range of versions each definition was
//! current: the set at version V is every item of V's line with `valid_from <= V <
//! valid_to`, plus what the line inherits from its base (`lines.rs`), read with one
//! query of two index scans. A one-flag change closes one row and inserts one, whatever
//! the number of flags; a revert starts a line that points at the content it restores,
//! and writes no row per item.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row};
use tokio::sync::{Mutex, MutexGuard};

mod alerts;
mod approvals;
mod batch;
mod commit;
mod environments;
pub mod error;
mod fleet;
mod history;
mod lines;
mod notify;
mod open;
mod plans;
mod records;
mod reviews;
mod schedules;
mod statistics;
mod tokens;
mod triggers;
mod tx;
mod users;
mod write;

pub use alerts::{ALERT_ACTIONS, AlertEpisode, AlertPolicy, DEFAULT_LOOKBACK_SECONDS, clip_reason};
pub use approvals::{
    ApprovalPolicy, ChangeRequest, MAX_APPROVALS, NewRequest, REQUEST_STATES, RequestEvent, Verdict,
};
pub use error::{StoreError, StoreResult};
pub use fleet::FleetReport;
pub use notify::*;
pub use plans::{Gate, PLAN_STATES, Plan, PlanEvent, PlanMove, PlanSpec, PlanStep};
pub use records::*;
pub use reviews::Review;
pub use schedules::{SCHEDULE_ACTIONS, Schedule};
pub use triggers::TriggerInfo;
pub use users::{
    LOCK_MS, MAX_FAILED_LOGINS, NewUser, OidcIdentity, PasswordLogin, UserChange, UserInfo,
};
pub use write::{Committed, WriteTx};

// The parts of the store share their helpers (row mapping, the audit entry, the
// transaction) inside the module; only what is `pub` leaves it.
use batch::*;
use environments::*;
use lines::*;
use tx::*;
use write::*;

/// `valid_to` of a definition that is still current.
const OPEN: i64 = i64::MAX;

/// How long a request waits for the store by default: a free connection, SQLite's
/// write lock (its busy timeout), a connection to PostgreSQL. Past it, 503.
pub const DEFAULT_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How the store is reached.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a request waits for the store before it is answered 503
    /// ([`DEFAULT_STORE_TIMEOUT`]).
    pub timeout: std::time::Duration,
    /// Where operation times go (flagd's metrics); none by default.
    pub observer: Option<std::sync::Arc<dyn StoreObserver>>,
    /// Who hears of every committed change of a flag set (flagd's bus); none by default.
    pub listener: Option<std::sync::Arc<dyn CommitListener>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_STORE_TIMEOUT,
            observer: None,
            listener: None,
        }
    }
}

/// The `host:port` part of a database URL: what an error may show (never credentials).
fn store_address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default()
}

/// What a failed connection attempt says, in a few words.
fn connect_failure(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The longest reason a change may carry (the audit log keeps every one).
pub const MAX_REASON_CHARS: usize = 1_000;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 text of a time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub use flagd_core::document::{Item, Items};
pub use flagd_core::wire::ItemKind;

fn kind_str(k: ItemKind) -> &'static str {
    match k {
        ItemKind::Flag => "flag",
        ItemKind::Evaluator => "evaluator",
        ItemKind::Top => "top",
    }
}

fn parse_kind(s: &str) -> StoreResult<ItemKind> {
    match s {
        "flag" => Ok(ItemKind::Flag),
        "evaluator" => Ok(ItemKind::Evaluator),
        "top" => Ok(ItemKind::Top),
        other => Err(StoreError::Internal(anyhow::anyhow!(
            "unknown item kind {other:?} in the store"
        ))),
    }
}

/// The store.
#[derive(Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Writers of this process take turns; PostgreSQL also locks the environment row
    /// so that several replicas take turns too.
    write_lock: Mutex<()>,
    /// The store's identity, read once.
    identity: tokio::sync::OnceCell<String>,
    /// SQLite: the file, locked for this process's lifetime.
    _lock: Option<std::fs::File>,
    /// SQLite: the file's path and identity (device, inode) when opened.
    file: Option<(std::path::PathBuf, u64, u64)>,
    /// The URL, to probe the store directly when the pool cannot reach it (never shown).
    url: String,
    options: StoreOptions,
    /// Set while the store is known unreachable: writes probe it with one direct
    /// connection first, so a responder gets a 503 at once rather than after the timeout.
    unreachable: std::sync::atomic::AtomicBool,
    /// PostgreSQL: the planner's statistics, refreshed after large writes.
    statistics: Option<std::sync::Arc<statistics::Statistics>>,
}

/// Where the store reports how long its operations take: flagd's metrics implement it,
/// and hand it to the store when it is opened ([`StoreOptions::observer`]).
pub trait StoreObserver: Send + Sync + std::fmt::Debug {
    /// `operation` (`write`, `read_flag_set`, …) took `elapsed`.
    fn observe(&self, operation: &'static str, elapsed: std::time::Duration);
}

/// Hears of every committed change of a flag set that made a version, once, in version
/// order per environment, before the write is acknowledged (flagd's bus implements it).
pub trait CommitListener: Send + Sync + std::fmt::Debug {
    /// `committed` is durable; the writer waits for the returned future.
    fn committed<'a>(
        &'a self,
        committed: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Reports an operation's time to the observer when dropped.
struct Timed<'a> {
    observer: Option<&'a dyn StoreObserver>,
    operation: &'static str,
    started: std::time::Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.observer {
            o.observe(self.operation, self.started.elapsed());
        }
    }
}

impl Store {
    /// Times an operation until the returned guard is dropped.
    fn timed(&self, operation: &'static str) -> Timed<'_> {
        Timed {
            observer: self.options.observer.as_deref(),
            operation,
            started: std::time::Instant::now(),
        }
    }
}
