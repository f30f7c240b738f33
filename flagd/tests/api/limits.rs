//! The limits on write (key syntax, nesting depth, flag count), the fleet's memory of
//! instances that vanished, and store identity in the stream's hello.

use std::time::Duration;

use futures_util::SinkExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::stream::{ack, connect, hello, next};
use crate::support::{ADMIN, Backend, Server, sdk_key};

fn flag() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"})
}

/// A flag whose targeting is `n` operators deep: the flag sits 2 levels into the
/// document and its targeting one more, so the document is `n + 4` levels deep.
fn deep_flag(n: usize) -> Value {
    let mut t = json!({"var": "x"});
    for _ in 0..n {
        t = json!({ "!": t });
    }
    json!({"state": "ENABLED", "variants": {"true": true, "false": false}, "defaultVariant": "false", "targeting": t})
}

fn paths(r: &Value) -> Vec<String> {
    r["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{}: {}",
                d["path"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// `%`-encodes a key for a URL path segment.
fn seg(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn keys_and_depth(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let p = "/environments/production";
    let long = "k".repeat(257);
    let doc = json!({"flags": {
        ".": flag(), "..": flag(), "a\nb": flag(), "nul\u{0}": flag(), long.clone(): flag(),
        "ok": {"state": "ENABLED", "variants": {"tab\there": true}, "defaultVariant": "tab\there"}
    }, "$evaluators": {"bell\u{7}": {"==": [1, 1]}}});
    let r = s.put(&format!("{p}/flags"), doc).await.expect(422);
    let got = paths(&r.body);
    for want in [
        "$evaluators[\"bell\\u0007\"]: an evaluator name must not contain control characters (found U+0007)",
        "flags[\".\"]: a flag key \".\" cannot be addressed in a URL",
        "flags[\"..\"]: a flag key \"..\" cannot be addressed in a URL",
        "flags[\"a\\nb\"]: a flag key must not contain control characters (found U+000A)",
        "flags[\"nul\\u0000\"]: a flag key must not contain control characters (found U+0000)",
        "flags.ok.variants[\"tab\\there\"]: a variant name must not contain control characters (found U+0009)",
    ] {
        assert!(
            got.iter().any(|g| g == want),
            "missing {want:?} in {got:#?}"
        );
    }
    assert!(
        got.iter()
            .any(|g| g.ends_with("a flag key is 257 bytes long; at most 256 bytes")),
        "{got:#?}"
    );
    // Nothing was stored.
    assert_eq!(
        s.get(&format!("{p}/flags")).await.expect(200).version(),
        Some(0)
    );

    // Every key the syntax allows is addressable: spaces, slashes, `?`, `#`, `%`, unicode.
    let odd = "checkout v2/EU?#%ü";
    let max = "m".repeat(256);
    s.put(&format!("{p}/flags/{}", seg(odd)), flag())
        .await
        .expect(201);
    s.put(&format!("{p}/flags/{}", seg(&max)), flag())
        .await
        .expect(201);
    assert_eq!(
        s.get(&format!("{p}/flags/{}", seg(odd)))
            .await
            .expect(200)
            .body,
        flag()
    );
    s.post(
        &format!("{p}/flags/{}/disable", seg(odd)),
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    s.post(
        &format!("{p}/flags/{}/disable", seg(&max)),
        json!({"reason": "test"}),
    )
    .await
    .expect(200);

    // Fields: a reason is at most 1,000 characters; names at most 256 bytes.
    let r = s
        .post(
            &format!("{p}/flags/{}/enable", seg(odd)),
            json!({"reason": "r".repeat(1_000_001)}),
        )
        .await
        .expect(422);
    assert_eq!(
        paths(&r.body),
        vec!["reason: is 1000001 characters long; at most 1000"]
    );
    let long_name = "n".repeat(257);
    for (path, body) in [
        ("/tokens", json!({"name": long_name, "role": "viewer"})),
        ("/environments", json!({"key": "x", "name": long_name})),
        (
            "/environments/production/sdk-keys",
            json!({"name": long_name}),
        ),
        ("/tokens", json!({"name": "a\nb", "role": "viewer"})),
    ] {
        let r = s.post(path, body).await.expect(422);
        assert_eq!(
            r.body["error"]["details"][0]["path"], "name",
            "{path}: {}",
            r.body
        );
    }

    // Nesting: a document 100 levels deep is accepted, 101 is refused with the path.
    s.put(&format!("{p}/flags/deep"), deep_flag(96))
        .await
        .expect(201);
    let r = s
        .put(&format!("{p}/flags/deep"), deep_flag(97))
        .await
        .expect(422);
    assert_eq!(
        paths(&r.body),
        vec![
            "flags.deep: is nested 101 levels deep in the document; at most 100 levels are allowed"
        ]
    );
    // The JSON decoder's own limit (128) answers for deeper bodies, as a clear 400.
    let r = s.put(&format!("{p}/flags/deep"), deep_flag(140)).await;
    assert!(r.status.is_client_error(), "{:?}", r.status);
    s.stop().await
}

pub(crate) async fn flag_count(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let p = "/environments/production";
    let mut flags = serde_json::Map::new();
    for i in 0..100_000 {
        flags.insert(format!("f{i}"), flag());
    }
    let mut over = flags.clone();
    over.insert("one-more".into(), flag());
    let r = s
        .put(&format!("{p}/flags"), json!({"flags": over}))
        .await
        .expect(422);
    assert_eq!(
        paths(&r.body),
        vec!["flags: holds 100001 flags; at most 100000 are allowed"]
    );
    s.put(&format!("{p}/flags"), json!({"flags": flags}))
        .await
        .expect(200);
    // One flag more, one at a time: refused by the store's running count.
    let r = s
        .put(&format!("{p}/flags/one-more"), flag())
        .await
        .expect(422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("would hold 100001 flags"),
        "{}",
        r.body
    );
    // A kill switch and a revert are never blocked by a limit; replacing a flag is fine.
    s.post(
        &format!("{p}/flags/f7/disable"),
        json!({"reason": "incident"}),
    )
    .await
    .expect(200);
    s.put(
        &format!("{p}/flags/f8"),
        json!({"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}),
    )
    .await
    .expect(200);
    s.post(
        &format!("{p}/revert"),
        json!({"version": 1, "reason": "test"}),
    )
    .await
    .expect(200);
    s.stop().await
}

async fn fleet(s: &Server) -> Value {
    s.get("/environments/production/fleet")
        .await
        .expect(200)
        .body
}

/// Polls the fleet until `done` holds.
async fn fleet_until(s: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = fleet(s).await;
        if done(&f) {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet never showed {what}: {f}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn fleet_memory(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(
        &b,
        flagd::server::Options {
            fleet_ttl: Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .await?;
    let key = sdk_key(&s, "production").await;
    s.put("/environments/production/flags/a", flag())
        .await
        .expect(201);

    // Lost without a goodbye: remembered, unreachable, with what it last applied.
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", None).await?;
    assert_eq!(next(&mut ws).await?["version"], 1);
    ack(&mut ws, 1).await?;
    fleet_until(&s, "the ack", |f| f["onVersion"] == 1).await;
    drop(ws);
    let f = fleet_until(&s, "i-1 unreachable", |f| f["unreachable"] == 1).await;
    assert_eq!(
        (f["total"].clone(), f["connected"].clone()),
        (json!(1), json!(0))
    );
    let i = &f["instances"][0];
    assert_eq!(
        (i["state"].clone(), i["appliedVersion"].clone()),
        (json!("unreachable"), json!(1))
    );
    assert!(i["unreachableSince"].is_string());

    // Back with the same instance id: its entry is connected again.
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", Some(1)).await?;
    let f = fleet_until(&s, "i-1 back", |f| f["connected"] == 1).await;
    assert_eq!(
        (f["total"].clone(), f["unreachable"].clone()),
        (json!(1), json!(0))
    );
    // A goodbye: forgotten at once.
    ws.send(Message::Text(json!({"type": "goodbye"}).to_string().into()))
        .await?;
    fleet_until(&s, "i-1 gone", |f| f["total"] == 0).await;

    // An operator forgets an unreachable instance; a viewer may not.
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-2", None).await?;
    next(&mut ws).await?;
    drop(ws);
    fleet_until(&s, "i-2 unreachable", |f| f["unreachable"] == 1).await;
    let viewer = s.token("v", "viewer", None).await;
    s.call(
        Method::DELETE,
        "/environments/production/fleet/i-2",
        Some(&viewer),
        None,
        &[],
    )
    .await
    .expect(403);
    s.call(
        Method::DELETE,
        "/environments/production/fleet/i-2",
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    assert_eq!(fleet(&s).await["total"], 0);
    s.call(
        Method::DELETE,
        "/environments/production/fleet/i-2",
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(404);

    // And the TTL forgets one nobody forgot.
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-3", None).await?;
    next(&mut ws).await?;
    drop(ws);
    fleet_until(&s, "i-3 unreachable", |f| f["unreachable"] == 1).await;
    fleet_until(&s, "i-3 expired", |f| f["total"] == 0).await;
    s.stop().await
}

pub(crate) async fn store_identity(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let key = sdk_key(&s, "production").await;
    s.put("/environments/production/flags/a", flag())
        .await
        .expect(201);
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", None).await?;
    let snap = next(&mut ws).await?;
    let (store, at) = (snap["store"].clone(), snap["at"].clone());
    assert!(store.as_str().is_some_and(|s| s.len() == 32), "{snap}");
    assert!(at.is_i64(), "{snap}");
    assert!(snap.get("reset").is_none(), "{snap}");
    drop(ws);

    let send_hello = |extra: Value| {
        let mut h = json!({"type": "hello", "instance": "i-2", "sdk": "test/1", "version": 1});
        for (k, v) in extra.as_object().into_iter().flatten() {
            h[k] = v.clone();
        }
        h
    };
    // The same store and version: nothing to send until the next change.
    let mut ws = connect(&s, &key).await?;
    ws.send(Message::Text(
        send_hello(json!({"store": store, "at": at}))
            .to_string()
            .into(),
    ))
    .await?;
    s.put("/environments/production/flags/b", flag())
        .await
        .expect(201);
    let d = next(&mut ws).await?;
    assert_eq!(
        (d["type"].clone(), d["from"].clone()),
        (json!("delta"), json!(1)),
        "{d}"
    );
    drop(ws);

    // Another store, another history (same number, other commit time), or a version
    // above the head: the whole set, marked reset.
    for extra in [
        json!({"store": "0123456789abcdef0123456789abcdef", "at": at}),
        json!({"store": store, "at": 12345}),
        json!({"store": store, "version": 99}),
        json!({"version": 99}),
    ] {
        let mut ws = connect(&s, &key).await?;
        ws.send(Message::Text(send_hello(extra.clone()).to_string().into()))
            .await?;
        let m = next(&mut ws).await?;
        assert_eq!(
            (m["type"].clone(), m["version"].clone(), m["reset"].clone()),
            (json!("snapshot"), json!(2), json!(true)),
            "after {extra}: {m}"
        );
    }
    // An SDK that could not read what it was sent asks for a resync: a reset snapshot,
    // once per version (a second request for the same version is only recorded), and
    // the reason shows in the fleet view.
    let mut ws = connect(&s, &key).await?;
    ws.send(Message::Text(
        send_hello(json!({"instance": "i-r", "store": store, "version": 2}))
            .to_string()
            .into(),
    ))
    .await?;
    let resync = json!({"type": "resync", "reason": "unreadable message: test"});
    ws.send(Message::Text(resync.to_string().into())).await?;
    let m = next(&mut ws).await?;
    assert_eq!(
        (m["type"].clone(), m["reset"].clone()),
        (json!("snapshot"), json!(true)),
        "{m}"
    );
    ws.send(Message::Text(resync.to_string().into())).await?;
    s.put("/environments/production/flags/c", flag())
        .await
        .expect(201);
    let m = next(&mut ws).await?;
    assert_eq!(
        (m["type"].clone(), m["version"].clone()),
        (json!("delta"), json!(3)),
        "no second snapshot: {m}"
    );
    let f = fleet(&s).await;
    let i = f["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "i-r")
        .cloned()
        .unwrap();
    assert_eq!(i["lastError"], "unreadable message: test", "{f}");
    drop(ws);

    // An instance id the fleet could not address is refused.
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "..", None).await?;
    let e = next(&mut ws).await.expect_err("closed");
    assert!(e.to_string().contains("instance id"), "{e}");
    s.stop().await
}

/// One flag's definition is at most 1 MiB (compact JSON), on a flag write and in an
/// import, with the path and the way out (`$evaluators`); large shared data in an
/// evaluator is fine. A toggle records the state alone in the audit log, whatever the
/// flag's size (before, a toggle of a 5 MB flag wrote +17 MB: the definition again in
/// the history, and twice more in the audit entry).
pub(crate) async fn flag_size(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let p = "/environments/production";
    let with_blob = |n: usize| json!({"state": "ENABLED", "variants": {"on": {"blob": "x".repeat(n)}, "off": {"blob": ""}}, "defaultVariant": "on"});
    let too_big = with_blob(1024 * 1024 + 1);
    let r = s
        .put(&format!("{p}/flags/big"), too_big.clone())
        .await
        .expect(422);
    let found = paths(&r.body);
    assert!(
        found.iter().any(|d| d.starts_with("flags.big: ")
            && d.contains("at most 1048576 bytes (1 MiB)")
            && d.contains("$evaluators")),
        "{found:?}"
    );
    let r = s
        .put(
            &format!("{p}/flags"),
            json!({"flags": {"big": too_big, "ok": flag()}}),
        )
        .await
        .expect(422);
    assert!(
        paths(&r.body).iter().any(|d| d.starts_with("flags.big: ")),
        "{}",
        r.body
    );
    assert!(
        !paths(&r.body).iter().any(|d| d.starts_with("flags.ok")),
        "{}",
        r.body
    );
    // A long list of user ids belongs in an evaluator, which flags share and a toggle
    // does not copy.
    let ids: Vec<String> = (0..60_000).map(|i| format!("user-{i:08}")).collect();
    let doc = json!({
        "flags": {"beta": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                           "targeting": {"if": [{"$ref": "beta-users"}, "on", "off"]}}},
        "$evaluators": {"beta-users": {"in": [{"var": "targetingKey"}, ids]}}
    });
    s.put(&format!("{p}/flags"), doc).await.expect(200);

    // The largest flag allowed, toggled: the audit entry holds the state alone.
    s.put(&format!("{p}/flags/large"), with_blob(1000 * 1000))
        .await
        .expect(201);
    s.post(
        &format!("{p}/flags/large/disable"),
        json!({"reason": "incident"}),
    )
    .await
    .expect(200);
    let entries = s
        .get("/audit?environment=production&flag=large")
        .await
        .expect(200);
    let toggle = &entries.body["entries"][0];
    assert_eq!(toggle["action"], "flag.disable", "{toggle}");
    assert_eq!(toggle["before"], json!({"state": "ENABLED"}));
    assert_eq!(toggle["after"], json!({"state": "DISABLED"}));
    // The full definition is still in the version.
    let head = s.get(&format!("{p}/flags/large")).await.expect(200);
    assert_eq!(head.body["state"], "DISABLED");
    assert_eq!(
        head.body["variants"]["on"]["blob"].as_str().map(str::len),
        Some(1000 * 1000)
    );
    s.stop().await
}
