//! Approvals: a protected environment takes changes as change requests approved by
//! people other than their author, bound to the version they were based on; break-glass
//! actions (a kill switch, a revert of the set, an undo of the head) need no approval but
//! a reason, and open a review that someone else acknowledges.

use reqwest::Method;
use serde_json::{Value, json};

use crate::people::{Person, person};
use crate::support::{ADMIN, Backend, Resp, Server, error_paths, rollout_flag};

const P: &str = "/environments/production";

fn code(r: &Resp) -> &str {
    r.body["error"]["code"].as_str().unwrap_or_default()
}

async fn propose(s: &Server, who: &Person, title: &str, change: Value) -> String {
    let r = who
        .call(
            s,
            Method::POST,
            &format!("{P}/change-requests"),
            Some(json!({"title": title, "change": change})),
        )
        .await
        .expect(201);
    assert_eq!(r.body["request"]["state"], "open", "{}", r.body);
    r.body["request"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn act(s: &Server, who: &Person, id: &str, action: &str, body: Value) -> Resp {
    who.call(
        s,
        Method::POST,
        &format!("{P}/change-requests/{id}/{action}"),
        Some(body),
    )
    .await
}

pub(crate) async fn change_requests_and_break_glass(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(5))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/banner"), rollout_flag(0))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/checkout"), rollout_flag(6))
        .await
        .expect(200);
    let alice = person(&s, "alice", "editor").await;
    let bob = person(&s, "bob", "editor").await;
    let carol = person(&s, "carol", "editor").await;
    let vic = person(&s, "vic", "viewer").await;
    let dave = person(&s, "dave", "responder").await;

    // The policy: admins set it; 1 to 10 approvals.
    let policy = format!("{P}/approval-policy");
    assert_eq!(
        s.get(&policy).await.expect(200).body["policy"]["protected"],
        false
    );
    let bad = s
        .call(
            Method::PUT,
            &policy,
            Some(ADMIN),
            Some(json!({"protected": true, "approvals": 0})),
            &[],
        )
        .await
        .expect(422);
    assert_eq!(error_paths(&bad.body), vec!["approvals"]);
    alice
        .call(
            &s,
            Method::PUT,
            &policy,
            Some(json!({"protected": true, "approvals": 2})),
        )
        .await
        .expect(403);
    s.call(
        Method::PUT,
        &policy,
        Some(ADMIN),
        Some(json!({"protected": true, "approvals": 2})),
        &[],
    )
    .await
    .expect(200);
    let envs = s.get("/environments").await.expect(200);
    assert_eq!(envs.body["environments"][2]["protected"], true);

    // Nothing unsafe is written directly any more, whoever asks, by any route.
    let flag = format!("{P}/flags/checkout");
    for (m, path, body) in [
        (Method::PUT, flag.clone(), Some(rollout_flag(50))),
        (Method::DELETE, flag.clone(), None),
        (
            Method::POST,
            format!("{flag}/rollout"),
            Some(json!({"variant": "on", "percent": 50, "reason": "x"})),
        ),
        (
            Method::POST,
            format!("{flag}/restore"),
            Some(json!({"version": 1, "reason": "x"})),
        ),
        (
            Method::PUT,
            format!("{P}/flags"),
            Some(json!({"flags": {}})),
        ),
        (
            Method::POST,
            format!("{flag}/plans"),
            Some(json!({"variant": "on", "steps": [{"percent": 10}], "reason": "x"})),
        ),
        (
            Method::POST,
            format!("{P}/schedules"),
            Some(json!({"in": "1h", "action": "enable", "flag": "checkout", "reason": "x"})),
        ),
        (
            Method::POST,
            format!("{P}/versions/2/undo"),
            Some(json!({"reason": "x"})),
        ),
    ] {
        let r = s
            .call(
                m.clone(),
                &path,
                Some(ADMIN),
                body,
                &[("x-change-reason", "test")],
            )
            .await
            .expect(409);
        assert_eq!(code(&r), "approval_required", "{m} {path}: {}", r.body);
    }
    // Staging is not protected.
    s.put("/environments/staging/flags/checkout", rollout_flag(5))
        .await
        .expect(201);

    // Break-glass: a reason is required; it opens a review.
    let kill = format!("{flag}/disable");
    let r = dave
        .call(&s, Method::POST, &kill, Some(json!({})))
        .await
        .expect(422);
    assert_eq!(error_paths(&r.body), vec!["reason"]);
    let killed = dave
        .call(
            &s,
            Method::POST,
            &kill,
            Some(json!({"reason": "checkout errors"})),
        )
        .await
        .expect(200);
    let kill_version = killed.version().unwrap_or_default();
    // Turning it back on is not the safe direction.
    let on = dave
        .call(
            &s,
            Method::POST,
            &format!("{flag}/enable"),
            Some(json!({"reason": "fixed"})),
        )
        .await
        .expect(409);
    assert_eq!(code(&on), "approval_required");
    let reviews = s.get(&format!("{P}/reviews?open=true")).await.expect(200);
    let review = &reviews.body["reviews"][0];
    assert_eq!(review["version"], kill_version);
    assert_eq!(review["actor"], "dave");
    assert_eq!(review["action"], "flag.disable");
    assert_eq!(review["reason"], "checkout errors");
    let rid = review["id"].as_str().unwrap_or_default().to_owned();
    let ack = format!("{P}/reviews/{rid}/acknowledge");
    dave.call(&s, Method::POST, &ack, Some(json!({})))
        .await
        .expect(403);
    vic.call(&s, Method::POST, &ack, Some(json!({})))
        .await
        .expect(403);
    s.call(Method::POST, &ack, Some(ADMIN), Some(json!({})), &[])
        .await
        .expect(403);
    let acked = bob
        .call(
            &s,
            Method::POST,
            &ack,
            Some(json!({"note": "postmortem PM-12"})),
        )
        .await
        .expect(200);
    assert_eq!(acked.body["review"]["acknowledgedBy"], "bob");
    bob.call(&s, Method::POST, &ack, Some(json!({})))
        .await
        .expect(409);
    assert_eq!(
        s.get(&format!("{P}/reviews?open=true")).await.body["reviews"],
        json!([])
    );
    // A revert of the whole set and an undo of the head are break-glass too.
    dave.call(
        &s,
        Method::POST,
        &format!("{P}/revert"),
        Some(json!({"version": 1, "reason": "back to before"})),
    )
    .await
    .expect(200);
    let head = s.get(&format!("{P}/versions")).await.body["versions"][0]["version"]
        .as_u64()
        .unwrap_or_default();
    dave.call(
        &s,
        Method::POST,
        &format!("{P}/versions/{head}/undo"),
        Some(json!({"reason": "undo the revert"})),
    )
    .await
    .expect(200);
    let all = s.get(&format!("{P}/reviews")).await.expect(200);
    let actions: Vec<&str> = all.body["reviews"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions,
        vec!["flagset.undo", "flagset.revert", "flag.disable"]
    );

    // A change request: two approvals from people other than its author.
    let id = propose(
        &s,
        &alice,
        "checkout to 50%",
        json!({"flags": {"checkout": rollout_flag(50)}}),
    )
    .await;
    let got = s
        .get(&format!("{P}/change-requests/{id}"))
        .await
        .expect(200);
    assert_eq!(got.body["diff"][0]["key"], "checkout");
    assert_eq!(got.body["diff"][0]["after"], rollout_flag(50));
    assert_eq!(got.body["diff"][0]["before"]["state"], "DISABLED");
    let own = act(&s, &alice, &id, "approve", json!({})).await.expect(403);
    assert!(
        own.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("other people")
    );
    vic.call(
        &s,
        Method::POST,
        &format!("{P}/change-requests/{id}/approve"),
        Some(json!({})),
    )
    .await
    .expect(403);
    let by_token = s
        .call(
            Method::POST,
            &format!("{P}/change-requests/{id}/approve"),
            Some(ADMIN),
            Some(json!({})),
            &[],
        )
        .await
        .expect(403);
    assert!(
        by_token.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("people")
    );
    // A person whose login is the name of the token that made another token is not
    // that token's person: tokens name the person who made them by id.
    person(&s, "admin", "editor").await;
    let made_by_admin = s.token("helper", "editor", None).await;
    s.call(
        Method::POST,
        &format!("{P}/change-requests/{id}/approve"),
        Some(&made_by_admin),
        Some(json!({})),
        &[],
    )
    .await
    .expect(403);
    let one = act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    assert_eq!(one.body["request"]["approvedBy"], json!(["bob"]));
    assert_eq!(one.body["request"]["state"], "open");
    // Once per person and revision.
    act(&s, &bob, &id, "approve", json!({})).await.expect(409);
    let listed = s
        .get(&format!("{P}/change-requests?state=open"))
        .await
        .expect(200);
    assert_eq!(listed.body["requests"][0]["id"], id.as_str());
    assert_eq!(listed.body["requests"][0]["approvedBy"], json!(["bob"]));
    // Not applied with one approval of two.
    act(&s, &alice, &id, "apply", json!({})).await.expect(409);
    // An edit resets the approvals.
    let edited = alice
        .call(
            &s,
            Method::PUT,
            &format!("{P}/change-requests/{id}"),
            Some(json!({"change": {"flags": {"checkout": rollout_flag(25)}}})),
        )
        .await
        .expect(200);
    assert_eq!(edited.body["request"]["revision"], 2);
    assert_eq!(edited.body["request"]["approvedBy"], json!([]));
    bob.call(
        &s,
        Method::PUT,
        &format!("{P}/change-requests/{id}"),
        Some(json!({"change": {"flags": {"checkout": rollout_flag(99)}}})),
    )
    .await
    .expect(403);
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    let applied = act(&s, &carol, &id, "approve", json!({"comment": "lgtm"}))
        .await
        .expect(200);
    assert_eq!(
        applied.body["request"]["state"], "applied",
        "{}",
        applied.body
    );
    let v = applied.body["request"]["appliedVersion"]
        .as_u64()
        .unwrap_or_default();
    let version = s.get(&format!("{P}/versions/{v}")).await.expect(200).body["version"].clone();
    assert_eq!(version["author"], "alice");
    assert_eq!(
        version["reason"],
        format!("change request {id}: checkout to 50% (approved by bob, carol)")
    );
    assert_eq!(
        s.get(&flag).await.body["targeting"],
        rollout_flag(25)["targeting"]
    );
    act(&s, &bob, &id, "approve", json!({})).await.expect(409);

    // Stale: the set moved (a kill switch); the approval is refused and the request is
    // stale until its author updates it.
    let id = propose(
        &s,
        &alice,
        "banner on",
        json!({"flags": {"banner": rollout_flag(100)}}),
    )
    .await;
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    dave.call(&s, Method::POST, &kill, Some(json!({"reason": "again"})))
        .await
        .expect(200);
    let stale = act(&s, &carol, &id, "approve", json!({})).await.expect(409);
    assert!(
        stale.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("void"),
        "{}",
        stale.body
    );
    let got = s
        .get(&format!("{P}/change-requests/{id}"))
        .await
        .expect(200);
    assert_eq!(got.body["request"]["state"], "stale");
    let events: Vec<&str> = got.body["request"]["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(events, vec!["created", "approved", "stale"]);
    alice
        .call(
            &s,
            Method::PUT,
            &format!("{P}/change-requests/{id}"),
            Some(json!({"title": "banner on, rebased"})),
        )
        .await
        .expect(200);
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    let done = act(&s, &carol, &id, "approve", json!({})).await.expect(200);
    assert_eq!(done.body["request"]["state"], "applied");

    // Applied by its author, onto its base only: a kill switch in between makes it stale.
    let made = alice
        .call(
            &s,
            Method::POST,
            &format!("{P}/change-requests"),
            Some(json!({"title": "by hand", "change": {"flags": {"banner": rollout_flag(7)}}, "autoApply": false})),
        )
        .await
        .expect(201);
    let id = made.body["request"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    let both = act(&s, &carol, &id, "approve", json!({})).await.expect(200);
    assert_eq!(both.body["request"]["state"], "open", "{}", both.body);
    bob.call(
        &s,
        Method::POST,
        &format!("{P}/change-requests/{id}/apply"),
        Some(json!({})),
    )
    .await
    .expect(403);
    dave.call(
        &s,
        Method::POST,
        &format!("{P}/flags/banner/disable"),
        Some(json!({"reason": "in between"})),
    )
    .await
    .expect(200);
    act(&s, &alice, &id, "apply", json!({})).await.expect(409);
    let got = s
        .get(&format!("{P}/change-requests/{id}"))
        .await
        .expect(200);
    assert_eq!(got.body["request"]["state"], "stale");
    assert_ne!(
        s.get(&format!("{P}/flags/banner")).await.body["targeting"],
        rollout_flag(7)["targeting"]
    );

    // Rejected, with a comment required.
    let id = propose(
        &s,
        &alice,
        "delete banner",
        json!({"flags": {"banner": null}}),
    )
    .await;
    let r = act(&s, &bob, &id, "reject", json!({})).await.expect(422);
    assert_eq!(error_paths(&r.body), vec!["comment"]);
    act(&s, &bob, &id, "reject", json!({"comment": "still used"}))
        .await
        .expect(200);
    act(&s, &carol, &id, "approve", json!({})).await.expect(409);
    act(&s, &alice, &id, "withdraw", json!({}))
        .await
        .expect(200);

    // Bad proposals are refused at once, with their paths.
    for (change, path) in [
        (json!({"flags": {"x": {"state": "ON"}}}), "flags.x.state"),
        (json!({"colours": {}}), "change.colours"),
        (json!({"flags": {"nope": null}}), "change.flags.nope"),
        (json!({"plan": {"steps": []}}), "change.plan.flag"),
    ] {
        let r = alice
            .call(
                &s,
                Method::POST,
                &format!("{P}/change-requests"),
                Some(json!({"title": "t", "change": change})),
            )
            .await
            .expect(422);
        assert_eq!(error_paths(&r.body)[0], path, "{}", r.body);
    }

    // A release plan is approved once; its first step is then applied.
    let id = propose(
        &s,
        &alice,
        "ramp checkout",
        json!({"plan": {"flag": "checkout", "variant": "on", "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}]}}),
    )
    .await;
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    let planned = act(&s, &carol, &id, "approve", json!({})).await.expect(200);
    assert_eq!(
        planned.body["request"]["state"], "applied",
        "{}",
        planned.body
    );
    let plans = s
        .get(&format!("{P}/plans?flag=checkout&active=true"))
        .await
        .expect(200);
    assert_eq!(plans.body["plans"][0]["createdBy"], "alice");

    // A scheduled change is approved once; flagd applies it at its time.
    let id = propose(
        &s,
        &alice,
        "banner off tonight",
        json!({"schedule": {"in": "1s", "action": "disable", "flag": "banner", "reason": "campaign over"}}),
    )
    .await;
    act(&s, &bob, &id, "approve", json!({})).await.expect(200);
    let scheduled = act(&s, &carol, &id, "approve", json!({})).await.expect(200);
    assert_eq!(
        scheduled.body["request"]["state"], "applied",
        "{}",
        scheduled.body
    );
    let pending = s
        .get(&format!("{P}/schedules?pending=true"))
        .await
        .expect(200);
    assert_eq!(
        pending.body["schedules"][0]["createdBy"], "alice",
        "{}",
        pending.body
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.get(&format!("{P}/flags/banner")).await.body["state"] != "DISABLED" {
        assert!(
            std::time::Instant::now() < deadline,
            "the approved schedule never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Many pages reading one request at once (each reloads after a version event):
    // more than the pool's connections, all answered.
    let path = format!("{P}/change-requests/{id}");
    let reads: Vec<_> = (0..12).map(|_| s.get(&path)).collect();
    for r in futures_util::future::join_all(reads).await {
        r.expect(200);
    }

    // Who may review, by a person's role: editors and admins (viewers, responders and
    // pipelines may not).
    let id = propose(
        &s,
        &alice,
        "matrix",
        json!({"flags": {"banner": rollout_flag(1)}}),
    )
    .await;
    for (role, want) in [
        ("viewer", 403),
        ("responder", 403),
        ("ci", 403),
        ("editor", 200),
        ("admin", 200),
    ] {
        let who = person(&s, &format!("reviewer-{role}"), role).await;
        for action in ["comment", "reject"] {
            let r = act(&s, &who, &id, action, json!({"comment": "?"})).await;
            assert_eq!(r.status.as_u16(), want, "{role} {action}: {}", r.body);
            if r.status == 200 && action == "reject" {
                // Rejected: open it again for the next reviewer.
                alice
                    .call(
                        &s,
                        Method::PUT,
                        &format!("{P}/change-requests/{id}"),
                        Some(json!({"title": "matrix again"})),
                    )
                    .await
                    .expect(200);
            }
        }
    }

    // Everything is in the audit log.
    let audit = s
        .get("/audit?environment=production&limit=200")
        .await
        .expect(200);
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for a in [
        "environment.approvals",
        "request.create",
        "request.approve",
        "request.edit",
        "request.reject",
        "request.stale",
        "request.withdraw",
        "review.acknowledge",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    s.stop().await
}
