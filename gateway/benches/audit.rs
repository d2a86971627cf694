//! Audit log figures (not a timed test): sustained appends through the
//! group-committing writer into SQLite (and PostgreSQL when
//! GATEWAY_TEST_DATABASE_URL is set), then a full verification of the log,
//! then inclusion proofs.
//!
//! `cargo bench -p gateway --bench audit` (optionally `-- --events N`,
//! default 200,000, and `--appenders N`, default 64). For profiling one phase: `-- --phase append|verify
//! --db PATH` (append into, or only verify, the audit file of the SQLite database PATH;
//! `--phase proof`: only time inclusion proofs on it). Each event looks like a person query's: a caller and
//! certificate, two datasets, one data subject (keyed HMAC of a synthetic
//! ID number), a legal basis, a dozen disclosed fields as the gateway names
//! them, two rule ids.
//!
//! Appends come from 64 concurrent tasks (or `--appenders N`) (as from 64 connections), each
//! waiting for its event to be durable before sending the next, exactly as
//! the request path does.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use adapters::domain::IdNumber;
use gateway::audit::merkle::{MerkleTree, leaf_hash};
use gateway::audit::record::{Record, SubjectsRoot};
use gateway::audit::{
    AuditConfig, AuditEvent, AuditWriter, Outcome, SigningKey, SubjectKeys, VerifyOptions, proofs,
    store, verify,
};
use gateway::storage::Database;
use time::{Date, Duration, Month};

/// Concurrent appenders (as from this many connections); `--appenders N`.
fn tasks_arg() -> u64 {
    arg("--appenders")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(64)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn events_arg() -> u64 {
    arg("--events")
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000)
}

fn person(i: u64) -> IdNumber {
    let base = Date::from_calendar_date(1940, Month::January, 1).expect("date");
    let birth = base + Duration::days((i / 1000 % 25_000) as i64);
    IdNumber::from_parts("441702", birth, (i % 1000) as u16).expect("synthetic id")
}

/// A person query's disclosed fields as the gateway records them
/// (`dataset:path`, treatment): education reading the assistance roster
/// and the monitoring list for student aid.
const FIELDS: [(&str, &str); 12] = [
    ("assistance-enrolment:enrolment_id", "clear"),
    ("assistance-enrolment:category", "clear"),
    ("assistance-enrolment:region_code", "clear"),
    ("assistance-enrolment:head.name", "mask:name"),
    ("assistance-enrolment:members[].id_number", "mask:id-number"),
    ("assistance-enrolment:members[].name", "mask:name"),
    ("assistance-enrolment:members[].relation", "clear"),
    ("assistance-enrolment:valid_from", "clear"),
    ("assistance-enrolment:valid_to", "clear"),
    ("assistance-enrolment:status", "clear"),
    ("monitoring-object:subject_type", "clear"),
    ("monitoring-object:head.name", "mask:name"),
];

fn event(keys: &SubjectKeys, i: u64) -> AuditEvent {
    let mut b = AuditEvent::access("GET /v1/persons/{id_number}")
        .route("/v1/persons/{id_number}")
        .client("edu-jiangcheng-01", "education")
        .certificate(
            "9f2c4e61b0a84d3c8e0f5a7b6c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d",
            "3b1f9a",
        )
        .source("127.0.0.1:52314".parse().expect("addr"))
        .status(200)
        .dataset("assistance-enrolment")
        .dataset("monitoring-object")
        .purpose("student-aid")
        .subject(keys.subject(&person(i)))
        .legal_basis("国办发〔2023〕39号; 学生资助资金管理办法 (家庭经济困难学生认定)")
        .records_disclosed(2);
    for (f, t) in FIELDS {
        b = b.field(f, t);
    }
    b.decision(
        Outcome::Allow,
        ["edu-enrolment-status", "edu-monitoring-flag"],
        Some("b440a7fb1f7159be".to_owned()),
    )
    .latency(std::time::Duration::from_micros(900 + i % 300))
    .build()
}

async fn run(label: &str, db: Database, events: u64) {
    println!("== {label} ==");
    let phase = arg("--phase");
    if phase.is_none() || phase.as_deref() == Some("append") {
        append(&db, events).await;
    }
    if phase.is_none() || phase.as_deref() == Some("verify") {
        verify_all(&db, events).await;
    }
    if phase.is_none() || phase.as_deref() == Some("proof") {
        prove(&db).await;
    }
}

/// 3. Inclusion proofs against the latest checkpoint: as they were built
///    before chunk roots (every leaf hash of the log read and a whole tree
///    built, per proof), beside how they are built now (from the chunk
///    roots the writer stored and at most two chunks' leaves; the first
///    proof on a log written before chunk roots existed computes and
///    stores the ones it lacks). Both give the same paths.
async fn prove(db: &Database) {
    let events = store::latest_checkpoint(db, "bench-1")
        .await
        .expect("checkpoint")
        .expect("a checkpoint")
        .tree_size;
    let t = Instant::now();
    let whole = MerkleTree::from_leaves(
        store::leaves(db, "bench-1", 0, events)
            .await
            .expect("leaves"),
    );
    let whole_secs = t.elapsed().as_secs_f64();
    let seqs: Vec<u64> = (0..20).map(|i| i * events / 20 + i).collect();
    let mut ids = Vec::new();
    for &seq in &seqs {
        let e = store::events_range(db, "bench-1", seq, seq + 1)
            .await
            .expect("event");
        ids.push(e[0].record.event_id.clone());
    }
    let t = Instant::now();
    let first = proofs::inclusion_proof(db, &ids[0]).await.expect("proof");
    let first_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        Ok(first.proof.path),
        whole.inclusion_proof(seqs[0], first.proof.tree_size)
    );
    let t = Instant::now();
    for (id, &seq) in ids.iter().zip(&seqs).skip(1) {
        let p = proofs::inclusion_proof(db, id).await.expect("proof");
        assert_eq!(
            Ok(p.proof.path),
            whole.inclusion_proof(seq, p.proof.tree_size)
        );
    }
    let each = t.elapsed().as_secs_f64() / (ids.len() - 1) as f64;
    println!(
        "proof: {events} events: whole tree (before chunk roots) {:.1} ms per proof; \
         chunked: first {:.1} ms (fills in chunk roots if any are missing), then {:.2} ms per proof",
        whole_secs * 1e3,
        first_secs * 1e3,
        each * 1e3
    );
}

async fn append(db: &Database, events: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = AuditConfig {
        log_id: "bench-1".to_owned(),
        key_path: dir.path().join("key.pem"),
        checkpoint_interval_secs: 3_600,
        ..AuditConfig::default()
    };
    let keys =
        Arc::new(SubjectKeys::new(1, BTreeMap::from([(1, vec![7u8; 32])])).expect("subject keys"));
    let key = SigningKey::load_or_generate(&config.key_path).expect("key");
    let writer = AuditWriter::spawn_with_key(db.clone(), config, key)
        .await
        .expect("writer");

    // 1. Sustained appends: 64 tasks, each waiting for durability. The rate
    //    is also printed per tenth of the run, so a slowdown as the log (and
    //    its subject index) grows shows.
    let tasks_n = tasks_arg();
    let done = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..tasks_n {
        let (w, keys, done) = (writer.clone(), keys.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = task;
            while i < events {
                w.append(event(&keys, i)).await.expect("append");
                done.fetch_add(1, Ordering::Relaxed);
                i += tasks_n;
            }
        }));
    }
    let windows = tokio::spawn(report_windows(done, events));
    for t in tasks {
        t.await.expect("task");
    }
    windows.await.expect("window reporter");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "append: {events} events, {tasks_n} concurrent appenders, durable each: {secs:.2} s = {:.0} events/s",
        events as f64 / secs
    );
    let cp = writer.checkpoint_now().await.expect("checkpoint");
    assert!(cp.is_some(), "a checkpoint covers the log");
    writer.shutdown().await;
}

/// Prints the append rate of each tenth of the run as it completes.
async fn report_windows(done: Arc<AtomicU64>, events: u64) {
    let window = (events / 10).max(1);
    let (mut from, mut since) = (0, Instant::now());
    while from < events {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let n = done.load(Ordering::Relaxed);
        if n >= (from + window).min(events) {
            let rate = (n - from) as f64 / since.elapsed().as_secs_f64();
            println!("  events {from:>9}..{n:<9} {rate:.0} events/s");
            (from, since) = (n, Instant::now());
        }
    }
}

async fn verify_all(db: &Database, events: u64) {
    // 2. Full verification: chains, leaf hashes, Merkle root, signatures,
    //    subject index.
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify(db, VerifyOptions::default()).await.expect("verify");
        let secs = t.elapsed().as_secs_f64();
        assert!(report.ok, "the log verifies: {:?}", report.first_problem);
        assert_eq!(report.events, events);
        best = best.min(secs);
    }
    println!(
        "verify: {events} events: best of 3 {best:.2} s = {:.0} events/s",
        events as f64 / best
    );
    hash_floor();
    match_event_cost();
}

/// What a 100,000-ID match's event costs the writer to hash: its subjects
/// committed by a Merkle root (`GWA2`, 100,000 leaf and ~100,000 node
/// hashes), against hashing the 6.7 MB subjects column itself, as the
/// listed form (`GWA1`) did.
fn match_event_cost() {
    let column = (0..100_000u64)
        .map(|i| format!("v1:{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect::<Vec<_>>()
        .join(" ");
    let time = |f: &dyn Fn() -> u8| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(f());
            best = best.min(t.elapsed().as_secs_f64());
        }
        best * 1e3
    };
    let rooted = time(&|| SubjectsRoot::of_column(column.as_bytes()).root[0]);
    let listed = time(&|| leaf_hash(column.as_bytes())[0]);
    println!(
        "match event, 100,000 subjects: subjects root {rooted:.1} ms (GWA2), \
         hashing the listed column {listed:.1} ms (GWA1)"
    );
}

/// The floor under verification: SHA-256 of one event's bytes (the leaf
/// hash, which every event needs), on one core, measured beside it.
/// Verification cannot beat the number of cores times this.
fn hash_floor() {
    let keys = SubjectKeys::new(1, BTreeMap::from([(1, vec![7u8; 32])])).expect("subject keys");
    let rec = Record::from_event("bench-1", 123_456, &event(&keys, 123_456)).expect("record");
    let bytes = rec.as_ref().encode();
    let n = 200_000u32;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut acc = 0u8;
        for _ in 0..n {
            acc ^= leaf_hash(std::hint::black_box(&bytes))[0];
        }
        std::hint::black_box(acc);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "floor: leaf hash (SHA-256) of one event ({} bytes), one core: {:.0} events/s",
        bytes.len(),
        f64::from(n) / best
    );
}

#[tokio::main]
async fn main() {
    let events = events_arg();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = arg("--db")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("audit.db"));
    // The log goes where the gateway puts it: the audit file beside the
    // main one, with its own schema.
    let url = path.to_str().expect("path");
    let main = Database::open(url, 2).await.expect("sqlite");
    let db = main
        .open_audit(url, gateway::storage::DEFAULT_SQLITE_MMAP_SIZE)
        .await
        .expect("the audit file");
    run("SQLite (WAL, synchronous=FULL)", db.clone(), events).await;
    db.close().await;
    main.close().await;
    if arg("--phase").is_some() {
        return;
    }

    if let Ok(url) = std::env::var("GATEWAY_TEST_DATABASE_URL") {
        let pg = common::ScratchPg::create(&url).await;
        let db = pg.db.clone();
        run("PostgreSQL", db.clone(), events).await;
        pg.drop().await;
    }
}
