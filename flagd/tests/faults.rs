//! Real store faults against the real binary: a 2xx means the write is durable.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flagd_harness::{ADMIN_TOKEN as ADMIN, Binary, FlagdProcess, Postgres, free_port};
use serde_json::{Value, json};

/// flagd on `db` at `port`.
fn spawn(db: &str, port: u16) -> FlagdProcess {
    binary(db, port).start()
}

/// The flagd binary of this package on `db` at `port`.
fn binary(db: &str, port: u16) -> Binary {
    Binary::at(env!("CARGO_BIN_EXE_flagd"))
        .database_url(db)
        .port(port)
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` when this process may not mount (not root): the test is skipped then,
    /// except under CI, where it must run.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs (CI runs as root and must)"
            );
            println!("skipped: cannot mount a tmpfs here (not root)");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

async fn put(c: &reqwest::Client, base: &str, key: &str, blob: &str) -> u16 {
    let flag = json!({"state": "ENABLED", "variants": {"on": {"blob": blob}, "off": {"blob": ""}}, "defaultVariant": "on"});
    c.put(format!("{base}/api/v1/environments/production/flags/{key}"))
        .bearer_auth(ADMIN)
        .body(flag.to_string())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn head(c: &reqwest::Client, base: &str) -> (u64, Value) {
    let r = c
        .get(format!("{base}/api/v1/environments/production/flags"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v = r
        .headers()
        .get("x-flag-set-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (v, r.json().await.unwrap_or(Value::Null))
}

/// The database on a 4 MB tmpfs, filled: writes fail. Space freed: every write that is
/// acknowledged afterwards is in the history after a restart (before, a connection whose
/// COMMIT failed went back to the pool with its transaction open, and the next writes,
/// acknowledged with 201, were savepoints of it, lost at restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_full_disk() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let db = format!("sqlite://{}", fs.0.path().join("flagd.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flagd = spawn(&db, port);
    assert_eq!(put(&c, &base, "first", "x").await, 201);

    // Fill the disk, then write until flagd refuses.
    let filler = fs.0.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let blob = "y".repeat(64 * 1024);
    let mut refused = Vec::new();
    for i in 0..20 {
        let status = put(&c, &base, &format!("full-{i}"), &blob).await;
        if !(200..300).contains(&status) {
            refused.push(status);
        }
    }
    assert!(!refused.is_empty(), "a full disk refused no write");
    // A store fault is 503 with what the store said, and a Retry-After.
    assert!(refused.iter().all(|s| *s == 503), "{refused:?}");
    let r = c
        .put(format!(
            "{base}/api/v1/environments/production/flags/full-x"
        ))
        .bearer_auth(ADMIN)
        .body(
            json!({"state": "ENABLED", "variants": {"on": {"blob": blob}}, "defaultVariant": "on"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the store is full"),
        "{body}"
    );

    // Free the space: what is acknowledged now must survive.
    std::fs::remove_file(&filler).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..7 {
        let key = format!("after-{i}");
        let status = put(&c, &base, &key, "z").await;
        assert!(
            (200..300).contains(&status),
            "{key}: {status} after the space came back"
        );
        acknowledged.push(key);
    }
    let (v_before, _) = head(&c, &base).await;
    // Reads agree with each other (no connection sees a transaction of its own).
    for _ in 0..10 {
        assert_eq!(head(&c, &base).await.0, v_before);
    }
    flagd.terminate();

    let flagd = spawn(&db, port);
    let (v_after, doc) = head(&c, &base).await;
    assert_eq!(v_after, v_before, "the head survived the restart");
    for key in &acknowledged {
        assert!(
            doc["flags"].get(key).is_some(),
            "{key} was acknowledged and lost"
        );
    }
    flagd.terminate();
}

/// The SQLite file deleted, or replaced, under a running flagd: writes are refused with
/// 503 and `/readyz` is unready (before, writes went on answering 201 into the unlinked
/// file and were lost at restart). Restored, flagd takes writes again, no restart needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_into_a_deleted_database_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flagd.db");
    let db = format!("sqlite://{}", file.display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flagd = spawn(&db, port);
    assert_eq!(put(&c, &base, "a", "x").await, 201);
    let ready = |c: reqwest::Client, base: String| async move {
        c.get(format!("{base}/readyz"))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    };
    assert_eq!(ready(c.clone(), base.clone()).await, 200);

    // Moved away (deleted from flagd's point of view): refused, unready.
    let aside = dir.path().join("aside.db");
    std::fs::rename(&file, &aside).unwrap();
    assert_eq!(put(&c, &base, "b", "x").await, 503);
    assert_eq!(ready(c.clone(), base.clone()).await, 503);
    // A copy in its place is another file: still refused.
    std::fs::copy(&aside, &file).unwrap();
    assert_eq!(put(&c, &base, "b", "x").await, 503);
    // The original back: writes again, without a restart.
    std::fs::rename(&aside, &file).unwrap();
    assert_eq!(put(&c, &base, "b", "x").await, 201);
    assert_eq!(ready(c.clone(), base.clone()).await, 200);
    flagd.terminate();
    let flagd = spawn(&db, port);
    let (_, doc) = head(&c, &base).await;
    assert!(doc["flags"].get("b").is_some(), "{doc}");
    flagd.terminate();
}

async fn put_answer(c: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let flag =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    match c
        .put(format!("{base}/api/v1/environments/production/flags/{key}"))
        .bearer_auth(ADMIN)
        .body(flag.to_string())
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let mut body: Value = r.json().await.unwrap_or(Value::Null);
            body["retryAfter"] = json!(retry);
            (status, body)
        }
        Err(_) => (0, Value::Null),
    }
}

async fn ready(c: &reqwest::Client, base: &str) -> u16 {
    c.get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// PostgreSQL stopped under a running flagd, then started again: what was acknowledged
/// survives, writes get 503 `unavailable` saying the store is unreachable (with a
/// Retry-After) and `/readyz` is unready while it is down, and flagd takes writes again
/// by itself once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_run() {
    let Some(pg) = Postgres::start_or_skip("this test is skipped") else {
        return;
    };
    let db = pg.database().await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flagd = spawn(&db, port);
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let key = format!("before-{i}");
        assert_eq!(put_answer(&c, &base, &key).await.0, 201);
        acknowledged.push(key);
    }
    assert_eq!(ready(&c, &base).await, 200);

    pg.stop();
    let started = Instant::now();
    let (status, body) = put_answer(&c, &base, "while-down").await;
    println!(
        "a write while PostgreSQL is down answered in {:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["retryAfter"], true, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unreachable"), "{body}");
    assert_eq!(ready(&c, &base).await, 503);

    pg.resume().unwrap();
    // Back without restarting flagd: the first write after the restart may still meet
    // a connection the restart closed; writes go through within a few tries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answers = Vec::new();
    loop {
        let (status, body) = put_answer(&c, &base, "after").await;
        if status == 201 || status == 200 {
            break;
        }
        answers.push((status, body));
        assert!(
            Instant::now() < deadline,
            "no write went through after PostgreSQL came back: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acknowledged.push("after".to_owned());
    // Anything refused meanwhile was refused as a store fault, never as a bug.
    assert!(answers.iter().all(|(s, _)| *s == 503), "{answers:?}");
    assert_eq!(ready(&c, &base).await, 200);
    let (v_before, _) = head(&c, &base).await;
    flagd.terminate();

    let flagd = spawn(&db, port);
    let (v_after, doc) = head(&c, &base).await;
    assert_eq!(v_after, v_before);
    for key in &acknowledged {
        assert!(
            doc["flags"].get(key).is_some(),
            "{key} was acknowledged and lost"
        );
    }
    assert!(doc["flags"].get("while-down").is_none(), "{doc}");
    flagd.terminate();
}

/// flagd as `uid` (group `uid` too), when given.
fn as_user(flagd: Binary, uid: Option<u32>) -> Binary {
    match uid {
        Some(uid) => flagd.user(uid, uid),
        None => flagd,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A read-only SQLite store: writes get 503 saying so (and which file flagd cannot
/// write), `/readyz` is unready; made writable again, flagd takes writes without a
/// restart (before, 500 `internal`, and writes kept failing until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_is_refused_until_writable_again() {
    // Permissions bind everyone but root: as root, flagd runs as `nobody`.
    let uid = is_root().then_some(65534);
    let dir = tempfile::tempdir().unwrap();
    if let Some(uid) = uid {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    }
    let file = dir.path().join("flagd.db");
    let db = format!("sqlite://{}", file.display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flagd = as_user(binary(&db, port), uid).start();
    assert_eq!(put_answer(&c, &base, "a").await.0, 201);
    flagd.terminate();

    let mode = |p: &std::path::Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
    };
    mode(&file, 0o444);
    let flagd = as_user(binary(&db, port), uid).start();
    let (status, body) = put_answer(&c, &base, "b").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["retryAfter"], true, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is read-only"),
        "{body}"
    );
    let r = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let reason = r.json::<Value>().await.unwrap()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("read-only") && reason.contains(&file.display().to_string()),
        "{reason}"
    );
    // Writable again (SQLite gave the -wal and -shm files the database's mode).
    for f in ["flagd.db", "flagd.db-wal", "flagd.db-shm"] {
        mode(&dir.path().join(f), 0o644);
    }
    let (status, body) = put_answer(&c, &base, "b").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ready(&c, &base).await, 200);
    flagd.terminate();
    let flagd = as_user(binary(&db, port), uid).start();
    let (_, doc) = head(&c, &base).await;
    assert!(doc["flags"].get("b").is_some(), "{doc}");
    flagd.terminate();
}

/// Another process holding SQLite's write lock past the store timeout: writes get 503
/// "locked" and `/readyz` is unready; released, writes go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_is_refused_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flagd.db");
    let db = format!("sqlite://{}", file.display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flagd = binary(&db, port).args(["--store-timeout", "300ms"]).start();
    assert_eq!(put_answer(&c, &base, "a").await.0, 201);
    // A second process (SQLite's own CLI-equivalent, Python's sqlite3) takes the write
    // lock and keeps it until told to let go.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             sys.stdin.readline()\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
    }
    let (status, body) = put_answer(&c, &base, "b").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is locked"),
        "{body}"
    );
    assert_eq!(ready(&c, &base).await, 503);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let (status, body) = put_answer(&c, &base, "b").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ready(&c, &base).await, 200);
    flagd.terminate();
}

/// Every body a loopback receiver got, answered as DingTalk answers a success.
#[derive(Clone, Default)]
struct Receiver(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Receiver {
    async fn serve(&self, port: u16) {
        let got = self.0.clone();
        let app = axum::Router::new().fallback(move |body: String| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push(body);
                r#"{"errcode":0,"errmsg":"ok"}"#
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    fn got(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

async fn api(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.request(method, url).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Waits (30 s at most) until the channel's history satisfies `ok`.
async fn history_until(
    c: &reqwest::Client,
    base: &str,
    channel: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = api(
            c,
            reqwest::Method::GET,
            format!("{base}/api/v1/environments/production/channels/{channel}/deliveries"),
            None,
        )
        .await;
        let d = body["deliveries"].as_array().cloned().unwrap_or_default();
        if ok(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "history never got there: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kill -9 loses no notification. A message whose receiver was down (attempted, failed,
/// pending) is sent once after the restart, its history keeping the failed attempts;
/// and a version committed just before the kill, that no message was made of yet, is
/// announced after the restart too: the channel's cursor, not the process, remembers
/// what is left to announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_kill_9() {
    let file = flagd_harness::SqliteFile::new();
    let db = file.url();
    let port = free_port();
    // Nothing listens there until the receiver starts: connection refused.
    let down = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = format!("{base}/api/v1/environments/production");
    let c = reqwest::Client::new();
    let start = || {
        binary(&db, port)
            .arg("--notify-allow-private-addresses")
            .start()
    };
    let flagd = start();
    assert_eq!(put(&c, &base, "checkout", "x").await, 201);
    // DingTalk: flagd looks at such a channel at most once in 3 s (its rate limit), so
    // a version committed right after one it announced waits for the next look.
    let (status, body) = api(
        &c,
        reqwest::Method::POST,
        format!("{env}/channels"),
        Some(json!({"kind": "dingtalk", "url": format!("http://127.0.0.1:{down}/robot/send?access_token=t"),
                    "secret": "SECsigning-secret"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let channel = body["channel"]["id"].as_str().unwrap().to_owned();
    let toggle = |action: &'static str| {
        let c = c.clone();
        let url = format!("{env}/flags/checkout/{action}");
        async move {
            let (status, body) = api(
                &c,
                reqwest::Method::POST,
                url,
                Some(json!({"reason": format!("{action} before the crash")})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["version"].as_u64().unwrap()
        }
    };
    assert_eq!(toggle("disable").await, 2);
    history_until(&c, &base, &channel, |d| {
        d.first().is_some_and(|m| {
            m["status"] == "pending" && m["attempts"].as_u64().is_some_and(|a| a >= 1)
        })
    })
    .await;
    assert_eq!(toggle("enable").await, 3);
    flagd.kill();

    // What the crash left in the file: v3 committed, and the channel not moved past v2
    // (no message of v3 in the outbox), or this test would not test the cursor.
    let store = flagd::store::Store::connect(&db).await.unwrap();
    let behind: Vec<(u64, u64)> = store
        .channels_behind()
        .await
        .unwrap()
        .iter()
        .map(|(t, head)| (t.notified_version, *head))
        .collect();
    store.close().await;
    drop(store);
    assert_eq!(
        behind,
        [(2, 3)],
        "the channel's cursor and the head at the crash"
    );

    let r = Receiver::default();
    r.serve(down).await;
    let flagd = start();
    let d = history_until(&c, &base, &channel, |d| {
        d.len() == 2 && d.iter().all(|m| m["status"] == "delivered")
    })
    .await;
    // Nothing is left to send: what the receiver has is all it will get.
    let got = r.got();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains("v1 → v2") && got[0].contains("disable before the crash"),
        "{got:#?}"
    );
    assert!(
        got[1].contains("v2 → v3") && got[1].contains("enable before the crash"),
        "{got:#?}"
    );
    // Newest first: v3's message, sent at its first attempt; v2's, failed before the
    // crash and delivered after it.
    let log = d[1]["attemptLog"].as_array().unwrap();
    assert!(log.len() >= 2, "{log:?}");
    assert!(
        log[..log.len() - 1]
            .iter()
            .all(|a| a["ok"] == false && a["error"].as_str().is_some_and(|e| e.contains("onnect"))),
        "{log:?}"
    );
    assert_eq!(log[log.len() - 1]["ok"], true, "{log:?}");
    let log = d[0]["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["ok"], true, "{log:?}");
    flagd.terminate();
}
