//! The stream connection (`docs/protocol.md`): hello with the held version; snapshots
//! and deltas applied in order, a gap answered by reconnecting; acks; pings both ways;
//! jittered exponential backoff; the last snapshot served throughout.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use flagd_core::wire::{ClientMsg, ServerMsg, apply_changes};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::{ChangeEvent, Current, Inner, KEPT, Status, compile};

/// Silence from flagd for this many of the SDK's heartbeats means a half-open
/// connection (flagd answers every ping with a pong).
const SILENT_HEARTBEATS: u32 = 3;

pub(crate) fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// Reconnects forever (until the client is gone or closed) with jittered exponential
/// backoff, capped.
pub(crate) async fn run(inner: Arc<Inner>) {
    let config = inner.config.clone();
    let mut stop = inner.stop.subscribe();
    let weak = Arc::downgrade(&inner);
    drop(inner);
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            r = connection(&weak, &config) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Some(inner) = weak.upgrade() else { return };
        let healthy = matches!(result, Ok(true));
        match &result {
            Ok(_) => tracing::info!("flagd stream closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "flagd stream failed; reconnecting"),
        }
        let version = inner.current.load().version;
        inner.status.send_if_modified(|s| {
            if matches!(s, Status::Ready { .. }) {
                *s = Status::Stale {
                    since: SystemTime::now(),
                    version,
                };
                true
            } else {
                false
            }
        });
        drop(inner);
        if healthy {
            backoff = Duration::from_millis(100);
        }
        // Full jitter: many SDKs reconnecting after a flagd restart spread out.
        let wait = backoff.mul_f64(0.5 + jitter() / 2.0);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// One connection. `Ok(true)` when it was up and applied something (the backoff resets).
async fn connection(weak: &Weak<Inner>, config: &crate::client::Config) -> anyhow::Result<bool> {
    let mut req = config.stream_url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", config.sdk_key).parse()?,
    );
    let (mut ws, _) = tokio::time::timeout(
        config.connect_timeout,
        tokio_tungstenite::connect_async(req),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting timed out"))??;
    let held = weak
        .upgrade()
        .map(|i| i.current.load().version)
        .filter(|v| *v > 0);
    let hello = ClientMsg::Hello {
        instance: config.instance.clone(),
        sdk: concat!("flagd-sdk-rust/", env!("CARGO_PKG_VERSION")).to_owned(),
        host: config.host.clone(),
        labels: config.labels.clone(),
        version: held,
    };
    ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    tracing::info!(url = %config.stream_url, held, "connected to flagd");
    if let (Some(inner), Some(v)) = (weak.upgrade(), held) {
        // Holding the head already: flagd sends nothing until the next change.
        inner.status.send_replace(Status::Ready { version: v });
    }
    let mut applied = false;
    let mut ping = tokio::time::interval(config.heartbeat);
    let silence = config.heartbeat * SILENT_HEARTBEATS;
    ping.tick().await;
    // A deadline from the last message heard, not a timeout per wait: the pings below
    // wake this loop more often than the silence limit.
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let msg = tokio::select! {
            m = ws.next() => match m {
                None => return Ok(applied),
                Some(m) => m?,
            },
            () = tokio::time::sleep_until(last_heard + silence) => {
                anyhow::bail!("no message from flagd for {silence:?}: the connection is half-open")
            }
            _ = ping.tick() => {
                ws.send(Message::Text(serde_json::to_string(&ClientMsg::Ping)?.into())).await?;
                continue;
            }
        };
        last_heard = tokio::time::Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(c) => {
                tracing::info!(reason = ?c, "flagd closed the stream");
                return Ok(applied);
            }
            _ => continue,
        };
        let Some(inner) = weak.upgrade() else {
            return Ok(applied);
        };
        match serde_json::from_str::<ServerMsg>(&text)? {
            ServerMsg::Snapshot { version, document } => {
                let held = inner.current.load().version;
                if version <= held && held > 0 {
                    continue; // P10: nothing newer than what is held
                }
                let doc = Arc::new(document);
                let snap = Arc::new(compile(&doc, version).map_err(|e| {
                    anyhow::anyhow!("flagd sent a flag set that does not load: {e}")
                })?);
                let flags = doc
                    .get("flags")
                    .and_then(Value::as_object)
                    .map(|f| f.keys().cloned().collect())
                    .unwrap_or_default();
                install(&inner, snap, doc, version, flags);
            }
            ServerMsg::Delta {
                from,
                version,
                changes,
                restores,
            } => {
                let cur = inner.current.load_full();
                if version <= cur.version {
                    continue; // P10: nothing newer than what is held
                }
                if from != cur.version {
                    // P10: a gap; reconnect with the held version and flagd sends what is missing.
                    anyhow::bail!(
                        "delta from {from} does not follow held version {}",
                        cur.version
                    );
                }
                let flags: Vec<String> = changes
                    .iter()
                    .filter(|c| c.kind == flagd_core::wire::ItemKind::Flag)
                    .map(|c| c.key.clone())
                    .collect();
                let kept = restores.and_then(|r| {
                    inner
                        .kept
                        .lock()
                        .ok()?
                        .iter()
                        .find(|(v, _, _)| *v == r)
                        .map(|(_, s, d)| (s.clone(), d.clone()))
                });
                match kept {
                    // A revert to a snapshot still held: swap it in, no recompiling.
                    Some((snap, doc)) => {
                        tracing::info!(version, restores, "revert applied from a kept snapshot");
                        install(&inner, snap, doc, version, flags);
                    }
                    None => {
                        let mut doc = (*cur.document).clone();
                        apply_changes(&mut doc, &changes);
                        let snap = Arc::new(compile(&doc, version).map_err(|e| {
                            anyhow::anyhow!("a delta gave a flag set that does not load: {e}")
                        })?);
                        install(&inner, snap, Arc::new(doc), version, flags);
                    }
                }
            }
            ServerMsg::Restore {
                from,
                version,
                restores,
            } => {
                let cur = inner.current.load_full();
                if version <= cur.version {
                    continue;
                }
                let kept = inner.kept.lock().ok().and_then(|k| {
                    k.iter()
                        .find(|(v, _, _)| *v == restores)
                        .map(|(_, s, d)| (s.clone(), d.clone()))
                });
                match kept {
                    // P9: a revert to a snapshot still held: swap it in, no recompiling.
                    Some((snap, doc)) if from == cur.version => {
                        tracing::info!(version, restores, "revert applied from a kept snapshot");
                        let flags = changed_flag_keys(&cur.document, &doc);
                        install(&inner, snap, doc, version, flags);
                    }
                    // Not held (or a gap): reconnect; flagd sends the full changes.
                    _ => anyhow::bail!("revert to {restores}, which is not kept; resynchronizing"),
                }
            }
            ServerMsg::Ping => {
                ws.send(Message::Text(
                    serde_json::to_string(&ClientMsg::Pong)?.into(),
                ))
                .await?;
                continue;
            }
            ServerMsg::Pong => continue,
        }
        applied = true;
        let version = inner.current.load().version;
        ws.send(Message::Text(
            serde_json::to_string(&ClientMsg::Ack { version })?.into(),
        ))
        .await?;
        write_cache(&inner);
    }
}

/// The flag keys whose definitions differ between two documents.
fn changed_flag_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let fa = a.get("flags").and_then(Value::as_object).unwrap_or(&empty);
    let fb = b.get("flags").and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Swaps in a new snapshot: one atomic store; readers never wait.
fn install(
    inner: &Inner,
    snapshot: Arc<flagd_core::Snapshot>,
    document: Arc<Value>,
    version: u64,
    changed_flags: Vec<String>,
) {
    let old = inner.current.swap(Arc::new(Current {
        snapshot: snapshot.clone(),
        version,
        document: document.clone(),
    }));
    if let Ok(mut kept) = inner.kept.lock() {
        kept.retain(|(v, _, _)| *v != version);
        kept.push_back((version, snapshot, document));
        while kept.len() > KEPT {
            kept.pop_front();
        }
    }
    inner.status.send_replace(Status::Ready { version });
    inner.changes.send_replace(ChangeEvent {
        old_version: old.version,
        new_version: version,
        changed_flags,
    });
    tracing::info!(old = old.version, version, "flag set applied");
}

/// Writes the served snapshot to the cache file: to a temporary file, then renamed, so
/// that a crash never leaves half a file.
fn write_cache(inner: &Inner) {
    let Some(path) = &inner.config.cache_file else {
        return;
    };
    let cur = inner.current.load();
    let body = serde_json::json!({"version": cur.version, "document": &*cur.document});
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, body.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the cache file");
    }
}
