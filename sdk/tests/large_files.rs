//! Large bootstrap and cache files are loaded from their text in parts (never built
//! whole as JSON values): what the SDK serves from them is what the same document
//! loaded whole serves, and a cache file written from a set loaded that way, changed
//! live, loads again.

use std::time::Duration;

use flagd_core::Snapshot;
use flagd_sdk::{Client, EvaluationContext, Status};
use serde_json::{Value, json};

mod common;

use common::{api, sdk_key};
use flagd_harness::InProcess;

/// `n` flags of several shapes (a split, a shared rule, disabled, strings), and with
/// `broken` one flag in seven that no SDK can load (its default names no variant).
fn document(n: usize, broken: bool) -> Value {
    let flags: serde_json::Map<String, Value> = (0..n)
        .map(|i| {
            let flag = match i % 7 {
                0 if broken => json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"}),
                1 => json!({"state": "ENABLED", "variants": {"a": "x", "b": "y"}, "defaultVariant": "a", "targeting": {"$ref": "gold"}}),
                2 => json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
                _ => json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                            "metadata": {"n": i}, "targeting": {"fractional": [["on", i % 100], ["off", 100 - i % 100]]}}),
            };
            (format!("flag-{i:05}"), flag)
        })
        .collect();
    json!({"$evaluators": {"gold": {"if": [{"==": [{"var": "tier"}, "gold"]}, "b", null]}},
           "metadata": {"team": "t"}, "flags": flags})
}

fn users() -> Vec<EvaluationContext> {
    (0..4)
        .map(|i| {
            let mut u = EvaluationContext::new(format!("user-{i}"));
            u.set("tier", if i % 2 == 0 { "gold" } else { "free" });
            u
        })
        .collect()
}

/// Every flag answers from the client as from `want`.
fn assert_serves(sdk: &Client, want: &Snapshot) {
    for user in users() {
        for key in want.keys() {
            let expected = format!("{:?}", want.evaluate(key, &user));
            let got = sdk.with_detail(key, &user, |d| {
                let mut d = d.clone();
                d.version = want.version();
                format!("{d:?}")
            });
            assert_eq!(got, expected, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_bootstrap_file_serves_what_its_document_loaded_whole_serves() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(5_000, true);
    let file = dir.path().join("bootstrap.json");
    // Written as people write files: indented.
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let sdk = Client::builder("http://127.0.0.1:1", "fdsdk_none")
        .bootstrap_file(&file)
        .wait_for_first_snapshot(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let whole = flagd_core::on_this_thread(|| Snapshot::load(&doc, 0)).unwrap();
    assert_eq!(whole.len(), 5_000);
    assert_serves(&sdk, &whole);
    assert_eq!(
        sdk.problems(),
        whole.problems(),
        "the broken flags reported"
    );
    assert!(sdk.problems().len() > 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cache_file_loads_changes_and_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let f = InProcess::new().start().await;
    let key = sdk_key(&f.base()).await;
    let doc = document(4_500, false);
    api(
        &f.base(),
        reqwest::Method::PUT,
        "/environments/production/flags",
        doc.clone(),
    )
    .await;
    let cache = dir.path().join("cache.json");
    let written = || {
        let text = std::fs::read_to_string(&cache).unwrap_or_default();
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["version"].as_u64())
    };
    let written_at = |version| async move {
        for _ in 0..400 {
            if written() == Some(version) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the cache file was not written at version {version}");
    };
    {
        let sdk = Client::builder(f.base(), &key)
            .cache_file(&cache)
            .build()
            .await
            .unwrap();
        assert_eq!(sdk.status(), Status::Ready { version: 1 });
        written_at(1).await;
    }
    // Offline: the cache file, loaded in parts, serves the set.
    let offline = |wait| {
        Client::builder("http://127.0.0.1:1", &key)
            .cache_file(&cache)
            .wait_for_first_snapshot(wait)
            .build()
    };
    let sdk = offline(Duration::ZERO).await.unwrap();
    assert_eq!(sdk.status(), Status::Connecting { version: 1 });
    let whole = Snapshot::load(&doc, 1).unwrap();
    assert_serves(&sdk, &whole);
    drop(sdk);

    // Online from that cache file: a kill switch applies to the set loaded from text,
    // and the cache file written after it loads with the change.
    let sdk = Client::builder(f.base(), &key)
        .cache_file(&cache)
        .build()
        .await
        .unwrap();
    let mut changes = sdk.subscribe();
    api(
        &f.base(),
        reqwest::Method::POST,
        "/environments/production/flags/flag-00003/disable",
        json!({"reason": "test"}),
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(20),
        changes.wait_for(|c| c.new_version >= 2),
    )
    .await
    .expect("the change arrived")
    .unwrap();
    written_at(2).await;
    drop(sdk);
    f.stop().await.unwrap();
    let mut changed = doc.clone();
    changed["flags"]["flag-00003"]["state"] = json!("DISABLED");
    let sdk = offline(Duration::ZERO).await.unwrap();
    assert_eq!(sdk.status(), Status::Connecting { version: 2 });
    assert_serves(&sdk, &Snapshot::load(&changed, 2).unwrap());
    assert!(!sdk.enabled("flag-00003", &EvaluationContext::new("user-1")));
}
