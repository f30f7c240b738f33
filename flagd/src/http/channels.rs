//! Notification channels of an environment (admin): where its changes are announced,
//! a test message, and the history of deliveries. Secrets (the URL's, the signing
//! secret) go in and never come out.

use super::*;
use crate::notify::{self, vendors};
use crate::store::ChannelFields;

/// `POST …/channels` and `PATCH …/channels/{id}`: every field optional for a change.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ChannelBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    url: Option<String>,
    /// `null` removes it (a change).
    #[serde(default, with = "double_option")]
    secret: Option<Option<String>>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    converge_timeout: Option<String>,
}

/// Tells an absent field (`None`) from `null` (`Some(None)`).
mod double_option {
    pub(super) fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: serde::Deserialize<'de>,
    {
        serde::Deserialize::deserialize(d).map(Some)
    }
}

fn check_url(url: &str) -> ApiResult<()> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| ApiError::invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(ApiError::invalid(
            "url",
            format!(
                "must be an https:// (or http://) URL, not {}://",
                u.scheme()
            ),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("url", "has no host"));
    }
    Ok(())
}

fn check_events(events: &[String]) -> ApiResult<()> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            format!(
                "must name at least one event ({})",
                notify::EVENTS.join(", ")
            ),
        ));
    }
    for (i, e) in events.iter().enumerate() {
        if !notify::EVENTS.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                &format!("events[{i}]"),
                format!("\"{e}\" is not an event ({})", notify::EVENTS.join(", ")),
            ));
        }
    }
    Ok(())
}

fn converge_timeout(t: &str) -> ApiResult<std::time::Duration> {
    let d = humantime::parse_duration(t)
        .map_err(|e| ApiError::invalid("convergeTimeout", format!("{e} (for example 30s)")))?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(&d) {
        return Err(ApiError::invalid(
            "convergeTimeout",
            "must be from 1s to 1h",
        ));
    }
    Ok(d)
}

fn check_secret(kind: &str, secret: &Option<Option<String>>) -> ApiResult<()> {
    match secret {
        Some(Some(s)) => vendors::check_secret(kind, s).map_err(|e| ApiError::invalid("secret", e)),
        _ => Ok(()),
    }
}

fn missing_secret(kind: &str) -> ApiError {
    ApiError::invalid(
        "secret",
        format!(
            "is required for a {kind} channel: {}",
            match kind {
                "feishu" => "the signing secret of the Feishu/Lark bot's signature verification",
                "dingtalk" => "the SEC… secret of the DingTalk robot's signing setting",
                _ => "a Standard Webhooks secret, whsec_ and base64",
            }
        ),
    )
}

/// `POST /api/v1/environments/{env}/channels`: a new channel (admin).
pub(crate) async fn create_channel(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    let b: ChannelBody = body.fields()?;
    let Some(kind) = b.kind else {
        return Err(ApiError::invalid("kind", "is required"));
    };
    if !vendors::KINDS.contains(&kind.as_str()) {
        return Err(ApiError::invalid(
            "kind",
            format!(
                "\"{kind}\" is not a channel kind ({})",
                vendors::KINDS.join(", ")
            ),
        ));
    }
    let Some(url) = b.url else {
        return Err(ApiError::invalid("url", "is required"));
    };
    check_url(&url)?;
    check_secret(&kind, &b.secret)?;
    if vendors::needs_secret(&kind) && !matches!(b.secret, Some(Some(_))) {
        return Err(missing_secret(&kind));
    }
    let events = b.events.unwrap_or_else(|| {
        notify::DEFAULT_EVENTS
            .iter()
            .map(|e| (*e).to_owned())
            .collect()
    });
    check_events(&events)?;
    let timeout = match &b.converge_timeout {
        Some(t) => converge_timeout(t)?,
        None => notify::DEFAULT_CONVERGE_TIMEOUT,
    };
    let name = match b.name {
        Some(n) => n,
        None => {
            let host = reqwest::Url::parse(&url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{kind} {host}")
        }
    };
    valid_name("name", &name)?;
    s.store.environment(&env).await?;
    let info = s
        .store
        .create_channel(
            &caller.name,
            &auth::new_id()?,
            &env,
            &ChannelFields {
                name: Some(name),
                kind: Some(kind),
                url: Some(url),
                secret: b.secret,
                events: Some(events),
                converge_timeout: Some(timeout),
            },
        )
        .await?;
    s.notifier.poke();
    Ok((StatusCode::CREATED, Json(json!({"channel": info}))).into_response())
}

/// `GET /api/v1/environments/{env}/channels` (admin): never a secret.
pub(crate) async fn list_channels(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.environment(&env).await?;
    Ok(Json(json!({"channels": s.store.channels(&env).await?})).into_response())
}

/// `GET /api/v1/environments/{env}/channels/{id}` (admin).
pub(crate) async fn get_channel(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    Ok(Json(json!({"channel": s.store.channel(&env, &id).await?})).into_response())
}

/// `PATCH /api/v1/environments/{env}/channels/{id}` (admin): the fields given change.
pub(crate) async fn update_channel(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    let b: ChannelBody = body.fields()?;
    let current = s.store.channel(&env, &id).await?;
    if b.kind.as_ref().is_some_and(|k| *k != current.kind) {
        return Err(ApiError::invalid(
            "kind",
            "cannot change; make a new channel",
        ));
    }
    if let Some(url) = &b.url {
        check_url(url)?;
    }
    check_secret(&current.kind, &b.secret)?;
    if vendors::needs_secret(&current.kind) && matches!(b.secret, Some(None)) {
        return Err(missing_secret(&current.kind));
    }
    if let Some(e) = &b.events {
        check_events(e)?;
    }
    if let Some(n) = &b.name {
        valid_name("name", n)?;
    }
    let timeout = b
        .converge_timeout
        .as_deref()
        .map(converge_timeout)
        .transpose()?;
    let info = s
        .store
        .update_channel(
            &caller.name,
            &env,
            &id,
            &ChannelFields {
                name: b.name,
                kind: None,
                url: b.url,
                secret: b.secret,
                events: b.events,
                converge_timeout: timeout,
            },
        )
        .await?;
    Ok(Json(json!({"channel": info})).into_response())
}

/// `DELETE /api/v1/environments/{env}/channels/{id}` (admin).
pub(crate) async fn delete_channel(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.delete_channel(&caller.name, &env, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/environments/{env}/channels/{id}/test` (admin): sends a test message
/// now and answers what the receiver said (200 either way: `ok` says which).
pub(crate) async fn test_channel(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    let (delivery, o) = s.notifier.test(&env, &id).await?;
    Ok(Json(json!({
        "delivery": delivery,
        "ok": o.ok,
        "status": o.status,
        "body": o.body,
        "error": o.error,
    }))
    .into_response())
}

/// `GET /api/v1/environments/{env}/channels/{id}/deliveries?limit=&before=` (admin):
/// the channel's messages, newest first, each with its attempts.
pub(crate) async fn list_deliveries(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    let limit = limit(&q)?;
    let list = s
        .store
        .deliveries(&env, &id, q.get("before").map(String::as_str), limit)
        .await?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(json!({"deliveries": list, "next": next})).into_response())
}
