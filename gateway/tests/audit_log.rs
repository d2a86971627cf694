//! The audit log against real databases: writing, verification, tampering,
//! proofs, recovery, restart. SQLite always; PostgreSQL when
//! GATEWAY_TEST_DATABASE_URL is set.

#[macro_use]
#[path = "audit_common/mod.rs"]
mod common;

use std::time::Duration;

use common::{ID_A, ID_B, TestDb, access, id, keys, writer};
use gateway::audit::verify::ProblemKind;
use gateway::audit::{
    AuditError, AuditEvent, AuditHealth, EventKind, Outcome, VerifyOptions, archive, proofs, query,
    verify,
};
use gateway::storage::Database;

async fn fill(t: &TestDb, log: &str, n: u64) -> gateway::audit::AuditWriter {
    let w = writer(t, log).await;
    let a = id(ID_A);
    let mut tasks = Vec::new();
    for i in 0..n {
        let w = w.clone();
        let ev = access(
            i,
            if i % 2 == 0 {
                "health-insurance"
            } else {
                "education"
            },
            (i % 5 == 0).then_some(&a),
        );
        tasks.push(tokio::spawn(async move { w.append(ev).await }));
    }
    for t in tasks {
        let r = t.await.expect("join").expect("append");
        assert!(r.is_some());
    }
    w
}

async fn seq_event_id(t: &TestDb, log: &str, seq: i64) -> String {
    let sql = "SELECT event_id FROM audit_events WHERE log_id = $1 AND seq = $2";
    on_pool!(&t.db, |p| sqlx::query_scalar(sql)
        .bind(log)
        .bind(seq)
        .fetch_one(p)
        .await)
    .expect("event id")
}

async fn clean_log_verifies(t: &TestDb) {
    let w = fill(t, "gw-a", 200).await;
    let cp = w
        .checkpoint_now()
        .await
        .expect("checkpoint")
        .expect("new checkpoint");
    assert_eq!(cp.tree_size, 200);
    assert!(cp.signature_valid());
    // Nothing new: no second checkpoint.
    assert!(w.checkpoint_now().await.expect("checkpoint").is_none());
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok, "{}: {:?}", t.name, r.first_problem);
    assert_eq!(r.events, 200);
    assert_eq!(r.logs.len(), 1);
    assert_eq!(r.logs[0].root, hex::encode(cp.root));
    assert_eq!(r.logs[0].checkpoints_checked, 1);
    assert_eq!(r.logs[0].unsigned_tail, 0);
    assert_eq!(r.signing_keys, vec![w.public_key_hex().to_owned()]);
    // Trusting another key fails, naming the untrusted signature.
    let r = verify(
        &t.db,
        VerifyOptions {
            trusted_keys: vec!["00".repeat(32)],
            ..VerifyOptions::default()
        },
    )
    .await
    .expect("verify");
    assert_eq!(
        r.first_problem.map(|p| p.kind),
        Some(ProblemKind::UntrustedKey)
    );
    // The tables refuse updates and deletes through SQL as well.
    let upd = on_pool!(&t.db, |p| sqlx::query("UPDATE audit_events SET status = 1")
        .execute(p)
        .await
        .is_err());
    assert!(upd, "{}: append-only guard", t.name);
    w.shutdown().await;
}

#[tokio::test]
async fn clean_log_verifies_and_is_append_only() {
    on_each_backend!(clean_log_verifies);
}

/// Builds a 60-event log with a checkpoint, drops the guards, applies
/// `tamper`, and returns the first problem.
async fn tampered(t: &TestDb, sql: &str) -> gateway::audit::verify::Problem {
    let w = fill(t, "gw-a", 60).await;
    w.checkpoint_now().await.expect("checkpoint");
    w.shutdown().await;
    let before = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(before.ok, "{:?}", before.first_problem);
    problem_after(t, sql).await
}

/// Drops the guards, applies `tamper` to the log as it is, and returns the
/// first problem verification finds.
async fn problem_after(t: &TestDb, tamper: &str) -> gateway::audit::verify::Problem {
    t.drop_guards().await;
    t.exec(tamper).await;
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(
        !r.ok,
        "{}: tampering with {tamper:?} went unnoticed",
        t.name
    );
    r.first_problem.expect("a problem")
}

async fn tamper_update(t: &TestDb) {
    let p = tampered(
        t,
        "UPDATE audit_events SET department = 'housing' WHERE seq = 10",
    )
    .await;
    assert_eq!(
        (p.log_id.as_str(), p.seq, p.kind),
        ("gw-a", Some(10), ProblemKind::Modified),
        "{}",
        t.name
    );
    assert_eq!(p.event_id, Some(seq_event_id(t, "gw-a", 10).await));
}

async fn tamper_update_body(t: &TestDb) {
    let p = tampered(
        t,
        "UPDATE audit_events SET body = replace(body, 'trace-33', 'trace-34') WHERE seq = 33",
    )
    .await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(33), ProblemKind::Modified),
        "{}",
        t.name
    );
}

/// The disclosed fields live in the context the events name: rewriting
/// them there is named at the first event naming that context.
async fn tamper_context(t: &TestDb) {
    let p = tampered(
        t,
        "UPDATE audit_contexts SET body = replace(body, 'mask:first6-last4', 'clear')",
    )
    .await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(0), ProblemKind::Context),
        "{}: {p:?}",
        t.name
    );
    assert!(p.detail.contains("modified"), "{}", p.detail);
}

async fn tamper_context_delete(t: &TestDb) {
    // Denials have a context of their own (their rule differs): named at
    // the first denial.
    let p = tampered(
        t,
        "DELETE FROM audit_contexts WHERE body LIKE '%deny-default%'",
    )
    .await;
    let sql = "SELECT MIN(seq) FROM audit_events WHERE decision = 'deny'";
    let first_denial: i64 =
        on_pool!(&t.db, |p| sqlx::query_scalar(sql).fetch_one(p).await).expect("first denial");
    assert_eq!(
        (p.seq, p.kind),
        (Some(first_denial as u64), ProblemKind::Context),
        "{}: {p:?}",
        t.name
    );
    assert!(p.detail.contains("not stored"), "{}", p.detail);
}

async fn tamper_delete(t: &TestDb) {
    let p = tampered(t, "DELETE FROM audit_events WHERE seq = 17").await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(18), ProblemKind::Deleted),
        "{}",
        t.name
    );
    assert!(p.detail.contains("17"), "{}", p.detail);
}

async fn tamper_delete_tail(t: &TestDb) {
    let p = tampered(t, "DELETE FROM audit_events WHERE seq >= 55").await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(55), ProblemKind::Truncated),
        "{}",
        t.name
    );
}

async fn tamper_insert(t: &TestDb) {
    // Make room at seq 20 and copy another event in there, with a new id.
    let p = tampered(
        t,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 20; \
         UPDATE audit_events SET seq = seq - 999999 WHERE seq >= 1000000; \
         INSERT INTO audit_events (log_id, seq, event_id, time_ms, kind, department, client_id, \
           datasets, purpose, decision, status, subjects, body, leaf_hash, prev_hash, hash) \
         SELECT log_id, 20, 'forged-event', time_ms, kind, department, client_id, datasets, purpose, \
           decision, status, subjects, body, leaf_hash, prev_hash, hash \
         FROM audit_events WHERE seq = 5;",
    )
    .await;
    assert_eq!(p.seq, Some(20), "{}: {p:?}", t.name);
    assert_eq!(p.event_id.as_deref(), Some("forged-event"));
}

async fn tamper_reorder(t: &TestDb) {
    let p = tampered(
        t,
        "UPDATE audit_events SET seq = 1000 WHERE seq = 7; \
         UPDATE audit_events SET seq = 7 WHERE seq = 8; \
         UPDATE audit_events SET seq = 8 WHERE seq = 1000;",
    )
    .await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(7), ProblemKind::Reordered),
        "{}",
        t.name
    );
}

async fn tamper_checkpoint(t: &TestDb) {
    let sql = match t.db {
        Database::Sqlite(_) => "UPDATE audit_checkpoints SET tree_size = 59",
        Database::Postgres(_) => "UPDATE audit_checkpoints SET tree_size = 59",
    };
    let p = tampered(t, sql).await;
    assert_eq!(p.kind, ProblemKind::BadSignature, "{}", t.name);
}

async fn tamper_subject_index(t: &TestDb) {
    let p = tampered(t, "DELETE FROM audit_event_subjects WHERE seq = 0").await;
    assert_eq!(p.kind, ProblemKind::SubjectIndex, "{}", t.name);
}

#[tokio::test]
async fn tampering_by_update_is_named() {
    on_each_backend!(tamper_update);
    on_each_backend!(tamper_update_body);
    on_each_backend!(tamper_context);
}

/// SQLite stores any type in any column: a text column rewritten as a blob
/// of the same bytes (which a `department = '…'` query no longer finds), a
/// number where text belongs, a short hash: each is named at its row.
#[tokio::test]
async fn sqlite_columns_of_the_wrong_type_are_named() {
    for (sql, seq, says) in [
        (
            "UPDATE audit_events SET department = CAST(department AS BLOB) WHERE seq = 12",
            12,
            "column department holds Blob, not text",
        ),
        (
            "UPDATE audit_events SET status = 'two hundred' WHERE seq = 13",
            13,
            "column status holds Text, not an integer",
        ),
        (
            "UPDATE audit_events SET hash = substr(hash, 1, 31) WHERE seq = 14",
            14,
            "a hash column is not 32 bytes",
        ),
    ] {
        let t = TestDb::sqlite().await;
        let p = tampered(&t, sql).await;
        assert_eq!(
            (p.seq, p.kind),
            (Some(seq), ProblemKind::Unreadable),
            "{sql}"
        );
        assert!(p.detail.contains(says), "{sql}: {}", p.detail);
        assert_eq!(p.event_id, Some(seq_event_id(&t, "gw-a", seq as i64).await));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn tampering_by_delete_is_named() {
    on_each_backend!(tamper_context_delete);
    on_each_backend!(tamper_delete);
    on_each_backend!(tamper_delete_tail);
}

#[tokio::test]
async fn tampering_by_insert_is_named() {
    on_each_backend!(tamper_insert);
}

#[tokio::test]
async fn tampering_by_reorder_is_named() {
    on_each_backend!(tamper_reorder);
}

#[tokio::test]
async fn tampering_with_checkpoints_and_index_is_named() {
    on_each_backend!(tamper_checkpoint);
    on_each_backend!(tamper_subject_index);
}

async fn rewrite_with_recomputed_hashes(t: &TestDb) {
    // A careful forger rewrites event 40 and recomputes its hashes; the
    // next event no longer links to it.
    let w = fill(t, "gw-a", 60).await;
    w.checkpoint_now().await.expect("checkpoint");
    w.shutdown().await;
    t.drop_guards().await;
    let mut e = gateway::audit::store::events_range(&t.db, "gw-a", 40, 41)
        .await
        .expect("read")
        .remove(0);
    e.record.department = "housing".into();
    let mut buf = Vec::new();
    let (leaf, hash) =
        gateway::audit::record::hash_record(&e.record.as_ref(), &e.prev_hash, &mut buf);
    let sql = "UPDATE audit_events SET department = $1, leaf_hash = $2, hash = $3 WHERE log_id = 'gw-a' AND seq = 40";
    on_pool!(&t.db, |p| sqlx::query(sql)
        .bind("housing")
        .bind(leaf.to_vec())
        .bind(hash.to_vec())
        .execute(p)
        .await
        .map(|_| ()))
    .expect("update");
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    let p = r.first_problem.expect("detected");
    assert_eq!(
        (p.seq, p.kind),
        (Some(41), ProblemKind::ChainBroken),
        "{}",
        t.name
    );
    assert!(p.detail.contains("seq 40"), "{}", p.detail);
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::RootMismatch)
    );
}

#[tokio::test]
async fn rewriting_with_recomputed_hashes_is_named() {
    on_each_backend!(rewrite_with_recomputed_hashes);
}

async fn proofs_verify(t: &TestDb) {
    let w = fill(t, "gw-a", 37).await;
    let first = w.checkpoint_now().await.expect("cp").expect("cp");
    for i in 0..20 {
        w.append(access(100 + i, "housing", Some(&id(ID_B))))
            .await
            .expect("append");
    }
    let second = w.checkpoint_now().await.expect("cp").expect("cp");
    assert_eq!((first.tree_size, second.tree_size), (37, 57));
    let ev = seq_event_id(t, "gw-a", 12).await;
    let p = proofs::inclusion_proof(&t.db, &ev).await.expect("proof");
    assert_eq!(p.checkpoint, second);
    let proven = p
        .verify(&[w.public_key_hex().to_owned()])
        .expect("proof verifies");
    // The event names its context; the proof carries it, and the event
    // reads back whole from the two.
    let context = p.context.clone().expect("the proof carries the context");
    assert!(context.contains("mask:first6-last4"), "{context}");
    let ev12 = proven
        .record
        .as_ref()
        .event(proven.context.as_deref())
        .expect("the proven event reads");
    assert_eq!(
        ev12.legal_basis.as_deref(),
        Some("社会救助暂行办法 第二十八条")
    );
    assert_eq!(ev12.fields.len(), 2);
    let mut bad = p.clone();
    bad.context = Some(context.replace("mask:first6-last4", "clear"));
    assert!(bad.verify(&[]).is_err(), "an altered context must fail");
    let mut bad = p.clone();
    bad.context = None;
    assert!(bad.verify(&[]).is_err(), "a missing context must fail");
    assert!(p.proof.verify(&second.root));
    assert!(!p.proof.verify(&first.root), "wrong root must fail");
    let mut bad = p.clone();
    bad.checkpoint.root[0] ^= 1;
    assert!(bad.verify(&[]).is_err());
    let mut bad = p.clone();
    bad.proof.leaf_index = 13;
    assert!(bad.verify(&[]).is_err());
    assert!(p.verify(&["11".repeat(32)]).is_err(), "untrusted key");
    // Newer than the latest checkpoint.
    let r = w
        .append(access(999, "housing", None))
        .await
        .expect("append")
        .expect("receipt");
    let newest = seq_event_id(t, "gw-a", r.seq as i64).await;
    assert!(matches!(
        proofs::inclusion_proof(&t.db, &newest).await,
        Err(AuditError::NotYetCheckpointed(_))
    ));
    assert!(matches!(
        proofs::inclusion_proof(&t.db, "nope").await,
        Err(AuditError::NotFound(_))
    ));
    // Consistency between the two checkpoints.
    let c = proofs::consistency_proof(&t.db, "gw-a", 37, None)
        .await
        .expect("consistency");
    c.verify(&[]).expect("consistent");
    let mut bad = c.clone();
    bad.first.root[5] ^= 1;
    assert!(bad.verify(&[]).is_err());
    // Export for witnesses; a witness's copy is checked by verify.
    let export = proofs::export_checkpoints(&t.db, None)
        .await
        .expect("export");
    assert_eq!(export.checkpoints.len(), 2);
    assert_eq!(export.public_keys, vec![w.public_key_hex().to_owned()]);
    let json = serde_json::to_string(&export).expect("json");
    let back: gateway::audit::CheckpointExport = serde_json::from_str(&json).expect("parse");
    let r = verify(
        &t.db,
        VerifyOptions {
            witnesses: back.checkpoints.clone(),
            trusted_keys: back.public_keys.clone(),
        },
    )
    .await
    .expect("verify");
    assert!(r.ok, "{:?}", r.first_problem);
    assert_eq!(r.logs[0].checkpoints_checked, 4);
    assert_eq!(r.logs[0].unsigned_tail, 1);
    w.shutdown().await;
    // A witness that saw a different history is a mismatch.
    let other = SigningKeyHelper::forged(&second);
    let r = verify(
        &t.db,
        VerifyOptions {
            witnesses: vec![other],
            ..VerifyOptions::default()
        },
    )
    .await
    .expect("verify");
    assert_eq!(
        r.first_problem.map(|p| p.kind),
        Some(ProblemKind::RootMismatch)
    );
}

async fn chunk_rows(t: &TestDb) -> i64 {
    on_pool!(&t.db, |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_merkle_chunks"
    )
    .fetch_one(p)
    .await)
    .expect("count")
}

/// Proofs over more than one chunk (4,096 events): built from the chunk
/// roots, which the writer stores as chunks complete, and the leaves of at
/// most two chunks; the same proofs as from every leaf (they verify against the
/// signed roots). A stored chunk root that is wrong is named by verify and
/// stops proofs ("run verify"); one that is missing is computed again.
async fn proofs_over_chunks(t: &TestDb) {
    let w = fill(t, "gw-c", 5_000).await;
    let first = w.checkpoint_now().await.expect("cp").expect("cp");
    let mut tasks = Vec::new();
    for i in 0..5_000 {
        let w = w.clone();
        let ev = access(i, "housing", None);
        tasks.push(tokio::spawn(async move { w.append(ev).await }));
    }
    for task in tasks {
        task.await.expect("join").expect("append");
    }
    let second = w.checkpoint_now().await.expect("cp").expect("cp");
    w.shutdown().await;
    assert_eq!((first.tree_size, second.tree_size), (5_000, 10_000));
    // The writer stored each chunk's root with the event completing it.
    assert_eq!(chunk_rows(t).await, 2, "{}", t.name);
    let key = [w.public_key_hex().to_owned()];
    for seq in [0, 3, 4_095, 4_096, 8_191, 8_192, 9_999] {
        let ev = seq_event_id(t, "gw-c", seq).await;
        let p = proofs::inclusion_proof(&t.db, &ev).await.expect("proof");
        assert_eq!(p.checkpoint, second);
        p.verify(&key)
            .unwrap_or_else(|e| panic!("{}: seq {seq}: {e}", t.name));
    }
    assert_eq!(chunk_rows(t).await, 2, "{}", t.name);
    // A report proving many events across chunks (every fifth of the first
    // 5,000 names ID_A), one chunk's leaves at a time.
    let rep = proofs::subject_report(&t.db, &keys(), &id(ID_A), None, None)
        .await
        .expect("report");
    assert_eq!(rep.verify(&key), Ok(1_000), "{}", t.name);
    for from in [1, 4_096, 5_000, 8_193] {
        let c = proofs::consistency_proof(&t.db, "gw-c", from, None).await;
        if from == 5_000 {
            c.expect("consistency").verify(&key).expect("consistent");
        } else {
            // Only checkpointed sizes have consistency proofs.
            assert!(matches!(c, Err(AuditError::NotFound(_))), "{from}");
        }
    }
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok, "{}: {:?}", t.name, r.first_problem);

    let p = problem_after(
        t,
        "UPDATE audit_merkle_chunks SET root = \
         (SELECT root FROM audit_merkle_chunks WHERE chunk = 0) WHERE chunk = 1",
    )
    .await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(4_096), ProblemKind::ChunkRoot),
        "{}",
        t.name
    );
    let ev = seq_event_id(t, "gw-c", 9_000).await;
    assert!(matches!(
        proofs::inclusion_proof(&t.db, &ev).await,
        Err(AuditError::Corrupt(_))
    ));
    // Derived data: without the row, it is computed again.
    t.exec("DELETE FROM audit_merkle_chunks WHERE chunk = 1")
        .await;
    let p = proofs::inclusion_proof(&t.db, &ev).await.expect("proof");
    p.verify(&key).expect("verifies");
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok, "{}: {:?}", t.name, r.first_problem);
}

#[tokio::test]
async fn proofs_read_chunk_roots_not_the_whole_log() {
    on_each_backend!(proofs_over_chunks);
}

struct SigningKeyHelper;
impl SigningKeyHelper {
    fn forged(cp: &gateway::audit::SignedCheckpoint) -> gateway::audit::SignedCheckpoint {
        let k = gateway::audit::SigningKey::generate().expect("key");
        let mut c = cp.checkpoint();
        c.root[0] ^= 0xff;
        k.sign(&c)
    }
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_and_fail_on_wrong_root() {
    on_each_backend!(proofs_verify);
}

async fn restart_resumes(t: &TestDb) {
    let w = fill(t, "gw-a", 25).await;
    w.checkpoint_now().await.expect("cp");
    for i in 0..5 {
        w.append(access(i, "education", None))
            .await
            .expect("append");
    }
    // "Crash": the handle is dropped without a shutdown; the task ends
    // when the channel closes. The next writer must resume from the store.
    drop(w);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w2 = writer(t, "gw-a").await;
    let r = w2
        .append(access(77, "education", None))
        .await
        .expect("append")
        .expect("receipt");
    assert_eq!(r.seq, 30, "{}", t.name);
    let cp = w2.shutdown().await.expect("final checkpoint");
    assert_eq!(cp.tree_size, 31);
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
    assert_eq!(rep.events, 31);
    // Two keys signed (a new one per writer here); both valid.
    assert_eq!(rep.signing_keys.len(), 2);
    assert!(matches!(
        w2.append(access(1, "x", None)).await,
        Err(AuditError::Closed)
    ));
    assert_eq!(w2.health(), AuditHealth::Stopped);
}

#[tokio::test]
async fn restart_resumes_the_chain() {
    on_each_backend!(restart_resumes);
}

/// On SQLite the writer commits on a connection of its own, whose page
/// cache no other connection's commits make stale: it keeps writing with
/// the shared pool closed, and closes its connection when it stops (the
/// last connection to a WAL file folds the WAL back and removes it).
#[tokio::test]
async fn the_sqlite_writer_commits_on_a_connection_of_its_own() {
    let t = TestDb::sqlite().await;
    let w = writer(&t, "gw-a").await;
    w.append(access(0, "education", None))
        .await
        .expect("append");
    t.db.close().await;
    let r = w
        .append(access(1, "education", None))
        .await
        .expect("append with the shared pool closed")
        .expect("receipt");
    assert_eq!(r.seq, 1);
    let cp = w.shutdown().await.expect("final checkpoint");
    assert_eq!(cp.tree_size, 2);
    let wal = format!("{}-wal", t.url);
    assert!(
        !std::path::Path::new(&wal).exists(),
        "the writer's connection is still open: {wal} remains"
    );
    let db = Database::connect(&t.url, 2).await.expect("reopen");
    let rep = verify(&db, VerifyOptions::default()).await.expect("verify");
    assert!(rep.ok, "{:?}", rep.first_problem);
    assert_eq!(rep.events, 2);
    db.close().await;
}

async fn two_instances(t: &TestDb) {
    let a = writer(t, "gw-a").await;
    let b = writer(t, "gw-b").await;
    let subject = id(ID_A);
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let w = if i % 2 == 0 { a.clone() } else { b.clone() };
        let ev = access(i, "housing", Some(&subject));
        tasks.push(tokio::spawn(async move { w.append(ev).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("append");
    }
    a.shutdown().await;
    b.shutdown().await;
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok, "{:?}", r.first_problem);
    assert_eq!(
        r.logs.iter().map(|l| l.events).collect::<Vec<_>>(),
        vec![50, 50]
    );
    t.drop_guards().await;
    // With two logs in the subject index, each log's rows are counted on
    // their own: one row gone from gw-b's is named there, not in gw-a.
    t.exec("DELETE FROM audit_event_subjects WHERE log_id = 'gw-b' AND seq = 3")
        .await;
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert_eq!(
        r.problems
            .iter()
            .map(|p| (p.log_id.as_str(), p.kind))
            .collect::<Vec<_>>(),
        vec![("gw-b", ProblemKind::SubjectIndex)]
    );
    // Deleting a whole log's events leaves its checkpoints: detected.
    t.exec("DELETE FROM audit_events WHERE log_id = 'gw-b'")
        .await;
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    let p = r.first_problem.expect("detected");
    assert_eq!(
        (p.log_id.as_str(), p.kind),
        ("gw-b", ProblemKind::Truncated)
    );
}

#[tokio::test]
async fn several_instances_write_their_own_logs_and_verify_covers_all() {
    on_each_backend!(two_instances);
}

/// Makes the audit table unwritable and writable again.
async fn break_store(t: &TestDb, broken: bool) {
    let sql = match (&t.db, broken) {
        (Database::Sqlite(_), true) => "ALTER TABLE audit_events RENAME TO audit_events_away",
        (Database::Sqlite(_), false) => "ALTER TABLE audit_events_away RENAME TO audit_events",
        (Database::Postgres(_), true) => {
            "ALTER TABLE audit_events ADD CONSTRAINT audit_outage CHECK (seq < 0) NOT VALID"
        }
        (Database::Postgres(_), false) => "ALTER TABLE audit_events DROP CONSTRAINT audit_outage",
    };
    t.exec(sql).await;
}

async fn recovers(t: &TestDb) {
    let w = fill(t, "gw-a", 10).await;
    assert_eq!(w.health(), AuditHealth::Ready);
    break_store(t, true).await;
    let e = w.append(access(1, "education", None)).await;
    assert!(
        matches!(e, Err(AuditError::Unavailable)),
        "{}: {e:?}",
        t.name
    );
    assert!(!w.health().is_ready());
    // While down, appends fail fast.
    let started = std::time::Instant::now();
    for i in 0..5 {
        assert!(w.append(access(i, "education", None)).await.is_err());
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    break_store(t, false).await;
    // The writer probes by itself (no traffic needed) and turns ready.
    let mut h = w.watch_health();
    tokio::time::timeout(Duration::from_secs(15), h.wait_for(|h| h.is_ready()))
        .await
        .expect("recovered in time")
        .expect("health channel");
    let r = w
        .append(access(2, "education", None))
        .await
        .expect("append after recovery");
    assert!(r.is_some());
    w.shutdown().await;
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
    assert_eq!(rep.events, 12, "10 + the outage record + 1");
    let outage = query::query(
        &t.db,
        &query::Filter {
            kind: Some(EventKind::StoreOutage),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .expect("query");
    assert_eq!(outage.events.len(), 1);
    let reason = outage.events[0].event.reason.clone().unwrap_or_default();
    assert!(reason.contains("6 append(s) refused"), "{reason}");
}

#[tokio::test]
async fn writer_fails_closed_and_recovers_by_itself() {
    on_each_backend!(recovers);
}

async fn no_clear_id_numbers(t: &TestDb) {
    let w = fill(t, "gw-a", 30).await;
    w.append(access(1, "housing", Some(&id(ID_B))))
        .await
        .expect("append");
    w.shutdown().await;
    // The subject search works…
    let p = query::FilterParams {
        subject: Some(ID_B.to_owned()),
        ..Default::default()
    };
    let (f, _, _) = p.parse(&keys()).expect("params");
    let page = query::query(&t.db, &f, None, 100).await.expect("query");
    assert_eq!(page.events.len(), 1);
    // …but no table holds the number.
    for number in [ID_A, ID_B] {
        match &t.db {
            Database::Sqlite(p) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(p)
                    .await
                    .expect("checkpoint");
                let bytes = std::fs::read(&t.url).expect("read db file");
                let hay = String::from_utf8_lossy(&bytes);
                assert!(
                    !hay.contains(number),
                    "the SQLite file holds a clear ID number"
                );
                assert!(
                    !hay.contains(&number[..17]),
                    "the SQLite file holds an ID number prefix"
                );
            }
            Database::Postgres(p) => {
                for table in [
                    "audit_events",
                    "audit_event_subjects",
                    "audit_checkpoints",
                    "audit_logs",
                    "audit_contexts",
                ] {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {table} t WHERE t::text LIKE $1"
                    )))
                    .bind(format!("%{}%", &number[..17]))
                    .fetch_one(p)
                    .await
                    .expect("scan");
                    assert_eq!(n, 0, "{table} holds a clear ID number");
                }
            }
        }
    }
}

#[tokio::test]
async fn no_table_holds_a_clear_id_number() {
    on_each_backend!(no_clear_id_numbers);
}

async fn archive_round_trip(t: &TestDb) {
    let w = fill(t, "gw-a", 40).await;
    w.checkpoint_now().await.expect("cp");
    for i in 0..13 {
        w.append(access(i, "education", None))
            .await
            .expect("append");
    }
    w.checkpoint_now().await.expect("cp");
    w.shutdown().await;
    let key = vec![w.public_key_hex().to_owned()];
    // The whole log, then a later segment on its own.
    let mut whole = Vec::new();
    let s = archive::archive_segment(&t.db, "gw-a", 0, Some(40), &mut whole)
        .await
        .expect("archive");
    assert_eq!((s.start, s.end), (0, 40));
    let v = archive::verify_segment(whole.as_slice(), &key).expect("verifies off-line");
    assert_eq!(v, s);
    let mut later = Vec::new();
    let s2 = archive::archive_segment(&t.db, "gw-a", 40, None, &mut later)
        .await
        .expect("archive");
    assert_eq!((s2.start, s2.end), (40, 53));
    let v2 = archive::verify_segment(later.as_slice(), &key).expect("verifies off-line");
    // Consecutive segments chain.
    assert_eq!(v2.end, 53);
    let header: serde_json::Value = serde_json::from_str(
        later
            .split(|b| *b == b'\n')
            .next()
            .map(|l| std::str::from_utf8(l).unwrap_or(""))
            .unwrap_or(""),
    )
    .expect("header");
    assert_eq!(header["prev_hash"].as_str(), Some(v.last_hash.as_str()));
    // Tampering with a line in the file is named.
    let text = String::from_utf8(whole.clone()).expect("utf8");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.swap(5, 6);
    let err =
        archive::verify_segment(lines.join("\n").as_bytes(), &key).expect_err("reorder detected");
    assert!(err.starts_with("line 6:"), "{err}");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.remove(10);
    assert!(archive::verify_segment(lines.join("\n").as_bytes(), &key).is_err());
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.pop();
    assert!(
        archive::verify_segment(lines.join("\n").as_bytes(), &key)
            .expect_err("truncated")
            .contains("truncated")
    );
    assert!(archive::verify_segment(whole.as_slice(), &["22".repeat(32)]).is_err());
    // The contexts the events name come once each (allowed and denied
    // reads), before the first event naming them, and are checked.
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].contains("\"type\":\"context\""))
        .collect();
    assert_eq!(at.len(), 2, "{text}");
    let mut altered = lines.clone();
    altered[at[0]] = altered[at[0]].replace("mask:first6-last4", "clear");
    let err = archive::verify_segment(altered.join("\n").as_bytes(), &key)
        .expect_err("altered context detected");
    assert!(err.contains("was modified"), "{err}");
    let mut dropped = lines.clone();
    dropped.remove(at[1]);
    let err = archive::verify_segment(dropped.join("\n").as_bytes(), &key)
        .expect_err("missing context detected");
    assert!(err.contains("which no line before it holds"), "{err}");
}

#[tokio::test]
async fn archived_segments_verify_off_line() {
    on_each_backend!(archive_round_trip);
}

#[tokio::test]
async fn bench_only_mode_records_nothing() {
    let t = TestDb::sqlite().await;
    let cfg = gateway::audit::AuditConfig {
        mode: gateway::audit::AuditMode::DisabledBenchOnly,
        ..common::config("gw-a")
    };
    let w = gateway::audit::AuditWriter::spawn(t.db.clone(), cfg)
        .await
        .expect("spawn");
    assert_eq!(
        w.append(AuditEvent::access("x").build()).await.expect("ok"),
        None
    );
    assert_eq!(w.health(), AuditHealth::DisabledBenchOnly);
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert_eq!(r.events, 0);
    t.cleanup().await;
}

#[tokio::test]
async fn bad_config_is_refused_with_every_error() {
    let t = TestDb::sqlite().await;
    let cfg = gateway::audit::AuditConfig {
        log_id: "bad id".into(),
        retention_days: 30,
        ..common::config("x")
    };
    let errs = cfg.validate();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        gateway::audit::AuditWriter::spawn(t.db.clone(), cfg)
            .await
            .is_err()
    );
    t.cleanup().await;
}

/// Rows of `log` in the subject index, and its watermark.
async fn index_state(t: &TestDb, log: &str) -> (i64, i64) {
    let rows = "SELECT COUNT(*) FROM audit_event_subjects WHERE log_id = $1";
    let mark = "SELECT indexed_to FROM audit_subject_watermarks WHERE log_id = $1";
    let r: Result<(i64, i64), sqlx::Error> = on_pool!(&t.db, |p| async {
        Ok((
            sqlx::query_scalar(rows).bind(log).fetch_one(p).await?,
            sqlx::query_scalar(mark).bind(log).fetch_one(p).await?,
        ))
    }
    .await);
    r.expect("subject index state")
}

/// What an auditor sees for one person: the events found, and the top of
/// the most-accessed report.
async fn subject_view(t: &TestDb) -> (Vec<String>, Vec<(String, u64)>) {
    let p = query::FilterParams {
        subject: Some(ID_A.to_owned()),
        ..Default::default()
    };
    let (f, _, _) = p.parse(&keys()).expect("params");
    let page = query::query(&t.db, &f, None, 1000).await.expect("query");
    let mut ids: Vec<String> = page
        .events
        .iter()
        .map(|e| e.event.event_id.to_string())
        .collect();
    ids.sort();
    let top = query::most_accessed_subjects(&t.db, 0, i64::MAX, 10)
        .await
        .expect("top")
        .into_iter()
        .map(|s| (s.subject, s.accesses))
        .collect();
    (ids, top)
}

/// A writer of log `gw-a` that indexes subjects every `events` events.
async fn writer_indexing_every(t: &TestDb, events: u64) -> gateway::audit::AuditWriter {
    let cfg = gateway::audit::AuditConfig {
        subject_index_batch: events,
        ..common::config("gw-a")
    };
    gateway::audit::AuditWriter::spawn_with_key(
        t.db.clone(),
        cfg,
        gateway::audit::SigningKey::generate().expect("key"),
    )
    .await
    .expect("writer")
}

async fn subject_index_lags(t: &TestDb) {
    // Index every 7 events: after 60 appends, 56 are indexed and 4 are not.
    let w = writer_indexing_every(t, 7).await;
    let a = id(ID_A);
    for i in 0..60u64 {
        // ID_A in events 0, 5, 10, …, 55 and in 57 and 58 (in the tail).
        let subject = (i % 5 == 0 || i == 57 || i == 58).then_some(&a);
        w.append(access(i, "education", subject))
            .await
            .expect("append");
    }
    let (rows, mark) = index_state(t, "gw-a").await;
    assert_eq!(mark, 56, "{}", t.name);
    assert_eq!(rows, 12, "{}: subjects of events 0..56", t.name);
    let before = subject_view(t).await;
    // The search finds the tail events too, each once; the report counts them.
    assert_eq!(before.0.len(), 14, "{}: {:?}", t.name, before.0);
    let allowed = (0..60u64)
        .filter(|i| (i % 5 == 0 || *i == 57 || *i == 58) && i % 7 != 3)
        .count() as u64;
    assert_eq!(before.1.len(), 1, "{}", t.name);
    assert_eq!(before.1[0].1, allowed, "{}", t.name);
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);

    // "Crash" without a checkpoint; the next writer catches the index up.
    drop(w);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w2 = writer(t, "gw-a").await;
    assert_eq!(index_state(t, "gw-a").await, (14, 60), "{}", t.name);
    // Same answers with everything indexed: nothing lost, nothing twice.
    assert_eq!(subject_view(t).await, before, "{}", t.name);
    w2.shutdown().await;
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
}

#[tokio::test]
async fn subject_searches_cover_events_the_index_does_not_yet() {
    on_each_backend!(subject_index_lags);
}

async fn index_pass_in_slices(t: &TestDb) {
    use gateway::audit::store::{Slice, index_slice, index_subjects, plan_index_pass};
    // A writer that does not index on its own while the test runs.
    let w = writer_indexing_every(t, 1_000_000).await;
    let a = id(ID_A);
    for i in 0..60u64 {
        let subject = (i % 5 == 0).then_some(&a);
        w.append(access(i, "education", subject))
            .await
            .expect("append");
    }
    assert_eq!(index_state(t, "gw-a").await, (0, 0), "{}", t.name);
    let unindexed = subject_view(t).await;
    assert_eq!(unindexed.0.len(), 12, "{}", t.name);

    // One slice of five rows: a pass in progress, above the watermark.
    let mut pass = plan_index_pass(&t.db, "gw-a").await.expect("plan");
    assert_eq!((pass.rows(), pass.to()), (12, 60), "{}", t.name);
    let first = index_slice(&t.db, &mut pass, 5).await.expect("slice");
    assert_eq!(first, Slice::More, "{}", t.name);
    assert_eq!(index_state(t, "gw-a").await, (5, 0), "{}", t.name);
    // Searches and reports count each event once; the log verifies.
    assert_eq!(subject_view(t).await, unindexed, "{}", t.name);
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);

    // The pass is lost (a crash): planned again, it writes nothing twice.
    drop(pass);
    let done = index_subjects(&t.db, "gw-a").await.expect("index");
    assert_eq!((done.to, done.rows), (60, 12), "{}", t.name);
    assert_eq!(index_state(t, "gw-a").await, (12, 60), "{}", t.name);
    assert_eq!(subject_view(t).await, unindexed, "{}", t.name);
    // A pass planned before another finished writes nothing.
    w.append(access(60, "education", Some(&a)))
        .await
        .expect("append");
    let mut stale = plan_index_pass(&t.db, "gw-a").await.expect("plan");
    let mut fresh = plan_index_pass(&t.db, "gw-a").await.expect("plan");
    assert_eq!(
        index_slice(&t.db, &mut fresh, 5).await.expect("slice"),
        Slice::Done(gateway::audit::store::Indexed { to: 61, rows: 1 })
    );
    assert_eq!(
        index_slice(&t.db, &mut stale, 5).await.expect("slice"),
        Slice::Superseded
    );
    assert_eq!(index_state(t, "gw-a").await, (13, 61), "{}", t.name);
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
    w.shutdown().await;

    // Rows above the watermark beyond what its events name: named.
    t.drop_guards().await;
    t.exec(
        "INSERT INTO audit_event_subjects (log_id, gen, subject, seq) \
         SELECT log_id, 61, 'v1:forged-' || seq, seq FROM audit_events WHERE log_id = 'gw-a' AND seq < 3",
    )
    .await;
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    let p = rep.first_problem.expect("detected");
    assert_eq!(p.kind, ProblemKind::SubjectIndex, "{}: {p:?}", t.name);
    assert!(p.detail.contains("pass in progress"), "{}: {p:?}", t.name);
}

#[tokio::test]
async fn an_index_pass_written_in_slices_is_consistent_between_them() {
    on_each_backend!(index_pass_in_slices);
}

/// Runs `statements` in one transaction.
async fn execute_all(db: &Database, statements: &[&'static str]) {
    on_pool!(db, |p| {
        let mut tx = p.begin().await.expect("begin");
        for sql in statements {
            sqlx::query(*sql).execute(&mut *tx).await.expect(sql);
        }
        tx.commit().await.expect("commit");
    })
}

/// Puts the subject index back into its layout before generations (key
/// (subject, log_id, seq), no `gen`) and forgets the migration that
/// changed it, so that the next start runs it on these rows.
async fn back_to_ungenerational_index(t: &TestDb) {
    match &t.db {
        Database::Sqlite(_) => execute_all(
            &t.db,
            &[
                "DROP TRIGGER audit_subjects_no_update",
                "DROP TRIGGER audit_subjects_no_delete",
                "CREATE TABLE old_subjects (subject TEXT NOT NULL, log_id TEXT NOT NULL, \
                 seq INTEGER NOT NULL, PRIMARY KEY (subject, log_id, seq)) WITHOUT ROWID",
                "INSERT INTO old_subjects SELECT subject, log_id, seq FROM audit_event_subjects",
                "DROP TABLE audit_event_subjects",
                "ALTER TABLE old_subjects RENAME TO audit_event_subjects",
                "CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_event_subjects \
                 BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END",
                "CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_event_subjects \
                 BEGIN SELECT RAISE(ABORT, 'audit_event_subjects is append-only'); END",
                "DELETE FROM _sqlx_migrations WHERE version = 2",
            ],
        )
        .await,
        Database::Postgres(_) => {
            execute_all(
                &t.db,
                &[
                    "ALTER TABLE audit_event_subjects DROP CONSTRAINT audit_event_subjects_pkey",
                    "ALTER TABLE audit_event_subjects DROP COLUMN gen",
                    "ALTER TABLE audit_event_subjects ADD PRIMARY KEY (subject, log_id, seq)",
                    "DELETE FROM _sqlx_migrations WHERE version = 7",
                ],
            )
            .await
        }
    }
}

async fn index_before_generations(t: &TestDb) {
    // An index written in several passes (every 7 events), with a tail.
    let w = writer_indexing_every(t, 7).await;
    let a = id(ID_A);
    for i in 0..30u64 {
        let subject = (i % 4 == 0 || i == 29).then_some(&a);
        w.append(access(i, "education", subject))
            .await
            .expect("append");
    }
    assert_eq!(index_state(t, "gw-a").await, (7, 28), "{}", t.name);
    // Stopping indexes the rest: generations 0, 7, 14, 21 and 28.
    w.shutdown().await;
    let before = subject_view(t).await;
    assert_eq!(before.0.len(), 9, "{}: {:?}", t.name, before.0);
    let state = index_state(t, "gw-a").await;
    assert_eq!(state, (9, 30), "{}", t.name);
    let gens = "SELECT COUNT(DISTINCT gen) FROM audit_event_subjects";
    let r: Result<i64, sqlx::Error> =
        on_pool!(&t.db, |p| sqlx::query_scalar(gens).fetch_one(p).await);
    assert_eq!(r.expect("gens"), 5, "{}", t.name);

    // The layout of before; then the gateway starts again and migrates it.
    back_to_ungenerational_index(t).await;
    let reopened = match &t.db {
        Database::Sqlite(_) => {
            let main_url = std::path::Path::new(&t.url)
                .with_file_name("gateway.db")
                .display()
                .to_string();
            let main = Database::open(&main_url, 2).await.expect("open");
            let audit = audit_of(&main, &main_url)
                .await
                .expect("migrate the audit file");
            Some(TestDb::wrap_sqlite(audit, t.url.clone()))
        }
        Database::Postgres(_) => {
            t.db.migrate().await.expect("migrate");
            None
        }
    };
    let t2 = reopened.as_ref().unwrap_or(t);
    // Everything indexed before is generation 0, found as before.
    let gens = "SELECT COUNT(*) FROM audit_event_subjects WHERE gen <> 0";
    let r: Result<i64, sqlx::Error> =
        on_pool!(&t2.db, |p| sqlx::query_scalar(gens).fetch_one(p).await);
    assert_eq!(r.expect("gens"), 0, "{}", t.name);
    assert_eq!(index_state(t2, "gw-a").await, state, "{}", t.name);
    assert_eq!(subject_view(t2).await, before, "{}", t.name);

    // A writer goes on from there: the tail gets a generation of its own.
    let w = writer(t2, "gw-a").await;
    w.append(access(30, "education", Some(&a)))
        .await
        .expect("append");
    w.shutdown().await;
    assert_eq!(index_state(t2, "gw-a").await, (10, 31), "{}", t.name);
    let after = subject_view(t2).await;
    assert_eq!(after.0.len(), 10, "{}: {:?}", t.name, after.0);
    let rep = verify(&t2.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
    if let Some(t2) = reopened {
        t2.cleanup().await;
    }
}

#[tokio::test]
async fn a_subject_index_from_before_generations_is_migrated_whole() {
    on_each_backend!(index_before_generations);
}

async fn tamper_watermark(t: &TestDb, sql: &str) {
    let p = tampered(t, sql).await;
    assert_eq!(p.kind, ProblemKind::SubjectIndex, "{}: {sql}", t.name);
    assert_eq!(p.log_id, "gw-a");
}

async fn tamper_watermarks(t: &TestDb) {
    // Past the end: later events would never be indexed nor searched.
    tamper_watermark(t, "UPDATE audit_subject_watermarks SET indexed_to = 1000").await;
}

async fn lower_watermark(t: &TestDb) {
    // Back: indexed events would be found twice.
    tamper_watermark(t, "UPDATE audit_subject_watermarks SET indexed_to = 3").await;
}

#[tokio::test]
async fn tampering_with_the_subject_watermark_is_named() {
    on_each_backend!(tamper_watermarks);
    on_each_backend!(lower_watermark);
}

/// The audit store of the SQLite database `main` at `url`, as the gateway
/// opens it.
async fn audit_of(main: &Database, url: &str) -> Result<Database, gateway::storage::StorageError> {
    main.open_audit(url, gateway::storage::DEFAULT_SQLITE_MMAP_SIZE)
        .await
}

/// Two gateways starting at once on one fresh (or old) main file both
/// open the audit file: whichever moves the old tables first, the other
/// finds them gone and goes on, rather than failing on a table dropped
/// under it.
#[tokio::test]
async fn two_starts_at_once_on_one_file_both_open_the_audit_log() {
    for round in 0..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = dir.path().join("gateway.db").display().to_string();
        // A fresh file: the main migrations still create the old, empty
        // audit tables, which the first open moves and drops.
        let a = Database::open(&url, 2).await.expect("open a");
        let b = Database::open(&url, 2).await.expect("open b");
        if round % 2 == 1 {
            // And a file with an old log in it.
            let w = fill(&TestDb::wrap_sqlite(a.clone(), url.clone()), "gw-old", 5).await;
            w.shutdown().await;
        }
        let (ra, rb) = tokio::join!(audit_of(&a, &url), audit_of(&b, &url));
        let ra = ra.unwrap_or_else(|e| panic!("round {round}, first: {e}"));
        let rb = rb.unwrap_or_else(|e| panic!("round {round}, second: {e}"));
        let report = verify(&ra, VerifyOptions::default()).await.expect("verify");
        assert!(report.ok, "round {round}: {:?}", report.first_problem);
        assert_eq!(report.events, if round % 2 == 1 { 5 } else { 0 });
        ra.close().await;
        rb.close().await;
    }
}

/// A main SQLite file from before the audit log had a file of its own
/// (its events in the main file's audit tables) has them moved into the
/// audit file on the first open: every event and checkpoint arrives, the
/// log verifies and resumes there, and the main file no longer has the
/// tables. Opening again changes nothing.
#[tokio::test]
async fn an_audit_log_in_the_main_file_moves_into_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main_path = dir.path().join("gateway.db");
    let main_url = main_path.display().to_string();
    let main = Database::open(&main_url, 2).await.expect("open main");
    // Written the old way: the audit writer on the main file.
    let legacy = TestDb::wrap_sqlite(main.clone(), main_url.clone());
    let w = fill(&legacy, "gw-old", 120).await;
    w.checkpoint_now().await.expect("checkpoint").expect("new");
    w.shutdown().await;
    let Database::Sqlite(mp) = &main else {
        unreachable!()
    };
    // …with its subject index as it was then: one row per subject, no
    // generations (today's writer cannot write that layout).
    for sql in [
        "INSERT INTO audit_event_subjects (subject, log_id, seq) \
         SELECT j.value, e.log_id, e.seq FROM audit_events e, \
         json_each('[\"' || replace(e.subjects, ' ', '\",\"') || '\"]') j \
         WHERE e.subjects <> ''",
        "UPDATE audit_subject_watermarks SET indexed_to = 120",
    ] {
        sqlx::query(sql).execute(mp).await.expect(sql);
    }

    let audit = audit_of(&main, &main_url).await.expect("open audit");
    let report = verify(&audit, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.ok, "{:?}", report.first_problem);
    assert_eq!(report.events, 120);
    // The index arrived whole, as generation 0, and finds the person.
    let Database::Sqlite(ap) = &audit else {
        unreachable!()
    };
    let rows: (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE gen = 0) FROM audit_event_subjects",
    )
    .fetch_one(ap)
    .await
    .expect("index rows");
    assert_eq!(rows, (24, 24));
    let found = query::query(
        &audit,
        &query::FilterParams {
            subject: Some(ID_A.to_owned()),
            ..Default::default()
        }
        .parse(&keys())
        .expect("params")
        .0,
        None,
        1000,
    )
    .await
    .expect("query");
    assert_eq!(found.events.len(), 24);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE name LIKE 'audit%' AND type = 'table'",
    )
    .fetch_one(mp)
    .await
    .expect("tables");
    assert_eq!(left, 0, "audit tables left in the main file");

    // The writer resumes the moved chain in the audit file.
    let moved = TestDb::wrap_sqlite(
        audit.clone(),
        gateway::storage::sqlite_audit_path(&main_path)
            .display()
            .to_string(),
    );
    let w = writer(&moved, "gw-old").await;
    let r = w
        .append(access(500, "education", None))
        .await
        .expect("append")
        .expect("receipt");
    assert_eq!(r.seq, 120);
    w.shutdown().await;
    audit.close().await;
    let again = audit_of(&main, &main_url).await.expect("open again");
    let report = verify(&again, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(report.ok && report.events == 121, "{report:?}");
    again.close().await;
    main.close().await;
}

/// When the main file still holds an audit log and the audit file holds a
/// different one, neither is guessed at: the start-up stops, naming both
/// files and what differs, and both logs are left as they were.
#[tokio::test]
async fn two_disagreeing_audit_logs_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main_path = dir.path().join("gateway.db");
    let main_url = main_path.display().to_string();
    let main = Database::open(&main_url, 2).await.expect("open main");
    // An audit file with a log of its own…
    let audit = audit_of(&main, &main_url).await.expect("open audit");
    let audit_url = gateway::storage::sqlite_audit_path(&main_path)
        .display()
        .to_string();
    let w = fill(&TestDb::wrap_sqlite(audit.clone(), audit_url), "gw-new", 10).await;
    w.shutdown().await;
    audit.close().await;
    // …and the old tables back in the main file, with another.
    main.migrate().await.expect("migrate");
    let Database::Sqlite(mp) = &main else {
        unreachable!()
    };
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version >= 4")
        .execute(mp)
        .await
        .expect("forget");
    main.migrate().await.expect("recreate the old audit tables");
    let w = fill(
        &TestDb::wrap_sqlite(main.clone(), main_url.clone()),
        "gw-old",
        7,
    )
    .await;
    w.shutdown().await;

    let err = audit_of(&main, &main_url).await.expect_err("must refuse");
    let text = err.to_string();
    assert!(
        text.contains("gateway.db")
            && text.contains("gateway-audit.db")
            && text.contains("audit_events: 7 rows in the main file, 10 in the audit file"),
        "{text}"
    );
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(mp)
        .await
        .expect("main log kept");
    assert_eq!(still, 7);
    main.close().await;
}

/// `gateway audit verify --database` finds the log from whichever file it
/// is given: the gateway's database (reading the audit file beside it), the
/// audit file itself, or an old single file with the log inside. Tampering
/// fails it through either name; a path with nothing there is named.
#[tokio::test]
async fn the_verify_command_finds_the_audit_log_from_either_file() {
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["audit", "verify", "--database"])
            .arg(path)
            .env_remove("RUST_LOG")
            .output()
            .expect("run gateway")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let main_path = dir.path().join("gateway.db");
    let main_url = main_path.display().to_string();
    let main = Database::open(&main_url, 2).await.expect("open main");
    let audit_path = gateway::storage::sqlite_audit_path(&main_path);
    let audit = TestDb::wrap_sqlite(
        audit_of(&main, &main_url).await.expect("open audit"),
        audit_path.display().to_string(),
    );
    fill(&audit, "gw-a", 30).await.shutdown().await;
    for path in [&main_path, &audit_path] {
        let out = run(path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("\"events\": 30"),
            "{}: {stdout}{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    audit.drop_guards().await;
    audit
        .exec("UPDATE audit_events SET status = 500 WHERE seq = 3")
        .await;
    for path in [&main_path, &audit_path] {
        assert!(!run(path).status.success(), "{}", path.display());
    }

    // A file from before the split: its own audit log, nothing beside it.
    let old_path = dir.path().join("old.db");
    let old_url = old_path.display().to_string();
    let old = Database::open(&old_url, 2).await.expect("open old");
    fill(&TestDb::wrap_sqlite(old.clone(), old_url), "gw-old", 12)
        .await
        .shutdown()
        .await;
    let out = run(&old_path);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"events\": 12"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&dir.path().join("missing.db"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no SQLite audit log at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    old.close().await;
    main.close().await;
}

/// Appends never stop: the writer commits each batch while it gathers the
/// next, and timed checkpoints, requested checkpoints and shutdown still
/// happen between batches and cover every answered event.
async fn busy_writer(t: &TestDb) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let cfg = gateway::audit::AuditConfig {
        checkpoint_interval_secs: 1,
        ..common::config("gw-a")
    };
    let w = gateway::audit::AuditWriter::spawn_with_key(
        t.db.clone(),
        cfg,
        gateway::audit::SigningKey::generate().expect("key"),
    )
    .await
    .expect("writer");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let (w, stop, answered) = (w.clone(), stop.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = task;
            while !stop.load(Ordering::Relaxed) {
                w.append(access(i, "education", None))
                    .await
                    .expect("append");
                answered.fetch_add(1, Ordering::Relaxed);
                i += 16;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = answered.load(Ordering::Relaxed);
    assert!(before > 0, "{}: appends were answered", t.name);
    let cp = w
        .checkpoint_now()
        .await
        .expect("checkpoint")
        .expect("the log grew");
    assert!(
        cp.tree_size >= before,
        "{}: {} < {before}",
        t.name,
        cp.tree_size
    );
    // Two timed checkpoints fall due while the appends go on.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("appender");
    }
    let total = answered.load(Ordering::Relaxed);
    let last = w.shutdown().await.expect("final checkpoint");
    assert_eq!(last.tree_size, total, "{}", t.name);
    let cps = gateway::audit::store::checkpoints(&t.db, Some("gw-a"))
        .await
        .expect("checkpoints");
    assert!(
        cps.len() >= 3,
        "{}: requested, timed and final checkpoints, got {}",
        t.name,
        cps.len()
    );
    let rep = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{}: {:?}", t.name, rep.first_problem);
    assert_eq!(rep.events, total, "{}", t.name);
}

#[tokio::test]
async fn a_busy_writer_still_checkpoints_and_shuts_down_cleanly() {
    on_each_backend!(busy_writer);
}

/// The schema of `audit_events` in an SQLite audit file.
async fn events_table_sql(db: &Database) -> String {
    let Database::Sqlite(p) = db else {
        unreachable!("SQLite only")
    };
    sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
    )
    .fetch_one(p)
    .await
    .expect("audit_events schema")
}

/// An SQLite audit file from before `audit_events` had rowids (a WITHOUT
/// ROWID table, migrations/sqlite-audit/0003) is rebuilt on the next
/// start: every event arrives in order, the log verifies against its
/// checkpoint, the indexes and append-only triggers are back, and a writer
/// goes on from there.
#[tokio::test]
async fn an_audit_file_from_before_rowids_is_rebuilt_whole() {
    let t = TestDb::sqlite().await;
    let w = fill(&t, "gw-a", 60).await;
    let cp = w
        .checkpoint_now()
        .await
        .expect("checkpoint")
        .expect("new checkpoint");
    w.shutdown().await;
    assert!(!events_table_sql(&t.db).await.contains("WITHOUT ROWID"));

    // The table as it was before.
    execute_all(
        &t.db,
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
            "CREATE TABLE old_events (log_id TEXT NOT NULL, seq INTEGER NOT NULL, \
         event_id TEXT NOT NULL, time_ms INTEGER NOT NULL, kind TEXT NOT NULL, \
         department TEXT NOT NULL, client_id TEXT NOT NULL, datasets TEXT NOT NULL, \
         purpose TEXT NOT NULL, decision TEXT NOT NULL, status INTEGER NOT NULL, \
         subjects TEXT NOT NULL, body TEXT NOT NULL, leaf_hash BLOB NOT NULL, \
         prev_hash BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (log_id, seq)) WITHOUT ROWID",
            // Inserted out of order: the key, not the insertion, orders them.
            "INSERT INTO old_events SELECT * FROM audit_events ORDER BY seq DESC",
            "DROP TABLE audit_events",
            "ALTER TABLE old_events RENAME TO audit_events",
            "CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id)",
            "CREATE INDEX audit_events_time ON audit_events (time_ms, log_id, seq)",
            "CREATE INDEX audit_events_department ON audit_events (department, time_ms)",
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
            "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
            "DELETE FROM _sqlx_migrations WHERE version = 3",
        ],
    )
    .await;
    assert!(events_table_sql(&t.db).await.contains("WITHOUT ROWID"));
    let Database::Sqlite(p) = &t.db else {
        unreachable!()
    };
    let old_ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM audit_events ORDER BY log_id, seq")
            .fetch_all(p)
            .await
            .expect("event ids");

    // The gateway starts again.
    let main_url = std::path::Path::new(&t.url)
        .with_file_name("gateway.db")
        .display()
        .to_string();
    let main = Database::open(&main_url, 2).await.expect("open");
    let audit = audit_of(&main, &main_url)
        .await
        .expect("migrate the audit file");
    let Database::Sqlite(ap) = &audit else {
        unreachable!()
    };
    assert!(!events_table_sql(&audit).await.contains("WITHOUT ROWID"));
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM audit_events ORDER BY rowid")
        .fetch_all(ap)
        .await
        .expect("event ids");
    assert_eq!(ids, old_ids, "every event, rowids in log order");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events' \
         ORDER BY name",
    )
    .fetch_all(ap)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        [
            "audit_events_department",
            "audit_events_event_id",
            "audit_events_time",
            "sqlite_autoindex_audit_events_1",
        ]
    );
    let rep = verify(&audit, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{:?}", rep.first_problem);
    assert_eq!(rep.events, 60);
    assert_eq!(rep.logs[0].root, hex::encode(cp.root));
    assert_eq!(rep.logs[0].checkpoints_checked, 1);
    for sql in [
        "UPDATE audit_events SET status = 1",
        "DELETE FROM audit_events WHERE seq = 0",
    ] {
        assert!(sqlx::query(sql).execute(ap).await.is_err(), "{sql}");
    }
    // A duplicate position is refused by the primary key.
    let dup = "INSERT INTO audit_events SELECT log_id, seq, event_id || 'x', time_ms, kind, \
               department, client_id, datasets, purpose, decision, status, subjects, body, \
               leaf_hash, prev_hash, hash FROM audit_events WHERE seq = 5";
    assert!(sqlx::query(dup).execute(ap).await.is_err(), "duplicate seq");

    // A writer goes on from there.
    let t2 = TestDb::wrap_sqlite(audit.clone(), t.url.clone());
    let w = writer(&t2, "gw-a").await;
    for i in 60..65u64 {
        w.append(access(i, "education", None))
            .await
            .expect("append");
    }
    w.shutdown().await;
    let rep = verify(&audit, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(rep.ok, "{:?}", rep.first_problem);
    assert_eq!(rep.events, 65);
    audit.close().await;
    main.close().await;
    t.cleanup().await;
}

/// The event bytes of `rec` in the listed form (`GWA1`), written out here
/// from the layout documented in `audit::record`: how a gateway built
/// before `GWA2` hashed every event, whatever its number of subjects.
fn listed_bytes(rec: &gateway::audit::record::Record) -> Vec<u8> {
    fn put(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    let mut b = b"GWA1".to_vec();
    put(&mut b, &rec.log_id);
    b.extend_from_slice(&rec.seq.to_be_bytes());
    put(&mut b, &rec.event_id);
    b.extend_from_slice(&rec.time_ms.to_be_bytes());
    for s in [
        &rec.kind,
        &rec.department,
        &rec.client_id,
        &rec.datasets,
        &rec.purpose,
        &rec.decision,
    ] {
        put(&mut b, s);
    }
    b.extend_from_slice(&rec.status.to_be_bytes());
    put(&mut b, &rec.subjects);
    put(&mut b, &rec.body);
    b
}

/// A match's event (`n` made-up subjects with ID_A's at position `at`).
fn batch_event(n: u32, at: usize) -> AuditEvent {
    let mut subjects: Vec<_> = (0..n)
        .map(|i| {
            gateway::audit::event::SubjectRef::parse(&format!("v2:{i:064x}")).expect("subject")
        })
        .collect();
    subjects.insert(at, keys().subject(&id(ID_A)));
    AuditEvent::access("POST /v1/match")
        .client("edu-sys", "education")
        .dataset("enrolments")
        .purpose("student-aid")
        .subjects(subjects)
        .records_disclosed(u64::from(n))
        .field("category", "clear")
        .decision(Outcome::Allow, ["edu-reads"], Some("v3".into()))
        .status(200)
        .build()
}

/// Events naming more than `SUBJECTS_LISTED_MAX` subjects (batch matches)
/// commit to them by a root: the log verifies; a subject dropped from the
/// column is named; the per-person report proves such an access with a
/// subject path instead of every other subject's HMAC, and a forged path
/// fails; an archive keeps the subjects and checks them; and such an event
/// written before `GWA2` (hashed with its subjects listed) still verifies,
/// proves and archives.
async fn many_subjects(t: &TestDb) {
    use gateway::audit::record::{Record, chain_hash};
    use gateway::audit::store::{self, StoredEvent};

    let w = writer(t, "gw-m").await;
    w.append(access(0, "education", Some(&id(ID_A))))
        .await
        .expect("append");
    w.append(batch_event(300, 150)).await.expect("append");
    w.shutdown().await;

    // A gateway built before GWA2 wrote event 2: a match with its subjects
    // listed in the hashed bytes.
    let (last, prev) = store::head(&t.db, "gw-m")
        .await
        .expect("head")
        .expect("events");
    let mut ev = batch_event(200, 7);
    ev.instance_id = "gw-m".into();
    let rec = Record::from_event("gw-m", last + 1, &ev).expect("record");
    let leaf = gateway::audit::merkle::leaf_hash(&listed_bytes(&rec));
    let old = StoredEvent {
        hash: chain_hash(&prev, &leaf),
        record: rec,
        leaf_hash: leaf,
        prev_hash: prev,
    };
    store::append_batch(&t.db, std::slice::from_ref(&old), &[], &[])
        .await
        .expect("insert");

    let w = writer(t, "gw-m").await;
    w.append(batch_event(80, 79)).await.expect("append");
    w.checkpoint_now().await.expect("cp").expect("cp");
    w.shutdown().await;
    let key = vec![w.public_key_hex().to_owned()];
    let r = verify(&t.db, VerifyOptions::default())
        .await
        .expect("verify");
    assert!(r.ok, "{}: {:?}", t.name, r.first_problem);
    assert_eq!(r.events, 4);

    // The per-person report: four accesses, proofs that stay small.
    let rep = proofs::subject_report(&t.db, &keys(), &id(ID_A), None, None)
        .await
        .expect("report");
    assert_eq!(rep.accesses.len(), 4, "{}", t.name);
    assert_eq!(rep.verify(&key), Ok(4), "{}", t.name);
    let proof = |i: usize| rep.accesses[i].proof.as_ref().expect("checkpointed");
    for (i, path) in [(0, None), (1, Some(9)), (2, None), (3, Some(6))] {
        assert_eq!(proof(i).subject.as_ref().map(|s| s.path.len()), path, "{i}");
    }
    let json = |i: usize| serde_json::to_string(proof(i)).expect("json").len();
    assert!(json(1) < 4_000, "{} bytes", json(1));
    // The event written before GWA2 proves with its listed bytes.
    assert!(json(2) > 200 * 67, "{} bytes", json(2));
    let mut forged = rep.clone();
    if let Some(sp) = forged.accesses[1]
        .proof
        .as_mut()
        .and_then(|p| p.subject.as_mut())
    {
        sp.subject = format!("v2:{:064x}", 3);
    }
    assert!(
        forged
            .verify(&key)
            .expect_err("a path for another subject")
            .contains("subjects root")
    );
    let mut forged = rep.clone();
    if let Some(p) = forged.accesses[1].proof.as_mut() {
        p.subject = None;
    }
    assert!(
        forged
            .verify(&key)
            .expect_err("no subject path")
            .contains("does not name this person")
    );

    // An archive keeps the subjects of rooted events and checks them.
    let mut file = Vec::new();
    archive::archive_segment(&t.db, "gw-m", 0, None, &mut file)
        .await
        .expect("archive");
    archive::verify_segment(file.as_slice(), &key).expect("verifies off-line");
    let text = String::from_utf8(file).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    let has_subjects = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).expect("json")["subjects"].is_string()
    };
    let is_event = |l: &&&str| l.contains("\"type\":\"event\"");
    assert_eq!(
        lines
            .iter()
            .filter(is_event)
            .map(|l| has_subjects(l))
            .collect::<Vec<_>>(),
        [false, true, false, true]
    );
    let other = format!("v2:{:064x}", 0);
    let at = lines
        .iter()
        .position(|l| has_subjects(l))
        .expect("a rooted event's line");
    let changed = lines[at].replacen(&other, &format!("v2:{:064x}", 999), 1);
    let file = [&lines[..at], &[changed.as_str()], &lines[at + 1..]]
        .concat()
        .join("\n");
    let err = archive::verify_segment(file.as_bytes(), &key).expect_err("detected");
    assert!(
        err.starts_with(&format!("line {}:", at + 1)) && err.contains("subjects"),
        "{err}"
    );

    // Dropping a subject from a rooted event's column is named.
    let p = problem_after(
        t,
        "UPDATE audit_events SET subjects = substr(subjects, 69) WHERE seq = 1",
    )
    .await;
    assert_eq!(
        (p.seq, p.kind),
        (Some(1), ProblemKind::Modified),
        "{}",
        t.name
    );
}

#[tokio::test]
async fn events_naming_many_subjects_commit_to_them_by_a_root() {
    on_each_backend!(many_subjects);
}
