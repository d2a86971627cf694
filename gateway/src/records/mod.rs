//! The record store: canonical records, versioned, per dataset, on SQLite and
//! PostgreSQL with the same semantics.
//!
//! # Model
//! - A record is identified by `(dataset, natural key)`. Its *current* version
//!   lives in table `records`; every superseded version moves to
//!   `record_versions` (SQL:2011-style system versioning). Each version keeps
//!   the publishing client id, department, time and publish request id.
//! - Payloads are stored as canonical JSON (object keys sorted, no whitespace;
//!   see [`canonical_json`]) and identified by the SHA-256 of those bytes.
//!   Publishing a payload equal to the current one is a no-op (`unchanged`);
//!   a different payload becomes version *n + 1*.
//! - Withdrawal is a new version with `withdrawn = true` and the same payload.
//!   Withdrawn records are never returned by person lookups or matches;
//!   publishing the record again re-activates it as a new version. Nothing is
//!   physically deleted.
//! - `record_subjects` indexes the citizen ID numbers of each current version
//!   for person lookup and batch matching.
//!
//! # Atomicity and concurrency
//! A publish request is one transaction ([`Publication`]): every record is
//! stored or none is. Dropping a [`Publication`] without
//! [`commit`](Publication::commit) rolls it back. Writers to one dataset are
//! serialised — SQLite by `BEGIN IMMEDIATE` (one writer for the whole file),
//! PostgreSQL by a transaction-scoped advisory lock per dataset — so the
//! read-compare-write of an upsert never races. On SQLite a long request
//! therefore holds the single write lock for its whole duration.
//!
//! # Duplicate natural keys within one request
//! Rejected with [`RecordsError::DuplicateKeys`]: two records with the same
//! key in one request are ambiguous (which is the correction?) and usually a
//! ledger error the publisher should see. A [`Publication`] remembers a
//! 128-bit hash of every key it has seen (about 32 bytes per record), which is
//! the only per-record memory a streamed request keeps.
//!
//! # Personal data
//! Natural keys, subjects and payloads are personal data: they never appear in
//! errors or `Debug` output of this module.

mod postgres;
mod sqlite;
mod sqlite_read;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use adapters::domain::{IdNumber, RegionCode};
use futures_util::Stream;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::identity::{Caller, DepartmentId};
use crate::storage::Database;
use crate::storage::sqlite_read::SqliteReaders;

/// Records per chunk for writes: the unit of one set-based round of
/// statements inside a publish transaction.
pub const WRITE_CHUNK: usize = 1_000;

/// IDs per chunk for [`RecordStore::match_subjects`]: one set-based query per
/// chunk; memory is bounded by two chunks of results.
pub const MATCH_CHUNK: usize = 5_000;

/// Longest accepted natural key, in bytes.
pub const MAX_NATURAL_KEY_LEN: usize = 512;

/// Who publishes: the client system and its department, recorded on every
/// version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publisher {
    /// The client system id (certificate CN).
    pub client_id: String,
    /// Its department.
    pub department: DepartmentId,
}

impl From<&Caller> for Publisher {
    fn from(c: &Caller) -> Self {
        Publisher {
            client_id: c.client_id.clone(),
            department: c.department.clone(),
        }
    }
}

/// One already-validated record to publish (filled from the adapters'
/// `Validated`).
#[derive(Clone, PartialEq)]
pub struct NewRecord {
    /// The record's natural key within its dataset (1 to 512 bytes).
    pub natural_key: String,
    /// The record's region, for row scope.
    pub region: RegionCode,
    /// The persons the record is about (duplicates are ignored).
    pub subjects: Vec<IdNumber>,
    /// The canonical record.
    pub payload: serde_json::Value,
}

impl fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRecord")
            .field("natural_key", &"<redacted>")
            .field("region", &self.region)
            .field("subjects", &self.subjects.len())
            .field("payload", &"<redacted>")
            .finish()
    }
}

/// One version of a record as stored, its payload parsed (`P` = `Value`)
/// or, for the read paths that render views straight from the stored text,
/// the canonical JSON text ([`RecordText`]).
#[derive(Clone, PartialEq)]
pub struct StoredRecord<P = serde_json::Value> {
    /// The dataset id.
    pub dataset: String,
    /// The natural key within the dataset.
    pub natural_key: String,
    /// Version number, from 1.
    pub version: u32,
    /// The record's region.
    pub region: RegionCode,
    /// The canonical record (keys in sorted order).
    pub payload: P,
    /// Client id that published this version.
    pub published_by: String,
    /// Department of that client.
    pub department: DepartmentId,
    /// When this version was published (millisecond precision, UTC).
    pub published_at: OffsetDateTime,
    /// Whether this version withdraws the record from sharing.
    pub withdrawn: bool,
}

/// A stored record with its payload as the stored canonical JSON text.
pub type RecordText = StoredRecord<String>;

impl RecordText {
    /// Parses the payload.
    pub fn parsed(self) -> Result<StoredRecord, RecordsError> {
        Ok(StoredRecord {
            payload: serde_json::from_str(&self.payload)
                .map_err(|_| RecordsError::Corrupt("payload"))?,
            dataset: self.dataset,
            natural_key: self.natural_key,
            version: self.version,
            region: self.region,
            published_by: self.published_by,
            department: self.department,
            published_at: self.published_at,
            withdrawn: self.withdrawn,
        })
    }
}

impl<P> fmt::Debug for StoredRecord<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredRecord")
            .field("dataset", &self.dataset)
            .field("natural_key", &"<redacted>")
            .field("version", &self.version)
            .field("region", &self.region)
            .field("payload", &"<redacted>")
            .field("published_by", &self.published_by)
            .field("department", &self.department)
            .field("published_at", &self.published_at)
            .field("withdrawn", &self.withdrawn)
            .finish()
    }
}

/// What a publish request did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Records that did not exist before (version 1).
    pub inserted: u64,
    /// Records that got a new version (changed payload, or re-published after
    /// withdrawal).
    pub updated: u64,
    /// Records whose payload equalled the current version: nothing written.
    pub unchanged: u64,
}

/// The outcome of [`RecordStore::withdraw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// The record is withdrawn as of this new version.
    Withdrawn {
        /// The new (withdrawing) version.
        version: u32,
    },
    /// It was already withdrawn; nothing written.
    AlreadyWithdrawn,
    /// No such record.
    NotFound,
}

/// Errors of the record store. Messages name record indices, never keys or
/// payloads.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// Records of one request share a natural key (0-based indices within the
    /// request of the later occurrences).
    #[error("natural key repeats an earlier record of the same request at record(s) {indices:?}")]
    DuplicateKeys {
        /// Indices of the repeating records.
        indices: Vec<usize>,
    },
    /// A record the store cannot accept (a caller's fault).
    #[error("record {index}: {reason}")]
    InvalidRecord {
        /// Index within the request.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The database failed (our fault; the text is for logs only).
    #[error("record store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An SQLite read outside the pool failed (our fault; logs only).
    #[error("record store database error: {0}")]
    SqliteRead(#[from] rusqlite::Error),
    /// A stored row failed to decode (our fault).
    #[error("stored record is corrupt: {0}")]
    Corrupt(&'static str),
    /// The task producing records panicked (our fault); nothing was stored.
    #[error("the record producer failed; nothing was stored")]
    ProducerFailed,
}

/// The versioned record store. Cheap to clone (holds the pool).
#[derive(Clone, Debug)]
pub struct RecordStore {
    db: Database,
    /// SQLite: read-only connections for lookups outside sqlx.
    readers: Option<Arc<SqliteReaders>>,
}

impl RecordStore {
    /// A store over `db` (migrated by [`Database::open`]).
    pub fn new(db: Database) -> Self {
        let readers = match &db {
            Database::Sqlite(p) => SqliteReaders::for_pool(p).map(Arc::new),
            Database::Postgres(_) => None,
        };
        RecordStore { db, readers }
    }

    /// SQLite on a file: its read-only connections for lookups on the
    /// calling thread (ready to use). `None` for PostgreSQL and in-memory
    /// SQLite, which go through the pool.
    pub async fn sqlite_readers(&self) -> Result<Option<&Arc<SqliteReaders>>, RecordsError> {
        match (&self.db, &self.readers) {
            (Database::Sqlite(p), Some(r)) => {
                r.prepare(p).await?;
                Ok(Some(r))
            }
            _ => Ok(None),
        }
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Starts an atomic publish request into `dataset`. Push records in chunks
    /// with [`Publication::push`], then [`Publication::commit`]; dropping it
    /// rolls everything back.
    pub async fn begin_publish(
        &self,
        dataset: &str,
        publisher: &Publisher,
    ) -> Result<Publication, RecordsError> {
        let tx = match &self.db {
            Database::Sqlite(p) => Tx::Sqlite(sqlite::begin(p).await?),
            Database::Postgres(p) => Tx::Postgres(postgres::begin(p, dataset).await?),
        };
        Ok(Publication {
            tx,
            ctx: WriteCtx::new(dataset, publisher),
            seen: HashSet::new(),
            offset: 0,
            summary: PublishSummary::default(),
        })
    }

    /// Publishes `records` atomically: all are stored or none.
    pub async fn publish(
        &self,
        dataset: &str,
        publisher: &Publisher,
        records: Vec<NewRecord>,
    ) -> Result<PublishSummary, RecordsError> {
        let mut publication = self.begin_publish(dataset, publisher).await?;
        let mut records = records.into_iter();
        loop {
            let chunk: Vec<NewRecord> = records.by_ref().take(WRITE_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            publication.push(chunk).await?;
        }
        publication.commit().await
    }

    /// Publishes a stream of chunks atomically (one transaction for the whole
    /// stream; memory bounded by the chunk). For NDJSON loads that must also
    /// stop on a validation error, drive a [`Publication`] directly.
    pub async fn publish_stream<S>(
        &self,
        dataset: &str,
        publisher: &Publisher,
        chunks: S,
    ) -> Result<PublishSummary, RecordsError>
    where
        S: Stream<Item = Vec<NewRecord>>,
    {
        use futures_util::StreamExt;
        let mut publication = self.begin_publish(dataset, publisher).await?;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            publication.push(chunk).await?;
        }
        publication.commit().await
    }

    /// Publishes what `produce` yields, atomically, with memory bounded by
    /// two chunks: `produce` runs on a blocking thread (parsing and
    /// validating a ledger is CPU work) and hands chunks of at most
    /// [`WRITE_CHUNK`] records to `sink`, which returns `false` once the
    /// publication has failed (stop producing then). Chunks are written into
    /// one transaction as they arrive.
    ///
    /// If `produce` returns `Err` (e.g. some rows did not validate),
    /// everything is rolled back and the error is returned inside `Ok`; a
    /// store error is the outer `Err`. On success, the summary and what
    /// `produce` returned.
    pub async fn publish_produced<T, E, F>(
        &self,
        dataset: &str,
        publisher: &Publisher,
        produce: F,
    ) -> Result<Result<(PublishSummary, T), E>, RecordsError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&mut dyn FnMut(Vec<NewRecord>) -> bool) -> Result<T, E> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewRecord>>(1);
        let producer = tokio::task::spawn_blocking(move || {
            let mut sink =
                |chunk: Vec<NewRecord>| chunk.is_empty() || tx.blocking_send(chunk).is_ok();
            produce(&mut sink)
        });
        // The transaction (on SQLite: the database's write lock) is opened
        // with the first valid chunk, not while the first rows are still
        // being read, and never for input that fails before that.
        let mut publication: Option<Publication> = None;
        while let Some(chunk) = rx.recv().await {
            let p = match publication.as_mut() {
                Some(p) => p,
                None => publication.insert(self.begin_publish(dataset, publisher).await?),
            };
            // On error `rx` is dropped on return: the producer's next send
            // fails and it stops.
            p.push(chunk).await?;
        }
        let outcome = producer.await;
        if let Ok(Ok(out)) = outcome {
            let summary = match publication {
                Some(p) => p.commit().await?,
                None => PublishSummary::default(),
            };
            return Ok(Ok((summary, out)));
        }
        if let Some(p) = publication {
            p.rollback().await?;
        }
        match outcome {
            Ok(Err(e)) => Ok(Err(e)),
            _ => Err(RecordsError::ProducerFailed),
        }
    }

    /// Loads records that must not exist yet (a fresh database: `gateway
    /// seed`). Skips the per-record comparison with the current version but
    /// writes the same tables; fails (storing nothing) if any key exists.
    /// One transaction per call: call it per slice of a large population.
    pub async fn bulk_seed(
        &self,
        dataset: &str,
        publisher: &Publisher,
        records: impl IntoIterator<Item = NewRecord>,
    ) -> Result<u64, RecordsError> {
        let ctx = WriteCtx::new(dataset, publisher);
        let mut records = records.into_iter();
        let mut offset = 0;
        let mut seen = HashSet::new();
        let mut tx = match &self.db {
            Database::Sqlite(p) => Tx::Sqlite(sqlite::begin(p).await?),
            Database::Postgres(p) => Tx::Postgres(postgres::begin(p, dataset).await?),
        };
        loop {
            let chunk: Vec<NewRecord> = records.by_ref().take(WRITE_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let prepared = prepare(chunk, offset, &mut seen)?;
            offset += prepared.len();
            match &mut tx {
                Tx::Sqlite(t) => sqlite::insert_new(t, &ctx, &prepared).await?,
                Tx::Postgres(t) => postgres::insert_new(t, &ctx, &prepared).await?,
            }
        }
        tx.commit().await?;
        Ok(offset as u64)
    }

    /// Readies the tables for reading after a bulk load. Call once after
    /// seeding.
    ///
    /// PostgreSQL: `VACUUM (ANALYZE)`, as its manual advises after
    /// populating a database: besides the planner statistics, it sets the
    /// visibility map, without which every lookup in the subject index
    /// visits the table too (index-only scans fetch the heap), and the hint
    /// bits, which the first readers would otherwise write. SQLite:
    /// `PRAGMA optimize`.
    pub async fn optimize(&self) -> Result<(), RecordsError> {
        match &self.db {
            Database::Sqlite(p) => {
                sqlx::query("PRAGMA optimize").execute(p).await?;
            }
            Database::Postgres(p) => {
                // VACUUM cannot run inside a transaction: a plain statement.
                sqlx::raw_sql("VACUUM (ANALYZE) records, record_versions, record_subjects")
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Withdraws a record from sharing: a new version with `withdrawn = true`
    /// and the same payload, published by `publisher`.
    pub async fn withdraw(
        &self,
        dataset: &str,
        publisher: &Publisher,
        natural_key: &str,
    ) -> Result<Withdrawal, RecordsError> {
        let ctx = WriteCtx::new(dataset, publisher);
        match &self.db {
            Database::Sqlite(p) => sqlite::withdraw(p, &ctx, natural_key).await,
            Database::Postgres(p) => postgres::withdraw(p, &ctx, natural_key).await,
        }
    }

    /// The current version of a record, withdrawn or not (owners see their
    /// withdrawn records; check [`StoredRecord::withdrawn`] before sharing).
    pub async fn get(
        &self,
        dataset: &str,
        natural_key: &str,
    ) -> Result<Option<StoredRecord>, RecordsError> {
        match &self.db {
            Database::Sqlite(p) => sqlite::get(p, dataset, natural_key).await,
            Database::Postgres(p) => postgres::get(p, dataset, natural_key).await,
        }
    }

    /// Every version of a record, oldest first (empty if unknown).
    pub async fn history(
        &self,
        dataset: &str,
        natural_key: &str,
    ) -> Result<Vec<StoredRecord>, RecordsError> {
        match &self.db {
            Database::Sqlite(p) => sqlite::history(p, dataset, natural_key).await,
            Database::Postgres(p) => postgres::history(p, dataset, natural_key).await,
        }
    }

    /// The current, not withdrawn records about one person in the given
    /// datasets, ordered by dataset and natural key. An empty `datasets`
    /// matches nothing (deny by default).
    pub async fn current_by_subject(
        &self,
        subject: &IdNumber,
        datasets: &[String],
    ) -> Result<Vec<StoredRecord>, RecordsError> {
        let mut found = self
            .match_chunk(std::slice::from_ref(subject), datasets)
            .await?;
        Ok(found.pop().unwrap_or_default())
    }

    /// How many input IDs a batch match should look up per query and render
    /// per task. Measured with 1M persons and 100k IDs (2026-11-29, two
    /// cores): on SQLite 4,000 per chunk answered in 0.59–0.65 s against
    /// 0.67–0.72 s with 2,000 (8,000 no better; fewer statements, hand-offs
    /// and body writes per ID); on PostgreSQL 2,000 stayed best (4,000:
    /// 1.30–1.44 s against 1.21–1.40 s). Memory per chunk is its answer,
    /// ~700 bytes per matched ID.
    pub fn match_chunk_size(&self) -> usize {
        match &self.db {
            Database::Sqlite(_) => 4_000,
            Database::Postgres(_) => 2_000,
        }
    }

    /// Matches one chunk of ID numbers: element `i` of the answer holds the
    /// current, not withdrawn records about `ids[i]` in `datasets` (ordered by
    /// dataset and natural key; empty for a miss). Repeated IDs each get their
    /// own answer. One set-based query; prefer chunks of at most
    /// [`MATCH_CHUNK`].
    pub async fn match_chunk(
        &self,
        ids: &[IdNumber],
        datasets: &[String],
    ) -> Result<Vec<Vec<StoredRecord>>, RecordsError> {
        self.match_chunk_text(ids, datasets)
            .await?
            .into_iter()
            .map(|v| v.into_iter().map(RecordText::parsed).collect())
            .collect()
    }

    /// [`RecordStore::match_chunk`] with the payloads left as stored text,
    /// for rendering views without parsing whole records.
    pub async fn match_chunk_text(
        &self,
        ids: &[IdNumber],
        datasets: &[String],
    ) -> Result<Vec<Vec<RecordText>>, RecordsError> {
        let mut out: Vec<Vec<RecordText>> = vec![Vec::new(); ids.len()];
        if ids.is_empty() || datasets.is_empty() {
            return Ok(out);
        }
        let rows = match (&self.db, self.sqlite_readers().await?) {
            // Batches (match chunks) step SQLite on a blocking thread of
            // their own; a single ID (a person query) is a point lookup,
            // cheaper on this thread than any hand-off.
            (_, Some(readers)) if ids.len() > 1 => {
                let (readers, ids, datasets) = (readers.clone(), ids.to_vec(), datasets.to_vec());
                tokio::task::spawn_blocking(move || {
                    readers.with(|c| sqlite_read::match_ids(c, &ids, &datasets))
                })
                .await
                .map_err(|_| RecordsError::Corrupt("match lookup task"))??
            }
            (_, Some(readers)) => readers.with(|c| sqlite_read::match_ids(c, ids, datasets))?,
            (Database::Sqlite(p), None) => sqlite::match_ids(p, ids, datasets).await?,
            (Database::Postgres(p), None) => postgres::match_ids(p, ids, datasets).await?,
        };
        for (i, rec) in rows {
            let slot = out.get_mut(i).ok_or(RecordsError::Corrupt("match index"))?;
            slot.push(rec);
        }
        for v in &mut out {
            if v.len() > 1 {
                v.sort_by(|a, b| {
                    (a.dataset.as_str(), a.natural_key.as_str())
                        .cmp(&(b.dataset.as_str(), b.natural_key.as_str()))
                });
            }
        }
        Ok(out)
    }

    /// Batch matching for `POST /v1/match`: yields `(index into ids, records)`
    /// for every input, in input order, misses as empty vectors. Chunks of
    /// [`MATCH_CHUNK`] IDs are fetched by a background task one chunk ahead of
    /// the consumer, so memory is bounded by two chunks whatever the batch
    /// size. The first error ends the stream.
    pub fn match_subjects(
        &self,
        ids: Vec<IdNumber>,
        datasets: Vec<String>,
    ) -> impl Stream<Item = Result<(usize, Vec<StoredRecord>), RecordsError>> + Send + 'static {
        use futures_util::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<(usize, Vec<Vec<StoredRecord>>), _>>(1);
        let store = self.clone();
        let ids = Arc::new(ids);
        tokio::spawn(async move {
            let mut start = 0;
            while start < ids.len() {
                let end = (start + MATCH_CHUNK).min(ids.len());
                let res = store.match_chunk(&ids[start..end], &datasets).await;
                let failed = res.is_err();
                if tx.send(res.map(|v| (start, v))).await.is_err() || failed {
                    return;
                }
                start = end;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(|chunk| {
            let items: Vec<Result<(usize, Vec<StoredRecord>), RecordsError>> = match chunk {
                Ok((start, found)) => found
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Ok((start + i, v)))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(items)
        })
    }
}

/// An open, atomic publish request: one database transaction. Push chunks,
/// then commit; dropping it rolls back.
pub struct Publication {
    tx: Tx,
    ctx: WriteCtx,
    /// 128-bit hashes of the natural keys pushed so far.
    seen: HashSet<u128>,
    offset: usize,
    summary: PublishSummary,
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publication")
            .field("dataset", &self.ctx.dataset)
            .field("publish_id", &self.ctx.publish_id)
            .field("records", &self.offset)
            .field("summary", &self.summary)
            .finish()
    }
}

impl Publication {
    /// Stores one chunk (best at most [`WRITE_CHUNK`] records) inside the
    /// transaction. Record indices in errors count from the start of the
    /// request. After an error the publication must be dropped.
    pub async fn push(&mut self, records: Vec<NewRecord>) -> Result<(), RecordsError> {
        if records.is_empty() {
            return Ok(());
        }
        let prepared = prepare(records, self.offset, &mut self.seen)?;
        self.offset += prepared.len();
        let s = match &mut self.tx {
            Tx::Sqlite(t) => sqlite::upsert(t, &self.ctx, prepared).await?,
            Tx::Postgres(t) => postgres::upsert(t, &self.ctx, prepared).await?,
        };
        self.summary.inserted += s.inserted;
        self.summary.updated += s.updated;
        self.summary.unchanged += s.unchanged;
        Ok(())
    }

    /// Counts so far.
    pub fn summary(&self) -> PublishSummary {
        self.summary
    }

    /// The id of this publish request, stored on every version it writes
    /// (for the audit log).
    pub fn publish_id(&self) -> Uuid {
        self.ctx.publish_id
    }

    /// Commits everything pushed.
    pub async fn commit(self) -> Result<PublishSummary, RecordsError> {
        self.tx.commit().await?;
        Ok(self.summary)
    }

    /// Rolls back explicitly (dropping does the same, lazily).
    pub async fn rollback(self) -> Result<(), RecordsError> {
        match self.tx {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// What every version written by one request shares.
struct WriteCtx {
    dataset: String,
    client_id: String,
    department: String,
    published_at_ms: i64,
    publish_id: Uuid,
}

impl WriteCtx {
    fn new(dataset: &str, publisher: &Publisher) -> Self {
        let now = OffsetDateTime::now_utc();
        WriteCtx {
            dataset: dataset.to_owned(),
            client_id: publisher.client_id.clone(),
            department: publisher.department.as_str().to_owned(),
            published_at_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
            publish_id: Uuid::now_v7(),
        }
    }
}

/// A record ready for the database: canonical payload, its hash, deduplicated
/// subjects.
struct Prepared {
    index: usize,
    natural_key: String,
    region: RegionCode,
    subjects: Vec<IdNumber>,
    payload: String,
    hash: [u8; 32],
}

/// Canonicalises and hashes a chunk, rejecting bad keys and keys already in
/// `seen` (the request so far). `offset` is the request index of the first
/// record.
fn prepare(
    records: Vec<NewRecord>,
    offset: usize,
    seen: &mut HashSet<u128>,
) -> Result<Vec<Prepared>, RecordsError> {
    let mut out = Vec::with_capacity(records.len());
    let mut duplicates = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        let index = offset + i;
        if r.natural_key.is_empty() || r.natural_key.len() > MAX_NATURAL_KEY_LEN {
            return Err(RecordsError::InvalidRecord {
                index,
                reason: "the natural key must be 1 to 512 bytes long",
            });
        }
        let payload = canonical_json(&r.payload);
        let hash = sha256(payload.as_bytes());
        let mut subjects = r.subjects;
        subjects.sort_unstable();
        subjects.dedup();
        out.push(Prepared {
            index,
            natural_key: r.natural_key,
            region: r.region,
            subjects,
            payload,
            hash,
        });
    }
    for p in &out {
        let h = sha256(p.natural_key.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&h[..16]);
        if !seen.insert(u128::from_le_bytes(first)) {
            duplicates.push(p.index);
        }
    }
    if !duplicates.is_empty() {
        return Err(RecordsError::DuplicateKeys {
            indices: duplicates,
        });
    }
    Ok(out)
}

/// The current version of a record as the upsert needs to see it.
struct Existing {
    id: i64,
    version: i32,
    withdrawn: bool,
    hash: Vec<u8>,
}

/// How one prepared record is written.
enum Plan {
    Insert,
    Update { id: i64, version: i32 },
    Unchanged,
}

/// Decides what to do with each record given the current versions.
fn plan(prepared: &[Prepared], existing: &HashMap<String, Existing>) -> Vec<Plan> {
    prepared
        .iter()
        .map(|p| match existing.get(&p.natural_key) {
            None => Plan::Insert,
            Some(e) if !e.withdrawn && e.hash.as_slice() == p.hash => Plan::Unchanged,
            Some(e) => Plan::Update {
                id: e.id,
                version: e.version.saturating_add(1),
            },
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Canonical JSON text of `v`: object keys sorted by their UTF-8 bytes, no
/// insignificant whitespace, numbers as `serde_json` prints them, strings
/// escaped minimally (`"`, `\`, control characters). Two payloads that differ
/// only in key order or formatting have the same canonical form and hash.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    use std::fmt::Write;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_canonical(x, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{08}' => Some("\\b"),
            '\u{0c}' => Some("\\f"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The columns every record query selects, in this order.
const RECORD_COLUMNS: &str = "dataset, natural_key, version, region, withdrawn, payload, \
                              published_by, department, published_at";

/// Builds a [`RecordText`] from the raw column values of [`RECORD_COLUMNS`].
#[allow(clippy::too_many_arguments)]
fn stored_record(
    dataset: String,
    natural_key: String,
    version: i32,
    region: &str,
    withdrawn: bool,
    payload: String,
    published_by: String,
    department: &str,
    published_at_ms: i64,
) -> Result<RecordText, RecordsError> {
    Ok(StoredRecord {
        dataset,
        natural_key,
        version: u32::try_from(version).map_err(|_| RecordsError::Corrupt("version"))?,
        region: RegionCode::parse(region).map_err(|_| RecordsError::Corrupt("region"))?,
        payload,
        published_by,
        department: DepartmentId::parse(department)
            .map_err(|_| RecordsError::Corrupt("department"))?,
        published_at: OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(published_at_ms) * 1_000_000,
        )
        .map_err(|_| RecordsError::Corrupt("published_at"))?,
        withdrawn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_escapes() {
        let a = json!({"b": 1, "a": {"y": [1, 2.5, null], "x": "q\"\\\n\u{1}"}, "c": true});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"q\"\\\n\u0001","y":[1,2.5,null]},"b":1,"c":true}"#
        );
        // The canonical text parses back to an equal value.
        let back: serde_json::Value =
            serde_json::from_str(&canonical_json(&a)).expect("test input");
        assert_eq!(back, a);
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"x":1,"y":"中文"}"#).expect("test input");
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "y" : "中文", "x" : 1 }"#).expect("test input");
        assert_eq!(
            sha256(canonical_json(&a).as_bytes()),
            sha256(canonical_json(&b).as_bytes())
        );
        let c: serde_json::Value =
            serde_json::from_str(r#"{"x":2,"y":"中文"}"#).expect("test input");
        assert_ne!(canonical_json(&a), canonical_json(&c));
    }

    #[test]
    fn prepare_rejects_duplicate_and_bad_keys_without_naming_them() {
        let region = RegionCode::parse("441702").expect("test input");
        let rec = |k: &str| NewRecord {
            natural_key: k.to_owned(),
            region,
            subjects: vec![],
            payload: json!({"k": k}),
        };
        let mut seen = HashSet::new();
        match prepare(vec![rec("a"), rec("b"), rec("a"), rec("a")], 10, &mut seen) {
            Err(RecordsError::DuplicateKeys { indices }) => assert_eq!(indices, vec![12, 13]),
            other => panic!("expected duplicates, got {:?}", other.err()),
        }
        // Across chunks of one request too.
        let mut seen = HashSet::new();
        assert!(prepare(vec![rec("a"), rec("b")], 0, &mut seen).is_ok());
        match prepare(vec![rec("c"), rec("b")], 2, &mut seen) {
            Err(RecordsError::DuplicateKeys { indices }) => assert_eq!(indices, vec![3]),
            other => panic!("expected duplicates, got {:?}", other.err()),
        }
        match prepare(vec![rec("a"), rec("")], 0, &mut HashSet::new()) {
            Err(e @ RecordsError::InvalidRecord { index: 1, .. }) => {
                assert!(!e.to_string().contains("\"a\""));
            }
            other => panic!("expected invalid record, got {:?}", other.err()),
        }
        let secret = "44170219800101001X-secret";
        let dbg = format!("{:?}", rec(secret));
        assert!(!dbg.contains(secret));
    }
}
