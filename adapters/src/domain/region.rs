//! Administrative division codes (行政区划代码) per GB/T 2260.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A six-digit GB/T 2260 region code such as `441700` (阳江市) or `441721` (阳西县).
///
/// Codes are hierarchical: `44` province, `4417` prefecture (city), `441721`
/// county. A scope code contains every code that shares its non-zero prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode([u8; 6]);

/// Why a string is not a region code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    #[error("a region code has six digits, found {0:?}")]
    Shape(String),
    #[error("{0} is not a province, city or county code")]
    Level(String),
}

/// Yangjiang's divisions and the health-insurance area codes, with names. Codes
/// outside this table are still accepted if well formed: the table only names.
pub const KNOWN_REGIONS: &[(&str, &str)] = &[
    ("440000", "广东省"),
    ("441700", "阳江市"),
    ("441702", "江城区"),
    ("441704", "阳东区"),
    ("441721", "阳西县"),
    ("441723", "阳东县（已撤销）"),
    ("441781", "阳春市"),
    ("441742", "海陵试验区（医保区划）"),
    ("441743", "高新区（医保区划）"),
    ("441799", "市本级（医保区划）"),
];

/// Area codes used only by the health-insurance department's own systems.
pub const HEALTH_INSURANCE_AREAS: &[&str] = &["441742", "441743", "441799"];

impl RegionCode {
    /// Parses a six-digit code. The province part may not be `00`.
    pub fn parse(s: &str) -> Result<Self, RegionCodeError> {
        let s = s.trim();
        let b = s.as_bytes();
        if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
            return Err(RegionCodeError::Shape(s.chars().take(12).collect()));
        }
        if &b[..2] == b"00" || (&b[2..4] == b"00" && &b[4..] != b"00") {
            return Err(RegionCodeError::Level(s.to_owned()));
        }
        let mut a = [0u8; 6];
        a.copy_from_slice(b);
        Ok(RegionCode(a))
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Always ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or("000000")
    }

    /// Whether this code is a health-insurance area code (医保区划) rather than
    /// a GB/T 2260 division.
    pub fn is_health_insurance_area(&self) -> bool {
        HEALTH_INSURANCE_AREAS.contains(&self.as_str())
    }

    /// The significant prefix: `44` for a province, `4417` for a city, all six
    /// digits for a county.
    fn prefix(&self) -> &[u8] {
        if &self.0[2..] == b"0000" {
            &self.0[..2]
        } else if &self.0[4..] == b"00" {
            &self.0[..4]
        } else {
            &self.0
        }
    }

    /// Whether `other` lies inside this region (a region contains itself).
    pub fn contains(&self, other: &RegionCode) -> bool {
        other.0.starts_with(self.prefix())
    }

    /// The human name, where known.
    pub fn name(&self) -> Option<&'static str> {
        KNOWN_REGIONS
            .iter()
            .find(|(c, _)| *c == self.as_str())
            .map(|(_, n)| *n)
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.as_str())
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RegionCode {
    type Err = RegionCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for RegionCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RegionCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RegionCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionCode {
        RegionCode::parse(s).unwrap()
    }

    #[test]
    fn containment_follows_the_hierarchy() {
        assert!(r("441700").contains(&r("441721")));
        assert!(r("441700").contains(&r("441700")));
        assert!(r("440000").contains(&r("441781")));
        assert!(!r("441721").contains(&r("441700")));
        assert!(!r("441721").contains(&r("441781")));
        assert!(r("441700").contains(&r("441742")));
    }

    #[test]
    fn malformed_codes_are_rejected() {
        for s in ["", "44170", "4417000", "44a700", "000000", "440012"] {
            assert!(RegionCode::parse(s).is_err(), "{s}");
        }
    }
}
