//! A change of one environment's flag set: its items read and changed inside one
//! transaction.

use super::*;

pub(super) async fn audit(tx: &mut Tx, r: &AuditRecord, version: Option<u64>) -> StoreResult<()> {
    let backend = tx.backend();
    let mut b = Batch::new();
    push_audit(&mut b, r, version);
    b.run(tx, backend).await
}

/// [`audit`] as one statement of a batch.
pub(super) fn push_audit(b: &mut Batch, r: &AuditRecord, version: Option<u64>) {
    let js = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    b.push(
        "INSERT INTO audit (at, actor, action, env, target, reason, before, after, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            now_ms().into(),
            (&r.actor).into(),
            (&r.action).into(),
            r.env.clone().into(),
            (&r.target).into(),
            r.reason.clone().into(),
            js(&r.before).into(),
            js(&r.after).into(),
            version.map(to_i64).into(),
        ],
    );
}

/// Up to this many changed items, the audit entry records each item before and after.
pub(super) const DETAILED_CHANGES: usize = 100;

/// One item changed by a write: (kind, key, before, after).
pub(super) type Change = (ItemKind, String, Option<Value>, Option<Value>);

/// A change of one environment's flag set in progress. Nothing is visible until
/// [`WriteTx::commit`]; dropping it rolls back.
pub struct WriteTx<'s> {
    pub(super) _guard: MutexGuard<'s, ()>,
    /// For the store latency of the whole write (`write`).
    pub(super) started: std::time::Instant,
    pub(super) observer: Option<std::sync::Arc<dyn StoreObserver>>,
    /// Who hears of the commit (flagd's bus).
    pub(super) listener: Option<std::sync::Arc<dyn CommitListener>>,
    pub(super) tx: Tx,
    pub(super) env: Environment,
    pub(super) next_position: i64,
    /// The head's flag count and document bytes before this change, when known.
    pub(super) head_size: Option<(i64, i64)>,
    pub(super) backend: Backend,
    pub(super) changes: Vec<Change>,
    /// The changes carry keys without definitions (a large revert).
    pub(super) keys_only: bool,
    /// The head's line (`lines.rs`): the new version's, once a revert started one.
    pub(super) line: Line,
    /// The flag count and bytes after a large revert, from the stored lengths of what
    /// it changed, when the head's were known.
    pub(super) keys_only_size: Option<(i64, i64)>,
    /// The alert firing that asked for this change: its episode, audit action and
    /// payload, written with the version ([`WriteTx::record_alert`]).
    pub(super) alert: Option<(AlertEpisode, String, Value)>,
    /// The release plan this change moves ([`WriteTx::record_plan`]).
    pub(super) plan: Option<PlanMove>,
    /// The scheduled change this change applies ([`WriteTx::record_schedule`]).
    pub(super) schedule: Option<String>,
    /// The approved change request this change applies, and its revision
    /// ([`WriteTx::record_request`]).
    pub(super) request: Option<(String, u64)>,
    /// The version this change undoes ([`WriteTx::undoing`]).
    pub(super) undoes: Option<u64>,
    /// A release plan of the environment was running when the write began (nothing
    /// else starts one while the write holds the environment).
    pub(super) running_plans: bool,
    /// PostgreSQL: refreshed after a commit of many items.
    pub(super) statistics: Option<std::sync::Arc<super::statistics::Statistics>>,
    /// The rows of `revisions` this change inserted.
    pub(super) rows_written: u64,
}

impl Committed {
    /// The record without the changed items' definitions.
    pub fn summary(&self) -> Self {
        Self {
            environment: self.environment.clone(),
            version: self.version,
            changed: self.changed,
            changed_flags: self.changed_flags.clone(),
            changes: None,
            restores: self.restores,
            kind: self.kind,
            author: self.author.clone(),
            reason: self.reason.clone(),
            at: self.at,
        }
    }
}

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("env", &self.env.key)
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

/// The result of a committed change.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Committed {
    /// The environment.
    pub environment: String,
    /// The new head version (unchanged when nothing changed).
    pub version: u64,
    /// Whether a new version was made.
    pub changed: bool,
    /// The flag keys changed.
    pub changed_flags: Vec<String>,
    /// Every changed item with its new definition, for the stream; `None` when the
    /// change is too large to carry (a large revert): the head is read from the store.
    #[serde(skip)]
    pub changes: Option<Vec<flagd_core::wire::Change>>,
    /// For a revert: the version whose content this one equals.
    #[serde(skip)]
    pub restores: Option<u64>,
    /// The version's record, for the UI's events and the metrics.
    #[serde(skip)]
    pub kind: ChangeKind,
    /// Who made it.
    #[serde(skip)]
    pub author: String,
    /// Why.
    #[serde(skip)]
    pub reason: Option<String>,
    /// When (ms).
    #[serde(skip)]
    pub at: i64,
}

impl WriteTx<'_> {
    /// The environment, as locked.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The head items.
    pub async fn head(&mut self) -> StoreResult<Items> {
        read_items(&mut self.tx, &self.env.key, self.env.version).await
    }

    /// The items at an earlier version.
    pub async fn at(&mut self, version: u64) -> StoreResult<Items> {
        if version > self.env.version {
            return Err(StoreError::NotFound(format!(
                "environment \"{}\" has no version {version} (head is {})",
                self.env.key, self.env.version
            )));
        }
        read_items(&mut self.tx, &self.env.key, version).await
    }

    /// The head evaluators (what validating one flag needs), without reading the flags.
    pub async fn evaluators(&mut self) -> StoreResult<Items> {
        let sql = content(
            self.line,
            "r.kind, r.key, r.position, r.definition",
            Some("r.kind = 'evaluator'"),
            At::Head,
        );
        let rows = query_at(&sql, &self.env.key, self.line, self.new_version())
            .fetch_all(&mut *self.tx)
            .await?;
        items_from(rows)
    }

    /// The version that last changed a flag (0 when none did): what `If-Flag-Version`
    /// is compared with.
    pub async fn flag_version(&mut self, key: &str) -> StoreResult<u64> {
        let row =
            sqlx::query("SELECT MAX(version) FROM version_flags WHERE env = $1 AND flag_key = $2")
                .bind(&self.env.key)
                .bind(key)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map_or(0, to_u64))
    }

    /// One head item.
    pub async fn get(&mut self, kind: ItemKind, key: &str) -> StoreResult<Option<Item>> {
        let sql = content(
            self.line,
            "r.position, r.definition",
            Some("r.kind = $6 AND r.key = $7"),
            At::Head,
        );
        // Read at the version being written: what this write put is current.
        let row = query_at(&sql, &self.env.key, self.line, self.new_version())
            .bind(kind_str(kind))
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let def: String = r.try_get("definition")?;
        Ok(Some(Item {
            kind,
            key: key.to_owned(),
            position: r.try_get("position")?,
            definition: serde_json::from_str(&def).map_err(|e| StoreError::Internal(e.into()))?,
        }))
    }

    pub(super) fn new_version(&self) -> i64 {
        to_i64(self.env.version + 1)
    }

    /// Sets an item (`None` deletes it). `position` keeps an item's place (e.g. when
    /// restoring it); new items go last. Unchanged items are not written.
    pub async fn put(
        &mut self,
        kind: ItemKind,
        key: &str,
        value: Option<Value>,
        position: Option<i64>,
    ) -> StoreResult<()> {
        let current = self.get(kind, key).await?;
        self.put_over(kind, key, current, value, position).await
    }

    /// [`WriteTx::put`] of an item the caller has just read with [`WriteTx::get`]
    /// (`current`, as read): a kill switch reads the flag to change its state, and the
    /// same read twice would be one more statement in the responder's commit.
    pub async fn put_over(
        &mut self,
        kind: ItemKind,
        key: &str,
        current: Option<Item>,
        value: Option<Value>,
        position: Option<i64>,
    ) -> StoreResult<()> {
        let before = current.as_ref().map(|c| c.definition.clone());
        if before == value {
            return Ok(());
        }
        let v = self.new_version();
        // A line with a base may hold a row without a definition for an item it
        // deleted; an item it inherits has no row of the line to close.
        // Closing the current row and inserting the new one need no answer: one batch.
        let mut writes = Batch::new();
        if current.is_some() || self.line.base.is_some() {
            writes.push(
                "UPDATE revisions SET valid_to = $1 WHERE env = $2 AND line = $6 AND kind = $3 AND key = $4 AND valid_to = $5",
                vec![
                    v.into(),
                    (&self.env.key).into(),
                    kind_str(kind).into(),
                    key.into(),
                    OPEN.into(),
                    self.line.id.into(),
                ],
            );
        }
        // A deletion in a line with a base is a row without a definition, so that the
        // base's row of the item is not current again.
        if value.is_some() || self.line.base.is_some() {
            let position = match (position, &current) {
                (Some(p), _) => p,
                (None, Some(c)) => c.position,
                (None, None) => {
                    self.next_position += 1;
                    self.next_position - 1
                }
            };
            writes.push(
                "INSERT INTO revisions (env, line, kind, key, valid_from, valid_to, position, definition) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    (&self.env.key).into(),
                    self.line.id.into(),
                    kind_str(kind).into(),
                    key.into(),
                    v.into(),
                    OPEN.into(),
                    position.into(),
                    value.as_ref().map(Value::to_string).into(),
                ],
            );
            self.rows_written += 1;
        }
        writes.run(&mut self.tx, self.backend).await?;
        self.changes.push((kind, key.to_owned(), before, value));
        Ok(())
    }

    /// The head version this write is based on.
    pub fn base_version(&self) -> u64 {
        self.env.version
    }

    /// Replaces the whole set with `incoming` (an import): the head's items it does not
    /// hold are removed, the others set; only what differs is written.
    pub async fn replace_with(
        &mut self,
        incoming: Vec<(ItemKind, String, Value)>,
    ) -> StoreResult<()> {
        let head = self.head().await?;
        let keep: std::collections::HashSet<(ItemKind, String)> = incoming
            .iter()
            .map(|(k, key, _)| (*k, key.clone()))
            .collect();
        let mut wanted: Vec<(ItemKind, String, Option<Value>, Option<i64>)> = head
            .keys()
            .filter(|k| !keep.contains(*k))
            .map(|(kind, key)| (*kind, key.clone(), None, None))
            .collect();
        wanted.extend(
            incoming
                .into_iter()
                .map(|(kind, key, def)| (kind, key, Some(def), None)),
        );
        self.apply(&head, wanted).await
    }

    /// Sets many items at once given the head: only those that differ are written, in
    /// batched statements (a 10,000-flag revert is a few dozen statements, not 30,000).
    /// A position of `None` keeps an item's place, or puts a new item last.
    pub async fn apply(
        &mut self,
        head: &Items,
        wanted: Vec<(ItemKind, String, Option<Value>, Option<i64>)>,
    ) -> StoreResult<()> {
        let v = self.new_version();
        let mut close: BTreeMap<ItemKind, Vec<String>> = BTreeMap::new();
        let mut insert: Vec<(ItemKind, String, i64, Option<String>)> = Vec::new();
        for (kind, key, value, position) in wanted {
            let current = head.get(&(kind, key.clone()));
            let before = current.map(|c| c.definition.clone());
            if before == value {
                continue;
            }
            if current.is_some() || self.line.base.is_some() {
                close.entry(kind).or_default().push(key.clone());
            }
            // As in `put`: a deletion in a line with a base is a row without a definition.
            if value.is_some() || self.line.base.is_some() {
                let position = match (position, current) {
                    (Some(p), _) => p,
                    (None, Some(c)) => c.position,
                    (None, None) => {
                        self.next_position += 1;
                        self.next_position - 1
                    }
                };
                insert.push((
                    kind,
                    key.clone(),
                    position,
                    value.as_ref().map(Value::to_string),
                ));
            }
            self.changes.push((kind, key, before, value));
        }
        for (kind, keys) in close {
            for chunk in keys.chunks(500) {
                let list = (0..chunk.len())
                    .map(|i| format!("${}", i + 6))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE revisions SET valid_to = $1 WHERE env = $2 AND line = $5 AND kind = $3 AND valid_to = $4 AND key IN ({list})"
                );
                let mut q = sqlx::query(&sql)
                    .bind(v)
                    .bind(&self.env.key)
                    .bind(kind_str(kind))
                    .bind(OPEN)
                    .bind(self.line.id);
                for k in chunk {
                    q = q.bind(k);
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        for chunk in insert.chunks(100) {
            let rows = (0..chunk.len())
                .map(|r| {
                    let b = r * 8;
                    let p: Vec<String> = (1..=8).map(|i| format!("${}", b + i)).collect();
                    format!("({})", p.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO revisions (env, line, kind, key, valid_from, valid_to, position, definition) VALUES {rows}"
            );
            let mut q = sqlx::query(&sql);
            for (kind, key, position, def) in chunk {
                q = q
                    .bind(&self.env.key)
                    .bind(self.line.id)
                    .bind(kind_str(*kind))
                    .bind(key)
                    .bind(v)
                    .bind(OPEN)
                    .bind(*position)
                    .bind(def.clone());
            }
            self.rows_written += q.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(())
    }
}
