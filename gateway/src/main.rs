//! The `gateway` binary: serve, demo, validate, pki.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::identity::{DepartmentId, Role};
use gateway::startup::Application;
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's malloc, for the whole process: with
/// `unprefixed_malloc_on_supported_platforms` it also serves the C code
/// (SQLite), which is where it matters. sqlx's SQLite worker thread copies
/// every column of every row with `sqlite3_value_dup` and the rows are freed
/// on another thread; glibc then spends its time consolidating fast bins (a
/// profile of audit verification showed half of the SQLite worker's time in
/// `malloc`). Measured on the same files in one session (`cargo bench -p
/// gateway --bench audit`, a 100k-ID match): SQLite audit verification
/// 49k → 136–172k events/s, SQLite appends 13.2k → 20.6k events/s,
/// PostgreSQL appends 11.8k → 17.2k, the match 4.5–5.3 s → 3.1–3.7 s; memory
/// per idle connection 32.8 → 34.9 KiB.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The data-sharing gateway for low-income-population records.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file (then GATEWAY_* variables).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration file; exit non-zero on any error.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a working demo: dev PKI, SQLite, example policies and data.
    Demo {
        #[arg(long, default_value = "./demo-data")]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Write a synthetic population (fictitious persons) into the database.
    Seed {
        /// Configuration naming the database and schemas.
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        persons: u64,
        /// Random seed: the same seed gives the same population.
        #[arg(long, default_value_t = 2021)]
        seed: u64,
        /// Also write this many ID numbers of persons on the roster here.
        #[arg(long)]
        sample_ids: Option<PathBuf>,
    },
    /// Import a CSV or XLSX ledger (atomic: all rows or none), as the
    /// dataset's owner department: straight into the database (`--config`)
    /// or through a running gateway (`--url` with a client certificate).
    Import {
        /// Configuration naming the database and schemas.
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        dataset: String,
        /// A .csv or .xlsx ledger with the dataset's Chinese headers.
        #[arg(long)]
        file: PathBuf,
        /// XLSX sheet (default: the first).
        #[arg(long)]
        sheet: Option<String>,
        /// Recorded as the publishing client of every version.
        #[arg(long, default_value = "cli-import")]
        publisher: String,
    },
    /// Sharing policies: validate or simulate a policy folder.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log: verify it offline, query or export it.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

/// A running gateway and the client certificate to present to it.
#[derive(clap::Args, Debug)]
struct RemoteArgs {
    /// The gateway's base URL, e.g. https://gateway.example:8443.
    #[arg(long, requires_all = ["cert", "key", "ca"])]
    url: Option<String>,
    /// Client certificate (PEM) of a system client of the owner department.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The CA bundle that signed the gateway's certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check every policy file against the policy schema and the dataset
    /// schemas; every error with file and line; non-zero exit on any.
    Validate {
        #[arg(default_value = "policies")]
        dir: PathBuf,
        #[arg(long, default_value = "schemas")]
        schemas: PathBuf,
    },
    /// Run a draft policy set against sample requests and show what would
    /// change against the active set, without activating anything.
    Simulate {
        #[arg(long)]
        draft: PathBuf,
        #[arg(long, default_value = "policies")]
        active: PathBuf,
        #[arg(long, default_value = "schemas")]
        schemas: PathBuf,
        #[arg(long)]
        samples: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every chain, Merkle root and checkpoint signature; name the
    /// first bad event; exit 1 on any problem.
    Verify {
        /// The gateway's database: an SQLite file path (e.g.
        /// demo-data/gateway.db, whose audit log is demo-data/gateway-audit.db
        /// beside it; either path works) or a postgres:// URL.
        #[arg(long)]
        database: String,
    },
    /// Export events (NDJSON or CSV) matching a filter to standard output.
    Export {
        /// As for `verify`.
        #[arg(long)]
        database: String,
        #[arg(long, default_value = "ndjson")]
        format: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        decision: Option<String>,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, a server certificate, an empty CRL and registry.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a client certificate and register the client.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        client: String,
        #[arg(long)]
        department: DepartmentId,
        #[arg(long)]
        role: Role,
        #[arg(long)]
        region: adapters::domain::RegionCode,
    },
    /// Revoke a client's certificate (adds it to crl.pem).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        client: String,
    },
}

/// Exit code for a bad configuration (EX_CONFIG).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Import {
            config,
            remote,
            dataset,
            file,
            sheet,
            publisher,
        } => {
            let Some(config) = config else {
                if sheet.is_some() {
                    eprintln!(
                        "error: --sheet applies to --config imports; the gateway reads the first sheet"
                    );
                    return ExitCode::from(64);
                }
                return match import_remote(&remote, &dataset, &file) {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            };
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match import_command(config, &dataset, &file, sheet.as_deref(), &publisher) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy { command } => match command {
            PolicyCommand::Validate { dir, schemas } => {
                gateway::policy::validate_cli(&dir, &schemas)
            }
            PolicyCommand::Simulate {
                draft,
                active,
                schemas,
                samples,
            } => gateway::policy::simulate_cli(&draft, &active, &schemas, &samples),
        },
        Command::Audit { command } => match audit(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Pki { command } => match pki(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            run(config, None)
        }
        Command::Seed {
            config,
            persons,
            seed,
            sample_ids,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match seed_command(config, persons, seed, sample_ids) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { dir, listen } => {
            let repo = gateway::demo::find_repo();
            let config = match gateway::demo::prepare(&dir, listen, &repo) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: preparing the demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            run(config, Some(dir))
        }
    }
}

fn seed_command(
    config: Config,
    persons: u64,
    seed: u64,
    sample_ids: Option<PathBuf>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let db = gateway::storage::Database::open(&config.database_url, 4).await?;
        let catalogue =
            adapters::catalogue::Catalogue::load_dir(&config.schemas_dir).map_err(|e| {
                anyhow::anyhow!("loading schemas: {} error(s), first: {}", e.len(), e[0])
            })?;
        let store = gateway::records::RecordStore::new(db.clone());
        let bar = indicatif::ProgressBar::new(persons);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} persons ({per_sec}, eta {eta})",
            )?
            .progress_chars("=> "),
        );
        let started = std::time::Instant::now();
        let samples = if sample_ids.is_some() { 1_000 } else { 0 };
        let summary = gateway::seed::seed(&store, &catalogue, persons, seed, samples, |n| {
            bar.set_position(n)
        })
        .await?;
        bar.finish();
        let total: u64 = summary.records.values().sum();
        println!(
            "seeded {} persons, {} records in {:.1} s",
            summary.persons,
            total,
            started.elapsed().as_secs_f64()
        );
        let mut per: Vec<_> = summary.records.iter().collect();
        per.sort();
        for (d, n) in per {
            println!("  {d}: {n}");
        }
        if let Some(path) = sample_ids {
            std::fs::write(&path, summary.sample_ids.join("\n") + "\n")?;
            println!(
                "wrote {} sample ID numbers to {}",
                summary.sample_ids.len(),
                path.display()
            );
        }
        db.close().await;
        Ok(())
    })
}

fn import_command(
    config: Config,
    dataset: &str,
    file: &std::path::Path,
    sheet: Option<&str>,
    publisher: &str,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let catalogue = adapters::catalogue::Catalogue::load_dir(&config.schemas_dir)
        .map_err(|e| anyhow::anyhow!("loading schemas: {} error(s), first: {}", e.len(), e[0]))?;
    let d = catalogue
        .dataset(dataset)
        .with_context(|| format!("unknown dataset {dataset:?}"))?;
    let mapping = adapters::ledger::LedgerMapping::default_for(dataset)
        .with_context(|| format!("dataset {dataset} has no ledger mapping"))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let is_xlsx = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{spinner} {pos} records read ({per_sec}) {msg}",
    )?);
    let department = gateway::identity::DepartmentId::parse(d.owner())?;
    let catalogue = std::sync::Arc::new(catalogue);
    let dataset_id = dataset.to_owned();
    let sheet = sheet.map(str::to_owned);
    let display = file.display().to_string();
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(async {
        let db = gateway::storage::Database::open(&config.database_url, 2).await?;
        let store = gateway::records::RecordStore::new(db.clone());
        let publisher = gateway::records::Publisher {
            client_id: publisher.to_owned(),
            department,
        };
        // Validated rows go into one transaction chunk by chunk as they
        // are read (memory bounded); any bad row rolls it all back.
        let bar = bar.clone();
        let outcome = store
            .publish_produced(dataset, &publisher, move |sink| {
                let Some(d) = catalogue.dataset(&dataset_id) else {
                    return Err(1);
                };
                let mut book = None;
                let reader = if is_xlsx {
                    match adapters::ledger::XlsxLedger::open(&bytes) {
                        // Rows stream from the sheet's XML.
                        Ok(b) => book.insert(b).read(&mapping, sheet.as_deref()),
                        Err(e) => Err(e),
                    }
                } else {
                    adapters::ledger::read_csv(&bytes[..], &mapping)
                };
                let reader = match reader {
                    Ok(r) => r,
                    Err(errs) => {
                        for e in &errs {
                            eprintln!("{display}: {e}");
                        }
                        return Err(errs.len());
                    }
                };
                let mut chunk = Vec::with_capacity(gateway::records::WRITE_CHUNK);
                let mut errors = 0usize;
                let mut n = 0usize;
                for rec in reader {
                    match rec.and_then(|r| r.validate(d)) {
                        Ok(v) if errors == 0 => {
                            chunk.push(gateway::records::NewRecord {
                                natural_key: v.natural_key,
                                region: v.region,
                                subjects: v.subjects,
                                payload: v.record,
                            });
                            if chunk.len() >= gateway::records::WRITE_CHUNK
                                && !sink(std::mem::take(&mut chunk))
                            {
                                return Ok(n);
                            }
                        }
                        Ok(_) => {}
                        Err(errs) => {
                            for e in errs {
                                errors += 1;
                                if errors <= 1_000 {
                                    bar.suspend(|| eprintln!("{display}: {e}"));
                                }
                            }
                        }
                    }
                    n += 1;
                    bar.inc(1);
                }
                if errors > 0 {
                    return Err(errors);
                }
                sink(chunk);
                Ok(n)
            })
            .await;
        db.close().await;
        anyhow::Ok(outcome?)
    })?;
    bar.finish_and_clear();
    let (summary, n) = match outcome {
        Ok(done) => done,
        Err(errors) => {
            eprintln!("{errors} error(s); nothing was stored");
            return Ok(ExitCode::from(65));
        }
    };
    println!(
        "{n} records: {} inserted, {} updated, {} unchanged",
        summary.inserted, summary.updated, summary.unchanged
    );
    Ok(ExitCode::SUCCESS)
}

/// `gateway import --url …`: uploads the ledger to a running gateway's
/// `POST /v1/imports/{dataset}` over mutual TLS, as the client whose
/// certificate is given (the dataset's owner department). The gateway
/// validates and stores it atomically, and audits the upload.
fn import_remote(
    remote: &RemoteArgs,
    dataset: &str,
    file: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(url), Some(cert), Some(key), Some(ca)) =
        (&remote.url, &remote.cert, &remote.key, &remote.ca)
    else {
        anyhow::bail!("--url needs --cert, --key and --ca");
    };
    let is_xlsx = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"));
    let content_type = if is_xlsx {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    } else {
        "text/csv"
    };
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    gateway::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c?)?;
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?;
    let url = format!("{}/v1/imports/{dataset}", url.trim_end_matches('/'));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("uploading {} KiB to {url}", bytes.len() / 1024));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let runtime = tokio::runtime::Runtime::new()?;
    let (status, body) = runtime.block_on(async {
        let resp = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("sending to {url}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        anyhow::Ok((status, body))
    })?;
    bar.finish_and_clear();
    if status.is_success() {
        let n = |k: &str| body[k].as_u64().unwrap_or(0);
        println!(
            "{} records: {} inserted, {} updated, {} unchanged",
            n("records"),
            n("inserted"),
            n("updated"),
            n("unchanged")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let error = &body["error"];
    eprintln!(
        "{status}: {}",
        error["message"].as_str().unwrap_or("no error message")
    );
    let mut shown = 0;
    for e in error["errors"].as_array().into_iter().flatten() {
        shown += 1;
        if shown > 1_000 {
            break;
        }
        let mut at = Vec::new();
        if let Some(s) = e["sheet"].as_str() {
            at.push(format!("sheet {s}"));
        }
        if let Some(r) = e["row"].as_u64() {
            at.push(format!("row {r}"));
        }
        if let Some(c) = e["column"].as_str() {
            at.push(format!("column {c}"));
        }
        eprintln!(
            "{}: {}{}: {}",
            file.display(),
            at.join(", "),
            e["path"]
                .as_str()
                .map(|p| format!(" {p}"))
                .unwrap_or_default(),
            e["message"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::from(if status.as_u16() == 422 { 65 } else { 1 }))
}

fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match command {
            AuditCommand::Verify { database } => {
                let db = open_audit_store(&database).await?;
                let report =
                    gateway::audit::verify(&db, gateway::audit::VerifyOptions::default()).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                db.close().await;
                if report.ok {
                    eprintln!(
                        "audit log verified: {} events in {} ms ({} events/s)",
                        report.events, report.elapsed_ms, report.events_per_sec
                    );
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!(
                        "AUDIT LOG VERIFICATION FAILED; first problem: {:?}",
                        report.first_problem
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
            AuditCommand::Export {
                database,
                format,
                from,
                to,
                department,
                dataset,
                decision,
            } => {
                let db = open_audit_store(&database).await?;
                let format = match format.as_str() {
                    "ndjson" => gateway::audit::ExportFormat::Ndjson,
                    "csv" => gateway::audit::ExportFormat::Csv,
                    other => anyhow::bail!("--format {other}: use ndjson or csv"),
                };
                let params = gateway::audit::query::FilterParams {
                    from,
                    to,
                    department,
                    dataset,
                    decision,
                    ..Default::default()
                };
                // Subject search needs the keys; the CLI export filters
                // without it.
                let keys = gateway::audit::SubjectKeys::new(1, [(1, vec![0u8; 32])].into())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let (filter, _, _) = params.parse(&keys)?;
                let mut out = tokio::io::stdout();
                gateway::audit::query::export_to(&db, &filter, format, &mut out).await?;
                db.close().await;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Opens the audit log of an existing database for offline tools. A
/// PostgreSQL URL is used as it is. An SQLite path may name the gateway's
/// database (its audit log is the `-audit` file beside it) or the audit file
/// itself; a file from before the split, with no audit file beside it, is
/// read as it is.
async fn open_audit_store(database: &str) -> anyhow::Result<gateway::storage::Database> {
    let Some(path) = gateway::storage::sqlite_path(database) else {
        return Ok(gateway::storage::Database::connect(database, 2).await?);
    };
    let given = std::path::Path::new(path);
    let named_audit = given
        .file_stem()
        .is_some_and(|s| s.to_string_lossy().ends_with("-audit"));
    let beside = gateway::storage::sqlite_audit_path(given);
    let file = if named_audit || (!beside.is_file() && given.is_file()) {
        given.to_path_buf()
    } else {
        beside
    };
    anyhow::ensure!(
        file.is_file(),
        "no SQLite audit log at {} (nor a database at {path})",
        file.display()
    );
    Ok(gateway::storage::Database::connect(&file.display().to_string(), 2).await?)
}

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { dir } => {
            if gateway::pki::init(&dir)? {
                println!("created CA and server certificate in {}", dir.display());
            } else {
                println!("{} already holds a CA; nothing changed", dir.display());
            }
        }
        PkiCommand::Issue {
            dir,
            client,
            department,
            role,
            region,
        } => {
            gateway::pki::issue(
                &dir,
                &gateway::pki::ClientSpec {
                    name: client.clone(),
                    department,
                    role,
                    region,
                    not_before: None,
                    not_after: None,
                },
            )?;
            println!(
                "issued {0}/{1}.crt and {0}/{1}.key; registered in {0}/clients.toml",
                dir.display(),
                client
            );
        }
        PkiCommand::Revoke { dir, client } => {
            gateway::pki::revoke(&dir, &client)?;
            println!(
                "revoked {client}; {}/crl.pem updated (a running gateway reloads it on SIGHUP or within reload_interval_secs)",
                dir.display()
            );
        }
    }
    Ok(())
}

fn run(config: Config, demo_dir: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match gateway::telemetry::init(&config.telemetry) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: telemetry: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let app = match Application::build(config).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "start-up failed");
                return ExitCode::FAILURE;
            }
        };
        let addr = app.local_addr();
        tracing::info!(%addr, "listening (mutual TLS)");
        if let Some(dir) = demo_dir {
            if let Err(e) = gateway::demo::populate(app.state(), &dir).await {
                tracing::error!(error = %format!("{e:#}"), "seeding the demo failed");
                return ExitCode::FAILURE;
            }
            println!("\nThe gateway demo is listening on https://{addr} (Ctrl-C to stop).\n");
            for line in gateway::demo::curl_lines(&dir, addr)
                .into_iter()
                .chain(gateway::demo::query_curl_lines(&dir, addr))
                .chain(gateway::demo::example_curl_lines(&dir, addr))
            {
                println!("{line}");
            }
            println!();
        }
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            gateway::server::shutdown_signal().await;
            tracing::info!("shutdown signal received; draining");
            trigger.cancel();
        });
        match app.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "server failed");
                ExitCode::FAILURE
            }
        }
    })
}
