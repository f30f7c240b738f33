//! Release plans: a flag ramped by the server, step by step (`crate::plans` runs them).
//! A plan's row says which step was applied last and when the runner acts next; every
//! move of a plan (a step with its version, a pause, a resume, …) is written with an
//! event and an audit entry in one transaction, and a step in the transaction of the
//! version it makes, so that a replica that dies half-way leaves nothing half-done.

use super::*;

/// The states of a plan: `running` and `paused` are active (one per flag at most).
pub const PLAN_STATES: [&str; 5] = ["running", "paused", "completed", "aborted", "rolled-back"];

/// A health gate: a PromQL query whose single value must stay within a threshold.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    /// What it is called in events and messages.
    pub name: String,
    /// The PromQL instant query (one series or a scalar).
    pub query: String,
    /// `<`, `<=`, `>` or `>=`: the value passes when `value comparison threshold`.
    pub comparison: String,
    /// The threshold.
    pub threshold: f64,
}

/// One step of a release plan.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanStep {
    /// The plan's variant's share of the flag's users, 0 to 100 (what `rollout` sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Or the flag's whole definition at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    /// How long the step holds before the next one (`30s`, `10m`), or `approval`: until
    /// someone approves it. None: the next step follows at once (the last step ends the
    /// plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// What a plan does, as it was created.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// The variant whose share the `percent` steps set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
    /// Health gates, checked every `gateInterval` during each hold and before each
    /// step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// How often the gates are checked (`30s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_interval: Option<String>,
    /// What a failed gate does: `revert` (the flag as it was before the plan, the
    /// default) or `disable` (a kill switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

/// A release plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Identifier.
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// The flag it ramps.
    pub flag: String,
    /// `running`, `paused`, `completed` or `aborted`.
    pub state: String,
    /// What it does.
    #[serde(flatten)]
    pub spec: PlanSpec,
    /// The index of the step applied last.
    pub step: u64,
    /// The version that step made (none when it changed nothing).
    pub step_version: Option<u64>,
    /// When the runner acts next (RFC 3339): the end of the current hold.
    pub next_action_at: Option<String>,
    /// The current step waits for an approval.
    pub awaiting_approval: bool,
    /// Why the plan waits although its hold ended (a gate without data), if it does.
    pub held: Option<String>,
    /// What the gates said at their last check.
    pub gate_values: Option<Value>,
    /// When the gates are checked next (RFC 3339).
    pub next_check_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub reason: Option<String>,
    /// When it last moved (RFC 3339).
    pub updated_at: String,
    /// The flag's definition before the plan (what an abort with rollback restores).
    #[serde(skip)]
    pub before: Option<Value>,
    /// `next_at` in ms.
    #[serde(skip)]
    pub next_at: Option<i64>,
    /// What was left of the hold when it was paused (ms; -1: waiting for approval).
    #[serde(skip)]
    pub hold_left_ms: Option<i64>,
    /// `next_check_at` in ms.
    #[serde(skip)]
    pub gate_at: Option<i64>,
}

/// Something that happened to a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEvent {
    /// Its place in the plan's history.
    pub seq: u64,
    /// When (RFC 3339).
    pub at: String,
    /// `created`, `step`, `paused`, `resumed`, `skipped`, `approved`, `completed`,
    /// `aborted`, `failed`.
    pub event: String,
    /// The step it concerns.
    pub step: u64,
    /// The version it made, if any.
    pub version: Option<u64>,
    /// Who or what did it.
    pub actor: String,
    /// Why, or what was seen.
    pub detail: Option<String>,
}

/// How a plan's row changes with a write ([`WriteTx::record_plan`]).
#[derive(Clone, Debug)]
pub struct PlanMove {
    /// The plan.
    pub id: String,
    /// A new plan (inserted); otherwise the row is updated, and only if it is still in
    /// `expect_state` at `expect_step` (a move made on an outdated reading fails with a
    /// conflict, and nothing is written).
    pub create: Option<Box<Plan>>,
    /// The state the row must be in, for an update.
    pub expect_state: String,
    /// The step the row must be at, for an update.
    pub expect_step: u64,
    /// Its state after.
    pub state: String,
    /// Its step after.
    pub step: u64,
    /// When the runner acts next.
    pub next_at: Option<i64>,
    /// What is left of a paused hold.
    pub hold_left_ms: Option<i64>,
    /// When the gates are checked next.
    pub gate_at: Option<i64>,
    /// What the gates said last.
    pub gate_values: Option<Value>,
    /// Why the plan is held.
    pub held: Option<String>,
    /// The move makes the step's version (recorded as `step_version`).
    pub sets_step_version: bool,
    /// The event recorded (with an audit entry); none for a check that changes nothing
    /// but the values seen.
    pub event: Option<String>,
    /// Its detail.
    pub detail: Option<String>,
}

impl PlanMove {
    /// A move of `plan` that, as it stands, leaves the row as it is.
    pub fn of(plan: &Plan) -> Self {
        Self {
            id: plan.id.clone(),
            create: None,
            expect_state: plan.state.clone(),
            expect_step: plan.step,
            state: plan.state.clone(),
            step: plan.step,
            next_at: plan.next_at,
            hold_left_ms: plan.hold_left_ms,
            gate_at: plan.gate_at,
            gate_values: plan.gate_values.clone(),
            held: plan.held.clone(),
            sets_step_version: false,
            event: None,
            detail: None,
        }
    }

    /// With the event `event` and its detail.
    pub fn event(mut self, event: &str, detail: Option<String>) -> Self {
        self.event = Some(event.to_owned());
        self.detail = detail;
        self
    }
}

fn plan_of(r: &AnyRow) -> StoreResult<Plan> {
    let spec: String = r.try_get("spec")?;
    let spec: PlanSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Internal(e.into()))?;
    let before: Option<String> = r.try_get("before_def")?;
    let next_at: Option<i64> = r.try_get("next_at")?;
    let hold_left_ms: Option<i64> = r.try_get("hold_left_ms")?;
    let state: String = r.try_get("state")?;
    let gate_at: Option<i64> = r.try_get("gate_at")?;
    let gate_values: Option<String> = r.try_get("gate_values")?;
    Ok(Plan {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        flag: r.try_get("flag_key")?,
        awaiting_approval: match state.as_str() {
            "running" => next_at.is_none(),
            "paused" => hold_left_ms == Some(-1),
            _ => false,
        },
        state,
        spec,
        step: to_u64(r.try_get("step")?),
        step_version: r.try_get::<Option<i64>, _>("step_version")?.map(to_u64),
        next_action_at: next_at.map(rfc3339),
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        reason: r.try_get("reason")?,
        updated_at: rfc3339(r.try_get("updated_at")?),
        before: before.and_then(|b| serde_json::from_str(&b).ok()),
        next_at,
        hold_left_ms,
        held: r.try_get("held")?,
        gate_values: gate_values.and_then(|g| serde_json::from_str(&g).ok()),
        next_check_at: gate_at.map(rfc3339),
        gate_at,
    })
}

fn event_of(r: &AnyRow) -> StoreResult<PlanEvent> {
    Ok(PlanEvent {
        seq: to_u64(r.try_get("seq")?),
        at: rfc3339(r.try_get("at")?),
        event: r.try_get("event")?,
        step: to_u64(r.try_get("step")?),
        version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
        actor: r.try_get("actor")?,
        detail: r.try_get("detail")?,
    })
}

impl Store {
    /// A plan of an environment.
    pub async fn plan(&self, env: &str, id: &str) -> StoreResult<Option<Plan>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM release_plans WHERE env = $1 AND id = $2")
            .bind(env)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(plan_of).transpose()
    }

    /// An environment's plans, newest first: of one flag, and only the active ones, if
    /// asked.
    pub async fn plans(
        &self,
        env: &str,
        flag: Option<&str>,
        active: bool,
    ) -> StoreResult<Vec<Plan>> {
        let mut conn = self.read().await?;
        let mut sql = String::from("SELECT * FROM release_plans WHERE env = $1");
        if flag.is_some() {
            sql.push_str(" AND flag_key = $2");
        }
        if active {
            sql.push_str(" AND state IN ('running', 'paused')");
        }
        sql.push_str(" ORDER BY created_at DESC, id LIMIT 200");
        let mut q = sqlx::query(&sql).bind(env);
        if let Some(f) = flag {
            q = q.bind(f);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        rows.iter().map(plan_of).collect()
    }

    /// A plan's history, in order.
    pub async fn plan_events(&self, id: &str) -> StoreResult<Vec<PlanEvent>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT * FROM release_plan_events WHERE plan_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(event_of).collect()
    }

    /// The running plans whose next action is due at `now` and that no replica holds:
    /// (environment, id).
    pub async fn due_plans(&self, now: i64) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT env, id FROM release_plans WHERE state = 'running' AND (next_at <= $1 OR gate_at <= $1) AND (lease_until IS NULL OR lease_until < $1) ORDER BY id")
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Claims a due plan for `owner` until `lease_until` (ms): `false` when another
    /// replica holds it or it is no longer due.
    pub async fn claim_plan(&self, id: &str, owner: &str, lease_until: i64) -> StoreResult<bool> {
        self.claim_row(
            "release_plans",
            "state = 'running' AND (next_at <= $4 OR gate_at <= $4)",
            id,
            owner,
            lease_until,
        )
        .await
    }

    /// Gives a claim back (the move it was for wrote nothing).
    pub async fn release_plan(&self, id: &str, owner: &str) -> StoreResult<()> {
        self.release_row("release_plans", id, owner).await
    }

    /// Claims row `id` of `table` (plans, scheduled changes) while it is `due` (`$4` is
    /// now) and no other replica holds it: a conditional UPDATE, so one replica wins.
    pub(super) async fn claim_row(
        &self,
        table: &str,
        due: &str,
        id: &str,
        owner: &str,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let mut conn = self.acquire().await?;
        let n = sqlx::query(&format!("UPDATE {table} SET lease_until = $1, lease_owner = $2 WHERE id = $3 AND {due} AND (lease_until IS NULL OR lease_until < $4)"))
            .bind(lease_until)
            .bind(owner)
            .bind(id)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives back `owner`'s claim of row `id` of `table`.
    pub(super) async fn release_row(&self, table: &str, id: &str, owner: &str) -> StoreResult<()> {
        let mut conn = self.acquire().await?;
        sqlx::query(&format!(
            "UPDATE {table} SET lease_until = NULL, lease_owner = NULL WHERE id = $1 AND lease_owner = $2"
        ))
        .bind(id)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

impl WriteTx<'_> {
    /// A plan of this environment, read under its write lock.
    pub async fn plan(&mut self, id: &str) -> StoreResult<Option<Plan>> {
        let row = sqlx::query("SELECT * FROM release_plans WHERE env = $1 AND id = $2")
            .bind(&self.env.key)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(plan_of).transpose()
    }

    /// The flag's active plan, if it has one.
    pub async fn active_plan(&mut self, flag: &str) -> StoreResult<Option<Plan>> {
        let row = sqlx::query("SELECT * FROM release_plans WHERE env = $1 AND flag_key = $2 AND state IN ('running', 'paused')")
            .bind(&self.env.key)
            .bind(flag)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(plan_of).transpose()
    }

    /// Moves a plan with this change: written with its version if it makes one, alone
    /// otherwise ([`WriteTx::commit`] either way).
    pub fn record_plan(&mut self, m: PlanMove) {
        self.plan = Some(m);
    }

    /// Writes the move of [`WriteTx::record_plan`], its event and audit entry.
    pub(super) async fn write_plan(
        &mut self,
        version: Option<i64>,
        actor: &str,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        let Some(m) = self.plan.take() else {
            return Ok(());
        };
        let now = now_ms();
        let step_version = if m.sets_step_version { version } else { None };
        if let Some(p) = &m.create {
            let spec =
                serde_json::to_string(&p.spec).map_err(|e| StoreError::Internal(e.into()))?;
            sqlx::query("INSERT INTO release_plans (id, env, flag_key, spec, state, step, step_version, before_def, next_at, hold_left_ms, created_at, created_by, reason, updated_at, gate_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $11, $14)")
                .bind(&m.id)
                .bind(&self.env.key)
                .bind(&p.flag)
                .bind(spec)
                .bind(&m.state)
                .bind(to_i64(m.step))
                .bind(step_version)
                .bind(p.before.as_ref().map(Value::to_string))
                .bind(m.next_at)
                .bind(m.hold_left_ms)
                .bind(now)
                .bind(&p.created_by)
                .bind(p.reason.clone())
                .bind(m.gate_at)
                .execute(&mut *self.tx)
                .await?;
        } else {
            let keep_version = if m.sets_step_version {
                "$1"
            } else {
                "step_version"
            };
            let n = sqlx::query(&format!("UPDATE release_plans SET step_version = {keep_version}, state = $2, step = $3, next_at = $4, hold_left_ms = $5, lease_until = NULL, lease_owner = NULL, updated_at = $6, gate_at = $11, gate_values = $12, held = $13 WHERE id = $7 AND env = $8 AND state = $9 AND step = $10"))
                .bind(step_version)
                .bind(&m.state)
                .bind(to_i64(m.step))
                .bind(m.next_at)
                .bind(m.hold_left_ms)
                .bind(now)
                .bind(&m.id)
                .bind(&self.env.key)
                .bind(&m.expect_state)
                .bind(to_i64(m.expect_step))
                .bind(m.gate_at)
                .bind(m.gate_values.as_ref().map(Value::to_string))
                .bind(m.held.clone())
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Err(StoreError::Conflict {
                    message: format!("release plan {} moved meanwhile; nothing was done", m.id),
                    current_version: Some(self.env.version),
                });
            }
        }
        let Some(event) = &m.event else {
            return Ok(());
        };
        let flag: String = sqlx::query("SELECT flag_key FROM release_plans WHERE id = $1")
            .bind(&m.id)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        self.plan_event(&m.id, event, m.step, version, actor, m.detail.as_deref())
            .await?;
        audit(
            &mut self.tx,
            &AuditRecord {
                actor: actor.into(),
                action: format!("plan.{event}"),
                env: Some(self.env.key.clone()),
                target: flag,
                reason: reason.map(clip_reason),
                before: None,
                after: Some(serde_json::json!({"plan": m.id, "state": m.state, "step": m.step, "detail": m.detail, "gates": m.gate_values})),
            },
            version.map(to_u64),
        )
        .await
    }

    async fn plan_event(
        &mut self,
        id: &str,
        event: &str,
        step: u64,
        version: Option<i64>,
        actor: &str,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO release_plan_events (plan_id, seq, at, event, step, version, actor, detail) SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM release_plan_events WHERE plan_id = $1")
            .bind(id)
            .bind(now_ms())
            .bind(event)
            .bind(to_i64(step))
            .bind(version)
            .bind(actor)
            .bind(detail.map(clip_reason))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// A responder's change (a kill switch, a revert, an undo, an alert's action) pauses
    /// the running plans of the flags it changed, in its own transaction: the plan never
    /// overrides it.
    pub(super) async fn pause_plans_of(
        &mut self,
        flags: &[String],
        version: i64,
        actor: &str,
        kind: ChangeKind,
    ) -> StoreResult<()> {
        if !self.running_plans {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT id, flag_key, step, next_at FROM release_plans WHERE env = $1 AND state = 'running'",
        )
        .bind(&self.env.key)
        .fetch_all(&mut *self.tx)
        .await?;
        let now = now_ms();
        for r in rows {
            let flag: String = r.try_get(1)?;
            if flags.binary_search(&flag).is_err() {
                continue;
            }
            let id: String = r.try_get(0)?;
            let step: i64 = r.try_get(2)?;
            let next_at: Option<i64> = r.try_get(3)?;
            let left = next_at.map_or(-1, |n| (n - now).max(0));
            sqlx::query("UPDATE release_plans SET state = 'paused', next_at = NULL, gate_at = NULL, hold_left_ms = $1, lease_until = NULL, lease_owner = NULL, updated_at = $2 WHERE id = $3")
                .bind(left)
                .bind(now)
                .bind(&id)
                .execute(&mut *self.tx)
                .await?;
            let detail = format!(
                "paused by a {} of \"{flag}\" (version {version})",
                kind.as_str()
            );
            self.plan_event(
                &id,
                "paused",
                to_u64(step),
                Some(version),
                actor,
                Some(&detail),
            )
            .await?;
        }
        Ok(())
    }
}
