//! Publishing records end to end over mTLS, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use gateway_tests::{TestGateway, backends, example};
use serde_json::{Value, json};

const OWNERS: &[(&str, &str)] = &[
    ("assistance-enrolment", "civil-affairs"),
    ("monitoring-object", "rural-revitalization"),
    ("student-aid", "education"),
    ("medical-settlement", "health-insurance"),
    ("housing-assistance", "housing"),
];

async fn post(gw: &TestGateway, client: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let r = gw
        .client(client)
        .post(gw.url(path))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn every_owner_publishes_canonical_native_and_csv_examples() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        for (dataset, owner) in OWNERS {
            let (s, b) = post(
                &gw,
                owner,
                &format!("/v1/records/{dataset}"),
                "application/json",
                example(&format!("{dataset}.canonical.json")),
            )
            .await;
            assert_eq!(s, 200, "{dataset} canonical on {}: {b}", db.name());
            assert_eq!(b["inserted"], 3, "{b}");
            // The same records again in native format: nothing changes.
            let (s, b) = post(
                &gw,
                owner,
                &format!("/v1/records/{dataset}?format=native"),
                "application/json",
                example(&format!("{dataset}.native.json")),
            )
            .await;
            assert_eq!(s, 200, "{dataset} native on {}: {b}", db.name());
            assert_eq!(b["unchanged"], 3, "{dataset} native round trip: {b}");
            let (s, b) = post(
                &gw,
                owner,
                &format!("/v1/imports/{dataset}"),
                "text/csv",
                example(&format!("{dataset}.csv")),
            )
            .await;
            assert_eq!(s, 200, "{dataset} csv on {}: {b}", db.name());
            assert_eq!(b["records"], 3, "{b}");
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn only_the_owner_publishes() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let (s, b) = post(
        &gw,
        "education",
        "/v1/records/assistance-enrolment",
        "application/json",
        example("assistance-enrolment.canonical.json"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, _) = post(
        &gw,
        "admin",
        "/v1/records/assistance-enrolment",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s, 403);
    gw.stop().await;
}

#[tokio::test]
async fn failures_store_nothing_and_say_where() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let mut records: Value =
            serde_json::from_slice(&example("assistance-enrolment.canonical.json")).unwrap();
        // Record 1 gets a bad ID number in its first member.
        let members = records[1]["members"].as_array_mut().unwrap();
        let id = members[0]["id_number"].as_str().unwrap().to_owned();
        let last = if id.ends_with('1') { '2' } else { '1' };
        members[0]["id_number"] = json!(format!("{}{last}", &id[..17]));
        let body = serde_json::to_vec(&records).unwrap();
        let (s, b) = post(
            &gw,
            "civil-affairs",
            "/v1/records/assistance-enrolment",
            "application/json",
            body,
        )
        .await;
        assert_eq!(s, 422, "{}: {b}", db.name());
        let errors = b["error"]["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["record"] == 1 && e["path"] == "/members/0/id_number"),
            "{b}"
        );
        // Nothing of the good records was stored: publishing them now inserts.
        let good = serde_json::to_vec(&json!([records[0].clone()])).unwrap();
        let (s, b) = post(
            &gw,
            "civil-affairs",
            "/v1/records/assistance-enrolment",
            "application/json",
            good,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(b["inserted"], 1, "{b}");

        let (s, b) = post(
            &gw,
            "civil-affairs",
            "/v1/records/assistance-enrolment",
            "application/json",
            b"[{\"a\": ".to_vec(),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            b["error"]["message"].as_str().unwrap().contains("line 1"),
            "{b}"
        );
        let (s, _) = post(
            &gw,
            "civil-affairs",
            "/v1/records/no-such-dataset",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(s, 404);
        let (s, _) = post(
            &gw,
            "civil-affairs",
            "/v1/records/assistance-enrolment",
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(s, 415);
        gw.stop().await;
    }
}

#[tokio::test]
async fn ndjson_loads_are_atomic() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let records: Vec<Value> =
            serde_json::from_slice(&example("student-aid.canonical.json")).unwrap();
        let mut nd = Vec::new();
        for r in &records {
            nd.extend(serde_json::to_vec(r).unwrap());
            nd.push(b'\n');
        }
        let mut bad = nd.clone();
        bad.extend(b"{not json}\n");
        let (s, b) = post(
            &gw,
            "education",
            "/v1/records/student-aid",
            "application/x-ndjson",
            bad,
        )
        .await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"]["errors"][0]["record"], 3, "{b}");
        let (s, b) = post(
            &gw,
            "education",
            "/v1/records/student-aid",
            "application/x-ndjson",
            nd,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["inserted"], 3, "{}: {b}", db.name());
        gw.stop().await;
    }
}

/// The example CSV ledger as an XLSX workbook (every cell a string, as
/// ledgers typed by hand often are), sheet `台账`.
fn workbook(csv: &str) -> Vec<u8> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("台账").unwrap();
    for (r, line) in csv.lines().enumerate() {
        for (c, cell) in line.split(',').enumerate() {
            ws.write_string(r as u32, c as u16, cell).unwrap();
        }
    }
    wb.save_to_buffer().unwrap()
}

#[tokio::test]
async fn xlsx_ledgers_import_and_name_the_bad_cell() {
    const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let csv = String::from_utf8(example("student-aid.csv")).unwrap();
    let (s, b) = post(
        &gw,
        "education",
        "/v1/imports/student-aid",
        XLSX,
        workbook(&csv),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["inserted"], 3, "{b}");

    // Break the check character of the first data row's ID number.
    let broken = adapters::synth::with_bad_check_character(&csv);
    let (s, b) = post(
        &gw,
        "education",
        "/v1/imports/student-aid",
        XLSX,
        workbook(&broken),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    let errors = b["error"]["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["sheet"] == "台账" && e["row"] == 2),
        "{b}"
    );
    // Not a workbook at all: 422 naming the problem, nothing stored.
    let (s, b) = post(
        &gw,
        "education",
        "/v1/imports/student-aid",
        XLSX,
        b"PK garbage".to_vec(),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    gw.stop().await;
}

/// A ledger is written in chunks while it is still being validated; a bad
/// row after several chunks must still leave nothing stored.
#[tokio::test]
async fn a_bad_row_after_thousands_of_good_ones_stores_nothing() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let csv = String::from_utf8(adapters::synth::ledger_csv("student-aid", 11, 2_500)).unwrap();
        let lines = csv.lines().count();
        assert!(lines > 2_001, "{lines} lines: more than two write chunks");
        let broken = adapters::synth::with_bad_check_character_at(&csv, lines - 1);
        assert_ne!(broken, csv);
        let (s, b) = post(
            &gw,
            "education",
            "/v1/imports/student-aid",
            "text/csv",
            broken.into_bytes(),
        )
        .await;
        assert_eq!(s, 422, "{b}");
        let errors = b["error"]["errors"].as_array().unwrap();
        assert!(
            errors.iter().all(|e| e["row"] == lines as u64),
            "only the last row (spreadsheet row {lines}) is named: {b}"
        );
        // Nothing of the good rows was kept: the same ledger fixed inserts
        // every one of them.
        let (s, b) = post(
            &gw,
            "education",
            "/v1/imports/student-aid",
            "text/csv",
            csv.into_bytes(),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["records"], (lines - 1) as u64, "{b}");
        assert_eq!(b["inserted"], (lines - 1) as u64, "{b}");
        gw.stop().await;
    }
}
