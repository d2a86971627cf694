//! Audit throughput figures: sustained appends into SQLite through the
//! group-committing writer with many concurrent appenders, then the
//! verification rate.
//!
//! ```text
//! cargo run -p gateway --example audit_bench --release -- [EVENTS] [APPENDERS] [DATABASE]
//! ```
//! Defaults: 200000 events, 256 appenders, a temporary SQLite file.

use std::time::Instant;

use gateway::audit::checkpoint::SigningKey;
use gateway::audit::{
    AuditConfig, AuditEvent, AuditWriter, Outcome, SubjectKeys, VerifyOptions, verify,
};
use gateway::storage::Database;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let appenders: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let url = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| dir.path().join("bench.db").display().to_string());
    let db = Database::open(&url, 8).await?;
    let keys = SubjectKeys::new(1, [(1u32, vec![7u8; 32])].into_iter().collect())?;
    let subject = keys.subject(&adapters::domain::IdNumber::parse("441702198001010017")?);
    let cfg = AuditConfig {
        log_id: format!("bench-{}", uuid::Uuid::now_v7().simple()),
        checkpoint_interval_secs: 1,
        ..AuditConfig::default()
    };
    let w = AuditWriter::spawn_with_key(db.clone(), cfg, SigningKey::generate()?).await?;

    let per = events / appenders;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let w = w.clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let ev = AuditEvent::access("records.read")
                    .client("hi-settlement", "health-insurance")
                    .certificate("ab".repeat(32), "0f3a")
                    .route("GET /v1/persons/{id}")
                    .trace_id(format!("{a:08x}{i:024x}"))
                    .dataset("enrolments")
                    .purpose("medical-assistance")
                    .legal_basis("社会救助暂行办法")
                    .grant_id("grant-42")
                    .subject(subject.clone())
                    .records_disclosed(1)
                    .field("category", "clear")
                    .field("valid_until", "clear")
                    .field("id_number", "mask:first6-last4")
                    .decision(Outcome::Allow, ["hi-reads-enrolment"], Some("v7".into()))
                    .status(200)
                    .latency(std::time::Duration::from_micros(850))
                    .build();
                w.append(ev).await?;
            }
            Ok::<_, gateway::audit::AuditError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let written = per * appenders;
    w.shutdown().await;
    println!(
        "append: {written} events, {appenders} concurrent appenders, {secs:.2} s, {:.0} events/s (durable, group commit)",
        written as f64 / secs
    );

    // Verification over everything in the database.
    for run in 0..2 {
        let r = verify(&db, VerifyOptions::default()).await?;
        println!(
            "verify (run {run}): {} events in {} ms = {} events/s, ok = {}",
            r.events, r.elapsed_ms, r.events_per_sec, r.ok
        );
    }
    db.close().await;
    Ok(())
}
