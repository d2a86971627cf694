//! Batch lookups against an SQLite file through SQLite's C API (rusqlite)
//! on a blocking thread, without the async driver in between.
//!
//! Through sqlx a match chunk's rows were stepped on the connection's
//! worker thread, every column value copied (`sqlite3_value_dup`) and each
//! row handed to the async side over a channel: for a 100k-ID match that
//! hand-off and the copies were a large share of the time. Here the
//! calling blocking thread steps the query itself and builds each
//! [`RecordText`] straight from SQLite's buffers. Connections are
//! read-only, kept in a small idle list and opened on demand; in WAL mode
//! each query reads one consistent snapshot while the gateway writes.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use adapters::domain::IdNumber;
use rusqlite::{Connection, OpenFlags};

use super::sqlite::json_array;
use super::{RecordText, RecordsError, stored_record};

/// Idle connections kept for reuse (more may be open while busy). Batch
/// lookups come a few chunks at a time per match (an open costs a schema
/// parse and a memory map; single-ID lookups stay on the pool).
const MAX_IDLE: usize = 8;

/// The read-only connections of one SQLite database file.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    /// The gateway's `PRAGMA mmap_size`, read from its pool on first use.
    mmap_size: OnceLock<i64>,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers for the file at `path`, or `None` for an in-memory database
    /// (no file another connection could open).
    pub(super) fn new(path: PathBuf) -> Option<Self> {
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return None;
        }
        Some(Readers {
            path,
            mmap_size: OnceLock::new(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Whether [`Readers::set_mmap_size`] still has to be called.
    pub(super) fn needs_mmap_size(&self) -> bool {
        self.mmap_size.get().is_none()
    }

    /// Connections are opened with this `PRAGMA mmap_size` (the pool's).
    pub(super) fn set_mmap_size(&self, bytes: i64) {
        let _ = self.mmap_size.set(bytes);
    }

    fn take(&self) -> Result<Connection, RecordsError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(
            None,
            "mmap_size",
            self.mmap_size.get().copied().unwrap_or(0),
        )?;
        Ok(c)
    }

    fn put(&self, c: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE
        {
            v.push(c);
        }
    }

    /// [`super::sqlite::match_ids`] on this thread: `(index into ids,
    /// record)` for every current, not withdrawn record about `ids[i]` in
    /// `datasets`. Blocking.
    pub(super) fn match_ids(
        &self,
        ids: &[IdNumber],
        datasets: &[String],
    ) -> Result<Vec<(usize, RecordText)>, RecordsError> {
        let ids: Vec<&str> = ids.iter().map(IdNumber::as_str).collect();
        let ids = json_array(&ids)?;
        let datasets = json_array(datasets)?;
        let conn = self.take()?;
        let out = query(&conn, &ids, &datasets);
        // A connection that failed is dropped, not reused.
        if out.is_ok() {
            self.put(conn);
        }
        out
    }
}

fn query(
    conn: &Connection,
    ids: &str,
    datasets: &str,
) -> Result<Vec<(usize, RecordText)>, RecordsError> {
    let mut stmt = conn.prepare(super::sqlite::MATCH_SQL)?;
    let mut rows = stmt.query((ids, datasets))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let i: i64 = r.get(0)?;
        let i = usize::try_from(i).map_err(|_| RecordsError::Corrupt("match index"))?;
        let rec = stored_record(
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            text(r, 4, "region")?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            text(r, 8, "department")?,
            r.get(9)?,
        )?;
        out.push((i, rec));
    }
    Ok(out)
}

/// Column `i` as text, borrowed from SQLite's buffer.
fn text<'a>(
    r: &'a rusqlite::Row<'_>,
    i: usize,
    what: &'static str,
) -> Result<&'a str, RecordsError> {
    r.get_ref(i)?
        .as_str()
        .map_err(|_| RecordsError::Corrupt(what))
}
