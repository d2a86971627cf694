-- Grants: approvals of conditional (有条件共享) policy rules for one consumer
-- department, with an expiry. Looked up on every request by the policy
-- engine (gateway::policy::grants). Times are unix milliseconds.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY NOT NULL,
    rule_id     TEXT NOT NULL,
    department  TEXT NOT NULL,
    not_after   BIGINT NOT NULL,
    approved    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX grants_by_department ON grants (department, not_after);
