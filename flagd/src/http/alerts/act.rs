//! What an alert's requests do: a kill switch, a revert to last known good, a refusal;
//! each recorded once, with the version it made.

use super::*;
use crate::store::{AlertPolicy, clip_reason};

/// A refusal, recorded (episode and audit entry) and said where the environment's
/// people hear of automatic actions.
pub(super) async fn refuse(
    s: &AppState,
    caller: &Caller,
    e: &AlertEpisode,
    f: &Firing<'_>,
) -> ApiResult<()> {
    let new = s
        .store
        .record_alert_episode(
            e,
            &caller.name,
            Some("alert.refused"),
            Some(f.payload.clone()),
        )
        .await?;
    tracing::warn!(
        alert = f.name,
        env = e.environment,
        detail = e.detail,
        "alert refused"
    );
    if new {
        let link = Some(f.alert.generator_url.as_str()).filter(|l| !l.is_empty());
        let title = format!(
            "Refused: alert {} asked to {} {} in {}",
            f.name, e.action, e.target, e.environment
        );
        // Queued durably in the store; if even that fails the refusal stays recorded
        // (the alerts list, the audit log): said in the log, not to Alertmanager.
        if let Err(err) = s
            .notifier
            .announce("refused", &e.environment, &title, &e.detail, link)
            .await
        {
            tracing::warn!(env = e.environment, error = %err, "cannot queue the notification of a refused alert");
        }
    }
    Ok(())
}

/// The version's reason: what fired, what it says, and where to see it.
fn reason_of(f: &Firing<'_>) -> String {
    let a = &f.alert.annotations;
    let said = a
        .get("summary")
        .or_else(|| a.get("description"))
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    let link = if f.alert.generator_url.is_empty() {
        String::new()
    } else {
        format!(" ({})", f.alert.generator_url)
    };
    clip_reason(&format!("alert {}{said}{link}", f.name))
}

/// The outcome of one action, as recorded.
pub(super) struct Done {
    pub(super) outcome: String,
    pub(super) detail: String,
    pub(super) version: Option<u64>,
}

impl Done {
    /// An outcome that made no version.
    fn without_version(outcome: &str, detail: String) -> Self {
        Self {
            outcome: outcome.into(),
            detail,
            version: None,
        }
    }

    /// Another delivery of the same firing acted first (under the write lock).
    fn duplicate() -> Self {
        Self::without_version(
            "duplicate",
            "a delivery of this firing arrived at the same time and acted".into(),
        )
    }

    /// The action made `version`.
    fn applied(detail: &str, version: u64) -> Self {
        Self {
            outcome: "applied".into(),
            detail: format!("{detail} in v{version}"),
            version: Some(version),
        }
    }
}

async fn unchanged(
    s: &AppState,
    caller: &Caller,
    mut e: AlertEpisode,
    detail: String,
) -> ApiResult<(Done, Rejection)> {
    e.outcome = "unchanged".into();
    e.detail = detail;
    s.store
        .record_alert_episode(&e, &caller.name, None, None)
        .await?;
    Ok((
        Done::without_version("unchanged", e.detail),
        Rejection::None,
    ))
}

pub(super) async fn disable(
    s: &AppState,
    caller: &Caller,
    f: &Firing<'_>,
    mut e: AlertEpisode,
) -> ApiResult<(Done, Rejection)> {
    let env = e.environment.clone();
    let flag = e.target.clone();
    let mut tx = s.store.begin_write(&env, None).await?;
    if tx.alert_episode_seen(&e.key).await? {
        return Ok((Done::duplicate(), Rejection::None));
    }
    if !put_state(&mut tx, &flag, "DISABLED").await? {
        drop(tx);
        e.outcome = "refused".into();
        e.detail = format!(
            "alert \"{}\" asked to disable \"{flag}\": no such flag in \"{env}\"",
            f.name
        );
        refuse(s, caller, &e, f).await?;
        return Ok((
            Done::without_version("refused", e.detail),
            Rejection::NotFound,
        ));
    }
    e.detail = format!("alert \"{}\" disabled \"{flag}\"", f.name);
    tx.record_alert(e.clone(), "alert.disable", f.payload.clone());
    let c = tx
        .commit(
            ChangeKind::AutoDisable,
            &caller.name,
            Some(&reason_of(f)),
            "flag.disable",
            &flag,
            None,
        )
        .await?;
    if !c.changed {
        let detail = format!("\"{flag}\" was disabled already (v{})", c.version);
        return unchanged(s, caller, e, detail).await;
    }
    Ok((Done::applied(&e.detail, c.version), Rejection::None))
}

/// "Last known good": the head at the alert's `startsAt` minus the policy's lookback,
/// i.e. what was serving before the changes that shortly preceded the alert; but never
/// past an automatic revert made since (a second alert of one incident does not revert
/// further back than the first did).
pub(super) async fn revert_to_last_good(
    s: &AppState,
    caller: &Caller,
    f: &Firing<'_>,
    policy: &AlertPolicy,
    mut e: AlertEpisode,
) -> ApiResult<(Done, Rejection)> {
    let env = e.environment.clone();
    let lookback_ms =
        i64::try_from(policy.lookback_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let at = f.starts_ms.saturating_sub(lookback_ms);
    let mut tx = s.store.begin_write(&env, None).await?;
    if tx.alert_episode_seen(&e.key).await? {
        return Ok((Done::duplicate(), Rejection::None));
    }
    let head = tx.base_version();
    let window = format!(
        "{} (the alert began at {}, lookback {}s)",
        store::rfc3339(at),
        store::rfc3339(f.starts_ms),
        policy.lookback_seconds
    );
    let good = match tx.head_at(at).await? {
        None => Err(format!(
            "alert \"{}\": \"{env}\" did not exist at {window}; no last known-good version",
            f.name
        )),
        Some(0) if head > 0 => Err(format!(
            "alert \"{}\": \"{env}\" had no flags at {window}; refusing to empty it",
            f.name
        )),
        Some(v) => Ok(v),
    };
    let good = match good {
        Ok(v) => v,
        Err(detail) => {
            drop(tx);
            e.outcome = "refused".into();
            e.detail = detail;
            refuse(s, caller, &e, f).await?;
            return Ok((Done::without_version("refused", e.detail), Rejection::None));
        }
    };
    let (good, why) = match tx.auto_revert_after(good).await? {
        Some(r) => (r, format!("v{r}, the automatic revert made since {window}")),
        None => (good, format!("v{good}, the head at {window}")),
    };
    if good >= head {
        drop(tx);
        let detail = format!(
            "alert \"{}\": nothing changed in \"{env}\" since {why}: nothing to revert",
            f.name
        );
        return unchanged(s, caller, e, detail).await;
    }
    let undone: Vec<String> = tx
        .versions_after(good)
        .await?
        .into_iter()
        .map(|(v, author, kind)| format!("v{v} ({kind} by {author})"))
        .collect();
    tx.revert_to(good).await?;
    e.detail = format!(
        "alert \"{}\" reverted \"{env}\" to {why}, undoing {}{}",
        f.name,
        undone.join(", "),
        if head - good > 20 { ", …" } else { "" }
    );
    tx.record_alert(e.clone(), "alert.revert", f.payload.clone());
    let c = tx
        .commit(
            ChangeKind::AutoRevert,
            &caller.name,
            Some(&reason_of(f)),
            "flagset.revert",
            &env,
            Some(good),
        )
        .await?;
    if !c.changed {
        let detail = format!(
            "alert \"{}\": \"{env}\" already has the content of {why}: nothing to revert",
            f.name
        );
        return unchanged(s, caller, e, detail).await;
    }
    Ok((Done::applied(&e.detail, c.version), Rejection::None))
}
