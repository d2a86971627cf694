//! Field-level sharing policies: files, compiled plans, decisions.
//!
//! # Layout
//! - [`catalog`]: the field catalogue (paths, kinds, sharing types) read from
//!   the dataset JSON Schemas.
//! - `source`: YAML policy files → JSON with a line per node; the file model.
//! - [`treatment`]: clear / mask / pseudonym / generalise / drop on one value.
//! - `set`: loading, checking and compiling a directory into a [`PolicySet`].
//! - `plan`: a compiled [`Plan`] and applying it to a record.
//! - `decide`: [`PolicySet::decide`], [`PolicySet::explain`], [`simulate`].
//! - [`grants`]: approvals of conditional rules and their store.
//! - `handle`: [`PolicyHandle`], the hot-reloadable set in force.
//! - `cli`: `gateway policy validate` / `simulate`.
//!
//! # Request flow
//! ```text
//! set = handle.current()                      // one snapshot per request
//! grants = GrantStore::list_active(db, dept, now)
//! for dataset in set.datasets_for(dept, purpose):
//!     decision = set.decide(&AccessRequest { .. })   // never fails
//!     audit(decision.rules, decision.grants, decision.reasons)
//!     view = decision.apply(&record)          // None: not visible
//! ```
//!
//! # Semantics
//! Deny by default; an explicit deny wins (whole access, fields, or rows);
//! among allow rules that mention a field the most restrictive treatment
//! wins (drop > pseudonym > generalise > mask > clear); fields no rule
//! mentions are dropped; any evaluation error withholds the row. Owners read
//! their own datasets in full through a built-in rule
//! (`builtin:owner:<dataset>`), unless the policy set gives the owner its
//! own rules for a purpose, which then replace it for that purpose.

pub mod catalog;
mod cli;
mod decide;
pub mod grants;
mod handle;
mod plan;
mod set;
mod source;
pub mod treatment;

pub use catalog::{DatasetInfo, Datasets, FieldInfo, FieldKind, Sharing};
pub use cli::{EXIT_DATAERR, simulate_cli, validate_cli};
pub use decide::{
    AccessRequest, Decision, Explanation, FieldChange, Outcome, Reason, ReasonCode, RuleStatus,
    Sample, SampleChange, SimulationReport, simulate,
};
pub use grants::{Grant, GrantSet, GrantStore};
pub use handle::{PolicyHandle, Reloaded};
pub use plan::{ApplyCtx, EvalError, FieldDecision, Filter, Plan, RowScope};
pub use set::{
    Effect, OWNER_RULE_PREFIX, POLICY_SCHEMA, PolicyError, PolicySet, RuleSharing, SourceFile,
    Warning,
};
pub use source::{DepartmentDef, PurposeDef};
pub use treatment::{PseudonymKey, Treatment};
