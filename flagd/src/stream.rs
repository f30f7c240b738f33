//! Live push: SDKs hold a websocket; every committed version is serialized once and the
//! same bytes go to every connection of the environment (`docs/protocol.md`).
//!
//! Each connection is its own task reading a `broadcast` channel, so a slow or stalled
//! client never delays the others: it lags, and is then sent a fresh snapshot, or is
//! disconnected when a send does not complete in time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use flagd_core::wire::{ClientMsg, ServerMsg};
use flagd_core::{FlagSet, Strictness};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock, broadcast};

use crate::auth::{Caller, Perm, Role};
use crate::error::{ApiError, ApiResult};
use crate::http::AppState;
use crate::store::{self, Committed, Items, Store};

/// How many recent deltas are kept per environment to resume a reconnecting SDK.
const RECENT: usize = 64;
/// A connection that sends nothing (not even a pong) for this many heartbeats is
/// closed as half-open.
const SILENT_HEARTBEATS: u32 = 3;
/// A send that does not complete in this time means a stalled client: disconnect it.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message an SDK may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

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
    items: Items,
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
}

#[derive(Debug)]
struct EnvHub {
    tx: broadcast::Sender<Frame>,
    cache: RwLock<Cached>,
    fleet: std::sync::Mutex<HashMap<u64, Arc<Member>>>,
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
    /// `u64::MAX` until the first version is known.
    applied: std::sync::atomic::AtomicU64,
    /// Milliseconds; 0 until the first ack.
    last_ack: std::sync::atomic::AtomicI64,
}

impl Member {
    fn snapshot(&self) -> Instance {
        let mut i = self.info.clone();
        let applied = self.applied.load(std::sync::atomic::Ordering::Relaxed);
        i.applied_version = (applied != u64::MAX).then_some(applied);
        let at = self.last_ack.load(std::sync::atomic::Ordering::Relaxed);
        i.last_ack = (at != 0).then(|| store::rfc3339(at));
        i
    }
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
    ui: broadcast::Sender<crate::ui::UiEvent>,
    /// Every metric flagd exports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What commit times are measured from.
    epoch: std::time::Instant,
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
    /// A hub over the store, pinging every stream each `heartbeat`.
    pub fn new(store: Arc<Store>, heartbeat: Duration) -> Self {
        Self {
            // A zero interval would make every stream spin.
            heartbeat: heartbeat.max(Duration::from_millis(10)),
            ui: broadcast::channel(1024).0,
            sdk_keys: std::sync::Mutex::new(HashMap::default()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
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
    pub fn notify_ui(&self, event: crate::ui::UiEvent) {
        let _ = self.ui.send(event);
    }

    /// The admin UI's events.
    pub fn ui_events(&self) -> broadcast::Receiver<crate::ui::UiEvent> {
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
        let mut c = hub.cache.write().await;
        if !c.loaded || version > c.version {
            c.loaded = true;
            c.version = version;
            c.items = items;
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
                let set = FlagSet::parse(&store::document(&c.items), Strictness::Lenient).map_err(
                    |e| ApiError::Internal(anyhow::anyhow!("stored flag set unreadable: {e}")),
                )?;
                let snapshot = flagd_core::Snapshot::compile(&set, c.version)
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored flag set: {e}")))?;
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
                }),
            });
        }
        let Some(changes) = &committed.changes else {
            // Too large to carry (a large revert, announced above): the cache reads the
            // new head from the store; SDKs catching up from before it get a snapshot.
            c.loaded = false;
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
            }),
        };
        if committed.restores.is_none() {
            let _ = hub.tx.send(full.clone());
        }
        for ch in changes {
            let k = (ch.kind, ch.key.clone());
            match &ch.definition {
                Some(d) => {
                    let position = c.items.get(&k).map_or(i64::MAX, |i| i.position);
                    c.items.insert(
                        k,
                        store::Item {
                            kind: ch.kind,
                            key: ch.key.clone(),
                            position,
                            definition: d.clone(),
                        },
                    );
                }
                None => {
                    c.items.remove(&k);
                }
            }
        }
        c.version = committed.version;
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
        let mut c = hub.cache.write().await;
        if c.snapshot.is_none() {
            let msg = ServerMsg::Snapshot {
                version: c.version,
                document: store::document(&c.items),
            };
            c.snapshot = Some(Frame {
                from: 0,
                version: c.version,
                text: text(&msg),
            });
        }
        c.snapshot.clone()
    }

    /// How many instances are connected, and how many have acknowledged `version`,
    /// read from their atomics without copying the fleet.
    pub async fn fleet_counts(&self, env: &str, version: u64) -> (usize, usize) {
        let hub = self.env(env).await;
        hub.fleet.lock().map_or((0, 0), |f| {
            let on = f
                .values()
                .filter(|m| m.applied.load(std::sync::atomic::Ordering::Relaxed) == version)
                .count();
            (f.len(), on)
        })
    }

    /// The connected instances of an environment.
    pub async fn fleet(&self, env: &str) -> Vec<Instance> {
        let hub = self.env(env).await;
        let f = hub
            .fleet
            .lock()
            .map(|f| f.values().map(|m| m.snapshot()).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut f = f;
        f.sort_by(|a, b| a.instance.cmp(&b.instance));
        f
    }
}

/// `GET /api/v1/stream`: the SDK stream, authenticated with an SDK key.
pub async fn stream(
    caller: Caller,
    State(s): State<AppState>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if caller.role != Role::Sdk {
        return Err(ApiError::Forbidden(
            "the stream takes an SDK key (POST /environments/{env}/sdk-keys)".into(),
        ));
    }
    let env = caller
        .environments
        .as_ref()
        .and_then(|e| e.first())
        .cloned()
        .ok_or_else(|| ApiError::Forbidden("this SDK key names no environment".into()))?;
    s.store.environment(&env).await?;
    let hub = s.hub.clone();
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let id = hub
                .next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = serve(&hub, socket, &env, &caller.name, id).await {
                tracing::info!(env, connection = id, reason = %e, "stream closed");
            }
            let h = hub.env(&env).await;
            if let Ok(mut f) = h.fleet.lock() {
                f.remove(&id);
            }
        }))
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

async fn serve(
    hub: &Hub,
    mut socket: WebSocket,
    env: &str,
    key_name: &str,
    id: u64,
) -> anyhow::Result<()> {
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
    }) = hello
    else {
        return Err(refuse(
            &mut socket,
            close_code::POLICY,
            "the first message must be a hello",
        )
        .await);
    };
    let h = hub.env(env).await;
    let member = Arc::new(Member {
        info: Instance {
            instance: instance.clone(),
            sdk,
            host,
            labels,
            key_name: key_name.to_owned(),
            connected_since: store::rfc3339(store::now_ms()),
            applied_version: None,
            last_ack: None,
        },
        applied: std::sync::atomic::AtomicU64::new(held.unwrap_or(u64::MAX)),
        last_ack: std::sync::atomic::AtomicI64::new(0),
    });
    if let Ok(mut f) = h.fleet.lock() {
        f.insert(id, member.clone());
    }
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
    let mut sent = catch_up(hub, &h, &mut socket, held).await?;

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
                        Ok(ClientMsg::Ack { version }) => {
                            let before = member.applied.swap(version, std::sync::atomic::Ordering::Relaxed);
                            if before != version && version == h.last_version.load(std::sync::atomic::Ordering::Acquire) {
                                let at = h.last_commit_ns.load(std::sync::atomic::Ordering::Relaxed);
                                let now = u64::try_from(hub.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                                ack_latency.observe(now.saturating_sub(at) as f64 / 1e9);
                            }
                            member.last_ack.store(store::now_ms(), std::sync::atomic::Ordering::Relaxed);
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

/// `GET /api/v1/environments/{env}/fleet`: connected SDK instances and their versions.
pub async fn fleet(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.check(Perm::Read, Some(&env))?;
    let head = s.store.environment(&env).await?.version;
    let instances = s.hub.fleet(&env).await;
    // Counted from the same copy that is answered, so that the two agree.
    let on_head = instances
        .iter()
        .filter(|i| i.applied_version == Some(head))
        .count();
    Ok(Json(
        json!({"environment": env, "version": head, "total": instances.len(), "onVersion": on_head, "instances": instances}),
    ))
}
