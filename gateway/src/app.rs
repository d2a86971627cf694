//! Application state, the router and the edge middleware.
//!
//! The request path, top to bottom (each step a named function with its own
//! span; see the crate docs for the whole flow):
//!
//! 1. [`crate::server`]: TLS handshake, client certificate verified against
//!    the CA bundle and CRL, parsed once per connection ([`ConnInfo`]).
//! 2. `observe`: span and metrics for every request.
//! 3. [`crate::accesslog::record`]: the request's audit event, durable
//!    before the response leaves (503 and nothing disclosed otherwise).
//! 4. `authenticate`: certificate subject → registered [`Caller`], or 403.
//! 5. `rate_limit`: per-client quota, or 429 with `Retry-After`.
//! 6. `limit_body`: declared body size over the limit → 413.
//! 7. `deadline`: no response headers within `request_timeout_secs` → 503
//!    (recorded by step 3 like any answer).
//! 8. the handler, whose signature declares the role it requires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{ApiError, InternalErrorDetail};
use crate::extract::{Admin, Require};
use crate::identity::{Caller, PeerCertificate};
use crate::ratelimit::CheckRate;
use crate::registry::RegistryHandle;
use crate::routes;
use crate::storage::Database;
use crate::telemetry::Metrics;
use crate::tls::TlsReloader;

/// What the TLS edge learned about a connection; inserted into every
/// request's extensions by the server.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The verified client certificate (always present: client
    /// certificates are mandatory), parsed once per connection.
    pub certificate: Option<PeerCertificate>,
}

/// Shared state: one reference-counted handle, so the clones axum makes
/// for every middleware layer and handler of every request cost one atomic
/// increment, not one per field. Fields are reached through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every request shares: configuration, stores, policies, the audit
/// writer. Each part that reloads swaps atomically inside its own handle.
pub struct Shared {
    /// Configuration, immutable after start-up.
    pub config: Arc<Config>,
    /// The database pool (pools are internally shared).
    pub db: Database,
    /// The audit log's store: on SQLite a file of its own beside the main
    /// one, on PostgreSQL the same database (see
    /// [`Database::open_audit`]).
    pub audit_db: Database,
    /// The client registry; swapped atomically on reload.
    pub registry: Arc<RegistryHandle>,
    /// TLS material; swapped atomically on reload.
    pub tls: Arc<TlsReloader>,
    /// Rate limiters; shared so every connection draws from the same buckets.
    pub rate_limits: Arc<dyn CheckRate>,
    /// Metrics collectors (internally shared).
    pub metrics: Metrics,
    /// The dataset catalogue: schemas compiled once at start-up.
    pub catalogue: Arc<adapters::catalogue::Catalogue>,
    /// The versioned record store (a handle on the pool).
    pub records: crate::records::RecordStore,
    /// The sharing policies in force; swapped atomically on reload.
    pub policies: Arc<crate::policy::PolicyHandle>,
    /// The audit log writer (a handle on the single writer task).
    pub audit: crate::audit::AuditWriter,
    /// Keys for the HMACs of data subjects in audit events.
    pub subject_keys: Arc<crate::audit::SubjectKeys>,
    /// `Keep-Alive` of HTTP/1.1 responses (`timeout=N`, see
    /// [`crate::config::Limits::keep_alive_secs`]), made once.
    pub keep_alive: HeaderValue,
}

impl AppState {
    /// Reloads the TLS material and the client registry. Each keeps its
    /// previous version if the new one is invalid; the errors are returned.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.tls.reload() {
            errors.push(e.to_string());
        }
        if let Err(e) = self.registry.reload() {
            errors.push(e.to_string());
        }
        match self.policies.reload() {
            Ok(r) if r.changed => {
                tracing::info!(version = %r.version, previous = %r.previous, "policy set reloaded");
            }
            Ok(_) => {}
            Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
        }
        if errors.is_empty() {
            tracing::info!("reloaded TLS material and client registry");
        } else {
            for e in &errors {
                tracing::error!(error = %e, "reload failed; previous material stays in force");
            }
        }
        errors
    }
}

/// The full router with the edge middleware.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/admin/clients", get(list_clients))
        .route("/v1/schemas", get(routes::records::list_schemas))
        .route("/v1/schemas/{dataset}", get(routes::records::get_schema))
        .route("/v1/records/{dataset}", post(routes::records::publish))
        .route(
            "/v1/records/{dataset}/withdrawals",
            post(routes::records::withdraw),
        )
        .route(
            "/v1/records/{dataset}/history",
            get(routes::records::history),
        )
        .route("/v1/imports/{dataset}", post(routes::records::import))
        .route("/v1/persons/{id_number}", get(routes::persons::person))
        .route("/v1/match", post(routes::persons::match_ids))
        .route("/v1/policy/explain", post(routes::persons::explain))
        .route("/v1/policy/simulate", post(routes::policy::simulate))
        .route("/v1/audit/events", get(routes::audit::events))
        .route("/v1/audit/export", get(routes::audit::export))
        .route("/v1/audit/verify", get(routes::audit::verify))
        .route("/v1/audit/proof/{event_id}", get(routes::audit::proof))
        .route("/v1/audit/consistency", get(routes::audit::consistency))
        .route("/v1/audit/checkpoints", get(routes::audit::checkpoints))
        .route("/v1/audit/reports/{report}", get(routes::audit::report))
        .route(
            "/v1/audit/persons/{id_number}",
            get(routes::audit::person_report),
        );
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(state.clone(), limit_body))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::accesslog::record,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// How much longer than the request's deadline the audit step may take
/// before the outermost layer gives up on it.
const AUDIT_GRACE: Duration = Duration::from_secs(30);

/// Cancels a request whose handler has not produced its response headers
/// within `request_timeout_secs`: 503, recorded by the audit step like any
/// other answer (this layer runs beneath it).
async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let timeout = Duration::from_secs(state.config.limits.request_timeout_secs);
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::Unavailable("the request took too long and was cancelled").into_response()
        }
    }
}

/// Span and metrics for every request, and the one place internal errors
/// are logged. Routes are recorded by template, never by concrete path
/// (paths may hold ID numbers).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let version = req.version();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        client = tracing::field::Empty,
        department = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    // The last resort, should the audit step itself hang (a stuck store):
    // then no event can be written, and the answer discloses nothing. The
    // request's own deadline ([`deadline`]) runs beneath the audit step.
    let timeout = Duration::from_secs(state.config.limits.request_timeout_secs) + AUDIT_GRACE;
    let resp = async {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                ApiError::Unavailable("the request took too long and was cancelled").into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    let mut resp = resp;
    if let Ok(v) = HeaderValue::from_str(&state.policies.version()) {
        resp.headers_mut().insert("x-policy-version", v);
    }
    // HTTP/1.1 only: HTTP/2 forbids connection-specific headers (and keeps
    // its connections open with pings).
    if version == axum::http::Version::HTTP_11 {
        resp.headers_mut().insert(
            header::HeaderName::from_static("keep-alive"),
            state.keep_alive.clone(),
        );
    }
    let status = resp.status();
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    if let Some(detail) = resp.extensions().get::<InternalErrorDetail>() {
        span.in_scope(|| tracing::error!(error = %detail.0, "internal error"));
    } else {
        span.in_scope(|| tracing::debug!("request done"));
    }
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    resp
}

/// Resolves the caller from the connection's verified certificate and the
/// client registry. Fails closed: no certificate or no registration → 403.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let cert = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.certificate.as_ref());
    let Some(caller) = cert.and_then(|c| state.registry.current().resolve(c)) else {
        return ApiError::UnknownClient.into_response();
    };
    let span = tracing::Span::current();
    span.record("client", caller.client_id.as_str());
    span.record("department", caller.department.as_str());
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut()
        .insert(crate::accesslog::AuditCaller(caller));
    resp
}

/// Per-client quota, set per department.
async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(caller) = req.extensions().get::<Caller>()
        && let Err(retry_after_secs) = state.rate_limits.check(caller)
    {
        state
            .metrics
            .rate_limited
            .with_label_values(&[caller.department.as_str()])
            .inc();
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }
    next.run(req).await
}

/// Rejects a declared body over the limit before reading it, and caps
/// streamed bodies (handlers map the cap's error to 413 too).
async fn limit_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge { limit }.into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, body)).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see the OpenAPI description (gateway/openapi.yaml)".into())
}

/// `GET /v1/whoami`: the caller's identity as the gateway resolved it.
async fn whoami(caller: Caller) -> impl IntoResponse {
    axum::Json(json!({
        "client_id": caller.client_id,
        "department": caller.department,
        "role": caller.role,
        "region": caller.region,
        "region_name": caller.region.name(),
        "certificate": caller.certificate,
    }))
}

/// `GET /healthz`: the process is alive.
async fn healthz(_caller: Caller) -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and schemas and policies are loaded.
async fn readyz(State(state): State<AppState>, _caller: Caller) -> Response {
    let db_ok = state.db.ping().await.is_ok();
    let audit = state.audit.health();
    let ready = db_ok && audit.is_ready();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "audit": audit,
        "datasets": state.catalogue.datasets().count(),
        "policy_version": state.policies.version().to_string(),
        "instance": state.config.instance_id,
    });
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<AppState>, _caller: Caller) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// `GET /v1/admin/clients`: the client registry (admins only).
async fn list_clients(State(state): State<AppState>, _admin: Require<Admin>) -> Response {
    let reg = state.registry.current();
    axum::Json(json!({ "clients": reg.entries() })).into_response()
}
