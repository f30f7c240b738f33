//! A small web service that decides per request, in-process, which checkout a user gets:
//! `sdk.enabled("new-checkout", &user)`. Flip or revert the flag in flagd and the next
//! request follows, with no redeploy.
//!
//! ```text
//! FLAGD_URL=http://127.0.0.1:8080 FLAGD_SDK_KEY=fdsdk_… cargo run -p flagd-examples --example checkout-service
//! curl 'http://127.0.0.1:3000/checkout?user=42'
//! ```
//!
//! `/metrics` exports `checkout_requests_total{checkout, result}` for Prometheus. With
//! `BROKEN_NEW_CHECKOUT=1` the new checkout fails (500): a release gone wrong, for the
//! alert-driven rollback in `examples/alerting/` (Prometheus sees the errors,
//! Alertmanager tells flagd, flagd kills the flag or reverts, the errors stop).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use flagd_sdk::{Client, EvaluationContext};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `old` or `new`.
    checkout: &'static str,
    /// `ok` or `error`.
    result: &'static str,
}

#[derive(Clone)]
struct App {
    sdk: Client,
    requests: Family<RequestLabels, Counter>,
    registry: Arc<Registry>,
    /// The new checkout of this release is broken (`BROKEN_NEW_CHECKOUT=1`).
    broken: bool,
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn checkout(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let sdk = &app.sdk;
    let user_id = q
        .get("user")
        .cloned()
        .unwrap_or_else(|| "anonymous".to_owned());
    let mut user = EvaluationContext::new(user_id.clone());
    if let Some(c) = q.get("country") {
        user.set("country", c.as_str());
    }
    // The hot path: a lock-free read of the in-process snapshot, no network.
    let new = sdk.enabled("new-checkout", &user);
    let which = if new { "new" } else { "old" };
    let failed = new && app.broken;
    app.requests
        .get_or_create(&RequestLabels {
            checkout: which,
            result: if failed { "error" } else { "ok" },
        })
        .inc();
    let status = if failed {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let body = Json(json!({
        "user": user_id,
        "checkout": which,
        "flagSetVersion": sdk.version(),
    }));
    (status, body)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("FLAGD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("FLAGD_SDK_KEY")
        .context("set FLAGD_SDK_KEY to an SDK key (POST /api/v1/environments/{env}/sdk-keys)")?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let sdk = Client::builder(url, key)
        .label("service", "checkout")
        .build()
        .await?;
    let mut changes = sdk.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let c = changes.borrow().clone();
            tracing::info!(from = c.old_version, to = c.new_version, flags = ?c.changed_flags, "flags changed");
        }
    });
    let requests = Family::<RequestLabels, Counter>::default();
    let mut registry = Registry::default();
    registry.register(
        "checkout_requests",
        "Checkout requests by checkout (old or new) and result (ok or error)",
        requests.clone(),
    );
    let broken = std::env::var("BROKEN_NEW_CHECKOUT").is_ok_and(|v| v == "1");
    let app = Router::new()
        .route("/checkout", get(checkout))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(App {
            sdk,
            requests,
            registry: Arc::new(registry),
            broken,
        });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "checkout service listening");
    axum::serve(listener, app).await?;
    Ok(())
}
