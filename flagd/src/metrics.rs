//! Prometheus metrics at `GET /metrics` (OpenMetrics text). Names follow the Prometheus
//! conventions (`_total`, `_seconds`, base units); label values are environment keys,
//! change kinds, routes, methods, statuses, store operations and, for remote
//! evaluations, flag keys, variants and reasons: nothing else a user types.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::http::AppState;

/// `environment`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabel {
    /// The environment's key.
    pub environment: String,
}

/// `environment`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The environment's key.
    pub environment: String,
    /// The change's kind (`toggle`, `rollout`, `revert`, `import`, …).
    pub kind: String,
}

/// `environment`, `flag`, `variant`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvalLabels {
    /// The environment's key.
    pub environment: String,
    /// The flag's key.
    pub flag: String,
    /// The variant served (empty when none).
    pub variant: String,
    /// The reason, or the error code for a failure.
    pub reason: String,
}

/// `route`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

/// `route`, `method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

/// `operation`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// What the store did (`write`, `read_flag_set`, …).
    pub operation: &'static str,
}

fn latency() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// Every metric flagd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    flag_set_version: Family<EnvLabel, Gauge>,
    sdk_instances: Family<EnvLabel, Gauge>,
    sdk_on_version: Family<EnvLabel, Gauge>,
    /// Per SDK instance and version: from the commit to that instance's ack.
    pub commit_to_ack: Family<EnvLabel, Histogram>,
    /// Committed changes by kind.
    pub changes: Family<ChangeLabels, Counter>,
    evaluations: Family<EvalLabels, Counter>,
    /// The evaluation counters by a hash of their labels, found without building the
    /// labels: a bulk evaluation counts a hundred flags per request.
    eval_counters: std::sync::RwLock<HashMap<u64, Vec<(EvalLabels, Counter)>>>,
    hasher: foldhash::fast::RandomState,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Store latency by operation.
    pub store: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flagd");
        let flag_set_version = Family::<EnvLabel, Gauge>::default();
        let sdk_instances = Family::<EnvLabel, Gauge>::default();
        let sdk_on_version = Family::<EnvLabel, Gauge>::default();
        let commit_to_ack = Family::<EnvLabel, Histogram>::new_with_constructor(latency);
        let changes = Family::<ChangeLabels, Counter>::default();
        let evaluations = Family::<EvalLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let store =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "flag_set_version",
            "The head version of each environment's flag set",
            flag_set_version.clone(),
        );
        registry.register(
            "sdk_instances",
            "SDK instances connected to this replica's stream",
            sdk_instances.clone(),
        );
        registry.register(
            "sdk_instances_on_version",
            "Connected SDK instances that have acknowledged the head version",
            sdk_on_version.clone(),
        );
        registry.register_with_unit(
            "commit_to_ack",
            "Per SDK instance and version, from the commit to that instance's acknowledgement",
            Unit::Seconds,
            commit_to_ack.clone(),
        );
        registry.register(
            "changes",
            "Committed changes (new versions) by kind",
            changes.clone(),
        );
        registry.register(
            "ofrep_evaluations",
            "Remote (OFREP) flag evaluations by flag, variant and reason",
            evaluations.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency by route and method",
            Unit::Seconds,
            http_duration.clone(),
        );
        registry.register_with_unit(
            "store_operation_duration",
            "Store latency by operation",
            Unit::Seconds,
            store.clone(),
        );
        Self {
            registry,
            flag_set_version,
            sdk_instances,
            sdk_on_version,
            commit_to_ack,
            changes,
            evaluations,
            eval_counters: std::sync::RwLock::new(HashMap::new()),
            hasher: foldhash::fast::RandomState::default(),
            http_requests,
            http_duration,
            store,
        }
    }

    /// Counts one remote evaluation.
    pub fn count_evaluation(&self, environment: &str, flag: &str, variant: &str, reason: &str) {
        let key = self.hasher.hash_one((environment, flag, variant, reason));
        let same = |l: &EvalLabels| {
            l.environment == environment
                && l.flag == flag
                && l.variant == variant
                && l.reason == reason
        };
        if let Ok(map) = self.eval_counters.read()
            && let Some((_, c)) = map.get(&key).and_then(|v| v.iter().find(|(l, _)| same(l)))
        {
            c.inc();
            return;
        }
        let labels = EvalLabels {
            environment: environment.to_owned(),
            flag: flag.to_owned(),
            variant: variant.to_owned(),
            reason: reason.to_owned(),
        };
        // A clone shares the family's counter.
        let counter = self.evaluations.get_or_create(&labels).clone();
        counter.inc();
        if let Ok(mut map) = self.eval_counters.write() {
            map.entry(key).or_default().push((labels, counter));
        }
    }

    /// Records how long a store operation took.
    pub fn store_op(&self, operation: &'static str, since: Instant) {
        self.store
            .get_or_create(&StoreLabels { operation })
            .observe(since.elapsed().as_secs_f64());
    }
}

fn env(e: &str) -> EnvLabel {
    EnvLabel {
        environment: e.to_owned(),
    }
}

/// Counts and times every request by its route pattern (never the raw path).
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &s.hub.metrics;
    m.http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// `GET /metrics`.
pub async fn scrape(State(s): State<AppState>) -> Response {
    let m = &s.hub.metrics;
    // The per-environment gauges are read now, not kept up to date on every change.
    match s.store.environments().await {
        Ok(envs) => {
            for e in envs {
                let label = env(&e.key);
                m.flag_set_version
                    .get_or_create(&label)
                    .set(i64::try_from(e.version).unwrap_or(i64::MAX));
                let (total, on) = s.hub.fleet_counts(&e.key, e.version).await;
                m.sdk_instances
                    .get_or_create(&label)
                    .set(i64::try_from(total).unwrap_or(i64::MAX));
                m.sdk_on_version
                    .get_or_create(&label)
                    .set(i64::try_from(on).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the environments"),
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        tracing::warn!(error = %e, "metrics: cannot encode");
    }
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
