-- The subject index is written behind the events, in large sorted batches
-- (see audit::subjects): one random index insert per event made each group
-- commit dirty one index page per event. Per log, `indexed_to` is the first
-- sequence number NOT yet in audit_event_subjects; subject searches cover
-- the events from there on by reading their `subjects` column, and
-- verification checks the index against the events below it.
CREATE TABLE audit_subject_watermarks (
    log_id      TEXT PRIMARY KEY NOT NULL,
    indexed_to  BIGINT NOT NULL
);

-- Until now every event was indexed as it was written.
INSERT INTO audit_subject_watermarks (log_id, indexed_to)
SELECT l.log_id, COALESCE((SELECT MAX(e.seq) + 1 FROM audit_events e WHERE e.log_id = l.log_id), 0)
FROM audit_logs l;
