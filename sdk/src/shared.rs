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
    /// Changed only through [`Inner::serve`].
    pub(crate) current: ArcSwap<Current>,
    /// The serial number of what `current` holds, unique in the process
    /// ([`next_serial`]): a thread that saw this number last time evaluates on the
    /// snapshot it kept ([`Inner::with_snapshot`]).
    pub(crate) serial: std::sync::atomic::AtomicU64,
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

/// The snapshot a thread evaluated on last, and the serial number it was served under.
struct Seen {
    serial: u64,
    snapshot: Arc<Snapshot>,
}

thread_local! {
    static SEEN: std::cell::RefCell<Option<Seen>> = const { std::cell::RefCell::new(None) };
}

/// A serial number for [`Inner::serial`], never given twice in the process: one number
/// names both the client and what it serves, so a thread's check is one comparison.
/// Never 0.
pub(crate) fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Inner {
    /// Serves `current` from now on, to every thread.
    pub(crate) fn serve(&self, current: Arc<Current>) {
        self.current.store(current);
        // After the store: a thread that sees the new number loads the new snapshot.
        self.serial
            .store(next_serial(), std::sync::atomic::Ordering::Release);
    }

    /// Runs `f` on the served snapshot. Each thread keeps the snapshot it used last, and
    /// uses it again while the client has served no other: one atomic load and one
    /// comparison instead of the `ArcSwap` protocol on every evaluation (benchmarks.md
    /// section 1). A thread keeps at most one snapshot, until its next evaluation;
    /// flags unchanged between versions are shared, so the one it keeps costs little
    /// beside the served one.
    ///
    /// `f` is `Fn`, not `FnOnce`, so that the kept snapshot's path does not carry `f`
    /// in an `Option` to find out afterwards which path ran; it is called once.
    #[inline]
    pub(crate) fn with_snapshot<R>(&self, f: impl Fn(&Snapshot) -> R) -> R {
        let serial = self.serial.load(std::sync::atomic::Ordering::Acquire);
        // A shared borrow: an `f` that evaluated again on this thread (none does) would
        // find the snapshot kept and not replace it while this one uses it.
        let kept = SEEN.try_with(|seen| match seen.try_borrow() {
            Ok(seen) => match &*seen {
                Some(s) if s.serial == serial => Some(f(&s.snapshot)),
                _ => None,
            },
            Err(_) => None,
        });
        match kept {
            Ok(Some(r)) => r,
            _ => self.load_and_keep(serial, f),
        }
    }

    /// [`Inner::with_snapshot`] after a change (or the thread's first call, or its
    /// first for this client): the snapshot loaded, evaluated, then kept. Out of line,
    /// so that the kept snapshot's path saves no registers for this one.
    #[cold]
    #[inline(never)]
    fn load_and_keep<R>(&self, serial: u64, f: impl Fn(&Snapshot) -> R) -> R {
        let snapshot = self.current.load().snapshot.clone();
        let r = f(&snapshot);
        // Not kept while the thread is being torn down, or while the kept one is in use.
        let _ = SEEN.try_with(|seen| {
            if let Ok(mut seen) = seen.try_borrow_mut() {
                *seen = Some(Seen { serial, snapshot });
            }
        });
        r
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current(on: bool, version: u64) -> Arc<Current> {
        let doc = json!({"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": if on { "on" } else { "off" }}}});
        Arc::new(Current {
            snapshot: Arc::new(compile(&doc, version).unwrap()),
            version,
            document: Arc::new(crate::doc::Doc::from_value(doc)),
            store: None,
            at: None,
        })
    }

    fn inner(on: bool) -> Inner {
        Inner {
            current: ArcSwap::new(current(on, 1)),
            serial: std::sync::atomic::AtomicU64::new(next_serial()),
            status: watch::channel(Status::Connecting { version: 1 }).0,
            changes: watch::channel(ChangeEvent {
                old_version: 0,
                new_version: 1,
                changed_flags: Vec::new(),
            })
            .0,
            config: Config {
                stream_urls: vec!["ws://127.0.0.1:9".into()],
                sdk_key: String::new(),
                connect_timeout: Duration::from_secs(1),
                cache_file: None,
                instance: String::new(),
                host: String::new(),
                labels: serde_json::Map::new(),
                max_backoff: Duration::from_secs(1),
                heartbeat: Duration::from_secs(1),
                keep_versions: 1,
            },
            stop: watch::channel(false).0,
        }
    }

    /// An evaluation made while another runs on the same thread (no getter does this;
    /// the kept snapshot must survive it anyway) answers from its own client's
    /// snapshot and leaves the outer one's intact.
    #[test]
    fn an_evaluation_inside_another_leaves_the_kept_snapshot_alone() {
        let ctx = flagd_core::EvaluationContext::default();
        let (a, b) = (inner(true), inner(false));
        assert!(a.with_snapshot(|s| s.enabled("f", &ctx)));
        let got = a.with_snapshot(|s| {
            let inner = b.with_snapshot(|t| t.enabled("f", &ctx));
            (s.enabled("f", &ctx), inner, s.version())
        });
        assert_eq!(got, (true, false, 1));
        assert!(!b.with_snapshot(|s| s.enabled("f", &ctx)));
        assert!(a.with_snapshot(|s| s.enabled("f", &ctx)));
    }

    /// The snapshot a thread keeps is used only while it is the one served, by the
    /// client it came from: a change served is evaluated at once, on this thread and on
    /// any other, and two clients used in turn on one thread never see each other's.
    #[test]
    fn a_kept_snapshot_never_outlives_a_change() {
        let ctx = flagd_core::EvaluationContext::default();
        let (a, b) = (inner(true), inner(false));
        for _ in 0..3 {
            assert!(a.with_snapshot(|s| s.enabled("f", &ctx)));
            assert!(!b.with_snapshot(|s| s.enabled("f", &ctx)));
        }
        a.serve(current(false, 2));
        assert!(!a.with_snapshot(|s| s.enabled("f", &ctx)));
        assert_eq!(a.with_snapshot(Snapshot::version), 2);
        std::thread::scope(|t| {
            t.spawn(|| {
                assert!(!a.with_snapshot(|s| s.enabled("f", &ctx)));
                b.serve(current(true, 3));
            });
        });
        assert!(b.with_snapshot(|s| s.enabled("f", &ctx)));
        assert!(!a.with_snapshot(|s| s.enabled("f", &ctx)));
    }
}
