//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use adapters::Catalogue;
use adapters::synth::{SynthConfig, population};
use serde_json::Value;

/// The repository's `schemas/` directory.
pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

/// The catalogue, loaded once per test binary.
pub fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(|| match Catalogue::load_dir(&schema_dir()) {
        Ok(c) => c,
        Err(e) => panic!("schemas do not load: {e:?}"),
    })
}

/// The first `n` synthetic records of a dataset (seed 7).
pub fn synthetic(dataset: &str, n: usize) -> Vec<Value> {
    population(SynthConfig::new(7, 20_000))
        .flat_map(|h| h.records)
        .filter(|r| r.dataset == dataset)
        .map(|r| r.record)
        .take(n)
        .collect()
}
