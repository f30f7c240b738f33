//! `/metrics`, and the middleware that counts and times every request.

use crate::metrics::Metrics;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

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

/// Counts and times every request by its route pattern (never the raw path): a layer of
/// its own rather than `axum::middleware::from_fn`, which boxes the rest of the route and
/// its future on every request, remote evaluations included.
#[derive(Clone)]
pub(super) struct Track(pub(super) Arc<Metrics>);

impl<S> Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A route counted and timed by [`Track`].
#[derive(Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Tracked<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Timed<S::Future> {
        // Both are cheap clones (a shared string; a method without allocation).
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        Timed {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            route,
            method,
            start: Instant::now(),
        }
    }
}

/// A route's answer, counted with its status and time once it is ready.
pub(super) struct Timed<F> {
    inner: F,
    metrics: Arc<Metrics>,
    route: Option<MatchedPath>,
    method: &'static str,
    start: Instant,
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Poll::Ready(Ok(resp)) = Pin::new(&mut self.inner).poll(cx) else {
            return Poll::Pending;
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        self.metrics
            .observe_request(route, self.method, resp.status().as_u16(), elapsed);
        Poll::Ready(Ok(resp))
    }
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
