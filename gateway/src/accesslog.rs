//! The audit step of the request path: one event for every request that
//! reaches the HTTP layer — allowed, denied, invalid or failed — made
//! durable before the response leaves. If it cannot be written, the
//! response is replaced by a 503 and nothing is disclosed (fail closed).
//!
//! Every response that got past this step carries `X-Audit-Event`: the id
//! of its committed event.
//!
//! Handlers that disclose data describe what they disclosed in an
//! [`AuditDetail`] put into the response's extensions; this step reads it,
//! turns ID numbers into keyed HMACs, and appends the event.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use adapters::domain::IdNumber;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::{AppState, ConnInfo};
use crate::audit::event::{AuditEvent, Outcome};
use crate::error::ApiError;
use crate::identity::Caller;

/// What a data handler disclosed (or decided), for the audit event.
/// Never holds a field value; ID numbers become HMACs before storage.
#[derive(Clone, Debug, Default)]
pub struct AuditDetail {
    pub datasets: Vec<String>,
    pub purpose: Option<String>,
    pub authorisation_ref: Option<String>,
    pub grant_ids: Vec<String>,
    /// The legal bases of the rules that allowed it, each once.
    pub legal_bases: Vec<String>,
    pub subjects: Vec<IdNumber>,
    pub records_disclosed: u64,
    /// (field path, treatment) of each disclosed field.
    pub fields: Vec<(String, String)>,
    /// Rule ids behind the decision.
    pub rules: Vec<String>,
    pub policy_version: Option<String>,
    /// The decision, where the status alone does not say it (a lookup the
    /// rules allowed whose answer is 404: nothing visible). `None`: from
    /// the status.
    pub outcome: Option<Outcome>,
}

/// Put in a response's extensions by a handler whose answer streams (a
/// batch match): the audit step stores the committed access event's id in
/// it, and the stream, when it ends, records how many records it disclosed
/// in a [`EventKind::StreamCompleted`](crate::audit::event::EventKind) event
/// naming that id.
#[derive(Clone, Debug, Default)]
pub struct StreamAudit {
    access_event: Arc<OnceLock<String>>,
}

impl StreamAudit {
    /// The committed access event's id, once the audit step has set it.
    pub fn access_event(&self) -> Option<&str> {
        self.access_event.get().map(String::as_str)
    }
}

/// Marker put in response extensions by the authenticate step, so the audit
/// step (which runs outside it) knows the caller.
#[derive(Clone, Debug)]
pub struct AuditCaller(pub Caller);

/// The audit step (see the module docs).
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let action = format!("{} {route}", req.method());
    let conn = req.extensions().get::<ConnInfo>().cloned();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let caller = resp.extensions_mut().remove::<AuditCaller>().map(|c| c.0);
    let detail = resp.extensions_mut().remove::<AuditDetail>();
    let stream_audit = resp.extensions_mut().remove::<StreamAudit>();
    let error_class = resp
        .extensions()
        .get::<crate::error::ErrorClass>()
        .map(|c| c.0);

    let mut b = AuditEvent::access(action)
        .route(route)
        .status(status.as_u16());
    if let Some(c) = &caller {
        b = b.caller(c);
    } else if let Some(cert) = conn.as_ref().and_then(|c| c.certificate.as_ref()) {
        b = b
            .client(cert.common_name.clone(), "")
            .certificate(cert.fingerprint.clone(), cert.serial.clone());
    }
    if let Some(c) = &conn {
        b = b.source(c.peer);
    }
    if let Some(class) = error_class {
        b = b.error_class(class);
    }
    // Refused by a rule, a role, a quota or validation (4xx): deny; failed
    // on our or a backend's side: error.
    let outcome = detail
        .as_ref()
        .and_then(|d| d.outcome)
        .unwrap_or(if status.is_success() {
            Outcome::Allow
        } else if status.is_client_error() {
            Outcome::Deny
        } else {
            Outcome::Error
        });
    match detail {
        Some(d) => {
            for ds in &d.datasets {
                b = b.dataset(ds.clone());
            }
            if let Some(p) = d.purpose {
                b = b.purpose(p);
            }
            if let Some(a) = d.authorisation_ref {
                b = b.authorisation_ref(a);
            }
            for g in d.grant_ids {
                b = b.grant_id(g);
            }
            if !d.legal_bases.is_empty() {
                b = b.legal_basis(d.legal_bases.join(" | "));
            }
            b = b.subjects(d.subjects.iter().map(|id| state.subject_keys.subject(id)));
            b = b.records_disclosed(d.records_disclosed);
            for (f, t) in d.fields {
                b = b.field(f, t);
            }
            b = b.decision(outcome, d.rules, d.policy_version);
        }
        None => {
            b = b.decision(outcome, Vec::<String>::new(), None);
        }
    }
    let event = b.latency(started.elapsed()).build();
    let id = event.event_id.to_string();
    let event_id = axum::http::HeaderValue::from_str(&id);
    match state.audit.append(event).await {
        Ok(receipt) => {
            if let Some(s) = stream_audit {
                let _ = s.access_event.set(id);
            }
            // The committed event's id, so a client can cite the record of
            // its own access (and tests can check none went missing).
            if let (Some(_), Ok(v)) = (receipt, event_id) {
                resp.headers_mut().insert("x-audit-event", v);
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "audit event not durable: refusing the response");
            drop(resp);
            ApiError::Unavailable("the audit log cannot be written; no data is disclosed")
                .into_response()
        }
    }
}
