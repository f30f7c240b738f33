//! API tokens and SDK keys.

use super::*;

pub(crate) async fn list_tokens(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    // A limited admin sees the tokens it could manage: none wider than itself.
    let tokens: Vec<_> = s
        .store
        .tokens()
        .await?
        .into_iter()
        .filter(|t| caller.covers(t.environments.as_deref()))
        .collect();
    Ok(Json(json!({"tokens": tokens})).into_response())
}

/// `POST /tokens`.
#[derive(serde::Deserialize)]
pub(crate) struct NewToken {
    name: String,
    /// viewer, editor, responder, ci, admin or alertmanager.
    role: String,
    /// The environments it is limited to; all when absent.
    environments: Option<Vec<String>>,
}

pub(crate) async fn create_token(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    let b: NewToken = body.fields()?;
    // A person may make themselves a token for the command line with their own role and
    // environments (a personal token: it reviews change requests in their name).
    let personal = caller.user_id.is_some()
        && !auth::allows(caller.role, Perm::ManageTokens)
        && b.role == caller.role.as_str();
    if !personal {
        caller.check(Perm::ManageTokens, None)?;
    }
    let name = b.name.as_str();
    if name.trim().is_empty() {
        return Err(ApiError::invalid(
            "name",
            "is required (a non-empty string)",
        ));
    }
    valid_name("name", name)?;
    let role = Role::parse(&b.role)
        .filter(|r| *r != Role::Sdk)
        .ok_or_else(|| ApiError::invalid("role", format!("\"{}\" is not a role (viewer, editor, responder, ci, admin, alertmanager); SDK keys are made per environment", b.role)))?;
    let envs = scope_of(&s, &caller, b.environments, "tokens").await?;
    let secret = auth::new_secret("fd_")?;
    let info = s
        .store
        .create_token_by(
            &caller.name,
            caller.user_id.as_deref(),
            &auth::new_id()?,
            name,
            role.as_str(),
            envs.as_deref(),
            &auth::hash_secret(&secret),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": info, "secret": secret})),
    )
        .into_response())
}

/// A list of environments to limit a new token or person to: each must exist, and a
/// limited admin gives no more than its own (`what`: "tokens", "people").
pub(crate) async fn scope_of(
    s: &AppState,
    caller: &Caller,
    list: Option<Vec<String>>,
    what: &str,
) -> ApiResult<Option<Vec<String>>> {
    if let Some(list) = &list {
        for (i, e) in list.iter().enumerate() {
            if s.store.environment(e).await.is_err() {
                return Err(ApiError::invalid(
                    &format!("environments[{i}]"),
                    format!("no environment \"{e}\""),
                ));
            }
        }
    }
    if !caller.covers(list.as_deref()) {
        return Err(ApiError::Forbidden(format!(
            "this token is limited to environments [{}]: it may only create {what} limited to them (give \"environments\")",
            caller
                .environments
                .as_deref()
                .unwrap_or_default()
                .join(", ")
        )));
    }
    Ok(list)
}

pub(crate) async fn create_sdk_key(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.environment(&env).await?;
    let id = auth::new_id()?;
    // The body is optional: `{"name": "..."}` or nothing.
    let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&raw).map_err(|e| malformed(&e))?
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => format!("sdk-{env}-{id}"),
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        Some(_) => return Err(ApiError::invalid("name", "must be a non-empty string")),
    };
    valid_name("name", &name)?;
    let secret = auth::new_secret("fdsdk_")?;
    let info = s
        .store
        .create_token(
            &caller.name,
            &id,
            &name,
            Role::Sdk.as_str(),
            Some(&[env]),
            &auth::hash_secret(&secret),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"sdkKey": info, "secret": secret})),
    )
        .into_response())
}

pub(crate) async fn revoke_token(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    if caller.environments.is_some() {
        // A limited admin revokes only tokens within its environments.
        let target = s.store.token_by_id(&id).await?;
        if let Some(t) = target
            && !caller.covers(t.environments.as_deref())
        {
            return Err(ApiError::Forbidden(format!(
                "this token is limited to environments [{}]: it may not revoke a token that reaches beyond them",
                caller
                    .environments
                    .as_deref()
                    .unwrap_or_default()
                    .join(", ")
            )));
        }
    }
    s.store.revoke_token(&caller.name, &id).await?;
    s.hub.revoke(crate::hub::Revoked::Token(id));
    Ok(StatusCode::NO_CONTENT.into_response())
}
