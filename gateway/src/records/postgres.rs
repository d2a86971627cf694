//! The record store's PostgreSQL queries.
//!
//! Sets travel as array parameters expanded with `UNNEST` (static SQL, one
//! round trip per statement whatever the chunk size). Publishes to one
//! dataset are serialised by a transaction-scoped advisory lock so that the
//! read-compare-write of an upsert cannot race under READ COMMITTED.

use std::collections::HashMap;

use adapters::domain::IdNumber;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use super::{
    Existing, Plan, Prepared, PublishSummary, RECORD_COLUMNS, RecordText, RecordsError,
    StoredRecord, Withdrawal, WriteCtx, plan, stored_record,
};

type Tx = Transaction<'static, Postgres>;

const COPY_TO_HISTORY: &str = "INSERT INTO record_versions \
     (record_id, version, region, withdrawn, content_hash, payload, published_by, department, \
      published_at, publish_id) \
     SELECT id, version, region, withdrawn, content_hash, payload, published_by, department, \
      published_at, publish_id \
     FROM records WHERE id = ANY($1)";

/// Begins a write transaction holding the dataset's advisory lock.
pub(super) async fn begin(pool: &PgPool, dataset: &str) -> Result<Tx, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_dataset(&mut tx, dataset).await?;
    Ok(tx)
}

async fn lock_dataset(tx: &mut Tx, dataset: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('gateway.records/' || $1, 0))")
        .bind(dataset)
        .execute(&mut **tx)
        .await?;
    Ok(())
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
         WHERE dataset = $1 AND natural_key = ANY($2)",
    )
    .bind(&ctx.dataset)
    .bind(&keys)
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
    let mut updated_ids: Vec<i64> = Vec::new();
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
        sqlx::query(COPY_TO_HISTORY)
            .bind(&updated_ids)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM record_subjects WHERE record_id = ANY($1)")
            .bind(&updated_ids)
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

async fn write_rows(
    tx: &mut Tx,
    ctx: &WriteCtx,
    writes: &[(&Prepared, i32)],
    upsert: bool,
) -> Result<(), RecordsError> {
    let mut keys = Vec::with_capacity(writes.len());
    let mut versions = Vec::with_capacity(writes.len());
    let mut regions = Vec::with_capacity(writes.len());
    let mut hashes = Vec::with_capacity(writes.len());
    let mut payloads = Vec::with_capacity(writes.len());
    for (p, v) in writes {
        keys.push(p.natural_key.as_str());
        versions.push(*v);
        regions.push(p.region.as_str());
        hashes.push(&p.hash[..]);
        payloads.push(p.payload.as_str());
    }
    let mut sql = String::from(
        "INSERT INTO records (dataset, natural_key, version, region, withdrawn, content_hash, \
         payload, published_by, department, published_at, publish_id) \
         SELECT $1, u.k, u.v, u.r, FALSE, u.h, u.p, $2, $3, $4, $5 \
         FROM UNNEST($6::text[], $7::int4[], $8::text[], $9::bytea[], $10::text[]) \
              AS u(k, v, r, h, p)",
    );
    if upsert {
        sql.push_str(
            " ON CONFLICT (dataset, natural_key) DO UPDATE SET version = EXCLUDED.version, \
             region = EXCLUDED.region, withdrawn = FALSE, content_hash = EXCLUDED.content_hash, \
             payload = EXCLUDED.payload, published_by = EXCLUDED.published_by, \
             department = EXCLUDED.department, published_at = EXCLUDED.published_at, \
             publish_id = EXCLUDED.publish_id",
        );
    }
    sql.push_str(" RETURNING id, natural_key");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(&ctx.dataset)
        .bind(&ctx.client_id)
        .bind(&ctx.department)
        .bind(ctx.published_at_ms)
        .bind(&ctx.publish_id.as_bytes()[..])
        .bind(&keys)
        .bind(&versions)
        .bind(&regions)
        .bind(&hashes)
        .bind(&payloads)
        .fetch_all(&mut **tx)
        .await?;
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        ids.insert(row.try_get(1)?, row.try_get(0)?);
    }

    let mut subjects: Vec<&str> = Vec::new();
    let mut record_ids: Vec<i64> = Vec::new();
    for (p, _) in writes {
        let id = *ids
            .get(&p.natural_key)
            .ok_or(RecordsError::Corrupt("inserted row not returned"))?;
        for s in &p.subjects {
            subjects.push(s.as_str());
            record_ids.push(id);
        }
    }
    if !subjects.is_empty() {
        sqlx::query(
            "INSERT INTO record_subjects (subject, dataset, record_id) \
             SELECT u.s, $1, u.id FROM UNNEST($2::text[], $3::int8[]) AS u(s, id)",
        )
        .bind(&ctx.dataset)
        .bind(&subjects)
        .bind(&record_ids)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn withdraw(
    pool: &PgPool,
    ctx: &WriteCtx,
    natural_key: &str,
) -> Result<Withdrawal, RecordsError> {
    let mut tx = begin(pool, &ctx.dataset).await?;
    let row =
        sqlx::query("SELECT id, withdrawn FROM records WHERE dataset = $1 AND natural_key = $2")
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
        .bind(vec![id])
        .execute(&mut *tx)
        .await?;
    let version: i32 = sqlx::query_scalar(
        "UPDATE records SET version = version + 1, withdrawn = TRUE, published_by = $1, \
         department = $2, published_at = $3, publish_id = $4 WHERE id = $5 RETURNING version",
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

fn decode(row: &PgRow, base: usize) -> Result<RecordText, RecordsError> {
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
    pool: &PgPool,
    dataset: &str,
    natural_key: &str,
) -> Result<Option<StoredRecord>, RecordsError> {
    let sql =
        format!("SELECT {RECORD_COLUMNS} FROM records WHERE dataset = $1 AND natural_key = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(dataset)
        .bind(natural_key)
        .fetch_optional(pool)
        .await?;
    row.map(|r| decode(&r, 0)?.parsed()).transpose()
}

pub(super) async fn history(
    pool: &PgPool,
    dataset: &str,
    natural_key: &str,
) -> Result<Vec<StoredRecord>, RecordsError> {
    let rows = sqlx::query(
        "SELECT r.dataset, r.natural_key, v.version, v.region, v.withdrawn, v.payload, \
                v.published_by, v.department, v.published_at \
         FROM records r JOIN record_versions v ON v.record_id = r.id \
         WHERE r.dataset = $1 AND r.natural_key = $2 \
         UNION ALL \
         SELECT dataset, natural_key, version, region, withdrawn, payload, \
                published_by, department, published_at \
         FROM records WHERE dataset = $1 AND natural_key = $2 \
         ORDER BY 3",
    )
    .bind(dataset)
    .bind(natural_key)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| decode(r, 0)?.parsed()).collect()
}

/// Current, not withdrawn records of each ID in `datasets`, as (index into
/// `ids`, record).
pub(super) async fn match_ids(
    pool: &PgPool,
    ids: &[IdNumber],
    datasets: &[String],
) -> Result<Vec<(usize, RecordText)>, RecordsError> {
    let ids: Vec<&str> = ids.iter().map(IdNumber::as_str).collect();
    let rows = sqlx::query(
        "SELECT u.ord, r.dataset, r.natural_key, r.version, r.region, r.withdrawn, r.payload, \
                r.published_by, r.department, r.published_at \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS u(subject, ord) \
         JOIN record_subjects s ON s.subject = u.subject \
         JOIN records r ON r.id = s.record_id \
         WHERE s.dataset = ANY($2) AND NOT r.withdrawn",
    )
    .bind(&ids)
    .bind(datasets)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let ord: i64 = r.try_get(0)?;
            let i = usize::try_from(ord - 1).map_err(|_| RecordsError::Corrupt("match index"))?;
            Ok((i, decode(r, 1)?))
        })
        .collect()
}
