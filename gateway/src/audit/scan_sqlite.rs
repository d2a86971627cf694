//! Verification's read path for an SQLite file: SQLite's C API (through
//! rusqlite) on two plain threads, no async driver in between.
//!
//! Through sqlx every row is sixteen owned column values handed from the
//! connection's worker thread to the async side one row at a time; for a
//! scan that only hashes what it reads, that hand-off cost several times the
//! hashing. Here one thread steps a read-only connection through
//! `audit_events` in `(log_id, seq)` order and encodes each row's columns,
//! straight from SQLite's buffers, into a batch ([`RawColumns`], the same
//! event bytes the writer hashed); a second thread hashes the batch and
//! feeds the [`Verifier`]. The connection is a separate one opened on the
//! same file: in WAL mode its read transaction sees one consistent snapshot
//! while the gateway keeps writing.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::AuditError;
use super::merkle::{Hash, leaf_hash};
use super::record::{RawColumns, context_ref};
use super::store::EVENT_COLUMNS;
use super::verify::{self, RowKey, Verifier, count_subjects};

/// Rows per batch handed from the reading thread to the hashing thread.
const BATCH_ROWS: usize = 1_024;
/// Batches in flight (bounds memory: a batch is ~1 MB of event bytes).
const BATCHES_IN_FLIGHT: usize = 4;

/// One row of a batch: ranges into the batch's byte buffer.
struct Row {
    log_id: Range<usize>,
    event_id: Range<usize>,
    seq: u64,
    subjects: u64,
    /// The id of the context the body names.
    context: Option<Range<usize>>,
    /// The event bytes (empty when `leaf` was computed while reading).
    event: Range<usize>,
    /// Their leaf hash, when the reading thread computed it.
    leaf: Option<Hash>,
    /// Stored `[leaf_hash, prev_hash, hash]`, or why they cannot be used.
    stored: Result<[Hash; 3], String>,
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    rows: Vec<Row>,
}

/// Whether an SQLite database at `path` can be scanned this way (a file
/// that exists; not an in-memory database).
pub(crate) fn usable(path: &Path) -> bool {
    path.as_os_str() != ":memory:" && path.is_file()
}

/// Feeds every event of the SQLite file at `path` to `v`, in `(log_id,
/// seq)` order. Blocking: call from a blocking thread. `mmap_size` is the
/// `PRAGMA mmap_size` to read with (the gateway's own setting).
pub(crate) fn feed(path: &Path, mmap_size: i64, v: Verifier) -> Result<Verifier, AuditError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sqlite_err)?;
    conn.pragma_update(None, "mmap_size", mmap_size)
        .map_err(sqlite_err)?;
    let (tx, rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Batch>();
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut v = v;
            while let Ok(batch) = rx.recv() {
                for r in &batch.rows {
                    let (Some(log_id), Some(event_id)) = (
                        text(&batch.bytes[r.log_id.clone()]),
                        text(&batch.bytes[r.event_id.clone()]),
                    ) else {
                        // Checked by the reader; unreachable.
                        continue;
                    };
                    let key = RowKey {
                        log_id,
                        seq: r.seq,
                        event_id,
                        subjects: r.subjects,
                        context: r.context.clone().map(|c| &batch.bytes[c]),
                    };
                    let leaf = r
                        .leaf
                        .unwrap_or_else(|| leaf_hash(&batch.bytes[r.event.clone()]));
                    v.check(&key, r.stored.clone(), leaf);
                }
                // The reader may be gone already: nothing to recycle then.
                let _ = recycle_tx.send(batch);
            }
            v
        });
        let read = read_rows(&conn, &tx, &recycle_rx);
        drop(tx);
        let v = hasher
            .join()
            .map_err(|_| AuditError::Io(std::io::Error::other("the verification thread failed")))?;
        read.map(|()| v)
    })
}

/// The reading thread: steps the query, encodes rows into batches.
fn read_rows(
    conn: &Connection,
    tx: &mpsc::SyncSender<Batch>,
    recycle: &mpsc::Receiver<Batch>,
) -> Result<(), AuditError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events ORDER BY log_id, seq");
    let mut stmt = conn.prepare(&sql).map_err(sqlite_err)?;
    let mut rows = stmt.query([]).map_err(sqlite_err)?;
    let mut batch = Batch::default();
    let mut scratch = Vec::new();
    while let Some(r) = rows.next().map_err(sqlite_err)? {
        let at = batch.bytes.len();
        let Columns {
            raw: cols,
            unreadable,
        } = columns(r)?;
        let log_id = text(cols.log_id)
            .map(|_| at..at + cols.log_id.len())
            .ok_or(AuditError::Corrupt(
                "an audit row's log_id is not UTF-8 text",
            ))?;
        let event_id = text(cols.event_id)
            .map(|_| log_id.end..log_id.end + cols.event_id.len())
            .ok_or(AuditError::Corrupt(
                "an audit row's event_id is not UTF-8 text",
            ))?;
        batch.bytes.extend_from_slice(cols.log_id);
        batch.bytes.extend_from_slice(cols.event_id);
        let context = context_ref(cols.body).map(|id| {
            let at = batch.bytes.len();
            batch.bytes.extend_from_slice(id);
            at..batch.bytes.len()
        });
        let stored = match unreadable {
            Some(detail) => Err(detail),
            None => stored_hashes(r),
        };
        let start = batch.bytes.len();
        // A row naming many subjects (a batch match: rare, and its subject
        // root is ~100,000 hashes) is hashed here, where its columns are,
        // in case it predates GWA2 (RawColumns::leaf_for).
        let leaf = cols
            .rooted()
            .then(|| cols.leaf_for(stored.as_ref().ok().map(|[l, _, _]| l), &mut scratch));
        if leaf.is_none() {
            cols.encode_into(&mut batch.bytes);
        }
        batch.rows.push(Row {
            log_id,
            event_id,
            seq: cols.seq,
            subjects: count_subjects(cols.subjects),
            context,
            event: start..batch.bytes.len(),
            leaf,
            stored,
        });
        if batch.rows.len() == BATCH_ROWS {
            let mut next = recycle.try_recv().unwrap_or_default();
            next.bytes.clear();
            next.rows.clear();
            if !send(tx, std::mem::replace(&mut batch, next)) {
                // The hashing thread is gone; its join reports why.
                return Ok(());
            }
        }
    }
    if !batch.rows.is_empty() {
        send(tx, batch);
    }
    Ok(())
}

/// Hands `batch` to the hashing thread. Leaf hashing (SHA-256 over every
/// event's bytes) is most of the work; when the hashing thread is behind
/// (the queue is full), this thread hashes the batch's leaves itself
/// instead of waiting, so both cores hash. False if the hashing thread is
/// gone.
fn send(tx: &mpsc::SyncSender<Batch>, batch: Batch) -> bool {
    match tx.try_send(batch) {
        Ok(()) => true,
        Err(mpsc::TrySendError::Disconnected(_)) => false,
        Err(mpsc::TrySendError::Full(mut batch)) => {
            for r in batch.rows.iter_mut().filter(|r| r.leaf.is_none()) {
                r.leaf = Some(leaf_hash(&batch.bytes[r.event.clone()]));
            }
            tx.send(batch).is_ok()
        }
    }
}

/// The hashed columns of one row, with why a column cannot be used.
struct Columns<'a> {
    raw: RawColumns<'a>,
    unreadable: Option<String>,
}

/// Reads columns 0..=12 (see [`EVENT_COLUMNS`]). Position columns (log id,
/// sequence number, event id) of the wrong type make the table unreadable;
/// any other column of the wrong type (a blob or number where the writer
/// stores text, say) is reported for its row.
fn columns<'a>(r: &'a rusqlite::Row<'_>) -> Result<Columns<'a>, AuditError> {
    const NAMES: [&str; 13] = [
        "log_id",
        "seq",
        "event_id",
        "time_ms",
        "kind",
        "department",
        "client_id",
        "datasets",
        "purpose",
        "decision",
        "status",
        "subjects",
        "body",
    ];
    let mut unreadable = None;
    let mut txt = |i: usize| -> Result<&'a [u8], AuditError> {
        match r.get_ref(i).map_err(sqlite_err)? {
            ValueRef::Text(t) => Ok(t),
            _ if i <= 2 => Err(AuditError::Corrupt(
                "an audit row's log_id or event_id is not text",
            )),
            other => {
                unreadable.get_or_insert_with(|| {
                    format!(
                        "column {} holds {:?}, not text: the row was written outside the gateway",
                        NAMES[i],
                        other.data_type()
                    )
                });
                Ok(&[])
            }
        }
    };
    let log_id = txt(0)?;
    let event_id = txt(2)?;
    let kind = txt(4)?;
    let department = txt(5)?;
    let client_id = txt(6)?;
    let datasets = txt(7)?;
    let purpose = txt(8)?;
    let decision = txt(9)?;
    let subjects = txt(11)?;
    let body = txt(12)?;
    let mut int = |i: usize| -> Result<i64, AuditError> {
        match r.get_ref(i).map_err(sqlite_err)? {
            ValueRef::Integer(n) => Ok(n),
            _ if i == 1 => Err(AuditError::Corrupt("an audit row's seq is not an integer")),
            other => {
                unreadable.get_or_insert_with(|| {
                    format!(
                        "column {} holds {:?}, not an integer: the row was written outside the gateway",
                        NAMES[i],
                        other.data_type()
                    )
                });
                Ok(0)
            }
        }
    };
    let seq = int(1)?;
    let time_ms = int(3)?;
    let status = int(10)?;
    Ok(Columns {
        raw: RawColumns {
            log_id,
            seq: seq as u64,
            event_id,
            time_ms,
            kind,
            department,
            client_id,
            datasets,
            purpose,
            decision,
            status,
            subjects,
            body,
        },
        unreadable,
    })
}

/// Columns 13..=15: the stored hashes.
fn stored_hashes(r: &rusqlite::Row<'_>) -> Result<[Hash; 3], String> {
    // A column that is not a blob counts as one of the wrong length.
    let blob = |i| match r.get_ref(i) {
        Ok(ValueRef::Blob(b)) => b,
        _ => &[],
    };
    verify::stored_hashes([blob(13), blob(14), blob(15)])
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

fn sqlite_err(e: rusqlite::Error) -> AuditError {
    AuditError::Io(std::io::Error::other(format!("reading the audit log: {e}")))
}
