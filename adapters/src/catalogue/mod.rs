//! The dataset catalogue: JSON Schemas with catalogue annotations, compiled
//! once, and the validation every published record goes through.
//!
//! A schema file `schemas/<dataset>.schema.json` is JSON Schema 2020-12 with
//! the annotations of `notes/contract.md`: dataset attributes at the top
//! (`x-dataset`, `x-owner`, `x-natural-key`, `x-region`, `x-subjects`, …) and
//! on every property `description`, `x-zh`, `x-sharing`, `x-sensitivity` and
//! `x-kind`. [`Catalogue::load_dir`] checks all of that and reports every
//! problem with its file, not only the first.
//!
//! [`Dataset::validate`] runs the compiled JSON Schema, then the domain checks
//! the schema cannot express (`catalogue/rules.rs`):
//! - `x-kind: id_number`: GB 11643 check character, real non-future birth
//!   date; normalised in place (lower-case `x` → `X`, 15 → 18 digits);
//! - `x-kind: region`: GB/T 2260 shape; the health-insurance area codes
//!   (441742/441743/441799) only in a field marked `x-health-insurance-area`;
//! - `x-kind: money`: non-negative yuan with at most two decimals;
//! - `x-kind: date` / `birth_date`: real calendar dates (birth dates not in the
//!   future);
//! - code tables: the schema's `enum`;
//! - a person's `birth_date` and `sex` agree with their ID number;
//! - per-dataset cross-field rules (validity order, 渐退期 ≤ 6 months, 刚性支出
//!   certification ≤ 12 months, one household head, settlement shares ≤ total).
//!
//! Error messages never repeat submitted values: they may be personal data.

mod path;
mod rules;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use time::{Date, OffsetDateTime};

use crate::domain::{IdNumber, RegionCode};
pub(crate) use path::{Seg, parse_field_path, pointer_of, push_index, push_token};
use rules::{CheckKind, Rule, check_leaf, rules_for};
pub(crate) use rules::{check_money, id_message, parse_date};

/// The schema of sharing-policy files, kept beside the dataset schemas.
pub const POLICY_SCHEMA_FILE: &str = "policy.schema.json";

/// One problem with one record: where (JSON pointer, and for ledgers the
/// sheet, row and column) and what is wrong. The message never contains the
/// submitted value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// JSON pointer to the offending value (`""` for the whole record). For
    /// native documents it points into the native document.
    pub path: String,
    /// What is wrong, in plain language.
    pub message: String,
    /// Spreadsheet sheet name (XLSX ledgers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// Spreadsheet row, 1-based as the spreadsheet shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Spreadsheet column header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl RecordError {
    /// An error at a JSON pointer.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        RecordError {
            path: path.into(),
            message: message.into(),
            sheet: None,
            row: None,
            column: None,
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(sheet) = &self.sheet {
            write!(f, "sheet {sheet}, ")?;
        }
        if let Some(row) = self.row {
            write!(f, "row {row}, ")?;
        }
        if let Some(col) = &self.column {
            write!(f, "column {col}, ")?;
        }
        let path = if self.path.is_empty() {
            "(record)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// A record that passed validation, with what the record store needs.
/// `Debug` leaves out the record and the subjects: they are personal data.
#[derive(Clone)]
pub struct Validated {
    /// The record, normalised (ID numbers upper-case, 18 digits).
    pub record: Value,
    /// The natural key: the `x-natural-key` values joined with `|`.
    pub natural_key: String,
    /// The record's region (`x-region`), for row scope.
    pub region: RegionCode,
    /// ID numbers of the persons the record is about (`x-subjects`), without
    /// duplicates, in document order.
    pub subjects: Vec<IdNumber>,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("natural_key", &self.natural_key)
            .field("region", &self.region)
            .field("subjects", &self.subjects.len())
            .finish_non_exhaustive()
    }
}

/// A problem with a schema file found while loading the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), if pointer.is_empty() { String::new() } else { format!(" at {pointer}") })]
pub struct CatalogueError {
    /// The schema file (or the directory, if it cannot be read).
    pub file: PathBuf,
    /// JSON pointer into the schema, `""` for the file as a whole.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Sharing type of a field (共享类型, 国发〔2016〕51号). Ordered from the
/// least to the most restrictive, so `max` gives the stricter of two (a
/// field under a `none` container is `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// 无条件共享: any government department.
    Unconditional,
    /// 有条件共享: only on an approved application.
    Conditional,
    /// 不予共享: not shared.
    None,
}

/// Sensitivity of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Public information.
    Public,
    /// Internal to government.
    Internal,
    /// Personal information (个人信息).
    Personal,
    /// Sensitive personal information (敏感个人信息, 个人信息保护法 art. 28).
    Sensitive,
}

/// What a field holds; tells the policy engine which masks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    IdNumber,
    Name,
    Mobile,
    Address,
    BankCard,
    BirthDate,
    Date,
    Money,
    Region,
    Code,
    Text,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The annotation string.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            /// Parses the annotation string.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
str_enum!(Sharing { Unconditional = "unconditional", Conditional = "conditional", None = "none" });
str_enum!(Sensitivity { Public = "public", Internal = "internal", Personal = "personal", Sensitive = "sensitive" });
str_enum!(FieldKind {
    IdNumber = "id_number", Name = "name", Mobile = "mobile", Address = "address",
    BankCard = "bank_card", BirthDate = "birth_date", Date = "date", Money = "money",
    Region = "region", Code = "code", Text = "text", Integer = "integer", Number = "number",
    Boolean = "boolean", Object = "object", Array = "array",
});

impl FieldKind {
    /// Whether the kind is a container (object or array).
    pub fn is_container(self) -> bool {
        matches!(self, Self::Object | Self::Array)
    }
}

/// One code of a code table: the canonical code and its Chinese name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Code {
    /// Stable English code used in canonical records.
    pub code: String,
    /// Chinese name (`x-codes`).
    pub zh: String,
}

/// Catalogue annotations of one field.
#[derive(Clone, Debug, Serialize)]
pub struct FieldInfo {
    /// Field path: `household_size`, `head.address`, `members[].id_number`.
    pub path: String,
    /// Sharing type.
    pub sharing: Sharing,
    /// Sensitivity.
    pub sensitivity: Sensitivity,
    /// What the field holds.
    pub kind: FieldKind,
    /// English description.
    pub description: String,
    /// Chinese name.
    pub zh: String,
    /// Whether the field is required within its parent object.
    pub required: bool,
    /// The code table (for `code` fields and arrays of codes), else empty.
    pub codes: Vec<Code>,
}

/// A leaf check compiled from the annotations.
#[derive(Debug)]
struct Check {
    segs: Vec<Seg>,
    kind: CheckKind,
    subject: bool,
}

/// One dataset: its schema compiled once, its annotations and checks.
pub struct Dataset {
    id: String,
    owner: String,
    title: String,
    title_zh: String,
    update_cycle: String,
    sharing_method: String,
    schema: Value,
    validator: jsonschema::Validator,
    fields: Vec<FieldInfo>,
    checks: Vec<Check>,
    key: Vec<Vec<Seg>>,
    region: Vec<Seg>,
    subjects: Vec<Vec<Seg>>,
    /// Objects holding an ID number next to `birth_date` and/or `sex`: the
    /// three must agree (GB 11643 encodes birth date and sex).
    persons: Vec<Vec<Seg>>,
    rules: &'static [Rule],
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// Every dataset of the gateway, loaded from `schemas/`.
#[derive(Debug)]
pub struct Catalogue {
    datasets: Vec<Dataset>,
}

impl Catalogue {
    /// Loads and compiles every `*.schema.json` in `dir`. Every problem in
    /// every file is reported, each naming its file.
    pub fn load_dir(dir: &Path) -> Result<Catalogue, Vec<CatalogueError>> {
        let dir_err = |message: String| {
            vec![CatalogueError {
                file: dir.to_path_buf(),
                pointer: String::new(),
                message,
            }]
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| dir_err(format!("cannot read the schema directory: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| dir_err(format!("cannot read the schema directory: {e}")))?;
            let path = entry.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                // policy.schema.json describes policy files (the gateway's
                // policy module), not a dataset.
                .is_some_and(|n| n.ends_with(".schema.json") && n != POLICY_SCHEMA_FILE)
            {
                files.push(path);
            }
        }
        files.sort();
        let mut schemas = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            let err = |message: String| CatalogueError {
                file: file.clone(),
                pointer: String::new(),
                message,
            };
            match std::fs::read(&file) {
                Err(e) => errors.push(err(format!("cannot read: {e}"))),
                Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Err(e) => errors.push(err(format!("not valid JSON: {e}"))),
                    Ok(v) => schemas.push((file, v)),
                },
            }
        }
        match Catalogue::from_schemas(schemas) {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }

    /// Builds a catalogue from already parsed schemas, each with the file it
    /// came from (named in errors; the file stem must be the dataset id).
    pub fn from_schemas(schemas: Vec<(PathBuf, Value)>) -> Result<Catalogue, Vec<CatalogueError>> {
        let mut datasets: Vec<Dataset> = Vec::new();
        let mut errors = Vec::new();
        if schemas.is_empty() {
            errors.push(CatalogueError {
                file: PathBuf::new(),
                pointer: String::new(),
                message: "no *.schema.json files found".into(),
            });
        }
        for (file, schema) in schemas {
            match Dataset::compile(&file, schema) {
                Ok(d) => {
                    if datasets.iter().any(|x| x.id == d.id) {
                        errors.push(CatalogueError {
                            file,
                            pointer: "/x-dataset".into(),
                            message: format!("dataset {} is defined twice", d.id),
                        });
                    } else {
                        datasets.push(d);
                    }
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            datasets.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Catalogue { datasets })
        } else {
            Err(errors)
        }
    }

    /// The dataset with this id.
    pub fn dataset(&self, id: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.id == id)
    }

    /// Every dataset, ordered by id.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.iter()
    }
}

struct Compiler<'a> {
    file: &'a Path,
    errors: Vec<CatalogueError>,
    fields: Vec<FieldInfo>,
    checks: Vec<(String, CheckKind)>,
}

impl Compiler<'_> {
    fn err(&mut self, pointer: &str, message: impl Into<String>) {
        self.errors.push(CatalogueError {
            file: self.file.to_path_buf(),
            pointer: pointer.to_owned(),
            message: message.into(),
        });
    }

    fn str_attr<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        pointer: &str,
    ) -> Option<&'v str> {
        match obj.get(key).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => Some(s),
            _ => {
                self.err(
                    pointer,
                    format!("missing annotation \"{key}\" (a non-empty string)"),
                );
                None
            }
        }
    }

    /// Walks the `properties` of an object schema.
    fn properties(&mut self, schema: &Map<String, Value>, prefix: &str, pointer: &str) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, sub) in props {
            let mut ptr = format!("{pointer}/properties");
            push_token(&mut ptr, name);
            let path = format!("{prefix}{name}");
            let Some(sub) = sub.as_object() else {
                self.err(&ptr, "a property schema is an object");
                continue;
            };
            self.property(sub, &path, &ptr, required.contains(&name.as_str()));
        }
    }

    fn property(&mut self, sub: &Map<String, Value>, path: &str, ptr: &str, required: bool) {
        let description = self.str_attr(sub, "description", ptr).map(str::to_owned);
        let zh = self.str_attr(sub, "x-zh", ptr).map(str::to_owned);
        let sharing = self.str_attr(sub, "x-sharing", ptr).map(str::to_owned);
        let sensitivity = self.str_attr(sub, "x-sensitivity", ptr).map(str::to_owned);
        let kind = self.str_attr(sub, "x-kind", ptr).map(str::to_owned);
        let sharing = sharing.and_then(|s| {
            Sharing::parse(&s).or_else(|| {
                self.err(
                    ptr,
                    format!("x-sharing {s:?} is not one of unconditional, conditional, none"),
                );
                None
            })
        });
        let sensitivity = sensitivity.and_then(|s| {
            Sensitivity::parse(&s).or_else(|| {
                self.err(
                    ptr,
                    format!(
                        "x-sensitivity {s:?} is not one of public, internal, personal, sensitive"
                    ),
                );
                None
            })
        });
        let kind = kind.and_then(|s| {
            FieldKind::parse(&s).or_else(|| {
                self.err(ptr, format!("x-kind {s:?} is not a known kind"));
                None
            })
        });
        let Some(kind) = kind else { return };
        let ty = sub.get("type").and_then(Value::as_str);
        let expected = match kind {
            FieldKind::Object => "object",
            FieldKind::Array => "array",
            FieldKind::Money | FieldKind::Number => "number",
            FieldKind::Integer => "integer",
            FieldKind::Boolean => "boolean",
            _ => "string",
        };
        let type_ok = ty == Some(expected) || (expected == "number" && ty == Some("integer"));
        if !type_ok {
            self.err(
                ptr,
                format!("x-kind {} needs \"type\": \"{expected}\"", kind.as_str()),
            );
        }
        let code_src = if kind == FieldKind::Array {
            sub.get("items").and_then(|i| i.get("x-codes"))
        } else {
            sub.get("x-codes")
        };
        let codes = code_src
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Code {
                        code: k.clone(),
                        zh: v.as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if kind == FieldKind::Code && sub.get("enum").and_then(Value::as_array).is_none() {
            self.err(ptr, "a code field lists its code table in \"enum\"");
        }
        let check = match kind {
            FieldKind::IdNumber => Some(CheckKind::IdNumber),
            FieldKind::Region => Some(CheckKind::Region {
                health_insurance_area: sub.get("x-health-insurance-area")
                    == Some(&Value::Bool(true)),
            }),
            FieldKind::Money => Some(CheckKind::Money),
            FieldKind::Date => Some(CheckKind::Date),
            FieldKind::BirthDate => Some(CheckKind::BirthDate),
            _ => None,
        };
        if let Some(c) = check {
            self.checks.push((path.to_owned(), c));
        }
        if let (Some(sharing), Some(sensitivity), Some(description), Some(zh)) =
            (sharing, sensitivity, description, zh)
        {
            self.fields.push(FieldInfo {
                path: path.to_owned(),
                sharing,
                sensitivity,
                kind,
                description,
                zh,
                required,
                codes,
            });
        }
        match kind {
            FieldKind::Object => self.properties(sub, &format!("{path}."), ptr),
            FieldKind::Array => {
                if let Some(items) = sub.get("items").and_then(Value::as_object) {
                    self.properties(items, &format!("{path}[]."), &format!("{ptr}/items"));
                }
            }
            _ => {}
        }
    }
}

/// Removes `pattern` from every schema whose `x-kind` has a domain check
/// that decides the same question more strictly.
fn strip_checked_patterns(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if matches!(
                m.get("x-kind").and_then(Value::as_str),
                Some("id_number" | "region" | "date" | "birth_date")
            ) {
                m.remove("pattern");
            }
            for child in m.values_mut() {
                strip_checked_patterns(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_checked_patterns),
        _ => {}
    }
}

impl Dataset {
    fn compile(file: &Path, schema: Value) -> Result<Dataset, Vec<CatalogueError>> {
        let mut c = Compiler {
            file,
            errors: Vec::new(),
            fields: Vec::new(),
            checks: Vec::new(),
        };
        let Some(top) = schema.as_object() else {
            c.err("", "a schema is a JSON object");
            return Err(c.errors);
        };
        if top.get("$schema").and_then(Value::as_str)
            != Some("https://json-schema.org/draft/2020-12/schema")
        {
            c.err(
                "/$schema",
                "\"$schema\" must be https://json-schema.org/draft/2020-12/schema",
            );
        }
        let id = c
            .str_attr(top, "x-dataset", "")
            .unwrap_or_default()
            .to_owned();
        let owner = c
            .str_attr(top, "x-owner", "")
            .unwrap_or_default()
            .to_owned();
        let title = c.str_attr(top, "title", "").unwrap_or_default().to_owned();
        let title_zh = c
            .str_attr(top, "x-title-zh", "")
            .unwrap_or_default()
            .to_owned();
        let update_cycle = c
            .str_attr(top, "x-update-cycle", "")
            .unwrap_or_default()
            .to_owned();
        let sharing_method = c
            .str_attr(top, "x-sharing-method", "")
            .unwrap_or_default()
            .to_owned();
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".schema.json"))
            .unwrap_or_default();
        if !id.is_empty() && !stem.is_empty() && stem != id {
            c.err(
                "/x-dataset",
                format!("x-dataset {id:?} does not match the file name (expected {stem:?})"),
            );
        }
        if !id.is_empty()
            && top.get("$id").and_then(Value::as_str) != Some(&format!("urn:gateway:schema:{id}"))
        {
            c.err("/$id", format!("\"$id\" must be urn:gateway:schema:{id}"));
        }
        if top.get("type").and_then(Value::as_str) != Some("object") {
            c.err(
                "/type",
                "a dataset schema describes an object (\"type\": \"object\")",
            );
        }
        c.properties(top, "", "");

        let field_kind =
            |c: &Compiler<'_>, p: &str| c.fields.iter().find(|f| f.path == p).map(|f| f.kind);
        let mut key = Vec::new();
        match top.get("x-natural-key").and_then(Value::as_array) {
            Some(paths) if !paths.is_empty() => {
                for p in paths {
                    let p = p.as_str().unwrap_or_default();
                    match (parse_field_path(p), field_kind(&c, p)) {
                        (Some(segs), Some(k))
                            if !segs.contains(&Seg::Each)
                                && !matches!(k, FieldKind::Object | FieldKind::Array) =>
                        {
                            key.push(segs)
                        }
                        _ => c.err(
                            "/x-natural-key",
                            format!("{p:?} is not a scalar field outside arrays"),
                        ),
                    }
                }
            }
            _ => c.err(
                "/x-natural-key",
                "x-natural-key lists at least one field path",
            ),
        }
        let region_path = top
            .get("x-region")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let region = match (parse_field_path(region_path), field_kind(&c, region_path)) {
            (Some(segs), Some(FieldKind::Region)) if !segs.contains(&Seg::Each) => segs,
            _ => {
                c.err(
                    "/x-region",
                    format!("x-region {region_path:?} is not a region field outside arrays"),
                );
                Vec::new()
            }
        };
        let mut subjects = Vec::new();
        match top.get("x-subjects").and_then(Value::as_array) {
            Some(paths) => {
                for p in paths {
                    let p = p.as_str().unwrap_or_default();
                    match (parse_field_path(p), field_kind(&c, p)) {
                        (Some(segs), Some(FieldKind::IdNumber)) => {
                            subjects.push((p.to_owned(), segs))
                        }
                        _ => c.err("/x-subjects", format!("{p:?} is not an id_number field")),
                    }
                }
            }
            None => c.err(
                "/x-subjects",
                "x-subjects lists the ID-number fields of the persons a record is about",
            ),
        }

        // The validator runs on a copy without the `pattern`s of the fields
        // the domain checks cover (IDs, regions, dates): those checks are
        // stricter, and skipping the regexes keeps the publish path fast. The
        // schema served to callers keeps its patterns as documentation.
        let mut compiled = schema.clone();
        strip_checked_patterns(&mut compiled);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(false)
            .build(&compiled);
        let validator = match validator {
            Ok(v) => Some(v),
            Err(e) => {
                c.err(
                    e.instance_path().as_str(),
                    format!("the schema does not compile: {e}"),
                );
                None
            }
        };
        let persons = c
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::IdNumber && f.path.ends_with("id_number"))
            .filter_map(|f| {
                let parent = f.path.strip_suffix("id_number")?.trim_end_matches('.');
                let sibling = |name: &str| {
                    let p = if parent.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{parent}.{name}")
                    };
                    c.fields.iter().any(|g| g.path == p)
                };
                if !(sibling("birth_date") || sibling("sex")) {
                    return None;
                }
                if parent.is_empty() {
                    Some(Vec::new())
                } else {
                    parse_field_path(parent)
                }
            })
            .collect();
        let checks = c
            .checks
            .iter()
            .filter_map(|(p, kind)| {
                Some(Check {
                    segs: parse_field_path(p)?,
                    kind: *kind,
                    subject: subjects.iter().any(|(s, _)| s == p),
                })
            })
            .collect();
        match validator {
            Some(validator) if c.errors.is_empty() => Ok(Dataset {
                rules: rules_for(&id),
                id,
                owner,
                title,
                title_zh,
                update_cycle,
                sharing_method,
                schema,
                validator,
                fields: c.fields,
                checks,
                key,
                region,
                subjects: subjects.into_iter().map(|(_, s)| s).collect(),
                persons,
            }),
            _ => Err(c.errors),
        }
    }

    /// The dataset id, e.g. `assistance-enrolment`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The owner department id (the only publisher).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// English title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Chinese title.
    pub fn title_zh(&self) -> &str {
        &self.title_zh
    }

    /// Catalogue attribute: update cycle.
    pub fn update_cycle(&self) -> &str {
        &self.update_cycle
    }

    /// Catalogue attribute: sharing method.
    pub fn sharing_method(&self) -> &str {
        &self.sharing_method
    }

    /// The schema as loaded (served at `GET /v1/schemas/{dataset}`).
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Every annotated field, parents before children, in schema order.
    pub fn fields(&self) -> &[FieldInfo] {
        &self.fields
    }

    /// The annotations of one field path.
    pub fn field(&self, path: &str) -> Option<&FieldInfo> {
        self.fields.iter().find(|f| f.path == path)
    }

    /// Validates a record: JSON Schema, then the domain checks and the
    /// dataset's cross-field rules. Returns every error, each with a JSON
    /// pointer; on success the normalised record with its key, region and
    /// subjects.
    pub fn validate(&self, record: Value) -> Result<Validated, Vec<RecordError>> {
        self.validate_at(record, OffsetDateTime::now_utc().date())
    }

    /// [`Dataset::validate`] with an explicit "today" (future birth dates).
    pub fn validate_at(
        &self,
        mut record: Value,
        today: Date,
    ) -> Result<Validated, Vec<RecordError>> {
        let mut errors: Vec<RecordError> = Vec::new();
        if !self.validator.is_valid(&record) {
            for e in self.validator.iter_errors(&record) {
                errors.push(RecordError::at(
                    e.instance_path().as_str(),
                    e.masked().to_string(),
                ));
            }
        }
        let schema_errors = errors.len();
        let mut subjects: Vec<IdNumber> = Vec::new();
        let mut trail = Vec::new();
        for check in &self.checks {
            path::visit_mut(&mut record, &check.segs, &mut trail, &mut |v, at| {
                match check_leaf(check.kind, v, today) {
                    Ok(Some(id)) if check.subject => {
                        if !subjects.contains(&id) {
                            subjects.push(id);
                        }
                    }
                    Ok(_) => {}
                    Err(message) => {
                        let p = path::render(at);
                        // JSON Schema already named this value (wrong type).
                        if !errors[..schema_errors].iter().any(|e| e.path == p) {
                            errors.push(RecordError::at(p, message));
                        }
                    }
                }
            });
        }
        if errors.is_empty() {
            self.check_persons(&mut record, &mut errors);
        }
        if errors.is_empty() {
            let mut found = Vec::new();
            for rule in self.rules {
                rules::apply(rule, &record, &mut found);
            }
            errors.extend(found.into_iter().map(|(p, m)| RecordError::at(p, m)));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (natural_key, region) = self.key_and_region(&record)?;
        Ok(Validated {
            record,
            natural_key,
            region,
            subjects,
        })
    }

    /// Birth date and sex must agree with the (already normalised) ID number.
    fn check_persons(&self, record: &mut Value, errors: &mut Vec<RecordError>) {
        let mut trail = Vec::new();
        for segs in &self.persons {
            path::visit_mut(record, segs, &mut trail, &mut |person, at| {
                let Some(id) = person.get("id_number").and_then(Value::as_str) else {
                    return;
                };
                let (Some(year), Some(month), Some(day)) =
                    (id.get(6..10), id.get(10..12), id.get(12..14))
                else {
                    return;
                };
                if let Some(b) = person.get("birth_date").and_then(Value::as_str)
                    && (b.get(..4) != Some(year)
                        || b.get(5..7) != Some(month)
                        || b.get(8..10) != Some(day))
                {
                    let mut p = path::render(at);
                    p.push_str("/birth_date");
                    errors.push(RecordError::at(
                        p,
                        "does not match the birth date in the ID number",
                    ));
                }
                let id_sex = id.as_bytes().get(16).map(|d| {
                    if (d.wrapping_sub(b'0')) % 2 == 1 {
                        "1"
                    } else {
                        "2"
                    }
                });
                if let Some(sex) = person.get("sex").and_then(Value::as_str)
                    && (sex == "1" || sex == "2")
                    && Some(sex) != id_sex
                {
                    let mut p = path::render(at);
                    p.push_str("/sex");
                    errors.push(RecordError::at(
                        p,
                        "does not match the sex encoded in the ID number",
                    ));
                }
            });
        }
    }

    /// Extracts the key, region and subjects without validating anything else:
    /// the baseline of the "unvalidated publish" benchmark. Fails only where
    /// those three cannot be extracted.
    pub fn validate_unchecked(&self, record: Value) -> Result<Validated, Vec<RecordError>> {
        let (natural_key, region) = self.key_and_region(&record)?;
        let today = OffsetDateTime::now_utc().date();
        let mut subjects: Vec<IdNumber> = Vec::new();
        let mut errors = Vec::new();
        for segs in &self.subjects {
            path::visit(&record, segs, &mut |v| match v
                .as_str()
                .map(|s| IdNumber::parse_at(s, today))
            {
                Some(Ok(id)) => {
                    if !subjects.contains(&id) {
                        subjects.push(id);
                    }
                }
                Some(Err(e)) => errors.push(RecordError::at("", id_message(&e))),
                None => errors.push(RecordError::at("", "an ID number is a string")),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Validated {
            record,
            natural_key,
            region,
            subjects,
        })
    }

    fn key_and_region(&self, record: &Value) -> Result<(String, RegionCode), Vec<RecordError>> {
        let mut errors = Vec::new();
        let mut key = String::new();
        for (i, segs) in self.key.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            match path::get(record, segs) {
                Some(Value::String(s)) => key.push_str(s),
                Some(Value::Number(n)) => key.push_str(&n.to_string()),
                _ => errors.push(RecordError::at(
                    path::pointer_of(segs),
                    "the natural key field is missing",
                )),
            }
        }
        let region = match path::get(record, &self.region)
            .and_then(Value::as_str)
            .map(RegionCode::parse)
        {
            Some(Ok(r)) => Some(r),
            _ => {
                errors.push(RecordError::at(
                    path::pointer_of(&self.region),
                    "the region code is missing or malformed",
                ));
                None
            }
        };
        match region {
            Some(r) if errors.is_empty() => Ok((key, r)),
            _ => Err(errors),
        }
    }
}
