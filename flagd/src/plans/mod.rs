//! Release plans run by the server: a flag ramped step by step (1% → 5% → 25% → 100%),
//! each step an ordinary version of kind `rollout` authored by the plan, with a hold
//! between steps. The API creates a plan with its first step applied and moves it on
//! request (pause, resume, skip, approve, abort); the runner here applies each next
//! step when its hold ends, on exactly one replica (a lease in the store), resuming
//! after a restart where the plan stood. A responder's change of the flag (a kill
//! switch, a revert, an undo, an alert) pauses its plan in the same transaction (the
//! store does it), so a plan never overrides a responder.

use std::time::Duration;

use flagd_core::Problem;
use serde_json::{Map, Value};

use crate::store::{
    ChangeKind, Committed, ItemKind, Plan, PlanMove, PlanSpec, StoreError, StoreResult, WriteTx,
    now_ms,
};

pub mod gates;
mod runner;
pub mod schedule;

pub use runner::Planner;

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 50;

/// The most health gates a plan may have.
pub const MAX_GATES: usize = 10;

/// How often gates are checked when the plan does not say.
pub const DEFAULT_GATE_INTERVAL: Duration = Duration::from_secs(30);

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
    if spec.gates.len() > MAX_GATES {
        return Err(invalid(
            "gates",
            format!("at most {MAX_GATES} gates, got {}", spec.gates.len()),
        ));
    }
    for (i, g) in spec.gates.iter().enumerate() {
        let path = format!("gates[{i}]");
        if g.name.trim().is_empty() {
            return Err(invalid(&format!("{path}.name"), "is required"));
        }
        if g.query.trim().is_empty() {
            return Err(invalid(
                &format!("{path}.query"),
                "is required: a PromQL query",
            ));
        }
        if !matches!(g.comparison.as_str(), "<" | "<=" | ">" | ">=") {
            return Err(invalid(
                &format!("{path}.comparison"),
                format!("must be <, <=, > or >=, got \"{}\"", g.comparison),
            ));
        }
        if !g.threshold.is_finite() {
            return Err(invalid(&format!("{path}.threshold"), "must be a number"));
        }
    }
    gate_interval(spec).map_err(|e| invalid("gateInterval", e))?;
    match spec.on_failure.as_deref() {
        None | Some("revert" | "disable") => Ok(()),
        Some(other) => Err(invalid(
            "onFailure",
            format!("must be revert or disable, got \"{other}\""),
        )),
    }
}

/// How often the plan's gates are checked.
pub fn gate_interval(spec: &PlanSpec) -> Result<Duration, String> {
    match spec.gate_interval.as_deref() {
        None => Ok(DEFAULT_GATE_INTERVAL),
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) if d >= Duration::from_millis(100) => Ok(d),
            Ok(_) => Err("must be at least 100ms".into()),
            Err(e) => Err(format!("{e}: a duration such as 30s or 1m")),
        },
    }
}

/// `now` plus a duration, in ms.
pub(crate) fn after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What step `i` of the plan describes, for version reasons and events.
pub(crate) fn describe(spec: &PlanSpec, i: usize) -> String {
    let n = spec.steps.len();
    match (spec.steps.get(i).and_then(|s| s.percent), &spec.variant) {
        (Some(p), Some(v)) => format!("step {} of {n}: {p}% \"{v}\"", i + 1),
        _ => format!("step {} of {n}: a new definition", i + 1),
    }
}

/// The flag's definition at step `i`, from its current one.
pub(crate) fn step_definition(spec: &PlanSpec, i: usize, current: &Value) -> StoreResult<Value> {
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
pub(crate) fn after_step(spec: &PlanSpec, i: usize, now: i64) -> (&'static str, Option<i64>) {
    let hold = spec
        .steps
        .get(i)
        .map_or(Ok(Hold::None), |s| parse_hold(s.hold.as_deref()))
        .unwrap_or(Hold::None);
    let last = i + 1 >= spec.steps.len();
    match hold {
        Hold::None if last => ("completed", None),
        Hold::None => ("running", Some(now)),
        Hold::For(d) => ("running", Some(after(now, d))),
        Hold::Approval => ("running", None),
    }
}

/// Puts step `i`'s definition of the plan's flag into `tx`, checked as every write of a
/// flag is.
pub(crate) async fn put_step(tx: &mut WriteTx<'_>, plan: &Plan, i: usize) -> StoreResult<()> {
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
/// begun on the flag's environment. `gates_checked`: flagd has a Prometheus to check
/// gates against.
pub async fn create(
    mut tx: WriteTx<'_>,
    id: String,
    flag: &str,
    spec: PlanSpec,
    gates_checked: bool,
    actor: &str,
    reason: Option<&str>,
) -> StoreResult<(Plan, Committed)> {
    let item = tx
        .get(ItemKind::Flag, flag)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no flag \"{flag}\"")))?;
    check_spec(&spec, &item.definition)?;
    if !spec.gates.is_empty() && !gates_checked {
        return Err(invalid(
            "gates",
            "health gates need a Prometheus: start flagd with --prometheus-url",
        ));
    }
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
    let gate_at = (!spec.gates.is_empty() && state == "running")
        .then(|| gate_interval(&spec).map(|d| after(now, d)).ok())
        .flatten();
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
        held: None,
        gate_values: None,
        next_check_at: None,
        gate_at,
    };
    put_step(&mut tx, &plan, 0).await?;
    let step_reason = format!("release plan {id}, {}", describe(&plan.spec, 0));
    let mut m = PlanMove::of(&plan).event(
        "created",
        Some(format!("{} (by {actor})", describe(&plan.spec, 0))),
    );
    m.create = Some(Box::new(plan.clone()));
    m.sets_step_version = true;
    tx.record_plan(m);
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
    let base = PlanMove::of(&plan);
    let gate_at = (!plan.spec.gates.is_empty()).then_some(now);
    let mut kind = ChangeKind::Rollout;
    let m = match (action, plan.state.as_str()) {
        (Action::Pause, "running") => PlanMove {
            state: "paused".into(),
            next_at: None,
            gate_at: None,
            hold_left_ms: Some(plan.next_at.map_or(-1, |n| (n - now).max(0))),
            ..base
        }
        .event("paused", None),
        (Action::Resume, "paused") => PlanMove {
            state: "running".into(),
            next_at: match plan.hold_left_ms {
                Some(-1) => None,
                left => Some(now + left.unwrap_or(0)),
            },
            gate_at,
            hold_left_ms: None,
            ..base
        }
        .event("resumed", None),
        (Action::Skip, "running") => PlanMove {
            next_at: Some(now),
            ..base
        }
        .event("skipped", None),
        (Action::Approve, "running") if plan.awaiting_approval => PlanMove {
            next_at: Some(now),
            ..base
        }
        .event("approved", None),
        (Action::Approve, "paused") if plan.awaiting_approval => PlanMove {
            hold_left_ms: Some(0),
            ..base
        }
        .event("approved", None),
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
                gate_at: None,
                hold_left_ms: None,
                held: None,
                ..base
            }
            .event(
                "aborted",
                rollback.then(|| "the flag restored as it was before the plan".into()),
            )
        }
        (Action::Pause, _) => return Err(refuse("only a running plan can be paused")),
        (Action::Resume, _) => return Err(refuse("only a paused plan can be resumed")),
        (Action::Skip, _) => return Err(refuse("only a running plan can skip its hold")),
        (Action::Abort { .. }, _) => return Err(refuse("it has ended already")),
    };
    let next = Plan {
        state: m.state.clone(),
        next_at: m.next_at,
        hold_left_ms: m.hold_left_ms,
        ..plan.clone()
    };
    tx.record_plan(m);
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
