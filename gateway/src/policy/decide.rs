//! Evaluating a request against a [`PolicySet`]: [`PolicySet::decide`]
//! (never fails, denies by default), [`PolicySet::explain`] and
//! [`simulate`].
//!
//! Order of evaluation (each step can only take away):
//! 1. unknown dataset, purpose or department → deny;
//! 2. a purpose that needs an authorisation reference, without one → deny;
//! 3. candidate rules for (department, dataset, purpose) are filtered by
//!    validity window, region (caller ∩ rule must be non-empty) and, for
//!    conditional rules, an approved unexpired grant;
//! 4. an active deny rule without fields or rows → deny (explicit deny wins);
//! 5. no active allow rule → deny (default);
//! 6. the plan for that set of active rules (cached) merges treatments,
//!    most restrictive per field; deny rules drop fields and hide rows;
//! 7. a plan that shows no field → deny.

use std::sync::Arc;

use adapters::domain::RegionCode;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use super::grants::{Grant, GrantSet};
use super::plan::{ApplyCtx, EvalError, FieldDecision, Plan, RowScope};
use super::set::{Effect, PolicySet, RuleSharing, china_date};
use crate::identity::Caller;

/// One data request, as the policy engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    /// The consumer department.
    pub department: &'a str,
    /// The caller's region (client registry): rows outside it are never
    /// visible.
    pub region: RegionCode,
    /// The dataset asked for.
    pub dataset: &'a str,
    /// The stated purpose (`X-Purpose`).
    pub purpose: &'a str,
    /// The authorisation reference, for purposes that need one.
    pub authorisation: Option<&'a str>,
    /// The request time (validity windows, grant expiry, age bands).
    pub now: OffsetDateTime,
    /// The grants the consumer holds.
    pub grants: &'a GrantSet,
}

impl<'a> AccessRequest<'a> {
    /// A request by an authenticated caller.
    pub fn for_caller(
        caller: &'a Caller,
        dataset: &'a str,
        purpose: &'a str,
        authorisation: Option<&'a str>,
        now: OffsetDateTime,
        grants: &'a GrantSet,
    ) -> Self {
        AccessRequest {
            department: caller.department.as_str(),
            region: caller.region,
            dataset,
            purpose,
            authorisation,
            now,
            grants,
        }
    }
}

/// Why a decision came out as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Allowed by the listed rules.
    Allowed,
    /// The dataset is not in the catalogue.
    UnknownDataset,
    /// The purpose code is not in the policy set.
    UnknownPurpose,
    /// The department is not in the policy set.
    UnknownDepartment,
    /// The purpose needs an authorisation reference and none was given.
    AuthorisationRequired,
    /// No rule exists for this consumer, dataset and purpose.
    NoRule,
    /// Rules exist but none is active now (window, region, grant).
    NoActiveRule,
    /// An explicit deny rule applies.
    DenyRule,
    /// The active rules show no field.
    NoFieldsGranted,
}

/// One reason, with the rule concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// What happened.
    pub code: ReasonCode,
    /// The rule, where one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
}

/// The answer to an [`AccessRequest`]. Never an error: anything that goes
/// wrong denies. Keep `rules`, `grants` and `reasons` in the audit record.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Whether any data may be returned.
    pub allowed: bool,
    /// The policy-set version that decided.
    pub version: Arc<str>,
    /// Why.
    pub reasons: Vec<Reason>,
    /// The rules that applied (allow and deny).
    pub rules: Vec<Arc<str>>,
    /// The legal bases of the allow rules that applied, each once, for the
    /// audit event (empty when denied).
    pub legal_bases: Vec<Arc<str>>,
    /// The grants that activated conditional rules.
    pub grants: Vec<String>,
    /// Evaluation errors (none of them carries personal data).
    pub errors: Vec<String>,
    plan: Option<Arc<Plan>>,
    scope: RegionCode,
    today: Date,
}

impl Decision {
    fn deny(
        set: &PolicySet,
        req: &AccessRequest<'_>,
        code: ReasonCode,
        rule: Option<Arc<str>>,
    ) -> Self {
        Decision {
            allowed: false,
            version: set.version_arc(),
            reasons: vec![Reason { code, rule }],
            rules: Vec::new(),
            legal_bases: Vec::new(),
            grants: Vec::new(),
            errors: Vec::new(),
            plan: None,
            scope: req.region,
            today: china_date(req.now),
        }
    }

    /// The plan, when allowed.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        self.plan.as_ref()
    }

    /// Per-field treatments with the rule that set each (empty when denied).
    pub fn fields(&self) -> &[FieldDecision] {
        self.plan.as_deref().map_or(&[][..], Plan::fields)
    }

    /// The context for applying the plan: the caller's scope and the date.
    pub fn apply_ctx(&self) -> ApplyCtx {
        ApplyCtx {
            scope: self.scope,
            today: self.today,
        }
    }

    /// The caller's view of one record of the dataset, or `None` if denied,
    /// out of scope, filtered out, or not evaluable.
    pub fn apply(&self, record: &Value) -> Option<Value> {
        if !self.allowed {
            return None;
        }
        self.plan.as_ref()?.apply(record, &self.apply_ctx())
    }

    /// Appends the caller's view of a record given as its stored JSON text
    /// to `out` (see [`Plan::write_view`]); `false`, with nothing appended,
    /// if denied, out of scope, filtered out, or not evaluable.
    pub fn write_view(&self, record: &str, out: &mut Vec<u8>) -> bool {
        self.allowed
            && self
                .plan
                .as_ref()
                .is_some_and(|p| p.write_view(record, &self.apply_ctx(), out) == Ok(true))
    }

    /// Like [`Decision::apply`], telling evaluation errors apart.
    pub fn try_apply(&self, record: &Value) -> Result<Option<Value>, EvalError> {
        match (&self.plan, self.allowed) {
            (Some(p), true) => p.try_apply(record, &self.apply_ctx()),
            _ => Ok(None),
        }
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Decision", 8)?;
        st.serialize_field("allowed", &self.allowed)?;
        st.serialize_field("version", &*self.version)?;
        st.serialize_field("reasons", &self.reasons)?;
        st.serialize_field("rules", &self.rules)?;
        st.serialize_field("grants", &self.grants)?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("fields", self.fields())?;
        st.serialize_field(
            "rows",
            &self.plan.as_deref().map(Plan::rows).unwrap_or_default(),
        )?;
        st.end()
    }
}

/// A candidate rule's state for one request (explain output).
#[derive(Clone, Debug, Serialize)]
pub struct RuleStatus {
    /// Rule id.
    pub id: Arc<str>,
    /// Allow or deny.
    pub effect: Effect,
    /// The built-in owner rule.
    pub builtin: bool,
    /// Unconditional or conditional.
    pub sharing: RuleSharing,
    /// Legal basis as written.
    pub legal_basis: Arc<str>,
    /// Where it is written.
    pub file: Arc<str>,
    /// Line, where known.
    pub line: Option<u64>,
    /// Whether it applied.
    pub active: bool,
    /// Why not: `outside-validity-window`, `outside-region`, `no-grant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive_because: Option<&'static str>,
    /// The grant that activated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// The answer to `POST /v1/policy/explain`.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// Who asked about whom.
    pub department: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// The decision, with per-field treatments and rules.
    pub decision: Decision,
    /// Every rule that could apply, active or not, and why.
    pub candidates: Vec<RuleStatus>,
    /// Deny scopes hiding rows.
    pub hidden_rows: Vec<RowScope>,
}

impl PolicySet {
    /// Decides a request. Never fails; denies by default. Cost: three hash
    /// lookups, a pass over the (few) candidate rules, and a cached plan.
    pub fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        self.evaluate(req, None)
    }

    /// The decision plus every candidate rule's state, for
    /// `POST /v1/policy/explain`. Serialise with serde.
    pub fn explain(&self, req: &AccessRequest<'_>) -> Explanation {
        let mut trace = Vec::new();
        let decision = self.evaluate(req, Some(&mut trace));
        Explanation {
            department: req.department.to_owned(),
            dataset: req.dataset.to_owned(),
            purpose: req.purpose.to_owned(),
            hidden_rows: decision
                .plan
                .as_deref()
                .map(|p| p.deny_rows().to_vec())
                .unwrap_or_default(),
            decision,
            candidates: trace,
        }
    }

    fn evaluate(
        &self,
        req: &AccessRequest<'_>,
        mut trace: Option<&mut Vec<RuleStatus>>,
    ) -> Decision {
        let Some(&ds) = self.dataset_index.get(req.dataset) else {
            return Decision::deny(self, req, ReasonCode::UnknownDataset, None);
        };
        let Some(&p) = self.purpose_index.get(req.purpose) else {
            return Decision::deny(self, req, ReasonCode::UnknownPurpose, None);
        };
        let Some(&dept) = self.dept_index.get(req.department) else {
            return Decision::deny(self, req, ReasonCode::UnknownDepartment, None);
        };
        if self.purposes[p].requires_authorisation
            && req.authorisation.is_none_or(|a| a.trim().is_empty())
        {
            return Decision::deny(self, req, ReasonCode::AuthorisationRequired, None);
        }
        let Some(entry) = self.keys.get(&(dept as u32, ds as u32, p as u32)) else {
            return Decision::deny(self, req, ReasonCode::NoRule, None);
        };

        let mut active: u64 = 0;
        let mut rules = Vec::new();
        let mut legal_bases: Vec<Arc<str>> = Vec::new();
        let mut grants = Vec::new();
        let mut whole_deny: Option<Arc<str>> = None;
        let mut any_allow = false;
        for (i, &ri) in entry.candidates.iter().enumerate() {
            let r = &self.rules[ri];
            let mut grant = None;
            let why = if !r.in_window(req.now) {
                Some("outside-validity-window")
            } else if r
                .region
                .is_some_and(|rr| !(rr.contains(&req.region) || req.region.contains(&rr)))
            {
                Some("outside-region")
            } else if r.sharing == RuleSharing::Conditional {
                match req.grants.find(&r.id, req.department, req.now) {
                    Some(g) => {
                        grant = Some(g.id.clone());
                        None
                    }
                    None => Some("no-grant"),
                }
            } else {
                None
            };
            if let Some(t) = trace.as_deref_mut() {
                t.push(RuleStatus {
                    id: r.id.clone(),
                    effect: r.effect,
                    builtin: r.builtin,
                    sharing: r.sharing,
                    legal_basis: r.legal_basis.clone(),
                    file: r.file.clone(),
                    line: r.line,
                    active: why.is_none(),
                    inactive_because: why,
                    grant: grant.clone(),
                });
            }
            if why.is_some() {
                continue;
            }
            if i < 64 {
                active |= 1 << i;
            }
            rules.push(r.id.clone());
            grants.extend(grant);
            if r.denies_whole() && whole_deny.is_none() {
                whole_deny = Some(r.id.clone());
            }
            if r.effect == Effect::Allow
                && !r.legal_basis.is_empty()
                && !legal_bases.contains(&r.legal_basis)
            {
                legal_bases.push(r.legal_basis.clone());
            }
            any_allow |= r.effect == Effect::Allow;
        }
        if let Some(d) = whole_deny {
            let mut dec = Decision::deny(self, req, ReasonCode::DenyRule, Some(d));
            dec.rules = rules;
            return dec;
        }
        if !any_allow {
            return Decision::deny(self, req, ReasonCode::NoActiveRule, None);
        }
        if entry.candidates.len() > 64 {
            // Cannot be represented in the cache key; fail closed.
            let mut dec = Decision::deny(self, req, ReasonCode::NoActiveRule, None);
            dec.errors
                .push("too many candidate rules for one request".into());
            return dec;
        }
        let plan = self.plan_for(entry, active, ds, dept);
        if !plan.grants_any_field() {
            let mut dec = Decision::deny(self, req, ReasonCode::NoFieldsGranted, None);
            dec.rules = rules;
            return dec;
        }
        Decision {
            allowed: true,
            version: self.version_arc(),
            reasons: vec![Reason {
                code: ReasonCode::Allowed,
                rule: None,
            }],
            rules,
            legal_bases,
            grants,
            errors: Vec::new(),
            plan: Some(plan),
            scope: req.region,
            today: china_date(req.now),
        }
    }
}

/// A sample request for simulation (JSON from the admin API or a file).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Consumer department.
    pub department: String,
    /// Caller region.
    pub region: RegionCode,
    /// Dataset.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// Authorisation reference.
    #[serde(default)]
    pub authorisation: Option<String>,
    /// Grants the consumer holds.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Request time (default: the simulation's `now`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub now: Option<OffsetDateTime>,
    /// A record to apply both plans to; the report names changed fields,
    /// never values.
    #[serde(default)]
    pub record: Option<Value>,
}

/// The outcome of one sample under one set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// Allowed?
    pub allowed: bool,
    /// First reason code.
    pub reason: ReasonCode,
    /// Rules that applied.
    pub rules: Vec<Arc<str>>,
    /// Whether the sample record would be visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_visible: Option<bool>,
}

/// One field whose treatment differs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// Field path.
    pub path: String,
    /// Treatment under the active set (`drop` when denied).
    pub before: String,
    /// Treatment under the draft.
    pub after: String,
}

/// One sample whose outcome changes.
#[derive(Clone, Debug, Serialize)]
pub struct SampleChange {
    /// Index in the input.
    pub index: usize,
    /// Department, dataset, purpose of the sample.
    pub department: String,
    /// Dataset.
    pub dataset: String,
    /// Purpose.
    pub purpose: String,
    /// Under the active set.
    pub before: Outcome,
    /// Under the draft.
    pub after: Outcome,
    /// Fields whose treatment changes.
    pub fields: Vec<FieldChange>,
    /// Whether the sample record's output changes (values not shown).
    pub output_changed: bool,
}

/// What a draft policy set would change.
#[derive(Clone, Debug, Serialize)]
pub struct SimulationReport {
    /// Version in force.
    pub active_version: String,
    /// Version of the draft.
    pub draft_version: String,
    /// Samples run.
    pub samples: usize,
    /// Samples whose outcome changes.
    pub changed: usize,
    /// The changes.
    pub changes: Vec<SampleChange>,
}

fn outcome(d: &Decision, record: Option<&Value>) -> (Outcome, Option<Value>) {
    let out = record.and_then(|r| d.apply(r));
    (
        Outcome {
            allowed: d.allowed,
            reason: d.reasons.first().map_or(ReasonCode::NoRule, |r| r.code),
            rules: d.rules.clone(),
            row_visible: record.map(|_| out.is_some()),
        },
        out,
    )
}

fn treatments(d: &Decision) -> Vec<(String, String)> {
    if !d.allowed {
        return Vec::new();
    }
    d.fields()
        .iter()
        .map(|f| (f.path.clone(), f.treatment.to_string()))
        .collect()
}

/// Runs `samples` against the active set and a draft, without activating
/// anything, and reports what changes.
pub fn simulate(
    draft: &PolicySet,
    active: &PolicySet,
    samples: &[Sample],
    now: OffsetDateTime,
) -> SimulationReport {
    let mut changes = Vec::new();
    for (index, s) in samples.iter().enumerate() {
        let grants = GrantSet::new(s.grants.clone());
        let req = AccessRequest {
            department: &s.department,
            region: s.region,
            dataset: &s.dataset,
            purpose: &s.purpose,
            authorisation: s.authorisation.as_deref(),
            now: s.now.unwrap_or(now),
            grants: &grants,
        };
        let (d0, d1) = (active.decide(&req), draft.decide(&req));
        let (o0, v0) = outcome(&d0, s.record.as_ref());
        let (o1, v1) = outcome(&d1, s.record.as_ref());
        let (t0, t1) = (treatments(&d0), treatments(&d1));
        let mut fields = Vec::new();
        let lookup = |t: &[(String, String)], p: &str| {
            t.iter()
                .find(|(q, _)| q == p)
                .map_or_else(|| "drop".to_owned(), |(_, x)| x.clone())
        };
        let mut paths: Vec<&str> = t0
            .iter()
            .chain(t1.iter())
            .map(|(p, _)| p.as_str())
            .collect();
        paths.sort_unstable();
        paths.dedup();
        for p in paths {
            let (b, a) = (lookup(&t0, p), lookup(&t1, p));
            if b != a {
                fields.push(FieldChange {
                    path: p.to_owned(),
                    before: b,
                    after: a,
                });
            }
        }
        let output_changed = v0 != v1;
        if o0 != o1 || !fields.is_empty() || output_changed {
            changes.push(SampleChange {
                index,
                department: s.department.clone(),
                dataset: s.dataset.clone(),
                purpose: s.purpose.clone(),
                before: o0,
                after: o1,
                fields,
                output_changed,
            });
        }
    }
    SimulationReport {
        active_version: active.version().to_owned(),
        draft_version: draft.version().to_owned(),
        samples: samples.len(),
        changed: changes.len(),
        changes,
    }
}
