//! The rollback path against the real flagd binary and the real SDK: no bad flag, bad
//! store event or revoked key can keep a kill switch from reaching every SDK, and a
//! kill switch flipped after the bad event arrives within 2 s.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flagd_sdk::{Client, EvaluationContext, Reason, Status};
use serde_json::{Value, json};

mod common;

use common::{api, call, sdk_key};
use flagd_harness::{Binary, FlagdProcess, free_port};

fn flag(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": if on { "on" } else { "off" }})
}

/// `{"!": {"!": … {"var": "x"}}}`, `n` operators deep.
fn nested(n: usize) -> Value {
    let mut v = json!({"var": "x"});
    for _ in 0..n {
        v = json!({ "!": v });
    }
    v
}

async fn wait_version(sdk: &Client, v: u64, within: Duration) {
    let mut s = sdk.status_updates();
    tokio::time::timeout(
        within,
        s.wait_for(|s| matches!(s, Status::Ready { version } if *version >= v)),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the SDK did not reach version {v} in {within:?}: {:?}",
            sdk.status()
        )
    })
    .expect("status channel open");
}

/// The real flagd binary on `db`, listening on `port`.
fn spawn_flagd(db: &str, port: u16) -> FlagdProcess {
    Binary::new().database_url(db).port(port).start()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A temporary directory, a SQLite file in it and the real flagd serving it.
struct Setup {
    dir: tempfile::TempDir,
    file: std::path::PathBuf,
    db: String,
    port: u16,
    base: String,
    flagd: FlagdProcess,
}

impl Setup {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.db");
        let db = sqlite_url(&file);
        let port = free_port();
        let flagd = spawn_flagd(&db, port);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            dir,
            file,
            db,
            port,
            flagd,
        }
    }
}

/// Writes items into production's head directly in the SQLite file, as a store written
/// before the limits existed would hold them (flagd must be stopped).
fn inject(db: &Path, items: &[(&str, &str, Value)]) {
    let script = r#"
import json, sqlite3, sys, time
db, items = sys.argv[1], json.loads(sys.stdin.read())
c = sqlite3.connect(db)
env = 'production'
open_ = 9223372036854775807
v, pos = c.execute("SELECT head_version, next_position FROM environments WHERE key = ?", (env,)).fetchone()
v += 1
# The head's line of history (flagd/src/store/lines.rs): 0 until the first revert.
line = c.execute("SELECT COALESCE(MAX(line), 0) FROM lines WHERE env = ?", (env,)).fetchone()[0]
flags = []
for kind, key, definition in items:
    c.execute("UPDATE revisions SET valid_to = ? WHERE env = ? AND line = ? AND kind = ? AND key = ? AND valid_to = ?", (v, env, line, kind, key, open_))
    c.execute("INSERT INTO revisions (env, line, kind, key, valid_from, valid_to, position, definition) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (env, line, kind, key, v, open_, pos, json.dumps(definition)))
    pos += 1
    if kind == 'flag':
        flags.append(key)
c.execute("INSERT INTO versions (env, version, kind, author, reason, created_at, changed) VALUES (?, ?, 'import', 'legacy', 'written before the limits', ?, ?)", (env, v, int(time.time() * 1000), json.dumps(flags)))
for f in flags:
    c.execute("INSERT INTO version_flags (env, flag_key, version) VALUES (?, ?, ?)", (env, f, v))
c.execute("UPDATE environments SET head_version = ?, next_position = ?, head_flags = NULL, head_bytes = NULL WHERE key = ?", (v, pos, env))
c.commit()
"#;
    let items: Vec<Value> = items.iter().map(|(k, key, d)| json!([k, key, d])).collect();
    let mut child = Command::new("python3")
        .args(["-c", script, &db.display().to_string()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(items).to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "injecting legacy rows");
}

/// An evaluator of `n` comparisons, and a flag that references it `refs` times.
fn ref_bomb(n: usize, refs: usize) -> (Value, Value) {
    let evaluator = json!({"or": (0..n).map(|i| json!({"==": [{"var": "x"}, format!("v{i}")]})).collect::<Vec<_>>()});
    let targeting = json!({"if": [{"or": vec![json!({"$ref": "big"}); refs]}, "on", "off"]});
    let mut f = flag(false);
    f["targeting"] = targeting;
    (evaluator, f)
}

/// Whether a streaming response ends within `d`.
async fn ends_within(r: &mut reqwest::Response, d: Duration) -> bool {
    tokio::time::timeout(d, async { while let Ok(Some(_)) = r.chunk().await {} })
        .await
        .is_ok()
}

async fn kill_switch_reaches(base: &str, sdk: &Client, flag: &str) {
    let r = api(
        base,
        reqwest::Method::POST,
        &format!("/environments/production/flags/{flag}/disable"),
        json!({"reason": "incident"}),
    )
    .await;
    let v = r["version"].as_u64().unwrap();
    wait_version(sdk, v, Duration::from_secs(2)).await;
    let user = EvaluationContext::new("user-1");
    sdk.with_detail(flag, &user, |d| assert_eq!(d.reason, Reason::Disabled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bad_flags_never_block_a_kill_switch() {
    let Setup {
        dir: _dir,
        file,
        db,
        port,
        base,
        flagd,
    } = Setup::start();
    let key = sdk_key(&base).await;
    api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        flag(true),
    )
    .await;

    // Today's flagd refuses a flag nested past the limit, naming where.
    let mut deep = json!({"state": "ENABLED", "variants": {"true": true, "false": false}, "defaultVariant": "false"});
    deep["targeting"] = nested(123);
    let (status, body) = call(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/deep",
        deep.clone(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["path"], "flags.deep", "{body}");
    assert!(
        detail["message"]
            .as_str()
            .unwrap()
            .contains("at most 100 levels"),
        "{body}"
    );

    // A store written before the limits existed holds such flags anyway, and worse.
    flagd.terminate();
    let (evaluator, bomb) = ref_bomb(2_000, 10_000);
    inject(
        &file,
        &[
            ("flag", "deep", deep),
            (
                "flag",
                "no-default",
                json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"}),
            ),
            ("evaluator", "big", evaluator),
            ("flag", "bomb", bomb),
        ],
    );
    let flagd = spawn_flagd(&db, port);

    let sdk = Client::builder(&base, &key)
        .max_backoff(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    wait_version(&sdk, 2, Duration::from_secs(20)).await;
    let user = EvaluationContext::new("user-1").with("x", true);
    assert!(sdk.enabled("new-checkout", &user));
    // The deep flag decodes and evaluates: the SDK reads what flagd may have stored.
    sdk.with_detail("deep", &user, |d| {
        assert_eq!(d.reason, Reason::TargetingMatch, "{d:?}");
    });
    // The others are isolated: reason ERROR for them alone, reported to flagd.
    for broken in ["no-default", "bomb"] {
        sdk.with_detail(broken, &user, |d| {
            assert_eq!(d.reason, Reason::Error, "{broken}: {d:?}");
        });
    }
    let problems: Vec<String> = sdk.problems().iter().map(|p| p.path.clone()).collect();
    assert_eq!(
        problems,
        vec!["flags.bomb", "flags.no-default.defaultVariant"]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = api(
            &base,
            reqwest::Method::GET,
            "/environments/production/fleet",
            Value::Null,
        )
        .await;
        if fleet["instances"][0]["problems"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet never showed the SDK's problems: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // flagd's own evaluation (OFREP) of the bomb answers instead of exhausting memory.
    let r = reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags/bomb"))
        .bearer_auth(&key)
        .body(json!({"context": {"targetingKey": "u", "x": "v1"}}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "PARSE_ERROR", "{status} {body}");

    kill_switch_reaches(&base, &sdk, "new-checkout").await;
    sdk.close();
    flagd.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_refs_compile_once_and_the_largest_set_loads() {
    let Setup {
        dir: _dir,
        base,
        flagd,
        ..
    } = Setup::start();
    let key = sdk_key(&base).await;

    // An evaluator of 2,000 comparisons referenced 10,000 times: refused on import,
    // with the flag's path, before anything is stored.
    let (evaluator, bomb) = ref_bomb(2_000, 10_000);
    let doc = json!({"$evaluators": {"big": evaluator}, "flags": {"bomb": bomb, "new-checkout": flag(true)}});
    let (status, body) = call(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags",
        doc,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["details"][0]["path"], "flags.bomb.targeting",
        "{body}"
    );
    // 10,000 references to a 2,000-item allow-list are fine: it is compiled once.
    let list: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
    let mut shared = flag(false);
    shared["targeting"] =
        json!({"if": [{"or": vec![json!({"$ref": "allow"}); 10_000]}, "on", "off"]});
    let doc = json!({"$evaluators": {"allow": {"in": [{"var": "targetingKey"}, list]}}, "flags": {"shared": shared, "new-checkout": flag(true)}});
    let r = api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags",
        doc.clone(),
    )
    .await;
    assert_eq!(r["version"], 1);
    // A viewer's preview of the same shape answers too.
    let viewer = api(
        &base,
        reqwest::Method::POST,
        "/tokens",
        json!({"name": "viewer", "role": "viewer"}),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/environments/production/preview"))
        .bearer_auth(&viewer)
        .body(
            json!({"key": "shared", "flag": doc["flags"]["shared"], "contexts": [{"targetingKey": "user-7"}, {"targetingKey": "x"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let preview: Value = r.json().await.unwrap();
    assert_eq!(preview["results"][0]["variant"], "on", "{preview}");
    assert_eq!(preview["results"][1]["variant"], "off", "{preview}");

    // The largest flag set flagd accepts (32 MiB) loads in a fresh SDK, although its
    // snapshot is one websocket frame above tungstenite's default 16 MiB.
    // 32 flags just under the 1 MiB a flag may have.
    let chunk = "x".repeat((1 << 20) - 200);
    let mut flags = serde_json::Map::new();
    flags.insert("new-checkout".into(), flag(true));
    for i in 0..32 {
        let mut f = flag(true);
        f["variants"] = json!({"on": {"blob": chunk}, "off": {"blob": ""}});
        flags.insert(format!("big-{i}"), f);
    }
    let large = json!({"flags": flags});
    let size = large.to_string().len();
    assert!(size > 31 << 20 && size <= 32 << 20, "{size}");
    let r = api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags",
        large.clone(),
    )
    .await;
    let v = r["version"].as_u64().unwrap();
    // One more MiB is refused, naming the limit.
    let mut over = large;
    over["flags"]["big-32"] = over["flags"]["big-0"].clone();
    let (status, body) = call(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags",
        over,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 33554432 bytes"),
        "{body}"
    );

    // Growing it one flag at a time is refused too, by the store's running size; a kill
    // switch at the limit is not.
    let mut big = flag(true);
    big["variants"] = json!({"on": {"blob": chunk}, "off": {"blob": ""}});
    let (status, body) = call(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/one-more",
        big,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 33554432 bytes"),
        "{body}"
    );

    let sdk = Client::builder(&base, &key)
        .wait_for_first_snapshot(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    wait_version(&sdk, v, Duration::from_secs(60)).await;
    let user = EvaluationContext::new("user-1");
    assert_eq!(
        sdk.json_value("big-7", &user, Value::Null)["blob"]
            .as_str()
            .map(str::len),
        Some(chunk.len())
    );
    kill_switch_reaches(&base, &sdk, "new-checkout").await;
    sdk.close();
    flagd.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_never_leaves_sdks_on_stale_content() {
    let Setup {
        dir,
        file,
        db,
        port,
        base,
        flagd,
    } = Setup::start();
    let key = sdk_key(&base).await;
    for f in ["a", "b", "c"] {
        api(
            &base,
            reqwest::Method::PUT,
            &format!("/environments/production/flags/{f}"),
            flag(true),
        )
        .await;
    }
    let sdk = Client::builder(&base, &key)
        .max_backoff(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    wait_version(&sdk, 3, Duration::from_secs(10)).await;

    // A backup at version 3, taken with flagd stopped.
    flagd.terminate();
    let backup = dir.path().join("backup.db");
    std::fs::copy(&file, &backup).unwrap();
    let flagd = spawn_flagd(&db, port);
    for f in ["d", "e", "f"] {
        api(
            &base,
            reqwest::Method::PUT,
            &format!("/environments/production/flags/{f}"),
            flag(true),
        )
        .await;
    }
    wait_version(&sdk, 6, Duration::from_secs(10)).await;
    let user = EvaluationContext::new("u");
    assert!(sdk.enabled("f", &user));

    // The backup is restored (flagd stopped, SDKs running), and the restored store is
    // advanced to version 6 again, with other content, before the SDK gets back: the
    // same numbers, another history.
    flagd.terminate();
    std::fs::copy(&backup, &file).unwrap();
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(file.with_extension(ext));
    }
    let other_port = free_port();
    let other = format!("http://127.0.0.1:{other_port}");
    let side = spawn_flagd(&db, other_port);
    for f in ["x", "y", "z"] {
        api(
            &other,
            reqwest::Method::PUT,
            &format!("/environments/production/flags/{f}"),
            flag(false),
        )
        .await;
    }
    side.terminate();
    let flagd = spawn_flagd(&db, port);
    // The SDK reconnects holding "version 6" and is sent the store's version 6.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sdk.with_detail("x", &user, |d| d.reason == Reason::Error) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SDK kept the other history's version 6"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sdk.version(), 6);
    assert!(!sdk.enabled("x", &user));
    sdk.with_detail("f", &user, |d| assert_eq!(d.reason, Reason::Error));
    kill_switch_reaches(&base, &sdk, "a").await;

    // A new, empty database: another store identity, so version numbers start over.
    flagd.terminate();
    std::fs::remove_file(&file).unwrap();
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(file.with_extension(ext));
    }
    let flagd = spawn_flagd(&db, port);
    // The SDK key lived in the old database: a new one, and a new SDK would be needed in
    // practice; here the running SDK keeps retrying with its revoked-looking key, so a
    // second SDK with the new key shows the reset.
    let key2 = sdk_key(&base).await;
    api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/a",
        flag(true),
    )
    .await;
    let cache = dir.path().join("cache.json");
    std::fs::write(
        &cache,
        json!({"version": 7, "store": "another-store", "document": {"flags": {"a": flag(false)}}})
            .to_string(),
    )
    .unwrap();
    let fresh = Client::builder(&base, &key2)
        .cache_file(&cache)
        .build()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fresh.version() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SDK kept version 7 of another store: {:?}",
            fresh.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fresh.enabled("a", &user));
    kill_switch_reaches(&base, &fresh, "a").await;
    sdk.close();
    fresh.close();
    flagd.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_closes_its_streams_at_once() {
    let Setup {
        dir: _dir,
        base,
        flagd,
        ..
    } = Setup::start();
    let created = api(
        &base,
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        json!({}),
    )
    .await;
    let key = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["sdkKey"]["id"].as_str().unwrap().to_owned();
    api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        flag(true),
    )
    .await;
    let sdk = Client::builder(&base, &key)
        .max_backoff(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    wait_version(&sdk, 1, Duration::from_secs(10)).await;

    // A token's /events stream, and a UI session's.
    let token = api(
        &base,
        reqwest::Method::POST,
        "/tokens",
        json!({"name": "watcher", "role": "viewer"}),
    )
    .await;
    let (token_secret, token_id) = (
        token["secret"].as_str().unwrap().to_owned(),
        token["token"]["id"].as_str().unwrap_or_default().to_owned(),
    );
    let mut events = reqwest::Client::new()
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&token_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let fleet = || async {
        api(
            &base,
            reqwest::Method::GET,
            "/environments/production/fleet",
            Value::Null,
        )
        .await
    };
    assert_eq!(fleet().await["total"], 1);
    let (status, _) = call(
        &base,
        reqwest::Method::DELETE,
        &format!("/tokens/{key_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    // The stream closes now, and the instance leaves the fleet with its key.
    let mut s = sdk.status_updates();
    tokio::time::timeout(
        Duration::from_secs(2),
        s.wait_for(|s| matches!(s, Status::Stale { .. })),
    )
    .await
    .expect("the revoked key's stream closed within 2 s")
    .unwrap();
    assert_eq!(fleet().await["total"], 0);
    // The SDK does not reconnect in a tight loop with a key that will not work again:
    // flagd sees no new instance come and go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fleet().await["total"], 0);
    // Evaluation goes on from the last snapshot.
    assert!(sdk.enabled("new-checkout", &EvaluationContext::new("u")));

    // Revoking the token ends its /events stream.
    let (status, _) = call(
        &base,
        reqwest::Method::DELETE,
        &format!("/tokens/{token_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 204, "revoking token {token_id}");
    let ended = ends_within(&mut events, Duration::from_secs(2)).await;
    assert!(ended, "the revoked token's /events stream ended within 2 s");

    // Signing out of the UI ends that session's /events stream.
    let http = reqwest::Client::new();
    let signed_in = http
        .post(format!("{base}/api/v1/session"))
        .body(json!({"token": common::ADMIN}).to_string())
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
    let mut events = http
        .get(format!("{base}/api/v1/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let out = http
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    let ended = ends_within(&mut events, Duration::from_secs(2)).await;
    assert!(ended, "the ended session's /events stream ended within 2 s");
    sdk.close();
    flagd.terminate();
}
