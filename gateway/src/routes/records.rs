//! Publishing records and reading schemas.
//!
//! - `GET /v1/schemas`, `GET /v1/schemas/{dataset}`: the catalogue.
//! - `POST /v1/records/{dataset}`: one record or an array (JSON), or NDJSON
//!   (`application/x-ndjson`, streamed); canonical by default, the
//!   publisher's native format with `?format=native`. Atomic: every record is
//!   stored or none, and a 422 lists every failing record.
//! - `POST /v1/imports/{dataset}`: a CSV or XLSX ledger through the
//!   publisher's ledger mapping; errors carry sheet, row and column.
//! - `POST /v1/records/{dataset}/withdrawals`: withdraw records from sharing
//!   (a new version; nothing is deleted).
//! - `GET /v1/records/{dataset}/history?key=…`: every version (owner only).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use adapters::catalogue::{Dataset, RecordError, Validated};

use crate::app::AppState;
use crate::error::{ApiError, FieldError};
use crate::extract::{Path, Query, Require, System};
use crate::identity::Caller;
use crate::records::{NewRecord, Publisher, RecordsError, Withdrawal};

/// Most errors listed in one 422 answer; the count says how many there were.
const MAX_ERRORS: usize = 1_000;
/// Records validated and written per chunk of a streamed load.
const CHUNK: usize = 1_000;

/// `GET /v1/schemas`: the datasets with their owners.
pub async fn list_schemas(State(state): State<AppState>, _caller: Caller) -> Response {
    let list: Vec<Value> = state
        .catalogue
        .datasets()
        .map(|d| {
            json!({
                "dataset": d.id(),
                "owner": d.owner(),
                "title": d.title(),
                "title_zh": d.title_zh(),
                "update_cycle": d.update_cycle(),
                "sharing_method": d.sharing_method(),
                "schema": format!("/v1/schemas/{}", d.id()),
            })
        })
        .collect();
    Json(json!({ "datasets": list })).into_response()
}

/// `GET /v1/schemas/{dataset}`: the dataset's JSON Schema with its
/// catalogue annotations.
pub async fn get_schema(
    State(state): State<AppState>,
    _caller: Caller,
    Path(dataset): Path<String>,
) -> Result<Response, ApiError> {
    let d = dataset_of(&state, &dataset)?;
    Ok(Json(d.schema().clone()).into_response())
}

fn dataset_of<'a>(state: &'a AppState, id: &str) -> Result<&'a Dataset, ApiError> {
    state
        .catalogue
        .dataset(id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown dataset {id:?}; see GET /v1/schemas")))
}

/// Only the owner publishes a dataset.
fn check_owner(caller: &Caller, d: &Dataset) -> Result<(), ApiError> {
    if caller.department.as_str() == d.owner() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "dataset {} is published by {} only",
            d.id(),
            d.owner()
        )))
    }
}

#[derive(Deserialize)]
pub struct FormatQuery {
    #[serde(default)]
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Canonical,
    Native,
}

fn format_of(q: &FormatQuery) -> Result<Format, ApiError> {
    match q.format.as_deref() {
        None | Some("canonical") => Ok(Format::Canonical),
        Some("native") => Ok(Format::Native),
        Some(other) => Err(ApiError::BadRequest {
            code: "bad_format",
            message: format!("format must be canonical or native, not {other:?}"),
            path: Some("format".into()),
        }),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads the whole body, mapping the size cap to 413.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| body_error(state, &e))
}

fn body_error(state: &AppState, e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge {
                limit: state.config.limits.max_body_bytes,
            };
        }
        cur = err.source();
    }
    ApiError::bad_request("body_read", "the request body could not be read")
}

/// Validates one incoming document: native → canonical when asked, then the
/// schema and domain rules, then the publisher's region scope.
fn validate_one(
    d: &Dataset,
    caller: &Caller,
    format: Format,
    doc: Value,
) -> Result<Validated, Vec<RecordError>> {
    let canonical = match format {
        Format::Canonical => doc,
        Format::Native => {
            let adapter = adapters::adapter::for_dataset(d.id())
                .ok_or_else(|| vec![RecordError::at("", "this dataset has no native format")])?;
            adapter.to_canonical(&doc)?
        }
    };
    let v = d.validate(canonical)?;
    check_region(d, caller, &v)?;
    Ok(v)
}

fn check_region(d: &Dataset, caller: &Caller, v: &Validated) -> Result<(), Vec<RecordError>> {
    if caller.region.contains(&v.region) {
        Ok(())
    } else {
        let pointer = d
            .schema()
            .get("x-region")
            .and_then(Value::as_str)
            .map(|p| format!("/{}", p.replace('.', "/")))
            .unwrap_or_default();
        Err(vec![RecordError::at(
            pointer,
            format!(
                "region {} lies outside the publisher's scope {}",
                v.region, caller.region
            ),
        )])
    }
}

fn new_record(v: Validated) -> NewRecord {
    NewRecord {
        natural_key: v.natural_key,
        region: v.region,
        subjects: v.subjects,
        payload: v.record,
    }
}

fn field_errors(record: Option<usize>, errs: Vec<RecordError>) -> impl Iterator<Item = FieldError> {
    errs.into_iter().map(move |e| FieldError {
        record,
        sheet: e.sheet,
        row: e.row,
        column: e.column,
        path: e.path,
        message: e.message,
    })
}

fn store_error(e: RecordsError) -> ApiError {
    match e {
        RecordsError::DuplicateKeys { indices } => ApiError::Unprocessable {
            errors: indices
                .into_iter()
                .map(|i| FieldError {
                    record: Some(i),
                    sheet: None,
                    row: None,
                    column: None,
                    path: String::new(),
                    message: "repeats the natural key of an earlier record in this request".into(),
                })
                .collect(),
        },
        RecordsError::InvalidRecord { index, reason } => ApiError::Unprocessable {
            errors: vec![FieldError {
                record: Some(index),
                sheet: None,
                row: None,
                column: None,
                path: String::new(),
                message: reason.into(),
            }],
        },
        other => ApiError::internal(other),
    }
}

/// Collects validation errors up to [`MAX_ERRORS`].
#[derive(Default)]
struct Errors {
    list: Vec<FieldError>,
    total: usize,
}

impl Errors {
    fn extend(&mut self, it: impl Iterator<Item = FieldError>) {
        for e in it {
            self.total += 1;
            if self.list.len() < MAX_ERRORS {
                self.list.push(e);
            }
        }
    }

    fn into_error(mut self) -> ApiError {
        if self.total > self.list.len() {
            self.list.push(FieldError {
                record: None,
                sheet: None,
                row: None,
                column: None,
                path: String::new(),
                message: format!("{} more error(s) not listed", self.total - self.list.len()),
            });
        }
        ApiError::Unprocessable { errors: self.list }
    }
}

fn summary_response(s: crate::records::PublishSummary, records: u64) -> Response {
    Json(json!({
        "records": records,
        "inserted": s.inserted,
        "updated": s.updated,
        "unchanged": s.unchanged,
    }))
    .into_response()
}

/// `POST /v1/records/{dataset}`.
pub async fn publish(
    State(state): State<AppState>,
    caller: Require<System>,
    Path(dataset): Path<String>,
    Query(q): Query<FormatQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let d = dataset_of(&state, &dataset)?;
    check_owner(&caller, d)?;
    let format = format_of(&q)?;
    match content_type(&headers).as_str() {
        "application/json" => publish_json(&state, &caller, d, format, body).await,
        "application/x-ndjson" => publish_ndjson(&state, &caller, d, format, body).await,
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type {other:?} is not accepted here: use application/json or application/x-ndjson"
        ))),
    }
}

async fn publish_json(
    state: &AppState,
    caller: &Caller,
    d: &Dataset,
    format: Format,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(state, body).await?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!(
            "the body is not valid JSON at line {}, column {}: {}",
            e.line(),
            e.column(),
            json_problem(&e)
        ),
        path: None,
    })?;
    drop(bytes);
    let (docs, single) = match doc {
        Value::Array(v) => (v, false),
        other => (vec![other], true),
    };
    if docs.is_empty() {
        return Err(ApiError::bad_request("empty", "the array holds no records"));
    }
    let mut errors = Errors::default();
    let mut good = Vec::with_capacity(docs.len());
    for (i, doc) in docs.into_iter().enumerate() {
        match validate_one(d, caller, format, doc) {
            Ok(v) => good.push(new_record(v)),
            Err(errs) => errors.extend(field_errors((!single).then_some(i), errs)),
        }
    }
    if errors.total > 0 {
        return Err(errors.into_error());
    }
    let n = good.len() as u64;
    let summary = state
        .records
        .publish(d.id(), &Publisher::from(caller), good)
        .await
        .map_err(store_error)?;
    Ok(summary_response(summary, n))
}

async fn publish_ndjson(
    state: &AppState,
    caller: &Caller,
    d: &Dataset,
    format: Format,
    body: Body,
) -> Result<Response, ApiError> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut publication = state
        .records
        .begin_publish(d.id(), &Publisher::from(caller))
        .await
        .map_err(store_error)?;
    let mut errors = Errors::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut index = 0usize;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return Err(io_body_error(state, e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let i = index;
        index += 1;
        let doc: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                errors.extend(std::iter::once(FieldError {
                    record: Some(i),
                    sheet: None,
                    row: None,
                    column: None,
                    path: String::new(),
                    message: format!(
                        "line {} is not valid JSON at column {}: {}",
                        i + 1,
                        e.column(),
                        json_problem(&e)
                    ),
                }));
                continue;
            }
        };
        match validate_one(d, caller, format, doc) {
            Ok(v) if errors.total == 0 => chunk.push(new_record(v)),
            Ok(_) => {}
            Err(errs) => errors.extend(field_errors(Some(i), errs)),
        }
        if chunk.len() >= CHUNK {
            publication
                .push(std::mem::take(&mut chunk))
                .await
                .map_err(store_error)?;
        }
    }
    if errors.total > 0 {
        let _ = publication.rollback().await;
        return Err(errors.into_error());
    }
    if index == 0 {
        return Err(ApiError::bad_request("empty", "the body holds no records"));
    }
    if !chunk.is_empty() {
        publication.push(chunk).await.map_err(store_error)?;
    }
    let summary = publication.commit().await.map_err(store_error)?;
    Ok(summary_response(summary, index as u64))
}

/// What kind of JSON problem, without echoing any of the input.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

fn io_body_error(state: &AppState, e: std::io::Error) -> ApiError {
    match e.get_ref() {
        Some(inner) => body_error(state, inner),
        None => ApiError::bad_request("body_read", "the request body could not be read"),
    }
}

#[derive(Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    sheet: Option<String>,
}

/// `POST /v1/imports/{dataset}`: a CSV (`text/csv`) or XLSX ledger.
pub async fn import(
    State(state): State<AppState>,
    caller: Require<System>,
    Path(dataset): Path<String>,
    Query(q): Query<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let d = dataset_of(&state, &dataset)?;
    check_owner(&caller, d)?;
    let ct = content_type(&headers);
    let is_xlsx = ct == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    if ct != "text/csv" && !is_xlsx {
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type {ct:?} is not a ledger: use text/csv or \
             application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )));
    }
    let mapping = adapters::ledger::LedgerMapping::default_for(d.id())
        .ok_or_else(|| ApiError::NotFound(format!("dataset {} has no ledger mapping", d.id())))?;
    let bytes = read_body(&state, body).await?;
    let d_owned = d.id().to_owned();
    let catalogue = state.catalogue.clone();
    let caller_c = caller.caller().clone();
    // Rows are parsed and validated on a blocking thread and written in
    // chunks into one transaction as they come: memory stays bounded by the
    // body and two chunks, whatever the number of rows. The first bad row
    // stops the writing (the rest is still validated, to report every
    // error) and the transaction is rolled back.
    let outcome = state
        .records
        .publish_produced(d.id(), &Publisher::from(caller.caller()), move |sink| {
            let d = catalogue
                .dataset(&d_owned)
                .ok_or_else(|| ApiError::NotFound("dataset vanished".into()))?;
            let unprocessable = |errs| ApiError::Unprocessable {
                errors: field_errors(None, errs).collect(),
            };
            // XLSX rows stream from the sheet's XML instead of loading the
            // whole sheet as a cell grid first.
            let mut book = None;
            let reader = if is_xlsx {
                let book =
                    book.insert(adapters::ledger::XlsxLedger::open(&bytes).map_err(unprocessable)?);
                book.read(&mapping, q.sheet.as_deref())
            } else {
                adapters::ledger::read_csv(&bytes[..], &mapping)
            };
            let reader = reader.map_err(unprocessable)?;
            let mut errors = Errors::default();
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut rows = 0u64;
            for rec in reader {
                rows += 1;
                match rec.and_then(|r| {
                    let located = r.clone();
                    let v = r.validate(d)?;
                    check_region(d, &caller_c, &v).map_err(|errs| {
                        errs.into_iter()
                            .map(|e| located.locate(e))
                            .collect::<Vec<_>>()
                    })?;
                    Ok(v)
                }) {
                    Ok(v) if errors.total == 0 => {
                        chunk.push(new_record(v));
                        // `false`: the store failed and already answered.
                        if chunk.len() >= CHUNK && !sink(std::mem::take(&mut chunk)) {
                            return Ok(rows);
                        }
                    }
                    Ok(_) => {}
                    Err(errs) => errors.extend(field_errors(None, errs)),
                }
            }
            if errors.total > 0 {
                return Err(errors.into_error());
            }
            if rows == 0 {
                return Err(ApiError::bad_request(
                    "empty",
                    "the ledger holds no records",
                ));
            }
            sink(chunk);
            Ok(rows)
        })
        .await
        .map_err(store_error)?;
    let (summary, n) = outcome?;
    Ok(summary_response(summary, n))
}

#[derive(Deserialize)]
pub struct WithdrawBody {
    natural_keys: Vec<String>,
}

/// `POST /v1/records/{dataset}/withdrawals` with `{"natural_keys": [...]}`.
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Require<System>,
    Path(dataset): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let d = dataset_of(&state, &dataset)?;
    check_owner(&caller, d)?;
    let bytes = read_body(&state, body).await?;
    let req: WithdrawBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("expected {{\"natural_keys\": [..]}}: {e}"),
        path: None,
    })?;
    let publisher = Publisher::from(caller.caller());
    let mut results = Vec::new();
    for key in &req.natural_keys {
        let r = state
            .records
            .withdraw(d.id(), &publisher, key)
            .await
            .map_err(store_error)?;
        results.push(match r {
            Withdrawal::Withdrawn { version } => json!({"status": "withdrawn", "version": version}),
            Withdrawal::AlreadyWithdrawn => json!({"status": "already_withdrawn"}),
            Withdrawal::NotFound => json!({"status": "not_found"}),
        });
    }
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    key: String,
}

/// `GET /v1/records/{dataset}/history?key=…`: every version (owner only).
pub async fn history(
    State(state): State<AppState>,
    caller: Require<System>,
    Path(dataset): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let d = dataset_of(&state, &dataset)?;
    check_owner(&caller, d)?;
    let versions = state
        .records
        .history(d.id(), &q.key)
        .await
        .map_err(store_error)?;
    if versions.is_empty() {
        return Err(ApiError::NotFound("no record with that natural key".into()));
    }
    let list: Vec<Value> = versions
        .into_iter()
        .map(|r| {
            json!({
                "version": r.version,
                "withdrawn": r.withdrawn,
                "published_by": r.published_by,
                "department": r.department,
                "published_at": r.published_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "record": r.payload,
            })
        })
        .collect();
    Ok(Json(json!({ "dataset": d.id(), "versions": list })).into_response())
}
