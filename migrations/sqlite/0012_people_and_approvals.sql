-- People: personal accounts that sign in to the UI (a local password, hashed with
-- argon2id, or OpenID Connect, bound to the provider's issuer and subject). `login`
-- is what versions and the audit log record as the author. `role_source` says who
-- set the role: `admin` (kept as set) or `claim` (taken from the provider's claim at
-- every sign-in, so that leaving a group takes the role away). A disabled person
-- cannot sign in, and their sessions end.
CREATE TABLE users (
    id              TEXT   PRIMARY KEY,
    login           TEXT   NOT NULL UNIQUE,
    name            TEXT   NOT NULL,
    email           TEXT,
    role            TEXT   NOT NULL,
    environments    TEXT,
    role_source     TEXT   NOT NULL,
    password_hash   TEXT,
    oidc_issuer     TEXT,
    oidc_subject    TEXT,
    failed_logins   BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    created_by      TEXT   NOT NULL,
    last_login_at   BIGINT,
    disabled_at     BIGINT
);
CREATE UNIQUE INDEX users_by_subject ON users (oidc_issuer, oidc_subject);

-- The person who created a token, by id: the person it reviews change requests for
-- (a login alone could be taken by a later account).
ALTER TABLE tokens ADD COLUMN created_by_user TEXT;

-- A session is now opened by a token or by a person. Sessions last hours: those open
-- at the upgrade end with it (sign in again).
DROP TABLE sessions;
CREATE TABLE sessions (
    hash       TEXT    PRIMARY KEY,
    token_id   TEXT,
    user_id    TEXT,
    csrf       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- An OpenID Connect sign-in under way: the hash of its `state`, the nonce the ID
-- token must carry and the PKCE verifier, for the callback (on whichever replica).
CREATE TABLE oidc_logins (
    state_hash TEXT   PRIMARY KEY,
    nonce      TEXT   NOT NULL,
    verifier   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Approvals: a protected environment takes changes as change requests that need
-- `approvals` approvals from people other than the author.
ALTER TABLE environments ADD COLUMN protected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE environments ADD COLUMN approvals BIGINT NOT NULL DEFAULT 1;

-- A change request: the change proposed (`change`, JSON), bound to the version of
-- the set it was based on; `revision` counts its edits (an approval counts for the
-- revision it was given on). `state`: open, applied, rejected, stale (its base moved:
-- its approvals are void until it is edited onto the new head), withdrawn.
CREATE TABLE change_requests (
    id             TEXT   PRIMARY KEY,
    env            TEXT   NOT NULL,
    title          TEXT   NOT NULL,
    change         TEXT   NOT NULL,
    base_version   BIGINT NOT NULL,
    revision       BIGINT NOT NULL,
    state          TEXT   NOT NULL,
    auto_apply     INTEGER NOT NULL,
    author         TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    applied_version BIGINT
);
CREATE INDEX change_requests_by_env ON change_requests (env, state);

-- What happened to a request: created, edited, approved, rejected, commented,
-- applied, stale, withdrawn; by whom, on which revision.
CREATE TABLE change_request_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT    NOT NULL,
    at         BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    revision   BIGINT  NOT NULL,
    comment    TEXT
);
CREATE INDEX change_request_events_by_request ON change_request_events (request_id, id);

-- Break-glass: a change to a protected environment made without approval (a kill
-- switch, a revert to a version that was live, an undo of the head) opens a review,
-- written in the transaction of its version, that someone other than its author must
-- acknowledge.
CREATE TABLE reviews (
    id              TEXT   PRIMARY KEY,
    env             TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    actor           TEXT   NOT NULL,
    action          TEXT   NOT NULL,
    target          TEXT   NOT NULL,
    reason          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at BIGINT,
    note            TEXT
);
CREATE INDEX reviews_by_env ON reviews (env, acknowledged_at);
