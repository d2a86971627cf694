//! Fail closed: when the audit log cannot be written, data requests get
//! 503 and disclose nothing; the gateway recovers by itself.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::time::Duration;

use gateway_tests::{TestGateway, backends};

#[tokio::test]
async fn unwritable_audit_store_means_503_and_no_data_then_recovery() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let (_, id) = gateway_tests::publish_enrolments(&gw).await;
        let ask = || async {
            gw.client("education")
                .get(gw.url(&format!("/v1/persons/{id}")))
                .header("x-purpose", "student-aid")
                .send()
                .await
                .unwrap()
        };
        assert_eq!(ask().await.status(), 200);

        // Take the audit table away.
        gateway_tests::audit_sql(&gw, "ALTER TABLE audit_events RENAME TO audit_events_away").await;
        let r = ask().await;
        assert_eq!(r.status(), 503, "{}", db.name());
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("category"),
            "data disclosed while the audit log is down: {body}"
        );
        // A batch match computes its lines while its event is being
        // committed: none of them may leave when the commit fails.
        let r = gw
            .client("education")
            .post(gw.url("/v1/match"))
            .header("x-purpose", "student-aid")
            .json(&serde_json::json!({"ids": [id, id]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "match, {}", db.name());
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("category") && !body.contains("\"index\""),
            "match lines disclosed while the audit log is down: {body}"
        );
        let ready = gw
            .client("education")
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503, "readiness reports the audit state");

        // Give it back: the writer recovers without a restart.
        gateway_tests::audit_sql(&gw, "ALTER TABLE audit_events_away RENAME TO audit_events").await;
        let mut recovered = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if gw.state.audit.health().is_ready() {
                recovered = true;
                break;
            }
        }
        assert!(recovered, "{}: the audit writer did not recover", db.name());
        assert_eq!(ask().await.status(), 200);
        gw.stop().await;
    }
}
