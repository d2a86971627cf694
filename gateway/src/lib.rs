//! The data-sharing gateway for low-income-population records.
//!
//! # Layout
//! - [`identity`]: the caller resolved from its certificate ([`identity::Caller`]).
//! - [`error`]: the one JSON error shape and its status table.
//! - [`storage`]: SQLite / PostgreSQL behind [`storage::Database`].
//! - [`records`]: the versioned record store.
//! - [`policy`]: sharing policies compiled into plans.
//! - [`audit`]: the tamper-evident access log.

pub mod audit;
pub mod error;
pub mod identity;
pub mod policy;
pub mod records;
pub mod storage;
