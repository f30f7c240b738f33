-- The flags' history (issue 16): version_flags lists, per version, the flags it changed,
-- written by the store in the version's own transaction from the version's list of
-- changed flags. Its foreign key to versions checked every row against versions again:
-- 10,000 checks for a 10,000-flag revert, the largest part of writing its history.
-- Versions are never deleted except with their environment, which deletes these rows
-- first (store/environments.rs), so the key only cost time. The table is rebuilt
-- without it (SQLite cannot drop a constraint).
CREATE TABLE version_flags_unchecked (
    env      TEXT    NOT NULL,
    flag_key TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (env, flag_key, version)
);
INSERT INTO version_flags_unchecked (env, flag_key, version)
    SELECT env, flag_key, version FROM version_flags;
DROP TABLE version_flags;
ALTER TABLE version_flags_unchecked RENAME TO version_flags;
