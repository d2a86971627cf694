//! Policy evaluation plus masking of one person view, in nanoseconds per
//! operation. `cargo bench -p gateway --bench policy` (release profile).
//!
//! Views are rendered as the gateway renders them: from the record's stored
//! canonical text into a reused buffer (`Decision::write_view`). One line
//! measures the value API (`Decision::apply`) for comparison.
//!
//! Uses the default policies in `policies/` against the dataset schemas in
//! `schemas/`. Records are synthetic (no real person).

use std::hint::black_box;

/// Measured with the allocator the `gateway` binary uses.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::path::PathBuf;
use std::time::Instant;

use adapters::domain::RegionCode;
use gateway::policy::{AccessRequest, Datasets, Grant, GrantSet, PolicySet, PseudonymKey};
use serde_json::{Value, json};
use time::macros::datetime;

fn member(id: &str, name: &str, birth: &str, relation: &str) -> Value {
    json!({"id_number": id, "name": name, "sex": "1", "birth_date": birth, "relation": relation,
           "mobile": "13812341234", "single_person_enrolment": false, "enrolled": true})
}

fn records() -> Vec<(&'static str, Value)> {
    let members = vec![
        member("441702198001010017", "张三", "1980-01-01", "01"),
        member("11010519491231002X", "李四", "1949-12-31", "10"),
        member("441702201003040021", "张小明", "2010-03-04", "20"),
        member("441702201205060038", "张小红", "2012-05-06", "20"),
    ];
    let head = json!({"id_number": "441702198001010017", "name": "张三",
                      "address": "广东省阳江市江城区东风一路12号", "mobile": "13812341234"});
    vec![
        (
            "assistance-enrolment",
            json!({
            "enrolment_id": "E-2026-000001", "category": "dibao", "region_code": "441702", "area_type": "urban",
            "head": head, "members": members, "household_size": 4, "enrolled_persons": 4,
            "monthly_amount": 2120.0, "per_capita_income": 420.5, "approval_date": "2025-03-01",
            "valid_from": "2025-03-01", "valid_to": "2027-02-28", "status": "active",
            "bank_account": "6222021234567890123"}),
        ),
        (
            "monitoring-object",
            json!({
            "monitor_id": "M-000001", "subject_type": "marginal_vulnerable", "region_code": "441702", "village": "某村",
            "head": head, "members": members, "household_size": 4, "risk_causes": ["illness", "education"],
            "per_capita_net_income": 6500.0, "identified_date": "2024-06-01", "risk_removed": false,
            "bank_account": "6222021234567890123"}),
        ),
        (
            "student-aid",
            json!({
            "aid_id": "S-000001", "student": {"id_number": "441702201003040021", "name": "张小明", "sex": "1",
            "birth_date": "2010-03-04", "student_no": "G441702201003040021"},
            "guardian": {"id_number": "441702198001010017", "name": "张三", "relation": "51", "mobile": "13812341234"},
            "region_code": "441702", "school": {"code": "4417020001", "name": "阳江市某中学"}, "stage": "junior_secondary",
            "aid_type": "living_allowance", "family_difficulty": "dibao", "academic_year": "2025-2026", "term": "autumn",
            "amount": 625.0, "paid_date": "2025-11-01", "bank_account": "6222021234567890123"}),
        ),
        (
            "medical-settlement",
            json!({
            "setl_id": "SETL-000001", "insured_person_no": "P0001",
            "patient": {"id_number": "11010519491231002X", "name": "李四", "sex": "2", "birth_date": "1949-12-31"},
            "insurance_type": "resident_basic", "insurance_area": "441702", "assistance_category": "dibao",
            "institution": {"code": "H001", "name": "阳江市人民医院"}, "medical_type": "inpatient",
            "diagnosis_code": "I10", "diagnosis_name": "高血压", "admission_date": "2026-01-02",
            "discharge_date": "2026-01-12", "settlement_date": "2026-01-12", "total_cost": 23456.7,
            "basic_insurance_paid": 14000.0, "critical_illness_paid": 3000.0, "medical_assistance_paid": 4000.0,
            "personal_paid": 2456.7}),
        ),
        (
            "housing-assistance",
            json!({
            "assistance_id": "H-000001", "assistance_type": "rental_subsidy", "region_code": "441702", "head": head,
            "members": members, "household_size": 4, "qualifying_category": "dibao", "per_capita_income": 420.5,
            "amount": 600.0, "amount_period": "monthly", "start_date": "2025-01-01", "status": "approved",
            "bank_account": "6222021234567890123"}),
        ),
    ]
}

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<60} {ns:>10.0} ns/op");
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let datasets = Datasets::load_dir(&root.join("schemas")).expect("dataset schemas in schemas/");
    assert!(!datasets.is_empty(), "no dataset schemas in schemas/");
    let key = PseudonymKey::from_bytes(&[7u8; 32]).expect("key");
    let (set, _) =
        PolicySet::load_dir(&root.join("policies"), &datasets, &key).expect("default policies");
    let records = records();
    let now = datetime!(2026-06-01 0:00 UTC);
    let region = RegionCode::parse("441700").expect("region");
    let grants = GrantSet::new(vec![Grant {
        id: "G-demo".into(),
        rule_id: "housing-enrolment-income".into(),
        department: "housing".into(),
        not_after: datetime!(2027-12-31 16:00 UTC),
        approved: true,
    }]);
    let req =
        |department: &'static str, dataset: &'static str, purpose: &'static str| AccessRequest {
            department,
            region,
            dataset,
            purpose,
            authorisation: None,
            now,
            grants: &grants,
        };
    let rec = |ds: &str| {
        records
            .iter()
            .find(|(d, _)| *d == ds)
            .map(|(_, r)| r.clone())
            .expect("record")
    };

    let text = |ds: &str| gateway::records::canonical_json(&rec(ds));
    let mut out: Vec<u8> = Vec::with_capacity(4096);

    println!("policy set {} ({} rules)", set.version(), set.rule_count());
    let enrol = rec("assistance-enrolment");
    let enrol_text = text("assistance-enrolment");
    let settlement_text = text("medical-settlement");
    // Floors: one validating pass over the stored text, and parsing it into
    // a Value (what rendering from values costs before any policy work).
    bench(
        &format!("scan 1 enrolment's text ({} bytes)", enrol_text.len()),
        200_000,
        || {
            black_box(serde_json::from_str::<serde::de::IgnoredAny>(black_box(&enrol_text)).ok());
        },
    );
    bench("parse 1 enrolment's text into a Value", 200_000, || {
        black_box(serde_json::from_str::<Value>(black_box(&enrol_text)).ok());
    });
    bench(
        "decide (education, assistance-enrolment, student-aid)",
        1_000_000,
        || {
            black_box(set.decide(black_box(&req(
                "education",
                "assistance-enrolment",
                "student-aid",
            ))));
        },
    );
    bench(
        "decide + apply, 1 enrolment, 4 members (education)",
        200_000,
        || {
            let d = set.decide(&req("education", "assistance-enrolment", "student-aid"));
            out.clear();
            black_box(d.write_view(black_box(&enrol_text), &mut out));
        },
    );
    bench(
        "decide + apply to a Value, 1 enrolment (education)",
        200_000,
        || {
            let d = set.decide(&req("education", "assistance-enrolment", "student-aid"));
            black_box(d.apply(black_box(&enrol)));
        },
    );
    bench(
        "decide + apply, 1 enrolment (housing, 2 rules, conditional)",
        200_000,
        || {
            let d = set.decide(&req(
                "housing",
                "assistance-enrolment",
                "housing-assistance",
            ));
            out.clear();
            black_box(d.write_view(black_box(&enrol_text), &mut out));
        },
    );
    bench(
        "decide + apply, 1 medical settlement (rural-rev., pseudonym+bands)",
        200_000,
        || {
            let d = set.decide(&req(
                "rural-revitalization",
                "medical-settlement",
                "poverty-return-monitoring",
            ));
            out.clear();
            black_box(d.write_view(black_box(&settlement_text), &mut out));
        },
    );
    // A whole person view: civil affairs, low-income monitoring, every
    // dataset its rules grant, one record each.
    let dsets: Vec<&str> = set.datasets_for("civil-affairs", "low-income-monitoring");
    let view_records: Vec<(&str, String)> = dsets.iter().map(|d| (*d, text(d))).collect();
    bench(
        &format!(
            "person view: civil-affairs, {} datasets, decide + apply each",
            view_records.len()
        ),
        100_000,
        || {
            for (ds, r) in &view_records {
                let d = set.decide(&AccessRequest {
                    dataset: ds,
                    ..req(
                        "civil-affairs",
                        "assistance-enrolment",
                        "low-income-monitoring",
                    )
                });
                black_box(d.write_view(black_box(r), &mut out));
            }
            out.clear();
        },
    );
}
