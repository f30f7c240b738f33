//! Trigger URLs: a secret URL per (environment, flag, action) for monitoring tools that
//! cannot call the API with a token (Grafana, Datadog, Sentry, a shell script). Whoever
//! holds the URL can do that one thing, nothing else; the URL is shown once.

use super::*;

/// What a trigger may do.
const ACTIONS: [&str; 2] = ["disable", "enable"];

/// `POST …/triggers`.
#[derive(serde::Deserialize)]
pub(crate) struct NewTrigger {
    flag: String,
    action: String,
    #[serde(default)]
    name: Option<String>,
}

/// The URL a trigger is fired at, as the client reached flagd (a proxy in front says
/// https with `X-Forwarded-Proto`).
fn trigger_url(headers: &HeaderMap, secret: &str) -> String {
    let path = format!("/api/v1/triggers/{secret}");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    match host {
        Some(h) => format!("{scheme}://{h}{path}"),
        None => path,
    }
}

/// `POST /api/v1/environments/{env}/triggers`: a new trigger URL (admin).
pub(crate) async fn create_trigger(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    let NewTrigger { flag, action, name } = body.fields()?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::invalid(
            "action",
            format!("must be one of {}", ACTIONS.join(", ")),
        ));
    }
    s.store.environment(&env).await?;
    let (_, items) = s.store.items(&env, None).await?;
    if !items.contains_key(&(ItemKind::Flag, flag.clone())) {
        return Err(ApiError::invalid(
            "flag",
            format!("no flag \"{flag}\" in \"{env}\""),
        ));
    }
    let name = name.unwrap_or_else(|| format!("{action}-{flag}"));
    valid_name("name", &name)?;
    let id = auth::new_id()?;
    let secret = auth::new_secret("fdtr_")?;
    let info = s
        .store
        .create_trigger(
            &caller.name,
            &id,
            &env,
            &flag,
            &action,
            &name,
            &auth::hash_secret(&secret),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"trigger": info, "url": trigger_url(&headers, &secret)})),
    )
        .into_response())
}

/// `GET /api/v1/environments/{env}/triggers` (admin): never the URLs.
pub(crate) async fn list_triggers(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.environment(&env).await?;
    Ok(Json(json!({"triggers": s.store.triggers(&env).await?})).into_response())
}

/// `DELETE /api/v1/environments/{env}/triggers/{id}` (admin): the URL stops working.
pub(crate) async fn revoke_trigger(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.revoke_trigger(&caller.name, &env, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The reason a firing is recorded with: what the tool said, when it said it in a
/// field flagd knows (`reason`, or Grafana's and others' `title` / `message`), else the
/// trigger's name.
fn reason_of(body: &[u8], name: &str) -> String {
    let said = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        ["reason", "title", "message"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
    });
    let reason = match said.filter(|r| !r.trim().is_empty()) {
        Some(r) => format!("trigger {name}: {r}"),
        None => format!("trigger {name} fired"),
    };
    store::clip_reason(&reason)
}

/// `POST /api/v1/triggers/{secret}`: does the trigger's one action. Idempotent: a flag
/// already in that state makes no new version (200, `"changed": false`). The body may be
/// anything a tool sends (empty, text, its own JSON): only a reason is looked for in it.
pub(crate) async fn fire_trigger(
    State(s): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Some(t) = s.store.trigger_by_hash(&auth::hash_secret(&secret)).await? else {
        // The same answer for a revoked and an unknown URL: nothing to learn from it.
        return Err(ApiError::NotFound(
            "no such trigger (revoked, or never made)".into(),
        ));
    };
    let caller = Caller {
        name: format!("trigger:{}", t.name),
        token_id: t.id.clone(),
        user_id: None,
        created_by_user: None,
        role: Role::Responder,
        environments: Some(vec![t.environment.clone()]),
        session: None,
    };
    let state = if t.action == "disable" {
        "DISABLED"
    } else {
        "ENABLED"
    };
    let reason = reason_of(&body, &t.name);
    let answer = set_state(
        &s,
        &caller,
        &t.environment,
        &t.flag,
        &headers,
        Some(reason),
        state,
    )
    .await?;
    if let Err(e) = s.store.trigger_fired(&t.id).await {
        tracing::warn!(trigger = t.name, error = %e, "cannot record when the trigger fired");
    }
    tracing::info!(
        trigger = t.name,
        env = t.environment,
        flag = t.flag,
        action = t.action,
        "trigger fired"
    );
    Ok(answer)
}
