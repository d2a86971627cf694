//! Canonical datasets, domain validation and per-department adapters.
//!
//! # Layout
//! - [`domain`]: newtypes for the identifiers every record carries (GB 11643
//!   ID numbers, GB/T 2260 region codes).
//! - [`catalogue`]: the dataset schemas (`schemas/*.schema.json`) compiled
//!   once, their field annotations, and [`Dataset::validate`] (JSON Schema
//!   plus domain checks), which every published record goes through.
//! - [`adapter`]: one [`Adapter`] per department, mapping its native JSON to
//!   canonical records and back, driven by the tables in `mappings/`. The
//!   contract every adapter keeps is in `CONTRACT.md`.
//! - [`ledger`]: spreadsheet ledgers (台账, CSV and XLSX with Chinese headers)
//!   streamed row by row into canonical records.
//! - [`synth`]: a deterministic synthetic population of Yangjiang for demos,
//!   tests and benchmarks.
//!
//! # Flow of a published record
//! native JSON → [`Adapter::to_canonical`] (or a ledger row group →
//! [`ledger::LedgerRecord`]) → [`Dataset::validate`] → [`Validated`] (record,
//! natural key, region, subjects) → the gateway's record store.
//!
//! The crate does no I/O beyond reading what it is given (and the schema
//! directory in [`Catalogue::load_dir`]); it knows nothing of HTTP, TLS,
//! storage or logging.

pub mod adapter;
pub mod catalogue;
pub mod domain;
pub mod ledger;
pub mod synth;

pub use adapter::{Adapter, MappingError, TableAdapter, for_dataset, for_department};
pub use catalogue::{
    Catalogue, CatalogueError, Dataset, FieldInfo, FieldKind, RecordError, Sensitivity, Sharing,
    Validated,
};
