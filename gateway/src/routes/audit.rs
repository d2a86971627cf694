//! The auditor's side (role `auditor` only). Every auditor query is itself
//! recorded (等保 2.0: the audit administrators' own actions are audited):
//! the edge's audit step records each request with its route and status, and
//! the subject searched for is kept as its HMAC only.
//!
//! - `GET /v1/audit/events`: filtered, cursor-paginated events.
//! - `GET /v1/audit/export?format=ndjson|csv`: the same filter, streamed.
//! - `GET /v1/audit/verify`: recompute chains, Merkle roots and signatures.
//! - `GET /v1/audit/proof/{event_id}`: inclusion proof against the latest checkpoint.
//! - `GET /v1/audit/consistency?log=…&first=…&second=…`: consistency proof.
//! - `GET /v1/audit/checkpoints`: every signed checkpoint, for witnesses.
//! - `GET /v1/audit/reports/{report}`: `per-department-day`, `denials`,
//!   `most-accessed`, `anomalies`.
//! - `GET /v1/audit/persons/{id_number}`: every access to one person, with proofs.

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use adapters::domain::IdNumber;

use crate::app::AppState;
use crate::audit::query::{self, FilterParams};
use crate::audit::{AuditError, ExportFormat, VerifyOptions};
use crate::error::ApiError;
use crate::extract::{Auditor, Path, Query, Require};

/// Maps audit-layer errors to the API's error shape.
pub fn audit_error(e: AuditError) -> ApiError {
    match e.status() {
        400 => ApiError::bad_request("bad_parameter", e.to_string()),
        404 => ApiError::NotFound(e.to_string()),
        409 => ApiError::bad_request("not_checkpointed", e.to_string()),
        503 => ApiError::Unavailable("the audit store is unavailable"),
        _ => ApiError::internal(e),
    }
}

/// `GET /v1/audit/events`.
pub async fn events(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Query(params): Query<FilterParams>,
) -> Result<Response, ApiError> {
    let (filter, cursor, limit) = params.parse(&state.subject_keys).map_err(audit_error)?;
    let page = query::query(&state.audit_db, &filter, cursor.as_ref(), limit)
        .await
        .map_err(audit_error)?;
    Ok(Json(page).into_response())
}

/// `GET /v1/audit/export?format=ndjson|csv&…filters`.
pub async fn export(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    // `format` sits beside the filter parameters; split it off.
    let mut format = ExportFormat::Ndjson;
    let mut rest = Vec::new();
    for (k, v) in url_pairs(raw.as_deref().unwrap_or("")) {
        if k == "format" {
            format = match v.as_str() {
                "ndjson" => ExportFormat::Ndjson,
                "csv" => ExportFormat::Csv,
                _ => {
                    return Err(ApiError::BadRequest {
                        code: "bad_format",
                        message: "format must be ndjson or csv".into(),
                        path: Some("format".into()),
                    });
                }
            };
        } else {
            rest.push((k, v));
        }
    }
    let params: FilterParams = serde_json::from_value(serde_json::Value::Object(
        rest.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    ))
    .map_err(|e| ApiError::bad_request("bad_parameter", e.to_string()))?;
    let (filter, _, _) = params.parse(&state.subject_keys).map_err(audit_error)?;
    let stream = query::export_stream(state.audit_db.clone(), filter, format);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(resp)
}

/// `GET /v1/audit/verify`.
pub async fn verify(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
) -> Result<Response, ApiError> {
    let report = crate::audit::verify(&state.audit_db, VerifyOptions::default())
        .await
        .map_err(audit_error)?;
    let status = if report.ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::CONFLICT
    };
    Ok((status, Json(report)).into_response())
}

/// `GET /v1/audit/proof/{event_id}`.
pub async fn proof(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Path(event_id): Path<String>,
) -> Result<Response, ApiError> {
    let proof = crate::audit::proofs::inclusion_proof(&state.audit_db, &event_id)
        .await
        .map_err(audit_error)?;
    Ok(Json(proof).into_response())
}

#[derive(Deserialize)]
pub struct ConsistencyParams {
    log: String,
    first: u64,
    #[serde(default)]
    second: Option<u64>,
}

/// `GET /v1/audit/consistency?log=…&first=N[&second=M]`.
pub async fn consistency(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Query(p): Query<ConsistencyParams>,
) -> Result<Response, ApiError> {
    let proof = crate::audit::proofs::consistency_proof(&state.audit_db, &p.log, p.first, p.second)
        .await
        .map_err(audit_error)?;
    Ok(Json(proof).into_response())
}

#[derive(Deserialize)]
pub struct CheckpointParams {
    #[serde(default)]
    log: Option<String>,
}

/// `GET /v1/audit/checkpoints[?log=…]`: for outside witnesses.
pub async fn checkpoints(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Query(p): Query<CheckpointParams>,
) -> Result<Response, ApiError> {
    let export = crate::audit::proofs::export_checkpoints(&state.audit_db, p.log.as_deref())
        .await
        .map_err(audit_error)?;
    Ok(Json(export).into_response())
}

#[derive(Deserialize)]
pub struct ReportParams {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    baseline_days: Option<u32>,
}

impl ReportParams {
    /// `from` and `to` as unix ms; an empty parameter counts as absent, as
    /// in the event search.
    fn range(&self) -> Result<(Option<i64>, Option<i64>), ApiError> {
        let time = |name, value: &Option<String>| {
            value
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| query::parse_time(name, s))
                .transpose()
                .map_err(audit_error)
        };
        Ok((time("from", &self.from)?, time("to", &self.to)?))
    }
}

/// China Standard Time, for calendar days in reports.
const CST_OFFSET_SECS: i32 = 8 * 3600;

/// `GET /v1/audit/reports/{report}`.
pub async fn report(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Path(report): Path<String>,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let now = crate::audit::event::now_ms();
    let (from, to) = p.range()?;
    let from = from.unwrap_or(now - 30 * 86_400_000);
    let to = to.unwrap_or(now + 1);
    let body = match report.as_str() {
        "per-department-day" => json!(
            query::accesses_per_department_per_day(&state.audit_db, from, to, CST_OFFSET_SECS)
                .await
                .map_err(audit_error)?
        ),
        "denials" => json!(
            query::denials(&state.audit_db, from, to)
                .await
                .map_err(audit_error)?
        ),
        "most-accessed" => json!(
            query::most_accessed_subjects(
                &state.audit_db,
                from,
                to,
                p.limit.unwrap_or(20).min(1000)
            )
            .await
            .map_err(audit_error)?
        ),
        "anomalies" => json!(
            query::volume_anomalies(
                &state.audit_db,
                to - 1,
                p.baseline_days.unwrap_or(28).clamp(1, 366),
                CST_OFFSET_SECS
            )
            .await
            .map_err(audit_error)?
        ),
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown report {other:?}: per-department-day, denials, most-accessed, anomalies"
            )));
        }
    };
    Ok(Json(json!({ "report": report, "from": from, "to": to, "rows": body })).into_response())
}

/// `GET /v1/audit/persons/{id_number}`: every access to one person, each
/// with an inclusion proof against a checkpoint.
pub async fn person_report(
    State(state): State<AppState>,
    _auditor: Require<Auditor>,
    Path(id): Path<String>,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let id = IdNumber::parse(&id).map_err(|e| ApiError::BadRequest {
        code: "invalid_id_number",
        message: format!("the ID number in the path is not valid: {e}"),
        path: Some("id_number".into()),
    })?;
    let (from, to) = p.range()?;
    let report =
        crate::audit::proofs::subject_report(&state.audit_db, &state.subject_keys, &id, from, to)
            .await
            .map_err(audit_error)?;
    Ok(Json(report).into_response())
}

/// Decodes `a=b&c=d` (percent-decoding, `+` as space).
fn url_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                        Some(Ok(b)) => {
                            out.push(b);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}
