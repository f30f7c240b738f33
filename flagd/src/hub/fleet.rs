//! The fleet: every SDK instance connected, or lost without a goodbye (unreachable,
//! remembered for `--fleet-ttl`), and the version each has applied.

use super::*;

/// One connected SDK instance, for the fleet view (and, serialized, in a replica's
/// report to the others).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The instance id the SDK gave.
    pub instance: String,
    /// SDK name and version.
    pub sdk: String,
    /// Host label.
    pub host: String,
    /// Labels.
    pub labels: serde_json::Map<String, Value>,
    /// The SDK key's name.
    pub key_name: String,
    /// When it connected (RFC 3339).
    pub connected_since: String,
    /// The version it last acknowledged.
    pub applied_version: Option<u64>,
    /// When it last acknowledged (RFC 3339).
    pub last_ack: Option<String>,
    /// `connected`, or `unreachable`: its connection was lost without a goodbye, and it
    /// may still be serving `applied_version`. Remembered until it reconnects, says
    /// goodbye, is forgotten (`DELETE …/fleet/{instance}`) or the fleet TTL expires.
    pub state: String,
    /// Since when it is unreachable (RFC 3339).
    pub unreachable_since: Option<String>,
    /// Flags of its version it could not load (they evaluate with reason `ERROR`).
    pub problems: Vec<flagd_core::Problem>,
    /// The last message or flag set it reported it could not read.
    pub last_error: Option<String>,
    /// The flagd replica it is (or was last) connected to (`--replica-name`).
    #[serde(default)]
    pub replica: String,
    /// Whether it acknowledges the versions it applies. The official OpenFeature flagd
    /// providers (gRPC) cannot: they are shown with `sentVersion`, never as having
    /// applied a version, and so never count as converged.
    #[serde(default = "acknowledging")]
    pub acknowledges: bool,
    /// For one that does not acknowledge: the last version flagd sent it (`null` before
    /// the first, and for instances that acknowledge).
    #[serde(default)]
    pub sent_version: Option<u64>,
}

fn acknowledging() -> bool {
    true
}

impl Instance {
    /// An instance that has just connected.
    pub(super) fn connected(
        instance: String,
        sdk: String,
        host: String,
        labels: serde_json::Map<String, Value>,
        key_name: String,
        acknowledges: bool,
    ) -> Self {
        Self {
            instance,
            sdk,
            host,
            labels,
            key_name,
            connected_since: store::rfc3339(store::now_ms()),
            applied_version: None,
            last_ack: None,
            state: "connected".to_owned(),
            unreachable_since: None,
            problems: Vec::new(),
            last_error: None,
            replica: String::new(),
            acknowledges,
            sent_version: None,
        }
    }
}

/// A connection's fleet entry. Acks update atomics: no lock on the hot path of 10,000
/// SDKs acknowledging the same version at once.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) info: Instance,
    /// The token id of the SDK key it connected with: revoking the key drops it.
    pub(super) token_id: String,
    /// `u64::MAX` until the first version is known.
    pub(super) applied: std::sync::atomic::AtomicU64,
    /// Milliseconds; 0 until the first ack.
    pub(super) last_ack: std::sync::atomic::AtomicI64,
    /// When its connection was lost (ms); 0 while connected.
    pub(super) gone_at: std::sync::atomic::AtomicI64,
    /// What it reported it could not load.
    pub(super) problems: std::sync::Mutex<(Vec<flagd_core::Problem>, Option<String>)>,
    /// The last version sent to one that does not acknowledge; `u64::MAX` before any.
    pub(super) sent: std::sync::atomic::AtomicU64,
}

impl Member {
    /// A new entry: `applied` is what it holds on connecting, if anything.
    pub(super) fn new(info: Instance, token_id: String, applied: Option<u64>) -> Self {
        Self {
            info,
            token_id,
            applied: std::sync::atomic::AtomicU64::new(applied.unwrap_or(u64::MAX)),
            last_ack: std::sync::atomic::AtomicI64::new(0),
            gone_at: std::sync::atomic::AtomicI64::new(0),
            problems: std::sync::Mutex::new((Vec::new(), None)),
            sent: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    fn applied(&self) -> Option<u64> {
        let applied = self.applied.load(std::sync::atomic::Ordering::Relaxed);
        (applied != u64::MAX).then_some(applied)
    }

    fn gone_at(&self) -> Option<i64> {
        let g = self.gone_at.load(std::sync::atomic::Ordering::Relaxed);
        (g != 0).then_some(g)
    }

    fn snapshot(&self, replica: &str) -> Instance {
        let mut i = self.info.clone();
        replica.clone_into(&mut i.replica);
        i.applied_version = self.applied();
        let sent = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        i.sent_version = (!i.acknowledges && sent != u64::MAX).then_some(sent);
        let at = self.last_ack.load(std::sync::atomic::Ordering::Relaxed);
        i.last_ack = (at != 0).then(|| store::rfc3339(at));
        if let Some(g) = self.gone_at() {
            "unreachable".clone_into(&mut i.state);
            i.unreachable_since = Some(store::rfc3339(g));
        }
        if let Ok(p) = self.problems.lock() {
            i.problems.clone_from(&p.0);
            i.last_error.clone_from(&p.1);
        }
        i
    }
}

/// Counts of an environment's fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Every instance remembered: connected and unreachable.
    pub total: usize,
    /// Those that have applied the version asked about.
    pub on_version: usize,
    /// Those whose connection was lost.
    pub unreachable: usize,
}

/// Drops instances unreachable for longer than the TTL.
pub(super) fn prune(fleet: &mut HashMap<String, Arc<Member>>, ttl_ms: i64) {
    let now = store::now_ms();
    fleet.retain(|_, m| m.gone_at().is_none_or(|g| now.saturating_sub(g) <= ttl_ms));
}

impl Hub {
    /// Forgets an instance (an operator knows it is gone). Returns whether it was known.
    pub async fn forget(&self, env: &str, instance: &str) -> bool {
        let hub = self.env(env).await;
        let known = hub
            .fleet
            .lock()
            .is_ok_and(|mut f| f.remove(instance).is_some());
        hub.fleet_changed();
        known
    }

    /// How many instances are remembered, how many have acknowledged `version` and how
    /// many are unreachable, read from their atomics without copying the fleet.
    pub async fn fleet_counts(&self, env: &str, version: u64) -> FleetCounts {
        let hub = self.env(env).await;
        let ttl = self.ttl_ms();
        hub.fleet.lock().map_or(FleetCounts::default(), |mut f| {
            prune(&mut f, ttl);
            let mut c = FleetCounts {
                total: f.len(),
                ..FleetCounts::default()
            };
            for m in f.values() {
                c.on_version += usize::from(m.applied() == Some(version));
                c.unreachable += usize::from(m.gone_at().is_some());
            }
            c
        })
    }

    pub(super) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.fleet_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The instances of an environment connected to this replica, and unreachable ones
    /// still remembered (see [`Hub::cluster_fleet`] for the whole deployment's).
    pub async fn fleet(&self, env: &str) -> Vec<Instance> {
        let hub = self.env(env).await;
        let ttl = self.ttl_ms();
        let f = hub
            .fleet
            .lock()
            .map(|mut f| {
                prune(&mut f, ttl);
                f.values()
                    .map(|m| m.snapshot(&self.replica))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut f = f;
        f.sort_by(|a, b| a.instance.cmp(&b.instance));
        f
    }
}
