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

/// `POST /environments`.
#[derive(serde::Deserialize)]
pub(crate) struct NewEnvironment {
    key: String,
    name: Option<String>,
    /// Marked in the UI, which asks for reasons there; `production` is by default.
    production: Option<bool>,
}

pub(crate) async fn create_environment(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    // A new environment lies outside any list a limited token has.
    caller.check_unlimited(Perm::ManageEnvironments)?;
    let b: NewEnvironment = body.fields()?;
    let key = b.key.as_str();
    valid_key(key, "environment")?;
    let name = b.name.as_deref().unwrap_or(key);
    valid_name("name", name)?;
    let production = b.production.unwrap_or(key == "production");
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

/// What `POST …/preview` evaluates.
#[derive(serde::Deserialize)]
pub(crate) struct Preview {
    /// The flag's key.
    key: String,
    /// The flag's definition, not saved.
    flag: Map<String, Value>,
    /// Evaluation contexts, at most 100.
    contexts: Vec<Value>,
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
    let Preview {
        key,
        flag,
        contexts,
    } = body.fields()?;
    if contexts.len() > 100 {
        return Err(ApiError::invalid(
            "contexts",
            "at most 100 contexts at once",
        ));
    }
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
