//! Live push: SDKs hold a websocket; every committed version is serialized once and the
//! same bytes go to every connection of the environment (`docs/protocol.md`).
//!
//! Each connection is its own task reading a `broadcast` channel, so a slow or stalled
//! client never delays the others: it lags, and is then sent a fresh snapshot, or is
//! disconnected when a send does not complete in time.

mod cluster;
mod events;
mod fleet;
mod follow;
mod heads;
mod protocol;
mod providers;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, Committed, Store};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, close_code};
use flagd_core::wire::{CLOSE_REVOKED, ClientMsg, ServerMsg};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, RwLock, broadcast};

pub use cluster::{REPORT_EVERY, STALE_REPORT};
pub use events::{UiEvent, forward_changes_to_ui};
pub use fleet::{FleetCounts, Instance};
pub use heads::{Compiled, SdkKey};
pub use protocol::MAX_CLIENT_MESSAGE;
pub use providers::{Changes, ProviderInfo, ProviderSeat, WholeSet};

use fleet::*;

/// How many recent deltas are kept per environment to resume a reconnecting SDK.
const RECENT: usize = 64;

/// One frame, serialized once.
#[derive(Clone, Debug)]
pub struct Frame {
    from: u64,
    version: u64,
    text: Utf8Bytes,
}

#[derive(Debug, Default)]
struct Cached {
    /// 0 until first loaded.
    loaded: bool,
    version: u64,
    /// The head's document, followed change by change as SDKs follow it.
    document: Value,
    /// When `version` was committed (ms); `None` for version 0.
    at: Option<i64>,
    snapshot: Option<Frame>,
    recent: VecDeque<Frame>,
}

#[derive(Debug)]
struct EnvHub {
    tx: broadcast::Sender<Frame>,
    cache: RwLock<Cached>,
    /// By instance id: an instance that reconnects takes its own entry over.
    fleet: std::sync::Mutex<HashMap<String, Arc<Member>>>,
    /// The head compiled for remote evaluation; cleared by every publication.
    compiled: std::sync::Mutex<Option<Arc<Compiled>>>,
    /// One compilation at a time.
    compiling: Mutex<()>,
    /// The whole set the gRPC providers were last sent (built once per version).
    whole: Mutex<Option<Arc<WholeSet>>>,
    /// The last version published and when (ns since the hub's epoch), for the time
    /// from commit to each SDK's ack.
    last_version: std::sync::atomic::AtomicU64,
    last_commit_ns: std::sync::atomic::AtomicU64,
    /// Counts changes to the fleet (connects, versions applied, problems, losses), so
    /// that this replica reports its fleet to the others when it changed.
    fleet_changes: std::sync::atomic::AtomicU64,
}

impl EnvHub {
    fn fleet_changed(&self) {
        self.fleet_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A credential that stopped being valid: its open streams are closed at once.
#[derive(Clone, Debug)]
pub enum Revoked {
    /// A token or SDK key, by id.
    Token(String),
    /// An admin UI session, by the hash of its secret.
    Session(String),
}

/// Per-environment channels, caches and fleets.
#[derive(Debug)]
pub struct Hub {
    store: Arc<Store>,
    /// Read on every stream message and remote evaluation, written once per environment.
    envs: std::sync::RwLock<HashMap<String, Arc<EnvHub>, foldhash::fast::RandomState>>,
    next_conn: std::sync::atomic::AtomicU64,
    closing: tokio::sync::watch::Sender<bool>,
    heartbeat: Duration,
    ui: broadcast::Sender<crate::hub::UiEvent>,
    /// Every metric flagd exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What commit times are measured from.
    epoch: std::time::Instant,
    /// How long an unreachable instance is remembered.
    fleet_ttl: Duration,
    /// Revoked tokens, SDK keys and ended sessions, for the streams that use them.
    revocations: broadcast::Sender<Revoked>,
    /// SDK key hash → (its caller, when checked): neither remote evaluation nor a
    /// stream's connection costs a store query each.
    sdk_keys: std::sync::Mutex<
        HashMap<[u8; 32], (Caller, std::time::Instant), foldhash::fast::RandomState>,
    >,
    /// This replica's name among the replicas of one store.
    replica: String,
}

fn text(msg: &ServerMsg) -> Utf8Bytes {
    // Serializing our own types cannot fail; an empty frame would be refused by the SDK.
    Utf8Bytes::from(serde_json::to_string(msg).unwrap_or_default())
}

impl crate::bus::Subscriber for Hub {
    fn committed<'a>(
        &'a self,
        committed: &'a Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.publish(committed))
    }
}

impl Hub {
    /// A hub over the store, pinging every stream each `heartbeat`, remembering an
    /// unreachable SDK instance for `fleet_ttl`.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        heartbeat: Duration,
        fleet_ttl: Duration,
    ) -> Self {
        Self {
            fleet_ttl,
            revocations: broadcast::channel(64).0,
            // A zero interval would make every stream spin.
            heartbeat: heartbeat.max(Duration::from_millis(10)),
            ui: broadcast::channel(1024).0,
            sdk_keys: std::sync::Mutex::new(HashMap::default()),
            metrics,
            epoch: std::time::Instant::now(),
            store,
            envs: std::sync::RwLock::new(HashMap::default()),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            closing: tokio::sync::watch::channel(false).0,
            replica: String::new(),
        }
    }

    /// The same hub, named `replica` among the replicas of its store (its fleet
    /// entries and reports say so).
    #[must_use]
    pub fn named(mut self, replica: impl Into<String>) -> Self {
        self.replica = replica.into();
        self
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Closes every stream ("going away"): the SDKs reconnect, to another replica or
    /// to this one after its restart.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Changes to `true` when flagd shuts down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    async fn env(&self, env: &str) -> Arc<EnvHub> {
        if let Ok(envs) = self.envs.read()
            && let Some(h) = envs.get(env)
        {
            return h.clone();
        }
        // A poisoned lock only means a panic elsewhere while inserting: the map is whole.
        let mut envs = self
            .envs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        envs.entry(env.to_owned())
            .or_insert_with(|| {
                // Capacity bounds what a slow connection may lag behind before it is
                // resynchronized with a snapshot.
                let (tx, _) = broadcast::channel(256);
                Arc::new(EnvHub {
                    tx,
                    cache: RwLock::new(Cached::default()),
                    fleet: std::sync::Mutex::new(HashMap::new()),
                    compiled: std::sync::Mutex::new(None),
                    compiling: Mutex::new(()),
                    whole: Mutex::new(None),
                    last_version: std::sync::atomic::AtomicU64::new(0),
                    last_commit_ns: std::sync::atomic::AtomicU64::new(0),
                    fleet_changes: std::sync::atomic::AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Loads the head from the store into the cache (after start, or after a gap).
    async fn reload(&self, hub: &EnvHub, env: &str) -> ApiResult<()> {
        let (version, items) = self.store.items(env, None).await?;
        let at = self.store.version_at(env, version).await?;
        let mut c = hub.cache.write().await;
        if !c.loaded || version > c.version {
            c.loaded = true;
            c.version = version;
            c.at = at;
            c.document = flagd_core::document::assemble_owned(items);
            c.snapshot = None;
            c.recent.clear();
        }
        Ok(())
    }

    /// A token, SDK key or session is no longer valid: its open streams (SDK streams,
    /// the UI's `/events`) close now, and the fleet forgets the instances that used an
    /// SDK key.
    pub fn revoke(&self, what: Revoked) {
        self.forget_sdk_keys();
        if let Revoked::Token(id) = &what
            && let Ok(envs) = self.envs.read()
        {
            for hub in envs.values() {
                hub.fleet_changed();
                if let Ok(mut f) = hub.fleet.lock() {
                    f.retain(|_, m| &m.token_id != id);
                }
            }
        }
        let _ = self.revocations.send(what);
    }

    /// Revocations as they happen.
    pub fn revocations(&self) -> broadcast::Receiver<Revoked> {
        self.revocations.subscribe()
    }

    /// Announces a committed change to every connected SDK of its environment.
    pub async fn publish(&self, committed: &Committed) {
        if !committed.changed {
            return;
        }
        let env = &committed.environment;
        let hub = self.env(env).await;
        // Taken out: whatever happens below, the compiled head is no longer this.
        let compiled = hub.compiled.lock().ok().and_then(|mut c| c.take());
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        hub.last_commit_ns
            .store(now, std::sync::atomic::Ordering::Relaxed);
        hub.last_version
            .store(committed.version, std::sync::atomic::Ordering::Release);
        let mut c = hub.cache.write().await;
        if !c.loaded {
            drop(c);
            // Nobody has asked for this environment yet: nothing to send, the next
            // connection loads the head.
            if hub.tx.receiver_count() == 0 {
                return;
            }
            if let Err(e) = self.reload(&hub, env).await {
                tracing::warn!(env, error = %e, "cannot load the flag set to publish");
            }
            c = hub.cache.write().await;
        }
        if committed.version <= c.version {
            // A connection reloaded the head in between: the cache has this version, but
            // the connections already open have not been sent it. A snapshot frame makes
            // each of them catch up (a gap for them).
            drop(c);
            if let Some(f) = self.snapshot_frame(&hub).await {
                let _ = hub.tx.send(f);
            }
            return;
        }
        if committed.version != c.version + 1 {
            // This process announces in version order (the bus, under the write lock),
            // so a gap means another replica committed in between and this one has not
            // followed it yet: one frame from what the SDKs hold to this version, the
            // way a followed change goes (a delta of what differs, not a snapshot of
            // every flag to every stream).
            drop(c);
            match self.follow_held(env, &hub, Some(committed.version)).await {
                // The other replica's versions, for open UI pages (this one's own goes
                // out on the bus).
                Ok(Some((from, _))) => {
                    self.tell_ui_of_remote(env, from, committed.version - 1)
                        .await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(env, error = %e, "cannot read what another replica committed; resynchronizing");
                    let _ = self.reload(&hub, env).await;
                    if let Some(f) = self.snapshot_frame(&hub).await {
                        let _ = hub.tx.send(f);
                    }
                }
            }
            return;
        }
        let from = c.version;
        // Send first, then update the cache (new connections read it under this lock, so
        // they see either the old version and then this frame, or the new version).
        // A revert goes out as a compact restore frame (P9); the full delta, which can be
        // megabytes, is built afterwards, for catching up.
        if let Some(k) = committed.restores {
            let _ = hub.tx.send(Frame {
                from,
                version: committed.version,
                text: text(&ServerMsg::Restore {
                    from,
                    version: committed.version,
                    restores: k,
                    at: Some(committed.at),
                }),
            });
        }
        let Some(changes) = &committed.changes else {
            // Too large to carry (a large revert, announced above): the cache reads the
            // new head from the store; SDKs catching up from before it get a snapshot.
            c.loaded = false;
            c.at = Some(committed.at);
            drop(c);
            if let Err(e) = self.reload(&hub, env).await {
                tracing::warn!(env, error = %e, "cannot reload the flag set");
            }
            if committed.restores.is_none()
                && let Some(f) = self.snapshot_frame(&hub).await
            {
                // Not announced by a restore frame: open connections need the set.
                let _ = hub.tx.send(f);
            }
            return;
        };
        let full = Frame {
            from,
            version: committed.version,
            text: text(&ServerMsg::Delta {
                from,
                version: committed.version,
                changes: changes.clone(),
                restores: committed.restores,
                at: Some(committed.at),
            }),
        };
        if committed.restores.is_none() {
            let _ = hub.tx.send(full.clone());
        }
        flagd_core::document::apply_changes(&mut c.document, changes);
        c.version = committed.version;
        c.at = Some(committed.at);
        c.snapshot = None;
        c.recent.push_back(full);
        while c.recent.len() > RECENT {
            c.recent.pop_front();
        }
        // Remote evaluation's compiled head follows at the cost of what changed, rather
        // than a whole compile on the next call; under the read lock only, so that new
        // connections are not held up (the SDKs have the frame already).
        let c = c.downgrade();
        if let Some(old) = compiled
            && old.snapshot.version() == from
            && let Some(next) = old.advance(changes, committed.version, &c.document)
            && let Ok(mut slot) = hub.compiled.lock()
        {
            *slot = Some(next);
        }
    }

    async fn snapshot_frame(&self, hub: &EnvHub) -> Option<Frame> {
        {
            let c = hub.cache.read().await;
            if let Some(f) = &c.snapshot {
                return Some(f.clone());
            }
        }
        let store = self.store.identity().await.ok();
        let mut c = hub.cache.write().await;
        if c.snapshot.is_none() {
            let msg = ServerMsg::Snapshot {
                version: c.version,
                document: c.document.clone(),
                store,
                at: c.at,
                reset: false,
            };
            c.snapshot = Some(Frame {
                from: 0,
                version: c.version,
                text: text(&msg),
            });
        }
        c.snapshot.clone()
    }
}
