//! The `flagd` binary as a user runs it: first start on an empty SQLite file (default
//! environments, a one-time admin token), graceful shutdown on SIGTERM, a restart that
//! keeps everything, the admin token from the environment, `migrate`, `check-config`.

use std::process::Command;

use flagd_harness::{Binary, FlagdProcess, free_port};
use serde_json::{Value, json};

/// The flagd binary of this package.
fn flagd() -> Binary {
    Binary::at(env!("CARGO_BIN_EXE_flagd"))
}

/// flagd on `db` at `port`, its stdout kept; with `admin` as `FLAGD_ADMIN_TOKEN`, or
/// without one (a first start prints a new token).
fn start(db: &str, port: u16, admin: Option<&str>) -> FlagdProcess {
    flagd()
        .database_url(db)
        .port(port)
        .admin_token(admin)
        .record_stdout()
        .start()
}

async fn get(c: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let r = c.get(url).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn first_start_sigterm_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("flagd.db").display()
    );
    // No idle connections kept: the same port serves three successive servers.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let port = free_port();
    let f = start(&db, port, None);
    assert_eq!(
        c.get(format!("{}/healthz", f.base()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", f.base()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Stop with SIGTERM; stdout (read at exit) holds the token printed at first start.
    let (status, stdout) = f.terminate();
    assert!(status.success(), "SIGTERM stops flagd cleanly: {status:?}");
    let tokens: Vec<&String> = stdout
        .iter()
        .filter(|l| l.trim().starts_with("fd_"))
        .collect();
    assert_eq!(tokens.len(), 1, "one admin token printed: {stdout:?}");
    let token = tokens[0].trim().to_owned();

    // Restart on the same file: no new token, the old one works, nothing is lost.
    let f = start(&db, port, None);
    let (code, envs) = get(&c, &format!("{}/api/v1/environments", f.base()), &token).await;
    assert_eq!(code, 200);
    assert_eq!(envs["environments"].as_array().map(Vec::len), Some(3));
    let r = c
        .put(format!("{}/api/v1/environments/production/flags/kill-me", f.base()))
        .bearer_auth(&token)
        .body(json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (status, stdout) = f.terminate();
    assert!(status.success());
    assert!(
        !stdout.iter().any(|l| l.trim().starts_with("fd_")),
        "no second token: {stdout:?}"
    );

    // The admin token can also come from the environment.
    let f = start(&db, port, Some("fd_from-the-environment"));
    let (code, flag) = get(
        &c,
        &format!("{}/api/v1/environments/production/flags/kill-me", f.base()),
        "fd_from-the-environment",
    )
    .await;
    assert_eq!(
        (code, flag["state"].clone()),
        (200, json!("ENABLED")),
        "the change survived two restarts"
    );
    let (status, _) = f.terminate();
    assert!(status.success());
}

#[test]
fn migrate_and_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--database-url", &db, "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not migrated"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--database-url", &db, "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--database-url", &db, "check-config"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("store: reachable, migrations applied"));
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--database-url", &db, "check-config"])
        .args([
            "--notify-allow-private-addresses",
            "--notify-request-timeout",
            "3s",
            "--grpc-listen",
            "127.0.0.1:8013,127.0.0.1:8015",
            "--grpc-max-message",
            "8388608",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "public url: none",
        "notify private addresses: allowed",
        "notify request timeout: 3s",
        "grpc listen: 127.0.0.1:8013, 127.0.0.1:8015",
        "grpc max message: 8388608 bytes",
        "grpc keepalive: 20s",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--database-url", "mysql://x", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must start with sqlite: or postgres://")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

/// The bootstrap token path is atomic and never resurrects a revoked secret: starting
/// with a revoked admin's secret is refused and changes nothing (before, it revoked the
/// current admin token and then failed, so no secret started flagd any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_secret_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
    let port = free_port();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (a, b, n) = (
        "fd_first-admin-secret",
        "fd_second-admin-secret",
        "fd_new-admin-secret",
    );
    let f = start(&db, port, Some(a));
    let url = format!("{}/api/v1/tokens", f.base());
    let ops: Value = c
        .post(&url)
        .bearer_auth(a)
        .body(json!({"name": "ops", "role": "admin"}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops = ops["secret"].as_str().unwrap().to_owned();
    // Another admin revokes the bootstrap token.
    let (_, tokens) = get(&c, &url, &ops).await;
    let first = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_owned();
    let r = c
        .delete(format!("{url}/{first}"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    f.terminate();

    let out = flagd()
        .database_url(&db)
        .port(port)
        .admin_token(Some(a))
        .output();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(!stderr.contains("UNIQUE"), "{stderr}");

    // Nothing changed: ops still works; a new secret starts flagd and becomes `admin`.
    let f = start(&db, port, Some(b));
    assert_eq!(get(&c, &url, &ops).await.0, 200);
    assert_eq!(get(&c, &url, b).await.0, 200);
    f.terminate();
    // The same secret again: kept, nothing replaced.
    let f = start(&db, port, Some(b));
    assert_eq!(get(&c, &url, b).await.0, 200);
    f.terminate();
    let f = start(&db, port, Some(n));
    // Replacing the bootstrap token is said at start.
    assert!(
        f.startup_log()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("the previous admin token no longer works")),
        "{:?}",
        f.startup_log()
    );
    assert_eq!(get(&c, &url, n).await.0, 200);
    assert_eq!(
        get(&c, &url, b).await.0,
        401,
        "the replaced bootstrap secret stops working"
    );
    assert_eq!(get(&c, &url, &ops).await.0, 200);
    f.terminate();
}

/// SQLite has one writer: a second flagd on the same file refuses to start and says why;
/// the lock goes with the process, so a flagd killed with SIGKILL leaves none behind. A
/// SQLite URL without `mode` creates its file, as the default one does.
#[test]
fn one_flagd_per_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.db");
    // `sqlite:///abs/path` with no `?mode=rwc`.
    let db = format!("sqlite://{}", file.display());
    let f = start(&db, free_port(), Some("fd_one-writer-admin-secret"));
    assert!(file.exists());
    let out = flagd()
        .database_url(&db)
        .admin_token(Some("fd_one-writer-admin-secret"))
        .output();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another flagd is already serving the SQLite file")
            && stderr.contains("use PostgreSQL"),
        "{stderr}"
    );
    // kill -9: the lock is gone with the process.
    f.kill();
    let f = start(&db, free_port(), Some("fd_one-writer-admin-secret"));
    f.terminate();
    // A directory that does not exist is named.
    let out = flagd()
        .database_url(format!("sqlite://{}/nope/x.db", dir.path().display()))
        .admin_token(None)
        .output();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nope") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Start-up errors are one line without a backtrace, even with `RUST_BACKTRACE` set; a
/// guessable admin token is refused as a usage error.
#[test]
fn start_errors_are_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--admin-token", "12345"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be at least 16 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flagd()
        .database_url("sqlite:///nonexistent-flagd-dir/x.db")
        .admin_token(None)
        .env("RUST_BACKTRACE", "1")
        .output();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("flagd: ") && last.contains("/nonexistent-flagd-dir does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
}

/// A PostgreSQL URL whose port nobody listens on: flagd says so at once ("connection
/// refused", with the address) instead of waiting for its pool and saying "pool timed out".
#[test]
fn an_unreachable_postgres_is_named_at_start() {
    let closed = free_port();
    let out = flagd()
        .database_url(format!("postgres://flagd@127.0.0.1:{closed}/flagd"))
        .admin_token(None)
        .output();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("flagd: ")
            && last.to_lowercase().contains("connection refused")
            && last.contains(&format!("127.0.0.1:{closed}")),
        "{stderr}"
    );
    assert!(!last.contains("timed out"), "{stderr}");
}
