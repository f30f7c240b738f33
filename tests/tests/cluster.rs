//! flagd as a horizontally scaled service: replicas as separate `flagd` processes on one
//! PostgreSQL and one Redis (all real, started here on loopback), real SDKs spread across
//! them, and the faults a deployment meets: Redis killed and restarted empty, a replica
//! killed with SIGKILL, PostgreSQL restarted, two replicas racing on one environment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flagd_harness::{ADMIN_TOKEN, Binary, FlagdProcess, Postgres, Redis, flagctl_binary};
use flagd_sdk::{Client, EvaluationContext};
use serde_json::{Value, json};

/// How long anything that should converge may take before the test fails (a bound for
/// a broken build, not a measurement).
const CONVERGE: Duration = Duration::from_secs(20);

struct Deployment {
    pg: Postgres,
    redis: Option<Redis>,
    db: String,
}

impl Deployment {
    async fn start(with_redis: bool) -> Option<Self> {
        let pg = Postgres::start_or_skip("replicas are not tested")?;
        let redis = if with_redis {
            Some(Redis::start_or_skip("replicas with Redis are not tested")?)
        } else {
            None
        };
        let db = pg.database().await.unwrap();
        Some(Self { pg, redis, db })
    }

    /// A replica named `name`, comparing its heads with the store's every `follow`.
    fn replica(&self, name: &str, follow: &str) -> FlagdProcess {
        self.replica_with(name, follow, &[])
    }

    /// [`Deployment::replica`] with more arguments.
    fn replica_with(&self, name: &str, follow: &str, args: &[&str]) -> FlagdProcess {
        let mut b = Binary::new()
            .database_url(self.db.clone())
            .args(["--replica-name", name, "--follow-interval", follow])
            .args(args);
        if let Some(r) = &self.redis {
            b = b.args(["--redis-url", &r.url()]);
        }
        b.start()
    }
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ok(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = call(base, method, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

fn flag(state: &str) -> Value {
    json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": "on"})
}

/// Sets up `production` with `new-checkout` on and returns an SDK key.
async fn seed(base: &str) -> String {
    ok(
        base,
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        Some(flag("ENABLED")),
    )
    .await;
    ok(
        base,
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        Some(json!({})),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn toggle(base: &str, on: bool, reason: &str) -> u64 {
    let action = if on { "enable" } else { "disable" };
    ok(
        base,
        reqwest::Method::POST,
        &format!("/environments/production/flags/new-checkout/{action}"),
        Some(json!({ "reason": reason })),
    )
    .await["version"]
        .as_u64()
        .unwrap()
}

async fn sdk(urls: &[String], key: &str, name: &str) -> Client {
    let mut b = Client::builder(urls[0].clone(), key).host(name);
    for u in &urls[1..] {
        b = b.fallback_url(u.clone());
    }
    b.wait_for_first_snapshot(Duration::from_secs(10))
        .max_backoff(Duration::from_millis(500))
        .build()
        .await
        .unwrap()
}

/// Waits until every SDK holds `version`; returns how long it took.
async fn converge(sdks: &[Client], version: u64, what: &str) -> Duration {
    let start = Instant::now();
    while sdks.iter().any(|s| s.version() < version) {
        let behind: Vec<u64> = sdks.iter().map(Client::version).collect();
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: SDKs at {behind:?}, not all at {version}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// The fleet through one replica, once every instance it lists is on `version`.
async fn fleet_on(base: &str, version: u64, expected: usize) -> Value {
    let start = Instant::now();
    loop {
        let f = ok(
            base,
            reqwest::Method::GET,
            "/environments/production/fleet",
            None,
        )
        .await;
        if f["total"] == expected && f["onVersion"] == expected && f["version"] == version {
            return f;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "fleet through {base} never converged on {version}: {f}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The version numbers in production's history (the last 100).
async fn history(base: &str) -> Vec<u64> {
    let versions = ok(
        base,
        reqwest::Method::GET,
        "/environments/production/versions?limit=100",
        None,
    )
    .await;
    versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// A metric's value on one replica.
async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn subscribed(base: &str) {
    let start = Instant::now();
    while metric(base, "flagd_redis_subscribed").await != Some(1.0) {
        assert!(
            start.elapsed() < CONVERGE,
            "{base} never subscribed to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_changes_the_fleet_and_wait() {
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    // A follow interval so long that only Redis can bring a change in time.
    let replicas: Vec<FlagdProcess> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| d.replica(n, "1h"))
        .collect();
    let bases: Vec<String> = replicas.iter().map(FlagdProcess::base).collect();
    for b in &bases {
        subscribed(b).await;
    }
    let key = seed(&bases[0]).await;
    let mut sdks = Vec::new();
    for (i, b) in bases.iter().enumerate() {
        for j in 0..2 {
            sdks.push(sdk(std::slice::from_ref(b), &key, &format!("app-{i}-{j}")).await);
        }
    }
    let user = EvaluationContext::new("u");
    // A change through each replica reaches every instance, on every replica.
    let mut on = true;
    for (i, b) in bases.iter().enumerate() {
        on = !on;
        let v = toggle(b, on, &format!("through r{}", i + 1)).await;
        let took = converge(&sdks, v, &format!("a change through r{}", i + 1)).await;
        println!(
            "through r{}: every SDK had version {v} after {took:?}",
            i + 1
        );
        assert!(sdks.iter().all(|s| s.enabled("new-checkout", &user) == on));
    }
    // The fleet through any replica: six instances, each once, each with its replica.
    let head = sdks[0].version();
    for b in &bases {
        let f = fleet_on(b, head, 6).await;
        let instances = f["instances"].as_array().unwrap();
        let mut ids: Vec<&str> = instances
            .iter()
            .map(|i| i["instance"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 6, "{f}");
        for r in ["r1", "r2", "r3"] {
            assert_eq!(
                instances.iter().filter(|i| i["replica"] == r).count(),
                2,
                "two instances on {r}: {f}"
            );
        }
    }
    // flagctl --wait through one replica waits for the instances of all three.
    let out = tokio::process::Command::new(flagctl_binary())
        .args([
            "--url",
            &bases[2],
            "-e",
            "production",
            "disable",
            "new-checkout",
        ])
        .args([
            "--reason",
            "incident: waited for through r3",
            "--wait",
            "--timeout",
            "20s",
        ])
        .env("FLAGD_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 6 SDK instances applied"), "{stdout}");
    // When --wait returned, every SDK had it: their acks are what it waited for.
    let v = ok(
        &bases[0],
        reqwest::Method::GET,
        "/environments/production",
        None,
    )
    .await["version"]
        .as_u64()
        .unwrap();
    assert!(
        sdks.iter()
            .all(|s| s.version() == v && !s.enabled("new-checkout", &user))
    );
    for s in &sdks {
        s.close();
    }
}

/// What a stream sent: the frame's type, the version it starts from (0 for a snapshot)
/// and the version it brings.
type Frame = (&'static str, u64, u64);

/// A raw protocol client on one replica that records every frame's versions: a stream
/// must go from version to version with no gap and no repeat.
async fn recorder(
    base: &str,
    key: &str,
) -> (
    Arc<std::sync::Mutex<Vec<Frame>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let url = format!("{}/api/v1/stream", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = json!({"type": "hello", "instance": "recorder", "sdk": "test", "host": "test", "labels": {}});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = frames.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            let version = v["version"].as_u64();
            match v["type"].as_str() {
                Some("snapshot") => keep.lock().unwrap().push(("snapshot", 0, version.unwrap())),
                // A restore says "version N is version K again": from what it holds.
                Some("restore") => keep.lock().unwrap().push((
                    "restore",
                    v["from"].as_u64().unwrap(),
                    version.unwrap(),
                )),
                Some("delta") => keep.lock().unwrap().push((
                    "delta",
                    v["from"].as_u64().unwrap(),
                    version.unwrap(),
                )),
                Some("ping") => {
                    let _ = ws
                        .send(Message::Text(json!({"type": "pong"}).to_string().into()))
                        .await;
                    continue;
                }
                _ => continue,
            }
            let ack = json!({"type": "ack", "version": version});
            let _ = ws.send(Message::Text(ack.to_string().into())).await;
        }
    });
    (frames, task)
}

fn assert_continuous(frames: &[Frame], head: u64) {
    let mut held = 0;
    for &(_, from, version) in frames {
        if from != 0 {
            assert_eq!(
                from, held,
                "a delta from {from} to {version} while holding {held}: {frames:?}"
            );
        }
        assert!(
            version > held || (from == 0 && version == held),
            "version {version} again: {frames:?}"
        );
        held = version;
    }
    assert_eq!(held, head, "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_back_and_restarted_empty() {
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    let a = d.replica("a", "500ms");
    let b = d.replica("b", "500ms");
    subscribed(&a.base()).await;
    subscribed(&b.base()).await;
    let key = seed(&a.base()).await;
    let sdks = vec![sdk(&[a.base()], &key, "on-a").await];
    let (frames, task) = recorder(&a.base(), &key).await;
    let v = toggle(&b.base(), false, "with Redis").await;
    converge(&sdks, v, "through B with Redis").await;

    // Redis gone: the change still arrives, from the store, within the interval.
    let redis = d.redis.as_ref().unwrap();
    redis.kill();
    let lost = Instant::now();
    let v = toggle(&b.base(), true, "Redis is down").await;
    let took = converge(&sdks, v, "through B with Redis down").await;
    println!(
        "Redis down: the change arrived {took:?} after its commit, {:?} after Redis died",
        lost.elapsed()
    );
    let v = toggle(&b.base(), false, "Redis is still down").await;
    converge(&sdks, v, "a second change with Redis down").await;

    // Redis back, empty (no persistence): pushed again, nothing repeated or missed.
    redis.resume().unwrap();
    subscribed(&a.base()).await;
    subscribed(&b.base()).await;
    let mut head = v;
    for i in 0..5 {
        head = toggle(&b.base(), i % 2 == 0, "Redis is back").await;
    }
    converge(&sdks, head, "through B with Redis back").await;
    // A revert through B reaches A's streams as the compact restore frame, as it does
    // B's own: not as a delta of every flag. The recorder is a stream of its own: it
    // has the last toggle before the revert is counted from there.
    let start = Instant::now();
    while frames.lock().unwrap().last().map(|f| f.2) != Some(head) {
        assert!(start.elapsed() < CONVERGE, "the recorder never got {head}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_revert = frames.lock().unwrap().len();
    head = ok(
        &b.base(),
        reqwest::Method::POST,
        "/environments/production/revert",
        Some(json!({"version": head - 1, "reason": "back to the version before"})),
    )
    .await["version"]
        .as_u64()
        .unwrap();
    converge(&sdks, head, "a revert through B").await;
    // The fleet never lived in Redis: the restarted one holds nothing flagd trusts.
    let f = fleet_on(&b.base(), head, 2).await;
    assert_eq!(f["connected"], 2, "{f}");
    let start = Instant::now();
    while frames.lock().unwrap().last().map(|f| f.2) != Some(head) {
        assert!(start.elapsed() < CONVERGE, "the recorder never got {head}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_continuous(&frames.lock().unwrap(), head);
    let kinds: Vec<&str> = frames.lock().unwrap()[before_revert..]
        .iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(kinds, ["restore"], "{:?}", frames.lock().unwrap());
    task.abort();
    for s in &sdks {
        s.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_sdks_fail_over_without_a_failed_evaluation() {
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    let mut replicas: Vec<Option<FlagdProcess>> = ["k1", "k2", "k3"]
        .iter()
        .map(|n| Some(d.replica(n, "500ms")))
        .collect();
    let bases: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().base())
        .collect();
    for b in &bases {
        subscribed(b).await;
    }
    let key = seed(&bases[0]).await;
    // Each SDK prefers one replica and knows the other two.
    let mut sdks = Vec::new();
    for i in 0..6 {
        let urls: Vec<String> = (0..3).map(|k| bases[(i + k) % 3].clone()).collect();
        sdks.push(sdk(&urls, &key, &format!("app-{i}")).await);
    }
    let v = toggle(&bases[1], true, "before").await;
    converge(&sdks, v, "before the kill").await;

    // Every SDK evaluates without pause while a replica dies.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let evaluators: Vec<_> = sdks
        .iter()
        .cloned()
        .map(|s| {
            let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
            std::thread::spawn(move || {
                let user = EvaluationContext::new("u");
                while !stop.load(Ordering::Relaxed) {
                    let ok = s.with_detail("new-checkout", &user, |d| {
                        d.reason != flagd_sdk::Reason::Error && d.error_code.is_none()
                    });
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    let killed = replicas[0].take().unwrap();
    killed.kill();
    let died = Instant::now();
    let v = toggle(&bases[1], false, "after the kill").await;
    let took = converge(&sdks, v, "after k1 was killed").await;
    println!(
        "k1 killed: every SDK (two of them moved) on version {v} {:?} after the kill ({took:?} after the commit)",
        died.elapsed()
    );
    let f = fleet_on(&bases[2], v, 6).await;
    let instances = f["instances"].as_array().unwrap();
    assert!(
        instances
            .iter()
            .all(|i| i["replica"] != "k1" && i["state"] == "connected"),
        "{f}"
    );
    stop.store(true, Ordering::Relaxed);
    for e in evaluators {
        e.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "evaluations failed during the failover"
    );
    for s in &sdks {
        s.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_replicas() {
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    let a = d.replica("pa", "500ms");
    let b = d.replica("pb", "500ms");
    let key = seed(&a.base()).await;
    let sdks = vec![
        sdk(&[a.base()], &key, "on-a").await,
        sdk(&[b.base()], &key, "on-b").await,
    ];
    let mut acknowledged = vec![toggle(&a.base(), false, "before").await];
    converge(&sdks, acknowledged[0], "before the restart").await;

    // A service evaluating remotely through B, before and while the store is down.
    let ofrep = || async {
        let r = reqwest::Client::new()
            .post(format!("{}/ofrep/v1/evaluate/flags/new-checkout", b.base()))
            .bearer_auth(&key)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(ofrep().await, (200, ofrep().await.1));
    d.pg.stop();
    let (status, body) = call(
        &b.base(),
        reqwest::Method::POST,
        "/environments/production/flags/new-checkout/enable",
        Some(json!({"reason": "while PostgreSQL is down"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // What the replicas hold is still served: the SDKs and remote evaluation.
    let user = EvaluationContext::new("u");
    assert!(sdks.iter().all(|s| !s.enabled("new-checkout", &user)));
    for _ in 0..3 {
        let (status, body) = ofrep().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reason"], "DISABLED", "the kill switch held: {body}");
        // Past the head's recheck interval: still served while the store is down.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    d.pg.resume().unwrap();
    let start = Instant::now();
    loop {
        let (status, body) = call(
            &b.base(),
            reqwest::Method::POST,
            "/environments/production/flags/new-checkout/enable",
            Some(json!({"reason": "PostgreSQL is back"})),
        )
        .await;
        if status == 200 || status == 201 {
            acknowledged.push(body["version"].as_u64().unwrap());
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(start.elapsed() < CONVERGE, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acknowledged.push(toggle(&a.base(), false, "and through A").await);
    let head = *acknowledged.last().unwrap();
    converge(&sdks, head, "after the restart").await;
    // Every acknowledged write is in the history.
    let held = history(&a.base()).await;
    for v in &acknowledged {
        assert!(held.contains(v), "acknowledged version {v} lost: {held:?}");
    }
    for s in &sdks {
        s.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_with_if_match() {
    let Some(d) = Deployment::start(false).await else {
        return;
    };
    let a = d.replica("ia", "500ms");
    let b = d.replica("ib", "500ms");
    seed(&a.base()).await;
    let client = reqwest::Client::new();
    let mut won = Vec::new();
    for round in 0..20 {
        let head = ok(
            &a.base(),
            reqwest::Method::GET,
            "/environments/production",
            None,
        )
        .await["version"]
            .as_u64()
            .unwrap();
        let put = |base: String, who: &str| {
            // Different from each other and from the head: neither is a no-op.
            let body = json!({"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "on", "metadata": {"writer": format!("{who}-{round}")}});
            client
                .put(format!("{base}/api/v1/environments/production/flags/raced"))
                .bearer_auth(ADMIN_TOKEN)
                .header("If-Match", head.to_string())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        };
        let (ra, rb) = tokio::join!(put(a.base(), "a"), put(b.base(), "b"));
        let statuses = [ra.unwrap(), rb.unwrap()];
        let mut winners = 0;
        for r in statuses {
            match r.status().as_u16() {
                200 | 201 => {
                    winners += 1;
                    won.push(
                        r.json::<Value>().await.unwrap()["version"]
                            .as_u64()
                            .unwrap(),
                    );
                }
                409 => {}
                other => panic!("round {round}: {other}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one of two racers wins");
    }
    let mut all = history(&b.base()).await;
    all.sort_unstable();
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>(), "gapless");
    for v in &won {
        assert!(all.contains(v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_replica_is_refused_by_every_replica() {
    let Some(d) = Deployment::start(false).await else {
        return;
    };
    let a = d.replica("va", "500ms");
    let b = d.replica("vb", "500ms");
    seed(&a.base()).await;
    let made = ok(
        &a.base(),
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        Some(json!({})),
    )
    .await;
    let (id, key) = (
        made["sdkKey"]["id"].as_str().unwrap(),
        made["secret"].as_str().unwrap(),
    );
    let on_b = sdk(&[b.base()], key, "on-b").await;
    let evaluate = || async {
        reqwest::Client::new()
            .post(format!("{}/ofrep/v1/evaluate/flags/new-checkout", b.base()))
            .bearer_auth(key)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // B has checked the key and holds it.
    assert_eq!(evaluate().await, 200);
    ok(
        &a.base(),
        reqwest::Method::DELETE,
        &format!("/tokens/{id}"),
        None,
    )
    .await;
    let revoked = Instant::now();
    while evaluate().await != 401 {
        assert!(
            revoked.elapsed() < CONVERGE,
            "B still accepts the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = revoked.elapsed();
    // B closed the stream of the revoked key, and its fleet forgot the instance.
    while matches!(on_b.status(), flagd_sdk::Status::Ready { .. }) {
        assert!(
            revoked.elapsed() < CONVERGE,
            "B kept the revoked key's stream open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "revoked through A: refused by B after {refused_after:?}, its stream closed after {:?}",
        revoked.elapsed()
    );
    // A new stream with the key is refused by B too (its memory of checked keys was
    // emptied by the revocation).
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/api/v1/stream", b.base().replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("B let the revoked key stream: {:?}", other.map(|_| ())),
        }
    }
    // And the fleet through A, from B's next report.
    loop {
        let f = ok(
            &a.base(),
            reqwest::Method::GET,
            "/environments/production/fleet",
            None,
        )
        .await;
        if f["total"] == 0 {
            break;
        }
        assert!(
            revoked.elapsed() < CONVERGE,
            "the revoked key's instance stayed: {f}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    on_b.close();
}

/// Where Debian puts nginx (`.ci/test` installs `nginx-light`).
const NGINX: &str = "/usr/sbin/nginx";

/// `examples/deploy/nginx.conf` itself, with the ports of this test's replicas and load
/// balancer, run by a real nginx; stopped when dropped.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(replicas: &[u16]) -> Self {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy/nginx.conf");
        let mut conf = std::fs::read_to_string(&example).unwrap();
        let port = flagd_harness::free_port();
        assert!(
            conf.contains("listen 127.0.0.1:8080;"),
            "the example listens on 8080"
        );
        conf = conf.replace(
            "listen 127.0.0.1:8080;",
            &format!("listen 127.0.0.1:{port};"),
        );
        for (i, p) in replicas.iter().enumerate() {
            let example_port = format!("127.0.0.1:{}", 8081 + i);
            assert!(
                conf.contains(&example_port),
                "the example has replica {example_port}"
            );
            conf = conf.replace(&example_port, &format!("127.0.0.1:{p}"));
        }
        let dir = tempfile::tempdir().unwrap();
        // Its scratch files in the test's directory, not /var/lib/nginx (which only root
        // may write): the rest of the file is the example's.
        let d = dir.path().display();
        conf = conf.replacen(
            "http {",
            &format!(
                "http {{\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
            ),
            1,
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(NGINX)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .args(["-g", "daemon off;"])
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < CONVERGE, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            _dir: dir,
            port,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them running).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn flagctl(base: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(flagctl_binary())
        .args(["--url", base, "-e", "production"])
        .args(args)
        .env("FLAGD_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_deployment_behind_nginx() {
    if !std::path::Path::new(NGINX).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is not installed; .ci/test installs nginx-light"
        );
        println!(
            "nginx is not installed, so the example deployment is not tested (apt-get install nginx-light)"
        );
        return;
    }
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy");
    // The systemd unit's command line and the environment file are flagd's own flags
    // and variables: `check-config` reads them (with this test's store and Redis).
    let unit = std::fs::read_to_string(deploy.join("flagd@.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec.contains("--listen 127.0.0.1:%i"), "{exec}");
    // The harness gives the listen address itself: the rest is checked as written.
    let words: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|w| w.replace("%i", "8081").replace("%H", "host"))
        .collect();
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for w in words {
        match w.as_str() {
            "serve" => {}
            "--listen" => skip = true,
            _ if skip => skip = false,
            _ => args.push(w),
        }
    }
    let mut check = Binary::new()
        .database_url(d.db.clone())
        .args(&args)
        .arg("check-config");
    for line in std::fs::read_to_string(deploy.join("flagd.env"))
        .unwrap()
        .lines()
    {
        if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let v = match k {
                "FLAGD_DATABASE_URL" => d.db.clone(),
                "FLAGD_REDIS_URL" => d.redis.as_ref().unwrap().url(),
                _ => v.to_owned(),
            };
            check = check.env(k, v);
        }
    }
    let out = check.output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut replicas: Vec<Option<FlagdProcess>> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Some(d.replica(n, "1s")))
        .collect();
    let ports: Vec<u16> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().port())
        .collect();
    let lb = Nginx::start(&ports);
    let key = seed(&lb.base()).await;
    // Each SDK knows one URL: the load balancer's.
    let sdks = vec![
        sdk(&[lb.base()], &key, "lb-1").await,
        sdk(&[lb.base()], &key, "lb-2").await,
        sdk(&[lb.base()], &key, "lb-3").await,
    ];
    let (done, text) = flagctl(
        &lb.base(),
        &[
            "disable",
            "new-checkout",
            "--reason",
            "through nginx",
            "--wait",
            "--timeout",
            "20s",
        ],
    )
    .await;
    assert!(
        done && text.contains("all 3 SDK instances applied"),
        "{text}"
    );

    // A replica dies: the load balancer routes around it, SDKs reconnect through it,
    // and the responder's flagctl keeps working.
    replicas[0].take().unwrap().kill();
    for (i, on) in [true, false, true].into_iter().enumerate() {
        let action = if on { "enable" } else { "disable" };
        let (done, text) = flagctl(
            &lb.base(),
            &[
                action,
                "new-checkout",
                "--reason",
                &format!("after the kill, {i}"),
            ],
        )
        .await;
        assert!(done, "flagctl through nginx after a replica died: {text}");
    }
    let head = ok(
        &lb.base(),
        reqwest::Method::GET,
        "/environments/production",
        None,
    )
    .await["version"]
        .as_u64()
        .unwrap();
    converge(&sdks, head, "through nginx after a replica died").await;
    let f = fleet_on(&lb.base(), head, 3).await;
    assert!(
        f["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["replica"] != "n1"),
        "{f}"
    );
    let (done, text) = flagctl(&lb.base(), &["wait", "--timeout", "20s"]).await;
    assert!(done, "{text}");
    for s in &sdks {
        s.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_an_unfollowed_remote_one_goes_out_as_one_delta() {
    let Some(d) = Deployment::start(false).await else {
        return;
    };
    // Neither replica looks at the store on its own: A learns of B's change only from
    // its own next commit, which finds the gap.
    let a = d.replica("ga", "1h");
    let b = d.replica("gb", "1h");
    let key = seed(&a.base()).await;
    let on_a = sdk(&[a.base()], &key, "on-a").await;
    let (frames, task) = recorder(&a.base(), &key).await;
    let start = Instant::now();
    while frames.lock().unwrap().is_empty() {
        assert!(start.elapsed() < CONVERGE, "the recorder got no snapshot");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let remote = toggle(&b.base(), false, "through B, unannounced").await;
    let local = ok(
        &a.base(),
        reqwest::Method::PUT,
        "/environments/production/flags/other",
        Some(flag("ENABLED")),
    )
    .await["version"]
        .as_u64()
        .unwrap();
    assert_eq!(local, remote + 1);
    converge(
        std::slice::from_ref(&on_a),
        local,
        "A's own commit after B's",
    )
    .await;
    let user = EvaluationContext::new("u");
    assert!(!on_a.enabled("new-checkout", &user), "B's change is in it");
    assert!(on_a.enabled("other", &user), "A's change is in it");
    let start = Instant::now();
    while frames.lock().unwrap().last().map(|f| f.2) != Some(local) {
        assert!(start.elapsed() < CONVERGE, "the recorder never got {local}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames = frames.lock().unwrap().clone();
    assert_eq!(
        frames[1..],
        [("delta", remote - 1, local)],
        "one delta over both versions, not a snapshot: {frames:?}"
    );
    task.abort();
    on_a.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_through_one_replica_ends_the_ui_stream_on_another() {
    let Some(d) = Deployment::start(false).await else {
        return;
    };
    let a = d.replica("sa", "500ms");
    let b = d.replica("sb", "500ms");
    let http = reqwest::Client::new();
    let signed_in = http
        .post(format!("{}/api/v1/session", a.base()))
        .json(&json!({ "token": ADMIN_TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let csrf = signed_in.json::<Value>().await.unwrap()["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    // The page's live events come from replica B.
    let mut events = http
        .get(format!("{}/api/v1/events", b.base()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    // Signed out through A.
    let out = http
        .delete(format!("{}/api/v1/session", a.base()))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    let ended = tokio::time::timeout(CONVERGE, async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "B kept the signed-out session's event stream open"
    );
    let r = http
        .get(format!("{}/api/v1/events", b.base()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "B refuses the ended session");
}

/// What a Standard Webhooks receiver got: each request's `webhook-id` (one per outbox
/// message, the same on a retry) and its JSON body, as it arrived.
type Webhooks = Arc<std::sync::Mutex<Vec<(String, Value)>>>;

async fn webhook_receiver() -> (String, Webhooks) {
    let got = Webhooks::default();
    let keep = got.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let keep = keep.clone();
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = serde_json::from_str(&body).unwrap_or(Value::Null);
            keep.lock().unwrap().push((id, body));
            // Slower than a replica's poll of the outbox (500 ms): while one replica
            // sends, the other looks at least once, and must leave it alone.
            tokio::time::sleep(Duration::from_millis(700)).await;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Two replicas, each sending notifications, on one PostgreSQL: changes made through
/// both, alternately, are announced once in all (each version in exactly one message,
/// no message sent twice), and each message's follow-up ("applied by N/N") once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_announce_each_version_once() {
    const CHANGES: u64 = 6;
    let Some(d) = Deployment::start(false).await else {
        return;
    };
    let replicas: Vec<FlagdProcess> = ["r1", "r2"]
        .iter()
        .map(|n| d.replica_with(n, "200ms", &["--notify-allow-private-addresses"]))
        .collect();
    let bases: Vec<String> = replicas.iter().map(FlagdProcess::base).collect();
    let key = seed(&bases[0]).await;
    // An SDK on each replica: the follow-up counts the instances of both.
    let mut sdks = Vec::new();
    for (i, b) in bases.iter().enumerate() {
        sdks.push(sdk(std::slice::from_ref(b), &key, &format!("app-{i}")).await);
    }
    let (url, got) = webhook_receiver().await;
    ok(
        &bases[0],
        reqwest::Method::POST,
        "/environments/production/channels",
        Some(json!({"kind": "webhook", "url": url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
    )
    .await;
    let mut versions = Vec::new();
    for i in 0..CHANGES {
        let through = &bases[usize::from(i % 2 == 1)];
        let v = toggle(through, i % 2 == 1, &format!("change {i}")).await;
        versions.push(v);
        converge(&sdks, v, &format!("change {i}")).await;
    }
    let last = *versions.last().unwrap();

    // Until the last version is announced and followed up.
    let announced = |got: &[(String, Value)]| -> Vec<(u64, u64)> {
        got.iter()
            .filter(|(_, b)| b["type"] == "flagd.kill-switch")
            .map(|(_, b)| {
                (
                    b["data"]["fromVersion"].as_u64().unwrap_or(0),
                    b["data"]["toVersion"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let followed = |got: &[(String, Value)]| -> Vec<u64> {
        got.iter()
            .filter(|(_, b)| b["type"] == "flagd.applied")
            .map(|(_, b)| b["data"]["toVersion"].as_u64().unwrap_or(0))
            .collect()
    };
    let start = Instant::now();
    loop {
        let g = got.lock().unwrap().clone();
        if announced(&g).iter().any(|(_, to)| *to == last) && followed(&g).contains(&last) {
            break;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "v{last} never announced and followed up: {g:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing more comes, for a few seconds more (longer than both replicas' poll
    // interval and a retry's backoff): a duplicate would arrive within that.
    let settled = got.lock().unwrap().len();
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(4) {
        let n = got.lock().unwrap().len();
        assert_eq!(n, settled, "more came: {:#?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let g = got.lock().unwrap().clone();
    let mut ids: Vec<&str> = g.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), g.len(), "a message was sent twice: {g:#?}");
    // Every version in exactly one message: the messages' ranges, in order, tile
    // (first - 1, last] with no gap and no overlap.
    let mut ranges = announced(&g);
    ranges.sort_unstable();
    let mut at = versions[0] - 1;
    for (from, to) in &ranges {
        assert_eq!(
            *from, at,
            "versions {at}..{from} missing or repeated: {ranges:?}"
        );
        assert!(to > from, "{ranges:?}");
        at = *to;
    }
    assert_eq!(at, last, "{ranges:?}");
    // One follow-up per message, naming its last version, and counting both SDKs.
    let mut follow_ups = followed(&g);
    follow_ups.sort_unstable();
    let tos: Vec<u64> = ranges.iter().map(|(_, to)| *to).collect();
    assert_eq!(follow_ups, tos, "{g:#?}");
    for (_, b) in g.iter().filter(|(_, b)| b["type"] == "flagd.applied") {
        let title = b["data"]["title"].as_str().unwrap_or_default();
        assert!(title.contains("applied by 2/2 SDK instances"), "{b}");
    }
    assert_eq!(g.len(), 2 * ranges.len(), "{g:#?}");
    println!(
        "{CHANGES} changes through two replicas: {} messages ({ranges:?}), each with its follow-up",
        ranges.len()
    );
    for s in &sdks {
        s.close();
    }
}

/// OpenFeature flagd providers over gRPC on one replica hear a change made through
/// another (announced on Redis), and the other replica's fleet view lists them as
/// providers that cannot acknowledge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_providers_on_one_replica_hear_changes_made_through_another() {
    use flagd::grpc::proto::evaluation_v2 as v2;
    use flagd::grpc::proto::sync;
    let Some(d) = Deployment::start(true).await else {
        return;
    };
    let grpc_port = flagd_harness::free_port();
    let listen = format!("127.0.0.1:{grpc_port}");
    let r1 = d.replica("r1", "1h");
    let r2 = d.replica_with("r2", "1h", &["--grpc-listen", &listen]);
    subscribed(&r1.base()).await;
    subscribed(&r2.base()).await;
    let key = seed(&r1.base()).await;
    let with_key = |r: &mut tonic::metadata::MetadataMap| {
        r.insert("authorization", format!("Bearer {key}").parse().unwrap());
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(sync::SyncFlagsRequest {
        provider_id: "checkout".into(),
        ..Default::default()
    });
    with_key(req.metadata_mut());
    let mut set = sync::flag_sync_service_client::FlagSyncServiceClient::new(channel.clone())
        .sync_flags(req)
        .await
        .unwrap()
        .into_inner();
    let mut req = tonic::Request::new(v2::EventStreamRequest {});
    with_key(req.metadata_mut());
    let mut events = v2::service_client::ServiceClient::new(channel)
        .event_stream(req)
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(CONVERGE, set.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let doc: Value = serde_json::from_str(&first.flag_configuration).unwrap();
    assert_eq!(doc["flags"]["new-checkout"]["state"], "ENABLED");
    let ready = tokio::time::timeout(CONVERGE, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ready.r#type, "provider_ready");

    // The kill switch through r1 reaches r2's providers.
    let v = toggle(&r1.base(), false, "through r1").await;
    let next = tokio::time::timeout(CONVERGE, set.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let doc: Value = serde_json::from_str(&next.flag_configuration).unwrap();
    assert_eq!(doc["flags"]["new-checkout"]["state"], "DISABLED");
    let change = loop {
        let m = tokio::time::timeout(CONVERGE, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if m.r#type == "configuration_change" {
            break m;
        }
    };
    let data = change.data.unwrap();
    assert!(data.fields["flags"].kind.as_ref().is_some_and(|k| matches!(
        k,
        prost_types::value::Kind::StructValue(s) if s.fields.contains_key("new-checkout")
    )));

    // r1 answers for r2's providers: sent the version, not acknowledging, never on it.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let fleet = ok(
            &r1.base(),
            reqwest::Method::GET,
            "/environments/production/fleet",
            None,
        )
        .await;
        let providers: Vec<&Value> = fleet["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["acknowledges"] == false)
            .collect();
        if providers.len() == 2
            && providers
                .iter()
                .all(|i| i["sentVersion"] == v && i["replica"] == "r2")
        {
            assert_eq!(fleet["onVersion"], 0, "{fleet}");
            assert_eq!(fleet["providers"], 2, "{fleet}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r1 never listed r2's providers: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
