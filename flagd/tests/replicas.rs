//! Several flagd replicas on one PostgreSQL, without Redis: a change made through one
//! replica reaches the SDKs connected to another within its follow interval (each
//! replica compares its heads with the store's), as one delta.

use std::time::{Duration, Instant};

use flagd_harness::{ADMIN_TOKEN, InProcess, Postgres};
use flagd_sdk::{Client, EvaluationContext};
use serde_json::json;

async fn api(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = reqwest::Client::new()
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_reaches_the_sdks_of_another() {
    let Some(pg) = Postgres::start_or_skip("replicas are not tested") else {
        return;
    };
    let db = pg.database().await.unwrap();
    let options = || flagd::server::Options {
        follow_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let a = InProcess::new()
        .database_url(db.clone())
        .options(options())
        .start()
        .await;
    let b = InProcess::new()
        .database_url(db.clone())
        .options(options())
        .start()
        .await;
    let flag = |state: &str| json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    api(
        &a.base(),
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        flag("ENABLED"),
    )
    .await;
    let key = api(
        &a.base(),
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        json!({}),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let sdk = Client::builder(a.base(), key)
        .wait_for_first_snapshot(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let user = EvaluationContext::new("u");
    assert!(sdk.enabled("new-checkout", &user));
    // The kill switch through replica B, which this SDK is not connected to.
    let r = api(
        &b.base(),
        reqwest::Method::POST,
        "/environments/production/flags/new-checkout/disable",
        json!({"reason": "through the other replica"}),
    )
    .await;
    let version = r["version"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sdk.version() < version {
        assert!(
            Instant::now() < deadline,
            "replica A never followed version {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !sdk.enabled("new-checkout", &user),
        "the kill switch took effect"
    );
    // And back through A: B's own SDKs would follow the same way; A announces it itself.
    api(
        &a.base(),
        reqwest::Method::POST,
        "/environments/production/flags/new-checkout/enable",
        json!({"reason": "back"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sdk.enabled("new-checkout", &user) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sdk.close();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Three replicas on `db` that look for due plans and scheduled changes every 20 ms.
async fn planning_replicas(db: &str) -> Vec<flagd_harness::Server> {
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(
            InProcess::new()
                .database_url(db.to_owned())
                .options(flagd::server::Options {
                    plan_interval: Duration::from_millis(20),
                    replica: name.into(),
                    ..Default::default()
                })
                .start()
                .await,
        );
    }
    replicas
}

/// Three replicas look for due release plans every 20 ms: each step of a plan is taken
/// by one of them, once (a lease in the store, and the step's version and the plan's
/// move in one transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_each_step_of_a_release_plan_once() {
    let Some(pg) = Postgres::start_or_skip("replicas are not tested") else {
        return;
    };
    let replicas = planning_replicas(&pg.database().await.unwrap()).await;
    let base = replicas[0].base();
    api(
        &base,
        reqwest::Method::PUT,
        "/environments/production/flags/checkout",
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
               "targeting": {"fractional": [["on", 0], ["off", 100]]}}),
    )
    .await;
    let steps: Vec<serde_json::Value> = (1..=8)
        .map(|i| json!({"percent": i * 10, "hold": "100ms"}))
        .collect();
    let r = api(
        &base,
        reqwest::Method::POST,
        "/environments/production/flags/checkout/plans",
        json!({"variant": "on", "steps": steps}),
    )
    .await;
    let id = r["plan"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let p = api(
            &replicas[2].base(),
            reqwest::Method::GET,
            &format!("/environments/production/plans/{id}"),
            json!(null),
        )
        .await;
        if p["plan"]["state"] == "completed" {
            break p;
        }
        assert!(Instant::now() < deadline, "the plan did not complete: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let steps: Vec<u64> = plan["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "step")
        .filter_map(|e| e["step"].as_u64())
        .collect();
    assert_eq!(
        steps,
        (1..8).collect::<Vec<u64>>(),
        "each step once: {plan}"
    );
    let versions = api(
        &base,
        reqwest::Method::GET,
        "/environments/production/versions?limit=100",
        json!(null),
    )
    .await;
    let rollouts = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "rollout")
        .count();
    assert_eq!(rollouts, 8, "one version per step: {versions}");
    for r in replicas {
        r.stop().await.unwrap();
    }
}

/// Three replicas looking every 20 ms: each of ten changes scheduled for the same
/// moment is applied by one of them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_apply_each_scheduled_change_once() {
    let Some(pg) = Postgres::start_or_skip("replicas are not tested") else {
        return;
    };
    let replicas = planning_replicas(&pg.database().await.unwrap()).await;
    let base = replicas[0].base();
    let mut ids = Vec::new();
    for i in 0..10 {
        let key = format!("flag-{i}");
        api(
            &base,
            reqwest::Method::PUT,
            &format!("/environments/production/flags/{key}"),
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
        )
        .await;
        let r = api(
            &replicas[i % 3].base(),
            reqwest::Method::POST,
            "/environments/production/schedules",
            json!({"in": "1s", "action": "disable", "flag": key, "reason": "at once"}),
        )
        .await;
        ids.push(r["schedule"]["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = api(
            &replicas[1].base(),
            reqwest::Method::GET,
            "/environments/production/schedules?pending=true",
            json!(null),
        )
        .await;
        if all["schedules"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let versions = api(
        &base,
        reqwest::Method::GET,
        "/environments/production/versions?limit=100",
        json!(null),
    )
    .await;
    let toggles = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "toggle")
        .count();
    assert_eq!(toggles, 10, "one version per scheduled change: {versions}");
    for id in ids {
        let s = api(
            &base,
            reqwest::Method::GET,
            &format!("/environments/production/schedules/{id}"),
            json!(null),
        )
        .await;
        assert_eq!(s["schedule"]["state"], "applied", "{s}");
    }
    for r in replicas {
        r.stop().await.unwrap();
    }
}
