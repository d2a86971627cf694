//! Shared helpers for the audit database tests: a fresh SQLite file per
//! test, and a fresh PostgreSQL database per test when
//! GATEWAY_TEST_DATABASE_URL is set.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use adapters::domain::IdNumber;
use gateway::audit::checkpoint::SigningKey;
use gateway::audit::{AuditConfig, AuditEvent, AuditWriter, Outcome, SubjectKeys};
use gateway::storage::Database;

/// A throwaway database and how to remove it.
pub struct TestDb {
    pub db: Database,
    pub url: String,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("gateway.db");
        let main_url = path.display().to_string();
        let main = Database::open(&main_url, 2).await.expect("open sqlite");
        // The audit log's own file, as the gateway opens it.
        let db = main
            .open_audit(&main_url, gateway::storage::DEFAULT_SQLITE_MMAP_SIZE)
            .await
            .expect("open the audit file");
        main.close().await;
        let url = gateway::storage::sqlite_audit_path(&path)
            .display()
            .to_string();
        TestDb {
            db,
            url,
            name: "sqlite",
            _dir: Some(dir),
            pg_admin: None,
        }
    }

    /// An SQLite store opened elsewhere (`url`: its file).
    pub fn wrap_sqlite(db: Database, url: String) -> TestDb {
        TestDb {
            db,
            url,
            name: "sqlite",
            _dir: None,
            pg_admin: None,
        }
    }

    pub async fn postgres(base: &str) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(base, 2).await.expect("connect postgres");
        if let Database::Postgres(p) = &admin {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(p)
                .await
                .expect("create database");
        }
        admin.close().await;
        let url = match base.rfind('/') {
            Some(i) if i > "postgres://".len() => format!("{}/{}", &base[..i], name),
            _ => format!("{base}/{name}"),
        };
        let db = Database::open(&url, 6).await.expect("open postgres");
        TestDb {
            db,
            url,
            name: "postgres",
            _dir: None,
            pg_admin: Some((base.to_owned(), name)),
        }
    }

    /// Closes the pool and drops the PostgreSQL database.
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((base, name)) = self.pg_admin {
            let admin = Database::connect(&base, 2).await.expect("connect postgres");
            if let Database::Postgres(p) = &admin {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(p)
                .await
                .expect("drop database");
            }
            admin.close().await;
        }
    }

    /// Runs raw SQL (tampering, as someone with direct database access).
    pub async fn exec(&self, sql: &str) {
        match &self.db {
            Database::Sqlite(p) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(p)
                    .await
                    .expect("raw sql");
            }
            Database::Postgres(p) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(p)
                    .await
                    .expect("raw sql");
            }
        }
    }

    /// Drops the append-only triggers, as an attacker with DBA rights would.
    pub async fn drop_guards(&self) {
        match &self.db {
            Database::Sqlite(_) => {
                self.exec(
                    "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete; \
                     DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete; \
                     DROP TRIGGER audit_subjects_no_update; DROP TRIGGER audit_subjects_no_delete; \
                     DROP TRIGGER audit_chunks_no_update; DROP TRIGGER audit_chunks_no_delete; \
                     DROP TRIGGER audit_contexts_no_update; DROP TRIGGER audit_contexts_no_delete;",
                )
                .await
            }
            Database::Postgres(_) => {
                self.exec(
                    "DROP TRIGGER audit_events_append_only ON audit_events; \
                     DROP TRIGGER audit_subjects_append_only ON audit_event_subjects; \
                     DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints; \
                     DROP TRIGGER audit_chunks_append_only ON audit_merkle_chunks; \
                     DROP TRIGGER audit_contexts_append_only ON audit_contexts;",
                )
                .await
            }
        }
    }
}

/// Runs `f` on SQLite, and on PostgreSQL when GATEWAY_TEST_DATABASE_URL is set.
macro_rules! on_each_backend {
    ($f:ident) => {{
        let t = common::TestDb::sqlite().await;
        $f(&t).await;
        t.cleanup().await;
        if let Ok(url) = std::env::var("GATEWAY_TEST_DATABASE_URL") {
            let t = common::TestDb::postgres(&url).await;
            $f(&t).await;
            t.cleanup().await;
        }
    }};
}

/// Evaluates `$body` with `$p` bound to the pool of `$db` (a
/// [`gateway::storage::Database`]), whichever backend it is: the two pool
/// types differ, so the same code is compiled once per backend.
#[allow(unused_macros)]
macro_rules! on_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            gateway::storage::Database::Sqlite($p) => $body,
            gateway::storage::Database::Postgres($p) => $body,
        }
    };
}

pub fn keys() -> SubjectKeys {
    let mut raw = BTreeMap::new();
    raw.insert(1, vec![0x11; 32]);
    raw.insert(2, vec![0x22; 32]);
    SubjectKeys::new(2, raw).expect("keys")
}

pub const ID_A: &str = "11010519491231002X";
pub const ID_B: &str = "441702198001010017";

pub fn id(s: &str) -> IdNumber {
    IdNumber::parse(s).expect("valid test ID")
}

pub fn config(log_id: &str) -> AuditConfig {
    AuditConfig {
        log_id: log_id.to_owned(),
        checkpoint_interval_secs: 3600,
        ..AuditConfig::default()
    }
}

pub async fn writer(t: &TestDb, log_id: &str) -> AuditWriter {
    AuditWriter::spawn_with_key(
        t.db.clone(),
        config(log_id),
        SigningKey::generate().expect("key"),
    )
    .await
    .expect("spawn writer")
}

/// A typical access event: department `dept`, dataset `enrolments`.
pub fn access(i: u64, dept: &str, subject: Option<&IdNumber>) -> AuditEvent {
    let k = keys();
    let mut b = AuditEvent::access("records.read")
        .client(format!("{dept}-sys"), dept)
        .certificate("ab".repeat(32), "01")
        .route("GET /v1/persons/{id}")
        .dataset("enrolments")
        .purpose("medical-assistance")
        .legal_basis("社会救助暂行办法 第二十八条")
        .grant_id("grant-7")
        .trace_id(format!("trace-{i}"))
        .records_disclosed(1)
        .field("category", "clear")
        .field("id_number", "mask:first6-last4")
        .status(200);
    b = if i % 7 == 3 {
        b.decision(Outcome::Deny, ["deny-default"], Some("v3".to_owned()))
            .status(403)
    } else {
        b.decision(
            Outcome::Allow,
            ["hi-reads-enrolment"],
            Some("v3".to_owned()),
        )
    };
    if let Some(s) = subject {
        b = b.subject(k.subject(s));
    }
    b.build()
}
