//! The stream connection (`docs/protocol.md`): hello with the held version; snapshots
//! and deltas applied in order, a gap answered by reconnecting; acks; pings both ways;
//! jittered exponential backoff; the last snapshot served throughout.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use flagd_core::limits::MAX_MESSAGE_BYTES;
use flagd_core::wire::{CLOSE_REVOKED, ClientMsg, ServerMsg, apply_changes, decode_server};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::shared::{ChangeEvent, Config, Current, Inner, KEPT, Status, compile};

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

/// How a connection ended.
enum Ended {
    /// Closed or failed; `true` when it was up and applied something (the backoff
    /// resets).
    Closed(bool),
    /// flagd refused the SDK key (revoked or unknown): retrying soon cannot help.
    KeyRefused(String),
    /// [`crate::Client::close`] was called: goodbye sent.
    Stopped,
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
        let result = connection(&weak, &config, stop.clone()).await;
        if *stop.borrow() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let healthy = matches!(result, Ok(Ended::Closed(true)));
        match &result {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Closed(_)) => tracing::info!("flagd stream closed; reconnecting"),
            Ok(Ended::KeyRefused(why)) => {
                // Not a tight loop: the key will not work again until an operator acts.
                tracing::error!(reason = %why, "flagd refused the SDK key; retrying slowly");
                backoff = config.max_backoff;
            }
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

async fn send(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    msg: &ClientMsg,
) -> anyhow::Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into()))
        .await?;
    Ok(())
}

/// Resolves once the client is closed (the borrow guard is not held across awaits).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One connection.
async fn connection(
    weak: &Weak<Inner>,
    config: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let mut req = config.stream_url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", config.sdk_key).parse()?,
    );
    // The largest snapshot flagd may send is one frame: tungstenite's default frame limit
    // (16 MiB) is below the largest document flagd accepts.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connected = tokio::select! {
        c = tokio::time::timeout(
            config.connect_timeout,
            tokio_tungstenite::connect_async_with_config(req, Some(ws_config), false),
        ) => c,
        () = stopped(&mut stop) => return Ok(Ended::Stopped),
    };
    let (mut ws, _) = match connected.map_err(|_| anyhow::anyhow!("connecting timed out"))? {
        Ok(c) => c,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp))
            if matches!(resp.status().as_u16(), 401 | 403) =>
        {
            return Ok(Ended::KeyRefused(format!("HTTP {}", resp.status())));
        }
        Err(e) => return Err(e.into()),
    };
    let (held, store, at) = weak
        .upgrade()
        .map(|i| {
            let c = i.current.load();
            (c.version, c.store.clone(), c.at)
        })
        .filter(|(v, _, _)| *v > 0)
        .map_or((None, None, None), |(v, s, a)| (Some(v), s, a));
    let hello = ClientMsg::Hello {
        instance: config.instance.clone(),
        sdk: concat!("flagd-sdk-rust/", env!("CARGO_PKG_VERSION")).to_owned(),
        host: config.host.clone(),
        labels: config.labels.clone(),
        version: held,
        store,
        at,
    };
    send(&mut ws, &hello).await?;
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
                None => return Ok(Ended::Closed(applied)),
                Some(m) => m?,
            },
            () = tokio::time::sleep_until(last_heard + silence) => {
                anyhow::bail!("no message from flagd for {silence:?}: the connection is half-open")
            }
            _ = ping.tick() => {
                send(&mut ws, &ClientMsg::Ping).await?;
                continue;
            }
            () = stopped(&mut stop) => {
                // A clean close says goodbye: flagd forgets this instance rather than
                // showing it unreachable.
                let _ = send(&mut ws, &ClientMsg::Goodbye).await;
                let _ = ws.close(None).await;
                return Ok(Ended::Stopped);
            }
        };
        last_heard = tokio::time::Instant::now();
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(c) => {
                tracing::info!(reason = ?c, "flagd closed the stream");
                if let Some(c) = &c
                    && u16::from(c.code) == CLOSE_REVOKED
                {
                    return Ok(Ended::KeyRefused(c.reason.to_string()));
                }
                return Ok(Ended::Closed(applied));
            }
            _ => continue,
        };
        let Some(inner) = weak.upgrade() else {
            return Ok(Ended::Closed(applied));
        };
        let msg = match decode_server(text.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                // Never loop on a message that cannot be read: report it, and flagd
                // answers with a fresh snapshot (once per version).
                tracing::error!(error = %e, bytes = text.len(), "unreadable message from flagd; asking for a snapshot");
                send(
                    &mut ws,
                    &ClientMsg::Resync {
                        reason: clip(&format!("unreadable message: {e}")),
                    },
                )
                .await?;
                continue;
            }
        };
        match apply(&inner, msg) {
            Applied::Nothing => continue,
            Applied::Pong => {
                send(&mut ws, &ClientMsg::Pong).await?;
                continue;
            }
            Applied::Gap(why) => anyhow::bail!(why),
            Applied::Unloadable(why) => {
                tracing::error!(reason = %why, "flagd sent a flag set that does not load; asking for a snapshot");
                send(&mut ws, &ClientMsg::Resync { reason: clip(&why) }).await?;
                continue;
            }
            Applied::Version => {}
        }
        applied = true;
        let cur = inner.current.load();
        let ack = ClientMsg::Ack {
            version: cur.version,
            problems: reported(cur.snapshot.problems()),
        };
        if !cur.snapshot.problems().is_empty() {
            tracing::warn!(
                version = cur.version,
                flags = cur.snapshot.problems().len(),
                "some flags could not be loaded; they evaluate with reason ERROR"
            );
        }
        drop(cur);
        send(&mut ws, &ack).await?;
        write_cache(&inner);
    }
}

/// flagd closes a stream whose message exceeds 64 KiB (P5): what is reported is kept well
/// under it, whatever the set holds.
const REPORTED_PROBLEMS: usize = 50;
const REPORTED_CHARS: usize = 500;

/// A message cut to [`REPORTED_CHARS`] characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(REPORTED_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The problems an ack carries: the first [`REPORTED_PROBLEMS`], each clipped, and a
/// last entry counting the rest (`sdk.problems()` has them all).
fn reported(problems: &[flagd_core::Problem]) -> Vec<flagd_core::Problem> {
    let mut out: Vec<flagd_core::Problem> = problems
        .iter()
        .take(REPORTED_PROBLEMS)
        .map(|p| flagd_core::Problem {
            path: clip(&p.path),
            message: clip(&p.message),
        })
        .collect();
    if problems.len() > REPORTED_PROBLEMS {
        out.push(flagd_core::Problem {
            path: String::new(),
            message: format!(
                "and {} more flags that could not be loaded",
                problems.len() - REPORTED_PROBLEMS
            ),
        });
    }
    out
}

/// What a message from flagd did.
enum Applied {
    /// A new version is served.
    Version,
    /// Nothing (a message that is not newer, a pong).
    Nothing,
    /// A ping to answer.
    Pong,
    /// A gap: reconnect with the held version and flagd sends what is missing.
    Gap(String),
    /// The flag set in it is not a flag set at all.
    Unloadable(String),
}

fn kept_version(inner: &Inner, v: u64) -> Option<(Arc<flagd_core::Snapshot>, Arc<Value>)> {
    inner
        .kept
        .lock()
        .ok()?
        .iter()
        .find(|(k, _, _)| *k == v)
        .map(|(_, s, d)| (s.clone(), d.clone()))
}

fn apply(inner: &Inner, msg: ServerMsg) -> Applied {
    match msg {
        ServerMsg::Snapshot {
            version,
            document,
            store,
            at,
            reset,
        } => {
            let cur = inner.current.load_full();
            let other_store = store.is_some() && cur.store.is_some() && store != cur.store;
            if !reset && !other_store && version <= cur.version && cur.version > 0 {
                return Applied::Nothing; // P10: nothing newer than what is held
            }
            if reset || other_store {
                // What was held came from another history: nothing kept is reusable.
                tracing::warn!(
                    held = cur.version,
                    version,
                    "flagd's store changed (a restored backup or a new database); replacing the flag set"
                );
                if let Ok(mut k) = inner.kept.lock() {
                    k.clear();
                }
            }
            let snap = match compile(&document, version) {
                Ok(s) => Arc::new(s),
                Err(e) => return Applied::Unloadable(e),
            };
            let flags = document
                .get("flags")
                .and_then(Value::as_object)
                .map(|f| f.keys().cloned().collect())
                .unwrap_or_default();
            install(inner, snap, Arc::new(document), version, flags, store, at);
            Applied::Version
        }
        ServerMsg::Delta {
            from,
            version,
            changes,
            restores,
            at,
        } => {
            let cur = inner.current.load_full();
            if version <= cur.version {
                return Applied::Nothing; // P10: nothing newer than what is held
            }
            if from != cur.version {
                // P10: a gap; reconnect with the held version and flagd sends what is missing.
                return Applied::Gap(format!(
                    "delta from {from} does not follow held version {}",
                    cur.version
                ));
            }
            let flags: Vec<String> = changes
                .iter()
                .filter(|c| c.kind == flagd_core::wire::ItemKind::Flag)
                .map(|c| c.key.clone())
                .collect();
            let store = cur.store.clone();
            match restores.and_then(|r| kept_version(inner, r)) {
                // A revert to a snapshot still held: swap it in, no recompiling.
                Some((snap, doc)) => {
                    tracing::info!(version, restores, "revert applied from a kept snapshot");
                    install(inner, snap, doc, version, flags, store, at);
                }
                None => {
                    let mut doc = (*cur.document).clone();
                    apply_changes(&mut doc, &changes);
                    let snap = match compile(&doc, version) {
                        Ok(s) => Arc::new(s),
                        Err(e) => return Applied::Unloadable(e),
                    };
                    install(inner, snap, Arc::new(doc), version, flags, store, at);
                }
            }
            Applied::Version
        }
        ServerMsg::Restore {
            from,
            version,
            restores,
            at,
        } => {
            let cur = inner.current.load_full();
            if version <= cur.version {
                return Applied::Nothing;
            }
            match kept_version(inner, restores) {
                // P9: a revert to a snapshot still held: swap it in, no recompiling.
                Some((snap, doc)) if from == cur.version => {
                    tracing::info!(version, restores, "revert applied from a kept snapshot");
                    let flags = changed_flag_keys(&cur.document, &doc);
                    install(inner, snap, doc, version, flags, cur.store.clone(), at);
                    Applied::Version
                }
                // Not held (or a gap): reconnect; flagd sends the full changes.
                _ => Applied::Gap(format!(
                    "revert to {restores}, which is not kept; resynchronizing"
                )),
            }
        }
        ServerMsg::Ping => Applied::Pong,
        ServerMsg::Pong => Applied::Nothing,
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
    store: Option<String>,
    at: Option<i64>,
) {
    let old = inner.current.swap(Arc::new(Current {
        snapshot: snapshot.clone(),
        version,
        document: document.clone(),
        store,
        at,
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
    let body = serde_json::json!({"version": cur.version, "document": &*cur.document, "store": cur.store, "at": cur.at});
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, body.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the cache file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stay_under_flagds_message_limit() {
        let problems: Vec<flagd_core::Problem> = (0..10_000)
            .map(|i| flagd_core::Problem {
                path: format!("flags.{}", "k".repeat(256)),
                message: format!("{i}: {}", "x".repeat(10_000)),
            })
            .collect();
        let ack = ClientMsg::Ack {
            version: 1,
            problems: reported(&problems),
        };
        let text = serde_json::to_string(&ack).unwrap();
        assert!(text.len() < 64 * 1024, "{}", text.len());
        assert!(text.contains("and 9950 more flags"));
        assert_eq!(clip("short"), "short");
    }
}
