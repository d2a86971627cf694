//! Grants: approvals of 有条件共享 (conditional) rules for one consumer
//! department, with an expiry. A conditional rule applies to a request only
//! while the consumer holds an approved, unexpired grant for it.
//!
//! Grants live in the database (`grants` table, migration 0003) and are
//! looked up on every request ([`GrantStore::list_active`]); evaluation takes
//! them as a plain [`GrantSet`] so the engine stays pure and testable.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::storage::{Database, StorageError};

/// One approval of a conditional rule for a department.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Grant id (e.g. the approval's reference number).
    pub id: String,
    /// The conditional rule it approves.
    pub rule_id: String,
    /// The consumer department it was granted to.
    pub department: String,
    /// Expiry (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether the owner approved it (pending or refused applications are
    /// stored too, but never count).
    pub approved: bool,
}

impl Grant {
    /// Whether this grant makes `rule_id` apply to `department` at `now`.
    pub fn covers(&self, rule_id: &str, department: &str, now: OffsetDateTime) -> bool {
        self.approved
            && self.rule_id == rule_id
            && self.department == department
            && now < self.not_after
    }
}

/// The grants held by the caller of one request.
#[derive(Clone, Debug, Default)]
pub struct GrantSet {
    grants: Vec<Grant>,
}

impl GrantSet {
    /// No grants.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Wraps grants (typically [`GrantStore::list_active`]'s answer; expiry
    /// and approval are checked again at evaluation).
    pub fn new(grants: Vec<Grant>) -> Self {
        GrantSet { grants }
    }

    /// The grant that makes `rule_id` apply to `department` at `now`.
    pub fn find(&self, rule_id: &str, department: &str, now: OffsetDateTime) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.covers(rule_id, department, now))
    }

    /// All grants held.
    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter()
    }
}

impl FromIterator<Grant> for GrantSet {
    fn from_iter<I: IntoIterator<Item = Grant>>(iter: I) -> Self {
        GrantSet {
            grants: iter.into_iter().collect(),
        }
    }
}

/// Grants in the database. `not_after` is stored as unix milliseconds.
pub struct GrantStore;

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> Result<OffsetDateTime, StorageError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StorageError::Sqlx(sqlx::Error::Decode(Box::new(e))))
}

type Row = (String, String, String, i64, bool);

const SQL_ACTIVE_SQLITE: &str = "SELECT id, rule_id, department, not_after, approved FROM grants \
     WHERE department = ?1 AND approved = 1 AND not_after > ?2 ORDER BY id";

fn to_grant(r: Row) -> Result<Grant, StorageError> {
    Ok(Grant {
        id: r.0,
        rule_id: r.1,
        department: r.2,
        not_after: from_millis(r.3)?,
        approved: r.4,
    })
}

impl GrantStore {
    /// Approved grants of `department` that have not expired at `now`.
    pub async fn list_active(
        db: &Database,
        department: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Grant>, StorageError> {
        const SQL_PG: &str = "SELECT id, rule_id, department, not_after, approved FROM grants \
             WHERE department = $1 AND approved AND not_after > $2 ORDER BY id";
        let now = millis(now);
        let rows: Vec<Row> = match db {
            Database::Sqlite(p) => {
                sqlx::query_as(SQL_ACTIVE_SQLITE)
                    .bind(department)
                    .bind(now)
                    .fetch_all(p)
                    .await?
            }
            Database::Postgres(p) => {
                sqlx::query_as(SQL_PG)
                    .bind(department)
                    .bind(now)
                    .fetch_all(p)
                    .await?
            }
        };
        rows.into_iter().map(to_grant).collect()
    }

    /// [`GrantStore::list_active`] on an SQLite connection of the calling
    /// thread ([`crate::storage::sqlite_read`]): the person query's lookup,
    /// without a hand-off to the pool's worker thread.
    pub fn list_active_sqlite(
        conn: &rusqlite::Connection,
        department: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Grant>, StorageError> {
        let mut stmt = conn.prepare_cached(SQL_ACTIVE_SQLITE)?;
        let mut rows = stmt.query((department, millis(now)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(to_grant((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))?);
        }
        Ok(out)
    }

    /// Stores a grant, replacing one with the same id (re-approval or
    /// revocation updates it in place).
    pub async fn insert(db: &Database, grant: &Grant) -> Result<(), StorageError> {
        const SQL_SQLITE: &str = "INSERT INTO grants (id, rule_id, department, not_after, approved, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET \
             rule_id = excluded.rule_id, department = excluded.department, \
             not_after = excluded.not_after, approved = excluded.approved";
        const SQL_PG: &str = "INSERT INTO grants (id, rule_id, department, not_after, approved, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
             rule_id = excluded.rule_id, department = excluded.department, \
             not_after = excluded.not_after, approved = excluded.approved";
        let created = millis(OffsetDateTime::now_utc());
        match db {
            Database::Sqlite(p) => {
                sqlx::query(SQL_SQLITE)
                    .bind(&grant.id)
                    .bind(&grant.rule_id)
                    .bind(&grant.department)
                    .bind(millis(grant.not_after))
                    .bind(grant.approved)
                    .bind(created)
                    .execute(p)
                    .await?;
            }
            Database::Postgres(p) => {
                sqlx::query(SQL_PG)
                    .bind(&grant.id)
                    .bind(&grant.rule_id)
                    .bind(&grant.department)
                    .bind(millis(grant.not_after))
                    .bind(grant.approved)
                    .bind(created)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn grant(id: &str, approved: bool, not_after: OffsetDateTime) -> Grant {
        Grant {
            id: id.into(),
            rule_id: "r1".into(),
            department: "housing".into(),
            not_after,
            approved,
        }
    }

    #[test]
    fn covers_checks_approval_expiry_rule_and_department() {
        let now = datetime!(2026-06-01 0:00 UTC);
        let g = grant("g", true, datetime!(2026-07-01 0:00 UTC));
        assert!(g.covers("r1", "housing", now));
        assert!(!g.covers("r2", "housing", now));
        assert!(!g.covers("r1", "education", now));
        assert!(!g.covers("r1", "housing", datetime!(2026-07-01 0:00 UTC)));
        assert!(!grant("p", false, datetime!(2027-01-01 0:00 UTC)).covers("r1", "housing", now));
        let set = GrantSet::new(vec![grant("old", true, datetime!(2026-01-01 0:00 UTC)), g]);
        assert_eq!(
            set.find("r1", "housing", now).map(|g| g.id.as_str()),
            Some("g")
        );
    }

    /// The active grants through the pool, checked against the person
    /// query's lookup on the calling thread where there is one (an SQLite
    /// file).
    async fn active(db: &Database, department: &str, now: OffsetDateTime) -> Vec<Grant> {
        let pooled = GrantStore::list_active(db, department, now)
            .await
            .expect("list");
        if let Database::Sqlite(p) = db {
            let readers = crate::storage::sqlite_read::SqliteReaders::for_pool(p).expect("a file");
            readers.prepare(p).await.expect("prepare");
            let inline = readers
                .with(|c| GrantStore::list_active_sqlite(c, department, now))
                .expect("list inline");
            assert_eq!(inline, pooled);
        }
        pooled
    }

    async fn round_trip(db: Database) {
        let now = datetime!(2026-06-01 0:00 UTC);
        let later = datetime!(2026-12-31 16:00 UTC);
        GrantStore::insert(&db, &grant("g1", true, later))
            .await
            .expect("insert");
        GrantStore::insert(&db, &grant("g2", false, later))
            .await
            .expect("insert");
        GrantStore::insert(&db, &grant("g3", true, datetime!(2026-05-01 0:00 UTC)))
            .await
            .expect("insert");
        let mut other = grant("g4", true, later);
        other.department = "education".into();
        GrantStore::insert(&db, &other).await.expect("insert");
        let got = active(&db, "housing", now).await;
        assert_eq!(got, vec![grant("g1", true, later)]);
        // Revocation updates in place.
        GrantStore::insert(&db, &grant("g1", false, later))
            .await
            .expect("update");
        assert!(active(&db, "housing", now).await.is_empty());
        assert_eq!(active(&db, "education", now).await, vec![other]);
    }

    #[tokio::test]
    async fn store_round_trip_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("g.db").display());
        let db = Database::open(&url, 2).await.expect("open");
        round_trip(db.clone()).await;
        db.close().await;
    }

    #[tokio::test]
    async fn store_round_trip_postgres() {
        // Runs only when a PostgreSQL test server is configured (see the
        // common brief); unset means the PostgreSQL half is not run.
        let Ok(base) = std::env::var("GATEWAY_TEST_DATABASE_URL") else {
            return;
        };
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(&base, 2).await.expect("connect");
        let Database::Postgres(pool) = &admin else {
            panic!("GATEWAY_TEST_DATABASE_URL must be a postgres:// URL");
        };
        // `name` is generated here (t_ + uuid hex), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(pool)
            .await
            .expect("create database");
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("database URL without a path"),
        };
        let db = Database::open(&url, 2).await.expect("open");
        round_trip(db.clone()).await;
        db.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(pool)
            .await
            .expect("drop database");
        admin.close().await;
    }
}
