//! A change of one environment's flag set: its items read and changed inside one
//! transaction.

use super::*;

pub(super) async fn audit(tx: &mut Tx, r: &AuditRecord, version: Option<u64>) -> StoreResult<()> {
    let js = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    sqlx::query("INSERT INTO audit (at, actor, action, env, target, reason, before, after, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(now_ms())
        .bind(&r.actor)
        .bind(&r.action)
        .bind(r.env.clone())
        .bind(&r.target)
        .bind(r.reason.clone())
        .bind(js(&r.before))
        .bind(js(&r.after))
        .bind(version.map(to_i64))
        .execute(&mut **tx)
        .await?;
    Ok(())
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
    /// The alert firing that asked for this change: its episode, audit action and
    /// payload, written with the version ([`WriteTx::record_alert`]).
    pub(super) alert: Option<(AlertEpisode, String, Value)>,
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
        read_items(&mut *self.tx, &self.env.key, self.env.version).await
    }

    /// The items at an earlier version.
    pub async fn at(&mut self, version: u64) -> StoreResult<Items> {
        if version > self.env.version {
            return Err(StoreError::NotFound(format!(
                "environment \"{}\" has no version {version} (head is {})",
                self.env.key, self.env.version
            )));
        }
        read_items(&mut *self.tx, &self.env.key, version).await
    }

    /// The head evaluators (what validating one flag needs), without reading the flags.
    pub async fn evaluators(&mut self) -> StoreResult<Items> {
        let rows = sqlx::query("SELECT key, position, definition FROM revisions WHERE env = $1 AND kind = 'evaluator' AND valid_to = $2")
            .bind(&self.env.key)
            .bind(OPEN)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut items = Items::new();
        for r in rows {
            let key: String = r.try_get("key")?;
            let def: String = r.try_get("definition")?;
            let definition =
                serde_json::from_str(&def).map_err(|e| StoreError::Internal(e.into()))?;
            items.insert(
                (ItemKind::Evaluator, key.clone()),
                Item {
                    kind: ItemKind::Evaluator,
                    key,
                    position: r.try_get("position")?,
                    definition,
                },
            );
        }
        Ok(items)
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
        let row = sqlx::query("SELECT position, definition FROM revisions WHERE env = $1 AND kind = $2 AND key = $3 AND valid_to = $4")
            .bind(&self.env.key)
            .bind(kind_str(kind))
            .bind(key)
            .bind(OPEN)
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
        let before = current.as_ref().map(|c| c.definition.clone());
        if before == value {
            return Ok(());
        }
        let v = self.new_version();
        if current.is_some() {
            sqlx::query("UPDATE revisions SET valid_to = $1 WHERE env = $2 AND kind = $3 AND key = $4 AND valid_to = $5")
                .bind(v)
                .bind(&self.env.key)
                .bind(kind_str(kind))
                .bind(key)
                .bind(OPEN)
                .execute(&mut *self.tx)
                .await?;
        }
        if let Some(def) = &value {
            let position = match (position, &current) {
                (Some(p), _) => p,
                (None, Some(c)) => c.position,
                (None, None) => {
                    self.next_position += 1;
                    self.next_position - 1
                }
            };
            sqlx::query("INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&self.env.key)
                .bind(kind_str(kind))
                .bind(key)
                .bind(v)
                .bind(OPEN)
                .bind(position)
                .bind(def.to_string())
                .execute(&mut *self.tx)
                .await?;
        }
        self.changes.push((kind, key.to_owned(), before, value));
        Ok(())
    }

    /// Makes the content of version `n` the head, in the database: closes the current
    /// rows that differ from `n`, copies `n`'s rows for the items that are then not
    /// current. Only the items that differ are written, and none travel to this process.
    /// How many flags the set held at version `n`.
    pub async fn flag_count_at(&mut self, n: u64) -> StoreResult<u64> {
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) FROM revisions WHERE env = $1 AND kind = 'flag' AND valid_from <= $2 AND valid_to > $2",
        )
        .bind(&self.env.key)
        .bind(to_i64(n))
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?;
        Ok(to_u64(count))
    }

    /// The head version this write is based on.
    pub fn base_version(&self) -> u64 {
        self.env.version
    }

    pub async fn revert_to(&mut self, n: u64) -> StoreResult<()> {
        if n > self.env.version {
            return Err(StoreError::NotFound(format!(
                "environment \"{}\" has no version {n} (head is {})",
                self.env.key, self.env.version
            )));
        }
        let (v, n) = (self.new_version(), to_i64(n));
        let same_at_n = "SELECT 1 FROM revisions t WHERE t.env = h.env AND t.kind = h.kind AND t.key = h.key \
                         AND t.valid_from <= $3 AND t.valid_to > $3 AND t.definition = h.definition";
        sqlx::query(&format!("UPDATE revisions SET valid_to = $1 WHERE env = $2 AND valid_to = $4 AND NOT EXISTS ({})", same_at_n.replace(" h.", " revisions.")))
            .bind(v)
            .bind(&self.env.key)
            .bind(n)
            .bind(OPEN)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query(
            "INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) \
             SELECT t.env, t.kind, t.key, $1, $4, t.position, t.definition FROM revisions t \
             WHERE t.env = $2 AND t.valid_from <= $3 AND t.valid_to > $3 \
             AND NOT EXISTS (SELECT 1 FROM revisions h WHERE h.env = t.env AND h.kind = t.kind AND h.key = t.key AND h.valid_to = $4)",
        )
        .bind(v)
        .bind(&self.env.key)
        .bind(n)
        .bind(OPEN)
        .execute(&mut *self.tx)
        .await?;
        // What changed: the rows just closed (before) and just opened (after). A large
        // revert reads only the keys: the stream announces it as a restore (P9) and
        // flagd's cache reloads the head, so 10,000 definitions need not be parsed here
        // while every SDK waits. Both sides are indexed: closed rows by (env, valid_to),
        // opened rows by (env, valid_from).
        let touched = "FROM revisions WHERE env = $1 AND (valid_to = $2 OR valid_from = $2)";
        let keys = sqlx::query(&format!("SELECT kind, key {touched}"))
            .bind(&self.env.key)
            .bind(v)
            .fetch_all(&mut *self.tx)
            .await?;
        let with_definitions = keys.len() <= 2 * DETAILED_CHANGES;
        let rows = if with_definitions {
            sqlx::query(&format!("SELECT kind, key, definition, valid_to {touched}"))
                .bind(&self.env.key)
                .bind(v)
                .fetch_all(&mut *self.tx)
                .await?
        } else {
            keys
        };
        let mut changed: BTreeMap<(ItemKind, String), (Option<Value>, Option<Value>)> =
            BTreeMap::new();
        for r in rows {
            let kind = parse_kind(&r.try_get::<String, _>("kind")?)?;
            let key: String = r.try_get("key")?;
            let slot = changed.entry((kind, key)).or_default();
            if !with_definitions {
                continue;
            }
            let def: Value = serde_json::from_str(&r.try_get::<String, _>("definition")?)
                .map_err(|e| StoreError::Internal(e.into()))?;
            if r.try_get::<i64, _>("valid_to")? == v {
                slot.0 = Some(def);
            } else {
                slot.1 = Some(def);
            }
        }
        self.keys_only |= !with_definitions;
        self.changes.extend(
            changed
                .into_iter()
                .map(|((kind, key), (before, after))| (kind, key, before, after)),
        );
        Ok(())
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
        let mut insert: Vec<(ItemKind, String, i64, String)> = Vec::new();
        for (kind, key, value, position) in wanted {
            let current = head.get(&(kind, key.clone()));
            let before = current.map(|c| c.definition.clone());
            if before == value {
                continue;
            }
            if current.is_some() {
                close.entry(kind).or_default().push(key.clone());
            }
            if let Some(def) = &value {
                let position = match (position, current) {
                    (Some(p), _) => p,
                    (None, Some(c)) => c.position,
                    (None, None) => {
                        self.next_position += 1;
                        self.next_position - 1
                    }
                };
                insert.push((kind, key.clone(), position, def.to_string()));
            }
            self.changes.push((kind, key, before, value));
        }
        for (kind, keys) in close {
            for chunk in keys.chunks(500) {
                let list = (0..chunk.len())
                    .map(|i| format!("${}", i + 5))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE revisions SET valid_to = $1 WHERE env = $2 AND kind = $3 AND valid_to = $4 AND key IN ({list})"
                );
                let mut q = sqlx::query(&sql)
                    .bind(v)
                    .bind(&self.env.key)
                    .bind(kind_str(kind))
                    .bind(OPEN);
                for k in chunk {
                    q = q.bind(k);
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        for chunk in insert.chunks(100) {
            let rows = (0..chunk.len())
                .map(|r| {
                    let b = r * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO revisions (env, kind, key, valid_from, valid_to, position, definition) VALUES {rows}"
            );
            let mut q = sqlx::query(&sql);
            for (kind, key, position, def) in chunk {
                q = q
                    .bind(&self.env.key)
                    .bind(kind_str(*kind))
                    .bind(key)
                    .bind(v)
                    .bind(OPEN)
                    .bind(*position)
                    .bind(def);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}
