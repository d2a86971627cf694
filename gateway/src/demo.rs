//! The newcomer's first command: a dev PKI, an SQLite database, the example
//! policies, and copy-paste curl lines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use adapters::domain::RegionCode;
use anyhow::Context;

use crate::config::Config;
use crate::identity::DepartmentId;
use crate::pki::{self, ClientSpec, PkiDir};

/// Creates (or reuses) everything the demo needs under `dir` and returns the
/// configuration it writes to `dir/gateway.toml`. `repo` is where `schemas/`
/// and `policies/` are found.
pub fn prepare(dir: &Path, listen: SocketAddr, repo: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let pki_dir = dir.join("pki");
    pki::init(&pki_dir)?;
    let p = PkiDir(pki_dir.clone());
    let region = RegionCode::parse("441700").context("demo region")?;
    for (name, dept, role) in pki::demo_clients() {
        if p.client_cert(name).exists() && p.client_key(name).exists() {
            continue;
        }
        pki::issue(
            &pki_dir,
            &ClientSpec {
                name: name.to_owned(),
                department: DepartmentId::parse(dept)?,
                role,
                region,
                not_before: None,
                not_after: None,
            },
        )?;
    }
    let schemas = repo.join("schemas");
    let policies = repo.join("policies");
    let text = config_text(&dir, &pki_dir, listen, &schemas, &policies);
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Config::load_with_env(&path, std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn config_text(
    dir: &Path,
    pki: &Path,
    listen: SocketAddr,
    schemas: &Path,
    policies: &Path,
) -> String {
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    format!(
        "# Written by `gateway demo`; a copy to start from is deploy/gateway.example.toml.\n\
         listen = \"{listen}\"\n\
         database_url = {db}\n\
         schemas_dir = {schemas}\n\
         policies_dir = {policies}\n\
         \n[tls]\ncert = {cert}\nkey = {key}\nclient_ca = {ca}\ncrl = {crl}\nreload_interval_secs = 2\n\
         \n[clients]\nfile = {clients}\n\
         \n[audit]\nsigning_key = {sign}\npseudonym_key = {pseudo}\n\
         \n[audit.subject_keys]\n1 = {subj}\n",
        db = toml::Value::String(format!("sqlite:{}", dir.join("gateway.db").display())),
        schemas = q(schemas),
        policies = q(policies),
        cert = q(&pki.join("server.crt")),
        key = q(&pki.join("server.key")),
        ca = q(&pki.join("ca.crt")),
        crl = q(&pki.join("crl.pem")),
        clients = q(&pki.join("clients.toml")),
        sign = q(&dir.join("keys/audit-signing.key")),
        pseudo = q(&dir.join("keys/pseudonym.key")),
        subj = q(&dir.join("keys/subject-hmac-1.key")),
    )
}

/// The curl lines printed when the demo starts.
pub fn curl_lines(dir: &Path, addr: SocketAddr) -> Vec<String> {
    let pki = dir.join("pki");
    let host = if addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    let curl = |client: &str| {
        format!(
            "curl --cacert {ca} --cert {crt} --key {key}",
            ca = pki.join("ca.crt").display(),
            crt = pki.join(format!("{client}.crt")).display(),
            key = pki.join(format!("{client}.key")).display(),
        )
    };
    vec![
        "# Who am I? (each demo client: civil-affairs, rural-revitalization, education, health-insurance, housing, admin, auditor)".to_owned(),
        format!("{} https://{host}/v1/whoami", curl("education")),
        "# Readiness".to_owned(),
        format!("{} https://{host}/readyz", curl("housing")),
        "# The client registry (admin only; try it with another client to see the 403)".to_owned(),
        format!("{} https://{host}/v1/admin/clients", curl("admin")),
        "# No client certificate: the TLS handshake is refused".to_owned(),
        format!("curl --cacert {} https://{host}/v1/whoami", pki.join("ca.crt").display()),
    ]
}

/// The repository root: the current folder if it holds `schemas/`, else the
/// folder of the workspace this binary was built from.
pub fn find_repo() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if cwd.join("schemas").is_dir() && cwd.join("policies").is_dir() {
        return cwd;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if built.join("schemas").is_dir() {
        return built.canonicalize().unwrap_or(built);
    }
    cwd
}

/// Persons the demo seeds.
pub const DEMO_PERSONS: u64 = 3_000;

/// Seeds the demo database once (marker: `DIR/sample-ids.txt`), and writes
/// `DIR/examples/` with, per dataset, canonical, native and CSV examples
/// that publish as they are.
pub async fn populate(state: &crate::app::AppState, dir: &Path) -> anyhow::Result<()> {
    // One approved application for the conditional rule that gives housing
    // per-capita income (有条件共享); idempotent.
    crate::policy::GrantStore::insert(
        &state.db,
        &crate::policy::Grant {
            id: "DEMO-GRANT-2026-001".to_owned(),
            rule_id: "housing-enrolment-income".to_owned(),
            department: "housing".to_owned(),
            not_after: time::OffsetDateTime::now_utc() + time::Duration::days(365),
            approved: true,
        },
    )
    .await
    .context("seeding the demo grant")?;
    let examples = dir.join("examples");
    adapters::synth::write_examples(&examples, 20_261_128)
        .with_context(|| format!("writing {}", examples.display()))?;
    let marker = dir.join("sample-ids.txt");
    if marker.exists() {
        return Ok(());
    }
    let summary = crate::seed::seed(
        &state.records,
        &state.catalogue,
        DEMO_PERSONS,
        2021,
        50,
        |_| {},
    )
    .await?;
    let mut text = summary.sample_ids.join("\n");
    text.push('\n');
    std::fs::write(&marker, text).with_context(|| format!("writing {}", marker.display()))?;
    let total: u64 = summary.records.values().sum();
    println!(
        "seeded {} synthetic persons ({} records) into the demo database",
        summary.persons, total
    );
    Ok(())
}

/// Curl lines for reading through the policies and for the auditor.
pub fn query_curl_lines(dir: &Path, addr: SocketAddr) -> Vec<String> {
    let pki = dir.join("pki");
    let host = format!("localhost:{}", addr.port());
    let id = std::fs::read_to_string(dir.join("sample-ids.txt"))
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "441702198001010017".to_owned());
    let curl = |client: &str| {
        format!(
            "curl --cacert {ca} --cert {crt} --key {key}",
            ca = pki.join("ca.crt").display(),
            crt = pki.join(format!("{client}.crt")).display(),
            key = pki.join(format!("{client}.key")).display(),
        )
    };
    vec![
        format!("# A person on the roster ({} lists more), as education sees it for student aid", dir.join("sample-ids.txt").display()),
        format!("{} -H 'X-Purpose: student-aid' https://{host}/v1/persons/{id}", curl("education")),
        "# ... as housing sees it (a demo grant approves its conditional rule for per-capita income)".to_owned(),
        format!("{} -H 'X-Purpose: housing-assistance' https://{host}/v1/persons/{id}", curl("housing")),
        "# Batch match (NDJSON answer, one line per input)".to_owned(),
        format!("{} -H 'X-Purpose: medical-assistance' -H 'content-type: application/json' -d '{{\"ids\": [\"{id}\", \"11010519491231002X\", \"bad\"]}}' https://{host}/v1/match", curl("health-insurance")),
        "# Why: the decision, the rules and each field's treatment".to_owned(),
        format!("{} -H 'content-type: application/json' -d '{{\"dataset\": \"assistance-enrolment\", \"purpose\": \"student-aid\"}}' https://{host}/v1/policy/explain", curl("education")),
        "# The auditor: every access to that person, then verify the whole log".to_owned(),
        format!("{} 'https://{host}/v1/audit/events?subject={id}'", curl("auditor")),
        format!("{} https://{host}/v1/audit/verify", curl("auditor")),
        "# Offline verification of the demo database (exit 1 on any tampering)".to_owned(),
        format!("cargo run --release -- audit verify --database {}", dir.join("gateway.db").display()),
    ]
}

/// Curl lines publishing each example file.
pub fn example_curl_lines(dir: &Path, addr: SocketAddr) -> Vec<String> {
    let pki = dir.join("pki");
    let ex = dir.join("examples");
    let host = format!("localhost:{}", addr.port());
    let owners = [
        ("assistance-enrolment", "civil-affairs"),
        ("monitoring-object", "rural-revitalization"),
        ("student-aid", "education"),
        ("medical-settlement", "health-insurance"),
        ("housing-assistance", "housing"),
    ];
    let mut lines =
        vec!["# Publish the examples (each owner publishes its own dataset)".to_owned()];
    for (dataset, owner) in owners {
        let base = format!(
            "curl --cacert {ca} --cert {crt} --key {key}",
            ca = pki.join("ca.crt").display(),
            crt = pki.join(format!("{owner}.crt")).display(),
            key = pki.join(format!("{owner}.key")).display(),
        );
        lines.push(format!(
            "{base} -H 'content-type: application/json' --data-binary @{} https://{host}/v1/records/{dataset}",
            ex.join(format!("{dataset}.canonical.json")).display()
        ));
        lines.push(format!(
            "{base} -H 'content-type: application/json' --data-binary @{} 'https://{host}/v1/records/{dataset}?format=native'",
            ex.join(format!("{dataset}.native.json")).display()
        ));
        lines.push(format!(
            "{base} -H 'content-type: text/csv' --data-binary @{} https://{host}/v1/imports/{dataset}",
            ex.join(format!("{dataset}.csv")).display()
        ));
    }
    lines
}
