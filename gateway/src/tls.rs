//! The TLS edge: server configuration from PEM files, mandatory client
//! certificates checked against the CA bundle and CRL, hot reload, and
//! classification of refused handshakes.
//!
//! Crypto goes through one seam, [`provider`]: the process-wide rustls
//! provider (aws-lc-rs). A certified national-algorithm (SM2/SM3/SM4)
//! provider, or a TLCP terminator in front, replaces it there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::config::TlsConfig;
use crate::identity::PeerCertificate;

/// Errors loading TLS material. They name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("invalid TLS material: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client CA bundle or CRL: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The process's crypto provider: the one seam for cryptography.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Installs the process-wide provider once (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Builds the server configuration: TLS 1.3 (1.2 only if configured),
/// client certificate mandatory, ALPN h2 and http/1.1.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&cfg.client_ca)? {
        roots.add(ca)?;
    }
    let crls = match &cfg.crl {
        Some(p) => read_crls(p)?,
        None => Vec::new(),
    };
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls);
    if cfg.enforce_crl_expiry {
        builder = builder.enforce_revocation_expiration();
    }
    let verifier = Arc::new(FingerprintingVerifier {
        inner: builder.build()?,
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let certs = read_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|source| TlsError::Read {
        path: cfg.key.clone(),
        source,
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The current server configuration, swapped atomically on reload: new
/// connections use the new material, open ones finish with the old.
pub struct TlsReloader {
    cfg: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamp: RwLock<Vec<Option<SystemTime>>>,
    extra_watch: Vec<PathBuf>,
}

impl TlsReloader {
    /// Loads the material once. `extra_watch` lists more files whose change
    /// should count as a change (the client registry).
    pub fn new(cfg: TlsConfig, extra_watch: Vec<PathBuf>) -> Result<Self, TlsError> {
        let config = server_config(&cfg)?;
        let this = TlsReloader {
            current: RwLock::new(Arc::new(config)),
            stamp: RwLock::new(Vec::new()),
            cfg,
            extra_watch,
        };
        *this.stamp.write().unwrap_or_else(|e| e.into_inner()) = this.mtimes();
        Ok(this)
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads from disk; on error the previous material stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cfg)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = self.mtimes();
        Ok(())
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        [&self.cfg.cert, &self.cfg.key, &self.cfg.client_ca]
            .into_iter()
            .chain(self.cfg.crl.as_ref())
            .chain(self.extra_watch.iter())
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Whether any watched file changed since the last load.
    pub fn changed(&self) -> bool {
        *self.stamp.read().unwrap_or_else(|e| e.into_inner()) != self.mtimes()
    }
}

/// Reads the verified peer certificate of an accepted connection.
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<PeerCertificate> {
    let der = conn.peer_certificates()?.first()?;
    describe_certificate(der)
}

/// Fingerprint, serial and subject CN of a DER certificate.
pub fn describe_certificate(der: &CertificateDer<'_>) -> Option<PeerCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    Some(PeerCertificate {
        fingerprint: fingerprint(der),
        serial: cert.raw_serial_as_string().replace(':', ""),
        common_name,
    })
}

/// SHA-256 fingerprint of a DER certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// Why a handshake was refused, for metrics and the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// Stable reason code: `no_certificate`, `unknown_ca`, `expired`,
    /// `not_yet_valid`, `revoked`, `crl_expired`, `invalid_certificate`,
    /// `timeout`, `protocol`, `closed`.
    pub reason: &'static str,
    /// Fingerprint of the certificate the client presented, if any.
    pub fingerprint: Option<String>,
}

/// The error our verifier wraps around the real one, carrying the
/// fingerprint of the refused certificate.
#[derive(Debug)]
struct Refused {
    fingerprint: String,
    inner: rustls::Error,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// Classifies the error of a failed `accept`.
pub fn classify_handshake_error(e: &std::io::Error) -> HandshakeFailure {
    let Some(err) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return HandshakeFailure {
            reason: if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "closed"
            } else {
                "protocol"
            },
            fingerprint: None,
        };
    };
    let (err, fingerprint) = match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<Refused>() {
                Some(r) => (&r.inner, Some(r.fingerprint.clone())),
                None => (err, None),
            }
        }
        _ => (err, None),
    };
    let reason = match err {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            _ => "invalid_certificate",
        },
        _ => "protocol",
    };
    HandshakeFailure {
        reason,
        fingerprint,
    }
}

/// Delegates to the WebPKI verifier and, on refusal, attaches the presented
/// certificate's fingerprint to the error so the audit log can name it.
#[derive(Debug)]
struct FingerprintingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for FingerprintingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|inner| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    Refused {
                        fingerprint: fingerprint(end_entity),
                        inner,
                    },
                ))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
