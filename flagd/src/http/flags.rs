//! One flag: read, replace, delete, kill switch, rollout percentage, restore.

use super::*;

pub(crate) async fn get_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, query_u64(&q, "version")?).await?;
    let item = items.get(&(ItemKind::Flag, key.clone())).ok_or_else(|| {
        ApiError::NotFound(format!("no flag \"{key}\" in \"{env}\" at version {v}"))
    })?;
    Ok(with_version(v, item.definition.clone(), StatusCode::OK))
}

/// Validates one flag strictly, in the context of the set's evaluators, so that
/// problems carry paths such as `flags.new-checkout.defaultVariant`.
pub(crate) fn validate_flag(key: &str, def: &Value, head: &Items) -> ApiResult<()> {
    let evaluators: Map<String, Value> = head
        .values()
        .filter(|i| i.kind == ItemKind::Evaluator)
        .map(|i| (i.key.clone(), i.definition.clone()))
        .collect();
    flagd_core::document::validate_flag(key, def, &evaluators).map_err(|details| {
        ApiError::Invalid {
            message: format!(
                "flag \"{key}\" is not valid: {} problem{}",
                details.len(),
                if details.len() == 1 { "" } else { "s" }
            ),
            details,
        }
    })
}

pub(crate) async fn put_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::EditFlags, Some(&env))?;
    let mut def = body.object()?.clone();
    match def.remove("key") {
        None => {}
        Some(Value::String(k)) if k == key => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "key",
                format!("the body names flag {other} but the URL names \"{key}\""),
            ));
        }
    }
    let def = Value::Object(def);
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    guard_flag(&mut tx, &headers, &key).await?;
    let evaluators = tx.evaluators().await?;
    validate_flag(&key, &def, &evaluators)?;
    let current = tx.get(ItemKind::Flag, &key).await?;
    let exists = current.is_some();
    tx.put_over(ItemKind::Flag, &key, current, Some(def), None)
        .await?;
    let (kind, action) = if exists {
        (ChangeKind::Update, "flag.update")
    } else {
        (ChangeKind::Create, "flag.create")
    };
    let c = tx
        .commit(
            kind,
            &caller.name,
            header_reason(&headers).as_deref(),
            action,
            &key,
            None,
        )
        .await?;
    let mut resp = committed(&c);
    if !exists {
        *resp.status_mut() = StatusCode::CREATED;
    }
    Ok(resp)
}

pub(crate) async fn delete_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.check(Perm::EditFlags, Some(&env))?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    guard_flag(&mut tx, &headers, &key).await?;
    let Some(current) = tx.get(ItemKind::Flag, &key).await? else {
        return Err(ApiError::NotFound(format!(
            "no flag \"{key}\" in \"{env}\""
        )));
    };
    tx.put_over(ItemKind::Flag, &key, Some(current), None, None)
        .await?;
    let c = tx
        .commit(
            ChangeKind::Delete,
            &caller.name,
            header_reason(&headers).as_deref(),
            "flag.delete",
            &key,
            None,
        )
        .await?;
    Ok(committed(&c))
}

/// Sets a flag's `state` (`ENABLED` or `DISABLED`) in a change, the rest of its
/// definition as it is: what a kill switch writes, whoever throws it (a person, a
/// trigger URL, an alert). `false` when there is no such flag.
pub(crate) async fn put_state(
    tx: &mut store::WriteTx<'_>,
    key: &str,
    state: &str,
) -> ApiResult<bool> {
    let Some(item) = tx.get(ItemKind::Flag, key).await? else {
        return Ok(false);
    };
    let mut def = item.definition.clone();
    if let Value::Object(o) = &mut def {
        o.insert("state".into(), Value::String(state.into()));
    }
    tx.put_over(ItemKind::Flag, key, Some(item), Some(def), None)
        .await?;
    Ok(true)
}

pub(crate) async fn set_state(
    s: &AppState,
    caller: &Caller,
    env: &str,
    key: &str,
    headers: &HeaderMap,
    reason: Option<String>,
    state: &str,
) -> ApiResult<Response> {
    caller.check(Perm::KillSwitch, Some(env))?;
    let mut tx = s.store.begin_write(env, if_match(headers)?).await?;
    guard_flag(&mut tx, headers, key).await?;
    if !put_state(&mut tx, key, state).await? {
        return Err(ApiError::NotFound(format!(
            "no flag \"{key}\" in \"{env}\""
        )));
    }
    let action = if state == "DISABLED" {
        "flag.disable"
    } else {
        "flag.enable"
    };
    let c = tx
        .commit(
            ChangeKind::Toggle,
            &caller.name,
            reason.as_deref(),
            action,
            key,
            None,
        )
        .await?;
    Ok(committed(&c))
}

pub(crate) async fn disable_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let reason = body.reason(true)?;
    set_state(&s, &caller, &env, &key, &headers, reason, "DISABLED").await
}

pub(crate) async fn enable_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let reason = body.reason(true)?;
    set_state(&s, &caller, &env, &key, &headers, reason, "ENABLED").await
}

/// `POST …/rollout`: the variant and its new share (the reason is read as for every
/// change).
#[derive(serde::Deserialize)]
pub(crate) struct Rollout {
    variant: String,
    /// 0 to 100, at most two decimals.
    percent: f64,
}

pub(crate) async fn rollout_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Rollout, Some(&env))?;
    let Rollout { variant, percent } = body.fields()?;
    let variant = variant.as_str();
    let reason = body.reason(false)?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    guard_flag(&mut tx, &headers, &key).await?;
    let item = tx
        .get(ItemKind::Flag, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no flag \"{key}\" in \"{env}\"")))?;
    let def = flagd_core::document::rollout::set_percent(&item.definition, variant, percent)
        .map_err(|p| ApiError::invalid(&p.path, p.message))?;
    let evaluators = tx.evaluators().await?;
    validate_flag(&key, &def, &evaluators)?;
    tx.put(ItemKind::Flag, &key, Some(def), None).await?;
    let c = tx
        .commit(
            ChangeKind::Rollout,
            &caller.name,
            reason.as_deref(),
            "flag.rollout",
            &key,
            None,
        )
        .await?;
    Ok(committed(&c))
}

pub(crate) async fn restore_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Revert, Some(&env))?;
    let version = body.version()?;
    let reason = body.reason(true)?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    guard_flag(&mut tx, &headers, &key).await?;
    let then = tx.at(version).await?;
    let old = then.get(&(ItemKind::Flag, key.clone()));
    tx.put(
        ItemKind::Flag,
        &key,
        old.map(|i| i.definition.clone()),
        old.map(|i| i.position),
    )
    .await?;
    let c = tx
        .commit(
            ChangeKind::Revert,
            &caller.name,
            reason.as_deref(),
            "flag.restore",
            &key,
            Some(version),
        )
        .await?;
    Ok(committed(&c))
}
