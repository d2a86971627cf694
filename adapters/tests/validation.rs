//! Validation: one test per rule of `Dataset::validate`, and catalogue
//! loading errors.

mod common;

use std::path::PathBuf;

use adapters::domain::IdNumber;
use adapters::{Catalogue, RecordError, Sharing};
use serde_json::{Value, json};
use time::macros::date;

use common::{catalogue, schema_dir, synthetic};

fn enrolment() -> Value {
    // A dibao record of an active household with at least two members.
    synthetic("assistance-enrolment", 200)
        .into_iter()
        .find(|r| {
            r["category"] == "dibao"
                && r["status"] == "active"
                && r["members"].as_array().is_some_and(|m| m.len() >= 2)
        })
        .expect("a dibao household")
}

fn settlement() -> Value {
    synthetic("medical-settlement", 1).remove(0)
}

fn errors(dataset: &str, record: Value) -> Vec<RecordError> {
    match catalogue()
        .dataset(dataset)
        .expect("dataset")
        .validate(record)
    {
        Ok(_) => panic!("expected {dataset} record to be refused"),
        Err(e) => e,
    }
}

fn assert_error_at(errors: &[RecordError], path: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "no error at {path} containing {fragment:?}: {errors:#?}"
    );
}

/// Puts an ID number on member `i`, with the birth date and sex it encodes
/// (`full` is its normalised 18-character form).
fn set_member_id(r: &mut Value, i: usize, submitted: &str, full: &str) {
    r["members"][i]["id_number"] = json!(submitted);
    r["members"][i]["birth_date"] = json!(format!(
        "{}-{}-{}",
        &full[6..10],
        &full[10..12],
        &full[12..14]
    ));
    let odd = (full.as_bytes()[16] - b'0') % 2 == 1;
    r["members"][i]["sex"] = json!(if odd { "1" } else { "2" });
}

fn with_check_x() -> IdNumber {
    (0..1000)
        .filter_map(|s| IdNumber::from_parts("441702", date!(1975 - 03 - 14), s).ok())
        .find(|id| id.as_str().ends_with('X'))
        .expect("some sequence has check character X")
}

#[test]
fn synthetic_records_of_every_dataset_validate() {
    for d in catalogue().datasets() {
        for r in synthetic(d.id(), 40) {
            if let Err(e) = d.validate(r) {
                panic!("{}: {e:#?}", d.id());
            }
        }
    }
}

#[test]
fn validated_records_carry_key_region_and_unique_subjects() {
    let mut r = enrolment();
    // The head is also the first member: subjects list each person once.
    let v = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset")
        .validate(r.clone())
        .expect("valid");
    assert_eq!(v.natural_key, r["enrolment_id"].as_str().expect("id"));
    assert_eq!(
        v.region.as_str(),
        r["region_code"].as_str().expect("region")
    );
    let members = r["members"].as_array().expect("members").len();
    assert_eq!(v.subjects.len(), members);
    assert_eq!(
        v.subjects[0].as_str(),
        r["head"]["id_number"].as_str().expect("id")
    );
    let head = r["members"][0]["id_number"]
        .as_str()
        .expect("id")
        .to_owned();
    set_member_id(&mut r, 1, &head, &head);
    let v = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset")
        .validate(r)
        .expect("valid");
    assert_eq!(v.subjects.len(), members - 1);
}

#[test]
fn id_numbers_are_checked_and_normalised() {
    let mut r = enrolment();
    let good = r["members"][1]["id_number"]
        .as_str()
        .expect("id")
        .to_owned();
    let wrong_check = format!(
        "{}{}",
        &good[..17],
        if good.ends_with('0') { '1' } else { '0' }
    );
    r["members"][1]["id_number"] = json!(wrong_check);
    let e = errors("assistance-enrolment", r.clone());
    assert_error_at(&e, "/members/1/id_number", "check character");
    assert!(
        e.iter().all(|e| !e.message.contains(&wrong_check[..14])),
        "messages repeat the number"
    );

    // Lower-case x is normalised to X.
    let x = with_check_x();
    set_member_id(&mut r, 1, &x.as_str().to_lowercase(), x.as_str());
    let v = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset")
        .validate(r.clone())
        .expect("valid");
    assert_eq!(v.record["members"][1]["id_number"], json!(x.as_str()));

    // A 15-digit legacy number becomes 18 digits.
    let eighteen = IdNumber::from_parts("441702", date!(1968 - 07 - 01), 123).expect("id");
    let fifteen = format!("{}{}", &eighteen.as_str()[..6], &eighteen.as_str()[8..17]);
    set_member_id(&mut r, 1, &fifteen, eighteen.as_str());
    let v = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset")
        .validate(r.clone())
        .expect("valid");
    assert_eq!(
        v.record["members"][1]["id_number"],
        json!(eighteen.as_str())
    );
    assert!(v.subjects.contains(&eighteen));

    // Retired address codes are accepted.
    let retired = IdNumber::from_parts("441723", date!(1960 - 01 - 01), 11).expect("id");
    set_member_id(&mut r, 1, retired.as_str(), retired.as_str());
    assert!(
        catalogue()
            .dataset("assistance-enrolment")
            .expect("dataset")
            .validate(r.clone())
            .is_ok()
    );

    // Impossible birth date inside the number.
    let feb30 = "44170219800230001";
    let feb30 = format!("{feb30}{}", check(feb30));
    r["members"][1]["id_number"] = json!(feb30);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members/1/id_number",
        "not a real date",
    );

    // Future birth date inside the number.
    let future = "44170221000101001";
    let future = format!("{future}{}", check(future));
    r["members"][1]["id_number"] = json!(future);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members/1/id_number",
        "future",
    );

    // Wrong shape: JSON Schema reports it once.
    r["members"][1]["id_number"] = json!("4417021980");
    let e = errors("assistance-enrolment", r);
    assert_eq!(
        e.iter()
            .filter(|e| e.path == "/members/1/id_number")
            .count(),
        1,
        "{e:#?}"
    );
}

fn check(first17: &str) -> char {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let s: u32 = first17
        .bytes()
        .zip(W)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    b"10X98765432"[(s % 11) as usize] as char
}

#[test]
fn region_codes_and_health_insurance_areas() {
    let mut r = enrolment();
    r["region_code"] = json!("441742");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/region_code",
        "health-insurance area",
    );
    r["region_code"] = json!("440012");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/region_code",
        "not a province, city or county",
    );
    r["region_code"] = json!("4417");
    assert_error_at(&errors("assistance-enrolment", r), "/region_code", "");

    let mut s = settlement();
    for area in ["441742", "441743", "441799", "441781"] {
        s["insurance_area"] = json!(area);
        let v = catalogue()
            .dataset("medical-settlement")
            .expect("dataset")
            .validate(s.clone())
            .expect("valid");
        assert_eq!(v.region.as_str(), area);
    }
}

#[test]
fn money_is_non_negative_with_two_decimals() {
    let mut r = enrolment();
    r["monthly_amount"] = json!(560.555);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/monthly_amount",
        "two decimals",
    );
    r["monthly_amount"] = json!(-1);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/monthly_amount",
        "",
    );
    r["monthly_amount"] = json!("560.00");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/monthly_amount",
        "",
    );
    r["monthly_amount"] = json!(560.5);
    assert!(
        catalogue()
            .dataset("assistance-enrolment")
            .expect("dataset")
            .validate(r)
            .is_ok()
    );
}

#[test]
fn dates_must_be_real_and_birth_dates_not_future() {
    let mut r = enrolment();
    r["valid_from"] = json!("2023-02-29");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/valid_from",
        "calendar date",
    );
    r["valid_from"] = json!("2023/02/01");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/valid_from",
        "",
    );
    let mut r = enrolment();
    r["members"][0]["birth_date"] = json!("2100-01-01");
    assert_error_at(
        &errors("assistance-enrolment", r),
        "/members/0/birth_date",
        "future",
    );
}

#[test]
fn code_tables_required_fields_and_unknown_fields() {
    let mut r = enrolment();
    r["category"] = json!("poor");
    assert_error_at(&errors("assistance-enrolment", r.clone()), "/category", "");
    r["category"] = json!("dibao");
    r["members"][0]["relation"] = json!("03");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members/0/relation",
        "",
    );
    let mut r = enrolment();
    r.as_object_mut().expect("object").remove("status");
    assert_error_at(&errors("assistance-enrolment", r.clone()), "", "status");
    let mut r = enrolment();
    r["nickname"] = json!("x");
    assert_error_at(&errors("assistance-enrolment", r), "", "nickname");
}

#[test]
fn conditional_requirements() {
    let mut r = enrolment();
    r["category"] = json!("tekun");
    let e = errors("assistance-enrolment", r);
    assert_error_at(&e, "", "care_level");
    assert_error_at(&e, "", "support_mode");
    let mut r = enrolment();
    r["status"] = json!("graduating");
    assert_error_at(
        &errors("assistance-enrolment", r),
        "",
        "graduation_end_date",
    );
}

#[test]
fn cross_field_rules() {
    let mut r = enrolment();
    r["status"] = json!("graduating");
    r["graduation_start_date"] = json!("2025-01-01");
    r["graduation_end_date"] = json!("2025-07-02");
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/graduation_end_date",
        "6 months",
    );
    r["graduation_end_date"] = json!("2025-07-01");
    assert!(
        catalogue()
            .dataset("assistance-enrolment")
            .expect("dataset")
            .validate(r.clone())
            .is_ok()
    );
    r["graduation_end_date"] = json!("2024-12-01");
    assert_error_at(
        &errors("assistance-enrolment", r),
        "/graduation_end_date",
        "may not precede",
    );

    let mut r = enrolment();
    r["valid_to"] = json!("2000-01-01");
    assert_error_at(
        &errors("assistance-enrolment", r),
        "/valid_to",
        "may not precede",
    );

    let mut r = enrolment();
    r["category"] = json!("rigid_expenditure");
    r["valid_from"] = json!("2025-01-01");
    r["valid_to"] = json!("2026-01-02");
    assert_error_at(&errors("assistance-enrolment", r), "/valid_to", "12 months");

    let mut r = enrolment();
    r["members"][1]["relation"] = json!("02");
    assert_error_at(
        &errors("assistance-enrolment", r),
        "/members/1/relation",
        "one head",
    );

    let mut r = enrolment();
    r["household_size"] = json!(1);
    r["enrolled_persons"] = json!(1);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members",
        "household_size",
    );
    r["enrolled_persons"] = json!(3);
    assert_error_at(
        &errors("assistance-enrolment", r),
        "/enrolled_persons",
        "household_size",
    );

    let mut s = settlement();
    s["personal_paid"] = json!(s["total_cost"].as_f64().expect("cost") + 1.0);
    assert_error_at(&errors("medical-settlement", s), "/total_cost", "exceed");
}

#[test]
fn every_error_is_returned_at_once() {
    let mut r = enrolment();
    r["category"] = json!("poor");
    r["monthly_amount"] = json!(1.234);
    r["valid_from"] = json!("2023-02-30");
    r["members"][0]["id_number"] = json!("441702198001010018");
    let e = errors("assistance-enrolment", r);
    for p in [
        "/category",
        "/monthly_amount",
        "/valid_from",
        "/members/0/id_number",
    ] {
        assert!(e.iter().any(|x| x.path == p), "{p} missing in {e:#?}");
    }
}

#[test]
fn unchecked_extracts_only_key_region_and_subjects() {
    let d = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset");
    let mut r = enrolment();
    r["category"] = json!("poor");
    r["monthly_amount"] = json!(-5);
    let v = d.validate_unchecked(r.clone()).expect("extractable");
    assert_eq!(v.natural_key, r["enrolment_id"].as_str().expect("id"));
    assert!(!v.subjects.is_empty());
    r.as_object_mut().expect("object").remove("enrolment_id");
    let e = d.validate_unchecked(r).expect_err("no key");
    assert_eq!(e[0].path, "/enrolment_id");
}

#[test]
fn catalogue_annotations_are_complete_and_realistic() {
    let c = catalogue();
    let ids: Vec<&str> = c.datasets().map(|d| d.id()).collect();
    assert_eq!(
        ids,
        [
            "assistance-enrolment",
            "housing-assistance",
            "medical-settlement",
            "monitoring-object",
            "student-aid"
        ]
    );
    for d in c.datasets() {
        assert!(
            d.fields().iter().any(|f| f.sharing == Sharing::None),
            "{}: no 不予共享 field",
            d.id()
        );
        assert!(
            d.fields()
                .iter()
                .filter(|f| f.sharing == Sharing::Conditional)
                .count()
                >= 3,
            "{}",
            d.id()
        );
        assert!(
            d.fields()
                .iter()
                .any(|f| f.sharing == Sharing::Unconditional),
            "{}",
            d.id()
        );
        assert!(
            d.fields()
                .iter()
                .all(|f| !f.zh.is_empty() && !f.description.is_empty())
        );
        assert_eq!(
            d.schema()["$id"],
            json!(format!("urn:gateway:schema:{}", d.id()))
        );
    }
    let e = c.dataset("assistance-enrolment").expect("dataset");
    assert!(e.field("members[].id_number").is_some());
    let cat = e.field("category").expect("category");
    assert!(
        cat.codes
            .iter()
            .any(|c| c.code == "tekun" && c.zh == "特困人员")
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adapters-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn catalogue_load_errors_name_the_file_and_the_problem() {
    let dir = temp_dir("bad-schemas");
    let good =
        std::fs::read_to_string(schema_dir().join("student-aid.schema.json")).expect("schema");
    // 1. not JSON
    std::fs::write(dir.join("broken.schema.json"), "{ not json").expect("write");
    // 2. a property without x-sharing, and a wrong x-kind
    let mut v: Value = serde_json::from_str(&good).expect("json");
    v["properties"]["amount"]
        .as_object_mut()
        .expect("object")
        .remove("x-sharing");
    v["properties"]["stage"]["x-kind"] = json!("colour");
    std::fs::write(dir.join("student-aid.schema.json"), v.to_string()).expect("write");
    // 3. x-dataset does not match the file name, and x-region names no region field
    let mut w: Value = serde_json::from_str(&good).expect("json");
    w["x-region"] = json!("school.name");
    std::fs::write(dir.join("other.schema.json"), w.to_string()).expect("write");

    let errors = Catalogue::load_dir(&dir).expect_err("broken");
    let has = |file: &str, fragment: &str| {
        errors
            .iter()
            .any(|e| e.file.ends_with(file) && e.to_string().contains(fragment))
    };
    assert!(has("broken.schema.json", "not valid JSON"), "{errors:#?}");
    assert!(has("student-aid.schema.json", "x-sharing"), "{errors:#?}");
    assert!(
        has("student-aid.schema.json", "/properties/amount"),
        "{errors:#?}"
    );
    assert!(has("student-aid.schema.json", "colour"), "{errors:#?}");
    assert!(
        has("other.schema.json", "does not match the file name"),
        "{errors:#?}"
    );
    assert!(has("other.schema.json", "x-region"), "{errors:#?}");

    let missing = Catalogue::load_dir(&dir.join("nope")).expect_err("missing dir");
    assert!(
        missing[0]
            .to_string()
            .contains("cannot read the schema directory")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn schemas_with_remote_refs_do_not_compile() {
    let good =
        std::fs::read_to_string(schema_dir().join("student-aid.schema.json")).expect("schema");
    let mut v: Value = serde_json::from_str(&good).expect("json");
    v["properties"]["term"]["$ref"] = json!("https://example.com/remote.json");
    let e = Catalogue::from_schemas(vec![(PathBuf::from("student-aid.schema.json"), v)])
        .expect_err("remote ref");
    assert!(
        e.iter().any(|e| e.message.contains("does not compile")),
        "{e:#?}"
    );
}

#[test]
fn debug_output_never_shows_personal_data() {
    let r = enrolment();
    let name = r["head"]["name"].as_str().expect("name").to_owned();
    let id = r["head"]["id_number"].as_str().expect("id").to_owned();
    let v = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset")
        .validate(r)
        .expect("valid");
    let shown = format!("{v:?}");
    assert!(
        !shown.contains(&name) && !shown.contains(&id[6..14]),
        "{shown}"
    );
}

#[test]
fn birth_date_and_sex_must_agree_with_the_id_number() {
    let mut r = enrolment();
    let birth = r["members"][1]["birth_date"]
        .as_str()
        .expect("birth")
        .to_owned();
    let other_day = if birth.ends_with("01") {
        format!("{}02", &birth[..8])
    } else {
        format!("{}01", &birth[..8])
    };
    r["members"][1]["birth_date"] = json!(other_day);
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members/1/birth_date",
        "birth date in the ID number",
    );
    r["members"][1]["birth_date"] = json!(birth);
    let sex = r["members"][1]["sex"].as_str().expect("sex").to_owned();
    r["members"][1]["sex"] = json!(if sex == "1" { "2" } else { "1" });
    assert_error_at(
        &errors("assistance-enrolment", r.clone()),
        "/members/1/sex",
        "sex encoded",
    );
    // 9 (未说明) does not contradict anything.
    r["members"][1]["sex"] = json!("9");
    assert!(
        catalogue()
            .dataset("assistance-enrolment")
            .expect("dataset")
            .validate(r)
            .is_ok()
    );
    let mut s = settlement();
    s["patient"]["birth_date"] = json!("1900-01-01");
    assert_error_at(
        &errors("medical-settlement", s),
        "/patient/birth_date",
        "birth date in the ID number",
    );
}
