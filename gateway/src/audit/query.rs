//! The auditor's side: filtered, paginated queries; CSV / NDJSON exports;
//! reports.
//!
//! Results are ordered by `(time_ms, log_id, seq)`; the cursor is the last
//! row's key, so pages are stable while new events arrive.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;

use adapters::domain::IdNumber;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::AuditError;
use super::event::{AuditEvent, EventKind, Outcome, SubjectKeys, SubjectRef};
use super::record::Record;
use super::store::{self, record_columns_of, record_from_row};
use crate::storage::{Backend, Database};

/// Most events per page.
pub const MAX_LIMIT: u32 = 1_000;
/// Events per page when no limit is given.
pub const DEFAULT_LIMIT: u32 = 100;

/// What to select. Empty fields select everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// From (inclusive), unix ms.
    pub from_ms: Option<i64>,
    /// To (exclusive), unix ms.
    pub to_ms: Option<i64>,
    /// Caller's department.
    pub department: Option<String>,
    /// Caller's client system id.
    pub client: Option<String>,
    /// A dataset the event touched.
    pub dataset: Option<String>,
    /// The stated purpose.
    pub purpose: Option<String>,
    /// The decision.
    pub decision: Option<Outcome>,
    /// The HTTP status.
    pub status: Option<u16>,
    /// The event kind.
    pub kind: Option<EventKind>,
    /// Any of these subject HMACs (one person under every key version).
    pub subjects: Vec<SubjectRef>,
}

/// The query parameters of `GET /v1/audit/events` (and the CLI flags):
/// `from`, `to` (RFC 3339 or unix ms), `department`, `client`, `dataset`,
/// `purpose`, `decision` (allow/deny/error), `status`, `kind`, `subject` (an
/// ID number; the gateway computes its HMACs), `cursor`, `limit`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub department: Option<String>,
    pub client: Option<String>,
    pub dataset: Option<String>,
    pub purpose: Option<String>,
    pub decision: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl std::fmt::Debug for FilterParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `subject` is an ID number: never printed.
        f.debug_struct("FilterParams")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("department", &self.department)
            .field("subject", &self.subject.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Parses `RFC 3339` or unix milliseconds.
pub fn parse_time(name: &str, s: &str) -> Result<i64, AuditError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            AuditError::BadRequest(format!(
                "{name}: expected an RFC 3339 time (2026-01-31T00:00:00+08:00) or unix milliseconds"
            ))
        })
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl FilterParams {
    /// Validates the parameters into a filter, a cursor and a limit; a
    /// subject ID number becomes its HMAC under every key version.
    pub fn parse(&self, keys: &SubjectKeys) -> Result<(Filter, Option<Cursor>, u32), AuditError> {
        let mut f = Filter {
            from_ms: nonempty(&self.from)
                .map(|s| parse_time("from", &s))
                .transpose()?,
            to_ms: nonempty(&self.to)
                .map(|s| parse_time("to", &s))
                .transpose()?,
            department: nonempty(&self.department),
            client: nonempty(&self.client),
            dataset: nonempty(&self.dataset),
            purpose: nonempty(&self.purpose),
            ..Filter::default()
        };
        if let Some(d) = nonempty(&self.decision) {
            f.decision = Some(Outcome::parse(&d).ok_or_else(|| {
                AuditError::BadRequest("decision: expected allow, deny or error".into())
            })?);
        }
        if let Some(s) = nonempty(&self.status) {
            f.status = Some(s.parse().map_err(|_| {
                AuditError::BadRequest("status: expected an HTTP status code".into())
            })?);
        }
        if let Some(k) = nonempty(&self.kind) {
            f.kind = Some(EventKind::parse(&k).ok_or_else(|| {
                AuditError::BadRequest(
                    "kind: expected access, tls_refused, admin, auditor_query, store_outage \
                     or stream_completed"
                        .into(),
                )
            })?);
        }
        if let Some(s) = nonempty(&self.subject) {
            // The error never echoes the number.
            let id = IdNumber::parse(&s).map_err(|_| {
                AuditError::BadRequest("subject: not a valid citizen ID number (GB 11643)".into())
            })?;
            f.subjects = keys.all_versions(&id);
        }
        if let (Some(a), Some(b)) = (f.from_ms, f.to_ms)
            && a > b
        {
            return Err(AuditError::BadRequest("from: must not be after to".into()));
        }
        let cursor = nonempty(&self.cursor)
            .map(|c| Cursor::parse(&c))
            .transpose()?;
        let limit = match nonempty(&self.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(AuditError::BadRequest(format!(
                        "limit: expected 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        Ok((f, cursor, limit))
    }
}

impl Filter {
    /// A description for the auditor's own audit event (subjects as HMACs).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        };
        push("from", self.from_ms.map(|v| v.to_string()));
        push("to", self.to_ms.map(|v| v.to_string()));
        push("department", self.department.clone());
        push("client", self.client.clone());
        push("dataset", self.dataset.clone());
        push("purpose", self.purpose.clone());
        push("decision", self.decision.map(|d| d.as_str().to_owned()));
        push("status", self.status.map(|s| s.to_string()));
        push("kind", self.kind.map(|k| k.as_str().to_owned()));
        if !self.subjects.is_empty() {
            push(
                "subject",
                Some(
                    self.subjects
                        .iter()
                        .map(SubjectRef::as_str)
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
            );
        }
        parts.join(" ")
    }
}

/// Position after the last row of a page: `(time_ms, log_id, seq)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub log_id: String,
    pub seq: u64,
}

impl Cursor {
    /// The position just after `r`.
    fn after(r: &Record) -> Self {
        Cursor {
            time_ms: r.time_ms,
            log_id: r.log_id.clone(),
            seq: r.seq,
        }
    }

    /// `"<time_ms>.<seq>.<log_id>"`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.time_ms, self.seq, self.log_id)
    }

    /// Parses [`Cursor::encode`]'s output.
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        let bad = || AuditError::BadRequest("cursor: not a cursor this gateway returned".into());
        let mut it = s.splitn(3, '.');
        let time_ms = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let seq = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let log_id = it
            .next()
            .filter(|l| super::checkpoint::valid_log_id(l))
            .ok_or_else(bad)?;
        Ok(Cursor {
            time_ms,
            seq,
            log_id: log_id.to_owned(),
        })
    }
}

/// An event with where it sits in its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedEvent {
    /// The log.
    pub log_id: String,
    /// Its position.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// One page of results.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    /// The events, oldest first.
    pub events: Vec<LoggedEvent>,
    /// Pass back as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

enum Param {
    I(i64),
    T(String),
}

/// `FROM … WHERE …` over `audit_events e` with `$n` placeholders (SQLite
/// accepts them too), and its parameters.
fn from_where(f: &Filter, cursor: Option<&Cursor>, backend: Backend) -> (String, Vec<Param>) {
    let mut conds: Vec<String> = Vec::new();
    let mut ps: Vec<Param> = Vec::new();
    let mut add = |cond: &str, p: Param, ps: &mut Vec<Param>| {
        ps.push(p);
        conds.push(cond.replace('?', &format!("${}", ps.len())));
    };
    if let Some(v) = f.from_ms {
        add("e.time_ms >= ?", Param::I(v), &mut ps);
    }
    if let Some(v) = f.to_ms {
        add("e.time_ms < ?", Param::I(v), &mut ps);
    }
    if let Some(v) = &f.department {
        add("e.department = ?", Param::T(v.clone()), &mut ps);
    }
    if let Some(v) = &f.client {
        add("e.client_id = ?", Param::T(v.clone()), &mut ps);
    }
    if let Some(v) = &f.dataset {
        // `datasets` is ",a,b,"; a plain substring test is exact with the commas.
        add(
            "e.datasets LIKE ? ESCAPE '\\'",
            Param::T(format!("%,{},%", like_escape(&v.replace(',', "_")))),
            &mut ps,
        );
    }
    if let Some(v) = &f.purpose {
        add("e.purpose = ?", Param::T(v.clone()), &mut ps);
    }
    if let Some(v) = f.decision {
        add("e.decision = ?", Param::T(v.as_str().to_owned()), &mut ps);
    }
    if let Some(v) = f.status {
        add("e.status = ?", Param::I(i64::from(v)), &mut ps);
    }
    if let Some(v) = f.kind {
        add("e.kind = ?", Param::T(v.as_str().to_owned()), &mut ps);
    }
    let mut from = "audit_events e".to_owned();
    if !f.subjects.is_empty() {
        let mut holders = Vec::new();
        for s in &f.subjects {
            ps.push(Param::T(s.as_str().to_owned()));
            holders.push(format!("${}", ps.len()));
        }
        let mut tail = Vec::new();
        for s in &f.subjects {
            ps.push(Param::T(format!("% {} %", s.as_str())));
            tail.push(format!("' ' || t.subjects || ' ' LIKE ${}", ps.len()));
        }
        // The person's events are found first, then read: through the
        // index, one seek per generation of each log (`g` walks them, one
        // index seek per step; see `store::index_subjects`), and the
        // newest events, which the index does not cover yet, by their
        // `subjects` column (space-separated; a subject has no LIKE
        // wildcard in it). A search costs the generations plus the
        // person's events, not the log's size. CROSS JOIN (conditions in
        // WHERE, which PostgreSQL wants) keeps SQLite's join order as
        // written.
        from = format!(
            "(WITH RECURSIVE g(log_id, gen) AS ( \
                 SELECT l.log_id, (SELECT MIN(s.gen) FROM audit_event_subjects s \
                                   WHERE s.log_id = l.log_id) FROM audit_logs l \
                 UNION ALL \
                 SELECT g.log_id, (SELECT MIN(s.gen) FROM audit_event_subjects s \
                                   WHERE s.log_id = g.log_id AND s.gen > g.gen) \
                 FROM g WHERE g.gen IS NOT NULL) \
               SELECT s.log_id, s.seq FROM g CROSS JOIN audit_event_subjects s \
                 WHERE s.log_id = g.log_id AND s.gen = g.gen AND s.subject IN ({}) \
               UNION {}) h \
             CROSS JOIN audit_events e",
            holders.join(", "),
            tail_sql(backend, &tail.join(" OR "))
        );
        conds.push("e.log_id = h.log_id AND e.seq = h.seq".to_owned());
    }
    if let Some(c) = cursor {
        let n = ps.len();
        ps.push(Param::I(c.time_ms));
        ps.push(Param::T(c.log_id.clone()));
        ps.push(Param::I(c.seq as i64));
        conds.push(format!(
            "(e.time_ms, e.log_id, e.seq) > (${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3
        ));
    }
    let sql = if conds.is_empty() {
        format!(" FROM {from}")
    } else {
        format!(" FROM {from} WHERE {}", conds.join(" AND "))
    };
    (sql, ps)
}

/// The events of each log past its subject-index watermark that satisfy
/// `cond` (over `t`), as `(log_id, seq)`: a range of the log's primary key
/// per log. PostgreSQL would rather scan the whole table (it cannot know
/// how short the range is) unless the range is a fenced lateral subquery;
/// SQLite has no LATERAL, and its CROSS JOIN already keeps the order.
fn tail_sql(backend: Backend, cond: &str) -> String {
    match backend {
        Backend::Sqlite => format!(
            "SELECT t.log_id, t.seq FROM audit_subject_watermarks w CROSS JOIN audit_events t \
             WHERE t.log_id = w.log_id AND t.seq >= w.indexed_to AND ({cond})"
        ),
        Backend::Postgres => format!(
            "SELECT t.log_id, t.seq FROM audit_subject_watermarks w CROSS JOIN LATERAL \
             (SELECT t.log_id, t.seq FROM audit_events t \
              WHERE t.log_id = w.log_id AND t.seq >= w.indexed_to AND ({cond}) OFFSET 0) t"
        ),
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

macro_rules! bind_all {
    ($q:expr, $ps:expr) => {{
        let mut q = $q;
        for p in $ps {
            q = match p {
                Param::I(i) => q.bind(*i),
                Param::T(t) => q.bind(t.clone()),
            };
        }
        q
    }};
}

/// The stored rows of a page (hashes aside), oldest first.
async fn page_rows(
    db: &Database,
    f: &Filter,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<Record>, AuditError> {
    let (w, ps) = from_where(f, cursor, db.backend());
    let sql = format!(
        "SELECT {}{w} ORDER BY e.time_ms, e.log_id, e.seq LIMIT {}",
        record_columns_of("e"),
        limit.clamp(1, MAX_LIMIT)
    );
    let mut out = Vec::new();
    macro_rules! collect {
        ($p:expr) => {{
            let q = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &ps);
            for r in q.fetch_all($p).await? {
                out.push(record_from_row!(&r));
            }
        }};
    }
    match db {
        Database::Sqlite(p) => collect!(p),
        Database::Postgres(p) => collect!(p),
    }
    Ok(out)
}

/// The event a row stores, with `contexts` holding the context it names
/// ([`contexts_of`]); [`AuditError::Corrupt`] if it does not decode.
fn event_of(r: &Record, contexts: &HashMap<String, String>) -> Result<AuditEvent, AuditError> {
    let context = r
        .as_ref()
        .context_id()
        .and_then(|id| contexts.get(id))
        .map(String::as_str);
    r.as_ref().event(context).map_err(AuditError::Corrupt)
}

/// The stored contexts `rows` name (one query per page; a page of one
/// client's events names a handful).
async fn contexts_of(
    db: &Database,
    rows: &[Record],
) -> Result<HashMap<String, String>, AuditError> {
    let mut ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.as_ref().context_id())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    store::contexts(db, Some(&ids)).await
}

/// One page of events matching `f` after `cursor`.
pub async fn query(
    db: &Database,
    f: &Filter,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Page, AuditError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let rows = page_rows(db, f, cursor, limit).await?;
    let next_cursor =
        (rows.len() as u32 == limit).then(|| rows.last().map(|r| Cursor::after(r).encode()));
    let contexts = contexts_of(db, &rows).await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        let event = event_of(&r, &contexts)?;
        events.push(LoggedEvent {
            log_id: r.log_id,
            seq: r.seq,
            event,
        });
    }
    Ok(Page {
        events,
        next_cursor: next_cursor.flatten(),
    })
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line: `{"log_id", "seq", …event fields}`.
    Ndjson,
    /// A header line, then one row per event; lists joined with `;`.
    Csv,
}

impl ExportFormat {
    /// The Content-Type to send.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

const CSV_HEADER: [&str; 31] = [
    "time",
    "time_ms",
    "event_id",
    "log_id",
    "seq",
    "kind",
    "instance_id",
    "trace_id",
    "client_id",
    "department",
    "role",
    "cert_fingerprint",
    "cert_serial",
    "source_addr",
    "action",
    "route",
    "datasets",
    "purpose",
    "legal_basis",
    "grant_id",
    "authorisation_ref",
    "subjects",
    "records_disclosed",
    "fields",
    "decision",
    "rule_ids",
    "policy_version",
    "status",
    "latency_us",
    "error_class",
    "reason",
];

/// Neutralises spreadsheet formulas (CSV injection): a cell starting with
/// `=`, `+`, `-`, `@`, tab or CR gets a leading apostrophe.
fn cell(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

fn csv_row(log_id: &str, seq: u64, e: &AuditEvent) -> Vec<String> {
    let o = |v: &Option<String>| cell(v.as_deref().unwrap_or(""));
    vec![
        e.time.clone(),
        e.time_ms.to_string(),
        e.event_id.to_string(),
        log_id.to_owned(),
        seq.to_string(),
        e.kind.as_str().to_owned(),
        cell(&e.instance_id),
        o(&e.trace_id),
        o(&e.client_id),
        o(&e.department),
        e.role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        o(&e.cert_fingerprint),
        o(&e.cert_serial),
        o(&e.source_addr),
        cell(&e.action),
        o(&e.route),
        cell(&e.datasets.join(";")),
        o(&e.purpose),
        o(&e.legal_basis),
        o(&e.grant_id),
        o(&e.authorisation_ref),
        e.subjects
            .iter()
            .map(SubjectRef::as_str)
            .collect::<Vec<_>>()
            .join(";"),
        e.records_disclosed.to_string(),
        cell(
            &e.fields
                .iter()
                .map(|f| format!("{}={}", f.field, f.treatment))
                .collect::<Vec<_>>()
                .join(";"),
        ),
        e.decision.as_str().to_owned(),
        cell(&e.rule_ids.join(";")),
        o(&e.policy_version),
        e.status.map(|s| s.to_string()).unwrap_or_default(),
        e.latency_us.map(|s| s.to_string()).unwrap_or_default(),
        o(&e.error_class),
        o(&e.reason),
    ]
}

/// Renders one page in `format`; the CSV header goes with the first page.
fn render(
    format: ExportFormat,
    first: bool,
    rows: &[Record],
    contexts: &HashMap<String, String>,
) -> Result<Bytes, AuditError> {
    let mut out = Vec::with_capacity(rows.len() * 1_500);
    match format {
        ExportFormat::Ndjson => {
            for r in rows {
                let line = LoggedEvent {
                    log_id: r.log_id.clone(),
                    seq: r.seq,
                    event: event_of(r, contexts)?,
                };
                serde_json::to_writer(&mut out, &line)?;
                out.push(b'\n');
            }
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            if first {
                w.write_record(CSV_HEADER)?;
            }
            for r in rows {
                w.write_record(csv_row(&r.log_id, r.seq, &event_of(r, contexts)?))?;
            }
            w.flush()?;
        }
    }
    Ok(Bytes::from(out))
}

/// A boxed export stream.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<Bytes, AuditError>> + Send>>;

/// Streams every event matching `f` in `format`, one chunk per 1,000
/// events, reading page by page (memory stays bounded however large the
/// export). For an HTTP body: `Body::from_stream(export_stream(..))`.
pub fn export_stream(db: Database, f: Filter, format: ExportFormat) -> ExportStream {
    struct St {
        db: Database,
        f: Filter,
        cursor: Option<Cursor>,
        first: bool,
        done: bool,
    }
    let st = St {
        db,
        f,
        cursor: None,
        first: true,
        done: false,
    };
    Box::pin(futures_util::stream::try_unfold(
        st,
        move |mut st| async move {
            if st.done {
                return Ok(None);
            }
            let rows = page_rows(&st.db, &st.f, st.cursor.as_ref(), MAX_LIMIT).await?;
            if rows.is_empty() && !st.first {
                return Ok(None);
            }
            st.done = (rows.len() as u32) < MAX_LIMIT;
            st.cursor = rows.last().map(Cursor::after);
            let contexts = contexts_of(&st.db, &rows).await?;
            let chunk = render(format, st.first, &rows, &contexts)?;
            st.first = false;
            Ok(Some((chunk, st)))
        },
    ))
}

/// Writes the export to `w` (CLI); returns the bytes written.
pub async fn export_to<W: AsyncWrite + Unpin>(
    db: &Database,
    f: &Filter,
    format: ExportFormat,
    w: &mut W,
) -> Result<u64, AuditError> {
    let mut s = export_stream(db.clone(), f.clone(), format);
    let mut n = 0u64;
    while let Some(chunk) = s.try_next().await? {
        w.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    w.flush().await?;
    Ok(n)
}

/// Accesses of one department on one day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DepartmentDay {
    /// `YYYY-MM-DD` in the report's UTC offset.
    pub day: String,
    /// The department.
    pub department: String,
    /// All access events.
    pub accesses: u64,
    /// Allowed ones.
    pub allowed: u64,
    /// Denied ones.
    pub denied: u64,
    /// Failed ones.
    pub errors: u64,
}

const DAY_MS: i64 = 86_400_000;

fn day_string(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| day.to_string())
}

async fn per_department_day(
    db: &Database,
    from_ms: i64,
    to_ms: i64,
    offset_ms: i64,
) -> Result<Vec<(i64, String, u64, u64, u64, u64)>, AuditError> {
    // FLOOR division that is right for negative times too is not needed:
    // audit times are after 1970.
    let sql = "SELECT (time_ms + $1) / 86400000 AS day, department, COUNT(*), \
               SUM(CASE WHEN decision = 'allow' THEN 1 ELSE 0 END), \
               SUM(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END), \
               SUM(CASE WHEN decision = 'error' THEN 1 ELSE 0 END) \
               FROM audit_events WHERE kind = 'access' AND time_ms >= $2 AND time_ms < $3 \
               GROUP BY day, department ORDER BY day, department";
    let mut out = Vec::new();
    macro_rules! collect {
        ($p:expr) => {{
            for r in sqlx::query(sql)
                .bind(offset_ms)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all($p)
                .await?
            {
                let n = |i: usize| r.try_get::<i64, _>(i).map(|v| v as u64);
                out.push((
                    r.try_get::<i64, _>(0)?,
                    r.try_get(1)?,
                    n(2)?,
                    n(3)?,
                    n(4)?,
                    n(5)?,
                ));
            }
        }};
    }
    match db {
        Database::Sqlite(p) => collect!(p),
        Database::Postgres(p) => collect!(p),
    }
    Ok(out)
}

/// Accesses per department per day in `[from_ms, to_ms)`; days are
/// calendar days at `utc_offset_secs` (28800 for China Standard Time).
pub async fn accesses_per_department_per_day(
    db: &Database,
    from_ms: i64,
    to_ms: i64,
    utc_offset_secs: i32,
) -> Result<Vec<DepartmentDay>, AuditError> {
    let rows = per_department_day(db, from_ms, to_ms, i64::from(utc_offset_secs) * 1000).await?;
    Ok(rows
        .into_iter()
        .map(
            |(day, department, accesses, allowed, denied, errors)| DepartmentDay {
                day: day_string(day),
                department,
                accesses,
                allowed,
                denied,
                errors,
            },
        )
        .collect())
}

/// Denials of one client system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DenialSummary {
    /// The department.
    pub department: String,
    /// The client system.
    pub client_id: String,
    /// How many denials.
    pub denials: u64,
    /// The rule ids behind them, with counts.
    pub rules: BTreeMap<String, u64>,
    /// The error classes, with counts.
    pub error_classes: BTreeMap<String, u64>,
    /// The newest, unix ms.
    pub last_ms: i64,
}

/// Denials in `[from_ms, to_ms)` per client, most first.
pub async fn denials(
    db: &Database,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<DenialSummary>, AuditError> {
    let f = Filter {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        decision: Some(Outcome::Deny),
        ..Filter::default()
    };
    let mut groups: HashMap<(String, String), DenialSummary> = HashMap::new();
    let mut cursor = None;
    loop {
        let rows = page_rows(db, &f, cursor.as_ref(), MAX_LIMIT).await?;
        let contexts = contexts_of(db, &rows).await?;
        for r in &rows {
            let e = event_of(r, &contexts)?;
            let dept = e.department.clone().unwrap_or_default();
            let client = e.client_id.clone().unwrap_or_default();
            let g = groups
                .entry((dept.clone(), client.clone()))
                .or_insert_with(|| DenialSummary {
                    department: dept,
                    client_id: client,
                    denials: 0,
                    rules: BTreeMap::new(),
                    error_classes: BTreeMap::new(),
                    last_ms: 0,
                });
            g.denials += 1;
            g.last_ms = g.last_ms.max(e.time_ms);
            for r in e.rule_ids {
                *g.rules.entry(r).or_default() += 1;
            }
            if let Some(c) = e.error_class {
                *g.error_classes.entry(c).or_default() += 1;
            }
        }
        if (rows.len() as u32) < MAX_LIMIT {
            break;
        }
        cursor = rows.last().map(Cursor::after);
    }
    let mut out: Vec<DenialSummary> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.denials
            .cmp(&a.denials)
            .then(a.client_id.cmp(&b.client_id))
    });
    Ok(out)
}

/// How often one person (one HMAC) was disclosed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubjectCount {
    /// `v<version>:<hex>`.
    pub subject: String,
    /// Allowed accesses naming this subject.
    pub accesses: u64,
    /// Distinct departments that accessed.
    pub departments: u64,
}

/// The persons most accessed (allowed accesses) in `[from_ms, to_ms)`.
/// The same person under two key versions counts as two subjects.
pub async fn most_accessed_subjects(
    db: &Database,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> Result<Vec<SubjectCount>, AuditError> {
    // The index below each log's watermark (a pass in progress has rows
    // above it, which the tail covers), plus the events it does not cover
    // yet split into their subjects (see `store::index_slice`).
    let tail = match db {
        Database::Sqlite(_) => {
            "SELECT j.value AS subject, t.log_id, t.seq FROM audit_events t \
             JOIN audit_subject_watermarks w ON w.log_id = t.log_id AND t.seq >= w.indexed_to, \
             json_each('[\"' || replace(t.subjects, ' ', '\",\"') || '\"]') j \
             WHERE t.subjects <> ''"
        }
        Database::Postgres(_) => {
            "SELECT j.subject, t.log_id, t.seq FROM audit_events t \
             JOIN audit_subject_watermarks w ON w.log_id = t.log_id AND t.seq >= w.indexed_to \
             CROSS JOIN LATERAL unnest(string_to_array(t.subjects, ' ')) AS j(subject) \
             WHERE t.subjects <> ''"
        }
    };
    let sql = format!(
        "SELECT s.subject, COUNT(*), COUNT(DISTINCT e.department) \
         FROM (SELECT i.subject, i.log_id, i.seq FROM audit_event_subjects i \
               JOIN audit_subject_watermarks iw ON iw.log_id = i.log_id AND i.seq < iw.indexed_to \
               UNION ALL {tail}) s \
         JOIN audit_events e ON e.log_id = s.log_id AND e.seq = s.seq \
         WHERE e.kind = 'access' AND e.decision = 'allow' AND e.time_ms >= $1 AND e.time_ms < $2 \
         GROUP BY s.subject ORDER BY COUNT(*) DESC, s.subject LIMIT $3"
    );
    let mut out = Vec::new();
    macro_rules! collect {
        ($p:expr) => {{
            for r in sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(from_ms)
                .bind(to_ms)
                .bind(i64::from(limit.clamp(1, MAX_LIMIT)))
                .fetch_all($p)
                .await?
            {
                out.push(SubjectCount {
                    subject: r.try_get(0)?,
                    accesses: r.try_get::<i64, _>(1)? as u64,
                    departments: r.try_get::<i64, _>(2)? as u64,
                });
            }
        }};
    }
    match db {
        Database::Sqlite(p) => collect!(p),
        Database::Postgres(p) => collect!(p),
    }
    Ok(out)
}

/// A department whose volume on `day` is far above its own baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VolumeAnomaly {
    /// The department.
    pub department: String,
    /// The day examined, `YYYY-MM-DD`.
    pub day: String,
    /// Accesses that day.
    pub accesses: u64,
    /// Mean daily accesses over the baseline days.
    pub baseline_mean: f64,
    /// Population standard deviation over the baseline days.
    pub baseline_stddev: f64,
    /// `mean + 3 × stddev`.
    pub threshold: f64,
}

/// Fewest accesses in a day that can count as an anomaly (so that 3
/// accesses after a silent month do not raise an alarm).
pub const ANOMALY_MIN_ACCESSES: u64 = 20;

/// Departments whose access count on the day containing `day_ms` exceeds
/// the mean + 3σ of their own previous `baseline_days` days (days without
/// accesses count as 0; days are calendar days at `utc_offset_secs`), and
/// is at least [`ANOMALY_MIN_ACCESSES`]. A department with no history has a
/// baseline of 0 and is flagged once it reaches the minimum.
pub async fn volume_anomalies(
    db: &Database,
    day_ms: i64,
    baseline_days: u32,
    utc_offset_secs: i32,
) -> Result<Vec<VolumeAnomaly>, AuditError> {
    let off = i64::from(utc_offset_secs) * 1000;
    let day = (day_ms + off).div_euclid(DAY_MS);
    let n = i64::from(baseline_days.clamp(1, 3660));
    let from = (day - n) * DAY_MS - off;
    let to = (day + 1) * DAY_MS - off;
    let rows = per_department_day(db, from, to, off).await?;
    let mut per: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
    for (d, dept, accesses, ..) in rows {
        let e = per.entry(dept).or_insert_with(|| (0, vec![0; n as usize]));
        if d == day {
            e.0 = accesses;
        } else if let Some(slot) = usize::try_from(d - (day - n))
            .ok()
            .and_then(|i| e.1.get_mut(i))
        {
            *slot = accesses;
        }
    }
    let mut out = Vec::new();
    for (department, (today, hist)) in per {
        let mean = hist.iter().sum::<u64>() as f64 / hist.len() as f64;
        let var = hist.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / hist.len() as f64;
        let sd = var.sqrt();
        let threshold = mean + 3.0 * sd;
        if today >= ANOMALY_MIN_ACCESSES && today as f64 > threshold {
            out.push(VolumeAnomaly {
                department,
                day: day_string(day),
                accesses: today,
                baseline_mean: mean,
                baseline_stddev: sd,
                threshold,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_junk() {
        let c = Cursor {
            time_ms: 5,
            log_id: "gw.a-1".into(),
            seq: 9,
        };
        assert_eq!(Cursor::parse(&c.encode()).ok(), Some(c));
        for bad in ["", "x.1.a", "1.x.a", "1.2.", "1.2.a b"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_cells_cannot_be_formulas() {
        assert_eq!(cell("=1+1"), "'=1+1");
        assert_eq!(cell("ok"), "ok");
    }

    #[test]
    fn params_validate_without_echoing_the_id_number() {
        let keys =
            SubjectKeys::new(1, [(1u32, vec![9u8; 32])].into_iter().collect()).expect("keys");
        let p = FilterParams {
            subject: Some("110105194912310021".into()),
            ..FilterParams::default()
        };
        let err = p
            .parse(&keys)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("subject") && !err.contains("110105"), "{err}");
        let p = FilterParams {
            subject: Some("11010519491231002X".into()),
            decision: Some("deny".into()),
            from: Some("2026-01-01T00:00:00+08:00".into()),
            limit: Some("10".into()),
            ..FilterParams::default()
        };
        let (f, c, l) = p.parse(&keys).expect("valid");
        assert_eq!(f.subjects.len(), 1);
        assert_eq!(f.decision, Some(Outcome::Deny));
        assert_eq!(f.from_ms, Some(1_767_196_800_000));
        assert!(c.is_none());
        assert_eq!(l, 10);
        assert!(!f.describe().contains("11010519491231002X"));
        let p = FilterParams {
            limit: Some("0".into()),
            ..FilterParams::default()
        };
        assert!(p.parse(&keys).is_err());
    }
}
