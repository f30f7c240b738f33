//! Alertmanager as a trigger: its webhook payload (version 4) as Alertmanager sends it,
//! delivered at least once, out of order, with bad tokens and refused policies.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Resp, Server, rollout_flag};

const P: &str = "/environments/production";

/// One alert as Alertmanager writes it.
fn alert(status: &str, labels: Value, fingerprint: &str, starts_at: &str) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": "checkout errors above 1%"},
        "startsAt": starts_at,
        "endsAt": if status == "resolved" { "2026-12-01T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=checkout_errors",
        "fingerprint": fingerprint,
    })
}

/// The whole webhook payload around some alerts.
fn payload(status: &str, alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"CheckoutErrors\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "flagd",
        "groupLabels": {"alertname": "CheckoutErrors"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    })
}

async fn deliver(s: &Server, token: &str, body: &Value) -> Resp {
    s.call(
        Method::POST,
        "/alertmanager",
        Some(token),
        Some(body.clone()),
        &[],
    )
    .await
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

async fn head(s: &Server) -> u64 {
    s.get(P).await.expect(200).body["version"]
        .as_u64()
        .unwrap_or_default()
}

pub(crate) async fn alertmanager_kills_flags(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/search"), rollout_flag(50))
        .await
        .expect(201);
    let am = s.token("alertmanager", "alertmanager", None).await;
    // Its token delivers alerts and does nothing else, not even read.
    s.call(Method::GET, &format!("{P}/flags"), Some(&am), None, &[])
        .await
        .expect(403);
    s.call(
        Method::POST,
        &format!("{P}/flags/checkout/disable"),
        Some(&am),
        Some(json!({"reason": "x"})),
        &[],
    )
    .await
    .expect(403);

    let labels = json!({"alertname": "CheckoutErrors", "severity": "page",
                        "flagd_environment": "production", "flagd_flag": "checkout"});
    let started = now_rfc3339();
    let firing = payload(
        "firing",
        vec![alert("firing", labels.clone(), "f1", &started)],
    );
    let r = deliver(&s, &am, &firing).await.expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "applied", "{}", r.body);
    assert_eq!(r.body["results"][0]["version"], 3, "{}", r.body);
    assert_eq!(
        s.get(&format!("{P}/flags/checkout")).await.body["state"],
        "DISABLED"
    );
    let v = s.get(&format!("{P}/versions/3")).await.expect(200).body["version"].clone();
    assert_eq!(v["kind"], "auto-disable", "{v}");
    assert_eq!(v["author"], "alertmanager", "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CheckoutErrors")
            && reason.contains("checkout errors above 1%")
            && reason.contains("http://prometheus.example:9090/graph"),
        "{reason}"
    );
    // The audit log holds the alert itself with the version.
    let audit = s
        .get("/audit?environment=production&action=alert.disable")
        .await
        .expect(200)
        .body;
    let entry = &audit["entries"][0];
    assert_eq!(entry["version"], 3, "{audit}");
    assert_eq!(
        entry["after"]["alert"]["labels"]["severity"], "page",
        "{audit}"
    );
    assert_eq!(entry["after"]["groupKey"], firing["groupKey"], "{audit}");

    // At least once: the same delivery again, by bearer or basic auth, acts no more.
    let again = deliver(&s, &am, &firing).await.expect(200);
    assert_eq!(
        again.body["results"][0]["outcome"], "duplicate",
        "{}",
        again.body
    );
    assert_eq!(again.body["results"][0]["version"], 3, "{}", again.body);
    let basic = reqwest::Client::new()
        .post(format!("{}/alertmanager", s.base))
        .basic_auth("alertmanager", Some(&am))
        .json(&firing)
        .send()
        .await?;
    assert_eq!(basic.status(), 200);
    assert_eq!(
        basic.json::<Value>().await?["results"][0]["outcome"],
        "duplicate"
    );
    assert_eq!(head(&s).await, 3);

    // Resolved: shown, and nothing is undone.
    let resolved = payload(
        "resolved",
        vec![alert("resolved", labels.clone(), "f1", &started)],
    );
    let r = deliver(&s, &am, &resolved).await.expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "resolved", "{}", r.body);
    let r = deliver(&s, &am, &resolved).await.expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "duplicate", "{}", r.body);
    assert_eq!(
        s.get(&format!("{P}/flags/checkout")).await.body["state"],
        "DISABLED"
    );
    assert_eq!(head(&s).await, 3);

    // A person turns the flag back on; Alertmanager repeats the same firing: once per
    // firing, so the person's decision stands.
    s.post(
        &format!("{P}/flags/checkout/enable"),
        json!({"reason": "fixed"}),
    )
    .await
    .expect(200);
    let r = deliver(&s, &am, &firing).await.expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "duplicate", "{}", r.body);
    assert_eq!(
        s.get(&format!("{P}/flags/checkout")).await.body["state"],
        "ENABLED"
    );
    // A new firing (a new startsAt) acts again; on two flags at once.
    let two = json!({"alertname": "CheckoutErrors", "flagd_environment": "production",
                     "flagd_flag": "checkout, search"});
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", two.clone(), "f1", &now_rfc3339())],
        ),
    )
    .await
    .expect(200);
    let outcomes: Vec<&str> = r.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["applied", "applied"], "{}", r.body);
    assert_eq!(head(&s).await, 6);

    // Out of order: the resolution of a firing arrives before the firing itself (a
    // retried delivery): the firing is stale and does nothing.
    let late = "2026-11-30T10:00:00Z";
    let other = json!({"alertname": "SearchSlow", "flagd_environment": "production",
                       "flagd_flag": "search"});
    s.post(&format!("{P}/flags/search/enable"), json!({"reason": "x"}))
        .await
        .expect(200);
    let r = deliver(
        &s,
        &am,
        &payload(
            "resolved",
            vec![alert("resolved", other.clone(), "f2", late)],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "resolved", "{}", r.body);
    let r = deliver(
        &s,
        &am,
        &payload("firing", vec![alert("firing", other.clone(), "f2", late)]),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "stale", "{}", r.body);
    assert_eq!(
        s.get(&format!("{P}/flags/search")).await.body["state"],
        "ENABLED"
    );

    // 4xx, not retried by Alertmanager: a bad token, a role that may not, an unknown
    // environment, an environment outside the token's, no environment, an unknown flag.
    s.call(
        Method::POST,
        "/alertmanager",
        Some("fd_nope"),
        Some(firing.clone()),
        &[],
    )
    .await
    .expect(401);
    let viewer = s.token("viewer", "viewer", None).await;
    deliver(&s, &viewer, &firing).await.expect(403);
    let nowhere =
        json!({"alertname": "X", "flagd_environment": "nowhere", "flagd_flag": "checkout"});
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", nowhere, "f3", &now_rfc3339())],
        ),
    )
    .await
    .expect(404);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no environment \"nowhere\""),
        "{}",
        r.body
    );
    let dev_only = s
        .token("am-dev", "alertmanager", Some(&["development"]))
        .await;
    deliver(&s, &dev_only, &firing).await.expect(403);
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert(
                "firing",
                json!({"alertname": "X", "flagd_flag": "checkout"}),
                "f4",
                &now_rfc3339(),
            )],
        ),
    )
    .await
    .expect(422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("flagd_environment"),
        "{}",
        r.body
    );
    // ... unless the receiver's URL names the environment.
    let r = s
        .call(
            Method::POST,
            "/alertmanager?environment=production",
            Some(&am),
            Some(payload(
                "firing",
                vec![alert(
                    "firing",
                    json!({"alertname": "X", "flagd_flag": "search"}),
                    "f4",
                    &now_rfc3339(),
                )],
            )),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "applied", "{}", r.body);
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert(
                "firing",
                json!({"alertname": "X", "flagd_environment": "production", "flagd_flag": "nope"}),
                "f5",
                &now_rfc3339(),
            )],
        ),
    )
    .await
    .expect(404);
    assert_eq!(r.body["results"][0]["outcome"], "refused", "{}", r.body);
    // A payload flagd cannot read changes nothing, and says where.
    let mut bad = firing.clone();
    bad["alerts"][0]["startsAt"] = json!("yesterday");
    let r = deliver(&s, &am, &bad).await.expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["path"], "alerts[0].startsAt",
        "{}",
        r.body
    );
    let mut bad = firing.clone();
    bad["version"] = json!("3");
    deliver(&s, &am, &bad).await.expect(422);
    let mut bad = firing.clone();
    bad.as_object_mut().map(|o| o.remove("alerts"));
    let r = deliver(&s, &am, &bad).await.expect(422);
    assert_eq!(
        r.body["error"]["details"][0]["path"], "alerts",
        "{}",
        r.body
    );

    // Everything it did, and did not, is listed and counted.
    let list = s.get(&format!("{P}/alerts")).await.expect(200).body;
    let outcomes: Vec<&str> = list["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    for want in ["applied", "resolved", "stale", "refused"] {
        assert!(outcomes.contains(&want), "{want} in {list}");
    }
    let metrics = reqwest::get(s.base.replace("/api/v1", "/metrics"))
        .await?
        .text()
        .await?;
    for line in [
        "flagd_alert_actions_total{environment=\"production\",action=\"disable\",outcome=\"applied\"} 4",
        "flagd_alert_actions_total{environment=\"production\",action=\"disable\",outcome=\"duplicate\"} 3",
        "flagd_alert_actions_total{environment=\"production\",action=\"disable\",outcome=\"stale\"} 1",
        "flagd_alert_actions_total{environment=\"production\",action=\"disable\",outcome=\"refused\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    s.stop().await
}

pub(crate) async fn alert_policy_and_last_good(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let am = s.token("alertmanager", "alertmanager", None).await;
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(30));
    s.put(&format!("{P}/flags/a"), rollout_flag(10))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/b"), rollout_flag(10))
        .await
        .expect(201);
    pause().await;
    let good_time = now_rfc3339();
    pause().await;
    // The release that misbehaves, and an unrelated change after it.
    s.put(&format!("{P}/flags/a"), rollout_flag(90))
        .await
        .expect(200);
    s.put(&format!("{P}/flags/c"), rollout_flag(50))
        .await
        .expect(201);
    assert_eq!(head(&s).await, 4);

    // By default alerts may kill flags but not revert: refused, recorded, audited.
    let policy = s.get(&format!("{P}/alert-policy")).await.expect(200).body;
    assert_eq!(policy["policy"]["actions"], json!(["disable"]), "{policy}");
    assert_eq!(policy["policy"]["lookbackSeconds"], 600, "{policy}");
    let revert = json!({"alertname": "CheckoutErrors", "flagd_environment": "production",
                        "flagd_revert": "last-good"});
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", revert.clone(), "r1", &good_time)],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "refused", "{}", r.body);
    assert_eq!(head(&s).await, 4);
    let refused = s
        .get("/audit?environment=production&action=alert.refused")
        .await
        .expect(200)
        .body;
    assert!(
        refused["entries"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("does not allow \"revert\""),
        "{refused}"
    );

    // Policies: admins set them, everyone who reads sees them, bad ones are refused.
    let viewer = s.token("viewer", "viewer", None).await;
    let editor = s.token("editor", "editor", None).await;
    s.call(
        Method::GET,
        &format!("{P}/alert-policy"),
        Some(&viewer),
        None,
        &[],
    )
    .await
    .expect(200);
    s.call(
        Method::PUT,
        &format!("{P}/alert-policy"),
        Some(&editor),
        Some(json!({"actions": ["revert"]})),
        &[],
    )
    .await
    .expect(403);
    let bad = s
        .put(&format!("{P}/alert-policy"), json!({"actions": ["delete"]}))
        .await
        .expect(422);
    assert_eq!(
        bad.body["error"]["details"][0]["path"], "actions[0]",
        "{}",
        bad.body
    );
    s.put(&format!("{P}/alert-policy"), json!({"lookback": 5}))
        .await
        .expect(422);
    let set = s
        .put(
            &format!("{P}/alert-policy"),
            json!({"actions": ["disable", "revert"], "flags": ["a"], "lookbackSeconds": 0}),
        )
        .await
        .expect(200);
    assert_eq!(set.body["policy"]["updatedBy"], "admin", "{}", set.body);
    let audit = s
        .get("/audit?environment=production&action=alert-policy.update")
        .await
        .expect(200)
        .body;
    assert_eq!(
        audit["entries"][0]["after"]["lookbackSeconds"], 0,
        "{audit}"
    );

    // Last known good: the head at startsAt − lookback (here 0 s): v2, before the bad
    // release v3 and the change v4 after it, both undone in one version.
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", revert.clone(), "r2", &good_time)],
        ),
    )
    .await
    .expect(200);
    let res = &r.body["results"][0];
    assert_eq!(res["outcome"], "applied", "{}", r.body);
    assert_eq!(res["version"], 5, "{}", r.body);
    let detail = res["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("v2") && detail.contains("v3") && detail.contains("v4"),
        "{detail}"
    );
    let v5 = s.get(&format!("{P}/versions/5")).await.expect(200).body["version"].clone();
    assert_eq!(v5["kind"], "auto-revert", "{v5}");
    assert_eq!(v5["revertedTo"], 2, "{v5}");
    let set_now = s.get(&format!("{P}/flags")).await.expect(200).body;
    assert_eq!(set_now["flags"]["a"], rollout_flag(10), "{set_now}");
    assert!(set_now["flags"].get("c").is_none(), "{set_now}");
    let audit = s
        .get("/audit?environment=production&action=alert.revert")
        .await
        .expect(200)
        .body;
    assert_eq!(audit["entries"][0]["version"], 5, "{audit}");

    // A second alert of the same incident does not revert further than the first.
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", revert.clone(), "r3", &good_time)],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "unchanged", "{}", r.body);
    assert_eq!(head(&s).await, 5);
    // Before the environment existed there is no last known good.
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert(
                "firing",
                revert.clone(),
                "r4",
                "2001-01-01T00:00:00Z",
            )],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "refused", "{}", r.body);

    // The flag allow-list, and a policy that is off.
    let kill_b =
        json!({"alertname": "BErrors", "flagd_environment": "production", "flagd_flag": "b"});
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", kill_b, "k1", &now_rfc3339())],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "refused", "{}", r.body);
    s.put(&format!("{P}/alert-policy"), json!({"enabled": false}))
        .await
        .expect(200);
    let kill_a =
        json!({"alertname": "AErrors", "flagd_environment": "production", "flagd_flag": "a"});
    let r = deliver(
        &s,
        &am,
        &payload(
            "firing",
            vec![alert("firing", kill_a, "k2", &now_rfc3339())],
        ),
    )
    .await
    .expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "refused", "{}", r.body);
    assert_eq!(head(&s).await, 5);
    s.stop().await
}

/// A protected environment never stands between an alert, or a monitoring tool's
/// trigger URL, and a kill switch: both apply without approval and open reviews; a
/// trigger that would enable a flag needs approval like any enable.
pub(crate) async fn alerts_and_triggers_break_glass(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/search"), rollout_flag(50))
        .await
        .expect(201);
    s.put(
        &format!("{P}/approval-policy"),
        json!({"protected": true, "approvals": 2}),
    )
    .await
    .expect(200);
    let am = s.token("alertmanager", "alertmanager", None).await;
    let labels = json!({"alertname": "CheckoutErrors", "flagd_environment": "production", "flagd_flag": "checkout"});
    let firing = payload(
        "firing",
        vec![alert("firing", labels, "p1", &now_rfc3339())],
    );
    let r = deliver(&s, &am, &firing).await.expect(200);
    assert_eq!(r.body["results"][0]["outcome"], "applied", "{}", r.body);
    let mut urls = Vec::new();
    for action in ["disable", "enable"] {
        let t = s
            .post(
                &format!("{P}/triggers"),
                json!({"flag": "search", "action": action, "name": format!("grafana-{action}")}),
            )
            .await
            .expect(201);
        urls.push(t.body["url"].as_str().unwrap_or_default().to_owned());
    }
    let http = reqwest::Client::new();
    let off = http.post(&urls[0]).body("5xx above 2%").send().await?;
    assert_eq!(off.status(), 200);
    assert_eq!(
        s.get(&format!("{P}/flags/search")).await.body["state"],
        "DISABLED"
    );
    let on = http.post(&urls[1]).send().await?;
    assert_eq!(on.status(), 409);
    let body: Value = on.json().await?;
    assert_eq!(body["error"]["code"], "approval_required", "{body}");
    let reviews = s.get(&format!("{P}/reviews?open=true")).await.expect(200);
    let who: Vec<(&str, &str)> = reviews.body["reviews"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r["actor"].as_str()?, r["action"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        who,
        vec![
            ("trigger:grafana-disable", "flag.disable"),
            ("alertmanager", "flag.disable")
        ],
        "{}",
        reviews.body
    );
    s.stop().await
}
