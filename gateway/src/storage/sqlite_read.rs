//! Read-only connections to an SQLite file through SQLite's C API
//! (rusqlite), for the reads on the request path that sqlx would route
//! through a worker thread.
//!
//! sqlx runs every SQLite statement on the connection's own worker thread:
//! the caller's task hands the statement over and is woken with the rows.
//! For a person query that meant two hand-offs (the caller's grants, then
//! the person's records), four context switches per request, each a few
//! microseconds of lookups. Profiled under load (2026-11-29, 2 cores, 64
//! connections) the switching itself (`finish_task_switch`,
//! `try_to_wake_up`) took about a third of the gateway's CPU. Here the
//! calling thread steps the statement itself: a point lookup through the
//! memory-mapped file costs a few microseconds, less than the hand-off did,
//! so it runs inline on the async worker rather than on a blocking thread
//! (which would be a hand-off again). Batch lookups, which read many pages,
//! use the same connections from a blocking thread
//! ([`tokio::task::spawn_blocking`]).
//!
//! Connections are read-only, opened on demand and kept in a small idle
//! list; statements are prepared once per connection (rusqlite's statement
//! cache). In WAL mode each statement reads one consistent snapshot of what
//! was committed, whichever connection committed it.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::SqlitePool;

/// Idle connections kept for reuse (more may be open while busy): one per
/// async worker and a few batch lookups at a time.
const MAX_IDLE: usize = 8;

/// How long a read waits on a locked file (recovery of a WAL after a
/// crash, the only time readers wait in WAL mode) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The read-only connections of one SQLite database file.
#[derive(Debug)]
pub struct SqliteReaders {
    path: PathBuf,
    /// The pool's `PRAGMA mmap_size`, read from it on first use.
    mmap_size: OnceLock<i64>,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReaders {
    /// Readers for the file behind `pool`, or `None` for an in-memory
    /// database (no file another connection could open).
    pub fn for_pool(pool: &SqlitePool) -> Option<Self> {
        let path = pool.connect_options().get_filename().to_owned();
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return None;
        }
        Some(SqliteReaders {
            path,
            mmap_size: OnceLock::new(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Reads the pool's `PRAGMA mmap_size` the first time, so these
    /// connections map the file as the pool's do; a no-op afterwards.
    pub async fn prepare(&self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        if self.mmap_size.get().is_none() {
            let bytes: i64 = sqlx::query_scalar("PRAGMA mmap_size")
                .fetch_one(pool)
                .await?;
            let _ = self.mmap_size.set(bytes);
        }
        Ok(())
    }

    /// Runs `f` on an idle connection (or a new one) on this thread. A
    /// connection whose work failed is closed, not reused. Blocking: keep
    /// `f` to point lookups on an async worker.
    pub fn with<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.take()?;
        let out = f(&conn);
        if out.is_ok() {
            self.put(conn);
        }
        out
    }

    fn take(&self) -> Result<Connection, rusqlite::Error> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(BUSY_TIMEOUT)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Database;

    #[tokio::test]
    async fn reads_what_the_pool_committed_and_drops_failed_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("r.db").display());
        let Database::Sqlite(pool) = Database::connect_with(&url, 2, 1 << 20)
            .await
            .expect("connect")
        else {
            unreachable!("an SQLite URL");
        };
        sqlx::query("CREATE TABLE t (v INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .expect("create");
        let readers = SqliteReaders::for_pool(&pool).expect("a file");
        readers.prepare(&pool).await.expect("mmap size");
        let count = |r: &SqliteReaders| {
            r.with(|c| c.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0)))
        };
        assert_eq!(count(&readers).expect("count"), 0);
        sqlx::query("INSERT INTO t VALUES (1), (2)")
            .execute(&pool)
            .await
            .expect("insert");
        // The idle connection sees the later commit.
        assert_eq!(count(&readers).expect("count"), 2);
        let mapped = readers
            .with(|c| c.query_row("PRAGMA mmap_size", [], |row| row.get::<_, i64>(0)))
            .expect("pragma");
        assert_eq!(mapped, 1 << 20);
        // Read-only: a write fails, and that connection is not kept.
        let idle_before = readers.idle.lock().expect("lock").len();
        assert!(
            readers
                .with(|c| c.execute("INSERT INTO t VALUES (3)", []))
                .is_err()
        );
        assert_eq!(readers.idle.lock().expect("lock").len(), idle_before - 1);
        assert_eq!(count(&readers).expect("count"), 2);
        // In memory: nothing another connection could open.
        let Database::Sqlite(mem) = Database::connect_with("sqlite::memory:", 2, 0)
            .await
            .expect("connect")
        else {
            unreachable!("an SQLite URL");
        };
        assert!(SqliteReaders::for_pool(&mem).is_none());
    }
}
