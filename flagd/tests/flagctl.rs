//! `flagctl` against a running flagd, as a pipeline and a responder use it: the real
//! flagctl and flagd binaries, a real SQLite file, real SDK instances (flagd-sdk)
//! connected over websockets for `--wait`, and the CI example script
//! (`examples/ci/canary.sh`) run by bash.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flagd_sdk::EvaluationContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const ADMIN: &str = "fd_flagctl-test-admin";

struct Flagd {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Flagd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flagd binary on a new SQLite file, on a port the system picks.
fn start() -> Flagd {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("flagd.db").display()
    );
    let log = std::fs::File::create(dir.path().join("flagd.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagd"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &db])
        .env("FLAGD_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // flagd prints the address it listens on once it serves.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(rest) = l.strip_prefix("Admin UI: ") {
                    break rest
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_owned();
                }
            }
            other => panic!("flagd exited before serving: {other:?}"),
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Flagd { child, url, dir }
}

#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} / {:?}", self.out, self.err))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "flagctl failed: {self:?}");
        self
    }
}

fn flagctl_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_flagctl"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs flagctl on `production` with `token`; the environment holds nothing else of the
/// caller's that flagctl reads.
fn flagctl(f: &Flagd, token: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_flagctl"))
        .args(args)
        .env("FLAGD_URL", &f.url)
        .env("FLAGD_TOKEN", token)
        .env("FLAGD_ENV", "production")
        .env_remove("FLAGD_CA_CERT")
        .env_remove("FLAGD_REQUEST_TIMEOUT")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `flagctl` with arguments that contain no spaces, written as one line.
fn run(f: &Flagd, token: &str, line: &str) -> Run {
    flagctl(f, token, &line.split_whitespace().collect::<Vec<_>>())
}

fn write(f: &Flagd, name: &str, doc: &Value) -> String {
    let p = f.dir.path().join(name);
    std::fs::write(&p, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    p.display().to_string()
}

/// A flag set whose `new-checkout` is a 0% canary, as a reviewed file in git would be.
fn flags_file() -> Value {
    json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"fractional": [{"var": "targetingKey"}, ["on", 0], ["off", 100]]}
            },
            "search-v2": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
        }
    })
}

fn head(f: &Flagd) -> u64 {
    run(f, ADMIN, "versions head")
        .ok()
        .out
        .trim()
        .parse()
        .unwrap()
}

/// A `ci` token for production and an SDK key, made with flagctl as an admin would.
fn ci_token_and_sdk_key(f: &Flagd) -> (String, String) {
    let t = run(f, ADMIN, "tokens create --name pipeline --role ci").ok();
    assert!(
        t.out.starts_with("fd_") && t.out.lines().count() == 1,
        "{t:?}"
    );
    assert!(
        t.err.contains("shown only this once") && t.err.contains("production"),
        "{t:?}"
    );
    let k = run(f, ADMIN, "sdk-keys create --name checkout").ok();
    assert!(k.out.starts_with("fdsdk_"), "{k:?}");
    (t.out.trim().to_owned(), k.out.trim().to_owned())
}

async fn sdks(f: &Flagd, key: &str, n: usize) -> Vec<flagd_sdk::Client> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            flagd_sdk::Client::builder(&f.url, key)
                .host(format!("web-{i}"))
                .build()
                .await
                .unwrap(),
        );
    }
    out
}

fn on_share(sdk: &flagd_sdk::Client) -> usize {
    (0..1000)
        .filter(|u| sdk.enabled("new-checkout", &EvaluationContext::new(format!("user-{u}"))))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_token_promotes_waits_for_the_fleet_and_rolls_back() {
    let f = start();
    let (ci, key) = ci_token_and_sdk_key(&f);
    let file = write(&f, "flags.json", &flags_file());
    let imported = flagctl(
        &f,
        &ci,
        &["import", &file, "--reason", "flags as code", "--json"],
    )
    .ok();
    assert_eq!(imported.json()["version"], 1);
    let fleet = sdks(&f, &key, 3).await;

    // Each step returns only once every instance has applied it: no polling needed here.
    let step = run(
        &f,
        &ci,
        "-q rollout new-checkout --variant on --percent 25 --if-version 1 --wait --timeout 30s",
    )
    .ok();
    assert_eq!(step.out, "2\n");
    assert!(fleet.iter().all(|s| s.version() == 2));
    let step = flagctl(
        &f,
        &ci,
        &[
            "--json",
            "rollout",
            "new-checkout",
            "--variant",
            "on",
            "--percent",
            "50",
            "--if-version",
            "2",
            "--reason",
            "canary 50%",
            "--wait",
        ],
    )
    .ok();
    let v = step.json();
    assert_eq!(v["version"], 3);
    assert_eq!(v["changedFlags"], json!(["new-checkout"]));
    assert_eq!(
        (
            &v["fleet"]["converged"],
            &v["fleet"]["total"],
            &v["fleet"]["applied"]
        ),
        (&json!(true), &json!(3), &json!(3))
    );
    assert!(fleet.iter().all(|s| s.version() == 3));
    let share = on_share(&fleet[0]);
    assert!((400..=600).contains(&share), "{share} of 1000 users at 50%");

    // A responder acts meanwhile; the pipeline's next step, based on version 3, is
    // refused and changes nothing.
    flagctl(
        &f,
        ADMIN,
        &["disable", "new-checkout", "--reason", "errors in checkout"],
    )
    .ok();
    let refused = run(
        &f,
        &ci,
        "rollout new-checkout --variant on --percent 100 --if-version 3",
    );
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.err.contains("409") && refused.err.contains("version 3"),
        "{refused:?}"
    );
    assert_eq!(head(&f), 4);

    // The ci role cannot flip the kill switch (403: exit 5), but can roll back.
    let denied = run(&f, &ci, "enable new-checkout --reason x");
    assert_eq!(denied.code, 5, "{denied:?}");
    assert!(denied.err.contains("403"), "{denied:?}");
    let restored = flagctl(
        &f,
        &ci,
        &[
            "restore",
            "new-checkout",
            "--from",
            "1",
            "--reason",
            "roll back the canary",
            "--if-version",
            "4",
            "--wait",
            "--timeout",
            "30s",
        ],
    )
    .ok();
    assert!(
        restored
            .out
            .contains("production: version 5 (new-checkout)"),
        "{restored:?}"
    );
    assert!(
        restored
            .out
            .contains("all 3 SDK instances applied version 5"),
        "{restored:?}"
    );
    assert!(fleet.iter().all(|s| s.version() == 5 && on_share(s) == 0));
    let then = run(&f, &ci, "flags get new-checkout --version 1").ok();
    let now = run(&f, &ci, "flags get new-checkout").ok();
    assert_eq!(then.json(), now.json());

    // A whole-set revert, waited for, in JSON.
    let reverted = flagctl(
        &f,
        &ci,
        &[
            "--json",
            "revert",
            "--to",
            "3",
            "--reason",
            "back to 50%",
            "--wait",
        ],
    )
    .ok();
    assert_eq!(reverted.json()["fleet"]["converged"], true);
    assert!(
        fleet
            .iter()
            .all(|s| s.version() == 6 && (400..=600).contains(&on_share(s)))
    );

    // The history names the pipeline, and the fleet view every instance on the head.
    let versions = run(&f, &ci, "--json versions list").ok().json();
    let rows: Vec<(u64, &str, &str)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["kind"].as_str().unwrap(),
                v["author"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (6, "revert", "pipeline"),
            (5, "revert", "pipeline"),
            (4, "toggle", "admin"),
            (3, "rollout", "pipeline"),
            (2, "rollout", "pipeline"),
            (1, "import", "pipeline"),
        ]
    );
    // The audit log, as a responder reads it during an incident.
    let audit = run(&f, &ci, "audit --flag new-checkout --since 1h")
        .ok()
        .out;
    assert!(audit.starts_with("WHEN"), "{audit}");
    let disable = audit.lines().find(|l| l.contains("flag.disable")).unwrap();
    assert!(
        disable.contains("admin") && disable.contains("errors in checkout"),
        "{audit}"
    );
    assert_eq!(
        audit.lines().filter(|l| l.contains("flag.rollout")).count(),
        2,
        "{audit}"
    );
    let mine = run(
        &f,
        &ci,
        "--json audit --actor pipeline --action flag. --limit 2",
    )
    .ok()
    .json();
    let entries = mine["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["actor"] == "pipeline"));
    assert!(mine["next"].is_u64(), "a second page: {mine}");
    let none = run(&f, &ci, "audit --since 2099-01-01T00:00:00Z").ok().out;
    assert_eq!(none.lines().count(), 1, "only the header: {none}");
    let bad = run(&f, &ci, "audit --since yesterday");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.err.contains("since"), "{bad:?}");
    let text = run(&f, &ci, "fleet").ok().out;
    assert!(
        text.starts_with("production at version 6: 3 SDK instances connected, 3 on it"),
        "{text}"
    );
    for i in 0..3 {
        assert!(text.contains(&format!("web-{i}")), "{text}");
    }
}

/// A websocket client that says hello and then never applies anything: a stuck instance.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn stuck_instance(f: &Flagd, key: &str) -> Ws {
    let mut req = format!("{}/api/v1/stream", f.url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        json!({"type": "hello", "instance": "stuck-7", "sdk": "test/1", "host": "web-stuck", "labels": {}, "version": null})
            .to_string(),
    ))
    .await
    .unwrap();
    // Read the catch-up so that flagd has registered the instance, then go silent.
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("snapshot"), "{first:?}");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_fails_after_the_timeout_naming_the_instances_that_lag() {
    let f = start();
    let (_, key) = ci_token_and_sdk_key(&f);
    let file = write(&f, "flags.json", &flags_file());
    flagctl(&f, ADMIN, &["import", &file]).ok();
    let healthy = sdks(&f, &key, 1).await;
    let mut stuck = stuck_instance(&f, &key).await;

    let r = run(
        &f,
        ADMIN,
        "disable search-v2 --reason kill --wait --timeout 1s",
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.out.contains("production: version 2 (search-v2)"),
        "the change was made: {r:?}"
    );
    assert!(
        r.err
            .contains("1 of 2 SDK instances did not apply version 2"),
        "{r:?}"
    );
    assert!(
        r.err
            .contains("stuck-7 (host web-stuck, test/1): on version -"),
        "{r:?}"
    );
    assert!(
        !r.err.contains("web-0"),
        "the healthy instance is not listed: {r:?}"
    );
    assert_eq!(healthy[0].version(), 2);

    let r = run(&f, ADMIN, "--json wait --timeout 200ms");
    assert_eq!(r.code, 1, "{r:?}");
    let v = r.json();
    assert_eq!(
        (v["converged"].clone(), v["total"].clone()),
        (json!(false), json!(2))
    );
    assert_eq!(v["lagging"][0]["instance"], "stuck-7");

    // Once it applies the version, the fleet has converged.
    stuck
        .send(Message::text(
            json!({"type": "ack", "version": 2}).to_string(),
        ))
        .await
        .unwrap();
    let r = run(&f, ADMIN, "wait --timeout 20s").ok();
    assert!(
        r.out.contains("all 2 SDK instances applied version 2"),
        "{r:?}"
    );
    let r = run(&f, ADMIN, "-q wait --version 1").ok();
    assert_eq!(r.out, "");
}

#[test]
fn flags_as_code_export_import_and_diff() {
    let f = start();
    let file = write(&f, "flags.json", &flags_file());
    flagctl(&f, ADMIN, &["import", &file, "--reason", "first import"]).ok();

    // Export, then import the export: nothing to change, no version.
    let exported = run(&f, ADMIN, "export").ok();
    assert!(
        exported.err.contains("exported production at version 1"),
        "{exported:?}"
    );
    assert_eq!(exported.json()["flags"], flags_file()["flags"]);
    let again = write(&f, "exported.json", &exported.json());
    let r = flagctl(&f, ADMIN, &["import", &again]).ok();
    assert_eq!(r.out, "production: nothing to change; still version 1\n");

    // A reviewed edit: the dry run shows it and changes nothing.
    let mut edited = flags_file();
    edited["flags"]["new-checkout"]["state"] = json!("DISABLED");
    edited["flags"].as_object_mut().unwrap().remove("search-v2");
    edited["flags"]["banner"] =
        json!({"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a"});
    let edited = write(&f, "edited.json", &edited);
    let dry = flagctl(&f, ADMIN, &["import", &edited, "--dry-run"]).ok();
    assert_eq!(
        dry.out,
        "production: importing ".to_owned()
            + &edited
            + " onto version 1 would make: 3 changes\n\
               + banner: {\"state\":\"ENABLED\",\"variants\":{\"a\":\"A\"},\"defaultVariant\":\"a\"}\n\
               ~ new-checkout\n    state: \"ENABLED\" → \"DISABLED\"\n\
               - search-v2\n"
    );
    assert_eq!(head(&f), 1);
    let dry = flagctl(
        &f,
        ADMIN,
        &[
            "--json",
            "import",
            &edited,
            "--dry-run",
            "--if-version",
            "1",
        ],
    )
    .ok();
    assert_eq!(dry.json()["changes"].as_array().unwrap().len(), 3);
    let stale = flagctl(
        &f,
        ADMIN,
        &["import", &edited, "--dry-run", "--if-version", "0"],
    );
    assert_eq!(stale.code, 3, "{stale:?}");

    // An invalid file is reported with its paths, and nothing is sent.
    let bad = write(
        &f,
        "bad.json",
        &json!({"flags": {"x": {"state": "ON", "variants": {"a": 1}, "defaultVariant": "b"}}}),
    );
    let r = flagctl(&f, ADMIN, &["import", &bad]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.err.contains("flags.x.state:") && r.err.contains("flags.x.defaultVariant:"),
        "{r:?}"
    );
    assert_eq!(head(&f), 1);

    // Based on a stale version: refused. On the head: applied, with a reason in any
    // language, and the diff shows what it did.
    let r = flagctl(&f, ADMIN, &["import", &edited, "--if-version", "0"]);
    assert_eq!(r.code, 3, "{r:?}");
    let r = flagctl(
        &f,
        ADMIN,
        &[
            "-q",
            "import",
            &edited,
            "--if-version",
            "1",
            "--reason",
            "PR #7: slå av før lansering",
        ],
    )
    .ok();
    assert_eq!(r.out, "2\n");
    let v = run(&f, ADMIN, "--json versions list --limit 1").ok().json();
    assert_eq!(v["versions"][0]["reason"], "PR #7: slå av før lansering");
    assert_eq!(v["versions"][0]["kind"], "import");
    let page = run(&f, ADMIN, "versions list --limit 1").ok().out;
    assert!(
        page.ends_with("PR #7: slå av før lansering\n(older: --before 2)\n"),
        "{page}"
    );
    let older = run(&f, ADMIN, "versions list --limit 1 --before 2")
        .ok()
        .out;
    assert!(older.contains("first import"), "{older}");
    let diff = run(&f, ADMIN, "diff 1 2").ok();
    assert!(
        diff.out
            .starts_with("production: version 1 → 2: 3 changes\n"),
        "{diff:?}"
    );
    assert!(
        diff.out
            .contains("~ new-checkout\n    state: \"ENABLED\" → \"DISABLED\"\n"),
        "{diff:?}"
    );
    let diff = run(&f, ADMIN, "--json diff 2").ok();
    assert_eq!(diff.json()["changes"], json!([]));

    // Reading: the list, one flag then and now, the history, the fleet.
    let list = run(&f, ADMIN, "flags list").ok().out;
    assert!(
        list.starts_with("production at version 2: 2 flags\nFLAG"),
        "{list}"
    );
    assert!(
        list.contains("new-checkout  DISABLED  off      on 0% / off 100%  v2 import by admin"),
        "{list}"
    );
    let then = run(&f, ADMIN, "flags get new-checkout --version 1").ok();
    assert_eq!(then.json()["state"], "ENABLED");
    let history = run(&f, ADMIN, "versions list --flag search-v2").ok().out;
    assert!(
        history.starts_with("VERSION  KIND    AUTHOR  WHEN"),
        "{history}"
    );
    assert_eq!(history.lines().count(), 3, "{history}");
    let fleet = run(&f, ADMIN, "fleet").ok().out;
    assert_eq!(
        fleet,
        "production at version 2: 0 SDK instances connected, 0 on it\n"
    );
    let r = run(&f, ADMIN, "wait").ok();
    assert!(r.out.contains("no SDK instance is connected"), "{r:?}");
}

#[test]
fn exit_codes_a_pipeline_can_branch_on() {
    let f = start();
    let file = write(&f, "flags.json", &flags_file());
    flagctl(&f, ADMIN, &["import", &file]).ok();
    let code = |token: &str, args: &[&str]| flagctl(&f, token, args);
    let line = |token: &str, line: &str| run(&f, token, line);

    // 1: refused as invalid, with the field named.
    let r = line(ADMIN, "rollout new-checkout --variant on --percent 150");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("422") && r.err.contains("percent"), "{r:?}");
    let r = line(ADMIN, "rollout new-checkout --variant maybe --percent 5");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("\"maybe\" is not a variant"), "{r:?}");
    // 2: usage.
    assert_eq!(line(ADMIN, "rollout new-checkout --percent 5").code, 2);
    assert_eq!(
        line(ADMIN, "disable new-checkout").code,
        2,
        "a reason is required"
    );
    assert_eq!(line(ADMIN, "versions head --url ftp://x").code, 2);
    let r = code(ADMIN, &["fleet", "--env", ""]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("--env"), "{r:?}");
    assert_eq!(line(ADMIN, "--timeout 5s fleet").code, 2);
    let r = line(ADMIN, "fleet --ca-cert /nonexistent/ca.pem");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.err.contains("--ca-cert /nonexistent/ca.pem: cannot read"),
        "{r:?}"
    );
    // 3: conflict.
    let r = line(ADMIN, "disable new-checkout --reason r --if-version 7");
    assert_eq!(r.code, 3, "{r:?}");
    // 4: not found, and the API's error body on stdout with --json.
    let r = line(ADMIN, "--json flags get nope");
    assert_eq!(r.code, 4, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert_eq!(line(ADMIN, "--env nowhere flags list").code, 4);
    assert_eq!(line(ADMIN, "revert --to 99 --reason r").code, 4);
    // 5: no token, a wrong one, flagd not there.
    let r = line("", "flags list");
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.contains("FLAGD_TOKEN"), "{r:?}");
    assert_eq!(line("fd_wrong", "flags list").code, 5);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = code(ADMIN, &["versions", "head", "--url", &dead]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.contains("cannot reach flagd at"), "{r:?}");
    // Nothing above changed anything.
    assert_eq!(head(&f), 1);

    // Tokens: list, revoke, and the revoked one stops working at once.
    let t = line(
        ADMIN,
        "tokens create --name tmp --role viewer --all-environments",
    )
    .ok();
    let secret = t.out.trim().to_owned();
    assert!(t.err.contains("every environment"), "{t:?}");
    assert_eq!(line(&secret, "versions head").ok().out, "1\n");
    let list = line(ADMIN, "--json tokens list").ok().json();
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tmp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    code(ADMIN, &["tokens", "revoke", &id]).ok();
    assert_eq!(line(&secret, "versions head").code, 5);
    assert_eq!(code(ADMIN, &["tokens", "revoke", &id]).code, 4);
}

/// `examples/ci/canary.sh`, the shell version of the CI examples, against flagd with SDK
/// instances connected: a promotion to 100%, a rollback on a failed health check, and a
/// pipeline that stops when someone else acted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_script_promotes_and_rolls_back() {
    let f = start();
    let (ci, key) = ci_token_and_sdk_key(&f);
    let file = write(&f, "flags.json", &flags_file());
    flagctl(&f, &ci, &["import", &file]).ok();
    let fleet = sdks(&f, &key, 2).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ci/canary.sh");
    let path = format!(
        "{}:{}",
        flagctl_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let canary = |check: &str| {
        let out = Command::new("bash")
            .arg(&script)
            .env("PATH", &path)
            .env("FLAGD_URL", &f.url)
            .env("FLAGD_TOKEN", &ci)
            .env("FLAGD_ENV", "production")
            .env("ADMIN_TOKEN", ADMIN)
            .env("FLAG", "new-checkout")
            .env("HEALTH_CHECK", check)
            .env("SOAK", "0")
            .env("WAIT_TIMEOUT", "30s")
            .env("RUN_ID", "run-42")
            .env_remove("BASE_VERSION")
            .env_remove("STEPS")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let split = |f: &Flagd| {
        run(f, ADMIN, "flags get new-checkout").ok().json()["targeting"]["fractional"].clone()
    };

    // Healthy all the way: 5, 25, 50, 100, each waited for by the fleet.
    let (code, log) = canary("true");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("promoted: on at 100% in version 5"), "{log}");
    assert_eq!(
        split(&f),
        json!([{"var": "targetingKey"}, ["on", 100], ["off", 0]])
    );
    assert!(
        fleet
            .iter()
            .all(|s| s.version() == 5 && on_share(s) == 1000)
    );
    let v = run(&f, ADMIN, "--json versions list --limit 4").ok().json();
    let reasons: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "canary run-42: on to 100%",
            "canary run-42: on to 50%",
            "canary run-42: on to 25%",
            "canary run-42: on to 5%"
        ]
    );

    // Back to 0%; then a check that fails from 50% on: rolled back to the base (6).
    run(&f, ADMIN, "rollout new-checkout --variant on --percent 0").ok();
    let (code, log) = canary("[ \"$CANARY_PERCENT\" -lt 50 ]");
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("ROLLING BACK: the health check failed at 50%"),
        "{log}"
    );
    assert!(
        log.contains("rolled back; every SDK instance has it"),
        "{log}"
    );
    assert_eq!(
        split(&f),
        json!([{"var": "targetingKey"}, ["on", 0], ["off", 100]])
    );
    assert_eq!(head(&f), 10);
    assert!(fleet.iter().all(|s| s.version() == 10 && on_share(s) == 0));
    let last = run(&f, ADMIN, "--json versions list --limit 1").ok().json();
    assert_eq!(last["versions"][0]["kind"], "revert");
    assert_eq!(last["versions"][0]["author"], "pipeline");

    // A responder disables the flag during the first soak, and the check fails: the
    // pipeline does not overwrite the responder (exit 3).
    let (code, log) = canary(
        "FLAGD_TOKEN=$ADMIN_TOKEN flagctl -q disable new-checkout --reason 'responder: errors' >/dev/null; false",
    );
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("not rolled back"), "{log}");
    let flag = run(&f, ADMIN, "flags get new-checkout").ok().json();
    assert_eq!(flag["state"], "DISABLED");
    assert_eq!(head(&f), 12);
}

/// Every flagctl command the GitHub and GitLab examples call exists.
#[test]
fn the_ci_examples_call_commands_that_exist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ci");
    let mut seen = 0;
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        for line in text.lines() {
            let Some(at) = line.find("flagctl ") else {
                continue;
            };
            let words: Vec<&str> = line[at + 8..]
                .split_whitespace()
                .take_while(|w| {
                    w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
                })
                .take(2)
                .collect();
            if words.is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let mut args = words.clone();
            args.push("--help");
            let out = Command::new(env!("CARGO_BIN_EXE_flagctl"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: `flagctl {}` is not a command",
                words.join(" ")
            );
            seen += 1;
        }
    }
    assert!(seen >= 6, "the examples call flagctl: {seen}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_flagctl"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "3  conflict",
        "4  not found",
        "5  flagd unreachable",
        "FLAGD_URL, FLAGD_TOKEN, FLAGD_ENV",
    ] {
        assert!(text.contains(line), "{text}");
    }
}
