//! The record store: canonical records, versioned, per dataset.
