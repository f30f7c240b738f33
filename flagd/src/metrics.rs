//! Prometheus metrics at `GET /metrics` (OpenMetrics text). Names follow the Prometheus
//! conventions (`_total`, `_seconds`, base units); label values are environment keys,
//! change kinds, routes, methods, statuses, store operations and, for remote
//! evaluations, flag keys, variants and reasons: nothing else a user types.
//!
//! Flag keys and variant names are chosen by users and may hold any character, so every
//! label value is a [`LabelText`], escaped as the exposition format requires
//! (prometheus-client writes label values as they are). And what users choose must not
//! grow the series without bound: evaluations are labelled only with flags of the head
//! evaluated (unknown keys are one value), HTTP methods outside the standard ones are one
//! value, and each family with such labels holds at most [`DEFAULT_MAX_SERIES`] label
//! sets (`--metrics-max-series`), counting the rest under one overflow value.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The label sets a family with user-chosen label values holds at most, by default.
/// An environment of 10,000 flags evaluated in bulk makes about as many; each set costs
/// a few hundred bytes here and a series in Prometheus.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// The value that stands for every flag (and variant, or route) beyond the cap.
pub const OVERFLOW: &str = "(other)";

/// The value that stands for every key evaluated that is no flag of the head.
pub const NOT_FOUND: &str = "(not found)";

/// A label value, escaped when encoded as the text formats require: a backslash, a double
/// quote and a line feed become `\\`, `\"` and `\n` (OpenMetrics 1.0, "Escaping";
/// the Prometheus text format alike). Without it a flag key holding `"} 1` and a newline
/// would close the label set and forge a series, or make the whole scrape unreadable.
/// (flagd encodes text only; the protobuf encoding would need the raw value.)
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl From<&str> for LabelText {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for LabelText {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        escape_into(&self.0, encoder)
    }
}

/// Writes `s` escaped for a label value (see [`LabelText`]).
fn escape_into(s: &str, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let mut rest = s;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

/// `environment`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabel {
    /// The environment's key.
    pub environment: LabelText,
}

/// `environment`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The environment's key.
    pub environment: LabelText,
    /// The change's kind (`toggle`, `rollout`, `revert`, `import`, …).
    pub kind: LabelText,
}

/// `environment`, `action`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// The environment's key (empty when the alert named none that exists).
    pub environment: LabelText,
    /// `disable`, `revert`, `resolved` or `none`.
    pub action: LabelText,
    /// `applied`, `unchanged`, `duplicate`, `refused`, `stale`, `resolved`, `rejected`.
    pub outcome: LabelText,
}

/// `environment`, `flag`, `variant`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvalLabels {
    /// The environment's key.
    pub environment: LabelText,
    /// The flag's key.
    pub flag: LabelText,
    /// The variant served (empty when none).
    pub variant: LabelText,
    /// The reason, or the error code for a failure.
    pub reason: LabelText,
}

/// `route`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    route: LabelText,
    method: LabelText,
    status: u16,
}

/// `route`, `method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    route: LabelText,
    method: LabelText,
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
    sdk_unreachable: Family<EnvLabel, Gauge>,
    /// Per SDK instance and version: from the commit to that instance's ack.
    pub commit_to_ack: Family<EnvLabel, Histogram>,
    /// Committed changes by kind.
    pub changes: Family<ChangeLabels, Counter>,
    evaluations: Family<EvalLabels, Counter>,
    /// A bulk evaluation counts a hundred flags per request.
    eval_counters: Handles<EvalLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Every request is counted and timed.
    http_handles: Handles<HttpLabels, (Histogram, Counter)>,
    /// Store latency by operation.
    pub store: Family<StoreLabels, Histogram, fn() -> Histogram>,
    /// Open HTTP connections, websocket streams included.
    pub connections: Gauge,
    /// The cap on open connections.
    pub connections_max: Gauge,
    /// 1 while subscribed to the other replicas' announcements on Redis.
    pub redis_subscribed: Gauge,
    /// What the Alertmanager receiver did with each alert's request.
    pub alert_actions: Family<AlertLabels, Counter>,
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
        let sdk_unreachable = Family::<EnvLabel, Gauge>::default();
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
            "SDK instances of this replica's stream: connected, and unreachable ones still remembered",
            sdk_instances.clone(),
        );
        registry.register(
            "sdk_instances_on_version",
            "SDK instances that have acknowledged the head version",
            sdk_on_version.clone(),
        );
        registry.register(
            "sdk_instances_unreachable",
            "SDK instances whose connection was lost without a goodbye (they may serve an old version)",
            sdk_unreachable.clone(),
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
        let connections = Gauge::default();
        let connections_max = Gauge::default();
        registry.register(
            "http_connections",
            "Open HTTP connections, websocket streams included",
            connections.clone(),
        );
        registry.register(
            "http_connections_max",
            "The cap on open HTTP connections (--max-connections, within the open-file limit)",
            connections_max.clone(),
        );
        let redis_subscribed = Gauge::default();
        registry.register(
            "redis_subscribed",
            "1 while subscribed to the other replicas' change announcements on Redis (--redis-url); 0 without: changes made through other replicas then arrive within --follow-interval",
            redis_subscribed.clone(),
        );
        let alert_actions = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alert_actions",
            "What the Alertmanager receiver did per alert and action: applied (a new version), unchanged, duplicate, refused (by the policy, or an unknown flag), stale, resolved, rejected (no or an unknown environment)",
            alert_actions.clone(),
        );
        Self {
            alert_actions,
            registry,
            flag_set_version,
            sdk_instances,
            sdk_on_version,
            sdk_unreachable,
            commit_to_ack,
            changes,
            evaluations,
            eval_counters: Handles::default(),
            http_requests,
            http_duration,
            http_handles: Handles::default(),
            store,
            connections,
            connections_max,
            redis_subscribed,
        }
    }

    /// Caps the label sets of each family with user-chosen labels (evaluations, HTTP
    /// requests); beyond it new ones are counted under [`OVERFLOW`].
    pub fn limit_series(&self, max: usize) {
        self.eval_counters.max.store(max, Ordering::Relaxed);
        self.http_handles.max.store(max, Ordering::Relaxed);
    }

    /// Counts one remote evaluation (OFREP, gRPC) of `key` by its result: an unknown
    /// key is counted under [`NOT_FOUND`], so that probing cannot grow the series.
    pub fn count_detail(&self, environment: &str, key: &str, d: &flagd_core::Detail<'_>) {
        let flag = if d.error_code == Some(flagd_core::ErrorCode::FlagNotFound) {
            NOT_FOUND
        } else {
            key
        };
        let reason = d.error_code.map_or(d.reason.as_str(), |c| c.as_str());
        self.count_evaluation(environment, flag, d.variant.unwrap_or_default(), reason);
    }

    /// Counts one remote evaluation. `flag` must be a flag of the head evaluated (or
    /// [`NOT_FOUND`]), so that callers cannot grow the series with keys they make up.
    pub fn count_evaluation(&self, environment: &str, flag: &str, variant: &str, reason: &str) {
        let make = |flag: &str, variant: &str| {
            let labels = EvalLabels {
                environment: environment.into(),
                flag: flag.into(),
                variant: variant.into(),
                reason: reason.into(),
            };
            let counter = self.evaluations.get_or_create(&labels).clone();
            (labels, counter)
        };
        self.eval_counters.with(
            (environment, flag, variant, reason),
            |l| {
                l.environment.0 == environment
                    && l.flag.0 == flag
                    && l.variant.0 == variant
                    && l.reason.0 == reason
            },
            || make(flag, variant),
            // The environment and the reason are few; which flag and variant overflowed
            // is what cannot be kept.
            || make(OVERFLOW, OVERFLOW).1,
            Counter::inc,
        );
    }
}

impl crate::store::StoreObserver for Metrics {
    fn observe(&self, operation: &'static str, elapsed: std::time::Duration) {
        self.store
            .get_or_create(&StoreLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// Labels and metric handles by the hash of the labels (colliding entries share a slot).
type ByHash<L, M> = HashMap<u64, Vec<(L, M)>, foldhash::fast::RandomState>;

/// Metric handles found by a hash of borrowed label values: the hot paths neither
/// build label strings nor take the family's lock (both showed in remote evaluation's
/// profile). A handle is a clone that shares the family's metric. Holds at most `max`
/// label sets: the family behind it then stops growing too.
#[derive(Debug)]
struct Handles<L, M> {
    map: std::sync::RwLock<ByHash<L, M>>,
    hasher: foldhash::fast::RandomState,
    /// Label sets held.
    len: AtomicUsize,
    max: AtomicUsize,
}

impl<L, M> Default for Handles<L, M> {
    fn default() -> Self {
        Self {
            map: std::sync::RwLock::new(HashMap::default()),
            hasher: foldhash::fast::RandomState::default(),
            len: AtomicUsize::new(0),
            max: AtomicUsize::new(DEFAULT_MAX_SERIES),
        }
    }
}

impl<L, M> Handles<L, M> {
    /// Calls `f` with the metric whose labels hash as `key` and are `same`; the first
    /// time, `make` builds the labels and takes the metric from its family. Once `max`
    /// label sets are held, a new one is counted on `overflow`'s metric instead, and
    /// nothing is added (that path takes the family's lock; it is the rare one).
    fn with<R>(
        &self,
        key: impl std::hash::Hash,
        same: impl Fn(&L) -> bool,
        make: impl FnOnce() -> (L, M),
        overflow: impl FnOnce() -> M,
        f: impl Fn(&M) -> R,
    ) -> R {
        let key = self.hasher.hash_one(key);
        if let Ok(map) = self.map.read()
            && let Some((_, m)) = map.get(&key).and_then(|v| v.iter().find(|(l, _)| same(l)))
        {
            return f(m);
        }
        if self.len.load(Ordering::Relaxed) >= self.max.load(Ordering::Relaxed) {
            return f(&overflow());
        }
        let (labels, metric) = make();
        let r = f(&metric);
        if let Ok(mut map) = self.map.write() {
            let slot = map.entry(key).or_default();
            // Another thread may have added the same labels meanwhile.
            if !slot.iter().any(|(l, _)| same(l)) {
                slot.push((labels, metric));
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

pub(crate) fn env(e: &str) -> EnvLabel {
    EnvLabel {
        environment: e.into(),
    }
}

impl Metrics {
    /// One HTTP request: its route pattern (never the raw path), method, status, time.
    pub fn observe_request(&self, route: &str, method: &'static str, status: u16, elapsed: f64) {
        let make = |route: &str| {
            let duration = self
                .http_duration
                .get_or_create(&RouteLabels {
                    route: route.into(),
                    method: method.into(),
                })
                .clone();
            let labels = HttpLabels {
                route: route.into(),
                method: method.into(),
                status,
            };
            let count = self.http_requests.get_or_create(&labels).clone();
            (labels, (duration, count))
        };
        self.http_handles.with(
            (route, method, status),
            |l| l.route.0 == route && l.method.0 == method && l.status == status,
            || make(route),
            || make(OVERFLOW).1,
            |(duration, count)| {
                duration.observe(elapsed);
                count.inc();
            },
        );
    }

    /// An environment's head and its fleet, read at scrape time rather than kept up to
    /// date on every change: `instances` SDK instances, `on_version` of them on
    /// `version`, `unreachable` lost without a goodbye.
    pub fn set_environment(
        &self,
        environment: &str,
        version: u64,
        (instances, on_version, unreachable): (usize, usize, usize),
    ) {
        let label = env(environment);
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.flag_set_version
            .get_or_create(&label)
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.sdk_instances.get_or_create(&label).set(n(instances));
        self.sdk_on_version.get_or_create(&label).set(n(on_version));
        self.sdk_unreachable
            .get_or_create(&label)
            .set(n(unreachable));
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "metrics: cannot encode");
        }
        text
    }
}

impl crate::bus::Subscriber for Metrics {
    fn committed<'a>(
        &'a self,
        c: &'a crate::store::Committed,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        if c.changed {
            self.changes
                .get_or_create(&ChangeLabels {
                    environment: c.environment.as_str().into(),
                    kind: c.kind.as_str().into(),
                })
                .inc();
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::escape_into;

    #[test]
    fn label_values_are_escaped() {
        let esc = |s: &str| {
            let mut out = String::new();
            escape_into(s, &mut out).unwrap();
            out
        };
        assert_eq!(esc("plain-key_1"), "plain-key_1");
        assert_eq!(esc(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(esc("x\"} 1\nforged 1"), r#"x\"} 1\nforged 1"#);
        assert_eq!(esc("ends with \\"), r"ends with \\");
        assert_eq!(esc("ünïcödé\r"), "ünïcödé\r", "only the three are escaped");
    }
}
