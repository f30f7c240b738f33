-- Trigger URLs: a secret URL per (environment, flag, action) that a monitoring tool
-- without Alertmanager support (Grafana, Datadog, Sentry, a script) POSTs to. The
-- store keeps the secret's SHA-256 only; the URL is shown once, at creation.
CREATE TABLE triggers (
    id            TEXT   PRIMARY KEY,
    env           TEXT   NOT NULL,
    flag_key      TEXT   NOT NULL,
    action        TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    hash          TEXT   NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    revoked_at    BIGINT,
    last_fired_at BIGINT
);
CREATE INDEX triggers_by_env ON triggers (env);
