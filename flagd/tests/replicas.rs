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
