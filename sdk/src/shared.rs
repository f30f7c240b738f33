//! What the client and the stream task share: the served snapshot, the status and change
//! events they publish, and the connection settings. A leaf: it imports no other module
//! of this crate, so that `client` and `sync` both build on it without depending on
//! each other.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use flagd_core::Snapshot;
use serde_json::Value;
use tokio::sync::watch;

/// The snapshot being served and the flag-set version it stands for (a revert serves
/// an earlier snapshot under the new version number).
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) version: u64,
    pub(crate) document: Arc<crate::doc::Doc>,
    /// The identity of the store the version came from, and when it was committed.
    pub(crate) store: Option<String>,
    pub(crate) at: Option<i64>,
}

/// What the client is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not yet connected; serving the bootstrap or cache file (version 0 and empty
    /// without either).
    Connecting {
        /// The version served.
        version: u64,
    },
    /// Connected and up to date with flagd.
    Ready {
        /// The version served.
        version: u64,
    },
    /// The connection is lost; still serving the last applied snapshot.
    Stale {
        /// Since when.
        since: SystemTime,
        /// The version served.
        version: u64,
    },
}

impl Status {
    /// The flag-set version being served.
    ///
    /// ```
    /// assert_eq!(flagd_sdk::Status::Ready { version: 3 }.version(), 3);
    /// ```
    pub fn version(&self) -> u64 {
        match self {
            Self::Connecting { version }
            | Self::Ready { version }
            | Self::Stale { version, .. } => *version,
        }
    }
}

/// A change of the served flag set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The version served before.
    pub old_version: u64,
    /// The version served now.
    pub new_version: u64,
    /// The flag keys whose definitions changed (all keys for a full snapshot).
    pub changed_flags: Vec<String>,
}

/// One per client, shared by its clones and (weakly) by the stream task: the task stops
/// when the last clone drops it.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) current: ArcSwap<Current>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) changes: watch::Sender<ChangeEvent>,
    pub(crate) config: Config,
    pub(crate) stop: watch::Sender<bool>,
}

/// The builder's settings the stream task needs; copied out so that the task does not
/// hold the client alive.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// One per replica, in order of preference; never empty.
    pub(crate) stream_urls: Vec<String>,
    pub(crate) sdk_key: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) cache_file: Option<PathBuf>,
    pub(crate) instance: String,
    pub(crate) host: String,
    pub(crate) labels: serde_json::Map<String, Value>,
    pub(crate) max_backoff: Duration,
    pub(crate) heartbeat: Duration,
    /// Applied versions kept for reverts.
    pub(crate) keep_versions: usize,
}

/// Loads a document with every flag isolated: a flag that cannot be loaded evaluates
/// with reason `ERROR` (and is reported to flagd); only a document that is not a flag
/// set at all fails.
pub(crate) fn compile(doc: &Value, version: u64) -> Result<Snapshot, String> {
    Snapshot::load(doc, version).map_err(|e| e.to_string())
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
