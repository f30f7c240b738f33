//! Release plans run by the server: a ramp with holds (time compressed by configuring
//! the holds and the runner's interval, never the clock), responders pausing it, a
//! restart mid-hold, approvals, abort with rollback, and bad plans refused clearly.

use std::time::Duration;

use flagd_core::{EvaluationContext, Snapshot};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server, error_paths, rollout_flag};

const P: &str = "/environments/production";

fn options() -> flagd::server::Options {
    flagd::server::Options {
        plan_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

/// The `on` share of the flag's fractional split at its head.
async fn share(s: &Server, flag: &str) -> Value {
    s.get(&format!("{P}/flags/{flag}")).await.expect(200).body["targeting"]["fractional"][0][1]
        .clone()
}

/// The plan and its events once `done` holds (within 30 s).
async fn plan_until(s: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let p = s.get(&format!("{P}/plans/{id}")).await.expect(200).body;
        if done(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("release plan {id} did not get there in time");
}

fn events(p: &Value) -> Vec<&str> {
    p["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"].as_str())
        .collect()
}

/// Which of 2,000 users the flag serves `on` at a version.
async fn on_users(s: &Server, version: u64) -> Vec<bool> {
    let doc = s
        .get(&format!("{P}/flags?version={version}"))
        .await
        .expect(200)
        .body;
    let snap = Snapshot::load(&doc, version).expect("the version loads");
    (0..2_000)
        .map(|i| snap.enabled("checkout", &EvaluationContext::new(format!("user-{i}"))))
        .collect()
}

/// 5% → 25% → 100% with holds of a second: each step a `rollout` version by the plan,
/// naming its step; users who had the variant keep it as the share rises.
pub(crate) async fn ramps_and_completes(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let r = s
        .post(
            &format!("{P}/flags/checkout/plans"),
            json!({"variant": "on", "reason": "new checkout", "steps": [
                {"percent": 5, "hold": "1s"}, {"percent": 25, "hold": "1s"}, {"percent": 100}]}),
        )
        .await
        .expect(201);
    let id = r.body["plan"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["plan"]["state"], "running", "{}", r.body);
    assert_eq!(r.body["plan"]["step"], 0);
    assert_eq!(
        r.body["change"]["version"], 2,
        "the first step is applied at once"
    );
    assert_eq!(share(&s, "checkout").await, 5);

    let p = plan_until(&s, &id, |p| p["plan"]["state"] == "completed").await;
    assert_eq!(share(&s, "checkout").await, 100);
    assert_eq!(events(&p), ["created", "step", "step"], "{p}");
    assert_eq!(p["events"][2]["version"], 4);
    let v3 = s.get(&format!("{P}/versions/3")).await.expect(200).body;
    assert_eq!(v3["version"]["kind"], "rollout", "{v3}");
    assert_eq!(v3["version"]["author"], format!("plan:{id}"));
    assert!(
        v3["version"]["reason"]
            .as_str()
            .unwrap()
            .contains("step 2 of 3: 25% \"on\""),
        "{v3}"
    );
    let (at5, at25) = (on_users(&s, 2).await, on_users(&s, 3).await);
    let kept = at5.iter().zip(&at25).filter(|(a, b)| **a && **b).count();
    assert_eq!(
        kept,
        at5.iter().filter(|a| **a).count(),
        "cohorts are stable"
    );
    assert!(at25.iter().filter(|a| **a).count() > at5.iter().filter(|a| **a).count());
    let audit = s.get("/audit?action=plan.created").await.expect(200).body;
    assert_eq!(audit["entries"][0]["target"], "checkout", "{audit}");
    s.stop().await
}

/// A kill switch pauses the running plan in its own transaction; the plan resumes
/// with the rest of its hold, and its steps keep the responder's state.
pub(crate) async fn responders_pause_plans(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let r = s
        .post(
            &format!("{P}/flags/checkout/plans"),
            json!({"variant": "on", "steps": [{"percent": 10, "hold": "1h"}, {"percent": 50}]}),
        )
        .await
        .expect(201);
    let id = r.body["plan"]["id"].as_str().unwrap().to_owned();
    s.post(
        &format!("{P}/flags/checkout/disable"),
        json!({"reason": "errors"}),
    )
    .await
    .expect(200);
    let p = s.get(&format!("{P}/plans/{id}")).await.expect(200).body;
    assert_eq!(p["plan"]["state"], "paused", "{p}");
    assert_eq!(p["events"][1]["event"], "paused");
    assert_eq!(
        p["events"][1]["version"], 3,
        "paused by the kill switch's version"
    );
    assert!(
        p["events"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("toggle")
    );
    // Paused: no skipping; resumed, the hold goes on (about an hour left).
    s.post(&format!("{P}/plans/{id}/skip"), json!({}))
        .await
        .expect(409);
    let r = s
        .post(
            &format!("{P}/plans/{id}/resume"),
            json!({"reason": "fixed"}),
        )
        .await
        .expect(200);
    let next = r.body["plan"]["nextActionAt"].as_str().unwrap().to_owned();
    let left = humantime::parse_rfc3339(&next)?.duration_since(std::time::SystemTime::now())?;
    assert!(left > Duration::from_secs(3_000), "{next}");
    s.post(&format!("{P}/plans/{id}/approve"), json!({}))
        .await
        .expect(409);
    s.post(&format!("{P}/plans/{id}/skip"), json!({}))
        .await
        .expect(200);
    plan_until(&s, &id, |p| p["plan"]["state"] == "completed").await;
    let flag = s.get(&format!("{P}/flags/checkout")).await.expect(200).body;
    assert_eq!(
        flag["state"], "DISABLED",
        "the plan never overrides a responder"
    );
    assert_eq!(flag["targeting"]["fractional"][0][1], 50);
    s.stop().await
}

/// A plan survives a restart mid-hold and takes its next step once; a step that waits
/// for an approval waits; an abort with rollback restores the flag as before the plan.
pub(crate) async fn survives_restart_and_rolls_back(b: Backend) -> anyhow::Result<()> {
    let (url, _file) = b.database().await?;
    let s = Server::start_on(&url, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let r = s
        .post(
            &format!("{P}/flags/checkout/plans"),
            json!({"variant": "on", "steps": [{"percent": 10, "hold": "2s"},
                {"percent": 20, "hold": "approval"}, {"percent": 30}]}),
        )
        .await
        .expect(201);
    let id = r.body["plan"]["id"].as_str().unwrap().to_owned();
    s.stop().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = Server::start_on(&url, options()).await?;
    let p = plan_until(&s, &id, |p| p["plan"]["step"] == 1).await;
    assert_eq!(p["plan"]["awaitingApproval"], true, "{p}");
    assert_eq!(share(&s, "checkout").await, 20);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.version_numbers(&format!("{P}/versions")).await,
        [3, 2, 1],
        "the missed step applied once"
    );
    s.post(
        &format!("{P}/plans/{id}/approve"),
        json!({"reason": "looks good"}),
    )
    .await
    .expect(200);
    plan_until(&s, &id, |p| p["plan"]["state"] == "completed").await;
    assert_eq!(share(&s, "checkout").await, 30);

    // A second plan, aborted with rollback.
    let r = s
        .post(
            &format!("{P}/flags/checkout/plans"),
            json!({"variant": "on", "steps": [{"percent": 60, "hold": "1h"}, {"percent": 100}]}),
        )
        .await
        .expect(201);
    let id = r.body["plan"]["id"].as_str().unwrap().to_owned();
    assert_eq!(share(&s, "checkout").await, 60);
    let r = s
        .post(
            &format!("{P}/plans/{id}/abort"),
            json!({"rollback": true, "reason": "conversion dropped"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["plan"]["state"], "aborted", "{}", r.body);
    assert_eq!(share(&s, "checkout").await, 30);
    let v = r.body["change"]["version"].as_u64().unwrap();
    let v = s.get(&format!("{P}/versions/{v}")).await.expect(200).body;
    assert_eq!(v["version"]["kind"], "revert", "{v}");
    s.post(&format!("{P}/plans/{id}/resume"), json!({}))
        .await
        .expect(409);
    let active = s
        .get(&format!("{P}/plans?flag=checkout&active=true"))
        .await
        .expect(200)
        .body;
    assert_eq!(active["plans"], json!([]));
    let all = s
        .get(&format!("{P}/plans?flag=checkout"))
        .await
        .expect(200)
        .body;
    assert_eq!(all["plans"].as_array().unwrap().len(), 2);
    s.stop().await
}

/// Bad plans are refused (422) with the JSON path of what is wrong, and nothing is
/// written.
pub(crate) async fn bad_plans_are_refused(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let path = format!("{P}/flags/checkout/plans");
    for (body, at) in [
        (json!({"variant": "on", "steps": []}), "steps"),
        (
            json!({"variant": "on", "steps": [{"percent": 150}]}),
            "steps[0].percent",
        ),
        (
            json!({"variant": "on", "steps": [{"percent": 5, "hold": "soon"}]}),
            "steps[0].hold",
        ),
        (
            json!({"variant": "blue", "steps": [{"percent": 5}]}),
            "variant",
        ),
        (json!({"steps": [{"percent": 5}]}), "variant"),
        (json!({"variant": "on", "steps": [{}]}), "steps[0]"),
        (
            json!({"variant": "on", "steps": [{"definition": 5}]}),
            "steps[0].definition",
        ),
        (
            json!({"variant": "on", "steps": [{"definition": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"}}]}),
            "flags.checkout.defaultVariant",
        ),
    ] {
        let r = s.post(&path, body.clone()).await.expect(422);
        let paths = error_paths(&r.body);
        assert!(paths.contains(&at), "{body} -> {}", r.body);
    }
    let r = s
        .post(&path, json!({"variant": "on", "stepz": [{"percent": 5}]}))
        .await
        .expect(422);
    assert!(r.body.to_string().contains("stepz"), "{}", r.body);
    assert_eq!(s.get(P).await.body["version"], 1, "nothing was written");
    s.post(
        &format!("{P}/flags/nope/plans"),
        json!({"variant": "on", "steps": [{"percent": 5}]}),
    )
    .await
    .expect(404);
    let ok = json!({"variant": "on", "steps": [{"percent": 5, "hold": "1h"}, {"percent": 10}]});
    let r = s.post(&path, ok.clone()).await.expect(201);
    let id = r.body["plan"]["id"].as_str().unwrap().to_owned();
    s.post(&path, ok).await.expect(409);
    s.post(&format!("{P}/plans/{id}/fly"), json!({}))
        .await
        .expect(404);
    let viewer = s.token("viewer", "viewer", None).await;
    let r = s
        .call(
            Method::POST,
            &format!("{P}/plans/{id}/pause"),
            Some(&viewer),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let ci = s.token("ci", "ci", None).await;
    let r = s
        .call(
            Method::POST,
            &format!("{P}/plans/{id}/pause"),
            Some(&ci),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.stop().await
}
