//! The data-sharing gateway for low-income-population records.
//!
//! Departments (civil affairs, rural revitalization, education, health
//! insurance, housing) exchange records through this one audited door:
//! mutually authenticated TLS, per-department adapters to canonical
//! records, field-level sharing policies, and a tamper-evident audit log.
//!
//! # Layout
//! - [`startup`]: [`startup::Application`] — build (load, bind) and run.
//! - [`server`]: accept loop, TLS handshake, connection limits, reload.
//! - [`tls`]: rustls server configuration, CRL, handshake classification.
//! - [`app`]: shared state, router, edge middleware.
//! - [`extract`]: the [`identity::Caller`] extractor and role requirements.
//! - [`identity`]: caller identity types; [`registry`]: the client registry.
//! - [`config`]: TOML + environment configuration, validated all at once.
//! - [`error`]: the one JSON error shape and its status table.
//! - [`ratelimit`], [`telemetry`]: quotas; logs, traces and metrics.
//! - [`storage`]: SQLite / PostgreSQL behind [`storage::Database`].
//! - [`records`]: the versioned record store.
//! - [`policy`]: sharing policies compiled into plans.
//! - [`audit`]: the tamper-evident access log.
//! - [`pki`]: the development PKI; [`demo`]: the one-command demo.
//!
//! # Request flow
//! TCP accept → TLS 1.3 handshake, client certificate verified against the
//! CA bundle and CRL → certificate subject resolved to a registered caller
//! (department, role, region) → rate limit → role check declared by the
//! handler → policy plan for (caller, dataset, purpose) → adapter → field
//! filter and masking → audit event made durable → response.

pub mod accesslog;
pub mod app;
pub mod audit;
pub mod config;
pub mod demo;
pub mod error;
pub mod extract;
pub mod fsutil;
pub mod identity;
pub mod keys;
pub mod pki;
pub mod policy;
pub mod ratelimit;
pub mod records;
pub mod registry;
pub mod routes;
pub mod seed;
pub mod server;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod tls;
