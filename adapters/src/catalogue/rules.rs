//! Domain checks beyond JSON Schema: per-kind value checks (ID numbers,
//! regions, money, dates) and per-dataset cross-field rules.
//!
//! Messages never repeat the offending value: it may be personal data.

use serde_json::Value;
use time::{Date, Month};

use crate::domain::{IdNumber, IdNumberError, RegionCode, RegionCodeError};

/// What a leaf check verifies, from the field's `x-kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckKind {
    IdNumber,
    Region { health_insurance_area: bool },
    Money,
    Date,
    BirthDate,
}

/// A plain-language reason an ID number was refused, without the number.
pub(crate) fn id_message(e: &IdNumberError) -> String {
    match e {
        IdNumberError::Length(_) => {
            "an ID number has 18 characters (or 15 for a legacy number)".into()
        }
        IdNumberError::NotDigits => "an ID number has digits in its first 17 places".into(),
        IdNumberError::BadCheckCharacter => {
            "the last character of an ID number is a digit or X".into()
        }
        IdNumberError::Checksum { .. } => {
            "the ID number's check character does not match (GB 11643)".into()
        }
        IdNumberError::BirthDate(_) => "the birth date in the ID number is not a real date".into(),
        IdNumberError::FutureBirthDate(_) => {
            "the birth date in the ID number lies in the future".into()
        }
        IdNumberError::AddressCode(_) => {
            "the address code of the ID number is not a GB/T 2260 code".into()
        }
    }
}

/// Checks a region code; health-insurance area codes only where allowed.
pub(crate) fn check_region(s: &str, health_insurance_area: bool) -> Result<RegionCode, String> {
    let code = RegionCode::parse(s).map_err(|e| match e {
        RegionCodeError::Shape(_) => "a region code has six digits (GB/T 2260)".to_owned(),
        RegionCodeError::Level(c) => {
            format!("{c} is not a province, city or county code (GB/T 2260)")
        }
    })?;
    if code.is_health_insurance_area() && !health_insurance_area {
        return Err(format!(
            "{code} is a health-insurance area code (医保区划), accepted only in the health-insurance dataset's insurance area"
        ));
    }
    Ok(code)
}

/// Whether a JSON number is non-negative yuan with at most two decimals.
pub(crate) fn check_money(v: &Value) -> Result<(), String> {
    let Some(n) = v.as_number() else {
        return Err("an amount is a number of yuan".into());
    };
    if n.is_u64() {
        return Ok(());
    }
    if n.is_i64() {
        return Err("an amount may not be negative".into());
    }
    let x = n.as_f64().unwrap_or(f64::NAN);
    if !x.is_finite() {
        return Err("an amount is a finite number of yuan".into());
    }
    if x < 0.0 {
        return Err("an amount may not be negative".into());
    }
    // The nearest double to k/100 is what parsing "k/100" produced, so this is
    // exact for every amount written with at most two decimals.
    if (x * 100.0).round() / 100.0 != x {
        return Err("an amount has at most two decimals (yuan and fen)".into());
    }
    Ok(())
}

/// Parses `YYYY-MM-DD` into a real calendar date between 1850 and 2199.
pub(crate) fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    if !(1850..2200).contains(&year) {
        return None;
    }
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()
}

/// Runs one leaf check; for ID numbers, normalises the value in place and
/// returns the parsed number.
pub(crate) fn check_leaf(
    kind: CheckKind,
    value: &mut Value,
    today: Date,
) -> Result<Option<IdNumber>, String> {
    match kind {
        CheckKind::Money => check_money(value).map(|()| None),
        CheckKind::IdNumber => {
            let Some(s) = value.as_str() else {
                return Err("an ID number is a string".into());
            };
            let id = IdNumber::parse_at(s, today).map_err(|e| id_message(&e))?;
            if id.as_str() != s {
                *value = Value::String(id.as_str().to_owned());
            }
            Ok(Some(id))
        }
        CheckKind::Region {
            health_insurance_area,
        } => {
            let Some(s) = value.as_str() else {
                return Err("a region code is a string".into());
            };
            check_region(s, health_insurance_area).map(|_| None)
        }
        CheckKind::Date | CheckKind::BirthDate => {
            let Some(s) = value.as_str() else {
                return Err("a date is a string YYYY-MM-DD".into());
            };
            let Some(d) = parse_date(s) else {
                return Err("not a real calendar date in the form YYYY-MM-DD".into());
            };
            if kind == CheckKind::BirthDate && d > today {
                return Err("a birth date may not lie in the future".into());
            }
            Ok(None)
        }
    }
}

/// A cross-field rule of one dataset. Field names are top-level properties.
#[derive(Debug)]
pub(crate) enum Rule {
    /// `later` may not precede `earlier` (both dates, when both present).
    DateOrder {
        earlier: &'static str,
        later: &'static str,
    },
    /// `to` lies at most `months` calendar months after `from`, optionally only
    /// when a code field has a given value.
    MonthsAtMost {
        from: &'static str,
        to: &'static str,
        months: u8,
        when: Option<(&'static str, &'static str)>,
        why: &'static str,
    },
    /// Integer `small` is at most integer `large`.
    IntAtMost {
        small: &'static str,
        large: &'static str,
    },
    /// The array's length is at most the integer field.
    LenAtMost {
        array: &'static str,
        max: &'static str,
    },
    /// At most one element of `array` has `field == value`.
    AtMostOne {
        array: &'static str,
        field: &'static str,
        value: &'static str,
        why: &'static str,
    },
    /// The sum of the money fields `parts` is at most `total` (to the fen).
    SumAtMost {
        parts: &'static [&'static str],
        total: &'static str,
    },
}

/// The cross-field rules of a dataset (empty for unknown datasets).
pub(crate) fn rules_for(dataset: &str) -> &'static [Rule] {
    match dataset {
        "assistance-enrolment" => &[
            Rule::DateOrder {
                earlier: "valid_from",
                later: "valid_to",
            },
            Rule::DateOrder {
                earlier: "approval_date",
                later: "valid_to",
            },
            Rule::DateOrder {
                earlier: "graduation_start_date",
                later: "graduation_end_date",
            },
            Rule::MonthsAtMost {
                from: "graduation_start_date",
                to: "graduation_end_date",
                months: 6,
                when: None,
                why: "the graduation period (渐退期) lasts at most 6 months",
            },
            Rule::MonthsAtMost {
                from: "valid_from",
                to: "valid_to",
                months: 12,
                when: Some(("category", "rigid_expenditure")),
                why: "a rigid-expenditure certification (刚性支出困难) lasts at most 12 months",
            },
            Rule::IntAtMost {
                small: "enrolled_persons",
                large: "household_size",
            },
            Rule::LenAtMost {
                array: "members",
                max: "household_size",
            },
            Rule::AtMostOne {
                array: "members",
                field: "relation",
                value: "02",
                why: "a household has one head (relation 02)",
            },
        ],
        "monitoring-object" => &[
            Rule::DateOrder {
                earlier: "identified_date",
                later: "risk_removed_date",
            },
            Rule::LenAtMost {
                array: "members",
                max: "household_size",
            },
            Rule::AtMostOne {
                array: "members",
                field: "relation",
                value: "02",
                why: "a household has one head (relation 02)",
            },
        ],
        "medical-settlement" => &[
            Rule::DateOrder {
                earlier: "admission_date",
                later: "discharge_date",
            },
            Rule::DateOrder {
                earlier: "admission_date",
                later: "settlement_date",
            },
            Rule::SumAtMost {
                parts: &[
                    "basic_insurance_paid",
                    "critical_illness_paid",
                    "medical_assistance_paid",
                    "personal_paid",
                ],
                total: "total_cost",
            },
        ],
        "housing-assistance" => &[
            Rule::DateOrder {
                earlier: "start_date",
                later: "end_date",
            },
            Rule::LenAtMost {
                array: "members",
                max: "household_size",
            },
            Rule::AtMostOne {
                array: "members",
                field: "relation",
                value: "02",
                why: "a household has one head (relation 02)",
            },
        ],
        _ => &[],
    }
}

fn date_field(record: &Value, name: &str) -> Option<Date> {
    record
        .get(name)
        .and_then(Value::as_str)
        .and_then(parse_date)
}

fn add_months(d: Date, months: u8) -> Date {
    let total = i32::from(u8::from(d.month())) - 1 + i32::from(months);
    let year = d.year() + total / 12;
    let month =
        Month::try_from(u8::try_from(total % 12 + 1).unwrap_or(1)).unwrap_or(Month::January);
    let mut day = d.day();
    loop {
        if let Ok(x) = Date::from_calendar_date(year, month, day) {
            return x;
        }
        day -= 1;
    }
}

fn pointer(name: &str) -> String {
    format!("/{name}")
}

/// Applies a rule, pushing `(pointer, message)` for each violation.
pub(crate) fn apply(rule: &Rule, record: &Value, out: &mut Vec<(String, String)>) {
    match rule {
        Rule::DateOrder { earlier, later } => {
            if let (Some(a), Some(b)) = (date_field(record, earlier), date_field(record, later))
                && b < a
            {
                out.push((pointer(later), format!("{later} may not precede {earlier}")));
            }
        }
        Rule::MonthsAtMost {
            from,
            to,
            months,
            when,
            why,
        } => {
            if let Some((field, value)) = when
                && record.get(*field).and_then(Value::as_str) != Some(*value)
            {
                return;
            }
            if let (Some(a), Some(b)) = (date_field(record, from), date_field(record, to))
                && b > add_months(a, *months)
            {
                out.push((
                    pointer(to),
                    format!("{why}: {to} is more than {months} months after {from}"),
                ));
            }
        }
        Rule::IntAtMost { small, large } => {
            if let (Some(a), Some(b)) = (
                record.get(*small).and_then(Value::as_i64),
                record.get(*large).and_then(Value::as_i64),
            ) && a > b
            {
                out.push((pointer(small), format!("{small} may not exceed {large}")));
            }
        }
        Rule::LenAtMost { array, max } => {
            if let (Some(a), Some(m)) = (
                record.get(*array).and_then(Value::as_array),
                record.get(*max).and_then(Value::as_u64),
            ) && a.len() as u64 > m
            {
                out.push((
                    pointer(array),
                    format!("{array} lists more persons than {max}"),
                ));
            }
        }
        Rule::AtMostOne {
            array,
            field,
            value,
            why,
        } => {
            if let Some(a) = record.get(*array).and_then(Value::as_array) {
                let mut seen = false;
                for (i, m) in a.iter().enumerate() {
                    if m.get(*field).and_then(Value::as_str) == Some(*value) {
                        if seen {
                            out.push((format!("/{array}/{i}/{field}"), (*why).to_owned()));
                        }
                        seen = true;
                    }
                }
            }
        }
        Rule::SumAtMost { parts, total } => {
            let Some(t) = record.get(*total).and_then(Value::as_f64) else {
                return;
            };
            let sum: f64 = parts
                .iter()
                .filter_map(|p| record.get(*p).and_then(Value::as_f64))
                .sum();
            if sum > t + 0.005 {
                out.push((
                    pointer(total),
                    format!("{} together exceed {total}", parts.join(" + ")),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::date;

    #[test]
    fn money_has_at_most_two_decimals() {
        for ok in [
            json!(0),
            json!(560),
            json!(0.29),
            json!(1234.56),
            json!(99999999.99),
            json!(0.1),
        ] {
            assert!(check_money(&ok).is_ok(), "{ok}");
        }
        for bad in [
            json!(-1),
            json!(-0.5),
            json!(0.295),
            json!(1.001),
            json!("5"),
            json!(null),
        ] {
            assert!(check_money(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_must_exist() {
        assert_eq!(parse_date("2024-02-29"), Some(date!(2024 - 02 - 29)));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "20240101",
            "1700-01-01",
            "２024-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn months_are_added_calendar_wise() {
        assert_eq!(add_months(date!(2025 - 08 - 31), 6), date!(2026 - 02 - 28));
        assert_eq!(add_months(date!(2025 - 01 - 15), 12), date!(2026 - 01 - 15));
    }
}
