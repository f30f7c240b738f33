//! Environments and their history: versions, the items of a version, the audit log.

use super::*;

impl Store {
    /// All environments.
    pub async fn environments(&self) -> StoreResult<Vec<Environment>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT * FROM environments ORDER BY seq")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(env_of).collect()
    }

    /// One environment, or 404.
    pub async fn environment(&self, key: &str) -> StoreResult<Environment> {
        let _timed = self.timed("read_environment");
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM environments WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => env_of(&r),
            None => Err(StoreError::NotFound(format!("no environment \"{key}\""))),
        }
    }

    /// Creates an environment (empty flag set, version 0).
    pub async fn create_environment(
        &self,
        actor: &str,
        key: &str,
        name: &str,
        production: bool,
    ) -> StoreResult<Environment> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let exists = sqlx::query("SELECT key FROM environments WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict {
                message: format!("environment \"{key}\" exists already"),
                current_version: None,
            });
        }
        sqlx::query("INSERT INTO environments (key, name, production, head_version, next_position, created_at, seq) \
             VALUES ($1, $2, $3, 0, 1, $4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM environments))")
            .bind(key)
            .bind(name)
            .bind(i64::from(production))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        let env = env_of(
            &sqlx::query("SELECT * FROM environments WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "environment.create".into(),
                env: Some(key.into()),
                target: key.into(),
                reason: None,
                before: None,
                after: Some(
                    serde_json::to_value(&env).map_err(|e| StoreError::Internal(e.into()))?,
                ),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Deletes an environment: refused while it has flags unless `force`.
    pub async fn delete_environment(
        &self,
        actor: &str,
        key: &str,
        force: bool,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let env = lock_env(&mut tx, self.backend, key).await?;
        let head = to_i64(env.version);
        let line = line_at(&mut tx, key, head).await?;
        let flags = count_at(
            &mut tx,
            key,
            (line, head, At::Head),
            Some("r.kind = 'flag'"),
        )
        .await?;
        if flags > 0 && !force {
            return Err(StoreError::Conflict {
                message: format!(
                    "environment \"{key}\" has {flags} flags; delete them first or pass force=true"
                ),
                current_version: Some(env.version),
            });
        }
        for table in [
            "version_flags",
            "versions",
            "revisions",
            "lines",
            "alert_episodes",
            "alert_policies",
            "triggers",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE env = $1"))
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM environments WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "environment.delete".into(),
                env: Some(key.into()),
                target: key.into(),
                reason: reason.map(Into::into),
                before: Some(serde_json::json!({"environment": env, "flags": flags})),
                after: None,
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The items of an environment's flag set at a version (head when `None`), with the
    /// version read.
    pub async fn items(&self, env: &str, version: Option<u64>) -> StoreResult<(u64, Items)> {
        let _timed = self.timed("read_flag_set");
        let e = self.environment(env).await?;
        let v = match version {
            None => e.version,
            Some(v) if v > e.version => {
                return Err(StoreError::NotFound(format!(
                    "environment \"{env}\" has no version {v} (head is {})",
                    e.version
                )));
            }
            Some(v) => v,
        };
        let mut conn = self.read().await?;
        let items = read_items(&mut conn, env, v).await?;
        Ok((v, items))
    }

    /// Versions of an environment, newest first.
    pub async fn versions(
        &self,
        env: &str,
        flag: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<VersionInfo>> {
        self.environment(env).await?;
        let before = before.map_or(i64::MAX, to_i64);
        let mut conn = self.read().await?;
        let rows = match flag {
            None => {
                sqlx::query("SELECT * FROM versions WHERE env = $1 AND version < $2 ORDER BY version DESC LIMIT $3")
                    .bind(env)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some(f) => {
                sqlx::query(
                    "SELECT v.* FROM versions v JOIN version_flags f ON f.env = v.env AND f.version = v.version \
                     WHERE v.env = $1 AND f.flag_key = $2 AND v.version < $3 ORDER BY v.version DESC LIMIT $4",
                )
                .bind(env)
                .bind(f)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?
            }
        };
        rows.iter().map(version_of).collect()
    }

    /// One version's record.
    pub async fn version(&self, env: &str, version: u64) -> StoreResult<VersionInfo> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM versions WHERE env = $1 AND version = $2")
            .bind(env)
            .bind(to_i64(version))
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => version_of(&r),
            None => Err(StoreError::NotFound(format!(
                "environment \"{env}\" has no version {version}"
            ))),
        }
    }

    /// The store's random identity, made when it was created: SDKs holding a flag set
    /// from another store (a new database, another cluster) are sent a full snapshot.
    pub async fn identity(&self) -> StoreResult<String> {
        self.identity
            .get_or_try_init(|| async {
                let mut conn = self.read().await?;
                let row = sqlx::query("SELECT id FROM store_identity")
                    .fetch_optional(&mut *conn)
                    .await?;
                match row {
                    Some(r) => Ok(r.try_get::<String, _>("id")?),
                    None => Err(StoreError::Internal(anyhow::anyhow!(
                        "the store has no identity (store_identity is empty)"
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// When a version was committed (ms), if the store has it: with the identity, this
    /// tells a version apart from another of the same number in a restored backup.
    pub async fn version_at(&self, env: &str, version: u64) -> StoreResult<Option<i64>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT created_at FROM versions WHERE env = $1 AND version = $2")
            .bind(env)
            .bind(to_i64(version))
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("created_at")?),
            None => None,
        })
    }

    /// Starts a change of an environment's flag set. `if_match` is the version the caller
    /// based its change on: a stale one is refused with 409.
    pub async fn begin_write(&self, env: &str, if_match: Option<u64>) -> StoreResult<WriteTx<'_>> {
        let started = std::time::Instant::now();
        let guard = self.write_lock.lock().await;
        // One read of the locked row gives the version, the next write's bookkeeping,
        // the head's line and whether a plan may need pausing (on SQLite with the BEGIN).
        let sql = match self.backend {
            Backend::Postgres => format!("{WRITE_LOCK_SQL} FOR UPDATE OF e"),
            Backend::Sqlite => WRITE_LOCK_SQL.to_owned(),
        };
        let (tx, row) = self.begin_tx_reading(&sql, env).await?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("no environment \"{env}\"")))?;
        let e = env_of(&row)?;
        if let Some(base) = if_match
            && base != e.version
        {
            return Err(StoreError::Conflict {
                message: format!(
                    "the change is based on version {base}, but \"{env}\" is at version {}",
                    e.version
                ),
                current_version: Some(e.version),
            });
        }
        let next_position: i64 = row.try_get("next_position")?;
        let head_size = match (
            row.try_get::<Option<i64>, _>("head_flags")?,
            row.try_get::<Option<i64>, _>("head_bytes")?,
        ) {
            (Some(f), Some(b)) => Some((f, b)),
            _ => None,
        };
        let line = line_of(&row, ["line_id", "line_base_line", "line_base"])?;
        let running_plans = row.try_get::<i64, _>("running_plans")? != 0;
        Ok(WriteTx {
            _guard: guard,
            started,
            observer: self.options.observer.clone(),
            listener: self.options.listener.clone(),
            tx,
            env: e,
            next_position,
            head_size,
            backend: self.backend,
            changes: Vec::new(),
            line,
            keys_only_size: None,
            keys_only: false,
            alert: None,
            plan: None,
            schedule: None,
            request: None,
            undoes: None,
            running_plans,
            statistics: self.statistics.clone(),
            rows_written: 0,
        })
    }

    /// Audit entries, newest first.
    pub async fn audit_log(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut sql = String::from("SELECT * FROM audit WHERE id < $1");
        let mut n = 1;
        let mut arg = |sql: &mut String, cond: &str| {
            n += 1;
            sql.push_str(&cond.replace('?', &format!("${n}")));
        };
        if q.env.is_some() {
            arg(&mut sql, " AND env = ?");
        }
        if q.flag.is_some() {
            // A flag's own entries, and every import or revert whose version changed it
            // (version_flags is written in the same transaction as the version).
            arg(
                &mut sql,
                " AND ((target = ? AND action LIKE 'flag.%') OR (action LIKE 'flagset.%' \
                 AND version IS NOT NULL AND EXISTS (SELECT 1 FROM version_flags vf \
                 WHERE vf.env = audit.env AND vf.version = audit.version AND vf.flag_key = ?)))",
            );
        }
        if q.actor.is_some() {
            arg(&mut sql, " AND actor = ?");
        }
        let action = q.action.as_ref().map(|a| match a.strip_suffix('.') {
            // LIKE with the pattern's own wildcards escaped.
            Some(prefix) => (
                true,
                format!(
                    "{}.%",
                    prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                ),
            ),
            None => (false, a.clone()),
        });
        match &action {
            Some((true, _)) => arg(&mut sql, " AND action LIKE ? ESCAPE '\\'"),
            Some((false, _)) => arg(&mut sql, " AND action = ?"),
            None => {}
        }
        if q.since.is_some() {
            arg(&mut sql, " AND at >= ?");
        }
        if q.until.is_some() {
            arg(&mut sql, " AND at < ?");
        }
        if let Some(envs) = &q.allowed_envs {
            // Environment-limited tokens see their environments' entries only.
            let list = envs
                .iter()
                .map(|e| format!("'{}'", e.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            if list.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                sql.push_str(&format!(" AND env IN ({list})"));
            }
        }
        arg(&mut sql, " ORDER BY id DESC LIMIT ?");
        let mut query = sqlx::query(&sql).bind(q.before_id.unwrap_or(i64::MAX));
        for v in [&q.env, &q.flag, &q.actor].into_iter().flatten() {
            query = query.bind(v.clone());
        }
        if let Some((_, a)) = action {
            query = query.bind(a);
        }
        for v in [q.since, q.until].into_iter().flatten() {
            query = query.bind(v);
        }
        let mut conn = self.read().await?;
        let rows = query.bind(i64::from(q.limit)).fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|r| {
                let json = |c: &str| -> StoreResult<Option<Value>> {
                    let s: Option<String> = r.try_get(c)?;
                    s.map(|s| serde_json::from_str(&s))
                        .transpose()
                        .map_err(|e| StoreError::Internal(e.into()))
                };
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: rfc3339(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    environment: r.try_get("env")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    before: json("before")?,
                    after: json("after")?,
                    version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
                })
            })
            .collect()
    }
}

pub(super) async fn lock_env(tx: &mut Tx, backend: Backend, env: &str) -> StoreResult<Environment> {
    env_of(&lock_env_row(tx, backend, env).await?)
}

/// What a write reads first: the environment's row (locked for the rest of the
/// transaction on PostgreSQL with `FOR UPDATE OF e`), the line of its head version as
/// [`line_at`] finds it, and whether any of its release plans is running.
const WRITE_LOCK_SQL: &str = "SELECT e.*, l.line AS line_id, l.base_line AS line_base_line, \
     l.base AS line_base, CAST(CASE WHEN EXISTS (SELECT 1 FROM release_plans p \
     WHERE p.env = e.key AND p.state = 'running') THEN 1 ELSE 0 END AS BIGINT) AS running_plans \
     FROM environments e LEFT JOIN lines l ON l.env = e.key AND l.line = \
     (SELECT MAX(m.line) FROM lines m WHERE m.env = e.key AND m.line <= e.head_version) \
     WHERE e.key = $1";

/// The environment's whole row, locked for the rest of the transaction.
async fn lock_env_row(tx: &mut Tx, backend: Backend, env: &str) -> StoreResult<AnyRow> {
    // PostgreSQL: the row lock makes writers of several replicas take turns. SQLite has
    // one writer at a time anyway.
    let sql = match backend {
        Backend::Postgres => "SELECT * FROM environments WHERE key = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT * FROM environments WHERE key = $1",
    };
    match sqlx::query(sql).bind(env).fetch_optional(&mut **tx).await? {
        Some(r) => Ok(r),
        None => Err(StoreError::NotFound(format!("no environment \"{env}\""))),
    }
}
