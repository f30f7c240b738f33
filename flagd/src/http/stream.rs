//! The SDKs' stream (`/api/v1/stream`, a websocket served by the hub) and the fleet
//! view.

use crate::auth::{Caller, Perm, Role};
use crate::error::{ApiError, ApiResult};
use crate::hub::*;
use crate::state::AppState;
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `GET /api/v1/stream`: the SDK stream, authenticated with an SDK key.
pub(super) async fn stream(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    // Authentication answers first (401 before "not a websocket upgrade").
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <SDK key>".into()))?;
    let caller = s
        .hub
        .sdk_caller(secret)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
    if caller.role != Role::Sdk {
        return Err(ApiError::Forbidden(
            "the stream takes an SDK key (POST /environments/{env}/sdk-keys)".into(),
        ));
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return Ok(rejection.into_response()),
    };
    let env = caller
        .environments
        .as_ref()
        .and_then(|e| e.first())
        .cloned()
        .ok_or_else(|| ApiError::Forbidden("this SDK key names no environment".into()))?;
    s.store.environment(&env).await?;
    let hub = s.hub.clone();
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move { hub.serve_socket(socket, env, caller).await }))
}

/// `GET /api/v1/environments/{env}/fleet`: the SDK instances of the whole deployment
/// (every replica of the store) and their versions.
pub(super) async fn fleet(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.check(Perm::Read, Some(&env))?;
    let head = s.store.environment(&env).await?.version;
    let instances = s.hub.cluster_fleet(&env).await?;
    // Counted from the same copy that is answered, so that the two agree.
    let on_head = instances
        .iter()
        .filter(|i| i.applied_version == Some(head))
        .count();
    let unreachable = instances
        .iter()
        .filter(|i| i.unreachable_since.is_some())
        .count();
    let providers = instances.iter().filter(|i| !i.acknowledges).count();
    Ok(Json(json!({
        "environment": env,
        "version": head,
        "total": instances.len(),
        "onVersion": on_head,
        "connected": instances.len() - unreachable,
        "unreachable": unreachable,
        // Of `total`, the OpenFeature flagd providers (gRPC), which cannot acknowledge and
        // are never on a version.
        "providers": providers,
        "instances": instances,
    })))
}

/// `DELETE /api/v1/environments/{env}/fleet/{instance}`: forgets an instance an operator
/// knows is gone (an unreachable one stops counting as not converged).
pub(super) async fn forget(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, instance)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::KillSwitch, Some(&env))?;
    s.store.environment(&env).await?;
    if !s.hub.forget_everywhere(&env, &instance).await? {
        return Err(ApiError::NotFound(format!(
            "no SDK instance \"{instance}\" in the fleet of \"{env}\""
        )));
    }
    tracing::info!(env, instance, by = caller.name, "SDK instance forgotten");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
