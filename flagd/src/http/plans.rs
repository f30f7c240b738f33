//! Release plans: create one for a flag (its first step applied at once), list them,
//! read one with its history, and move one (pause, resume, skip, approve, abort).

use super::*;
use crate::plans::{self, Action};
use crate::store::PlanSpec;

/// `POST …/flags/{key}/plans`: the plan, and optionally why.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewPlan {
    #[serde(default)]
    variant: Option<String>,
    steps: Vec<crate::store::PlanStep>,
    #[serde(default)]
    gates: Vec<crate::store::Gate>,
    #[serde(default)]
    gate_interval: Option<String>,
    #[serde(default)]
    on_failure: Option<String>,
    // Read by `Body::reason`.
    #[serde(default, rename = "reason")]
    _reason: Option<Value>,
}

pub(crate) async fn create_plan(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Rollout, Some(&env))?;
    let NewPlan {
        variant,
        steps,
        gates,
        gate_interval,
        on_failure,
        ..
    } = body.fields()?;
    let spec = PlanSpec {
        variant,
        steps,
        gates,
        gate_interval,
        on_failure,
    };
    let reason = body.reason(false)?;
    let id = crate::auth::new_id().map_err(store::StoreError::Internal)?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    guard_flag(&mut tx, &headers, &key).await?;
    let gates = s.planner.checks_gates();
    let (plan, c) =
        plans::create(tx, id, &key, spec, gates, &caller.name, reason.as_deref()).await?;
    let plan = s.store.plan(&env, &plan.id).await?.unwrap_or(plan);
    Ok(with_version(
        c.version,
        json!({"plan": plan, "change": c.summary()}),
        StatusCode::CREATED,
    ))
}

pub(crate) async fn list_plans(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.check(Perm::Read, Some(&env))?;
    s.store.environment(&env).await?;
    let active = match q.get("active").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "active",
                format!("must be true or false, got \"{other}\""),
            ));
        }
    };
    let plans = s
        .store
        .plans(&env, q.get("flag").map(String::as_str), active)
        .await?;
    Ok(Json(json!({"plans": plans})))
}

pub(crate) async fn get_plan(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.check(Perm::Read, Some(&env))?;
    let plan = s
        .store
        .plan(&env, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release plan \"{id}\" in \"{env}\"")))?;
    let events = s.store.plan_events(&id).await?;
    Ok(Json(json!({"plan": plan, "events": events})))
}

/// `POST …/plans/{id}/{action}`: `pause`, `resume`, `skip`, `approve` or `abort`
/// (`"rollback": true` restores the flag as it was before the plan).
pub(crate) async fn move_plan(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id, action)): Path<(String, String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let rollback = match body.object()?.get("rollback") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("rollback", "must be true or false")),
    };
    let action = Action::parse(&action, rollback).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no plan action \"{action}\" (pause, resume, skip, approve, abort)"
        ))
    })?;
    caller.check(
        if rollback {
            Perm::Revert
        } else {
            Perm::Rollout
        },
        Some(&env),
    )?;
    let reason = body.reason(false)?;
    let tx = s.store.begin_write(&env, None).await?;
    let (_, c) = plans::act(tx, &id, action, &caller.name, reason.as_deref()).await?;
    let plan = s
        .store
        .plan(&env, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release plan \"{id}\" in \"{env}\"")))?;
    Ok(with_version(
        c.version,
        json!({"plan": plan, "change": c.summary()}),
        StatusCode::OK,
    ))
}
