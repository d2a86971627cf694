-- Event contexts: what every event of one client under one plan repeats
-- (its certificate, route, legal basis, disclosed fields with their
-- treatments, rule ids and policy version), stored once. An event's body
-- names its context by `id` (hex SHA-256 of "GWC1" || body, see
-- audit/record.rs) instead of spelling those keys out, so a person query's
-- event is about half as long to write, keep and hash again when verifying.
--
-- Content-addressed, so rows are written once and never change: the event
-- bytes cover the id, verification recomputes each referenced context's
-- hash and reports an event whose context is missing or altered. A row is
-- inserted in the transaction of the first event that names it.
CREATE TABLE audit_contexts (
    id      TEXT PRIMARY KEY NOT NULL,
    body    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER audit_contexts_no_update BEFORE UPDATE ON audit_contexts
BEGIN SELECT RAISE(ABORT, 'audit_contexts is append-only'); END;
CREATE TRIGGER audit_contexts_no_delete BEFORE DELETE ON audit_contexts
BEGIN SELECT RAISE(ABORT, 'audit_contexts is append-only'); END;
