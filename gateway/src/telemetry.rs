//! Logs, traces and metrics.
//!
//! Logs and spans carry method, route template (never the concrete path,
//! which may hold an ID number), department, client, status and latency —
//! never personal data. Traces go to an OTLP endpoint when one is
//! configured. Metrics are served in the Prometheus text format at
//! `GET /metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;

/// The gateway's metrics. Cheap to clone (the collectors are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route template, method and status.
    pub requests: IntCounterVec,
    /// Request latency by route template.
    pub latency: HistogramVec,
    /// Refused TLS handshakes by reason.
    pub handshake_failures: IntCounterVec,
    /// Requests refused by the rate limiter, by department.
    pub rate_limited: IntCounterVec,
    /// Open client connections.
    pub connections: IntGauge,
}

impl Metrics {
    /// Creates and registers the collectors.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("gateway_requests_total", "HTTP requests handled"),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("gateway_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
            &["route"],
        )
        .expect("static metric definition");
        let handshake_failures = IntCounterVec::new(
            Opts::new(
                "gateway_tls_handshake_failures_total",
                "Refused TLS handshakes",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limited_total",
                "Requests refused by the rate limiter",
            ),
            &["department"],
        )
        .expect("static metric definition");
        let connections = IntGauge::new("gateway_open_connections", "Open client connections")
            .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(handshake_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(connections.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            handshake_failures,
            rate_limited,
            connections,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG`-style filter (default
/// `info`), text or JSON logs to stderr, and OTLP trace export if configured.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    use opentelemetry::trace::TracerProvider as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, otel_layer) = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(cfg.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("gateway");
            (
                Some(provider),
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            )
        }
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    if cfg.log_format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init()?;
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()?;
    }
    Ok(TelemetryGuard { provider })
}
