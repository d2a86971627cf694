//! The audit log end to end: one durable event per request, searchable by
//! auditors, verifiable, never holding a clear ID number.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use gateway_tests::{TestGateway, backends};
use serde_json::{Value, json};

async fn events(gw: &TestGateway, query: &str) -> Vec<Value> {
    let (status, b) = get_json(gw, &format!("/v1/audit/events?{query}")).await;
    assert_eq!(status, 200, "{b}");
    b["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn each_access_is_one_event_and_the_log_verifies() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let (_, id) = gateway_tests::publish_enrolments(&gw).await;
        let r = gw
            .client("education")
            .get(gw.url(&format!("/v1/persons/{id}")))
            .header("x-purpose", "student-aid")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A denied one too.
        let r = gw
            .client("education")
            .get(gw.url("/v1/admin/clients"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        // The person query: exactly one event, found by the subject's ID number.
        let found = events(&gw, &format!("subject={id}")).await;
        assert_eq!(found.len(), 1, "{}: {found:?}", db.name());
        let e = &found[0];
        let text = e.to_string();
        assert_eq!(e["department"], "education", "{e}");
        assert_eq!(e["purpose"], "student-aid", "{e}");
        assert_eq!(e["decision"], "allow", "{e}");
        assert!(
            text.contains("edu-enrolment-student-aid"),
            "rule ids recorded: {e}"
        );
        // The legal basis of the rule that allowed it (policies/education.yaml).
        assert_eq!(
            e["legal_basis"], "国办发〔2023〕39号; 学生资助资金管理办法 (家庭经济困难学生认定)",
            "{e}"
        );
        assert!(!text.contains(&id), "clear ID number in an event: {e}");
        let denied = events(&gw, "decision=deny&department=education").await;
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert_eq!(denied[0]["status"], 403);

        // Verification succeeds, and the auditor's own queries were audited.
        let r = gw
            .client("auditor")
            .get(gw.url("/v1/audit/verify"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let report: Value = r.json().await.unwrap();
        assert_eq!(report["ok"], true, "{report}");
        let mine = events(&gw, "client=auditor").await;
        assert!(mine.len() >= 3, "auditor queries are audited: {mine:?}");
        // Only auditors read the log.
        for c in ["admin", "education"] {
            let r = gw
                .client(c)
                .get(gw.url("/v1/audit/events"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{c}");
        }
        gw.stop().await;
    }
}

/// A lookup that finds nothing visible, or that no rule allows, is still
/// an access to the person it names: its event carries the person's HMAC
/// (so the auditor's subject search and the person's report show it).
/// A 404 after the rules allowed the lookup is an allowed access that
/// disclosed nothing; refusals (4xx) are denials; only our own failures
/// (5xx) are errors.
#[tokio::test]
async fn lookups_that_find_nothing_or_are_refused_name_the_person() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let (_, id) = gateway_tests::publish_enrolments(&gw).await;
        let unknown = gateway_tests::unknown_id_number();
        gateway_tests::register_hr(&gw);
        for (client, who, purpose, status) in [
            ("education", unknown.as_str(), Some("student-aid"), 404),
            ("hr", id.as_str(), Some("student-aid"), 403),
            ("education", id.as_str(), None, 400),
        ] {
            let mut r = gw.client(client).get(gw.url(&format!("/v1/persons/{who}")));
            if let Some(p) = purpose {
                r = r.header("x-purpose", p);
            }
            assert_eq!(r.send().await.unwrap().status(), status, "{client}");
        }

        let found = events(&gw, &format!("subject={unknown}")).await;
        assert_eq!(found.len(), 1, "{}: {found:?}", db.name());
        let e = &found[0];
        assert_eq!(
            (&e["status"], &e["decision"], &e["records_disclosed"]),
            (&json!(404), &json!("allow"), &json!(0)),
            "{e}"
        );
        assert_eq!(e["fields"], json!([]), "nothing was disclosed: {e}");
        assert!(
            e["rule_ids"]
                .as_array()
                .unwrap()
                .contains(&json!("edu-enrolment-student-aid")),
            "the rules that allowed the lookup: {e}"
        );
        let found = events(&gw, &format!("subject={id}&client=hr")).await;
        assert_eq!(found.len(), 1, "{}: {found:?}", db.name());
        assert_eq!(
            (&found[0]["status"], &found[0]["decision"]),
            (&json!(403), &json!("deny")),
            "{}",
            found[0]
        );
        let invalid = events(&gw, "department=education&status=400").await;
        assert_eq!(invalid.len(), 1, "{invalid:?}");
        assert_eq!(invalid[0]["decision"], "deny", "{}", invalid[0]);
        assert_eq!(events(&gw, "decision=error").await, Vec::<Value>::new());
        // The person's own report shows the refused attempt.
        let (s, report) = get_json(&gw, &format!("/v1/audit/persons/{id}")).await;
        assert_eq!(s, 200, "{report}");
        let hr: Vec<&Value> = report["accesses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["client_id"] == "hr")
            .collect();
        assert_eq!(hr.len(), 1, "{report}");
        assert_eq!(hr[0]["decision"], "deny");
        gw.stop().await;
    }
}

/// A request cancelled at its deadline (`request_timeout_secs`) gets 503
/// and, like every answer, its audit event: here a publish whose body
/// stalls after its first bytes.
#[tokio::test]
async fn a_request_cancelled_at_its_deadline_is_audited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gw = TestGateway::start_with(
        &gateway_tests::TestDb::Sqlite,
        gateway_tests::Options {
            extra_toml: "[limits]\nrequest_timeout_secs = 1\n".into(),
            ..Default::default()
        },
    )
    .await;
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(gw.tls_config(Some("civil-affairs"))));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        b"POST /v1/records/assistance-enrolment HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut head))
        .await
        .expect("an answer before the body is complete")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-audit-event:"),
        "the answer names its event: {head}"
    );
    let found = events(&gw, "status=503&department=civil-affairs").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            &found[0]["route"],
            &found[0]["error_class"],
            &found[0]["decision"]
        ),
        (
            &json!("/v1/records/{dataset}"),
            &json!("unavailable"),
            &json!("error")
        ),
        "{}",
        found[0]
    );
    gw.stop().await;
}

#[tokio::test]
async fn refused_handshakes_are_audited() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let r = gateway_tests::raw_request(gw.addr, gw.tls_config(None), "/healthz").await;
    assert!(r.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let found = events(&gw, "kind=tls_refused").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["reason"], "no_certificate", "{}", found[0]);
    gw.stop().await;
}

#[tokio::test]
async fn export_streams_ndjson_and_csv() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    for _ in 0..3 {
        gw.client("housing")
            .get(gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap();
    }
    let nd = gw
        .client("auditor")
        .get(gw.url("/v1/audit/export?format=ndjson&department=housing"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(nd.lines().count(), 3, "{nd}");
    let csv = gw
        .client("auditor")
        .get(gw.url("/v1/audit/export?format=csv&department=housing"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 4, "header + 3 rows: {csv}");
    let r = gw
        .client("auditor")
        .get(gw.url("/v1/audit/reports/per-department-day"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = json!(null);
    gw.stop().await;
}

/// The per-person report over the API: a person query and a batch match
/// that named the person, each with a proof that verifies against a signed
/// checkpoint. The match names 121 persons, so its event commits to them by
/// a root and its proof carries the person's path (7 hashes), not the other
/// 120 HMACs; the report never holds the clear ID number.
#[tokio::test]
async fn the_per_person_report_proves_queries_and_matches() {
    use adapters::domain::IdNumber;
    use gateway::audit::proofs::SubjectReport;

    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let (_, id) = gateway_tests::publish_enrolments(&gw).await;
        let r = gw
            .client("education")
            .get(gw.url(&format!("/v1/persons/{id}")))
            .header("x-purpose", "student-aid")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let birth = time::macros::date!(2010 - 06 - 01);
        let mut ids: Vec<String> = (0..120)
            .map(|i| {
                IdNumber::from_parts("441702", birth, i)
                    .unwrap()
                    .as_str()
                    .to_owned()
            })
            .collect();
        ids.insert(60, id.clone());
        let r = gw
            .client("education")
            .post(gw.url("/v1/match"))
            .header("x-purpose", "student-aid")
            .json(&json!({ "ids": ids }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
        gw.state.audit.checkpoint_now().await.unwrap();

        let r = gw
            .client("auditor")
            .get(gw.url(&format!("/v1/audit/persons/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", db.name());
        let text = r.text().await.unwrap();
        assert!(!text.contains(&id), "clear ID number in the report");
        let report: SubjectReport = serde_json::from_str(&text).unwrap();
        let key = gw.state.audit.public_key_hex().to_owned();
        assert_eq!(report.verify(&[key]), Ok(2), "{}: {text}", db.name());
        let routes: Vec<(&str, Option<usize>)> = report
            .accesses
            .iter()
            .map(|a| {
                let p = a.proof.as_ref().unwrap();
                (a.action.as_str(), p.subject.as_ref().map(|s| s.path.len()))
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("GET /v1/persons/{id_number}", None),
                ("POST /v1/match", Some(7))
            ],
            "{}",
            db.name()
        );
        // The whole proof (event bytes, paths, the signed checkpoint) is
        // smaller than the match's other 120 subjects' HMACs alone.
        let proof = serde_json::to_string(&report.accesses[1].proof).unwrap();
        assert!(proof.len() < 120 * 67, "{} bytes", proof.len());

        // What the auditor gets is what openapi.yaml describes: the report,
        // a proof, a consistency proof, the checkpoint export, verify, and
        // the errors of the proof route.
        let api = gateway_tests::openapi();
        let doc = |path: &str, status: u16, body: &Value| {
            gateway_tests::assert_documented(&api, "get", path, status, body);
        };
        doc(
            "/v1/audit/persons/{id_number}",
            200,
            &serde_json::from_str(&text).unwrap(),
        );
        let first = report.accesses[1]
            .proof
            .as_ref()
            .unwrap()
            .checkpoint
            .clone();
        let (s, b) = get_json(
            &gw,
            &format!("/v1/audit/proof/{}", report.accesses[1].event_id),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        doc("/v1/audit/proof/{event_id}", 200, &b);
        let newest = gateway_tests::newest_event(&gw).await;
        let (s, b) = get_json(&gw, &format!("/v1/audit/proof/{newest}")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("not_checkpointed")),
            "{b}"
        );
        doc("/v1/audit/proof/{event_id}", 400, &b);
        let (s, b) = get_json(&gw, &format!("/v1/audit/proof/{}", uuid::Uuid::now_v7())).await;
        assert_eq!(s, 404, "{b}");
        doc("/v1/audit/proof/{event_id}", 404, &b);
        gw.state.audit.checkpoint_now().await.unwrap();
        let (s, b) = get_json(
            &gw,
            &format!(
                "/v1/audit/consistency?log={}&first={}",
                first.log_id, first.tree_size
            ),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        doc("/v1/audit/consistency", 200, &b);
        for path in ["/v1/audit/checkpoints", "/v1/audit/verify"] {
            let (s, b) = get_json(&gw, path).await;
            assert_eq!(s, 200, "{path}: {b}");
            doc(path, 200, &b);
        }
        gw.stop().await;
    }
}

/// An auditor's GET: status and JSON body.
async fn get_json(gw: &TestGateway, path: &str) -> (u16, Value) {
    let r = gw.client("auditor").get(gw.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}
