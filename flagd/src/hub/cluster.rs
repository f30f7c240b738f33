//! One replica among several on one store (PostgreSQL): the fleet of the whole
//! deployment, instances forgotten through any replica, tokens revoked through any
//! replica. What a replica knows of the others goes through the store, which is the
//! truth and is there with or without Redis.

use super::*;

/// A replica whose report is older than this is gone (killed, cut off): the instances
/// it reported connected are unreachable from then, never converged. Reports are
/// refreshed at least every [`REPORT_EVERY`].
pub const STALE_REPORT: Duration = Duration::from_secs(3);

/// How often a replica refreshes its report when nothing changed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How soon a change to the fleet (an ack of a new version) is reported: `--wait`
/// through another replica sees it at most this much later.
const REPORT_TICK: Duration = Duration::from_millis(50);

/// Milliseconds of an RFC 3339 time this module wrote.
fn ms_of(time: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// The better of two entries of one instance (one that moved between replicas): a
/// connected one over an unreachable one, then the newer connection.
fn better(a: &Instance, b: &Instance) -> bool {
    let connected = |i: &Instance| i.state == "connected";
    match (connected(a), connected(b)) {
        (true, false) => true,
        (false, true) => false,
        _ => a.connected_since > b.connected_since,
    }
}

impl Hub {
    /// Whether other replicas may share the store (PostgreSQL): their SDK instances are
    /// known here from their fleet reports.
    pub fn clustered(&self) -> bool {
        self.store.backend() == store::Backend::Postgres
    }

    /// The instances of an environment across the deployment: this replica's, and
    /// those the other replicas of the store reported (theirs from a gone replica are
    /// unreachable since its last report). An instance that moved between replicas is
    /// listed once, where it is now.
    pub async fn cluster_fleet(&self, env: &str) -> ApiResult<Vec<Instance>> {
        let local = self.fleet(env).await;
        if !self.clustered() {
            return Ok(local);
        }
        let reports = self
            .store
            .fleet_reports(env, &self.replica, self.ttl_ms())
            .await?;
        let forgotten = self.store.forgotten_instances(env).await?;
        let now = store::now_ms();
        let stale_ms = i64::try_from(STALE_REPORT.as_millis()).unwrap_or(i64::MAX);
        let mut by_id: HashMap<String, Instance> = HashMap::new();
        let mut add = |i: Instance| match by_id.get(&i.instance) {
            Some(held) if !better(&i, held) => {}
            _ => {
                by_id.insert(i.instance.clone(), i);
            }
        };
        for r in reports {
            let instances: Vec<Instance> = match serde_json::from_str(&r.instances) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(env, replica = r.replica, error = %e, "a replica's fleet report cannot be read");
                    continue;
                }
            };
            let gone = now.saturating_sub(r.reported_at) > stale_ms;
            for mut i in instances {
                let since = ms_of(&i.connected_since).unwrap_or(0);
                if forgotten.get(&i.instance).is_some_and(|at| *at >= since) {
                    continue;
                }
                if gone && i.state == "connected" {
                    "unreachable".clone_into(&mut i.state);
                    i.unreachable_since = Some(store::rfc3339(r.reported_at));
                }
                add(i);
            }
        }
        for i in local {
            add(i);
        }
        let mut all: Vec<Instance> = by_id.into_values().collect();
        all.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(all)
    }

    /// Forgets an instance wherever it was last seen: here, and for every replica of
    /// the store. Returns whether any replica knew it.
    pub async fn forget_everywhere(&self, env: &str, instance: &str) -> ApiResult<bool> {
        let here = self.forget(env, instance).await;
        if !self.clustered() {
            return Ok(here);
        }
        let elsewhere = self
            .cluster_fleet(env)
            .await?
            .iter()
            .any(|i| i.instance == instance);
        if here || elsewhere {
            self.store.forget_instance(env, instance).await?;
        }
        Ok(here || elsewhere)
    }

    /// Until the hub closes: writes this replica's fleet of each environment to the
    /// store when it changed (within [`REPORT_TICK`]) and every [`REPORT_EVERY`], and
    /// drops the instances forgotten through other replicas.
    pub async fn report_fleet(self: Arc<Self>) {
        let mut closing = self.closing();
        let mut tick = tokio::time::interval(REPORT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Per environment: the change count reported, and when.
        let mut reported: HashMap<String, (u64, tokio::time::Instant)> = HashMap::new();
        let mut last_prune = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.changed() => return,
            }
            let envs: Vec<(String, Arc<EnvHub>)> = match self.envs.read() {
                Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Err(_) => Vec::new(),
            };
            let mut result = Ok(());
            for (env, h) in envs {
                let changes = h.fleet_changes.load(std::sync::atomic::Ordering::Relaxed);
                let due = reported
                    .get(&env)
                    .is_none_or(|(n, at)| *n != changes || at.elapsed() >= REPORT_EVERY);
                if !due {
                    continue;
                }
                let refresh = reported
                    .get(&env)
                    .is_none_or(|(_, at)| at.elapsed() >= REPORT_EVERY);
                if refresh && let Err(e) = self.drop_forgotten(&env, &h).await {
                    result = Err(e);
                }
                let instances = self.fleet(&env).await;
                let text = serde_json::to_string(&instances).unwrap_or_else(|_| "[]".into());
                match self.store.report_fleet(&self.replica, &env, &text).await {
                    Ok(()) => {
                        reported.insert(env, (changes, tokio::time::Instant::now()));
                    }
                    Err(e) => result = Err(e.into()),
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = self.store.prune_fleet_reports(self.ttl_ms()).await {
                    result = Err(e.into());
                }
            }
            // Once per outage, not every tick.
            match result {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot report this replica's fleet to the store; other replicas will list its instances as unreachable until it can");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("reporting this replica's fleet to the store again");
                }
                _ => {}
            }
        }
    }

    /// Drops from this replica's fleet the instances an operator forgot through
    /// another replica (unless they connected again since).
    async fn drop_forgotten(&self, env: &str, h: &EnvHub) -> ApiResult<()> {
        let forgotten = self.store.forgotten_instances(env).await?;
        if forgotten.is_empty() {
            return Ok(());
        }
        if let Ok(mut f) = h.fleet.lock() {
            let before = f.len();
            f.retain(|id, m| {
                let since = ms_of(&m.info.connected_since).unwrap_or(0);
                forgotten.get(id).is_none_or(|at| *at < since)
            });
            if f.len() != before {
                h.fleet_changed();
            }
        }
        Ok(())
    }

    /// Closes this replica's streams of tokens and SDK keys revoked through other
    /// replicas: those revoked since `watermark` (ms, moved on), not already in `seen`.
    pub(super) async fn follow_revocations(
        &self,
        watermark: &mut i64,
        seen: &mut HashMap<String, i64>,
    ) -> ApiResult<()> {
        // Replicas' clocks differ a little: look back a margin, and skip what was seen.
        const MARGIN_MS: i64 = 10_000;
        let revoked = self
            .store
            .revoked_since(watermark.saturating_sub(MARGIN_MS))
            .await?;
        for (id, at) in revoked {
            *watermark = (*watermark).max(at);
            if seen.insert(id.clone(), at).is_none() {
                self.revoke(Revoked::Token(id));
            }
        }
        let horizon = watermark.saturating_sub(2 * MARGIN_MS);
        seen.retain(|_, at| *at >= horizon);
        Ok(())
    }
}
