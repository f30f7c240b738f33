//! Connection hygiene against the real `flagd` binary on loopback: partial headers,
//! silent and idle connections are closed after their timeouts; connections beyond the
//! cap wait until one closes; `/readyz` answers under a slowloris of 1,100 half-sent
//! requests with the soft open-file limit at 1,024; the SDK stream and the UI's events
//! outlive the idle timeout; SIGTERM is not held up by idle or half-sent connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use flagd_harness::{ADMIN_TOKEN as ADMIN, Binary};

/// The flagd binary of this package.
fn flagd() -> Binary {
    Binary::at(env!("CARGO_BIN_EXE_flagd"))
}

/// What a read finds within `wait`.
#[derive(Debug, PartialEq)]
enum Peer {
    Closed,
    Open,
    Sent(String),
}

fn probe(s: &mut TcpStream, wait: Duration) -> Peer {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Peer::Closed,
        Ok(n) => Peer::Sent(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Peer::Open
        }
        Err(_) => Peer::Closed,
    }
}

/// Waits (at most `limit`) for the server to close `s`; panics if it sends anything.
fn assert_closed_within(s: &mut TcpStream, limit: Duration, what: &str) {
    match probe(s, limit) {
        Peer::Closed => {}
        other => panic!("{what}: expected flagd to close the connection, got {other:?}"),
    }
}

/// Reads one whole response (headers and a Content-Length body) from a keep-alive
/// connection; returns the status line and the body.
fn read_response(s: &mut TcpStream) -> (String, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length");
            while got.len() < end + 4 + len {
                let n = s.read(&mut buf).expect("the rest of the body");
                assert!(n > 0, "closed in the middle of a body");
                got.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
            return (head.lines().next().unwrap_or_default().to_owned(), body);
        }
        let n = s.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

fn get(s: &mut TcpStream, path: &str) -> (String, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: flagd\r\n\r\n").unwrap();
    read_response(s)
}

const PARTIAL: &[u8] = b"GET /readyz HTTP/1.1\r\nHost: flagd\r\n";

#[test]
fn partial_headers_are_closed_after_the_header_read_timeout() {
    let f = flagd()
        .args(["--header-read-timeout", "1s", "--idle-timeout", "60s"])
        .start();
    // A new connection that sends part of its headers.
    let mut s = f.connect();
    s.write_all(PARTIAL).unwrap();
    assert_eq!(
        probe(&mut s, Duration::from_millis(300)),
        Peer::Open,
        "not closed before its time"
    );
    assert_closed_within(&mut s, Duration::from_secs(10), "partial headers");

    // A keep-alive connection whose second request stops half-way: the header clock
    // starts at that request's first byte, and the 60 s idle timeout does not apply.
    let mut s = f.connect();
    assert_eq!(get(&mut s, "/healthz").0, "HTTP/1.1 200 OK");
    s.write_all(PARTIAL).unwrap();
    assert_closed_within(
        &mut s,
        Duration::from_secs(10),
        "partial headers after a request",
    );
}

#[test]
fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let f = flagd()
        .args(["--header-read-timeout", "1s", "--idle-timeout", "60s"])
        .start();
    let mut s = f.connect();
    assert_eq!(probe(&mut s, Duration::from_millis(300)), Peer::Open);
    assert_closed_within(&mut s, Duration::from_secs(10), "a silent connection");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let f = flagd()
        .args(["--header-read-timeout", "60s", "--idle-timeout", "1s"])
        .start();
    let mut s = f.connect();
    assert_eq!(get(&mut s, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(get(&mut s, "/readyz").0, "HTTP/1.1 200 OK", "kept alive");
    assert_closed_within(&mut s, Duration::from_secs(10), "an idle connection");
}

#[test]
fn a_keep_alive_connection_may_stay_idle_longer_than_the_header_read_timeout() {
    // hyper's own header timer alone would close it at 1 s (it runs while idle too).
    let f = flagd()
        .args(["--header-read-timeout", "1s", "--idle-timeout", "60s"])
        .start();
    let mut s = f.connect();
    assert_eq!(get(&mut s, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(probe(&mut s, Duration::from_millis(2500)), Peer::Open);
    assert_eq!(get(&mut s, "/healthz").0, "HTTP/1.1 200 OK");
}

/// The value of an unlabelled sample in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let f = flagd()
        .args([
            "--max-connections",
            "2",
            "--header-read-timeout",
            "60s",
            "--idle-timeout",
            "60s",
        ])
        .start();
    let mut a = f.connect();
    let mut b = f.connect();
    assert_eq!(get(&mut a, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(get(&mut b, "/healthz").0, "HTTP/1.1 200 OK");
    // A third connection is made (the kernel's backlog takes it) but not served.
    let mut c = f.connect();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: flagd\r\n\r\n").unwrap();
    assert_eq!(
        probe(&mut c, Duration::from_secs(1)),
        Peer::Open,
        "not served while two connections are open"
    );
    // One closes: the third is served, and is the second of two open connections.
    drop(a);
    let (status, metrics) = read_response(&mut c);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&metrics, "flagd_http_connections"), Some(2.0));
    assert_eq!(sample(&metrics, "flagd_http_connections_max"), Some(2.0));
    assert!(
        f.log().contains("the connection limit is reached"),
        "{}",
        f.log()
    );
    assert_eq!(
        get(&mut b, "/healthz").0,
        "HTTP/1.1 200 OK",
        "b still served"
    );
}

#[tokio::test]
async fn readyz_answers_under_a_slowloris_at_the_common_open_file_limit() {
    const HALF_SENT: usize = 1_100;
    // This process holds the other end of every connection.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    if hard < 4_096 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the hard open-file limit is {hard}: this test needs at least 4,096"
        );
        println!("skipped: the hard open-file limit is {hard} (< 4,096)");
        return;
    }
    assert!(limit >= 4_096, "raised to {limit}");
    // A header timeout longer than the test, so that the slowloris stays open.
    let f = flagd()
        .args(["--header-read-timeout", "120s"])
        .soft_open_files(1024)
        .start();
    assert!(
        f.log().contains("open-file limit raised to the hard limit")
            && f.log().contains("before=1024"),
        "{}",
        f.log()
    );
    let mut loris = Vec::with_capacity(HALF_SENT);
    for i in 0..HALF_SENT {
        let mut s = tokio::net::TcpStream::connect(f.addr())
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        tokio::io::AsyncWriteExt::write_all(&mut s, PARTIAL)
            .await
            .unwrap();
        loris.push(s);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = http
        .get(f.url("/readyz"))
        .send()
        .await
        .expect("/readyz answers within 5 s");
    assert_eq!(r.status(), 200);
    let metrics = http
        .get(f.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open = sample(&metrics, "flagd_http_connections").unwrap_or_default();
    assert!(
        open >= HALF_SENT as f64,
        "flagd holds all {HALF_SENT} half-sent requests: {open}"
    );
    // And they are all still open: /readyz was answered while they were.
    let mut buf = [0u8; 16];
    for (i, s) in loris.iter().enumerate() {
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("half-sent request {i} was answered or closed: {other:?}"),
        }
    }
}

/// The SDK stream and the admin UI's event stream both outlive the idle and header
/// timeouts (the server pings the SDK stream; the test answers).
#[tokio::test]
async fn streams_outlive_the_idle_timeout() {
    let f = flagd()
        .args([
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--stream-heartbeat",
            "300ms",
        ])
        .start();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let api = |p: &str| f.url(&format!("/api/v1{p}"));
    let key: Value = http
        .post(api("/environments/production/sdk-keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["secret"].as_str().unwrap().to_owned();
    let flag =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    let r = http
        .put(api("/environments/production/flags/kill-me"))
        .bearer_auth(ADMIN)
        .body(flag.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let mut req = format!("ws://{}/api/v1/stream", f.addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = json!({"type": "hello", "instance": "i-1", "sdk": "test/1", "host": "h"});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let mut events = http
        .get(api("/events"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    // Three seconds (three idle timeouts), answering the server's pings; then a change
    // reaches both streams.
    let mut pings = 0;
    let mut snapshot = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let m = match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(m) => m.expect("the stream is open").unwrap(),
        };
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "ping" {
            pings += 1;
            let pong = json!({"type": "pong"}).to_string();
            ws.send(Message::Text(pong.into())).await.unwrap();
        } else {
            snapshot = Some(v);
        }
    }
    assert!(pings >= 3, "the server pinged the stream: {pings}");
    assert_eq!(snapshot.expect("a snapshot")["version"], 1);

    let r = http
        .post(api("/environments/production/flags/kill-me/disable"))
        .bearer_auth(ADMIN)
        .body(json!({"reason": "test"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let delta = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream is open")
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] != "ping" {
            break v;
        }
    };
    assert_eq!(delta["version"], 2, "{delta}");
    let mut sse = String::new();
    while !sse.contains("event: change") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("an event within 10 s")
            .expect("the event stream is open")
            .expect("not ended");
        sse.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(sse.contains(r#""version":2"#), "{sse}");
}

/// SIGTERM stops flagd at once although a silent, a half-sent and an idle keep-alive
/// connection are open and their timeouts are a minute away.
#[test]
fn sigterm_is_not_held_up_by_idle_or_half_sent_connections() {
    let mut f = flagd()
        .args(["--header-read-timeout", "60s", "--idle-timeout", "60s"])
        .start();
    let _silent = f.connect();
    let mut half = f.connect();
    half.write_all(PARTIAL).unwrap();
    let mut idle = f.connect();
    assert_eq!(get(&mut idle, "/healthz").0, "HTTP/1.1 200 OK");
    // Every connection accepted before the signal.
    let mut probe_conn = f.connect();
    assert_eq!(get(&mut probe_conn, "/healthz").0, "HTTP/1.1 200 OK");
    f.signal("TERM");
    let status = f
        .wait_timeout(Duration::from_secs(20))
        .expect("flagd still running 20 s after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", f.log());
    assert_closed_within(&mut idle, Duration::from_secs(5), "the idle connection");
}

#[test]
fn bad_connection_settings_are_usage_errors() {
    for (flag, value, says) in [
        ("--header-read-timeout", "0s", "at least 100ms"),
        ("--idle-timeout", "soon", "for example 15s"),
        ("--max-connections", "0", "at least 1"),
        ("--max-connections", "many", "a whole number"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
            .args([flag, value, "check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
