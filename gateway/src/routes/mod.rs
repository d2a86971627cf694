//! HTTP handlers by area. Each handler declares the role it requires in its
//! signature (see [`crate::extract`]).

pub mod audit;
pub mod persons;
pub mod policy;
pub mod records;
