//! Trigger URLs for monitoring tools without Alertmanager support.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server, rollout_flag};

const P: &str = "/environments/production";

async fn fire(url: &str, body: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().post(url);
    if let Some(b) = body {
        r = r.body(b.to_owned());
    }
    let r = r.send().await.expect("the trigger URL answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn trigger_urls(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(50))
        .await
        .expect(201);
    let editor = s.token("editor", "editor", None).await;

    // Made by an admin, for one action on one flag; shown once.
    let made = s
        .post(
            &format!("{P}/triggers"),
            json!({"flag": "checkout", "action": "disable", "name": "grafana-5xx"}),
        )
        .await
        .expect(201);
    let url = made.body["url"].as_str().unwrap_or_default().to_owned();
    assert!(url.contains("/api/v1/triggers/fdtr_"), "{}", made.body);
    let id = made.body["trigger"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    s.call(
        Method::POST,
        &format!("{P}/triggers"),
        Some(&editor),
        Some(json!({"flag": "checkout", "action": "disable"})),
        &[],
    )
    .await
    .expect(403);
    let bad = s
        .post(
            &format!("{P}/triggers"),
            json!({"flag": "checkout", "action": "delete"}),
        )
        .await
        .expect(422);
    assert_eq!(
        bad.body["error"]["details"][0]["path"], "action",
        "{}",
        bad.body
    );
    let bad = s
        .post(
            &format!("{P}/triggers"),
            json!({"flag": "nope", "action": "disable"}),
        )
        .await
        .expect(422);
    assert_eq!(
        bad.body["error"]["details"][0]["path"], "flag",
        "{}",
        bad.body
    );

    // Fired with no token and no body: the kill switch, audited as the trigger.
    let (status, body) = fire(&url, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert_eq!(
        s.get(&format!("{P}/flags/checkout")).await.body["state"],
        "DISABLED"
    );
    let v = s.get(&format!("{P}/versions/2")).await.expect(200).body;
    assert_eq!(v["version"]["author"], "trigger:grafana-5xx", "{v}");
    assert_eq!(v["version"]["reason"], "trigger grafana-5xx fired", "{v}");
    // Delivered again (tools retry): idempotent, no new version.
    let (status, body) = fire(&url, Some("not json at all")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], false, "{body}");
    assert_eq!(s.get(P).await.body["version"], 2);
    // What the tool said becomes the reason.
    s.post(
        &format!("{P}/flags/checkout/enable"),
        json!({"reason": "fixed"}),
    )
    .await
    .expect(200);
    let (status, _) = fire(&url, Some(r#"{"title": "[FIRING:1] checkout 5xx > 2%"}"#)).await;
    assert_eq!(status, 200);
    let v = s.get(&format!("{P}/versions/4")).await.expect(200).body;
    assert_eq!(
        v["version"]["reason"], "trigger grafana-5xx: [FIRING:1] checkout 5xx > 2%",
        "{v}"
    );

    // Listed without its URL; revoked, it stops working.
    let list = s.get(&format!("{P}/triggers")).await.expect(200).body;
    assert_eq!(list["triggers"][0]["name"], "grafana-5xx", "{list}");
    assert!(list["triggers"][0]["lastFiredAt"].is_string(), "{list}");
    assert!(
        !list.to_string().contains("fdtr_"),
        "no secret in the list: {list}"
    );
    s.call(
        Method::DELETE,
        &format!("{P}/triggers/{id}"),
        Some(crate::support::ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    assert_eq!(fire(&url, None).await.0, 404);
    assert_eq!(fire(&url.replace("fdtr_", "fdtr_x"), None).await.0, 404);
    let audit = s.get("/audit?action=trigger.").await.expect(200).body;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["trigger.revoke", "trigger.create"], "{audit}");
    Ok(())
}
