//! The audit log: every access recorded durably before the response leaves,
//! hash-chained and Merkle-checkpointed.
