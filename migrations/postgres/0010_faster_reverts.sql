-- The flags' history (issue 16): version_flags lists, per version, the flags it changed,
-- written by the store in the version's own transaction from the version's list of
-- changed flags. Its foreign key to versions ran a check per row (a trigger and a
-- lookup): 10,000 of them for a 10,000-flag revert, the largest part of writing its
-- history. Versions are never deleted except with their environment, which deletes
-- these rows first (store/environments.rs), so the key only cost time.
ALTER TABLE version_flags DROP CONSTRAINT IF EXISTS version_flags_env_version_fkey;

