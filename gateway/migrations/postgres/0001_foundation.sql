-- Client registry: which certificate subject (client id) is which department,
-- role and region. Operators manage it with `gateway pki issue` or the admin API.
CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY NOT NULL,
    department  TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('system', 'admin', 'auditor')),
    region      TEXT NOT NULL,
    fingerprint TEXT,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
