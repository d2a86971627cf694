//! Helpers for tests that run the `gateway` binary as a process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a subset; a panic is the failure report

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn start(config: &Path, listen: SocketAddr, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("GATEWAY_LISTEN", listen.to_string())
        .env("GATEWAY_RATE_LIMIT__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start gateway")
}

pub fn client(pki: &Path, name: &str) -> reqwest::Client {
    gateway::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_file_iter(pki.join(format!("{name}.crt")))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key"))).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn wait_ready(c: &reqwest::Client, addr: SocketAddr, child: &mut Child, log: &Path) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "gateway exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let url = format!("https://localhost:{}/readyz", addr.port());
        if let Ok(r) = c.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A demo folder (PKI, configuration, SQLite database) on a free port, for
/// running the `gateway` binary against.
pub struct Demo {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub config: std::path::PathBuf,
    pub pki: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl Demo {
    /// Prepares the folder as `gateway demo` would.
    pub fn prepare() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let listen = free_addr();
        gateway::demo::prepare(dir.path(), listen, repo()).expect("prepare");
        Demo {
            config: dir.path().join("gateway.toml"),
            pki: dir.path().join("pki"),
            log: dir.path().join("gateway.log"),
            dir,
            listen,
        }
    }

    /// Starts `gateway serve` and waits until it is ready for `c`.
    pub async fn start_ready(&self, c: &reqwest::Client) -> Child {
        let mut child = start(&self.config, self.listen, &self.log);
        wait_ready(c, self.listen, &mut child, &self.log).await;
        child
    }
}
