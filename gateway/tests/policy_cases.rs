//! Data-driven policy cases: every `policy_cases/*.yaml` is a request
//! (consumer, dataset, purpose, grants, record) and the expected decision,
//! field treatments and visible output, evaluated against the fixture policy
//! set in `fixtures/policy/`. One test walks the folder and reports every
//! failing case together.

use std::path::{Path, PathBuf};

use adapters::domain::RegionCode;
use gateway::policy::{AccessRequest, Datasets, Grant, GrantSet, PolicySet, PseudonymKey};
use serde_json::Value;
use time::OffsetDateTime;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy")
}

fn fixture_set() -> PolicySet {
    let ds = Datasets::load_dir(&fixtures().join("schemas")).expect("fixture schemas");
    let key = PseudonymKey::from_bytes(&[7u8; 32]).expect("key");
    let (set, _warnings) =
        PolicySet::load_dir(&fixtures().join("policies"), &ds, &key).expect("fixture policies");
    set
}

/// `~pseudonym` in an expectation matches any pseudonym (`p_` + 32 hex).
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(e), Value::String(a)) if e == "~pseudonym" => {
            a.len() == 34 && a.starts_with("p_") && a[2..].bytes().all(|b| b.is_ascii_hexdigit())
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, ev)| a.get(k).is_some_and(|av| matches(ev, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        _ => expected == actual,
    }
}

fn str_list(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn run_case(set: &PolicySet, case: &Value) -> Result<(), String> {
    let req = &case["request"];
    let s = |k: &str| req[k].as_str().ok_or(format!("request.{k} missing"));
    let region = RegionCode::parse(s("region")?).map_err(|e| e.to_string())?;
    let now = OffsetDateTime::parse(s("now")?, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("request.now: {e}"))?;
    let grants: Vec<Grant> = match case.get("grants") {
        Some(g) => serde_json::from_value(g.clone()).map_err(|e| format!("grants: {e}"))?,
        None => Vec::new(),
    };
    let grants = GrantSet::new(grants);
    let mut record = case.get("record").cloned().unwrap_or(Value::Null);
    if let (Some(Value::Object(patch)), Value::Object(r)) = (case.get("patch"), &mut record) {
        for (k, v) in patch {
            r.insert(k.clone(), v.clone());
        }
    }
    let request = AccessRequest {
        department: s("department")?,
        region,
        dataset: s("dataset")?,
        purpose: s("purpose")?,
        authorisation: req.get("authorisation").and_then(Value::as_str),
        now,
        grants: &grants,
    };
    let d = set.decide(&request);
    let exp = &case["expect"];
    let mut problems = Vec::new();
    if let Some(a) = exp.get("allowed").and_then(Value::as_bool)
        && a != d.allowed
    {
        problems.push(format!(
            "allowed: expected {a}, got {} ({:?})",
            d.allowed, d.reasons
        ));
    }
    if let Some(r) = exp.get("reason") {
        let got = serde_json::to_value(d.reasons.first().map(|r| r.code)).unwrap_or(Value::Null);
        if &got != r {
            problems.push(format!("reason: expected {r}, got {got}"));
        }
    }
    if let Some(r) = exp.get("deny_rule").and_then(Value::as_str) {
        let got = d.reasons.first().and_then(|x| x.rule.as_deref());
        if got != Some(r) {
            problems.push(format!("deny_rule: expected {r}, got {got:?}"));
        }
    }
    if let Some(rules) = exp.get("rules") {
        let mut got: Vec<String> = d.rules.iter().map(|r| r.to_string()).collect();
        got.sort();
        if got != str_list(rules) {
            problems.push(format!(
                "rules: expected {:?}, got {got:?}",
                str_list(rules)
            ));
        }
    }
    if let Some(g) = exp.get("grants") {
        let mut got = d.grants.clone();
        got.sort();
        if got != str_list(g) {
            problems.push(format!("grants: expected {:?}, got {got:?}", str_list(g)));
        }
    }
    if let Some(Value::Object(fields)) = exp.get("fields") {
        for (path, want) in fields {
            match d.fields().iter().find(|f| &f.path == path) {
                None => problems.push(format!("field {path}: not in the decision")),
                Some(f) => {
                    let t = f.treatment.to_string();
                    if want.get("treatment").and_then(Value::as_str) != Some(t.as_str())
                        || want.get("rule").and_then(Value::as_str) != Some(&*f.rule)
                    {
                        problems.push(format!(
                            "field {path}: expected {want}, got {t} by {}",
                            f.rule
                        ));
                    }
                }
            }
        }
    }
    let out = d.apply(&record);
    if let Some(e) = exp.get("output") {
        let got = out.clone().unwrap_or(Value::Null);
        if !matches(e, &got) {
            problems.push(format!("output: expected {e}, got {got}"));
        }
    }
    if exp.get("output_is_record").and_then(Value::as_bool) == Some(true)
        && out.as_ref() != Some(&record)
    {
        problems.push("output: expected the whole record".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn policy_cases() {
    let set = fixture_set();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("policy_cases dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the policy case folder to hold the cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read case");
        let case: Value = match serde_saphyr::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: unreadable: {e}", f.display()));
                continue;
            }
        };
        if let Err(e) = run_case(&set, &case) {
            failures.push(format!(
                "{}: {e}",
                f.file_name().and_then(|n| n.to_str()).unwrap_or("?")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
