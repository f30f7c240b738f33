//! A small web service that decides per request, in-process, which checkout a user gets:
//! `sdk.enabled("new-checkout", &user)`. Flip or revert the flag in flagd and the next
//! request follows, with no redeploy.
//!
//! ```text
//! FLAGD_URL=http://127.0.0.1:8080 FLAGD_SDK_KEY=fdsdk_… cargo run -p flagd-examples --example checkout-service
//! curl 'http://127.0.0.1:3000/checkout?user=42'
//! ```

use std::collections::HashMap;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use flagd_sdk::{Client, EvaluationContext};
use serde_json::{Value, json};

async fn checkout(
    State(sdk): State<Client>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
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
    Json(json!({
        "user": user_id,
        "checkout": if new { "new" } else { "old" },
        "flagSetVersion": sdk.version(),
    }))
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
    let app = Router::new()
        .route("/checkout", get(checkout))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sdk);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "checkout service listening");
    axum::serve(listener, app).await?;
    Ok(())
}
