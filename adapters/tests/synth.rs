//! The synthetic population: deterministic, valid, unique, plausible, and
//! the demo's example files publish as they are.

mod common;

use std::collections::{HashMap, HashSet};

use adapters::ledger::{LedgerMapping, read_csv};
use adapters::synth::{DATASETS, SynthConfig, example_files, population, records};
use serde_json::Value;

use common::catalogue;

#[test]
fn the_same_seed_gives_the_same_population() {
    let a: Vec<Value> = records(42, 3_000).map(|r| r.record).collect();
    let b: Vec<Value> = records(42, 3_000).map(|r| r.record).collect();
    let c: Vec<Value> = records(43, 3_000).map(|r| r.record).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn exactly_the_requested_persons_with_unique_valid_ids() {
    let mut ids = HashSet::new();
    let mut persons = 0;
    let mut areas: HashMap<String, usize> = HashMap::new();
    for h in population(SynthConfig::new(1, 20_000)) {
        assert!(!h.members.is_empty() && h.members.len() <= 6);
        assert_eq!(h.members[0].relation, "02");
        for p in &h.members {
            persons += 1;
            assert!(ids.insert(p.id.clone()), "duplicate ID number");
            assert_eq!(p.id.sex_code(), p.sex);
            assert_eq!(p.id.birth_date(), p.birth);
            assert!(p.birth <= adapters::synth::REFERENCE_DATE);
            *areas.entry(p.id.address_code().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(persons, 20_000);
    for code in ["441702", "441704", "441721", "441781", "441723"] {
        assert!(
            areas.get(code).copied().unwrap_or(0) > 100,
            "{code}: {areas:?}"
        );
    }
}

#[test]
fn every_record_validates_and_categories_are_plausible() {
    let mut per_dataset: HashMap<&str, usize> = HashMap::new();
    let mut categories: HashMap<String, usize> = HashMap::new();
    for r in records(5, 8_000) {
        let d = catalogue().dataset(r.dataset).expect("dataset");
        if r.dataset == "assistance-enrolment" {
            *categories
                .entry(r.record["category"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        if let Err(e) = d.validate(r.record) {
            panic!("{}: {e:#?}", r.dataset);
        }
        *per_dataset.entry(r.dataset).or_default() += 1;
    }
    for d in DATASETS {
        assert!(
            per_dataset.get(d).copied().unwrap_or(0) > 50,
            "{d}: {per_dataset:?}"
        );
    }
    let total: usize = categories.values().sum();
    let share = |c: &str| categories.get(c).copied().unwrap_or(0) as f64 / total as f64;
    assert!(share("dibao") > 0.4, "{categories:?}");
    for c in ["tekun", "dibao_marginal", "rigid_expenditure", "temporary"] {
        assert!(
            share(c) > 0.03 && share(c) < share("dibao"),
            "{c}: {categories:?}"
        );
    }
}

#[test]
fn records_are_labelled_synthetic() {
    for r in records(9, 500) {
        let text = r.record.to_string();
        assert!(text.contains("SYN-"), "{}", r.dataset);
    }
}

#[test]
fn example_files_publish_as_they_are() {
    let files = example_files(42);
    assert_eq!(files.len(), 15);
    for dataset in DATASETS {
        let d = catalogue().dataset(dataset).expect("dataset");
        let get = |suffix: &str| {
            files
                .iter()
                .find(|f| f.name == format!("{dataset}.{suffix}"))
                .unwrap_or_else(|| panic!("{dataset}.{suffix} missing"))
        };
        let canonical: Vec<Value> =
            serde_json::from_slice(&get("canonical.json").contents).expect("json array");
        assert!(!canonical.is_empty());
        for r in &canonical {
            d.validate(r.clone())
                .unwrap_or_else(|e| panic!("{dataset}: {e:#?}"));
        }
        let native: Vec<Value> =
            serde_json::from_slice(&get("native.json").contents).expect("json array");
        let adapter = adapters::for_dataset(dataset).expect("adapter");
        for (n, c) in native.iter().zip(&canonical) {
            let got = adapter
                .to_canonical(n)
                .unwrap_or_else(|e| panic!("{dataset}: {e:#?}"));
            assert_eq!(&got, c);
        }
        let m = LedgerMapping::default_for(dataset).expect("mapping");
        let csv = &get("csv").contents;
        let read: Vec<_> = read_csv(&csv[..], &m).expect("header").collect();
        assert_eq!(read.len(), canonical.len(), "{dataset}");
        for r in read {
            r.expect("row converts")
                .validate(d)
                .unwrap_or_else(|e| panic!("{dataset}: {e:#?}"));
        }
    }
}

#[test]
fn a_broken_check_character_makes_exactly_one_id_invalid() {
    use adapters::domain::IdNumber;
    let csv = example_files(7)
        .into_iter()
        .find(|f| f.name == "student-aid.csv")
        .map(|f| String::from_utf8(f.contents).unwrap())
        .unwrap();
    let broken = adapters::synth::with_bad_check_character(&csv);
    let ids = |text: &str| -> Vec<String> {
        text.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .filter(|c| c.len() == 18 && c[..17].bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .collect()
    };
    let (before, after) = (ids(&csv), ids(&broken));
    assert!(IdNumber::parse(&before[0]).is_ok());
    assert!(IdNumber::parse(&after[0]).is_err(), "{}", after[0]);
    assert_eq!(&before[0][..17], &after[0][..17]);
    assert_eq!(
        csv.lines().skip(2).collect::<Vec<_>>(),
        broken.lines().skip(2).collect::<Vec<_>>()
    );
}
