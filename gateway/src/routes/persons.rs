//! Reading records through the sharing policies.
//!
//! - `GET /v1/persons/{id_number}`: the caller's view of one person across
//!   every dataset its rules grant for the stated purpose.
//! - `POST /v1/match`: the same for up to 100,000 ID numbers, one NDJSON line
//!   per input, in input order, streamed.
//! - `POST /v1/policy/explain`: the decision and each field's treatment.
//!
//! Every data request names its purpose in `X-Purpose`; purposes that need
//! the family's authorisation (核对) also carry `X-Authorisation-Ref`.
//!
//! **403 versus 404.** A caller with no rule granting it any dataset for the
//! purpose gets 403 before any lookup, whether or not the person exists, so
//! it learns nothing. A caller with a grant gets 404 when no record it may
//! see exists — which its grant already entitles it to know.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use adapters::domain::IdNumber;

use crate::app::AppState;
use crate::audit::event::{AuditEvent, EventKind, Outcome};
use crate::error::ApiError;
use crate::extract::{Path, Query, Require, System};
use crate::identity::{Caller, Role};
use crate::policy::{AccessRequest, Decision, GrantSet, GrantStore, PolicySet, ReasonCode};
use crate::records::RecordText;

/// Most ID numbers in one match request.
pub const MAX_MATCH_IDS: usize = 100_000;

/// The purpose and authorisation reference of a data request.
#[derive(Clone, Debug)]
pub struct Purpose {
    pub code: String,
    pub authorisation: Option<String>,
}

/// Reads `X-Purpose` (required) and `X-Authorisation-Ref` (optional).
pub fn purpose_of(headers: &HeaderMap, set: &PolicySet) -> Result<Purpose, ApiError> {
    let code = headers
        .get("x-purpose")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest {
            code: "missing_purpose",
            message: "every data request names its purpose in the X-Purpose header".into(),
            path: Some("X-Purpose".into()),
        })?;
    if set.purpose(code).is_none() {
        let known: Vec<&str> = set.purposes().iter().map(|p| p.code.as_str()).collect();
        return Err(ApiError::BadRequest {
            code: "unknown_purpose",
            message: format!("unknown purpose; known purposes: {}", known.join(", ")),
            path: Some("X-Purpose".into()),
        });
    }
    let authorisation = headers
        .get("x-authorisation-ref")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    Ok(Purpose {
        code: code.to_owned(),
        authorisation,
    })
}

/// The decisions for every dataset the caller's rules may grant for the
/// purpose; only allowed ones are returned. Fails closed on a store error.
pub async fn decisions_for(
    state: &AppState,
    set: &PolicySet,
    caller: &Caller,
    purpose: &Purpose,
    now: OffsetDateTime,
) -> Result<Vec<(String, Decision)>, ApiError> {
    // Looked up on every request: a revocation applies at once.
    let department = caller.department.as_str();
    let readers = state
        .records
        .sqlite_readers()
        .await
        .map_err(ApiError::internal)?;
    let grants = match readers {
        Some(r) => r.with(|c| GrantStore::list_active_sqlite(c, department, now)),
        None => GrantStore::list_active(&state.db, department, now).await,
    }
    .map_err(ApiError::internal)?;
    let grants = GrantSet::new(grants);
    let mut out = Vec::new();
    let mut needs_authorisation = false;
    for d in state.catalogue.datasets() {
        let req = AccessRequest::for_caller(
            caller,
            d.id(),
            &purpose.code,
            purpose.authorisation.as_deref(),
            now,
            &grants,
        );
        let decision = set.decide(&req);
        if decision.allowed {
            out.push((d.id().to_owned(), decision));
        } else if decision
            .reasons
            .iter()
            .any(|r| r.code == ReasonCode::AuthorisationRequired)
        {
            needs_authorisation = true;
        }
    }
    if out.is_empty() {
        return Err(if needs_authorisation {
            ApiError::Forbidden(
                "this purpose needs the family's authorisation: send its reference in X-Authorisation-Ref"
                    .into(),
            )
        } else {
            ApiError::Forbidden(format!(
                "no sharing policy grants department {} any dataset for purpose {}",
                caller.department, purpose.code
            ))
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct ViewQuery {
    #[serde(default)]
    format: Option<String>,
}

fn want_native(q: &ViewQuery) -> Result<bool, ApiError> {
    match q.format.as_deref() {
        None | Some("canonical") => Ok(false),
        Some("native") => Ok(true),
        Some(_) => Err(ApiError::BadRequest {
            code: "bad_format",
            message: "format must be canonical or native".into(),
            path: Some("format".into()),
        }),
    }
}

/// Appends one record as the caller may see it to `out`:
/// `{"dataset", "version", "published_at", "format", "record"}`. Returns
/// `false`, with nothing appended, when the record is not visible.
///
/// The canonical view is rendered straight from the stored text (see
/// [`crate::policy::Plan::write_view`]); the native format goes through the
/// adapter, which works on values.
fn write_view(
    out: &mut Vec<u8>,
    caller: &Caller,
    native: bool,
    decisions: &[(String, Decision)],
    rec: &RecordText,
) -> bool {
    let Some((_, decision)) = decisions.iter().find(|(d, _)| *d == rec.dataset) else {
        return false;
    };
    // Looked up only when asked for: this runs once per matched record.
    let adapter = native
        .then(|| adapters::adapter::for_department(caller.department.as_str()))
        .flatten()
        .filter(|a| a.dataset() == rec.dataset);
    let start = out.len();
    out.extend_from_slice(b"{\"dataset\":");
    write_json(out, &rec.dataset);
    let _ = write!(
        out,
        ",\"version\":{},\"published_at\":{},\"format\":\"{}\",\"record\":",
        rec.version,
        rec.published_at.unix_timestamp(),
        if adapter.is_some() {
            "native"
        } else {
            "canonical"
        },
    );
    let written = match adapter {
        None => decision.write_view(&rec.payload, out),
        Some(adapter) => serde_json::from_str::<Value>(&rec.payload)
            .ok()
            .and_then(|payload| decision.apply(&payload))
            .map(|view| write_json(out, &adapter.to_native(&view)))
            .is_some(),
    };
    if written {
        out.push(b'}');
    } else {
        out.truncate(start);
    }
    written
}

/// Appends the visible views among `records` as a JSON array; returns the
/// datasets of the records shown.
fn write_views<'r>(
    out: &mut Vec<u8>,
    caller: &Caller,
    native: bool,
    decisions: &[(String, Decision)],
    records: &'r [RecordText],
) -> Vec<&'r str> {
    let mut shown = Vec::new();
    out.push(b'[');
    for rec in records {
        if !shown.is_empty() {
            out.push(b',');
        }
        if write_view(out, caller, native, decisions, rec) {
            shown.push(rec.dataset.as_str());
        } else if !shown.is_empty() {
            out.pop();
        }
    }
    out.push(b']');
    shown
}

/// Serialises into a buffer (cannot fail into a `Vec`).
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn with_policy_version(mut resp: Response, set: &PolicySet) -> Response {
    if let Ok(v) = HeaderValue::from_str(set.version()) {
        resp.headers_mut().insert("x-policy-version", v);
    }
    resp
}

/// `GET /v1/persons/{id_number}`.
pub async fn person(
    State(state): State<AppState>,
    caller: Require<System>,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let set = state.policies.current();
    let purpose = purpose_of(&headers, &set)?;
    let native = want_native(&q)?;
    let id = IdNumber::parse(&id).map_err(|e| ApiError::BadRequest {
        code: "invalid_id_number",
        message: format!("the ID number in the path is not valid: {e}"),
        path: Some("id_number".into()),
    })?;
    let now = OffsetDateTime::now_utc();
    let decisions = match decisions_for(&state, &set, &caller, &purpose, now).await {
        Ok(decisions) => decisions,
        // A refused lookup still names the person it asked about, so the
        // attempt shows in the auditor's search and the person's report.
        Err(e) => {
            let mut resp = e.into_response();
            let detail = audit_detail(&purpose, &set, &[], vec![id], 0, &[]);
            resp.extensions_mut().insert(detail);
            return Ok(resp);
        }
    };
    let datasets: Vec<String> = decisions.iter().map(|(d, _)| d.clone()).collect();
    let records = state
        .records
        .match_chunk_text(std::slice::from_ref(&id), &datasets)
        .await
        .map_err(ApiError::internal)?
        .pop()
        .unwrap_or_default();
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"purpose\":");
    write_json(&mut body, &purpose.code);
    body.extend_from_slice(b",\"policy_version\":");
    write_json(&mut body, set.version());
    body.extend_from_slice(b",\"records\":");
    let shown = write_views(&mut body, &caller, native, &decisions, &records);
    body.push(b'}');
    if shown.is_empty() {
        // The rules allowed the lookup and its answer is that nothing is
        // visible: an allowed access to the person that disclosed no field.
        let mut detail = audit_detail(&purpose, &set, &decisions, vec![id], 0, &[]);
        detail.fields.clear();
        detail.outcome = Some(Outcome::Allow);
        let mut resp = ApiError::NotFound(
            "no record of this person is visible to you for this purpose".into(),
        )
        .into_response();
        resp.extensions_mut().insert(detail);
        return Ok(resp);
    }
    let detail = audit_detail(
        &purpose,
        &set,
        &decisions,
        vec![id],
        shown.len() as u64,
        &shown,
    );
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut resp = with_policy_version(resp, &set);
    resp.extensions_mut().insert(detail);
    Ok(resp)
}

#[derive(Deserialize)]
struct MatchBody {
    ids: Vec<MatchEntry>,
}

/// One input of a match, parsed as it is read: an ID number, or why the
/// entry is not one (reported on its own line; the batch goes on).
struct MatchEntry(Result<IdNumber, String>);

impl MatchEntry {
    fn of_str(s: &str) -> MatchEntry {
        MatchEntry(IdNumber::parse(s).map_err(|e| e.to_string()))
    }
    fn not_a_string() -> MatchEntry {
        MatchEntry(Err("expected an ID number as a string".into()))
    }
}

impl<'de> Deserialize<'de> for MatchEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MatchEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an ID number")
            }
            fn visit_str<E>(self, s: &str) -> Result<MatchEntry, E> {
                Ok(MatchEntry::of_str(s))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MatchEntry, E> {
                Ok(MatchEntry::not_a_string())
            }
            fn visit_i64<E>(self, _: i64) -> Result<MatchEntry, E> {
                Ok(MatchEntry::not_a_string())
            }
            fn visit_u64<E>(self, _: u64) -> Result<MatchEntry, E> {
                Ok(MatchEntry::not_a_string())
            }
            fn visit_f64<E>(self, _: f64) -> Result<MatchEntry, E> {
                Ok(MatchEntry::not_a_string())
            }
            fn visit_unit<E>(self) -> Result<MatchEntry, E> {
                Ok(MatchEntry::not_a_string())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MatchEntry, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MatchEntry::not_a_string())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MatchEntry, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(MatchEntry::not_a_string())
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `POST /v1/match`: `{"ids": [...]}` or NDJSON (one ID string per line).
pub async fn match_ids(
    State(state): State<AppState>,
    caller: Require<System>,
    Query(q): Query<ViewQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let set = state.policies.current();
    let purpose = purpose_of(&headers, &set)?;
    let native = want_native(&q)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let bytes = super::records::read_body(&state, body).await?;
    let inputs: Vec<MatchEntry> = match ct.as_str() {
        "application/json" => {
            let b: MatchBody =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
                    code: "malformed_json",
                    message: format!(
                        "expected {{\"ids\": [..]}}; problem at line {}, column {}",
                        e.line(),
                        e.column()
                    ),
                    path: None,
                })?;
            b.ids
        }
        "application/x-ndjson" => {
            let mut v = Vec::new();
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let item = serde_json::from_slice::<MatchEntry>(line).map_err(|_| {
                    ApiError::BadRequest {
                        code: "malformed_json",
                        message: format!("line {} is not a JSON string", i + 1),
                        path: None,
                    }
                })?;
                v.push(item);
            }
            v
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other:?}: use application/json or application/x-ndjson"
            )));
        }
    };
    drop(bytes);
    if inputs.len() > MAX_MATCH_IDS {
        return Err(ApiError::bad_request(
            "too_many_ids",
            format!(
                "at most {MAX_MATCH_IDS} ID numbers per request, got {}",
                inputs.len()
            ),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let decisions = Arc::new(decisions_for(&state, &set, &caller, &purpose, now).await?);
    // Each entry was parsed as the body was read; invalid ones get their
    // own line and do not fail the batch.
    let entries: Vec<Result<IdNumber, String>> = inputs.into_iter().map(|e| e.0).collect();
    let valid: Vec<IdNumber> = entries.iter().filter_map(|e| e.clone().ok()).collect();
    // The event lists every queried person and the fields the plans grant;
    // it is durable before the first line is sent.
    let detail = audit_detail(&purpose, &set, &decisions, valid, 0, &[]);
    let caller = caller.into_caller();
    let version = set.version().to_owned();
    let disclosed = Arc::new(AtomicU64::new(0));
    let lines = match_lines(
        state.records.clone(),
        entries,
        decisions,
        caller.clone(),
        native,
        disclosed.clone(),
    );
    // When the last line is out, the count of disclosed records is known:
    // a second event records it, naming the access event it completes.
    let stream_audit = crate::accesslog::StreamAudit::default();
    let completion = {
        let audit = state.audit.clone();
        let stream_audit = stream_audit.clone();
        let rules = detail.rules.clone();
        let version = version.clone();
        futures_util::stream::once(async move {
            let event = AuditEvent::builder(EventKind::StreamCompleted, "POST /v1/match")
                .caller(&caller)
                .route("/v1/match")
                .purpose(purpose.code)
                .records_disclosed(disclosed.load(Ordering::Relaxed))
                .decision(Outcome::Allow, rules, Some(version))
                .reason(format!(
                    "end of the streamed answer of access event {}",
                    stream_audit.access_event().unwrap_or("(unknown)")
                ))
                .build();
            if let Err(e) = audit.append(event).await {
                tracing::error!(error = %e, "the match's completion event was not recorded");
            }
        })
        .filter_map(|()| async { None::<Result<Bytes, std::io::Error>> })
    };
    // The lookups were spawned from this task, into the one slot of this
    // worker that other workers cannot steal from; yield once so they start
    // before this task goes on to compute and commit the access event.
    tokio::task::yield_now().await;
    let stream = lines.chain(completion);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&version) {
        resp.headers_mut().insert("x-policy-version", v);
    }
    resp.extensions_mut().insert(detail);
    resp.extensions_mut().insert(stream_audit);
    Ok(resp)
}

/// What the audit event of a data response records: the datasets and the
/// fields (with their treatment) of the decisions, the rules, the grants.
/// `disclosed` are the datasets of the disclosed records; when empty (a streamed match), every
/// dataset the plans allow is listed.
fn audit_detail(
    purpose: &Purpose,
    set: &PolicySet,
    decisions: &[(String, Decision)],
    subjects: Vec<IdNumber>,
    records_disclosed: u64,
    disclosed: &[&str],
) -> crate::accesslog::AuditDetail {
    let mut detail = crate::accesslog::AuditDetail {
        purpose: Some(purpose.code.clone()),
        authorisation_ref: purpose.authorisation.clone(),
        subjects,
        records_disclosed,
        policy_version: Some(set.version().to_owned()),
        ..Default::default()
    };
    for (dataset, d) in decisions {
        if !disclosed.is_empty() && !disclosed.contains(&dataset.as_str()) {
            continue;
        }
        detail.datasets.push(dataset.clone());
        detail.rules.extend(d.rules.iter().map(|r| r.to_string()));
        detail.grant_ids.extend(d.grants.iter().cloned());
        for basis in &d.legal_bases {
            if !detail.legal_bases.iter().any(|b| **b == **basis) {
                detail.legal_bases.push(basis.to_string());
            }
        }
        for f in d.fields() {
            if f.treatment != crate::policy::Treatment::Drop {
                detail
                    .fields
                    .push((format!("{dataset}:{}", f.path), f.treatment.to_string()));
            }
        }
    }
    detail.rules.sort();
    detail.rules.dedup();
    detail
}

/// Chunks in flight at once: while one is rendered, the next is queried,
/// and each core renders one. With as many finished chunks waiting to be
/// sent, memory is bounded to twice this many chunks of lines.
const MATCH_IN_FLIGHT: usize = 3;

/// The NDJSON lines of a match, in input order: each chunk of entries is
/// looked up and rendered by its own task, [`MATCH_IN_FLIGHT`] at a time,
/// and the chunks are yielded in order. The first failure ends the stream
/// (the client sees a truncated body, never a wrong one).
///
/// The work starts at once, on a task of its own, while the access event is
/// still being made durable: the lines wait in a channel of
/// [`MATCH_IN_FLIGHT`] chunks until the response body is read, which the
/// audit layer allows only once the event is committed. If the event cannot
/// be written the response (and with it the channel's receiver) is dropped,
/// the task's next send fails and it stops: nothing computed early is sent.
fn match_lines(
    store: crate::records::RecordStore,
    entries: Vec<Result<IdNumber, String>>,
    decisions: Arc<Vec<(String, Decision)>>,
    caller: Caller,
    native: bool,
    disclosed: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let datasets: Arc<Vec<String>> = Arc::new(decisions.iter().map(|(d, _)| d.clone()).collect());
    // Input entries per chunk: one set-based query, then the chunk's NDJSON
    // lines rendered off the async workers.
    let chunk_size = store.match_chunk_size();
    let mut chunks = Vec::with_capacity(entries.len().div_ceil(chunk_size));
    let mut entries = entries.into_iter().enumerate().peekable();
    while entries.peek().is_some() {
        chunks.push(entries.by_ref().take(chunk_size).collect::<Vec<_>>());
    }
    let caller = Arc::new(caller);
    let mut rendered = futures_util::stream::iter(chunks)
        .map(move |chunk| {
            let store = store.clone();
            let datasets = datasets.clone();
            let decisions = decisions.clone();
            let caller = caller.clone();
            let disclosed = disclosed.clone();
            tokio::spawn(async move {
                let ids: Vec<IdNumber> = chunk.iter().filter_map(|(_, e)| e.clone().ok()).collect();
                let found = store.match_chunk_text(&ids, &datasets).await?;
                let rendered = tokio::task::spawn_blocking(move || {
                    let (bytes, records) = render_chunk(chunk, found, &decisions, &caller, native);
                    disclosed.fetch_add(records, Ordering::Relaxed);
                    bytes
                })
                .await;
                rendered.map_err(|_| crate::records::RecordsError::Corrupt("match render"))
            })
        })
        .buffered(MATCH_IN_FLIGHT)
        .map(|joined| match joined {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "match stream failed");
                Err(std::io::Error::other("match failed"))
            }
            Err(e) => {
                tracing::error!(error = %e, "match task failed");
                Err(std::io::Error::other("match failed"))
            }
        });
    let (tx, rx) = tokio::sync::mpsc::channel(MATCH_IN_FLIGHT);
    tokio::spawn(async move {
        while let Some(item) = rendered.next().await {
            let failed = item.is_err();
            // A closed channel: the response was dropped (audit failure or
            // client gone); stop querying.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The lines of one chunk and the number of records they disclose; `found`
/// holds the records of the chunk's valid entries, in order. Each line is
/// `{"index", "status"[, "error"][, "records"]}`, written straight into the
/// chunk's buffer.
fn render_chunk(
    chunk: Vec<(usize, Result<IdNumber, String>)>,
    found: Vec<Vec<RecordText>>,
    decisions: &[(String, Decision)],
    caller: &Caller,
    native: bool,
) -> (Bytes, u64) {
    let mut buf = Vec::with_capacity(chunk.len() * 512);
    let mut disclosed = 0u64;
    let mut found = found.iter();
    for (index, entry) in &chunk {
        let _ = write!(buf, "{{\"index\":{index},\"status\":");
        match entry {
            Err(reason) => {
                buf.extend_from_slice(b"\"invalid\",\"error\":");
                write_json(&mut buf, reason);
            }
            Ok(_) => {
                // Written as a match; rewritten as no_record if no view
                // turns out visible.
                let line_start = buf.len();
                buf.extend_from_slice(b"\"match\",\"records\":");
                let records = found.next().map_or(&[][..], Vec::as_slice);
                let shown = write_views(&mut buf, caller, native, decisions, records).len();
                if shown == 0 {
                    buf.truncate(line_start);
                    buf.extend_from_slice(b"\"no_record\"");
                }
                disclosed += shown as u64;
            }
        }
        buf.extend_from_slice(b"}\n");
    }
    (Bytes::from(buf), disclosed)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    dataset: String,
    purpose: String,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    authorisation_ref: Option<String>,
}

/// `POST /v1/policy/explain`: a system client asks about itself; an admin
/// may name any department (and region).
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = super::records::read_body(&state, body).await?;
    let req: ExplainBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("expected {{\"dataset\", \"purpose\"[, \"department\"]}}: {e}"),
        path: None,
    })?;
    let (department, region) = match caller.role {
        Role::System => {
            if req
                .department
                .as_deref()
                .is_some_and(|d| d != caller.department.as_str())
            {
                return Err(ApiError::Forbidden(
                    "a system client may only ask about its own department".into(),
                ));
            }
            (caller.department.as_str().to_owned(), caller.region)
        }
        Role::Admin => {
            let region = match &req.region {
                Some(r) => {
                    adapters::domain::RegionCode::parse(r).map_err(|e| ApiError::BadRequest {
                        code: "invalid_region",
                        message: e.to_string(),
                        path: Some("region".into()),
                    })?
                }
                None => caller.region,
            };
            (
                req.department
                    .clone()
                    .unwrap_or_else(|| caller.department.as_str().to_owned()),
                region,
            )
        }
        Role::Auditor => {
            return Err(ApiError::Forbidden(
                "auditors read the audit log; policy explanations are for systems and admins"
                    .into(),
            ));
        }
    };
    let set = state.policies.current();
    let now = OffsetDateTime::now_utc();
    let grants = GrantSet::new(
        GrantStore::list_active(&state.db, &department, now)
            .await
            .map_err(ApiError::internal)?,
    );
    let explanation = set.explain(&AccessRequest {
        department: &department,
        region,
        dataset: &req.dataset,
        purpose: &req.purpose,
        authorisation: req.authorisation_ref.as_deref(),
        now,
        grants: &grants,
    });
    Ok(with_policy_version(Json(explanation).into_response(), &set))
}
