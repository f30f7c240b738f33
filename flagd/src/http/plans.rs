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

/// A plan as a request body gives it.
pub(super) fn plan_spec(body: &Body) -> ApiResult<PlanSpec> {
    let NewPlan {
        variant,
        steps,
        gates,
        gate_interval,
        on_failure,
        ..
    } = body.fields()?;
    Ok(PlanSpec {
        variant,
        steps,
        gates,
        gate_interval,
        on_failure,
    })
}

pub(crate) async fn create_plan(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Rollout, Some(&env))?;
    let spec = plan_spec(&body)?;
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
    let active = query_bool(&q, "active")?;
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

/// `POST …/schedules`: a change applied later.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSchedule {
    /// When (RFC 3339), or
    #[serde(default)]
    at: Option<String>,
    /// in how long (`10m`).
    #[serde(default, rename = "in")]
    after: Option<String>,
    action: String,
    #[serde(default)]
    flag: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    document: Option<Value>,
    #[serde(default)]
    version: Option<u64>,
    // Read by `Body::reason`.
    #[serde(default, rename = "reason")]
    _reason: Option<Value>,
}

/// A scheduled change as a request body gives it: its action, flag, time and
/// parameters.
pub(super) fn schedule_of(body: &Body) -> ApiResult<(String, Option<String>, i64, Value)> {
    let n: NewSchedule = body.fields()?;
    let now = store::now_ms();
    let due_at = match (&n.at, &n.after) {
        (Some(at), None) => {
            let t = humantime::parse_rfc3339_weak(at).map_err(|e| {
                ApiError::invalid("at", format!("{e}: a time such as 2026-12-24T09:00:00Z"))
            })?;
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| ApiError::invalid("at", "before 1970"))?
                .as_millis();
            i64::try_from(ms).map_err(|_| ApiError::invalid("at", "too far ahead"))?
        }
        (None, Some(d)) => {
            let d = humantime::parse_duration(d)
                .map_err(|e| ApiError::invalid("in", format!("{e}: a duration such as 10m")))?;
            now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        _ => {
            return Err(ApiError::invalid(
                "at",
                "give exactly one of at (a time) or in (a duration)",
            ));
        }
    };
    let mut params = Map::new();
    if let Some(v) = n.variant {
        params.insert("variant".into(), json!(v));
    }
    if let Some(p) = n.percent {
        params.insert("percent".into(), json!(p));
    }
    if let Some(d) = n.document {
        params.insert("document".into(), d);
    }
    if let Some(v) = n.version {
        params.insert("version".into(), json!(v));
    }
    Ok((n.action, n.flag, due_at, Value::Object(params)))
}

/// The permission a scheduled action needs now (it is checked when it is scheduled:
/// the change is made later in the name of whoever scheduled it).
pub(super) fn perm_of(action: &str) -> Perm {
    match action {
        "disable" | "enable" => Perm::KillSwitch,
        "import" => Perm::Import,
        "revert" => Perm::Revert,
        _ => Perm::Rollout,
    }
}

pub(crate) async fn create_schedule(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let (action, flag, due_at, params) = schedule_of(&body)?;
    caller.check(perm_of(&action), Some(&env))?;
    let reason = body.reason(false)?;
    let id = crate::auth::new_id().map_err(store::StoreError::Internal)?;
    let tx = s.store.begin_write(&env, None).await?;
    let made = plans::schedule::create(
        tx,
        id,
        due_at,
        &action,
        flag,
        params,
        &caller.name,
        reason.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"schedule": made}))).into_response())
}

pub(crate) async fn list_schedules(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.check(Perm::Read, Some(&env))?;
    s.store.environment(&env).await?;
    let pending = query_bool(&q, "pending")?;
    let schedules = s.store.schedules(&env, pending).await?;
    Ok(Json(json!({"schedules": schedules})))
}

pub(crate) async fn get_schedule(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.check(Perm::Read, Some(&env))?;
    let schedule =
        s.store.schedule(&env, &id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no scheduled change \"{id}\" in \"{env}\""))
        })?;
    Ok(Json(json!({"schedule": schedule})))
}

/// `POST …/schedules/{id}/cancel`: by anyone who could have scheduled it.
pub(crate) async fn cancel_schedule(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let found =
        s.store.schedule(&env, &id).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no scheduled change \"{id}\" in \"{env}\""))
        })?;
    caller.check(perm_of(&found.action), Some(&env))?;
    let reason = body.reason(false)?;
    let why = reason.unwrap_or_else(|| "cancelled".into());
    if !s
        .store
        .finish_schedule(&env, &id, "cancelled", &why, &caller.name)
        .await?
    {
        return Err(ApiError::from(store::StoreError::Conflict {
            message: format!(
                "scheduled change {id} is {}: only a pending one can be cancelled",
                found.state
            ),
            current_version: None,
        }));
    }
    let schedule = s.store.schedule(&env, &id).await?;
    Ok(Json(json!({"schedule": schedule})))
}
