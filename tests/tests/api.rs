//! API conformance: the routes the gateway serves are the ones
//! `gateway/openapi.yaml` describes, and a tour of the whole API, on each
//! backend, gets every documented answer of every operation at least once,
//! each checked against the description (status, content type, schema, the
//! audit event header).

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::collections::BTreeSet;

use gateway_tests::{Conformance, TestDb, TestGateway, backends, example, example_records};
use serde_json::{Value, json};

/// The `(method, path)` pairs the router in gateway/src/app.rs declares,
/// read from its `.route("path", method(handler))` calls.
fn served_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(gateway_tests::repo_root().join("gateway/src/app.rs"))
        .expect("read gateway/src/app.rs");
    let mut out = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let mut parts = call.splitn(3, '"');
        let (Some(_), Some(path), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            panic!(
                "a .route( call without a path: {}",
                &call[..call.len().min(80)]
            );
        };
        let method = rest
            .trim_start_matches([',', ' ', '\n'])
            .split('(')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(
            ["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
            "route {path}: cannot read its method from {:?}",
            &rest[..rest.len().min(40)]
        );
        out.insert((method, path.to_owned()));
    }
    out
}

#[test]
fn every_served_route_is_described_and_every_described_route_is_served() {
    let served = served_routes();
    assert!(served.len() > 20, "read only {served:?}");
    let described: BTreeSet<(String, String)> =
        Conformance::default().operations().into_iter().collect();
    let undocumented: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in openapi.yaml: {undocumented:?}; in openapi.yaml but not served: {unserved:?}"
    );
}

/// Every operation, with each status its description lists: the request
/// that gets it, and the answer checked against the description.
#[tokio::test]
async fn every_documented_answer_matches_the_description() {
    for db in backends() {
        let gw = TestGateway::start_with(
            &db,
            gateway_tests::Options {
                // Small enough to reach with a test body.
                extra_toml: "[limits]\nmax_body_bytes = 1048576\n".into(),
                ..Default::default()
            },
        )
        .await;
        let mut c = Conformance::default();
        tour(&gw, &mut c).await;
        let unseen = c.unseen();
        assert!(
            unseen.is_empty(),
            "{}: documented answers the tour did not get: {unseen:#?}",
            db.name()
        );
        gw.stop().await;
    }
}

async fn tour(gw: &TestGateway, c: &mut Conformance) {
    let get = |client: &str, path: &str| gw.client(client).get(gw.url(path));
    let post = |client: &str, path: &str| gw.client(client).post(gw.url(path));

    // Operations and identity.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/whoami"] {
        let (s, _) = c.send("get", path, get("education", path)).await;
        assert_eq!(s, 200, "{path}");
    }
    let p = "/v1/admin/clients";
    let (s, b) = c.json("get", p, get("admin", p)).await;
    assert_eq!(s, 200);
    assert!(b["clients"].as_array().is_some_and(|l| l.len() >= 7), "{b}");
    assert_eq!(c.send("get", p, get("education", p)).await.0, 403);

    // The catalogue.
    let (s, b) = c
        .json("get", "/v1/schemas", get("housing", "/v1/schemas"))
        .await;
    assert_eq!((s, b["datasets"].as_array().map(Vec::len)), (200, Some(5)));
    let p = "/v1/schemas/{dataset}";
    let (s, _) = c
        .send("get", p, get("housing", "/v1/schemas/student-aid"))
        .await;
    assert_eq!(s, 200);
    let (s, _) = c.send("get", p, get("housing", "/v1/schemas/nope")).await;
    assert_eq!(s, 404);

    // Publishing.
    let p = "/v1/records/{dataset}";
    let enrolments = example_records("assistance-enrolment");
    let publish = |client: &str, body: Vec<u8>, content_type: &str| {
        post(client, "/v1/records/assistance-enrolment")
            .header("content-type", content_type)
            .body(body)
    };
    let canonical = example("assistance-enrolment.canonical.json");
    let (s, b) = c
        .json(
            "post",
            p,
            publish("civil-affairs", canonical.clone(), "application/json"),
        )
        .await;
    assert_eq!((s, &b["inserted"]), (200, &json!(3)), "{b}");
    let (s, _) = c
        .send(
            "post",
            p,
            publish("education", canonical.clone(), "application/json"),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = c
        .send(
            "post",
            p,
            post("civil-affairs", "/v1/records/nope").json(&enrolments),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .send("post", p, publish("civil-affairs", canonical, "text/plain"))
        .await;
    assert_eq!(s, 415);
    let (s, _) = c
        .send(
            "post",
            p,
            publish("civil-affairs", b"[{".to_vec(), "application/json"),
        )
        .await;
    assert_eq!(s, 400);
    let mut broken = enrolments[0].clone();
    broken["members"][0]["id_number"] = json!("not an ID number");
    let (s, b) = c
        .json(
            "post",
            p,
            publish(
                "civil-affairs",
                json!([broken]).to_string().into(),
                "application/json",
            ),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, _) = c
        .send(
            "post",
            p,
            publish("civil-affairs", vec![b' '; 2 << 20], "application/json"),
        )
        .await;
    assert_eq!(s, 413);

    // Withdrawing and history (owner only).
    let key = enrolments[2]["enrolment_id"].as_str().unwrap().to_owned();
    let p = "/v1/records/{dataset}/withdrawals";
    let withdraw = |client: &str| post(client, "/v1/records/assistance-enrolment/withdrawals");
    let (s, b) = c
        .json(
            "post",
            p,
            withdraw("civil-affairs").json(&json!({ "natural_keys": [key, "no-such-key"] })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][1]["status"], "not_found", "{b}");
    let (s, _) = c
        .send(
            "post",
            p,
            withdraw("education").json(&json!({ "natural_keys": [key] })),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = c
        .send(
            "post",
            p,
            withdraw("civil-affairs").json(&json!({ "keys": [] })),
        )
        .await;
    assert_eq!(s, 400);
    let p = "/v1/records/{dataset}/history";
    let history = |client: &str, key: &str| {
        get(
            client,
            &format!("/v1/records/assistance-enrolment/history?key={key}"),
        )
    };
    let (s, b) = c.json("get", p, history("civil-affairs", &key)).await;
    assert_eq!(
        (s, b["versions"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{b}"
    );
    assert_eq!(
        c.send("get", p, history("civil-affairs", "none")).await.0,
        404
    );
    assert_eq!(c.send("get", p, history("housing", &key)).await.0, 403);
    // axum's own rejections (a missing query parameter, a path segment
    // that is not UTF-8) come in the JSON error shape too.
    let (s, b) = c
        .json(
            "get",
            p,
            get("civil-affairs", "/v1/records/assistance-enrolment/history"),
        )
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (400, &json!("invalid_query")),
        "{b}"
    );

    // Spreadsheet ledgers.
    let p = "/v1/imports/{dataset}";
    let csv = String::from_utf8(example("student-aid.csv")).unwrap();
    let import = |client: &str, body: String, content_type: &str| {
        post(client, "/v1/imports/student-aid")
            .header("content-type", content_type)
            .body(body)
    };
    let (s, _) = c
        .send("post", p, import("education", csv.clone(), "text/csv"))
        .await;
    assert_eq!(s, 200);
    let bad = adapters::synth::with_bad_check_character(&csv);
    let (s, b) = c
        .json("post", p, import("education", bad, "text/csv"))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(
        c.send("post", p, import("housing", csv.clone(), "text/csv"))
            .await
            .0,
        403
    );
    assert_eq!(
        c.send("post", p, import("education", csv, "application/pdf"))
            .await
            .0,
        415
    );

    // Reading: one person, a batch match.
    let id = enrolments
        .iter()
        .find(|r| r["status"] == "active")
        .and_then(|r| r["members"][0]["id_number"].as_str())
        .unwrap()
        .to_owned();
    let unknown = gateway_tests::unknown_id_number();
    let p = "/v1/persons/{id_number}";
    let person = |client: &str, id: &str, purpose: Option<&str>| {
        let r = get(client, &format!("/v1/persons/{id}"));
        match purpose {
            Some(purpose) => r.header("x-purpose", purpose),
            None => r,
        }
    };
    // A department no rule grants anything and owning no dataset: 403
    // before any lookup.
    gateway_tests::register_hr(gw);
    let invalid = "441702198001010018";
    for (client, id, purpose, status) in [
        ("education", id.as_str(), Some("student-aid"), 200),
        ("education", &id, None, 400),
        ("education", &id, Some("no-such-purpose"), 400),
        ("education", invalid, Some("student-aid"), 400),
        ("hr", &id, Some("student-aid"), 403),
        ("auditor", &id, Some("student-aid"), 403),
        ("education", &unknown, Some("student-aid"), 404),
    ] {
        let (s, b) = c.json("get", p, person(client, id, purpose)).await;
        assert_eq!(s, status, "{client} {purpose:?}: {b}");
    }
    let (s, b) = c
        .json("get", p, person("education", "%FF%FE", Some("student-aid")))
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (400, &json!("invalid_path")),
        "{b}"
    );
    let p = "/v1/match";
    let matching = |client: &str| post(client, "/v1/match").header("x-purpose", "student-aid");
    let (s, body) = c
        .send(
            "post",
            p,
            matching("education").json(&json!({ "ids": [id, "12345", unknown] })),
        )
        .await;
    assert_eq!(s, 200);
    let statuses: Vec<String> = String::from_utf8_lossy(&body)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["status"].to_string())
        .collect();
    assert_eq!(statuses, [r#""match""#, r#""invalid""#, r#""no_record""#]);
    let (s, _) = c
        .send(
            "post",
            p,
            matching("education")
                .header("content-type", "application/x-ndjson")
                .body("\"a\"\n{\n"),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .send(
            "post",
            p,
            post("auditor", "/v1/match")
                .header("x-purpose", "student-aid")
                .json(&json!({ "ids": [id] })),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = c
        .send(
            "post",
            p,
            matching("education")
                .header("content-type", "text/plain")
                .body(id.clone()),
        )
        .await;
    assert_eq!(s, 415);

    // Policies: explain, simulate.
    let p = "/v1/policy/explain";
    let ask = json!({ "dataset": "assistance-enrolment", "purpose": "student-aid" });
    let (s, b) = c.json("post", p, post("education", p).json(&ask)).await;
    assert_eq!((s, &b["decision"]["allowed"]), (200, &json!(true)), "{b}");
    assert_eq!(
        c.send("post", p, post("auditor", p).json(&ask)).await.0,
        403
    );
    let (s, _) = c
        .send(
            "post",
            p,
            post("education", p).json(&json!({ "dataset": 1 })),
        )
        .await;
    assert_eq!(s, 400);
    let p = "/v1/policy/simulate";
    let mut files = serde_json::Map::new();
    for entry in std::fs::read_dir(gateway_tests::repo_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            files.insert(name, Value::String(text));
        }
    }
    // The draft takes education's enrolment rule away.
    let education = files["education.yaml"].as_str().unwrap().to_owned();
    files.insert(
        "education.yaml".into(),
        Value::String("version: 1\nrules: []\n".into()),
    );
    let sample = json!({
        "department": "education", "region": "441700",
        "dataset": "assistance-enrolment", "purpose": "student-aid",
        "record": enrolments[0],
    });
    let (s, b) = c
        .json(
            "post",
            p,
            post("admin", p).json(&json!({ "files": files, "samples": [sample] })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["changed"], 1, "{b}");
    files.insert(
        "education.yaml".into(),
        Value::String(education.replace("rules:", "rules: [")),
    );
    let (s, b) = c
        .json(
            "post",
            p,
            post("admin", p).json(&json!({ "files": files, "samples": [] })),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, _) = c
        .send("post", p, post("admin", p).json(&json!({ "files": {} })))
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .send(
            "post",
            p,
            post("education", p).json(&json!({ "files": files, "samples": [] })),
        )
        .await;
    assert_eq!(s, 403);

    // The auditor's side.
    let p = "/v1/audit/events";
    let (s, b) = c
        .json(
            "get",
            p,
            get("auditor", "/v1/audit/events?department=education&limit=5"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(b["next_cursor"].is_string(), "{b}");
    let (s, _) = c
        .send("get", p, get("auditor", "/v1/audit/events?decision=maybe"))
        .await;
    assert_eq!(s, 400);
    assert_eq!(c.send("get", p, get("education", p)).await.0, 403);
    let p = "/v1/audit/export";
    for format in ["ndjson", "csv"] {
        let (s, body) = c
            .send(
                "get",
                p,
                get(
                    "auditor",
                    &format!("{p}?format={format}&department=education"),
                ),
            )
            .await;
        assert_eq!(s, 200, "{format}");
        assert!(body.len() > 100, "{format}: {body:?}");
    }
    assert_eq!(
        c.send("get", p, get("auditor", &format!("{p}?format=xml")))
            .await
            .0,
        400
    );
    gw.state.audit.checkpoint_now().await.unwrap();
    let p = "/v1/audit/persons/{id_number}";
    let (s, report) = c
        .json("get", p, get("auditor", &format!("/v1/audit/persons/{id}")))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        c.send("get", p, get("auditor", "/v1/audit/persons/12345"))
            .await
            .0,
        400
    );
    let proven = report["accesses"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = "/v1/audit/proof/{event_id}";
    let (s, b) = c
        .json(
            "get",
            p,
            get("auditor", &format!("/v1/audit/proof/{proven}")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let first = b["checkpoint"].clone();
    let newest = gateway_tests::newest_event(gw).await;
    let (s, _) = c
        .send(
            "get",
            p,
            get("auditor", &format!("/v1/audit/proof/{newest}")),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .send(
            "get",
            p,
            get(
                "auditor",
                &format!("/v1/audit/proof/{}", uuid::Uuid::now_v7()),
            ),
        )
        .await;
    assert_eq!(s, 404);
    gw.state.audit.checkpoint_now().await.unwrap();
    let p = "/v1/audit/consistency";
    let consistency = |log: &str| {
        get(
            "auditor",
            &format!("{p}?log={log}&first={}", first["tree_size"]),
        )
    };
    let (s, b) = c
        .json("get", p, consistency(first["log_id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(c.send("get", p, consistency("no-such-log")).await.0, 404);
    let p = "/v1/audit/checkpoints";
    assert_eq!(c.send("get", p, get("auditor", p)).await.0, 200);
    let p = "/v1/audit/reports/{report}";
    for report in [
        "per-department-day",
        "denials",
        "most-accessed",
        "anomalies",
    ] {
        let (s, b) = c
            .json(
                "get",
                p,
                get("auditor", &format!("/v1/audit/reports/{report}")),
            )
            .await;
        assert_eq!(s, 200, "{report}: {b}");
    }
    let (s, _) = c
        .send("get", p, get("auditor", "/v1/audit/reports/nope"))
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .send(
            "get",
            p,
            get("auditor", "/v1/audit/reports/denials?from=yesterday"),
        )
        .await;
    assert_eq!(s, 400);
    // An empty parameter counts as absent, as in the event search.
    let (s, _) = c
        .send(
            "get",
            p,
            get("auditor", "/v1/audit/reports/denials?from=&to="),
        )
        .await;
    assert_eq!(s, 200);

    // The audit log cannot be written: readiness says so, data requests
    // get 503, and the gateway recovers once the table is back.
    gateway_tests::audit_sql(gw, "ALTER TABLE audit_events RENAME TO audit_events_away").await;
    assert_eq!(
        c.send("get", "/readyz", get("education", "/readyz"))
            .await
            .0,
        503
    );
    let (s, body) = c
        .send(
            "get",
            "/v1/persons/{id_number}",
            person("education", &id, Some("student-aid")),
        )
        .await;
    assert_eq!(s, 503);
    assert!(!String::from_utf8_lossy(&body).contains("category"));
    gateway_tests::audit_sql(gw, "ALTER TABLE audit_events_away RENAME TO audit_events").await;
    for _ in 0..100 {
        if gw.state.audit.health().is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let p = "/v1/audit/verify";
    let (s, b) = c.json("get", p, get("auditor", p)).await;
    assert_eq!((s, &b["ok"]), (200, &json!(true)), "{b}");
    // Change one stored event behind the gateway's back: verify names it.
    gateway_tests::audit_sql(
        gw,
        match &gw.db {
            TestDb::Sqlite => "DROP TRIGGER audit_events_no_update",
            TestDb::Postgres(_) => "DROP TRIGGER audit_events_append_only ON audit_events",
        },
    )
    .await;
    gateway_tests::audit_sql(
        gw,
        "UPDATE audit_events SET department = 'housing' WHERE seq = 3",
    )
    .await;
    let (s, b) = c.json("get", p, get("auditor", p)).await;
    assert_eq!((s, &b["first_problem"]["seq"]), (409, &json!(3)), "{b}");
}
