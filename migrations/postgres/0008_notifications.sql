-- Notification channels: where an environment's changes are announced (Slack, Teams,
-- Feishu, DingTalk, WeCom, a signed generic webhook). The URL carries a secret for most
-- vendors and the signing secret is one: neither is ever returned by the API.
-- `notified_version` is the last version of the environment this channel has been considered
-- for: versions after it are turned into messages in the same transaction that moves
-- it, so a version committed while no flagd ran is announced at the next start and
-- none is announced twice.
CREATE TABLE notify_channels (
    id                  TEXT    PRIMARY KEY,
    env                 TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    url                 TEXT    NOT NULL,
    secret              TEXT,
    events              TEXT    NOT NULL,
    converge_timeout_ms BIGINT  NOT NULL,
    notified_version    BIGINT  NOT NULL,
    created_at          BIGINT  NOT NULL,
    created_by          TEXT    NOT NULL,
    deleted_at          BIGINT
);
CREATE INDEX notify_channels_by_env ON notify_channels (env);
-- The outbox: one row per message to send (or sent). `status` is `pending`, `watching`
-- (a follow-up waiting for the fleet to apply `watch_version`), `delivered` or
-- `failed`. A replica sends a row only after claiming it (`lease_until` in the future,
-- set by a conditional UPDATE), so that one replica sends each message.
CREATE TABLE notify_outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    channel_id      TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_until     BIGINT,
    watch_version   BIGINT,
    created_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX notify_outbox_due ON notify_outbox (status, next_attempt_at);
CREATE INDEX notify_outbox_by_channel ON notify_outbox (channel_id, seq);
-- Every delivery attempt: the receiver's HTTP status and answer (cut short), or why it
-- could not be reached.
CREATE TABLE notify_attempts (
    outbox_seq BIGINT  NOT NULL,
    attempt    BIGINT  NOT NULL,
    at         BIGINT  NOT NULL,
    ok         BIGINT  NOT NULL,
    status     BIGINT,
    body       TEXT,
    error      TEXT,
    PRIMARY KEY (outbox_seq, attempt)
);
