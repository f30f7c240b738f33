//! A flagd process killed with SIGKILL: the SDK keeps evaluating its last snapshot with
//! no failed evaluation, and converges once flagd is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flagd_sdk::{Client, EvaluationContext, Status};
use serde_json::json;

mod common;

use common::{api, sdk_key};
use flagd_harness::{Binary, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_sdks_serving_then_they_converge() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
    let port = free_port();
    let flagd = Binary::new().database_url(&db).port(port).start();
    let key = sdk_key(&format!("http://127.0.0.1:{port}")).await;
    api(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
    )
    .await;
    let sdk = Client::builder(format!("http://127.0.0.1:{port}"), key)
        .max_backoff(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert_eq!(sdk.status(), Status::Ready { version: 1 });

    // A tight evaluation loop on another thread for the whole outage.
    let (stop, evaluations, failures) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let looper = {
        let (sdk, stop, evaluations, failures) = (
            sdk.clone(),
            stop.clone(),
            evaluations.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            let user = EvaluationContext::new("user-1");
            while !stop.load(Ordering::Relaxed) {
                if !sdk.enabled("new-checkout", &user) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                evaluations.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    flagd.kill(); // SIGKILL
    let mut status = sdk.status_updates();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| matches!(s, Status::Stale { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    // Keep evaluating well into the outage, then stop the loop: every evaluation, from
    // before the kill to now, must have served the last snapshot ("on").
    let at_stale = evaluations.load(Ordering::Relaxed);
    while evaluations.load(Ordering::Relaxed) < at_stale + 200_000 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "0 failed evaluations during the outage"
    );
    assert!(evaluations.load(Ordering::Relaxed) > 200_000);

    // Back: the SDK reconnects and follows a change made after the restart.
    let flagd = Binary::new().database_url(&db).port(port).start();
    api(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Method::POST,
        "/environments/production/flags/new-checkout/disable",
        json!({"reason": "test"}),
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| matches!(s, Status::Ready { version: 2 })),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!sdk.enabled("new-checkout", &EvaluationContext::new("user-1")));
    flagd.kill();
}
