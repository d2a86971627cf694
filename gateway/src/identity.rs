//! Who is calling: the identity resolved once, at the TLS edge, from the
//! verified client certificate and the client registry.

use std::fmt;
use std::str::FromStr;

use adapters::domain::RegionCode;
use serde::{Deserialize, Deserializer, Serialize};

/// A department identifier such as `civil-affairs` or `health-insurance`:
/// lower-case ASCII letters, digits and hyphens, 2 to 64 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DepartmentId(String);

/// Why a string is not a department id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a department id is 2 to 64 lower-case letters, digits or hyphens, found {0:?}")]
pub struct DepartmentIdError(pub String);

impl DepartmentId {
    /// Parses a department id.
    pub fn parse(s: &str) -> Result<Self, DepartmentIdError> {
        let ok = (2..=64).contains(&s.len())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(DepartmentId(s.to_owned()))
        } else {
            Err(DepartmentIdError(s.chars().take(64).collect()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DepartmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DepartmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DepartmentId {
    type Err = DepartmentIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for DepartmentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DepartmentId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The three separated duties (三员分立). A client has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A departmental system: publishes and reads records.
    System,
    /// Manages policies, grants and client registrations; never reads records
    /// or the audit log.
    Admin,
    /// Reads and verifies the audit log; never reads records or changes
    /// configuration.
    Auditor,
}

impl Role {
    /// The lower-case name used in configuration, certificates and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => Ok(Role::System),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "unknown role {other:?}: expected system, admin or auditor"
            )),
        }
    }
}

/// The verified certificate a connection presented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerCertificate {
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Subject common name (the client system id).
    pub common_name: String,
}

/// The authenticated caller of one request, resolved at the TLS edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// The client system id (certificate CN, registry key).
    pub client_id: String,
    /// The department the client system belongs to.
    pub department: DepartmentId,
    /// Its one role.
    pub role: Role,
    /// The region the client may act for (441700: the whole city).
    pub region: RegionCode,
    /// The certificate it presented.
    pub certificate: PeerCertificate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn department_ids() {
        assert!(DepartmentId::parse("civil-affairs").is_ok());
        assert!(DepartmentId::parse("Civil").is_err());
        assert!(DepartmentId::parse("x").is_err());
        assert!(DepartmentId::parse("-x").is_err());
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::System, Role::Admin, Role::Auditor] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
