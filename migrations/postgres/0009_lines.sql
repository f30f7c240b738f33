-- Lines of history (issue 16: a revert that costs what it changes). The versions of an
-- environment stay one numbered history, cut into lines: a revert at version V starts
-- line V, whose content begins as the content of an earlier version (its base) instead
-- of a copy of it. A revisions row belongs to one line; the set at version V is the
-- rows of V's line current at V, plus the base's rows for the items the line has no
-- row of. A line that deletes an item its base has writes a row without a definition.
-- A line's base is always in a line without a base, so a read is two index scans.
CREATE TABLE lines (
    env       TEXT   NOT NULL REFERENCES environments(key) ON DELETE CASCADE,
    -- The line's first version.
    line      BIGINT NOT NULL,
    -- The version its content starts from, and that version's line; NULL for a line
    -- that holds every item itself (line 0, before any line row exists).
    base_line BIGINT,
    base      BIGINT,
    PRIMARY KEY (env, line)
);

ALTER TABLE revisions ADD COLUMN line BIGINT NOT NULL DEFAULT 0;
-- NULL: the item is deleted in this line although the line's base has it.
ALTER TABLE revisions ALTER COLUMN definition DROP NOT NULL;
ALTER TABLE revisions DROP CONSTRAINT revisions_pkey;
ALTER TABLE revisions ADD PRIMARY KEY (env, line, kind, key, valid_to);
DROP INDEX revisions_by_version;
DROP INDEX revisions_by_start;
CREATE INDEX revisions_by_version ON revisions (env, line, valid_to, kind, key);
