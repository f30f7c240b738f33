//! Following what other flagd replicas commit to the same store (PostgreSQL): their
//! changes are not announced on this replica's bus, so the hub compares its heads with
//! the store's every few moments and sends what it is missing to its own SDKs, as one
//! delta, the same frame a local commit makes.

use flagd_core::wire::Change;

use super::*;

/// How many versions of a remote jump the admin UI is told of one by one.
const UI_CATCH_UP: u64 = 20;

impl Hub {
    /// Every `every`, brings each environment this replica serves up to the store's
    /// head, and closes the streams of credentials revoked through other replicas.
    /// Stops when the hub closes.
    pub async fn follow_store(self: Arc<Self>, every: Duration) {
        let mut closing = self.closing();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watermark = store::now_ms();
        let mut seen = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.changed() => return,
            }
            self.follow_all(false).await;
            if let Err(e) = self.follow_revocations(&mut watermark, &mut seen).await {
                tracing::warn!(error = %e, "cannot read the tokens revoked through other replicas");
            }
        }
    }

    /// Brings every environment this replica serves up to the store's head. `wait`:
    /// for this process's writes in progress to end (they are announced on their own),
    /// rather than skip this round.
    pub async fn follow_all(&self, wait: bool) {
        let envs: Vec<(String, Arc<EnvHub>)> = match self.envs.read() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (env, h) in envs {
            if let Err(e) = self.follow(&env, &h, wait, None).await {
                tracing::warn!(env, error = %e, "cannot compare the head with the store");
            }
        }
    }

    /// Another replica announced `version` of `env`: if this replica serves the
    /// environment and holds an older version, it reads the head and sends it on now.
    pub async fn follow_announced(&self, env: &str, version: u64) {
        let h = match self.envs.read() {
            Ok(m) => m.get(env).cloned(),
            Err(_) => None,
        };
        let Some(h) = h else { return };
        if h.cache.read().await.version >= version {
            return;
        }
        if let Err(e) = self.follow(env, &h, true, Some(version)).await {
            tracing::warn!(env, version, error = %e, "cannot read a change another replica announced");
        }
    }

    /// One environment: a head newer in the store than here goes out as one delta (a
    /// revert of the whole set as the compact restore frame, as from the replica that
    /// committed it: SDKs that kept the restored version swap it in).
    pub(super) async fn follow(
        &self,
        env: &str,
        h: &EnvHub,
        wait: bool,
        announced: Option<u64>,
    ) -> ApiResult<()> {
        // A local write in progress is announced by its own commit, and must not be
        // mistaken for another replica's: wait for it to end, or look next time.
        let quiet = if wait {
            self.store.hold_writes().await
        } else {
            match self.store.try_hold_writes() {
                Some(quiet) => quiet,
                None => return Ok(()),
            }
        };
        let followed = self.follow_held(env, h, announced).await;
        drop(quiet);
        if let Some((from, head)) = followed? {
            self.tell_ui_of_remote(env, from, head).await;
        }
        Ok(())
    }

    /// [`Hub::follow`] once this process's writes are held off (or from inside this
    /// process's own commit, which holds them): brings the cache and the SDKs from what
    /// they hold to `announced` (or the store's head) with one frame. Returns the
    /// versions it went from and to, when it did.
    pub(super) async fn follow_held(
        &self,
        env: &str,
        h: &EnvHub,
        announced: Option<u64>,
    ) -> ApiResult<Option<(u64, u64)>> {
        let cached = {
            let c = h.cache.read().await;
            if !c.loaded {
                // Nobody asked for it yet: the first connection loads the head.
                return Ok(None);
            }
            c.version
        };
        // An announced version is committed: no need to ask the store for its head (a
        // newer one is announced too, or found by the next comparison).
        let head = match announced {
            Some(v) => v,
            None => self.store.environment(env).await?.version,
        };
        if head <= cached {
            return Ok(None);
        }
        let (at, restored) = self.store.version_facts(env, head).await?;
        let restores = restored.filter(|_| head == cached + 1);
        let mut c = if let Some(k) = restores {
            // Sent before the set is read (10,000 flags take a while); the cache stays
            // locked until it holds the new head, so that a connection arriving in between
            // reads the new head rather than miss the frame.
            let c = h.cache.write().await;
            if c.version != cached {
                return Ok(None);
            }
            let _ = h.tx.send(Frame {
                from: cached,
                version: head,
                text: text(&ServerMsg::Restore {
                    from: cached,
                    version: head,
                    restores: k,
                    at,
                }),
            });
            c
        } else {
            h.cache.write().await
        };
        let items = match self.store.items(env, Some(head)).await {
            Ok((_, items)) => items,
            Err(e) => {
                if restores.is_some() {
                    // The SDKs were told of the head; the cache is read again when needed.
                    c.loaded = false;
                    c.recent.clear();
                }
                return Err(e.into());
            }
        };
        if c.version != cached {
            // A local commit or a connection's reload got there first.
            return Ok(None);
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
            version: head,
            text: text(&ServerMsg::Delta {
                from,
                version: head,
                changes,
                restores,
                at,
            }),
        };
        if let Ok(mut compiled) = h.compiled.lock() {
            *compiled = None;
        }
        if restores.is_none() {
            let _ = h.tx.send(frame.clone());
        }
        tracing::info!(
            env,
            from,
            version = head,
            restores,
            "followed a change made through another replica"
        );
        c.document = flagd_core::document::assemble_owned(items);
        c.version = head;
        c.at = at;
        c.snapshot = None;
        c.recent.push_back(frame);
        while c.recent.len() > RECENT {
            c.recent.pop_front();
        }
        Ok(Some((from, head)))
    }

    /// Open admin UI pages on this replica learn who changed what through another one,
    /// as they do for a local change (the last [`UI_CATCH_UP`] versions of a jump).
    pub(super) async fn tell_ui_of_remote(&self, env: &str, from: u64, version: u64) {
        let first = (from + 1).max(version.saturating_sub(UI_CATCH_UP - 1));
        for v in first..=version {
            match self.store.version(env, v).await {
                Ok(r) => {
                    let flags = &r.changed_flags[..r.changed_flags.len().min(100)];
                    self.notify_ui(UiEvent {
                        environment: Some(env.to_owned()),
                        name: "change",
                        data: serde_json::json!({"environment": env, "version": v, "kind": r.kind,
                            "author": r.author, "reason": r.reason, "changedFlags": flags,
                            "at": r.created_at}),
                    });
                }
                Err(e) => {
                    tracing::debug!(env, version = v, error = %e, "no record for the UI");
                }
            }
        }
    }
}
