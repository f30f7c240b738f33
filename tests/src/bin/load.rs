//! Propagation load harness (benchmarks.md section 2), not part of the test run:
//!
//! ```text
//! cargo run --release -p flagd-tests --bin load -- [--clients 1000,10000] [--client-threads 1]
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
//! The clients are described in `flagd_tests::load`.

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
    client_runtime(&args)?.block_on(orchestrate(&clients))
}

async fn orchestrate(clients: &[usize]) -> anyhow::Result<()> {
    let db = SqliteFile::new();
    let flagd = FlagdChild::start(&db.url(), None)?;
    let api = Api {
        base: flagd.base.clone(),
        http: reqwest::Client::new(),
    };
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
        };
        report(
            "one-flag toggle",
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
        };
        report(
            "kill switch by an Alertmanager webhook",
            n,
            run_scenario(&api, &bases, &pids, s, || {}).await?,
        );
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
        };
        report(
            "revert of 10,000 flags",
            n,
            run_scenario(&api, &bases, &pids, s, || {}).await?,
        );
    }
    Ok(())
}
