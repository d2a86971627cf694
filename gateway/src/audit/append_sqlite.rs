//! The audit writer's commits to an SQLite file through SQLite's C API
//! (rusqlite), on a thread of their own.
//!
//! Through sqlx a group commit was three statements (`BEGIN`, one
//! multi-row `INSERT` built as text for the batch, `COMMIT`), each handed
//! from the async side to the connection's worker thread and answered
//! back, with every bound value copied into an owned argument on the way.
//! Here the writer task hands the whole batch over once: this thread opens
//! the transaction, steps one prepared single-row `INSERT` per event with
//! the values borrowed from the batch, commits (`synchronous=FULL`: on
//! disk when the commit returns) and answers. One hand-off each way per
//! commit, whatever its size.
//!
//! The connection is the only one that appends to the file; the writer
//! task's own sqlx connection (checkpoints, subject-index passes) writes
//! only between commits, never while one is in flight. A connection whose
//! write failed is closed, and the next batch opens a fresh one, so a
//! store that comes back is found again without keeping any broken state.

use std::path::PathBuf;
use std::sync::{LazyLock, mpsc};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::AuditError;
use super::merkle::Hash;
use super::record::StoredContextRow;
use super::store::{EVENT_COLUMNS, StoredEvent};
use crate::storage::StorageError;

/// One event's row: the statement the connection prepares once.
static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO audit_events ({EVENT_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    )
});

type Reply = oneshot::Sender<Result<(), AuditError>>;

struct Job {
    rows: Vec<StoredEvent>,
    chunks: Vec<(u64, Hash)>,
    contexts: Vec<StoredContextRow>,
    reply: Reply,
}

/// The thread that commits the writer's batches to one SQLite file.
/// Dropping it (or [`SqliteAppender::close`]) ends the thread once the
/// batch it holds is answered.
#[derive(Debug)]
pub(crate) struct SqliteAppender {
    target: AppendTarget,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The file the appender writes, and how its connection maps it (as the
/// sqlx pools' connections do; the connection is
/// [`crate::storage::sqlite_writer`]).
#[derive(Clone, Debug)]
pub(crate) struct AppendTarget {
    pub path: PathBuf,
    /// `PRAGMA mmap_size`, bytes.
    pub mmap_size: i64,
}

impl SqliteAppender {
    /// Starts the thread. The file is opened on the first batch.
    pub(crate) fn start(target: AppendTarget) -> std::io::Result<Self> {
        let (jobs, thread) = spawn(target.clone())?;
        Ok(SqliteAppender {
            target,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands a batch over; the answer says whether it committed. Should
    /// the thread be gone (it never panics by design), a new one is
    /// started for this batch; if that fails too the batch fails, and the
    /// writer treats it as an outage.
    pub(crate) fn append(
        &mut self,
        rows: Vec<StoredEvent>,
        chunks: Vec<(u64, Hash)>,
        contexts: Vec<StoredContextRow>,
    ) -> oneshot::Receiver<Result<(), AuditError>> {
        let (reply, rx) = oneshot::channel();
        let mut job = Job {
            rows,
            chunks,
            contexts,
            reply,
        };
        if let Some(jobs) = &self.jobs {
            match jobs.send(job) {
                Ok(()) => return rx,
                Err(mpsc::SendError(j)) => job = j,
            }
        }
        match spawn(self.target.clone()) {
            Ok((jobs, thread)) => {
                if let Err(mpsc::SendError(j)) = jobs.send(job) {
                    let _ = j.reply.send(Err(AuditError::Closed));
                }
                self.jobs = Some(jobs);
                self.thread = Some(thread);
            }
            Err(e) => {
                let _ = job.reply.send(Err(AuditError::Io(e)));
            }
        }
        rx
    }

    /// Stops the thread and waits until its connection is closed.
    pub(crate) async fn close(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The thread: one batch at a time, in the order handed over.
fn spawn(
    target: AppendTarget,
) -> std::io::Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("audit-commit".into())
        .spawn(move || {
            let mut conn: Option<Connection> = None;
            while let Ok(job) = rx.recv() {
                let result = commit(&mut conn, &target, &job);
                if result.is_err() {
                    // Rolled back when dropped; reopened for the next batch.
                    conn = None;
                }
                let _ = job
                    .reply
                    .send(result.map_err(|e| AuditError::Storage(StorageError::SqliteDirect(e))));
            }
        })?;
    Ok((tx, thread))
}

/// Inserts the batch, the contexts it names first and its chunk roots in
/// one transaction and commits.
fn commit(conn: &mut Option<Connection>, target: &AppendTarget, job: &Job) -> rusqlite::Result<()> {
    let (rows, chunks) = (&job.rows, &job.chunks);
    let c = match conn {
        Some(c) => c,
        None => conn.insert(crate::storage::sqlite_writer(
            &target.path,
            target.mmap_size,
        )?),
    };
    // IMMEDIATE: the write lock is taken (or waited for) at BEGIN, before
    // anything is read, so a writer elsewhere means a wait, never a
    // stale snapshot.
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !job.contexts.is_empty() {
        // Content-addressed: one already there is the same context.
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_contexts (id, body) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?;
        for c in &job.contexts {
            insert.execute(params![c.id, c.body])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(&INSERT_EVENT)?;
        for e in rows {
            let r = &e.record;
            insert.execute(params![
                r.log_id,
                r.seq as i64,
                r.event_id,
                r.time_ms,
                r.kind,
                r.department,
                r.client_id,
                r.datasets,
                r.purpose,
                r.decision,
                r.status,
                r.subjects,
                r.body,
                e.leaf_hash.as_slice(),
                e.prev_hash.as_slice(),
                e.hash.as_slice(),
            ])?;
        }
    }
    if let Some(log_id) = rows.first().map(|r| r.record.log_id.as_str())
        && !chunks.is_empty()
    {
        // A root already there (computed by a proof first) is left alone.
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_merkle_chunks (log_id, chunk, root) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?;
        for (i, root) in chunks {
            insert.execute(params![log_id, *i as i64, root.as_slice()])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_batch_leaves_nothing_and_later_ones_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = AppendTarget {
            path: dir.path().join("a.db"),
            mmap_size: 0,
        };
        let c = Connection::open(&target.path).expect("create");
        c.execute_batch(
            "CREATE TABLE audit_events (log_id TEXT, seq INTEGER, event_id TEXT UNIQUE, \
             time_ms INTEGER, kind TEXT, department TEXT, client_id TEXT, datasets TEXT, \
             purpose TEXT, decision TEXT, status INTEGER, subjects TEXT, body TEXT, \
             leaf_hash BLOB, prev_hash BLOB, hash BLOB)",
        )
        .expect("schema");
        let row = |seq: u64, event_id: &str| StoredEvent {
            record: super::super::record::Record {
                log_id: "gw".into(),
                seq,
                event_id: event_id.into(),
                time_ms: 1,
                kind: "access".into(),
                department: "education".into(),
                client_id: "c".into(),
                datasets: "[]".into(),
                purpose: "student-aid".into(),
                decision: "allow".into(),
                status: 200,
                subjects: "[]".into(),
                body: "{}".into(),
            },
            leaf_hash: [1; 32],
            prev_hash: [2; 32],
            hash: [3; 32],
        };
        let mut a = SqliteAppender::start(target).expect("start");
        a.append(vec![row(0, "e0")], Vec::new(), Vec::new())
            .await
            .expect("answered")
            .expect("committed");
        // The second row repeats an event id: the whole batch rolls back.
        let failed = a
            .append(vec![row(1, "e1"), row(2, "e0")], Vec::new(), Vec::new())
            .await
            .expect("answered");
        assert!(matches!(failed, Err(AuditError::Storage(_))), "{failed:?}");
        a.append(vec![row(1, "e1")], Vec::new(), Vec::new())
            .await
            .expect("answered")
            .expect("committed on a fresh connection");
        // With its thread gone (closed here), the next batch starts a new one.
        a.close().await;
        a.append(vec![row(2, "e2")], Vec::new(), Vec::new())
            .await
            .expect("answered")
            .expect("committed by a new thread");
        a.close().await;
        let seqs: Vec<i64> = c
            .prepare("SELECT seq FROM audit_events ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(seqs, vec![0, 1, 2]);
    }
}
