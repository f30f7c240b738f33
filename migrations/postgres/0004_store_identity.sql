-- The store's identity: random, made once when the store is created (or first migrated
-- to this schema). Version numbers are only comparable within one store: SDKs send the
-- identity their flag set came from, and are sent a full snapshot when it differs.
CREATE TABLE store_identity (
    id TEXT NOT NULL
);
INSERT INTO store_identity (id) SELECT md5(random()::text || clock_timestamp()::text);

-- The head's size, kept by every commit so that the limits on flag count and document
-- size cost nothing per write; NULL until first computed.
ALTER TABLE environments ADD COLUMN head_flags BIGINT;
ALTER TABLE environments ADD COLUMN head_bytes BIGINT;
