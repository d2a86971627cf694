//! Field-level sharing policies: files, compiled plans, decisions.
