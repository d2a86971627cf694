//! The `gateway` binary's subcommands, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run gateway")
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let pki = dir.join("pki");
    let out = gateway(&["pki", "init", "--dir", pki.to_str().unwrap()]);
    assert!(out.status.success());
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite:{db}\"\nschemas_dir = {schemas:?}\npolicies_dir = {policies:?}\n\
         [tls]\ncert = \"pki/server.crt\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.crt\"\n\
         [clients]\nfile = \"pki/clients.toml\"\n{extra}",
        db = dir.join("gw.db").display(),
        schemas = repo().join("schemas").display().to_string(),
        policies = repo().join("policies").display().to_string(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_reports_all_three_mistakes_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "[limits]\nmax_body_bytes = \"big\"\nmax_conections = 5\n[telemetry]\nlog_fromat = \"json\"\n",
    );
    let out = gateway(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "limits.max_body_bytes",
        "limits.max_conections",
        "telemetry.log_fromat",
    ] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    assert!(err.contains("3 configuration error(s)"), "{err}");
    let ok = config(dir.path(), "");
    let out = gateway(&["validate", "--config", ok.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pki_issue_registers_and_revoke_writes_the_crl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let p = pki.to_str().unwrap();
    assert!(gateway(&["pki", "init", "--dir", p]).status.success());
    let crl_before = std::fs::read(pki.join("crl.pem")).unwrap();
    let out = gateway(&[
        "pki",
        "issue",
        "--dir",
        p,
        "--client",
        "yangxi-edu",
        "--department",
        "education",
        "--role",
        "system",
        "--region",
        "441721",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pki.join("yangxi-edu.crt").exists() && pki.join("yangxi-edu.key").exists());
    let registry = std::fs::read_to_string(pki.join("clients.toml")).unwrap();
    assert!(
        registry.contains("yangxi-edu") && registry.contains("441721"),
        "{registry}"
    );
    assert!(
        gateway(&["pki", "revoke", "--dir", p, "--client", "yangxi-edu"])
            .status
            .success()
    );
    assert_ne!(std::fs::read(pki.join("crl.pem")).unwrap(), crl_before);
    let bad = gateway(&[
        "pki",
        "issue",
        "--dir",
        p,
        "--client",
        "x",
        "--department",
        "education",
        "--role",
        "root",
        "--region",
        "441700",
    ]);
    assert!(!bad.status.success());
}

#[test]
fn import_stores_a_ledger_or_names_the_bad_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let examples = dir.path().join("examples");
    adapters::synth::write_examples(&examples, 7).unwrap();
    let csv = examples.join("student-aid.csv");
    let args = |file: &Path| {
        vec![
            "import".to_owned(),
            "--config".into(),
            path.display().to_string(),
            "--dataset".into(),
            "student-aid".into(),
            "--file".into(),
            file.display().to_string(),
        ]
    };
    let run = |file: &Path| {
        let a = args(file);
        gateway(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(&csv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 inserted"));
    // Break the first data row's ID number check character.
    let text = std::fs::read_to_string(&csv).unwrap();
    let broken = adapters::synth::with_bad_check_character(&text);
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, &broken).unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 2"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");

    // Written chunk by chunk while validating: a bad last row after more
    // than two chunks of good ones still stores nothing.
    let big = String::from_utf8(adapters::synth::ledger_csv("student-aid", 11, 2_500)).unwrap();
    let lines = big.lines().count();
    assert!(lines > 2_001);
    std::fs::write(
        &bad,
        adapters::synth::with_bad_check_character_at(&big, lines - 1),
    )
    .unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("row {lines}")), "{err}");
    let good = dir.path().join("big.csv");
    std::fs::write(&good, &big).unwrap();
    let out = run(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // (The three example records imported above are among them.)
    assert!(
        stdout.contains(&format!(
            "{} records: {} inserted, 3 updated",
            lines - 1,
            lines - 4
        )),
        "{stdout}"
    );
}
