//! Department adapters: native JSON <-> canonical records, driven by one
//! declarative mapping table per department (`adapters/mappings/*.toml`,
//! compiled in). See `adapters/CONTRACT.md` for what every adapter must do.
//!
//! A mapping lists field correspondences by path (`JTCY[].GMSFHM` <->
//! `members[].id_number`) with an optional value format. Native documents are
//! walked once; each value whose path is mapped is converted and placed at its
//! canonical path (array indices carried over), and every native field that is
//! neither mapped nor declared `ignore` is reported as an error with its JSON
//! pointer into the native document. `null` native values mean "absent".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::catalogue::{RecordError, Seg, parse_date, parse_field_path, push_index, push_token};

/// One department's adapter: its native record format to the canonical
/// record of its dataset, and back.
pub trait Adapter: Send + Sync {
    /// The department id (`civil-affairs`, …).
    fn department(&self) -> &str;
    /// The dataset the department publishes.
    fn dataset(&self) -> &str;
    /// Converts a native document to a canonical record (not yet validated
    /// against the schema: the catalogue does that). Errors point into the
    /// native document.
    fn to_canonical(&self, native: &Value) -> Result<Value, Vec<RecordError>>;
    /// Converts a canonical record to the native format. Never fails: fields
    /// the mapping does not know are left out.
    fn to_native(&self, canonical: &Value) -> Value;
}

/// Why a mapping table is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {name}: {message}")]
pub struct MappingError {
    /// The mapping's department (or `?` if it could not be read).
    pub name: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    department: String,
    dataset: String,
    #[serde(default = "default_unknown")]
    unknown_fields: String,
    #[serde(default)]
    codes: BTreeMap<String, BTreeMap<String, String>>,
    field: Vec<FieldEntry>,
}

fn default_unknown() -> String {
    "error".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldEntry {
    native: String,
    canonical: Option<String>,
    #[serde(default)]
    zh: String,
    format: Option<String>,
    codes: Option<String>,
    separator: Option<String>,
    constant: Option<String>,
    #[serde(rename = "true")]
    true_value: Option<String>,
    #[serde(rename = "false")]
    false_value: Option<String>,
    #[serde(default)]
    ignore: bool,
}

/// A bidirectional code table (native code <-> canonical code).
#[derive(Debug, Clone)]
struct CodeTable {
    name: String,
    to_canonical: HashMap<String, String>,
    to_native: HashMap<String, String>,
}

#[derive(Debug, Clone)]
enum Format {
    Copy,
    Codes(CodeTable),
    Date8,
    DateSlash,
    DateTime,
    MoneyString,
    IntString,
    Flag {
        yes: String,
        no: String,
    },
    List {
        separator: String,
        codes: Option<CodeTable>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    native: Vec<Seg>,
    canonical: Vec<Seg>,
    format: Format,
}

/// A compiled mapping table; implements [`Adapter`].
#[derive(Debug, Clone)]
pub struct TableAdapter {
    department: String,
    dataset: String,
    entries: Vec<Entry>,
    by_native: HashMap<String, usize>,
    by_canonical: HashMap<String, usize>,
    native_containers: HashSet<String>,
    canonical_containers: HashSet<String>,
    /// native array pattern -> canonical array path, and the reverse.
    native_arrays: HashMap<String, Vec<Seg>>,
    canonical_arrays: HashMap<String, Vec<Seg>>,
    ignored: HashSet<String>,
    constants: Vec<(String, Vec<Seg>, String)>,
    /// Native field paths mapped or ignored, for documentation and tests.
    native_paths: Vec<String>,
}

fn pattern_of(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Each => s.push_str("[]"),
        }
    }
    s
}

/// Every container prefix of a path: `a`, `a[]` for `a[].b`.
fn prefixes(segs: &[Seg]) -> Vec<String> {
    (1..segs.len()).map(|n| pattern_of(&segs[..n])).collect()
}

impl TableAdapter {
    /// Compiles a mapping table (TOML, the format of `adapters/mappings/`).
    pub fn from_toml(text: &str) -> Result<TableAdapter, MappingError> {
        let file: MappingFile = toml::from_str(text).map_err(|e| MappingError {
            name: "?".into(),
            message: e.to_string(),
        })?;
        let name = file.department.clone();
        let err = |message: String| MappingError {
            name: name.clone(),
            message,
        };
        if file.unknown_fields != "error" {
            return Err(err(format!(
                "unknown_fields = {:?}: only \"error\" is supported (unknown native fields are always reported)",
                file.unknown_fields
            )));
        }
        let mut tables = HashMap::new();
        for (tname, codes) in &file.codes {
            let mut to_native = HashMap::new();
            for (n, c) in codes {
                if to_native.insert(c.clone(), n.clone()).is_some() {
                    return Err(err(format!(
                        "code table {tname}: canonical code {c} appears twice (the table must be reversible)"
                    )));
                }
            }
            tables.insert(
                tname.clone(),
                CodeTable {
                    name: tname.clone(),
                    to_canonical: codes.clone().into_iter().collect(),
                    to_native,
                },
            );
        }
        let mut this = TableAdapter {
            department: file.department.clone(),
            dataset: file.dataset.clone(),
            entries: Vec::new(),
            by_native: HashMap::new(),
            by_canonical: HashMap::new(),
            native_containers: HashSet::new(),
            canonical_containers: HashSet::new(),
            native_arrays: HashMap::new(),
            canonical_arrays: HashMap::new(),
            ignored: HashSet::new(),
            constants: Vec::new(),
            native_paths: Vec::new(),
        };
        for f in file.field {
            let native = parse_field_path(&f.native)
                .ok_or_else(|| err(format!("bad native path {:?}", f.native)))?;
            let npat = pattern_of(&native);
            if this.by_native.contains_key(&npat)
                || this.ignored.contains(&npat)
                || this.constants.iter().any(|c| c.0 == npat)
            {
                return Err(err(format!("native field {npat} is mapped twice")));
            }
            this.native_paths.push(npat.clone());
            if f.ignore {
                if f.canonical.is_some() || f.constant.is_some() {
                    return Err(err(format!(
                        "{npat}: an ignored field has no canonical path or constant"
                    )));
                }
                this.ignored.insert(npat);
                continue;
            }
            if let Some(value) = f.constant {
                if native.contains(&Seg::Each) || f.canonical.is_some() {
                    return Err(err(format!(
                        "{npat}: a constant sits outside arrays and has no canonical path"
                    )));
                }
                this.native_containers.extend(prefixes(&native));
                this.constants.push((npat, native, value));
                continue;
            }
            let cpath = f
                .canonical
                .ok_or_else(|| err(format!("{npat}: needs canonical, constant or ignore")))?;
            let canonical = parse_field_path(&cpath)
                .ok_or_else(|| err(format!("bad canonical path {cpath:?}")))?;
            let n_each = native.iter().filter(|s| **s == Seg::Each).count();
            let c_each = canonical.iter().filter(|s| **s == Seg::Each).count();
            if n_each != c_each || n_each > 1 {
                return Err(err(format!(
                    "{npat} -> {cpath}: both sides need the same array nesting (at most one level)"
                )));
            }
            let codes = match &f.codes {
                Some(t) => Some(
                    tables
                        .get(t)
                        .cloned()
                        .ok_or_else(|| err(format!("{npat}: no code table {t}")))?,
                ),
                None => None,
            };
            let format = match (f.format.as_deref(), codes) {
                (None, None) => Format::Copy,
                (None, Some(t)) => Format::Codes(t),
                (Some("list"), codes) => Format::List {
                    separator: f.separator.unwrap_or_else(|| ",".into()),
                    codes,
                },
                (Some(other), Some(_)) => {
                    return Err(err(format!(
                        "{npat}: format {other} does not take a code table"
                    )));
                }
                (Some("date8"), None) => Format::Date8,
                (Some("date_slash"), None) => Format::DateSlash,
                (Some("datetime"), None) => Format::DateTime,
                (Some("money_string"), None) => Format::MoneyString,
                (Some("int_string"), None) => Format::IntString,
                (Some("flag"), None) => Format::Flag {
                    yes: f.true_value.unwrap_or_else(|| "1".into()),
                    no: f.false_value.unwrap_or_else(|| "0".into()),
                },
                (Some(other), None) => return Err(err(format!("{npat}: unknown format {other}"))),
            };
            let cpat = pattern_of(&canonical);
            if this.by_canonical.contains_key(&cpat) {
                return Err(err(format!("canonical field {cpat} is mapped twice")));
            }
            // Array correspondence: the prefix up to the array marker on each side.
            if n_each == 1 {
                let ni = native.iter().position(|s| *s == Seg::Each).unwrap_or(0);
                let ci = canonical.iter().position(|s| *s == Seg::Each).unwrap_or(0);
                let (na, ca) = (pattern_of(&native[..ni]), pattern_of(&canonical[..ci]));
                let prev_c = this
                    .native_arrays
                    .insert(na.clone(), canonical[..ci].to_vec());
                let prev_n = this
                    .canonical_arrays
                    .insert(ca.clone(), native[..ni].to_vec());
                if prev_c.is_some_and(|p| pattern_of(&p) != ca)
                    || prev_n.is_some_and(|p| pattern_of(&p) != na)
                {
                    return Err(err(format!(
                        "array {na} must always correspond to one canonical array"
                    )));
                }
            }
            this.native_containers.extend(prefixes(&native));
            this.canonical_containers.extend(prefixes(&canonical));
            this.by_native.insert(npat, this.entries.len());
            this.by_canonical.insert(cpat, this.entries.len());
            let _ = f.zh;
            this.entries.push(Entry {
                native,
                canonical,
                format,
            });
        }
        for p in this.by_native.keys().chain(this.ignored.iter()) {
            if this.native_containers.contains(p) {
                return Err(err(format!(
                    "{p} is both a field and a container of fields"
                )));
            }
        }
        Ok(this)
    }

    /// Canonical field paths this adapter fills.
    pub fn canonical_fields(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.iter().map(|e| pattern_of(&e.canonical))
    }

    /// Native field paths this adapter knows (mapped, constant or ignored).
    pub fn native_fields(&self) -> &[String] {
        &self.native_paths
    }
}

/// Walk state: the field pattern, the JSON pointer and the array indices.
struct Walk {
    pattern: String,
    pointer: String,
    indices: Vec<usize>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            pattern: String::new(),
            pointer: String::new(),
            indices: Vec::new(),
        }
    }
}

/// Sets `value` at `segs` under `root`, taking array indices from `indices`
/// in order and creating objects and arrays as needed. With `only_if_absent`
/// an existing value is kept.
fn set_path(root: &mut Value, segs: &[Seg], indices: &[usize], value: Value, only_if_absent: bool) {
    let mut cur = root;
    let mut idx = indices.iter();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match seg {
            Seg::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                let Value::Object(map) = cur else { return };
                if last {
                    if !(only_if_absent && map.contains_key(k.as_str())) {
                        map.insert(k.clone(), value);
                    }
                    return;
                }
                let next_is_each = matches!(segs.get(i + 1), Some(Seg::Each));
                cur = map.entry(k.clone()).or_insert_with(|| {
                    if next_is_each {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Map::new())
                    }
                });
            }
            Seg::Each => {
                let n = idx.next().copied().unwrap_or(0);
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                let Value::Array(items) = cur else { return };
                while items.len() <= n {
                    items.push(Value::Object(Map::new()));
                }
                if last {
                    items[n] = value;
                    return;
                }
                cur = &mut items[n];
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses a decimal string of yuan: digits with at most two decimals.
pub(crate) fn parse_money_text(s: &str) -> Option<Value> {
    let s = s.trim();
    let (int, frac) = match s.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (s, ""),
    };
    if int.is_empty()
        || int.len() > 12
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if frac.trim_end_matches('0').is_empty() {
        return int.parse::<u64>().ok().map(|n| Value::Number(n.into()));
    }
    s.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

fn money_to_text(v: &Value) -> Value {
    match v.as_f64() {
        Some(x) => Value::String(format!("{x:.2}")),
        None => v.clone(),
    }
}

fn is_compact_date(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

impl Format {
    /// Native value -> canonical value, or a message (never with the value).
    fn to_canonical(&self, v: &Value) -> Result<Value, String> {
        match self {
            Format::Copy => match v {
                Value::Object(_) => Err("expected a value, found an object".into()),
                Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                    Err("expected a value or a list of values".into())
                }
                _ => Ok(v.clone()),
            },
            Format::Codes(t) => {
                let code = scalar_text(v).ok_or_else(|| {
                    format!(
                        "expected a code of table {}, found {}",
                        t.name,
                        type_name(v)
                    )
                })?;
                t.to_canonical
                    .get(&code)
                    .map(|c| Value::String(c.clone()))
                    .ok_or_else(|| format!("not a code of table {}", t.name))
            }
            Format::Date8 => {
                let s = v
                    .as_str()
                    .map(str::trim)
                    .filter(|s| is_compact_date(s))
                    .ok_or("expected a date YYYYMMDD")?;
                let d = format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]);
                parse_date(&d)
                    .map(|_| Value::String(d))
                    .ok_or_else(|| "not a real calendar date (YYYYMMDD)".into())
            }
            Format::DateSlash => {
                let s = v
                    .as_str()
                    .map(str::trim)
                    .ok_or("expected a date YYYY/MM/DD")?;
                let d = s.replace('/', "-");
                if s.contains('-') {
                    return Err("expected a date YYYY/MM/DD".into());
                }
                parse_date(&d)
                    .map(|_| Value::String(d))
                    .ok_or_else(|| "not a real calendar date (YYYY/MM/DD)".into())
            }
            Format::DateTime => {
                let s = v
                    .as_str()
                    .map(str::trim)
                    .ok_or("expected a time YYYY-MM-DD HH:MM:SS")?;
                let date = s.get(..10).unwrap_or(s);
                let rest = s.get(10..).unwrap_or("");
                let time_ok = rest.is_empty()
                    || (rest.len() == 9
                        && rest.as_bytes()[0] == b' '
                        && rest.as_bytes()[3] == b':'
                        && rest.as_bytes()[6] == b':'
                        && rest
                            .bytes()
                            .enumerate()
                            .all(|(i, b)| matches!(i, 0 | 3 | 6) || b.is_ascii_digit()));
                match parse_date(date) {
                    Some(_) if time_ok => Ok(Value::String(date.to_owned())),
                    _ => Err("expected a time YYYY-MM-DD HH:MM:SS or a date YYYY-MM-DD".into()),
                }
            }
            Format::MoneyString => match v {
                Value::Number(_) => Ok(v.clone()),
                Value::String(s) => parse_money_text(s)
                    .ok_or_else(|| "expected an amount of yuan such as \"560.00\"".into()),
                _ => Err(format!(
                    "expected an amount of yuan, found {}",
                    type_name(v)
                )),
            },
            Format::IntString => match v {
                Value::Number(n) if n.is_u64() => Ok(v.clone()),
                Value::String(s) => s
                    .trim()
                    .parse::<u64>()
                    .map(|n| Value::Number(n.into()))
                    .map_err(|_| "expected a whole number".into()),
                _ => Err(format!("expected a whole number, found {}", type_name(v))),
            },
            Format::Flag { yes, no } => {
                let s = scalar_text(v).ok_or_else(|| {
                    format!("expected \"{yes}\" or \"{no}\", found {}", type_name(v))
                })?;
                if s == *yes {
                    Ok(Value::Bool(true))
                } else if s == *no {
                    Ok(Value::Bool(false))
                } else {
                    Err(format!("expected \"{yes}\" or \"{no}\""))
                }
            }
            Format::List { separator, codes } => {
                let s = v.as_str().ok_or_else(|| {
                    format!(
                        "expected a {separator:?}-separated list, found {}",
                        type_name(v)
                    )
                })?;
                let mut out = Vec::new();
                for part in s
                    .split(separator.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    match codes {
                        Some(t) => match t.to_canonical.get(part) {
                            Some(c) => out.push(Value::String(c.clone())),
                            None => {
                                return Err(format!(
                                    "an element is not a code of table {}",
                                    t.name
                                ));
                            }
                        },
                        None => out.push(Value::String(part.to_owned())),
                    }
                }
                Ok(Value::Array(out))
            }
        }
    }

    /// Canonical value -> native value; values that do not fit pass unchanged.
    fn to_native(&self, v: &Value) -> Value {
        match self {
            Format::Copy => v.clone(),
            Format::Codes(t) => v
                .as_str()
                .and_then(|c| t.to_native.get(c))
                .map_or_else(|| v.clone(), |n| Value::String(n.clone())),
            Format::Date8 => match v.as_str() {
                Some(s) if s.len() == 10 => Value::String(s.replace('-', "")),
                _ => v.clone(),
            },
            Format::DateSlash => match v.as_str() {
                Some(s) => Value::String(s.replace('-', "/")),
                None => v.clone(),
            },
            Format::DateTime => v.clone(),
            Format::MoneyString => money_to_text(v),
            Format::IntString => match v.as_u64() {
                Some(n) => Value::String(n.to_string()),
                None => v.clone(),
            },
            Format::Flag { yes, no } => match v.as_bool() {
                Some(true) => Value::String(yes.clone()),
                Some(false) => Value::String(no.clone()),
                None => v.clone(),
            },
            Format::List { separator, codes } => match v.as_array() {
                Some(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| {
                            let s = i.as_str().unwrap_or_default();
                            codes
                                .as_ref()
                                .and_then(|t| t.to_native.get(s))
                                .cloned()
                                .unwrap_or_else(|| s.to_owned())
                        })
                        .collect();
                    Value::String(parts.join(separator))
                }
                None => v.clone(),
            },
        }
    }
}

impl TableAdapter {
    fn walk_native(&self, v: &Value, w: &mut Walk, out: &mut Value, errors: &mut Vec<RecordError>) {
        if let Some(&i) = self.by_native.get(&w.pattern) {
            if v.is_null() {
                return;
            }
            let e = &self.entries[i];
            match e.format.to_canonical(v) {
                Ok(c) => set_path(out, &e.canonical, &w.indices, c, false),
                Err(m) => errors.push(RecordError::at(
                    w.pointer.clone(),
                    format!("{}: {m}", w.pattern),
                )),
            }
            return;
        }
        if self.ignored.contains(&w.pattern) || v.is_null() {
            return;
        }
        if let Some((npat, _, value)) = self.constants.iter().find(|c| c.0 == w.pattern) {
            if v.as_str() != Some(value.as_str()) {
                errors.push(RecordError::at(
                    w.pointer.clone(),
                    format!("{npat} must be {value:?}"),
                ));
            }
            return;
        }
        let is_root = w.pattern.is_empty();
        let container = is_root || self.native_containers.contains(&w.pattern);
        if !container {
            errors.push(RecordError::at(
                w.pointer.clone(),
                format!(
                    "unknown field {} (not in the {} mapping)",
                    w.pattern, self.department
                ),
            ));
            return;
        }
        let (plen, qlen) = (w.pattern.len(), w.pointer.len());
        match v {
            Value::Object(map) if !self.native_arrays.contains_key(&w.pattern) => {
                for (k, child) in map {
                    if !is_root {
                        w.pattern.push('.');
                    }
                    w.pattern.push_str(k);
                    push_token(&mut w.pointer, k);
                    self.walk_native(child, w, out, errors);
                    w.pattern.truncate(plen);
                    w.pointer.truncate(qlen);
                }
            }
            Value::Array(items) if self.native_arrays.contains_key(&w.pattern) => {
                if let Some(target) = self.native_arrays.get(&w.pattern) {
                    set_path(out, target, &w.indices, Value::Array(Vec::new()), true);
                }
                w.pattern.push_str("[]");
                for (i, item) in items.iter().enumerate() {
                    push_index(&mut w.pointer, i);
                    w.indices.push(i);
                    self.walk_native(item, w, out, errors);
                    w.indices.pop();
                    w.pointer.truncate(qlen);
                }
                w.pattern.truncate(plen);
            }
            other => {
                let expected = if self.native_arrays.contains_key(&w.pattern) {
                    "an array"
                } else {
                    "an object"
                };
                errors.push(RecordError::at(
                    w.pointer.clone(),
                    format!(
                        "{}: expected {expected}, found {}",
                        if is_root { "the record" } else { &w.pattern },
                        type_name(other)
                    ),
                ));
            }
        }
    }

    fn walk_canonical(&self, v: &Value, w: &mut Walk, out: &mut Value) {
        if let Some(&i) = self.by_canonical.get(&w.pattern) {
            let e = &self.entries[i];
            set_path(out, &e.native, &w.indices, e.format.to_native(v), false);
            return;
        }
        let is_root = w.pattern.is_empty();
        if !is_root && !self.canonical_containers.contains(&w.pattern) {
            return;
        }
        let plen = w.pattern.len();
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if !is_root {
                        w.pattern.push('.');
                    }
                    w.pattern.push_str(k);
                    self.walk_canonical(child, w, out);
                    w.pattern.truncate(plen);
                }
            }
            Value::Array(items) => {
                if let Some(target) = self.canonical_arrays.get(&w.pattern) {
                    set_path(out, target, &w.indices, Value::Array(Vec::new()), true);
                }
                w.pattern.push_str("[]");
                for (i, item) in items.iter().enumerate() {
                    w.indices.push(i);
                    self.walk_canonical(item, w, out);
                    w.indices.pop();
                }
                w.pattern.truncate(plen);
            }
            _ => {}
        }
    }
}

impl Adapter for TableAdapter {
    fn department(&self) -> &str {
        &self.department
    }

    fn dataset(&self) -> &str {
        &self.dataset
    }

    fn to_canonical(&self, native: &Value) -> Result<Value, Vec<RecordError>> {
        let mut out = Value::Object(Map::new());
        let mut errors = Vec::new();
        if !native.is_object() {
            errors.push(RecordError::at(
                "",
                format!(
                    "a {} record is a JSON object, found {}",
                    self.department,
                    type_name(native)
                ),
            ));
            return Err(errors);
        }
        self.walk_native(native, &mut Walk::new(), &mut out, &mut errors);
        for (npat, segs, value) in &self.constants {
            let present = segs.iter().try_fold(native, |v, s| match s {
                Seg::Key(k) => v.get(k.as_str()),
                Seg::Each => None,
            });
            if present.is_none_or(Value::is_null) {
                errors.push(RecordError::at(
                    crate::catalogue::pointer_of(segs),
                    format!("{npat} is required and must be {value:?}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn to_native(&self, canonical: &Value) -> Value {
        let mut out = Value::Object(Map::new());
        for (_, segs, value) in &self.constants {
            set_path(&mut out, segs, &[], Value::String(value.clone()), false);
        }
        self.walk_canonical(canonical, &mut Walk::new(), &mut out);
        out
    }
}

/// The built-in mapping tables, one per department (`adapters/mappings/`).
pub const BUILTIN_MAPPINGS: &[(&str, &str)] = &[
    (
        "civil-affairs",
        include_str!("../mappings/civil-affairs.toml"),
    ),
    (
        "rural-revitalization",
        include_str!("../mappings/rural-revitalization.toml"),
    ),
    ("education", include_str!("../mappings/education.toml")),
    (
        "health-insurance",
        include_str!("../mappings/health-insurance.toml"),
    ),
    ("housing", include_str!("../mappings/housing.toml")),
];

static BUILTIN: LazyLock<Vec<TableAdapter>> = LazyLock::new(|| {
    // A built-in table that fails to compile is left out; the test
    // `every_builtin_mapping_compiles` keeps that from ever shipping.
    BUILTIN_MAPPINGS
        .iter()
        .filter_map(|(_, text)| TableAdapter::from_toml(text).ok())
        .collect()
});

/// The built-in adapter of a department.
pub fn for_department(department: &str) -> Option<&'static dyn Adapter> {
    BUILTIN
        .iter()
        .find(|a| a.department == department)
        .map(|a| a as &dyn Adapter)
}

/// The built-in adapter of the department that publishes a dataset.
pub fn for_dataset(dataset: &str) -> Option<&'static dyn Adapter> {
    BUILTIN
        .iter()
        .find(|a| a.dataset == dataset)
        .map(|a| a as &dyn Adapter)
}

/// Every built-in adapter (for the compliance test and documentation).
pub fn builtin() -> &'static [TableAdapter] {
    &BUILTIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_builtin_mapping_compiles() {
        for (name, text) in BUILTIN_MAPPINGS {
            let a = TableAdapter::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(a.department(), *name);
        }
        assert_eq!(builtin().len(), BUILTIN_MAPPINGS.len());
    }

    #[test]
    fn mapping_errors_are_named() {
        let bad = "department = \"x\"\ndataset = \"y\"\n[[field]]\nnative = \"A[].b\"\ncanonical = \"b\"\n";
        let e = TableAdapter::from_toml(bad).unwrap_err();
        assert!(e.message.contains("array nesting"), "{e}");
        let twice = "department = \"x\"\ndataset = \"y\"\n[[field]]\nnative = \"A\"\ncanonical = \"a\"\n[[field]]\nnative = \"A\"\ncanonical = \"b\"\n";
        assert!(
            TableAdapter::from_toml(twice)
                .unwrap_err()
                .message
                .contains("twice")
        );
        let codes = "department = \"x\"\ndataset = \"y\"\n[[field]]\nnative = \"A\"\ncanonical = \"a\"\ncodes = \"nope\"\n";
        assert!(
            TableAdapter::from_toml(codes)
                .unwrap_err()
                .message
                .contains("no code table")
        );
    }

    #[test]
    fn formats_convert_both_ways() {
        let a = for_department("civil-affairs").expect("builtin");
        let native = json!({"JZDXBH": "A-0001", "JZLB": "02", "JTRKS": "3", "YBZJE": "560.50", "BZQSRQ": "20240101",
                            "JTCY": [{"XM": "甲", "DRB": "1"}]});
        let c = a.to_canonical(&native).expect("maps");
        assert_eq!(c["category"], "tekun");
        assert_eq!(c["household_size"], 3);
        assert_eq!(c["monthly_amount"], 560.5);
        assert_eq!(c["valid_from"], "2024-01-01");
        assert_eq!(c["members"][0]["single_person_enrolment"], true);
        assert_eq!(a.to_native(&c), native);
    }

    #[test]
    fn unknown_and_malformed_native_fields_carry_pointers() {
        let a = for_department("civil-affairs").expect("builtin");
        let native = json!({"JZLB": "77", "XYZ": 1, "BZQSRQ": "20230230", "JTCY": [{"XM": "甲"}, {"QQ": "x"}]});
        let errs = a.to_canonical(&native).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"/JZLB"), "{paths:?}");
        assert!(paths.contains(&"/XYZ"), "{paths:?}");
        assert!(paths.contains(&"/BZQSRQ"), "{paths:?}");
        assert!(paths.contains(&"/JTCY/1/QQ"), "{paths:?}");
    }

    #[test]
    fn constants_are_checked_and_emitted() {
        let a = for_department("health-insurance").expect("builtin");
        let errs = a
            .to_canonical(&json!({"setl_id": "S1", "psn_cert_type": "02"}))
            .unwrap_err();
        assert_eq!(errs[0].path, "/psn_cert_type");
        let errs = a.to_canonical(&json!({"setl_id": "S1"})).unwrap_err();
        assert_eq!(errs[0].path, "/psn_cert_type");
        let n = a.to_native(&json!({"setl_id": "S1"}));
        assert_eq!(n, json!({"psn_cert_type": "01", "setl_id": "S1"}));
    }

    #[test]
    fn money_text_is_strict() {
        assert_eq!(parse_money_text("560.00"), Some(json!(560)));
        assert_eq!(parse_money_text("0.5"), Some(json!(0.5)));
        for bad in ["", "-1", "1.234", "1e3", "１", "12.", ".5"] {
            assert_eq!(parse_money_text(bad), None, "{bad}");
        }
    }
}
