//! Record store figures (not a timed test): publish rate into SQLite in
//! requests of 1,000 records, bulk seeding, and a 100,000-ID match against a
//! 1,000,000-person synthetic population, on SQLite and, when
//! GATEWAY_TEST_DATABASE_URL is set, on a fresh PostgreSQL database.
//!
//! `cargo bench -p gateway --bench records` (optionally `-- --persons N`).
//! Synthetic data only: valid-looking ID numbers, fictitious payloads.

mod common;

use std::time::Instant;

use adapters::domain::{IdNumber, RegionCode};
use futures_util::StreamExt;
use gateway::identity::DepartmentId;
use gateway::records::{NewRecord, Publisher, RecordStore};
use gateway::storage::Database;
use serde_json::json;
use time::{Date, Duration, Month};

const DATASET: &str = "assistance-enrolment";
const COUNTIES: [&str; 4] = ["441702", "441704", "441721", "441781"];

fn person(i: u32) -> IdNumber {
    let base = Date::from_calendar_date(1940, Month::January, 1).expect("date");
    let birth = base + Duration::days(i64::from(i / 1000 % 25_000));
    let county = COUNTIES[(i / 25_000_000) as usize % 4];
    IdNumber::from_parts(county, birth, (i % 1000) as u16).expect("synthetic id")
}

/// A canonical-looking enrolment record of about 400 bytes.
fn record(i: u32, salt: u32) -> NewRecord {
    let id = person(i);
    let region = RegionCode::parse(COUNTIES[(i % 4) as usize]).expect("region");
    NewRecord {
        natural_key: format!("{}/dibao", id.as_str()),
        region,
        payload: json!({
            "household_id": format!("HH{:09}", i),
            "head": {"id_number": id.as_str(), "name": "测试姓名（虚构）", "address": "阳江市江城区某街道（虚构）"},
            "category": "dibao",
            "single_person": i.is_multiple_of(7),
            "household_size": 1 + i % 5,
            "monthly_amount": format!("{}.00", 500 + (i + salt) % 400),
            "per_capita_income": format!("{}.50", 300 + i % 500),
            "region": region.as_str(),
            "valid_from": "2026-01-01",
            "valid_to": "2026-12-31",
            "status": "active",
        }),
        subjects: vec![id],
    }
}

fn publisher() -> Publisher {
    Publisher {
        client_id: "bench-mz".to_owned(),
        department: DepartmentId::parse("civil-affairs").expect("department"),
    }
}

async fn run(label: &str, store: RecordStore, persons: u32) {
    println!("== {label} ==");
    let p = publisher();

    // 1. Publish requests of 1,000 records each (upsert path: lookup, compare,
    //    write, one transaction per request).
    let requests = 100u32;
    let t = Instant::now();
    for r in 0..requests {
        let recs: Vec<NewRecord> = (r * 1_000..(r + 1) * 1_000).map(|i| record(i, 0)).collect();
        store.publish(DATASET, &p, recs).await.expect("publish");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "publish: {} records in requests of 1,000: {:.2} s = {:.0} records/s",
        requests * 1_000,
        secs,
        f64::from(requests * 1_000) / secs
    );
    // Same records again: all unchanged (idempotency path).
    let t = Instant::now();
    for r in 0..20u32 {
        let recs: Vec<NewRecord> = (r * 1_000..(r + 1) * 1_000).map(|i| record(i, 0)).collect();
        store.publish(DATASET, &p, recs).await.expect("republish");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "republish unchanged: 20,000 records: {:.0} records/s",
        20_000.0 / secs
    );
    // Changed payloads: every record gets version 2 (history copy).
    let t = Instant::now();
    for r in 0..20u32 {
        let recs: Vec<NewRecord> = (r * 1_000..(r + 1) * 1_000).map(|i| record(i, 1)).collect();
        store.publish(DATASET, &p, recs).await.expect("update");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "publish changed (new versions): 20,000 records: {:.0} records/s",
        20_000.0 / secs
    );

    // 2. Bulk seed the rest of the population.
    let start = requests * 1_000;
    let t = Instant::now();
    let mut next = start;
    while next < persons {
        let end = (next + 50_000).min(persons);
        store
            .bulk_seed(DATASET, &p, (next..end).map(|i| record(i, 0)))
            .await
            .expect("seed");
        next = end;
    }
    store.optimize().await.expect("analyze");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "bulk seed (+ analyze): {} records: {:.1} s = {:.0} records/s",
        persons - start,
        secs,
        f64::from(persons - start) / secs
    );

    // 3. Match 100,000 IDs (90% hits spread over the population, 10% misses).
    let ids: Vec<IdNumber> = (0..100_000u32)
        .map(|k| {
            if k % 10 == 9 {
                person(persons + k)
            } else {
                person(k.wrapping_mul(7_919) % persons)
            }
        })
        .collect();
    for round in 1..=2 {
        let t = Instant::now();
        let mut stream =
            std::pin::pin!(store.match_subjects(ids.clone(), vec![DATASET.to_owned()]));
        let (mut answers, mut hits, mut bytes) = (0usize, 0usize, 0usize);
        while let Some(item) = stream.next().await {
            let (_, found) = item.expect("match");
            answers += 1;
            hits += usize::from(!found.is_empty());
            bytes += found.iter().map(|r| r.natural_key.len()).sum::<usize>();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "match round {round}: {answers} IDs against {persons} persons: {hits} hits in {:.3} s ({bytes} key bytes)",
            secs
        );
    }
}

fn persons_arg() -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--persons")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::main]
async fn main() {
    let persons = persons_arg().max(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let db = Database::open(path.to_str().expect("path"), 4)
        .await
        .expect("sqlite");
    run(
        "SQLite (WAL, synchronous=FULL)",
        RecordStore::new(db.clone()),
        persons,
    )
    .await;
    db.close().await;

    if let Ok(url) = std::env::var("GATEWAY_TEST_DATABASE_URL") {
        let pg = common::ScratchPg::create(&url).await;
        let db = pg.db.clone();
        run("PostgreSQL", RecordStore::new(db.clone()), persons).await;
        pg.drop().await;
    }
}
