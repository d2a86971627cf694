//! The audit tables, once per backend.

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt;
use sqlx::{Postgres, QueryBuilder, Row as _, Sqlite};

use super::AuditError;
use super::checkpoint::SignedCheckpoint;
use super::merkle::{CHUNK, Frontier, Hash};
use super::record::{Record, StoredContextRow};
use crate::storage::{Database, StorageError};
use sqlx::SqlitePool;

/// A record with its hashes, ready to insert or as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The columns that are hashed.
    pub record: Record,
    /// `SHA-256(0x00 || event bytes)`.
    pub leaf_hash: Hash,
    /// The previous event's `hash`.
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash || leaf_hash)`.
    pub hash: Hash,
}

/// The columns of a [`Record`], in the order `record_from_row!` reads them.
macro_rules! record_columns {
    () => {
        "log_id, seq, event_id, time_ms, kind, department, client_id, datasets, purpose, \
         decision, status, subjects, body"
    };
}

/// A [`Record`]'s columns, then its three hashes.
pub(crate) const EVENT_COLUMNS: &str = concat!(record_columns!(), ", leaf_hash, prev_hash, hash");

/// A [`Record`]'s columns, each prefixed with `alias.` (for queries that
/// join `audit_events` to other tables).
pub(crate) fn record_columns_of(alias: &str) -> String {
    record_columns!()
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row INSERT statement (16 binds each). Small enough that
/// the statements for every size 1..=64 stay in sqlx's statement cache
/// (100 per connection), so a group commit never re-parses its INSERT.
const INSERT_CHUNK: usize = 64;
/// Rows per subject-index INSERT statement (4 binds each).
const INDEX_CHUNK: usize = 2_000;

pub(crate) fn to_hash(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

/// The [`Record`] in the first 13 columns of a row selected in
/// [`EVENT_COLUMNS`] order.
macro_rules! record_from_row {
    ($row:expr) => {{
        let row = $row;
        let seq: i64 = row.try_get(1)?;
        Record {
            log_id: row.try_get(0)?,
            seq: seq as u64,
            event_id: row.try_get(2)?,
            time_ms: row.try_get(3)?,
            kind: row.try_get(4)?,
            department: row.try_get(5)?,
            client_id: row.try_get(6)?,
            datasets: row.try_get(7)?,
            purpose: row.try_get(8)?,
            decision: row.try_get(9)?,
            status: row.try_get(10)?,
            subjects: row.try_get(11)?,
            body: row.try_get(12)?,
        }
    }};
}
pub(crate) use record_from_row;

macro_rules! stored_from_row {
    ($row:expr) => {{
        let row = $row;
        let bad = || sqlx::Error::Decode("audit row has a hash that is not 32 bytes".into());
        StoredEvent {
            record: record_from_row!(row),
            leaf_hash: to_hash(row.try_get::<&[u8], _>(13)?).ok_or_else(bad)?,
            prev_hash: to_hash(row.try_get::<&[u8], _>(14)?).ok_or_else(bad)?,
            hash: to_hash(row.try_get::<&[u8], _>(15)?).ok_or_else(bad)?,
        }
    }};
}

/// Registers a log (idempotent).
pub async fn ensure_log(
    db: &Database,
    log_id: &str,
    public_key: &str,
    now_ms: i64,
) -> Result<(), AuditError> {
    let sql = "INSERT INTO audit_logs (log_id, created_ms, public_key) VALUES ($1, $2, $3) \
               ON CONFLICT (log_id) DO NOTHING";
    let mark = "INSERT INTO audit_subject_watermarks (log_id, indexed_to) VALUES ($1, 0) \
                ON CONFLICT (log_id) DO NOTHING";
    macro_rules! run {
        ($p:expr) => {{
            let mut tx = $p.begin().await?;
            sqlx::query(sql)
                .bind(log_id)
                .bind(now_ms)
                .bind(public_key)
                .execute(&mut *tx)
                .await?;
            sqlx::query(mark).bind(log_id).execute(&mut *tx).await?;
            tx.commit().await?;
        }};
    }
    match db {
        Database::Sqlite(p) => run!(p),
        Database::Postgres(p) => run!(p),
    }
    Ok(())
}

/// The last event of a log: `(seq, hash)`.
pub async fn head(db: &Database, log_id: &str) -> Result<Option<(u64, Hash)>, AuditError> {
    let sql = "SELECT seq, hash FROM audit_events WHERE log_id = $1 ORDER BY seq DESC LIMIT 1";
    let row = match db {
        Database::Sqlite(p) => sqlx::query(sql)
            .bind(log_id)
            .fetch_optional(p)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
            .transpose()?,
        Database::Postgres(p) => sqlx::query(sql)
            .bind(log_id)
            .fetch_optional(p)
            .await?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
            .transpose()?,
    };
    match row {
        None => Ok(None),
        Some((seq, h)) => {
            let h = to_hash(&h).ok_or(AuditError::Corrupt("stored hash is not 32 bytes"))?;
            Ok(Some((seq as u64, h)))
        }
    }
}

/// Leaf hashes of `log_id` with `from <= seq < to`, in order.
pub async fn leaves(
    db: &Database,
    log_id: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, AuditError> {
    let sql = "SELECT seq, leaf_hash FROM audit_events WHERE log_id = $1 AND seq >= $2 AND seq < $3 \
               ORDER BY seq";
    let mut out = Vec::with_capacity(to.saturating_sub(from).min(1 << 24) as usize);
    let mut expect = from;
    let mut push = |seq: i64, leaf: &[u8]| -> Result<(), AuditError> {
        if seq as u64 != expect {
            return Err(AuditError::Corrupt("the log has a gap; run verify"));
        }
        expect += 1;
        out.push(to_hash(leaf).ok_or(AuditError::Corrupt("stored leaf hash is not 32 bytes"))?);
        Ok(())
    };
    match db {
        Database::Sqlite(p) => {
            let mut rows = sqlx::query(sql)
                .bind(log_id)
                .bind(from as i64)
                .bind(to as i64)
                .fetch(p);
            while let Some(r) = rows.try_next().await? {
                push(r.try_get(0)?, r.try_get(1)?)?;
            }
        }
        Database::Postgres(p) => {
            let mut rows = sqlx::query(sql)
                .bind(log_id)
                .bind(from as i64)
                .bind(to as i64)
                .fetch(p);
            while let Some(r) = rows.try_next().await? {
                push(r.try_get(0)?, r.try_get(1)?)?;
            }
        }
    }
    if expect != to {
        return Err(AuditError::Corrupt(
            "the log is shorter than expected; run verify",
        ));
    }
    Ok(out)
}

/// Inserts `(chunk, root)` rows of log `$log_id` (`$exec`: a pool or an
/// open transaction, `$Db`: `Sqlite` or `Postgres`). A row already there
/// (the same root, computed by another proof or instance) is left alone.
macro_rules! insert_chunk_roots {
    ($exec:expr, $Db:ty, $log_id:expr, $rows:expr) => {{
        let mut qb =
            QueryBuilder::<$Db>::new("INSERT INTO audit_merkle_chunks (log_id, chunk, root) ");
        qb.push_values($rows.iter(), |mut b, (i, r)| {
            b.push_bind($log_id)
                .push_bind(*i as i64)
                .push_bind(r.to_vec());
        });
        qb.push(" ON CONFLICT DO NOTHING");
        qb.build().execute($exec).await?;
    }};
}

/// Every stored chunk root, per log, in chunk order (for verification).
/// None in an SQLite file from before the audit log had a file of its own,
/// which `gateway audit verify` reads as it is (the table came later).
pub async fn stored_chunk_roots(
    db: &Database,
) -> Result<BTreeMap<String, Vec<(u64, Hash)>>, AuditError> {
    let sql = "SELECT log_id, chunk, root FROM audit_merkle_chunks ORDER BY log_id, chunk";
    let rows: Vec<(String, i64, Vec<u8>)> = match db {
        Database::Sqlite(p) => {
            if !sqlite_table_exists(p, "audit_merkle_chunks").await? {
                return Ok(BTreeMap::new());
            }
            sqlx::query_as(sql).fetch_all(p).await?
        }
        Database::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await?,
    };
    let mut out: BTreeMap<String, Vec<(u64, Hash)>> = BTreeMap::new();
    for (log_id, chunk, root) in rows {
        // A root of the wrong length never equals a recomputed one:
        // verification names it.
        let root = to_hash(&root).unwrap_or([0xff; 32]);
        out.entry(log_id).or_default().push((chunk as u64, root));
    }
    Ok(out)
}

/// Whether the store has the `audit_contexts` table: always on
/// PostgreSQL and in an SQLite audit file; not in a main SQLite file that
/// held the audit log before it had a file of its own.
pub async fn has_contexts_table(db: &Database) -> Result<bool, AuditError> {
    Ok(match db {
        Database::Sqlite(p) => sqlite_table_exists(p, "audit_contexts").await?,
        Database::Postgres(_) => true,
    })
}

/// Whether the SQLite database has table `name` (audit tables added after
/// the audit log moved to a file of its own are missing from an old main
/// file, which `gateway audit verify` reads as it is).
async fn sqlite_table_exists(p: &SqlitePool, name: &str) -> Result<bool, AuditError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
    )
    .bind(name)
    .fetch_one(p)
    .await?)
}

/// Event contexts, by id: the ones named in `ids`, or every one when
/// `ids` is `None` (verification). None in an SQLite file written before
/// contexts existed, which `gateway audit verify` reads as it is.
pub async fn contexts(
    db: &Database,
    ids: Option<&[&str]>,
) -> Result<HashMap<String, String>, AuditError> {
    if ids.is_some_and(|i| i.is_empty()) {
        return Ok(HashMap::new());
    }
    macro_rules! load {
        ($p:expr, $Db:ty) => {{
            let mut qb = QueryBuilder::<$Db>::new("SELECT id, body FROM audit_contexts");
            if let Some(ids) = ids {
                qb.push(" WHERE id IN (");
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(")");
            }
            let rows: Vec<(String, String)> = qb.build_query_as().fetch_all($p).await?;
            rows
        }};
    }
    if !has_contexts_table(db).await? {
        return Ok(HashMap::new());
    }
    let rows = match db {
        Database::Sqlite(p) => load!(p, Sqlite),
        Database::Postgres(p) => load!(p, Postgres),
    };
    Ok(rows.into_iter().collect())
}

/// Chunks whose roots are computed and stored per round trip when filling
/// in (256 × 4,096 leaf hashes = 32 MB read at a time).
const CHUNK_FILL_BATCH: u64 = 256;

/// The roots of the first `chunks` complete chunks of `log_id`
/// ([`CHUNK`] events each): those stored in `audit_merkle_chunks` (the
/// writer stores each with the events that complete it), and the rest (a
/// log written before the table existed) computed from the events' leaf
/// hashes and stored for next time
/// (another instance doing the same at once writes the same rows; the
/// second insert is ignored). Errors if the log has fewer events.
pub async fn chunk_roots(
    db: &Database,
    log_id: &str,
    chunks: u64,
) -> Result<Vec<Hash>, AuditError> {
    let sql = "SELECT chunk, root FROM audit_merkle_chunks WHERE log_id = $1 AND chunk < $2 ORDER BY chunk";
    let rows: Vec<(i64, Vec<u8>)> = match db {
        Database::Sqlite(p) => {
            sqlx::query_as(sql)
                .bind(log_id)
                .bind(chunks as i64)
                .fetch_all(p)
                .await?
        }
        Database::Postgres(p) => {
            sqlx::query_as(sql)
                .bind(log_id)
                .bind(chunks as i64)
                .fetch_all(p)
                .await?
        }
    };
    let mut roots = Vec::with_capacity(chunks as usize);
    for (chunk, root) in rows {
        // Only a gap-free prefix is used; anything after a gap is computed
        // again below.
        if chunk as u64 != roots.len() as u64 {
            break;
        }
        roots.push(to_hash(&root).ok_or(AuditError::Corrupt(
            "a stored chunk root is not 32 bytes; run verify",
        ))?);
    }
    while (roots.len() as u64) < chunks {
        let from = roots.len() as u64;
        let to = (from + CHUNK_FILL_BATCH).min(chunks);
        let leaves = leaves(db, log_id, from * CHUNK, to * CHUNK).await?;
        let new: Vec<(u64, Hash)> = leaves
            .chunks_exact(CHUNK as usize)
            .zip(from..)
            .map(|(c, i)| {
                let mut f = Frontier::new();
                c.iter().for_each(|l| f.push(*l));
                (i, f.root())
            })
            .collect();
        match db {
            Database::Sqlite(p) => insert_chunk_roots!(p, Sqlite, log_id, &new),
            Database::Postgres(p) => insert_chunk_roots!(p, Postgres, log_id, &new),
        }
        roots.extend(new.into_iter().map(|(_, r)| r));
    }
    Ok(roots)
}

/// The Merkle frontier of a log at `size` events: from the newest
/// checkpoint's saved frontier (checked against its root) plus the leaves
/// after it, or from all leaves.
pub async fn frontier(db: &Database, log_id: &str, size: u64) -> Result<Frontier, AuditError> {
    let sql = "SELECT tree_size, root, frontier FROM audit_checkpoints \
               WHERE log_id = $1 AND tree_size <= $2 ORDER BY tree_size DESC LIMIT 1";
    let saved = match db {
        Database::Sqlite(p) => sqlx::query(sql)
            .bind(log_id)
            .bind(size as i64)
            .fetch_optional(p)
            .await?
            .map(|r| {
                Ok::<_, sqlx::Error>((r.try_get::<Vec<u8>, _>(1)?, r.try_get::<Vec<u8>, _>(2)?))
            })
            .transpose()?,
        Database::Postgres(p) => sqlx::query(sql)
            .bind(log_id)
            .bind(size as i64)
            .fetch_optional(p)
            .await?
            .map(|r| {
                Ok::<_, sqlx::Error>((r.try_get::<Vec<u8>, _>(1)?, r.try_get::<Vec<u8>, _>(2)?))
            })
            .transpose()?,
    };
    let mut f = saved
        .and_then(|(root, bytes)| {
            let f = Frontier::from_bytes(&bytes)?;
            (f.root().as_slice() == root.as_slice()).then_some(f)
        })
        .unwrap_or_default();
    for leaf in leaves(db, log_id, f.size(), size).await? {
        f.push(leaf);
    }
    Ok(f)
}

/// Inserts events in multi-row statements, inside a transaction the caller
/// commits (`$tx`: an open transaction, `$Db`: `Sqlite` or `Postgres`).
/// Their subject index rows come later, in bulk: [`index_subjects`].
macro_rules! insert_events {
    ($tx:expr, $Db:ty, $rows:expr) => {{
        for chunk in $rows.chunks(INSERT_CHUNK) {
            let mut qb =
                QueryBuilder::<$Db>::new(format!("INSERT INTO audit_events ({EVENT_COLUMNS}) "));
            qb.push_values(chunk, |mut b, e| {
                let r = &e.record;
                b.push_bind(r.log_id.as_str())
                    .push_bind(r.seq as i64)
                    .push_bind(r.event_id.as_str())
                    .push_bind(r.time_ms)
                    .push_bind(r.kind.as_str())
                    .push_bind(r.department.as_str())
                    .push_bind(r.client_id.as_str())
                    .push_bind(r.datasets.as_str())
                    .push_bind(r.purpose.as_str())
                    .push_bind(r.decision.as_str())
                    .push_bind(r.status)
                    .push_bind(r.subjects.as_str())
                    .push_bind(r.body.as_str())
                    .push_bind(e.leaf_hash.as_slice())
                    .push_bind(e.prev_hash.as_slice())
                    .push_bind(e.hash.as_slice());
            });
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}

/// Inserts the event contexts a batch names (content-addressed: one
/// already stored is the same and stays as it is).
macro_rules! insert_contexts {
    ($tx:expr, $Db:ty, $contexts:expr) => {{
        if !$contexts.is_empty() {
            let mut qb = QueryBuilder::<$Db>::new("INSERT INTO audit_contexts (id, body) ");
            qb.push_values($contexts.iter(), |mut b, c| {
                b.push_bind(c.id.as_str()).push_bind(c.body.as_str());
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}

/// Writes a batch of events in one transaction and commits it (SQLite with
/// `synchronous=FULL`: on disk when this returns), with the roots of the
/// chunks its events complete (`(chunk, root)`, see [`chunk_roots`]), so
/// that proofs find them without computing them.
pub async fn append_batch(
    db: &Database,
    rows: &[StoredEvent],
    chunks: &[(u64, Hash)],
    contexts: &[StoredContextRow],
) -> Result<(), AuditError> {
    let log_id = rows.first().map(|r| r.record.log_id.as_str());
    match db {
        Database::Sqlite(p) => {
            let mut tx = p.begin().await?;
            insert_contexts!(tx, Sqlite, contexts);
            insert_events!(tx, Sqlite, rows);
            if let (Some(log_id), false) = (log_id, chunks.is_empty()) {
                insert_chunk_roots!(&mut *tx, Sqlite, log_id, chunks);
            }
            tx.commit().await?;
        }
        Database::Postgres(p) => {
            let mut tx = p.begin().await?;
            // A locked or stalled table must turn into an error (503), not
            // an append that never returns.
            sqlx::query("SET LOCAL statement_timeout = '5s'")
                .execute(&mut *tx)
                .await?;
            insert_contexts!(tx, Postgres, contexts);
            insert_events!(tx, Postgres, rows);
            if let (Some(log_id), false) = (log_id, chunks.is_empty()) {
                insert_chunk_roots!(&mut *tx, Postgres, log_id, chunks);
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Whether an event id is stored (to settle a commit whose outcome is unknown).
pub async fn event_exists(db: &Database, event_id: &str) -> Result<bool, AuditError> {
    let sql = "SELECT 1 FROM audit_events WHERE event_id = $1";
    Ok(match db {
        Database::Sqlite(p) => sqlx::query(sql)
            .bind(event_id)
            .fetch_optional(p)
            .await?
            .is_some(),
        Database::Postgres(p) => sqlx::query(sql)
            .bind(event_id)
            .fetch_optional(p)
            .await?
            .is_some(),
    })
}

/// One event by id.
pub async fn event_by_id(db: &Database, event_id: &str) -> Result<Option<StoredEvent>, AuditError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE event_id = $1");
    Ok(match db {
        Database::Sqlite(p) => match sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_optional(p)
            .await?
        {
            Some(r) => Some(stored_from_row!(&r)),
            None => None,
        },
        Database::Postgres(p) => match sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_optional(p)
            .await?
        {
            Some(r) => Some(stored_from_row!(&r)),
            None => None,
        },
    })
}

/// Events of one log with `from <= seq < to`, in order.
pub async fn events_range(
    db: &Database,
    log_id: &str,
    from: u64,
    to: u64,
) -> Result<Vec<StoredEvent>, AuditError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE log_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq"
    );
    let mut out = Vec::new();
    match db {
        Database::Sqlite(p) => {
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(log_id)
                .bind(from as i64)
                .bind(to as i64)
                .fetch(p);
            while let Some(r) = rows.try_next().await? {
                out.push(stored_from_row!(&r));
            }
        }
        Database::Postgres(p) => {
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(log_id)
                .bind(from as i64)
                .bind(to as i64)
                .fetch(p);
            while let Some(r) = rows.try_next().await? {
                out.push(stored_from_row!(&r));
            }
        }
    }
    Ok(out)
}

/// Stores a signed checkpoint with the writer's frontier.
pub async fn insert_checkpoint(
    db: &Database,
    cp: &SignedCheckpoint,
    frontier: &[u8],
) -> Result<(), AuditError> {
    let sig =
        hex::decode(&cp.signature).map_err(|_| AuditError::Corrupt("signature is not hex"))?;
    let sql = "INSERT INTO audit_checkpoints (log_id, tree_size, root, time_ms, public_key, signature, frontier) \
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (log_id, tree_size) DO NOTHING";
    macro_rules! run {
        ($p:expr) => {
            sqlx::query(sql)
                .bind(&cp.log_id)
                .bind(cp.tree_size as i64)
                .bind(cp.root.to_vec())
                .bind(cp.time_ms)
                .bind(&cp.public_key)
                .bind(sig)
                .bind(frontier.to_vec())
                .execute($p)
                .await?
        };
    }
    match db {
        Database::Sqlite(p) => {
            run!(p);
        }
        Database::Postgres(p) => {
            run!(p);
        }
    }
    Ok(())
}

macro_rules! checkpoint_from_row {
    ($r:expr) => {{
        let r = $r;
        let size: i64 = r.try_get(1)?;
        SignedCheckpoint {
            log_id: r.try_get(0)?,
            tree_size: size as u64,
            root: to_hash(r.try_get::<&[u8], _>(2)?).unwrap_or([0; 32]),
            time_ms: r.try_get(3)?,
            public_key: r.try_get(4)?,
            signature: hex::encode(r.try_get::<&[u8], _>(5)?),
        }
    }};
}

/// Every checkpoint (of one log, or of all), by log then size.
pub async fn checkpoints(
    db: &Database,
    log_id: Option<&str>,
) -> Result<Vec<SignedCheckpoint>, AuditError> {
    let sql = "SELECT log_id, tree_size, root, time_ms, public_key, signature FROM audit_checkpoints \
               WHERE ($1 IS NULL OR log_id = $1) ORDER BY log_id, tree_size";
    let mut out = Vec::new();
    match db {
        Database::Sqlite(p) => {
            for r in sqlx::query(sql).bind(log_id).fetch_all(p).await? {
                out.push(checkpoint_from_row!(&r));
            }
        }
        Database::Postgres(p) => {
            let sql = sql.replace("$1 IS NULL", "$1::text IS NULL");
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(log_id)
                .fetch_all(p)
                .await?
            {
                out.push(checkpoint_from_row!(&r));
            }
        }
    }
    Ok(out)
}

/// The newest checkpoint of a log.
pub async fn latest_checkpoint(
    db: &Database,
    log_id: &str,
) -> Result<Option<SignedCheckpoint>, AuditError> {
    let sql = "SELECT log_id, tree_size, root, time_ms, public_key, signature FROM audit_checkpoints \
               WHERE log_id = $1 ORDER BY tree_size DESC LIMIT 1";
    Ok(match db {
        Database::Sqlite(p) => match sqlx::query(sql).bind(log_id).fetch_optional(p).await? {
            Some(r) => Some(checkpoint_from_row!(&r)),
            None => None,
        },
        Database::Postgres(p) => match sqlx::query(sql).bind(log_id).fetch_optional(p).await? {
            Some(r) => Some(checkpoint_from_row!(&r)),
            None => None,
        },
    })
}

/// The ids of the logs registered or checkpointed. A log's events name it
/// too, but verification meets those as it reads them: listing them here
/// would read the whole events index first.
pub async fn registered_log_ids(db: &Database) -> Result<Vec<String>, AuditError> {
    let sql = "SELECT log_id FROM audit_logs UNION SELECT log_id FROM audit_checkpoints ORDER BY 1";
    let mut out = Vec::new();
    match db {
        Database::Sqlite(p) => {
            for r in sqlx::query(sql).fetch_all(p).await? {
                out.push(r.try_get(0)?);
            }
        }
        Database::Postgres(p) => {
            for r in sqlx::query(sql).fetch_all(p).await? {
                out.push(r.try_get(0)?);
            }
        }
    }
    Ok(out)
}

/// The subject index of one log, as verification sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexState {
    /// The watermark (`None`: the log has no watermark row).
    pub watermark: Option<u64>,
    /// Rows of complete passes (every generation but the watermark's;
    /// every row when there is no watermark).
    pub rows: u64,
    /// Rows of a pass in progress: its generation is the watermark (a
    /// pass is written under the watermark it starts from). Counted by an
    /// equality on the key's prefix, which both databases answer from the
    /// index.
    pub in_progress: u64,
}

/// Per log: its subject index's [`IndexState`], read in one snapshot (a
/// concurrent pass cannot make the parts disagree).
///
/// An index holding one log (an SQLite file's usual case) is counted whole:
/// SQLite answers a bare `COUNT(*)` from its pages' cell counts, ~1 ms for
/// a million rows against ~90 ms for stepping through them by log id; the
/// rows of a pass in progress (one generation: a prefix of the key) are
/// counted apart. Only an index holding several logs is counted per log.
pub async fn subject_index_state(
    db: &Database,
) -> Result<BTreeMap<String, IndexState>, AuditError> {
    const MARKS: &str = "SELECT w.log_id, w.indexed_to, \
                                (SELECT COUNT(*) FROM audit_event_subjects s \
                                 WHERE s.log_id = w.log_id AND s.gen = w.indexed_to) \
                         FROM audit_subject_watermarks w";
    // An index from before generations (an SQLite main file from before the
    // audit log had a file of its own, verified in place) was only ever
    // written whole: nothing in progress.
    const MARKS_BEFORE_GENERATIONS: &str =
        "SELECT log_id, indexed_to, 0 FROM audit_subject_watermarks";
    const WHOLE: &str = "SELECT (SELECT COUNT(*) FROM audit_event_subjects), \
                                (SELECT MIN(log_id) FROM audit_event_subjects), \
                                (SELECT MAX(log_id) FROM audit_event_subjects)";
    const PER_LOG: &str = "SELECT log_id, COUNT(*) FROM audit_event_subjects GROUP BY log_id";
    macro_rules! read {
        ($tx:expr, $marks:expr) => {{
            let marks: Vec<(String, i64, i64)> =
                sqlx::query_as($marks).fetch_all(&mut *$tx).await?;
            let (total, first, last): (i64, Option<String>, Option<String>) =
                sqlx::query_as(WHOLE).fetch_one(&mut *$tx).await?;
            let rows: Vec<(String, i64)> = match (first, last) {
                (Some(first), Some(last)) if first == last => vec![(first, total)],
                (Some(_), Some(_)) => sqlx::query_as(PER_LOG).fetch_all(&mut *$tx).await?,
                _ => Vec::new(),
            };
            $tx.rollback().await?;
            (marks, rows)
        }};
    }
    let (marks, rows) = match db {
        // A deferred transaction: its first read fixes the snapshot (WAL).
        Database::Sqlite(p) => {
            let mut tx = p.begin().await?;
            let generations: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('audit_event_subjects') \
                 WHERE name = 'gen')",
            )
            .fetch_one(&mut *tx)
            .await?;
            let marks = if generations {
                MARKS
            } else {
                MARKS_BEFORE_GENERATIONS
            };
            read!(tx, marks)
        }
        Database::Postgres(p) => {
            let mut tx = p.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            // Migration 0002 gave every PostgreSQL index its generations.
            read!(tx, MARKS)
        }
    };
    let count = |n: i64| n.max(0) as u64;
    let mut rows: BTreeMap<String, u64> = rows.into_iter().map(|(l, n)| (l, count(n))).collect();
    let mut out: BTreeMap<String, IndexState> = marks
        .into_iter()
        .map(|(log, to, in_pass)| {
            let all = rows.remove(&log).unwrap_or(0);
            let in_progress = count(in_pass);
            let state = IndexState {
                watermark: Some(count(to)),
                rows: all.saturating_sub(in_progress),
                in_progress,
            };
            (log, state)
        })
        .collect();
    out.extend(rows.into_iter().map(|(log, n)| {
        let state = IndexState {
            watermark: None,
            rows: n,
            in_progress: 0,
        };
        (log, state)
    }));
    Ok(out)
}

/// Most events indexed by one pass ([`plan_index_pass`]).
pub const INDEX_BATCH_EVENTS: i64 = 50_000;
/// Subject rows after which a pass stops taking events (it always takes at
/// least one whole event): bounds its memory when batch matches name
/// 100,000 subjects each.
pub const INDEX_BATCH_ROWS: u64 = 262_144;

/// Subject rows written per transaction of an index pass
/// ([`index_slice`]): what an append may wait behind while a pass runs.
pub const INDEX_SLICE_ROWS: usize = 16_384;

/// What one [`index_subjects`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indexed {
    /// The new watermark: the first sequence number not indexed.
    pub to: u64,
    /// Index rows written.
    pub rows: u64,
}

/// One pass of the subject index of a log: the rows of its events
/// `from..to`, sorted by subject, to be written under generation `from`
/// (so that they land at the end of the index, after every earlier
/// generation; see migration 0002 of the audit file), a slice per
/// transaction ([`index_slice`]).
#[derive(Debug)]
pub struct IndexPass {
    log_id: String,
    from: i64,
    to: i64,
    refs: Vec<(String, i64)>,
    next: usize,
}

impl IndexPass {
    /// The watermark once the pass is complete.
    pub fn to(&self) -> u64 {
        self.to.max(0) as u64
    }

    /// Index rows the pass writes in all.
    pub fn rows(&self) -> u64 {
        self.refs.len() as u64
    }
}

/// What one [`index_slice`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slice {
    /// A slice was written; more remain.
    More,
    /// The pass is complete and the watermark moved.
    Done(Indexed),
    /// The watermark moved since the pass was planned (another pass
    /// finished first): nothing was written; plan again.
    Superseded,
}

/// Plans the next pass of the subject index of `log_id` from its watermark:
/// reads the `subjects` column of at most [`INDEX_BATCH_EVENTS`] events at
/// and after it (past the first event, until [`INDEX_BATCH_ROWS`] rows) and
/// sorts their rows. Reads only: nothing is locked while the rows are
/// gathered and sorted. A pass with no rows means the index is current.
pub async fn plan_index_pass(db: &Database, log_id: &str) -> Result<IndexPass, AuditError> {
    let mark = "SELECT indexed_to FROM audit_subject_watermarks WHERE log_id = $1";
    let tail = "SELECT seq, subjects FROM audit_events WHERE log_id = $1 AND seq >= $2 \
                ORDER BY seq LIMIT $3";
    macro_rules! run {
        ($p:expr) => {{
            let Some(from) = sqlx::query_scalar::<_, i64>(mark)
                .bind(log_id)
                .fetch_optional($p)
                .await?
            else {
                return Err(AuditError::Corrupt(
                    "the log has no subject-index watermark",
                ));
            };
            let mut to = from;
            let mut refs: Vec<(String, i64)> = Vec::new();
            let mut rows = sqlx::query(tail)
                .bind(log_id)
                .bind(from)
                .bind(INDEX_BATCH_EVENTS)
                .fetch($p);
            while let Some(r) = rows.try_next().await? {
                let seq: i64 = r.try_get(0)?;
                let subjects: &str = r.try_get(1)?;
                refs.extend(
                    subjects
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(|s| (s.to_owned(), seq)),
                );
                to = seq + 1;
                if refs.len() as u64 >= INDEX_BATCH_ROWS {
                    break;
                }
            }
            (from, to, refs)
        }};
    }
    let (from, to, mut refs) = match db {
        Database::Sqlite(p) => run!(p),
        Database::Postgres(p) => run!(p),
    };
    // ~300k rows for three batch matches: sorted off the async workers.
    let refs = tokio::task::spawn_blocking(move || {
        refs.sort_unstable();
        refs.dedup();
        refs
    })
    .await
    .map_err(|_| AuditError::Io(std::io::Error::other("sorting subject rows failed")))?;
    Ok(IndexPass {
        log_id: log_id.to_owned(),
        from,
        to,
        refs,
        next: 0,
    })
}

/// Writes the next slice of `pass` (at most `max_rows` rows) in one
/// transaction; the last slice also moves the log's watermark to the end of
/// the pass. An empty pass only reports its end.
///
/// Each transaction starts by locking the log's watermark row (a write, so
/// SQLite takes its write lock first) and stops, writing nothing, if the
/// watermark is no longer where the pass started. Rows are inserted with
/// `ON CONFLICT DO NOTHING`, so a pass interrupted between slices (a crash,
/// a failed write) is simply planned and written again. Until the last
/// slice commits, the rows already written are a pass in progress: above
/// the watermark, which searches cover by reading the events themselves,
/// and which verification counts apart (see [`subject_index_state`]).
pub async fn index_slice(
    db: &Database,
    pass: &mut IndexPass,
    max_rows: usize,
) -> Result<Slice, AuditError> {
    if pass.refs.is_empty() {
        return Ok(Slice::Done(Indexed {
            to: pass.to(),
            rows: 0,
        }));
    }
    let lock = "UPDATE audit_subject_watermarks SET indexed_to = indexed_to WHERE log_id = $1 \
                RETURNING indexed_to";
    let set = "UPDATE audit_subject_watermarks SET indexed_to = $2 WHERE log_id = $1";
    let end = pass.refs.len().min(pass.next + max_rows.max(1));
    let last = end == pass.refs.len();
    let (log_id, from, to) = (pass.log_id.as_str(), pass.from, pass.to);
    let slice = &pass.refs[pass.next..end];
    macro_rules! run {
        ($p:expr, $Db:ty) => {{
            let mut tx = $p.begin().await?;
            let now = sqlx::query_scalar::<_, i64>(lock)
                .bind(log_id)
                .fetch_optional(&mut *tx)
                .await?;
            if now != Some(from) {
                tx.rollback().await?;
                return Ok(Slice::Superseded);
            }
            for chunk in slice.chunks(INDEX_CHUNK) {
                let mut qb = QueryBuilder::<$Db>::new(
                    "INSERT INTO audit_event_subjects (log_id, gen, subject, seq) ",
                );
                qb.push_values(chunk, |mut b, (s, q)| {
                    b.push_bind(log_id)
                        .push_bind(from)
                        .push_bind(s.as_str())
                        .push_bind(*q);
                });
                qb.push(" ON CONFLICT DO NOTHING");
                qb.build().execute(&mut *tx).await?;
            }
            if last {
                sqlx::query(set)
                    .bind(log_id)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }};
    }
    match db {
        Database::Sqlite(p) => run!(p, Sqlite),
        Database::Postgres(p) => run!(p, Postgres),
    }
    pass.next = end;
    Ok(if last {
        Slice::Done(Indexed {
            to: pass.to(),
            rows: pass.rows(),
        })
    } else {
        Slice::More
    })
}

/// Brings the subject index of `log_id` forward from its watermark by one
/// whole pass ([`plan_index_pass`], then every [`index_slice`]), planning
/// again if another pass finished first.
pub async fn index_subjects(db: &Database, log_id: &str) -> Result<Indexed, AuditError> {
    loop {
        let mut pass = plan_index_pass(db, log_id).await?;
        loop {
            match index_slice(db, &mut pass, INDEX_SLICE_ROWS).await? {
                Slice::More => {}
                Slice::Done(done) => return Ok(done),
                Slice::Superseded => break,
            }
        }
    }
}

/// The audit log's tables with their columns in the audit file and what to
/// select from the main file's table for them (empty: the same columns), in
/// the order [`move_legacy_sqlite`] copies them.
const AUDIT_TABLES: [(&str, &str, &str); 5] = [
    ("audit_logs", "log_id, created_ms, public_key", ""),
    ("audit_events", EVENT_COLUMNS, ""),
    // The main file's index predates generations: all of it is generation 0.
    (
        "audit_event_subjects",
        "log_id, gen, subject, seq",
        "log_id, 0, subject, seq",
    ),
    (
        "audit_checkpoints",
        "log_id, tree_size, root, time_ms, public_key, signature, frontier",
        "",
    ),
    ("audit_subject_watermarks", "log_id, indexed_to", ""),
];

/// Moves an audit log written into the main SQLite file (before the audit
/// file existed) into the audit file, then drops the tables from the main
/// file. Copying happens in one transaction of the audit file and only into
/// an empty audit log; a crash between the copy and the drop leaves both
/// with the same events, which the next start recognises and finishes.
pub(crate) async fn move_legacy_sqlite(
    main: &SqlitePool,
    audit: &SqlitePool,
    main_path: &str,
    audit_path: &str,
) -> Result<(), StorageError> {
    let legacy: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
    )
    .fetch_optional(main)
    .await?;
    if legacy.is_none() {
        return Ok(());
    }
    let problem = |problem: String| StorageError::AuditMove {
        main: main_path.to_owned(),
        audit: audit_path.to_owned(),
        problem,
    };
    let mut conn = audit.acquire().await?;
    sqlx::query("ATTACH DATABASE ?1 AS legacy")
        .bind(main_path)
        .execute(&mut *conn)
        .await?;
    let copied = copy_legacy_audit(&mut conn).await;
    let detached = sqlx::query("DETACH DATABASE legacy")
        .execute(&mut *conn)
        .await;
    if copied.is_err() || detached.is_err() {
        // Not back into the pool with the main file still attached.
        let _ = conn.close().await;
    }
    match copied? {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "moved the audit log into its own file"),
        Err(p) => return Err(problem(p)),
    }
    detached?;
    // IMMEDIATE: a deferred transaction would read the schema first and
    // then fail at once (SQLITE_BUSY, no waiting) if another instance
    // dropped the tables in between.
    let mut main_conn = main.acquire().await?;
    let mut tx = sqlx::Connection::begin_with(&mut *main_conn, "BEGIN IMMEDIATE").await?;
    for (table, _, _) in AUDIT_TABLES.iter().rev() {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The copy of [`move_legacy_sqlite`], on a connection with the main file
/// attached as `legacy`: `Ok(Ok(events copied))`, or `Ok(Err(why not))`
/// when the two files disagree.
async fn copy_legacy_audit(
    conn: &mut sqlx::SqliteConnection,
) -> Result<Result<i64, String>, StorageError> {
    let count = |db: &str, table: &str| format!("SELECT count(*) FROM {db}.{table}");
    // IMMEDIATE: two instances starting on one file take turns; the second
    // finds the log copied.
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
    // Looked at again inside the transaction: the other instance may have
    // moved the log and dropped the old tables while this one waited.
    let still_there: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy.sqlite_master WHERE type = 'table' \
         AND name IN ('audit_logs', 'audit_events', 'audit_checkpoints')",
    )
    .fetch_one(&mut *tx)
    .await?;
    if still_there < 3 {
        tx.rollback().await?;
        return Ok(Ok(0));
    }
    let mut counts = Vec::new();
    for table in ["audit_logs", "audit_events", "audit_checkpoints"] {
        let here: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("main", table)))
            .fetch_one(&mut *tx)
            .await?;
        let there: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("legacy", table)))
            .fetch_one(&mut *tx)
            .await?;
        counts.push((table, here, there));
    }
    let (_, logs_here, logs_there) = counts[0];
    if logs_there == 0 {
        tx.rollback().await?;
        return Ok(Ok(0));
    }
    if logs_here > 0 {
        tx.rollback().await?;
        // Copied before, and the drop did not happen: fine if identical.
        let differ: Vec<String> = counts
            .iter()
            .filter(|(_, here, there)| here != there)
            .map(|(t, here, there)| {
                format!("{t}: {there} rows in the main file, {here} in the audit file")
            })
            .collect();
        return Ok(if differ.is_empty() {
            Ok(0)
        } else {
            Err(format!(
                "both files hold an audit log and they differ ({}); keep the right one and move the other away",
                differ.join("; ")
            ))
        });
    }
    for (table, columns, from) in AUDIT_TABLES {
        let from = if from.is_empty() { columns } else { from };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO main.{table} ({columns}) SELECT {from} FROM legacy.{table}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(counts[1].2))
}
