-- Alertmanager as a trigger. A policy per environment says what alerts may do (none:
-- the defaults documented in docs/api.md). An episode is one firing of one alert (its
-- group, fingerprint and startsAt) and one thing it asked for: recorded once, in the
-- transaction of the version it made when it made one, so that Alertmanager's
-- at-least-once deliveries act once.
CREATE TABLE alert_policies (
    env             TEXT   PRIMARY KEY,
    enabled         BIGINT NOT NULL,
    actions         TEXT   NOT NULL,
    flags           TEXT   NOT NULL,
    lookback_ms     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    updated_by      TEXT   NOT NULL
);

CREATE TABLE alert_episodes (
    key             TEXT   PRIMARY KEY,
    env             TEXT   NOT NULL,
    alertname       TEXT   NOT NULL,
    fingerprint     TEXT   NOT NULL,
    starts_at       BIGINT NOT NULL,
    action          TEXT   NOT NULL,
    target          TEXT   NOT NULL,
    outcome         TEXT   NOT NULL,
    detail          TEXT   NOT NULL,
    version         BIGINT,
    received_at     BIGINT NOT NULL,
    resolved_at     BIGINT
);
CREATE INDEX alert_episodes_by_alert ON alert_episodes (env, fingerprint, starts_at);
CREATE INDEX alert_episodes_by_time ON alert_episodes (env, received_at);
