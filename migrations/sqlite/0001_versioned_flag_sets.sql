-- Environments, each owning one versioned flag set.
CREATE TABLE environments (
    key           TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    production    INTEGER NOT NULL DEFAULT 0,
    head_version  INTEGER NOT NULL DEFAULT 0,
    next_position INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    -- Creation order, for listing.
    seq           INTEGER NOT NULL
);

-- One row per definition of an item (a flag, an evaluator, a top-level key) over the
-- versions it was current: the flag set at version V is every row of the environment
-- with valid_from <= V < valid_to. A one-flag change closes one row and inserts one.
-- The key ends in valid_to so that the current row of an item (valid_to = the largest
-- 64-bit integer) is found by the key alone.
CREATE TABLE revisions (
    env        TEXT    NOT NULL REFERENCES environments(key) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to   INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    PRIMARY KEY (env, kind, key, valid_to)
);
CREATE INDEX revisions_by_version ON revisions (env, valid_to, kind, key);

CREATE TABLE versions (
    env        TEXT    NOT NULL REFERENCES environments(key) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    changed    TEXT    NOT NULL,
    reverted_to INTEGER,
    PRIMARY KEY (env, version)
);

CREATE TABLE version_flags (
    env      TEXT    NOT NULL,
    flag_key TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (env, flag_key, version),
    FOREIGN KEY (env, version) REFERENCES versions(env, version) ON DELETE CASCADE
);

CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    environments TEXT,
    hash         TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    env     TEXT,
    target  TEXT    NOT NULL,
    reason  TEXT,
    before  TEXT,
    after   TEXT,
    version INTEGER
);
CREATE INDEX audit_by_env ON audit (env, id);
CREATE INDEX audit_by_actor ON audit (actor, id);
