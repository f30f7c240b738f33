//! Release plans run by the server: a flag ramped step by step (1% → 5% → 25% → 100%),
//! each step an ordinary version of kind `rollout` authored by the plan, with a hold
//! between steps. The API creates a plan with its first step applied and moves it on
//! request (pause, resume, skip, approve, abort); the runner here applies each next
//! step when its hold ends, on exactly one replica (a lease in the store), resuming
//! after a restart where the plan stood. A responder's change of the flag (a kill
//! switch, a revert, an undo, an alert) pauses its plan in the same transaction (the
//! store does it), so a plan never overrides a responder.

use std::sync::Arc;
use std::time::Duration;

use flagd_core::Problem;
use serde_json::{Map, Value};

use crate::store::{
    ChangeKind, Committed, ItemKind, Plan, PlanMove, PlanSpec, Store, StoreError, StoreResult,
    WriteTx, now_ms,
};

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 50;

/// How long a replica holds a plan it acts on; another takes it over after that if the
/// first vanished mid-step (its step, uncommitted, left nothing).
const LEASE: Duration = Duration::from_secs(30);

/// How long a step holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The next step follows at once.
    None,
    /// For this long.
    For(Duration),
    /// Until someone approves the step.
    Approval,
}

/// Reads a step's `hold`: a duration (`30s`, `10m`, `1h 30m`) or `approval`.
pub fn parse_hold(hold: Option<&str>) -> Result<Hold, String> {
    match hold.map(str::trim) {
        None | Some("") => Ok(Hold::None),
        Some("approval") => Ok(Hold::Approval),
        Some(s) => humantime::parse_duration(s).map(Hold::For).map_err(|e| {
            format!("{e}: a hold is a duration such as 30s, 10m or 2h, or \"approval\"")
        }),
    }
}

fn invalid(path: &str, message: impl Into<String>) -> StoreError {
    StoreError::invalid(path, message)
}

/// Checks a plan as given (the flag's current definition for its variant): every
/// problem is named by its JSON path.
pub fn check_spec(spec: &PlanSpec, current: &Value) -> StoreResult<()> {
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(invalid(
            "steps",
            format!(
                "a plan has 1 to {MAX_STEPS} steps, got {}",
                spec.steps.len()
            ),
        ));
    }
    for (i, s) in spec.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        match (&s.percent, &s.definition) {
            (Some(p), None) => {
                if !(0.0..=100.0).contains(p) {
                    return Err(invalid(
                        &format!("{path}.percent"),
                        "must be between 0 and 100",
                    ));
                }
                let Some(variant) = &spec.variant else {
                    return Err(invalid(
                        "variant",
                        "is required: the variant whose share the percent steps set",
                    ));
                };
                let known = current
                    .get("variants")
                    .and_then(Value::as_object)
                    .is_some_and(|v| v.contains_key(variant));
                if !known {
                    return Err(invalid(
                        "variant",
                        format!("the flag has no variant \"{variant}\""),
                    ));
                }
            }
            (None, Some(d)) if d.is_object() => {}
            (None, Some(_)) => {
                return Err(invalid(
                    &format!("{path}.definition"),
                    "must be a flag definition (an object)",
                ));
            }
            _ => {
                return Err(invalid(
                    &path,
                    "needs exactly one of percent (the variant's share) or definition",
                ));
            }
        }
        parse_hold(s.hold.as_deref()).map_err(|e| invalid(&format!("{path}.hold"), e))?;
    }
    Ok(())
}

/// What step `i` of the plan describes, for version reasons and events.
fn describe(spec: &PlanSpec, i: usize) -> String {
    let n = spec.steps.len();
    match (spec.steps.get(i).and_then(|s| s.percent), &spec.variant) {
        (Some(p), Some(v)) => format!("step {} of {n}: {p}% \"{v}\"", i + 1),
        _ => format!("step {} of {n}: a new definition", i + 1),
    }
}

/// The flag's definition at step `i`, from its current one.
fn step_definition(spec: &PlanSpec, i: usize, current: &Value) -> StoreResult<Value> {
    let step = spec
        .steps
        .get(i)
        .ok_or_else(|| invalid("steps", format!("the plan has no step {}", i + 1)))?;
    match (&step.definition, step.percent, &spec.variant) {
        (Some(d), _, _) => Ok(d.clone()),
        (None, Some(p), Some(v)) => flagd_core::document::rollout::set_percent(current, v, p)
            .map_err(|p| StoreError::Invalid {
                message: format!("{}: {}", p.path, p.message),
                details: vec![p],
            }),
        _ => Err(invalid("steps", "a step without percent or definition")),
    }
}

/// When the plan acts after step `i` was applied at `now`: its state, next action
/// time, and `hold_left_ms` for a pause.
fn after_step(spec: &PlanSpec, i: usize, now: i64) -> (&'static str, Option<i64>) {
    let hold = spec
        .steps
        .get(i)
        .map_or(Ok(Hold::None), |s| parse_hold(s.hold.as_deref()))
        .unwrap_or(Hold::None);
    let last = i + 1 >= spec.steps.len();
    match hold {
        Hold::None if last => ("completed", None),
        Hold::None => ("running", Some(now)),
        Hold::For(d) => (
            "running",
            Some(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        ),
        Hold::Approval => ("running", None),
    }
}

/// Puts step `i`'s definition of the plan's flag into `tx`, checked as every write of a
/// flag is.
async fn put_step(tx: &mut WriteTx<'_>, plan: &Plan, i: usize) -> StoreResult<()> {
    let item = tx
        .get(ItemKind::Flag, &plan.flag)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no flag \"{}\"", plan.flag)))?;
    let def = step_definition(&plan.spec, i, &item.definition)?;
    let evaluators: Map<String, Value> = tx
        .evaluators()
        .await?
        .into_values()
        .map(|i| (i.key, i.definition))
        .collect();
    flagd_core::document::validate_flag(&plan.flag, &def, &evaluators).map_err(
        |details: Vec<Problem>| StoreError::Invalid {
            message: format!(
                "flag \"{}\" at {} is not valid: {}",
                plan.flag,
                describe(&plan.spec, i),
                details
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            details,
        },
    )?;
    tx.put(ItemKind::Flag, &plan.flag, Some(def), None).await?;
    Ok(())
}

/// The author of a plan's versions.
pub fn author(id: &str) -> String {
    format!("plan:{id}")
}

/// Creates a plan for a flag and applies its first step, as one version: `tx` was
/// begun on the flag's environment.
pub async fn create(
    mut tx: WriteTx<'_>,
    id: String,
    flag: &str,
    spec: PlanSpec,
    actor: &str,
    reason: Option<&str>,
) -> StoreResult<(Plan, Committed)> {
    let item = tx
        .get(ItemKind::Flag, flag)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no flag \"{flag}\"")))?;
    check_spec(&spec, &item.definition)?;
    if let Some(p) = tx.active_plan(flag).await? {
        return Err(StoreError::Conflict {
            message: format!(
                "flag \"{flag}\" already has an active release plan ({}, {}): abort it first",
                p.id, p.state
            ),
            current_version: None,
        });
    }
    let now = now_ms();
    let (state, next_at) = after_step(&spec, 0, now);
    let plan = Plan {
        id: id.clone(),
        environment: tx.environment().key.clone(),
        flag: flag.to_owned(),
        state: state.to_owned(),
        spec,
        step: 0,
        step_version: None,
        next_action_at: None,
        awaiting_approval: false,
        created_at: String::new(),
        created_by: actor.to_owned(),
        reason: reason.map(str::to_owned),
        updated_at: String::new(),
        before: Some(item.definition.clone()),
        next_at,
        hold_left_ms: None,
    };
    put_step(&mut tx, &plan, 0).await?;
    let step_reason = format!("release plan {id}, {}", describe(&plan.spec, 0));
    tx.record_plan(PlanMove {
        id: id.clone(),
        create: Some(Box::new(plan.clone())),
        expect_state: String::new(),
        expect_step: 0,
        state: state.to_owned(),
        step: 0,
        next_at,
        hold_left_ms: None,
        sets_step_version: true,
        event: "created".into(),
        detail: Some(format!("{} (by {actor})", describe(&plan.spec, 0))),
    });
    let c = tx
        .commit(
            ChangeKind::Rollout,
            actor,
            Some(reason.unwrap_or(&step_reason)),
            "flag.rollout",
            flag,
            None,
        )
        .await?;
    Ok((plan, c))
}

/// What a person may ask of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop acting on it (its hold stops counting).
    Pause,
    /// Act on it again (the rest of its hold, then the next step).
    Resume,
    /// End the current hold now: the next step follows at once.
    Skip,
    /// Approve a step that waits for an approval.
    Approve,
    /// End it; with `rollback`, restore the flag's definition before the plan.
    Abort {
        /// Restore the flag as it was before the plan.
        rollback: bool,
    },
}

impl Action {
    /// The action named in a route (`pause`, `resume`, …).
    pub fn parse(name: &str, rollback: bool) -> Option<Self> {
        Some(match name {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "skip" => Self::Skip,
            "approve" => Self::Approve,
            "abort" => Self::Abort { rollback },
            _ => return None,
        })
    }
}

/// Moves a plan as a person asked; `tx` was begun on its environment. An abort with
/// rollback is a version (kind `revert`); everything else moves the plan alone.
pub async fn act(
    mut tx: WriteTx<'_>,
    id: &str,
    action: Action,
    actor: &str,
    reason: Option<&str>,
) -> StoreResult<(Plan, Committed)> {
    let plan = tx
        .plan(id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no release plan \"{id}\"")))?;
    let now = now_ms();
    let refuse = |why: &str| StoreError::Conflict {
        message: format!("release plan {id} is {}: {why}", plan.state),
        current_version: None,
    };
    let base = PlanMove {
        id: id.to_owned(),
        create: None,
        expect_state: plan.state.clone(),
        expect_step: plan.step,
        state: plan.state.clone(),
        step: plan.step,
        next_at: plan.next_at,
        hold_left_ms: plan.hold_left_ms,
        sets_step_version: false,
        event: String::new(),
        detail: None,
    };
    let mut kind = ChangeKind::Rollout;
    let m = match (action, plan.state.as_str()) {
        (Action::Pause, "running") => PlanMove {
            state: "paused".into(),
            next_at: None,
            hold_left_ms: Some(plan.next_at.map_or(-1, |n| (n - now).max(0))),
            event: "paused".into(),
            ..base
        },
        (Action::Resume, "paused") => PlanMove {
            state: "running".into(),
            next_at: match plan.hold_left_ms {
                Some(-1) => None,
                left => Some(now + left.unwrap_or(0)),
            },
            hold_left_ms: None,
            event: "resumed".into(),
            ..base
        },
        (Action::Skip, "running") => PlanMove {
            next_at: Some(now),
            event: "skipped".into(),
            ..base
        },
        (Action::Approve, "running") if plan.awaiting_approval => PlanMove {
            next_at: Some(now),
            event: "approved".into(),
            ..base
        },
        (Action::Approve, "paused") if plan.awaiting_approval => PlanMove {
            hold_left_ms: Some(0),
            event: "approved".into(),
            ..base
        },
        (Action::Approve, _) => {
            return Err(refuse("its current step does not wait for an approval"));
        }
        (Action::Abort { rollback }, "running" | "paused") => {
            if rollback {
                let before = plan.before.clone();
                tx.put(ItemKind::Flag, &plan.flag, before, None).await?;
                kind = ChangeKind::Revert;
            }
            PlanMove {
                state: "aborted".into(),
                next_at: None,
                hold_left_ms: None,
                sets_step_version: false,
                event: "aborted".into(),
                detail: rollback.then(|| "the flag restored as it was before the plan".into()),
                ..base
            }
        }
        (Action::Pause, _) => return Err(refuse("only a running plan can be paused")),
        (Action::Resume, _) => return Err(refuse("only a paused plan can be resumed")),
        (Action::Skip, _) => return Err(refuse("only a running plan can skip its hold")),
        (Action::Abort { .. }, _) => return Err(refuse("it has ended already")),
    };
    let moved = m;
    let next = Plan {
        state: moved.state.clone(),
        next_at: moved.next_at,
        hold_left_ms: moved.hold_left_ms,
        ..plan.clone()
    };
    tx.record_plan(moved);
    let c = tx
        .commit(
            kind,
            actor,
            reason,
            if kind == ChangeKind::Revert {
                "flag.restore"
            } else {
                "plan.move"
            },
            &plan.flag,
            None,
        )
        .await?;
    Ok((next, c))
}

/// Applies the next step of a due plan (or completes it after its last hold); `tx` was
/// begun on its environment. `Ok(None)` when the plan is no longer due.
async fn advance(mut tx: WriteTx<'_>, id: &str) -> StoreResult<Option<Committed>> {
    let Some(plan) = tx.plan(id).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if plan.state != "running" || plan.next_at.is_none_or(|n| n > now) {
        return Ok(None);
    }
    let i = usize::try_from(plan.step)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let base = PlanMove {
        id: id.to_owned(),
        create: None,
        expect_state: plan.state.clone(),
        expect_step: plan.step,
        state: "completed".into(),
        step: plan.step,
        next_at: None,
        hold_left_ms: None,
        sets_step_version: false,
        event: "completed".into(),
        detail: None,
    };
    let actor = author(id);
    if i >= plan.spec.steps.len() {
        tx.record_plan(base);
        let c = tx
            .commit(
                ChangeKind::Rollout,
                &actor,
                None,
                "plan.move",
                &plan.flag,
                None,
            )
            .await?;
        return Ok(Some(c));
    }
    put_step(&mut tx, &plan, i).await?;
    let (state, next_at) = after_step(&plan.spec, i, now);
    let what = describe(&plan.spec, i);
    tx.record_plan(PlanMove {
        state: state.into(),
        step: u64::try_from(i).unwrap_or(u64::MAX),
        next_at,
        sets_step_version: true,
        event: "step".into(),
        detail: Some(what.clone()),
        ..base
    });
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
    Ok(Some(c))
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
    tx.record_plan(PlanMove {
        id: id.to_owned(),
        create: None,
        expect_state: plan.state.clone(),
        expect_step: plan.step,
        state: "paused".into(),
        step: plan.step,
        next_at: None,
        hold_left_ms: Some(0),
        sets_step_version: false,
        event: "failed".into(),
        detail: Some(why.to_owned()),
    });
    tx.commit(
        ChangeKind::Rollout,
        &author(id),
        None,
        "plan.move",
        &plan.flag,
        None,
    )
    .await?;
    Ok(())
}

/// Moves the due plans every `interval`, claimed one by one so that each step is taken
/// by one replica, until the task is aborted.
pub async fn run(store: Arc<Store>, replica: String, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = once(&store, &replica).await {
            tracing::warn!(error = %e, "release plans: could not read the due plans");
        }
    }
}

/// Moves every due plan once.
pub async fn once(store: &Store, replica: &str) -> StoreResult<usize> {
    let mut moved = 0;
    for (env, id) in store.due_plans(now_ms()).await? {
        let lease = now_ms() + i64::try_from(LEASE.as_millis()).unwrap_or(30_000);
        if !store.claim_plan(&id, replica, lease).await? {
            continue;
        }
        let result = match store.begin_write(&env, None).await {
            Ok(tx) => advance(tx, &id).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(c)) => {
                moved += 1;
                tracing::info!(
                    environment = env,
                    plan = id,
                    version = c.version,
                    "release plan moved"
                );
            }
            Ok(None) => {}
            Err(e @ (StoreError::Invalid { .. } | StoreError::NotFound(_))) => {
                tracing::warn!(environment = env, plan = id, error = %e, "release plan paused: its next step cannot be applied");
                failed(store, &env, &id, &e.to_string()).await?;
            }
            Err(e) => {
                tracing::warn!(environment = env, plan = id, error = %e, "release plan: step not applied; retried");
            }
        }
        store.release_plan(&id, replica).await?;
    }
    Ok(moved)
}
