//! Scheduled changes: a kill switch, an enable, a rollout step, an import or a revert
//! applied at a time, on exactly one replica (the runner claims it as it claims a plan).
//! It applies with `If-Match` semantics against the version it was scheduled on (for a
//! change of one flag: `If-Flag-Version`, that flag's last change then), or fails
//! visibly, and says so on the environment's channels.

use flagd_core::{FlagSet, Strictness};
use serde_json::Value;

use crate::store::{
    ChangeKind, Committed, ItemKind, Schedule, StoreError, StoreResult, WriteTx, now_ms, rfc3339,
};

/// How far ahead a change may be scheduled: a year.
pub const MAX_AHEAD_MS: i64 = 366 * 24 * 3_600_000;

fn invalid(path: &str, message: impl Into<String>) -> StoreError {
    StoreError::invalid(path, message)
}

/// Whether `action` changes one flag.
pub fn of_one_flag(action: &str) -> bool {
    matches!(action, "disable" | "enable" | "rollout")
}

/// The definition a flag action gives `current`.
fn flag_definition(action: &str, params: &Value, current: &Value) -> StoreResult<Value> {
    match action {
        "disable" | "enable" => {
            let mut def = current.clone();
            let state = if action == "disable" {
                "DISABLED"
            } else {
                "ENABLED"
            };
            if let Some(o) = def.as_object_mut() {
                o.insert("state".into(), Value::String(state.into()));
            }
            Ok(def)
        }
        _ => {
            let variant = params["variant"]
                .as_str()
                .ok_or_else(|| invalid("variant", "is required for a rollout"))?;
            let percent = params["percent"]
                .as_f64()
                .ok_or_else(|| invalid("percent", "is required for a rollout: 0 to 100"))?;
            flagd_core::document::rollout::set_percent(current, variant, percent).map_err(|p| {
                StoreError::Invalid {
                    message: format!("{}: {}", p.path, p.message),
                    details: vec![p],
                }
            })
        }
    }
}

/// The document of an import, checked strictly as an import is.
fn import_items(params: &Value) -> StoreResult<Vec<(ItemKind, String, Value)>> {
    let doc = params
        .get("document")
        .ok_or_else(|| invalid("document", "is required for an import: a flagd document"))?;
    let set = FlagSet::parse(doc, Strictness::Strict).map_err(|e| StoreError::Invalid {
        message: format!(
            "document: the flag set is not valid: {} problems",
            e.0.len()
        ),
        details: e.0,
    })?;
    Ok(flagd_core::document::items_of(&set.to_json()))
}

/// Checks a change to schedule and records it; `tx` was begun on its environment. The
/// change is based on the environment's head now (and, for one flag, that flag's last
/// change).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    mut tx: WriteTx<'_>,
    id: String,
    due_at: i64,
    action: &str,
    flag: Option<String>,
    params: Value,
    actor: &str,
    reason: Option<&str>,
) -> StoreResult<Schedule> {
    let now = now_ms();
    if due_at > now + MAX_AHEAD_MS {
        return Err(invalid("at", "at most a year ahead"));
    }
    if !crate::store::SCHEDULE_ACTIONS.contains(&action) {
        return Err(invalid(
            "action",
            format!("must be disable, enable, rollout, import or revert, got \"{action}\""),
        ));
    }
    if matches!(action, "disable" | "enable" | "revert") && reason.is_none() {
        return Err(invalid("reason", "is required: say why, for the audit log"));
    }
    let mut flag_version = None;
    match (action, &flag) {
        (a, Some(f)) if of_one_flag(a) => {
            let item = tx
                .get(ItemKind::Flag, f)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no flag \"{f}\"")))?;
            flag_definition(action, &params, &item.definition)?;
            flag_version = Some(tx.flag_version(f).await?);
        }
        (a, None) if of_one_flag(a) => {
            return Err(invalid("flag", format!("is required to {a} a flag")));
        }
        ("import", _) => {
            import_items(&params)?;
        }
        _ => {
            let v = params["version"]
                .as_u64()
                .ok_or_else(|| invalid("version", "is required for a revert"))?;
            if v > tx.base_version() {
                return Err(StoreError::NotFound(format!(
                    "no version {v}: the head is {}",
                    tx.base_version()
                )));
            }
        }
    }
    let s = Schedule {
        id,
        environment: tx.environment().key.clone(),
        at: rfc3339(due_at),
        action: action.to_owned(),
        flag: flag.filter(|_| of_one_flag(action)),
        params,
        based_on: tx.base_version(),
        flag_version,
        state: "pending".into(),
        version: None,
        detail: None,
        created_at: rfc3339(now),
        created_by: actor.to_owned(),
        reason: reason.map(str::to_owned),
        finished_at: None,
        due_at,
    };
    tx.insert_schedule(&s, actor).await?;
    tx.finish().await?;
    Ok(s)
}

/// Applies a due change; `tx` was begun on its environment. A conflict (what it was
/// based on moved) or a change that no longer fits is an error, and nothing is written.
pub async fn apply(mut tx: WriteTx<'_>, id: &str) -> StoreResult<Option<Committed>> {
    let Some(s) = tx.pending_schedule(id).await? else {
        return Ok(None);
    };
    let moved = |what: String| StoreError::Conflict {
        message: what,
        current_version: None,
    };
    let reason = match &s.reason {
        Some(r) => format!("scheduled change {id}: {r}"),
        None => format!("scheduled change {id}"),
    };
    let (kind, action, target, restores) = match (s.action.as_str(), &s.flag) {
        (a, Some(flag)) if of_one_flag(a) => {
            let last = tx.flag_version(flag).await?;
            if Some(last) != s.flag_version {
                return Err(moved(format!(
                    "flag \"{flag}\" changed since the change was scheduled (it was last changed by v{}, now by v{last})",
                    s.flag_version.unwrap_or(0)
                )));
            }
            let item = tx
                .get(ItemKind::Flag, flag)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no flag \"{flag}\"")))?;
            let def = flag_definition(a, &s.params, &item.definition)?;
            tx.put(ItemKind::Flag, flag, Some(def), None).await?;
            match a {
                "rollout" => (ChangeKind::Rollout, "flag.rollout", flag.clone(), None),
                "disable" => (ChangeKind::Toggle, "flag.disable", flag.clone(), None),
                _ => (ChangeKind::Toggle, "flag.enable", flag.clone(), None),
            }
        }
        (a, _) => {
            if tx.base_version() != s.based_on {
                return Err(moved(format!(
                    "the environment changed since the change was scheduled (scheduled on v{}, now at v{})",
                    s.based_on,
                    tx.base_version()
                )));
            }
            let env = tx.environment().key.clone();
            if a == "import" {
                tx.replace_with(import_items(&s.params)?).await?;
                (ChangeKind::Import, "flagset.import", env, None)
            } else {
                let v = s.params["version"].as_u64().unwrap_or(0);
                tx.revert_to(v).await?;
                (ChangeKind::Revert, "flagset.revert", env, Some(v))
            }
        }
    };
    tx.record_schedule(id);
    let c = tx
        .commit(
            kind,
            &s.created_by,
            Some(&reason),
            action,
            &target,
            restores,
        )
        .await?;
    Ok(Some(c))
}
