//! Guarded rollouts with every part real: the example checkout service (its new
//! checkout working, or failing) under a steady load, Debian's Prometheus scraping it
//! every second, and the flagd binary running a release plan whose health gate is a
//! PromQL query on the service's error counter. A plan ramps while the errors stay
//! flat; rolls back when they rise; holds (and says so on the Slack channel) when its
//! query has no data or Prometheus is down. Time is compressed by configuration (holds
//! of seconds, a gate interval of a second, `--plan-interval 200ms`), never by the clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flagd_harness::{ADMIN_TOKEN, Binary, CheckoutService, FlagdProcess, Prometheus, free_port};
use serde_json::{Value, json};

/// How long a plan may take to get where a test waits for it (a bound for a broken
/// build, not a measurement).
const LIMIT: Duration = Duration::from_secs(90);

const P: &str = "/environments/production";

const ERRORS: &str =
    r#"sum(rate(checkout_requests_total{checkout="new",result="error"}[5s])) or vector(0)"#;

async fn call(f: &FlagdProcess, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, f.url(&format!("/api/v1{path}")))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.expect("flagd answers");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

struct Rig {
    flagd: FlagdProcess,
    service: CheckoutService,
    prometheus: Option<Prometheus>,
    slack: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    /// flagd (told where Prometheus will be), `new-checkout` at 0%, a Slack channel on
    /// loopback, the service (`broken`: its new checkout fails) under load, and
    /// Prometheus scraping it. `None` when Prometheus is not installed.
    async fn start(broken: bool) -> Option<Self> {
        let prom_port = free_port();
        let flagd = Binary::new()
            .arg("--prometheus-url")
            .arg(format!("http://127.0.0.1:{prom_port}"))
            .arg("--plan-interval")
            .arg("200ms")
            .arg("--notify-allow-private-addresses")
            .start();
        let slack = Arc::new(Mutex::new(Vec::new()));
        let heard = slack.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slack_url = format!("http://{}/hooks/x", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/hooks/x",
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
            &format!("{P}/flags/new-checkout"),
            Some(json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                        "targeting": {"fractional": [["on", 0], ["off", 100]]}})),
        )
        .await;
        call(
            &flagd,
            reqwest::Method::POST,
            &format!("{P}/channels"),
            Some(json!({"kind": "slack", "url": slack_url, "name": "releases"})),
        )
        .await;
        let key = call(
            &flagd,
            reqwest::Method::POST,
            &format!("{P}/sdk-keys"),
            Some(json!({"name": "checkout"})),
        )
        .await["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let service =
            CheckoutService::start(&flagd.base(), &key, broken).expect("the service starts");
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: checkout\n    static_configs:\n      - targets: [\"{}\"]\n",
            service.address()
        );
        let prometheus = Prometheus::start_or_skip_on(
            prom_port,
            &config,
            &[],
            "guarded rollouts are not tested",
        )?;
        // Shoppers: a checkout every 10 ms, each a different user.
        let to = format!("http://{}/checkout", service.address());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for user in 0u64.. {
                let _ = http.get(format!("{to}?user={user}")).send().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Some(Self {
            flagd,
            service,
            prometheus: Some(prometheus),
            slack,
        })
    }

    fn logs(&self) -> String {
        format!(
            "flagd:\n{}\nprometheus:\n{}\nservice:\n{}",
            self.flagd.log(),
            self.prometheus
                .as_ref()
                .map(Prometheus::log)
                .unwrap_or_default(),
            self.service.log()
        )
    }

    async fn plan(&self, flag: &str, body: Value) -> String {
        let r = call(
            &self.flagd,
            reqwest::Method::POST,
            &format!("{P}/flags/{flag}/plans"),
            Some(body),
        )
        .await;
        r["plan"]["id"].as_str().unwrap().to_owned()
    }

    /// The plan and its events once `done` holds.
    async fn plan_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let p = call(
                &self.flagd,
                reqwest::Method::GET,
                &format!("{P}/plans/{id}"),
                None,
            )
            .await;
            if done(&p) {
                return p;
            }
            assert!(
                start.elapsed() < LIMIT,
                "the plan did not {what}: {p}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn share(&self) -> Value {
        call(
            &self.flagd,
            reqwest::Method::GET,
            &format!("{P}/flags/new-checkout"),
            None,
        )
        .await["targeting"]["fractional"][0][1]
            .clone()
    }

    async fn heard(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(m) = self
                .slack
                .lock()
                .ok()
                .and_then(|h| h.iter().find(|m| m.contains(needle)).cloned())
            {
                return m;
            }
            assert!(
                start.elapsed() < LIMIT,
                "Slack never heard {needle:?}: {:?}",
                self.slack.lock().map(|h| h.clone()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn gate(query: &str) -> Value {
    json!({"name": "new checkout errors", "query": query, "comparison": "<=", "threshold": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_ramps_while_the_errors_stay_flat() {
    let Some(rig) = Rig::start(false).await else {
        return;
    };
    // examples/ci/release-plan.json as a user copies it, with its holds and its gate's
    // interval and window compressed (each found exactly once).
    let mut example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/ci/release-plan.json"
    ))
    .expect("the example plan");
    for (from, to) in [
        ("\"hold\": \"30m\"", "\"hold\": \"2s\""),
        ("\"hold\": \"approval\"", "\"hold\": \"2s\""),
        ("\"gateInterval\": \"30s\"", "\"gateInterval\": \"1s\""),
        ("[2m]", "[5s]"),
    ] {
        assert_eq!(
            example.matches(from).count(),
            1,
            "{from} in the example plan"
        );
        example = example.replace(from, to);
    }
    let example = example.replace("\"hold\": \"10m\"", "\"hold\": \"2s\"");
    let id = rig
        .plan("new-checkout", serde_json::from_str(&example).unwrap())
        .await;
    let p = rig
        .plan_until(&id, "complete", |p| p["plan"]["state"] == "completed")
        .await;
    assert_eq!(rig.share().await, 100);
    let steps: Vec<&Value> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "step")
        .collect();
    assert_eq!(steps.len(), 4, "{p}");
    for s in steps {
        let d = s["detail"].as_str().unwrap();
        assert!(
            d.contains("\"passed\":true") && d.contains("\"value\":0"),
            "the values seen: {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_rolls_back_when_the_errors_rise() {
    let Some(rig) = Rig::start(true).await else {
        return;
    };
    let id = rig
        .plan(
            "new-checkout",
            json!({"variant": "on", "gates": [gate(ERRORS)], "gateInterval": "1s", "onFailure": "revert",
                   "steps": [{"percent": 20, "hold": "1m"}, {"percent": 100}]}),
        )
        .await;
    let p = rig
        .plan_until(&id, "roll back", |p| p["plan"]["state"] == "rolled-back")
        .await;
    assert_eq!(rig.share().await, 0, "the flag as it was before the plan");
    let last = p["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "rolled-back", "{p}");
    assert!(
        last["detail"].as_str().unwrap().contains("is not <= 0"),
        "{last}"
    );
    let value = p["plan"]["gateValues"][0]["value"].as_f64().unwrap();
    assert!(value > 0.0, "the error rate seen: {p}");
    let v = last["version"].as_u64().unwrap();
    let v = call(
        &rig.flagd,
        reqwest::Method::GET,
        &format!("{P}/versions/{v}"),
        None,
    )
    .await;
    assert_eq!(v["version"]["kind"], "revert", "{v}");
    assert_eq!(v["version"]["author"], format!("plan:{id}"));
    rig.heard("rolled back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_holds_and_says_so_without_data_or_prometheus() {
    let Some(mut rig) = Rig::start(false).await else {
        return;
    };
    // A query with no series: no data, which never passes.
    let id = rig
        .plan(
            "new-checkout",
            json!({"variant": "on", "gates": [gate("sum(rate(checkout_requests_total{result=\"nope\"}[5s]))")],
                   "gateInterval": "1s", "steps": [{"percent": 10, "hold": "1s"}, {"percent": 100}]}),
        )
        .await;
    let p = rig
        .plan_until(&id, "hold", |p| !p["plan"]["held"].is_null())
        .await;
    assert!(
        p["plan"]["held"].as_str().unwrap().contains("no data"),
        "{p}"
    );
    rig.heard("held").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = call(
        &rig.flagd,
        reqwest::Method::GET,
        &format!("{P}/plans/{id}"),
        None,
    )
    .await;
    assert_eq!(p["plan"]["step"], 0, "held past its hold: {p}");
    assert_eq!(p["plan"]["state"], "running");
    assert_eq!(rig.share().await, 10);
    call(
        &rig.flagd,
        reqwest::Method::POST,
        &format!("{P}/plans/{id}/abort"),
        Some(json!({"reason": "no metric"})),
    )
    .await;

    // Prometheus down: a good query cannot be answered, and the plan holds too.
    rig.prometheus = None;
    let id = rig
        .plan(
            "new-checkout",
            json!({"variant": "on", "gates": [gate(ERRORS)], "gateInterval": "1s",
                   "steps": [{"percent": 20, "hold": "1s"}, {"percent": 100}]}),
        )
        .await;
    let p = rig
        .plan_until(&id, "hold", |p| !p["plan"]["held"].is_null())
        .await;
    assert!(
        p["plan"]["held"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{p}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.share().await, 20, "no step without an answer");
}
