//! Domain vocabulary shared by every department: parse, don't validate.

mod id_number;
mod region;

pub use id_number::{IdNumber, IdNumberError};
pub use region::{HEALTH_INSURANCE_AREAS, KNOWN_REGIONS, RegionCode, RegionCodeError};
