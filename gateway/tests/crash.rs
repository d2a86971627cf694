//! Crash during load: the gateway process is killed (SIGKILL) while clients
//! hammer it; after a restart, every response that came back 2xx has its
//! audit event in the log, and the log verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Demo, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_2xx_answered_before_a_kill_has_its_event_after_restart() {
    let demo = Demo::prepare();
    let (dir, listen) = (&demo.dir, demo.listen);
    let c = client(&demo.pki, "education");
    let mut child = demo.start_ready(&c).await;

    // Load: 16 loops of audited requests, each remembering the event id of
    // every 2xx answer it received.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let url = format!("https://localhost:{}/v1/whoami", listen.port());
        loops.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(r) = c.get(&url).send().await else {
                    continue;
                };
                if r.status().is_success() {
                    let id = r
                        .headers()
                        .get("x-audit-event")
                        .expect("a 2xx without X-Audit-Event")
                        .to_str()
                        .unwrap()
                        .to_owned();
                    acknowledged.lock().unwrap().push(id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL the gateway");
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "too little load before the kill: {} answers",
        acknowledged.len()
    );

    // Restart on the same database: the writer resumes the chain.
    let mut child = demo.start_ready(&c).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let db = gateway::storage::Database::connect(
        &format!("sqlite:{}", dir.path().join("gateway-audit.db").display()),
        2,
    )
    .await
    .unwrap();
    let gateway::storage::Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let mut missing = Vec::new();
    for id in &acknowledged {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM audit_events WHERE event_id = ?1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap();
        if found.is_none() {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged responses have no audit event, e.g. {}",
        missing.len(),
        acknowledged.len(),
        missing[0]
    );
    db.close().await;

    // And the log, written across the crash, verifies end to end.
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "audit",
            "verify",
            "--database",
            dir.path().join("gateway.db").to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify after the crash: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
