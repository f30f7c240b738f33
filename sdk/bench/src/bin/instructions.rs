//! Instructions per evaluation (`docs/benchmarks.md` section 1), counted by valgrind's
//! callgrind, which unlike a timer is the same on every run and machine of one kind:
//!
//! ```text
//! cargo build --release -p flagd-bench --features peers --bin instructions
//! target/release/instructions            # needs valgrind (apt-get install valgrind)
//! ```
//!
//! Our engine is measured the way an application calls it, through
//! [`flagd_sdk::Client::enabled`] (a client serving a bootstrap file), and also on the
//! [`flagd_core::Snapshot`] directly, which shows what the client's lock-free load of
//! its current snapshot adds. With `--features peers`, Unleash's Yggdrasil runs the
//! same scenarios on its equivalent toggles.
//!
//! Each (engine, scenario) runs twice under callgrind, with [`FEW`] and [`MANY`]
//! evaluations; the difference of the two totals divided by the difference of the
//! counts is the cost of one evaluation, without start-up and loading. The loop around
//! each call (a counter and an index into the 1,024 contexts) is counted too, as in the
//! criterion benchmark.

use std::hint::black_box;
use std::process::Command;

use flagd_bench::{Engine, Ours, S1_FLAG, S2_FLAG, S3_FLAG, USERS, User, s4_key_sequence, users};

/// Evaluations in the short run.
const FEW: u64 = 2_000;
/// Evaluations in the long run.
const MANY: u64 = 22_000;

const SCENARIOS: [&str; 4] = ["S1", "S2", "S3", "S4"];

/// Our engine through the SDK's client, as an application calls it.
struct ViaClient {
    small: flagd_sdk::Client,
    large: flagd_sdk::Client,
    // The client's background task lives on this runtime, which is not driven while
    // the evaluations run: nothing but them is counted.
    _rt: tokio::runtime::Runtime,
    _dir: std::path::PathBuf,
}

impl ViaClient {
    fn new() -> Self {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("a runtime: {e}"),
        };
        let dir = std::env::temp_dir().join(format!("flagd-instructions-{}", std::process::id()));
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text))
            {
                panic!("{}: {e}", path.display());
            }
            path
        };
        let small_file = write("small.json", flagd_bench::flagd_doc());
        let large_file = write("large.json", flagd_bench::flagd_s4_doc());
        let client = |file: std::path::PathBuf| {
            rt.block_on(
                // Nothing listens there: the client serves its bootstrap file.
                flagd_sdk::Client::builder("http://127.0.0.1:9", "fdsdk_instructions")
                    .bootstrap_file(file)
                    .wait_for_first_snapshot(std::time::Duration::ZERO)
                    .build(),
            )
            .unwrap_or_else(|e| panic!("a client: {e}"))
        };
        let (small, large) = (client(small_file), client(large_file));
        Self {
            small,
            large,
            _rt: rt,
            _dir: dir,
        }
    }
}

impl Drop for ViaClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Runs `n` evaluations of `scenario` with `enabled` (small set, large set).
fn run_loop<C>(n: u64, scenario: &str, ctxs: &[C], enabled: impl Fn(bool, &str, &C) -> bool) {
    let keys = s4_key_sequence();
    let mask = keys.len() - 1;
    let flag = match scenario {
        "S1" => S1_FLAG,
        "S2" => S2_FLAG,
        "S3" => S3_FLAG,
        _ => "",
    };
    let mut on = 0u64;
    for i in 0..n as usize {
        let ctx = &ctxs[i & (USERS - 1)];
        let hit = if flag.is_empty() {
            enabled(true, black_box(keys[i & mask].as_str()), black_box(ctx))
        } else {
            enabled(false, black_box(flag), black_box(ctx))
        };
        on += u64::from(hit);
    }
    black_box(on);
}

fn run(engine: &str, scenario: &str, n: u64) {
    let users: Vec<User> = users();
    match engine {
        "client" => {
            let c = ViaClient::new();
            let ctxs: Vec<_> = users.iter().map(Ours::context).collect();
            run_loop(n, scenario, &ctxs, |large, key, ctx| {
                if large {
                    c.large.enabled(key, ctx)
                } else {
                    c.small.enabled(key, ctx)
                }
            });
        }
        "snapshot" => {
            let (small, large) = (Ours::small(), Ours::large());
            let ctxs: Vec<_> = users.iter().map(Ours::context).collect();
            run_loop(n, scenario, &ctxs, |l, key, ctx| {
                if l {
                    large.enabled(key, ctx)
                } else {
                    small.enabled(key, ctx)
                }
            });
        }
        #[cfg(feature = "peers")]
        "yggdrasil" => {
            use flagd_bench::yggdrasil::Yggdrasil;
            let (small, large) = (Yggdrasil::small(), Yggdrasil::large());
            let ctxs: Vec<_> = users.iter().map(Yggdrasil::context).collect();
            run_loop(n, scenario, &ctxs, |l, key, ctx| {
                if l {
                    large.enabled(key, ctx)
                } else {
                    small.enabled(key, ctx)
                }
            });
        }
        other => panic!("no engine {other:?}"),
    }
}

/// The instructions callgrind counted for one run of this program.
fn counted(engine: &str, scenario: &str, n: u64) -> Result<u64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .args(["run", engine, scenario, &n.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e} (apt-get install valgrind)"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{engine} {scenario}: {log}"));
    }
    log.lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().parse::<u64>())
        })
        .ok_or_else(|| format!("no total in callgrind's output: {log}"))?
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("run") {
        let n = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(FEW);
        run(&args[2], &args[3], n);
        return Ok(());
    }
    let mut engines = vec!["client", "snapshot"];
    if cfg!(feature = "peers") {
        engines.push("yggdrasil");
    }
    println!("| scenario | {} |", engines.join(" | "));
    println!("|---|{}", "---:|".repeat(engines.len()));
    for scenario in SCENARIOS {
        let mut row = Vec::new();
        for engine in &engines {
            let few = counted(engine, scenario, FEW)?;
            let many = counted(engine, scenario, MANY)?;
            row.push(format!("{}", (many.saturating_sub(few)) / (MANY - FEW)));
        }
        println!("| {scenario} | {} |", row.join(" | "));
    }
    Ok(())
}
