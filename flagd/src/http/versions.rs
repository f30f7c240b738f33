//! The flag set and its history: export, import, validate, versions, diff, revert.

use super::*;

pub(crate) async fn get_flag_set(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, query_u64(&q, "version")?).await?;
    Ok(with_version(
        v,
        flagd_core::document::assemble(&items),
        StatusCode::OK,
    ))
}

/// What `POST …/revert` takes besides the version and the reason.
#[derive(serde::Deserialize)]
pub(crate) struct RevertOptions {
    /// Confirms a revert that removes every flag.
    #[serde(default)]
    empty: bool,
}

pub(crate) async fn revert(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Revert, Some(&env))?;
    let version = body.version()?;
    let reason = body.reason(true)?;
    let RevertOptions { empty } = body.fields()?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    // Emptying an environment is one call away from a typo (`0` for `10`): possible,
    // but only said explicitly.
    if !empty && version <= tx.base_version() && tx.flag_count_at(version).await? == 0 {
        let head = tx.base_version();
        let flags = tx.flag_count_at(head).await?;
        if flags > 0 {
            return Err(ApiError::invalid(
                "version",
                format!(
                    "version {version} holds no flags: reverting to it removes all {flags} flags of \"{env}\"; send \"empty\": true to confirm (flagctl revert --empty)"
                ),
            ));
        }
    }
    tx.revert_to(version).await?;
    let c = tx
        .commit(
            ChangeKind::Revert,
            &caller.name,
            reason.as_deref(),
            "flagset.revert",
            &env,
            Some(version),
        )
        .await?;
    Ok(committed(&c))
}

pub(crate) async fn import_flag_set(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Import, Some(&env))?;
    let set = FlagSet::parse(&body.0, Strictness::Strict).map_err(|e| ApiError::Invalid {
        message: format!(
            "the flag set is not valid: {} problem{}",
            e.0.len(),
            if e.0.len() == 1 { "" } else { "s" }
        ),
        details: e.0,
    })?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    tx.replace_with(flagd_core::document::items_of(&set.to_json()))
        .await?;
    let c = tx
        .commit(
            ChangeKind::Import,
            &caller.name,
            header_reason(&headers).as_deref(),
            "flagset.import",
            &env,
            None,
        )
        .await?;
    Ok(committed(&c))
}

pub(crate) async fn validate(caller: Caller, body: Body) -> ApiResult<Response> {
    caller.check(Perm::Validate, None)?;
    match FlagSet::parse(&body.0, Strictness::Strict) {
        Ok(set) => Ok(
            Json(json!({"valid": true, "flags": set.flags.len(), "errors": []})).into_response(),
        ),
        Err(e) => Ok(Json(json!({"valid": false, "flags": 0, "errors": e.0})).into_response()),
    }
}

pub(crate) async fn list_versions(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let limit = limit(&q)?;
    let versions = s
        .store
        .versions(
            &env,
            q.get("flag").map(String::as_str),
            query_u64(&q, "before")?,
            // One more than asked: whether an older page exists, without guessing.
            limit + 1,
        )
        .await?;
    let mut versions = versions;
    let more = versions.len() > limit as usize;
    versions.truncate(limit as usize);
    let next = more.then(|| versions.last().map(|v| v.version)).flatten();
    Ok(Json(json!({"versions": versions, "next": next})).into_response())
}

pub(crate) async fn get_version(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let v: u64 = version.parse().map_err(|_| {
        ApiError::BadRequest(format!("a version is a whole number, got {version:?}"))
    })?;
    let info = s.store.version(&env, v).await?;
    let (_, items) = s.store.items(&env, Some(v)).await?;
    Ok(with_version(
        v,
        json!({"version": info, "document": flagd_core::document::assemble(&items)}),
        StatusCode::OK,
    ))
}

pub(crate) async fn diff_versions(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let head = s.store.environment(&env).await?.version;
    let from = query_u64(&q, "from")?
        .ok_or_else(|| ApiError::BadRequest("query parameter from is required".into()))?;
    let to = query_u64(&q, "to")?.unwrap_or(head);
    let (_, a) = s.store.items(&env, Some(from)).await?;
    let (_, b) = s.store.items(&env, Some(to)).await?;
    Ok(
        Json(json!({"environment": env, "from": from, "to": to, "changes": flagd_core::document::diff(&a, &b)}))
            .into_response(),
    )
}
