//! Alertmanager as a trigger: `POST /api/v1/alertmanager` takes its webhook payload
//! (version 4) unchanged. The alert's labels say what to do (`flagd_environment`, and
//! `flagd_flag` to kill flags or `flagd_revert="last-good"` to revert the environment);
//! the environment's alert policy says what alerts may do. Alertmanager delivers at
//! least once and retries on 5xx: every request is done once per firing (group,
//! fingerprint, `startsAt`), and its record is written in the version's transaction.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

mod act;
mod policy;

use super::*;
use crate::store::AlertEpisode;
use act::{disable, refuse, revert_to_last_good};
pub(crate) use policy::*;

/// Alertmanager's webhook payload (version 4).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Webhook {
    #[serde(default)]
    version: Option<String>,
    group_key: String,
    #[serde(default)]
    truncated_alerts: u64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    receiver: String,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    alerts: Vec<Alert>,
}

/// One alert of the payload.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

/// What became of one thing one alert asked for.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    alertname: String,
    fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    action: String,
    target: String,
    outcome: String,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

/// The answer's status when an alert could not be taken as sent: not retried by
/// Alertmanager (4xx), so the alert's own mistake is said once, in its log and here.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rejection {
    None,
    Invalid,
    NotFound,
    Forbidden,
}

/// One alert, read and checked.
struct Firing<'a> {
    alert: &'a Alert,
    name: String,
    fingerprint: String,
    starts_ms: i64,
    group_key: &'a str,
    /// What goes into the audit log with each action: the alert and its delivery.
    payload: Value,
}

/// An RFC 3339 time as Alertmanager writes it (Go's RFC3339Nano: `Z` or a `±hh:mm`
/// offset), in ms since 1970.
fn parse_time(at: &str, path: &str) -> ApiResult<i64> {
    let bad =
        |why: String| ApiError::invalid(path, format!("\"{at}\" is not an RFC 3339 time: {why}"));
    // humantime reads UTC (`Z`) only: an offset is taken off by hand.
    let (utc, offset_s) = match at.len().checked_sub(6).map(|i| at.split_at(i)) {
        Some((time, off))
            if (off.starts_with('+') || off.starts_with('-'))
                && off.as_bytes().get(3) == Some(&b':') =>
        {
            let h: i64 = off[1..3].parse().map_err(|_| bad("bad offset".into()))?;
            let m: i64 = off[4..6].parse().map_err(|_| bad("bad offset".into()))?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (format!("{time}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (at.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339(&utc).map_err(|e| bad(e.to_string()))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad("before 1970".into()))?
        .as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX) - offset_s * 1000)
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /api/v1/alertmanager[?environment=…]` (an `alertmanager`, `responder` or
/// `admin` token, as a bearer token or the password of basic auth).
pub(crate) async fn receive_alerts(
    caller: Caller,
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ReceiveAlerts, None)?;
    let hook: Webhook = body.fields()?;
    if let Some(v) = hook.version.as_deref()
        && v != "4"
    {
        return Err(ApiError::invalid(
            "version",
            format!("is \"{v}\"; flagd reads Alertmanager's webhook payload version 4"),
        ));
    }
    let received = store::now_ms();
    // Every alert is read before any acts: a payload flagd cannot read changes nothing.
    let mut firings = Vec::with_capacity(hook.alerts.len());
    for (i, a) in hook.alerts.iter().enumerate() {
        let starts_ms = parse_time(&a.starts_at, &format!("alerts[{i}].startsAt"))?;
        if !matches!(a.status.as_str(), "firing" | "resolved") {
            return Err(ApiError::invalid(
                &format!("alerts[{i}].status"),
                format!("is \"{}\"; \"firing\" or \"resolved\" expected", a.status),
            ));
        }
        // Alertmanager always sends one; a hand-written payload may not.
        let fingerprint = if a.fingerprint.is_empty() {
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            digest(&labels.iter().map(String::as_str).collect::<Vec<_>>())[..16].to_owned()
        } else {
            a.fingerprint.clone()
        };
        firings.push(Firing {
            alert: a,
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            fingerprint,
            starts_ms,
            group_key: &hook.group_key,
            payload: json!({
                "alert": a,
                "groupKey": hook.group_key,
                "receiver": hook.receiver,
                "status": hook.status,
                "externalURL": hook.external_url,
                "truncatedAlerts": hook.truncated_alerts,
            }),
        });
    }
    let default_env = q.get("environment").map(String::as_str);
    let mut results = Vec::new();
    let mut problem = Rejection::None;
    for f in &firings {
        let (mut outcomes, p) = receive_one(&s, &caller, f, default_env, received).await?;
        problem = problem.max(p);
        results.append(&mut outcomes);
    }
    for o in &results {
        s.hub
            .metrics
            .alert_actions
            .get_or_create(&crate::metrics::AlertLabels {
                environment: o.environment.as_deref().unwrap_or_default().into(),
                action: o.action.as_str().into(),
                outcome: o.outcome.as_str().into(),
            })
            .inc();
        tracing::info!(
            alert = o.alertname,
            env = o.environment,
            action = o.action,
            target = o.target,
            outcome = o.outcome,
            detail = o.detail,
            "alert received"
        );
    }
    let (status, code) = match problem {
        Rejection::None => (StatusCode::OK, None),
        Rejection::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")),
        Rejection::NotFound => (StatusCode::NOT_FOUND, Some("not_found")),
        Rejection::Forbidden => (StatusCode::FORBIDDEN, Some("forbidden")),
    };
    let mut answer = json!({"alerts": firings.len(), "results": results});
    if let Some(code) = code {
        let said: Vec<&str> = results
            .iter()
            .filter(|o| o.outcome == "rejected")
            .map(|o| o.detail.as_str())
            .collect();
        answer["error"] = json!({"code": code, "message": said.join("; ")});
    }
    Ok((status, Json(answer)).into_response())
}

/// What one alert asks for, done; and whether it was rejected as sent.
async fn receive_one(
    s: &AppState,
    caller: &Caller,
    f: &Firing<'_>,
    default_env: Option<&str>,
    received: i64,
) -> ApiResult<(Vec<Outcome>, Rejection)> {
    let labels = &f.alert.labels;
    let outcome =
        |env: Option<&str>, action: &str, target: &str, outcome: &str, detail: String| Outcome {
            alertname: f.name.clone(),
            fingerprint: f.fingerprint.clone(),
            environment: env.map(str::to_owned),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            detail,
            version: None,
        };
    let Some(env) = labels
        .get("flagd_environment")
        .map(String::as_str)
        .or(default_env)
    else {
        let detail = format!(
            "alert \"{}\" has no flagd_environment label (and the receiver's URL no ?environment=)",
            f.name
        );
        return Ok((
            vec![outcome(None, "none", "", "rejected", detail)],
            Rejection::Invalid,
        ));
    };
    match s.store.environment(env).await {
        Ok(_) => {}
        Err(store::StoreError::NotFound(_)) => {
            let detail = format!("alert \"{}\": no environment \"{env}\"", f.name);
            return Ok((
                vec![outcome(None, "none", env, "rejected", detail)],
                Rejection::NotFound,
            ));
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = caller.check(Perm::ReceiveAlerts, Some(env)) {
        let detail = format!("alert \"{}\": {e}", f.name);
        return Ok((
            vec![outcome(None, "none", env, "rejected", detail)],
            Rejection::Forbidden,
        ));
    }
    let episode = |action: &str, target: &str, outcome: &str, detail: String| AlertEpisode {
        key: digest(&[
            f.group_key,
            &f.fingerprint,
            &f.starts_ms.to_string(),
            action,
            target,
        ]),
        environment: env.to_owned(),
        alertname: f.name.clone(),
        fingerprint: f.fingerprint.clone(),
        starts_at_ms: f.starts_ms,
        starts_at: store::rfc3339(f.starts_ms),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome: outcome.to_owned(),
        detail,
        version: None,
        received_at_ms: received,
        received_at: store::rfc3339(received),
        resolved_at: None,
    };
    if f.alert.status == "resolved" {
        let mut e = episode(
            "resolved",
            env,
            "resolved",
            format!(
                "alert \"{}\" resolved; nothing is undone (a kill switch or revert stays until someone changes it)",
                f.name
            ),
        );
        // Whatever group delivered it, one resolution per firing.
        e.key = digest(&["resolved", env, &f.fingerprint, &f.starts_ms.to_string()]);
        let new = s
            .store
            .record_alert_episode(
                &e,
                &caller.name,
                Some("alert.resolved"),
                Some(f.payload.clone()),
            )
            .await?;
        let o = outcome(
            Some(env),
            "resolved",
            env,
            if new { "resolved" } else { "duplicate" },
            e.detail,
        );
        return Ok((vec![o], Rejection::None));
    }
    // What it asks for: a revert first (it sets every flag), then the kill switches.
    let mut wanted: Vec<(&str, String)> = Vec::new();
    let mut problem = Rejection::None;
    let mut out = Vec::new();
    if let Some(r) = labels.get("flagd_revert") {
        if r == "last-good" {
            wanted.push(("revert", env.to_owned()));
        } else {
            out.push(outcome(
                Some(env),
                "revert",
                env,
                "rejected",
                format!(
                    "alert \"{}\": flagd_revert is \"{r}\"; the one value is \"last-good\"",
                    f.name
                ),
            ));
            problem = Rejection::Invalid;
        }
    }
    if let Some(flags) = labels.get("flagd_flag") {
        for flag in flags.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            wanted.push(("disable", flag.to_owned()));
        }
    }
    if wanted.is_empty() && out.is_empty() {
        out.push(outcome(
            Some(env),
            "none",
            env,
            "unchanged",
            format!(
                "alert \"{}\" has neither flagd_flag nor flagd_revert: nothing to do",
                f.name
            ),
        ));
        return Ok((out, Rejection::None));
    }
    let stale = s
        .store
        .alert_resolved(env, &f.fingerprint, f.starts_ms)
        .await?;
    let policy = s.store.alert_policy(env).await?;
    for (action, target) in wanted {
        let mut e = episode(action, &target, "applied", String::new());
        if let Some(seen) = s.store.alert_episode(&e.key).await? {
            let mut o = outcome(
                Some(env),
                action,
                &target,
                "duplicate",
                format!(
                    "this firing was received at {} already: {} ({})",
                    seen.received_at, seen.outcome, seen.detail
                ),
            );
            o.version = seen.version;
            out.push(o);
            continue;
        }
        if stale {
            e.outcome = "stale".into();
            e.detail = format!(
                "alert \"{}\": this firing (since {}) was resolved before it arrived; not acted on",
                f.name, e.starts_at
            );
            s.store
                .record_alert_episode(
                    &e,
                    &caller.name,
                    Some("alert.stale"),
                    Some(f.payload.clone()),
                )
                .await?;
            out.push(outcome(Some(env), action, &target, "stale", e.detail));
            continue;
        }
        let flag = (action == "disable").then_some(target.as_str());
        if let Some(why) = policy.refuses(action, flag) {
            e.outcome = "refused".into();
            e.detail = format!("alert \"{}\" asked to {action} {target}: {why}", f.name);
            refuse(s, caller, &e, f).await?;
            out.push(outcome(Some(env), action, &target, "refused", e.detail));
            continue;
        }
        let (o, p) = match action {
            "revert" => revert_to_last_good(s, caller, f, &policy, e).await?,
            _ => disable(s, caller, f, e).await?,
        };
        problem = problem.max(p);
        let mut shown = outcome(Some(env), action, &target, &o.outcome, o.detail);
        shown.version = o.version;
        out.push(shown);
    }
    Ok((out, problem))
}
