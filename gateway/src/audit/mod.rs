//! The audit log: every access recorded durably before the response leaves,
//! hash-chained and Merkle-checkpointed.
//!
//! # Layout
//! - [`event`]: what an event says ([`AuditEvent`] and its builder), data
//!   subjects as keyed, versioned HMACs ([`SubjectKeys`]).
//! - [`record`]: the stored row and the exact bytes that are hashed.
//! - [`merkle`]: RFC 6962 trees, inclusion and consistency proofs.
//! - [`checkpoint`]: Ed25519-signed checkpoints and their export.
//! - [`writer`]: [`AuditWriter`], the single group-committing writer task.
//! - [`verify`](mod@verify): recompute chains, roots and signatures.
//! - [`query`]: the auditor's filters, exports and reports.
//! - [`proofs`]: inclusion / consistency proofs from the database, the
//!   per-person report, checkpoint export.
//! - [`archive`]: segments exported to files that verify off-line.
//!
//! # One log per instance
//! Each gateway instance writes its own log (`log_id`, from configuration)
//! with its own sequence numbers, hash chain and Merkle tree, so instances
//! sharing one PostgreSQL never wait on one another's lock: an append is an
//! insert of rows keyed `(log_id, seq)` that only its own writer produces.
//! Verification walks every log (see [`verify()`]).
//!
//! # Hashing
//! `leaf_hash = SHA-256(0x00 || event bytes)`, `hash = SHA-256(prev_hash ||
//! leaf_hash)`, the event bytes being a length-prefixed encoding of the
//! row's columns (see [`record`]); checkpoints sign the RFC 6962 root over
//! the leaf hashes of one log.
//!
//! # What is never stored
//! No clear ID number and no field value: subjects are `v<version>:<hex
//! HMAC>`, disclosed fields are names with the treatment applied. Events
//! and errors are never logged with personal data.

mod append_sqlite;
pub mod archive;
pub mod checkpoint;
pub mod event;
pub mod merkle;
pub mod proofs;
pub mod query;
pub mod record;
mod scan_pg;
mod scan_sqlite;
pub mod store;
pub mod verify;
pub mod writer;

pub use checkpoint::{CheckpointExport, SignedCheckpoint, SigningKey};
pub use event::{
    AuditEvent, AuditEventBuilder, EventKind, FieldDisclosure, Outcome, SubjectKeys,
    SubjectKeysConfig, SubjectRef,
};
pub use merkle::{ConsistencyProof, InclusionProof};
pub use query::{ExportFormat, Filter, Page};
pub use verify::{VerifyOptions, VerifyReport, verify};
pub use writer::{AuditConfig, AuditHealth, AuditMode, AuditWriter, Receipt};

use crate::storage::StorageError;

/// Errors of the audit layer. The text is for logs; callers get a status
/// (see [`AuditError::status`]) and a generic message.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused the write; retrying in the background. → 503.
    #[error("the audit store is unavailable")]
    Unavailable,
    /// The writer was shut down. → 503.
    #[error("the audit writer has stopped")]
    Closed,
    /// Bad audit configuration (start-up).
    #[error("audit configuration: {0}")]
    Config(String),
    /// The checkpoint key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] checkpoint::KeyError),
    /// A database error (text may name tables: logs only).
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Storage layer error.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored log is inconsistent (run verify).
    #[error("audit log inconsistent: {0}")]
    Corrupt(&'static str),
    /// The caller's input is wrong: which parameter and why. → 400.
    #[error("{0}")]
    BadRequest(String),
    /// No such event / log / checkpoint. → 404.
    #[error("{0}")]
    NotFound(String),
    /// The event is newer than the latest checkpoint. → 409.
    #[error("event {0} is not yet covered by a checkpoint; retry after the next one")]
    NotYetCheckpointed(String),
    /// Serialising an event failed.
    #[error("audit serialisation: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing an export or archive failed.
    #[error("audit i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Writing CSV failed.
    #[error("audit csv: {0}")]
    Csv(#[from] csv::Error),
}

impl AuditError {
    /// A short class for the `error_class` field and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            AuditError::Unavailable | AuditError::Closed => "audit_unavailable",
            AuditError::Config(_) | AuditError::Key(_) => "config",
            AuditError::Database(_) | AuditError::Storage(_) => "database",
            AuditError::Corrupt(_) => "audit_corrupt",
            AuditError::BadRequest(_) => "bad_request",
            AuditError::NotFound(_) => "not_found",
            AuditError::NotYetCheckpointed(_) => "not_checkpointed",
            AuditError::Json(_) | AuditError::Csv(_) | AuditError::Io(_) => "internal",
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            AuditError::Unavailable | AuditError::Closed => 503,
            AuditError::BadRequest(_) => 400,
            AuditError::NotFound(_) => 404,
            AuditError::NotYetCheckpointed(_) => 409,
            AuditError::Database(_) | AuditError::Storage(_) => 503,
            _ => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases: Vec<(AuditError, u16)> = vec![
            (AuditError::Unavailable, 503),
            (AuditError::Closed, 503),
            (AuditError::BadRequest("x".into()), 400),
            (AuditError::NotFound("x".into()), 404),
            (AuditError::NotYetCheckpointed("x".into()), 409),
            (AuditError::Corrupt("x"), 500),
            (AuditError::Config("x".into()), 500),
        ];
        for (e, s) in cases {
            assert_eq!(e.status(), s, "{e}");
        }
    }
}
