//! Where a fleet stands against a version: what `--wait` and `wait` decide on.

use std::time::Duration;

use serde_json::Value;

/// Where the fleet stood when waiting ended.
#[derive(Debug)]
pub struct Convergence {
    /// The version waited for.
    pub version: u64,
    /// Every instance flagd knows: connected and unreachable.
    pub total: usize,
    /// Those whose last applied version is before `version` (or who applied none),
    /// connected or unreachable: each has its `state`.
    pub lagging: Vec<Value>,
    /// How many instances are unreachable, whatever they applied.
    pub unreachable: usize,
    /// Instances that applied the version but report flags they could not load.
    pub troubled: Vec<Value>,
    /// Unreachable instances do not hold convergence up (`--allow-unreachable`).
    pub allow_unreachable: bool,
    /// Instances that cannot acknowledge a version (`"acknowledges": false`: the
    /// official OpenFeature flagd providers, over gRPC), whatever flagd sent them.
    pub unacknowledged: Vec<Value>,
    /// Those count as converged once sent the version (`--allow-unacknowledged`).
    pub allow_unacknowledged: bool,
    /// How long it took.
    pub waited: Duration,
}

/// An instance whose connection flagd lost without a goodbye.
pub fn is_unreachable(instance: &Value) -> bool {
    instance.get("state").and_then(Value::as_str) == Some("unreachable")
}

/// An instance that cannot acknowledge what it applied (an OpenFeature flagd
/// provider over gRPC): flagd knows only what it sent it.
pub fn is_unacknowledging(instance: &Value) -> bool {
    instance.get("acknowledges").and_then(Value::as_bool) == Some(false)
}

impl Convergence {
    /// Where a fleet view (`GET …/fleet`) stands against `version`.
    ///
    /// An unreachable instance that had applied `version` before it was lost did apply
    /// it (an SDK never goes back to an older version): it is not lagging. One that had
    /// not may be serving anything older, and lags until it reconnects and applies it,
    /// says goodbye, is forgotten, or flagd's fleet TTL drops it.
    pub(crate) fn of(
        fleet: &Value,
        version: u64,
        allow_unreachable: bool,
        waited: Duration,
    ) -> Self {
        let instances = fleet
            .get("instances")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let (unacknowledged, acknowledging): (Vec<&Value>, Vec<&Value>) =
            instances.iter().partition(|i| is_unacknowledging(i));
        let (applied, lagging): (Vec<&Value>, Vec<&Value>) =
            acknowledging.into_iter().partition(|i| {
                i.get("appliedVersion")
                    .and_then(Value::as_u64)
                    .is_some_and(|v| v >= version)
            });
        let troubled = applied
            .into_iter()
            .filter(|i| {
                i.get("problems")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty())
            })
            .cloned()
            .collect();
        let lagging = lagging.into_iter().cloned().collect();
        Self {
            version,
            total: instances.len(),
            lagging,
            troubled,
            unreachable: instances.iter().filter(|i| is_unreachable(i)).count(),
            allow_unreachable,
            unacknowledged: unacknowledged.into_iter().cloned().collect(),
            allow_unacknowledged: false,
            waited,
        }
    }

    /// With `--allow-unacknowledged`: a provider that cannot acknowledge counts once
    /// flagd has sent it the version.
    #[must_use]
    pub fn allowing_unacknowledged(mut self, allow: bool) -> Self {
        self.allow_unacknowledged = allow;
        self
    }

    /// Providers that cannot acknowledge and have not been sent the version yet (an
    /// unreachable one is left out with `--allow-unreachable`).
    pub fn unsent(&self) -> impl Iterator<Item = &Value> {
        self.unacknowledged.iter().filter(|i| {
            let sent = i
                .get("sentVersion")
                .and_then(Value::as_u64)
                .is_some_and(|v| v >= self.version);
            let excused = self.allow_unreachable && is_unreachable(i);
            !(sent || excused)
        })
    }

    /// Nothing left to wait for: every acknowledging instance that counts applied the
    /// version and every provider that cannot acknowledge was sent it.
    pub fn settled(&self) -> bool {
        self.blocking().next().is_none() && self.unsent().next().is_none()
    }

    /// The lagging instances that hold convergence up: all of them, or with
    /// `--allow-unreachable` the connected ones.
    pub fn blocking(&self) -> impl Iterator<Item = &Value> {
        self.lagging
            .iter()
            .filter(|i| !(self.allow_unreachable && is_unreachable(i)))
    }

    /// Lagging instances left out by `--allow-unreachable`.
    pub fn excused(&self) -> impl Iterator<Item = &Value> {
        self.lagging
            .iter()
            .filter(|i| self.allow_unreachable && is_unreachable(i))
    }

    /// Every instance that counts applied the version (a provider that cannot
    /// acknowledge counts only with `--allow-unacknowledged`, once sent it).
    pub fn converged(&self) -> bool {
        self.settled() && (self.unacknowledged.is_empty() || self.allow_unacknowledged)
    }

    /// For `--json`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "version": self.version,
            "total": self.total,
            "applied": self.total - self.lagging.len() - self.unacknowledged.len(),
            "unacknowledged": self.unacknowledged,
            "allowUnacknowledged": self.allow_unacknowledged,
            "unreachable": self.unreachable,
            "allowUnreachable": self.allow_unreachable,
            "converged": self.converged(),
            "waitedSeconds": self.waited.as_secs_f64(),
            "lagging": self.lagging,
        })
    }
}
