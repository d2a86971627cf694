//! A compiled plan: for one (consumer, dataset, purpose) and one set of
//! active rules, which rows are visible and what happens to every field.
//!
//! The plan is a tree mirroring the record (objects, arrays of household
//! members) whose leaves carry a treatment; fields absent from the tree are
//! not emitted. Applying it is one walk over the granted fields only, so its
//! cost does not depend on how much else the record holds.

use std::sync::{Arc, OnceLock};

use adapters::domain::RegionCode;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use time::Date;

use super::catalog::{FieldInfo, FieldKind};
use super::treatment::{DepartmentKey, TreatCtx, TreatError, Treatment, treat};

/// One field's treatment in a plan and the rule that set it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldDecision {
    /// Contract path (`members[].name`).
    pub path: String,
    /// What happens to it.
    pub treatment: Treatment,
    /// The rule that decided it; `default-deny` when no rule mentions it.
    pub rule: Arc<str>,
}

/// A row condition on a scalar record field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Filter {
    /// Contract path of the field.
    pub field: String,
    #[serde(skip)]
    pub(crate) segments: Vec<String>,
    /// The values compared with.
    pub values: Vec<Value>,
    /// `not_in` rather than `in`.
    pub negate: bool,
}

impl Filter {
    fn matches(&self, record: &Members<'_>) -> bool {
        let v = record.scalar_at(&self.segments).unwrap_or(Value::Null);
        self.values.contains(&v) != self.negate
    }
}

/// The rows one rule makes visible (or, for a deny rule, hides).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowScope {
    /// The rule.
    pub rule: Arc<str>,
    /// The rule's region; the caller's region narrows it further.
    pub region: Option<RegionCode>,
    /// All must hold.
    pub filters: Vec<Filter>,
}

impl RowScope {
    fn matches(&self, record: &Members<'_>, region: &RegionCode) -> bool {
        self.region.is_none_or(|r| r.contains(region))
            && self.filters.iter().all(|f| f.matches(record))
    }
}

#[derive(Debug)]
pub(crate) enum PNode {
    Leaf {
        treatment: Treatment,
        kind: FieldKind,
    },
    Obj(Vec<(String, PNode)>),
    Arr(Box<PNode>),
}

/// Why a plan could not be applied to a record. The row is then withheld
/// (any evaluation error denies). Carries no record content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The record has no readable region code where the schema says.
    #[error("the record's region code is missing or invalid")]
    Region,
    /// The record's shape does not match the schema at this field.
    #[error("field {path}: {reason}")]
    Field {
        /// Contract path of the field.
        path: String,
        /// What was wrong.
        reason: TreatError,
    },
    /// An object or array was expected at this field.
    #[error("field {0}: unexpected structure")]
    Structure(String),
}

/// Per-request context for applying a plan.
#[derive(Clone, Copy, Debug)]
pub struct ApplyCtx {
    /// The caller's region: rows outside it are never visible.
    pub scope: RegionCode,
    /// The request date (China time), for age bands.
    pub today: Date,
}

/// One active allow rule inside a plan: its rows and its leaf treatments.
#[derive(Debug)]
pub(crate) struct AllowPart {
    pub scope: RowScope,
    /// (index into the dataset's fields, treatment).
    pub leaves: Vec<(usize, Treatment)>,
}

/// Most allow rules whose row combinations get cached trees (2^8 slots).
const MAX_CACHED_PARTS: usize = 8;

type Tree = Vec<(String, PNode)>;

/// A compiled, immutable plan. Cheap to share (`Arc`).
///
/// Rows: a row is visible if it lies in the caller's region, matches the row
/// scope of at least one allow rule, and no deny scope. Fields: for a
/// visible row, only the allow rules whose scope the row matches contribute
/// (so a rule's fields never leak onto rows it does not cover); among them
/// the most restrictive treatment per field wins; deny rules drop fields.
/// The tree for each combination of matching rules is built once, lazily.
#[derive(Debug)]
pub struct Plan {
    pub(crate) dataset_fields: Arc<[FieldInfo]>,
    pub(crate) allows: Vec<AllowPart>,
    pub(crate) deny_fields: Vec<(usize, Arc<str>)>,
    pub(crate) deny_rows: Vec<RowScope>,
    pub(crate) region_path: Option<Vec<String>>,
    pub(crate) key: DepartmentKey,
    pub(crate) default_rule: Arc<str>,
    fields: Vec<FieldDecision>,
    trees: Box<[OnceLock<Tree>]>,
    full_tree: Tree,
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dataset_fields: Arc<[FieldInfo]>,
        allows: Vec<AllowPart>,
        deny_fields: Vec<(usize, Arc<str>)>,
        deny_rows: Vec<RowScope>,
        region_path: Option<Vec<String>>,
        key: DepartmentKey,
        default_rule: Arc<str>,
    ) -> Plan {
        let n = allows.len();
        let slots = if n <= MAX_CACHED_PARTS {
            1usize << n
        } else {
            0
        };
        let mut plan = Plan {
            dataset_fields,
            allows,
            deny_fields,
            deny_rows,
            region_path,
            key,
            default_rule,
            fields: Vec::new(),
            trees: (0..slots).map(|_| OnceLock::new()).collect(),
            full_tree: Vec::new(),
        };
        let all: u64 = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let (fields, tree) = plan.merge(all);
        plan.fields = fields;
        plan.full_tree = tree;
        plan
    }

    /// Merges the allow parts in `mask` and the deny fields.
    fn merge(&self, mask: u64) -> (Vec<FieldDecision>, Tree) {
        let mut merged: Vec<Option<(Treatment, Arc<str>)>> = vec![None; self.dataset_fields.len()];
        for (i, part) in self.allows.iter().enumerate() {
            if i >= 64 || mask & (1 << i) == 0 {
                continue;
            }
            for (leaf, t) in &part.leaves {
                let Some(slot) = merged.get_mut(*leaf) else {
                    continue;
                };
                *slot = Some(match slot.take() {
                    None => (t.clone(), part.scope.rule.clone()),
                    Some((old, by)) => {
                        let m = Treatment::most_restrictive(&old, t);
                        if m == old {
                            (old, by)
                        } else {
                            (m, part.scope.rule.clone())
                        }
                    }
                });
            }
        }
        for (leaf, rule) in &self.deny_fields {
            if let Some(slot) = merged.get_mut(*leaf) {
                *slot = Some((Treatment::Drop, rule.clone()));
            }
        }
        let mut fields = Vec::new();
        for (f, m) in self.dataset_fields.iter().zip(merged) {
            if f.kind.is_container() {
                continue;
            }
            let (treatment, rule) =
                m.unwrap_or_else(|| (Treatment::Drop, self.default_rule.clone()));
            fields.push(FieldDecision {
                path: f.path.clone(),
                treatment,
                rule,
            });
        }
        let leaves: Vec<(&str, &Treatment, FieldKind)> = fields
            .iter()
            .zip(
                self.dataset_fields
                    .iter()
                    .filter(|f| !f.kind.is_container()),
            )
            .map(|(fd, f)| (fd.path.as_str(), &fd.treatment, f.kind))
            .collect();
        let tree = build_tree(&leaves);
        (fields, tree)
    }

    /// Every field of the dataset with its treatment and deciding rule, for
    /// a row every active allow rule covers.
    pub fn fields(&self) -> &[FieldDecision] {
        &self.fields
    }

    /// The row scopes granted (one per active allow rule).
    pub fn rows(&self) -> Vec<RowScope> {
        self.allows.iter().map(|p| p.scope.clone()).collect()
    }

    /// Row scopes hidden by deny rules.
    pub fn deny_rows(&self) -> &[RowScope] {
        &self.deny_rows
    }

    /// Whether at least one field is visible on some row.
    pub fn grants_any_field(&self) -> bool {
        !self.full_tree.is_empty()
    }

    /// The caller's view of `record`, or `None` when the row is out of scope,
    /// filtered out, or cannot be evaluated (any error denies).
    pub fn apply(&self, record: &Value, ctx: &ApplyCtx) -> Option<Value> {
        self.try_apply(record, ctx).ok().flatten()
    }

    /// Like [`Plan::apply`] but tells an evaluation error (for the audit
    /// record) from a row that is simply not visible (`Ok(None)`).
    ///
    /// The record goes through [`Plan::write_view`] as JSON text: one engine
    /// serves stored records (text) and values alike.
    pub fn try_apply(&self, record: &Value, ctx: &ApplyCtx) -> Result<Option<Value>, EvalError> {
        if !record.is_object() {
            return Err(EvalError::Structure(String::new()));
        }
        let text = record.to_string();
        let mut out = Vec::with_capacity(text.len());
        if !self.write_view(&text, ctx, &mut out)? {
            return Ok(None);
        }
        serde_json::from_slice(&out)
            .map(Some)
            .map_err(|_| EvalError::Structure(String::new()))
    }

    /// Appends the caller's view of a record given as JSON text (a stored
    /// canonical payload) to `out`, without building a `Value` of the
    /// record: objects are split into their members as borrowed text, clear
    /// scalars are copied as they are, and only treated leaves are parsed.
    ///
    /// Returns `Ok(false)` (nothing appended) when the row is not visible;
    /// on an error nothing is appended either.
    pub fn write_view(
        &self,
        record: &str,
        ctx: &ApplyCtx,
        out: &mut Vec<u8>,
    ) -> Result<bool, EvalError> {
        let members = Members::parse(record).ok_or_else(|| EvalError::Structure(String::new()))?;
        let region = self
            .region_path
            .as_ref()
            .and_then(|p| members.scalar_at(p))
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|s| RegionCode::parse(s).ok())
            .ok_or(EvalError::Region)?;
        if !ctx.scope.contains(&region) {
            return Ok(false);
        }
        if self.deny_rows.iter().any(|s| s.matches(&members, &region)) {
            return Ok(false);
        }
        let mut mask: u64 = 0;
        for (i, part) in self.allows.iter().enumerate().take(64) {
            if part.scope.matches(&members, &region) {
                mask |= 1 << i;
            }
        }
        if mask == 0 {
            return Ok(false);
        }
        let n = self.allows.len();
        let full = n < 64 && mask == (1u64 << n) - 1;
        let owned;
        let tree: &Tree = if full {
            &self.full_tree
        } else if let Some(slot) = self.trees.get(mask as usize) {
            slot.get_or_init(|| self.merge(mask).1)
        } else {
            owned = self.merge(mask).1;
            &owned
        };
        if tree.is_empty() {
            return Ok(false);
        }
        let tctx = TreatCtx {
            today: ctx.today,
            key: &self.key,
        };
        let start = out.len();
        let mut path = String::new();
        match write_obj(tree, &members, &tctx, &mut path, out) {
            Ok(()) => Ok(true),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

/// A JSON object's members as borrowed raw text, in document order. Keys
/// are borrowed unless they hold escapes.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of the object `text`, or `None` if it is not an object.
    fn parse(text: &'a str) -> Option<Members<'a>> {
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The scalar at a path of object keys (no arrays), parsed.
    fn scalar_at(&self, segs: &[String]) -> Option<Value> {
        let (last, parents) = segs.split_last()?;
        let mut nested;
        let mut cur = self;
        for s in parents {
            nested = Members::parse(cur.get(s)?.get())?;
            cur = &nested;
        }
        serde_json::from_str(cur.get(last)?.get()).ok()
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, x)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    v.push((k.0, x));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the text where it holds no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The first byte of a raw JSON value (serde_json's raw values carry no
/// surrounding whitespace).
fn first_byte(v: &RawValue) -> u8 {
    v.get().as_bytes().first().copied().unwrap_or(b' ')
}

fn write_obj(
    entries: &[(String, PNode)],
    obj: &Members<'_>,
    ctx: &TreatCtx<'_>,
    path: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), EvalError> {
    out.push(b'{');
    let mut first = true;
    for (name, node) in entries {
        let Some(v) = obj.get(name) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        write_json(out, name);
        out.push(b':');
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        write_node(node, v, ctx, path, out)?;
        path.truncate(len);
    }
    out.push(b'}');
    Ok(())
}

fn write_node(
    node: &PNode,
    v: &RawValue,
    ctx: &TreatCtx<'_>,
    path: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), EvalError> {
    match node {
        PNode::Leaf { treatment, kind } => write_leaf(treatment, *kind, v, ctx, path, out),
        PNode::Obj(_) | PNode::Arr(_) => write_nested(node, v.get(), ctx, path, out),
    }
}

fn write_leaf(
    treatment: &Treatment,
    kind: FieldKind,
    v: &RawValue,
    ctx: &TreatCtx<'_>,
    path: &str,
    out: &mut Vec<u8>,
) -> Result<(), EvalError> {
    let field_error = |reason| EvalError::Field {
        path: path.to_owned(),
        reason,
    };
    if matches!(first_byte(v), b'{' | b'[') {
        return Err(field_error(TreatError::NotScalar));
    }
    let text = v.get();
    if *treatment == Treatment::Clear {
        // Stored text is canonical JSON, written as serde_json writes it:
        // copying equals parsing and re-serialising.
        out.extend_from_slice(text.as_bytes());
    } else {
        let value: Value =
            serde_json::from_str(text).map_err(|_| EvalError::Structure(path.to_owned()))?;
        let treated = treat(treatment, kind, &value, ctx).map_err(field_error)?;
        write_json(out, &treated);
    }
    Ok(())
}

/// Writes the view of a granted object or array (`text`) in one pass over
/// it: members the plan does not name are skipped as they are read, granted
/// ones written as they come (in the text's order, which for stored
/// canonical text is the tree's sorted order), arrays element by element.
/// Nothing is split into intermediate lists first.
fn write_nested(
    node: &PNode,
    text: &str,
    ctx: &TreatCtx<'_>,
    path: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), EvalError> {
    use serde::de::DeserializeSeed;
    let mut walk = Walk {
        ctx,
        path,
        out,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let done = Seed {
        node,
        walk: &mut walk,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (done, walk.failure) {
        (_, Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
        (Err(_), None) => Err(EvalError::Structure(walk.path.clone())),
    }
}

/// The state of [`write_nested`]'s walk. A plan error met inside the
/// deserializer is kept in `failure` (serde's error type cannot carry it)
/// and the walk aborted.
struct Walk<'w, 'c> {
    ctx: &'w TreatCtx<'c>,
    path: &'w mut String,
    out: &'w mut Vec<u8>,
    failure: Option<EvalError>,
}

impl Walk<'_, '_> {
    fn fail<E: serde::de::Error>(&mut self, e: EvalError) -> E {
        self.failure.get_or_insert(e);
        E::custom("the record does not fit the plan")
    }

    fn structure<E: serde::de::Error>(&mut self) -> E {
        let path = self.path.clone();
        self.fail(EvalError::Structure(path))
    }
}

/// One plan node applied to the value the deserializer is at.
struct Seed<'a, 'w, 'c> {
    node: &'a PNode,
    walk: &'a mut Walk<'w, 'c>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.node {
            PNode::Leaf { treatment, kind } => {
                let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
                let w = self.walk;
                write_leaf(treatment, *kind, raw, w.ctx, w.path, w.out).map_err(|e| w.fail(e))
            }
            PNode::Obj(_) | PNode::Arr(_) => d.deserialize_any(self),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Seed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object, an array or null")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.walk.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.walk.structure())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.walk.structure())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.walk.structure())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.walk.structure())
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.walk.structure())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let PNode::Obj(entries) = self.node else {
            return Err(self.walk.structure());
        };
        let w = self.walk;
        w.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let Ok(i) = entries.binary_search_by(|(n, _)| n.as_str().cmp(&key.0)) else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let (name, node) = &entries[i];
            if !first {
                w.out.push(b',');
            }
            first = false;
            write_json(w.out, name);
            w.out.push(b':');
            let len = w.path.len();
            if !w.path.is_empty() {
                w.path.push('.');
            }
            w.path.push_str(name);
            map.next_value_seed(Seed {
                node,
                walk: &mut *w,
            })?;
            w.path.truncate(len);
        }
        w.out.push(b'}');
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let PNode::Arr(elem) = self.node else {
            return Err(self.walk.structure());
        };
        let w = self.walk;
        w.path.push_str("[]");
        w.out.push(b'[');
        let mut first = true;
        loop {
            let mark = w.out.len();
            if !first {
                w.out.push(b',');
            }
            let next = seq.next_element_seed(Seed {
                node: elem,
                walk: &mut *w,
            })?;
            if next.is_none() {
                w.out.truncate(mark);
                break;
            }
            first = false;
        }
        w.out.push(b']');
        w.path.truncate(w.path.len() - 2);
        Ok(())
    }
}

/// Serialises a string or value into `out` (cannot fail into a `Vec`).
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Splits a contract path into segments: `members[].name` →
/// `["members", "[]", "name"]`.
pub(crate) fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if let Some(base) = part.strip_suffix("[]") {
            out.push(base.to_owned());
            out.push("[]".to_owned());
        } else {
            out.push(part.to_owned());
        }
    }
    out
}

/// Builds the tree from (path, treatment, kind) leaves; `Drop` leaves are left
/// out. Every object's entries are sorted by name ([`sort_tree`]).
pub(crate) fn build_tree(leaves: &[(&str, &Treatment, FieldKind)]) -> Vec<(String, PNode)> {
    let mut root: Vec<(String, PNode)> = Vec::new();
    for (path, t, kind) in leaves {
        if **t == Treatment::Drop {
            continue;
        }
        insert(&mut root, &segments(path), t, *kind);
    }
    sort_tree(&mut root);
    root
}

/// Orders every object's entries by name, as stored canonical text orders
/// its keys: views list fields in that order, and a nested object's walk
/// finds a member's node by binary search.
fn sort_tree(entries: &mut [(String, PNode)]) {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, node) in entries.iter_mut() {
        let mut node = node;
        while let PNode::Arr(elem) = node {
            node = elem;
        }
        if let PNode::Obj(inner) = node {
            sort_tree(inner);
        }
    }
}

fn insert(entries: &mut Vec<(String, PNode)>, segs: &[String], t: &Treatment, kind: FieldKind) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let idx = match entries.iter().position(|(n, _)| n == first) {
        Some(i) => i,
        None => {
            let node = make_node(rest, t, kind);
            entries.push((first.clone(), node));
            return;
        }
    };
    let node = &mut entries[idx].1;
    descend(node, rest, t, kind);
}

fn make_node(rest: &[String], t: &Treatment, kind: FieldKind) -> PNode {
    match rest.split_first() {
        None => PNode::Leaf {
            treatment: t.clone(),
            kind,
        },
        Some((s, more)) if s == "[]" => PNode::Arr(Box::new(make_node(more, t, kind))),
        Some(_) => {
            let mut v = Vec::new();
            insert(&mut v, rest, t, kind);
            PNode::Obj(v)
        }
    }
}

fn descend(node: &mut PNode, rest: &[String], t: &Treatment, kind: FieldKind) {
    match (node, rest.split_first()) {
        (PNode::Arr(elem), Some((s, more))) if s == "[]" => descend(elem, more, t, kind),
        (PNode::Obj(entries), Some(_)) => insert(entries, rest, t, kind),
        // A leaf and a container at the same path cannot both come from one
        // schema; keep the first.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::treatment::{MaskKind, PseudonymKey};
    use serde_json::json;
    use time::macros::date;

    fn plan(leaves: &[(&str, Treatment, FieldKind)], rows: Vec<RowScope>) -> Plan {
        let fields: Arc<[FieldInfo]> = leaves
            .iter()
            .map(|(p, _, k)| FieldInfo {
                path: (*p).to_owned(),
                kind: *k,
                sharing: crate::policy::Sharing::Unconditional,
            })
            .collect();
        let allows = rows
            .into_iter()
            .map(|scope| AllowPart {
                scope,
                leaves: leaves
                    .iter()
                    .enumerate()
                    .map(|(i, (_, t, _))| (i, t.clone()))
                    .collect(),
            })
            .collect();
        Plan::new(
            fields,
            allows,
            Vec::new(),
            Vec::new(),
            Some(vec!["region_code".into()]),
            PseudonymKey::from_bytes(&[1; 32])
                .expect("key")
                .for_department("x"),
            Arc::from("default-deny"),
        )
    }

    fn all_rows() -> Vec<RowScope> {
        vec![RowScope {
            rule: "r".into(),
            region: None,
            filters: vec![],
        }]
    }

    fn ctx(scope: &str) -> ApplyCtx {
        ApplyCtx {
            scope: RegionCode::parse(scope).expect("region"),
            today: date!(2026 - 11 - 28),
        }
    }

    #[test]
    fn nested_arrays_and_objects() {
        let p = plan(
            &[
                ("region_code", Treatment::Clear, FieldKind::Region),
                (
                    "head.name",
                    Treatment::Mask(MaskKind::Name),
                    FieldKind::Name,
                ),
                (
                    "members[].id_number",
                    Treatment::Mask(MaskKind::IdNumber),
                    FieldKind::IdNumber,
                ),
                ("members[].enrolled", Treatment::Clear, FieldKind::Boolean),
                ("members[].mobile", Treatment::Drop, FieldKind::Mobile),
            ],
            all_rows(),
        );
        let rec = json!({
            "region_code": "441702", "secret": 1,
            "head": {"name": "张三", "address": "x"},
            "members": [
                {"id_number": "441702198001010017", "enrolled": true, "mobile": "13812341234"},
                {"id_number": "11010519491231002X", "enrolled": false}
            ]
        });
        let out = p.apply(&rec, &ctx("441700")).expect("visible");
        assert_eq!(
            out,
            json!({
                "region_code": "441702",
                "head": {"name": "张*"},
                "members": [
                    {"id_number": "441702********0017", "enrolled": true},
                    {"id_number": "110105********002X", "enrolled": false}
                ]
            })
        );
    }

    #[test]
    fn views_from_text_equal_views_from_values() {
        let p = plan(
            &[
                ("region_code", Treatment::Clear, FieldKind::Region),
                ("head.name", Treatment::Clear, FieldKind::Name),
                ("head.note", Treatment::Clear, FieldKind::Text),
                ("amount", Treatment::Clear, FieldKind::Money),
                (
                    "members[].id_number",
                    Treatment::Mask(MaskKind::IdNumber),
                    FieldKind::IdNumber,
                ),
            ],
            all_rows(),
        );
        let rec = json!({
            "amount": 1234.5,
            "head": {"name": "张\"三\"\\", "note": "tab\tnl\n\u{1}é"},
            "members": [{"id_number": "441702198001010017"}, {"id_number": null}],
            "region_code": "441702",
        });
        // Canonical stored text, as the record store writes it.
        let text = crate::records::canonical_json(&rec);
        let mut out = Vec::new();
        assert_eq!(p.write_view(&text, &ctx("441700"), &mut out), Ok(true));
        let expected = p.apply(&rec, &ctx("441700")).expect("visible");
        assert_eq!(String::from_utf8(out).expect("utf-8"), expected.to_string());
        // Whitespace and escaped keys in the text are read as well.
        let loose = "{ \"region_code\" : \"441702\" , \"h\\u0065ad\": {\"name\": \"x\"} }";
        let mut out = Vec::new();
        assert_eq!(p.write_view(loose, &ctx("441700"), &mut out), Ok(true));
        assert_eq!(
            serde_json::from_slice::<Value>(&out).expect("json"),
            json!({"region_code": "441702", "head": {"name": "x"}})
        );
        // Not visible, or an error: nothing appended to what was there.
        let mut out = b"prefix".to_vec();
        assert_eq!(p.write_view(&text, &ctx("441721"), &mut out), Ok(false));
        let bad = r#"{"region_code":"441702","head":{"name":["x"]}}"#;
        assert!(p.write_view(bad, &ctx("441700"), &mut out).is_err());
        assert!(p.write_view("[1]", &ctx("441700"), &mut out).is_err());
        assert!(
            p.write_view("{\"region_code\":", &ctx("441700"), &mut out)
                .is_err()
        );
        assert_eq!(out, b"prefix");
    }

    #[test]
    fn region_scope_and_filters() {
        let rows = vec![RowScope {
            rule: "r".into(),
            region: Some(RegionCode::parse("441702").expect("r")),
            filters: vec![Filter {
                field: "status".into(),
                segments: vec!["status".into()],
                values: vec![json!("active"), json!("graduating")],
                negate: false,
            }],
        }];
        let p = plan(&[("status", Treatment::Clear, FieldKind::Code)], rows);
        let rec = |r: &str, s: &str| json!({"region_code": r, "status": s});
        assert!(p.apply(&rec("441702", "active"), &ctx("441700")).is_some());
        assert!(p.apply(&rec("441702", "ended"), &ctx("441700")).is_none());
        assert!(p.apply(&rec("441721", "active"), &ctx("441700")).is_none());
        // Caller scope narrower than the record: invisible.
        assert!(p.apply(&rec("441702", "active"), &ctx("441721")).is_none());
        // Unreadable region: an evaluation error, withheld.
        assert_eq!(
            p.try_apply(&json!({"region_code": "x"}), &ctx("441700")),
            Err(EvalError::Region)
        );
    }

    #[test]
    fn shape_errors_deny_the_row() {
        let p = plan(
            &[
                ("region_code", Treatment::Clear, FieldKind::Region),
                ("head.name", Treatment::Clear, FieldKind::Name),
            ],
            all_rows(),
        );
        let bad = json!({"region_code": "441702", "head": {"name": {"nested": "x"}}});
        assert!(matches!(
            p.try_apply(&bad, &ctx("441700")),
            Err(EvalError::Field { .. })
        ));
        let bad = json!({"region_code": "441702", "head": "flat"});
        assert!(matches!(
            p.try_apply(&bad, &ctx("441700")),
            Err(EvalError::Structure(_))
        ));
        assert!(p.apply(&json!([1]), &ctx("441700")).is_none());
    }
}
