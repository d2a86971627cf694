-- The versioned record store (see gateway/src/records/mod.rs).
--
-- Layout follows SQL:2011 system versioning: `records` holds the current
-- version of every record (one row per dataset + natural key), and
-- `record_versions` holds every superseded version, so the full history of a
-- record is `record_versions` UNION its `records` row. Nothing is deleted
-- through the API: withdrawal is a new version with withdrawn = 1.
--
-- Payloads are canonical JSON (object keys sorted, no insignificant
-- whitespace) written by the store itself; content_hash is SHA-256 of exactly
-- those bytes, so idempotency is a hash comparison. Timestamps are unix
-- milliseconds (UTC).
CREATE TABLE records (
    id           INTEGER PRIMARY KEY,
    dataset      TEXT    NOT NULL,
    natural_key  TEXT    NOT NULL CHECK (length(natural_key) BETWEEN 1 AND 512),
    version      INTEGER NOT NULL CHECK (version >= 1),
    region       TEXT    NOT NULL CHECK (length(region) = 6),
    withdrawn    INTEGER NOT NULL DEFAULT 0 CHECK (withdrawn IN (0, 1)),
    content_hash BLOB    NOT NULL CHECK (length(content_hash) = 32),
    payload      TEXT    NOT NULL,
    -- client id (certificate CN) and department of the publisher of this version
    published_by TEXT    NOT NULL,
    department   TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    -- the publish request (UUID v7, 16 bytes) that wrote this version
    publish_id   BLOB    NOT NULL CHECK (length(publish_id) = 16),
    UNIQUE (dataset, natural_key)
);

-- Superseded versions. Rows are only ever inserted.
CREATE TABLE record_versions (
    record_id    INTEGER NOT NULL REFERENCES records (id),
    version      INTEGER NOT NULL,
    region       TEXT    NOT NULL,
    withdrawn    INTEGER NOT NULL CHECK (withdrawn IN (0, 1)),
    content_hash BLOB    NOT NULL,
    payload      TEXT    NOT NULL,
    published_by TEXT    NOT NULL,
    department   TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    publish_id   BLOB    NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Person lookup: the subjects (normalised 18-character citizen ID numbers) of
-- the current version of each record. Rows of withdrawn records stay and are
-- filtered through records.withdrawn, so re-publishing restores them.
-- Primary key order serves "subject -> records, optionally per dataset" and
-- the batch match join; the second index serves rewriting a record's subjects.
CREATE TABLE record_subjects (
    subject   TEXT    NOT NULL,
    dataset   TEXT    NOT NULL,
    record_id INTEGER NOT NULL REFERENCES records (id),
    PRIMARY KEY (subject, dataset, record_id)
) WITHOUT ROWID;

CREATE INDEX record_subjects_by_record ON record_subjects (record_id);
