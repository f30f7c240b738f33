//! Cold starts (benchmarks.md section 9), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin cold-start -- [--flags 10000] [--versions 1000] [--runs 5]
//! ```
//!
//! - **SDK**: from `Client::builder(…).bootstrap_file(…).build()` to the first
//!   evaluation, with a bootstrap file of `--flags` flags and flagd unreachable (what an
//!   application does when it starts during an outage).
//! - **flagd**: a store with `--flags` flags and `--versions` versions is made once; then
//!   flagd (this binary re-executed as `serve`, as the load harness runs it) is started
//!   on it `--runs` times and timed from the process's start until `/readyz` answers 200,
//!   and until a first OFREP evaluation and a first SDK snapshot are served.

use std::time::{Duration, Instant};

use flagd_harness::SqliteFile;
use flagd_sdk::{Client, EvaluationContext};
use flagd_tests::load::{Api, FlagdChild, flags, list_arg, ms, serve};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2..]);
    }
    let n = list_arg(&args, "--flags", &[10_000])?[0];
    let versions = list_arg(&args, "--versions", &[1_000])?[0];
    let runs = list_arg(&args, "--runs", &[5])?[0];
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(n, versions, runs))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(n: usize, versions: usize, runs: usize) -> anyhow::Result<()> {
    // The SDK from a bootstrap file, flagd unreachable.
    let dir = SqliteFile::new();
    let file = dir.dir().join("bootstrap.json");
    std::fs::write(&file, flags(n, 50).to_string())?;
    let nowhere = format!("http://127.0.0.1:{}", flagd_harness::free_port());
    let user = EvaluationContext::new("user-1");
    let mut sdk_times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let sdk = Client::builder(nowhere.clone(), "fdsdk_none")
            .bootstrap_file(&file)
            .wait_for_first_snapshot(Duration::ZERO)
            .build()
            .await?;
        let on = sdk.enabled("flag-00001", &user);
        sdk_times.push(start.elapsed());
        anyhow::ensure!(sdk.version() == 0, "served the bootstrap file");
        std::hint::black_box(on);
        drop(sdk);
    }

    // flagd: a store made once, then started on it again and again.
    let db = SqliteFile::new();
    let key;
    {
        let flagd = FlagdChild::start(&db.url(), None)?;
        let api = Api::new(&flagd.base);
        api.environment("cold", flags(n, 50)).await?;
        for v in 2..=versions {
            let action = if v % 2 == 0 { "disable" } else { "enable" };
            api.call(
                reqwest::Method::POST,
                &format!("/environments/cold/flags/flag-00000/{action}"),
                json!({"reason": "cold-start"}),
            )
            .await?;
        }
        key = api.sdk_key("cold").await?;
    }
    let http = reqwest::Client::new();
    let (mut ready, mut ofrep, mut snapshot) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let flagd = FlagdChild::start(&db.url(), None)?;
        loop {
            let r = http.get(format!("{}/readyz", flagd.base)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "never ready");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ready.push(start.elapsed());
        let r = http
            .post(format!("{}/ofrep/v1/evaluate/flags/flag-00001", flagd.base))
            .bearer_auth(&key)
            .body(r#"{"context": {"targetingKey": "u"}}"#)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "OFREP answered {}", r.status());
        ofrep.push(start.elapsed());
        let sdk = Client::builder(flagd.base.clone(), &key).build().await?;
        anyhow::ensure!(sdk.version() as usize == versions, "the SDK has the head");
        snapshot.push(start.elapsed());
        drop(sdk);
        drop(flagd);
    }
    println!("| what | flags | versions | median of {runs} |");
    println!("|---|---:|---:|---:|");
    println!(
        "| SDK: bootstrap file to first evaluation (flagd unreachable) | {n} | – | {} |",
        ms(median(sdk_times))
    );
    println!(
        "| flagd: start to `/readyz` 200 | {n} | {versions} | {} |",
        ms(median(ready))
    );
    println!(
        "| flagd: start to a first OFREP answer | {n} | {versions} | {} |",
        ms(median(ofrep))
    );
    println!(
        "| flagd: start to an SDK holding the head | {n} | {versions} | {} |",
        ms(median(snapshot))
    );
    Ok(())
}
