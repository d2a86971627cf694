-- The subject index grows at its end. Keyed (subject, log_id, seq), every
-- indexing pass scattered its rows across the whole index (HMACs are
-- random), so each pass dirtied about one index page per row, and the cost
-- of a pass grew with the size of the log.
--
-- Now each pass writes its rows under a new generation: `gen` is the first
-- sequence number the pass covered (the watermark it started from), and
-- the key is (log_id, gen, subject, seq). A pass's rows, sorted by subject,
-- land after everything already there. The event at `seq` is indexed in the
-- greatest generation <= seq that has rows (see audit::query); a subject
-- search probes that generation.
--
-- Rows indexed before this migration form generation 0. (Adding a column
-- with a constant default rewrites nothing; the new key is built once.)
ALTER TABLE audit_event_subjects ADD COLUMN gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_event_subjects DROP CONSTRAINT audit_event_subjects_pkey;
ALTER TABLE audit_event_subjects ADD PRIMARY KEY (log_id, gen, subject, seq);
ALTER TABLE audit_event_subjects ALTER COLUMN gen DROP DEFAULT;
