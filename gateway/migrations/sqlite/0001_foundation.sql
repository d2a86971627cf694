-- Client registry: which certificate subject (client id) is which department,
-- role and region. Operators manage it with `gateway pki issue` or the admin API.
CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY NOT NULL,
    department  TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('system', 'admin', 'auditor')),
    region      TEXT NOT NULL,
    -- Optional SHA-256 fingerprint pin (lower-case hex); NULL accepts any
    -- certificate with this CN that chains to the CA and is not revoked.
    fingerprint TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL
);
