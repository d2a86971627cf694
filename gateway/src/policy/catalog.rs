//! The field catalogue the policy engine needs, derived from the dataset JSON
//! Schemas (`schemas/<dataset>.schema.json`, annotated per the module
//! contract: `x-dataset`, `x-owner`, `x-region`, and `x-sharing` / `x-kind` on
//! every property).
//!
//! The policy engine only needs paths, kinds and sharing types, which it
//! reads straight from a schema `serde_json::Value`
//! ([`DatasetInfo::from_schema`]); the kinds and sharing types are the
//! `adapters` catalogue's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// What a field holds (`x-kind`; decides which masks and generalisations
/// apply) and its sharing type (`x-sharing`): the catalogue's own types.
pub use adapters::catalogue::{FieldKind, Sharing};

/// One property of a dataset: a leaf or a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldInfo {
    /// Contract path, e.g. `members[].name`.
    pub path: String,
    /// `x-kind` (inferred from `type` when absent).
    pub kind: FieldKind,
    /// `x-sharing` (`none` when absent: fail closed).
    pub sharing: Sharing,
}

/// What the policy engine knows about one dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetInfo {
    /// `x-dataset`.
    pub id: String,
    /// `x-owner`: the department that publishes it.
    pub owner: String,
    /// `x-region`: path of the record's region code (row scope).
    pub region_path: Option<String>,
    /// Every property, containers included, in schema order.
    pub fields: Vec<FieldInfo>,
    /// Canonical JSON of the schema, for the policy-set version hash.
    #[serde(skip)]
    pub(crate) canonical: String,
}

/// Why a schema could not be read as a dataset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct CatalogError {
    /// File name or schema `$id`.
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

/// Nesting limit for schemas (a hostile or broken schema must not recurse
/// without bound).
const MAX_DEPTH: usize = 16;

impl DatasetInfo {
    /// Reads the catalogue attributes and walks `properties` / `items`
    /// collecting every field path with its kind and sharing type.
    pub fn from_schema(schema: &Value) -> Result<Self, String> {
        let id = schema
            .get("x-dataset")
            .and_then(Value::as_str)
            .ok_or("missing string x-dataset")?
            .to_owned();
        let owner = schema
            .get("x-owner")
            .and_then(Value::as_str)
            .ok_or("missing string x-owner")?
            .to_owned();
        let region_path = schema
            .get("x-region")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut fields = Vec::new();
        walk_properties(schema, "", 0, &mut fields)?;
        if let Some(rp) = &region_path
            && !fields.iter().any(|f| &f.path == rp)
        {
            return Err(format!("x-region {rp:?} is not a property path"));
        }
        Ok(DatasetInfo {
            id,
            owner,
            region_path,
            fields,
            canonical: super::source::canonical_json(schema),
        })
    }

    /// The field at `path`, if any.
    pub fn field(&self, path: &str) -> Option<&FieldInfo> {
        self.fields.iter().find(|f| f.path == path)
    }
}

fn walk_properties(
    node: &Value,
    prefix: &str,
    depth: usize,
    out: &mut Vec<FieldInfo>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("schema nests deeper than {MAX_DEPTH} levels"));
    }
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, prop) in props {
        if name.is_empty() || name.contains(['.', '[', ']']) {
            return Err(format!(
                "property name {name:?} cannot be used in a field path"
            ));
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let kind = kind_of(prop).ok_or_else(|| format!("{path}: unknown or missing x-kind"))?;
        let sharing = match prop.get("x-sharing") {
            Some(Value::String(s)) => {
                Sharing::parse(s).ok_or_else(|| format!("{path}: unknown x-sharing {s:?}"))?
            }
            Some(_) => return Err(format!("{path}: x-sharing must be a string")),
            None => Sharing::None,
        };
        out.push(FieldInfo {
            path: path.clone(),
            kind,
            sharing,
        });
        match kind {
            FieldKind::Object => walk_properties(prop, &path, depth + 1, out)?,
            FieldKind::Array => {
                let items = prop.get("items").unwrap_or(&Value::Null);
                let elem = format!("{path}[]");
                // Arrays of scalars: the element itself is the leaf
                // `path[]`; arrays of objects recurse.
                if items.get("properties").is_some() {
                    walk_properties(items, &elem, depth + 1, out)?;
                } else if let Some(k) = kind_of(items).filter(|k| !k.is_container()) {
                    let sharing = items
                        .get("x-sharing")
                        .and_then(Value::as_str)
                        .and_then(Sharing::parse)
                        .unwrap_or(sharing);
                    out.push(FieldInfo {
                        path: elem,
                        kind: k,
                        sharing,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `x-kind`, or a kind inferred from `type` (first non-null entry of a type
/// array) for properties that lack one.
fn kind_of(prop: &Value) -> Option<FieldKind> {
    if let Some(k) = prop.get("x-kind").and_then(Value::as_str) {
        return FieldKind::parse(k);
    }
    let ty = match prop.get("type") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    Some(match ty? {
        "object" => FieldKind::Object,
        "array" => FieldKind::Array,
        "string" => FieldKind::Text,
        "integer" => FieldKind::Integer,
        "number" => FieldKind::Number,
        "boolean" => FieldKind::Boolean,
        _ => return None,
    })
}

/// The datasets a policy set may refer to, keyed by id.
#[derive(Clone, Debug, Default)]
pub struct Datasets {
    by_id: BTreeMap<String, DatasetInfo>,
}

impl Datasets {
    /// Builds the catalogue from already-parsed schemas (e.g. from
    /// `adapters::catalogue::Dataset::schema`).
    pub fn from_schemas<'a>(
        schemas: impl IntoIterator<Item = &'a Value>,
    ) -> Result<Self, Vec<CatalogError>> {
        let mut errors = Vec::new();
        let mut out = Datasets::default();
        for s in schemas {
            let name = s
                .get("$id")
                .and_then(Value::as_str)
                .unwrap_or("<schema>")
                .to_owned();
            match DatasetInfo::from_schema(s) {
                Ok(d) => out.insert(d, &name, &mut errors),
                Err(message) => errors.push(CatalogError {
                    source_name: name,
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Reads every `*.schema.json` in `dir` that declares `x-dataset`
    /// (others, such as `policy.schema.json`, are skipped).
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<CatalogError>> {
        let err = |p: &Path, m: String| CatalogError {
            source_name: p.display().to_string(),
            message: m,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| vec![err(dir, e.to_string())])?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".schema.json"))
            })
            .collect();
        paths.sort();
        let mut errors = Vec::new();
        let mut out = Datasets::default();
        for p in paths {
            let value: Value = match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(m) => {
                    errors.push(err(&p, m));
                    continue;
                }
            };
            if value.get("x-dataset").is_none() {
                continue;
            }
            match DatasetInfo::from_schema(&value) {
                Ok(d) => out.insert(d, &p.display().to_string(), &mut errors),
                Err(m) => errors.push(err(&p, m)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn insert(&mut self, d: DatasetInfo, name: &str, errors: &mut Vec<CatalogError>) {
        if self.by_id.contains_key(&d.id) {
            errors.push(CatalogError {
                source_name: name.to_owned(),
                message: format!("dataset {:?} is defined twice", d.id),
            });
        } else {
            self.by_id.insert(d.id.clone(), d);
        }
    }

    /// The dataset with this id.
    pub fn get(&self, id: &str) -> Option<&DatasetInfo> {
        self.by_id.get(id)
    }

    /// All datasets, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &DatasetInfo> {
        self.by_id.values()
    }

    /// Number of datasets.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_nested_objects_and_arrays() {
        let s = json!({
            "x-dataset": "d", "x-owner": "civil-affairs", "x-region": "region",
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-kind": "region", "x-sharing": "unconditional"},
                "head": {"type": "object", "x-kind": "object", "x-sharing": "conditional",
                    "properties": {"name": {"type": "string", "x-kind": "name", "x-sharing": "conditional"}}},
                "members": {"type": "array", "x-kind": "array", "x-sharing": "conditional",
                    "items": {"type": "object", "properties": {
                        "id_number": {"type": "string", "x-kind": "id_number", "x-sharing": "none"}}}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "untyped": {"type": ["integer", "null"]}
            }
        });
        let d = DatasetInfo::from_schema(&s).expect("schema");
        let paths: Vec<_> = d.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "region",
                "head",
                "head.name",
                "members",
                "members[].id_number",
                "tags",
                "tags[]",
                "untyped"
            ]
        );
        let id = d.field("members[].id_number").expect("field");
        assert_eq!((id.kind, id.sharing), (FieldKind::IdNumber, Sharing::None));
        // Missing x-sharing fails closed.
        assert_eq!(d.field("untyped").map(|f| f.sharing), Some(Sharing::None));
        assert_eq!(d.field("untyped").map(|f| f.kind), Some(FieldKind::Integer));
    }

    #[test]
    fn rejects_bad_schemas() {
        assert!(DatasetInfo::from_schema(&json!({"x-owner": "a"})).is_err());
        let bad_region =
            json!({"x-dataset": "d", "x-owner": "o", "x-region": "nope", "properties": {}});
        assert!(DatasetInfo::from_schema(&bad_region).is_err());
        let bad_kind = json!({"x-dataset": "d", "x-owner": "o",
            "properties": {"a": {"x-kind": "weird"}}});
        assert!(DatasetInfo::from_schema(&bad_kind).is_err());
    }
}
