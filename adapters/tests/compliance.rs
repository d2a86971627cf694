//! The adapter compliance test: every rule of `adapters/CONTRACT.md`, run
//! over every built-in adapter.

mod common;

use adapters::adapter::builtin;
use adapters::{Adapter, FieldKind};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use common::{catalogue, synthetic};

const SAMPLES: usize = 60;

#[test]
fn there_is_one_adapter_per_dataset_and_it_belongs_to_the_owner() {
    let adapters = builtin();
    assert_eq!(adapters.len(), 5);
    for dataset in catalogue().datasets() {
        let a = adapters::for_dataset(dataset.id())
            .unwrap_or_else(|| panic!("no adapter for {}", dataset.id()));
        assert_eq!(a.department(), dataset.owner(), "{}", dataset.id());
        assert!(adapters::for_department(dataset.owner()).is_some());
    }
    assert!(adapters::for_department("no-such-department").is_none());
}

#[test]
fn every_adapter_covers_every_canonical_field() {
    for a in builtin() {
        let dataset = catalogue().dataset(a.dataset()).expect("dataset exists");
        let mapped: Vec<String> = a.canonical_fields().collect();
        for f in dataset.fields() {
            let container = matches!(f.kind, FieldKind::Object)
                || (f.kind == FieldKind::Array
                    && dataset
                        .fields()
                        .iter()
                        .any(|g| g.path.starts_with(&format!("{}[].", f.path))));
            if !container {
                assert!(
                    mapped.contains(&f.path),
                    "{}: canonical field {} is not mapped",
                    a.department(),
                    f.path
                );
            }
        }
        for m in &mapped {
            assert!(
                dataset.field(m).is_some(),
                "{}: maps to unknown canonical field {m}",
                a.department()
            );
        }
    }
}

#[test]
fn every_adapter_round_trips() {
    for a in builtin() {
        let dataset = catalogue().dataset(a.dataset()).expect("dataset exists");
        let records = synthetic(a.dataset(), SAMPLES);
        assert_eq!(
            records.len(),
            SAMPLES,
            "{}: not enough synthetic records",
            a.dataset()
        );
        for c in records {
            let c = match dataset.validate(c) {
                Ok(v) => v.record,
                Err(e) => panic!("{}: synthetic record invalid: {e:?}", a.dataset()),
            };
            let n = a.to_native(&c);
            let c2 = a
                .to_canonical(&n)
                .unwrap_or_else(|e| panic!("{}: {e:?}", a.department()));
            assert_eq!(
                c2,
                c,
                "{}: canonical -> native -> canonical changed the record",
                a.department()
            );
            assert_eq!(
                a.to_native(&c2),
                n,
                "{}: native -> canonical -> native changed the document",
                a.department()
            );
            assert!(dataset.validate(c2).is_ok());
        }
    }
}

/// The first array of objects in a native document, if any.
fn first_object_array(n: &Value) -> Option<String> {
    n.as_object()?
        .iter()
        .find(|(_, v)| {
            v.as_array()
                .is_some_and(|a| a.first().is_some_and(Value::is_object))
        })
        .map(|(k, _)| k.clone())
}

#[test]
fn every_adapter_reports_unknown_native_fields_with_their_pointer() {
    for a in builtin() {
        let c = synthetic(a.dataset(), 1).remove(0);
        let mut n = a.to_native(&c);
        n.as_object_mut()
            .expect("object")
            .insert("ZZ_EXTRA".into(), json!("x"));
        let mut expected = vec!["/ZZ_EXTRA".to_owned()];
        if let Some(arr) = first_object_array(&n) {
            n[&arr][0]
                .as_object_mut()
                .expect("object")
                .insert("zz_inner".into(), json!(1));
            expected.push(format!("/{arr}/0/zz_inner"));
        }
        let errors = a.to_canonical(&n).expect_err("unknown fields are errors");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for p in &expected {
            assert!(
                paths.contains(&p.as_str()),
                "{}: {p} not reported in {paths:?}",
                a.department()
            );
        }
        assert_eq!(
            errors.len(),
            expected.len(),
            "{}: {errors:?}",
            a.department()
        );
    }
}

/// Every (pointer, value) of the scalar leaves of a document.
fn leaves(v: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                leaves(c, format!("{pointer}/{k}"), out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for (i, c) in items.iter().enumerate() {
                leaves(c, format!("{pointer}/{i}"), out);
            }
        }
        other => out.push((pointer, other.clone())),
    }
}

#[test]
fn every_malformed_native_field_is_reported_at_its_pointer() {
    for a in builtin() {
        let c = synthetic(a.dataset(), 1).remove(0);
        let n = a.to_native(&c);
        let mut fields = Vec::new();
        leaves(&n, String::new(), &mut fields);
        assert!(fields.len() > 10);
        for (pointer, _) in fields {
            let mut bad = n.clone();
            *bad.pointer_mut(&pointer).expect("leaf exists") = json!({"nested": "ZQXV"});
            let errors = a
                .to_canonical(&bad)
                .expect_err("an object where a value belongs is an error");
            assert!(
                errors.iter().any(|e| e.path == pointer),
                "{}: {pointer} not reported: {errors:?}",
                a.department()
            );
            assert!(errors.iter().all(|e| !e.message.contains("ZQXV")));
        }
    }
}

#[test]
fn messages_never_repeat_submitted_values() {
    for a in builtin() {
        let c = synthetic(a.dataset(), 1).remove(0);
        let n = a.to_native(&c);
        let mut fields = Vec::new();
        leaves(&n, String::new(), &mut fields);
        for (pointer, _) in fields {
            let mut bad = n.clone();
            *bad.pointer_mut(&pointer).expect("leaf exists") = json!("ZQXV-19801345-garbage");
            if let Err(errors) = a.to_canonical(&bad) {
                for e in errors {
                    assert!(
                        !e.message.contains("ZQXV"),
                        "{}: {pointer}: {}",
                        a.department(),
                        e.message
                    );
                }
            }
            let dataset = catalogue().dataset(a.dataset()).expect("dataset");
            if let Ok(c) = a.to_canonical(&bad)
                && let Err(errors) = dataset.validate(c)
            {
                for e in errors {
                    assert!(
                        !e.message.contains("ZQXV"),
                        "{}: {pointer}: {}",
                        a.department(),
                        e.message
                    );
                }
            }
        }
    }
}

#[test]
fn non_objects_are_refused_at_the_root() {
    for a in builtin() {
        for v in [
            json!(null),
            json!(1),
            json!("x"),
            json!([1, 2]),
            json!(true),
        ] {
            let e = a.to_canonical(&v).expect_err("not an object");
            assert_eq!(e[0].path, "");
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        "[0-9]{6,18}[Xx]?".prop_map(Value::String),
        "[0-9]{4}[-/]?[0-9]{2}[-/]?[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A document using the adapter's own native field names with arbitrary
/// values: reaches every format converter.
fn arb_native(a: &'static adapters::TableAdapter) -> impl Strategy<Value = Value> {
    let names: Vec<String> = a.native_fields().to_vec();
    prop::collection::vec((prop::sample::select(names), arb_json(), 0usize..3), 0..30).prop_map(
        |entries| {
            let mut doc = Value::Object(Map::new());
            for (path, value, index) in entries {
                let mut cur = &mut doc;
                let parts: Vec<&str> = path.split('.').collect();
                for (i, part) in parts.iter().enumerate() {
                    let last = i + 1 == parts.len();
                    let (name, each) = part
                        .strip_suffix("[]")
                        .map_or((*part, false), |n| (n, true));
                    let Some(obj) = cur.as_object_mut() else {
                        break;
                    };
                    if last && !each {
                        obj.insert(name.to_owned(), value.clone());
                        break;
                    }
                    let slot = obj
                        .entry(name.to_owned())
                        .or_insert_with(|| if each { json!([]) } else { json!({}) });
                    if each {
                        let Some(arr) = slot.as_array_mut() else {
                            break;
                        };
                        while arr.len() <= index {
                            arr.push(json!({}));
                        }
                        cur = &mut arr[index];
                    } else {
                        cur = slot;
                    }
                }
            }
            doc
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        for a in builtin() {
            if let Err(errors) = a.to_canonical(&v) {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(e.path.is_empty() || e.path.starts_with('/'));
                }
            }
            let _ = a.to_native(&v);
        }
    }

    #[test]
    fn arbitrary_values_in_known_fields_never_panic(
        docs in (arb_native(&builtin()[0]), arb_native(&builtin()[1]), arb_native(&builtin()[2]), arb_native(&builtin()[3]), arb_native(&builtin()[4]))
    ) {
        let docs = [docs.0, docs.1, docs.2, docs.3, docs.4];
        for (a, doc) in builtin().iter().zip(docs) {
            match a.to_canonical(&doc) {
                Ok(c) => {
                    let dataset = catalogue().dataset(a.dataset()).expect("dataset");
                    if let Err(errors) = dataset.validate(c.clone()) {
                        prop_assert!(errors.iter().all(|e| e.path.is_empty() || e.path.starts_with('/')));
                    }
                    let _ = a.to_native(&c);
                }
                Err(errors) => {
                    for e in &errors {
                        prop_assert!(e.path.starts_with('/'), "{:?}", e);
                        // The pointer names a place in the submitted document.
                        let parent = e.path.rsplit_once('/').map_or("", |p| p.0);
                        prop_assert!(doc.pointer(&e.path).is_some() || doc.pointer(parent).is_some(), "{:?}", e);
                    }
                }
            }
        }
    }
}
