//! Property: for random policies and records, no output ever contains a
//! field, or a clear value, that the rules do not grant for that row.
//!
//! The expectation is computed here from the generated rules, independently
//! of the engine's merging: a field may appear only if some allow rule whose
//! row scope covers the record mentions it with a non-drop treatment and no
//! deny rule names it; its value may equal the input only if every such rule
//! says `clear`.

use std::path::Path;

use adapters::domain::RegionCode;
use gateway::policy::{AccessRequest, Datasets, GrantSet, PolicySet, PseudonymKey, SourceFile};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::macros::datetime;

/// (path, treatments that are legal for it).
const FIELDS: &[(&str, &[&str])] = &[
    ("record_id", &["clear", "pseudonym", "drop"]),
    (
        "region_code",
        &["clear", "generalise:city", "pseudonym", "drop"],
    ),
    ("status", &["clear", "pseudonym", "drop"]),
    ("category", &["clear", "pseudonym", "drop"]),
    ("head.id_number", &["clear", "mask", "pseudonym", "drop"]),
    ("head.name", &["clear", "mask", "pseudonym", "drop"]),
    ("head.mobile", &["clear", "mask", "pseudonym", "drop"]),
    ("head.address", &["clear", "mask", "pseudonym", "drop"]),
    (
        "head.birth_date",
        &[
            "clear",
            "generalise:year",
            "generalise:age-band",
            "pseudonym",
            "drop",
        ],
    ),
    (
        "members[].id_number",
        &["clear", "mask", "pseudonym", "drop"],
    ),
    ("members[].name", &["clear", "mask", "pseudonym", "drop"]),
    (
        "members[].birth_date",
        &["clear", "generalise", "generalise:age-band", "drop"],
    ),
    ("members[].relation", &["clear", "pseudonym", "drop"]),
    ("members[].illness", &["mask:mobile", "pseudonym", "drop"]),
    ("household_size", &["clear", "generalise", "drop"]),
    (
        "monthly_amount",
        &["clear", "generalise", "generalise:band:0,100,1000", "drop"],
    ),
    ("per_capita_income", &["clear", "generalise", "drop"]),
    ("bank_account", &["mask", "pseudonym", "drop"]),
    ("tags[]", &["clear", "pseudonym", "drop"]),
];

const REGIONS: &[&str] = &["441700", "441702", "441704", "441721"];
const STATUSES: &[&str] = &["active", "graduating", "ended"];

#[derive(Clone, Debug)]
struct GenRule {
    region: Option<usize>,
    statuses: Option<Vec<usize>>,
    fields: Vec<(usize, usize)>,
}

#[derive(Clone, Debug)]
struct GenDeny {
    fields: Vec<usize>,
    statuses: Option<Vec<usize>>,
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    (
        proptest::option::of(0..REGIONS.len()),
        proptest::option::of(proptest::sample::subsequence(
            (0..STATUSES.len()).collect::<Vec<_>>(),
            1..=2,
        )),
        proptest::sample::subsequence((0..FIELDS.len()).collect::<Vec<_>>(), 1..=FIELDS.len()),
        proptest::collection::vec(0usize..8, FIELDS.len()),
    )
        .prop_map(|(region, statuses, picked, choice)| GenRule {
            region,
            statuses,
            fields: picked
                .into_iter()
                .map(|f| (f, choice[f] % FIELDS[f].1.len()))
                .collect(),
        })
}

fn deny_strategy() -> impl Strategy<Value = GenDeny> {
    prop_oneof![
        proptest::sample::subsequence((0..FIELDS.len()).collect::<Vec<_>>(), 1..=3).prop_map(
            |fields| GenDeny {
                fields,
                statuses: None
            }
        ),
        proptest::sample::subsequence((0..STATUSES.len()).collect::<Vec<_>>(), 1..=1).prop_map(
            |s| GenDeny {
                fields: vec![],
                statuses: Some(s)
            }
        ),
    ]
}

fn date() -> impl Strategy<Value = String> {
    (1930i32..2020, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

fn record_strategy() -> impl Strategy<Value = Value> {
    let member = (
        "[0-9]{17}[0-9X]",
        "[张王李陈][一-龥]{1,3}",
        date(),
        "(01|10|20|30)",
        proptest::option::of("[a-z0-9]{1,12}"),
    )
        .prop_map(|(id, name, birth, rel, ill)| {
            let mut m =
                json!({"id_number": id, "name": name, "birth_date": birth, "relation": rel});
            if let Some(i) = ill {
                m["illness"] = json!(i);
            }
            m
        });
    (
        (
            "[A-Z][0-9]{1,6}",
            1usize..REGIONS.len(),
            0..STATUSES.len(),
            "(dibao|tekun|temporary)",
            "[0-9]{17}[0-9X]",
            "[张王李欧阳][一-龥]{1,3}",
            "1[0-9]{10}",
            "阳江市江城区[一-龥0-9]{1,8}",
        ),
        (
            date(),
            proptest::collection::vec(member, 0..4),
            1i64..10,
            0u32..100_000,
            proptest::option::of(0u32..10_000),
            "[0-9]{16,19}",
            proptest::collection::vec("[a-z]{1,5}", 0..3),
        ),
    )
        .prop_map(|((rid, reg, st, cat, hid, hname, mob, addr), (hbirth, members, size, amount, income, bank, tags))| {
            let mut r = json!({
                "record_id": rid, "region_code": REGIONS[reg], "status": STATUSES[st], "category": cat,
                "head": {"id_number": hid, "name": hname, "mobile": mob, "address": addr, "birth_date": hbirth},
                "members": members, "household_size": size, "monthly_amount": f64::from(amount) / 100.0,
                "bank_account": bank, "tags": tags
            });
            if let Some(i) = income {
                r["per_capita_income"] = json!(i);
            }
            r
        })
}

fn policy_json(rules: &[GenRule], denies: &[GenDeny]) -> String {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let mut fields = Map::new();
        for (f, t) in &r.fields {
            fields.insert(FIELDS[*f].0.to_owned(), json!(FIELDS[*f].1[*t]));
        }
        let mut rule = json!({
            "id": format!("r{i}"), "consumer": {"department": "education"}, "dataset": "household",
            "purposes": ["student-aid"], "sharing": "unconditional", "legal_basis": "test", "fields": fields
        });
        if let Some(reg) = r.region {
            rule["consumer"]["region"] = json!(REGIONS[reg]);
        }
        if let Some(s) = &r.statuses {
            let vals: Vec<&str> = s.iter().map(|i| STATUSES[*i]).collect();
            rule["rows"] = json!({"filters": [{"field": "status", "in": vals}]});
        }
        out.push(rule);
    }
    for (i, d) in denies.iter().enumerate() {
        let mut rule = json!({"id": format!("d{i}"), "effect": "deny", "consumer": {"department": "education"}, "dataset": "household"});
        if !d.fields.is_empty() {
            let paths: Vec<&str> = d.fields.iter().map(|f| FIELDS[*f].0).collect();
            rule["fields"] = json!(paths);
        }
        if let Some(s) = &d.statuses {
            let vals: Vec<&str> = s.iter().map(|i| STATUSES[*i]).collect();
            rule["rows"] = json!({"filters": [{"field": "status", "in": vals}]});
        }
        out.push(rule);
    }
    // JSON is YAML.
    json!({"version": 1, "rules": out}).to_string()
}

/// Walks the output alongside the input, calling `visit(path, out, input)`
/// for every scalar; fails on a key the input does not have.
fn walk(
    out: &Value,
    inp: &Value,
    path: &str,
    visit: &mut dyn FnMut(&str, &Value, &Value),
) -> Result<(), String> {
    match out {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let i = inp.get(k).ok_or(format!("output invents {p}"))?;
                walk(v, i, &p, visit)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            let ia = inp
                .as_array()
                .ok_or(format!("{path} is not an array in the input"))?;
            if a.len() != ia.len() {
                return Err(format!("{path}: array length changed"));
            }
            for (x, y) in a.iter().zip(ia) {
                walk(x, y, &format!("{path}[]"), visit)?;
            }
            Ok(())
        }
        _ => {
            visit(path, out, inp);
            Ok(())
        }
    }
}

fn setup() -> (Datasets, PseudonymKey, String) {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy");
    let ds = Datasets::load_dir(&fx.join("schemas")).expect("schemas");
    let base = std::fs::read_to_string(fx.join("policies/base.yaml")).expect("base");
    (ds, PseudonymKey::from_bytes(&[9u8; 32]).expect("key"), base)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn output_never_exceeds_the_grants(
        rules in proptest::collection::vec(rule_strategy(), 1..4),
        denies in proptest::collection::vec(deny_strategy(), 0..2),
        record in record_strategy(),
        caller in 0..REGIONS.len(),
    ) {
        let (ds, key, base) = setup();
        let sources = vec![
            SourceFile { name: "base.yaml".into(), text: base },
            SourceFile { name: "gen.yaml".into(), text: policy_json(&rules, &denies) },
        ];
        let (set, _) = PolicySet::from_sources(&sources, &ds, &key)
            .map_err(|e| TestCaseError::fail(format!("generated policy rejected: {e:?}")))?;
        let caller_region = RegionCode::parse(REGIONS[caller]).expect("region");
        let grants = GrantSet::empty();
        let d = set.decide(&AccessRequest {
            department: "education", region: caller_region, dataset: "household", purpose: "student-aid",
            authorisation: None, now: datetime!(2026-06-01 0:00 UTC), grants: &grants,
        });
        let Some(out) = d.apply(&record) else { return Ok(()); };

        // The row must be visible to the caller and to some rule.
        let rec_region = RegionCode::parse(record["region_code"].as_str().expect("region")).expect("region");
        prop_assert!(caller_region.contains(&rec_region), "row outside the caller's region");
        let status = record["status"].as_str().expect("status");
        let st_idx = STATUSES.iter().position(|s| *s == status).expect("status");
        let covering: Vec<&GenRule> = rules.iter().filter(|r| {
            let region_ok = r.region.is_none_or(|i| {
                let rr = RegionCode::parse(REGIONS[i]).expect("region");
                rr.contains(&rec_region) && (rr.contains(&caller_region) || caller_region.contains(&rr))
            });
            region_ok && r.statuses.as_ref().is_none_or(|s| s.contains(&st_idx))
        }).collect();
        prop_assert!(!covering.is_empty(), "visible row no rule covers");
        prop_assert!(!denies.iter().any(|d| d.statuses.as_ref().is_some_and(|s| s.contains(&st_idx))), "row a deny rule hides");

        let mut problems = Vec::new();
        walk(&out, &record, "", &mut |path, o, i| {
            let Some(f) = FIELDS.iter().position(|(p, _)| *p == path) else {
                problems.push(format!("{path}: not a grantable field"));
                return;
            };
            if denies.iter().any(|d| d.fields.contains(&f)) {
                problems.push(format!("{path}: shown although a deny rule names it"));
            }
            let ts: Vec<&str> = covering.iter()
                .filter_map(|r| r.fields.iter().find(|(x, _)| *x == f).map(|(_, t)| FIELDS[f].1[*t]))
                .collect();
            if ts.is_empty() || ts.contains(&"drop") {
                problems.push(format!("{path}: shown although granted {ts:?}"));
            }
            if !i.is_null() && o == i && ts.iter().any(|t| *t != "clear") {
                problems.push(format!("{path}: clear value although treated {ts:?}"));
            }
        }).map_err(TestCaseError::fail)?;
        prop_assert!(problems.is_empty(), "{:?}", problems);
    }
}
