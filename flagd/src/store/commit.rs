//! Committing a change: the size limits, the version record, the audit entry, and
//! only then the acknowledgement.

use super::*;

impl WriteTx<'_> {
    /// The head's flag count and size after this change, and the limits on them
    /// (`flagd_core::limits`): a change that leaves the set over a limit is refused with
    /// 422, unless it is a kill switch or a revert, which are never blocked. Kept up to
    /// date from each change (O(changed items)); counted in the store when unknown and
    /// after a revert, whose definitions never come to this process.
    pub(super) async fn new_head_size(&mut self, kind: ChangeKind) -> StoreResult<(i64, i64)> {
        let item_bytes = |key: &str, def: &Value| {
            i64::try_from(flagd_core::limits::json_bytes(def) + key.len() + 4).unwrap_or(i64::MAX)
        };
        let (flags, bytes) = match self.head_size {
            Some((mut flags, mut bytes)) if !self.keys_only => {
                for (k, key, before, after) in &self.changes {
                    if let Some(b) = before {
                        bytes -= item_bytes(key, b);
                        flags -= i64::from(*k == ItemKind::Flag);
                    }
                    if let Some(a) = after {
                        bytes += item_bytes(key, a);
                        flags += i64::from(*k == ItemKind::Flag);
                    }
                }
                (flags, bytes)
            }
            _ if self.keys_only && self.keys_only_size.is_some() => {
                self.keys_only_size.unwrap_or_default()
            }
            _ => {
                let len = match self.backend {
                    Backend::Sqlite => {
                        "LENGTH(CAST(definition AS BLOB)) + LENGTH(CAST(key AS BLOB))"
                    }
                    Backend::Postgres => "OCTET_LENGTH(definition) + OCTET_LENGTH(key)",
                };
                let head = content(self.line, "r.kind, r.key, r.definition", None, At::Head);
                let sql = format!(
                    "SELECT COALESCE(SUM(CASE WHEN kind = 'flag' THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM({len} + 4), 0) FROM ({head}) c"
                );
                let row = query_at(&sql, &self.env.key, self.line, self.new_version())
                    .fetch_one(&mut *self.tx)
                    .await?;
                (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)
            }
        };
        if !matches!(
            kind,
            ChangeKind::Toggle
                | ChangeKind::Revert
                | ChangeKind::Undo
                | ChangeKind::AutoDisable
                | ChangeKind::AutoRevert
        ) {
            let max_flags = i64::try_from(flagd_core::limits::MAX_FLAGS).unwrap_or(i64::MAX);
            let max_bytes =
                i64::try_from(flagd_core::limits::MAX_DOCUMENT_BYTES).unwrap_or(i64::MAX);
            let grew = |before: Option<i64>, now: i64| before.is_none_or(|b| now > b);
            if flags > max_flags && grew(self.head_size.map(|h| h.0), flags) {
                return Err(StoreError::invalid(
                    "flags",
                    format!(
                        "the flag set would hold {flags} flags; at most {max_flags} are allowed"
                    ),
                ));
            }
            if bytes > max_bytes && grew(self.head_size.map(|h| h.1), bytes) {
                return Err(StoreError::invalid(
                    "",
                    format!(
                        "the flag set would be {bytes} bytes; at most {max_bytes} bytes (32 MiB) are allowed"
                    ),
                ));
            }
        }
        Ok((flags, bytes))
    }

    /// Commits: one new version (when anything changed), its record, and the audit entry.
    pub async fn commit(
        mut self,
        kind: ChangeKind,
        actor: &str,
        reason: Option<&str>,
        action: &str,
        target: &str,
        reverted_to: Option<u64>,
    ) -> StoreResult<Committed> {
        let env = self.env.key.clone();
        if let Some(r) = reason
            && r.chars().count() > MAX_REASON_CHARS
        {
            return Err(StoreError::invalid(
                "reason",
                format!(
                    "is {} characters long; at most {MAX_REASON_CHARS}",
                    r.chars().count()
                ),
            ));
        }
        if self.changes.is_empty() {
            // A plan's move that changes no item (a pause, a step already in place) is
            // written alone.
            if self.plan.is_some() || self.schedule.is_some() || self.request.is_some() {
                if self.plan.is_some() {
                    self.authorize(kind, action, reason)?;
                }
                self.write_plan(None, actor, reason).await?;
                self.write_schedule(None).await?;
                self.write_approval(None, None).await?;
                self.tx.commit().await?;
            }
            return Ok(Committed {
                environment: env,
                version: self.env.version,
                changed: false,
                changed_flags: Vec::new(),
                changes: Some(Vec::new()),
                restores: None,
                kind,
                author: actor.to_owned(),
                reason: reason.map(str::to_owned),
                at: now_ms(),
            });
        }
        let break_glass = self.authorize(kind, action, reason)?;
        let v = self.new_version();
        let mut flags: Vec<String> = self
            .changes
            .iter()
            .filter(|c| c.0 == ItemKind::Flag)
            .map(|c| c.1.clone())
            .collect();
        flags.sort();
        flags.dedup();
        let at = now_ms();
        // The version's rows, the head's bookkeeping and the audit entry need no answer:
        // one batch, which also commits when nothing else is to be written.
        let mut rows = Batch::new();
        rows.push(
            "INSERT INTO versions (env, version, kind, author, reason, created_at, changed, reverted_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                (&env).into(),
                v.into(),
                kind.as_str().into(),
                actor.into(),
                reason.into(),
                at.into(),
                serde_json::to_string(&flags)
                    .map_err(|e| StoreError::Internal(e.into()))?
                    .into(),
                reverted_to.map(to_i64).into(),
            ],
        );
        // The flags' history rows come from the version's own list of changed flags, in
        // the store: one statement whatever their number, nothing bound per flag.
        let each = match self.backend {
            Backend::Sqlite => "json_each(v.changed) j",
            Backend::Postgres => "jsonb_array_elements_text(v.changed::jsonb) j(value)",
        };
        rows.push(
            format!(
                "INSERT INTO version_flags (env, flag_key, version) SELECT v.env, j.value, v.version \
                 FROM versions v, {each} WHERE v.env = $1 AND v.version = $2"
            ),
            vec![(&env).into(), v.into()],
        );
        let (head_flags, head_bytes) = self.new_head_size(kind).await?;
        rows.push(
            "UPDATE environments SET head_version = $1, next_position = $2, head_flags = $3, head_bytes = $4 WHERE key = $5",
            vec![
                v.into(),
                self.next_position.into(),
                head_flags.into(),
                head_bytes.into(),
                (&env).into(),
            ],
        );
        // One audit entry per change. A single-item change records the item before and
        // after; a many-item change (import, revert) records each changed item, up to a
        // hundred, and beyond that the versions, whose full contents stay readable.
        let (before, after) = if matches!(kind, ChangeKind::Toggle | ChangeKind::AutoDisable)
            && self.changes.len() == 1
        {
            // A toggle changes the state alone: that is what it records, so that a kill
            // switch costs the same in the audit log whatever the flag's size (the full
            // definitions stay readable in the versions).
            let state = |d: &Option<Value>| {
                d.as_ref()
                    .map(|d| serde_json::json!({"state": d.get("state").cloned().unwrap_or(Value::Null)}))
            };
            (state(&self.changes[0].2), state(&self.changes[0].3))
        } else if self.changes.len() == 1 && !self.keys_only {
            (self.changes[0].2.clone(), self.changes[0].3.clone())
        } else if self.changes.len() <= DETAILED_CHANGES && !self.keys_only {
            let side = |pick: fn(&Change) -> &Option<Value>| {
                let m: Map<String, Value> = self
                    .changes
                    .iter()
                    .map(|c| {
                        (
                            format!("{}:{}", kind_str(c.0), c.1),
                            pick(c).clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                Value::Object(m)
            };
            (Some(side(|c| &c.2)), Some(side(|c| &c.3)))
        } else {
            (
                Some(serde_json::json!({"version": self.env.version})),
                Some(serde_json::json!({"version": to_u64(v), "changedItems": self.changes.len()})),
            )
        };
        push_audit(
            &mut rows,
            &AuditRecord {
                actor: actor.into(),
                action: action.into(),
                env: Some(env.clone()),
                target: target.into(),
                reason: reason.map(Into::into),
                before,
                after,
            },
            Some(to_u64(v)),
        );
        let pausing = self.plan.is_none()
            && self.running_plans
            && matches!(
                kind,
                ChangeKind::Toggle
                    | ChangeKind::Rollout
                    | ChangeKind::Revert
                    | ChangeKind::Undo
                    | ChangeKind::Delete
                    | ChangeKind::AutoDisable
                    | ChangeKind::AutoRevert
            );
        // What else this change writes needs answers of its own (an alert's episode, an
        // approved request, a plan's move, a scheduled change) and comes after the
        // version it names: then the batch goes first. Each write below does nothing
        // when it has nothing to write, so this decides only when the batch is sent.
        if self.alert.is_some()
            || break_glass
            || self.request.is_some()
            || self.plan.is_some()
            || pausing
            || self.schedule.is_some()
        {
            std::mem::take(&mut rows)
                .run(&mut self.tx, self.backend)
                .await?;
        }
        self.write_alert(v, actor).await?;
        let glass = break_glass.then(|| (actor, action, target, reason.unwrap_or_default()));
        self.write_approval(Some(v), glass).await?;
        if self.plan.is_some() {
            self.write_plan(Some(v), actor, reason).await?;
        } else if pausing {
            self.pause_plans_of(&flags, v, actor, kind).await?;
        }
        self.write_schedule(Some(v)).await?;
        self.tx.commit_after(rows).await?;
        if let Some(o) = &self.observer {
            o.observe("write", self.started.elapsed());
        }
        if let Some(s) = &self.statistics {
            s.after_write(self.rows_written);
        }
        let changes = (!self.keys_only).then(|| {
            std::mem::take(&mut self.changes)
                .into_iter()
                .map(|(kind, key, _, after)| flagd_core::wire::Change {
                    kind,
                    key,
                    definition: after,
                })
                .collect()
        });
        let committed = Committed {
            environment: env,
            version: to_u64(v),
            changed: true,
            changed_flags: flags,
            changes,
            restores: reverted_to.filter(|_| action == "flagset.revert"),
            kind,
            author: actor.to_owned(),
            reason: reason.map(str::to_owned),
            at,
        };
        // Announced once, here, with the environment's write lock still held: the next
        // change of this environment is announced after this one.
        if let Some(l) = &self.listener {
            l.committed(&committed).await;
        }
        Ok(committed)
    }
}
