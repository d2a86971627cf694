//! Person queries, batch matching and explain, end to end over mTLS, on
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use gateway_tests::{TestGateway, backends};
use serde_json::{Value, json};

fn enrolments() -> Vec<Value> {
    gateway_tests::example_records("assistance-enrolment")
}

async fn get(gw: &TestGateway, client: &str, path: &str, purpose: Option<&str>) -> (u16, Value) {
    let mut req = gw.client(client).get(gw.url(path));
    if let Some(p) = purpose {
        req = req.header("x-purpose", p);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An active enrolment's first member's ID number.
fn active_member(records: &[Value]) -> (usize, String) {
    let i = records
        .iter()
        .position(|r| r["status"] == "active" || r["status"] == "graduating")
        .expect("an active enrolment among the examples");
    (
        i,
        records[i]["members"][0]["id_number"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn education_sees_enrolment_category_but_not_income() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let records = enrolments();
        gateway_tests::publish_enrolment_records(&gw, &records).await;
        let (i, id) = active_member(&records);
        let (s, b) = get(
            &gw,
            "education",
            &format!("/v1/persons/{id}"),
            Some("student-aid"),
        )
        .await;
        assert_eq!(s, 200, "{}: {b}", db.name());
        let view = &b["records"][0]["record"];
        assert_eq!(view["category"], records[i]["category"], "{b}");
        let text = b.to_string();
        assert!(view.get("per_capita_income").is_none(), "{b}");
        assert!(view.get("monthly_amount").is_none(), "{b}");
        // The ID number is masked: first 6 and last 4 only.
        assert!(!text.contains(&id), "clear ID number leaked: {b}");
        let masked = view["members"][0]["id_number"].as_str().unwrap();
        assert_eq!(&masked[..6], &id[..6]);
        assert_eq!(&masked[14..], &id[14..]);
        // The owner reads its own record in full.
        let (s, b) = get(
            &gw,
            "civil-affairs",
            &format!("/v1/persons/{id}"),
            Some("low-income-monitoring"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert!(b.to_string().contains(&id));
        assert_eq!(b["records"][0]["format"], "canonical", "{b}");
        // In its own native field names on request: the adapter's mapping
        // of the canonical view.
        let (s, native) = get(
            &gw,
            "civil-affairs",
            &format!("/v1/persons/{id}?format=native"),
            Some("low-income-monitoring"),
        )
        .await;
        assert_eq!(s, 200, "{native}");
        let rec = &native["records"][0];
        assert_eq!(rec["format"], "native", "{native}");
        let adapter = adapters::adapter::for_department("civil-affairs").unwrap();
        assert_eq!(
            rec["record"],
            adapter.to_native(&b["records"][0]["record"]),
            "{native}"
        );
        assert!(rec["record"].get("JZLB").is_some(), "{native}");
        // Other callers get canonical views whatever they ask for: native
        // names are the owner's.
        let (s, b) = get(
            &gw,
            "education",
            &format!("/v1/persons/{id}?format=native"),
            Some("student-aid"),
        )
        .await;
        assert_eq!(
            (s, &b["records"][0]["format"]),
            (200, &json!("canonical")),
            "{b}"
        );
        let (s, b) = get(
            &gw,
            "education",
            &format!("/v1/persons/{id}?format=xml"),
            Some("student-aid"),
        )
        .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("bad_format")),
            "{b}"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn purpose_is_required_known_and_granted() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let records = enrolments();
    gateway_tests::publish_enrolment_records(&gw, &records).await;
    let (_, id) = active_member(&records);
    let path = format!("/v1/persons/{id}");
    let (s, b) = get(&gw, "education", &path, None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("missing_purpose"))
    );
    let (s, b) = get(&gw, "education", &path, Some("curiosity")).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("unknown_purpose"))
    );
    // A department with no rule for the purpose (and no dataset of its own)
    // gets 403 whether or not the person exists.
    gateway_tests::register_hr(&gw);
    let (s1, _) = get(&gw, "hr", &path, Some("student-aid")).await;
    let (s2, _) = get(
        &gw,
        "hr",
        "/v1/persons/11010519491231002X",
        Some("student-aid"),
    )
    .await;
    assert_eq!((s1, s2), (403, 403));
    // Housing only owns housing records: an enrolled person it has no
    // housing record of is 404, which tells it nothing about other datasets.
    let (s, _) = get(&gw, "housing", &path, Some("student-aid")).await;
    assert_eq!(s, 404);
    // With a grant, an unknown person is 404.
    let (s, _) = get(
        &gw,
        "education",
        "/v1/persons/11010519491231002X",
        Some("student-aid"),
    )
    .await;
    assert_eq!(s, 404);
    // Admins and auditors never read records.
    for c in ["admin", "auditor"] {
        let (s, _) = get(&gw, c, &path, Some("student-aid")).await;
        assert_eq!(s, 403, "{c}");
    }
    let (s, b) = get(
        &gw,
        "education",
        "/v1/persons/441702198001010018",
        Some("student-aid"),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_id_number"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn match_answers_every_input_in_order() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let records = enrolments();
        gateway_tests::publish_enrolment_records(&gw, &records).await;
        let (_, id) = active_member(&records);
        // Entries that are not strings are reported on their own lines too.
        let ids = json!({"ids": [id, "not-an-id", "11010519491231002X", id.to_lowercase(),
                                 42, null, {"id": id}, [id]]});
        let r = gw
            .client("education")
            .post(gw.url("/v1/match"))
            .header("x-purpose", "student-aid")
            .json(&ids)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", db.name());
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        assert!(r.headers().contains_key("x-policy-version"));
        let text = r.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8, "{text}");
        let statuses: Vec<&str> = lines
            .iter()
            .map(|l| l["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            [
                "match",
                "invalid",
                "no_record",
                "match",
                "invalid",
                "invalid",
                "invalid",
                "invalid"
            ],
            "{text}"
        );
        for l in &lines[4..] {
            assert_eq!(l["error"], "expected an ID number as a string", "{l}");
        }
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["index"], i);
        }
        assert!(!text.contains(&id), "clear ID number leaked");

        // The access event was committed before the first line; a second
        // event, once the stream ended, counts the records it disclosed and
        // names the first.
        let disclosed: usize = lines
            .iter()
            .map(|l| l["records"].as_array().map_or(0, Vec::len))
            .sum();
        let r = gw
            .client("auditor")
            .get(gw.url("/v1/audit/events?client=education"))
            .send()
            .await
            .unwrap();
        let events: Value = r.json().await.unwrap();
        let events = events["events"].as_array().unwrap();
        let access = events
            .iter()
            .find(|e| e["kind"] == "access" && e["route"] == "/v1/match")
            .unwrap_or_else(|| panic!("no access event: {events:?}"));
        let done = events
            .iter()
            .find(|e| e["kind"] == "stream_completed")
            .unwrap_or_else(|| panic!("no completion event: {events:?}"));
        assert_eq!(done["records_disclosed"], disclosed, "{done}");
        assert!(
            done["reason"]
                .as_str()
                .unwrap()
                .contains(access["event_id"].as_str().unwrap()),
            "{done} / {access}"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn explain_names_rules_and_field_treatments() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let r = gw
        .client("education")
        .post(gw.url("/v1/policy/explain"))
        .json(&json!({"dataset": "assistance-enrolment", "purpose": "student-aid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let text = b.to_string();
    assert!(text.contains("edu-enrolment-student-aid"), "{b}");
    // An admin may ask for another department; an auditor may not ask.
    let r = gw
        .client("admin")
        .post(gw.url("/v1/policy/explain"))
        .json(&json!({"dataset": "assistance-enrolment", "purpose": "housing-assistance", "department": "housing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .client("auditor")
        .post(gw.url("/v1/policy/explain"))
        .json(&json!({"dataset": "assistance-enrolment", "purpose": "student-aid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    gw.stop().await;
}

/// The default policy files, as a draft to edit.
fn default_policy_files() -> serde_json::Map<String, Value> {
    let dir = gateway_tests::repo_root().join("policies");
    let mut files = serde_json::Map::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".yaml") {
            files.insert(name, Value::String(std::fs::read_to_string(&p).unwrap()));
        }
    }
    files
}

#[tokio::test]
async fn simulate_runs_a_draft_against_samples_without_activating_it() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let explain = |client: &'static str| {
        let gw = &gw;
        async move {
            let r = gw
                .client(client)
                .post(gw.url("/v1/policy/explain"))
                .json(&json!({"dataset": "assistance-enrolment", "purpose": "student-aid"}))
                .send()
                .await
                .unwrap();
            let version = r.headers()["x-policy-version"].to_str().unwrap().to_owned();
            (version, r.json::<Value>().await.unwrap())
        }
    };
    let (version_before, before) = explain("education").await;

    // Draft: education no longer sees the head's (masked) name.
    let mut files = default_policy_files();
    let edu = files["education.yaml"].as_str().unwrap().to_owned();
    assert!(edu.contains("      head.name: mask\n"), "fixture changed");
    files.insert(
        "education.yaml".into(),
        Value::String(edu.replacen("      head.name: mask\n", "      head.name: drop\n", 1)),
    );
    let samples = json!([
        {"department": "education", "region": "441700", "dataset": "assistance-enrolment", "purpose": "student-aid",
         "record": enrolments().into_iter().find(|r| r["status"] == "active").unwrap()},
        {"department": "housing", "region": "441700", "dataset": "assistance-enrolment", "purpose": "housing-assistance"},
        {"department": "education", "region": "441700", "dataset": "medical-settlement", "purpose": "student-aid"}
    ]);
    let r = gw
        .client("admin")
        .post(gw.url("/v1/policy/simulate"))
        .json(&json!({"files": files, "samples": samples}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-audit-event"));
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["samples"], 3, "{report}");
    assert_eq!(report["changed"], 1, "{report}");
    assert_eq!(report["active_version"], version_before.as_str());
    assert_ne!(report["draft_version"], report["active_version"]);
    let change = &report["changes"][0];
    assert_eq!(change["index"], 0);
    assert_eq!(change["output_changed"], true);
    assert_eq!(
        change["fields"],
        json!([{"path": "head.name", "before": "mask:name", "after": "drop"}]),
        "{report}"
    );
    // No value of the sample record is echoed back.
    let text = report.to_string();
    let sample_name = samples[0]["record"]["head"]["name"].as_str().unwrap();
    assert!(!text.contains(sample_name), "{text}");

    // Nothing was activated: same version, same treatment.
    let (version_after, after) = explain("education").await;
    assert_eq!(version_after, version_before);
    assert_eq!(after, before);

    // A draft that does not load: 422 naming file and line; still nothing
    // activated.
    let mut bad = default_policy_files();
    bad.insert(
        "education.yaml".into(),
        Value::String(edu.replacen("      head.name: mask\n", "      head.nmae: mask\n", 1)),
    );
    let r = gw
        .client("admin")
        .post(gw.url("/v1/policy/simulate"))
        .json(&json!({"files": bad, "samples": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_policy", "{b}");
    let e = &b["error"]["errors"][0];
    assert_eq!(e["file"], "education.yaml", "{b}");
    assert!(e["line"].as_u64().unwrap() > 1, "{b}");
    assert!(e["message"].as_str().unwrap().contains("head.nmae"), "{b}");
    assert_eq!(explain("education").await.0, version_before);

    // Malformed body → 400; only admins simulate.
    let r = gw
        .client("admin")
        .post(gw.url("/v1/policy/simulate"))
        .json(&json!({"files": {"../x.yaml": "version: 1"}, "samples": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for client in ["education", "auditor"] {
        let r = gw
            .client(client)
            .post(gw.url("/v1/policy/simulate"))
            .json(&json!({"files": files, "samples": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{client}");
    }
    gw.stop().await;
}
