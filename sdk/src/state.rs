//! The rules that apply flagd's frames to what the SDK holds (`docs/protocol.md`: P3,
//! P9–P11, P21–P23): which frames are applied, ignored or answered with a resync, what
//! is kept for reverts, and what each ack reports.
//!
//! Pure and synchronous, so that every rule is tested with frames alone (`tests.rs`):
//! [`State::apply`] returns a [`Step`] and `sync` performs it (publishes the snapshot,
//! sends the reply, logs the notes).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use flagd_core::wire::{Change, ClientMsg, ItemKind, ServerMsg};
use flagd_core::{Problem, Snapshot};
use serde_json::Value;

use crate::doc::Doc;
use crate::shared::{ChangeEvent, Config, Current, Status, compile};

/// How many applied snapshots are kept by default, so that a revert to one of them is
/// a swap (`ClientBuilder::keep_versions`).
pub(crate) const KEPT: usize = 4;

/// flagd closes a stream whose message exceeds 64 KiB (P5): what is reported is kept well
/// under it, whatever the set holds.
const REPORTED_PROBLEMS: usize = 50;
const REPORTED_CHARS: usize = 500;

/// An applied snapshot kept for reverts.
#[derive(Debug)]
struct Kept {
    version: u64,
    snapshot: Arc<Snapshot>,
    document: Arc<Doc>,
}

/// What the stream task holds across connections: the version it serves and the
/// snapshots it keeps for reverts. Only the stream task changes it, so it needs no lock;
/// readers see its `current` through the client's `ArcSwap`, once published.
#[derive(Debug)]
pub(crate) struct State {
    current: Arc<Current>,
    kept: VecDeque<Kept>,
    keep: usize,
}

/// What applying one frame asks the stream task to do, in this order: publish, log the
/// notes, send the reply, then (when something was published) write the cache file; so
/// that flagd is acked only for a version readers already see.
#[derive(Debug)]
pub(crate) struct Step {
    /// A new version to serve.
    pub(crate) publish: Option<Publish>,
    /// The log lines, in the order the rules produced them.
    pub(crate) notes: Vec<Note>,
    /// What to answer flagd.
    pub(crate) reply: Reply,
}

/// A new version to serve, with what readers and subscribers are told.
#[derive(Debug)]
pub(crate) struct Publish {
    /// What `Client` reads from now on (one atomic store).
    pub(crate) current: Arc<Current>,
    pub(crate) status: Status,
    pub(crate) change: ChangeEvent,
}

/// The answer to a frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    Nothing,
    Send(ClientMsg),
    /// End the connection (a gap, P10): the next hello names the held version, and flagd
    /// catches up from it with deltas or a snapshot (P6).
    Reconnect(String),
}

/// A log line the rules ask for; [`Note::emit`] writes it.
#[derive(Debug, PartialEq)]
pub(crate) enum Note {
    /// A reset snapshot, or one from another store, replaces what is held.
    StoreChanged {
        held: u64,
        version: u64,
    },
    /// A revert was served from a kept snapshot, without recompiling.
    RevertFromKept {
        version: u64,
        restores: u64,
    },
    Applied {
        old: u64,
        version: u64,
    },
    /// How many flags of the applied version evaluate with reason `ERROR`.
    BrokenFlags {
        version: u64,
        flags: usize,
    },
    /// The flag set in a frame is not a flag set at all.
    Unloadable {
        reason: String,
    },
    /// A frame that does not decode.
    Unreadable {
        error: String,
        bytes: usize,
    },
}

impl Note {
    /// Writes the log line, with the wording and fields operators search for.
    pub(crate) fn emit(&self) {
        match self {
            Self::StoreChanged { held, version } => tracing::warn!(
                held,
                version,
                "flagd's store changed (a restored backup or a new database); replacing the flag set"
            ),
            Self::RevertFromKept { version, restores } => {
                tracing::info!(version, restores, "revert applied from a kept snapshot");
            }
            Self::Applied { old, version } => tracing::info!(old, version, "flag set applied"),
            Self::BrokenFlags { version, flags } => tracing::warn!(
                version,
                flags,
                "some flags could not be loaded; they evaluate with reason ERROR"
            ),
            Self::Unloadable { reason } => tracing::error!(
                reason = %reason,
                "flagd sent a flag set that does not load; asking for a snapshot"
            ),
            Self::Unreadable { error, bytes } => tracing::error!(
                error = %error,
                bytes,
                "unreadable message from flagd; asking for a snapshot"
            ),
        }
    }
}

impl Step {
    fn reply(reply: Reply) -> Self {
        Self {
            publish: None,
            notes: Vec::new(),
            reply,
        }
    }

    /// A frame that does not decode. Never looped on: flagd answers the resync with a
    /// fresh snapshot, once per version (P23).
    pub(crate) fn unreadable(error: &str, bytes: usize) -> Self {
        Self {
            publish: None,
            notes: vec![Note::Unreadable {
                error: error.to_owned(),
                bytes,
            }],
            reply: Reply::Send(ClientMsg::Resync {
                reason: clip(&format!("unreadable message: {error}")),
            }),
        }
    }

    /// A flag set that is not a flag set at all: nothing is applied; flagd answers the
    /// resync with a fresh snapshot.
    fn unloadable(mut notes: Vec<Note>, reason: String) -> Self {
        let msg = ClientMsg::Resync {
            reason: clip(&reason),
        };
        notes.push(Note::Unloadable { reason });
        Self {
            publish: None,
            notes,
            reply: Reply::Send(msg),
        }
    }
}

impl State {
    /// Starts from what the client serves before flagd answers (cache, bootstrap or
    /// nothing); nothing is kept for reverts yet.
    #[cfg(test)]
    pub(crate) fn new(current: Arc<Current>) -> Self {
        Self::keeping(current, KEPT)
    }

    /// [`State::new`], keeping `keep` applied versions.
    pub(crate) fn keeping(current: Arc<Current>, keep: usize) -> Self {
        Self {
            current,
            kept: VecDeque::new(),
            keep: keep.max(1),
        }
    }

    /// What is served.
    pub(crate) fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// The hello (P3), and the status to report once it is sent: an SDK that already
    /// holds a version is ready at once, because flagd sends nothing when it is the head.
    /// Version 0 is the empty set or a bootstrap file, which no store issued: announced
    /// as nothing held.
    pub(crate) fn hello(&self, config: &Config) -> (ClientMsg, Option<Status>) {
        let cur = &self.current;
        let (version, store, at) = if cur.version > 0 {
            (Some(cur.version), cur.store.clone(), cur.at)
        } else {
            (None, None, None)
        };
        let hello = ClientMsg::Hello {
            instance: config.instance.clone(),
            sdk: concat!("flagd-sdk-rust/", env!("CARGO_PKG_VERSION")).to_owned(),
            host: config.host.clone(),
            labels: config.labels.clone(),
            version,
            store,
            at,
        };
        (hello, version.map(|version| Status::Ready { version }))
    }

    /// Applies one frame from flagd.
    pub(crate) fn apply(&mut self, msg: ServerMsg) -> Step {
        match msg {
            ServerMsg::Snapshot {
                version,
                document,
                store,
                at,
                reset,
            } => self.snapshot(version, document, store, at, reset),
            ServerMsg::Delta {
                from,
                version,
                changes,
                restores,
                at,
            } => self.delta(from, version, &changes, restores, at),
            ServerMsg::Restore {
                from,
                version,
                restores,
                at,
            } => self.restore(from, version, restores, at),
            ServerMsg::Ping => Step::reply(Reply::Send(ClientMsg::Pong)),
            ServerMsg::Pong => Step::reply(Reply::Nothing),
        }
    }

    fn snapshot(
        &mut self,
        version: u64,
        document: Value,
        store: Option<String>,
        at: Option<i64>,
        reset: bool,
    ) -> Step {
        let held = self.current.version;
        let other_store =
            store.is_some() && self.current.store.is_some() && store != self.current.store;
        // Version 0 was issued by no store, so any snapshot replaces it.
        if !reset && !other_store && version <= held && held > 0 {
            return Step::reply(Reply::Nothing); // P10: nothing newer than what is held
        }
        let mut notes = Vec::new();
        if reset || other_store {
            // P21: what was held came from another history, so nothing kept is reusable.
            notes.push(Note::StoreChanged { held, version });
            self.kept.clear();
        }
        let snap = match compile(&document, version) {
            Ok(s) => Arc::new(s),
            Err(e) => return Step::unloadable(notes, e),
        };
        let flags = document
            .get("flags")
            .and_then(Value::as_object)
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default();
        let next = Current {
            snapshot: snap,
            version,
            document: Arc::new(Doc::from_value(document)),
            store,
            at,
        };
        self.install(next, flags, notes)
    }

    fn delta(
        &mut self,
        from: u64,
        version: u64,
        changes: &[Change],
        restores: Option<u64>,
        at: Option<i64>,
    ) -> Step {
        let cur = self.current.clone();
        if version <= cur.version {
            return Step::reply(Reply::Nothing); // P10: nothing newer than what is held
        }
        if from != cur.version {
            return Step::reply(Reply::Reconnect(format!(
                "delta from {from} does not follow held version {}",
                cur.version
            )));
        }
        let flags: Vec<String> = changes
            .iter()
            .filter(|c| c.kind == ItemKind::Flag)
            .map(|c| c.key.clone())
            .collect();
        let next = |snapshot, document| Current {
            snapshot,
            version,
            document,
            store: cur.store.clone(),
            at,
        };
        // A revert to a snapshot still kept is a swap, with no recompiling.
        if let Some(restores) = restores
            && let Some((snap, doc)) = self.kept(restores)
        {
            let notes = vec![Note::RevertFromKept { version, restores }];
            return self.install(next(snap, doc), flags, notes);
        }
        // Only what changed is copied and compiled; the rest of the document and of
        // the snapshot is shared with the version held.
        let doc = cur.document.with_changes(changes);
        let snapshot = match cur.snapshot.with_changes(changes, version, |k| doc.flag(k)) {
            Some(s) => Ok(s),
            None => compile(&doc.to_value(), version),
        };
        match snapshot {
            Ok(s) => self.install(next(Arc::new(s), Arc::new(doc)), flags, Vec::new()),
            Err(e) => Step::unloadable(Vec::new(), e),
        }
    }

    fn restore(&mut self, from: u64, version: u64, restores: u64, at: Option<i64>) -> Step {
        let cur = self.current.clone();
        if version <= cur.version {
            return Step::reply(Reply::Nothing);
        }
        match self.kept(restores) {
            // P9: a revert to a snapshot still kept is a swap, with no recompiling.
            Some((snap, doc)) if from == cur.version => {
                let flags = cur.document.changed_flags(&doc);
                let next = Current {
                    snapshot: snap,
                    version,
                    document: doc,
                    store: cur.store.clone(),
                    at,
                };
                let notes = vec![Note::RevertFromKept { version, restores }];
                self.install(next, flags, notes)
            }
            // Not kept (or a gap): after reconnecting flagd sends the full changes.
            _ => Step::reply(Reply::Reconnect(format!(
                "revert to {restores}, which is not kept; resynchronizing"
            ))),
        }
    }

    fn kept(&self, version: u64) -> Option<(Arc<Snapshot>, Arc<Doc>)> {
        self.kept
            .iter()
            .find(|k| k.version == version)
            .map(|k| (k.snapshot.clone(), k.document.clone()))
    }

    /// Makes a version the served one, keeps it for reverts, and acks it (P11).
    fn install(&mut self, next: Current, changed_flags: Vec<String>, mut notes: Vec<Note>) -> Step {
        let old = self.current.version;
        let version = next.version;
        let snapshot = next.snapshot.clone();
        self.kept.retain(|k| k.version != version);
        self.kept.push_back(Kept {
            version,
            snapshot: snapshot.clone(),
            document: next.document.clone(),
        });
        while self.kept.len() > self.keep {
            self.kept.pop_front();
        }
        self.current = Arc::new(next);
        notes.push(Note::Applied { old, version });
        let problems = snapshot.problems();
        if !problems.is_empty() {
            notes.push(Note::BrokenFlags {
                version,
                flags: problems.len(),
            });
        }
        Step {
            publish: Some(Publish {
                current: self.current.clone(),
                status: Status::Ready { version },
                change: ChangeEvent {
                    old_version: old,
                    new_version: version,
                    changed_flags,
                },
            }),
            notes,
            reply: Reply::Send(ClientMsg::Ack {
                version,
                problems: reported(problems),
            }),
        }
    }
}

/// The status once a connection is lost: a ready client goes stale, still serving
/// `version`; one that never got ready stays as it is. `true` when it changed, as
/// `watch::Sender::send_if_modified` wants.
pub(crate) fn disconnected(status: &mut Status, version: u64, since: SystemTime) -> bool {
    if matches!(status, Status::Ready { .. }) {
        *status = Status::Stale { since, version };
        true
    } else {
        false
    }
}

/// A message cut to [`REPORTED_CHARS`] characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(REPORTED_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The problems an ack carries: the first [`REPORTED_PROBLEMS`], each clipped, and a
/// last entry counting the rest (`sdk.problems()` has them all).
fn reported(problems: &[Problem]) -> Vec<Problem> {
    let mut out: Vec<Problem> = problems
        .iter()
        .take(REPORTED_PROBLEMS)
        .map(|p| Problem {
            path: clip(&p.path),
            message: clip(&p.message),
        })
        .collect();
    if problems.len() > REPORTED_PROBLEMS {
        out.push(Problem {
            path: String::new(),
            message: format!(
                "and {} more flags that could not be loaded",
                problems.len() - REPORTED_PROBLEMS
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests;
