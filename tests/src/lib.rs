//! Test harness: a real gateway on port 0 with a throwaway CA, the seven
//! demo clients, and a fresh database per test — SQLite always, PostgreSQL
//! too when `GATEWAY_TEST_DATABASE_URL` is set (each test gets its own
//! database, dropped afterwards).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway::app::AppState;
use gateway::config::Config;
use gateway::identity::{DepartmentId, Role};
use gateway::pki::{self, ClientSpec, PkiDir};
use gateway::ratelimit::CheckRate;
use gateway::startup::Application;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

mod openapi;
pub use openapi::{Conformance, assert_documented, openapi};

/// Which database a test gateway uses.
#[derive(Clone, Debug)]
pub enum TestDb {
    Sqlite,
    /// The server URL whose `test` database we may create databases from.
    Postgres(String),
}

impl TestDb {
    /// A short name for assertion messages.
    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite => "sqlite",
            TestDb::Postgres(_) => "postgres",
        }
    }
}

/// SQLite, plus PostgreSQL when `GATEWAY_TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<TestDb> {
    let mut v = vec![TestDb::Sqlite];
    if let Ok(url) = std::env::var("GATEWAY_TEST_DATABASE_URL")
        && !url.is_empty()
    {
        v.push(TestDb::Postgres(url));
    }
    v
}

/// The repository root (schemas/, policies/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Creates a fresh PostgreSQL database and returns its URL.
pub async fn fresh_postgres(server_url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!("gw_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    Ok((database_url(server_url, &name), name))
}

/// `server_url` with its database name replaced by `name` (query kept).
pub fn database_url(server_url: &str, name: &str) -> String {
    let (path, query) = match server_url.split_once('?') {
        Some((a, b)) => (a, format!("?{b}")),
        None => (server_url, String::new()),
    };
    let host_start = path.find("://").map_or(0, |i| i + 3);
    let base = match path[host_start..].rfind('/') {
        Some(i) => &path[..host_start + i],
        None => path,
    };
    format!("{base}/{name}{query}")
}

/// Drops a database made by [`fresh_postgres`].
pub async fn drop_postgres(server_url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(server_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The bytes of one of the demo's example files (`<dataset>.canonical.json`,
/// `<dataset>.native.json`, `<dataset>.csv`), synthetic and deterministic.
pub fn example(name: &str) -> Vec<u8> {
    adapters::synth::example_files(7)
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no example file {name}"))
        .contents
}

/// The canonical example records of a dataset.
pub fn example_records(dataset: &str) -> Vec<serde_json::Value> {
    serde_json::from_slice(&example(&format!("{dataset}.canonical.json")))
        .expect("example files are JSON arrays")
}

/// A running gateway for one test.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub state: AppState,
    pub db: TestDb,
    pub config_path: PathBuf,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pg: Option<(String, String)>,
}

/// Options for [`TestGateway::start_with`].
#[derive(Default)]
pub struct Options {
    /// TOML appended to the generated configuration.
    pub extra_toml: String,
    /// A rate limiter to use instead of the configured one.
    pub rate_limits: Option<Arc<dyn CheckRate>>,
}

impl TestGateway {
    /// A gateway with the default test configuration.
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, Options::default()).await
    }

    /// A gateway with extra configuration.
    pub async fn start_with(db: &TestDb, options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir).expect("pki init");
        for (name, dept, role) in pki::demo_clients() {
            issue(&pki_dir, name, dept, role, "441700");
        }
        let (db_url, pg) = match db {
            TestDb::Sqlite => (
                format!("sqlite:{}", dir.path().join("gateway.db").display()),
                None,
            ),
            TestDb::Postgres(server) => {
                let (url, name) = fresh_postgres(server).await.expect("create PG database");
                (url.clone(), Some((server.clone(), name)))
            }
        };
        let repo = repo_root();
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = {db}\nschemas_dir = {schemas}\npolicies_dir = {policies}\n\
             [tls]\ncert = {cert}\nkey = {key}\nclient_ca = {ca}\ncrl = {crl}\nreload_interval_secs = 1\n\
             [clients]\nfile = {clients}\n\
             [audit]\nsigning_key = {sign}\npseudonym_key = {pseudo}\n\
             [audit.subject_keys]\n1 = {subj}\n{extra}\n",
            db = format_args!("{db_url:?}"),
            schemas = q(&repo.join("schemas")),
            policies = q(&repo.join("policies")),
            cert = q(&pki_dir.join("server.crt")),
            key = q(&pki_dir.join("server.key")),
            ca = q(&pki_dir.join("ca.crt")),
            crl = q(&pki_dir.join("crl.pem")),
            clients = q(&pki_dir.join("clients.toml")),
            sign = q(&dir.path().join("keys/audit-signing.key")),
            pseudo = q(&dir.path().join("keys/pseudonym.key")),
            subj = q(&dir.path().join("keys/subject-hmac-1.key")),
            extra = options.extra_toml,
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, text).expect("write config");
        let config = Config::load_with_env(&config_path, std::iter::empty())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let app = Application::build_with(config, options.rate_limits)
            .await
            .expect("build gateway");
        let addr = app.local_addr();
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        TestGateway {
            addr,
            pki: pki_dir,
            dir,
            state,
            db: db.clone(),
            config_path,
            shutdown,
            task: Some(task),
            pg,
        }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A rustls client configuration trusting the test CA, presenting
    /// `client`'s certificate (none when `None`).
    pub fn tls_config(&self, client: Option<&str>) -> rustls::ClientConfig {
        client_tls_config(&self.pki, client)
    }

    /// An HTTP client presenting `client`'s certificate.
    pub fn client(&self, client: &str) -> reqwest::Client {
        http_client(self.tls_config(Some(client)))
    }

    /// Issues another client certificate from the test CA (registered).
    pub fn issue(&self, name: &str, dept: &str, role: Role, region: &str) {
        issue(&self.pki, name, dept, role, region);
    }

    /// Stops the gateway and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some((server, name)) = self.pg.take() {
            drop_postgres(&server, &name).await;
        }
    }
}

/// Issues a client certificate in a PKI folder and registers it.
pub fn issue(pki_dir: &Path, name: &str, dept: &str, role: Role, region: &str) {
    pki::issue(
        pki_dir,
        &ClientSpec {
            name: name.to_owned(),
            department: DepartmentId::parse(dept).expect("department"),
            role,
            region: adapters::domain::RegionCode::parse(region).expect("region"),
            not_before: None,
            not_after: None,
        },
    )
    .expect("issue client certificate");
}

/// A rustls client configuration for a PKI folder.
pub fn client_tls_config(pki_dir: &Path, client: Option<&str>) -> rustls::ClientConfig {
    client_tls(pki_dir, client.map(|c| (pki_dir, c)))
}

/// A rustls client configuration trusting the CA of `trust_pki` and
/// presenting the certificate `name` from the PKI folder `identity.0`.
pub fn client_tls(trust_pki: &Path, identity: Option<(&Path, &str)>) -> rustls::ClientConfig {
    gateway::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(PkiDir(trust_pki.to_owned()).ca_cert()).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match identity {
        Some((pki_dir, name)) => {
            let p = PkiDir(pki_dir.to_owned());
            let certs: Vec<_> = CertificateDer::pem_file_iter(p.client_cert(name))
                .expect("client cert")
                .map(|c| c.expect("cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(p.client_key(name)).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    }
}

/// A reqwest client over a given rustls configuration.
pub fn http_client(tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("http client")
}

/// Connects and sends one HTTP/1.1 request over raw TLS; `Err` when the
/// server refused the handshake (in TLS 1.3 the refusal of a client
/// certificate arrives as an alert on the first read).
pub async fn raw_request(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
    path: &str,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = connector.connect(name, tcp).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    if out.is_empty() {
        return Err(std::io::Error::other(
            "connection closed without a response",
        ));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Publishes `records` to the enrolment roster as civil affairs (its
/// owner); panics with the answer unless it is 200.
pub async fn publish_enrolment_records(gw: &TestGateway, records: &[serde_json::Value]) {
    let r = gw
        .client("civil-affairs")
        .post(gw.url("/v1/records/assistance-enrolment"))
        .json(records)
        .send()
        .await
        .expect("publish");
    let status = r.status();
    assert_eq!(
        status,
        200,
        "publishing enrolments: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Publishes the example enrolments as civil affairs (their owner); returns
/// them and the ID number of an active enrolment's first member.
pub async fn publish_enrolments(gw: &TestGateway) -> (Vec<serde_json::Value>, String) {
    let records = example_records("assistance-enrolment");
    publish_enrolment_records(gw, &records).await;
    let id = records
        .iter()
        .find(|r| r["status"] == "active")
        .and_then(|r| r["members"][0]["id_number"].as_str())
        .expect("an active enrolment among the examples")
        .to_owned();
    (records, id)
}

/// Registers and loads `hr` (department human-resources), a system client
/// whose department no rule grants anything and that owns no dataset.
pub fn register_hr(gw: &TestGateway) {
    gw.issue("hr", "human-resources", Role::System, "441700");
    gw.state.reload();
}

/// A valid ID number no example record names.
pub fn unknown_id_number() -> String {
    adapters::domain::IdNumber::from_parts("441702", time::macros::date!(1990 - 01 - 01), 7)
        .expect("a valid ID number")
        .as_str()
        .to_owned()
}

/// Makes a request (housing's whoami) and returns the id of its audit
/// event: one newer than any checkpoint so far.
pub async fn newest_event(gw: &TestGateway) -> String {
    let r = gw
        .client("housing")
        .get(gw.url("/v1/whoami"))
        .send()
        .await
        .expect("whoami");
    r.headers()["x-audit-event"]
        .to_str()
        .expect("an event id")
        .to_owned()
}

/// Runs `sql` on the gateway's audit database, behind its back (to break
/// or tamper with the log in a test).
pub async fn audit_sql(gw: &TestGateway, sql: &'static str) {
    match &gw.state.audit_db {
        gateway::storage::Database::Sqlite(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.expect("audit SQL");
        }
        gateway::storage::Database::Postgres(pool) => {
            sqlx::raw_sql(sql).execute(pool).await.expect("audit SQL");
        }
    }
}
