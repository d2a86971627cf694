//! The single audit writer task: group commit, fail closed, recover alone.
//!
//! Request handlers call [`AuditWriter::append`]; it returns once the event
//! is committed (SQLite `synchronous=FULL` or a PostgreSQL commit), so a
//! response that waits for it never outruns its audit record. One task owns
//! the log's head (next sequence number, last hash, Merkle frontier): it
//! takes everything queued (up to `max_batch`), hashes it, inserts it in one
//! transaction and answers every waiter. The queue is bounded, so callers
//! feel backpressure instead of the process growing without limit.
//!
//! When a commit fails, the waiting callers get [`AuditError::Unavailable`]
//! (the HTTP layer answers 503 and discloses nothing), readiness turns red
//! ([`AuditWriter::health`]), later appends fail fast, and the task retries
//! with exponential backoff (100 ms … 5 s), re-reading the head from the
//! store first. The first successful write after an outage is a
//! `store_outage` event recording when it started, when it ended and how
//! many appends were refused; from then on appends succeed again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::AuditError;
use super::append_sqlite::{AppendTarget, SqliteAppender};
use super::checkpoint::{Checkpoint, SignedCheckpoint, SigningKey, valid_log_id};
use super::event::{AuditEvent, EventKind, Outcome, now_ms, rfc3339_ms};
use super::merkle::{CHUNK, CHUNK_HEIGHT, Frontier, Hash};
use super::record::{GENESIS, Record, StoredContextRow, hash_record};
use super::store::{self, StoredEvent};
use crate::storage::Database;

/// Whether events are recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// Every event is committed before `append` returns. The only mode for
    /// real use.
    #[default]
    Durable,
    /// BENCH ONLY: nothing is recorded, `append` returns at once. Exists so
    /// issue 6's benchmark can measure what durable audit costs; a gateway
    /// running in this mode breaks the audit obligations and logs a warning
    /// at start-up.
    DisabledBenchOnly,
}

/// Writer configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// This instance's log id (1-64 of `[A-Za-z0-9._-]`), unique among the
    /// instances sharing a database.
    pub log_id: String,
    /// The PKCS#8 PEM Ed25519 checkpoint key; generated if missing.
    pub key_path: PathBuf,
    /// Seconds between checkpoints (only when the log grew).
    pub checkpoint_interval_secs: u64,
    /// Bounded queue length (appends wait when it is full).
    pub queue_capacity: usize,
    /// Most events per transaction.
    pub max_batch: usize,
    /// Durable, or off for benchmarks only.
    pub mode: AuditMode,
    /// Events written before their subjects are added to the subject index
    /// in one sorted pass (sooner once they name
    /// [`store::INDEX_BATCH_ROWS`] subjects; also done at every
    /// checkpoint). A pass is written [`store::INDEX_SLICE_ROWS`] rows per
    /// transaction, one after each commit and back to back while no append
    /// waits, so appends never wait behind a whole pass. Subject searches
    /// read the not-yet-indexed events directly, so this trades append
    /// throughput against the length of that scan.
    pub subject_index_batch: u64,
    /// Retention, days (default 1100, just over 3 years; at least 1096 is
    /// enforced by [`AuditConfig::validate`]). Nothing is ever deleted by
    /// the gateway; this bounds what may be archived off-line.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            log_id: "gateway-1".to_owned(),
            key_path: PathBuf::from("audit-signing-key.pem"),
            checkpoint_interval_secs: 60,
            queue_capacity: 65_536,
            max_batch: 4_096,
            subject_index_batch: 16_384,
            mode: AuditMode::Durable,
            retention_days: 1_100,
        }
    }
}

/// Three years and a day: PIPL art. 56 wants ≥ 3 years.
pub const MIN_RETENTION_DAYS: u32 = 1_096;

impl AuditConfig {
    /// Every problem with the configuration.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !valid_log_id(&self.log_id) {
            errs.push(format!(
                "audit.log_id {:?} must be 1-64 letters, digits, '.', '_' or '-'",
                self.log_id.chars().take(70).collect::<String>()
            ));
        }
        if self.checkpoint_interval_secs == 0 {
            errs.push("audit.checkpoint_interval_secs must be at least 1".to_owned());
        }
        if self.queue_capacity == 0 || self.max_batch == 0 || self.subject_index_batch == 0 {
            errs.push(
                "audit.queue_capacity, audit.max_batch and audit.subject_index_batch must be at least 1"
                    .to_owned(),
            );
        }
        if self.retention_days < MIN_RETENTION_DAYS {
            errs.push(format!(
                "audit.retention_days is {}, the law asks for at least {MIN_RETENTION_DAYS} (3 years)",
                self.retention_days
            ));
        }
        errs
    }
}

/// What readiness reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuditHealth {
    /// Writing.
    Ready,
    /// The store refused the last write; retrying. `error` is for operators
    /// (it may name tables), not for API callers.
    Unavailable { since_ms: i64, error: String },
    /// BENCH ONLY mode: nothing is recorded.
    DisabledBenchOnly,
    /// Shut down.
    Stopped,
}

impl AuditHealth {
    /// Whether data requests may be served.
    pub fn is_ready(&self) -> bool {
        matches!(self, AuditHealth::Ready | AuditHealth::DisabledBenchOnly)
    }
}

/// Where an event was committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The log.
    pub log_id: String,
    /// Its position.
    pub seq: u64,
    /// Its chain hash.
    pub hash: Hash,
}

enum Msg {
    Append(
        Box<AuditEvent>,
        oneshot::Sender<Result<Receipt, AuditError>>,
    ),
    Checkpoint(oneshot::Sender<Result<Option<SignedCheckpoint>, AuditError>>),
    Shutdown(oneshot::Sender<Option<SignedCheckpoint>>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: Option<mpsc::Sender<Msg>>,
    health: watch::Receiver<AuditHealth>,
    log_id: String,
    public_key: String,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AuditWriter {
    /// Loads (or creates) the signing key, registers the log, resumes the
    /// chain from the last stored event and starts the writer task.
    ///
    /// In [`AuditMode::DisabledBenchOnly`] nothing is touched and every
    /// append succeeds without recording anything.
    pub async fn spawn(db: Database, config: AuditConfig) -> Result<Self, AuditError> {
        let errs = config.validate();
        if !errs.is_empty() {
            return Err(AuditError::Config(errs.join("; ")));
        }
        if config.mode == AuditMode::DisabledBenchOnly {
            tracing::warn!("audit is DISABLED (bench-only mode): no access is recorded");
            let (_tx, health) = watch::channel(AuditHealth::DisabledBenchOnly);
            return Ok(AuditWriter {
                inner: Arc::new(Inner {
                    tx: None,
                    health,
                    log_id: config.log_id,
                    public_key: String::new(),
                }),
            });
        }
        let key = SigningKey::load_or_generate(&config.key_path)?;
        Self::spawn_with_key(db, config, key).await
    }

    /// As [`AuditWriter::spawn`] with a key already loaded.
    pub async fn spawn_with_key(
        db: Database,
        config: AuditConfig,
        key: SigningKey,
    ) -> Result<Self, AuditError> {
        let errs = config.validate();
        if !errs.is_empty() {
            return Err(AuditError::Config(errs.join("; ")));
        }
        // Its own connection, whose page cache no other connection's
        // commits invalidate (Database::dedicated_writer).
        let own = db.dedicated_writer().await?;
        let own_pool = own.is_some();
        let db = own.unwrap_or(db);
        // Appends to an SQLite file bypass sqlx (see append_sqlite).
        let appender = match &db {
            Database::Sqlite(p) if own_pool => {
                let mmap_size: i64 = sqlx::query_scalar("PRAGMA mmap_size").fetch_one(p).await?;
                Some(SqliteAppender::start(AppendTarget {
                    path: p.connect_options().get_filename().to_owned(),
                    mmap_size,
                })?)
            }
            _ => None,
        };
        store::ensure_log(&db, &config.log_id, key.public_key_hex(), now_ms()).await?;
        let share_contexts = store::has_contexts_table(&db).await?;
        let head = Head::resume(&db, &config.log_id).await?;
        // Catch the subject index up with whatever the last run left.
        let mut indexed_to = store::index_subjects(&db, &config.log_id).await?.to;
        while indexed_to < head.next_seq {
            let next = store::index_subjects(&db, &config.log_id).await?.to;
            if next == indexed_to {
                break;
            }
            indexed_to = next;
        }
        let last_cp = store::latest_checkpoint(&db, &config.log_id)
            .await?
            .map(|c| c.tree_size)
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (health_tx, health) = watch::channel(AuditHealth::Ready);
        let public_key = key.public_key_hex().to_owned();
        let log_id = config.log_id.clone();
        let task = Task {
            db,
            own_pool,
            appender,
            config,
            key,
            head: Some(head),
            last_checkpoint_size: last_cp,
            indexed_to,
            unindexed_rows: 0,
            pass: None,
            health: health_tx,
            outage: None,
            backoff: INITIAL_BACKOFF,
            retry_at: None,
            scratch: Vec::with_capacity(4096),
            contexts_stored: HashSet::new(),
            share_contexts,
        };
        tokio::spawn(task.run(rx));
        Ok(AuditWriter {
            inner: Arc::new(Inner {
                tx: Some(tx),
                health,
                log_id,
                public_key,
            }),
        })
    }

    /// Records `event` and returns once it is committed. `Ok(None)` only in
    /// bench-only mode. While the store is failing this returns
    /// [`AuditError::Unavailable`] at once: answer 503, disclose nothing.
    pub async fn append(&self, event: AuditEvent) -> Result<Option<Receipt>, AuditError> {
        let Some(tx) = &self.inner.tx else {
            return Ok(None);
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Append(Box::new(event), reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?.map(Some)
    }

    /// The writer's state, for readiness.
    pub fn health(&self) -> AuditHealth {
        self.inner.health.borrow().clone()
    }

    /// A receiver that changes with [`AuditWriter::health`].
    pub fn watch_health(&self) -> watch::Receiver<AuditHealth> {
        self.inner.health.clone()
    }

    /// This instance's log id.
    pub fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    /// The checkpoint public key, hex (empty in bench-only mode).
    pub fn public_key_hex(&self) -> &str {
        &self.inner.public_key
    }

    /// Signs and stores a checkpoint now if the log grew since the last one;
    /// returns it (or `None` if there was nothing new).
    pub async fn checkpoint_now(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let Some(tx) = &self.inner.tx else {
            return Ok(None);
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Checkpoint(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Commits everything queued, writes a final checkpoint and stops the
    /// task. Later appends fail with [`AuditError::Closed`].
    pub async fn shutdown(&self) -> Option<SignedCheckpoint> {
        let tx = self.inner.tx.as_ref()?;
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Shutdown(reply)).await.ok()?;
        rx.await.ok().flatten()
    }
}

/// Most yield-and-drain passes while gathering a group commit.
const GATHER_PASSES: usize = 8;

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The log's head as the writer knows it.
struct Head {
    next_seq: u64,
    last_hash: Hash,
    frontier: Frontier,
}

impl Head {
    async fn resume(db: &Database, log_id: &str) -> Result<Self, AuditError> {
        let (next_seq, last_hash) = match store::head(db, log_id).await? {
            Some((seq, h)) => (seq + 1, h),
            None => (0, GENESIS),
        };
        let frontier = store::frontier(db, log_id, next_seq).await?;
        Ok(Head {
            next_seq,
            last_hash,
            frontier,
        })
    }
}

struct Outage {
    since_ms: i64,
    refused: u64,
    error_class: &'static str,
}

struct Task {
    /// The writer's own connection on an SQLite file (checkpoints,
    /// subject-index passes, reads), closed when the task stops; otherwise
    /// (PostgreSQL, in memory) the shared pool.
    db: Database,
    own_pool: bool,
    /// Commits batches to an SQLite file; `None`: through `db`.
    appender: Option<SqliteAppender>,
    config: AuditConfig,
    key: SigningKey,
    /// `None` after a failed write: re-read from the store before the next.
    head: Option<Head>,
    last_checkpoint_size: u64,
    /// The subject index covers the events before this one.
    indexed_to: u64,
    /// Subjects named by the events written since (as far as this task
    /// knows: a count, to index early when matches name many).
    unindexed_rows: u64,
    /// A subject-index pass being written, a slice at a time.
    pass: Option<store::IndexPass>,
    health: watch::Sender<AuditHealth>,
    outage: Option<Outage>,
    backoff: Duration,
    retry_at: Option<Instant>,
    scratch: Vec<u8>,
    /// Ids of event contexts known to be stored (committed by this task,
    /// or found there), so that a batch only inserts new ones. Bounded:
    /// cleared when full, after which a context is inserted once more
    /// (a no-op on conflict).
    contexts_stored: HashSet<String>,
    /// Whether the store has `audit_contexts` (an SQLite main file written
    /// before the audit log had a file of its own does not): without it,
    /// every event keeps its context keys in its body.
    share_contexts: bool,
}

/// Most context ids [`Task`] remembers as stored.
const CONTEXTS_REMEMBERED: usize = 4_096;

type Waiter = oneshot::Sender<Result<Receipt, AuditError>>;

/// A batch whose transaction runs elsewhere (the SQLite file's commit
/// thread, or a task of its own on PostgreSQL) while the writer gathers
/// the next one.
struct Inflight {
    /// Answers once the commit has succeeded or failed.
    task: oneshot::Receiver<Result<(), AuditError>>,
    /// The last event's id, to settle a commit whose outcome is unknown.
    last_event_id: String,
    waiters: Vec<Waiter>,
    /// One per event, the outage record's first if there is one.
    receipts: Vec<Receipt>,
    /// Receipts with no waiter (the outage record).
    skip: usize,
    subject_rows: u64,
    /// The head once the batch is committed.
    head: Head,
    /// Ids of the contexts the batch inserts.
    contexts: Vec<String>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let period = Duration::from_secs(self.config.checkpoint_interval_secs);
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<Msg> = Vec::new();
        let mut inflight: Option<Inflight> = None;
        let mut checkpoint_due = false;
        let mut closed = false;
        loop {
            if let Some(mut f) = inflight.take() {
                // A batch is being committed: queue what arrives meanwhile
                // (the commit's duration is the next batch's gathering
                // window), then settle it.
                let joined = loop {
                    tokio::select! {
                        biased;
                        r = &mut f.task => break r,
                        m = rx.recv(), if !closed && pending.len() < self.config.max_batch => match m {
                            Some(m) => pending.push(m),
                            None => closed = true,
                        },
                        _ = ticker.tick() => checkpoint_due = true,
                    }
                };
                self.finish(f, joined).await;
                gather(&mut rx, &mut pending, self.config.max_batch).await;
                if checkpoint_due {
                    checkpoint_due = false;
                    if let Err(e) = self.checkpoint().await {
                        tracing::warn!(error = %e, "audit checkpoint failed; will retry");
                    }
                }
            } else if pending.is_empty() {
                if closed {
                    self.final_checkpoint().await;
                    break;
                }
                let retry_at = self.retry_at;
                let indexing = self.pass.is_some();
                let first = tokio::select! {
                    biased;
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => { closed = true; continue; }
                    },
                    _ = ticker.tick() => {
                        if let Err(e) = self.checkpoint().await {
                            tracing::warn!(error = %e, "audit checkpoint failed; will retry");
                        }
                        continue;
                    }
                    _ = sleep_until_opt(retry_at) => {
                        // Probe: try to write the outage record on its own.
                        self.write(Vec::new()).await;
                        continue;
                    }
                    // Nothing to append: the next slice of the pass.
                    () = std::future::ready(()), if indexing => {
                        self.index_step().await;
                        continue;
                    }
                };
                pending.push(first);
                gather(&mut rx, &mut pending, self.config.max_batch).await;
            }
            if pending.is_empty() {
                continue;
            }
            let mut batch = Vec::with_capacity(pending.len().min(self.config.max_batch));
            let mut control = Vec::new();
            let mut rest = Vec::new();
            for m in pending.drain(..) {
                match m {
                    Msg::Append(ev, w) if batch.len() < self.config.max_batch => {
                        batch.push((*ev, w))
                    }
                    m @ Msg::Append(..) => rest.push(m),
                    other => control.push(other),
                }
            }
            pending = rest;
            if !batch.is_empty() {
                inflight = self.launch(batch).await;
            }
            if control.is_empty() {
                continue;
            }
            // Checkpoints and shutdown see every earlier append committed.
            if let Some(f) = inflight.take() {
                self.settle(f).await;
            }
            let mut stop = false;
            for m in control {
                match m {
                    Msg::Checkpoint(reply) => {
                        let _ = reply.send(self.checkpoint().await);
                    }
                    Msg::Shutdown(reply) => {
                        // Commit whatever raced in before the shutdown.
                        rx.close();
                        let mut rest: Vec<(AuditEvent, Waiter)> = pending
                            .drain(..)
                            .filter_map(|m| match m {
                                Msg::Append(ev, w) => Some((*ev, w)),
                                _ => None,
                            })
                            .collect();
                        while let Ok(Msg::Append(ev, w)) = rx.try_recv() {
                            rest.push((*ev, w));
                        }
                        if !rest.is_empty() {
                            self.write(rest).await;
                        }
                        let cp = self.final_checkpoint().await;
                        // Stopped when the caller hears back.
                        self.close_own_pool().await;
                        let _ = reply.send(cp);
                        stop = true;
                    }
                    Msg::Append(..) => {}
                }
            }
            if stop {
                break;
            }
        }
        self.close_own_pool().await;
        let _ = self.health.send(AuditHealth::Stopped);
    }

    /// Closes the writer's own connection (SQLite); the shared pool is
    /// left alone. Closing twice is harmless.
    async fn close_own_pool(&mut self) {
        if let Some(a) = self.appender.as_mut() {
            a.close().await;
        }
        if self.own_pool {
            self.db.close().await;
        }
    }

    async fn final_checkpoint(&mut self) -> Option<SignedCheckpoint> {
        match self.checkpoint().await {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!(error = %e, "final audit checkpoint failed");
                None
            }
        }
    }

    /// Commits `batch` and answers its waiters before returning.
    async fn write(&mut self, batch: Vec<(AuditEvent, Waiter)>) {
        if let Some(f) = self.launch(batch).await {
            self.settle(f).await;
        }
    }

    /// Waits for a launched batch's commit and settles it.
    async fn settle(&mut self, mut f: Inflight) {
        let joined = (&mut f.task).await;
        self.finish(f, joined).await;
    }

    /// Starts committing `batch` (after the outage record, if the store was
    /// down) in a task of its own and returns it, or fails it at once.
    /// Nothing else may write the log until [`Task::finish`] has settled it.
    async fn launch(&mut self, batch: Vec<(AuditEvent, Waiter)>) -> Option<Inflight> {
        if let Some(at) = self.retry_at
            && Instant::now() < at
        {
            if let Some(o) = self.outage.as_mut() {
                o.refused += batch.len() as u64;
            }
            for (_, w) in batch {
                let _ = w.send(Err(AuditError::Unavailable));
            }
            return None;
        }
        let mut events: Vec<AuditEvent> = Vec::with_capacity(batch.len() + 1);
        if let Some(o) = &self.outage {
            let now = now_ms();
            events.push(
                AuditEvent::builder(EventKind::StoreOutage, "audit.store_recovered")
                    .decision(Outcome::Error, Vec::<String>::new(), None)
                    .error_class(o.error_class)
                    .reason(format!(
                        "audit store unavailable from {} to {}; {} append(s) refused",
                        rfc3339_ms(o.since_ms),
                        rfc3339_ms(now),
                        o.refused
                    ))
                    .build(),
            );
        } else if batch.is_empty() {
            return None;
        }
        let mut waiters = Vec::with_capacity(batch.len());
        for (ev, w) in batch {
            events.push(ev);
            waiters.push(w);
        }
        let skip = events.len() - waiters.len();
        let subject_rows: u64 = events.iter().map(|e| e.subjects.len() as u64).sum();
        let prepared = match self.prepare(&mut events).await {
            Ok(p) => p,
            Err(e) => {
                self.failed(e, waiters);
                return None;
            }
        };
        let (rows, chunks, head, new_contexts) = prepared;
        let contexts = new_contexts.iter().map(|c| c.id.clone()).collect();
        let receipts = rows
            .iter()
            .map(|r| Receipt {
                log_id: r.record.log_id.clone(),
                seq: r.record.seq,
                hash: r.hash,
            })
            .collect();
        let last_event_id = rows
            .last()
            .map(|r| r.record.event_id.clone())
            .unwrap_or_default();
        let task = match self.appender.as_mut() {
            Some(a) => a.append(rows, chunks, new_contexts),
            None => {
                let (tx, rx) = oneshot::channel();
                let db = self.db.clone();
                tokio::spawn(async move {
                    let _ = tx.send(store::append_batch(&db, &rows, &chunks, &new_contexts).await);
                });
                rx
            }
        };
        Some(Inflight {
            task,
            last_event_id,
            waiters,
            receipts,
            skip,
            subject_rows,
            head,
            contexts,
        })
    }

    /// Hashes `events` onto the head: their rows, the roots of the chunks
    /// they complete, the head once they are committed, and the contexts
    /// they name that are not known to be stored yet.
    async fn prepare(
        &mut self,
        events: &mut [AuditEvent],
    ) -> Result<
        (
            Vec<StoredEvent>,
            Vec<(u64, Hash)>,
            Head,
            Vec<StoredContextRow>,
        ),
        AuditError,
    > {
        if self.head.is_none() {
            self.head = Some(Head::resume(&self.db, &self.config.log_id).await?);
        }
        let Some(head) = self.head.as_ref() else {
            return Err(AuditError::Corrupt("no log head"));
        };
        let log_id = self.config.log_id.as_str();
        let mut rows = Vec::with_capacity(events.len());
        let mut prev = head.last_hash;
        let mut frontier = head.frontier.clone();
        let mut chunks = Vec::new();
        let mut contexts: Vec<StoredContextRow> = Vec::new();
        for (i, ev) in events.iter_mut().enumerate() {
            ev.instance_id = log_id.to_owned();
            let seq = head.next_seq + i as u64;
            let (record, context) = if self.share_contexts {
                Record::from_event_sharing(log_id, seq, ev)?
            } else {
                (Record::from_event(log_id, seq, ev)?, None)
            };
            if let Some(c) = context
                && !self.contexts_stored.contains(&c.id)
                && !contexts.iter().any(|k| k.id == c.id)
            {
                contexts.push(c);
            }
            let (leaf, hash) = hash_record(&record.as_ref(), &prev, &mut self.scratch);
            if let Some(root) = frontier.push_reporting(leaf, CHUNK_HEIGHT) {
                chunks.push((frontier.size() / CHUNK - 1, root));
            }
            rows.push(StoredEvent {
                record,
                leaf_hash: leaf,
                prev_hash: prev,
                hash,
            });
            prev = hash;
        }
        let next = Head {
            next_seq: head.next_seq + rows.len() as u64,
            last_hash: prev,
            frontier,
        };
        Ok((rows, chunks, next, contexts))
    }

    /// Settles a launched batch: answers its waiters with their receipts,
    /// or with [`AuditError::Unavailable`] if it did not commit.
    async fn finish(
        &mut self,
        f: Inflight,
        joined: Result<Result<(), AuditError>, oneshot::error::RecvError>,
    ) {
        let result = match joined {
            Ok(r) => r,
            Err(_) => Err(AuditError::Io(std::io::Error::other(
                "the audit commit task failed",
            ))),
        };
        if let Err(e) = result {
            // The commit may have happened even though we saw an error
            // (connection lost during COMMIT): settle it by looking.
            let landed = !f.last_event_id.is_empty()
                && store::event_exists(&self.db, &f.last_event_id)
                    .await
                    .unwrap_or(false);
            if !landed {
                self.failed(e, f.waiters);
                return;
            }
        }
        self.head = Some(f.head);
        if self.contexts_stored.len() + f.contexts.len() > CONTEXTS_REMEMBERED {
            self.contexts_stored.clear();
        }
        self.contexts_stored.extend(f.contexts);
        if self.outage.take().is_some() {
            tracing::info!("audit store writable again");
        }
        self.backoff = INITIAL_BACKOFF;
        self.retry_at = None;
        self.health.send_if_modified(|h| {
            let changed = *h != AuditHealth::Ready;
            *h = AuditHealth::Ready;
            changed
        });
        for (w, r) in f
            .waiters
            .into_iter()
            .zip(f.receipts.into_iter().skip(f.skip))
        {
            let _ = w.send(Ok(r));
        }
        self.unindexed_rows += f.subject_rows;
        let written = self.head.as_ref().map_or(0, |h| h.next_seq);
        if self.pass.is_some()
            || written.saturating_sub(self.indexed_to) >= self.config.subject_index_batch
            || self.unindexed_rows >= store::INDEX_BATCH_ROWS
        {
            self.index_step().await;
        }
    }

    /// A write failed: refuse its waiters and later appends until the
    /// store answers again.
    fn failed(&mut self, e: AuditError, waiters: Vec<Waiter>) {
        self.head = None;
        let class = e.class();
        tracing::error!(error = %e, events = waiters.len(), "audit store write failed; refusing appends");
        let now = now_ms();
        let o = self.outage.get_or_insert(Outage {
            since_ms: now,
            refused: 0,
            error_class: class,
        });
        o.refused += waiters.len() as u64;
        let since = o.since_ms;
        let _ = self.health.send(AuditHealth::Unavailable {
            since_ms: since,
            error: e.to_string(),
        });
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        for w in waiters {
            let _ = w.send(Err(AuditError::Unavailable));
        }
    }

    /// Writes the next slice of the subject-index pass, planning one (the
    /// subjects of the events written since the last) if none is under
    /// way. A failure is only logged: the index is derived, searches still
    /// find the events it does not cover yet, and a pass planned again
    /// rewrites nothing twice.
    async fn index_step(&mut self) {
        let mut pass = match self.pass.take() {
            Some(p) => p,
            None => match store::plan_index_pass(&self.db, &self.config.log_id).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "audit subject index not updated; will retry");
                    return;
                }
            },
        };
        match store::index_slice(&self.db, &mut pass, store::INDEX_SLICE_ROWS).await {
            Ok(store::Slice::More) => self.pass = Some(pass),
            Ok(store::Slice::Done(done)) => {
                self.indexed_to = done.to;
                let written = self.head.as_ref().map_or(0, |h| h.next_seq);
                self.unindexed_rows = if done.to >= written {
                    0
                } else {
                    self.unindexed_rows.saturating_sub(done.rows)
                };
            }
            // Planned again at the next step.
            Ok(store::Slice::Superseded) => {}
            Err(e) => tracing::warn!(error = %e, "audit subject index not updated; will retry"),
        }
    }

    /// Completes the pass under way, or one whole pass if none is.
    async fn index_subjects(&mut self) {
        loop {
            self.index_step().await;
            if self.pass.is_none() {
                break;
            }
        }
    }

    async fn checkpoint(&mut self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.index_subjects().await;
        if self.head.is_none() {
            self.head = Some(Head::resume(&self.db, &self.config.log_id).await?);
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let size = head.frontier.size();
        if size == 0 || size <= self.last_checkpoint_size {
            return Ok(None);
        }
        let cp = Checkpoint {
            log_id: self.config.log_id.clone(),
            tree_size: size,
            root: head.frontier.root(),
            time_ms: now_ms(),
        };
        let signed = self.key.sign(&cp);
        store::insert_checkpoint(&self.db, &signed, &head.frontier.to_bytes()).await?;
        self.last_checkpoint_size = size;
        Ok(Some(signed))
    }
}

/// Group commit: takes whatever else is queued, and what the callers
/// answered by the last commit are sending right now (yielding lets them
/// run), up to `max` in all; stops when a pass brings nothing.
async fn gather(rx: &mut mpsc::Receiver<Msg>, pending: &mut Vec<Msg>, max: usize) {
    for _ in 0..GATHER_PASSES {
        let before = pending.len();
        while pending.len() < max {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        if pending.len() == before || pending.len() >= max {
            break;
        }
        tokio::task::yield_now().await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
