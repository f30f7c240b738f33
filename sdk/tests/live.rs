//! The SDK against a real flagd (in-process server on a real socket, or the real binary
//! killed with SIGKILL): a toggle and a revert arrive live; the last snapshot keeps
//! serving while flagd is away; a start with flagd down serves the bootstrap file.

use std::time::Duration;

use flagd_sdk::{Client, EvaluationContext, Status};
use serde_json::{Value, json};

mod common;

use common::{api, sdk_key};
use flagd_harness::{InProcess, free_port};

fn flag(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": if on { "on" } else { "off" }})
}

async fn wait_version(sdk: &Client, v: u64) {
    let mut s = sdk.status_updates();
    tokio::time::timeout(
        Duration::from_secs(20),
        s.wait_for(|s| matches!(s, Status::Ready { version } if *version >= v)),
    )
    .await
    .expect("the SDK reached the version in time")
    .expect("status channel open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggle_and_revert_reach_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let f = InProcess::new().start().await;
    let key = sdk_key(&f.base()).await;
    api(
        &f.base(),
        reqwest::Method::PUT,
        "/environments/production/flags/new-checkout",
        flag(true),
    )
    .await;

    let cache = dir.path().join("cache.json");
    let sdk = Client::builder(f.base(), &key)
        .cache_file(&cache)
        .label("service", "test")
        .build()
        .await
        .unwrap();
    assert_eq!(sdk.status(), Status::Ready { version: 1 });
    let user = EvaluationContext::new("user-1");
    assert!(sdk.enabled("new-checkout", &user));

    // Kill switch through the REST API.
    let mut changes = sdk.subscribe();
    api(
        &f.base(),
        reqwest::Method::POST,
        "/environments/production/flags/new-checkout/disable",
        json!({"reason": "test"}),
    )
    .await;
    wait_version(&sdk, 2).await;
    assert!(!sdk.enabled("new-checkout", &user));
    assert_eq!(
        sdk.with_detail("new-checkout", &user, |d| (d.reason, d.version)),
        (flagd_sdk::Reason::Disabled, 2)
    );
    changes.changed().await.unwrap();
    let c = changes.borrow().clone();
    assert_eq!(
        (c.old_version, c.new_version, c.changed_flags),
        (1, 2, vec!["new-checkout".to_owned()])
    );

    // Revert the whole set to version 1: served as version 3 with version 1's content.
    api(
        &f.base(),
        reqwest::Method::POST,
        "/environments/production/revert",
        json!({"version": 1, "reason": "test"}),
    )
    .await;
    wait_version(&sdk, 3).await;
    assert!(sdk.enabled("new-checkout", &user));
    assert_eq!(sdk.version(), 3);

    // The fleet view shows this instance on the head.
    let mut fleet = Value::Null;
    for _ in 0..200 {
        fleet = api(
            &f.base(),
            reqwest::Method::GET,
            "/environments/production/fleet",
            Value::Null,
        )
        .await;
        if fleet["onVersion"] == 1 && fleet["version"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fleet["onVersion"], 1, "{fleet}");
    assert_eq!(fleet["instances"][0]["labels"]["service"], "test");

    // The cache file holds the served version.
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(cached["version"], 3);

    // flagd goes away: evaluation never fails and keeps the last snapshot.
    f.stop().await.unwrap();
    let mut status = sdk.status_updates();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| matches!(s, Status::Stale { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    for _ in 0..100_000 {
        assert!(sdk.enabled("new-checkout", &user));
    }
    drop(status);

    // A new SDK started while flagd is down serves the cache file.
    let offline = Client::builder("http://127.0.0.1:1", &key)
        .cache_file(&cache)
        .wait_for_first_snapshot(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    assert_eq!(offline.status(), Status::Connecting { version: 3 });
    assert!(offline.enabled("new-checkout", &user));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_bootstrap_then_converges() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
    // Pick a port, start nothing there yet.
    let port = free_port();
    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        json!({"flags": {"new-checkout": flag(false)}}).to_string(),
    )
    .unwrap();
    // The SDK key must exist before flagd serves: create it on a first run.
    let f = InProcess::new().database_url(&db).port(port).start().await;
    let key = api(
        &f.base(),
        reqwest::Method::POST,
        "/environments/staging/sdk-keys",
        json!({}),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    api(
        &f.base(),
        reqwest::Method::PUT,
        "/environments/staging/flags/new-checkout",
        flag(true),
    )
    .await;
    f.stop().await.unwrap();

    let sdk = Client::builder(format!("http://127.0.0.1:{port}"), &key)
        .bootstrap_file(&bootstrap)
        .wait_for_first_snapshot(Duration::from_millis(300))
        .max_backoff(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let user = EvaluationContext::new("u");
    assert_eq!(sdk.status(), Status::Connecting { version: 0 });
    assert!(
        !sdk.enabled("new-checkout", &user),
        "the bootstrap file is served"
    );

    let f = InProcess::new().database_url(&db).port(port).start().await;
    wait_version(&sdk, 1).await;
    assert!(
        sdk.enabled("new-checkout", &user),
        "the live set replaced the bootstrap"
    );
    f.stop().await.unwrap();
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    assert!(matches!(
        Client::builder("flagd:8080", "k").build().await,
        Err(flagd_sdk::BuildError::Url(_))
    ));
    let e = Client::builder("http://127.0.0.1:1", "k")
        .bootstrap_file("/no/such/file.json")
        .build()
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("bootstrap file /no/such/file.json"),
        "{e}"
    );
}
