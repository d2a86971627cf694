//! Reading policy files: YAML → JSON value with a line for every node, the
//! policy JSON Schema check, and the typed file model.
//!
//! Why YAML (serde-saphyr) rather than TOML: policy files are deeply nested
//! lists of rules with per-field maps (`members[].name: mask`), which TOML
//! expresses only with `[[rules]]` tables and quoted dotted keys that
//! reviewers misread; YAML keeps one rule on one screen, takes comments, and
//! serde-saphyr is pure Rust with budgets against hostile input (alias
//! bombs, deep nesting, huge documents), rejects duplicate keys, and gives
//! line numbers for every node, which the "all errors with file and line"
//! requirement needs. We switch on strict booleans so `no`/`yes` stay
//! strings.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// Largest policy file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// A policy file parsed into JSON with the line of every node, keyed by JSON
/// pointer (`/rules/3/fields/members[].name`).
#[derive(Debug)]
pub(crate) struct Located {
    pub value: Value,
    lines: HashMap<String, u64>,
}

impl Located {
    /// The line of the node at `pointer`, or of its nearest ancestor.
    pub fn line(&self, pointer: &str) -> Option<u64> {
        let mut p = pointer;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

/// A YAML node with locations on every child, built by serde-saphyr's
/// `Spanned` wrapper.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key: any scalar, kept as its text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_element::<Spanned<Node>>()? {
                    v.push(e);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = a.next_key::<Spanned<Key>>()? {
                    let val = a.next_value::<Spanned<Node>>()?;
                    v.push((k, val));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn to_value(node: Spanned<Node>, pointer: String, lines: &mut HashMap<String, u64>) -> Value {
    lines.insert(pointer.clone(), node.referenced.line());
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::UInt(u) => Value::Number(u.into()),
        Node::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, n)| to_value(n, format!("{pointer}/{i}"), lines))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let p = format!("{pointer}/{}", escape_pointer(&k.value.0));
                let val = to_value(v, p.clone(), lines);
                // The key's own line, so errors about an entry point at its
                // name even when the value starts on the next line.
                lines.insert(p, k.referenced.line());
                m.insert(k.value.0, val);
            }
            Value::Object(m)
        }
    }
}

/// Parses one YAML document with the hostile-input limits of serde-saphyr.
/// On error returns the message and the line, if known.
pub(crate) fn parse_yaml(text: &str) -> Result<Located, (String, Option<u64>)> {
    if text.len() > MAX_FILE_BYTES {
        return Err((format!("file is larger than {MAX_FILE_BYTES} bytes"), None));
    }
    let mut opts = serde_saphyr::Options::default();
    opts.strict_booleans = true;
    opts.with_snippet = false;
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        // First line only: the message, without the rendered snippet.
        let msg = e.to_string();
        let msg = msg.lines().next().unwrap_or("invalid YAML").to_owned();
        (msg, line)
    })?;
    let mut lines = HashMap::new();
    let value = to_value(root, String::new(), &mut lines);
    Ok(Located { value, lines })
}

/// Canonical JSON: object keys sorted, no whitespace. Used for the content
/// hash, so reformatting or reordering a file does not change the version.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// The file model. Shapes are checked first by schemas/policy.schema.json; the
// typed model then only has to carry them.

/// One policy file: any of the three sections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    #[serde(default)]
    #[allow(dead_code)] // checked by the schema; kept for future format versions
    pub version: Option<u32>,
    #[serde(default)]
    pub departments: Vec<DepartmentDef>,
    #[serde(default)]
    pub purposes: Vec<PurposeDef>,
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// A department that may appear as consumer or owner.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentDef {
    /// `civil-affairs`, …
    pub id: String,
    /// 中文名称.
    pub name_zh: String,
    /// English name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A purpose code a request may state in `X-Purpose`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeDef {
    /// `student-aid`, …
    pub code: String,
    /// 中文名称.
    pub name_zh: String,
    /// English name.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether requests must carry an authorisation reference (核对).
    #[serde(default)]
    pub requires_authorisation: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EffectDef {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SharingDef {
    Unconditional,
    Conditional,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDef {
    pub id: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for reviewers; shown by the schema
    pub description: Option<String>,
    #[serde(default)]
    pub effect: EffectDef,
    pub consumer: ConsumerDef,
    pub dataset: String,
    /// Absent on a deny rule: every purpose.
    #[serde(default)]
    pub purposes: Option<Vec<String>>,
    #[serde(default)]
    pub sharing: Option<SharingDef>,
    #[serde(default)]
    pub legal_basis: Option<String>,
    #[serde(default)]
    pub valid: Option<ValidDef>,
    #[serde(default)]
    pub rows: Option<RowsDef>,
    /// Allow: a map path → treatment; deny: a list of paths to drop.
    #[serde(default)]
    pub fields: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumerDef {
    pub department: String,
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidDef {
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub not_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RowsDef {
    #[serde(default)]
    pub filters: Vec<FilterDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterDef {
    pub field: String,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_every_node() {
        let y =
            "rules:\n  - id: a\n    fields:\n      name: mask\n      members[].id_number: drop\n";
        let l = parse_yaml(y).expect("yaml");
        assert_eq!(l.line("/rules/0/id"), Some(2));
        assert_eq!(l.line("/rules/0/fields/name"), Some(4));
        assert_eq!(l.line("/rules/0/fields/members[].id_number"), Some(5));
        // Unknown pointer: nearest ancestor.
        assert_eq!(l.line("/rules/0/fields/nope"), Some(3));
        assert_eq!(l.value["rules"][0]["fields"]["name"], "mask");
    }

    #[test]
    fn yaml_errors_carry_lines_and_hostile_input_is_refused() {
        let (msg, line) = parse_yaml("a: 1\na: 2\n").expect_err("duplicate key");
        assert!(!msg.is_empty());
        assert_eq!(line, Some(2));
        // Billion laughs.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_yaml(&bomb).is_err());
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(parse_yaml(&deep).is_err());
        // Strict booleans: `no` stays a string.
        let l = parse_yaml("x: no\n").expect("yaml");
        assert_eq!(l.value["x"], "no");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":null}}"#).expect("json");
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,2]},"b":1}"#);
    }
}
