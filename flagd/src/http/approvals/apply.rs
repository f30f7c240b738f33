//! Checking a proposed change, and applying an approved one onto the version it was
//! based on.

use super::super::plans::{plan_spec, schedule_of};
use super::super::*;
use super::{announce, perm_of_change};
use crate::store::ChangeRequest;

/// Checks a proposed change against the head now (the same checks as when it is
/// applied), so that a request that could never apply is refused at once.
pub(super) async fn check_change(s: &AppState, env: &str, change: &Value) -> ApiResult<()> {
    let (_, kind) = perm_of_change(change)?;
    let (_, head) = s.store.items(env, None).await?;
    match kind {
        "flags" => {
            let flags = change["flags"]
                .as_object()
                .filter(|f| !f.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "change.flags",
                        "must be an object of flag keys to definitions (null deletes)",
                    )
                })?;
            for (key, def) in flags {
                valid_name(&format!("change.flags.{key}"), key)?;
                match def {
                    Value::Null => {
                        if !head.contains_key(&(ItemKind::Flag, key.clone())) {
                            return Err(ApiError::invalid(
                                &format!("change.flags.{key}"),
                                "no such flag to delete",
                            ));
                        }
                    }
                    def => validate_flag(key, def, &head)?,
                }
            }
        }
        "document" => {
            FlagSet::parse(&change["document"], Strictness::Strict).map_err(|e| {
                ApiError::Invalid {
                    message: format!("the proposed flag set is not valid: {} problems", e.0.len()),
                    details: e.0,
                }
            })?;
        }
        "plan" => {
            let (key, rest) = plan_parts(change)?;
            if !head.contains_key(&(ItemKind::Flag, key)) {
                return Err(ApiError::invalid("change.plan.flag", "no such flag"));
            }
            plan_spec(&Body(rest))?;
        }
        _ => {
            schedule_of(&Body(change["schedule"].clone()))?;
        }
    }
    Ok(())
}

/// A proposed plan: its flag, and the plan as `POST …/plans` takes it.
fn plan_parts(change: &Value) -> ApiResult<(String, Value)> {
    let mut rest = change["plan"].clone();
    let key = rest
        .as_object_mut()
        .and_then(|o| o.remove("flag"))
        .and_then(|k| k.as_str().map(str::to_owned))
        .ok_or_else(|| ApiError::invalid("change.plan.flag", "is required: the flag to ramp"))?;
    Ok((key, rest))
}

/// Marks a request whose base moved stale, and refuses (409): its approvals were given
/// for a change onto a set that is no longer the head.
pub(super) async fn stale_check(s: &AppState, r: &ChangeRequest) -> ApiResult<()> {
    let head = s.store.environment(&r.environment).await?.version;
    if head == r.base_version {
        return Ok(());
    }
    let why = format!(
        "the flag set moved from version {} to {head} since this request was based on it: its approvals are void; its author must update it onto the current version",
        r.base_version
    );
    let closed = s
        .store
        .close_request(&r.environment, &r.id, "flagd", "stale", &why)
        .await?;
    announce(s, &closed, "is stale", &why).await;
    Err(ApiError::Conflict {
        message: format!("change request {}: {why}", r.id),
        current_version: Some(head),
    })
}

/// Applies an approved request in its author's name, onto the version it was based
/// on, marking it applied in the same transaction.
pub(super) async fn apply(s: &AppState, r: ChangeRequest) -> ApiResult<Response> {
    if r.state != "open" {
        return Err(ApiError::Conflict {
            message: format!(
                "change request {} is {}: only an open request is applied",
                r.id, r.state
            ),
            current_version: None,
        });
    }
    let have = r.approved_by.len() as u64;
    if have < r.approvals_required {
        return Err(ApiError::Conflict {
            message: format!(
                "change request {} has {have} of the {} approvals it needs",
                r.id, r.approvals_required
            ),
            current_version: None,
        });
    }
    let env = r.environment.clone();
    let reason = format!(
        "change request {}: {} (approved by {})",
        r.id,
        r.title,
        r.approved_by.join(", ")
    );
    // Onto the version it was based on: if the set moved, the request is stale.
    let mut tx = match s.store.begin_write(&env, Some(r.base_version)).await {
        Ok(tx) => tx,
        Err(store::StoreError::Conflict { .. }) => {
            stale_check(s, &r).await?;
            return Err(ApiError::Conflict {
                message: format!("change request {}: the flag set moved", r.id),
                current_version: None,
            });
        }
        Err(e) => return Err(e.into()),
    };
    tx.record_request(&r.id, r.revision);
    let (_, kind) = perm_of_change(&r.change)?;
    let version = match kind {
        "flags" => {
            let flags = r.change["flags"].as_object().cloned().unwrap_or_default();
            let evaluators = tx.evaluators().await?;
            let mut last = (ChangeKind::Import, "flagset.import", env.clone());
            for (key, def) in &flags {
                let current = tx.get(ItemKind::Flag, key).await?;
                let exists = current.is_some();
                let def = match def {
                    Value::Null => None,
                    d => {
                        validate_flag(key, d, &evaluators)?;
                        Some(d.clone())
                    }
                };
                last = match (&def, exists) {
                    (None, _) => (ChangeKind::Delete, "flag.delete", key.clone()),
                    (Some(_), true) => (ChangeKind::Update, "flag.update", key.clone()),
                    (Some(_), false) => (ChangeKind::Create, "flag.create", key.clone()),
                };
                tx.put_over(ItemKind::Flag, key, current, def, None).await?;
            }
            if flags.len() > 1 {
                last = (ChangeKind::Import, "flagset.import", env.clone());
            }
            let c = tx
                .commit(last.0, &r.author, Some(&reason), last.1, &last.2, None)
                .await?;
            Some(c)
        }
        "document" => {
            let set = FlagSet::parse(&r.change["document"], Strictness::Strict).map_err(|e| {
                ApiError::Invalid {
                    message: "the proposed flag set is not valid".into(),
                    details: e.0,
                }
            })?;
            tx.replace_with(flagd_core::document::items_of(&set.to_json()))
                .await?;
            Some(
                tx.commit(
                    ChangeKind::Import,
                    &r.author,
                    Some(&reason),
                    "flagset.import",
                    &env,
                    None,
                )
                .await?,
            )
        }
        "plan" => {
            let (key, rest) = plan_parts(&r.change)?;
            let spec = plan_spec(&Body(rest))?;
            let id = auth::new_id()?;
            let gates = s.planner.checks_gates();
            let (_, c) =
                crate::plans::create(tx, id, &key, spec, gates, &r.author, Some(&reason)).await?;
            Some(c)
        }
        _ => {
            let (action, flag, due_at, params) = schedule_of(&Body(r.change["schedule"].clone()))?;
            let id = auth::new_id()?;
            crate::plans::schedule::create(
                tx,
                id,
                due_at,
                &action,
                flag,
                params,
                &r.author,
                Some(&reason),
            )
            .await?;
            None
        }
    };
    let after = s.store.request(&env, &r.id).await?;
    announce(s, &after, "applied", &reason).await;
    let body = json!({"request": after, "change": version.as_ref().map(Committed::summary)});
    Ok(match version {
        Some(c) => with_version(c.version, body, StatusCode::OK),
        None => Json(body).into_response(),
    })
}
