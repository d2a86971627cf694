//! Citizen identity numbers (公民身份号码) per GB 11643-1999.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, Month, OffsetDateTime};

/// Why a string is not a valid citizen ID number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("an ID number has 18 characters (or 15 for a legacy number), found {0}")]
    Length(usize),
    #[error("an ID number has digits in its first 17 places (and the 15 of a legacy number)")]
    NotDigits,
    #[error("the last character of an ID number is a digit or X")]
    BadCheckCharacter,
    #[error("the check character does not match: expected {expected}")]
    Checksum { expected: char },
    #[error("the birth date {0} in the ID number is not a real date")]
    BirthDate(String),
    #[error("the birth date {0} in the ID number lies in the future")]
    FutureBirthDate(String),
    #[error("the address code {0} in the ID number is not a GB/T 2260 code")]
    AddressCode(String),
}

/// A valid 18-character citizen ID number, normalised (upper-case `X`).
///
/// Parsing checks the GB 11643 check character, a real and non-future birth date
/// and the shape of the address code. Retired address codes are accepted: the
/// code is fixed when the number is issued (阳东县 441723 became 阳东区 441704).
/// 15-digit legacy numbers are converted by inserting the century `19` and
/// appending the check character.
///
/// `Debug` never prints the number: ID numbers are personal data and must not
/// reach logs or traces by accident.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber(String);

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// The GB 11643 check character of the first 17 digits.
fn check_character(first17: &[u8]) -> char {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK_CHARS[(sum % 11) as usize] as char
}

impl IdNumber {
    /// Parses and normalises an ID number, checking it against today's date.
    pub fn parse(s: &str) -> Result<Self, IdNumberError> {
        Self::parse_at(s, OffsetDateTime::now_utc().date())
    }

    /// Parses with an explicit "today", for deterministic tests.
    pub fn parse_at(s: &str, today: Date) -> Result<Self, IdNumberError> {
        let s = s.trim();
        let bytes = s.as_bytes();
        let mut id = match bytes.len() {
            18 => {
                if !bytes[..17].iter().all(u8::is_ascii_digit) {
                    return Err(IdNumberError::NotDigits);
                }
                let last = bytes[17].to_ascii_uppercase();
                if !(last.is_ascii_digit() || last == b'X') {
                    return Err(IdNumberError::BadCheckCharacter);
                }
                let expected = check_character(&bytes[..17]);
                if last as char != expected {
                    return Err(IdNumberError::Checksum { expected });
                }
                let mut v = s[..17].to_owned();
                v.push(expected);
                v
            }
            15 => {
                if !bytes.iter().all(u8::is_ascii_digit) {
                    return Err(IdNumberError::NotDigits);
                }
                let mut v = String::with_capacity(18);
                v.push_str(&s[..6]);
                v.push_str("19");
                v.push_str(&s[6..]);
                let check = check_character(v.as_bytes());
                v.push(check);
                v
            }
            n => return Err(IdNumberError::Length(s.chars().count().max(n.min(1)))),
        };
        id.shrink_to_fit();
        let this = IdNumber(id);
        let birth = this.birth_date_raw()?;
        if birth > today {
            return Err(IdNumberError::FutureBirthDate(this.0[6..14].to_owned()));
        }
        let area = &this.0[..6];
        if &area[..2] == "00" || &area[2..] == "0000" && &area[..2] < "11" {
            return Err(IdNumberError::AddressCode(area.to_owned()));
        }
        Ok(this)
    }

    fn birth_date_raw(&self) -> Result<Date, IdNumberError> {
        let s = &self.0[6..14];
        let bad = || IdNumberError::BirthDate(s.to_owned());
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u8 = s[4..6].parse().map_err(|_| bad())?;
        let day: u8 = s[6..8].parse().map_err(|_| bad())?;
        if year < 1850 {
            return Err(bad());
        }
        let month = Month::try_from(month).map_err(|_| bad())?;
        Date::from_calendar_date(year, month, day).map_err(|_| bad())
    }

    /// The normalised 18-character number.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The six-digit address code fixed at issue (possibly retired).
    pub fn address_code(&self) -> &str {
        &self.0[..6]
    }

    /// The birth date encoded in the number.
    pub fn birth_date(&self) -> Date {
        // Checked at parse time.
        self.birth_date_raw().unwrap_or(Date::MIN)
    }

    /// GB/T 2261.1 sex code derived from the sequence digit: 1 male, 2 female.
    pub fn sex_code(&self) -> u8 {
        if (self.0.as_bytes()[16] - b'0') % 2 == 1 {
            1
        } else {
            2
        }
    }

    /// Builds a valid number from address code, birth date and sequence
    /// (0..=999), computing the check character. Used by the synthetic data
    /// generator and tests.
    pub fn from_parts(address: &str, birth: Date, sequence: u16) -> Result<Self, IdNumberError> {
        let mut v = format!(
            "{address}{:04}{:02}{:02}{:03}",
            birth.year(),
            u8::from(birth.month()),
            birth.day(),
            sequence % 1000
        );
        if v.len() != 17 {
            return Err(IdNumberError::Length(v.len() + 1));
        }
        let check = check_character(v.as_bytes());
        v.push(check);
        Self::parse(&v)
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdNumber(<redacted>)")
    }
}

impl Serialize for IdNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IdNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 28);

    #[test]
    fn standard_test_vectors() {
        assert!(IdNumber::parse_at("11010519491231002X", TODAY).is_ok());
        assert!(IdNumber::parse_at("441702198001010017", TODAY).is_ok());
    }

    #[test]
    fn lowercase_x_is_normalised() {
        let id = IdNumber::parse_at("11010519491231002x", TODAY).unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
    }

    #[test]
    fn wrong_check_character_names_the_expected_one() {
        assert_eq!(
            IdNumber::parse_at("441702198001010018", TODAY),
            Err(IdNumberError::Checksum { expected: '7' })
        );
    }

    #[test]
    fn impossible_and_future_birth_dates_are_rejected() {
        let feb30 = IdNumber::from_parts("441702", date!(2000 - 02 - 28), 1).unwrap();
        let s = feb30.as_str().replace("20000228", "20000230");
        let fixed = format!("{}{}", &s[..17], check_character(&s.as_bytes()[..17]));
        assert!(matches!(
            IdNumber::parse_at(&fixed, TODAY),
            Err(IdNumberError::BirthDate(_))
        ));
        let future = "44170220300101001".to_owned();
        let future = format!("{future}{}", check_character(future.as_bytes()));
        assert!(matches!(
            IdNumber::parse_at(&future, TODAY),
            Err(IdNumberError::FutureBirthDate(_))
        ));
    }

    #[test]
    fn retired_area_codes_are_accepted() {
        let id = IdNumber::from_parts("441723", date!(1970 - 05 - 01), 123).unwrap();
        assert_eq!(id.address_code(), "441723");
    }

    #[test]
    fn legacy_fifteen_digit_numbers_convert() {
        // 441702800101001 -> 44170219800101001 + check
        let id = IdNumber::parse_at("441702800101001", TODAY).unwrap();
        assert_eq!(id.as_str(), "441702198001010017");
    }

    #[test]
    fn debug_never_prints_the_number() {
        let id = IdNumber::parse_at("441702198001010017", TODAY).unwrap();
        assert!(!format!("{id:?}").contains("0017"));
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "x",
            "4417021980010100一7",
            "44170219800101001７",
            "123456789012345678901",
        ] {
            assert!(IdNumber::parse_at(s, TODAY).is_err(), "{s}");
        }
    }
}
