//! Throughput figures for the adapters crate (run in release for real numbers):
//!
//! ```text
//! cargo run -p adapters --example throughput --release -- [persons] [ledger_rows] [out.xlsx]
//! ```
//! With `out.xlsx`, the generated ledger is also written there (to time an
//! import through the gateway: `gateway import --url … --file out.xlsx`).
//! 1. synthetic population: persons and records per second;
//! 2. validation: validated vs unchecked extraction per record;
//! 3. ledger: a generated XLSX of N member rows, imported and validated.

use std::path::PathBuf;
use std::time::Instant;

use adapters::Catalogue;
use adapters::ledger::{LedgerMapping, XlsxLedger, read_xlsx};
use adapters::synth::{SynthConfig, population, records};

fn main() {
    let mut args = std::env::args().skip(1);
    let persons: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let ledger_rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ledger_out: Option<PathBuf> = args.next().map(PathBuf::from);

    let t = Instant::now();
    let (mut households, mut recs) = (0u64, 0u64);
    for h in population(SynthConfig::new(1, persons)) {
        households += 1;
        recs += h.records.len() as u64;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "synth: {persons} persons, {households} households, {recs} records in {s:.2} s ({:.0} persons/s)",
        persons as f64 / s
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let catalogue = match Catalogue::load_dir(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("schemas: {e:?}");
            std::process::exit(1);
        }
    };
    let sample: Vec<_> = records(2, 200_000).collect();
    let t = Instant::now();
    let mut ok = 0;
    for r in &sample {
        let d = catalogue.dataset(r.dataset).expect("dataset");
        ok += usize::from(d.validate(r.record.clone()).is_ok());
    }
    let validated = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &sample {
        let d = catalogue.dataset(r.dataset).expect("dataset");
        ok += usize::from(d.validate_unchecked(r.record.clone()).is_ok());
    }
    let unchecked = t.elapsed().as_secs_f64();
    let n = sample.len() as f64;
    println!(
        "validate: {} records, {:.0}/s validated ({:.1} µs each), {:.0}/s unchecked ({:.1} µs each), {ok} ok",
        sample.len(),
        n / validated,
        validated / n * 1e6,
        n / unchecked,
        unchecked / n * 1e6
    );

    // A ledger of `ledger_rows` member rows.
    let mapping = LedgerMapping::default_for("assistance-enrolment").expect("mapping");
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    for (c, h) in mapping.headers().enumerate() {
        ws.write_string(0, c as u16, h).expect("write");
    }
    let mut row = 1u32;
    'outer: for r in
        records(3, ledger_rows as u64 * 2).filter(|r| r.dataset == "assistance-enrolment")
    {
        for cells in mapping.to_rows(&r.record) {
            for (c, v) in cells.iter().enumerate() {
                if !v.is_empty() {
                    ws.write_string(row, c as u16, v).expect("write");
                }
            }
            row += 1;
            if row as usize > ledger_rows {
                break 'outer;
            }
        }
    }
    let bytes = wb.save_to_buffer().expect("xlsx");
    if let Some(path) = &ledger_out {
        std::fs::write(path, &bytes).expect("write the ledger");
    }
    let dataset = catalogue.dataset("assistance-enrolment").expect("dataset");
    let t = Instant::now();
    let (mut good, mut bad) = (0, 0);
    for r in read_xlsx(&bytes, &mapping, None).expect("header") {
        match r
            .map_err(|_| ())
            .and_then(|r| r.validate(dataset).map_err(|_| ()))
        {
            Ok(_) => good += 1,
            Err(()) => bad += 1,
        }
    }
    println!(
        "ledger (whole sheet): {} rows ({} KiB xlsx) -> {good} valid records, {bad} refused, in {:.2} s",
        row - 1,
        bytes.len() / 1024,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (mut good, mut bad) = (0, 0);
    let mut book = XlsxLedger::open(&bytes).expect("workbook");
    for r in book.read(&mapping, None).expect("header") {
        match r
            .map_err(|_| ())
            .and_then(|r| r.validate(dataset).map_err(|_| ()))
        {
            Ok(_) => good += 1,
            Err(()) => bad += 1,
        }
    }
    println!(
        "ledger (streamed): {good} valid records, {bad} refused, in {:.2} s",
        t.elapsed().as_secs_f64()
    );
}
