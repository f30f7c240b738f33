//! Undo one change: the items version N changed go back to their definitions before N,
//! and later, unrelated changes stay. People at 3 a.m. pick the wrong row of a history;
//! "revert to N−1" would also throw away everything committed after N.

use super::*;

/// What `POST …/versions/{n}/undo` takes besides the reason.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UndoOptions {
    /// Undo even the items a later version changed again (their later definitions are
    /// lost too).
    #[serde(default)]
    force: bool,
    /// Only say what the undo would do.
    #[serde(default)]
    dry_run: bool,
}

/// The JSON path of an item, as the API's errors name it.
fn path_of(kind: ItemKind, key: &str) -> String {
    match kind {
        ItemKind::Flag => format!("flags.{key}"),
        ItemKind::Evaluator => format!("$evaluators.{key}"),
        ItemKind::Top => key.to_owned(),
    }
}

/// `POST /api/v1/environments/{env}/versions/{n}/undo`.
pub(crate) async fn undo(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, n)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Revert, Some(&env))?;
    let UndoOptions { force, dry_run } = body.fields()?;
    let reason = body.reason(!dry_run)?;
    if n == 0 {
        return Err(ApiError::invalid(
            "version",
            "version 0 is the empty set before the first change: there is nothing to undo",
        ));
    }
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    let head_version = tx.base_version();
    if n > head_version {
        return Err(ApiError::NotFound(format!(
            "environment \"{env}\" has no version {n} (its head is {head_version})"
        )));
    }
    let (_, before) = s.store.items(&env, Some(n - 1)).await?;
    let (_, at_n) = s.store.items(&env, Some(n)).await?;
    let head = tx.head().await?;
    let mut changes = Vec::new();
    let mut conflicts = Vec::new();
    let mut wanted = Vec::new();
    for d in flagd_core::document::diff(&before, &at_n) {
        let now = head.get(&(d.kind, d.key.to_owned())).map(|i| &i.definition);
        if now == d.before {
            // Already back (a later change undid it by hand).
            continue;
        }
        let action = match (d.before, now) {
            (None, _) => "remove",
            (Some(_), None) => "add back",
            (Some(_), Some(_)) => "restore",
        };
        if now != d.after {
            conflicts.push((d.kind, d.key.to_owned()));
        }
        changes.push(
            json!({"path": path_of(d.kind, d.key), "kind": d.kind, "key": d.key,
            "action": action, "changedLater": now != d.after}),
        );
        wanted.push((d.kind, d.key.to_owned(), d.before.cloned(), None));
    }
    // The later versions that changed the same flags, for the dialog and the 409.
    let flag_keys: Vec<String> = conflicts
        .iter()
        .filter(|(k, _)| *k == ItemKind::Flag)
        .map(|(_, key)| key.clone())
        .collect();
    let later = s.store.flag_versions_after(&env, &flag_keys, n).await?;
    let interacting: Vec<Value> = conflicts
        .iter()
        .map(|(kind, key)| {
            let versions: Vec<u64> = later
                .iter()
                .filter(|(k, _)| *kind == ItemKind::Flag && k == key)
                .map(|(_, v)| *v)
                .collect();
            json!({"path": path_of(*kind, key), "laterVersions": versions})
        })
        .collect();
    if dry_run {
        return Ok(Json(
            json!({"environment": env, "version": head_version, "undoes": n,
            "changes": changes, "conflicts": interacting}),
        )
        .into_response());
    }
    if !conflicts.is_empty() && !force {
        let details: Vec<Value> = interacting
            .iter()
            .map(|c| {
                let versions = c["laterVersions"].as_array().map_or(String::new(), |v| {
                    v.iter()
                        .map(|x| format!("v{x}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let by = if versions.is_empty() { "a later version".to_owned() } else { versions };
                json!({"path": c["path"], "message": format!("changed again by {by}: undoing v{n} would also throw that away; send \"force\": true to undo it anyway (flagctl undo --force)")})
            })
            .collect();
        let body = json!({"error": {"code": "conflict",
            "message": format!("{} item{} v{n} changed {} changed again later", conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" }, if conflicts.len() == 1 { "was" } else { "were" }),
            "details": details, "currentVersion": head_version}});
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    if wanted.is_empty() {
        // Nothing left to undo: no new version, and the answer says so.
        return Ok(with_version(
            head_version,
            json!({"environment": env, "version": head_version, "changed": false, "undoes": n,
                "changedFlags": []}),
            StatusCode::OK,
        ));
    }
    tx.undoing(n);
    tx.apply(&head, wanted).await?;
    let c = tx
        .commit(
            ChangeKind::Undo,
            &caller.name,
            reason.as_deref(),
            "flagset.undo",
            &format!("v{n}"),
            None,
        )
        .await?;
    Ok(committed(&c))
}
