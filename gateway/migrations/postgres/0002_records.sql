-- The versioned record store (see gateway/src/records/mod.rs).
--
-- Layout follows SQL:2011 system versioning: `records` holds the current
-- version of every record (one row per dataset + natural key), and
-- `record_versions` holds every superseded version, so the full history of a
-- record is `record_versions` UNION its `records` row. Nothing is deleted
-- through the API: withdrawal is a new version with withdrawn = true.
--
-- Payloads are canonical JSON (object keys sorted, no insignificant
-- whitespace) written by the store itself, kept as TEXT so that the bytes,
-- and therefore content_hash (SHA-256 of exactly those bytes), survive a
-- round trip unchanged (jsonb would reorder keys). Cast to jsonb for ad-hoc
-- queries. Timestamps are unix milliseconds (UTC), as on SQLite.
CREATE TABLE records (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset      TEXT    NOT NULL,
    natural_key  TEXT    NOT NULL CHECK (length(natural_key) BETWEEN 1 AND 512),
    version      INTEGER NOT NULL CHECK (version >= 1),
    region       TEXT    NOT NULL CHECK (length(region) = 6),
    withdrawn    BOOLEAN NOT NULL DEFAULT FALSE,
    content_hash BYTEA   NOT NULL CHECK (length(content_hash) = 32),
    payload      TEXT    NOT NULL,
    -- client id (certificate CN) and department of the publisher of this version
    published_by TEXT    NOT NULL,
    department   TEXT    NOT NULL,
    published_at BIGINT  NOT NULL,
    -- the publish request (UUID v7, 16 bytes) that wrote this version
    publish_id   BYTEA   NOT NULL CHECK (length(publish_id) = 16),
    UNIQUE (dataset, natural_key)
);

-- Superseded versions. Rows are only ever inserted.
CREATE TABLE record_versions (
    record_id    BIGINT  NOT NULL REFERENCES records (id),
    version      INTEGER NOT NULL,
    region       TEXT    NOT NULL,
    withdrawn    BOOLEAN NOT NULL,
    content_hash BYTEA   NOT NULL,
    payload      TEXT    NOT NULL,
    published_by TEXT    NOT NULL,
    department   TEXT    NOT NULL,
    published_at BIGINT  NOT NULL,
    publish_id   BYTEA   NOT NULL,
    PRIMARY KEY (record_id, version)
);

-- Person lookup: the subjects (normalised 18-character citizen ID numbers) of
-- the current version of each record. Rows of withdrawn records stay and are
-- filtered through records.withdrawn, so re-publishing restores them.
-- Primary key order serves "subject -> records, optionally per dataset" and
-- the batch match join; the second index serves rewriting a record's subjects.
CREATE TABLE record_subjects (
    subject   TEXT   NOT NULL,
    dataset   TEXT   NOT NULL,
    record_id BIGINT NOT NULL REFERENCES records (id),
    PRIMARY KEY (subject, dataset, record_id)
);

CREATE INDEX record_subjects_by_record ON record_subjects (record_id);
