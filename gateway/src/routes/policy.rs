//! Policy administration over the API.
//!
//! - `POST /v1/policy/simulate` (admins): compile a draft policy set and run
//!   sample requests against it and against the set in force, without
//!   activating anything; the answer lists what would change. The CLI
//!   `gateway policy simulate` produces the same report from folders.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::error::{ApiError, ErrorClass};
use crate::extract::{Admin, Require};
use crate::policy::{PolicyError, PolicySet, Sample, SimulationReport, SourceFile, Warning};

/// Most samples in one simulation.
pub const MAX_SAMPLES: usize = 1_000;
/// Most files in one draft.
pub const MAX_DRAFT_FILES: usize = 200;

/// The body of `POST /v1/policy/simulate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    /// The complete draft set: file name → YAML text. Names end in `.yaml`
    /// or `.yml` and are what errors cite.
    pub files: BTreeMap<String, String>,
    /// Sample requests (as for `gateway policy simulate`).
    pub samples: Vec<Sample>,
}

/// The answer: the report plus the draft's load warnings.
#[derive(Debug, Serialize)]
pub struct SimulateAnswer {
    #[serde(flatten)]
    pub report: SimulationReport,
    /// Warnings of the draft (conflicts, unreachable or expired rules).
    pub warnings: Vec<Warning>,
}

#[derive(Serialize)]
struct InvalidDraft<'a> {
    error: InvalidDraftInner<'a>,
}

#[derive(Serialize)]
struct InvalidDraftInner<'a> {
    code: &'static str,
    message: String,
    /// Every error, each with file, line and JSON pointer.
    errors: &'a [PolicyError],
}

/// `POST /v1/policy/simulate`: 200 with the report; 400 on a malformed
/// body; 422 listing every error (file, line, pointer) when the draft does
/// not compile. Nothing is activated either way.
pub async fn simulate(
    State(state): State<AppState>,
    _admin: Require<Admin>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = super::records::read_body(&state, body).await?;
    let req: SimulateBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("expected {{\"files\": {{name: yaml text}}, \"samples\": [...]}}: {e}"),
        path: None,
    })?;
    if req.files.is_empty() || req.files.len() > MAX_DRAFT_FILES {
        return Err(ApiError::BadRequest {
            code: "invalid_draft",
            message: format!("a draft has 1 to {MAX_DRAFT_FILES} files"),
            path: Some("files".into()),
        });
    }
    if let Some(name) = req
        .files
        .keys()
        .find(|n| !(n.ends_with(".yaml") || n.ends_with(".yml")) || n.contains(['/', '\\']))
    {
        return Err(ApiError::BadRequest {
            code: "invalid_draft",
            message: format!(
                "file name {:?} must be a plain name ending in .yaml or .yml",
                name.chars().take(80).collect::<String>()
            ),
            path: Some(format!(
                "files/{}",
                name.chars().take(80).collect::<String>()
            )),
        });
    }
    if req.samples.len() > MAX_SAMPLES {
        return Err(ApiError::BadRequest {
            code: "too_many_samples",
            message: format!(
                "{} samples; at most {MAX_SAMPLES} per simulation",
                req.samples.len()
            ),
            path: Some("samples".into()),
        });
    }
    let sources: Vec<SourceFile> = req
        .files
        .into_iter()
        .map(|(name, text)| SourceFile { name, text })
        .collect();
    let active = state.policies.current();
    let handle = state.policies.clone();
    let samples = req.samples;
    // Compiling a set and applying plans is CPU work: off the I/O threads.
    let outcome = tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        PolicySet::from_sources_at(&sources, handle.datasets(), handle.key(), now).map(
            |(draft, warnings)| SimulateAnswer {
                report: crate::policy::simulate(&draft, &active, &samples, now),
                warnings,
            },
        )
    })
    .await
    .map_err(ApiError::internal)?;
    match outcome {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(errors) => {
            let body = InvalidDraft {
                error: InvalidDraftInner {
                    code: "invalid_policy",
                    message: format!(
                        "the draft policy set does not load: {} error(s); nothing was activated",
                        errors.len()
                    ),
                    errors: &errors,
                },
            };
            let mut resp = (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            resp.extensions_mut().insert(ErrorClass("invalid_policy"));
            Ok(resp)
        }
    }
}
