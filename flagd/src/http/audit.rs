//! `/audit`: who changed what, when and why.

use super::*;

pub(crate) async fn audit_log(
    caller: Caller,
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let env = q.get("environment").cloned();
    caller.check(Perm::Read, env.as_deref())?;
    let query = AuditQuery {
        env,
        flag: q.get("flag").cloned(),
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        since: parse_time(&q, "since")?,
        until: parse_time(&q, "until")?,
        before_id: query_u64(&q, "before")?.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        // One more than asked: whether an older page exists, without guessing.
        limit: limit(&q)? + 1,
        allowed_envs: caller.environments.clone(),
    };
    let mut entries = s.store.audit_log(&query).await?;
    let page = query.limit as usize - 1;
    let more = entries.len() > page;
    entries.truncate(page);
    let next = more.then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(json!({"entries": entries, "next": next})).into_response())
}
