//! End-to-end behaviour of the REST API.

use anyhow::ensure;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN, Backend, Server, rollout_flag};

const P: &str = "/environments/production";

async fn audit(s: &Server, query: &str) -> Vec<Value> {
    s.get(&format!("/audit?{query}")).await.expect(200).body["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) async fn lifecycle(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let ops = s.token("ops", "responder", None).await;

    let r = s
        .put(&format!("{P}/flags/new-checkout"), rollout_flag(5))
        .await
        .expect(201);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.version(), Some(1));
    let r = s.get(&format!("{P}/flags/new-checkout")).await.expect(200);
    assert_eq!(r.body, rollout_flag(5));

    // Kill switch, by a responder, with a reason.
    let r = s
        .call(
            Method::POST,
            &format!("{P}/flags/new-checkout/disable"),
            Some(&ops),
            Some(json!({"reason": "5xx on checkout"})),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2);
    assert_eq!(
        s.get(&format!("{P}/flags/new-checkout")).await.body["state"],
        "DISABLED"
    );
    // Disabling again changes nothing and makes no version.
    let r = s
        .call(
            Method::POST,
            &format!("{P}/flags/new-checkout/disable"),
            Some(&ops),
            Some(json!({"reason": "again"})),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(
        (r.body["version"].clone(), r.body["changed"].clone()),
        (json!(2), json!(false))
    );
    s.call(
        Method::POST,
        &format!("{P}/flags/new-checkout/enable"),
        Some(&ops),
        Some(json!({"reason": "fixed"})),
        &[],
    )
    .await
    .expect(200);

    // Rollout 5 → 25 for CI promotion.
    let r = s
        .post(
            &format!("{P}/flags/new-checkout/rollout"),
            json!({"variant": "on", "percent": 25}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 4);
    assert_eq!(
        s.get(&format!("{P}/flags/new-checkout")).await.body["targeting"],
        json!({"fractional": [["on", 25], ["off", 75]]})
    );

    // Diff between two versions.
    let d = s.get(&format!("{P}/diff?from=1&to=4")).await.expect(200);
    let changes = d.body["changes"].as_array().cloned().unwrap_or_default();
    ensure!(changes.len() == 1, "one flag changed: {changes:?}");
    assert_eq!(changes[0]["change"], "changed");
    assert_eq!(changes[0]["before"], rollout_flag(5));
    assert_eq!(
        changes[0]["after"]["targeting"]["fractional"][0],
        json!(["on", 25])
    );

    // Revert to version 2 (disabled at 5%): version 5 equals version 2.
    let r = s
        .call(
            Method::POST,
            &format!("{P}/revert"),
            Some(&ops),
            Some(json!({"version": 2, "reason": "bad release"})),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 5);
    let v2 = s
        .get(&format!("{P}/flags?version=2"))
        .await
        .expect(200)
        .body;
    let v5 = s.get(&format!("{P}/flags")).await.expect(200).body;
    assert_eq!(v2, v5);
    // Revert the revert: back to version 4.
    s.call(
        Method::POST,
        &format!("{P}/revert"),
        Some(&ops),
        Some(json!({"version": 4, "reason": "false alarm"})),
        &[],
    )
    .await
    .expect(200);
    assert_eq!(
        s.get(&format!("{P}/flags")).await.body,
        s.get(&format!("{P}/flags?version=4")).await.body
    );

    // History, newest first, with author, kind, reason and flags.
    let h = s.get(&format!("{P}/versions")).await.expect(200).body;
    let kinds: Vec<&str> = h["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec!["revert", "revert", "rollout", "toggle", "toggle", "create"]
    );
    assert_eq!(h["versions"][1]["author"], "ops");
    assert_eq!(h["versions"][1]["reason"], "bad release");
    assert_eq!(h["versions"][1]["revertedTo"], 2);
    assert_eq!(h["versions"][0]["changedFlags"], json!(["new-checkout"]));
    let one = s.get(&format!("{P}/versions/2")).await.expect(200).body;
    assert_eq!(one["document"], v2);

    // The audit log has every change with actor, action, reason and version.
    let entries = audit(&s, "environment=production").await;
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "flagset.revert",
            "flagset.revert",
            "flag.rollout",
            "flag.enable",
            "flag.disable",
            "flag.create",
            "environment.create"
        ]
    );
    assert_eq!(entries[4]["actor"], "ops");
    assert_eq!(entries[4]["reason"], "5xx on checkout");
    assert_eq!(entries[4]["version"], 2);
    assert_eq!(entries[4]["before"]["state"], "ENABLED");
    assert_eq!(entries[4]["after"]["state"], "DISABLED");
    s.stop().await
}

pub(crate) async fn single_flag_restore(b: Backend) -> anyhow::Result<()> {
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
    // Restore only `a` as it was at version 2.
    let r = s
        .post(
            &format!("{P}/flags/a/restore"),
            json!({"version": 2, "reason": "a misbehaves"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["changedFlags"], json!(["a"]));
    assert_eq!(s.get(&format!("{P}/flags/a")).await.body, rollout_flag(10));
    assert_eq!(s.get(&format!("{P}/flags/b")).await.body, rollout_flag(50));
    // Restoring a flag to a version where it did not exist deletes it.
    s.post(
        &format!("{P}/flags/b/restore"),
        json!({"version": 1, "reason": "b was not there"}),
    )
    .await
    .expect(200);
    s.get(&format!("{P}/flags/b")).await.expect(404);
    // A reason is required, and the version must exist.
    s.post(&format!("{P}/flags/a/restore"), json!({"version": 1}))
        .await
        .expect(422);
    s.post(
        &format!("{P}/flags/a/restore"),
        json!({"version": 99, "reason": "x"}),
    )
    .await
    .expect(404);
    s.stop().await
}

pub(crate) async fn import_and_revert(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let mut flags = serde_json::Map::new();
    for i in 0..50 {
        flags.insert(format!("f{i}"), rollout_flag(i));
    }
    let doc = json!({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags, "$evaluators": {"beta": {"in": [{"var": "email"}, ["a@b"]]}}, "metadata": {"owner": "web"}});
    let r = s.put(&format!("{P}/flags"), doc.clone()).await.expect(200);
    assert_eq!(r.body["changedFlags"].as_array().map(Vec::len), Some(50));
    assert_eq!(
        s.get(&format!("{P}/flags")).await.body,
        doc,
        "export equals import, key order included"
    );

    // A second import that changes two flags and drops one writes only those.
    let mut doc2 = doc.clone();
    doc2["flags"]["f1"] = rollout_flag(99);
    doc2["flags"]["f2"]["state"] = json!("DISABLED");
    doc2["flags"].as_object_mut().map(|f| f.remove("f3"));
    let r = s.put(&format!("{P}/flags"), doc2.clone()).await.expect(200);
    assert_eq!(r.body["changedFlags"], json!(["f1", "f2", "f3"]));
    // Re-importing the same document is not a change.
    let r = s.put(&format!("{P}/flags"), doc2).await.expect(200);
    assert_eq!(r.body["changed"], false);
    // Reverting to version 1 writes only the three that differ.
    let r = s
        .post(
            &format!("{P}/revert"),
            json!({"version": 1, "reason": "undo"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["changedFlags"], json!(["f1", "f2", "f3"]));
    assert_eq!(s.get(&format!("{P}/flags")).await.body, doc);
    // Reverting to version 0 (no flags) empties the environment only when said so.
    let head = s.get(&format!("{P}/flags")).await.version();
    let r = s
        .post(
            &format!("{P}/revert"),
            json!({"version": 0, "reason": "typo for 10"}),
        )
        .await
        .expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["path"], "version",
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("removes all 50 flags"),
        "{}",
        r.body
    );
    s.post(
        &format!("{P}/revert"),
        json!({"version": 0, "reason": "r", "empty": "yes"}),
    )
    .await
    .expect(422);
    assert_eq!(
        s.get(&format!("{P}/flags")).await.version(),
        head,
        "nothing was written"
    );
    let vs = s.version_numbers(&format!("{P}/versions?flag=f3")).await;
    assert_eq!(vs, vec![3, 2, 1]);
    // Pagination, newest first.
    let page = s
        .get(&format!("{P}/versions?limit=2"))
        .await
        .expect(200)
        .body;
    assert_eq!(page["next"], 2);
    let page2 = s
        .get(&format!("{P}/versions?limit=2&before=2"))
        .await
        .expect(200)
        .body;
    assert_eq!(page2["versions"][0]["version"], 1);
    // The last page offers no older one, even when it is full.
    assert_eq!(page2["next"], Value::Null, "{page2}");
    let page3 = s
        .get(&format!("{P}/versions?limit=1&before=2"))
        .await
        .expect(200)
        .body;
    assert_eq!(page3["versions"].as_array().map(Vec::len), Some(1));
    assert_eq!(page3["next"], Value::Null, "{page3}");
    s.stop().await
}

pub(crate) async fn stale_if_match(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/x"), rollout_flag(5))
        .await
        .expect(201);
    let ci = s.token("pipeline", "ci", Some(&["production"])).await;
    let ok = s
        .call(
            Method::POST,
            &format!("{P}/flags/x/rollout"),
            Some(&ci),
            Some(json!({"variant": "on", "percent": 25})),
            &[("If-Match", "1")],
        )
        .await
        .expect(200);
    assert_eq!(ok.body["version"], 2);
    let stale = s
        .call(
            Method::POST,
            &format!("{P}/flags/x/rollout"),
            Some(&ci),
            Some(json!({"variant": "on", "percent": 50})),
            &[("If-Match", "\"1\"")],
        )
        .await
        .expect(409);
    assert_eq!(stale.body["error"]["code"], "conflict");
    assert_eq!(stale.body["error"]["currentVersion"], 2);
    assert_eq!(
        s.get(&format!("{P}/flags/x")).await.body["targeting"]["fractional"][0],
        json!(["on", 25]),
        "nothing changed"
    );
    s.call(
        Method::PUT,
        &format!("{P}/flags/x"),
        Some(ADMIN),
        Some(rollout_flag(1)),
        &[("If-Match", "abc")],
    )
    .await
    .expect(400);
    s.stop().await
}

pub(crate) async fn errors(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    // 400: malformed JSON, with the position.
    let r = s
        .call(Method::PUT, &format!("{P}/flags/x"), Some(ADMIN), None, &[])
        .await
        .expect(400);
    assert_eq!(r.body["error"]["code"], "bad_request");
    let r = s
        .call(
            Method::PUT,
            &format!("{P}/flags"),
            Some(ADMIN),
            Some(json!("{")),
            &[],
        )
        .await
        .expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["message"],
        "a flag set must be a JSON object, found a string"
    );
    // Typed bodies: a missing field, or one of the wrong type, is named by its path.
    let detail = |r: &crate::support::Resp| {
        (
            r.body["error"]["details"][0]["path"].clone(),
            r.body["error"]["details"][0]["message"].clone(),
        )
    };
    let r = s
        .post("/environments", json!({"name": "QA"}))
        .await
        .expect(422);
    assert_eq!(detail(&r), (json!("key"), json!("is required")));
    // In development: production's history stays empty for the checks below.
    s.put("/environments/development/flags/r", rollout_flag(5))
        .await
        .expect(201);
    let r = s
        .post(
            "/environments/development/flags/r/rollout",
            json!({"variant": "on", "percent": "half"}),
        )
        .await
        .expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["path"], "percent",
        "{}",
        r.body
    );
    let r = s
        .post(
            "/tokens",
            json!({"name": "t", "role": "ci", "environments": ["production", 7]}),
        )
        .await
        .expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["path"], "environments[1]",
        "{}",
        r.body
    );
    // 401 without a token or with an unknown one.
    s.call(Method::GET, "/environments", None, None, &[])
        .await
        .expect(401);
    let r = s
        .call(Method::GET, "/environments", Some("fd_nope"), None, &[])
        .await
        .expect(401);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    // 404s.
    s.get("/environments/nope/flags").await.expect(404);
    s.get(&format!("{P}/flags/nope")).await.expect(404);
    s.get(&format!("{P}/flags?version=7")).await.expect(404);
    s.get("/no-such-route").await.expect(404);
    // 422 with every problem at its path, and nothing written.
    let bad = json!({"state": "ON", "variants": {"on": true, "off": "no"}, "defaultVariant": "onn",
                     "targeting": {"if": [{"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}, "of", "off"]}});
    let r = s
        .put(&format!("{P}/flags/new-checkout"), bad)
        .await
        .expect(422);
    let paths: Vec<&str> = r.body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec![
            "flags.new-checkout.state",
            "flags.new-checkout.variants.off",
            "flags.new-checkout.defaultVariant",
            "flags.new-checkout.targeting.if[0].sem_ver[1]",
            "flags.new-checkout.targeting.if[1]",
        ]
    );
    assert_eq!(s.get(P).await.body["version"], 0, "no partial state");
    // Kill switch without a reason; rollout on a flag without a split.
    s.put(
        &format!("{P}/flags/plain"),
        json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}),
    )
    .await
    .expect(201);
    let r = s
        .post(&format!("{P}/flags/plain/disable"), json!({}))
        .await
        .expect(422);
    assert_eq!(r.body["error"]["details"][0]["path"], "reason");
    let r = s
        .post(
            &format!("{P}/flags/plain/rollout"),
            json!({"variant": "on", "percent": 5}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["error"]["details"][0]["path"], "targeting");
    let r = s
        .post(
            &format!("{P}/flags/plain/rollout"),
            json!({"variant": "on"}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["error"]["details"][0]["path"], "percent");
    // Import of an invalid document: 422, every problem, nothing written.
    let r = s.put(&format!("{P}/flags"), json!({"flags": {"a": {"state": "ENABLED", "variants": {}}, "b": {"variants": {"x": 1}}}})).await.expect(422);
    assert_eq!(r.body["error"]["details"].as_array().map(Vec::len), Some(2));
    assert_eq!(s.get(P).await.body["version"], 1);
    // The key in the body must match the URL.
    s.put(
        &format!("{P}/flags/k"),
        json!({"key": "other", "state": "ENABLED", "variants": {"on": true}}),
    )
    .await
    .expect(422);
    s.stop().await
}

pub(crate) async fn body_limit(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(
        &b,
        flagd::server::Options {
            max_body_bytes: 64 * 1024,
            ..Default::default()
        },
    )
    .await?;
    let big = json!({"flags": {}, "metadata": {"pad": "x".repeat(100 * 1024)}});
    let r = s.put(&format!("{P}/flags"), big).await.expect(413);
    assert_eq!(r.body["error"]["code"], "payload_too_large");
    s.stop().await
}

pub(crate) async fn environments(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let envs = s.get("/environments").await.expect(200).body;
    let keys: Vec<&str> = envs["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, vec!["development", "staging", "production"]);
    assert_eq!(envs["environments"][2]["production"], true);
    s.post("/environments", json!({"key": "qa", "name": "QA"}))
        .await
        .expect(201);
    s.post("/environments", json!({"key": "qa"}))
        .await
        .expect(409);
    s.post("/environments", json!({"key": "has space"}))
        .await
        .expect(422);
    s.put("/environments/qa/flags/f", rollout_flag(1))
        .await
        .expect(201);
    let r = s
        .call(Method::DELETE, "/environments/qa", Some(ADMIN), None, &[])
        .await
        .expect(409);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has 1 flags")
    );
    s.call(
        Method::DELETE,
        "/environments/qa?force=true",
        Some(ADMIN),
        None,
        &[("X-Change-Reason", "decommissioned")],
    )
    .await
    .expect(204);
    s.get("/environments/qa").await.expect(404);
    let entries = audit(&s, "environment=qa").await;
    assert_eq!(entries[0]["action"], "environment.delete");
    assert_eq!(entries[0]["reason"], "decommissioned");
    s.stop().await
}

pub(crate) async fn tokens(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let viewer = s.token("reader", "viewer", None).await;
    s.call(Method::GET, "/environments", Some(&viewer), None, &[])
        .await
        .expect(200);
    s.post("/tokens", json!({"name": "reader", "role": "viewer"}))
        .await
        .expect(409);
    s.post("/tokens", json!({"name": "x", "role": "root"}))
        .await
        .expect(422);
    s.post(
        "/tokens",
        json!({"name": "x", "role": "viewer", "environments": ["nope"]}),
    )
    .await
    .expect(422);
    let list = s.get("/tokens").await.expect(200).body;
    let t = list["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "reader")
        .cloned()
        .unwrap_or_default();
    assert!(
        t.get("secret").is_none() && t.get("hash").is_none(),
        "secrets are never listed"
    );
    s.call(
        Method::DELETE,
        &format!("/tokens/{}", t["id"].as_str().unwrap_or_default()),
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    s.call(Method::GET, "/environments", Some(&viewer), None, &[])
        .await
        .expect(401);
    // SDK keys: one environment, no management API.
    let k = s
        .post(&format!("{P}/sdk-keys"), json!({}))
        .await
        .expect(201)
        .body;
    let key = k["secret"].as_str().unwrap_or_default().to_owned();
    assert!(key.starts_with("fdsdk_"));
    s.call(Method::GET, &format!("{P}/flags"), Some(&key), None, &[])
        .await
        .expect(403);
    let actions: Vec<String> = audit(&s, "")
        .await
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    assert!(
        actions.contains(&"token.revoke".to_owned())
            && actions.contains(&"sdk-key.create".to_owned())
    );
    s.stop().await
}

pub(crate) async fn audit_filters(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let ed = s.token("editor-ann", "editor", None).await;
    s.call(
        Method::PUT,
        &format!("{P}/flags/a"),
        Some(&ed),
        Some(rollout_flag(1)),
        &[],
    )
    .await
    .expect(201);
    s.call(
        Method::PUT,
        "/environments/staging/flags/a",
        Some(&ed),
        Some(rollout_flag(1)),
        &[],
    )
    .await
    .expect(201);
    s.put(&format!("{P}/flags/b"), rollout_flag(1))
        .await
        .expect(201);
    let by_actor = audit(&s, "actor=editor-ann").await;
    assert_eq!(by_actor.len(), 2);
    let by_flag = audit(&s, "environment=production&flag=a").await;
    assert_eq!(by_flag.len(), 1);
    assert_eq!(by_flag[0]["target"], "a");
    // Imports and whole-set reverts that changed a flag are found by that flag too,
    // also for a flag an import created.
    s.put(
        &format!("{P}/flags"),
        json!({"flags": {"a": rollout_flag(7), "b": rollout_flag(1), "c": rollout_flag(2)}}),
    )
    .await
    .expect(200);
    s.post(
        &format!("{P}/revert"),
        json!({"version": 1, "reason": "test"}),
    )
    .await
    .expect(200);
    let actions = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect()
    };
    let by_flag = audit(&s, "environment=production&flag=a").await;
    assert_eq!(
        actions(&by_flag),
        vec!["flagset.revert", "flagset.import", "flag.create"]
    );
    let by_c = audit(&s, "environment=production&flag=c").await;
    assert_eq!(actions(&by_c), vec!["flagset.revert", "flagset.import"]);
    let by_b = audit(&s, "environment=production&flag=b").await;
    // The import left b as it was; the revert to version 1 (before b) deleted it.
    assert_eq!(actions(&by_b), vec!["flagset.revert", "flag.create"]);
    // By action, exactly or by family; the family's own wildcards are not wildcards.
    let creates = audit(&s, "action=flag.create").await;
    assert!(!creates.is_empty() && creates.iter().all(|e| e["action"] == "flag.create"));
    let flag_family = audit(&s, "action=flag.").await;
    assert!(flag_family.len() >= creates.len());
    assert!(
        flag_family
            .iter()
            .all(|e| e["action"].as_str().is_some_and(|a| a.starts_with("flag.")))
    );
    assert!(audit(&s, "action=fl_g.").await.is_empty());
    assert!(audit(&s, "since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(audit(&s, "until=2000-01-01T00:00:00Z").await.len(), 0);
    let page = s.get("/audit?limit=2").await.expect(200).body;
    let next = page["next"].as_i64().unwrap_or_default();
    let rest = s
        .get(&format!("/audit?limit=100&before={next}"))
        .await
        .expect(200)
        .body;
    assert!(rest["entries"].as_array().is_some_and(|e| !e.is_empty()));
    s.get("/audit?since=yesterday").await.expect(400);
    s.stop().await
}
