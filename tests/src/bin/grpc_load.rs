//! What a change costs to reach OpenFeature flagd providers over gRPC (benchmarks.md,
//! section 10), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin grpc-load -- [--flags 10,1000,10000] [--clients 100] [--changes 20]
//! ```
//!
//! Each size runs three times: RPC providers alone, in-process providers alone, then
//! both at once (what parsing whole sets on the same two cores costs the others).
//!
//! flagd serves on its own runtime (two worker threads, the machine's cores); `--clients`
//! in-process providers (`flagd.sync.v1.SyncFlags`, each message's whole set parsed as
//! JSON, as a provider does before it swaps) and as many RPC providers
//! (`flagd.evaluation.v2.EventStream`) are tonic clients on another. Each change is a
//! kill switch or its enable through the REST API; measured from just before the
//! request to each client's receipt (events) or to the parsed set (sync). Also: the
//! REST call's own time, and one `ResolveBoolean` round trip against OFREP's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagd::grpc::proto::evaluation_v2 as v2;
use flagd::grpc::proto::sync;
use flagd_harness::{ADMIN_TOKEN as ADMIN, InProcess};
use flagd_tests::load::{flags, list_arg, ms, percentiles};
use serde_json::{Value, json};
use tonic::Request;
use tonic::transport::Channel;

/// When each client had each version.
type Seen = Arc<Mutex<HashMap<u64, Vec<Instant>>>>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes = list_arg(&args, "--flags", &[10, 1_000, 10_000])?;
    let clients = list_arg(&args, "--clients", &[100])?[0];
    let changes = list_arg(&args, "--changes", &[20])?[0];
    println!(
        "| flags | set size | providers | change → event p50 / p99 | change → parsed set p50 / p99 | REST call p50 | ResolveBoolean p50 | OFREP p50 |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for n in sizes {
        for (sync, events) in [(false, true), (true, false), (true, true)] {
            run(n, clients, changes, sync, events)?;
        }
    }
    Ok(())
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {key}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn run(
    n: usize,
    clients: usize,
    changes: usize,
    with_sync: bool,
    with_events: bool,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let options = flagd::server::Options {
        grpc: Some(flagd::grpc::Options {
            // A 10,000-flag set is about 1.5 MB: within the default.
            ..flagd::grpc::Options::on(vec![listener])
        }),
        ..flagd::server::Options::default()
    };
    let server = InProcess::new().options(options).start_thread();
    let base = server.base();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let http = reqwest::Client::new();
        let api = |path: &str| format!("{base}/api/v1/environments/production{path}");
        let mut doc = flags(n, 50);
        doc["flags"]["kill-me"] =
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
        http.put(api("/flags")).bearer_auth(ADMIN).body(doc.to_string()).send().await?.error_for_status()?;
        let key: Value = http.post(api("/sdk-keys")).bearer_auth(ADMIN).send().await?.json().await?;
        let key = key["secret"].as_str().unwrap_or_default().to_owned();

        let sync_seen: Seen = Arc::default();
        let event_seen: Seen = Arc::default();
        let mut size = 0;
        // One HTTP/2 connection per client, as separate application processes have.
        for _ in 0..clients {
            let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
            let mut s = sync::flag_sync_service_client::FlagSyncServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20);
            if size == 0 {
                let all = s.fetch_all_flags(with_key(sync::FetchAllFlagsRequest::default(), &key)).await?;
                size = all.into_inner().flag_configuration.len();
            }
            if with_sync {
            let mut stream = s.sync_flags(with_key(sync::SyncFlagsRequest::default(), &key)).await?.into_inner();
            let seen = sync_seen.clone();
            tokio::spawn(async move {
                // The set names no version: the first is version 1 (the seed), and
                // each change waits for every client, so each is sent every version.
                let mut v = 0;
                while let Ok(Some(m)) = stream.message().await {
                    let Ok(doc) = serde_json::from_str::<Value>(&m.flag_configuration) else { break };
                    let at = Instant::now();
                    v += 1;
                    std::hint::black_box(&doc);
                    if let Ok(mut s) = seen.lock() {
                        s.entry(v).or_default().push(at);
                    }
                }
            });
            }
            if !with_events {
                continue;
            }
            let mut e = v2::service_client::ServiceClient::new(channel);
            let mut events = e.event_stream(with_key(v2::EventStreamRequest {}, &key)).await?.into_inner();
            let seen = event_seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(m)) = events.message().await {
                    let at = Instant::now();
                    let v = m
                        .data
                        .as_ref()
                        .and_then(|d| d.fields.get("flagSetVersion"))
                        .and_then(|v| match v.kind {
                            Some(prost_types::value::Kind::NumberValue(n)) => Some(n as u64),
                            _ => None,
                        })
                        .unwrap_or(0);
                    if let Ok(mut s) = seen.lock() {
                        s.entry(v).or_default().push(at);
                    }
                }
            });
        }
        let count = |seen: &Seen, v: u64| seen.lock().map(|s| s.get(&v).map_or(0, Vec::len)).unwrap_or(0);
        let (want_sync, want_events) = (if with_sync { clients } else { 0 }, if with_events { clients } else { 0 });
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&sync_seen, 1) < want_sync || count(&event_seen, 1) < want_events {
            anyhow::ensure!(Instant::now() < deadline, "clients did not all connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (mut to_event, mut to_set, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..changes {
            let action = if i % 2 == 0 { "disable" } else { "enable" };
            let start = Instant::now();
            let r: Value = http
                .post(api(&format!("/flags/kill-me/{action}")))
                .bearer_auth(ADMIN)
                .body(json!({"reason": "grpc-load"}).to_string())
                .send()
                .await?
                .json()
                .await?;
            rest.push(start.elapsed());
            let v = r["version"].as_u64().unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(&sync_seen, v) < want_sync || count(&event_seen, v) < want_events {
                anyhow::ensure!(Instant::now() < deadline, "version {v} did not reach every client");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let (Ok(s), Ok(e)) = (sync_seen.lock(), event_seen.lock()) {
                to_set.extend(s.get(&v).into_iter().flatten().map(|t| *t - start));
                to_event.extend(e.get(&v).into_iter().flatten().map(|t| *t - start));
            }
        }

        // One evaluation, gRPC against OFREP (same client machine, same head).
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        let mut c = v2::service_client::ServiceClient::new(channel);
        let ctx = flagd::grpc::proto::evaluation_v2::ResolveBooleanRequest { flag_key: "kill-me".into(), context: None };
        let (mut grpc, mut ofrep) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let start = Instant::now();
            c.resolve_boolean(with_key(ctx.clone(), &key)).await?;
            grpc.push(start.elapsed());
            let start = Instant::now();
            http.post(format!("{base}/ofrep/v1/evaluate/flags/kill-me"))
                .bearer_auth(&key)
                .body("{}")
                .send()
                .await?
                .bytes()
                .await?;
            ofrep.push(start.elapsed());
        }
        let both = |v: Vec<Duration>| {
            if v.is_empty() {
                return "–".to_owned();
            }
            let (p50, p99, _) = percentiles(v);
            format!("{} / {}", ms(p50), ms(p99))
        };
        let one = |v: Vec<Duration>| ms(percentiles(v).0);
        let who = match (with_sync, with_events) {
            (true, true) => format!("{clients} in-process + {clients} RPC"),
            (true, false) => format!("{clients} in-process"),
            _ => format!("{clients} RPC"),
        };
        println!(
            "| {n} | {:.0} KB | {who} | {} | {} | {} | {} | {} |",
            size as f64 / 1000.0,
            both(to_event),
            both(to_set),
            one(rest),
            one(grpc),
            one(ofrep)
        );
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
