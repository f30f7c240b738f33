//! Propagation across replicas (benchmarks.md section 6), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin cluster-load -- [--clients 10000] [--replicas 3]
//! ```
//!
//! Starts a PostgreSQL and a Redis (the test harness's, on loopback), then, in one run:
//! 1. one flagd on PostgreSQL with N stream clients: a toggle and a 10,000-flag revert,
//!    each timed from the REST call to every client's delivery;
//! 2. R replicas (separate processes) on another database of the same PostgreSQL and
//!    on Redis, N/R clients on each, every change made through the first replica: the
//!    same two scenarios, so that what the announcement adds is the difference;
//! 3. Redis killed just before a toggle: every client still gets it, from the replicas'
//!    comparison with the store every --follow-interval (1 s);
//! 4. Redis back; a replica killed (SIGKILL) just before a toggle: its clients fail over
//!    to the others, resuming from the version they hold; timed from the kill.

use anyhow::Context;
use flagd_harness::{Postgres, Redis};
use flagd_tests::load::{
    Api, FlagdChild, Scenario, client_runtime, head, header, report, run_scenario, seed, serve,
    toggle_change,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2..]);
    }
    let clients = flagd_tests::load::clients(&args, &[10_000])?;
    let replicas: usize = match args.iter().position(|a| a == "--replicas") {
        Some(i) => args
            .get(i + 1)
            .context("--replicas needs a number")?
            .parse()?,
        None => 3,
    };
    anyhow::ensure!(replicas >= 2, "--replicas: at least 2");
    client_runtime(&args)?.block_on(orchestrate(&clients, replicas))
}

struct Deployment {
    api: Api,
    flagds: Vec<FlagdChild>,
    toggle_key: String,
    revert_key: String,
}

impl Deployment {
    async fn start(db: &str, redis: Option<&Redis>, replicas: usize) -> anyhow::Result<Self> {
        let url = redis.map(Redis::url);
        let flagds = (0..replicas)
            .map(|i| {
                FlagdChild::start(
                    db,
                    url.as_deref()
                        .map(|u| (u, ["r1", "r2", "r3", "r4", "r5"][i % 5])),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let api = Api::new(&flagds[0].base);
        let (toggle_key, revert_key) = seed(&api).await?;
        Ok(Self {
            api,
            flagds,
            toggle_key,
            revert_key,
        })
    }

    fn bases(&self) -> Vec<String> {
        self.flagds.iter().map(|f| f.base.clone()).collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.flagds.iter().map(FlagdChild::pid).collect()
    }

    /// A toggle through the first replica; `before` runs at the moment timing starts.
    async fn toggle(&self, label: &str, n: usize, before: impl FnOnce()) -> anyhow::Result<()> {
        let held = head(&self.api, "toggle").await?;
        let path = toggle_change(held);
        let s = Scenario {
            env: "toggle",
            key: &self.toggle_key,
            n,
            held,
            change: (&path, json!({"reason": "load"})),
            real_sdks: false,
        };
        let run = run_scenario(&self.api, &self.bases(), &self.pids(), s, before).await?;
        report(label, n, run);
        Ok(())
    }

    async fn revert(&self, label: &str, n: usize) -> anyhow::Result<()> {
        let held = head(&self.api, "revert").await?;
        let s = Scenario {
            env: "revert",
            key: &self.revert_key,
            n,
            held,
            change: (
                "/environments/revert/revert",
                json!({"version": held - 1, "reason": "load"}),
            ),
            real_sdks: false,
        };
        let run = run_scenario(&self.api, &self.bases(), &self.pids(), s, || {}).await?;
        report(label, n, run);
        Ok(())
    }
}

async fn orchestrate(clients: &[usize], replicas: usize) -> anyhow::Result<()> {
    let pg =
        Postgres::start()?.context("PostgreSQL is not installed (apt-get install postgresql)")?;
    let redis = Redis::start()?.context("Redis is not installed (apt-get install redis-server)")?;
    header();
    for &n in clients {
        let one = Deployment::start(&pg.database().await?, None, 1).await?;
        one.toggle("toggle, 1 replica", n, || {}).await?;
        one.revert("revert of 10,000 flags, 1 replica", n).await?;
        drop(one);

        let many = Deployment::start(&pg.database().await?, Some(&redis), replicas).await?;
        let label = |what: &str| format!("{what}, {replicas} replicas + Redis");
        many.toggle(&label("toggle"), n, || {}).await?;
        many.revert(&label("revert of 10,000 flags"), n).await?;
        many.toggle(
            &format!("toggle, {replicas} replicas, Redis killed at t=0"),
            n,
            || redis.kill(),
        )
        .await?;
        redis.resume()?;
        // Every replica subscribed again (its backoff is at most 5 s).
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        let mut many = many;
        let mut victim = many.flagds.pop().context("a replica to kill")?;
        // Its clients are still in the spread: they fail over when it dies.
        let bases = {
            let mut b = many.bases();
            b.push(victim.base.clone());
            b
        };
        let pids = {
            let mut p = many.pids();
            p.push(victim.pid());
            p
        };
        let held = head(&many.api, "toggle").await?;
        let path = toggle_change(held);
        let s = Scenario {
            env: "toggle",
            key: &many.toggle_key,
            n,
            held,
            change: (&path, json!({"reason": "load"})),
            real_sdks: false,
        };
        let run = run_scenario(&many.api, &bases, &pids, s, || victim.kill()).await?;
        report(
            &format!("toggle, a replica of {replicas} killed at t=0"),
            n,
            run,
        );
    }
    Ok(())
}
