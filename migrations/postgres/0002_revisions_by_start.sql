-- The rows a version opened (valid_from = V), found without scanning every current
-- row: a 10,000-flag revert lists what it changed from this and the
-- revisions_by_version index alone.
CREATE INDEX revisions_by_start ON revisions (env, valid_from);
