//! The REST API under `/api/v1`, the health endpoints, OFREP and the admin UI's files:
//! the router, and one module per resource. Documented in `docs/api.md`. Nothing else
//! in flagd imports from here but `server`, which serves it.

mod alerts;
mod approvals;
mod audit;
mod channels;
mod environments;
mod extract;
mod flags;
mod metrics;
mod ofrep;
mod people;
mod plans;
mod stream;
mod tokens;
mod triggers;
mod ui;
mod undo;
mod versions;

use crate::auth::{self, Caller, Perm, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, AuditQuery, ChangeKind, Committed, ItemKind, Items};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flagd_core::{FlagSet, Strictness};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub use crate::state::AppState;

// The handlers of every resource, for the router; and what they share.
use alerts::*;
use approvals::*;
use audit::*;
use channels::*;
use environments::*;
use extract::*;
use flags::*;
use people::*;
use plans::*;
use tokens::*;
use triggers::*;
use undo::*;
use versions::*;

/// The whole router: bodies up to `max_body_bytes`; OFREP callable from the browser
/// `cors_origins`.
pub fn router(
    state: AppState,
    max_body_bytes: usize,
    cors_origins: &[String],
) -> anyhow::Result<Router> {
    let api = Router::new()
        .route(
            "/environments",
            get(list_environments).post(create_environment),
        )
        .route(
            "/environments/{env}",
            get(get_environment).delete(delete_environment),
        )
        .route(
            "/environments/{env}/flags",
            get(get_flag_set).put(import_flag_set),
        )
        .route(
            "/environments/{env}/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route(
            "/environments/{env}/flags/{key}/disable",
            post(disable_flag),
        )
        .route("/environments/{env}/flags/{key}/enable", post(enable_flag))
        .route(
            "/environments/{env}/flags/{key}/rollout",
            post(rollout_flag),
        )
        .route(
            "/environments/{env}/flags/{key}/restore",
            post(restore_flag),
        )
        .route("/environments/{env}/flags/{key}/plans", post(create_plan))
        .route("/environments/{env}/plans", get(list_plans))
        .route("/environments/{env}/plans/{id}", get(get_plan))
        .route("/environments/{env}/plans/{id}/{action}", post(move_plan))
        .route(
            "/environments/{env}/schedules",
            get(list_schedules).post(create_schedule),
        )
        .route("/environments/{env}/schedules/{id}", get(get_schedule))
        .route(
            "/environments/{env}/schedules/{id}/cancel",
            post(cancel_schedule),
        )
        .route(
            "/environments/{env}/approval-policy",
            get(get_approval_policy).put(put_approval_policy),
        )
        .route(
            "/environments/{env}/change-requests",
            get(list_requests).post(create_request),
        )
        .route(
            "/environments/{env}/change-requests/{id}",
            get(get_request).put(edit_request),
        )
        .route(
            "/environments/{env}/change-requests/{id}/{action}",
            post(act_on_request),
        )
        .route("/environments/{env}/reviews", get(list_reviews))
        .route(
            "/environments/{env}/reviews/{id}/acknowledge",
            post(acknowledge_review),
        )
        .route("/environments/{env}/versions", get(list_versions))
        .route("/environments/{env}/versions/{version}", get(get_version))
        .route("/environments/{env}/versions/{version}/undo", post(undo))
        .route(
            "/environments/{env}/triggers",
            get(list_triggers).post(create_trigger),
        )
        .route(
            "/environments/{env}/triggers/{id}",
            axum::routing::delete(revoke_trigger),
        )
        .route("/triggers/{secret}", post(fire_trigger))
        .route("/alertmanager", post(receive_alerts))
        .route(
            "/environments/{env}/alert-policy",
            get(get_alert_policy).put(put_alert_policy),
        )
        .route("/environments/{env}/alerts", get(list_alert_episodes))
        .route(
            "/environments/{env}/channels",
            get(list_channels).post(create_channel),
        )
        .route(
            "/environments/{env}/channels/{id}",
            get(get_channel)
                .patch(update_channel)
                .delete(delete_channel),
        )
        .route("/environments/{env}/channels/{id}/test", post(test_channel))
        .route(
            "/environments/{env}/channels/{id}/deliveries",
            get(list_deliveries),
        )
        .route("/environments/{env}/diff", get(diff_versions))
        .route("/environments/{env}/revert", post(revert))
        .route("/environments/{env}/sdk-keys", post(create_sdk_key))
        .route("/environments/{env}/fleet", get(stream::fleet))
        .route(
            "/environments/{env}/fleet/{instance}",
            axum::routing::delete(stream::forget),
        )
        .route("/stream", get(stream::stream))
        .route("/validate", post(validate))
        .route("/audit", get(audit_log))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", axum::routing::patch(update_user))
        .route("/environments/{env}/flag-summaries", get(flag_summaries))
        .route("/environments/{env}/preview", post(preview))
        .merge(ui::api_routes())
        .fallback(|| async { ApiError::NotFound("no such API route".into()) });
    Ok(Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .nest("/api/v1", api)
        .merge(ui::routes())
        .merge(match cors(cors_origins)? {
            Some(layer) => ofrep::routes().layer(layer),
            // Without origins there is nothing to allow, and tower-http's CORS layer
            // costs every evaluation a clone and a header map.
            None => ofrep::routes(),
        })
        .route_layer(metrics::Track(state.hub.metrics.clone()))
        .layer(tower::util::MapResponseLayer::new(ui::security_headers))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state))
}

/// CORS for browser OFREP providers: the configured origins may POST with the headers
/// a provider sends, and read the `ETag`.
fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o.trim()).map_err(|_| {
                        anyhow::anyhow!("--cors-allowed-origins: {o:?} is not a valid origin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
                axum::http::HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([header::ETAG])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": e.to_string()})),
        )
            .into_response(),
    }
}

/// The answer to a committed change (the bus has announced it already: SDKs, flagd's
/// heads, metrics and the UI hear of it there, not from here).
pub(crate) fn committed(c: &Committed) -> Response {
    with_version(c.version, json!(c), StatusCode::OK)
}
