//! Scheduled changes: a change applied at a time, against the version it was scheduled
//! on (`crate::plans::schedule` applies them). A schedule is marked applied in the
//! transaction of the version it makes, so a replica that dies half-way leaves it
//! pending, and it is applied once.

use super::*;

/// What a schedule can do.
pub const SCHEDULE_ACTIONS: [&str; 5] = ["disable", "enable", "rollout", "import", "revert"];

/// A scheduled change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Identifier.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// When it is due (RFC 3339).
    pub at: String,
    /// `disable`, `enable`, `rollout`, `import` or `revert`.
    pub action: String,
    /// The flag, for a change of one flag.
    pub flag: Option<String>,
    /// What else the change needs: `variant` and `percent`, `document`, `version`.
    pub params: Value,
    /// The environment's version it was scheduled on.
    pub based_on: u64,
    /// For a change of one flag: the version that last changed the flag then.
    pub flag_version: Option<u64>,
    /// `pending`, `applied`, `failed` or `cancelled`.
    pub state: String,
    /// The version it made.
    pub version: Option<u64>,
    /// Why it failed, or what it did.
    pub detail: Option<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Who made it: the author of its version.
    pub created_by: String,
    /// Why.
    pub reason: Option<String>,
    /// When it was applied, failed or was cancelled.
    pub finished_at: Option<String>,
    /// `at` in ms.
    #[serde(skip)]
    pub due_at: i64,
}

fn schedule_of(r: &AnyRow) -> StoreResult<Schedule> {
    let params: String = r.try_get("params")?;
    let due_at: i64 = r.try_get("due_at")?;
    Ok(Schedule {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        at: rfc3339(due_at),
        action: r.try_get("action")?,
        flag: r.try_get("flag_key")?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Internal(e.into()))?,
        based_on: to_u64(r.try_get("based_on")?),
        flag_version: r.try_get::<Option<i64>, _>("flag_version")?.map(to_u64),
        state: r.try_get("state")?,
        version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
        detail: r.try_get("detail")?,
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        reason: r.try_get("reason")?,
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339),
        due_at,
    })
}

impl Store {
    /// A scheduled change of an environment.
    pub async fn schedule(&self, env: &str, id: &str) -> StoreResult<Option<Schedule>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM scheduled_changes WHERE env = $1 AND id = $2")
            .bind(env)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(schedule_of).transpose()
    }

    /// An environment's scheduled changes, the soonest first; only the pending ones if
    /// asked.
    pub async fn schedules(&self, env: &str, pending: bool) -> StoreResult<Vec<Schedule>> {
        let mut conn = self.read().await?;
        let sql = if pending {
            "SELECT * FROM scheduled_changes WHERE env = $1 AND state = 'pending' ORDER BY due_at, id LIMIT 500"
        } else {
            "SELECT * FROM scheduled_changes WHERE env = $1 ORDER BY due_at DESC, id LIMIT 500"
        };
        let rows = sqlx::query(sql).bind(env).fetch_all(&mut *conn).await?;
        rows.iter().map(schedule_of).collect()
    }

    /// The pending changes due at `now` that no replica holds: (environment, id).
    pub async fn due_schedules(&self, now: i64) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT env, id FROM scheduled_changes WHERE state = 'pending' AND due_at <= $1 AND (lease_until IS NULL OR lease_until < $1) ORDER BY due_at, id")
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Claims a due change for `owner` until `lease_until` (ms): `false` when another
    /// replica holds it or it is no longer pending.
    pub async fn claim_schedule(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<bool> {
        self.claim_row(
            "scheduled_changes",
            "state = 'pending' AND due_at <= $4",
            id,
            owner,
            lease_until,
        )
        .await
    }

    /// Gives a claim back.
    pub async fn release_schedule(&self, id: &str, owner: &str) -> StoreResult<()> {
        self.release_row("scheduled_changes", id, owner).await
    }

    /// Ends a pending change without applying it: `failed` (with why) or `cancelled`
    /// (by `actor`). `false` when it was no longer pending.
    pub async fn finish_schedule(
        &self,
        env: &str,
        id: &str,
        state: &str,
        detail: &str,
        actor: &str,
    ) -> StoreResult<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let n = sqlx::query("UPDATE scheduled_changes SET state = $1, detail = $2, finished_at = $3, lease_until = NULL, lease_owner = NULL WHERE env = $4 AND id = $5 AND state = 'pending'")
            .bind(state)
            .bind(detail)
            .bind(now_ms())
            .bind(env)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            audit(
                &mut tx,
                &AuditRecord {
                    actor: actor.into(),
                    action: format!("schedule.{state}"),
                    env: Some(env.to_owned()),
                    target: id.to_owned(),
                    reason: Some(clip_reason(detail)),
                    before: None,
                    after: None,
                },
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }
}

impl WriteTx<'_> {
    /// A pending scheduled change of this environment, read under its write lock.
    pub async fn pending_schedule(&mut self, id: &str) -> StoreResult<Option<Schedule>> {
        let row = sqlx::query(
            "SELECT * FROM scheduled_changes WHERE env = $1 AND id = $2 AND state = 'pending'",
        )
        .bind(&self.env.key)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(schedule_of).transpose()
    }

    /// Records a new scheduled change (with its audit entry) in this transaction:
    /// nothing else is written, and [`WriteTx::finish`] commits it.
    pub async fn insert_schedule(&mut self, s: &Schedule, actor: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO scheduled_changes (id, env, due_at, action, flag_key, params, based_on, flag_version, state, created_at, created_by, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11)")
            .bind(&s.id)
            .bind(&self.env.key)
            .bind(s.due_at)
            .bind(&s.action)
            .bind(s.flag.clone())
            .bind(s.params.to_string())
            .bind(to_i64(s.based_on))
            .bind(s.flag_version.map(to_i64))
            .bind(now_ms())
            .bind(&s.created_by)
            .bind(s.reason.clone())
            .execute(&mut *self.tx)
            .await?;
        audit(
            &mut self.tx,
            &AuditRecord {
                actor: actor.into(),
                action: "schedule.created".into(),
                env: Some(self.env.key.clone()),
                target: s.flag.clone().unwrap_or_else(|| self.env.key.clone()),
                reason: s.reason.as_deref().map(clip_reason),
                before: None,
                after: Some(serde_json::json!({"schedule": s.id, "at": s.at, "action": s.action, "params": s.params, "basedOn": s.based_on})),
            },
            None,
        )
        .await
    }

    /// Marks a scheduled change applied by this change, in its transaction.
    pub fn record_schedule(&mut self, id: &str) {
        self.schedule = Some(id.to_owned());
    }

    /// Commits what was written besides a version (a new schedule).
    pub async fn finish(mut self) -> StoreResult<()> {
        if self.env.protected && self.request.is_none() {
            return Err(self.approval_required("a scheduled change"));
        }
        self.write_approval(None, None).await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Writes the mark of [`WriteTx::record_schedule`].
    pub(super) async fn write_schedule(&mut self, version: Option<i64>) -> StoreResult<()> {
        let Some(id) = self.schedule.take() else {
            return Ok(());
        };
        let detail = match version {
            Some(v) => format!("applied as version {v}"),
            None => "applied: it changed nothing (already so)".to_owned(),
        };
        let n = sqlx::query("UPDATE scheduled_changes SET state = 'applied', version = $1, detail = $2, finished_at = $3, lease_until = NULL, lease_owner = NULL WHERE env = $4 AND id = $5 AND state = 'pending'")
            .bind(version)
            .bind(detail)
            .bind(now_ms())
            .bind(&self.env.key)
            .bind(&id)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict {
                message: format!("scheduled change {id} is no longer pending"),
                current_version: Some(self.env.version),
            });
        }
        Ok(())
    }
}
