//! The record store's SQLite queries.
//!
//! Sets of keys and IDs travel as one JSON array parameter expanded by
//! `json_each` (static SQL, one prepared statement, no variable-count limit);
//! rows are written with multi-row `VALUES` statements of [`ROWS_PER_INSERT`]
//! rows. Write transactions start with `BEGIN IMMEDIATE` so that the
//! read-compare-write of an upsert holds the write lock from the start (a
//! deferred transaction could fail with SQLITE_BUSY when upgrading).

use std::collections::HashMap;

use adapters::domain::IdNumber;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::{
    Existing, Plan, Prepared, PublishSummary, RECORD_COLUMNS, RecordText, RecordsError,
    StoredRecord, Withdrawal, WriteCtx, plan, stored_record,
};

type Tx = Transaction<'static, Sqlite>;

/// Rows per multi-row INSERT: 10 parameters each, well below SQLite's 32,766.
const ROWS_PER_INSERT: usize = 500;

/// Copies current versions (ids in the JSON array ?1) into the history table.
const COPY_TO_HISTORY: &str = "INSERT INTO record_versions \
     (record_id, version, region, withdrawn, content_hash, payload, published_by, department, \
      published_at, publish_id) \
     SELECT id, version, region, withdrawn, content_hash, payload, published_by, department, \
      published_at, publish_id \
     FROM records WHERE id IN (SELECT value FROM json_each(?1))";

pub(super) async fn begin(pool: &SqlitePool) -> Result<Tx, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

pub(super) fn json_array<T: serde::Serialize>(items: &[T]) -> Result<String, RecordsError> {
    serde_json::to_string(items).map_err(|_| RecordsError::Corrupt("cannot encode key list"))
}

/// Upserts one prepared chunk inside the publish transaction.
pub(super) async fn upsert(
    tx: &mut Tx,
    ctx: &WriteCtx,
    prepared: Vec<Prepared>,
) -> Result<PublishSummary, RecordsError> {
    let keys: Vec<&str> = prepared.iter().map(|p| p.natural_key.as_str()).collect();
    let rows = sqlx::query(
        "SELECT id, natural_key, version, withdrawn, content_hash FROM records \
         WHERE dataset = ?1 AND natural_key IN (SELECT value FROM json_each(?2))",
    )
    .bind(&ctx.dataset)
    .bind(json_array(&keys)?)
    .fetch_all(&mut **tx)
    .await?;
    let mut existing = HashMap::with_capacity(rows.len());
    for row in rows {
        existing.insert(
            row.try_get::<String, _>(1)?,
            Existing {
                id: row.try_get(0)?,
                version: row.try_get(2)?,
                withdrawn: row.try_get(3)?,
                hash: row.try_get(4)?,
            },
        );
    }
    let plans = plan(&prepared, &existing);

    let mut summary = PublishSummary::default();
    let mut updated_ids = Vec::new();
    let mut writes: Vec<(&Prepared, i32)> = Vec::with_capacity(prepared.len());
    for (p, pl) in prepared.iter().zip(&plans) {
        match pl {
            Plan::Insert => {
                summary.inserted += 1;
                writes.push((p, 1));
            }
            Plan::Update { id, version } => {
                summary.updated += 1;
                updated_ids.push(*id);
                writes.push((p, *version));
            }
            Plan::Unchanged => summary.unchanged += 1,
        }
    }
    if writes.is_empty() {
        return Ok(summary);
    }
    if !updated_ids.is_empty() {
        let ids = json_array(&updated_ids)?;
        sqlx::query(COPY_TO_HISTORY)
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "DELETE FROM record_subjects WHERE record_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    }
    write_rows(tx, ctx, &writes, true).await?;
    Ok(summary)
}

/// Inserts records that must not exist (bulk seed).
pub(super) async fn insert_new(
    tx: &mut Tx,
    ctx: &WriteCtx,
    prepared: &[Prepared],
) -> Result<(), RecordsError> {
    let writes: Vec<(&Prepared, i32)> = prepared.iter().map(|p| (p, 1)).collect();
    write_rows(tx, ctx, &writes, false).await
}

/// Writes current versions (insert or, with `upsert`, replace) and their
/// subject rows.
async fn write_rows(
    tx: &mut Tx,
    ctx: &WriteCtx,
    writes: &[(&Prepared, i32)],
    upsert: bool,
) -> Result<(), RecordsError> {
    let publish_id: &[u8] = ctx.publish_id.as_bytes();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(writes.len());
    for part in writes.chunks(ROWS_PER_INSERT) {
        let mut sql = String::with_capacity(200 + part.len() * 26 + 400);
        sql.push_str(
            "INSERT INTO records (dataset, natural_key, version, region, withdrawn, \
             content_hash, payload, published_by, department, published_at, publish_id) VALUES ",
        );
        for i in 0..part.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,0,?,?,?,?,?,?)");
        }
        if upsert {
            sql.push_str(
                " ON CONFLICT (dataset, natural_key) DO UPDATE SET version = excluded.version, \
                 region = excluded.region, withdrawn = 0, content_hash = excluded.content_hash, \
                 payload = excluded.payload, published_by = excluded.published_by, \
                 department = excluded.department, published_at = excluded.published_at, \
                 publish_id = excluded.publish_id",
            );
        }
        sql.push_str(" RETURNING id, natural_key");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (p, version) in part {
            q = q
                .bind(&ctx.dataset)
                .bind(&p.natural_key)
                .bind(*version)
                .bind(p.region.as_str())
                .bind(&p.hash[..])
                .bind(&p.payload)
                .bind(&ctx.client_id)
                .bind(&ctx.department)
                .bind(ctx.published_at_ms)
                .bind(publish_id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            ids.insert(row.try_get(1)?, row.try_get(0)?);
        }
    }

    // Subject rows as one JSON array of [subject, record id] pairs per
    // statement: ID numbers are plain ASCII, so the array is cheap to build.
    let mut batch = String::with_capacity(64 * 1024);
    let mut in_batch = 0usize;
    for (p, _) in writes {
        let id = *ids
            .get(&p.natural_key)
            .ok_or(RecordsError::Corrupt("inserted row not returned"))?;
        for s in &p.subjects {
            batch.push(if in_batch == 0 { '[' } else { ',' });
            batch.push_str("[\"");
            batch.push_str(s.as_str());
            batch.push_str("\",");
            batch.push_str(&id.to_string());
            batch.push(']');
            in_batch += 1;
            if in_batch == 5_000 {
                insert_subjects(tx, ctx, &mut batch).await?;
                in_batch = 0;
            }
        }
    }
    if in_batch > 0 {
        insert_subjects(tx, ctx, &mut batch).await?;
    }
    Ok(())
}

async fn insert_subjects(
    tx: &mut Tx,
    ctx: &WriteCtx,
    batch: &mut String,
) -> Result<(), RecordsError> {
    batch.push(']');
    sqlx::query(
        "INSERT INTO record_subjects (subject, dataset, record_id) \
         SELECT value ->> 0, ?1, value ->> 1 FROM json_each(?2)",
    )
    .bind(&ctx.dataset)
    .bind(batch.as_str())
    .execute(&mut **tx)
    .await?;
    batch.clear();
    Ok(())
}

pub(super) async fn withdraw(
    pool: &SqlitePool,
    ctx: &WriteCtx,
    natural_key: &str,
) -> Result<Withdrawal, RecordsError> {
    let mut tx = begin(pool).await?;
    let row =
        sqlx::query("SELECT id, withdrawn FROM records WHERE dataset = ?1 AND natural_key = ?2")
            .bind(&ctx.dataset)
            .bind(natural_key)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(row) = row else {
        return Ok(Withdrawal::NotFound);
    };
    let id: i64 = row.try_get(0)?;
    if row.try_get::<bool, _>(1)? {
        return Ok(Withdrawal::AlreadyWithdrawn);
    }
    sqlx::query(COPY_TO_HISTORY)
        .bind(format!("[{id}]"))
        .execute(&mut *tx)
        .await?;
    let version: i32 = sqlx::query_scalar(
        "UPDATE records SET version = version + 1, withdrawn = 1, published_by = ?1, \
         department = ?2, published_at = ?3, publish_id = ?4 WHERE id = ?5 RETURNING version",
    )
    .bind(&ctx.client_id)
    .bind(&ctx.department)
    .bind(ctx.published_at_ms)
    .bind(&ctx.publish_id.as_bytes()[..])
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Withdrawal::Withdrawn {
        version: u32::try_from(version).map_err(|_| RecordsError::Corrupt("version"))?,
    })
}

fn decode(row: &SqliteRow, base: usize) -> Result<RecordText, RecordsError> {
    stored_record(
        row.try_get(base)?,
        row.try_get(base + 1)?,
        row.try_get(base + 2)?,
        row.try_get(base + 3)?,
        row.try_get(base + 4)?,
        row.try_get(base + 5)?,
        row.try_get(base + 6)?,
        row.try_get(base + 7)?,
        row.try_get(base + 8)?,
    )
}

pub(super) async fn get(
    pool: &SqlitePool,
    dataset: &str,
    natural_key: &str,
) -> Result<Option<StoredRecord>, RecordsError> {
    let sql =
        format!("SELECT {RECORD_COLUMNS} FROM records WHERE dataset = ?1 AND natural_key = ?2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(dataset)
        .bind(natural_key)
        .fetch_optional(pool)
        .await?;
    row.map(|r| decode(&r, 0)?.parsed()).transpose()
}

pub(super) async fn history(
    pool: &SqlitePool,
    dataset: &str,
    natural_key: &str,
) -> Result<Vec<StoredRecord>, RecordsError> {
    let rows = sqlx::query(
        "SELECT r.dataset, r.natural_key, v.version, v.region, v.withdrawn, v.payload, \
                v.published_by, v.department, v.published_at \
         FROM records r JOIN record_versions v ON v.record_id = r.id \
         WHERE r.dataset = ?1 AND r.natural_key = ?2 \
         UNION ALL \
         SELECT dataset, natural_key, version, region, withdrawn, payload, \
                published_by, department, published_at \
         FROM records WHERE dataset = ?1 AND natural_key = ?2 \
         ORDER BY 3",
    )
    .bind(dataset)
    .bind(natural_key)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| decode(r, 0)?.parsed()).collect()
}

/// The current, not withdrawn records about the IDs of the JSON array ?1
/// (with their index in it) in the datasets of the JSON array ?2. `CROSS
/// JOIN` pins the join order: input IDs outermost, then the subject index,
/// then the record by rowid.
pub(super) const MATCH_SQL: &str = "SELECT j.key, r.dataset, r.natural_key, r.version, r.region, r.withdrawn, r.payload, \
            r.published_by, r.department, r.published_at \
     FROM json_each(?1) AS j \
     CROSS JOIN record_subjects AS s ON s.subject = j.value \
     CROSS JOIN records AS r ON r.id = s.record_id \
     WHERE s.dataset IN (SELECT value FROM json_each(?2)) AND r.withdrawn = 0";

/// Current, not withdrawn records of each ID in `datasets`, as (index into
/// `ids`, record) ([`MATCH_SQL`] on the pool).
pub(super) async fn match_ids(
    pool: &SqlitePool,
    ids: &[IdNumber],
    datasets: &[String],
) -> Result<Vec<(usize, RecordText)>, RecordsError> {
    let ids: Vec<&str> = ids.iter().map(IdNumber::as_str).collect();
    let rows = sqlx::query(MATCH_SQL)
        .bind(json_array(&ids)?)
        .bind(json_array(datasets)?)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let i: i64 = r.try_get(0)?;
            let i = usize::try_from(i).map_err(|_| RecordsError::Corrupt("match index"))?;
            Ok((i, decode(r, 1)?))
        })
        .collect()
}
