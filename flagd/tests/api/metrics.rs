//! `/metrics` after a scripted session: the values, not only the names.

use std::time::Duration;

use serde_json::json;

use crate::stream::{ack, connect, hello, next};
use crate::support::{Backend, Server, rollout_flag, sdk_key};

const P: &str = "/environments/production";

/// The value of the sample `series` (name and labels, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn scrape(s: &Server) -> anyhow::Result<String> {
    let root = s.base.trim_end_matches("/api/v1");
    let r = reqwest::get(format!("{root}/metrics")).await?;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("application/openmetrics-text")
    );
    Ok(r.text().await?)
}

/// Scrapes until every series has its value (some are recorded just after answering).
async fn until(s: &Server, want: &[(String, f64)]) -> anyhow::Result<String> {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(s).await?;
        if want.iter().all(|(k, v)| sample(&text, k) == Some(*v)) {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<_> = want
        .iter()
        .map(|(k, _)| (k.clone(), sample(&text, k)))
        .collect();
    anyhow::bail!("metrics never reached {want:?}; got {got:?}\n{text}")
}

pub(crate) async fn scripted_session(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let key = sdk_key(&s, "production").await;
    s.put(&format!("{P}/flags/a"), rollout_flag(5))
        .await
        .expect(201);
    let mut ws = connect(&s, &key).await?;
    hello(&mut ws, "i-1", None).await?;
    assert_eq!(next(&mut ws).await?["version"], 1);
    ack(&mut ws, 1).await?;
    // An ack counts only while its version is the head: flagd must have read this one
    // before the next change, or (under a loaded machine) it arrives superseded.
    let env = r#"environment="production""#;
    until(
        &s,
        &[(format!("flagd_commit_to_ack_seconds_count{{{env}}}"), 1.0)],
    )
    .await?;
    s.post(
        &format!("{P}/flags/a/disable"),
        json!({"reason": "incident"}),
    )
    .await
    .expect(200);
    s.post(
        &format!("{P}/flags/a/rollout"),
        json!({"variant": "on", "percent": 25, "reason": "ramp"}),
    )
    .await
    .expect(200);
    s.post(
        &format!("{P}/revert"),
        json!({"version": 1, "reason": "undo"}),
    )
    .await
    .expect(200);
    for v in 2..=4 {
        assert_eq!(next(&mut ws).await?["version"], v);
        ack(&mut ws, v).await?;
    }
    // Remote evaluations: flag `a` twice (version 4 is version 1: enabled, 5% on), and
    // one unknown flag.
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let http = reqwest::Client::new();
    let mut variant = String::new();
    for _ in 0..2 {
        let r: serde_json::Value = http
            .post(format!("{root}/ofrep/v1/evaluate/flags/a"))
            .bearer_auth(&key)
            .body(r#"{"context": {"targetingKey": "user-1"}}"#)
            .send()
            .await?
            .json()
            .await?;
        variant = r["variant"].as_str().unwrap_or_default().to_owned();
    }
    let missing = http
        .post(format!("{root}/ofrep/v1/evaluate/flags/zzz"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    let want = vec![
        (format!("flagd_flag_set_version{{{env}}}"), 4.0),
        (format!("flagd_sdk_instances{{{env}}}"), 1.0),
        (format!("flagd_sdk_instances_on_version{{{env}}}"), 1.0),
        (format!(r#"flagd_changes_total{{{env},kind="create"}}"#), 1.0),
        (format!(r#"flagd_changes_total{{{env},kind="toggle"}}"#), 1.0),
        (format!(r#"flagd_changes_total{{{env},kind="rollout"}}"#), 1.0),
        (format!(r#"flagd_changes_total{{{env},kind="revert"}}"#), 1.0),
        (
            format!(
                r#"flagd_ofrep_evaluations_total{{{env},flag="a",variant="{variant}",reason="TARGETING_MATCH"}}"#
            ),
            2.0,
        ),
        (
            format!(
                r#"flagd_ofrep_evaluations_total{{{env},flag="(not found)",variant="",reason="FLAG_NOT_FOUND"}}"#
            ),
            1.0,
        ),
        (
            r#"flagd_http_requests_total{route="/api/v1/environments/{env}/flags/{key}/disable",method="POST",status="200"}"#.to_owned(),
            1.0,
        ),
        (
            r#"flagd_http_request_duration_seconds_count{route="/api/v1/environments/{env}/revert",method="POST"}"#.to_owned(),
            1.0,
        ),
        (
            r#"flagd_store_operation_duration_seconds_count{operation="write"}"#.to_owned(),
            4.0,
        ),
        // Acks of the head only: version 1 (acked at once) and version 4 (versions 2
        // and 3 had been superseded when their acks arrived).
        (format!("flagd_commit_to_ack_seconds_count{{{env}}}"), 2.0),
    ];
    let text = until(&s, &want).await?;
    assert!(text.contains("# TYPE flagd_commit_to_ack_seconds histogram"));
    assert!(text.contains("# UNIT flagd_commit_to_ack_seconds seconds"));
    drop(ws);
    // An instance that vanished without a goodbye stays in the fleet, unreachable: it
    // may still be serving what it last applied.
    until(
        &s,
        &[
            (format!("flagd_sdk_instances{{{env}}}"), 1.0),
            (format!("flagd_sdk_instances_unreachable{{{env}}}"), 1.0),
        ],
    )
    .await?;
    s.stop().await
}
