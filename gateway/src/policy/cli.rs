//! `gateway policy validate [DIR]` and `gateway policy simulate`: the same
//! checks the server runs at start-up, for CI and deploys.

use std::path::Path;
use std::process::ExitCode;

use time::OffsetDateTime;

use super::catalog::Datasets;
use super::decide::{Sample, simulate};
use super::set::PolicySet;
use super::treatment::PseudonymKey;

/// Exit status for invalid policy or schema data (sysexits `EX_DATAERR`).
pub const EXIT_DATAERR: u8 = 65;

fn load_datasets(schemas_dir: &Path) -> Result<Datasets, ExitCode> {
    Datasets::load_dir(schemas_dir).map_err(|errors| {
        for e in &errors {
            eprintln!("error: {e}");
        }
        ExitCode::from(EXIT_DATAERR)
    })
}

/// Validates the policy directory `dir` against the dataset schemas in
/// `schemas_dir`. Prints every error and warning (file:line: message) to
/// stderr and the version to stdout. Exit 0 valid, 65 invalid.
pub fn validate_cli(dir: &Path, schemas_dir: &Path) -> ExitCode {
    let datasets = match load_datasets(schemas_dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    // The key only matters for pseudonym values, which validation never
    // produces.
    let key = PseudonymKey::generate();
    match PolicySet::load_dir(dir, &datasets, &key) {
        Ok((set, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            println!(
                "policy set {} is valid: {} rules, {} purposes, {} departments, {} datasets, {} warnings",
                set.version(),
                set.rule_count(),
                set.purposes().len(),
                set.departments().len(),
                datasets.len(),
                warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s); policy set not valid", errors.len());
            ExitCode::from(EXIT_DATAERR)
        }
    }
}

/// Runs the samples in `samples_file` (a JSON array of
/// [`Sample`](super::Sample)) against the active set in `active_dir` and the
/// draft in `draft_dir`, printing the JSON report. Exit 0 when the report was
/// produced (whatever it says), 65 on invalid input.
pub fn simulate_cli(
    draft_dir: &Path,
    active_dir: &Path,
    schemas_dir: &Path,
    samples_file: &Path,
) -> ExitCode {
    let datasets = match load_datasets(schemas_dir) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let key = PseudonymKey::generate();
    let mut sets = Vec::new();
    for dir in [draft_dir, active_dir] {
        match PolicySet::load_dir(dir, &datasets, &key) {
            Ok((s, _)) => sets.push(s),
            Err(errors) => {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                return ExitCode::from(EXIT_DATAERR);
            }
        }
    }
    let samples: Vec<Sample> = match std::fs::read(samples_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", samples_file.display());
            return ExitCode::from(EXIT_DATAERR);
        }
    };
    let report = simulate(&sets[0], &sets[1], &samples, OffsetDateTime::now_utc());
    match serde_json::to_string_pretty(&report) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
