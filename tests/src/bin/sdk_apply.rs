//! What a change costs in an application process (benchmarks.md section 8), not part of
//! the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin sdk-apply -- [--flags 10,10000] [--sdks 1] [--changes 200]
//! ```
//!
//! Starts flagd on SQLite in a separate process (this binary re-executed as `serve`),
//! connects `--sdks` real SDK clients (`flagd-sdk`: each decodes the frame, applies the
//! change to what it holds and compiles the snapshot it then serves) in this process to
//! an environment of `--flags` flags, and toggles one flag `--changes` times. Per change
//! and SDK: the time from the REST call until that SDK serves the new version
//! (`Client::version`), and the REST call alone; p50, p99 and max over all of them. The
//! difference between the two environment sizes is what the size of the set costs the
//! SDK per change. And the first remote (OFREP) evaluation after each change, which
//! flagd answers from its own compiled head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flagd_harness::SqliteFile;
use flagd_sdk::Client;
use flagd_tests::load::{Api, FlagdChild, cpu_ms, flags, list_arg, ms, percentiles, serve};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2..]);
    }
    let sizes = list_arg(&args, "--flags", &[10, 10_000])?;
    let sdks = list_arg(&args, "--sdks", &[1])?;
    let changes = list_arg(&args, "--changes", &[200])?[0];
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&sizes, &sdks, changes))
}

async fn run(sizes: &[usize], sdks: &[usize], changes: usize) -> anyhow::Result<()> {
    println!(
        "| flags | SDKs | changes | REST call → SDK serves it: p50 | p99 | max | REST call p50 | first OFREP call after it: p50 | p99 | CPU per change: flagd | this process |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        for &m in sdks {
            let db = SqliteFile::new();
            let flagd = FlagdChild::start(&db.url(), None)?;
            let api = Api::new(&flagd.base);
            api.environment("apply", flags(n, 50)).await?;
            let key = api.sdk_key("apply").await?;
            let mut clients = Vec::with_capacity(m);
            for i in 0..m {
                clients.push(
                    Client::builder(flagd.base.clone(), &key)
                        .host(format!("app-{i}"))
                        .build()
                        .await?,
                );
            }
            let clients: Arc<[Client]> = clients.into();
            let mut spread = Vec::with_capacity(changes * m);
            let mut rest = Vec::with_capacity(changes);
            let mut ofrep = Vec::with_capacity(changes);
            let ofrep_url = format!("{}/ofrep/v1/evaluate/flags/flag-00001", flagd.base);
            // CPU from here on: flagd's (commit, fan-out, OFREP) and this process's (the
            // SDKs applying each change, and the harness's HTTP calls, the same for every
            // size): what the set's size costs each side per change, less noisy than
            // the latencies on a shared machine.
            let (flagd_cpu, own_cpu) = (cpu_ms(flagd.pid()), cpu_ms(std::process::id()));
            for c in 0..changes {
                let action = if c % 2 == 0 { "disable" } else { "enable" };
                let mut watching: Vec<_> = clients.iter().map(Client::subscribe).collect();
                for w in &mut watching {
                    w.mark_unchanged();
                }
                // The only writer: the change makes the next version. The SDKs are
                // watched while the call is in flight, since they may serve the change
                // before its answer arrives.
                let v = clients[0].version() + 1;
                let start = Instant::now();
                let call = {
                    let api = api.clone();
                    let path = format!("/environments/apply/flags/flag-00000/{action}");
                    tokio::spawn(async move {
                        let r = api
                            .call(reqwest::Method::POST, &path, json!({"reason": "sdk-apply"}))
                            .await;
                        (r, start.elapsed())
                    })
                };
                for (sdk, w) in clients.iter().zip(watching.iter_mut()) {
                    while sdk.version() < v {
                        tokio::time::timeout(Duration::from_secs(30), w.changed())
                            .await
                            .context("an SDK did not apply the change within 30 s")??;
                    }
                    spread.push(start.elapsed());
                }
                let (answer, took) = call.await?;
                anyhow::ensure!(
                    answer?["version"].as_u64() == Some(v),
                    "the change did not make version {v}"
                );
                rest.push(took);
                let asked = Instant::now();
                let r = api
                    .http
                    .post(&ofrep_url)
                    .bearer_auth(&key)
                    .body(r#"{"context": {"targetingKey": "u"}}"#)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "OFREP answered {}", r.status());
                r.bytes().await?;
                ofrep.push(asked.elapsed());
            }
            let per_change = |ms: u64| format!("{} µs", ms * 1000 / changes.max(1) as u64);
            let cpu = (
                per_change(cpu_ms(flagd.pid()).saturating_sub(flagd_cpu)),
                per_change(cpu_ms(std::process::id()).saturating_sub(own_cpu)),
            );
            let (p50, p99, max) = percentiles(spread);
            let (rest50, _, _) = percentiles(rest);
            let (o50, o99, _) = percentiles(ofrep);
            println!(
                "| {n} | {m} | {changes} | {} | {} | {} | {} | {} | {} | {} | {} |",
                ms(p50),
                ms(p99),
                ms(max),
                ms(rest50),
                ms(o50),
                ms(o99),
                cpu.0,
                cpu.1
            );
            drop(clients);
            drop(flagd);
        }
    }
    Ok(())
}
