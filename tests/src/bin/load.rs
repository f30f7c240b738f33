//! Propagation load harness (benchmarks.md section 2), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin load -- [--clients 1000,10000] [--client-threads 1] [--real-sdks]
//! ```
//!
//! Starts flagd on SQLite in a separate process (this binary re-executed as `serve`),
//! connects N stream clients from this process, makes a change through the REST API,
//! and records for every client the time from the REST call until its stream delivered
//! the new version. Scenarios: a one-flag toggle, the same kill switch made by an
//! Alertmanager webhook (`POST /api/v1/alertmanager`: from the webhook's arrival to N/N
//! clients), and a revert of a 10,000-flag set.
//! Also reports how long the REST call took, the CPU time flagd and the clients spent
//! per client while the change spread (from /proc, 10 ms ticks: coarse at N = 1,000),
//! and flagd's resident memory per idle connection (measured after the first client
//! has made flagd load the environment).
//!
//! The clients are described in `flagd_tests::load`. With `--real-sdks` they are real
//! SDK clients (`flagd-sdk`), which compile what they receive; the revert is then left
//! out, since every one of N SDKs would hold its own 10,000-flag set.

use flagd_harness::SqliteFile;
use flagd_tests::load::{
    Api, FlagdChild, Scenario, alert_kill, client_runtime, head, header, report, run_scenario,
    seed, serve, toggle_change,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2..]);
    }
    let clients = flagd_tests::load::clients(&args, &[1000, 10_000])?;
    let real = args.iter().any(|a| a == "--real-sdks");
    client_runtime(&args)?.block_on(orchestrate(&clients, real))
}

async fn orchestrate(clients: &[usize], real_sdks: bool) -> anyhow::Result<()> {
    let kind = if real_sdks { " (real SDKs)" } else { "" };
    let db = SqliteFile::new();
    let flagd = FlagdChild::start(&db.url(), None)?;
    let api = Api::new(&flagd.base);
    let (toggle_key, revert_key) = seed(&api).await?;
    let (bases, pids) = ([flagd.base.clone()], [flagd.pid()]);
    header();
    for &n in clients {
        let held = head(&api, "toggle").await?;
        let change = (toggle_change(held), json!({"reason": "load"}));
        let s = Scenario {
            env: "toggle",
            key: &toggle_key,
            n,
            held,
            change: (&change.0, change.1),
            real_sdks,
        };
        report(
            &format!("one-flag toggle{kind}"),
            n,
            run_scenario(&api, &bases, &pids, s, || {}).await?,
        );
        // The kill switch again, made by an alert: the flag is turned on first.
        let held = head(&api, "toggle").await?;
        if toggle_change(held).ends_with("/enable") {
            api.call(
                reqwest::Method::POST,
                &toggle_change(held),
                json!({"reason": "load"}),
            )
            .await?;
        }
        let held = head(&api, "toggle").await?;
        let s = Scenario {
            env: "toggle",
            key: &toggle_key,
            n,
            held,
            change: ("/alertmanager", alert_kill("toggle", "flag-00000", n)),
            real_sdks,
        };
        report(
            &format!("kill switch by an Alertmanager webhook{kind}"),
            n,
            run_scenario(&api, &bases, &pids, s, || {}).await?,
        );
        if real_sdks {
            continue;
        }
        let held = head(&api, "revert").await?;
        let s = Scenario {
            env: "revert",
            key: &revert_key,
            n,
            held,
            change: (
                "/environments/revert/revert",
                json!({"version": held - 1, "reason": "load"}),
            ),
            real_sdks,
        };
        report(
            "revert of 10,000 flags",
            n,
            run_scenario(&api, &bases, &pids, s, || {}).await?,
        );
    }
    Ok(())
}
