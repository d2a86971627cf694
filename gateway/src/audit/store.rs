//! The audit tables, once per backend.

use futures_util::TryStreamExt;
use sqlx::{Postgres, QueryBuilder, Row as _, Sqlite};

use super::AuditError;
use super::checkpoint::SignedCheckpoint;
use super::merkle::{Frontier, Hash};
use super::record::Record;
use crate::storage::Database;

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

pub(crate) const EVENT_COLUMNS: &str = "log_id, seq, event_id, time_ms, kind, department, \
     client_id, datasets, purpose, decision, status, subjects, body, leaf_hash, prev_hash, hash";

/// Rows per multi-row INSERT statement (16 binds each).
const INSERT_CHUNK: usize = 500;

pub(crate) fn to_hash(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

macro_rules! stored_from_row {
    ($row:expr) => {{
        let row = $row;
        let seq: i64 = row.try_get(1)?;
        let bad = || sqlx::Error::Decode("audit row has a hash that is not 32 bytes".into());
        StoredEvent {
            record: Record {
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
            },
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
    match db {
        Database::Sqlite(p) => {
            sqlx::query(sql)
                .bind(log_id)
                .bind(now_ms)
                .bind(public_key)
                .execute(p)
                .await?;
        }
        Database::Postgres(p) => {
            sqlx::query(sql)
                .bind(log_id)
                .bind(now_ms)
                .bind(public_key)
                .execute(p)
                .await?;
        }
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

/// Inserts events and their subject index rows (inside a transaction the
/// caller commits).
async fn insert_sqlite(
    tx: &mut sqlx::SqliteConnection,
    rows: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO audit_events ({EVENT_COLUMNS}) "));
        qb.push_values(chunk, |mut b, e| {
            let r = &e.record;
            b.push_bind(r.log_id.clone())
                .push_bind(r.seq as i64)
                .push_bind(r.event_id.clone())
                .push_bind(r.time_ms)
                .push_bind(r.kind.clone())
                .push_bind(r.department.clone())
                .push_bind(r.client_id.clone())
                .push_bind(r.datasets.clone())
                .push_bind(r.purpose.clone())
                .push_bind(r.decision.clone())
                .push_bind(r.status)
                .push_bind(r.subjects.clone())
                .push_bind(r.body.clone())
                .push_bind(e.leaf_hash.to_vec())
                .push_bind(e.prev_hash.to_vec())
                .push_bind(e.hash.to_vec());
        });
        qb.build().execute(&mut *tx).await?;
    }
    let subjects: Vec<(&str, &str, i64)> = rows
        .iter()
        .flat_map(|e| {
            e.record
                .subjects
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(move |s| (s, e.record.log_id.as_str(), e.record.seq as i64))
        })
        .collect();
    for chunk in subjects.chunks(INSERT_CHUNK * 5) {
        let mut qb =
            QueryBuilder::<Sqlite>::new("INSERT INTO audit_event_subjects (subject, log_id, seq) ");
        qb.push_values(chunk, |mut b, (s, l, q)| {
            b.push_bind(s.to_string())
                .push_bind(l.to_string())
                .push_bind(*q);
        });
        qb.build().execute(&mut *tx).await?;
    }
    Ok(())
}

async fn insert_pg(tx: &mut sqlx::PgConnection, rows: &[StoredEvent]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("INSERT INTO audit_events ({EVENT_COLUMNS}) "));
        qb.push_values(chunk, |mut b, e| {
            let r = &e.record;
            b.push_bind(r.log_id.clone())
                .push_bind(r.seq as i64)
                .push_bind(r.event_id.clone())
                .push_bind(r.time_ms)
                .push_bind(r.kind.clone())
                .push_bind(r.department.clone())
                .push_bind(r.client_id.clone())
                .push_bind(r.datasets.clone())
                .push_bind(r.purpose.clone())
                .push_bind(r.decision.clone())
                .push_bind(r.status)
                .push_bind(r.subjects.clone())
                .push_bind(r.body.clone())
                .push_bind(e.leaf_hash.to_vec())
                .push_bind(e.prev_hash.to_vec())
                .push_bind(e.hash.to_vec());
        });
        qb.build().execute(&mut *tx).await?;
    }
    let subjects: Vec<(&str, &str, i64)> = rows
        .iter()
        .flat_map(|e| {
            e.record
                .subjects
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(move |s| (s, e.record.log_id.as_str(), e.record.seq as i64))
        })
        .collect();
    for chunk in subjects.chunks(INSERT_CHUNK * 5) {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit_event_subjects (subject, log_id, seq) ",
        );
        qb.push_values(chunk, |mut b, (s, l, q)| {
            b.push_bind(s.to_string())
                .push_bind(l.to_string())
                .push_bind(*q);
        });
        qb.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Writes a batch of events in one transaction and commits it (SQLite with
/// `synchronous=FULL`: on disk when this returns).
pub async fn append_batch(db: &Database, rows: &[StoredEvent]) -> Result<(), AuditError> {
    match db {
        Database::Sqlite(p) => {
            let mut tx = p.begin().await?;
            insert_sqlite(&mut tx, rows).await?;
            tx.commit().await?;
        }
        Database::Postgres(p) => {
            let mut tx = p.begin().await?;
            // A locked or stalled table must turn into an error (503), not
            // an append that never returns.
            sqlx::query("SET LOCAL statement_timeout = '5s'")
                .execute(&mut *tx)
                .await?;
            insert_pg(&mut tx, rows).await?;
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

/// The ids of every log: registered, with events, or with checkpoints.
pub async fn log_ids(db: &Database) -> Result<Vec<String>, AuditError> {
    let sql = "SELECT log_id FROM audit_logs UNION SELECT DISTINCT log_id FROM audit_checkpoints \
               UNION SELECT DISTINCT log_id FROM audit_events ORDER BY 1";
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

/// Rows in the subject index.
pub async fn subject_index_rows(db: &Database) -> Result<u64, AuditError> {
    let sql = "SELECT COUNT(*) FROM audit_event_subjects";
    let n: i64 = match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
    };
    Ok(n as u64)
}
