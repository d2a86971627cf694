//! A development PKI: a CA, a server certificate, client certificates that
//! are registered in the client registry, and a CRL.
//!
//! Files in the PKI folder (all PEM): `ca.crt`, `ca.key`, `server.crt`,
//! `server.key`, `<name>.crt`, `<name>.key`, `crl.pem`, plus `clients.toml`
//! (the registry) and `revoked.toml` (what the CRL lists). For production,
//! use the department CA of your government PKI; the gateway only needs the
//! CA bundle, its own certificate and key, and optionally a CRL.

use std::path::{Path, PathBuf};

use adapters::domain::RegionCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::fsutil::{write_atomic, write_private};
use crate::identity::{DepartmentId, Role};
use crate::registry::{ClientEntry, upsert_entry};

/// Errors of the dev PKI; they name the file or the client.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no CA in {0}: run `gateway pki init --dir {0}` first")]
    NoCa(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `pki issue` needs to know about a client.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// The client system id: the certificate's CN and the registry key.
    pub name: String,
    pub department: DepartmentId,
    pub role: Role,
    pub region: RegionCode,
    /// Validity window; defaults to now - 1 hour .. now + 825 days.
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RevokedFile {
    #[serde(default)]
    crl_number: u64,
    #[serde(default)]
    revoked: Vec<RevokedEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RevokedEntry {
    client: String,
    serial: String,
    revoked_at: i64,
}

/// Paths of a PKI folder.
#[derive(Clone, Debug)]
pub struct PkiDir(pub PathBuf);

impl PkiDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.0.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.0.join("server.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.0.join("crl.pem")
    }
    pub fn clients(&self) -> PathBuf {
        self.0.join("clients.toml")
    }
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.crt"))
    }
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.key"))
    }
    fn revoked(&self) -> PathBuf {
        self.0.join("revoked.toml")
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and not shortened by DER encoding
    SerialNumber::from_slice(&bytes)
}

fn validate_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(name, "ca" | "server" | "crl");
    if ok {
        Ok(())
    } else {
        Err(PkiError::Invalid(format!(
            "client name {name:?}: use 1-64 letters, digits, '-' or '_' (not ca, server, crl)"
        )))
    }
}

/// Creates the CA, the server certificate (ECDSA P-256, valid for
/// `localhost` and `127.0.0.1`), an empty CRL and an empty registry.
/// Existing files are kept: `init` on an initialised folder does nothing.
pub fn init(dir: &Path) -> Result<bool, PkiError> {
    let p = PkiDir(dir.to_owned());
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if p.ca_cert().exists() && p.ca_key().exists() {
        return Ok(false);
    }
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Data-sharing gateway dev CA");
    dn.push(
        DnType::OrganizationName,
        "阳江市 data-sharing gateway (development)",
    );
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    ca.serial_number = Some(random_serial());
    let ca_cert = ca.self_signed(&ca_key)?;
    write_atomic(&p.ca_cert(), ca_cert.pem().as_bytes()).map_err(io(&p.ca_cert()))?;
    write_private(&p.ca_key(), ca_key.serialize_pem().as_bytes()).map_err(io(&p.ca_key()))?;

    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.not_before = now - Duration::hours(1);
    server.not_after = now + Duration::days(825);
    server.serial_number = Some(random_serial());
    let server_cert = server.signed_by(&server_key, &issuer)?;
    write_atomic(&p.server_cert(), server_cert.pem().as_bytes()).map_err(io(&p.server_cert()))?;
    write_private(&p.server_key(), server_key.serialize_pem().as_bytes())
        .map_err(io(&p.server_key()))?;
    write_crl(&p, &issuer, &RevokedFile::default())?;
    if !p.clients().exists() {
        write_atomic(
            &p.clients(),
            b"# Client registry: certificate subject CN -> department, role, region.\n",
        )
        .map_err(io(&p.clients()))?;
    }
    Ok(true)
}

fn load_issuer(p: &PkiDir) -> Result<Issuer<'static, KeyPair>, PkiError> {
    if !p.ca_cert().exists() || !p.ca_key().exists() {
        return Err(PkiError::NoCa(p.0.clone()));
    }
    let key_pem = std::fs::read_to_string(p.ca_key()).map_err(io(&p.ca_key()))?;
    let cert_pem = std::fs::read_to_string(p.ca_cert()).map_err(io(&p.ca_cert()))?;
    let key = KeyPair::from_pem(&key_pem)?;
    Ok(Issuer::from_ca_cert_pem(&cert_pem, key)?)
}

/// Issues a client certificate `<name>.crt`/`<name>.key` and registers the
/// client in `clients.toml`. Reissuing a name replaces its certificate.
pub fn issue(dir: &Path, spec: &ClientSpec) -> Result<(), PkiError> {
    validate_name(&spec.name)?;
    let p = PkiDir(dir.to_owned());
    let issuer = load_issuer(&p)?;
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, spec.name.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, spec.department.as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = spec.not_before.unwrap_or(now - Duration::hours(1));
    params.not_after = spec.not_after.unwrap_or(now + Duration::days(825));
    params.serial_number = Some(random_serial());
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = p.client_cert(&spec.name);
    let key_path = p.client_key(&spec.name);
    write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
    write_atomic(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
    upsert_entry(
        &p.clients(),
        ClientEntry {
            id: spec.name.clone(),
            department: spec.department.clone(),
            role: spec.role,
            region: spec.region,
            fingerprint: None,
            enabled: true,
        },
    )?;
    Ok(())
}

/// Adds the client's current certificate to the CRL and rewrites `crl.pem`.
pub fn revoke(dir: &Path, name: &str) -> Result<(), PkiError> {
    validate_name(name)?;
    let p = PkiDir(dir.to_owned());
    let issuer = load_issuer(&p)?;
    let cert_path = p.client_cert(name);
    let pem = std::fs::read(&cert_path).map_err(io(&cert_path))?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem)
        .map_err(|e| PkiError::Invalid(format!("{}: {e}", cert_path.display())))?;
    let info = crate::tls::describe_certificate(&der)
        .ok_or_else(|| PkiError::Invalid(format!("{}: unreadable", cert_path.display())))?;
    let mut revoked = read_revoked(&p)?;
    if !revoked.revoked.iter().any(|r| r.serial == info.serial) {
        revoked.revoked.push(RevokedEntry {
            client: name.to_owned(),
            serial: info.serial,
            revoked_at: OffsetDateTime::now_utc().unix_timestamp(),
        });
    }
    write_crl(&p, &issuer, &revoked)
}

fn read_revoked(p: &PkiDir) -> Result<RevokedFile, PkiError> {
    let path = p.revoked();
    if !path.exists() {
        return Ok(RevokedFile::default());
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    toml::from_str(&text).map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display())))
}

fn write_crl(
    p: &PkiDir,
    issuer: &Issuer<'_, KeyPair>,
    revoked: &RevokedFile,
) -> Result<(), PkiError> {
    let mut revoked_next = RevokedFile {
        crl_number: revoked.crl_number + 1,
        revoked: Vec::new(),
    };
    let mut certs = Vec::new();
    for r in &revoked.revoked {
        let serial = hex::decode(&r.serial)
            .map_err(|_| PkiError::Invalid(format!("revoked.toml: bad serial {}", r.serial)))?;
        certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            reason_code: None,
            invalidity_date: None,
        });
        revoked_next.revoked.push(RevokedEntry {
            client: r.client.clone(),
            serial: r.serial.clone(),
            revoked_at: r.revoked_at,
        });
    }
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(30),
        crl_number: SerialNumber::from(revoked_next.crl_number),
        issuing_distribution_point: None,
        revoked_certs: certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer)?;
    let text = toml::to_string(&revoked_next)
        .map_err(|e| PkiError::Invalid(format!("revoked.toml: {e}")))?;
    write_atomic(&p.revoked(), text.as_bytes()).map_err(io(&p.revoked()))?;
    write_atomic(&p.crl(), crl.pem()?.as_bytes()).map_err(io(&p.crl()))
}

/// The seven demo clients: five departmental systems, an admin and an auditor.
pub fn demo_clients() -> Vec<(&'static str, &'static str, Role)> {
    vec![
        ("civil-affairs", "civil-affairs", Role::System),
        ("rural-revitalization", "rural-revitalization", Role::System),
        ("education", "education", Role::System),
        ("health-insurance", "health-insurance", Role::System),
        ("housing", "housing", Role::System),
        ("admin", "civil-affairs", Role::Admin),
        ("auditor", "civil-affairs", Role::Auditor),
    ]
}
