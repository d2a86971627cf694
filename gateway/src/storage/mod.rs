//! The storage seam: SQLite (embedded default, WAL) and PostgreSQL behind one
//! type.
//!
//! [`Database`] is an enum rather than a trait object: there are exactly two
//! backends, each subsystem (client registry, records, grants, audit) writes
//! its queries once per backend in its own module with
//! `match db { Database::Sqlite(p) => …, Database::Postgres(p) => … }`, and the
//! compiler checks that every query exists for both. Migrations live in
//! `gateway/migrations/{sqlite,postgres}` and are applied at start-up.
//!
//! The audit log is the one subsystem with a store of its own on SQLite:
//! [`Database::open_audit`] opens `NAME-audit.db` beside `NAME.db`
//! (migrations in `gateway/migrations/sqlite-audit`). On PostgreSQL it is the
//! same database.

pub mod sqlite_read;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Errors of the storage layer. Their text is for logs, never for callers.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database URL {0:?} is neither a SQLite path nor a postgres:// URL")]
    BadUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database error: {0}")]
    SqliteDirect(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the audit log needs a database file; {0:?} is in memory")]
    AuditNeedsFile(String),
    #[error("moving the audit log out of {main} into {audit}: {problem}")]
    AuditMove {
        main: String,
        audit: String,
        problem: String,
    },
}

impl StorageError {
    /// SQLite's "database is locked" (SQLITE_BUSY and its extended codes),
    /// which it returns without waiting where waiting could deadlock.
    fn is_sqlite_busy(&self) -> bool {
        let db = match self {
            StorageError::Sqlx(sqlx::Error::Database(db)) => db,
            StorageError::Migrate(
                sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
                | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db), _),
            ) => db,
            _ => return false,
        };
        // Primary code 5; extended codes keep it in the low byte.
        db.code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 5)
    }
}

/// Bytes of an SQLite database read through a memory map unless configured
/// otherwise (`sqlite_mmap_size`): 1 GiB.
pub const DEFAULT_SQLITE_MMAP_SIZE: u64 = 1 << 30;

/// Which backend a [`Database`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to one of the two backends. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_AUDIT_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite-audit");

/// Connections of an SQLite audit pool: auditors' queries, verification
/// and proofs; the writer has a connection of its own
/// ([`Database::dedicated_writer`]).
const AUDIT_POOL_CONNECTIONS: u32 = 4;

/// How long an SQLite connection waits for another's write lock before
/// failing with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRAGMA temp_store` of every SQLite connection.
const SQLITE_TEMP_STORE: &str = "memory";
/// `PRAGMA cache_size` of every SQLite connection (negative: KiB, 64 MiB).
const SQLITE_CACHE_SIZE: &str = "-65536";

/// A connection through SQLite's C API (rusqlite) that writes the file at
/// `path` as [`Database::connect_with`]'s pool connections do (WAL,
/// `synchronous=FULL`, foreign keys, the same cache, lock wait and memory
/// map), for a thread that commits without sqlx (the audit writer's commit
/// thread). The file must exist; a test checks that both agree.
pub(crate) fn sqlite_writer(path: &Path, mmap_size: i64) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::{Connection, OpenFlags};
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns (see connect_with).
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", true)?;
    c.pragma_update(None, "temp_store", SQLITE_TEMP_STORE)?;
    c.pragma_update(None, "cache_size", SQLITE_CACHE_SIZE)?;
    c.pragma_update(None, "mmap_size", mmap_size)?;
    Ok(c)
}

/// The file path of an SQLite database URL (`sqlite:PATH`, `sqlite://PATH`
/// or a plain path); `None` for PostgreSQL URLs.
pub fn sqlite_path(url: &str) -> Option<&str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    Some(
        url.strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url),
    )
}

/// Where the audit log of the SQLite database at `main` lives: beside it,
/// `-audit` added to the file's stem (`DIR/gateway.db` →
/// `DIR/gateway-audit.db`).
pub fn sqlite_audit_path(main: &Path) -> PathBuf {
    let stem = main.file_stem().unwrap_or(main.as_os_str());
    let mut name = stem.to_os_string();
    name.push("-audit");
    if let Some(ext) = main.extension() {
        name.push(".");
        name.push(ext);
    }
    main.with_file_name(name)
}

/// Tries an idempotent start-up step on an SQLite file up to eight times,
/// pausing a little longer each time, while its error satisfies `again`:
/// another process starting on the same file at the same moment can make
/// such a step fail once (see [`migrate_sqlite`], [`Database::open_audit`]).
async fn retried<T, E, F>(
    step: &'static str,
    mut op: impl FnMut() -> F,
    again: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    const ATTEMPTS: u32 = 8;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && again(&e) => {
                tracing::debug!(step, attempt, error = %e, "start-up step raced; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(25 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs `migrator` on an SQLite file, tolerating a second process doing
/// the same at the same moment. sqlx takes no lock for SQLite (it does for
/// PostgreSQL): two gateways starting on one fresh file both see migration
/// N pending, and the slower one's fails (its transaction rolls back, so
/// nothing is half-applied) on a table the faster one just created. The
/// slower one looks again and then finds every migration applied.
async fn migrate_sqlite(
    migrator: &sqlx::migrate::Migrator,
    pool: &SqlitePool,
) -> Result<(), sqlx::migrate::MigrateError> {
    retried(
        "SQLite migrations",
        || migrator.run(pool),
        |e| {
            matches!(
                e,
                sqlx::migrate::MigrateError::Execute(_)
                    | sqlx::migrate::MigrateError::ExecuteMigration(..)
            )
        },
    )
    .await
}

impl Database {
    /// Connects to `url`: `postgres://…` / `postgresql://…` for PostgreSQL;
    /// `sqlite:PATH`, `sqlite://PATH` or a plain file path for SQLite (the file
    /// is created if missing). Does not migrate; see [`Database::migrate`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        Self::connect_with(url, max_connections, DEFAULT_SQLITE_MMAP_SIZE).await
    }

    /// Like [`Database::connect`], with the bytes of an SQLite database
    /// read through a memory map (`PRAGMA mmap_size`; 0: none). Ignored for
    /// PostgreSQL.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        sqlite_mmap_size: u64,
    ) -> Result<Self, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?.application_name("gateway");
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await?;
            return Ok(Database::Postgres(pool));
        }
        let path = sqlite_path(url).unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(StorageError::BadUrl(url.to_owned()));
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // 16 KiB pages (for files created from now on). Chosen when
            // audit events lived in a WITHOUT ROWID table, where at 4 KiB
            // any row over ~1 KB spilled into an overflow page (audit file
            // 2.2x larger, verification 59k → ~90k events/s at 16 KiB).
            // The events table has rowids since (its ~1.2 KB rows fit a
            // 4 KiB page too); measured again then, 4 KiB pages gave no
            // faster appends or person queries and ~7 % slower verification
            // (tests/bench/README.md), so 16 KiB stays.
            .page_size(16_384)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns. The audit log's
            // durability promise rests on this; group commit keeps it cheap.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .pragma("temp_store", SQLITE_TEMP_STORE)
            .pragma("cache_size", SQLITE_CACHE_SIZE)
            // Reads through a memory map rather than read() into the page
            // cache: a 100k-ID match against a 1.2 GB database spent a
            // fifth of its time copying pages out of the kernel (2026-11-29:
            // 3.1 s → 2.05 s with mmap). SQLite falls back to read() past
            // the mapped size.
            .pragma("mmap_size", sqlite_mmap_size.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(2))
            // Each SQLite connection is a worker thread; a ping before every
            // acquire doubles the thread hand-offs of a query for nothing
            // (there is no network that could have dropped the connection).
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(Database::Sqlite(pool))
    }

    /// Applies the backend's migrations.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        match self {
            Database::Sqlite(p) => migrate_sqlite(&SQLITE_MIGRATIONS, p).await?,
            Database::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// Connects and migrates.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        Self::open_with(url, max_connections, DEFAULT_SQLITE_MMAP_SIZE).await
    }

    /// [`Database::connect_with`] and migrates.
    pub async fn open_with(
        url: &str,
        max_connections: u32,
        sqlite_mmap_size: u64,
    ) -> Result<Self, StorageError> {
        let db = Self::connect_with(url, max_connections, sqlite_mmap_size).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Opens the audit log's store for a gateway whose main database is
    /// this one, opened from `url`. PostgreSQL: this same database. SQLite:
    /// the file [`sqlite_audit_path`] names, created and migrated as needed,
    /// so that the audit writer's frequent commits never touch the file the
    /// records are read from (every commit to a file makes each of its
    /// other connections drop its page cache and memory map on its next
    /// read). A main file that still holds an audit log from before the
    /// split has it copied over in one transaction, then dropped; an audit
    /// file that disagrees with it stops the start-up instead.
    pub async fn open_audit(
        &self,
        url: &str,
        sqlite_mmap_size: u64,
    ) -> Result<Database, StorageError> {
        let Database::Sqlite(main) = self else {
            return Ok(self.clone());
        };
        let path = sqlite_path(url).ok_or_else(|| StorageError::BadUrl(url.to_owned()))?;
        if path == ":memory:" || path.contains("mode=memory") {
            return Err(StorageError::AuditNeedsFile(url.to_owned()));
        }
        let audit_path = sqlite_audit_path(Path::new(path)).display().to_string();
        // Every step is idempotent (see move_legacy_sqlite): a start that
        // ran into another process creating the file or moving the log at
        // the same moment (SQLite answers "locked" at once where waiting
        // could deadlock) starts over.
        let audit_path = audit_path.as_str();
        retried(
            "opening the audit file",
            || async move {
                let audit =
                    Self::connect_with(audit_path, AUDIT_POOL_CONNECTIONS, sqlite_mmap_size)
                        .await?;
                if let Database::Sqlite(a) = &audit {
                    migrate_sqlite(&SQLITE_AUDIT_MIGRATIONS, a).await?;
                    crate::audit::store::move_legacy_sqlite(main, a, path, audit_path).await?;
                }
                Ok(audit)
            },
            StorageError::is_sqlite_busy,
        )
        .await
    }

    /// A pool of its own, of one connection kept open, on the same SQLite
    /// file, for a task that commits often (the audit writer); `None` for
    /// PostgreSQL and databases not in a file (use this pool).
    ///
    /// SQLite keeps a connection's page cache across transactions only
    /// while no other connection writes the file. Taking its connections in
    /// turn from a shared pool, the audit writer committed on one whose
    /// cache the previous commit (on another) had made stale: it dropped it
    /// and read the b-trees' newest pages back from the WAL (`pread`),
    /// ~12 KB per event at 16 KiB pages. On one connection those pages stay
    /// cached.
    pub async fn dedicated_writer(&self) -> Result<Option<Database>, StorageError> {
        let Database::Sqlite(pool) = self else {
            return Ok(None);
        };
        let opts = pool.connect_options();
        if !opts.get_filename().is_file() {
            return Ok(None);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with((*opts).clone())
            .await?;
        Ok(Some(Database::Sqlite(pool)))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// A trivial round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self {
            Database::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await?,
            Database::Postgres(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
                return Ok(());
            }
        };
        Ok(())
    }

    /// Records that instance `id` started (first and last start times).
    pub async fn register_instance(&self, id: &str) -> Result<(), StorageError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let sql = "INSERT INTO gateway_instances (instance_id, first_start, last_start) \
                   VALUES ($1, $2, $2) \
                   ON CONFLICT (instance_id) DO UPDATE SET last_start = excluded.last_start";
        match self {
            Database::Sqlite(p) => {
                sqlx::query(sql).bind(id).bind(now).execute(p).await?;
            }
            Database::Postgres(p) => {
                sqlx::query(sql).bind(id).bind(now).execute(p).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Database::Sqlite(p) => p.close().await,
            Database::Postgres(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit writer's commit thread must write with the pool's
    /// settings; durability (`synchronous`) above all.
    #[tokio::test]
    async fn the_rusqlite_writer_is_set_up_as_the_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let url = format!("sqlite:{}", path.display());
        let Database::Sqlite(pool) = Database::connect_with(&url, 2, 1 << 20)
            .await
            .expect("connect")
        else {
            unreachable!("an SQLite URL");
        };
        let c = sqlite_writer(&path, 1 << 20).expect("open");
        let rusqlite_text = |v: rusqlite::types::Value| match v {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        };
        for pragma in [
            "journal_mode",
            "synchronous",
            "foreign_keys",
            "temp_store",
            "cache_size",
            "mmap_size",
            "busy_timeout",
        ] {
            let sql = format!("PRAGMA {pragma}");
            let pooled = if pragma == "journal_mode" {
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(&pool)
                    .await
            } else {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()))
                    .fetch_one(&pool)
                    .await
                    .map(|n| n.to_string())
            }
            .expect(pragma);
            let direct = c
                .query_row(&sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
                .map(rusqlite_text)
                .expect(pragma);
            assert_eq!(direct, pooled, "PRAGMA {pragma}");
        }
        assert_eq!(
            c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                .expect("synchronous"),
            2,
            "FULL"
        );
    }
}
