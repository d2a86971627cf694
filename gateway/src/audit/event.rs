//! What one audit event says, and how data subjects are pseudonymised.
//!
//! An [`AuditEvent`] never holds a field value or a clear ID number: fields
//! are named with the treatment applied ([`FieldDisclosure`]), and persons
//! are keyed HMACs of their ID numbers ([`SubjectRef`], computed by
//! [`SubjectKeys`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use adapters::domain::IdNumber;
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::identity::{Caller, Role};

/// Longest free-text value kept in an event (routes, trace ids, reasons);
/// longer input is cut, so hostile requests cannot bloat the log.
pub const MAX_TEXT: usize = 512;
/// Most list items kept per event (datasets, fields, rule ids).
pub const MAX_ITEMS: usize = 10_000;
/// Most data subjects kept per event: the largest batch a request may name
/// (a match of 100,000 ID numbers), so every person a request asked about
/// is in its event and in that person's access report.
pub const MAX_SUBJECTS: usize = 100_000;

fn cap(s: impl Into<String>) -> String {
    let mut s: String = s.into();
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A request that reached the HTTP layer (allowed, denied, invalid or failed).
    Access,
    /// A TLS handshake the edge refused.
    TlsRefused,
    /// An administrator's action (policy load/change, client registration, grant).
    Admin,
    /// An auditor's own query, export, report or verification.
    AuditorQuery,
    /// Written by the audit writer itself when the store comes back after an
    /// outage: when it started and ended and how many appends were refused.
    StoreOutage,
    /// The end of a streamed answer (a batch match): how many records it
    /// disclosed, known only once the stream is done. Its `reason` names the
    /// access event, committed before the first byte, that it completes.
    StreamCompleted,
}

impl EventKind {
    /// The snake_case name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Access => "access",
            EventKind::TlsRefused => "tls_refused",
            EventKind::Admin => "admin",
            EventKind::AuditorQuery => "auditor_query",
            EventKind::StoreOutage => "store_outage",
            EventKind::StreamCompleted => "stream_completed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "access" => EventKind::Access,
            "tls_refused" => EventKind::TlsRefused,
            "admin" => EventKind::Admin,
            "auditor_query" => EventKind::AuditorQuery,
            "store_outage" => EventKind::StoreOutage,
            "stream_completed" => EventKind::StreamCompleted,
            _ => return None,
        })
    }
}

/// The outcome of the policy decision (or of the request, for failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The request was allowed (possibly with masking; possibly finding
    /// nothing the caller may see).
    Allow,
    /// A policy, role, quota or validation refused it (a 4xx answer).
    Deny,
    /// It failed on our or a backend's side (a 5xx answer).
    Error,
}

impl Outcome {
    /// `allow`, `deny` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }

    /// Parses `allow`, `deny` or `error`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Outcome::Allow,
            "deny" => Outcome::Deny,
            "error" => Outcome::Error,
            _ => return None,
        })
    }
}

/// One disclosed field and what was done to it, e.g. `("id_number",
/// "mask:first6-last4")` or `("category", "clear")`. Never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDisclosure {
    /// The field path in the canonical record.
    pub field: String,
    /// The treatment applied: `clear`, `mask:…`, `generalise:…`, `hmac`, …
    pub treatment: String,
}

/// A data subject as `v<key version>:<hex HMAC-SHA256 of the ID number>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectRef(String);

impl SubjectRef {
    /// Parses `v<digits>:<64 hex digits>`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix('v')?;
        let (ver, mac) = rest.split_once(':')?;
        let ok = !ver.is_empty()
            && ver.len() <= 9
            && ver.bytes().all(|b| b.is_ascii_digit())
            && mac.len() == 64
            && mac
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| SubjectRef(s.to_owned()))
    }

    /// A subject as its row's `subjects` column spells it; that column is
    /// hashed with the event, so it is taken as it is.
    pub(crate) fn from_column(s: String) -> Self {
        SubjectRef(s)
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The versioned HMAC keys that pseudonymise data subjects.
///
/// New events use the `current` version; a search by ID number computes the
/// HMAC under every version ([`SubjectKeys::all_versions`]), so rotating the
/// key keeps old events searchable as long as old keys are kept. The keys are
/// secrets: [`fmt::Debug`] prints only the version numbers.
#[derive(Clone)]
pub struct SubjectKeys {
    current: u32,
    keys: BTreeMap<u32, hmac::Key>,
}

/// The configuration of [`SubjectKeys`]: `{ current = 2, keys = { "1" =
/// "<hex>", "2" = "<hex>" } }`, each key at least 32 bytes, hex-encoded.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectKeysConfig {
    /// The version new events use.
    pub current: u32,
    /// Version → hex-encoded key.
    pub keys: BTreeMap<String, String>,
}

impl fmt::Debug for SubjectKeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKeysConfig")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why subject keys are unusable. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectKeysError {
    #[error("subject key version {0:?} is not a number")]
    BadVersion(String),
    #[error("subject key version {0} is not hex-encoded")]
    NotHex(u32),
    #[error("subject key version {0} is shorter than 32 bytes")]
    TooShort(u32),
    #[error("the current subject key version {0} has no key")]
    MissingCurrent(u32),
}

impl SubjectKeys {
    /// Builds the key set from raw keys (≥ 32 bytes each).
    pub fn new(current: u32, raw: BTreeMap<u32, Vec<u8>>) -> Result<Self, SubjectKeysError> {
        let mut keys = BTreeMap::new();
        for (ver, key) in raw {
            if key.len() < 32 {
                return Err(SubjectKeysError::TooShort(ver));
            }
            keys.insert(ver, hmac::Key::new(hmac::HMAC_SHA256, &key));
        }
        if !keys.contains_key(&current) {
            return Err(SubjectKeysError::MissingCurrent(current));
        }
        Ok(SubjectKeys { current, keys })
    }

    /// Builds the key set from its configuration.
    pub fn from_config(cfg: &SubjectKeysConfig) -> Result<Self, SubjectKeysError> {
        let mut raw = BTreeMap::new();
        for (ver, key) in &cfg.keys {
            let v: u32 = ver
                .parse()
                .map_err(|_| SubjectKeysError::BadVersion(ver.chars().take(16).collect()))?;
            let bytes = hex::decode(key.trim()).map_err(|_| SubjectKeysError::NotHex(v))?;
            raw.insert(v, bytes);
        }
        Self::new(cfg.current, raw)
    }

    /// The version new events use.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    fn mac(version: u32, key: &hmac::Key, id: &IdNumber) -> SubjectRef {
        let tag = hmac::sign(key, id.as_str().as_bytes());
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(tag.as_ref(), &mut hex);
        let mut s = String::with_capacity(76);
        let _ = write!(s, "v{version}:");
        s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        SubjectRef(s)
    }

    /// The subject reference under the current key.
    pub fn subject(&self, id: &IdNumber) -> SubjectRef {
        // `new` guarantees the current key exists; fall back to the newest.
        match self.keys.get(&self.current) {
            Some(k) => Self::mac(self.current, k, id),
            None => {
                let (v, k) = self.keys.iter().next_back().expect("at least one key");
                Self::mac(*v, k, id)
            }
        }
    }

    /// The subject reference under every key version, for searching.
    pub fn all_versions(&self, id: &IdNumber) -> Vec<SubjectRef> {
        self.keys
            .iter()
            .map(|(v, k)| Self::mac(*v, k, id))
            .collect()
    }
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKeys")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One audit event, as the API, exports and reports show it (JSON, field
/// order as declared); `time` is the RFC 3339 rendering of `time_ms`. Its
/// row in `audit_events` holds the indexed fields in columns and the rest
/// in `body` ([`crate::audit::record`] describes the stored body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// UUID v7 (time-ordered).
    pub event_id: Uuid,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// RFC 3339, UTC, millisecond precision.
    pub time: String,
    /// What kind of event.
    pub kind: EventKind,
    /// The gateway instance (= the audit log id) that wrote it; set by the
    /// writer.
    pub instance_id: String,
    /// W3C trace id of the request, when there was one.
    pub trace_id: Option<String>,
    /// Client system id (certificate CN).
    pub client_id: Option<String>,
    /// The caller's department.
    pub department: Option<String>,
    /// The caller's role.
    pub role: Option<Role>,
    /// SHA-256 fingerprint of the presented certificate (hex).
    pub cert_fingerprint: Option<String>,
    /// Certificate serial (hex).
    pub cert_serial: Option<String>,
    /// Peer socket address.
    pub source_addr: Option<String>,
    /// What was attempted, e.g. `records.read`, `policy.load`, `audit.query`.
    pub action: String,
    /// HTTP method and route template, e.g. `GET /v1/persons/{id}`.
    pub route: Option<String>,
    /// Datasets touched.
    pub datasets: Vec<String>,
    /// The stated purpose.
    pub purpose: Option<String>,
    /// The legal basis cited.
    pub legal_basis: Option<String>,
    /// The grant (approved application) used.
    pub grant_id: Option<String>,
    /// The family's signed authorisation reference (核对 queries).
    pub authorisation_ref: Option<String>,
    /// Data subjects as keyed HMACs.
    pub subjects: Vec<SubjectRef>,
    /// Number of records disclosed.
    pub records_disclosed: u64,
    /// Each disclosed field with its treatment.
    pub fields: Vec<FieldDisclosure>,
    /// The decision.
    pub decision: Outcome,
    /// Ids of the rules behind the decision.
    pub rule_ids: Vec<String>,
    /// Version of the policy set that decided.
    pub policy_version: Option<String>,
    /// HTTP status sent.
    pub status: Option<u16>,
    /// Time from request to response, microseconds.
    pub latency_us: Option<u64>,
    /// Error class (`validation`, `forbidden`, `backend`, `internal`, …).
    pub error_class: Option<String>,
    /// Free text without personal data: TLS refusal reason, admin operation
    /// detail, auditor query description, outage summary.
    pub reason: Option<String>,
}

/// Renders unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339_ms(time_ms: i64) -> String {
    let nanos = i128::from(time_ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&fmt).unwrap_or_else(|_| time_ms.to_string())
        }
        Err(_) => time_ms.to_string(),
    }
}

/// The current time in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl AuditEvent {
    /// Starts an event of `kind` for `action`, stamped now with a new UUID v7.
    pub fn builder(kind: EventKind, action: impl Into<String>) -> AuditEventBuilder {
        let time_ms = now_ms();
        AuditEventBuilder(AuditEvent {
            event_id: Uuid::now_v7(),
            time_ms,
            time: rfc3339_ms(time_ms),
            kind,
            instance_id: String::new(),
            trace_id: None,
            client_id: None,
            department: None,
            role: None,
            cert_fingerprint: None,
            cert_serial: None,
            source_addr: None,
            action: cap(action),
            route: None,
            datasets: Vec::new(),
            purpose: None,
            legal_basis: None,
            grant_id: None,
            authorisation_ref: None,
            subjects: Vec::new(),
            records_disclosed: 0,
            fields: Vec::new(),
            decision: Outcome::Allow,
            rule_ids: Vec::new(),
            policy_version: None,
            status: None,
            latency_us: None,
            error_class: None,
            reason: None,
        })
    }

    /// An access event (a request that reached the HTTP layer).
    pub fn access(action: impl Into<String>) -> AuditEventBuilder {
        Self::builder(EventKind::Access, action)
    }

    /// A refused TLS handshake: the reason, and the certificate fingerprint
    /// when a certificate was presented.
    pub fn tls_refused(
        reason: impl Into<String>,
        fingerprint: Option<String>,
        source: Option<SocketAddr>,
    ) -> AuditEventBuilder {
        let mut b = Self::builder(EventKind::TlsRefused, "tls.handshake")
            .decision(Outcome::Deny, Vec::<String>::new(), None)
            .reason(reason);
        b.0.cert_fingerprint = fingerprint.map(cap);
        if let Some(s) = source {
            b = b.source(s);
        }
        b
    }

    /// An administrator's action by `caller`.
    pub fn admin(caller: &Caller, operation: impl Into<String>) -> AuditEventBuilder {
        Self::builder(EventKind::Admin, operation).caller(caller)
    }

    /// An auditor's query; `description` names the filter, with subjects
    /// already as HMACs (never an ID number).
    pub fn auditor_query(
        caller: &Caller,
        action: impl Into<String>,
        description: impl Into<String>,
    ) -> AuditEventBuilder {
        Self::builder(EventKind::AuditorQuery, action)
            .caller(caller)
            .reason(description)
    }
}

/// Builds an [`AuditEvent`]; every setter caps free text at [`MAX_TEXT`].
#[derive(Clone, Debug)]
pub struct AuditEventBuilder(AuditEvent);

impl AuditEventBuilder {
    /// Sets the time explicitly (tests, imports).
    pub fn time_ms(mut self, time_ms: i64) -> Self {
        self.0.time_ms = time_ms;
        self.0.time = rfc3339_ms(time_ms);
        self
    }

    /// Sets the trace id.
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.0.trace_id = Some(cap(trace_id));
        self
    }

    /// Copies client id, department, role and certificate from the caller.
    pub fn caller(mut self, caller: &Caller) -> Self {
        self.0.client_id = Some(cap(caller.client_id.as_str()));
        self.0.department = Some(caller.department.as_str().to_owned());
        self.0.role = Some(caller.role);
        self.0.cert_fingerprint = Some(cap(caller.certificate.fingerprint.as_str()));
        self.0.cert_serial = Some(cap(caller.certificate.serial.as_str()));
        self
    }

    /// Sets client id and department without a full [`Caller`].
    pub fn client(mut self, client_id: impl Into<String>, department: impl Into<String>) -> Self {
        self.0.client_id = Some(cap(client_id));
        self.0.department = Some(cap(department));
        self
    }

    /// Sets the certificate fingerprint and serial.
    pub fn certificate(
        mut self,
        fingerprint: impl Into<String>,
        serial: impl Into<String>,
    ) -> Self {
        self.0.cert_fingerprint = Some(cap(fingerprint));
        self.0.cert_serial = Some(cap(serial));
        self
    }

    /// Sets the peer address.
    pub fn source(mut self, addr: SocketAddr) -> Self {
        self.0.source_addr = Some(addr.to_string());
        self
    }

    /// Sets the route (method + template).
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.0.route = Some(cap(route));
        self
    }

    /// Adds a dataset.
    pub fn dataset(mut self, dataset: impl Into<String>) -> Self {
        if self.0.datasets.len() < MAX_ITEMS {
            self.0.datasets.push(cap(dataset));
        }
        self
    }

    /// Sets the purpose.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.0.purpose = Some(cap(purpose));
        self
    }

    /// Sets the legal basis.
    pub fn legal_basis(mut self, basis: impl Into<String>) -> Self {
        self.0.legal_basis = Some(cap(basis));
        self
    }

    /// Sets the grant id.
    pub fn grant_id(mut self, grant: impl Into<String>) -> Self {
        self.0.grant_id = Some(cap(grant));
        self
    }

    /// Sets the authorisation reference.
    pub fn authorisation_ref(mut self, reference: impl Into<String>) -> Self {
        self.0.authorisation_ref = Some(cap(reference));
        self
    }

    /// Adds a data subject (already an HMAC; see [`SubjectKeys::subject`]).
    pub fn subject(self, subject: SubjectRef) -> Self {
        self.subjects([subject])
    }

    /// Adds data subjects (each once; at most [`MAX_SUBJECTS`]).
    pub fn subjects(mut self, subjects: impl IntoIterator<Item = SubjectRef>) -> Self {
        // A match names up to 100,000 subjects: deduplicated by borrowing,
        // not by cloning each reference into a set.
        let list = &mut self.0.subjects;
        let incoming: Vec<SubjectRef> = subjects.into_iter().collect();
        let keep: Vec<bool> = {
            let mut seen: std::collections::HashSet<&str> =
                list.iter().map(SubjectRef::as_str).collect();
            let mut room = MAX_SUBJECTS.saturating_sub(list.len());
            incoming
                .iter()
                .map(|s| {
                    let kept = room > 0 && seen.insert(s.as_str());
                    room -= usize::from(kept);
                    kept
                })
                .collect()
        };
        list.extend(
            incoming
                .into_iter()
                .zip(keep)
                .filter_map(|(s, kept)| kept.then_some(s)),
        );
        self
    }

    /// Sets the number of records disclosed.
    pub fn records_disclosed(mut self, n: u64) -> Self {
        self.0.records_disclosed = n;
        self
    }

    /// Adds a disclosed field with its treatment.
    pub fn field(mut self, field: impl Into<String>, treatment: impl Into<String>) -> Self {
        if self.0.fields.len() < MAX_ITEMS {
            self.0.fields.push(FieldDisclosure {
                field: cap(field),
                treatment: cap(treatment),
            });
        }
        self
    }

    /// Sets the decision, the rule ids behind it and the policy version.
    pub fn decision<S: Into<String>>(
        mut self,
        outcome: Outcome,
        rule_ids: impl IntoIterator<Item = S>,
        policy_version: Option<String>,
    ) -> Self {
        self.0.decision = outcome;
        self.0.rule_ids = rule_ids.into_iter().take(MAX_ITEMS).map(cap).collect();
        self.0.policy_version = policy_version.map(cap);
        self
    }

    /// Sets the HTTP status.
    pub fn status(mut self, status: u16) -> Self {
        self.0.status = Some(status);
        self
    }

    /// Sets the latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.0.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the error class.
    pub fn error_class(mut self, class: impl Into<String>) -> Self {
        self.0.error_class = Some(cap(class));
        self
    }

    /// Sets the free-text reason (no personal data).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.0.reason = Some(cap(reason));
        self
    }

    /// The event.
    pub fn build(self) -> AuditEvent {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SubjectKeys {
        let mut raw = BTreeMap::new();
        raw.insert(1, vec![1u8; 32]);
        raw.insert(2, vec![2u8; 32]);
        SubjectKeys::new(2, raw).expect("valid keys")
    }

    #[test]
    fn subjects_are_versioned_hmacs_and_searchable_under_all_versions() {
        let id = IdNumber::parse("11010519491231002X").expect("valid test vector");
        let k = keys();
        let s = k.subject(&id);
        assert!(s.as_str().starts_with("v2:"));
        assert!(!s.as_str().contains("11010519491231002X"));
        assert!(SubjectRef::parse(s.as_str()).is_some());
        let all = k.all_versions(&id);
        assert_eq!(all.len(), 2);
        assert!(all.contains(&s));
        assert!(all.iter().any(|r| r.as_str().starts_with("v1:")));
        // Rotation: an event written under v1 is still found.
        let mut old = BTreeMap::new();
        old.insert(1, vec![1u8; 32]);
        let v1 = SubjectKeys::new(1, old).expect("valid").subject(&id);
        assert!(all.contains(&v1));
        assert!(!format!("{k:?}").contains("1, 1, 1"));
    }

    #[test]
    fn subject_key_config_errors() {
        let cfg = SubjectKeysConfig {
            current: 3,
            keys: [("1".to_owned(), "00".repeat(32))].into_iter().collect(),
        };
        assert_eq!(
            SubjectKeys::from_config(&cfg).err(),
            Some(SubjectKeysError::MissingCurrent(3))
        );
        let cfg = SubjectKeysConfig {
            current: 1,
            keys: [("1".to_owned(), "00".repeat(8))].into_iter().collect(),
        };
        assert_eq!(
            SubjectKeys::from_config(&cfg).err(),
            Some(SubjectKeysError::TooShort(1))
        );
        assert!(SubjectRef::parse("v1:zz").is_none());
        assert!(SubjectRef::parse("11010519491231002X").is_none());
    }

    #[test]
    fn every_subject_of_a_full_match_is_kept_once() {
        let k = keys();
        let base = time::Date::from_calendar_date(1950, time::Month::January, 1).expect("date");
        let ids: Vec<SubjectRef> = (0..MAX_SUBJECTS as i64 + 10)
            .map(|i| {
                let birth = base + time::Duration::days(i / 1000);
                k.subject(&IdNumber::from_parts("441702", birth, (i % 1000) as u16).expect("id"))
            })
            .collect();
        let ev = AuditEvent::access("POST /v1/match")
            .subject(ids[1].clone())
            .subjects(ids.iter().cloned())
            .subjects(ids[..5].iter().cloned())
            .build();
        assert_eq!(ev.subjects.len(), MAX_SUBJECTS);
        assert_eq!(ev.subjects[0], ids[1]);
        assert_eq!(ev.subjects[1], ids[0]);
        assert_eq!(ev.subjects[2], ids[2]);
    }

    #[test]
    fn builder_caps_text_and_round_trips() {
        let ev = AuditEvent::access("records.read")
            .route("x".repeat(10_000))
            .field("id_number", "mask:first6-last4")
            .decision(Outcome::Deny, ["r1", "r2"], Some("7".to_owned()))
            .status(403)
            .time_ms(1_700_000_000_123)
            .build();
        assert_eq!(ev.route.as_ref().map(String::len), Some(MAX_TEXT));
        assert_eq!(ev.time, "2023-11-14T22:13:20.123Z");
        let json = serde_json::to_string(&ev).expect("serialises");
        let back: AuditEvent = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ev);
    }
}
