//! One SDK's stream (`docs/protocol.md`): the hello, the snapshot or the catch-up, the
//! live deltas, acks, heartbeats, revocation.

use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::*;

/// A stream's transport: axum's websocket in flagd, channels in tests. Frames are
/// websocket messages either way.
pub trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// A connection that sends nothing (not even a pong) for this many heartbeats is
/// closed as half-open.
pub(super) const SILENT_HEARTBEATS: u32 = 3;

/// A send that does not complete in this time means a stalled client: disconnect it.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message an SDK may send.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub(super) async fn send(socket: &mut impl Socket, text: Utf8Bytes) -> anyhow::Result<()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            anyhow::bail!("a send did not complete in {SEND_TIMEOUT:?}: the client is stalled")
        }
    }
}

pub(super) async fn refuse(socket: &mut impl Socket, code: u16, reason: &str) -> anyhow::Error {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        })))
        .await;
    anyhow::anyhow!("refused: {reason}")
}

/// What a connection's task learns, for its fleet entry when it ends.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) member: Option<Arc<Member>>,
    /// The SDK said goodbye: forget it rather than show it unreachable.
    pub(super) goodbye: bool,
}

pub(super) async fn serve(
    hub: &Hub,
    mut socket: impl Socket,
    env: &str,
    caller: &Caller,
    conn: &mut Conn,
) -> anyhow::Result<()> {
    let id = conn.id;
    // Subscribed first: a revocation between the key check and now is not missed.
    let mut revoked = hub.revocations();
    // The first message must be a hello.
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
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
    let member = Arc::new(Member::new(
        Instance::connected(
            instance.clone(),
            sdk,
            host,
            labels,
            caller.name.clone(),
            true,
        ),
        caller.token_id.clone(),
        held,
    ));
    h.fleet_changed();
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
            msg = socket.next() => {
                let Some(msg) = msg else { return Ok(()) };
                last_heard = tokio::time::Instant::now();
                match msg? {
                    Message::Text(t) => match serde_json::from_str::<ClientMsg>(&t) {
                        Ok(ClientMsg::Ack { version, problems }) => {
                            let before = member.applied.swap(version, std::sync::atomic::Ordering::Relaxed);
                            if before != version {
                                h.fleet_changed();
                            }
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
                                h.fleet_changed();
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
pub(super) async fn held_from_this_history(
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
pub(super) async fn send_reset(
    hub: &Hub,
    h: &EnvHub,
    socket: &mut impl Socket,
) -> anyhow::Result<u64> {
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
pub(super) async fn catch_up(
    hub: &Hub,
    h: &EnvHub,
    socket: &mut impl Socket,
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

impl Hub {
    /// Serves one SDK's stream on an upgraded websocket until it closes, then marks its
    /// instance gone (unreachable), or forgets it after a goodbye.
    pub async fn serve_socket(self: &Arc<Self>, socket: impl Socket, env: String, caller: Caller) {
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
        h.fleet_changed();
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
#[cfg(test)]
mod tests;
