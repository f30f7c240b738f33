//! `flagctl` against a running flagd, as a pipeline and a responder use it: the real
//! flagctl binary, a real flagd server (in this process) on a real SQLite file, real SDK instances (flagd-sdk)
//! connected over websockets for `--wait`, and the CI example script
//! (`examples/ci/canary.sh`) run by bash.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flagd_harness::{ADMIN_TOKEN as ADMIN, InProcess, ThreadServer};
use flagd_sdk::EvaluationContext;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

/// A real flagd server on a new SQLite file, on a port the system picks, served from
/// a thread of this process (flagctl is the binary under test; the server is flagd's
/// own `server::run`, the code its binary runs). Stopped when dropped.
struct Flagd {
    url: String,
    /// Where a test writes the files it hands to flagctl.
    dir: tempfile::TempDir,
    _server: ThreadServer,
}

fn start() -> Flagd {
    start_with(flagd::server::Options::default())
}

/// `start` with more of flagd's options.
fn start_with(options: flagd::server::Options) -> Flagd {
    let server = InProcess::new().options(options).start_thread();
    Flagd {
        url: server.base(),
        dir: tempfile::tempdir().unwrap(),
        _server: server,
    }
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

    // The ci role cannot flip the kill switch (403: exit 7), but can roll back.
    let denied = run(&f, &ci, "enable new-checkout --reason x");
    assert_eq!(denied.code, 7, "{denied:?}");
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
    assert_eq!(bad.code, 2, "a usage error: {bad:?}");
    assert!(
        bad.err.contains("since") && bad.err.contains("2h"),
        "{bad:?}"
    );
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
    assert_eq!(r.code, 6, "committed, not applied everywhere: {r:?}");
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
    assert_eq!(r.code, 6, "{r:?}");
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
    // The last page says nothing about an older one (before, "older: --before 1").
    assert!(!older.contains("older:"), "{older}");
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
    // A key flagd would refuse (flagd_core::check_key) is a usage error, sent nowhere.
    for key in [".", "..", "", "tab\there", &"k".repeat(257)] {
        let r = code(ADMIN, &["disable", key, "--reason", "r"]);
        assert_eq!(r.code, 2, "{key:?}: {r:?}");
        let r = code(ADMIN, &["flags", "get", key]);
        assert_eq!(r.code, 2, "{key:?}: {r:?}");
    }
    let r = code(ADMIN, &["flags", "get", ".."]);
    assert!(r.err.contains("cannot be addressed in a URL"), "{r:?}");
    let r = code(ADMIN, &["versions", "list", "--flag", &"k".repeat(300)]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("at most 256 bytes"), "{r:?}");
    // 4 at once: waiting for a version that does not exist (the timeout is not reached:
    // it would end in 6).
    let r = line(ADMIN, "wait --version 999 --timeout 30s");
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.err
            .contains("production has no version 999: its head is version 1"),
        "{r:?}"
    );
    // 7: no token, a wrong one (401); 5: flagd not there.
    let r = line("", "flags list");
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.err.contains("FLAGD_TOKEN"), "{r:?}");
    assert_eq!(line("fd_wrong", "flags list").code, 7);
    assert_eq!(line("fd_wrong", "wait --timeout 30s").code, 7);
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
    let r = line(&secret, "versions head");
    assert_eq!(
        r.code, 7,
        "a revoked token is unauthorized, not unreachable: {r:?}"
    );
    assert!(r.err.contains("401"), "{r:?}");
    assert_eq!(code(ADMIN, &["tokens", "revoke", &id]).code, 4);

    // `--since` takes how long ago or an RFC 3339 time; anything else is usage (2),
    // with both forms shown.
    let r = line(ADMIN, "audit --since yesterday");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("2h") && r.err.contains("RFC 3339"), "{r:?}");
    line(ADMIN, "audit --since 2h").ok();
    line(ADMIN, "audit --since 2026-01-01T00:00:00Z").ok();

    // Emptying the environment takes an explicit --empty (the API: "empty": true).
    let before = line(ADMIN, "versions head").ok().out;
    let r = line(ADMIN, "revert --to 0 --reason r");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("--empty"), "{r:?}");
    assert_eq!(
        line(ADMIN, "versions head").ok().out,
        before,
        "nothing changed"
    );
    line(ADMIN, "revert --to 0 --reason emptied --empty").ok();
    let flags = line(ADMIN, "--json flags list").ok().json();
    assert_eq!(flags["flags"].as_array().map(Vec::len), Some(0), "{flags}");
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci/canary.sh");
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ci");
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
        "6  committed, but not applied",
        "7  unauthorized",
        "--allow-unreachable",
        "FLAGD_URL, FLAGD_TOKEN, FLAGD_ENV",
        // What --json does with errors (they are on stdout too, as the README says).
        "errors included",
    ] {
        assert!(text.contains(line), "{text}");
    }
}

/// Set (to flagd's URL) only in an SDK process; see `sdk_process`.
const SDK_PROCESS_URL: &str = "FLAGCTL_TEST_SDK_PROCESS_URL";

/// Not a test of its own: the body of an SDK instance in a process of its own, which a
/// test can freeze (SIGSTOP) as a hung host would be: its socket stays open, and nothing
/// answers. The test binary runs itself with only this test selected and the URL, SDK
/// key and host in its environment; run as a test, it does nothing. (The example
/// service, `examples/checkout-service`, belongs to another package: cargo does not
/// build it for these tests.)
#[test]
fn sdk_process() {
    let Ok(url) = std::env::var(SDK_PROCESS_URL) else {
        return;
    };
    let key = std::env::var("FLAGCTL_TEST_SDK_KEY").unwrap();
    let host = std::env::var("FLAGCTL_TEST_SDK_HOST").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sdk = flagd_sdk::Client::builder(url, key)
            .host(host)
            .build()
            .await
            .unwrap();
        // Subscribed before the first line, so that no version goes unreported.
        let mut changes = sdk.subscribe();
        println!("sdk-process version {}", sdk.version());
        while changes.changed().await.is_ok() {
            println!("sdk-process version {}", sdk.version());
        }
    });
}

/// An SDK instance in a process of its own (`sdk_process`), and the versions it applies.
struct SdkProcess {
    child: Child,
    versions: std::sync::mpsc::Receiver<u64>,
    host: String,
}

impl SdkProcess {
    fn start(f: &Flagd, key: &str, host: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sdk_process",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(SDK_PROCESS_URL, &f.url)
            .env("FLAGCTL_TEST_SDK_KEY", key)
            .env("FLAGCTL_TEST_SDK_HOST", host)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, versions) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // libtest's "test sdk_process ... " may precede the first line.
            const SAYS: &str = "sdk-process version ";
            for l in lines.map_while(Result::ok) {
                if let Some(at) = l.find(SAYS) {
                    let _ = tx.send(l[at + SAYS.len()..].trim().parse().unwrap_or(0));
                }
            }
        });
        Self {
            child,
            versions,
            host: host.to_owned(),
        }
    }

    /// Waits (at most 30 s) until the instance reports version `v` or a later one.
    fn applied(&self, v: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.versions.recv_timeout(left) {
                Ok(got) if got >= v => return,
                Ok(_) => {}
                Err(e) => panic!("{} did not report version {v}: {e}", self.host),
            }
        }
    }

    /// `kill -STOP` or `kill -CONT`.
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.child.id());
    }
}

impl Drop for SdkProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet entry of the instance on `host`.
fn instance_on(f: &Flagd, host: &str) -> Value {
    let fleet = run(f, ADMIN, "--json fleet").ok().json();
    fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["host"] == host)
        .unwrap_or_else(|| panic!("no instance on {host}: {fleet}"))
        .clone()
}

/// The false all-clear: an instance that hangs after the bad release lost its stream
/// without a goodbye, and still serves the bad version. flagd remembers it, unreachable;
/// flagctl counts it as not applied until it reconnects or someone forgets it.
#[test]
fn a_hung_instance_is_not_converged_until_it_is_back_or_forgotten() {
    // Three silent heartbeats close a half-open stream: 600 ms here.
    let f = start_with(flagd::server::Options {
        heartbeat: std::time::Duration::from_millis(200),
        ..Default::default()
    });
    let (_, key) = ci_token_and_sdk_key(&f);
    let file = write(&f, "flags.json", &flags_file());
    flagctl(&f, ADMIN, &["import", &file]).ok();
    let healthy = SdkProcess::start(&f, &key, "web-ok");
    let hung = SdkProcess::start(&f, &key, "web-hung");
    healthy.applied(1);
    hung.applied(1);
    // The bad release, applied by both.
    run(
        &f,
        ADMIN,
        "disable search-v2 --reason release-42 --wait --timeout 30s",
    )
    .ok();
    healthy.applied(2);
    hung.applied(2);
    let id = instance_on(&f, "web-hung")["instance"]
        .as_str()
        .unwrap()
        .to_owned();

    hung.signal("STOP");
    let r = run(
        &f,
        ADMIN,
        "revert --to 1 --reason roll-back --wait --timeout 2s",
    );
    assert_eq!(r.code, 6, "committed, not applied everywhere: {r:?}");
    assert!(r.out.contains("production: version 3"), "{r:?}");
    assert!(
        r.err
            .contains("1 of 2 SDK instances did not apply version 3"),
        "{r:?}"
    );
    assert!(r.err.contains(&format!("{id} (host web-hung, ")), "{r:?}");
    assert!(!r.err.contains("web-ok"), "{r:?}");
    healthy.applied(3);

    // flagd closes the frozen stream within a second; the instance stays, unreachable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let gone = loop {
        let i = instance_on(&f, "web-hung");
        if i["state"] == "unreachable" {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "still connected: {i}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(gone["appliedVersion"], 2);
    let since = gone["unreachableSince"].as_str().unwrap().to_owned();
    let r = run(&f, ADMIN, "wait --timeout 300ms");
    assert_eq!(r.code, 6, "no false all-clear: {r:?}");
    assert!(
        r.err
            .contains("1 of 2 SDK instances did not apply version 3"),
        "{r:?}"
    );
    assert!(
        r.err.contains(&format!(
            "{id} (host web-hung, flagd-sdk-rust/{}): unreachable since {since}, last applied v2",
            env!("CARGO_PKG_VERSION")
        )),
        "{r:?}"
    );
    assert!(r.err.contains("flagctl fleet forget"), "{r:?}");
    let v = run(&f, ADMIN, "--json wait --timeout 100ms");
    assert_eq!(v.code, 6, "{v:?}");
    let v = v.json();
    assert_eq!((&v["converged"], &v["total"]), (&json!(false), &json!(2)));
    assert_eq!(
        (&v["lagging"][0]["instance"], &v["lagging"][0]["state"]),
        (&json!(id), &json!("unreachable"))
    );
    let fleet = run(&f, ADMIN, "fleet").ok().out;
    assert!(
        fleet.starts_with("production at version 3: 2 SDK instances, 1 unreachable, 1 on it\n"),
        "{fleet}"
    );
    let row = fleet.lines().find(|l| l.contains("web-hung")).unwrap();
    assert!(
        row.contains(&format!("unreachable since {since}")),
        "{fleet}"
    );

    // Asked not to count it: done, and it is still named.
    let r = run(&f, ADMIN, "wait --allow-unreachable --timeout 30s").ok();
    assert!(
        r.out
            .contains("production: 1 of 2 SDK instances applied version 3"),
        "{r:?}"
    );
    assert!(
        r.err.contains("not counted (--allow-unreachable)") && r.err.contains(&id),
        "{r:?}"
    );

    // A connected instance is not forgotten (it would vanish from the fleet view).
    let ok_id = instance_on(&f, "web-ok")["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = flagctl(&f, ADMIN, &["fleet", "forget", &ok_id]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("is connected; not forgotten"), "{r:?}");
    // Forgotten: no longer counted; forgetting it again is not found.
    let r = flagctl(&f, ADMIN, &["fleet", "forget", &id]).ok();
    assert_eq!(r.out, format!("production: forgot SDK instance {id}\n"));
    let again = flagctl(&f, ADMIN, &["fleet", "forget", &id]);
    assert_eq!(again.code, 4, "{again:?}");
    let r = run(&f, ADMIN, "wait --timeout 30s").ok();
    assert!(
        r.out.contains("the one SDK instance applied version 3"),
        "{r:?}"
    );

    // Thawed, it reconnects as itself and applies the revert (it may read the revert
    // left in its socket's buffer first, so wait for it to be back in the fleet).
    hung.signal("CONT");
    hung.applied(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !run(&f, ADMIN, "fleet").ok().out.contains("web-hung") {
        assert!(std::time::Instant::now() < deadline, "it did not reconnect");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = run(&f, ADMIN, "wait --timeout 30s").ok();
    assert!(
        r.out.contains("all 2 SDK instances applied version 3"),
        "{r:?}"
    );
    let back = instance_on(&f, "web-hung");
    assert_eq!(
        (&back["instance"], &back["state"]),
        (&json!(id), &json!("connected"))
    );
}

/// Any key flagd accepts can be listed, read and changed: characters that mean
/// something in a URL are percent-encoded, and a long key is a wide column, not a panic.
#[test]
fn keys_with_url_characters_are_listed_read_and_disabled() {
    let f = start();
    let long = "k".repeat(256);
    let keys = [
        "a/b",
        "what?",
        "#anchor",
        "100%",
        "a%2Fb",
        "with space",
        "?x=1&y#z",
        "grå ✓",
        "..a",
        &long,
    ];
    let flag =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    let doc = json!({"flags": keys.iter().map(|k| (k.to_string(), flag.clone())).collect::<serde_json::Map<_, _>>()});
    let file = write(&f, "keys.json", &doc);
    flagctl(&f, ADMIN, &["import", &file]).ok();

    let list = run(&f, ADMIN, "flags list").ok().out;
    assert!(
        list.starts_with("production at version 1: 10 flags\n"),
        "{list}"
    );
    for k in keys {
        let row = list
            .lines()
            .find(|l| l.starts_with(&format!("{k} ")))
            .unwrap_or_else(|| panic!("{k:?} not listed: {list}"));
        assert!(row.contains("ENABLED"), "{row}");
    }
    for (n, k) in keys.iter().enumerate() {
        assert_eq!(
            flagctl(&f, ADMIN, &["flags", "get", k]).ok().json()["state"],
            "ENABLED",
            "{k:?}"
        );
        let r = flagctl(&f, ADMIN, &["-q", "disable", k, "--reason", "r"]).ok();
        assert_eq!(r.out, format!("{}\n", n + 2), "{k:?}");
        assert_eq!(
            flagctl(&f, ADMIN, &["flags", "get", k]).ok().json()["state"],
            "DISABLED",
            "{k:?}"
        );
        let history = flagctl(&f, ADMIN, &["--json", "versions", "list", "--flag", k])
            .ok()
            .json();
        assert_eq!(history["versions"][0]["version"], n as u64 + 2, "{k:?}");
    }
    let list = run(&f, ADMIN, "flags list").ok().out;
    assert_eq!(list.matches("DISABLED").count(), keys.len(), "{list}");
}

/// `flagctl undo N`: the wrong row at 3 a.m. is undone alone; a conflict with a later
/// change is refused (exit 3) naming it, shown by --dry-run, and forced on request.
/// `--if-flag-version` guards one flag's step against changes of that flag only.
#[test]
fn undo_one_change_and_guard_one_flag() {
    let f = start();
    let flag = |percent: u64| {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"fractional": [["on", percent], ["off", 100 - percent]]}})
    };
    // Each import changes only what differs: one flag per version.
    let set = |flags: Value| {
        let file = write(&f, "set.json", &json!({ "flags": flags }));
        run(&f, ADMIN, &format!("import {file} --reason step")).ok();
    };
    set(json!({"a": flag(10)})); // v1
    set(json!({"a": flag(10), "b": flag(10)})); // v2
    set(json!({"a": flag(50), "b": flag(10)})); // v3: the bad change
    set(json!({"a": flag(50), "b": flag(50)})); // v4: unrelated, later
    let plan = run(&f, ADMIN, "undo 3 --dry-run").ok();
    assert!(
        plan.out.contains("flags.a") && plan.out.contains("restore"),
        "{plan:?}"
    );
    assert_eq!(head(&f), 4, "a dry run writes nothing");
    let done = flagctl(
        &f,
        ADMIN,
        &["undo", "3", "--reason", "v3 broke checkout", "--json"],
    )
    .ok();
    assert_eq!(done.json()["version"], 5, "{done:?}");
    assert_eq!(done.json()["changedFlags"], json!(["a"]));
    let a = run(&f, ADMIN, "flags get a --json").ok().json();
    assert_eq!(a["targeting"]["fractional"][0][1], 10, "{a}");
    let b = run(&f, ADMIN, "flags get b --json").ok().json();
    assert_eq!(
        b["targeting"]["fractional"][0][1], 50,
        "the later change stays: {b}"
    );

    // v2 created b; v4 changed it again.
    let plan = run(&f, ADMIN, "undo 2 --dry-run").ok();
    assert!(
        plan.out.contains("flags.b was changed again by v4"),
        "{plan:?}"
    );
    let refused = flagctl(&f, ADMIN, &["undo", "2", "--reason", "b was a mistake"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.err.contains("v4") && refused.err.contains("--force"),
        "{refused:?}"
    );
    assert_eq!(head(&f), 5);
    flagctl(
        &f,
        ADMIN,
        &["undo", "2", "--reason", "b was a mistake", "--force"],
    )
    .ok();
    assert_eq!(run(&f, ADMIN, "flags get b").code, 4, "b is gone");
    let usage = flagctl(&f, ADMIN, &["undo", "3"]);
    assert_eq!(usage.code, 2, "a reason is required: {usage:?}");

    // The guard: a was last changed by v5 (the undo); v6 removed b, v7 adds it back.
    set(json!({"a": flag(10), "b": flag(20)}));
    let step = |guard: &str| {
        flagctl(
            &f,
            ADMIN,
            &[
                "rollout",
                "a",
                "--variant",
                "on",
                "--percent",
                "25",
                "--reason",
                "canary step",
                "--if-flag-version",
                guard,
            ],
        )
    };
    let stale = step("3");
    assert_eq!(stale.code, 3, "{stale:?}");
    assert!(stale.err.contains("v5"), "{stale:?}");
    step("5").ok();
    let misuse = flagctl(
        &f,
        ADMIN,
        &[
            "revert",
            "--to",
            "1",
            "--reason",
            "x",
            "--if-flag-version",
            "1",
        ],
    );
    assert_eq!(misuse.code, 2, "{misuse:?}");
}

/// `flagctl triggers`: a URL made for a monitoring tool fires the kill switch with no
/// token, is listed without its secret, and stops working once revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_url_for_a_monitoring_tool() {
    let f = start();
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let made = flagctl(
        &f,
        ADMIN,
        &[
            "triggers",
            "create",
            "--flag",
            "new-checkout",
            "--action",
            "disable",
            "--name",
            "sentry",
        ],
    )
    .ok();
    let url = made.out.trim().to_owned();
    assert!(
        url.starts_with(&f.url) && url.contains("/api/v1/triggers/fdtr_"),
        "{made:?}"
    );
    assert!(made.err.contains("shown only this once"), "{made:?}");
    let r = reqwest::Client::new()
        .post(&url)
        .body(r#"{"title": "Sentry: checkout errors"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let flag = run(&f, ADMIN, "flags get new-checkout --json").ok().json();
    assert_eq!(flag["state"], "DISABLED");
    let list = run(&f, ADMIN, "triggers list").ok();
    assert!(
        list.out.contains("sentry") && !list.out.contains("never") && !list.out.contains("fdtr_"),
        "{list:?}"
    );
    let id = run(&f, ADMIN, "triggers list --json").ok().json()["triggers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&f, ADMIN, &format!("triggers revoke {id}")).ok();
    let r = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let bad = flagctl(
        &f,
        ADMIN,
        &[
            "triggers",
            "create",
            "--flag",
            "new-checkout",
            "--action",
            "delete",
        ],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// An admin allows alerts to revert production, a token for Alertmanager is made, and
/// what its alert did is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_policy_and_what_alerts_did() {
    let f = start();
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let shown = run(&f, ADMIN, "alerts policy").ok();
    assert!(
        shown.out.contains("actions: disable") && shown.out.contains("the defaults"),
        "{shown:?}"
    );
    let set = run(
        &f,
        ADMIN,
        "alerts set-policy --actions disable,revert --flags new-checkout --lookback 5m",
    )
    .ok();
    assert!(
        set.out.contains("actions: disable, revert") && set.out.contains("lookback: 300s"),
        "{set:?}"
    );
    let policy = run(&f, ADMIN, "alerts policy --json").ok().json();
    assert_eq!(policy["policy"]["flags"], json!(["new-checkout"]));
    assert_eq!(policy["policy"]["updatedBy"], "admin");
    let bad = run(&f, ADMIN, "alerts set-policy --actions delete");
    assert_eq!(bad.code, 2, "{bad:?}");
    let token = run(
        &f,
        ADMIN,
        "tokens create --name alertmanager --role alertmanager --limit-env production",
    )
    .ok()
    .out
    .trim()
    .to_owned();
    let hook = json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "NewCheckoutFailing",
        "flagd_environment": "production", "flagd_flag": "new-checkout"},
        "startsAt": "2026-12-01T10:00:00Z", "fingerprint": "abc"}]});
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/alertmanager", f.url))
        .bearer_auth(&token)
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = run(&f, ADMIN, "alerts list").ok();
    assert!(
        list.out.contains("NewCheckoutFailing")
            && list.out.contains("applied")
            && list.out.contains("new-checkout"),
        "{list:?}"
    );
    let flag = run(&f, ADMIN, "flags get new-checkout --json").ok().json();
    assert_eq!(flag["state"], "DISABLED");
}

/// A receiver on loopback that answers every request `200 ok` and keeps the bodies.
async fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            keep.lock().unwrap().push(text[end + 4..].to_owned());
                            let _ = conn
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

/// `flagctl channels`: a Slack channel made, listed without its secret, tested, told of
/// a kill switch, its history read, deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_channels() {
    let mut options = flagd::server::Options::default();
    options.notify.allow_private_addresses = true;
    options.notify.poll_interval = std::time::Duration::from_millis(100);
    let f = start_with(options);
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let (port, got) = receiver().await;
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/secretpart1234");
    let id = flagctl(
        &f,
        ADMIN,
        &[
            "channels",
            "create",
            "--kind",
            "slack",
            "--webhook-url",
            &url,
            "-q",
        ],
    )
    .ok()
    .out
    .trim()
    .to_owned();
    let list = run(&f, ADMIN, "channels list").ok();
    assert!(
        list.out.contains(&id) && list.out.contains("…1234") && !list.out.contains("secretpart"),
        "{list:?}"
    );
    assert!(list.out.contains("kill-switch,revert"), "{list:?}");
    let t = run(&f, ADMIN, &format!("channels test {id}")).ok();
    assert!(t.out.contains("delivered"), "{t:?}");
    run(&f, ADMIN, "disable new-checkout --reason incident").ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !got
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.contains("new-checkout disabled"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let d = run(&f, ADMIN, &format!("channels deliveries {id} --json"))
            .ok()
            .json();
        let statuses: Vec<&str> = d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["status"].as_str().unwrap())
            .collect();
        if statuses == ["delivered", "delivered"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{d}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = run(&f, ADMIN, &format!("channels deliveries {id}")).ok();
    assert!(
        text.out.contains("kill-switch") && text.out.contains("test"),
        "{text:?}"
    );
    let bad = flagctl(
        &f,
        ADMIN,
        &[
            "channels",
            "create",
            "--kind",
            "feishu",
            "--webhook-url",
            &url,
        ],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.err.contains("secret"), "{bad:?}");
    run(&f, ADMIN, &format!("channels delete {id}")).ok();
    assert!(!run(&f, ADMIN, "channels list").ok().out.contains(&id));
}

/// A release plan from the command line: created with --step (its first step applied
/// at once), shown with its history, paused and resumed, approved, then a second one
/// from a file aborted with rollback; a bad step is a usage error naming it.
#[test]
fn a_release_plan_from_the_command_line() {
    let f = start_with(flagd::server::Options {
        plan_interval: Duration::from_millis(100),
        ..Default::default()
    });
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let (ci, _) = ci_token_and_sdk_key(&f);
    let id = run(
        &f,
        &ci,
        "-q plan create new-checkout --variant on --step 10:1s --step 50:approval --step 100",
    )
    .ok()
    .out
    .trim()
    .to_owned();
    let share = |f: &Flagd| {
        run(f, ADMIN, "flags get new-checkout").ok().json()["targeting"]["fractional"][1][1].clone()
    };
    assert_eq!(share(&f), 10, "the first step at once");
    let shown = run(&f, ADMIN, &format!("plan show {id}")).ok().out;
    assert!(
        shown.contains("running, step 1 of 3") && shown.contains("created"),
        "{shown}"
    );
    run(&f, &ci, &format!("plan pause {id} --reason look")).ok();
    let listed = run(&f, ADMIN, "plan list --active").ok().out;
    assert!(
        listed.contains(&id) && listed.contains("paused"),
        "{listed}"
    );
    run(&f, &ci, &format!("plan resume {id}")).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let shows = |what: &str| {
        while !run(&f, ADMIN, &format!("plan show {id}"))
            .ok()
            .out
            .contains(what)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the plan never showed {what:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    shows("waiting for an approval");
    assert_eq!(share(&f), 50);
    run(&f, &ci, &format!("plan approve {id} --reason ok")).ok();
    shows("completed");
    assert_eq!(share(&f), 100);

    let plan = write(
        &f,
        "plan.json",
        &json!({"variant": "off", "steps": [{"percent": 40, "hold": "1h"}, {"percent": 100}]}),
    );
    let r = run(
        &f,
        &ci,
        &format!("--json plan create new-checkout --file {plan} --reason back"),
    )
    .ok();
    let id = r.json()["plan"]["id"].as_str().unwrap().to_owned();
    run(
        &f,
        &ci,
        &format!("plan abort {id} --rollback --reason stop"),
    )
    .ok();
    assert_eq!(share(&f), 100, "the flag as it was before the second plan");
    let bad = run(&f, &ci, "plan create new-checkout --variant on --step soon");
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.err.contains("--step soon"), "{bad:?}");
}

/// Scheduled changes from the command line: a kill switch in a second, listed while
/// pending, applied in the name of whoever scheduled it; a revert scheduled and
/// cancelled; a usage error for a rollout without its flag.
#[test]
fn scheduled_changes_from_the_command_line() {
    let f = start_with(flagd::server::Options {
        plan_interval: Duration::from_millis(100),
        ..Default::default()
    });
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let id = flagctl(
        &f,
        ADMIN,
        &[
            "-q",
            "schedule",
            "create",
            "disable",
            "new-checkout",
            "--in",
            "1s",
            "--reason",
            "campaign over",
        ],
    )
    .ok()
    .out
    .trim()
    .to_owned();
    let listed = run(&f, ADMIN, "schedule list --pending").ok().out;
    assert!(
        listed.contains(&id) && listed.contains("disable"),
        "{listed}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !run(&f, ADMIN, "schedule list").ok().out.contains("applied") {
        assert!(std::time::Instant::now() < deadline, "never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let flag = run(&f, ADMIN, "flags get new-checkout").ok().json();
    assert_eq!(flag["state"], "DISABLED");
    let revert = flagctl(
        &f,
        ADMIN,
        &[
            "-q", "schedule", "create", "revert", "--to", "1", "--in", "1h", "--reason", "later",
        ],
    )
    .ok()
    .out
    .trim()
    .to_owned();
    let c = run(&f, ADMIN, &format!("schedule cancel {revert} --reason no")).ok();
    assert!(c.out.contains("cancelled"), "{c:?}");
    let bad = run(
        &f,
        ADMIN,
        "schedule create rollout --in 1m --variant on --percent 5",
    );
    assert_eq!(bad.code, 2, "{bad:?}");
}

/// A person's personal token, made as they would in the admin UI: an admin creates the
/// person, they sign in with their password and create a token with their own role.
async fn personal_token(f: &Flagd, login: &str, role: &str) -> String {
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", f.url);
    let password = format!("{login} has a long password");
    let made = http
        .post(format!("{api}/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"login": login, "role": role, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let signed = http
        .post(format!("{api}/session"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = signed.json::<Value>().await.unwrap()["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = http
        .post(format!("{api}/tokens"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .json(&json!({"name": format!("{login}-cli"), "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 201);
    let body: Value = t.json().await.unwrap();
    assert_eq!(body["token"]["createdBy"], login);
    body["secret"].as_str().unwrap().to_owned()
}

/// Approvals from the command line: protect production, propose a change, have it
/// refused to its author and approved by two others, then applied; a responder's kill
/// switch needs no approval but opens a review another person acknowledges.
#[tokio::test(flavor = "multi_thread")]
async fn change_requests_and_reviews_from_the_command_line() {
    let f = start();
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let alice = personal_token(&f, "alice", "editor").await;
    let bob = personal_token(&f, "bob", "editor").await;
    let carol = personal_token(&f, "carol", "editor").await;
    let dave = personal_token(&f, "dave", "responder").await;
    let f = std::sync::Arc::new(f);
    let g = f.clone();
    tokio::task::spawn_blocking(move || {
        let f = &*g;
        let p = run(f, ADMIN, "request policy --protected true --approvals 2").ok();
        assert!(p.out.contains("production: protected (2 approvals"), "{p:?}");
        let def = write(
            f,
            "canary.json",
            &json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                    "targeting": {"fractional": [{"var": "targetingKey"}, ["on", 10], ["off", 90]]}}),
        );
        let id = flagctl(
            f,
            &alice,
            &["-q", "request", "create", "--title", "canary to 10%", "--set", &format!("new-checkout={def}")],
        )
        .ok()
        .out
        .trim()
        .to_owned();
        let own = run(f, &alice, &format!("request approve {id}"));
        assert_ne!(own.code, 0, "{own:?}");
        assert!(own.err.contains("other people"), "{own:?}");
        run(f, &bob, &format!("request approve {id}")).ok();
        let shown = run(f, ADMIN, &format!("request show {id}")).ok().out;
        assert!(shown.contains("open (1 of 2 approvals)") && shown.contains("bob approved"), "{shown}");
        let done = run(f, &carol, &format!("request approve {id} -m lgtm")).ok().out;
        assert!(done.contains("applied as version"), "{done}");
        let listed = run(f, ADMIN, "request list --state applied").ok().out;
        assert!(listed.contains(&id) && listed.contains("alice"), "{listed}");

        // A kill switch needs no approval, but a reason; its review is acknowledged.
        run(f, &dave, "disable new-checkout --reason errors").ok();
        let reviews = run(f, ADMIN, "review list --open").ok().out;
        assert!(reviews.contains("dave") && reviews.contains("flag.disable"), "{reviews}");
        let v = head(f);
        let mine = run(f, &dave, &format!("review ack {v}"));
        assert_ne!(mine.code, 0, "{mine:?}");
        let acked = run(f, &bob, &format!("review ack {v} --note PM-1")).ok().out;
        assert!(acked.contains("acknowledged by bob"), "{acked}");
        // An unapproved edit is refused, with what to do instead.
        let direct = run(f, &alice, &format!("import {file} --reason direct"));
        assert_ne!(direct.code, 0, "{direct:?}");
        assert!(direct.err.contains("change-requests"), "{direct:?}");
        // The pipeline's way (examples/ci/github-actions.yml): the reviewed file as a
        // change request by the ci token, applied on its last approval.
        let (ci, _) = ci_token_and_sdk_key(f);
        let policy = run(f, &ci, "--json request policy").ok().out;
        assert!(policy.contains("\"protected\": true"), "{policy}");
        let id = run(f, &ci, &format!("-q request create --document {file} --title PR-88"))
            .ok()
            .out
            .trim()
            .to_owned();
        run(f, &bob, &format!("request approve {id}")).ok();
        let applied = run(f, &alice, &format!("request approve {id}")).ok().out;
        assert!(applied.contains("by pipeline: applied"), "{applied}");
    })
    .await
    .unwrap();
}

/// An official OpenFeature flagd provider (here a gRPC sync client, as in-process
/// providers connect) cannot acknowledge: `--wait` does not call it applied. It ends as
/// soon as nothing else lags and the provider was sent the version (exit 6, naming it),
/// or succeeds with `--allow-unacknowledged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_names_providers_that_cannot_acknowledge() {
    use flagd::grpc::proto::sync::{
        SyncFlagsRequest, flag_sync_service_client::FlagSyncServiceClient,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let f = start_with(flagd::server::Options {
        grpc: Some(flagd::grpc::Options::on(vec![listener])),
        ..flagd::server::Options::default()
    });
    let (_ci, key) = ci_token_and_sdk_key(&f);
    let file = write(&f, "flags.json", &flags_file());
    run(&f, ADMIN, &format!("import {file} --reason seed")).ok();
    let mut client = FlagSyncServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(SyncFlagsRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut stream = client.sync_flags(req).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let f2 = &f;
    let r = tokio::task::spawn_blocking({
        let url = f2.url.clone();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_flagctl"))
                .args([
                    "disable",
                    "search-v2",
                    "--reason",
                    "incident",
                    "--wait",
                    "--timeout",
                    "60s",
                ])
                .env("FLAGD_URL", url)
                .env("FLAGD_TOKEN", ADMIN)
                .env("FLAGD_ENV", "production")
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8(out.stderr).unwrap())
        }
    })
    .await
    .unwrap();
    // The provider is sent the new set; flagctl stops waiting then, not at 60 s.
    let next = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
    assert!(matches!(next, Ok(Ok(Some(_)))), "{r:?}");
    assert_eq!(r.0, Some(6), "{r:?}");
    assert!(r.1.contains("was sent to 1 provider (OpenFeature flagd providers over gRPC, which cannot acknowledge it)"), "{r:?}");
    assert!(
        r.1.contains("sent version 2, not acknowledged") && r.1.contains("flagd.sync.v1"),
        "{r:?}"
    );
    assert!(r.1.contains("--allow-unacknowledged"), "{r:?}");

    let ok = tokio::task::spawn_blocking({
        let url = f.url.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_flagctl"))
                .args(["wait", "--allow-unacknowledged", "--timeout", "30s"])
                .env("FLAGD_URL", url)
                .env("FLAGD_TOKEN", ADMIN)
                .env("FLAGD_ENV", "production")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let out = String::from_utf8(ok.stdout).unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("production: version 2 sent to 1 provider"),
        "{out}"
    );
    let fleet = run(&f, ADMIN, "fleet").ok().out;
    assert!(fleet.contains("sent 2 (not acknowledged)"), "{fleet}");
}
