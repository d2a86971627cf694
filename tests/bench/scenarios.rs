//! The scenarios, run in one process so their figures share a machine
//! state: rounds are interleaved and medians reported.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use gateway::records::{NewRecord, Publisher, RecordStore};
use gateway::storage::Database;

use crate::load::{self, Target};
use crate::procs::{self, GatewaySpec};
use crate::report::{IdleMemory, Results, Series};

/// `gwbench run` options. `--smoke` shrinks every scenario to seconds.
#[derive(clap::Args, Clone, Debug)]
pub struct Settings {
    /// A few seconds per scenario, small population: CI's check that the
    /// harness works, not a measurement.
    #[arg(long)]
    pub smoke: bool,
    /// Where the JSON and Markdown results go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Seeded populations are cached here between runs.
    #[arg(long, default_value = "target/bench-cache")]
    pub cache: PathBuf,
    /// The gateway binary (default: beside this one).
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// PostgreSQL server URL for the PostgreSQL match (its `test`
    /// database); skipped when absent.
    #[arg(long, env = "GATEWAY_TEST_DATABASE_URL")]
    pub pg: Option<String>,
    /// Rounds of each throughput scenario (interleaved).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds per throughput measurement.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    /// Concurrent handshake loops.
    #[arg(long, default_value_t = 16)]
    pub handshake_workers: usize,
    /// Persons in the synthetic population.
    #[arg(long)]
    pub persons: Option<u64>,
    /// IDs per batch match.
    #[arg(long)]
    pub match_ids: Option<usize>,
    /// Records per publish measurement.
    #[arg(long)]
    pub publish_records: Option<usize>,
    /// Idle connections for the memory measurement.
    #[arg(long)]
    pub idle_conns: Option<usize>,
}

impl Settings {
    fn pick<T: Copy>(&self, explicit: Option<T>, full: T, smoke: T) -> T {
        explicit.unwrap_or(if self.smoke { smoke } else { full })
    }
    fn rounds(&self) -> usize {
        self.pick(self.rounds, 3, 3)
    }
    fn duration(&self) -> Duration {
        Duration::from_secs(self.pick(self.seconds, 10, 1))
    }
    fn persons(&self) -> u64 {
        self.pick(self.persons, 1_000_000, 20_000)
    }
    fn match_ids(&self) -> usize {
        self.pick(self.match_ids, 100_000, 2_000)
    }
    fn publish_records(&self) -> usize {
        self.pick(self.publish_records, 20_000, 2_000)
    }
    fn idle_conns(&self) -> usize {
        self.pick(self.idle_conns, 1_000, 100)
    }
}

const SEED: u64 = 2021;
/// The person query: education reading the assistance roster for student
/// aid (masked ID number and name, exact fields dropped per policy).
const PERSON_CLIENT: &str = "education";
const PERSON_PURPOSE: &str = "student-aid";
/// The batch match: health insurance, medical assistance.
const MATCH_CLIENT: &str = "health-insurance";
const MATCH_PURPOSE: &str = "medical-assistance";

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&settings.out)?;
    std::fs::create_dir_all(&settings.cache)?;
    settings.out = settings.out.canonicalize()?;
    settings.cache = settings.cache.canonicalize()?;
    let work = tempfile::Builder::new()
        .prefix("gwbench-")
        .tempdir_in(&settings.out)?;
    let dir = work.path();
    let gateway_bin = match &settings.gateway_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .join("gateway"),
    };
    anyhow::ensure!(
        gateway_bin.exists(),
        "no gateway binary at {}",
        gateway_bin.display()
    );
    let repo = gateway_tests::repo_root().canonicalize()?;
    let gw_dir = dir.join("gw");
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    gateway::demo::prepare(&gw_dir, listen, &repo)?;
    let config = gw_dir.join("gateway.toml");
    let pki = gw_dir.join("pki");
    let mut results = Results::new(&settings);
    let rounds = settings.rounds();
    let duration = settings.duration();

    // The population, seeded once per (persons, code) and cached.
    let persons = settings.persons();
    let fp = fingerprint(&repo)?;
    let (cached_db, sample_ids) =
        seeded_sqlite(&gateway_bin, &config, &settings.cache, persons, fp)?;
    let db_audit = dir.join("audit-on.db");
    let db_plain = dir.join("audit-off.db");
    std::fs::copy(&cached_db, &db_audit)?;
    std::fs::copy(&cached_db, &db_plain)?;

    // Servers.
    let (mut echo, echo_tls, echo_plain) = procs::echo(dir, &pki)?;
    let (mut nginx, nginx_addr) = procs::nginx(dir, &pki, echo_plain)?;
    let spec = |db: &Path, audit: bool, log: &str| GatewaySpec {
        bin: &gateway_bin,
        config: &config,
        database_url: format!("sqlite:{}", db.display()),
        audit,
        log: dir.join(log),
    };
    let (mut gw, gw_addr) = procs::gateway(&spec(&db_audit, true, "gateway.log"))?;
    let (mut gw_off, gw_off_addr) =
        procs::gateway(&spec(&db_plain, false, "gateway-audit-off.log"))?;

    let tls = gateway_tests::client_tls_config(&pki, Some(PERSON_CLIENT));
    let paths: Vec<String> = sample_ids
        .iter()
        .map(|id| format!("/v1/persons/{id}"))
        .collect();
    let headers = vec![("x-purpose", PERSON_PURPOSE.to_owned())];
    gw.wait_ready(
        &Target::new(gw_addr, tls.clone(), vec![], vec![]),
        "/healthz",
    )
    .await?;
    let paths = person_paths(
        &Target::new(gw_addr, tls.clone(), paths, headers.clone()),
        &mut results,
    )
    .await?;
    let target = |addr| Target::new(addr, tls.clone(), paths.clone(), headers.clone());
    let t_echo = target(echo_tls);
    let t_nginx = target(nginx_addr);
    let t_gw = target(gw_addr);
    let t_gw_off = target(gw_off_addr);
    echo.wait_ready(&t_echo, "/").await?;
    nginx.wait_ready(&t_nginx, "/").await?;
    gw_off.wait_ready(&t_gw_off, "/healthz").await?;

    // 1-4: keep-alive throughput, interleaved rounds.
    let keep_alive = [
        ("echo", &t_echo),
        ("nginx", &t_nginx),
        ("gateway", &t_gw),
        ("gateway_audit_off", &t_gw_off),
    ];
    eprintln!(
        "keep-alive: {} connections, {} s × {rounds} rounds",
        settings.conns,
        duration.as_secs()
    );
    for round in 0..rounds {
        for k in 0..keep_alive.len() {
            let (name, t) = keep_alive[(k + round) % keep_alive.len()];
            let out = load::keep_alive(t, settings.conns, duration).await?;
            eprintln!(
                "  round {} {name:>18}: {:>9.0} req/s ({} errors)",
                round + 1,
                out.rate(),
                out.errors
            );
            results.add_throughput("keep_alive", name, out);
        }
    }
    // 5: a full handshake per request. The handshake ratio compares the
    // cheapest request on each side (the echo's answer, the gateway's
    // audited /healthz) so it measures connection set-up; the person query
    // per connection is reported beside it.
    eprintln!(
        "handshakes: {} concurrent, {} s × {rounds} rounds",
        settings.handshake_workers,
        duration.as_secs()
    );
    let t_gw_health = Target::new(gw_addr, tls.clone(), vec!["/healthz".into()], vec![]);
    let handshake = [
        ("echo", &t_echo),
        ("gateway", &t_gw_health),
        ("gateway_person_query", &t_gw),
    ];
    for round in 0..rounds {
        for k in 0..handshake.len() {
            let (name, t) = handshake[(k + round) % handshake.len()];
            let out = load::handshakes(t, settings.handshake_workers, duration).await?;
            eprintln!(
                "  round {} {name:>20}: {:>9.0} handshakes/s ({} errors)",
                round + 1,
                out.rate(),
                out.errors
            );
            results.add_throughput("handshake", name, out);
        }
    }
    drop(nginx);
    drop(gw_off);

    // 6: batch match against the population.
    let ids = match_ids(persons, settings.match_ids());
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({ "ids": ids }))?);
    let match_tls = gateway_tests::client_tls_config(&pki, Some(MATCH_CLIENT));
    let t_match = Target::new(gw_addr, match_tls.clone(), vec![], vec![]);
    eprintln!("match: {} IDs against {persons} persons", ids.len());
    let sqlite = match_rounds(&t_match, &body, ids.len(), rounds).await?;
    results.match_seconds.insert("sqlite".into(), sqlite);
    drop(gw);
    if let Some(server) = &settings.pg {
        let url =
            seeded_postgres(&gateway_bin, &config, &settings.cache, server, persons, fp).await?;
        let (mut gw_pg, pg_addr) = procs::gateway(&GatewaySpec {
            bin: &gateway_bin,
            config: &config,
            database_url: url.clone(),
            audit: true,
            log: dir.join("gateway-pg.log"),
        })?;
        let t_pg = Target::new(pg_addr, match_tls, vec![], vec![]);
        gw_pg.wait_ready(&t_pg, "/healthz").await?;
        let pg = match_rounds(&t_pg, &body, ids.len(), rounds).await?;
        results.match_seconds.insert("postgres".into(), pg);
    } else {
        results
            .notes
            .push("PostgreSQL match skipped: no --pg / GATEWAY_TEST_DATABASE_URL".into());
    }

    // 7: validated vs unvalidated publish.
    publish(dir, &repo, settings.publish_records(), rounds, &mut results).await?;

    // 8: memory per idle connection, on fresh processes.
    let n = settings.idle_conns();
    eprintln!("idle memory: {n} connections");
    let (mut gw_fresh, fresh_addr) = procs::gateway(&spec(&db_audit, true, "gateway-idle.log"))?;
    let t_fresh = target(fresh_addr);
    gw_fresh.wait_ready(&t_fresh, "/healthz").await?;
    let m = idle_memory(&gw_fresh, &t_fresh, n, !settings.smoke).await?;
    results.idle_memory.insert("gateway".into(), m);
    drop(gw_fresh);
    drop(echo);
    let (mut echo_fresh, echo_addr, _) = procs::echo(dir, &pki)?;
    let t_echo_fresh = target(echo_addr);
    echo_fresh.wait_ready(&t_echo_fresh, "/").await?;
    let m = idle_memory(&echo_fresh, &t_echo_fresh, n, !settings.smoke).await?;
    results.idle_memory.insert("echo".into(), m);
    drop(echo_fresh);

    results.elapsed_secs = started.elapsed().as_secs_f64();
    results.finish();
    print!("{}", results.table());
    let json = settings.out.join("results.json");
    let md = settings.out.join("results.md");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    std::fs::write(&md, results.markdown())?;
    eprintln!("wrote {} and {}", json.display(), md.display());
    if !results.errors.is_empty() {
        anyhow::bail!("scenarios failed: {}", results.errors.join("; "));
    }
    Ok(())
}

/// The sample IDs whose person query answers 200 to this client (the
/// others are outside its region or have no record it may see); the first
/// answer must show a masked field, or the figures would measure something
/// else.
async fn person_paths(t: &Target, results: &mut Results) -> anyhow::Result<Vec<String>> {
    let mut conn = load::Conn::open(t).await?;
    let mut ok = Vec::new();
    let mut first: Option<Bytes> = None;
    for path in t.paths.iter() {
        let req = hyper::Request::get(path.as_str())
            .header("host", "localhost")
            .header("x-purpose", PERSON_PURPOSE)
            .body(http_body_util::Full::new(Bytes::new()))?;
        let (status, body) = conn.send_full(req).await?;
        if status == 200 {
            ok.push(path.clone());
            first.get_or_insert(body);
        }
    }
    let Some(body) = first else {
        anyhow::bail!("no sample ID answers 200 to {PERSON_CLIENT}");
    };
    anyhow::ensure!(
        String::from_utf8_lossy(&body).contains('*'),
        "the person query's answer shows no masked field"
    );
    results.notes.push(format!(
        "person query: {} of {} sample IDs visible to {PERSON_CLIENT}; answer {} bytes, masked",
        ok.len(),
        t.paths.len(),
        body.len()
    ));
    Ok(ok)
}

async fn match_rounds(
    t: &Target,
    body: &Bytes,
    expected: usize,
    rounds: usize,
) -> anyhow::Result<Series> {
    let mut series = Series::new("s");
    for round in 0..rounds {
        let start = Instant::now();
        let (status, answer) = load::one(
            t,
            "POST",
            "/v1/match",
            &[
                ("x-purpose", MATCH_PURPOSE),
                ("content-type", "application/json"),
            ],
            body.clone(),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            status == 200,
            "match answered {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
        let lines = answer
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        anyhow::ensure!(
            lines == expected,
            "match answered {lines} lines for {expected} IDs"
        );
        let matched = answer
            .split(|b| *b == b'\n')
            .filter(|l| {
                let pat = br#""status":"match""#;
                l.windows(pat.len()).any(|w| w == pat)
            })
            .count();
        eprintln!(
            "  round {} match: {secs:.3} s ({matched} of {expected} matched, {} MB answer)",
            round + 1,
            answer.len() / 1_000_000
        );
        series.push(secs);
    }
    Ok(series)
}

/// Every `persons / n`-th person of the synthetic population: a mix of
/// people on the rosters and people with no record, as a real batch is.
fn match_ids(persons: u64, n: usize) -> Vec<String> {
    let stride = (persons as usize / n).max(1);
    adapters::synth::population(adapters::synth::SynthConfig::new(SEED, persons))
        .flat_map(|h| h.members.into_iter().map(|m| m.id.as_str().to_owned()))
        .step_by(stride)
        .take(n)
        .collect()
}

async fn publish(
    dir: &Path,
    repo: &Path,
    n: usize,
    rounds: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    const DATASET: &str = "assistance-enrolment";
    let catalogue = adapters::catalogue::Catalogue::load_dir(&repo.join("schemas"))
        .map_err(|e| anyhow::anyhow!("schemas: {}", e[0]))?;
    let records: Vec<serde_json::Value> = adapters::synth::records(7, (n as u64) * 20)
        .filter(|r| r.dataset == DATASET)
        .map(|r| r.record)
        .take(n)
        .collect();
    anyhow::ensure!(records.len() == n, "population too small for {n} records");
    eprintln!("publish: {n} {DATASET} records per run, × {rounds} rounds");
    let publisher = Publisher {
        client_id: "civil-affairs".into(),
        department: gateway::identity::DepartmentId::parse("civil-affairs")?,
    };
    for round in 0..rounds {
        for k in 0..2 {
            let validated = (k + round) % 2 == 0;
            let path = dir.join(format!("publish-{round}-{validated}.db"));
            let db = Database::open(&format!("sqlite:{}", path.display()), 4).await?;
            let store = RecordStore::new(db.clone());
            let dataset = catalogue.dataset(DATASET).context("dataset")?;
            let start = Instant::now();
            for chunk in records.chunks(1_000) {
                let mut batch = Vec::with_capacity(chunk.len());
                for r in chunk {
                    let v = if validated {
                        dataset.validate(r.clone())
                    } else {
                        dataset.validate_unchecked(r.clone())
                    }
                    .map_err(|e| anyhow::anyhow!("synthetic record invalid: {}", e[0]))?;
                    batch.push(NewRecord {
                        natural_key: v.natural_key,
                        region: v.region,
                        subjects: v.subjects,
                        payload: v.record,
                    });
                }
                store.publish(DATASET, &publisher, batch).await?;
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            db.close().await;
            let _ = std::fs::remove_file(&path);
            let name = if validated {
                "validated"
            } else {
                "unvalidated"
            };
            eprintln!("  round {} {name:>11}: {rate:>9.0} records/s", round + 1);
            results
                .publish
                .entry(name.into())
                .or_insert_with(|| Series::new("records/s"))
                .push(rate);
        }
    }
    Ok(())
}

/// `strict`: a figure that cannot be right (resident memory fell while the
/// connections opened) fails the run; smoke runs only warn, their few
/// connections can fit in memory the allocator still holds.
async fn idle_memory(
    p: &procs::Proc,
    t: &Target,
    n: usize,
    strict: bool,
) -> anyhow::Result<IdleMemory> {
    // Warm: one connection's worth of lazily initialised state; then let
    // the allocator return start-up garbage, so it does not offset the
    // connections' growth.
    drop(load::hold_idle(t, 4).await?);
    let before = settled_rss(p).await?;
    let held = load::hold_idle(t, n).await?;
    // Settled as well: right after the handshakes, memory they used and
    // freed is still held by the allocator (jemalloc hands it back over its
    // decay time), which is not what an idle connection costs. Measured by
    // hand on 2026-11-29: 33.6 KiB per connection 2 s after opening, 17.5
    // KiB once settled.
    let after = settled_rss(p).await?;
    drop(held);
    // Memory handed back while the connections opened would make the
    // figure meaningless (and a goal "met" at zero).
    if after <= before {
        let msg = format!(
            "{}: anonymous resident memory fell from {before} to {after} KiB while {n} connections opened; \
             the baseline had not settled",
            p.name
        );
        anyhow::ensure!(!strict, "{msg}");
        eprintln!("  warning (smoke run): {msg}");
    }
    let per = after.saturating_sub(before) as f64 / n as f64;
    eprintln!(
        "  {}: {before} KiB → {after} KiB, {per:.1} KiB per connection",
        p.name
    );
    Ok(IdleMemory {
        connections: n,
        before_kib: before,
        after_kib: after,
        per_connection_kib: per,
    })
}

/// The process's resident memory once it has stopped falling: allocators
/// hand freed memory back to the system over seconds (jemalloc's decay time
/// is 10 s). Samples every second for at least 3 s and at most 30 s.
async fn settled_rss(p: &procs::Proc) -> anyhow::Result<u64> {
    let mut last = p.anon_rss_kib()?;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = p.anon_rss_kib()?;
        // Falling by less than 256 KiB in a second: settled.
        if i >= 2 && now + 256 >= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// A hash of what a seeded database depends on: migrations, schemas, the
/// generator and the seeder.
fn fingerprint(repo: &Path) -> anyhow::Result<u64> {
    let mut files = Vec::new();
    for d in [
        "gateway/migrations/sqlite",
        "gateway/migrations/postgres",
        "schemas",
    ] {
        for e in std::fs::read_dir(repo.join(d))? {
            files.push(e?.path());
        }
    }
    files.push(repo.join("adapters/src/synth.rs"));
    files.push(repo.join("gateway/src/seed.rs"));
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.file_name().hash(&mut h);
        std::fs::read(&f)?.hash(&mut h);
    }
    Ok(h.finish())
}

fn seed_with(
    gateway_bin: &Path,
    config: &Path,
    database_url: &str,
    persons: u64,
    sample_ids: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("seeding {persons} persons (cached for later runs)...");
    let out = Command::new(gateway_bin)
        .arg("seed")
        .arg("--config")
        .arg(config)
        .arg("--persons")
        .arg(persons.to_string())
        .arg("--seed")
        .arg(SEED.to_string())
        .arg("--sample-ids")
        .arg(sample_ids)
        .env("GATEWAY_DATABASE_URL", database_url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "gateway seed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("  seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no sample IDs in {}", path.display());
    Ok(ids)
}

fn seeded_sqlite(
    gateway_bin: &Path,
    config: &Path,
    cache: &Path,
    persons: u64,
    fp: u64,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let db = cache.join(format!("sqlite-{persons}-{fp:016x}.db"));
    let ids = cache.join(format!("sqlite-{persons}-{fp:016x}.ids"));
    if !(db.exists() && ids.exists()) {
        let tmp = cache.join(format!("sqlite-{persons}-{fp:016x}.partial.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        seed_with(
            gateway_bin,
            config,
            &format!("sqlite:{}", tmp.display()),
            persons,
            &ids,
        )?;
        std::fs::rename(&tmp, &db)?;
    }
    Ok((db, read_ids(&ids)?))
}

/// A PostgreSQL database seeded with the population, reused while its
/// marker file is in the cache.
async fn seeded_postgres(
    gateway_bin: &Path,
    config: &Path,
    cache: &Path,
    server: &str,
    persons: u64,
    fp: u64,
) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("gwbench_{persons}_{:08x}", fp as u32);
    let marker = cache.join(format!("{name}.pg"));
    let url = gateway_tests::database_url(server, &name);
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| "connecting to PostgreSQL".to_owned())?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if exists && marker.exists() {
        return Ok(url);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let ids = cache.join(format!("{name}.ids"));
    seed_with(gateway_bin, config, &url, persons, &ids)?;
    std::fs::write(&marker, "seeded\n")?;
    Ok(url)
}

/// Median of a non-empty slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}
