//! `gateway import --url …`: a ledger uploaded to a running gateway over
//! mutual TLS, stored atomically, errors named by row, other departments
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Demo, client};

fn import(pki: &Path, client: &str, port: u16, file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["import", "--url", &format!("https://localhost:{port}")])
        .arg("--cert")
        .arg(pki.join(format!("{client}.crt")))
        .arg("--key")
        .arg(pki.join(format!("{client}.key")))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .args(["--dataset", "student-aid", "--file"])
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_through_a_running_gateway() {
    let demo = Demo::prepare();
    let (dir, listen, pki) = (&demo.dir, demo.listen, &demo.pki);
    let mut child = demo.start_ready(&client(pki, "education")).await;
    let examples = dir.path().join("examples");
    adapters::synth::write_examples(&examples, 7).unwrap();
    let csv = examples.join("student-aid.csv");

    let out = import(pki, "education", listen.port(), &csv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 inserted"), "{stdout}");
    // The same ledger again changes nothing.
    let out = import(pki, "education", listen.port(), &csv);
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 unchanged"));

    // A bad check character in the first data row: named by row, exit 65.
    let text = std::fs::read_to_string(&csv).unwrap();
    let broken = adapters::synth::with_bad_check_character(&text);
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, &broken).unwrap();
    let out = import(pki, "education", listen.port(), &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("422"), "{err}");
    assert!(err.contains("row 2"), "{err}");

    // Only the owner department publishes its dataset.
    let out = import(pki, "housing", listen.port(), &csv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("403"), "{err}");

    child.kill().unwrap();
    child.wait().unwrap();
}
