//! Configuration: a TOML file, then `GATEWAY_*` environment variables over it.
//!
//! Every problem is reported at once, each naming its key: unknown keys, values
//! of the wrong type, and semantic errors (unreadable files, bad addresses,
//! bad region codes, zero limits). `gateway validate --config FILE` runs the
//! same checks.
//!
//! Environment overrides: `GATEWAY_` followed by the key path in upper case,
//! sections separated by a double underscore: `GATEWAY_LISTEN`,
//! `GATEWAY_DATABASE_URL`, `GATEWAY_LIMITS__MAX_BODY_BYTES`,
//! `GATEWAY_TLS__CERT`. Values are read as TOML scalars when they parse as
//! such (numbers, booleans), else as strings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The whole gateway configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:8443` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// `sqlite:PATH` (or a plain path) or `postgres://…`.
    pub database_url: String,
    /// Maximum database connections.
    #[serde(default = "default_db_connections")]
    pub database_max_connections: u32,
    /// SQLite only: bytes of the database file read through a memory map
    /// (`PRAGMA mmap_size`; 0 reads with read() only). Default 1 GiB.
    #[serde(default = "default_sqlite_mmap_size")]
    pub sqlite_mmap_size: u64,
    /// This instance's id; several instances sharing one PostgreSQL each need
    /// their own (the audit log keeps one chain per instance).
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Folder of the dataset JSON Schemas.
    #[serde(default = "default_schemas_dir")]
    pub schemas_dir: PathBuf,
    /// Folder of the sharing policies.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    pub tls: TlsConfig,
    pub clients: ClientsConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

/// Server certificate, client CA bundle and revocation list.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// CA bundle client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation list(s) (PEM), optional.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Reject handshakes when the CRL's nextUpdate has passed (fail closed).
    #[serde(default = "yes")]
    pub enforce_crl_expiry: bool,
    /// Also offer TLS 1.2 (TLS 1.3 only by default).
    #[serde(default)]
    pub allow_tls12: bool,
    /// How often to check the certificate, CA, CRL and client files for
    /// changes (seconds; 0 disables polling, SIGHUP always reloads).
    #[serde(default = "default_reload_interval")]
    pub reload_interval_secs: u64,
}

/// The client registry: which certificate subject is which client.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// TOML file of `[[client]]` entries (see `deploy/clients.example.toml`).
    pub file: PathBuf,
}

/// Protective limits against slow, oversized or too many clients.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout_ms: u64,
    /// HTTP/1.1: time allowed for a request's head to arrive, counted (by
    /// hyper) from the end of the previous response, so it is also how long
    /// a keep-alive connection may sit idle between requests. Responses
    /// over HTTP/1.1 announce the shorter of it and `idle_timeout_secs` as
    /// `Keep-Alive: timeout=N`, so client pools retire connections first.
    pub header_read_timeout_ms: u64,
    /// A connection moving no bytes this long is closed (both protocols).
    pub idle_timeout_secs: u64,
    /// A request (until its response headers) taking longer is cancelled.
    pub request_timeout_secs: u64,
    /// Open connections at most.
    pub max_connections: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl Limits {
    /// Seconds an idle HTTP/1.1 keep-alive connection is kept open: the
    /// shorter of the header read and idle timeouts, less a second of
    /// margin for the client's clock and the network.
    pub fn keep_alive_secs(&self) -> u64 {
        (self.header_read_timeout_ms / 1000)
            .min(self.idle_timeout_secs)
            .saturating_sub(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout_ms: 10_000,
            // As long as the idle timeout: HTTP/1.1 keep-alive connections
            // are held that long (hyper's one timer covers both), and only
            // holders of a certificate from the CA get this far.
            header_read_timeout_ms: 120_000,
            idle_timeout_secs: 120,
            request_timeout_secs: 300,
            max_connections: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A token-bucket quota.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst size.
    pub burst: u32,
}

/// Per-client rate limits, configurable per department.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Quota for each client of a department without its own entry.
    pub default: Quota,
    /// Per-department quotas (each client of the department gets this quota).
    pub departments: BTreeMap<String, Quota>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            default: Quota {
                per_second: 1_000,
                burst: 2_000,
            },
            departments: BTreeMap::new(),
        }
    }
}

/// Logs, traces and metrics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/gRPC endpoint for traces, e.g. `http://127.0.0.1:4317`; off when unset.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: "text".into(),
            otlp_endpoint: None,
            service_name: "data-sharing-gateway".into(),
        }
    }
}

/// The audit log.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Ed25519 signing key for checkpoints (PKCS#8 DER or PEM); created if missing.
    pub signing_key: PathBuf,
    /// Keys for the HMAC of data subjects' ID numbers, by version; the highest
    /// version signs new events, all are used for searching. Each value is a
    /// path to a file holding at least 32 random bytes (created if missing).
    /// When empty, version 1 is `subject-hmac-1.key` beside `signing_key`.
    pub subject_keys: BTreeMap<String, PathBuf>,
    /// Key for consumer-specific pseudonyms (policy treatment `pseudonym`).
    pub pseudonym_key: PathBuf,
    /// Seconds between signed checkpoints.
    pub checkpoint_interval_secs: u64,
    /// Days events are kept at least (default 3 years, PIPL art. 56).
    pub retention_days: u64,
    /// Bench-only: disable the audit log. Never set in production; the gateway
    /// logs a warning at every start when it is set.
    pub bench_only_disable: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key: PathBuf::from("audit-signing.key"),
            subject_keys: BTreeMap::new(),
            pseudonym_key: PathBuf::from("pseudonym.key"),
            checkpoint_interval_secs: 60,
            retention_days: 3 * 366,
            bench_only_disable: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_db_connections() -> u32 {
    16
}
fn default_sqlite_mmap_size() -> u64 {
    crate::storage::DEFAULT_SQLITE_MMAP_SIZE
}
fn default_instance_id() -> String {
    "gw-1".into()
}
fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}
fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn default_reload_interval() -> u64 {
    10
}

/// One configuration problem, naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `limits.max_body_bytes` (empty for the file itself).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// All problems found in one configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads `path`, applies `GATEWAY_*` variables from the process
    /// environment, and validates. Relative paths in the file are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`] with an explicit environment (tests never call
    /// `set_var`).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![err(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, base, env)
    }

    /// Parses and validates configuration text; `base` resolves relative paths.
    pub fn from_toml_str(
        text: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![err("", format!("config is not valid TOML: {e}"))])
        })?;
        let mut errors = Vec::new();
        apply_env(&mut table, env, &mut errors);
        check_keys(&table, &key_tree(), "", &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let mut config: Config = Config::deserialize(Value::Table(table))
            .map_err(|e| ConfigErrors(vec![err("", e.to_string().trim().to_owned())]))?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.schemas_dir);
        fix(&mut self.policies_dir);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        if let Some(c) = &mut self.tls.crl {
            fix(c);
        }
        fix(&mut self.clients.file);
        fix(&mut self.audit.signing_key);
        fix(&mut self.audit.pseudonym_key);
        for p in self.audit.subject_keys.values_mut() {
            fix(p);
        }
        if let Some(rest) = self.database_url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            if Path::new(rest).is_relative() {
                self.database_url = format!("sqlite:{}", base.join(rest).display());
            }
        } else if !self.database_url.contains("://") && Path::new(&self.database_url).is_relative()
        {
            self.database_url = format!("sqlite:{}", base.join(&self.database_url).display());
        }
    }

    /// Semantic checks, all errors together.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let file = |key: &str, p: &Path, errors: &mut Vec<ConfigError>| {
            if !p.is_file() {
                errors.push(err(key, format!("file {} does not exist", p.display())));
            }
        };
        let dir = |key: &str, p: &Path, errors: &mut Vec<ConfigError>| {
            if !p.is_dir() {
                errors.push(err(key, format!("folder {} does not exist", p.display())));
            }
        };
        file("tls.cert", &self.tls.cert, &mut errors);
        file("tls.key", &self.tls.key, &mut errors);
        file("tls.client_ca", &self.tls.client_ca, &mut errors);
        if let Some(c) = &self.tls.crl {
            file("tls.crl", c, &mut errors);
        }
        file("clients.file", &self.clients.file, &mut errors);
        dir("schemas_dir", &self.schemas_dir, &mut errors);
        dir("policies_dir", &self.policies_dir, &mut errors);
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("sqlite:"))
        {
            errors.push(err(
                "database_url",
                "expected sqlite:PATH, a file path, or postgres://…",
            ));
        }
        if self.database_max_connections == 0 {
            errors.push(err("database_max_connections", "must be at least 1"));
        }
        if self.instance_id.is_empty()
            || self.instance_id.len() > 64
            || !self
                .instance_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(err(
                "instance_id",
                "1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        let l = &self.limits;
        for (k, v) in [
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.request_timeout_secs", l.request_timeout_secs),
            ("limits.max_connections", l.max_connections as u64),
            ("limits.max_body_bytes", l.max_body_bytes as u64),
        ] {
            if v == 0 {
                errors.push(err(k, "must be greater than 0"));
            }
        }
        let mut quotas = vec![("rate_limit.default".to_owned(), self.rate_limit.default)];
        for (dept, q) in &self.rate_limit.departments {
            if crate::identity::DepartmentId::parse(dept).is_err() {
                errors.push(err(
                    format!("rate_limit.departments.{dept}"),
                    "not a department id (lower-case letters, digits, hyphens)",
                ));
            }
            quotas.push((format!("rate_limit.departments.{dept}"), *q));
        }
        for (k, q) in quotas {
            if q.per_second == 0 {
                errors.push(err(format!("{k}.per_second"), "must be greater than 0"));
            }
            if q.burst == 0 {
                errors.push(err(format!("{k}.burst"), "must be greater than 0"));
            }
        }
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            errors.push(err("telemetry.log_format", "expected \"text\" or \"json\""));
        }
        if let Some(e) = &self.telemetry.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(err(
                "telemetry.otlp_endpoint",
                "expected an http:// or https:// URL",
            ));
        }
        for v in self.audit.subject_keys.keys() {
            if v.parse::<u32>().is_err() {
                errors.push(err(
                    format!("audit.subject_keys.{v}"),
                    "key versions are positive integers",
                ));
            }
        }
        if self.audit.checkpoint_interval_secs == 0 {
            errors.push(err(
                "audit.checkpoint_interval_secs",
                "must be greater than 0",
            ));
        }
        if self.audit.retention_days < 1096 {
            errors.push(err(
                "audit.retention_days",
                "records of providing personal information are kept at least 3 years (PIPL art. 56): use 1096 or more",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// The tree of known keys, with the TOML type each leaf expects. Built from
/// a fully populated example so it cannot drift from the structs.
#[derive(Debug)]
enum KeyTree {
    Leaf(&'static str),
    Table(BTreeMap<String, KeyTree>),
    /// A table whose keys are free (departments, key versions) with this shape.
    Map(Box<KeyTree>),
}

fn key_tree() -> KeyTree {
    let quota = || {
        KeyTree::Table(BTreeMap::from([
            ("per_second".into(), KeyTree::Leaf("integer")),
            ("burst".into(), KeyTree::Leaf("integer")),
        ]))
    };
    let leaf = |t: &'static str| KeyTree::Leaf(t);
    let table = |items: Vec<(&str, KeyTree)>| {
        KeyTree::Table(items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    };
    table(vec![
        ("listen", leaf("string")),
        ("database_url", leaf("string")),
        ("database_max_connections", leaf("integer")),
        ("sqlite_mmap_size", leaf("integer")),
        ("instance_id", leaf("string")),
        ("schemas_dir", leaf("string")),
        ("policies_dir", leaf("string")),
        (
            "tls",
            table(vec![
                ("cert", leaf("string")),
                ("key", leaf("string")),
                ("client_ca", leaf("string")),
                ("crl", leaf("string")),
                ("enforce_crl_expiry", leaf("boolean")),
                ("allow_tls12", leaf("boolean")),
                ("reload_interval_secs", leaf("integer")),
            ]),
        ),
        ("clients", table(vec![("file", leaf("string"))])),
        (
            "limits",
            table(vec![
                ("handshake_timeout_ms", leaf("integer")),
                ("header_read_timeout_ms", leaf("integer")),
                ("idle_timeout_secs", leaf("integer")),
                ("request_timeout_secs", leaf("integer")),
                ("max_connections", leaf("integer")),
                ("max_body_bytes", leaf("integer")),
            ]),
        ),
        (
            "rate_limit",
            table(vec![
                ("enabled", leaf("boolean")),
                ("default", quota()),
                ("departments", KeyTree::Map(Box::new(quota()))),
            ]),
        ),
        (
            "telemetry",
            table(vec![
                ("log_format", leaf("string")),
                ("otlp_endpoint", leaf("string")),
                ("service_name", leaf("string")),
            ]),
        ),
        (
            "audit",
            table(vec![
                ("signing_key", leaf("string")),
                ("subject_keys", KeyTree::Map(Box::new(leaf("string")))),
                ("pseudonym_key", leaf("string")),
                ("checkpoint_interval_secs", leaf("integer")),
                ("retention_days", leaf("integer")),
                ("bench_only_disable", leaf("boolean")),
            ]),
        ),
    ])
}

const REQUIRED: &[&str] = &[
    "listen",
    "database_url",
    "tls",
    "tls.cert",
    "tls.key",
    "tls.client_ca",
    "clients",
    "clients.file",
];

fn check_keys(table: &Table, tree: &KeyTree, prefix: &str, errors: &mut Vec<ConfigError>) {
    let KeyTree::Table(known) = tree else { return };
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, v) in table {
        let key = join(k);
        match known.get(k) {
            None => {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                errors.push(err(
                    key,
                    format!("unknown key (known here: {})", names.join(", ")),
                ));
            }
            Some(sub) => check_value(v, sub, &key, errors),
        }
    }
    for req in REQUIRED {
        let (parent, leaf) = req.rsplit_once('.').unwrap_or(("", req));
        if parent == prefix && !table.contains_key(leaf) {
            errors.push(err(*req, "missing required key"));
        }
    }
}

fn check_value(v: &Value, tree: &KeyTree, key: &str, errors: &mut Vec<ConfigError>) {
    match (tree, v) {
        (KeyTree::Leaf(t), v) if v.type_str() == *t => {}
        (KeyTree::Leaf(t), v) => errors.push(err(
            key,
            format!("expected {} {t}, found {}", article(t), v.type_str()),
        )),
        (KeyTree::Table(_), Value::Table(t)) => check_keys(t, tree, key, errors),
        (KeyTree::Map(inner), Value::Table(t)) => {
            for (k, v) in t {
                check_value(v, inner, &format!("{key}.{k}"), errors);
            }
        }
        (_, other) => errors.push(err(
            key,
            format!("expected a table, found {}", other.type_str()),
        )),
    }
}

fn article(t: &str) -> &'static str {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("GATEWAY_") else {
            continue;
        };
        // Variables of the test harness and tools, not configuration.
        if rest.starts_with("TEST_") || rest.starts_with("BENCH_") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            errors.push(err(name, "malformed variable name"));
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !matches!(v, Value::Table(_) | Value::Array(_)))
            .unwrap_or(Value::String(value));
        if let Err(section) = insert_path(table, &path, parsed) {
            errors.push(err(name.clone(), format!("{section} is not a section")));
        }
    }
}

/// Sets `path` in `table`, creating sections; `Err` names a non-table on the way.
fn insert_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(inner) => insert_path(inner, rest, value),
            _ => Err(first.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(dir: &Path) -> String {
        for f in ["server.crt", "server.key", "ca.crt", "clients.toml"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        r#"
listen = "127.0.0.1:0"
database_url = "sqlite:gw.db"
[tls]
cert = "server.crt"
key = "server.key"
client_ca = "ca.crt"
[clients]
file = "clients.toml"
"#
        .to_owned()
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = minimal(dir.path());
        let c = Config::from_toml_str(&text, dir.path(), []).unwrap();
        assert_eq!(c.limits.max_body_bytes, 16 * 1024 * 1024);
        assert!(c.database_url.ends_with("gw.db"));
        assert!(c.tls.cert.is_absolute());
    }

    #[test]
    fn three_mistakes_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let text = minimal(dir.path())
            + "\n[limits]\nmax_body_bytes = \"lots\"\nmax_conections = 5\n[telemetry]\nlog_format = \"xml\"\n";
        // The type and key errors are found before deserialising; the
        // semantic one needs the others fixed, so put it in the env instead.
        let e = Config::from_toml_str(
            &text,
            dir.path(),
            [("GATEWAY_TLS__CRTIFICATE".to_owned(), "x".to_owned())],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"limits.max_body_bytes"), "{e}");
        assert!(keys.contains(&"limits.max_conections"), "{e}");
        assert!(keys.contains(&"tls.crtificate"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let text = minimal(dir.path()).replace("ca.crt", "missing-ca.crt")
            + "\n[limits]\nmax_connections = 0\n[telemetry]\nlog_format = \"xml\"\n";
        let e = Config::from_toml_str(&text, dir.path(), []).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tls.client_ca",
                "limits.max_connections",
                "telemetry.log_format"
            ],
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = minimal(dir.path());
        let c = Config::from_toml_str(
            &text,
            dir.path(),
            [
                (
                    "GATEWAY_LIMITS__MAX_BODY_BYTES".to_owned(),
                    "1024".to_owned(),
                ),
                ("GATEWAY_INSTANCE_ID".to_owned(), "gw-7".to_owned()),
                ("GATEWAY_TEST_DATABASE_URL".to_owned(), "ignored".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.limits.max_body_bytes, 1024);
        assert_eq!(c.instance_id, "gw-7");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let e = Config::from_toml_str("listen = \"127.0.0.1:1\"", Path::new("."), []).unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["database_url", "tls", "clients"]);
    }
}
