//! Outgoing notifications, received by real HTTP servers on loopback that check each
//! vendor's signature as the vendor documents it (computed here, independently of
//! flagd's code).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Backend, Server, rollout_flag, sdk_key};

const P: &str = "/environments/production";
const FEISHU_SECRET: &str = "feishu-signing-secret";
const DINGTALK_SECRET: &str = "SECdingtalk-signing-secret";
/// `whsec_` and the base64 of 24 bytes.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The secret part of the Slack URL: never to be shown by the API.
const SLACK_TOKEN: &str = "T000/B000/slacksecretpart9876";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// What a receiver answers, path by path: scripted answers first, then the vendor's
/// success.
type Script = HashMap<String, VecDeque<(u16, Vec<(&'static str, String)>, String)>>;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    script: Arc<Mutex<Script>>,
}

fn success(path: &str) -> &'static str {
    if path.starts_with("/feishu") {
        r#"{"code":0,"msg":"success","data":{}}"#
    } else if path.starts_with("/dingtalk") || path.starts_with("/wecom") {
        r#"{"errcode":0,"errmsg":"ok"}"#
    } else {
        "ok"
    }
}

impl Receiver {
    /// Serves on 127.0.0.1:`port` (0: a free one); returns the port.
    async fn serve(&self, port: u16) -> u16 {
        let me = self.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let me = me.clone();
            async move {
                let path = uri.path().to_owned();
                let query = uri.query().map(url_pairs).unwrap_or_default();
                me.got.lock().unwrap().push(Got {
                    path: path.clone(),
                    query,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let scripted = me
                    .script
                    .lock()
                    .unwrap()
                    .get_mut(&path)
                    .and_then(VecDeque::pop_front);
                let (status, headers, body) =
                    scripted.unwrap_or((200, Vec::new(), success(&path).to_owned()));
                let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (k, v) in headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the receiver binds");
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    fn on(&self, path: &str, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
        self.script
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .push_back((status, headers, body.to_owned()));
    }

    fn at(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `n` requests (10 s at most).
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} got {} requests, not {n}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else if b[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Options for tests: receivers on loopback allowed, retries quick.
fn options() -> flagd::server::Options {
    let mut o = flagd::server::Options::default();
    o.notify.allow_private_addresses = true;
    o.notify.retry_base = Duration::from_millis(100);
    o.notify.poll_interval = Duration::from_millis(100);
    o
}

async fn channel(s: &Server, body: Value) -> String {
    s.post(&format!("{P}/channels"), body)
        .await
        .expect(201)
        .body["channel"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn deliveries(s: &Server, id: &str) -> Vec<Value> {
    s.get(&format!("{P}/channels/{id}/deliveries"))
        .await
        .expect(200)
        .body["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the channel's history satisfies `ok` (15 s at most).
async fn history_until(s: &Server, id: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let d = deliveries(s, id).await;
        if ok(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never got there: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill(s: &Server, token: &str) {
    s.call(
        Method::POST,
        &format!("{P}/flags/checkout/disable"),
        Some(token),
        Some(json!({"reason": "checkout 5xx spike"})),
        &[],
    )
    .await
    .expect(200);
}

pub(crate) async fn every_vendor(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    let base = format!("http://127.0.0.1:{port}");
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);

    // Clear errors naming the field; admins only.
    for (body, path) in [
        (
            json!({"kind": "telegram", "url": "https://x.example"}),
            "kind",
        ),
        (json!({"kind": "slack", "url": "ftp://x.example/a"}), "url"),
        (
            json!({"kind": "slack", "url": "https://x.example/a", "events": ["kill-switch", "boom"]}),
            "events[1]",
        ),
        (
            json!({"kind": "feishu", "url": "https://x.example/a"}),
            "secret",
        ),
        (
            json!({"kind": "dingtalk", "url": "https://x.example/a"}),
            "secret",
        ),
        (
            json!({"kind": "webhook", "url": "https://x.example/a", "secret": "plain"}),
            "secret",
        ),
        (
            json!({"kind": "slack", "url": "https://x.example/a", "convergeTimeout": "forever"}),
            "convergeTimeout",
        ),
    ] {
        let bad = s
            .post(&format!("{P}/channels"), body.clone())
            .await
            .expect(422);
        assert_eq!(
            bad.body["error"]["details"][0]["path"], path,
            "{body}: {}",
            bad.body
        );
    }
    let editor = s.token("ed", "editor", None).await;
    s.call(
        Method::POST,
        &format!("{P}/channels"),
        Some(&editor),
        Some(json!({"kind": "slack", "url": "https://x.example/a"})),
        &[],
    )
    .await
    .expect(403);

    let slack = channel(
        &s,
        json!({"kind": "slack", "name": "incidents", "url": format!("{base}/slack/{SLACK_TOKEN}")}),
    )
    .await;
    let teams = channel(&s, json!({"kind": "teams", "url": format!("{base}/teams")})).await;
    channel(
        &s,
        json!({"kind": "feishu", "url": format!("{base}/feishu"), "secret": FEISHU_SECRET}),
    )
    .await;
    channel(
        &s,
        json!({"kind": "dingtalk", "url": format!("{base}/dingtalk?access_token=abc"), "secret": DINGTALK_SECRET}),
    )
    .await;
    channel(
        &s,
        json!({"kind": "wecom", "url": format!("{base}/wecom?key=k1")}),
    )
    .await;
    channel(
        &s,
        json!({"kind": "webhook", "url": format!("{base}/webhook"), "secret": WEBHOOK_SECRET}),
    )
    .await;
    // The create was not announced (not a subscribed event): the kill switch is.
    let alice = s.token("alice", "responder", None).await;
    kill(&s, &alice).await;

    let got = r.wait_for(&format!("/slack/{SLACK_TOKEN}"), 1).await;
    let m = got[0].json();
    let text = m["text"].as_str().unwrap();
    for part in [
        "production",
        "Kill switch",
        "checkout disabled",
        "alice",
        "checkout 5xx spike",
        "v1 → v2",
        "/api/v1/environments/production/diff?from=1&to=2",
    ] {
        assert!(text.contains(part), "slack text has {part:?}: {text}");
    }
    let blocks = m["blocks"].to_string();
    assert!(
        blocks.contains("alice") && blocks.contains("v1 → v2"),
        "{m}"
    );

    let card = &r.wait_for("/teams", 1).await[0].json();
    assert_eq!(card["type"], "message");
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let content = &card["attachments"][0]["content"];
    assert_eq!(content["type"], "AdaptiveCard");
    assert_eq!(content["version"], "1.4");
    assert!(
        content.to_string().contains("checkout 5xx spike"),
        "{content}"
    );

    // Feishu: sign = base64(HMAC-SHA256(key = "timestamp\nsecret", message = "")).
    let f = r.wait_for("/feishu", 1).await[0].json();
    let ts = f["timestamp"].as_str().unwrap();
    assert!(ts.len() == 10, "seconds: {ts}");
    assert_eq!(
        f["sign"].as_str().unwrap(),
        hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b""),
        "{f}"
    );
    assert!(
        f["content"]["text"].as_str().unwrap().contains("alice"),
        "{f}"
    );

    // DingTalk: in the URL, timestamp (ms) and sign = base64(HMAC-SHA256(secret,
    // "timestamp\nsecret")), URL-encoded.
    let d = &r.wait_for("/dingtalk", 1).await[0];
    assert_eq!(d.query["access_token"], "abc");
    let ts = &d.query["timestamp"];
    assert!(ts.len() == 13, "milliseconds: {ts}");
    assert_eq!(
        d.query["sign"],
        hmac_b64(
            DINGTALK_SECRET.as_bytes(),
            format!("{ts}\n{DINGTALK_SECRET}").as_bytes()
        )
    );
    let dj = d.json();
    assert_eq!(dj["msgtype"], "markdown");
    assert!(
        dj["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains("checkout 5xx spike")
    );

    let w = r.wait_for("/wecom", 1).await[0].json();
    assert_eq!(w["msgtype"], "markdown");
    assert!(
        w["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("v1 → v2"),
        "{w}"
    );

    // Standard Webhooks: v1,base64(HMAC-SHA256(base64-decoded key, "id.timestamp.body")).
    let h = &r.wait_for("/webhook", 1).await[0];
    let id = h.headers["webhook-id"].to_str()?;
    let ts = h.headers["webhook-timestamp"].to_str()?;
    let key = BASE64.decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))?;
    assert_eq!(
        h.headers["webhook-signature"].to_str()?,
        format!(
            "v1,{}",
            hmac_b64(&key, format!("{id}.{ts}.{}", h.body).as_bytes())
        )
    );
    let hj = h.json();
    assert_eq!(hj["type"], "flagd.kill-switch");
    assert_eq!(hj["data"]["fromVersion"], 1);
    assert_eq!(hj["data"]["toVersion"], 2);
    assert_eq!(hj["data"]["who"], "alice");

    // The history says delivered, with the receiver's answer.
    let d = history_until(&s, &slack, |d| {
        d.first().is_some_and(|m| m["status"] == "delivered")
    })
    .await;
    assert_eq!(d[0]["event"], "kill-switch");
    assert_eq!(d[0]["attemptLog"][0]["status"], 200, "{d:?}");

    // Never a secret: not in the list, one channel, or the audit log.
    let list = s.get(&format!("{P}/channels")).await.expect(200).body;
    let one = s
        .get(&format!("{P}/channels/{teams}"))
        .await
        .expect(200)
        .body;
    let audit = s.get("/audit?action=channel.").await.expect(200).body;
    for text in [list.to_string(), one.to_string(), audit.to_string()] {
        for secret in [
            "slacksecretpart",
            FEISHU_SECRET,
            DINGTALK_SECRET,
            WEBHOOK_SECRET,
            "access_token=abc",
            "key=k1",
        ] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
    }
    let mine = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == slack.as_str())
        .unwrap();
    assert_eq!(mine["target"], format!("{base}/…9876"), "{mine}");
    assert_eq!(
        mine["events"],
        json!([
            "kill-switch",
            "revert",
            "undo",
            "automatic",
            "refused",
            "not-converged",
            "plan",
            "approval"
        ])
    );
    assert_eq!(mine["lastDelivery"]["status"], "delivered");

    // A test message, answered with the receiver's result.
    let t = s
        .post(&format!("{P}/channels/{teams}/test"), json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["status"], 200, "{t}");
    r.wait_for("/teams", 2).await;

    // Changed and deleted, audited.
    s.call(
        Method::PATCH,
        &format!("{P}/channels/{teams}"),
        Some(crate::support::ADMIN),
        Some(json!({"events": ["rollout"]})),
        &[],
    )
    .await
    .expect(200);
    s.call(
        Method::DELETE,
        &format!("{P}/channels/{teams}"),
        Some(crate::support::ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    s.get(&format!("{P}/channels/{teams}")).await.expect(404);
    let audit = s.get("/audit?action=channel.").await.expect(200).body;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        &actions[..2],
        ["channel.delete", "channel.update"],
        "{audit}"
    );
    s.stop().await
}

pub(crate) async fn large_revert_is_one_message(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    let set = |variant: &str| {
        let flags: serde_json::Map<String, Value> = (0..10_000)
            .map(|i| {
                (
                    format!("flag-{i}"),
                    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": variant}),
                )
            })
            .collect();
        json!({ "flags": flags })
    };
    s.put(&format!("{P}/flags"), set("off")).await.expect(200);
    s.put(&format!("{P}/flags"), set("on")).await.expect(200);
    let id = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/slack"), "events": ["revert"]}),
    )
    .await;
    s.post(
        &format!("{P}/revert"),
        json!({"version": 1, "reason": "bad release"}),
    )
    .await
    .expect(200);
    let got = r.wait_for("/slack", 1).await;
    let text = got[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("reverted to v1 (10000 flags changed)"),
        "{text}"
    );
    assert!(text.contains("v2 → v3"), "{text}");
    // The message and the channel's move past v3 are one transaction: one message.
    let d = history_until(&s, &id, |d| d.iter().any(|m| m["status"] == "delivered")).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(r.at("/slack").len(), 1);
    s.stop().await
}

pub(crate) async fn retries(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let r = Receiver::default();
    // Nothing listens there yet: connection refused.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let port = r.serve(0).await;
    let late = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{down}/late")}),
    )
    .await;
    r.on(
        "/busy",
        429,
        vec![("retry-after", "2".into())],
        "rate limited",
    );
    let busy = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/busy")}),
    )
    .await;
    r.on(
        "/feishu",
        200,
        Vec::new(),
        r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
    );
    let feishu = channel(
        &s,
        json!({"kind": "feishu", "url": format!("http://127.0.0.1:{port}/feishu"), "secret": FEISHU_SECRET}),
    )
    .await;
    kill(&s, crate::support::ADMIN).await;

    // Down: each attempt recorded with why; once it is up, delivered.
    history_until(&s, &late, |d| {
        d.first().is_some_and(|m| m["attempts"].as_u64() >= Some(2))
    })
    .await;
    r.serve(down).await;
    let d = history_until(&s, &late, |d| {
        d.first().is_some_and(|m| m["status"] == "delivered")
    })
    .await;
    let log = d[0]["attemptLog"].as_array().unwrap();
    assert!(log.len() >= 3, "{log:?}");
    assert_eq!(log[0]["ok"], false);
    assert!(
        log[0]["error"].as_str().unwrap().contains("onnect"),
        "{log:?}"
    );
    assert_eq!(log.last().unwrap()["ok"], true);
    assert_eq!(r.at("/late").len(), 1);

    // 429 with Retry-After: 2 s, though the backoff would have been 100 ms.
    let d = history_until(&s, &busy, |d| {
        d.first().is_some_and(|m| m["status"] == "delivered")
    })
    .await;
    let log = d[0]["attemptLog"].as_array().unwrap();
    assert_eq!(log[0]["status"], 429, "{log:?}");
    assert_eq!(log[0]["body"], "rate limited");
    assert_eq!(log[1]["ok"], true);
    let waited = log[1]["atMs"].as_i64().unwrap() - log[0]["atMs"].as_i64().unwrap();
    assert!(waited >= 2_000, "waited {waited} ms");

    // Feishu's 200 with a non-zero code is a failure, with its answer.
    let d = history_until(&s, &feishu, |d| {
        d.first().is_some_and(|m| m["status"] == "delivered")
    })
    .await;
    let log = d[0]["attemptLog"].as_array().unwrap();
    assert_eq!(log[0]["ok"], false, "{log:?}");
    assert_eq!(log[0]["status"], 200);
    assert!(
        log[0]["error"].as_str().unwrap().contains("19021"),
        "{log:?}"
    );
    assert!(log[0]["body"].as_str().unwrap().contains("sign match fail"));
    assert_eq!(log[1]["ok"], true);
    s.stop().await
}

pub(crate) async fn private_addresses_are_refused(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let literal = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/a")}),
    )
    .await;
    let named = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://localhost:{port}/b")}),
    )
    .await;
    kill(&s, crate::support::ADMIN).await;
    for id in [literal, named] {
        let d = history_until(&s, &id, |d| {
            d.first().is_some_and(|m| m["status"] == "failed")
        })
        .await;
        let error = d[0]["attemptLog"][0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("refused") && error.contains("--notify-allow-private-addresses"),
            "{d:?}"
        );
        // Refused for good: not retried.
        assert_eq!(d[0]["attempts"], 1, "{d:?}");
    }
    assert!(r.got.lock().unwrap().is_empty());
    s.stop().await
}

pub(crate) async fn outbox_survives_a_restart(b: Backend) -> anyhow::Result<()> {
    let (url, _file) = b.database().await?;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let s = Server::start_on(&url, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let id = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{down}/later")}),
    )
    .await;
    kill(&s, crate::support::ADMIN).await;
    history_until(&s, &id, |d| {
        d.first().is_some_and(|m| m["attempts"].as_u64() >= Some(1))
    })
    .await;
    s.stop().await?;

    let r = Receiver::default();
    r.serve(down).await;
    let s = Server::start_on(&url, options()).await?;
    let got = r.wait_for("/later", 1).await;
    assert!(
        got[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("checkout disabled")
    );
    let d = history_until(&s, &id, |d| {
        d.first().is_some_and(|m| m["status"] == "delivered")
    })
    .await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["attemptLog"][0]["ok"], false);
    s.stop().await
}

pub(crate) async fn follow_up_counts_the_fleet(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let key = sdk_key(&s, "production").await;
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let sdk = flagd_sdk::Client::builder(root, key)
        .host("web-1")
        .build()
        .await?;
    channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/slack")}),
    )
    .await;
    kill(&s, crate::support::ADMIN).await;
    let got = r.wait_for("/slack", 2).await;
    let first = got[0].json()["text"].as_str().unwrap().to_owned();
    let second = got[1].json()["text"].as_str().unwrap().to_owned();
    assert!(first.contains("Kill switch"), "{first}");
    assert!(
        second.contains("v2 applied by 1/1 SDK instances in"),
        "{second}"
    );
    sdk.close();
    s.stop().await
}

/// One SDK applies the kill switch, one instance (a raw stream client that reads every
/// frame and never acknowledges) does not: past the channel's `convergeTimeout`, the
/// follow-up names the laggard, not the instance that applied it.
pub(crate) async fn follow_up_names_the_laggards(b: Backend) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;

    let s = Server::start_with(&b, options()).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let key = sdk_key(&s, "production").await;
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let sdk = flagd_sdk::Client::builder(root, key.clone())
        .host("web-1")
        .build()
        .await?;
    let mut frozen = crate::stream::connect(&s, &key).await?;
    crate::stream::hello(&mut frozen, "frozen-1", None).await?;
    assert_eq!(crate::stream::next(&mut frozen).await?["type"], "snapshot");
    crate::stream::ack(&mut frozen, 1).await?;
    // Read on, so that flagd never drops it as a stalled client: it stays connected,
    // just never acknowledges.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = frozen.next().await {} });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let f = s.get(&format!("{P}/fleet")).await.expect(200).body;
        if f["total"] == 2 && f["onVersion"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{f}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/slack"),
               "events": ["kill-switch", "not-converged"], "convergeTimeout": "1s"}),
    )
    .await;
    kill(&s, crate::support::ADMIN).await;

    let got = r.wait_for("/slack", 2).await;
    let first = got[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let second = got[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(first.contains("Kill switch"), "{first}");
    assert!(
        second.contains("after 1s, 1 of 2 SDK instances have not applied v2"),
        "{second}"
    );
    assert!(second.contains("frozen-1 (on v1)"), "{second}");
    assert!(!second.contains("web-1"), "web-1 applied v2: {second}");
    let d = history_until(&s, &id, |d| {
        d.len() == 2 && d.iter().all(|m| m["status"] == "delivered")
    })
    .await;
    assert_eq!(d[0]["event"], "not-converged", "{d:#?}");
    assert_eq!(d[1]["event"], "kill-switch", "{d:#?}");
    reader.abort();
    sdk.close();
    s.stop().await
}

/// The channels of a protected environment hear of its change requests (event
/// `approval`, on by default) and its break-glass kill switches, named after the people.
pub(crate) async fn change_requests_are_announced(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    let r = Receiver::default();
    let port = r.serve(0).await;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(5))
        .await
        .expect(201);
    channel(
        &s,
        json!({"kind": "slack", "url": format!("http://127.0.0.1:{port}/slack")}),
    )
    .await;
    s.put(
        &format!("{P}/approval-policy"),
        json!({"protected": true, "approvals": 1}),
    )
    .await
    .expect(200);
    let alice = crate::people::person(&s, "alice", "editor").await;
    let bob = crate::people::person(&s, "bob", "editor").await;
    let made = alice
        .call(
            &s,
            Method::POST,
            &format!("{P}/change-requests"),
            Some(json!({"title": "checkout to 50%", "change": {"flags": {"checkout": rollout_flag(50)}}})),
        )
        .await
        .expect(201);
    let id = made.body["request"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    bob.call(
        &s,
        Method::POST,
        &format!("{P}/change-requests/{id}/approve"),
        Some(json!({})),
    )
    .await
    .expect(200);
    let got = r.wait_for("/slack", 2).await;
    let texts: Vec<String> = got
        .iter()
        .map(|g| g.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts[0].contains("alice proposes: checkout to 50%"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("approved by bob")),
        "{texts:?}"
    );
    s.stop().await
}
