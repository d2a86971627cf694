-- Event contexts: what every event of one client under one plan repeats
-- (its certificate, route, legal basis, disclosed fields with their
-- treatments, rule ids and policy version), stored once. An event's body
-- names its context by `id` (hex SHA-256 of "GWC1" || body, see
-- audit/record.rs) instead of spelling those keys out.
--
-- Content-addressed, so rows are written once and never change; instances
-- sharing the database insert the same row for the same context, and
-- ON CONFLICT DO NOTHING keeps one. The event bytes cover the id;
-- verification recomputes each referenced context's hash and reports an
-- event whose context is missing or altered.
CREATE TABLE audit_contexts (
    id      TEXT PRIMARY KEY,
    body    TEXT NOT NULL
);
CREATE TRIGGER audit_contexts_append_only BEFORE UPDATE OR DELETE ON audit_contexts
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
