-- Gateway instances that have used this database (several instances may
-- share one PostgreSQL; each keeps its own audit chain under its id).
CREATE TABLE gateway_instances (
    instance_id TEXT PRIMARY KEY NOT NULL,
    first_start INTEGER NOT NULL,
    last_start  INTEGER NOT NULL
);
