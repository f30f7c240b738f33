//! Propagation load harness (benchmarks.md section 2), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin load -- [--clients 1000,10000] [--client-threads 1]
//! ```
//!
//! Starts flagd on SQLite in a separate process (this binary re-executed as `serve`),
//! connects N stream clients from this process, makes a change through the REST API,
//! and records for every client the time from the REST call until its stream delivered
//! the new version. Scenarios: a one-flag toggle, and a revert of a 10,000-flag set.
//! Also reports how long the REST call took, the CPU time flagd and the clients spent
//! per client while the change spread (from /proc, 10 ms ticks: coarse at N = 1,000),
//! and flagd's resident memory per idle connection (measured after the first client
//! has made flagd load the environment).
//!
//! The clients speak the SDK protocol (`docs/protocol.md`): hello with the version
//! held, decode every frame, ack every version, answer pings. They hold the head when
//! they connect, as SDKs that were already running do, and keep the version a revert
//! restores (P9), so a revert is applied by swapping; they do not compile flag sets,
//! which the SDK does on its own core and is measured by the evaluation benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flagd_core::wire::{ClientMsg, ServerMsg};
use flagd_harness::{ADMIN_TOKEN as ADMIN, InProcess, SqliteFile, free_port};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2], &args[3]);
    }
    let clients: Vec<usize> = match args.iter().position(|a| a == "--clients") {
        Some(i) => args
            .get(i + 1)
            .context("--clients needs a list")?
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?,
        None => vec![1000, 10_000],
    };
    // The clients' process may be given fewer threads than cores (`--client-threads`);
    // on 2 cores, one thread made the clients the bottleneck, so the default is all.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(i) = args.iter().position(|a| a == "--client-threads") {
        builder.worker_threads(
            args.get(i + 1)
                .context("--client-threads needs a number")?
                .parse()?,
        );
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(orchestrate(&clients))
}

/// The flagd process: flagd's server in-process on `db` at 127.0.0.1:`port`, until it
/// is killed.
fn serve(db: &str, port: &str) -> anyhow::Result<()> {
    let port = port.parse().context("serve DB PORT: the port")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let options = flagd::server::Options {
            max_body_bytes: 64 << 20,
            ..Default::default()
        };
        InProcess::new()
            .database_url(db)
            .port(port)
            .options(options)
            .serve_here(|_| println!("ready"), std::future::pending())
            .await
    })
}

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // Clock ticks are 100 per second on Linux.
    (field(11) + field(12)) * 10
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no number")?
        .parse()?)
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(ADMIN)
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }
}

fn flags(n: usize, percent: u64) -> Value {
    let f: Map<String, Value> = (0..n)
        .map(|i| {
            (format!("flag-{i:05}"), json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"fractional": [["on", percent], ["off", 100 - percent]]}}))
        })
        .collect();
    json!({"flags": f})
}

/// Per client: the time its stream delivered the awaited version (ns since `epoch`).
struct Fleet {
    arrived: Vec<AtomicU64>,
    awaited: AtomicU64,
    epoch: Instant,
}

async fn client(
    i: usize,
    url: String,
    key: String,
    held: u64,
    fleet: Arc<Fleet>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    let hello = ClientMsg::Hello {
        instance: format!("load-{i}"),
        sdk: "load-harness".into(),
        host: "load".into(),
        labels: Map::new(),
        version: Some(held),
        store: None,
        at: None,
    };
    ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    // Connected: let the next client start its handshake.
    drop(permit);
    let mut held = held;
    while let Some(m) = ws.next().await {
        let Message::Text(t) = m? else { continue };
        let version = match serde_json::from_str::<ServerMsg>(&t)? {
            ServerMsg::Delta { version, .. }
            | ServerMsg::Restore { version, .. }
            | ServerMsg::Snapshot { version, .. } => version,
            ServerMsg::Ping => {
                ws.send(Message::Text(
                    serde_json::to_string(&ClientMsg::Pong)?.into(),
                ))
                .await?;
                continue;
            }
            ServerMsg::Pong => continue,
        };
        if version > held {
            held = version;
            if version >= fleet.awaited.load(Ordering::SeqCst) {
                let ns = u64::try_from(fleet.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let _ =
                    fleet.arrived[i].compare_exchange(0, ns, Ordering::SeqCst, Ordering::SeqCst);
            }
            ws.send(Message::Text(
                serde_json::to_string(&ClientMsg::Ack {
                    version,
                    problems: Vec::new(),
                })?
                .into(),
            ))
            .await?;
        }
    }
    Ok(())
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn report(scenario: &str, n: usize, run: Run) {
    let (p50, p99, max) = percentiles(run.latencies);
    println!(
        "| {scenario} | {n} | {} | {} | {} | {} | {:.0} µs, {:.0} µs | {:.1} KiB |",
        ms(p50),
        ms(p99),
        ms(max),
        ms(run.rest),
        run.cpu_us_per_client.0,
        run.cpu_us_per_client.1,
        run.kib_per_connection
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Waits until flagd lists `n` clients in its fleet view.
async fn wait_for_fleet(api: &Api, env: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let f = api
            .call(
                reqwest::Method::GET,
                &format!("/environments/{env}/fleet"),
                Value::Null,
            )
            .await?;
        if f["total"].as_u64() == Some(n as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} clients connected", f["total"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one scenario measured.
struct Run {
    /// Per client, from the REST call until its stream delivered the new version.
    latencies: Vec<Duration>,
    /// flagd's resident memory growth per idle connection, KiB.
    kib_per_connection: f64,
    /// How long the REST call took (commit, then announce).
    rest: Duration,
    /// CPU time per client while the change spread (user + system, µs): flagd, clients.
    cpu_us_per_client: (f64, f64),
}

/// Connects `n` clients holding `held`, runs `change`, waits until every client has the
/// new version.
async fn run_scenario(
    api: &Api,
    flagd_pid: u32,
    env: &str,
    key: &str,
    n: usize,
    held: u64,
    change: (&str, Value),
) -> anyhow::Result<Run> {
    let url = format!("{}/api/v1/stream", api.base.replacen("http://", "ws://", 1));
    let fleet = Arc::new(Fleet {
        arrived: (0..n).map(|_| AtomicU64::new(0)).collect(),
        awaited: AtomicU64::new(u64::MAX),
        epoch: Instant::now(),
    });
    let mut tasks = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let spawn = |i: usize| {
        let (url, key, fleet, gate) = (url.clone(), key.to_owned(), fleet.clone(), gate.clone());
        tokio::spawn(async move {
            // Bounded concurrency while connecting, as a fleet of SDKs ramps up.
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            if let Err(e) = client(i, url, key, held, fleet, permit).await {
                println!("client {i} failed: {e:#}");
            }
        })
    };
    // The first client makes flagd load the environment (its flag set and snapshot):
    // memory per connection is measured from there.
    tasks.push(spawn(0));
    wait_for_fleet(api, env, 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(flagd_pid)?;
    tasks.extend((1..n).map(spawn));
    wait_for_fleet(api, env, n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(flagd_pid)?;
    let per_conn = (after.saturating_sub(before)) as f64 / (n.max(2) - 1) as f64;

    fleet.awaited.store(held + 1, Ordering::SeqCst);
    let t0 = fleet.epoch.elapsed();
    let (cpu_flagd, cpu_self) = (cpu_ms(flagd_pid), cpu_ms(std::process::id()));
    api.call(reqwest::Method::POST, change.0, change.1).await?;
    let t_rest = fleet.epoch.elapsed() - t0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.arrived.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        if Instant::now() > deadline {
            let missing = fleet
                .arrived
                .iter()
                .filter(|a| a.load(Ordering::SeqCst) == 0)
                .count();
            bail!("{missing} of {n} clients never got the change");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = |ms: u64| ms as f64 * 1000.0 / n as f64;
    let cpu_us_per_client = (
        cpu(cpu_ms(flagd_pid).saturating_sub(cpu_flagd)),
        cpu(cpu_ms(std::process::id()).saturating_sub(cpu_self)),
    );
    let lat = fleet
        .arrived
        .iter()
        .map(|a| Duration::from_nanos(a.load(Ordering::SeqCst)).saturating_sub(t0))
        .collect::<Vec<Duration>>();
    for t in tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Run {
        latencies: lat,
        kib_per_connection: per_conn,
        rest: t_rest,
        cpu_us_per_client,
    })
}

async fn orchestrate(clients: &[usize]) -> anyhow::Result<()> {
    let db = SqliteFile::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", &db.url(), &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    {
        use std::io::BufRead;
        let out = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "flagd did not start: {line}");
    }
    let api = Api {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let result = async {
        api.call(
            reqwest::Method::POST,
            "/environments",
            json!({"key": "toggle"}),
        )
        .await?;
        api.call(
            reqwest::Method::PUT,
            "/environments/toggle/flags",
            flags(10, 5),
        )
        .await?;
        api.call(
            reqwest::Method::POST,
            "/environments",
            json!({"key": "revert"}),
        )
        .await?;
        api.call(
            reqwest::Method::PUT,
            "/environments/revert/flags",
            flags(10_000, 5),
        )
        .await?;
        api.call(
            reqwest::Method::PUT,
            "/environments/revert/flags",
            flags(10_000, 50),
        )
        .await?;
        let toggle_key = api
            .call(
                reqwest::Method::POST,
                "/environments/toggle/sdk-keys",
                json!({}),
            )
            .await?["secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let revert_key = api
            .call(
                reqwest::Method::POST,
                "/environments/revert/sdk-keys",
                json!({}),
            )
            .await?["secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned();

        println!(
            "| scenario | clients | p50 | p99 | max | REST call | CPU per client: flagd, clients | flagd memory per idle connection |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for &n in clients {
            let head = api
                .call(reqwest::Method::GET, "/environments/toggle", Value::Null)
                .await?["version"]
                .as_u64()
                .unwrap_or(0);
            let action = if head % 2 == 1 { "disable" } else { "enable" };
            let run = run_scenario(
                &api,
                pid,
                "toggle",
                &toggle_key,
                n,
                head,
                (
                    &format!("/environments/toggle/flags/flag-00000/{action}"),
                    json!({"reason": "load"}),
                ),
            )
            .await?;
            report("one-flag toggle", n, run);

            let head = api
                .call(reqwest::Method::GET, "/environments/revert", Value::Null)
                .await?["version"]
                .as_u64()
                .unwrap_or(0);
            let to = head - 1;
            let run = run_scenario(
                &api,
                pid,
                "revert",
                &revert_key,
                n,
                head,
                (
                    "/environments/revert/revert",
                    json!({"version": to, "reason": "load"}),
                ),
            )
            .await?;
            report("revert of 10,000 flags", n, run);
        }
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
