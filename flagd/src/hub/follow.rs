//! Following what other flagd replicas commit to the same store (PostgreSQL): their
//! changes are not announced on this replica's bus, so the hub compares its heads with
//! the store's every few moments and sends what it is missing to its own SDKs, as one
//! delta, the same frame a local commit makes.

use flagd_core::wire::Change;

use super::*;

impl Hub {
    /// Every `every`, brings each environment this replica serves up to the store's
    /// head. Stops when the hub closes.
    pub async fn follow_store(self: Arc<Self>, every: Duration) {
        let mut closing = self.closing();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.changed() => return,
            }
            let envs: Vec<(String, Arc<EnvHub>)> = match self.envs.read() {
                Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                Err(_) => Vec::new(),
            };
            for (env, h) in envs {
                if let Err(e) = self.follow(&env, &h).await {
                    tracing::warn!(env, error = %e, "cannot compare the head with the store");
                }
            }
        }
    }

    /// One environment: a head newer in the store than here goes out as one delta.
    pub(super) async fn follow(&self, env: &str, h: &EnvHub) -> ApiResult<()> {
        // A local write in progress is announced by its own commit: look next time.
        let Some(_quiet) = self.store.try_hold_writes() else {
            return Ok(());
        };
        let cached = {
            let c = h.cache.read().await;
            if !c.loaded {
                // Nobody asked for it yet: the first connection loads the head.
                return Ok(());
            }
            c.version
        };
        let head = self.store.environment(env).await?.version;
        if head <= cached {
            return Ok(());
        }
        let (version, items) = self.store.items(env, Some(head)).await?;
        let at = self.store.version_at(env, version).await?;
        let mut c = h.cache.write().await;
        if version <= c.version {
            // A local commit or a connection's reload got there first.
            return Ok(());
        }
        let held = flagd_core::document::items_in(&c.document);
        let changes: Vec<Change> = flagd_core::document::diff(&held, &items)
            .into_iter()
            .map(|d| Change {
                kind: d.kind,
                key: d.key.to_owned(),
                definition: d.after.cloned(),
            })
            .collect();
        let from = c.version;
        let frame = Frame {
            from,
            version,
            text: text(&ServerMsg::Delta {
                from,
                version,
                changes,
                restores: None,
                at,
            }),
        };
        if let Ok(mut compiled) = h.compiled.lock() {
            *compiled = None;
        }
        let _ = h.tx.send(frame.clone());
        tracing::info!(
            env,
            from,
            version,
            "followed a change made through another replica"
        );
        c.document = flagd_core::document::assemble_owned(items);
        c.version = version;
        c.at = at;
        c.snapshot = None;
        c.recent.push_back(frame);
        while c.recent.len() > RECENT {
            c.recent.pop_front();
        }
        Ok(())
    }
}
