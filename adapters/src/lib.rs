//! Canonical datasets, domain validation and per-department adapters.
//!
//! # Layout
//! - [`domain`]: newtypes for the identifiers every record carries (GB 11643
//!   ID numbers, GB/T 2260 region codes).

pub mod domain;
