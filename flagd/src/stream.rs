//! Live push: SDKs hold a websocket; every committed version is serialized once and the
//! same bytes go to every connection of the environment (`docs/protocol.md`).
//!
//! Each connection is its own task reading a `broadcast` channel, so a slow or stalled
//! client never delays the others: it lags, and is then sent a fresh snapshot, or is
//! disconnected when a send does not complete in time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use flagd_core::wire::{CLOSE_REVOKED, ClientMsg, ServerMsg};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock, broadcast};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, Committed, Store};

/// How many recent deltas are kept per environment to resume a reconnecting SDK.
const RECENT: usize = 64;
/// A connection that sends nothing (not even a pong) for this many heartbeats is
/// closed as half-open.
const SILENT_HEARTBEATS: u32 = 3;
/// A send that does not complete in this time means a stalled client: disconnect it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message an SDK may send.
pub(crate) const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

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

/// One connected SDK instance, for the fleet view.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The instance id the SDK gave.
    pub instance: String,
    /// SDK name and version.
    pub sdk: String,
    /// Host label.
    pub host: String,
    /// Labels.
    pub labels: serde_json::Map<String, Value>,
    /// The SDK key's name.
    pub key_name: String,
    /// When it connected (RFC 3339).
    pub connected_since: String,
    /// The version it last acknowledged.
    pub applied_version: Option<u64>,
    /// When it last acknowledged (RFC 3339).
    pub last_ack: Option<String>,
    /// `connected`, or `unreachable`: its connection was lost without a goodbye, and it
    /// may still be serving `applied_version`. Remembered until it reconnects, says
    /// goodbye, is forgotten (`DELETE …/fleet/{instance}`) or the fleet TTL expires.
    pub state: &'static str,
    /// Since when it is unreachable (RFC 3339).
    pub unreachable_since: Option<String>,
    /// Flags of its version it could not load (they evaluate with reason `ERROR`).
    pub problems: Vec<flagd_core::Problem>,
    /// The last message or flag set it reported it could not read.
    pub last_error: Option<String>,
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
    /// The last version published and when (ns since the hub's epoch), for the time
    /// from commit to each SDK's ack.
    last_version: std::sync::atomic::AtomicU64,
    last_commit_ns: std::sync::atomic::AtomicU64,
}

/// An environment's head compiled once for remote evaluation (OFREP).
#[derive(Debug)]
pub struct Compiled {
    /// The snapshot, at the head's version.
    pub snapshot: Arc<flagd_core::Snapshot>,
    /// Its flag keys, sorted once per version for bulk evaluation's stable order.
    pub sorted_keys: Arc<[Box<str>]>,
    /// When the store's head was last checked (another replica may have committed).
    checked: std::time::Instant,
}

/// What a secret presented for remote evaluation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdkKey {
    /// An SDK key of this environment.
    Environment(String),
    /// A valid credential that is not an SDK key (an API token).
    NotAnSdkKey,
    /// Unknown or revoked.
    Unknown,
}

/// How long a compiled head is served before the store is asked whether another replica
/// has committed since.
const HEAD_CHECK: Duration = Duration::from_secs(1);
/// How long an SDK key is trusted without asking the store again.
const KEY_TTL: Duration = Duration::from_secs(10);

/// A connection's fleet entry. Acks update atomics: no lock on the hot path of 10,000
/// SDKs acknowledging the same version at once.
#[derive(Debug)]
struct Member {
    info: Instance,
    /// The token id of the SDK key it connected with: revoking the key drops it.
    token_id: String,
    /// `u64::MAX` until the first version is known.
    applied: std::sync::atomic::AtomicU64,
    /// Milliseconds; 0 until the first ack.
    last_ack: std::sync::atomic::AtomicI64,
    /// When its connection was lost (ms); 0 while connected.
    gone_at: std::sync::atomic::AtomicI64,
    /// What it reported it could not load.
    problems: std::sync::Mutex<(Vec<flagd_core::Problem>, Option<String>)>,
}

impl Member {
    fn applied(&self) -> Option<u64> {
        let applied = self.applied.load(std::sync::atomic::Ordering::Relaxed);
        (applied != u64::MAX).then_some(applied)
    }

    fn gone_at(&self) -> Option<i64> {
        let g = self.gone_at.load(std::sync::atomic::Ordering::Relaxed);
        (g != 0).then_some(g)
    }

    fn snapshot(&self) -> Instance {
        let mut i = self.info.clone();
        i.applied_version = self.applied();
        let at = self.last_ack.load(std::sync::atomic::Ordering::Relaxed);
        i.last_ack = (at != 0).then(|| store::rfc3339(at));
        if let Some(g) = self.gone_at() {
            i.state = "unreachable";
            i.unreachable_since = Some(store::rfc3339(g));
        }
        if let Ok(p) = self.problems.lock() {
            i.problems.clone_from(&p.0);
            i.last_error.clone_from(&p.1);
        }
        i
    }
}

/// Counts of an environment's fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Every instance remembered: connected and unreachable.
    pub total: usize,
    /// Those that have applied the version asked about.
    pub on_version: usize,
    /// Those whose connection was lost.
    pub unreachable: usize,
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
    ui: broadcast::Sender<crate::stream::UiEvent>,
    /// Every metric flagd exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What commit times are measured from.
    epoch: std::time::Instant,
    /// How long an unreachable instance is remembered.
    fleet_ttl: Duration,
    /// Revoked tokens, SDK keys and ended sessions, for the streams that use them.
    revocations: broadcast::Sender<Revoked>,
    /// SDK key hash → (environment, when checked): remote evaluation must not cost a
    /// store query per request.
    sdk_keys: std::sync::Mutex<
        HashMap<[u8; 32], (String, std::time::Instant), foldhash::fast::RandomState>,
    >,
}

fn text(msg: &ServerMsg) -> Utf8Bytes {
    // Serializing our own types cannot fail; an empty frame would be refused by the SDK.
    Utf8Bytes::from(serde_json::to_string(msg).unwrap_or_default())
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
        }
    }

    /// Closes every stream ("going away"): the SDKs reconnect, to another replica or
    /// to this one after its restart.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Tells open admin UI pages about something (a change, a new environment).
    pub fn notify_ui(&self, event: crate::stream::UiEvent) {
        let _ = self.ui.send(event);
    }

    /// The admin UI's events.
    pub fn ui_events(&self) -> broadcast::Receiver<crate::stream::UiEvent> {
        self.ui.subscribe()
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
                    last_version: std::sync::atomic::AtomicU64::new(0),
                    last_commit_ns: std::sync::atomic::AtomicU64::new(0),
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
            c.document = flagd_core::document::assemble(&items);
            c.snapshot = None;
            c.recent.clear();
        }
        Ok(())
    }

    /// What a secret is, for remote evaluation: an SDK key's environment comes from
    /// memory when checked in the last seconds.
    pub async fn sdk_key(&self, secret: &str) -> ApiResult<SdkKey> {
        let digest = crate::auth::digest_secret(secret);
        if let Ok(keys) = self.sdk_keys.lock()
            && let Some((env, at)) = keys.get(&digest)
            && at.elapsed() < KEY_TTL
        {
            return Ok(SdkKey::Environment(env.clone()));
        }
        let hash = crate::auth::hex(&digest);
        let Some(token) = self.store.token_by_hash(&hash).await? else {
            return Ok(SdkKey::Unknown);
        };
        let env = (token.role == Role::Sdk.as_str())
            .then(|| token.environments.and_then(|e| e.into_iter().next()))
            .flatten();
        let Some(env) = env else {
            return Ok(SdkKey::NotAnSdkKey);
        };
        if let Ok(mut keys) = self.sdk_keys.lock() {
            if keys.len() > 10_000 {
                keys.clear();
            }
            keys.insert(digest, (env.clone(), std::time::Instant::now()));
        }
        Ok(SdkKey::Environment(env))
    }

    /// Forgets the SDK keys held in memory (a token was revoked).
    pub fn forget_sdk_keys(&self) {
        if let Ok(mut keys) = self.sdk_keys.lock() {
            keys.clear();
        }
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

    /// Forgets an instance (an operator knows it is gone). Returns whether it was known.
    pub async fn forget(&self, env: &str, instance: &str) -> bool {
        let hub = self.env(env).await;
        hub.fleet
            .lock()
            .is_ok_and(|mut f| f.remove(instance).is_some())
    }

    /// The environment's head, compiled once per version for remote evaluation.
    pub async fn compiled(&self, env: &str) -> ApiResult<Arc<Compiled>> {
        let hub = self.env(env).await;
        let fresh = |hub: &EnvHub| {
            hub.compiled
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .filter(|c| c.checked.elapsed() < HEAD_CHECK)
        };
        if let Some(c) = fresh(&hub) {
            return Ok(c);
        }
        let _one = hub.compiling.lock().await;
        if let Some(c) = fresh(&hub) {
            return Ok(c);
        }
        let head = self.store.environment(env).await?.version;
        let (loaded, cached) = {
            let c = hub.cache.read().await;
            (c.loaded, c.version)
        };
        if !loaded || head > cached {
            self.reload(&hub, env).await?;
        }
        let held = hub.compiled.lock().ok().and_then(|c| c.clone());
        let c = hub.cache.read().await;
        let (snapshot, sorted_keys) = match held {
            Some(h) if h.snapshot.version() == c.version => {
                (h.snapshot.clone(), h.sorted_keys.clone())
            }
            _ => {
                // Isolated: a stored flag that cannot be compiled answers ERROR alone.
                let snapshot = flagd_core::Snapshot::load(&c.document, c.version).map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("stored flag set unreadable: {e}"))
                })?;
                let mut keys: Vec<Box<str>> = snapshot.keys().map(Box::from).collect();
                keys.sort_unstable();
                (Arc::new(snapshot), keys.into())
            }
        };
        let compiled = Arc::new(Compiled {
            snapshot,
            sorted_keys,
            checked: std::time::Instant::now(),
        });
        if let Ok(mut slot) = hub.compiled.lock() {
            *slot = Some(compiled.clone());
        }
        Ok(compiled)
    }

    /// Announces a committed change to every connected SDK of its environment.
    pub async fn publish(&self, committed: &Committed) {
        if !committed.changed {
            return;
        }
        let env = &committed.environment;
        let hub = self.env(env).await;
        if let Ok(mut c) = hub.compiled.lock() {
            *c = None;
        }
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
            // Publications raced: resynchronize everyone from the store's head.
            drop(c);
            let _ = self.reload(&hub, env).await;
            if let Some(f) = self.snapshot_frame(&hub).await {
                let _ = hub.tx.send(f);
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

    /// How many instances are remembered, how many have acknowledged `version` and how
    /// many are unreachable, read from their atomics without copying the fleet.
    pub async fn fleet_counts(&self, env: &str, version: u64) -> FleetCounts {
        let hub = self.env(env).await;
        let ttl = self.ttl_ms();
        hub.fleet.lock().map_or(FleetCounts::default(), |mut f| {
            prune(&mut f, ttl);
            let mut c = FleetCounts {
                total: f.len(),
                ..FleetCounts::default()
            };
            for m in f.values() {
                c.on_version += usize::from(m.applied() == Some(version));
                c.unreachable += usize::from(m.gone_at().is_some());
            }
            c
        })
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.fleet_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The instances of an environment: connected, and unreachable ones still
    /// remembered.
    pub async fn fleet(&self, env: &str) -> Vec<Instance> {
        let hub = self.env(env).await;
        let ttl = self.ttl_ms();
        let f = hub
            .fleet
            .lock()
            .map(|mut f| {
                prune(&mut f, ttl);
                f.values().map(|m| m.snapshot()).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut f = f;
        f.sort_by(|a, b| a.instance.cmp(&b.instance));
        f
    }
}

/// Drops instances unreachable for longer than the TTL.
fn prune(fleet: &mut HashMap<String, Arc<Member>>, ttl_ms: i64) {
    let now = store::now_ms();
    fleet.retain(|_, m| m.gone_at().is_none_or(|g| now.saturating_sub(g) <= ttl_ms));
}

async fn send(socket: &mut WebSocket, text: Utf8Bytes) -> anyhow::Result<()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            anyhow::bail!("a send did not complete in {SEND_TIMEOUT:?}: the client is stalled")
        }
    }
}

async fn refuse(socket: &mut WebSocket, code: u16, reason: &str) -> anyhow::Error {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        })))
        .await;
    anyhow::anyhow!("refused: {reason}")
}

/// What a connection's task learns, for its fleet entry when it ends.
struct Conn {
    id: u64,
    member: Option<Arc<Member>>,
    /// The SDK said goodbye: forget it rather than show it unreachable.
    goodbye: bool,
}

async fn serve(
    hub: &Hub,
    mut socket: WebSocket,
    env: &str,
    caller: &Caller,
    conn: &mut Conn,
) -> anyhow::Result<()> {
    let id = conn.id;
    // Subscribed first: a revocation between the key check and now is not missed.
    let mut revoked = hub.revocations();
    // The first message must be a hello.
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let hello = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<ClientMsg>(&t).ok(),
        _ => None,
    };
    let Some(ClientMsg::Hello {
        instance,
        sdk,
        host,
        labels,
        version: held,
        store: held_store,
        at: held_at,
    }) = hello
    else {
        return Err(refuse(
            &mut socket,
            close_code::POLICY,
            "the first message must be a hello",
        )
        .await);
    };
    if let Err(why) = flagd_core::check_key(&instance) {
        // The fleet is addressed by instance id (`DELETE …/fleet/{instance}`).
        return Err(refuse(
            &mut socket,
            close_code::POLICY,
            &format!("the instance id {why}"),
        )
        .await);
    }
    let h = hub.env(env).await;
    let member = Arc::new(Member {
        info: Instance {
            instance: instance.clone(),
            sdk,
            host,
            labels,
            key_name: caller.name.clone(),
            connected_since: store::rfc3339(store::now_ms()),
            applied_version: None,
            last_ack: None,
            state: "connected",
            unreachable_since: None,
            problems: Vec::new(),
            last_error: None,
        },
        token_id: caller.token_id.clone(),
        applied: std::sync::atomic::AtomicU64::new(held.unwrap_or(u64::MAX)),
        last_ack: std::sync::atomic::AtomicI64::new(0),
        gone_at: std::sync::atomic::AtomicI64::new(0),
        problems: std::sync::Mutex::new((Vec::new(), None)),
    });
    if let Ok(mut f) = h.fleet.lock() {
        // An instance that reconnects replaces its own entry (unreachable or not).
        f.insert(instance.clone(), member.clone());
        // Expired entries also go without anyone reading the fleet: now and then, so
        // that a reconnect storm stays O(1) per connection.
        if f.len() % 256 == 0 {
            prune(&mut f, hub.ttl_ms());
        }
    }
    conn.member = Some(member.clone());
    tracing::info!(env, connection = id, instance, held, "SDK connected");
    // Subscribe before reading the cache, so that nothing committed in between is missed.
    let mut rx = h.tx.subscribe();
    {
        // Another replica may have committed since this one cached the set: check the
        // store's head (one indexed read per connection).
        let (loaded, cached) = {
            let c = h.cache.read().await;
            (c.loaded, c.version)
        };
        if !loaded || hub.store.environment(env).await?.version > cached {
            hub.reload(&h, env).await?;
        }
    }
    let identity = hub.store.identity().await?;
    let mut sent = match held {
        Some(v)
            if !held_from_this_history(
                hub,
                &h,
                env,
                &identity,
                v,
                held_store.as_deref(),
                held_at,
            )
            .await? =>
        {
            // The SDK holds a version of another store (a new database, another
            // cluster) or of a history this store no longer has (a restored backup):
            // version numbers mean nothing across them, so it gets the whole set.
            tracing::warn!(
                env,
                connection = id,
                instance,
                held = v,
                "the SDK holds a flag set from another store or history; sending a snapshot"
            );
            send_reset(hub, &h, &mut socket).await?
        }
        held => catch_up(hub, &h, &mut socket, held).await?,
    };
    // A resync request is answered once per version, so that an SDK that cannot read
    // the set cannot make flagd send it in a loop.
    let mut resynced: Option<u64> = None;

    let mut closing = hub.closing.subscribe();
    let mut ping = tokio::time::interval(hub.heartbeat);
    let idle = hub.heartbeat * SILENT_HEARTBEATS;
    // Resolved once: 10,000 SDKs acknowledge the same version at once.
    let ack_latency = hub
        .metrics
        .commit_to_ack
        .get_or_create(&crate::metrics::EnvLabel {
            environment: env.into(),
        })
        .clone();
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(f) if f.version <= sent => {}
                Ok(f) if f.from == sent => {
                    send(&mut socket, f.text).await?;
                    sent = f.version;
                }
                // A gap (a snapshot frame, or a missed delta): send the whole set.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(snap) = hub.snapshot_frame(&h).await
                        && snap.version > sent {
                            send(&mut socket, snap.text).await?;
                            sent = snap.version;
                        }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            msg = socket.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                last_heard = tokio::time::Instant::now();
                match msg? {
                    Message::Text(t) => match serde_json::from_str::<ClientMsg>(&t) {
                        Ok(ClientMsg::Ack { version, problems }) => {
                            let before = member.applied.swap(version, std::sync::atomic::Ordering::Relaxed);
                            if before != version && version == h.last_version.load(std::sync::atomic::Ordering::Acquire) {
                                let at = h.last_commit_ns.load(std::sync::atomic::Ordering::Relaxed);
                                let now = u64::try_from(hub.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                                ack_latency.observe(now.saturating_sub(at) as f64 / 1e9);
                            }
                            member.last_ack.store(store::now_ms(), std::sync::atomic::Ordering::Relaxed);
                            if let Ok(mut p) = member.problems.lock()
                                && (p.0 != problems || p.1.is_some())
                            {
                                if !problems.is_empty() {
                                    tracing::warn!(env, connection = id, instance, version, flags = problems.len(), "an SDK could not load some flags");
                                }
                                *p = (problems, None);
                            }
                        }
                        Ok(ClientMsg::Resync { reason }) => {
                            tracing::warn!(env, connection = id, instance, reason, "an SDK could not read what it was sent");
                            if let Ok(mut p) = member.problems.lock() {
                                p.1 = Some(reason);
                            }
                            let head = h.cache.read().await.version;
                            if resynced != Some(head) {
                                resynced = Some(head);
                                sent = send_reset(hub, &h, &mut socket).await?;
                            }
                        }
                        Ok(ClientMsg::Goodbye) => {
                            conn.goodbye = true;
                            return Ok(());
                        }
                        Ok(ClientMsg::Ping) => send(&mut socket, text(&ServerMsg::Pong)).await?,
                        Ok(ClientMsg::Pong) => {}
                        Ok(ClientMsg::Hello { .. }) => return Err(refuse(&mut socket, close_code::POLICY, "hello sent twice").await),
                        Err(_) => {
                            tracing::warn!(env, connection = id, "unreadable message from an SDK");
                            return Err(refuse(&mut socket, close_code::INVALID, "not a protocol message").await);
                        }
                    },
                    Message::Binary(_) => return Err(refuse(&mut socket, close_code::UNSUPPORTED, "binary messages are not part of the protocol").await),
                    Message::Close(_) => return Ok(()),
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            r = revoked.recv() => match r {
                Ok(Revoked::Token(t)) if t == caller.token_id => {
                    // The fleet entry went with the key; nothing to mark unreachable.
                    conn.goodbye = true;
                    return Err(refuse(&mut socket, CLOSE_REVOKED, "the SDK key was revoked").await);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed some revocations: ask the store whether this key still holds.
                    if hub.store.token_by_id(&caller.token_id).await?.is_none() {
                        conn.goodbye = true;
                        return Err(refuse(&mut socket, CLOSE_REVOKED, "the SDK key was revoked").await);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
            _ = closing.changed() => {
                return Err(refuse(&mut socket, close_code::AWAY, "flagd is shutting down").await);
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > idle {
                    return Err(refuse(&mut socket, close_code::AWAY, "no message for too long").await);
                }
                send(&mut socket, text(&ServerMsg::Ping)).await?;
            }
        }
    }
}

/// Whether a version an SDK holds is this store's: same identity, not above the head,
/// and (when the SDK knows it) committed at the same time as the store's version of
/// that number. An SDK of an older protocol sends no identity: only the head is checked.
async fn held_from_this_history(
    hub: &Hub,
    h: &EnvHub,
    env: &str,
    identity: &str,
    held: u64,
    held_store: Option<&str>,
    held_at: Option<i64>,
) -> anyhow::Result<bool> {
    if held_store.is_some_and(|s| s != identity) {
        return Ok(false);
    }
    let (head, head_at) = {
        let c = h.cache.read().await;
        (c.version, c.at)
    };
    if held > head {
        return Ok(false);
    }
    let Some(at) = held_at else { return Ok(true) };
    let stored = if held == head {
        head_at
    } else {
        hub.store.version_at(env, held).await?
    };
    Ok(stored == Some(at))
}

/// Sends the whole set marked `reset`: the SDK replaces what it holds even when this
/// version is not newer. Returns the version sent.
async fn send_reset(hub: &Hub, h: &EnvHub, socket: &mut WebSocket) -> anyhow::Result<u64> {
    let store = hub.store.identity().await.ok();
    let (version, msg) = {
        let c = h.cache.read().await;
        (
            c.version,
            ServerMsg::Snapshot {
                version: c.version,
                document: c.document.clone(),
                store,
                at: c.at,
                reset: true,
            },
        )
    };
    send(socket, text(&msg)).await?;
    Ok(version)
}

/// Brings a new connection up to the head: nothing, the recent deltas, or a snapshot,
/// whichever is smaller. Returns the version sent.
async fn catch_up(
    hub: &Hub,
    h: &EnvHub,
    socket: &mut WebSocket,
    held: Option<u64>,
) -> anyhow::Result<u64> {
    let (head, deltas) = {
        let c = h.cache.read().await;
        let deltas: Option<Vec<Frame>> = held.filter(|&v| v < c.version).and_then(|v| {
            let start = c.recent.iter().position(|f| f.from == v)?;
            Some(c.recent.iter().skip(start).cloned().collect())
        });
        (c.version, deltas)
    };
    if held == Some(head) {
        return Ok(head);
    }
    let snap = hub
        .snapshot_frame(h)
        .await
        .ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
    match deltas {
        Some(d) if d.iter().map(|f| f.text.len()).sum::<usize>() < snap.text.len() => {
            let mut v = held.unwrap_or(0);
            for f in d {
                send(socket, f.text).await?;
                v = f.version;
            }
            Ok(v)
        }
        _ => {
            send(socket, snap.text).await?;
            Ok(snap.version)
        }
    }
}

/// Something open pages should know about.
#[derive(Clone, Debug)]
pub struct UiEvent {
    /// The environment it concerns; `None` for all.
    pub environment: Option<String>,
    /// The SSE event name (`change`, `environments`).
    pub name: &'static str,
    /// Its data.
    pub data: Value,
}

impl Hub {
    /// Serves one SDK's stream on an upgraded websocket until it closes, then marks its
    /// instance gone (unreachable), or forgets it after a goodbye.
    pub async fn serve_socket(self: &Arc<Self>, socket: WebSocket, env: String, caller: Caller) {
        let hub = self;
        let id = hub
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut conn = Conn {
            id,
            member: None,
            goodbye: false,
        };
        if let Err(e) = serve(hub, socket, &env, &caller, &mut conn).await {
            tracing::info!(env, connection = id, reason = %e, "stream closed");
        }
        let Some(member) = conn.member else { return };
        let h = hub.env(&env).await;
        if let Ok(mut f) = h.fleet.lock() {
            // Only if no newer connection of the same instance took the entry over.
            let ours = f
                .get(&member.info.instance)
                .is_some_and(|m| Arc::ptr_eq(m, &member));
            if ours {
                if conn.goodbye {
                    f.remove(&member.info.instance);
                } else {
                    // The instance may still be serving what it last applied: it stays in
                    // the fleet, unreachable, and is not converged.
                    member
                        .gone_at
                        .store(store::now_ms(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}
