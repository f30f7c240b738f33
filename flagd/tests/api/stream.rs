//! Live push over a real websocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ADMIN, Backend, Server, rollout_flag, sdk_key};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(s: &Server, key: &str) -> anyhow::Result<Ws> {
    let url = format!("{}/stream", s.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

pub(crate) async fn hello(ws: &mut Ws, instance: &str, version: Option<u64>) -> anyhow::Result<()> {
    let msg = json!({"type": "hello", "instance": instance, "sdk": "test/1", "host": "h", "version": version});
    ws.send(Message::Text(msg.to_string().into())).await?;
    Ok(())
}

/// The next protocol message that is not a ping.
pub(crate) async fn next(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t)?;
                if v["type"] != "ping" {
                    return Ok(v);
                }
            }
            Message::Close(c) => anyhow::bail!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next message is a delta from one version to the next.
async fn expect_delta(ws: &mut Ws, from: u64, to: u64) -> anyhow::Result<Value> {
    let d = next(ws).await?;
    assert_eq!(
        (d["type"].clone(), d["from"].clone(), d["version"].clone()),
        (json!("delta"), json!(from), json!(to))
    );
    Ok(d)
}

pub(crate) async fn ack(ws: &mut Ws, version: u64) -> anyhow::Result<()> {
    ws.send(Message::Text(
        json!({"type": "ack", "version": version})
            .to_string()
            .into(),
    ))
    .await?;
    Ok(())
}

pub(crate) async fn push(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let key = sdk_key(&s, "production").await;
    // Twenty other flags, so that a one-flag delta is smaller than a snapshot.
    let mut flags = serde_json::Map::new();
    flags.insert("a".into(), rollout_flag(5));
    for i in 0..20 {
        flags.insert(format!("other-{i}"), rollout_flag(i));
    }
    s.put("/environments/production/flags", json!({"flags": flags}))
        .await
        .expect(200);

    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", None).await?;
    let snap = next(&mut ws).await?;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["version"], 1);
    assert_eq!(snap["document"]["flags"]["a"], rollout_flag(5));
    ack(&mut ws, 1).await?;

    // A toggle through the REST API arrives as a delta.
    s.post(
        "/environments/production/flags/a/disable",
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    let d = expect_delta(&mut ws, 1, 2).await?;
    assert_eq!(d["changes"][0]["definition"]["state"], "DISABLED");
    ack(&mut ws, 2).await?;

    // The fleet view shows the instance on the new version (acks are asynchronous).
    let mut fleet = Value::Null;
    for _ in 0..100 {
        fleet = s
            .get("/environments/production/fleet")
            .await
            .expect(200)
            .body;
        if fleet["onVersion"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (fleet["total"].clone(), fleet["onVersion"].clone()),
        (json!(1), json!(1)),
        "{fleet}"
    );
    assert_eq!(fleet["instances"][0]["instance"], "i-1");

    // A revert is broadcast compactly, naming the version it restores (P9).
    s.post(
        "/environments/production/revert",
        json!({"version": 1, "reason": "test"}),
    )
    .await
    .expect(200);
    let mut d = next(&mut ws).await?;
    assert!(d["at"].is_i64(), "frames carry the commit time: {d}");
    d.as_object_mut().map(|o| o.remove("at"));
    assert_eq!(
        d,
        json!({"type": "restore", "from": 2, "version": 3, "restores": 1})
    );
    // A client that does not keep version 1 reconnects holding 2 and gets the changes.
    let mut late = connect(&s, &key).await?;
    hello(&mut late, "i-late", Some(2)).await?;
    let d = next(&mut late).await?;
    assert_eq!(
        (d["type"].clone(), d["restores"].clone()),
        (json!("delta"), json!(1))
    );
    assert_eq!(d["changes"][0]["definition"], rollout_flag(5));
    drop(late);

    // Reconnecting with a held version gets only what it missed.
    drop(ws);
    s.post(
        "/environments/production/flags/a/disable",
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", Some(3)).await?;
    expect_delta(&mut ws, 3, 4).await?;

    // Garbage is refused with a close frame; the server carries on.
    let mut bad = connect(&s, &key).await?;
    hello(&mut bad, "i-bad", Some(4)).await?;
    bad.send(Message::Text("{not json".into())).await?;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), bad.next()).await? {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => anyhow::bail!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|c| u16::from(c.code)), Some(1007));
    // P5: a message over 64 KiB ends the connection.
    let mut big = connect(&s, &key).await?;
    hello(&mut big, "i-big", Some(4)).await?;
    let pad = "x".repeat(100 * 1024);
    big.send(Message::Text(
        json!({"type": "ack", "version": 4, "pad": pad})
            .to_string()
            .into(),
    ))
    .await?;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), big.next()).await? {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
            Some(Ok(_)) => continue,
        }
    };
    assert!(ended, "an oversized message closes the stream");
    let mut no_hello = connect(&s, &key).await?;
    no_hello
        .send(Message::Text(
            json!({"type": "ack", "version": 1}).to_string().into(),
        ))
        .await?;
    assert!(
        matches!(tokio::time::timeout(Duration::from_secs(10), no_hello.next()).await?, Some(Ok(Message::Close(Some(c)))) if u16::from(c.code) == 1008)
    );
    s.post(
        "/environments/production/flags/a/enable",
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    assert_eq!(next(&mut ws).await?["version"], 5);

    // Only SDK keys may stream.
    let url = format!("{}/stream", s.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse()?);
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "an admin token cannot stream"
    );
    let r = s.call(Method::GET, "/stream", None, None, &[]).await;
    assert_eq!(r.status.as_u16(), 401);
    s.stop().await
}

pub(crate) async fn stalled_client(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let key = sdk_key(&s, "staging").await;
    s.put("/environments/staging/flags/a", rollout_flag(5))
        .await
        .expect(201);
    // A client that says hello and then never reads.
    let mut stalled = connect(&s, &key).await?;
    hello(&mut stalled, "stalled", None).await?;
    let mut live = connect(&s, &key).await?;
    hello(&mut live, "live", None).await?;
    assert_eq!(next(&mut live).await?["version"], 1);
    // Large changes fill the stalled connection's buffers; the live one keeps up.
    let big = json!({"pad": "x".repeat(200 * 1024)});
    for i in 0..40u64 {
        let mut f = rollout_flag(i % 100);
        f["metadata"] = big.clone();
        f["metadata"]["n"] = json!(i);
        s.put("/environments/staging/flags/a", f).await.expect(200);
        let d = next(&mut live).await?;
        assert_eq!(d["version"], i + 2);
    }
    drop(stalled);
    s.stop().await
}

/// A revert too large to carry in memory (more than 100 items) is announced as a restore,
/// recorded like any other (changed flags, history by flag, audit), and flagd's cache
/// reloads the head: new connections get its snapshot and the next change is a delta.
pub(crate) async fn large_revert(b: Backend) -> anyhow::Result<()> {
    const N: u64 = 300;
    let s = Server::start(&b).await?;
    let key = sdk_key(&s, "production").await;
    let set = |percent: u64| {
        let flags: serde_json::Map<String, Value> = (0..N)
            .map(|i| (format!("f-{i:03}"), rollout_flag(percent)))
            .collect();
        json!({"flags": flags})
    };
    let p = "/environments/production";
    s.put(&format!("{p}/flags"), set(5)).await.expect(200);
    let v1 = s.get(&format!("{p}/flags")).await.expect(200).body;
    s.put(&format!("{p}/flags"), set(50)).await.expect(200);

    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", None).await?;
    let snap = next(&mut ws).await?;
    assert_eq!(
        (snap["type"].clone(), snap["version"].clone()),
        (json!("snapshot"), json!(2))
    );
    ack(&mut ws, 2).await?;

    let r = s
        .post(
            &format!("{p}/revert"),
            json!({"version": 1, "reason": "bad ramp"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 3);
    assert_eq!(
        r.body["changedFlags"].as_array().map(Vec::len),
        Some(N as usize)
    );
    let mut d = next(&mut ws).await?;
    assert!(d["at"].is_i64(), "frames carry the commit time: {d}");
    d.as_object_mut().map(|o| o.remove("at"));
    assert_eq!(
        d,
        json!({"type": "restore", "from": 2, "version": 3, "restores": 1})
    );
    assert_eq!(s.get(&format!("{p}/flags")).await.expect(200).body, v1);

    // A new SDK, and one that held version 2 without keeping version 1, both get the
    // reverted set as a snapshot.
    for held in [None, Some(2)] {
        let mut late = connect(&s, &key).await?;
        hello(&mut late, "i-late", held).await?;
        let snap = next(&mut late).await?;
        assert_eq!(
            (snap["type"].clone(), snap["version"].clone()),
            (json!("snapshot"), json!(3))
        );
        assert_eq!(snap["document"], v1, "held {held:?}");
    }

    // History by flag and the audit entry name the revert.
    let vs = s.version_numbers(&format!("{p}/versions?flag=f-123")).await;
    assert_eq!(vs, vec![3, 2, 1]);
    let audit = s
        .get("/audit?environment=production&action=flagset.revert")
        .await
        .expect(200)
        .body;
    let entry = &audit["entries"][0];
    assert_eq!(entry["reason"], "bad ramp");
    assert_eq!(entry["after"]["changedItems"], N);

    // The cache holds the reverted head: the next change is a delta from version 3.
    s.post(
        &format!("{p}/flags/f-007/disable"),
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    let d = expect_delta(&mut ws, 3, 4).await?;
    let mut expected = v1["flags"]["f-007"].clone();
    expected["state"] = json!("DISABLED");
    assert_eq!(d["changes"][0]["definition"], expected);
    Ok(())
}
