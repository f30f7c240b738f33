//! The stream connection (`docs/protocol.md`): connect, hello with the held version,
//! frames read and handed to [`State`], its replies sent; pings both ways; jittered
//! exponential backoff; the last snapshot served throughout. What a frame does (applied,
//! ignored, a resync) is decided in `state`, never here.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use flagd_core::limits::MAX_MESSAGE_BYTES;
use flagd_core::wire::{CLOSE_REVOKED, ClientMsg, decode_server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::shared::{Config, Current, Inner, Status};
use crate::state::{self, Publish, Reply, State, Step};

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

/// Reconnects forever (until the client is gone or closed): to the next replica at once
/// when a connection ends or fails, and with jittered exponential backoff (capped) once
/// every replica has failed in a row.
pub(crate) async fn run(inner: Arc<Inner>) {
    let config = inner.config.clone();
    let mut stop = inner.stop.subscribe();
    let mut state = State::keeping(inner.current.load_full(), inner.config.keep_versions);
    let weak = Arc::downgrade(&inner);
    drop(inner);
    let mut backoff = Duration::from_millis(100);
    let replicas = config.stream_urls.len().max(1);
    let mut at = 0;
    // Replicas tried since the last healthy connection.
    let mut tried = 0;
    loop {
        let url = &config.stream_urls[at % replicas];
        let result = connection(&weak, &config, url, &mut state, stop.clone()).await;
        if *stop.borrow() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let healthy = matches!(result, Ok(Ended::Closed(true)));
        let mut refused = false;
        match &result {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Closed(_)) => tracing::info!(url, "flagd stream closed; reconnecting"),
            Ok(Ended::KeyRefused(why)) => {
                // Not a tight loop: the key will not work again until an operator acts.
                tracing::error!(url, reason = %why, "flagd refused the SDK key; retrying slowly");
                refused = true;
            }
            Err(e) => tracing::warn!(url, error = %e, "flagd stream failed; reconnecting"),
        }
        let version = state.current().version;
        inner
            .status
            .send_if_modified(|s| state::disconnected(s, version, SystemTime::now()));
        drop(inner);
        if healthy {
            backoff = Duration::from_millis(100);
            tried = 0;
        }
        tried += 1;
        at += 1;
        let wait = if refused {
            backoff = config.max_backoff;
            tried = 0;
            config.max_backoff
        } else if tried < replicas {
            // Another replica is likely up: fail over now (a little jitter, so that the
            // SDKs of a replica that died do not all land in the same millisecond).
            Duration::from_millis(50).mul_f64(jitter())
        } else {
            tried = 0;
            // Full jitter: many SDKs reconnecting after a flagd restart spread out.
            let wait = backoff.mul_f64(0.5 + jitter() / 2.0);
            backoff = (backoff * 2).min(config.max_backoff);
            wait
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
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
    url: &str,
    state: &mut State,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let mut req = url.into_client_request()?;
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
    let (hello, ready) = state.hello(config);
    let held = ready.as_ref().map(Status::version);
    send(&mut ws, &hello).await?;
    tracing::info!(url, held, "connected to flagd");
    if let (Some(inner), Some(ready)) = (weak.upgrade(), ready) {
        inner.status.send_replace(ready);
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
        let step = match decode_server(text.as_bytes()) {
            Ok(msg) => state.apply(msg),
            Err(e) => Step::unreadable(&e, text.len()),
        };
        let Step {
            publish,
            notes,
            reply,
        } = step;
        let published = publish.map(|p| publish_to(&inner, p));
        for note in &notes {
            note.emit();
        }
        match reply {
            Reply::Nothing => {}
            Reply::Send(msg) => send(&mut ws, &msg).await?,
            Reply::Reconnect(why) => anyhow::bail!(why),
        }
        if let Some(current) = published {
            applied = true;
            write_cache(config, &current);
        }
    }
}

/// Serves a new version: one atomic store, which readers never wait for; then the
/// status and the change event.
fn publish_to(inner: &Inner, publish: Publish) -> Arc<Current> {
    let Publish {
        current,
        status,
        change,
    } = publish;
    inner.serve(current.clone());
    inner.status.send_replace(status);
    inner.changes.send_replace(change);
    current
}

/// Writes the served snapshot to the cache file: to a temporary file, then renamed, so
/// that a crash never leaves half a file.
fn write_cache(config: &Config, cur: &Current) {
    let Some(path) = &config.cache_file else {
        return;
    };
    // Written from the items as they are shared, never assembled into one document.
    #[derive(serde::Serialize)]
    struct CacheFile<'a> {
        version: u64,
        document: &'a crate::doc::Doc,
        store: &'a Option<String>,
        at: Option<i64>,
    }
    let file = CacheFile {
        version: cur.version,
        document: &cur.document,
        store: &cur.store,
        at: cur.at,
    };
    let tmp = path.with_extension("tmp");
    let result = serde_json::to_vec(&file)
        .map_err(std::io::Error::other)
        .and_then(|body| std::fs::write(&tmp, body))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the cache file");
    }
}
