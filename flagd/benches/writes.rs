//! Write latency (benchmarks.md section 3), over real HTTP, on SQLite and PostgreSQL:
//! a toggle in an environment of 10 flags vs 10,000 flags (the ratio should stay near
//! 1), a revert of a 10,000-flag set, and writes per second with 50 concurrent writers.
//!
//! `cargo bench -p flagd --bench writes` (PostgreSQL is measured when installed).

#[path = "../tests/api/support.rs"]
#[allow(dead_code, unreachable_pub)]
mod support;

use std::time::{Duration, Instant};

use flagd_harness::Postgres;
use reqwest::Method;
use serde_json::{Map, Value, json};
use support::{ADMIN, Backend, Server, rollout_flag};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (percentile(&d, 0.5), percentile(&d, 0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn doc(n: usize, percent: u64) -> Value {
    let flags: Map<String, Value> = (0..n)
        .map(|i| (format!("flag-{i:05}"), rollout_flag(percent)))
        .collect();
    json!({"flags": flags})
}

async fn toggles(s: &Server, env: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let action = if i % 2 == 0 { "disable" } else { "enable" };
        let t = Instant::now();
        s.call(
            Method::POST,
            &format!("/environments/{env}/flags/flag-00000/{action}"),
            Some(ADMIN),
            Some(json!({"reason": "bench"})),
            &[],
        )
        .await
        .expect(200);
        out.push(t.elapsed());
    }
    out
}

/// Kill switches of flags `range` of a protected environment, one each.
async fn kills(s: &Server, env: &str, range: std::ops::Range<usize>) -> Vec<Duration> {
    let mut out = Vec::with_capacity(range.len());
    for i in range {
        let t = Instant::now();
        s.call(
            Method::POST,
            &format!("/environments/{env}/flags/flag-{i:05}/disable"),
            Some(ADMIN),
            Some(json!({"reason": "bench"})),
            &[],
        )
        .await
        .expect(200);
        out.push(t.elapsed());
    }
    out
}

/// The sum and count of flagd's store time of whole writes (lock to commit), from
/// its metrics.
async fn store_writes(s: &Server) -> anyhow::Result<(f64, f64)> {
    let root = s.base.trim_end_matches("/api/v1");
    let text = reqwest::get(format!("{root}/metrics"))
        .await?
        .text()
        .await?;
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        sample(r#"flagd_store_operation_duration_seconds_sum{operation="write"}"#),
        sample(r#"flagd_store_operation_duration_seconds_count{operation="write"}"#),
    ))
}

/// Six reverts of the 10,000-flag environment `revert`, alternately to the two
/// versions, each changing every flag: their times over HTTP, and the mean of the
/// store's part (the write, lock to commit; flagd then reloads its head).
async fn reverts(s: &Server, versions: [u64; 2]) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let before = store_writes(s).await?;
    let mut out = Vec::new();
    for i in 0..6 {
        let to = versions[i % 2];
        let t = Instant::now();
        let r = s
            .post(
                "/environments/revert/revert",
                json!({"version": to, "reason": "bench"}),
            )
            .await
            .expect(200);
        out.push(t.elapsed());
        assert_eq!(
            r.body["changedFlags"].as_array().map(Vec::len),
            Some(10_000)
        );
    }
    let after = store_writes(s).await?;
    let mean = (after.0 - before.0) / (after.1 - before.1).max(1.0);
    Ok((out, Duration::from_secs_f64(mean.max(0.0))))
}

async fn bench(backend: Backend) -> anyhow::Result<()> {
    let s = Server::start(&backend).await?;
    for (env, n) in [("small", 10), ("large", 10_000)] {
        s.post("/environments", json!({"key": env}))
            .await
            .expect(201);
        s.put(&format!("/environments/{env}/flags"), doc(n, 5))
            .await
            .expect(200);
    }
    // A protected environment (issue 18): its kill switches are break-glass, each
    // opening a review in the version's transaction; 320 flags, each disabled once
    // (turning one back on would need an approval).
    s.post("/environments", json!({"key": "guarded"}))
        .await
        .expect(201);
    s.put("/environments/guarded/flags", doc(320, 5))
        .await
        .expect(200);
    s.put(
        "/environments/guarded/approval-policy",
        json!({"protected": true, "approvals": 2}),
    )
    .await
    .expect(200);
    toggles(&s, "small", 20).await; // warm-up
    toggles(&s, "large", 20).await;
    kills(&s, "guarded", 0..20).await;
    // Interleaved, so that all see the same database size and background work.
    let (mut small, mut large, mut guarded) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..30 {
        small.extend(toggles(&s, "small", 10).await);
        large.extend(toggles(&s, "large", 10).await);
        guarded.extend(kills(&s, "guarded", 20 + round * 10..30 + round * 10).await);
    }
    let (small50, small99) = summary(small);
    let (large50, large99) = summary(large);
    let (guarded50, guarded99) = summary(guarded);

    // Revert of a 10,000-flag set: every flag differs between versions 1 and 2.
    s.post("/environments", json!({"key": "revert"}))
        .await
        .expect(201);
    s.put("/environments/revert/flags", doc(10_000, 5))
        .await
        .expect(200);
    s.put("/environments/revert/flags", doc(10_000, 50))
        .await
        .expect(200);
    let (times, rev_store) = reverts(&s, [1, 2]).await?;
    let (rev50, rev99) = summary(times);
    // The worst case of the store's lines (`flagd/src/store/lines.rs`): the versions
    // reverted to are in a line that itself rewrote every flag since its own revert
    // (versions 9 and 10, two imports after the reverts above), so each revert copies
    // the whole set instead of pointing at it.
    s.put("/environments/revert/flags", doc(10_000, 20))
        .await
        .expect(200);
    s.put("/environments/revert/flags", doc(10_000, 30))
        .await
        .expect(200);
    let (times, worst_store) = reverts(&s, [9, 10]).await?;
    let (worst50, worst99) = summary(times);

    // 50 concurrent writers, 20 toggles each, no If-Match (all apply to head).
    let s = std::sync::Arc::new(s);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let action = if i % 2 == 0 { "disable" } else { "enable" };
                s.call(
                    Method::POST,
                    &format!("/environments/small/flags/flag-{:05}/{action}", w % 10),
                    Some(ADMIN),
                    Some(json!({"reason": "bench"})),
                    &[],
                )
                .await
                .expect(200);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let wps = 1000.0 / t.elapsed().as_secs_f64();

    println!(
        "| {} | {} / {} | {} / {} | {:.2} | {} / {} | {} / {}, store {} | {} / {}, store {} | {:.0} |",
        backend.name(),
        ms(small50),
        ms(small99),
        ms(large50),
        ms(large99),
        large50.as_secs_f64() / small50.as_secs_f64(),
        ms(guarded50),
        ms(guarded99),
        ms(rev50),
        ms(rev99),
        ms(rev_store),
        ms(worst50),
        ms(worst99),
        ms(worst_store),
        wps
    );
    if let Ok(s) = std::sync::Arc::try_unwrap(s) {
        s.stop().await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful either.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pg = Postgres::start()?.map(std::sync::Arc::new);
    println!(
        "| store | toggle, 10 flags (p50 / p99) | toggle, 10,000 flags (p50 / p99) | ratio of p50s | kill switch, protected environment (p50 / p99) | revert of 10,000 flags (p50 / p99, store's part mean) | the same, worst case | writes/s, 50 writers |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    rt.block_on(bench(Backend::Sqlite))?;
    if let Some(pg) = &pg {
        rt.block_on(bench(Backend::Postgres(pg.clone())))?;
        pg.stop();
    } else {
        println!("(PostgreSQL is not installed: only SQLite measured)");
    }
    Ok(())
}
