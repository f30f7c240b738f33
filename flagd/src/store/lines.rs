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
    let Some(r) = row else {
        return Ok(Line { id: 0, base: None });
    };
    let base = match (
        r.try_get::<Option<i64>, _>("base_line")?,
        r.try_get::<Option<i64>, _>("base")?,
    ) {
        (Some(l), Some(b)) => Some((l, b)),
        _ => None,
    };
    Ok(Line {
        id: r.try_get("line")?,
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
    let own = match at {
        // (Every row current at the head started by then: the condition only names the
        // head, so that both forms bind the same parameters.)
        At::Head => format!("r.valid_to = {OPEN} AND r.valid_from <= $3"),
        At::Version => "r.valid_to > $3 AND r.valid_from <= $3".to_owned(),
    };
    // With a filter (one kind, one key) the base's rows are found through the primary
    // key: the unary plus keeps SQLite from choosing the version index for the range
    // on `valid_to`, which would scan every row of the base current then.
    let (filter, to) = filter.map_or(("TRUE", ""), |f| (f, "+"));
    let base = format!(
        "r.env = $1 AND r.line = $4 AND {to}r.valid_to > $5 AND r.valid_from <= $5 AND {filter}"
    );
    if line.base.is_none() {
        // Nothing to inherit: the line's rows alone, and the base's scan (bound to a
        // line that cannot exist) finds nothing, so that both forms bind the same
        // parameters.
        return format!(
            "SELECT {cols} FROM revisions r WHERE r.env = $1 AND r.line = $2 AND {own} \
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
         WHERE r.env = $1 AND r.line = $2 AND {own} AND {filter} \
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
    /// What changed is found by comparing the two versions' stored definitions, parsed
    /// only for a change small enough to carry to the SDKs.
    pub async fn revert_to(&mut self, n: u64) -> StoreResult<()> {
        if n > self.env.version {
            return Err(StoreError::NotFound(format!(
                "environment \"{}\" has no version {n} (head is {})",
                self.env.key, self.env.version
            )));
        }
        let (v, n, h) = (self.new_version(), to_i64(n), to_i64(self.env.version));
        let target = line_at(&mut self.tx, &self.env.key, n).await?;
        // Both sides are read whole and compared here: two scans whatever the plan,
        // where a comparison in SQL was planned as a nested loop of key lookups (slow
        // on PostgreSQL's collated text keys) or of scans (SQLite, for a join).
        let mut there = self.definitions(target, n, At::Version).await?;
        let mut rows: Vec<(ItemKind, String, Option<String>, Option<String>)> = Vec::new();
        for ((kind, key), before) in self.definitions(self.line, h, At::Head).await? {
            match there.remove(&(kind, key.clone())) {
                Some(after) if after == before => {}
                after => rows.push((kind, key, Some(before), after)),
            }
        }
        rows.extend(
            there
                .into_iter()
                .map(|((kind, key), after)| (kind, key, None, Some(after))),
        );
        if rows.is_empty() {
            return Ok(());
        }
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

        let with_definitions = rows.len() <= 2 * DETAILED_CHANGES;
        let mut size = self.head_size;
        let mut changed: BTreeMap<(ItemKind, String), (Option<Value>, Option<Value>)> =
            BTreeMap::new();
        for (kind, key, before, after) in rows {
            // Kept up to date from the stored definitions' lengths, as the store counts
            // them (`new_head_size`), without parsing 10,000 of them.
            if let Some((flags, bytes)) = &mut size {
                let item = |d: &str| i64::try_from(d.len() + key.len() + 4).unwrap_or(i64::MAX);
                let is_flag = i64::from(kind == ItemKind::Flag);
                if let Some(b) = &before {
                    *bytes -= item(b);
                    *flags -= is_flag;
                }
                if let Some(a) = &after {
                    *bytes += item(a);
                    *flags += is_flag;
                }
            }
            let parse = |d: Option<String>| -> StoreResult<Option<Value>> {
                match d {
                    Some(d) if with_definitions => serde_json::from_str(&d)
                        .map(Some)
                        .map_err(|e| StoreError::Internal(e.into())),
                    _ => Ok(None),
                }
            };
            changed.insert((kind, key), (parse(before)?, parse(after)?));
        }
        self.keys_only |= !with_definitions;
        if !with_definitions {
            self.keys_only_size = size;
        }
        self.changes.extend(
            changed
                .into_iter()
                .map(|((kind, key), (before, after))| (kind, key, before, after)),
        );
        Ok(())
    }

    /// The stored definition of every item at version `v` of `line`.
    async fn definitions(
        &mut self,
        line: Line,
        v: i64,
        at: At,
    ) -> StoreResult<HashMap<(ItemKind, String), String>> {
        let sql = content(line, "r.kind, r.key, r.definition", None, at);
        let rows = query_at(&sql, &self.env.key, line, v)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let kind = parse_kind(&r.try_get::<String, _>("kind")?)?;
            out.insert((kind, r.try_get("key")?), r.try_get("definition")?);
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
            sqlx::query(&format!(
                "{insert} SELECT env, $4, kind, key, $4, {OPEN}, position, definition FROM revisions \
                 WHERE env = $1 AND line = $2 AND valid_to > $3 AND valid_from <= $3"
            ))
            .bind(&self.env.key)
            .bind(target.id)
            .bind(n)
            .bind(v)
            .execute(&mut *self.tx)
            .await?;
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
        query_at(&sql, &self.env.key, target, n)
            .bind(v)
            .execute(&mut *self.tx)
            .await?;
        Ok(Line { id: v, base: None })
    }
}
