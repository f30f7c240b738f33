-- Lines of history (issue 16: a revert that costs what it changes). The versions of an
-- environment stay one numbered history, cut into lines: a revert at version V starts
-- line V, whose content begins as the content of an earlier version (its base) instead
-- of a copy of it. A revisions row belongs to one line; the set at version V is the
-- rows of V's line current at V, plus the base's rows for the items the line has no
-- row of. A line that deletes an item its base has writes a row without a definition.
-- A line's base is always in a line without a base, so a read is two index scans.
CREATE TABLE lines (
    env       TEXT    NOT NULL REFERENCES environments(key) ON DELETE CASCADE,
    -- The line's first version.
    line      INTEGER NOT NULL,
    -- The version its content starts from, and that version's line; NULL for a line
    -- that holds every item itself (line 0, before any line row exists).
    base_line INTEGER,
    base      INTEGER,
    PRIMARY KEY (env, line)
);

CREATE TABLE revisions_in_lines (
    env        TEXT    NOT NULL REFERENCES environments(key) ON DELETE CASCADE,
    line       INTEGER NOT NULL DEFAULT 0,
    kind       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to   INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    -- NULL: the item is deleted in this line although the line's base has it.
    definition TEXT,
    PRIMARY KEY (env, line, kind, key, valid_to)
);
INSERT INTO revisions_in_lines (env, line, kind, key, valid_from, valid_to, position, definition)
    SELECT env, 0, kind, key, valid_from, valid_to, position, definition FROM revisions;
DROP TABLE revisions;
ALTER TABLE revisions_in_lines RENAME TO revisions;
CREATE INDEX revisions_by_version ON revisions (env, line, valid_to, kind, key);
