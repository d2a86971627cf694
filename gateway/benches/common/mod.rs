//! Shared by the benches: the gateway binary's allocator and a scratch
//! PostgreSQL database.

use gateway::storage::Database;

/// The benches measure with the allocator the `gateway` binary uses.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A fresh, migrated database created next to the one `url` names, dropped
/// by [`ScratchPg::drop`].
pub struct ScratchPg {
    admin: sqlx::PgPool,
    name: String,
    /// The scratch database.
    pub db: Database,
}

impl ScratchPg {
    /// Creates and migrates `bench_<uuid>` on the server of `url`.
    pub async fn create(url: &str) -> Self {
        let admin = sqlx::PgPool::connect(url).await.expect("admin");
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create");
        let base = url.split('?').next().unwrap_or(url);
        let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
        let db = Database::open(&format!("{prefix}/{name}"), 4)
            .await
            .expect("pg");
        ScratchPg { admin, name, db }
    }

    /// Closes the pool and drops the database.
    pub async fn drop(self) {
        self.db.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop");
    }
}
