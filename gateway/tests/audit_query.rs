//! The auditor's side against real databases: filters, pagination,
//! exports, reports, the per-person report. SQLite always; PostgreSQL when
//! GATEWAY_TEST_DATABASE_URL is set.

#[macro_use]
#[path = "audit_common/mod.rs"]
mod common;

use std::collections::HashSet;

use common::{ID_A, ID_B, TestDb, access, id, keys, writer};
use gateway::audit::query::{self, ExportFormat, Filter, FilterParams};
use gateway::audit::{AuditEvent, Outcome, proofs};

const DAY: i64 = 86_400_000;
/// 2026-03-10T12:00:00+08:00.
const T0: i64 = 1_773_115_200_000;

async fn seeded(t: &TestDb) -> gateway::audit::AuditWriter {
    let w = writer(t, "gw-q").await;
    let a = id(ID_A);
    let b = id(ID_B);
    // 30 baseline days: education ~5/day, health-insurance ~10/day.
    for d in 1..=30i64 {
        for i in 0..(5 + d % 2) as u64 {
            let ev = AuditEvent::access("records.read")
                .client("edu-sys", "education")
                .dataset("enrolments")
                .purpose("student-aid")
                .decision(Outcome::Allow, ["edu-reads"], Some("v1".into()))
                .status(200)
                .time_ms(T0 - d * DAY + i as i64 * 1000)
                .build();
            w.append(ev).await.expect("append");
        }
        for i in 0..10u64 {
            let ev = access(i, "health-insurance", (i == 0).then_some(&a)).clone();
            let ev = AuditEvent {
                time_ms: T0 - d * DAY + i as i64,
                time: gateway::audit::event::rfc3339_ms(T0 - d * DAY + i as i64),
                ..ev
            };
            w.append(ev).await.expect("append");
        }
    }
    // Today: education jumps to 60; health-insurance stays at 10.
    for i in 0..60u64 {
        let ev = AuditEvent::access("records.read")
            .client("edu-sys", "education")
            .dataset("enrolments")
            .dataset("student-aid")
            .purpose("student-aid")
            .subject(keys().subject(&b))
            .decision(Outcome::Allow, ["edu-reads"], Some("v1".into()))
            .field("category", "clear")
            .status(200)
            .time_ms(T0 + i as i64)
            .build();
        w.append(ev).await.expect("append");
    }
    for i in 0..10u64 {
        let ev = access(i, "health-insurance", None);
        let ev = AuditEvent {
            time_ms: T0 + 100 + i as i64,
            time: gateway::audit::event::rfc3339_ms(T0 + 100 + i as i64),
            ..ev
        };
        w.append(ev).await.expect("append");
    }
    w
}

async fn queries(t: &TestDb) {
    let w = seeded(t).await;
    let k = keys();
    let total = 30 * 10 + (1..=30).map(|d| 5 + d % 2).sum::<i64>() as usize + 70;

    // Pagination visits every event once, in time order.
    let mut seen = HashSet::new();
    let mut cursor = None;
    let mut last_time = i64::MIN;
    loop {
        let page = query::query(&t.db, &Filter::default(), cursor.as_ref(), 97)
            .await
            .expect("page");
        for e in &page.events {
            assert!(e.event.time_ms >= last_time);
            last_time = e.event.time_ms;
            assert!(seen.insert(e.event.event_id), "duplicate across pages");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(query::Cursor::parse(&c).expect("cursor")),
            None => break,
        }
    }
    assert_eq!(seen.len(), total, "{}", t.name);

    let count = |p: FilterParams| {
        let db = t.db.clone();
        let k = k.clone();
        async move {
            let (f, _, _) = p.parse(&k).expect("params");
            let mut n = 0;
            let mut cursor = None;
            loop {
                let page = query::query(&db, &f, cursor.as_ref(), 1000)
                    .await
                    .expect("query");
                n += page.events.len();
                match page.next_cursor {
                    Some(c) => cursor = Some(query::Cursor::parse(&c).expect("cursor")),
                    None => break n,
                }
            }
        }
    };
    let p = |f: fn(&mut FilterParams)| {
        let mut p = FilterParams::default();
        f(&mut p);
        p
    };
    assert_eq!(
        count(p(|p| p.department = Some("education".into()))).await,
        60 + 165
    );
    assert_eq!(
        count(p(|p| p.client = Some("edu-sys".into()))).await,
        60 + 165
    );
    assert_eq!(
        count(p(|p| p.dataset = Some("student-aid".into()))).await,
        60
    );
    assert_eq!(count(p(|p| p.dataset = Some("student".into()))).await, 0);
    assert_eq!(
        count(p(|p| p.purpose = Some("medical-assistance".into()))).await,
        310
    );
    // access(i) denies when i % 7 == 3: one per 10 events.
    assert_eq!(count(p(|p| p.decision = Some("deny".into()))).await, 31);
    assert_eq!(count(p(|p| p.status = Some("403".into()))).await, 31);
    assert_eq!(count(p(|p| p.subject = Some(ID_A.into()))).await, 30);
    assert_eq!(count(p(|p| p.subject = Some(ID_B.into()))).await, 60);
    let from = gateway::audit::event::rfc3339_ms(T0 - 1);
    assert_eq!(
        count(FilterParams {
            from: Some(from.clone()),
            ..FilterParams::default()
        })
        .await,
        70
    );
    assert_eq!(
        count(FilterParams {
            from: Some(from),
            to: Some((T0 + 100).to_string()),
            ..FilterParams::default()
        })
        .await,
        60
    );
    // Rotation: an event under key v1 is still found by ID number.
    let old = gateway::audit::SubjectKeys::new(1, [(1u32, vec![0x11u8; 32])].into_iter().collect())
        .expect("k");
    w.append(
        AuditEvent::access("records.read")
            .subject(old.subject(&id(ID_A)))
            .build(),
    )
    .await
    .expect("append");
    assert_eq!(count(p(|p| p.subject = Some(ID_A.into()))).await, 31);

    // Exports: one NDJSON line per event, CSV header + one row per event.
    let f = Filter {
        department: Some("education".into()),
        ..Filter::default()
    };
    let mut nd = Vec::new();
    query::export_to(&t.db, &f, ExportFormat::Ndjson, &mut nd)
        .await
        .expect("ndjson");
    let text = String::from_utf8(nd).expect("utf8");
    assert_eq!(text.lines().count(), 225);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(v["log_id"], "gw-q");
        assert_eq!(v["department"], "education");
    }
    let mut csv = Vec::new();
    query::export_to(&t.db, &f, ExportFormat::Csv, &mut csv)
        .await
        .expect("csv");
    let mut r = csv::Reader::from_reader(csv.as_slice());
    assert_eq!(r.headers().expect("header").get(0), Some("time"));
    assert_eq!(r.records().count(), 225);
    let mut empty = Vec::new();
    let none = Filter {
        department: Some("nobody".into()),
        ..Filter::default()
    };
    query::export_to(&t.db, &none, ExportFormat::Csv, &mut empty)
        .await
        .expect("csv");
    assert_eq!(
        String::from_utf8_lossy(&empty).lines().count(),
        1,
        "header only"
    );

    // Reports.
    let days = query::accesses_per_department_per_day(&t.db, T0 - 3 * DAY, T0 + DAY, 28_800)
        .await
        .expect("per day");
    let today: Vec<_> = days.iter().filter(|d| d.day == "2026-03-10").collect();
    assert_eq!(today.len(), 2, "{days:?}");
    let edu = today
        .iter()
        .find(|d| d.department == "education")
        .expect("edu");
    assert_eq!((edu.accesses, edu.allowed), (60, 60));
    let hi = today
        .iter()
        .find(|d| d.department == "health-insurance")
        .expect("hi");
    assert_eq!((hi.accesses, hi.denied), (10, 1));

    let den = query::denials(&t.db, 0, T0 + DAY).await.expect("denials");
    assert_eq!(den.len(), 1);
    assert_eq!(den[0].denials, 31);
    assert_eq!(den[0].rules.get("deny-default"), Some(&31));

    let top = query::most_accessed_subjects(&t.db, 0, T0 + DAY, 5)
        .await
        .expect("top");
    assert_eq!(top[0].subject, k.subject(&id(ID_B)).as_str());
    assert_eq!(top[0].accesses, 60);
    assert!(
        top.iter()
            .all(|s| !s.subject.contains(ID_A) && !s.subject.contains(ID_B))
    );

    let anomalies = query::volume_anomalies(&t.db, T0, 28, 28_800)
        .await
        .expect("anomalies");
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].department, "education");
    assert_eq!(anomalies[0].accesses, 60);
    assert!(anomalies[0].threshold <= 7.0, "{anomalies:?}");
    // The day before was normal.
    assert!(
        query::volume_anomalies(&t.db, T0 - DAY, 28, 28_800)
            .await
            .expect("a")
            .is_empty()
    );

    // The per-person report: every access, with proofs once checkpointed.
    let rep = proofs::subject_report(&t.db, &k, &id(ID_A), None, None)
        .await
        .expect("report");
    assert_eq!(rep.accesses.len(), 31);
    assert_eq!(rep.not_yet_checkpointed, 31);
    w.checkpoint_now().await.expect("cp");
    let rep = proofs::subject_report(&t.db, &k, &id(ID_A), None, None)
        .await
        .expect("report");
    assert_eq!(rep.not_yet_checkpointed, 0);
    assert_eq!(rep.verify(&[w.public_key_hex().to_owned()]), Ok(31));
    assert!(
        rep.accesses
            .iter()
            .all(|a| a.purpose.is_some() || a.client_id.is_none())
    );
    let json = serde_json::to_string(&rep).expect("json");
    assert!(!json.contains(ID_A));
    let mut forged = rep.clone();
    forged.accesses[3].purpose = Some("something else".into());
    assert!(forged.verify(&[]).is_err());
    w.shutdown().await;
}

#[tokio::test]
async fn auditor_queries_exports_and_reports() {
    on_each_backend!(queries);
}
