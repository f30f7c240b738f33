//! What the SDK tests share: a real flagd served in-process on a real socket, and its
//! REST API called as the admin.
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const ADMIN: &str = "fd_sdk-test-admin";

pub struct Flagd {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// flagd on `db`, listening on `addr` (`127.0.0.1:0` for any port).
pub async fn start_flagd(db: &str, addr: &str) -> Flagd {
    start_flagd_with(db, addr, flagd::server::Options::default()).await
}

/// flagd with these options.
pub async fn start_flagd_with(db: &str, addr: &str, options: flagd::server::Options) -> Flagd {
    let store = flagd::server::open_store_for(db, &options).await.unwrap();
    flagd::server::bootstrap(&store, Some(ADMIN)).await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(flagd::server::run(listener, store, options, async move {
        let _ = rx.await;
    }));
    Flagd {
        base,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Flagd {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Calls the REST API as the admin; the call must succeed.
pub async fn api(base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, body) = call(base, method, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// A new SDK key for the production environment.
pub async fn sdk_key(base: &str) -> String {
    api(
        base,
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        Value::Object(serde_json::Map::new()),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `flagd` binary of this workspace, built if needed.
pub fn flagd_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join("flagd");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "flagd", "--bin", "flagd"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building flagd");
    }
    bin
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real flagd binary on `db`, listening on `port`, with extra arguments; returns
/// once it accepts connections.
pub fn spawn_flagd(db: &str, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(flagd_binary())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            db,
        ])
        .args(extra)
        .env("FLAGD_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "flagd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Calls the REST API as the admin and returns the status and body, whatever they are.
pub async fn call(base: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    // No idle connections: the same port may serve successive servers.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = c
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
