//! Undo one change, and the per-flag guard for pipelines.

use reqwest::Method;
use serde_json::json;

use crate::support::{ADMIN, Backend, Server, rollout_flag};

const P: &str = "/environments/production";

/// v1 a=10, v2 b=10, v3 a=50 (the bad change), v4 b=50 (unrelated, later): undoing v3
/// puts a back to 10 and keeps v4; undoing v2 conflicts with v4, and says so.
pub(crate) async fn undo_one_change(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/a"), rollout_flag(10))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/b"), rollout_flag(10))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/a"), rollout_flag(50))
        .await
        .expect(200);
    s.put(&format!("{P}/flags/b"), rollout_flag(50))
        .await
        .expect(200);

    // What it would do, without doing it.
    let dry = s
        .post(&format!("{P}/versions/3/undo"), json!({"dryRun": true}))
        .await
        .expect(200);
    assert_eq!(
        dry.body["changes"],
        json!([{"path": "flags.a", "kind": "flag", "key": "a", "action": "restore", "changedLater": false}]),
        "{}",
        dry.body
    );
    assert_eq!(dry.body["conflicts"], json!([]));
    assert_eq!(s.get(P).await.body["version"], 4);

    let r = s
        .post(
            &format!("{P}/versions/3/undo"),
            json!({"reason": "v3 broke checkout"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 5);
    assert_eq!(r.body["changedFlags"], json!(["a"]));
    assert_eq!(s.get(&format!("{P}/flags/a")).await.body, rollout_flag(10));
    assert_eq!(
        s.get(&format!("{P}/flags/b")).await.body,
        rollout_flag(50),
        "the later change stays"
    );
    let v = s.get(&format!("{P}/versions/5")).await.expect(200).body;
    assert_eq!(v["version"]["kind"], "undo", "{v}");
    let audit = s.get("/audit?action=flagset.undo").await.expect(200).body;
    assert_eq!(audit["entries"][0]["target"], "v3", "{audit}");
    assert_eq!(
        audit["entries"][0]["reason"], "v3 broke checkout",
        "{audit}"
    );

    // Undoing it again changes nothing, and says so.
    let again = s
        .post(&format!("{P}/versions/3/undo"), json!({"reason": "twice"}))
        .await
        .expect(200);
    assert_eq!(again.body["changed"], false, "{}", again.body);
    assert_eq!(s.get(P).await.body["version"], 5);

    // v2 created b; v4 changed b again: a conflict naming v4, nothing written.
    let c = s
        .post(
            &format!("{P}/versions/2/undo"),
            json!({"reason": "b was a mistake"}),
        )
        .await
        .expect(409);
    assert_eq!(c.body["error"]["code"], "conflict", "{}", c.body);
    assert_eq!(
        c.body["error"]["details"][0]["path"], "flags.b",
        "{}",
        c.body
    );
    let message = c.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("v4"), "{message}");
    let dry = s
        .post(&format!("{P}/versions/2/undo"), json!({"dryRun": true}))
        .await
        .expect(200);
    assert_eq!(
        dry.body["conflicts"],
        json!([{"path": "flags.b", "laterVersions": [4]}])
    );
    assert_eq!(dry.body["changes"][0]["action"], "remove");
    assert_eq!(s.get(P).await.body["version"], 5);
    // Forced: b goes (it did not exist before v2).
    s.post(
        &format!("{P}/versions/2/undo"),
        json!({"reason": "b was a mistake", "force": true}),
    )
    .await
    .expect(200);
    s.get(&format!("{P}/flags/b")).await.expect(404);

    // Bad input: no reason, version 0, a version that does not exist, a stale If-Match.
    s.post(&format!("{P}/versions/3/undo"), json!({}))
        .await
        .expect(422);
    s.post(&format!("{P}/versions/0/undo"), json!({"reason": "x"}))
        .await
        .expect(422);
    s.post(&format!("{P}/versions/99/undo"), json!({"reason": "x"}))
        .await
        .expect(404);
    s.call(
        Method::POST,
        &format!("{P}/versions/3/undo"),
        Some(ADMIN),
        Some(json!({"reason": "x"})),
        &[("If-Match", "2")],
    )
    .await
    .expect(409);
    Ok(())
}

/// `If-Flag-Version`: a pipeline's step on one flag is refused when that flag changed
/// under it, and goes through whatever happened to other flags.
pub(crate) async fn per_flag_guard(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/canary"), rollout_flag(5))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/other"), rollout_flag(5))
        .await
        .expect(201);
    // canary was last changed by v1; v2 changed another flag: still v1.
    let summaries = s.get(&format!("{P}/flag-summaries")).await.expect(200).body;
    let canary = summaries["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "canary")
        .cloned()
        .unwrap();
    assert_eq!(canary["lastChange"]["version"], 1, "{summaries}");
    let step = |guard: &'static str, percent: u64| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                &format!("{P}/flags/canary/rollout"),
                Some(ADMIN),
                Some(json!({"variant": "on", "percent": percent, "reason": "canary step"})),
                &[("If-Flag-Version", guard)],
            )
            .await
        }
    };
    step("1", 25).await.expect(200);
    // canary is now at v3: a step based on v1 is refused, naming the version.
    let r = step("1", 50).await.expect(409);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("v3"),
        "{}",
        r.body
    );
    assert_eq!(r.body["error"]["currentFlagVersion"], 3, "{}", r.body);
    // Another flag changing does not move canary's guard.
    s.post(
        &format!("{P}/flags/other/disable"),
        json!({"reason": "unrelated"}),
    )
    .await
    .expect(200);
    step("3", 50).await.expect(200);
    // Not a number: 400, naming the header.
    let bad = step("three", 50).await.expect(400);
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("If-Flag-Version"),
        "{}",
        bad.body
    );
    Ok(())
}
