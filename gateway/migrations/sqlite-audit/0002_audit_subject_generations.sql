-- The subject index grows at its end. Keyed (subject, log_id, seq), every
-- indexing pass scattered its rows across the whole index (HMACs are
-- random), so each pass rewrote about one index page per row, and the cost
-- of a pass grew with the size of the log (at a million indexed events, a
-- pass of 16,384 person queries touched thousands of 16 KiB pages).
--
-- Now each pass writes its rows under a new generation: `gen` is the first
-- sequence number the pass covered (the watermark it started from), and
-- the key is (log_id, gen, subject, seq). A pass's rows, sorted by subject,
-- land after everything already there: pages are written once, full. The
-- event at `seq` is indexed in the greatest generation <= seq that has rows
-- (see audit::query); a subject search probes that generation.
--
-- Rows indexed before this migration form generation 0.
CREATE TABLE audit_event_subjects_gen (
    log_id      TEXT NOT NULL,
    gen         INTEGER NOT NULL,
    subject     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (log_id, gen, subject, seq)
) WITHOUT ROWID;
INSERT INTO audit_event_subjects_gen (log_id, gen, subject, seq)
SELECT log_id, 0, subject, seq FROM audit_event_subjects ORDER BY log_id, subject, seq;
DROP TRIGGER audit_subjects_no_update;
DROP TRIGGER audit_subjects_no_delete;
DROP TABLE audit_event_subjects;
ALTER TABLE audit_event_subjects_gen RENAME TO audit_event_subjects;
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_event_subjects
BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_event_subjects
BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END;
