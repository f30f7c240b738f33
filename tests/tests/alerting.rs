//! Rollback with no human in the loop, with every part real: the example checkout
//! service (a release whose new checkout fails) exports its errors; Prometheus scrapes it
//! and evaluates `examples/alerting/rules.yml`; Alertmanager, configured by
//! `examples/alerting/alertmanager.yml`, calls flagd; flagd kills the flag (or reverts the
//! environment to its last known-good version); every SDK converges; the errors stop; the
//! alert resolves and nothing is undone. The example files run as a user copies them,
//! with only addresses, the token file and intervals changed (each change must match the
//! file exactly once, so an edited example fails here rather than going stale). A Slack
//! channel (a receiver on loopback) hears of the automatic action, of the refused one,
//! and how many SDK instances applied the change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flagd_harness::{ADMIN_TOKEN, Alertmanager, Binary, CheckoutService, FlagdProcess, Prometheus};
use flagd_sdk::Client;
use serde_json::{Value, json};

/// How long the whole loop may take before the test fails (a bound for a broken build,
/// not a measurement: Prometheus needs a few scrapes to see a rate).
const LOOP: Duration = Duration::from_secs(90);

/// In-process SDK instances beside the service's own.
const SDKS: usize = 20;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/alerting");

fn example(file: &str) -> String {
    std::fs::read_to_string(format!("{EXAMPLES}/{file}")).expect("the example file")
}

/// `text` with each (from, to) replaced, each `from` found exactly once.
fn changed(file: &str, text: &str, changes: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in changes {
        assert_eq!(
            out.matches(from).count(),
            1,
            "examples/alerting/{file} should contain {from:?} exactly once"
        );
        out = out.replace(from, to);
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn call(f: &FlagdProcess, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, f.url(&format!("/api/v1{path}")))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.expect("flagd answers");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// Everything of one run: flagd, the service, Prometheus, Alertmanager, the SDKs and the
/// load on the service.
struct Loop {
    flagd: FlagdProcess,
    service: CheckoutService,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    sdks: Vec<Client>,
    /// What the environment's Slack channel received (the `text` of each message).
    slack: Arc<Mutex<Vec<String>>>,
    /// (SDK index, version, when it had it in ms since 1970).
    applied: Arc<Mutex<Vec<(usize, u64, i64)>>>,
    /// (when sent in ms, status, flag set version the service answered with).
    answers: Arc<Mutex<Vec<(i64, u16, u64)>>>,
}

impl Loop {
    /// flagd with `new-checkout` as `flag` in production, the alert policy `policy`, and
    /// the rest started around it.
    async fn start(flag: Value, policy: Value) -> Option<Self> {
        // Notifications go to a receiver on loopback.
        let flagd = Binary::new()
            .arg("--notify-allow-private-addresses")
            .start();
        let slack = Arc::new(Mutex::new(Vec::new()));
        let heard = slack.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slack_url = format!("http://{}/services/T0/B0/x", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/services/T0/B0/x",
            axum::routing::post(move |body: axum::Json<Value>| async move {
                if let Ok(mut h) = heard.lock() {
                    h.push(body["text"].as_str().unwrap_or_default().to_owned());
                }
                "ok"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        call(
            &flagd,
            reqwest::Method::PUT,
            "/environments/production/flags/new-checkout",
            Some(flag),
        )
        .await;
        call(
            &flagd,
            reqwest::Method::PUT,
            "/environments/production/alert-policy",
            Some(policy),
        )
        .await;
        call(
            &flagd,
            reqwest::Method::POST,
            "/environments/production/channels",
            Some(json!({"kind": "slack", "url": slack_url, "name": "incidents"})),
        )
        .await;
        let key = call(
            &flagd,
            reqwest::Method::POST,
            "/environments/production/sdk-keys",
            Some(json!({"name": "checkout"})),
        )
        .await["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = call(
            &flagd,
            reqwest::Method::POST,
            "/tokens",
            Some(json!({"name": "alertmanager", "role": "alertmanager", "environments": ["production"]})),
        )
        .await["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let service =
            CheckoutService::start(&flagd.base(), &key, true).expect("the service starts");
        let alertmanager = Alertmanager::start_or_skip(
            &changed(
                "alertmanager.yml",
                &example("alertmanager.yml"),
                &[
                    ("http://127.0.0.1:8080", &flagd.base()),
                    ("/etc/alertmanager/flagd-token", "flagd-token"),
                    ("      group_wait: 10s", "      group_wait: 1s"),
                    ("      group_interval: 1m", "      group_interval: 1s"),
                ],
            ),
            &[("flagd-token", &token)],
            "alert-driven rollback is not tested",
        )?;
        let prometheus = Prometheus::start_or_skip(
            &changed(
                "prometheus.yml",
                &example("prometheus.yml"),
                &[
                    ("scrape_interval: 15s", "scrape_interval: 1s"),
                    ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                    ("127.0.0.1:9093", &alertmanager.address()),
                    ("127.0.0.1:3000", &service.address()),
                    ("127.0.0.1:8080", &flagd.addr().to_string()),
                ],
            ),
            &[(
                "rules.yml",
                &example("rules.yml")
                    .replace("[2m]", "[5s]")
                    .replace("for: 1m", "for: 0s"),
            )],
            "alert-driven rollback is not tested",
        )?;
        let mut sdks = Vec::new();
        let applied = Arc::new(Mutex::new(Vec::new()));
        for i in 0..SDKS {
            let sdk = Client::builder(flagd.base(), &key)
                .host(format!("app-{i}"))
                .build()
                .await
                .expect("an SDK connects");
            let mut changes = sdk.subscribe();
            let applied = applied.clone();
            let watched = sdk.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let v = watched.version();
                    if let Ok(mut a) = applied.lock() {
                        a.push((i, v, now_ms()));
                    }
                }
            });
            sdks.push(sdk);
        }
        // Shoppers: a checkout every 20 ms.
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (shop, to) = (
            answers.clone(),
            format!("http://{}/checkout", service.address()),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for user in 0u64.. {
                let sent = now_ms();
                if let Ok(r) = http.get(format!("{to}?user={user}")).send().await {
                    let status = r.status().as_u16();
                    let v = r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|b| b["flagSetVersion"].as_u64());
                    if let Ok(mut a) = shop.lock() {
                        a.push((sent, status, v.unwrap_or_default()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Some(Self {
            flagd,
            service,
            prometheus,
            alertmanager,
            sdks,
            slack,
            applied,
            answers,
        })
    }

    fn logs(&self) -> String {
        format!(
            "flagd:\n{}\nalertmanager:\n{}\nprometheus:\n{}\nservice:\n{}",
            self.flagd.log(),
            self.alertmanager.log(),
            self.prometheus.log(),
            self.service.log()
        )
    }

    /// Waits for an alert episode that matches.
    async fn episode(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let list = call(
                &self.flagd,
                reqwest::Method::GET,
                "/environments/production/alerts",
                None,
            )
            .await;
            if let Some(e) = list["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| matches(e))
            {
                return e.clone();
            }
            assert!(
                start.elapsed() < LOOP,
                "no {what} after {LOOP:?}: {list}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The time from the webhook's arrival (`received_ms`) to every in-process SDK on
    /// `version`, and the same for the service's SDK through the fleet view.
    async fn converged(&self, version: u64, received_ms: i64) -> Duration {
        let start = Instant::now();
        while self.sdks.iter().any(|s| s.version() < version) {
            assert!(
                start.elapsed() < LOOP,
                "SDKs did not converge on v{version}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let last = self
            .applied
            .lock()
            .map(|a| {
                (0..SDKS)
                    .filter_map(|i| {
                        a.iter()
                            .filter(|(j, v, _)| *j == i && *v >= version)
                            .map(|(_, _, at)| *at)
                            .min()
                    })
                    .max()
                    .unwrap_or(received_ms)
            })
            .unwrap_or(received_ms);
        // The service's SDK too, as the fleet sees it: N/N, nobody unreachable.
        loop {
            let fleet = call(
                &self.flagd,
                reqwest::Method::GET,
                "/environments/production/fleet",
                None,
            )
            .await;
            let instances = fleet["instances"].as_array().cloned().unwrap_or_default();
            let on = instances
                .iter()
                .filter(|i| {
                    i["appliedVersion"].as_u64() >= Some(version) && i["state"] == "connected"
                })
                .count();
            if instances.len() == SDKS + 1 && on == SDKS + 1 {
                break;
            }
            assert!(
                start.elapsed() < LOOP,
                "the fleet did not converge: {fleet}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Duration::from_millis(u64::try_from(last - received_ms).unwrap_or(0))
    }

    /// Waits until the service answers from `version` on, and checks that nothing it
    /// answered from there failed.
    async fn errors_stop(&self, version: u64) {
        let start = Instant::now();
        loop {
            let (after, failed) = self
                .answers
                .lock()
                .map(|a| {
                    let after: Vec<_> = a.iter().filter(|(_, _, v)| *v >= version).collect();
                    (
                        after.len(),
                        after.iter().filter(|(_, s, _)| *s != 200).count(),
                    )
                })
                .unwrap_or_default();
            assert_eq!(failed, 0, "checkouts failed on v{version}");
            if after >= 20 {
                return;
            }
            assert!(
                start.elapsed() < LOOP,
                "the service did not answer on v{version}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a Slack message that contains every one of `words`.
    async fn slack_says(&self, words: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let heard = self.slack.lock().map(|h| h.clone()).unwrap_or_default();
            if let Some(m) = heard.iter().find(|m| words.iter().all(|w| m.contains(w))) {
                return m.clone();
            }
            assert!(
                start.elapsed() < LOOP,
                "no Slack message with {words:?} in {heard:#?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn errors_seen(&self) -> usize {
        self.answers
            .lock()
            .map(|a| a.iter().filter(|(_, s, _)| *s == 500).count())
            .unwrap_or_default()
    }

    async fn head(&self) -> Value {
        call(
            &self.flagd,
            reqwest::Method::GET,
            "/environments/production",
            None,
        )
        .await
    }
}

fn flag(default_variant: &str) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default_variant})
}

fn received_ms(e: &Value) -> i64 {
    humantime::parse_rfc3339(e["receivedAt"].as_str().unwrap_or_default())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_kills_the_failing_flag() {
    // The release is out: everyone on the new checkout, which fails. Alerts may kill
    // flags (the default policy) but not revert.
    let Some(l) = Loop::start(flag("on"), json!({"actions": ["disable"]})).await else {
        return;
    };
    let kill = l
        .episode("kill switch from NewCheckoutFailing", |e| {
            e["alertname"] == "NewCheckoutFailing" && e["outcome"] == "applied"
        })
        .await;
    assert!(l.errors_seen() > 0, "the service failed before the alert");
    let version = kill["version"].as_u64().unwrap();
    let flag_now = call(
        &l.flagd,
        reqwest::Method::GET,
        "/environments/production/flags/new-checkout",
        None,
    )
    .await;
    assert_eq!(flag_now["state"], "DISABLED", "{flag_now}");
    let took = l.converged(version, received_ms(&kill)).await;
    println!(
        "webhook → {}/{} SDKs on v{version} (kill switch): {} ms",
        SDKS + 1,
        SDKS + 1,
        took.as_millis()
    );
    l.errors_stop(version).await;
    // The error-ratio rule fired too; reverting is not allowed here: refused, recorded.
    let refused = l
        .episode("the refused revert of CheckoutErrorRatio", |e| {
            e["alertname"] == "CheckoutErrorRatio" && e["outcome"] == "refused"
        })
        .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("does not allow \"revert\""),
        "{refused}"
    );
    // The people on the channel hear of it: the kill, the refusal, and N/N.
    l.slack_says(&["new-checkout", "disabled automatically"])
        .await;
    l.slack_says(&["Refused", "CheckoutErrorRatio"]).await;
    l.slack_says(&[&format!("v{version} applied by {}/{}", SDKS + 1, SDKS + 1)])
        .await;
    // The errors are gone, so the alert resolves, and nothing is undone.
    l.episode("the resolution of NewCheckoutFailing", |e| {
        e["alertname"] == "NewCheckoutFailing" && e["outcome"] == "resolved"
    })
    .await;
    let head = l.head().await;
    let v = call(
        &l.flagd,
        reqwest::Method::GET,
        "/environments/production/versions?limit=50",
        None,
    )
    .await;
    let kinds: Vec<&str> = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "auto-disable").count(),
        1,
        "{v}"
    );
    assert_eq!(
        head["version"], version,
        "nothing after the kill switch: {v}"
    );
    let metrics = reqwest::get(l.flagd.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "flagd_alert_actions_total{environment=\"production\",action=\"disable\",outcome=\"applied\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reverts_to_the_last_good_version() {
    // Production is good: the new checkout is off. Alerts may revert (not kill), with a
    // lookback of 8 s: the head 8 s before the alert began is last known good.
    let lookback = 8;
    let Some(l) = Loop::start(
        flag("off"),
        json!({"actions": ["revert"], "lookbackSeconds": lookback}),
    )
    .await
    else {
        return;
    };
    let good = l.head().await["version"].as_u64().unwrap();
    // The bad change comes well after the good version: (alert start − lookback) falls
    // between the two.
    tokio::time::sleep(Duration::from_secs(lookback + 1)).await;
    assert_eq!(l.errors_seen(), 0, "the good version fails");
    let bad = call(
        &l.flagd,
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        Some(flag("on")),
    )
    .await["version"]
        .as_u64()
        .unwrap();
    let revert = l
        .episode("the automatic revert of CheckoutErrorRatio", |e| {
            e["alertname"] == "CheckoutErrorRatio" && e["outcome"] == "applied"
        })
        .await;
    let version = revert["version"].as_u64().unwrap();
    assert!(version > bad, "{revert}");
    let record = call(
        &l.flagd,
        reqwest::Method::GET,
        &format!("/environments/production/versions/{version}"),
        None,
    )
    .await;
    assert_eq!(record["version"]["kind"], "auto-revert", "{record}");
    assert_eq!(record["version"]["revertedTo"], good, "{record}");
    assert_eq!(
        record["document"]["flags"]["new-checkout"]["defaultVariant"], "off",
        "{record}"
    );
    let took = l.converged(version, received_ms(&revert)).await;
    println!(
        "webhook → {}/{} SDKs on v{version} (revert to last good v{good}): {} ms",
        SDKS + 1,
        SDKS + 1,
        took.as_millis()
    );
    l.errors_stop(version).await;
    // The kill-switch rule fired too, and this policy does not allow it: refused.
    l.episode("the refused kill switch of NewCheckoutFailing", |e| {
        e["alertname"] == "NewCheckoutFailing" && e["outcome"] == "refused"
    })
    .await;
    l.slack_says(&["reverted automatically", &format!("v{good}")])
        .await;
    l.slack_says(&["Refused", "NewCheckoutFailing"]).await;
    l.episode("the resolution of CheckoutErrorRatio", |e| {
        e["alertname"] == "CheckoutErrorRatio" && e["outcome"] == "resolved"
    })
    .await;
    assert_eq!(
        l.head().await["version"],
        version,
        "nothing undone, nothing reverted twice"
    );
}

/// The example files as they are in the repository are valid for Prometheus's and
/// Alertmanager's own checkers (Debian ships them with the servers).
#[test]
fn the_example_files_pass_promtool_and_amtool() {
    for (tool, args) in [
        (
            "/usr/bin/promtool",
            vec!["check", "config", "prometheus.yml"],
        ),
        ("/usr/bin/promtool", vec!["check", "rules", "rules.yml"]),
        ("/usr/bin/amtool", vec!["check-config", "alertmanager.yml"]),
    ] {
        if !std::path::Path::new(tool).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{tool} is not installed; .ci/test installs prometheus and prometheus-alertmanager"
            );
            println!("{tool} is not installed, so the example files are not checked");
            continue;
        }
        let out = std::process::Command::new(tool)
            .args(&args)
            .current_dir(EXAMPLES)
            .output()
            .expect("the checker runs");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
