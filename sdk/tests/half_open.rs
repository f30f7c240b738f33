//! Half-open connections (P14, P15): a TCP path that stops carrying anything while both
//! sockets stay open. A proxy between the SDK and a real flagd freezes on demand; each
//! side must notice within three heartbeats, by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flagd_sdk::{Client, Status};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;

use common::{api, sdk_key};
use flagd_harness::{InProcess, Server};

/// A TCP proxy on loopback that, once frozen, carries nothing in either direction and
/// closes nothing: the network path of a half-open connection.
struct Proxy {
    addr: String,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, f.clone()));
                tokio::spawn(pipe(sr, cw, f.clone()));
            }
        });
        Self { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            // Hold both sockets open and carry nothing: what a dead NAT entry or a
            // pulled cable looks like to the two ends.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let n = match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

const HEARTBEAT: Duration = Duration::from_millis(200);

async fn flagd_and_key() -> (Server, String) {
    let f = InProcess::new()
        .options(flagd::server::Options {
            heartbeat: HEARTBEAT,
            ..Default::default()
        })
        .start()
        .await;
    let key = sdk_key(&f.base()).await;
    api(
        &f.base(),
        reqwest::Method::PUT,
        "/environments/production/flags/a",
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
    )
    .await;
    (f, key)
}

/// The SDK notices a silent path, reports itself stale while still serving its
/// snapshot, and is back on the live set once the path carries traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_detects_a_half_open_connection() {
    let (f, key) = flagd_and_key().await;
    let proxy = Proxy::start(f.addr().to_string()).await;
    let sdk = Client::builder(format!("http://{}", proxy.addr), &key)
        .heartbeat(HEARTBEAT)
        .max_backoff(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert_eq!(sdk.status(), Status::Ready { version: 1 });

    proxy.freeze(true);
    let mut status = sdk.status_updates();
    // Without detection this would never happen: both sockets stay open.
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| matches!(s, Status::Stale { .. })),
    )
    .await
    .expect("the SDK noticed the silent connection")
    .unwrap();
    let user = flagd_sdk::EvaluationContext::new("u");
    assert!(sdk.enabled("a", &user), "the last snapshot keeps serving");

    // flagd moves on while the path is dead; once it carries traffic again, the SDK
    // reconnects and converges.
    api(
        &f.base(),
        reqwest::Method::POST,
        "/environments/production/flags/a/disable",
        json!({"reason": "test"}),
    )
    .await;
    proxy.freeze(false);
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| matches!(s, Status::Ready { version } if *version >= 2)),
    )
    .await
    .expect("the SDK reconnected")
    .unwrap();
    assert!(!sdk.enabled("a", &user));
    sdk.close();
    f.stop().await.unwrap();
}

/// flagd notices an SDK whose path went silent and shows it unreachable in the fleet view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_detects_a_half_open_connection() {
    let (f, key) = flagd_and_key().await;
    let proxy = Proxy::start(f.addr().to_string()).await;
    let mut req = format!("ws://{}/api/v1/stream", proxy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = json!({"type": "hello", "instance": "i-silent", "sdk": "test/1", "host": "h"});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(
        first.to_text().unwrap().contains("\"snapshot\""),
        "{first:?}"
    );
    let total = || async {
        api(
            &f.base(),
            reqwest::Method::GET,
            "/environments/production/fleet",
            serde_json::Value::Null,
        )
        .await["total"]
            .as_u64()
    };
    assert_eq!(total().await, Some(1));

    // The client neither reads nor writes from now on, and its socket stays open.
    proxy.freeze(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = api(
            &f.base(),
            reqwest::Method::GET,
            "/environments/production/fleet",
            serde_json::Value::Null,
        )
        .await;
        // Closed as half-open, and remembered as unreachable: it may still serve its
        // version, so it is not forgotten.
        if fleet["unreachable"] == 1 {
            assert_eq!(fleet["total"], 1);
            assert_eq!(fleet["instances"][0]["state"], "unreachable");
            assert!(fleet["instances"][0]["unreachableSince"].is_string());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flagd still lists the silent SDK as connected: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ws);
    f.stop().await.unwrap();
}
