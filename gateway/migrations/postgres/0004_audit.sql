-- The tamper-evident audit log (see gateway/src/audit/mod.rs).
--
-- One hash chain and one Merkle tree per log_id: each gateway instance writes
-- its own log with its own sequence, so instances sharing one database never
-- contend for a global lock. Verification walks every log (see audit::verify).
-- No column ever holds a clear ID number or a field value: subjects are
-- keyed HMACs ("v<key version>:<hex>"), fields are names with a treatment.

CREATE TABLE audit_logs (
    log_id      TEXT PRIMARY KEY NOT NULL,
    created_ms  BIGINT NOT NULL,
    public_key  TEXT NOT NULL
);

-- Every column except the three hashes is covered by leaf_hash (the exact
-- encoding is in audit/record.rs).
CREATE TABLE audit_events (
    log_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    department  TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    datasets    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    decision    TEXT NOT NULL,
    status      BIGINT NOT NULL,
    subjects    TEXT NOT NULL,
    body        TEXT NOT NULL,
    leaf_hash   BYTEA NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL,
    PRIMARY KEY (log_id, seq)
);
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);
CREATE INDEX audit_events_time ON audit_events (time_ms, log_id, seq);
CREATE INDEX audit_events_department ON audit_events (department, time_ms);

CREATE TABLE audit_event_subjects (
    subject     TEXT NOT NULL,
    log_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (subject, log_id, seq)
);

CREATE TABLE audit_checkpoints (
    log_id      TEXT NOT NULL,
    tree_size   BIGINT NOT NULL,
    root        BYTEA NOT NULL,
    time_ms     BIGINT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   BYTEA NOT NULL,
    frontier    BYTEA NOT NULL,
    PRIMARY KEY (log_id, tree_size)
);

-- Append-only: the gateway never updates or deletes audit rows. (Someone
-- with direct database access can drop these triggers; that is what the
-- hash chain, the signed checkpoints and outside witnesses detect.)
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_subjects_append_only BEFORE UPDATE OR DELETE ON audit_event_subjects
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
