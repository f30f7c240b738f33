//! `/environments`: listing, creating, deleting, and the UI's flag summaries and
//! preview.

use super::*;

pub(crate) async fn list_environments(
    caller: Caller,
    State(s): State<AppState>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, None)?;
    let envs: Vec<_> = s
        .store
        .environments()
        .await?
        .into_iter()
        .filter(|e| caller.sees(&e.key))
        .collect();
    Ok(Json(json!({"environments": envs})).into_response())
}

pub(crate) async fn create_environment(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    // A new environment lies outside any list a limited token has.
    caller.check_unlimited(Perm::ManageEnvironments)?;
    let o = body.object()?;
    let key = o
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("key", "is required (a string)"))?;
    valid_key(key, "environment")?;
    let name = match o.get("name") {
        None | Some(Value::Null) => key,
        Some(Value::String(n)) => n.as_str(),
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
    };
    valid_name("name", name)?;
    let production = match o.get("production") {
        None | Some(Value::Null) => key == "production",
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("production", "must be a boolean")),
    };
    let env = s
        .store
        .create_environment(&caller.name, key, name, production)
        .await?;
    s.hub.notify_ui(crate::hub::UiEvent {
        environment: None,
        name: "environments",
        data: json!({}),
    });
    Ok((StatusCode::CREATED, Json(json!(env))).into_response())
}

pub(crate) async fn get_environment(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let e = s.store.environment(&env).await?;
    Ok(with_version(e.version, json!(e), StatusCode::OK))
}

pub(crate) async fn delete_environment(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.check(Perm::ManageEnvironments, Some(&env))?;
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, got {other:?}"
            )));
        }
    };
    s.store
        .delete_environment(
            &caller.name,
            &env,
            force,
            header_reason(&headers).as_deref(),
        )
        .await?;
    s.hub.notify_ui(crate::hub::UiEvent {
        environment: None,
        name: "environments",
        data: json!({}),
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /environments/{env}/flag-summaries`: every flag with the version that last
/// changed it, for the UI's list.
pub(crate) async fn flag_summaries(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, None).await?;
    let mut last = s.store.last_changes(&env).await?;
    let mut flags: Vec<&store::Item> = items
        .values()
        .filter(|i| i.kind == ItemKind::Flag)
        .collect();
    flags.sort_by_key(|i| i.position);
    let flags: Vec<Value> = flags
        .into_iter()
        .map(|i| json!({"key": i.key, "definition": i.definition, "lastChange": last.remove(&i.key)}))
        .collect();
    Ok(with_version(
        v,
        json!({"environment": env, "version": v, "flags": flags}),
        StatusCode::OK,
    ))
}

/// `POST /environments/{env}/preview` `{"key", "flag", "contexts": [...]}`: evaluates an
/// unsaved definition with the environment's shared evaluators, by flagd's own
/// evaluator; changes nothing.
pub(crate) async fn preview(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let o = body.object()?;
    let key = match o.get("key") {
        Some(Value::String(k)) => k.clone(),
        _ => return Err(ApiError::invalid("key", "is required (the flag's key)")),
    };
    let flag = o.get("flag").filter(|f| f.is_object()).ok_or_else(|| {
        ApiError::invalid("flag", "is required (the flag's definition, an object)")
    })?;
    let contexts = match o.get("contexts") {
        Some(Value::Array(c)) if c.len() <= 100 => c,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "contexts",
                "at most 100 contexts at once",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "contexts",
                "is required (an array of objects)",
            ));
        }
    };
    let (v, items) = s.store.items(&env, None).await?;
    let mut doc = Map::new();
    doc.insert("flags".into(), json!({ key.clone(): flag }));
    if let Some(e) = flagd_core::document::assemble(&items).get("$evaluators") {
        doc.insert("$evaluators".into(), e.clone());
    }
    let set =
        FlagSet::parse(&Value::Object(doc), Strictness::Strict).map_err(|e| ApiError::Invalid {
            message: format!(
                "flag \"{key}\" is not valid: {} problem{}",
                e.0.len(),
                if e.0.len() == 1 { "" } else { "s" }
            ),
            details: e.0,
        })?;
    let snapshot = flagd_core::Snapshot::compile(&set, v);
    let mut results = Vec::with_capacity(contexts.len());
    for (i, c) in contexts.iter().enumerate() {
        let ctx = flagd_core::EvaluationContext::from_json(c)
            .map_err(|e| ApiError::invalid(&format!("contexts[{i}]"), e.to_string()))?;
        let d = snapshot.evaluate(&key, &ctx);
        results.push(json!({
            "value": d.value,
            "variant": d.variant,
            "reason": d.reason.as_str(),
            "errorCode": d.error_code.map(|c| c.as_str()),
            "errorMessage": d.error_message,
        }));
    }
    Ok(Json(json!({"version": v, "results": results})).into_response())
}
