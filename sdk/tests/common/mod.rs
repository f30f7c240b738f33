//! What the SDK tests share: flagd's REST API called as the admin. flagd itself, in this
//! process or as its binary, is started by `flagd-harness`.
#![allow(dead_code, unreachable_pub)]

use serde_json::Value;

pub use flagd_harness::ADMIN_TOKEN as ADMIN;

/// Calls the REST API as the admin; the call must succeed.
pub async fn api(base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, body) = call(base, method, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// A new SDK key for the production environment.
pub async fn sdk_key(base: &str) -> String {
    api(
        base,
        reqwest::Method::POST,
        "/environments/production/sdk-keys",
        Value::Object(serde_json::Map::new()),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Calls the REST API as the admin and returns the status and body, whatever they are.
pub async fn call(base: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    // No idle connections: the same port may serve successive servers.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = c
        .request(method, format!("{base}/api/v1{path}"))
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
