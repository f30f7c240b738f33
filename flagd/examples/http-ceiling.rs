//! The ceiling for `flagd/benches/ofrep-wrk.sh` (CEILING=1): the same HTTP stack as
//! flagd (axum on hyper, tokio, mimalloc) answering every POST with a fixed OFREP body
//! of the same size, with no routing table, middleware, authentication or evaluation.
//! What it serves per second on a machine is what flagd's remote evaluation could at
//! best serve there.
//!
//!   cargo run --release -p flagd --example http-ceiling -- 127.0.0.1:18555

use mimalloc::MiMalloc;

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

const ANSWER: &str = r#"{"key":"flag-042","value":false,"reason":"TARGETING_MATCH","variant":"off","metadata":{"flagSetVersion":1}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18555".to_owned());
    let app = axum::Router::new().route(
        "/ofrep/v1/evaluate/flags/{key}",
        axum::routing::post(|_body: axum::body::Bytes| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                ANSWER,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
