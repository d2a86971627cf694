-- Roots of each log's complete chunks of 4,096 events (audit::merkle::CHUNK):
-- chunk `chunk` covers seq chunk*4096 .. (chunk+1)*4096. An inclusion or
-- consistency proof reads these roots and the leaves of at most two chunks
-- (audit::merkle::ChunkedTree) instead of every leaf hash of the log, which
-- at a hundred million events is 3.2 GB per proof.
--
-- Derived data, filled in behind the log the first time a proof needs it
-- (audit::store::chunk_roots): a missing row is computed from the events
-- again, and verification recomputes every stored root and names one that
-- differs. A wrong root cannot forge a proof either: proofs are checked
-- against signed checkpoints.
CREATE TABLE audit_merkle_chunks (
    log_id  TEXT NOT NULL,
    chunk   INTEGER NOT NULL,
    root    BLOB NOT NULL,
    PRIMARY KEY (log_id, chunk)
) WITHOUT ROWID;
CREATE TRIGGER audit_chunks_no_update BEFORE UPDATE ON audit_merkle_chunks
BEGIN SELECT RAISE(ABORT, 'audit_merkle_chunks is append-only'); END;
CREATE TRIGGER audit_chunks_no_delete BEFORE DELETE ON audit_merkle_chunks
BEGIN SELECT RAISE(ABORT, 'audit_merkle_chunks is append-only'); END;
