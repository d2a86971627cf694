//! Scenario 1's server: axum behind rustls with mandatory client
//! certificates, built from the gateway's own crates (tokio, hyper-util's
//! connection builder, the same crypto provider and TLS versions), with no
//! gateway logic. It answers every request with a small JSON document
//! naming the path. A second, plain-HTTP listener is nginx's upstream.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

async fn echo(uri: Uri) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "echo": uri.path() }))
}

fn router() -> Router {
    Router::new().fallback(echo)
}

/// rustls server configuration: the gateway's certificate and CA, TLS 1.3,
/// client certificate required.
pub fn server_config(pki: &Path) -> anyhow::Result<rustls::ServerConfig> {
    gateway::tls::install_provider();
    let provider = gateway::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
        roots.add(c?)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let certs =
        CertificateDer::pem_file_iter(pki.join("server.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Runs the echo server until the process is killed.
pub async fn serve(pki: &Path, tls_addr: SocketAddr, plain_addr: SocketAddr) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(pki)?));
    let tls_listener = tokio::net::TcpListener::bind(tls_addr)
        .await
        .with_context(|| format!("binding {tls_addr}"))?;
    let plain_listener = tokio::net::TcpListener::bind(plain_addr)
        .await
        .with_context(|| format!("binding {plain_addr}"))?;
    tokio::spawn(async move {
        let _ = axum::serve(plain_listener, router()).await;
    });
    loop {
        let (tcp, _) = tls_listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(router());
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
