//! Lines of history: what makes a revert cost what it changes rather than the size of
//! the set (`migrations/*/0009_lines.sql`).
//!
//! An environment's versions are one numbered history cut into lines. A revert at
//! version V starts line V, whose content begins as the content of the version it
//! restores (its base): one row, where a copy would close and write a row per item.
//! The set at version V is the rows of V's line current at V, plus the base's rows
//! for the items the line has no row of; a line deletes an item of its base with a
//! row without a definition. A line's base is always in a line without a base, so any
//! version reads with two index scans.

use super::*;

/// The line a version belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line {
    /// Its first version (0 for the original line).
    pub id: i64,
    /// The base: its line (which has no base) and version; `None` when the line holds
    /// every item itself.
    pub base: Option<(i64, i64)>,
}

impl Line {
    /// The base as bound into [`content`] ([`query_at`]): a line without one binds a line that
    /// cannot exist, so that both forms of the statement take the same parameters.
    fn base_binds(self) -> (i64, i64) {
        self.base.unwrap_or((-1, -1))
    }
}

/// The line of version `v` of `env`.
pub(super) async fn line_at(conn: &mut AnyConnection, env: &str, v: i64) -> StoreResult<Line> {
    let row = sqlx::query(
        "SELECT line, base_line, base FROM lines WHERE env = $1 AND line <= $2 ORDER BY line DESC LIMIT 1",
    )
    .bind(env)
    .bind(v)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(r) => line_of(&r, ["line", "base_line", "base"]),
        None => Ok(Line { id: 0, base: None }),
    }
}

/// The line in a row's columns `[line, base_line, base]` (a line absent from a
/// left join, all three NULL, is the original line 0).
pub(super) fn line_of(r: &AnyRow, [line, base_line, base]: [&str; 3]) -> StoreResult<Line> {
    let base = match (
        r.try_get::<Option<i64>, _>(base_line)?,
        r.try_get::<Option<i64>, _>(base)?,
    ) {
        (Some(l), Some(b)) => Some((l, b)),
        _ => None,
    };
    Ok(Line {
        id: r.try_get::<Option<i64>, _>(line)?.unwrap_or(0),
        base,
    })
}

/// Which versions of a line a read asks for.
#[derive(Clone, Copy)]
pub(super) enum At {
    /// The head: a line's current rows are its open ones (a key lookup).
    Head,
    /// Any version.
    Version,
}

/// A query for the items of one version: `cols` of `r` (a revisions row) for every
/// item, restricted by `filter` (a condition on `r`; its parameters from `$6`).
/// Parameters `$1` to `$5` (the environment, the line, the version, the base's line and
/// version) are bound by [`query_at`]; whether `line` has a base decides the
/// statement's form.
pub(super) fn content(line: Line, cols: &str, filter: Option<&str>, at: At) -> String {
    content_from(line, cols, filter, at, 1)
}

/// [`content`] with its five parameters numbered from `$first`, so that two versions'
/// contents can be compared in one statement (the second numbered from `$6`).
fn content_from(line: Line, cols: &str, filter: Option<&str>, at: At, first: usize) -> String {
    let [env, id, v, base_line, base_v] = [0, 1, 2, 3, 4].map(|i| format!("${}", first + i));
    let own = match at {
        // (Every row current at the head started by then: the condition only names the
        // head, so that both forms bind the same parameters.)
        At::Head => format!("r.valid_to = {OPEN} AND r.valid_from <= {v}"),
        At::Version => format!("r.valid_to > {v} AND r.valid_from <= {v}"),
    };
    // With a filter (one kind, one key) the base's rows are found through the primary
    // key: the unary plus keeps SQLite from choosing the version index for the range
    // on `valid_to`, which would scan every row of the base current then.
    let (filter, to) = filter.map_or(("TRUE", ""), |f| (f, "+"));
    let base = format!(
        "r.env = {env} AND r.line = {base_line} AND {to}r.valid_to > {base_v} AND r.valid_from <= {base_v} AND {filter}"
    );
    if line.base.is_none() {
        // Nothing to inherit: the line's rows alone, and the base's scan (bound to a
        // line that cannot exist) finds nothing, so that both forms bind the same
        // parameters.
        return format!(
            "SELECT {cols} FROM revisions r WHERE r.env = {env} AND r.line = {id} AND {own} \
             AND r.definition IS NOT NULL AND {filter} \
             UNION ALL \
             SELECT {cols} FROM revisions r WHERE {base} AND r.definition IS NOT NULL"
        );
    }
    // The line's rows current at the version and the base's current at its version,
    // each one index scan; of an item in both, the line's row is kept (`pick`), and a
    // row without a definition then means deleted. A numbering rather than a NOT
    // EXISTS: PostgreSQL, with statistics from before a large import, planned that as
    // a nested loop over both scans (50 million comparisons, 4 s for 10,000 flags).
    format!(
        "SELECT {cols} FROM (SELECT u.*, ROW_NUMBER() OVER (PARTITION BY u.kind, u.key ORDER BY u.base) AS pick FROM ( \
         SELECT r.kind, r.key, r.position, r.definition, 0 AS base FROM revisions r \
         WHERE r.env = {env} AND r.line = {id} AND {own} AND {filter} \
         UNION ALL \
         SELECT r.kind, r.key, r.position, r.definition, 1 AS base FROM revisions r \
         WHERE {base}) u) r \
         WHERE r.pick = 1 AND r.definition IS NOT NULL"
    )
}

/// A [`content`] statement of `env` at version `v` of `line`, its first five
/// parameters bound.
pub(super) fn query_at<'q>(
    sql: &'q str,
    env: &'q str,
    line: Line,
    v: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let (bl, bv) = line.base_binds();
    sqlx::query(sql)
        .bind(env)
        .bind(line.id)
        .bind(v)
        .bind(bl)
        .bind(bv)
}

/// How many items of `env` (those `filter` keeps) version `v` of `line` holds.
pub(super) async fn count_at(
    conn: &mut AnyConnection,
    env: &str,
    (line, v, at): (Line, i64, At),
    filter: Option<&str>,
) -> StoreResult<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM ({}) c",
        content(line, "r.key", filter, at)
    );
    Ok(query_at(&sql, env, line, v)
        .fetch_one(conn)
        .await?
        .try_get(0)?)
}

/// Reads every item of `env` at `version`.
pub(super) async fn read_items(
    conn: &mut AnyConnection,
    env: &str,
    version: u64,
) -> StoreResult<Items> {
    let v = to_i64(version);
    let line = line_at(conn, env, v).await?;
    let sql = content(
        line,
        "r.kind, r.key, r.position, r.definition",
        None,
        At::Version,
    );
    items_from(query_at(&sql, env, line, v).fetch_all(conn).await?)
}

/// Items from rows of `kind`, `key`, `position` and `definition`.
pub(super) fn items_from(rows: Vec<AnyRow>) -> StoreResult<Items> {
    let mut items = Items::new();
    for r in rows {
        let kind = parse_kind(&r.try_get::<String, _>("kind")?)?;
        let key: String = r.try_get("key")?;
        let def: String = r.try_get("definition")?;
        let definition = serde_json::from_str(&def).map_err(|e| StoreError::Internal(e.into()))?;
        items.insert(
            (kind, key.clone()),
            Item {
                kind,
                key,
                position: r.try_get("position")?,
                definition,
            },
        );
    }
    Ok(items)
}

/// An item that differs between two versions, with its stored definition's length in
/// bytes in each (`None` where it is absent).
struct Changed {
    kind: ItemKind,
    key: String,
    before_len: Option<i64>,
    after_len: Option<i64>,
}

impl WriteTx<'_> {
    /// How many flags the set held at version `n`.
    pub async fn flag_count_at(&mut self, n: u64) -> StoreResult<u64> {
        let n = to_i64(n);
        let line = line_at(&mut self.tx, &self.env.key, n).await?;
        let count = count_at(
            &mut self.tx,
            &self.env.key,
            (line, n, At::Version),
            Some("r.kind = 'flag'"),
        )
        .await?;
        Ok(to_u64(count))
    }

    /// Makes the content of version `n` the head: a new line whose base is `n`'s
    /// content, so that nothing is copied when `n`'s line has no base. When it has one,
    /// the new line shares that base and copies the rows `n`'s line had of its own at
    /// `n` (what changed since that line's revert), or, when those are most of the set,
    /// copies the whole set and has no base, so that later reverts to it copy nothing.
    /// What changed is found in the store, which returns only the changed keys; their
    /// definitions are read only for a change small enough to carry to the SDKs.
    pub async fn revert_to(&mut self, n: u64) -> StoreResult<()> {
        if n > self.env.version {
            return Err(StoreError::NotFound(format!(
                "environment \"{}\" has no version {n} (head is {})",
                self.env.key, self.env.version
            )));
        }
        let (v, n, h) = (self.new_version(), to_i64(n), to_i64(self.env.version));
        let target = line_at(&mut self.tx, &self.env.key, n).await?;
        let changed = self.changed_between(target, n, h).await?;
        if changed.is_empty() {
            return Ok(());
        }
        let with_definitions = changed.len() <= 2 * DETAILED_CHANGES;
        let (mut before, mut after) = if with_definitions {
            let items: Vec<(ItemKind, String)> =
                changed.iter().map(|c| (c.kind, c.key.clone())).collect();
            (
                self.definitions_of(self.line, h, At::Head, &items).await?,
                self.definitions_of(target, n, At::Version, &items).await?,
            )
        } else {
            (HashMap::new(), HashMap::new())
        };
        let line = match target.base {
            None => Line {
                id: v,
                base: Some((target.id, n)),
            },
            Some(base) => self.copy_own_rows(target, n, base, v).await?,
        };
        let (bl, bv) = (line.base.map(|b| b.0), line.base.map(|b| b.1));
        sqlx::query("INSERT INTO lines (env, line, base_line, base) VALUES ($1, $2, $3, $4)")
            .bind(&self.env.key)
            .bind(v)
            .bind(bl)
            .bind(bv)
            .execute(&mut *self.tx)
            .await?;
        self.line = line;
        let parse = |d: Option<String>| -> StoreResult<Option<Value>> {
            d.map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Internal(e.into())))
                .transpose()
        };
        // A large revert carries keys alone, and the head's size follows from the
        // stored lengths of what changed, as the store counts them (`new_head_size`).
        let mut size = self.head_size.filter(|_| !with_definitions);
        let mut changes = Vec::with_capacity(changed.len());
        for c in changed {
            if let Some((flags, bytes)) = &mut size {
                let is_flag = i64::from(c.kind == ItemKind::Flag);
                let key = i64::try_from(c.key.len() + 4).unwrap_or(i64::MAX);
                if let Some(b) = c.before_len {
                    *bytes -= b + key;
                    *flags -= is_flag;
                }
                if let Some(a) = c.after_len {
                    *bytes += a + key;
                    *flags += is_flag;
                }
            }
            let id = (c.kind, c.key);
            let (b, a) = (parse(before.remove(&id))?, parse(after.remove(&id))?);
            changes.push((id.0, id.1, b, a));
        }
        self.keys_only |= !with_definitions;
        if !with_definitions {
            self.keys_only_size = size;
        }
        self.changes.extend(changes);
        Ok(())
    }

    /// The items that differ between the head (at version `h`) and version `n` of
    /// `target`: only their keys leave the store, found by one grouping of both
    /// versions' rows (an item in one of them only, or with two definitions).
    /// A grouping rather than a join: SQLite planned a join of the two as a nested loop
    /// of scans, PostgreSQL as one of key lookups on collated text.
    async fn changed_between(&mut self, target: Line, n: i64, h: i64) -> StoreResult<Vec<Changed>> {
        let head = content_from(
            self.line,
            "r.kind, r.key, r.definition, 0 AS side",
            None,
            At::Head,
            1,
        );
        let there = content_from(
            target,
            "r.kind, r.key, r.definition, 1 AS side",
            None,
            At::Version,
            6,
        );
        // Definitions compare as bytes: PostgreSQL would otherwise order them by the
        // database's collation, which is slower and could call different texts equal.
        let (def, len) = match self.backend {
            Backend::Sqlite => ("d.definition", "LENGTH(CAST(d.definition AS BLOB))"),
            Backend::Postgres => ("d.definition COLLATE \"C\"", "OCTET_LENGTH(d.definition)"),
        };
        // One row: a JSON list of the changed items, where a row per item cost more in
        // the driver (10,000 of them for a large revert) than the comparison itself.
        let (agg, item) = match self.backend {
            Backend::Sqlite => ("json_group_array", "json_array"),
            Backend::Postgres => ("json_agg", "json_build_array"),
        };
        let sql = format!(
            "SELECT CAST({agg}({item}(x.kind, x.key, x.before_len, x.after_len)) AS TEXT) FROM ( \
             SELECT d.kind, d.key, SUM(CASE WHEN d.side = 0 THEN {len} END) AS before_len, \
             SUM(CASE WHEN d.side = 1 THEN {len} END) AS after_len \
             FROM ({head} UNION ALL {there}) d GROUP BY d.kind, d.key \
             HAVING COUNT(*) = 1 OR MIN({def}) <> MAX({def})) x"
        );
        let (bl, bv) = target.base_binds();
        let list: Option<String> = query_at(&sql, &self.env.key, self.line, h)
            .bind(&self.env.key)
            .bind(target.id)
            .bind(n)
            .bind(bl)
            .bind(bv)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        // (PostgreSQL aggregates no rows to NULL, SQLite to an empty list.)
        let items: Vec<(String, String, Option<i64>, Option<i64>)> = match list {
            Some(l) => serde_json::from_str(&l).map_err(|e| StoreError::Internal(e.into()))?,
            None => Vec::new(),
        };
        let mut changed = items
            .into_iter()
            .map(|(kind, key, before_len, after_len)| {
                Ok(Changed {
                    kind: parse_kind(&kind)?,
                    key,
                    before_len,
                    after_len,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // In the order of every other change list (flagd's, not the database's collation).
        changed.sort_unstable_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        Ok(changed)
    }

    /// The stored definitions of `items` at version `v` of `line` (those it holds).
    async fn definitions_of(
        &mut self,
        line: Line,
        v: i64,
        at: At,
        items: &[(ItemKind, String)],
    ) -> StoreResult<HashMap<(ItemKind, String), String>> {
        let mut out = HashMap::with_capacity(items.len());
        for kind in [ItemKind::Flag, ItemKind::Evaluator, ItemKind::Top] {
            let keys: Vec<&str> = items
                .iter()
                .filter(|i| i.0 == kind)
                .map(|i| i.1.as_str())
                .collect();
            for chunk in keys.chunks(500) {
                let list = (0..chunk.len())
                    .map(|i| format!("${}", i + 6))
                    .collect::<Vec<_>>()
                    .join(", ");
                let filter = format!("r.kind = '{}' AND r.key IN ({list})", kind_str(kind));
                let sql = content(line, "r.key, r.definition", Some(&filter), at);
                let mut q = query_at(&sql, &self.env.key, line, v);
                for k in chunk {
                    q = q.bind(*k);
                }
                for r in q.fetch_all(&mut *self.tx).await? {
                    out.insert((kind, r.try_get("key")?), r.try_get("definition")?);
                }
            }
        }
        Ok(out)
    }

    /// The new line `v` for a revert to version `n` of the based line `target`: it
    /// copies `target`'s own rows at `n` and shares its base, or copies the whole set
    /// when those rows are more than half of it.
    async fn copy_own_rows(
        &mut self,
        target: Line,
        n: i64,
        base: (i64, i64),
        v: i64,
    ) -> StoreResult<Line> {
        let own: i64 = sqlx::query(
            "SELECT COUNT(*) FROM revisions WHERE env = $1 AND line = $2 AND valid_to > $3 AND valid_from <= $3",
        )
        .bind(&self.env.key)
        .bind(target.id)
        .bind(n)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?;
        let total = count_at(&mut self.tx, &self.env.key, (target, n, At::Version), None).await?;
        let insert = "INSERT INTO revisions (env, line, kind, key, valid_from, valid_to, position, definition)";
        if own * 2 <= total {
            let copied = sqlx::query(&format!(
                "{insert} SELECT env, $4, kind, key, $4, {OPEN}, position, definition FROM revisions \
                 WHERE env = $1 AND line = $2 AND valid_to > $3 AND valid_from <= $3"
            ))
            .bind(&self.env.key)
            .bind(target.id)
            .bind(n)
            .bind(v)
            .execute(&mut *self.tx)
            .await?;
            self.rows_written += copied.rows_affected();
            return Ok(Line {
                id: v,
                base: Some(base),
            });
        }
        let source = content(
            target,
            "r.kind, r.key, r.position, r.definition",
            None,
            At::Version,
        );
        let sql = format!(
            "{insert} SELECT $1, $6, c.kind, c.key, $6, {OPEN}, c.position, c.definition FROM ({source}) c"
        );
        let copied = query_at(&sql, &self.env.key, target, n)
            .bind(v)
            .execute(&mut *self.tx)
            .await?;
        self.rows_written += copied.rows_affected();
        Ok(Line { id: v, base: None })
    }
}
