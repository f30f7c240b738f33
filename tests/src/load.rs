//! The propagation load harness's parts (benchmarks.md, sections 2 and 6), shared by
//! its two binaries: `load` (one flagd on SQLite) and `cluster-load` (replicas on
//! PostgreSQL and Redis). Not part of the test run.
//!
//! The clients speak the SDK protocol (`docs/protocol.md`): hello with the version
//! held, decode every frame, ack every version, answer pings, and fail over to the next
//! replica when a connection ends, resuming from the version held. They hold the head
//! when they connect, as SDKs that were already running do, and keep the version a
//! revert restores (P9), so a revert is applied by swapping; they do not compile flag
//! sets. With `--real-sdks` the clients are real SDK clients instead (`load/sdk.rs`),
//! which do: what a change costs in every application process is then in the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flagd_core::wire::{ClientMsg, ServerMsg};
use flagd_harness::{ADMIN_TOKEN as ADMIN, InProcess, free_port};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod sdk;

/// A flagd process: this binary re-executed as `serve DB PORT [REDIS_URL NAME]`, flagd's
/// server in-process on the store at 127.0.0.1:PORT. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct FlagdChild {
    child: std::process::Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

impl FlagdChild {
    /// Starts one, and returns once it serves.
    pub fn start(db: &str, redis: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let port = free_port();
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["serve", db, &port.to_string()]);
        if let Some((url, name)) = redis {
            cmd.args([url, name]);
        }
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        use std::io::BufRead;
        let out = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "ready", "flagd did not start: {line}");
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FlagdChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `serve` sub-command of both binaries (see [`FlagdChild`]): serves until killed.
pub fn serve(args: &[String]) -> anyhow::Result<()> {
    let db = args.first().context("serve DB PORT")?;
    let port = args
        .get(1)
        .context("serve DB PORT")?
        .parse()
        .context("serve DB PORT: the port")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut options = flagd::server::Options {
        max_body_bytes: 64 << 20,
        ..Default::default()
    };
    if let (Some(url), Some(name)) = (args.get(2), args.get(3)) {
        options.redis_url = Some(url.clone());
        options.replica = name.clone();
    }
    rt.block_on(async {
        InProcess::new()
            .database_url(db.as_str())
            .port(port)
            .options(options)
            .serve_here(|_| println!("ready"), std::future::pending())
            .await
    })
}

/// The numbers after `name` in `args` (`--clients 1000,10000`), or `default`.
pub fn list_arg(args: &[String], name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .with_context(|| format!("{name} needs a list"))?
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?),
        None => Ok(default.to_vec()),
    }
}

/// `--clients N,M` in `args`, or `default`.
pub fn clients(args: &[String], default: &[usize]) -> anyhow::Result<Vec<usize>> {
    list_arg(args, "--clients", default)
}

/// The clients' runtime: `--client-threads N` in `args`, else every core (on 2 cores,
/// one thread made the clients the bottleneck).
pub fn client_runtime(args: &[String]) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(i) = args.iter().position(|a| a == "--client-threads") {
        builder.worker_threads(
            args.get(i + 1)
                .context("--client-threads needs a number")?
                .parse()?,
        );
    }
    Ok(builder.enable_all().build()?)
}

/// Sets up the two environments every run uses: `toggle` (10 flags) and `revert`
/// (10,000 flags, two versions), and returns their SDK keys.
pub async fn seed(api: &Api) -> anyhow::Result<(String, String)> {
    api.environment("toggle", flags(10, 5)).await?;
    api.environment("revert", flags(10_000, 5)).await?;
    api.call(
        reqwest::Method::PUT,
        "/environments/revert/flags",
        flags(10_000, 50),
    )
    .await?;
    Ok((api.sdk_key("toggle").await?, api.sdk_key("revert").await?))
}

/// The head of an environment.
pub async fn head(api: &Api, env: &str) -> anyhow::Result<u64> {
    Ok(api
        .call(
            reqwest::Method::GET,
            &format!("/environments/{env}"),
            Value::Null,
        )
        .await?["version"]
        .as_u64()
        .unwrap_or(0))
}

/// The toggle scenario's change: flag-00000 flipped.
pub fn toggle_change(head: u64) -> String {
    let action = if head % 2 == 1 { "disable" } else { "enable" };
    format!("/environments/toggle/flags/flag-00000/{action}")
}

/// An Alertmanager webhook (payload version 4) whose one firing alert kills `flag` of
/// `env`: a new firing (fingerprint) per call, so that each acts.
pub fn alert_kill(env: &str, flag: &str, firing: usize) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"LoadTest\"}",
        "status": "firing",
        "receiver": "flagd",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "LoadTest", "flagd_environment": env, "flagd_flag": flag},
            "annotations": {"summary": "load harness"},
            "startsAt": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "fingerprint": format!("load-{firing}-{now}"),
        }],
    })
}

/// The table's header.
pub fn header() {
    println!(
        "| scenario | clients | p50 | p99 | max | REST call | CPU per client: flagd, clients | flagd memory per idle connection |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
}

/// CPU time (user + system) of a process, in milliseconds.
pub fn cpu_ms(pid: u32) -> u64 {
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

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
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

/// flagd's REST API as the admin.
#[derive(Clone, Debug)]
pub struct Api {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Api {
    /// The API of the flagd at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Creates environment `env` holding `flags` (a flag-set document).
    pub async fn environment(&self, env: &str, flags: Value) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            "/environments",
            json!({ "key": env }),
        )
        .await?;
        self.call(
            reqwest::Method::PUT,
            &format!("/environments/{env}/flags"),
            flags,
        )
        .await?;
        Ok(())
    }

    /// A new SDK key of `env`.
    pub async fn sdk_key(&self, env: &str) -> anyhow::Result<String> {
        Ok(self
            .call(
                reqwest::Method::POST,
                &format!("/environments/{env}/sdk-keys"),
                json!({}),
            )
            .await?["secret"]
            .as_str()
            .context("an SDK key")?
            .to_owned())
    }

    /// One call; an error unless it answered 2xx.
    pub async fn call(
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

/// `n` flags, each a `percent` rollout.
pub fn flags(n: usize, percent: u64) -> Value {
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

/// One stream client until aborted: connects to its replica (`urls[i % len]`), and when
/// that connection ends or fails, to the next replica at once, resuming from the version
/// it holds, as the SDK fails over.
async fn client(
    i: usize,
    urls: Arc<[String]>,
    key: String,
    held: u64,
    fleet: Arc<Fleet>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut held = held;
    let mut permit = Some(permit);
    for attempt in 0.. {
        let url = &urls[(i + attempt) % urls.len()];
        // Ended or failed (its replica was killed, or restarted): the next one.
        let _ = connection(i, url, &key, &mut held, &fleet, &mut permit).await;
        permit = None;
        // Spread, as the SDK's jitter spreads a failover.
        tokio::time::sleep(Duration::from_millis(10 + (i % 40) as u64)).await;
    }
}

async fn connection(
    i: usize,
    url: &str,
    key: &str,
    held: &mut u64,
    fleet: &Fleet,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
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
        version: Some(*held),
        store: None,
        at: None,
    };
    ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    // Connected: let the next client start its handshake.
    drop(permit.take());
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
        if version > *held {
            *held = version;
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

/// p50, p99 and the maximum.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// One row of the results table.
pub fn report(scenario: &str, n: usize, run: Run) {
    if run.first_by_replica.len() > 1 {
        let firsts: Vec<String> = run.first_by_replica.iter().map(|d| ms(*d)).collect();
        println!(
            "<!-- {scenario}: first delivery per replica: {} -->",
            firsts.join(", ")
        );
    }
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

/// A duration in milliseconds, as the tables show it.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Waits until flagd lists `n` clients in its fleet view.
pub async fn wait_for_fleet(api: &Api, env: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let f = api
            .call(
                reqwest::Method::GET,
                &format!("/environments/{env}/fleet"),
                Value::Null,
            )
            .await?;
        // Connected: clients of an earlier scenario linger as unreachable.
        if f["connected"].as_u64() == Some(n as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} clients connected", f["connected"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one scenario measured.
#[derive(Debug)]
pub struct Run {
    /// Per client, from the REST call until its stream delivered the new version.
    pub latencies: Vec<Duration>,
    /// flagd's resident memory growth per idle connection, KiB.
    pub kib_per_connection: f64,
    /// How long the REST call took (commit, then announce).
    pub rest: Duration,
    /// CPU time per client while the change spread (user + system, µs): flagd, clients.
    pub cpu_us_per_client: (f64, f64),
    /// With several replicas: per replica, the first of its clients to have the change
    /// (what the announcement adds is the difference from the first replica's).
    pub first_by_replica: Vec<Duration>,
}

/// A scenario: `n` clients spread over the replicas, each holding `held`; then, at
/// the moment latencies are measured from, `before` (a fault, or nothing) and the
/// change through `api`, until every client has the new version.
#[derive(Debug)]
pub struct Scenario<'a> {
    /// The environment.
    pub env: &'a str,
    /// Its SDK key.
    pub key: &'a str,
    /// Clients.
    pub n: usize,
    /// The version they hold (the head).
    pub held: u64,
    /// The change: a path and its body, POSTed.
    pub change: (&'a str, Value),
    /// Real SDK clients (`flagd_sdk::Client`) instead of protocol clients.
    pub real_sdks: bool,
}

/// Runs a scenario against replicas (`bases`, with their process ids `pids`), the
/// change made through the first.
pub async fn run_scenario(
    api: &Api,
    bases: &[String],
    pids: &[u32],
    s: Scenario<'_>,
    before: impl FnOnce(),
) -> anyhow::Result<Run> {
    let (env, key, n, held) = (s.env, s.key, s.n, s.held);
    let urls: Arc<[String]> = bases
        .iter()
        .map(|b| format!("{}/api/v1/stream", b.replacen("http://", "ws://", 1)))
        .collect();
    let fleet = Arc::new(Fleet {
        arrived: (0..n).map(|_| AtomicU64::new(0)).collect(),
        awaited: AtomicU64::new(u64::MAX),
        epoch: Instant::now(),
    });
    let mut tasks = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let bases: Arc<[String]> = bases.iter().cloned().collect();
    let spawn = |i: usize| {
        let (urls, key, fleet, gate) = (urls.clone(), key.to_owned(), fleet.clone(), gate.clone());
        let (bases, real) = (bases.clone(), s.real_sdks);
        tokio::spawn(async move {
            // Bounded concurrency while connecting, as a fleet of SDKs ramps up.
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            match real {
                true => sdk::sdk_client(i, bases, key, fleet, permit).await,
                false => client(i, urls, key, held, fleet, permit).await,
            }
        })
    };
    let rss = || -> anyhow::Result<u64> { pids.iter().map(|p| rss_kib(*p)).sum() };
    let cpu = || pids.iter().map(|p| cpu_ms(*p)).sum::<u64>();
    // The first client per replica makes it load the environment (its flag set and
    // snapshot): memory per connection is measured from there.
    let first = urls.len().min(n);
    tasks.extend((0..first).map(spawn));
    wait_for_fleet(api, env, first).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_rss = rss()?;
    tasks.extend((first..n).map(spawn));
    wait_for_fleet(api, env, n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_rss = rss()?;
    let per_conn =
        (after_rss.saturating_sub(before_rss)) as f64 / (n.saturating_sub(first).max(1)) as f64;

    fleet.awaited.store(held + 1, Ordering::SeqCst);
    let t0 = fleet.epoch.elapsed();
    let (cpu_flagd, cpu_self) = (cpu(), cpu_ms(std::process::id()));
    before();
    api.call(reqwest::Method::POST, s.change.0, s.change.1)
        .await?;
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
    let per_client = |ms: u64| ms as f64 * 1000.0 / n as f64;
    let cpu_us_per_client = (
        per_client(cpu().saturating_sub(cpu_flagd)),
        per_client(cpu_ms(std::process::id()).saturating_sub(cpu_self)),
    );
    let lat = fleet
        .arrived
        .iter()
        .map(|a| Duration::from_nanos(a.load(Ordering::SeqCst)).saturating_sub(t0))
        .collect::<Vec<Duration>>();
    let first_by_replica = (0..urls.len())
        .map(|r| {
            lat.iter()
                .skip(r)
                .step_by(urls.len())
                .min()
                .copied()
                .unwrap_or_default()
        })
        .collect();
    for t in tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Run {
        latencies: lat,
        kib_per_connection: per_conn,
        rest: t_rest,
        cpu_us_per_client,
        first_by_replica,
    })
}
