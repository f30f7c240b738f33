-- Release plans: a flag ramped by the server, step by step, each step an ordinary
-- version (kind `rollout`, authored by the plan). `spec` holds the steps as created;
-- `step` is the index of the step last applied. The runner acts on a plan when
-- `next_at` has passed, after claiming it (`lease_until` in the future, set by a
-- conditional UPDATE) so that one replica acts; the step's version and the plan's move
-- to the next step are written in one transaction. A plan with health gates is also
-- acted on at `gate_at` (its next check); `gate_values` are the values last seen and
-- `held` why the plan waits (a gate without data). At most one plan is active (running
-- or paused) per flag.
CREATE TABLE release_plans (
    id            TEXT   PRIMARY KEY,
    env           TEXT   NOT NULL,
    flag_key      TEXT   NOT NULL,
    spec          TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    step          BIGINT NOT NULL,
    step_version  BIGINT,
    before_def    TEXT,
    next_at       BIGINT,
    hold_left_ms  BIGINT,
    gate_at       BIGINT,
    gate_values   TEXT,
    held          TEXT,
    lease_until   BIGINT,
    lease_owner   TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    reason        TEXT,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX release_plans_one_active ON release_plans (env, flag_key)
    WHERE state IN ('running', 'paused');
CREATE INDEX release_plans_due ON release_plans (state, next_at);
CREATE INDEX release_plans_gates_due ON release_plans (state, gate_at);
-- What happened to a plan, in order: each step applied (with its version), each pause,
-- resume, skip, approval and abort, and who or what did it.
CREATE TABLE release_plan_events (
    plan_id  TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    event    TEXT   NOT NULL,
    step     BIGINT NOT NULL,
    version  BIGINT,
    actor    TEXT   NOT NULL,
    detail   TEXT,
    PRIMARY KEY (plan_id, seq)
);
-- Scheduled changes: a kill switch, enable, rollout, import or revert applied at
-- `due_at`, against the version it was scheduled on (`based_on`; for a change of one
-- flag, that flag's last change `flag_version`): if that moved, it fails visibly. Claimed
-- like a plan (`lease_until`), applied once, marked in the transaction of its version.
CREATE TABLE scheduled_changes (
    id            TEXT   PRIMARY KEY,
    env           TEXT   NOT NULL,
    due_at        BIGINT NOT NULL,
    action        TEXT   NOT NULL,
    flag_key      TEXT,
    params        TEXT   NOT NULL,
    based_on      BIGINT NOT NULL,
    flag_version  BIGINT,
    state         TEXT   NOT NULL,
    version       BIGINT,
    detail        TEXT,
    lease_until   BIGINT,
    lease_owner   TEXT,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    reason        TEXT,
    finished_at   BIGINT
);
CREATE INDEX scheduled_changes_due ON scheduled_changes (state, due_at);
CREATE INDEX scheduled_changes_by_env ON scheduled_changes (env, created_at);
