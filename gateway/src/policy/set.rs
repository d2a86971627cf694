//! Loading, checking and compiling a policy directory into an immutable
//! [`PolicySet`].
//!
//! Loading runs every check and reports every error together (file, line,
//! JSON pointer, message): YAML syntax and limits, the policy JSON Schema,
//! then the semantic checks against the dataset catalogue (field paths exist,
//! `x-sharing: none` fields are never clear, treatments fit the field kind,
//! departments, purposes and datasets are known). What is legal but
//! suspicious (conflicting treatments, rules that can never apply) comes back
//! as warnings.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use adapters::domain::RegionCode;
use serde::Serialize;
use serde_json::Value;
use time::macros::offset;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use super::catalog::{DatasetInfo, Datasets, FieldInfo, Sharing};
use super::plan::{AllowPart, Filter, Plan, RowScope, segments};
use super::source::{
    DepartmentDef, EffectDef, Located, PolicyFile, PurposeDef, RuleDef, SharingDef, canonical_json,
    parse_yaml,
};
use super::treatment::{DepartmentKey, PseudonymKey, Treatment};

/// The policy JSON Schema, compiled into the binary so validation never
/// depends on the working directory.
pub const POLICY_SCHEMA: &str = include_str!("../../../schemas/policy.schema.json");

/// Most rules one (consumer, dataset, purpose) may have and still get cached
/// plans for every combination of active rules (2^8 slots).
const MAX_CACHED_CANDIDATES: usize = 8;

/// Id of the built-in rule that lets an owner read its own dataset in full.
pub const OWNER_RULE_PREFIX: &str = "builtin:owner:";

/// An error that stops a policy set from loading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// The file (or schema) it is in.
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<u64>,
    /// JSON pointer into the file (`/rules/3/fields/head.name`).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if !self.pointer.is_empty() {
            write!(f, " (at {})", self.pointer)?;
        }
        Ok(())
    }
}

/// Something legal but suspicious in a policy set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file of the rule concerned.
    pub file: String,
    /// Its line.
    pub line: Option<u64>,
    /// The rule concerned.
    pub rule: Option<String>,
    /// What is suspicious.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: warning: {}", self.file, self.message),
            None => write!(f, "{}: warning: {}", self.file, self.message),
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants rows and fields.
    Allow,
    /// Takes away: the whole access, some fields, or some rows.
    Deny,
}

/// A rule's sharing type: 无条件 applies directly; 有条件 needs a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSharing {
    /// Applies directly.
    Unconditional,
    /// Applies only while the consumer holds an approved, unexpired grant.
    Conditional,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: Arc<str>,
    pub file: Arc<str>,
    pub line: Option<u64>,
    pub effect: Effect,
    pub builtin: bool,
    pub department: usize,
    pub dataset: usize,
    /// `None`: every purpose (deny rules and the owner rule).
    pub purposes: Option<Vec<usize>>,
    pub region: Option<RegionCode>,
    pub sharing: RuleSharing,
    pub legal_basis: Arc<str>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    /// (index into the dataset's fields, treatment), leaves only.
    pub leaves: Vec<(usize, Treatment)>,
    pub filters: Vec<Filter>,
}

impl Rule {
    /// A deny rule without fields or rows denies the whole access.
    pub fn denies_whole(&self) -> bool {
        self.effect == Effect::Deny && self.leaves.is_empty() && self.filters.is_empty()
    }

    pub fn in_window(&self, now: OffsetDateTime) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.not_after.is_none_or(|t| now < t)
    }
}

/// The rules that may apply to one (department, dataset, purpose), with a
/// lazily filled cache of plans per combination of active rules.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub candidates: Vec<usize>,
    pub cache: Box<[OnceLock<Arc<Plan>>]>,
}

/// An immutable, compiled policy set. Share it behind an `Arc` (see
/// [`super::PolicyHandle`]).
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) version: Arc<str>,
    pub(crate) departments: Vec<DepartmentDef>,
    pub(crate) dept_index: HashMap<String, usize>,
    pub(crate) purposes: Vec<PurposeDef>,
    pub(crate) purpose_index: HashMap<String, usize>,
    pub(crate) datasets: Vec<DatasetInfo>,
    pub(crate) dataset_index: HashMap<String, usize>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) keys: HashMap<(u32, u32, u32), KeyEntry>,
    pub(crate) dept_keys: Vec<DepartmentKey>,
    pub(crate) dataset_fields: Vec<Arc<[FieldInfo]>>,
    pub(crate) default_rule: Arc<str>,
}

/// One source file: a display name (used in errors and, as the file name,
/// in the version hash) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path or name shown in errors.
    pub name: String,
    /// YAML text.
    pub text: String,
}

impl PolicySet {
    /// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive, hidden
    /// files skipped) and compiles them against `datasets`.
    pub fn load_dir(
        dir: &Path,
        datasets: &Datasets,
        key: &PseudonymKey,
    ) -> Result<(PolicySet, Vec<Warning>), Vec<PolicyError>> {
        let sources = read_sources(dir)?;
        Self::from_sources(&sources, datasets, key)
    }

    /// Compiles a policy set from in-memory sources (a draft posted to the
    /// admin API, tests).
    pub fn from_sources(
        sources: &[SourceFile],
        datasets: &Datasets,
        key: &PseudonymKey,
    ) -> Result<(PolicySet, Vec<Warning>), Vec<PolicyError>> {
        Self::from_sources_at(sources, datasets, key, OffsetDateTime::now_utc())
    }

    /// Like [`PolicySet::from_sources`] with the clock used for the
    /// "already expired" warnings given.
    pub fn from_sources_at(
        sources: &[SourceFile],
        datasets: &Datasets,
        key: &PseudonymKey,
        now: OffsetDateTime,
    ) -> Result<(PolicySet, Vec<Warning>), Vec<PolicyError>> {
        Compiler::new(datasets, key, now).run(sources)
    }

    /// The content-hash version: SHA-256 over the canonicalised policy files
    /// and dataset schemas, first 16 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version as a shared string (cheap to put in every response).
    pub fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }

    /// A purpose by code (for the `X-Purpose` check: unknown → 400).
    pub fn purpose(&self, code: &str) -> Option<&PurposeDef> {
        self.purpose_index.get(code).map(|&i| &self.purposes[i])
    }

    /// Every purpose.
    pub fn purposes(&self) -> &[PurposeDef] {
        &self.purposes
    }

    /// Every department.
    pub fn departments(&self) -> &[DepartmentDef] {
        &self.departments
    }

    /// A department by id.
    pub fn department(&self, id: &str) -> Option<&DepartmentDef> {
        self.dept_index.get(id).map(|&i| &self.departments[i])
    }

    /// The datasets `department` has any rule (or owner access) for under
    /// `purpose`: the datasets a person view or a match should consult.
    /// Whether a rule is active is decided per request by `decide`.
    pub fn datasets_for(&self, department: &str, purpose: &str) -> Vec<&str> {
        let (Some(&d), Some(&p)) = (
            self.dept_index.get(department),
            self.purpose_index.get(purpose),
        ) else {
            return Vec::new();
        };
        self.datasets
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.keys
                    .get(&(d as u32, *i as u32, p as u32))
                    .is_some_and(|k| {
                        k.candidates
                            .iter()
                            .any(|&r| self.rules[r].effect == Effect::Allow)
                    })
            })
            .map(|(_, ds)| ds.id.as_str())
            .collect()
    }

    /// The dataset catalogue entry the set was compiled against.
    pub fn dataset(&self, id: &str) -> Option<&DatasetInfo> {
        self.dataset_index.get(id).map(|&i| &self.datasets[i])
    }

    /// Number of rules, built-in ones included.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub(crate) fn plan_for(
        &self,
        entry: &KeyEntry,
        active: u64,
        dataset: usize,
        dept: usize,
    ) -> Arc<Plan> {
        let build = || {
            let ids: Vec<usize> = entry
                .candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| active & (1 << i) != 0)
                .map(|(_, &r)| r)
                .collect();
            Arc::new(self.build_plan(dataset, dept, &ids))
        };
        match entry.cache.get(active as usize) {
            Some(slot) => slot.get_or_init(build).clone(),
            None => build(),
        }
    }

    /// The plan for a set of active rules (merging happens in [`Plan`]).
    fn build_plan(&self, dataset: usize, dept: usize, active: &[usize]) -> Plan {
        let ds = &self.datasets[dataset];
        let mut allows = Vec::new();
        let mut deny_fields = Vec::new();
        let mut deny_rows = Vec::new();
        for &r in active {
            let rule = &self.rules[r];
            let scope = RowScope {
                rule: rule.id.clone(),
                region: rule.region,
                filters: rule.filters.clone(),
            };
            match rule.effect {
                Effect::Allow => allows.push(AllowPart {
                    scope,
                    leaves: rule.leaves.clone(),
                }),
                Effect::Deny => {
                    deny_fields.extend(rule.leaves.iter().map(|(l, _)| (*l, rule.id.clone())));
                    if !rule.filters.is_empty() {
                        deny_rows.push(scope);
                    }
                }
            }
        }
        Plan::new(
            self.dataset_fields[dataset].clone(),
            allows,
            deny_fields,
            deny_rows,
            ds.region_path.as_deref().map(segments),
            self.dept_keys[dept].clone(),
            self.default_rule.clone(),
        )
    }
}

fn read_sources(dir: &Path) -> Result<Vec<SourceFile>, Vec<PolicyError>> {
    let err = |p: &Path, m: String| PolicyError {
        file: p.display().to_string(),
        line: None,
        pointer: String::new(),
        message: m,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![err(dir, format!("cannot read the policy directory: {e}"))])?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read(&p) {
            Ok(b) if b.len() > super::source::MAX_FILE_BYTES => errors.push(err(
                &p,
                format!("larger than {} bytes", super::source::MAX_FILE_BYTES),
            )),
            Ok(b) => match String::from_utf8(b) {
                Ok(text) => out.push(SourceFile {
                    name: p.display().to_string(),
                    text,
                }),
                Err(_) => errors.push(err(&p, "not UTF-8".into())),
            },
            Err(e) => errors.push(err(&p, format!("cannot read: {e}"))),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(err(dir, "no policy files (*.yaml) found".into()));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parses a validity bound. Dates are China time (UTC+8); a `not_after`
/// date includes that whole day.
fn parse_bound(s: &str, end: bool) -> Result<OffsetDateTime, String> {
    if s.len() == 10 {
        let d = super::treatment::parse_date(&Value::String(s.to_owned()))
            .ok_or_else(|| format!("{s:?} is not a valid date"))?;
        let d = if end {
            d.next_day()
                .ok_or_else(|| format!("{s:?} is out of range"))?
        } else {
            d
        };
        return Ok(PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_offset(offset!(+8)));
    }
    let s = s.replacen(' ', "T", 1);
    OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 timestamp"))
}

fn fmt_time(t: OffsetDateTime) -> String {
    t.to_offset(offset!(+8))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The parent path of a field path: `members[].name` → `members`,
/// `tags[]` → `tags`, `head.name` → `head`.
fn parent_path(p: &str) -> Option<&str> {
    if let Some(base) = p.strip_suffix("[]") {
        return Some(base);
    }
    let i = p.rfind('.')?;
    let parent = &p[..i];
    Some(parent.strip_suffix("[]").unwrap_or(parent))
}

fn is_under(path: &str, container: &str) -> bool {
    path.len() > container.len()
        && path.starts_with(container)
        && (path[container.len()..].starts_with('.') || path[container.len()..].starts_with("[]"))
}

struct FileCtx<'a> {
    name: Arc<str>,
    located: &'a Located,
}

impl FileCtx<'_> {
    fn error(&self, pointer: String, message: String) -> PolicyError {
        PolicyError {
            file: self.name.to_string(),
            line: self.located.line(&pointer),
            pointer,
            message,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

struct Compiler<'a> {
    datasets: &'a Datasets,
    key: &'a PseudonymKey,
    now: OffsetDateTime,
    errors: Vec<PolicyError>,
    warnings: Vec<Warning>,
}

impl<'a> Compiler<'a> {
    fn new(datasets: &'a Datasets, key: &'a PseudonymKey, now: OffsetDateTime) -> Self {
        Compiler {
            datasets,
            key,
            now,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn run(
        mut self,
        sources: &[SourceFile],
    ) -> Result<(PolicySet, Vec<Warning>), Vec<PolicyError>> {
        let schema: Value = match serde_json::from_str(POLICY_SCHEMA) {
            Ok(v) => v,
            Err(e) => {
                return Err(vec![
                    self.internal(format!("policy schema is not JSON: {e}")),
                ]);
            }
        };
        let validator = match jsonschema::validator_for(&schema) {
            Ok(v) => v,
            Err(e) => {
                return Err(vec![
                    self.internal(format!("policy schema does not compile: {e}")),
                ]);
            }
        };

        // 1. Parse and shape-check every file.
        let mut parsed: Vec<(Arc<str>, Located, PolicyFile)> = Vec::new();
        let mut hash_input: Vec<(String, String)> = Vec::new();
        for src in sources {
            let name: Arc<str> = Arc::from(src.name.as_str());
            let located = match parse_yaml(&src.text) {
                Ok(l) => l,
                Err((message, line)) => {
                    self.errors.push(PolicyError {
                        file: src.name.clone(),
                        line,
                        pointer: String::new(),
                        message: format!("invalid YAML: {message}"),
                    });
                    continue;
                }
            };
            let fc = FileCtx {
                name: name.clone(),
                located: &located,
            };
            let mut shape_ok = true;
            for e in validator.iter_errors(&located.value) {
                shape_ok = false;
                let ptr = e.instance_path().as_str().to_owned();
                self.errors.push(fc.error(ptr, e.to_string()));
            }
            if !shape_ok {
                continue;
            }
            match serde_json::from_value::<PolicyFile>(located.value.clone()) {
                Ok(f) => {
                    let base = Path::new(&src.name)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(&src.name)
                        .to_owned();
                    hash_input.push((base, canonical_json(&located.value)));
                    parsed.push((name, located, f));
                }
                Err(e) => self.errors.push(fc.error(String::new(), e.to_string())),
            }
        }

        // 2. Departments and purposes.
        let mut departments: Vec<DepartmentDef> = Vec::new();
        let mut dept_index = HashMap::new();
        let mut purposes: Vec<PurposeDef> = Vec::new();
        let mut purpose_index = HashMap::new();
        for (name, located, f) in &parsed {
            let fc = FileCtx {
                name: name.clone(),
                located,
            };
            for (i, d) in f.departments.iter().enumerate() {
                if dept_index.insert(d.id.clone(), departments.len()).is_some() {
                    self.errors.push(fc.error(
                        format!("/departments/{i}/id"),
                        format!("department {:?} is defined twice", d.id),
                    ));
                } else {
                    departments.push(d.clone());
                }
            }
            for (i, p) in f.purposes.iter().enumerate() {
                if purpose_index
                    .insert(p.code.clone(), purposes.len())
                    .is_some()
                {
                    self.errors.push(fc.error(
                        format!("/purposes/{i}/code"),
                        format!("purpose {:?} is defined twice", p.code),
                    ));
                } else {
                    purposes.push(p.clone());
                }
            }
        }
        if departments.is_empty() {
            self.errors
                .push(self.internal("no departments defined (a `departments:` list)".into()));
        }
        if purposes.is_empty() {
            self.errors
                .push(self.internal("no purposes defined (a `purposes:` list)".into()));
        }

        // 3. Datasets: owners must be known departments.
        let datasets: Vec<DatasetInfo> = self.datasets.iter().cloned().collect();
        let dataset_index: HashMap<String, usize> = datasets
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        for d in &datasets {
            if !dept_index.contains_key(&d.owner) {
                self.errors.push(PolicyError {
                    file: format!("schemas/{}.schema.json", d.id),
                    line: None,
                    pointer: "/x-owner".into(),
                    message: format!("dataset owner {:?} is not a known department", d.owner),
                });
            }
        }
        let eff_sharing: Vec<Vec<Sharing>> = datasets.iter().map(effective_sharing).collect();

        // 4. Rules.
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen_ids: HashMap<String, (Arc<str>, Option<u64>)> = HashMap::new();
        for (name, located, f) in &parsed {
            let fc = FileCtx {
                name: name.clone(),
                located,
            };
            for (i, def) in f.rules.iter().enumerate() {
                let ptr = format!("/rules/{i}");
                if let Some((file, line)) = seen_ids.get(&def.id) {
                    let at = line
                        .map(|l| format!("{file}:{l}"))
                        .unwrap_or_else(|| file.to_string());
                    self.errors.push(fc.error(
                        format!("{ptr}/id"),
                        format!("rule id {:?} is already used at {at}", def.id),
                    ));
                    continue;
                }
                seen_ids.insert(def.id.clone(), (name.clone(), located.line(&ptr)));
                if let Some(r) = self.compile_rule(
                    &fc,
                    &ptr,
                    def,
                    &dept_index,
                    &purpose_index,
                    &datasets,
                    &dataset_index,
                    &eff_sharing,
                ) {
                    rules.push(r);
                }
            }
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }

        // 5. Built-in owner rules, keys, warnings.
        for (di, d) in datasets.iter().enumerate() {
            let Some(&owner) = dept_index.get(&d.owner) else {
                continue;
            };
            let leaves = d
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.kind.is_container())
                .map(|(i, _)| (i, Treatment::Clear))
                .collect();
            rules.push(Rule {
                id: Arc::from(format!("{OWNER_RULE_PREFIX}{}", d.id)),
                file: Arc::from(format!("schemas/{}.schema.json", d.id)),
                line: None,
                effect: Effect::Allow,
                builtin: true,
                department: owner,
                dataset: di,
                purposes: None,
                region: None,
                sharing: RuleSharing::Unconditional,
                legal_basis: Arc::from("the owner (数据提供方) reads its own records in full"),
                not_before: None,
                not_after: None,
                leaves,
                filters: Vec::new(),
            });
        }

        let mut keys = HashMap::new();
        for dept in 0..departments.len() {
            for ds in 0..datasets.len() {
                for p in 0..purposes.len() {
                    let applies = |r: &Rule| {
                        r.department == dept
                            && r.dataset == ds
                            && r.purposes.as_ref().is_none_or(|ps| ps.contains(&p))
                    };
                    let has_explicit_allow = rules
                        .iter()
                        .any(|r| !r.builtin && r.effect == Effect::Allow && applies(r));
                    let candidates: Vec<usize> = rules
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| applies(r) && !(r.builtin && has_explicit_allow))
                        .map(|(i, _)| i)
                        .collect();
                    if candidates.iter().all(|&r| rules[r].effect == Effect::Deny) {
                        // Deny-only keys deny by default anyway.
                        continue;
                    }
                    let slots = if candidates.len() <= MAX_CACHED_CANDIDATES {
                        1usize << candidates.len()
                    } else {
                        0
                    };
                    let cache = (0..slots).map(|_| OnceLock::new()).collect();
                    keys.insert(
                        (dept as u32, ds as u32, p as u32),
                        KeyEntry { candidates, cache },
                    );
                }
            }
        }
        self.warn_rules(&rules, &keys, &datasets, &departments, &purposes);

        // 6. Version.
        hash_input.sort();
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (name, canon) in &hash_input {
            ctx.update(b"file\0");
            ctx.update(name.as_bytes());
            ctx.update(b"\0");
            ctx.update(canon.as_bytes());
            ctx.update(b"\0");
        }
        for d in &datasets {
            ctx.update(b"dataset\0");
            ctx.update(d.canonical.as_bytes());
            ctx.update(b"\0");
        }
        let digest = ctx.finish();
        let version: Arc<str> = Arc::from(hex::encode(&digest.as_ref()[..8]));

        let dataset_fields = datasets
            .iter()
            .map(|d| Arc::from(d.fields.as_slice()))
            .collect();
        let dept_keys = departments
            .iter()
            .map(|d| self.key.for_department(&d.id))
            .collect();
        Ok((
            PolicySet {
                version,
                departments,
                dept_index,
                purposes,
                purpose_index,
                datasets,
                dataset_index,
                rules,
                keys,
                dept_keys,
                dataset_fields,
                default_rule: Arc::from("default-deny"),
            },
            self.warnings,
        ))
    }

    fn internal(&self, message: String) -> PolicyError {
        PolicyError {
            file: "<policy set>".into(),
            line: None,
            pointer: String::new(),
            message,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compile_rule(
        &mut self,
        fc: &FileCtx<'_>,
        ptr: &str,
        def: &RuleDef,
        dept_index: &HashMap<String, usize>,
        purpose_index: &HashMap<String, usize>,
        datasets: &[DatasetInfo],
        dataset_index: &HashMap<String, usize>,
        eff_sharing: &[Vec<Sharing>],
    ) -> Option<Rule> {
        let before = self.errors.len();
        let department = dept_index.get(&def.consumer.department).copied();
        if department.is_none() {
            self.errors.push(fc.error(
                format!("{ptr}/consumer/department"),
                format!("unknown department {:?}", def.consumer.department),
            ));
        }
        let region = match &def.consumer.region {
            None => None,
            Some(s) => match RegionCode::parse(s) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.errors
                        .push(fc.error(format!("{ptr}/consumer/region"), e.to_string()));
                    None
                }
            },
        };
        let dataset = dataset_index.get(&def.dataset).copied();
        if dataset.is_none() {
            let known: Vec<&str> = datasets.iter().map(|d| d.id.as_str()).collect();
            self.errors.push(fc.error(
                format!("{ptr}/dataset"),
                format!(
                    "unknown dataset {:?} (known: {})",
                    def.dataset,
                    known.join(", ")
                ),
            ));
        }
        let purposes = def.purposes.as_ref().map(|ps| {
            ps.iter()
                .enumerate()
                .filter_map(|(j, p)| match purpose_index.get(p) {
                    Some(&i) => Some(i),
                    None => {
                        self.errors.push(fc.error(
                            format!("{ptr}/purposes/{j}"),
                            format!("unknown purpose {p:?}"),
                        ));
                        None
                    }
                })
                .collect::<Vec<_>>()
        });
        let mut bound = |field: &str, v: &Option<String>, end: bool| -> Option<OffsetDateTime> {
            let s = v.as_ref()?;
            match parse_bound(s, end) {
                Ok(t) => Some(t),
                Err(m) => {
                    self.errors
                        .push(fc.error(format!("{ptr}/valid/{field}"), m));
                    None
                }
            }
        };
        let (not_before, not_after) = match &def.valid {
            Some(v) => (
                bound("not_before", &v.not_before, false),
                bound("not_after", &v.not_after, true),
            ),
            None => (None, None),
        };
        if let (Some(a), Some(b)) = (not_before, not_after)
            && b <= a
        {
            self.errors.push(fc.error(
                format!("{ptr}/valid"),
                "not_after is before not_before: the rule could never apply".into(),
            ));
        }
        let effect = match def.effect {
            EffectDef::Allow => Effect::Allow,
            EffectDef::Deny => Effect::Deny,
        };
        let sharing = match def.sharing {
            Some(SharingDef::Conditional) => RuleSharing::Conditional,
            _ => RuleSharing::Unconditional,
        };
        if effect == Effect::Deny && def.sharing == Some(SharingDef::Conditional) {
            self.errors.push(fc.error(
                format!("{ptr}/sharing"),
                "a deny rule cannot be conditional: denials always apply".into(),
            ));
        }

        let mut leaves = Vec::new();
        let mut filters = Vec::new();
        if let Some(ds_i) = dataset {
            let ds = &datasets[ds_i];
            let eff = &eff_sharing[ds_i];
            leaves = match (effect, &def.fields) {
                (Effect::Allow, Some(Value::Object(m))) => self.allow_fields(fc, ptr, ds, eff, m),
                (Effect::Deny, Some(Value::Array(a))) => self.deny_fields(fc, ptr, ds, a),
                (_, None) => Vec::new(),
                // The schema rules these shapes out.
                _ => {
                    self.errors.push(fc.error(
                        format!("{ptr}/fields"),
                        "fields has the wrong shape for this effect".into(),
                    ));
                    Vec::new()
                }
            };
            if let Some(rows) = &def.rows {
                for (j, f) in rows.filters.iter().enumerate() {
                    let fptr = format!("{ptr}/rows/filters/{j}/field");
                    match ds.field(&f.field) {
                        None => self.errors.push(fc.error(
                            fptr,
                            format!("unknown field {:?} in dataset {}", f.field, ds.id),
                        )),
                        Some(info) if info.kind.is_container() || f.field.contains("[]") => {
                            self.errors.push(fc.error(
                                fptr,
                                format!(
                                    "a row filter needs a single scalar field, and {:?} is not one",
                                    f.field
                                ),
                            ))
                        }
                        Some(_) => {
                            let (values, negate) = match (&f.in_, &f.not_in) {
                                (Some(v), None) => (v.clone(), false),
                                (None, Some(v)) => (v.clone(), true),
                                _ => {
                                    self.errors.push(fc.error(
                                        format!("{ptr}/rows/filters/{j}"),
                                        "a filter takes exactly one of `in` and `not_in`".into(),
                                    ));
                                    continue;
                                }
                            };
                            filters.push(Filter {
                                field: f.field.clone(),
                                segments: segments(&f.field),
                                values,
                                negate,
                            });
                        }
                    }
                }
            }
            if effect == Effect::Deny && !leaves.is_empty() && !filters.is_empty() {
                self.errors.push(fc.error(
                    ptr.to_owned(),
                    "a deny rule takes either fields (dropped everywhere) or rows (hidden), not both".into(),
                ));
            }
            if effect == Effect::Allow && ds.region_path.is_none() {
                self.errors.push(fc.error(
                    format!("{ptr}/dataset"),
                    format!(
                        "dataset {} has no x-region, so row scope cannot be enforced",
                        ds.id
                    ),
                ));
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Rule {
            id: Arc::from(def.id.as_str()),
            file: fc.name.clone(),
            line: fc.located.line(ptr),
            effect,
            builtin: false,
            department: department?,
            dataset: dataset?,
            purposes,
            region,
            sharing,
            legal_basis: Arc::from(def.legal_basis.as_deref().unwrap_or("")),
            not_before,
            not_after,
            leaves,
            filters,
        })
    }

    /// Resolves an allow rule's field map to leaf treatments: containers
    /// first (shallow to deep), then leaves, so the more specific entry wins
    /// within one rule.
    fn allow_fields(
        &mut self,
        fc: &FileCtx<'_>,
        ptr: &str,
        ds: &DatasetInfo,
        eff: &[Sharing],
        map: &serde_json::Map<String, Value>,
    ) -> Vec<(usize, Treatment)> {
        // (treatment, path that set it)
        let mut set: Vec<Option<(Treatment, String)>> = vec![None; ds.fields.len()];
        let mut entries: Vec<(&String, &str, usize)> = Vec::new();
        for (path, tv) in map {
            let fptr = format!("{ptr}/fields/{}", esc(path));
            let Some(t) = tv.as_str() else {
                self.errors
                    .push(fc.error(fptr, "a treatment is a string".into()));
                continue;
            };
            match ds.fields.iter().position(|f| &f.path == path) {
                Some(i) => entries.push((path, t, i)),
                None => self.errors.push(fc.error(fptr, unknown_field(ds, path))),
            }
        }
        entries.sort_by_key(|(p, _, i)| (!ds.fields[*i].kind.is_container(), p.len()));
        for (path, t, i) in entries {
            let fptr = format!("{ptr}/fields/{}", esc(path));
            let info = &ds.fields[i];
            let treatment = match Treatment::parse(t, info.kind) {
                Ok(t) => t,
                Err(m) => {
                    self.errors.push(fc.error(fptr, format!("{path}: {m}")));
                    continue;
                }
            };
            if info.kind.is_container() {
                for (j, f) in ds.fields.iter().enumerate() {
                    if !f.kind.is_container() && is_under(&f.path, path) {
                        set[j] = Some((treatment.clone(), path.clone()));
                    }
                }
            } else {
                set[i] = Some((treatment, path.clone()));
            }
        }
        let mut out = Vec::new();
        for (j, s) in set.into_iter().enumerate() {
            let Some((t, by)) = s else { continue };
            if t == Treatment::Clear && eff[j] == Sharing::None {
                let f = &ds.fields[j].path;
                let how = if *f == by {
                    String::new()
                } else {
                    format!(" (granted through {by}; name it with another treatment)")
                };
                self.errors.push(fc.error(
                    format!("{ptr}/fields/{}", esc(&by)),
                    format!(
                        "{f} is 不予共享 (x-sharing: none) and can never be granted in clear{how}"
                    ),
                ));
                continue;
            }
            out.push((j, t));
        }
        out
    }

    fn deny_fields(
        &mut self,
        fc: &FileCtx<'_>,
        ptr: &str,
        ds: &DatasetInfo,
        list: &[Value],
    ) -> Vec<(usize, Treatment)> {
        let mut out: Vec<(usize, Treatment)> = Vec::new();
        for (k, v) in list.iter().enumerate() {
            let Some(path) = v.as_str() else { continue };
            let Some(i) = ds.fields.iter().position(|f| f.path == path) else {
                self.errors
                    .push(fc.error(format!("{ptr}/fields/{k}"), unknown_field(ds, path)));
                continue;
            };
            for (j, f) in ds.fields.iter().enumerate() {
                if !f.kind.is_container()
                    && (j == i || is_under(&f.path, path))
                    && !out.iter().any(|(x, _)| *x == j)
                {
                    out.push((j, Treatment::Drop));
                }
            }
        }
        out
    }

    fn warn_rules(
        &mut self,
        rules: &[Rule],
        keys: &HashMap<(u32, u32, u32), KeyEntry>,
        datasets: &[DatasetInfo],
        departments: &[DepartmentDef],
        purposes: &[PurposeDef],
    ) {
        let warn = |r: &Rule, message: String| Warning {
            file: r.file.to_string(),
            line: r.line,
            rule: Some(r.id.to_string()),
            message,
        };
        for r in rules.iter().filter(|r| !r.builtin) {
            if let Some(t) = r.not_after
                && t <= self.now
            {
                self.warnings.push(warn(
                    r,
                    format!(
                        "rule {} expired at {}: it can never apply (unreachable)",
                        r.id,
                        fmt_time(t)
                    ),
                ));
            }
            if r.effect == Effect::Allow && r.leaves.iter().all(|(_, t)| *t == Treatment::Drop) {
                self.warnings
                    .push(warn(r, format!("rule {} grants no field", r.id)));
            }
            if r.effect == Effect::Allow
                && let Some(d) = rules.iter().find(|d| shadows(d, r))
            {
                self.warnings.push(warn(
                    r,
                    format!(
                        "rule {} is unreachable: deny rule {} always overrides it",
                        r.id, d.id
                    ),
                ));
            }
        }
        // Conflicts: two allow rules of one key treating a field differently.
        // (rule a, rule b) → (differing fields, purposes concerned)
        type Conflicts<'p> = BTreeMap<(usize, usize), (Vec<String>, Vec<&'p str>)>;
        let mut pairs: Conflicts<'_> = BTreeMap::new();
        let mut sorted_keys: Vec<_> = keys.iter().collect();
        sorted_keys.sort_by_key(|(k, _)| **k);
        for (&(_, ds, p), entry) in sorted_keys {
            let allows: Vec<usize> = entry
                .candidates
                .iter()
                .copied()
                .filter(|&r| rules[r].effect == Effect::Allow)
                .collect();
            for (x, &a) in allows.iter().enumerate() {
                for &b in &allows[x + 1..] {
                    let (ra, rb) = (&rules[a], &rules[b]);
                    if !windows_overlap(ra, rb) {
                        continue;
                    }
                    let e = pairs.entry((a, b)).or_default();
                    if !e.1.contains(&purposes[p as usize].code.as_str()) {
                        e.1.push(purposes[p as usize].code.as_str());
                    }
                    if !e.0.is_empty() {
                        continue;
                    }
                    for (leaf, ta) in &ra.leaves {
                        if let Some((_, tb)) = rb.leaves.iter().find(|(l, _)| l == leaf)
                            && ta != tb
                        {
                            let m = Treatment::most_restrictive(ta, tb);
                            e.0.push(format!(
                                "{} ({ta} vs {tb}: {m} applies)",
                                datasets[ds as usize].fields[*leaf].path
                            ));
                        }
                    }
                }
            }
        }
        for ((a, b), (fields, ps)) in pairs {
            if fields.is_empty() {
                continue;
            }
            let (ra, rb) = (&rules[a], &rules[b]);
            self.warnings.push(warn(
                rb,
                format!(
                    "rules {} and {} both give {} access to {} for {} and treat fields differently; the most restrictive treatment applies: {}",
                    ra.id,
                    rb.id,
                    departments[ra.department].id,
                    datasets[ra.dataset].id,
                    ps.join(", "),
                    fields.join("; ")
                ),
            ));
        }
    }
}

fn unknown_field(ds: &DatasetInfo, path: &str) -> String {
    // Suggest fields sharing the last segment, to help with typos in nesting.
    let last = path.rsplit(['.', ']']).next().unwrap_or(path);
    let similar: Vec<&str> = ds
        .fields
        .iter()
        .filter(|f| f.path.ends_with(last))
        .map(|f| f.path.as_str())
        .take(4)
        .collect();
    if similar.is_empty() {
        format!("unknown field {path:?} in dataset {}", ds.id)
    } else {
        format!(
            "unknown field {path:?} in dataset {} (did you mean {}?)",
            ds.id,
            similar.join(", ")
        )
    }
}

/// Every field's sharing type including its ancestors': a leaf under a
/// `none` container is `none`.
fn effective_sharing(ds: &DatasetInfo) -> Vec<Sharing> {
    let mut out: Vec<Sharing> = Vec::with_capacity(ds.fields.len());
    for f in &ds.fields {
        let parent = parent_path(&f.path)
            .and_then(|p| ds.fields.iter().position(|g| g.path == p))
            .and_then(|i| out.get(i).copied());
        out.push(parent.map_or(f.sharing, |p| p.max(f.sharing)));
    }
    out
}

fn windows_overlap(a: &Rule, b: &Rule) -> bool {
    let starts_before_end = |s: Option<OffsetDateTime>, e: Option<OffsetDateTime>| match (s, e) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    };
    starts_before_end(a.not_before, b.not_after) && starts_before_end(b.not_before, a.not_after)
}

/// Whether whole-deny rule `d` overrides allow rule `a` wherever `a` could
/// apply.
fn shadows(d: &Rule, a: &Rule) -> bool {
    d.denies_whole()
        && d.department == a.department
        && d.dataset == a.dataset
        && match (&d.purposes, &a.purposes) {
            (None, _) => true,
            (Some(dp), Some(ap)) => ap.iter().all(|p| dp.contains(p)),
            (Some(_), None) => false,
        }
        && match (d.region, a.region) {
            (None, _) => true,
            (Some(dr), Some(ar)) => dr.contains(&ar),
            (Some(_), None) => false,
        }
        && d.not_before
            .is_none_or(|t| a.not_before.is_some_and(|s| s >= t))
        && d.not_after
            .is_none_or(|t| a.not_after.is_some_and(|e| e <= t))
}

/// The date in China time (UTC+8) of an instant.
pub(crate) fn china_date(t: OffsetDateTime) -> Date {
    t.to_offset(offset!(+8)).date()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn bounds_are_china_days() {
        assert_eq!(
            parse_bound("2026-01-01", false),
            Ok(datetime!(2025-12-31 16:00 UTC))
        );
        assert_eq!(
            parse_bound("2026-12-31", true),
            Ok(datetime!(2026-12-31 16:00 UTC))
        );
        assert_eq!(
            parse_bound("2026-06-01T08:00:00Z", false),
            Ok(datetime!(2026-06-01 8:00 UTC))
        );
        assert!(parse_bound("2026-02-30", false).is_err());
    }

    #[test]
    fn parents_and_containment() {
        assert_eq!(parent_path("members[].name"), Some("members"));
        assert_eq!(parent_path("tags[]"), Some("tags"));
        assert_eq!(parent_path("head.name"), Some("head"));
        assert_eq!(parent_path("x"), None);
        assert!(is_under("members[].name", "members"));
        assert!(is_under("head.name", "head"));
        assert!(!is_under("header", "head"));
        assert!(!is_under("head", "head"));
    }
}
