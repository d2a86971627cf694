//! The mutual-TLS edge, end to end: handshakes, identities, roles, limits.

#![allow(clippy::unwrap_used)] // tests unwrap: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use gateway::identity::Role;
use gateway::pki::{self, ClientSpec};
use gateway::ratelimit::{FakeClock, RateLimits};
use gateway_tests::{Options, TestGateway, backends, client_tls, raw_request};
use serde_json::Value;

fn failures(gw: &TestGateway, reason: &str) -> u64 {
    gw.state
        .metrics
        .handshake_failures
        .with_label_values(&[reason])
        .get()
}

#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let r = raw_request(gw.addr, gw.tls_config(None), "/healthz").await;
        assert!(
            r.is_err(),
            "{}: got a response without a certificate: {r:?}",
            db.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(failures(&gw, "no_certificate"), 1, "{}", db.name());
        gw.stop().await;
    }
}

#[tokio::test]
async fn certificate_from_a_foreign_ca_fails() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let foreign = tempfile::tempdir().unwrap();
    pki::init(foreign.path()).unwrap();
    gateway_tests::issue(
        foreign.path(),
        "education",
        "education",
        Role::System,
        "441700",
    );
    // Trust the real server CA, but present a certificate from the foreign one.
    let tls = client_tls(&gw.pki, Some((foreign.path(), "education")));
    let r = raw_request(gw.addr, tls, "/healthz").await;
    assert!(r.is_err(), "foreign CA accepted: {r:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(failures(&gw, "unknown_ca"), 1);
    gw.stop().await;
}

fn issue_with_validity(gw: &TestGateway, name: &str, from_days: i64, to_days: i64) {
    let now = time::OffsetDateTime::now_utc();
    pki::issue(
        &gw.pki,
        &ClientSpec {
            name: name.into(),
            department: gateway::identity::DepartmentId::parse("education").unwrap(),
            role: Role::System,
            region: adapters::domain::RegionCode::parse("441700").unwrap(),
            not_before: Some(now + time::Duration::days(from_days)),
            not_after: Some(now + time::Duration::days(to_days)),
        },
    )
    .unwrap();
    gw.state.reload();
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_fail() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    issue_with_validity(&gw, "expired", -30, -1);
    issue_with_validity(&gw, "future", 1, 30);
    let r = raw_request(gw.addr, gw.tls_config(Some("expired")), "/healthz").await;
    assert!(r.is_err(), "expired accepted: {r:?}");
    let r = raw_request(gw.addr, gw.tls_config(Some("future")), "/healthz").await;
    assert!(r.is_err(), "not-yet-valid accepted: {r:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(failures(&gw, "expired"), 1);
    assert_eq!(failures(&gw, "not_yet_valid"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn revoked_certificate_fails_after_crl_reload_without_restart() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let ok = raw_request(gw.addr, gw.tls_config(Some("housing")), "/healthz")
        .await
        .expect("valid certificate");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    pki::revoke(&gw.pki, "housing").unwrap();
    // The file watcher (reload_interval_secs = 1) picks the new CRL up.
    let mut refused = false;
    for _ in 0..50 {
        if raw_request(gw.addr, gw.tls_config(Some("housing")), "/healthz")
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "revoked certificate still accepted after the CRL changed"
    );
    assert!(failures(&gw, "revoked") >= 1);
    // Others are unaffected, with no restart.
    let ok = raw_request(gw.addr, gw.tls_config(Some("education")), "/healthz").await;
    assert!(ok.is_ok_and(|r| r.starts_with("HTTP/1.1 200")));
    gw.stop().await;
}

#[tokio::test]
async fn chain_valid_but_unregistered_gets_403() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let registry = gw.pki.join("clients.toml");
        let before = std::fs::read_to_string(&registry).unwrap();
        gw.issue("stranger", "education", Role::System, "441700");
        std::fs::write(&registry, before).unwrap();
        assert!(gw.state.reload().is_empty());
        let resp = gw
            .client("stranger")
            .get(gw.url("/v1/whoami"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{}", db.name());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unknown_client");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("registered")
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn each_demo_client_sees_its_own_identity() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        for (name, dept, role) in pki::demo_clients() {
            let resp = gw
                .client(name)
                .get(gw.url("/v1/whoami"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{name} on {}", db.name());
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["client_id"], name);
            assert_eq!(body["department"], dept);
            assert_eq!(body["role"], role.as_str());
            assert_eq!(body["region"], "441700");
            assert_eq!(body["certificate"]["common_name"], name);
            assert_eq!(
                body["certificate"]["fingerprint"].as_str().unwrap().len(),
                64
            );
        }
        gw.stop().await;
    }
}

#[tokio::test]
async fn an_admin_route_refuses_system_and_auditor_clients() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let resp = gw
        .client("admin")
        .get(gw.url("/v1/admin/clients"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["clients"].as_array().unwrap().len(), 7);
    for other in ["education", "auditor"] {
        let resp = gw
            .client(other)
            .get(gw.url("/v1/admin/clients"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{other}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    gw.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let gw = TestGateway::start_with(
        &gateway_tests::TestDb::Sqlite,
        Options {
            extra_toml: "[limits]\nmax_body_bytes = 1024\n".into(),
            ..Options::default()
        },
    )
    .await;
    let resp = gw
        .client("civil-affairs")
        .post(gw.url("/v1/whoami"))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    gw.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let clock = FakeClock::default();
    let cfg: gateway::config::RateLimitConfig = toml::from_str(
        "enabled = true\ndefault = { per_second = 1000, burst = 1000 }\n\
         [departments.education]\nper_second = 1\nburst = 2\n",
    )
    .unwrap();
    let gw = TestGateway::start_with(
        &gateway_tests::TestDb::Sqlite,
        Options {
            rate_limits: Some(Arc::new(RateLimits::with_clock(&cfg, clock.clone()))),
            ..Options::default()
        },
    )
    .await;
    let edu = gw.client("education");
    for _ in 0..2 {
        assert_eq!(
            edu.get(gw.url("/v1/whoami")).send().await.unwrap().status(),
            200
        );
    }
    let resp = edu.get(gw.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Another department is not affected.
    let other = gw
        .client("housing")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        edu.get(gw.url("/v1/whoami")).send().await.unwrap().status(),
        200
    );
    let m = gw
        .state
        .metrics
        .rate_limited
        .with_label_values(&["education"])
        .get();
    assert_eq!(m, 1);
    gw.stop().await;
}

#[tokio::test]
async fn errors_have_the_stable_json_shape() {
    let gw = TestGateway::start(&gateway_tests::TestDb::Sqlite).await;
    let resp = gw
        .client("education")
        .get(gw.url("/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());
    // A route that exists, with a method it does not answer: 405 in the
    // same shape, the Allow header naming the methods it does.
    let resp = gw
        .client("education")
        .delete(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET,HEAD");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    gw.stop().await;
}

#[tokio::test]
async fn readiness_and_metrics_answer_registered_clients() {
    for db in backends() {
        let gw = TestGateway::start(&db).await;
        let c = gw.client("auditor");
        let r = c.get(gw.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", db.name());
        let r = c.get(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = c
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("gateway_requests_total"), "{text}");
        gw.stop().await;
    }
}

/// HTTP/1.1 responses announce how long an idle keep-alive connection is
/// kept (`Keep-Alive: timeout=N`), and the announcement holds: a request on
/// the same connection within N seconds is answered; past the header read
/// timeout the gateway has closed it. HTTP/2 responses carry no such
/// (connection-specific) header.
#[tokio::test]
async fn keep_alive_is_announced_and_held() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    let gw = TestGateway::start_with(
        &gateway_tests::TestDb::Sqlite,
        Options {
            extra_toml: "[limits]\nheader_read_timeout_ms = 3000\n".into(),
            ..Options::default()
        },
    )
    .await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(gw.tls_config(Some("housing"))));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let whoami = || {
        hyper::Request::get("/v1/whoami")
            .header("host", "localhost")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let r = sender.send_request(whoami()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["keep-alive"], "timeout=2");
    r.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = sender.send_request(whoami()).await.unwrap();
    assert_eq!(r.status(), 200, "reused within the announced time");
    r.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        conn.is_finished(),
        "the gateway closes a connection idle past its header read timeout"
    );

    let mut h2 = gw.tls_config(Some("housing"));
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let r = gateway_tests::http_client(h2)
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    assert!(!r.headers().contains_key("keep-alive"), "{:?}", r.headers());
    gw.stop().await;
}
