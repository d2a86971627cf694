-- Audit event text is compressed with lz4 rather than PostgreSQL's default
-- pglz. A batch match's access event names up to 100,000 subjects (about
-- 7 MB of HMACs, in `subjects` and again in `body`): pglz spent ~140 ms per
-- column on it, on the path before the answer's first line, and gained
-- nothing (hex digests do not compress that way); lz4 takes ~25 ms. Small
-- events are not compressed at all (PostgreSQL compresses only rows over
-- ~2 KB). Only new rows are affected; the hashes cover the text, not how it
-- is stored.
--
-- A server built without lz4 keeps pglz: the statement fails with
-- feature_not_supported (or a syntax error before PostgreSQL 14) and is
-- skipped.
DO $$
BEGIN
    ALTER TABLE audit_events
        ALTER COLUMN subjects SET COMPRESSION lz4,
        ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION
    WHEN feature_not_supported OR syntax_error THEN
        RAISE NOTICE 'lz4 unavailable: audit_events keeps the default compression';
END
$$;
