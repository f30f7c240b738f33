//! Alert policies (what alerts may do to an environment) and the list of what they did.

use super::*;
use crate::store::AlertPolicy;

/// `GET /api/v1/environments/{env}/alert-policy`.
pub(crate) async fn get_alert_policy(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    s.store.environment(&env).await?;
    Ok(Json(json!({"policy": s.store.alert_policy(&env).await?})).into_response())
}

/// `PUT /api/v1/environments/{env}/alert-policy` (admin): the whole policy; a field
/// left out keeps its default.
pub(crate) async fn put_alert_policy(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Put {
        enabled: Option<bool>,
        actions: Option<Vec<String>>,
        flags: Option<Vec<String>>,
        lookback_seconds: Option<u64>,
    }
    let p: Put = body.fields()?;
    let d = AlertPolicy::default();
    let policy = AlertPolicy {
        enabled: p.enabled.unwrap_or(d.enabled),
        actions: p.actions.unwrap_or(d.actions),
        flags: p.flags.unwrap_or(d.flags),
        lookback_seconds: p.lookback_seconds.unwrap_or(d.lookback_seconds),
        updated_at: None,
        updated_by: None,
    };
    for (i, a) in policy.actions.iter().enumerate() {
        if !store::ALERT_ACTIONS.contains(&a.as_str()) {
            return Err(ApiError::invalid(
                &format!("actions[{i}]"),
                format!(
                    "\"{a}\" is not an action ({})",
                    store::ALERT_ACTIONS.join(", ")
                ),
            ));
        }
    }
    for (i, f) in policy.flags.iter().enumerate() {
        if f != "*" {
            valid_name(&format!("flags[{i}]"), f)?;
        }
    }
    if policy.lookback_seconds > 7 * 24 * 3600 {
        return Err(ApiError::invalid(
            "lookbackSeconds",
            "is more than a week; last known good is meant to be shortly before the alert",
        ));
    }
    s.store.environment(&env).await?;
    let saved = s
        .store
        .set_alert_policy(&caller.name, &env, &policy)
        .await?;
    Ok(Json(json!({"policy": saved})).into_response())
}

/// `GET /api/v1/environments/{env}/alerts`: what alerts did, newest first.
pub(crate) async fn list_alert_episodes(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    s.store.environment(&env).await?;
    let limit = query_u64(&q, "limit")?.unwrap_or(100).clamp(1, 1000);
    let limit = u32::try_from(limit).unwrap_or(1000);
    Ok(Json(json!({"alerts": s.store.alert_episodes(&env, limit).await?})).into_response())
}
