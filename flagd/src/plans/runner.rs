//! The runner: every replica looks for due plans every interval; the one that claims a
//! plan (a lease in the store) checks its gates, then applies its next step, holds it,
//! or rolls it back, in one transaction with the plan's move.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::gates::{Prometheus, Verdict};
use super::{after, after_step, author, describe, gate_interval, put_step};
use crate::notify::Notifier;
use crate::store::{
    ChangeKind, Committed, ItemKind, Plan, PlanMove, Store, StoreError, StoreResult, WriteTx,
    now_ms,
};

/// How long a replica holds a plan it acts on; another takes it over after that if the
/// first vanished mid-step (its step, uncommitted, left nothing).
const LEASE: Duration = Duration::from_secs(30);

/// What the gates said before a move: the verdict and the values seen.
type Check = Option<(Verdict, Value)>;

/// Runs the release plans of one flagd.
#[derive(Debug)]
pub struct Planner {
    store: Arc<Store>,
    notifier: Arc<Notifier>,
    prometheus: Option<Prometheus>,
    replica: String,
    interval: Duration,
}

/// What a move asks to announce: (title, text).
type Announce = Option<(String, String)>;

impl Planner {
    /// A runner for `replica`, looking every `interval`; gates are checked against the
    /// Prometheus at `prometheus_url`.
    pub fn new(
        store: Arc<Store>,
        notifier: Arc<Notifier>,
        prometheus_url: Option<&str>,
        replica: String,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            notifier,
            prometheus: prometheus_url.map(Prometheus::new).transpose()?,
            replica,
            interval,
        })
    }

    /// Whether gates can be checked (a Prometheus is configured).
    pub fn checks_gates(&self) -> bool {
        self.prometheus.is_some()
    }

    /// Moves the due plans every interval until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.once().await {
                tracing::warn!(error = %e, "release plans: could not read the due plans");
            }
        }
    }

    /// Moves every due plan once; returns how many moved.
    pub async fn once(&self) -> StoreResult<usize> {
        let mut moved = 0;
        for (env, id) in self.store.due_plans(now_ms()).await? {
            let lease = after(now_ms(), LEASE);
            if !self.store.claim_plan(&id, &self.replica, lease).await? {
                continue;
            }
            if self.move_plan(&env, &id).await {
                moved += 1;
            }
            self.store.release_plan(&id, &self.replica).await?;
        }
        for (env, id) in self.store.due_schedules(now_ms()).await? {
            let lease = after(now_ms(), LEASE);
            if !self.store.claim_schedule(&id, &self.replica, lease).await? {
                continue;
            }
            if self.apply_schedule(&env, &id).await {
                moved += 1;
            }
            self.store.release_schedule(&id, &self.replica).await?;
        }
        Ok(moved)
    }

    /// Applies one claimed scheduled change, or marks it failed and says why; whether
    /// it ended.
    async fn apply_schedule(&self, env: &str, id: &str) -> bool {
        let result = match self.store.begin_write(env, None).await {
            Ok(tx) => super::schedule::apply(tx, id).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(c)) => {
                tracing::info!(
                    environment = env,
                    schedule = id,
                    version = c.version,
                    "scheduled change applied"
                );
                true
            }
            Ok(None) => false,
            Err(
                e @ (StoreError::Conflict { .. }
                | StoreError::Invalid { .. }
                | StoreError::NotFound(_)),
            ) => {
                let why = e.to_string();
                tracing::warn!(
                    environment = env,
                    schedule = id,
                    error = why,
                    "scheduled change failed"
                );
                let actor = format!("schedule:{id}");
                match self
                    .store
                    .finish_schedule(env, id, "failed", &why, &actor)
                    .await
                {
                    Ok(true) => {
                        let title = format!("scheduled change {id} failed");
                        if let Err(e) = self
                            .notifier
                            .announce("plan", env, &title, &why, None)
                            .await
                        {
                            tracing::warn!(environment = env, schedule = id, error = %e, "cannot queue the notification of a failed scheduled change");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(environment = env, schedule = id, error = %e, "scheduled change: cannot record the failure");
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(environment = env, schedule = id, error = %e, "scheduled change not applied; retried");
                false
            }
        }
    }

    /// Checks and moves one claimed plan; whether it moved.
    async fn move_plan(&self, env: &str, id: &str) -> bool {
        let check = match self.store.plan(env, id).await {
            Ok(Some(p)) if !p.spec.gates.is_empty() => Some(match &self.prometheus {
                Some(prom) => prom.check(&p.spec.gates).await,
                None => (
                    Verdict::NoData("flagd was started without --prometheus-url".into()),
                    Value::Array(Vec::new()),
                ),
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(environment = env, plan = id, error = %e, "release plan not read");
                return false;
            }
        };
        let result = match self.store.begin_write(env, None).await {
            Ok(tx) => advance(tx, id, check).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Some((c, announce))) => {
                if let Some((title, text)) = announce
                    && let Err(e) = self
                        .notifier
                        .announce("plan", env, &title, &text, None)
                        .await
                {
                    tracing::warn!(environment = env, plan = id, error = %e, "cannot queue the notification of a release plan");
                }
                tracing::info!(
                    environment = env,
                    plan = id,
                    version = c.version,
                    "release plan moved"
                );
                true
            }
            Ok(None) => false,
            Err(e @ (StoreError::Invalid { .. } | StoreError::NotFound(_))) => {
                tracing::warn!(environment = env, plan = id, error = %e, "release plan paused: its next step cannot be applied");
                let why = e.to_string();
                if let Err(e) = failed(&self.store, env, id, &why).await {
                    tracing::warn!(environment = env, plan = id, error = %e, "release plan: cannot record the failure");
                }
                let title = format!("release plan {id} paused");
                let _ = self
                    .notifier
                    .announce("plan", env, &title, &why, None)
                    .await;
                true
            }
            Err(e) => {
                tracing::warn!(environment = env, plan = id, error = %e, "release plan: not moved; retried");
                false
            }
        }
    }
}

/// Moves a due plan after its gates said `check`; `tx` was begun on its environment.
/// `Ok(None)` when the plan is no longer due.
async fn advance(
    mut tx: WriteTx<'_>,
    id: &str,
    check: Check,
) -> StoreResult<Option<(Committed, Announce)>> {
    let Some(plan) = tx.plan(id).await? else {
        return Ok(None);
    };
    let now = now_ms();
    let step_due = plan.next_at.is_some_and(|n| n <= now);
    let check_due = plan.gate_at.is_some_and(|n| n <= now);
    if plan.state != "running" || !(step_due || check_due) {
        return Ok(None);
    }
    let actor = author(id);
    let interval = gate_interval(&plan.spec).unwrap_or(super::DEFAULT_GATE_INTERVAL);
    let mut m = PlanMove::of(&plan);
    let mut announce = None;
    if let Some((verdict, values)) = check {
        m.gate_at = Some(after(now, interval));
        m.gate_values = Some(values);
        match verdict {
            Verdict::Fail(why) => return roll_back(tx, &plan, m, &why).await.map(Some),
            Verdict::NoData(why) => {
                if step_due {
                    // The step waits for the gates to answer.
                    m.next_at = Some(after(now, interval));
                }
                if plan.held.is_none() {
                    m.held = Some(why.clone());
                    m = m.event("held", Some(why.clone()));
                    announce = Some((format!("release plan {id} of \"{}\" held", plan.flag), why));
                }
                let c = moved_alone(tx, m, &actor, &plan.flag).await?;
                return Ok(Some((c, announce)));
            }
            Verdict::Pass => {
                if plan.held.is_some() {
                    m.held = None;
                    m = m.event("released", Some("every gate answers and passes".into()));
                }
                if !step_due {
                    let c = moved_alone(tx, m, &actor, &plan.flag).await?;
                    return Ok(Some((c, None)));
                }
            }
        }
    }
    let i = usize::try_from(plan.step)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if i >= plan.spec.steps.len() {
        m.state = "completed".into();
        m.next_at = None;
        m.gate_at = None;
        let c = moved_alone(tx, m.event("completed", None), &actor, &plan.flag).await?;
        return Ok(Some((c, None)));
    }
    put_step(&mut tx, &plan, i).await?;
    let (state, next_at) = after_step(&plan.spec, i, now);
    let what = describe(&plan.spec, i);
    m.state = state.into();
    m.step = u64::try_from(i).unwrap_or(u64::MAX);
    m.next_at = next_at;
    if state != "running" {
        m.gate_at = None;
    }
    m.sets_step_version = true;
    let detail = match &m.gate_values {
        Some(v) => format!("{what}; gates: {v}"),
        None => what.clone(),
    };
    tx.record_plan(m.event("step", Some(detail)));
    let reason = format!("release plan {id}, {what}");
    let c = tx
        .commit(
            ChangeKind::Rollout,
            &actor,
            Some(&reason),
            "flag.rollout",
            &plan.flag,
            None,
        )
        .await?;
    Ok(Some((c, None)))
}

/// Writes a plan's move that changes no flag (a hold, a check, a completion, a
/// failure): no version, only the plan's row, its event and audit entry.
async fn moved_alone(
    mut tx: WriteTx<'_>,
    m: PlanMove,
    actor: &str,
    flag: &str,
) -> StoreResult<Committed> {
    tx.record_plan(m);
    tx.commit(ChangeKind::Rollout, actor, None, "plan.move", flag, None)
        .await
}

/// A gate failed: the flag goes back as the plan says (its definition before the plan,
/// or a kill switch), and the plan ends `rolled-back`, the values seen with it.
async fn roll_back(
    mut tx: WriteTx<'_>,
    plan: &Plan,
    mut m: PlanMove,
    why: &str,
) -> StoreResult<(Committed, Announce)> {
    let disable = plan.spec.on_failure.as_deref() == Some("disable");
    let (kind, action) = if disable {
        let current = tx.get(ItemKind::Flag, &plan.flag).await?;
        let mut def = current
            .map(|i| i.definition)
            .ok_or_else(|| StoreError::NotFound(format!("no flag \"{}\"", plan.flag)))?;
        if let Some(o) = def.as_object_mut() {
            o.insert("state".into(), Value::String("DISABLED".into()));
        }
        tx.put(ItemKind::Flag, &plan.flag, Some(def), None).await?;
        (ChangeKind::AutoDisable, "flag.disable")
    } else {
        tx.put(ItemKind::Flag, &plan.flag, plan.before.clone(), None)
            .await?;
        (ChangeKind::Revert, "flag.restore")
    };
    m.state = "rolled-back".into();
    m.next_at = None;
    m.gate_at = None;
    m.held = None;
    let done = if disable {
        "the flag disabled"
    } else {
        "the flag restored as it was before the plan"
    };
    let detail = format!("{why}: {done}");
    tx.record_plan(m.event("rolled-back", Some(detail.clone())));
    let reason = format!("release plan {} rolled back: {why}", plan.id);
    let c = tx
        .commit(
            kind,
            &author(&plan.id),
            Some(&reason),
            action,
            &plan.flag,
            None,
        )
        .await?;
    let title = format!("release plan {} of \"{}\" rolled back", plan.id, plan.flag);
    Ok((c, Some((title, detail))))
}

/// Records that a plan could not take its next step (the flag was deleted, the step no
/// longer fits it): the plan pauses, with why, for a person to look at.
async fn failed(store: &Store, env: &str, id: &str, why: &str) -> StoreResult<()> {
    let mut tx = store.begin_write(env, None).await?;
    let Some(plan) = tx.plan(id).await? else {
        return Ok(());
    };
    if plan.state != "running" {
        return Ok(());
    }
    let m = PlanMove {
        state: "paused".into(),
        next_at: None,
        gate_at: None,
        hold_left_ms: Some(0),
        ..PlanMove::of(&plan)
    };
    let flag = plan.flag.clone();
    moved_alone(
        tx,
        m.event("failed", Some(why.to_owned())),
        &author(id),
        &flag,
    )
    .await?;
    Ok(())
}
