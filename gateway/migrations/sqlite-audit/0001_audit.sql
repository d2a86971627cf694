-- The audit log's own SQLite file (DIR/NAME-audit.db beside DIR/NAME.db;
-- see storage::sqlite_audit_path). It used to live in the main file
-- (migrations/sqlite/0004 and 0005); keeping it apart means the audit
-- writer's commits never invalidate the page caches and memory maps of the
-- connections that read records. PostgreSQL keeps these tables in its one
-- database (migrations/postgres).
--
-- The tamper-evident audit log (see gateway/src/audit/mod.rs).
--
-- One hash chain and one Merkle tree per log_id: each gateway instance writes
-- its own log with its own sequence, so instances sharing one database never
-- contend for a global lock. Verification walks every log (see audit::verify).
-- No column ever holds a clear ID number or a field value: subjects are
-- keyed HMACs ("v<key version>:<hex>"), fields are names with a treatment.

-- The logs that exist, and the key their writer used when it created them.
CREATE TABLE audit_logs (
    log_id      TEXT PRIMARY KEY NOT NULL,
    created_ms  INTEGER NOT NULL,
    public_key  TEXT NOT NULL
);

-- Events. Every column except the three hashes is covered by leaf_hash
-- (the exact encoding is in audit/record.rs).
CREATE TABLE audit_events (
    log_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    department  TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    datasets    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    status      INTEGER NOT NULL,
    subjects    TEXT NOT NULL,
    body        TEXT NOT NULL,
    leaf_hash   BLOB NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL,
    PRIMARY KEY (log_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);
CREATE INDEX audit_events_time ON audit_events (time_ms, log_id, seq);
CREATE INDEX audit_events_department ON audit_events (department, time_ms);

-- Subject index (derived from audit_events.subjects; verification checks
-- that it matches).
CREATE TABLE audit_event_subjects (
    subject     TEXT NOT NULL,
    log_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (subject, log_id, seq)
) WITHOUT ROWID;

-- Signed checkpoints; `frontier` is the writer's Merkle right edge at that
-- size (an unauthenticated resume aid: verification recomputes everything).
CREATE TABLE audit_checkpoints (
    log_id      TEXT NOT NULL,
    tree_size   INTEGER NOT NULL,
    root        BLOB NOT NULL,
    time_ms     INTEGER NOT NULL,
    public_key  TEXT NOT NULL,
    signature   BLOB NOT NULL,
    frontier    BLOB NOT NULL,
    PRIMARY KEY (log_id, tree_size)
);

-- Append-only: the gateway never updates or deletes audit rows. (Someone
-- with direct database access can drop these triggers; that is what the
-- hash chain, the signed checkpoints and outside witnesses detect.)
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_event_subjects
BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_event_subjects
BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;

-- The subject index is written behind the events, in large sorted batches
-- (see audit::subjects): one random index insert per event made each group
-- commit dirty one index page per event. Per log, `indexed_to` is the first
-- sequence number NOT yet in audit_event_subjects; subject searches cover
-- the events from there on by reading their `subjects` column, and
-- verification checks the index against the events below it.
CREATE TABLE audit_subject_watermarks (
    log_id      TEXT PRIMARY KEY NOT NULL,
    indexed_to  INTEGER NOT NULL
);
