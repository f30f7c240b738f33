-- Admin UI sessions: the browser holds a random secret in an HttpOnly cookie; the store
-- keeps its SHA-256, the token it was opened with, and the CSRF token the page sends
-- back on every change. Revoking the token ends its sessions.
CREATE TABLE sessions (
    hash       TEXT    PRIMARY KEY,
    token_id   TEXT    NOT NULL REFERENCES tokens(id),
    csrf       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
