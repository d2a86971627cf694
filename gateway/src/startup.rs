//! Building and running the application: testable start-up.
//!
//! [`Application::build`] loads everything the configuration names, binds
//! the listener (port 0 picks a free port, which [`Application::local_addr`]
//! reports) and returns without serving; [`Application::run`] serves until
//! the shutdown token is cancelled, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, router};
use crate::config::Config;
use crate::ratelimit::{CheckRate, RateLimits};
use crate::registry::RegistryHandle;
use crate::storage::Database;
use crate::telemetry::Metrics;
use crate::tls::TlsReloader;

/// A built, bound, not yet serving gateway.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Opens the database (migrating it), loads TLS material, the client
    /// registry, schemas and policies, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, None).await
    }

    /// As [`Application::build`], with a rate limiter of the caller's choice
    /// (tests pass one driven by a fake clock).
    pub async fn build_with(
        config: Config,
        rate_limits: Option<Arc<dyn CheckRate>>,
    ) -> anyhow::Result<Self> {
        crate::tls::install_provider();
        let db = Database::open_with(
            &config.database_url,
            config.database_max_connections,
            config.sqlite_mmap_size,
        )
        .await
        .context("opening the database")?;
        let catalogue =
            adapters::catalogue::Catalogue::load_dir(&config.schemas_dir).map_err(|errs| {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("loading schemas:\n  {}", list.join("\n  "))
            })?;
        let pseudonym_key = crate::policy::PseudonymKey::from_bytes(&crate::keys::load_or_create(
            &config.audit.pseudonym_key,
        )?)
        .map_err(|e| anyhow::anyhow!("pseudonym key: {e}"))?;
        let datasets = crate::policy::Datasets::load_dir(&config.schemas_dir).map_err(|errs| {
            let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("reading schemas for policies:\n  {}", list.join("\n  "))
        })?;
        let (policies, warnings) =
            crate::policy::PolicyHandle::load(&config.policies_dir, datasets, pseudonym_key)
                .map_err(|errs| {
                    let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                    anyhow::anyhow!("loading policies:\n  {}", list.join("\n  "))
                })?;
        for w in &warnings {
            tracing::warn!(warning = %w, "policy set");
        }
        tracing::info!(version = %policies.version(), "policy set loaded");
        let subject_keys = Arc::new(subject_keys(&config.audit)?);
        let audit_db = db
            .open_audit(&config.database_url, config.sqlite_mmap_size)
            .await
            .context("opening the audit log's database")?;
        let audit = crate::audit::AuditWriter::spawn(
            audit_db.clone(),
            crate::audit::AuditConfig {
                log_id: config.instance_id.clone(),
                key_path: config.audit.signing_key.clone(),
                checkpoint_interval_secs: config.audit.checkpoint_interval_secs,
                mode: if config.audit.bench_only_disable {
                    crate::audit::AuditMode::DisabledBenchOnly
                } else {
                    crate::audit::AuditMode::Durable
                },
                retention_days: u32::try_from(config.audit.retention_days).unwrap_or(u32::MAX),
                ..crate::audit::AuditConfig::default()
            },
        )
        .await
        .context("starting the audit log")?;
        let registry = Arc::new(
            RegistryHandle::load(config.clients.file.clone())
                .context("loading the client registry")?,
        );
        let tls = Arc::new(
            TlsReloader::new(config.tls.clone(), watched_files(&config))
                .context("loading TLS material")?,
        );
        db.register_instance(&config.instance_id)
            .await
            .context("registering this instance")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let keep_alive = format!("timeout={}", config.limits.keep_alive_secs())
            .parse()
            .context("the Keep-Alive header")?;
        let state = AppState::new(crate::app::Shared {
            keep_alive,
            rate_limits: rate_limits
                .unwrap_or_else(|| Arc::new(RateLimits::new(&config.rate_limit))),
            config: Arc::new(config),
            db: db.clone(),
            audit_db,
            registry,
            tls,
            metrics: Metrics::new(),
            catalogue: Arc::new(catalogue),
            records: crate::records::RecordStore::new(db.clone()),
            policies: Arc::new(policies),
            audit,
            subject_keys,
        });
        Ok(Application {
            listener,
            addr,
            state,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests use it to trigger reloads).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains open connections
    /// (at most 30 s) and closes the database.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener, state, ..
        } = self;
        let interval = Duration::from_secs(state.config.tls.reload_interval_secs);
        let reloader = crate::server::spawn_reloader(state.clone(), interval, shutdown.clone());
        let app = router(state.clone());
        // Refused handshakes are audit events too.
        let audit = state.audit.clone();
        let observer: crate::server::HandshakeObserver = Arc::new(move |peer, failure| {
            let event = crate::audit::AuditEvent::tls_refused(
                failure.reason,
                failure.fingerprint.clone(),
                Some(peer),
            )
            .build();
            let audit = audit.clone();
            tokio::spawn(async move {
                if let Err(e) = audit.append(event).await {
                    tracing::error!(error = %e, "refused handshake not recorded in the audit log");
                }
            });
        });
        crate::server::serve(
            listener,
            state.clone(),
            app,
            Some(observer),
            shutdown,
            Duration::from_secs(30),
        )
        .await;
        reloader.abort();
        // A final signed checkpoint covers everything written.
        state.audit.shutdown().await;
        state.audit_db.close().await;
        state.db.close().await;
        Ok(())
    }
}

/// The subject HMAC keys from configuration: each version's key file is
/// read, or created with 32 random bytes when missing. The highest version
/// is current.
pub fn subject_keys(cfg: &crate::config::AuditConfig) -> anyhow::Result<crate::audit::SubjectKeys> {
    let mut raw = std::collections::BTreeMap::new();
    // Without configured keys, version 1 lives beside the signing key.
    let default_keys;
    let configured = if cfg.subject_keys.is_empty() {
        let dir = cfg
            .signing_key
            .parent()
            .unwrap_or(std::path::Path::new("."));
        default_keys =
            std::collections::BTreeMap::from([("1".to_owned(), dir.join("subject-hmac-1.key"))]);
        &default_keys
    } else {
        &cfg.subject_keys
    };
    for (version, path) in configured {
        let v: u32 = version
            .parse()
            .with_context(|| format!("audit.subject_keys.{version}: not a version number"))?;
        raw.insert(v, crate::keys::load_or_create(path)?);
    }
    let current = *raw
        .keys()
        .next_back()
        .context("audit.subject_keys: configure at least one key (e.g. 1 = \"/var/lib/gateway/keys/subject-hmac-1.key\")")?;
    crate::audit::SubjectKeys::new(current, raw)
        .map_err(|e| anyhow::anyhow!("audit.subject_keys: {e}"))
}

/// Files whose change triggers a reload besides the TLS material: the
/// client registry, and every policy file (plus the policy folder itself,
/// whose modification time changes when files are added or removed).
fn watched_files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = vec![config.clients.file.clone(), config.policies_dir.clone()];
    if let Ok(entries) = std::fs::read_dir(&config.policies_dir) {
        let mut policy_files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        policy_files.sort();
        files.extend(policy_files);
    }
    files
}
