//! `/metrics`, and the middleware that counts and times every request.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The method as a label: the standard ones, and one value for any other (a client may
/// send any token as a method).
pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts and times every request by its route pattern (never the raw path).
pub(super) async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // Both are cheap clones (a shared string; a method without allocation).
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    s.hub
        .metrics
        .observe_request(route, method, resp.status().as_u16(), elapsed);
    resp
}

/// `GET /metrics`.
pub(super) async fn scrape(State(s): State<AppState>) -> Response {
    match s.store.environments().await {
        Ok(envs) => {
            for e in envs {
                let fleet = s.hub.fleet_counts(&e.key, e.version).await;
                s.hub.metrics.set_environment(
                    &e.key,
                    e.version,
                    (fleet.total, fleet.on_version, fleet.unreachable),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the environments"),
    }
    let text = s.hub.metrics.encode();
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
