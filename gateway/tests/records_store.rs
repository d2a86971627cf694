//! The record store against real databases: SQLite always, PostgreSQL too when
//! GATEWAY_TEST_DATABASE_URL is set (a fresh database per test, dropped
//! after).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use adapters::domain::{IdNumber, RegionCode};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use gateway::identity::DepartmentId;
use gateway::records::{
    MATCH_CHUNK, NewRecord, PublishSummary, Publisher, RecordStore, RecordsError, Withdrawal,
};
use gateway::storage::Database;
use serde_json::json;
use sqlx::Row;
use time::{Date, Duration, Month};

const DS: &str = "assistance-enrolment";
const DS2: &str = "student-aid";

fn publisher(client: &str, dept: &str) -> Publisher {
    Publisher {
        client_id: client.to_owned(),
        department: DepartmentId::parse(dept).expect("department"),
    }
}

fn civil() -> Publisher {
    publisher("mz-system", "civil-affairs")
}

/// The i-th synthetic, valid ID number (distinct for distinct i).
fn person(i: u32) -> IdNumber {
    let base = Date::from_calendar_date(1950, Month::January, 1).expect("date");
    let birth = base + Duration::days(i64::from(i / 1000));
    IdNumber::from_parts("441702", birth, (i % 1000) as u16).expect("synthetic id")
}

fn region() -> RegionCode {
    RegionCode::parse("441702").expect("region")
}

fn record(key: &str, subjects: &[u32], amount: u32) -> NewRecord {
    NewRecord {
        natural_key: key.to_owned(),
        region: region(),
        subjects: subjects.iter().map(|&i| person(i)).collect(),
        payload: json!({
            "household_id": key,
            "category": "dibao",
            "monthly_amount": amount,
            "members": subjects.iter().map(|&i| json!({"id_number": person(i).as_str()})).collect::<Vec<_>>(),
        }),
    }
}

/// Runs `test` on SQLite, then on PostgreSQL if configured.
async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(RecordStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("records.db");
    let db = Database::open(path.to_str().expect("utf-8 path"), 4)
        .await
        .expect("open sqlite");
    test(RecordStore::new(db.clone())).await;
    db.close().await;

    if let Ok(url) = std::env::var("GATEWAY_TEST_DATABASE_URL") {
        let (db, admin, name) = fresh_postgres(&url).await;
        let result = AssertUnwindSafe(test(RecordStore::new(db.clone())))
            .catch_unwind()
            .await;
        db.close().await;
        let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop_sql))
            .execute(&admin)
            .await
            .expect("drop test database");
        admin.close().await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

async fn fresh_postgres(url: &str) -> (Database, sqlx::PgPool, String) {
    let admin = sqlx::PgPool::connect(url).await.expect("connect admin");
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create test database");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let prefix = match base.find("://").map(|i| i + 3) {
        Some(start) => match base[start..].find('/') {
            Some(slash) => &base[..start + slash],
            None => base,
        },
        None => base,
    };
    let db = Database::open(&format!("{prefix}/{name}{query}"), 4)
        .await
        .expect("open postgres test database");
    (db, admin, name)
}

/// Rows in the three record tables.
async fn counts(store: &RecordStore) -> (i64, i64, i64) {
    let q = "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM record_versions), \
             (SELECT count(*) FROM record_subjects)";
    match store.database() {
        Database::Sqlite(p) => {
            let r = sqlx::query(q).fetch_one(p).await.expect("count");
            (r.get(0), r.get(1), r.get(2))
        }
        Database::Postgres(p) => {
            let r = sqlx::query(q).fetch_one(p).await.expect("count");
            (r.get(0), r.get(1), r.get(2))
        }
    }
}

fn summary(inserted: u64, updated: u64, unchanged: u64) -> PublishSummary {
    PublishSummary {
        inserted,
        updated,
        unchanged,
    }
}

#[tokio::test]
async fn upsert_is_idempotent_and_keeps_history() {
    on_each_backend(|store| async move {
        let recs = vec![record("h1", &[1, 2], 600), record("h2", &[3], 700), record("h3", &[4], 800)];
        let s = store.publish(DS, &civil(), recs.clone()).await.expect("publish");
        assert_eq!(s, summary(3, 0, 0));

        // The same payloads again, one with its keys in another order: nothing new.
        let mut again = recs.clone();
        again[0].payload = serde_json::from_str(&format!(
            r#"{{"monthly_amount":600,"members":[{{"id_number":"{}"}},{{"id_number":"{}"}}],"category":"dibao","household_id":"h1"}}"#,
            person(1).as_str(),
            person(2).as_str()
        ))
        .expect("json");
        let s = store.publish(DS, &civil(), again).await.expect("republish");
        assert_eq!(s, summary(0, 0, 3));
        assert_eq!(counts(&store).await, (3, 0, 4));

        // A correction by another client of the department: version 2, v1 kept.
        let corrector = publisher("mz-county", "civil-affairs");
        let s = store
            .publish(DS, &corrector, vec![record("h2", &[3], 750), record("h3", &[4], 800)])
            .await
            .expect("correct");
        assert_eq!(s, summary(0, 1, 1));
        let current = store.get(DS, "h2").await.expect("get").expect("exists");
        assert_eq!(current.version, 2);
        assert_eq!(current.payload["monthly_amount"], 750);
        assert_eq!(current.published_by, "mz-county");
        assert!(!current.withdrawn);

        let history = store.history(DS, "h2").await.expect("history");
        assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(history[0].payload, recs[1].payload);
        assert_eq!(history[0].published_by, "mz-system");
        assert_eq!(history[1].published_by, "mz-county");
        assert_eq!(history[0].department.as_str(), "civil-affairs");
        assert!(history[0].published_at <= history[1].published_at);
        assert_eq!(counts(&store).await, (3, 1, 4));

        // Unknown keys and datasets.
        assert!(store.get(DS, "nope").await.expect("get").is_none());
        assert!(store.get(DS2, "h1").await.expect("get").is_none());
        assert!(store.history(DS, "nope").await.expect("history").is_empty());
    })
    .await;
}

#[tokio::test]
async fn same_key_in_two_datasets_is_two_records() {
    on_each_backend(|store| async move {
        store
            .publish(DS, &civil(), vec![record("k", &[1], 1)])
            .await
            .expect("ds1");
        let edu = publisher("jy-system", "education");
        let s = store
            .publish(DS2, &edu, vec![record("k", &[1], 2)])
            .await
            .expect("ds2");
        assert_eq!(s, summary(1, 0, 0));
        assert_eq!(
            store.get(DS, "k").await.expect("get").expect("1").payload["monthly_amount"],
            1
        );
        assert_eq!(
            store.get(DS2, "k").await.expect("get").expect("2").payload["monthly_amount"],
            2
        );
    })
    .await;
}

#[tokio::test]
async fn withdrawal_hides_a_record_and_republishing_restores_it() {
    on_each_backend(|store| async move {
        store
            .publish(
                DS,
                &civil(),
                vec![record("h1", &[1], 600), record("h2", &[1, 2], 500)],
            )
            .await
            .expect("publish");
        let all = vec![DS.to_owned()];
        assert_eq!(
            store
                .current_by_subject(&person(1), &all)
                .await
                .expect("lookup")
                .len(),
            2
        );

        let w = store
            .withdraw(DS, &publisher("mz-admin", "civil-affairs"), "h2")
            .await;
        assert_eq!(w.expect("withdraw"), Withdrawal::Withdrawn { version: 2 });
        assert_eq!(
            store.withdraw(DS, &civil(), "h2").await.expect("again"),
            Withdrawal::AlreadyWithdrawn
        );
        assert_eq!(
            store.withdraw(DS, &civil(), "zz").await.expect("unknown"),
            Withdrawal::NotFound
        );

        // Owners still see it, flagged; lookups and matches never do.
        let head = store.get(DS, "h2").await.expect("get").expect("kept");
        assert!(head.withdrawn);
        assert_eq!(head.version, 2);
        assert_eq!(head.published_by, "mz-admin");
        let p1 = store
            .current_by_subject(&person(1), &all)
            .await
            .expect("lookup");
        assert_eq!(
            p1.iter()
                .map(|r| r.natural_key.as_str())
                .collect::<Vec<_>>(),
            vec!["h1"]
        );
        assert!(
            store
                .current_by_subject(&person(2), &all)
                .await
                .expect("lookup")
                .is_empty()
        );
        let m: Vec<_> = store
            .match_subjects(vec![person(2), person(1)], all.clone())
            .try_collect()
            .await
            .expect("match");
        assert!(m[0].1.is_empty());
        assert_eq!(m[1].1.len(), 1);

        // Nothing was deleted: both versions are in the history.
        let h = store.history(DS, "h2").await.expect("history");
        assert_eq!(
            h.iter()
                .map(|r| (r.version, r.withdrawn))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, true)]
        );
        assert_eq!(h[0].payload, h[1].payload);

        // Publishing the same payload again re-activates it as version 3.
        let s = store
            .publish(DS, &civil(), vec![record("h2", &[1, 2], 500)])
            .await
            .expect("republish");
        assert_eq!(s, summary(0, 1, 0));
        let head = store.get(DS, "h2").await.expect("get").expect("kept");
        assert_eq!((head.version, head.withdrawn), (3, false));
        assert_eq!(
            store
                .current_by_subject(&person(2), &all)
                .await
                .expect("lookup")
                .len(),
            1
        );
    })
    .await;
}

/// Installs a trigger that makes the database reject the record with natural
/// key `boom`: a failure in the middle of a request, past the store's own
/// checks.
async fn install_failing_trigger(store: &RecordStore) {
    match store.database() {
        Database::Sqlite(p) => {
            sqlx::query(
                "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.natural_key = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'forced failure'); END",
            )
            .execute(p)
            .await
            .expect("trigger");
        }
        Database::Postgres(p) => {
            sqlx::query(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.natural_key = 'boom' THEN RAISE EXCEPTION 'forced failure'; END IF; \
                 RETURN NEW; END $$",
            )
            .execute(p)
            .await
            .expect("function");
            sqlx::query(
                "CREATE TRIGGER boom BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION boom()",
            )
            .execute(p)
            .await
            .expect("trigger");
        }
    }
}

#[tokio::test]
async fn a_failing_record_in_the_middle_stores_nothing() {
    on_each_backend(|store| async move {
        store
            .publish(DS, &civil(), vec![record("r5", &[5], 1)])
            .await
            .expect("seed");
        install_failing_trigger(&store).await;
        // 2,500 records: the first chunk of 1,000 is written (with an update
        // of r5), the second chunk fails at the database.
        let mut recs: Vec<NewRecord> = (0..2_500)
            .map(|i| record(&format!("r{i}"), &[i], 2))
            .collect();
        recs[1_700].natural_key = "boom".to_owned();
        let err = store
            .publish(DS, &civil(), recs)
            .await
            .expect_err("must fail");
        assert!(matches!(err, RecordsError::Database(_)), "{err:?}");
        assert_eq!(counts(&store).await, (1, 0, 1));
        let r5 = store.get(DS, "r5").await.expect("get").expect("kept");
        assert_eq!(
            (r5.version, r5.payload["monthly_amount"].as_u64()),
            (1, Some(1))
        );

        // The store still works afterwards.
        let s = store
            .publish(DS, &civil(), vec![record("r6", &[6], 1)])
            .await
            .expect("next");
        assert_eq!(s, summary(1, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn duplicate_keys_in_one_request_are_rejected() {
    on_each_backend(|store| async move {
        let err = store
            .publish(
                DS,
                &civil(),
                vec![
                    record("a", &[1], 1),
                    record("b", &[2], 1),
                    record("a", &[1], 2),
                ],
            )
            .await
            .expect_err("duplicate");
        match err {
            RecordsError::DuplicateKeys { indices } => assert_eq!(indices, vec![2]),
            other => panic!("{other:?}"),
        }
        // Across chunks of a streamed request: the first chunk was written
        // inside the transaction, and is rolled back too.
        let chunks = vec![
            (0..1_000)
                .map(|i| record(&format!("k{i}"), &[i], 1))
                .collect::<Vec<_>>(),
            vec![record("new", &[7], 1), record("k10", &[10], 1)],
        ];
        let err = store
            .publish_stream(DS, &civil(), futures_util::stream::iter(chunks))
            .await
            .expect_err("duplicate across chunks");
        match err {
            RecordsError::DuplicateKeys { indices } => assert_eq!(indices, vec![1_001]),
            other => panic!("{other:?}"),
        }
        assert_eq!(counts(&store).await, (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_dropped_publication_rolls_back() {
    on_each_backend(|store| async move {
        let mut p = store.begin_publish(DS, &civil()).await.expect("begin");
        p.push(vec![record("x", &[1], 1)]).await.expect("push");
        assert_eq!(p.summary(), summary(1, 0, 0));
        drop(p);
        assert_eq!(counts(&store).await, (0, 0, 0));

        let mut p = store.begin_publish(DS, &civil()).await.expect("begin");
        p.push(vec![record("x", &[1], 1)]).await.expect("push");
        p.push(vec![record("y", &[2], 1)]).await.expect("push");
        assert_eq!(p.commit().await.expect("commit"), summary(2, 0, 0));
        assert_eq!(counts(&store).await, (2, 0, 2));
    })
    .await;
}

#[tokio::test]
async fn subject_lookups_follow_the_current_version() {
    on_each_backend(|store| async move {
        store
            .publish(
                DS,
                &civil(),
                vec![record("h1", &[1, 2, 2], 1), record("h2", &[3], 1)],
            )
            .await
            .expect("publish");
        let edu = publisher("jy-system", "education");
        store
            .publish(DS2, &edu, vec![record("s1", &[2], 9)])
            .await
            .expect("publish");

        let both = vec![DS.to_owned(), DS2.to_owned()];
        let p2 = store
            .current_by_subject(&person(2), &both)
            .await
            .expect("lookup");
        assert_eq!(
            p2.iter()
                .map(|r| (r.dataset.as_str(), r.natural_key.as_str()))
                .collect::<Vec<_>>(),
            vec![(DS, "h1"), (DS2, "s1")]
        );
        assert_eq!(p2[1].department.as_str(), "education");
        assert_eq!(p2[0].region, region());
        // Only the datasets asked for; none at all means nothing.
        let only = store
            .current_by_subject(&person(2), &[DS2.to_owned()])
            .await
            .expect("lookup");
        assert_eq!(only.len(), 1);
        assert!(
            store
                .current_by_subject(&person(2), &[])
                .await
                .expect("lookup")
                .is_empty()
        );
        assert!(
            store
                .current_by_subject(&person(99), &both)
                .await
                .expect("lookup")
                .is_empty()
        );

        // Member 2 leaves household h1: the new version no longer names them.
        store
            .publish(DS, &civil(), vec![record("h1", &[1], 1)])
            .await
            .expect("update");
        let p2 = store
            .current_by_subject(&person(2), &both)
            .await
            .expect("lookup");
        assert_eq!(
            p2.iter().map(|r| r.dataset.as_str()).collect::<Vec<_>>(),
            vec![DS2]
        );
        assert_eq!(
            store
                .current_by_subject(&person(1), &both)
                .await
                .expect("lookup")
                .len(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn match_answers_every_input_in_order() {
    on_each_backend(|store| async move {
        // Persons 0..3,000 each have one record; even persons also a second.
        let mut recs: Vec<NewRecord> = (0..3_000)
            .map(|i| record(&format!("a{i}"), &[i], i))
            .collect();
        recs.extend(
            (0..3_000)
                .step_by(2)
                .map(|i| record(&format!("b{i}"), &[i], i)),
        );
        store.publish(DS, &civil(), recs).await.expect("publish");

        // More than one chunk, with misses and repeats interleaved.
        let n = MATCH_CHUNK + 2_345;
        let ids: Vec<u32> = (0..n as u32)
            .map(|k| match k % 5 {
                0 => 1_000_000 + k, // miss
                1 => 42,            // repeat
                _ => k % 3_000,
            })
            .collect();
        let inputs: Vec<IdNumber> = ids.iter().map(|&i| person(i)).collect();
        let mut stream = store.match_subjects(inputs, vec![DS.to_owned()]);
        let mut seen = 0usize;
        while let Some(item) = stream.next().await {
            let (idx, found) = item.expect("match");
            assert_eq!(idx, seen, "answers arrive in input order");
            let want = ids[idx];
            if want >= 1_000_000 {
                assert!(found.is_empty());
            } else {
                let keys: Vec<&str> = found.iter().map(|r| r.natural_key.as_str()).collect();
                let mut expected = vec![format!("a{want}")];
                if want.is_multiple_of(2) {
                    expected.push(format!("b{want}"));
                }
                assert_eq!(keys, expected);
                assert!(found.iter().all(|r| r.payload["monthly_amount"] == want));
            }
            seen += 1;
        }
        assert_eq!(seen, n);

        // A dataset the caller may not see gives misses only.
        let m: Vec<_> = store
            .match_subjects(vec![person(1), person(2)], vec![DS2.to_owned()])
            .try_collect()
            .await
            .expect("match");
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|(_, v)| v.is_empty()));
        let empty: Vec<_> = store
            .match_subjects(Vec::new(), vec![DS.to_owned()])
            .try_collect()
            .await
            .expect("match");
        assert!(empty.is_empty());
    })
    .await;
}

#[tokio::test]
async fn large_streamed_batch_and_bulk_seed() {
    on_each_backend(|store| async move {
        let chunks = (0..20u32).map(|c| {
            (c * 1_000..(c + 1) * 1_000)
                .map(|i| record(&format!("p{i}"), &[i], 1))
                .collect::<Vec<_>>()
        });
        let s = store
            .publish_stream(DS, &civil(), futures_util::stream::iter(chunks.clone()))
            .await
            .expect("stream");
        assert_eq!(s, summary(20_000, 0, 0));
        let s = store
            .publish_stream(DS, &civil(), futures_util::stream::iter(chunks))
            .await
            .expect("again");
        assert_eq!(s, summary(0, 0, 20_000));
        assert_eq!(counts(&store).await, (20_000, 0, 20_000));

        // Bulk seed into another dataset: same tables, same reads.
        let edu = publisher("jy-system", "education");
        let n = store
            .bulk_seed(
                DS2,
                &edu,
                (0..5_000).map(|i| record(&format!("s{i}"), &[i, i + 1], 3)),
            )
            .await
            .expect("seed");
        assert_eq!(n, 5_000);
        assert_eq!(counts(&store).await, (25_000, 0, 30_000));
        let p = store
            .current_by_subject(&person(4_000), &[DS2.to_owned()])
            .await
            .expect("lookup");
        assert_eq!(p.len(), 2);
        let s = store
            .publish(DS2, &edu, vec![record("s7", &[7, 8], 3)])
            .await
            .expect("upsert");
        assert_eq!(s, summary(0, 0, 1));

        // Seeding over existing keys fails as a whole.
        let err = store
            .bulk_seed(
                DS2,
                &edu,
                (4_990..5_010).map(|i| record(&format!("s{i}"), &[i], 3)),
            )
            .await
            .expect_err("conflict");
        assert!(matches!(err, RecordsError::Database(_)));
        assert_eq!(counts(&store).await, (25_000, 0, 30_000));
    })
    .await;
}
