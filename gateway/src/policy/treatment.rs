//! Per-field treatments: clear, mask, pseudonym, generalise, drop; and the
//! functions that perform them on one JSON value.
//!
//! Masks follow the usual Chinese government habits (no national rule fixes
//! them): ID number first 6 + last 4, mobile 3 + 4, name keeps the surname,
//! bank card last 4, address cut to the district. Every function works on
//! characters, never byte offsets, and fails closed: a value it cannot
//! interpret becomes fully masked (or an evaluation error), never clear.

use std::fmt;

use aws_lc_rs::hmac;
use serde_json::Value;
use time::Date;

use super::catalog::FieldKind;

/// What happens to one field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Treatment {
    /// Passed through unchanged.
    Clear,
    /// Partially hidden, pattern by kind.
    Mask(MaskKind),
    /// Replaced by a keyed HMAC-SHA256, stable per consumer department.
    Pseudonym,
    /// Coarsened: year, age band, amount band.
    Generalise(Generalisation),
    /// Removed.
    Drop,
}

/// The mask patterns (`mask:<name>` in policy files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// `441702********0017`.
    IdNumber,
    /// `138****1234`.
    Mobile,
    /// `张*`.
    Name,
    /// `****1234`.
    BankCard,
    /// `广东省阳江市江城区`.
    Address,
}

/// The generalisations (`generalise:<name>` in policy files).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Generalisation {
    /// A date to its year: `1980`.
    Year,
    /// A birth date to a ten-year age band at the request date: `40-49`.
    AgeBand,
    /// An amount to a band `[lo, hi)`, written `500-1000`, top band `100000+`.
    /// Bounds in whole units, strictly increasing.
    Band(Vec<i64>),
    /// A region code to its city (`441702` → `441700`).
    City,
}

/// Default amount bands (元): fine enough for a notice or a means check,
/// coarse enough not to identify anyone.
pub const DEFAULT_BANDS: &[i64] = &[0, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000];

impl Treatment {
    /// Restrictiveness rank: drop > pseudonym > generalise > mask > clear.
    ///
    /// Why this order: `drop` reveals nothing. A pseudonym reveals no content
    /// of the value at all, only equality between records of the same
    /// consumer (and only to a holder of the derived key). A generalisation
    /// reveals a few bits of every value (a year, a band). A mask keeps
    /// literal characters of the original (region and sequence digits of an
    /// ID, the surname, the district). Clear reveals all.
    pub fn rank(&self) -> u8 {
        match self {
            Treatment::Clear => 0,
            Treatment::Mask(_) => 1,
            Treatment::Generalise(_) => 2,
            Treatment::Pseudonym => 3,
            Treatment::Drop => 4,
        }
    }

    /// The more restrictive of two treatments. Two different variants of the
    /// same rank (two masks, two generalisations) cannot be ordered, so they
    /// resolve to the coarser where known (age band over year) and to `drop`
    /// otherwise.
    pub fn most_restrictive(a: &Treatment, b: &Treatment) -> Treatment {
        if a == b {
            return a.clone();
        }
        match a.rank().cmp(&b.rank()) {
            std::cmp::Ordering::Greater => a.clone(),
            std::cmp::Ordering::Less => b.clone(),
            std::cmp::Ordering::Equal => match (a, b) {
                (
                    Treatment::Generalise(Generalisation::AgeBand),
                    Treatment::Generalise(Generalisation::Year),
                )
                | (
                    Treatment::Generalise(Generalisation::Year),
                    Treatment::Generalise(Generalisation::AgeBand),
                ) => Treatment::Generalise(Generalisation::AgeBand),
                _ => Treatment::Drop,
            },
        }
    }

    /// Parses the policy-file spelling and checks it fits a field of `kind`.
    /// `mask` and `generalise` without a name pick the pattern by kind.
    pub fn parse(s: &str, kind: FieldKind) -> Result<Treatment, String> {
        let (head, arg) = match s.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (s, None),
        };
        match (head, arg) {
            ("clear", None) => Ok(Treatment::Clear),
            ("drop", None) => Ok(Treatment::Drop),
            ("pseudonym", None) => {
                if kind.is_container() {
                    Err("pseudonym applies to leaf fields, not objects or arrays".into())
                } else {
                    Ok(Treatment::Pseudonym)
                }
            }
            ("mask", arg) => {
                let m = match arg {
                    None => MaskKind::for_kind(kind).ok_or_else(|| {
                        format!("no mask for a field of kind {kind}; name one (mask:id-number, …) or use another treatment")
                    })?,
                    Some(a) => MaskKind::parse(a).ok_or_else(|| {
                        format!("unknown mask {a:?}: expected id-number, mobile, name, bank-card or address")
                    })?,
                };
                if MaskKind::for_kind(kind) == Some(m) || kind == FieldKind::Text {
                    Ok(Treatment::Mask(m))
                } else {
                    Err(format!(
                        "mask {} does not fit a field of kind {kind}",
                        m.as_str()
                    ))
                }
            }
            ("generalise", arg) => {
                let g = match arg {
                    None => match kind {
                        FieldKind::BirthDate | FieldKind::Date => Generalisation::Year,
                        FieldKind::Money | FieldKind::Integer | FieldKind::Number => {
                            Generalisation::Band(DEFAULT_BANDS.to_vec())
                        }
                        FieldKind::Region => Generalisation::City,
                        _ => return Err(format!("no generalisation for a field of kind {kind}")),
                    },
                    Some("year") => Generalisation::Year,
                    Some("age-band") => Generalisation::AgeBand,
                    Some("city") => Generalisation::City,
                    Some("band") => Generalisation::Band(DEFAULT_BANDS.to_vec()),
                    Some(a) if a.starts_with("band:") => {
                        Generalisation::Band(parse_bands(&a[5..])?)
                    }
                    Some(a) => {
                        return Err(format!(
                            "unknown generalisation {a:?}: expected year, age-band, band, band:<b1>,<b2>,… or city"
                        ));
                    }
                };
                let fits = match &g {
                    Generalisation::Year | Generalisation::AgeBand => {
                        matches!(kind, FieldKind::BirthDate | FieldKind::Date)
                    }
                    Generalisation::Band(_) => {
                        matches!(
                            kind,
                            FieldKind::Money | FieldKind::Integer | FieldKind::Number
                        )
                    }
                    Generalisation::City => kind == FieldKind::Region,
                };
                if fits {
                    Ok(Treatment::Generalise(g))
                } else {
                    Err(format!(
                        "generalisation {} does not fit a field of kind {kind}",
                        g.name()
                    ))
                }
            }
            _ => Err(format!(
                "unknown treatment {s:?}: expected clear, mask[:<mask>], pseudonym, generalise[:<how>] or drop"
            )),
        }
    }
}

fn parse_bands(s: &str) -> Result<Vec<i64>, String> {
    let bands: Vec<i64> = s
        .split(',')
        .map(|b| b.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("band bounds must be integers, found {s:?}"))?;
    if bands.is_empty() || bands.len() > 64 || bands.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "band bounds must be 1 to 64 strictly increasing integers, found {s:?}"
        ));
    }
    Ok(bands)
}

impl fmt::Display for Treatment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Treatment::Clear => f.write_str("clear"),
            Treatment::Mask(m) => write!(f, "mask:{}", m.as_str()),
            Treatment::Pseudonym => f.write_str("pseudonym"),
            Treatment::Generalise(g) => write!(f, "generalise:{}", g.name()),
            Treatment::Drop => f.write_str("drop"),
        }
    }
}

impl serde::Serialize for Treatment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Generalisation {
    fn name(&self) -> String {
        match self {
            Generalisation::Year => "year".into(),
            Generalisation::AgeBand => "age-band".into(),
            Generalisation::City => "city".into(),
            Generalisation::Band(b) if b.as_slice() == DEFAULT_BANDS => "band".into(),
            Generalisation::Band(b) => {
                let parts: Vec<String> = b.iter().map(i64::to_string).collect();
                format!("band:{}", parts.join(","))
            }
        }
    }
}

impl MaskKind {
    /// The mask that belongs to a field kind, if any.
    pub fn for_kind(kind: FieldKind) -> Option<MaskKind> {
        match kind {
            FieldKind::IdNumber => Some(MaskKind::IdNumber),
            FieldKind::Mobile => Some(MaskKind::Mobile),
            FieldKind::Name => Some(MaskKind::Name),
            FieldKind::BankCard => Some(MaskKind::BankCard),
            FieldKind::Address => Some(MaskKind::Address),
            _ => None,
        }
    }

    /// Parses a mask name.
    pub fn parse(s: &str) -> Option<MaskKind> {
        match s {
            "id-number" => Some(MaskKind::IdNumber),
            "mobile" => Some(MaskKind::Mobile),
            "name" => Some(MaskKind::Name),
            "bank-card" => Some(MaskKind::BankCard),
            "address" => Some(MaskKind::Address),
            _ => None,
        }
    }

    /// The policy-file name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::IdNumber => "id-number",
            MaskKind::Mobile => "mobile",
            MaskKind::Name => "name",
            MaskKind::BankCard => "bank-card",
            MaskKind::Address => "address",
        }
    }

    /// Applies the mask to a string.
    pub fn apply(self, s: &str) -> String {
        match self {
            MaskKind::IdNumber => keep_ends(s, 6, 4),
            MaskKind::Mobile => keep_ends(s, 3, 4),
            MaskKind::Name => mask_name(s),
            MaskKind::BankCard => mask_bank_card(s),
            MaskKind::Address => mask_address(s),
        }
    }
}

/// Keeps `head` leading and `tail` trailing characters, stars in between (one
/// per hidden character). Too short to hide anything: all stars.
pub fn keep_ends(s: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = s.trim().chars().collect();
    let n = chars.len();
    if n < head + tail + 1 {
        return "*".repeat(n.max(1));
    }
    let mut out = String::with_capacity(n);
    out.extend(&chars[..head]);
    out.extend(std::iter::repeat_n('*', n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// Two-character surnames (复姓) common enough to matter.
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "澹台", "轩辕", "端木", "独孤", "南宫", "西门", "呼延", "申屠", "闻人", "万俟",
];

/// Keeps the surname and replaces the given name with a single `*`, so the
/// length of the given name is not revealed either: `张三` → `张*`,
/// `欧阳修` → `欧阳*`. A name of one character becomes `*`.
pub fn mask_name(s: &str) -> String {
    let s = s.trim();
    let n = s.chars().count();
    if n <= 1 {
        return "*".into();
    }
    let surname_len = if n > 2 && COMPOUND_SURNAMES.iter().any(|c| s.starts_with(c)) {
        2
    } else {
        1
    };
    let mut out: String = s.chars().take(surname_len).collect();
    out.push('*');
    out
}

/// `****` and the last four characters; the length is not revealed.
pub fn mask_bank_card(s: &str) -> String {
    let chars: Vec<char> = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if chars.len() < 8 {
        return "****".into();
    }
    let mut out = String::from("****");
    out.extend(&chars[chars.len() - 4..]);
    out
}

/// Cuts a Chinese address after its county-level division (区, 县, 旗, or a
/// county-level 市 following a city). Without a recognisable division the
/// whole address is hidden.
pub fn mask_address(s: &str) -> String {
    let s = s.trim();
    let mut end = None;
    let mut cities = 0;
    let mut last_city = None;
    for (i, c) in s.char_indices() {
        let after = i + c.len_utf8();
        match c {
            // 自治区 is a province, not a district.
            '区' if !s[..i].ends_with("自治") => {
                end = Some(after);
                break;
            }
            '县' | '旗' => {
                end = Some(after);
                break;
            }
            '市' => {
                cities += 1;
                last_city = Some(after);
                if cities == 2 {
                    end = Some(after);
                    break;
                }
            }
            _ => {}
        }
    }
    // 阳春市春城街道…: a lone 市 is at least the city level; cut there.
    match end.or(last_city) {
        Some(e) => s[..e].to_owned(),
        None => "***".into(),
    }
}

/// Ten-year age band at `today` for a birth date: `0-9`, …, `80+`.
pub fn age_band(birth: Date, today: Date) -> Option<String> {
    if birth > today {
        return None;
    }
    let mut age = today.year() - birth.year();
    if (today.month() as u8, today.day()) < (birth.month() as u8, birth.day()) {
        age -= 1;
    }
    let lo = (age / 10) * 10;
    Some(if lo >= 80 {
        "80+".into()
    } else {
        format!("{lo}-{}", lo + 9)
    })
}

/// The band an amount falls in: `500-1000` for `[500, 1000)`, `<0` below
/// the first bound, `100000+` at or above the last.
pub fn band(amount: f64, bounds: &[i64]) -> String {
    let Some(first) = bounds.first() else {
        return "*".into();
    };
    if amount < *first as f64 {
        return format!("<{first}");
    }
    for w in bounds.windows(2) {
        if amount < w[1] as f64 {
            return format!("{}-{}", w[0], w[1]);
        }
    }
    format!("{}+", bounds[bounds.len() - 1])
}

/// The master key for pseudonyms, from configuration (at least 32 bytes).
/// Each consumer department gets its own key derived from it, so pseudonyms
/// are stable for one department (its records still join) and differ
/// between departments (they cannot join each other's).
#[derive(Clone)]
pub struct PseudonymKey(hmac::Key);

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

impl PseudonymKey {
    /// A key from configured secret bytes; refuses fewer than 32.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the pseudonym key needs at least 32 bytes".into());
        }
        Ok(PseudonymKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// A random key (tests, demos: pseudonyms change on every start).
    pub fn generate() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Generation from the system RNG only fails if the OS RNG is gone,
        // in which case nothing can run safely anyway.
        #[allow(clippy::expect_used)]
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random generator");
        PseudonymKey(key)
    }

    /// The key of one consumer department.
    pub fn for_department(&self, department: &str) -> DepartmentKey {
        let mut msg = b"gateway-pseudonym-v1\0".to_vec();
        msg.extend_from_slice(department.as_bytes());
        let tag = hmac::sign(&self.0, &msg);
        DepartmentKey(hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()))
    }
}

/// A consumer department's derived pseudonym key.
#[derive(Clone)]
pub struct DepartmentKey(hmac::Key);

impl fmt::Debug for DepartmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DepartmentKey(<redacted>)")
    }
}

impl DepartmentKey {
    /// `p_` and 32 hex digits (128 bits) of HMAC-SHA256 over the value's
    /// text; ID numbers are upper-cased first so `x` and `X` agree.
    pub fn pseudonym(&self, kind: FieldKind, text: &str) -> String {
        let tag = if kind == FieldKind::IdNumber {
            hmac::sign(&self.0, text.trim().to_ascii_uppercase().as_bytes())
        } else {
            hmac::sign(&self.0, text.as_bytes())
        };
        let mut out = String::with_capacity(34);
        out.push_str("p_");
        out.push_str(&hex::encode(&tag.as_ref()[..16]));
        out
    }
}

/// Why a value could not be treated; the row is then withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreatError {
    /// A leaf held an object or array.
    #[error("expected a scalar value")]
    NotScalar,
    /// A date could not be read.
    #[error("expected a date (YYYY-MM-DD)")]
    BadDate,
    /// An amount could not be read.
    #[error("expected a number")]
    BadNumber,
    /// A region code could not be read.
    #[error("expected a region code")]
    BadRegion,
}

/// Context for treating values: the request date and the consumer's key.
pub struct TreatCtx<'a> {
    /// For age bands.
    pub today: Date,
    /// For pseudonyms.
    pub key: &'a DepartmentKey,
}

/// Applies `t` to one leaf value. `Drop` is handled by the caller (the field
/// is absent); here it yields `Null` defensively.
pub fn treat(
    t: &Treatment,
    kind: FieldKind,
    v: &Value,
    ctx: &TreatCtx<'_>,
) -> Result<Value, TreatError> {
    if v.is_object() || v.is_array() {
        return Err(TreatError::NotScalar);
    }
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match t {
        Treatment::Clear => v.clone(),
        Treatment::Drop => Value::Null,
        Treatment::Mask(m) => Value::String(m.apply(&scalar_text(v))),
        Treatment::Pseudonym => Value::String(ctx.key.pseudonym(kind, &scalar_text(v))),
        Treatment::Generalise(g) => match g {
            Generalisation::Year => {
                let d = parse_date(v).ok_or(TreatError::BadDate)?;
                Value::String(d.year().to_string())
            }
            Generalisation::AgeBand => {
                let d = parse_date(v).ok_or(TreatError::BadDate)?;
                Value::String(age_band(d, ctx.today).ok_or(TreatError::BadDate)?)
            }
            Generalisation::Band(b) => {
                let x = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                    _ => None,
                }
                .ok_or(TreatError::BadNumber)?;
                Value::String(band(x, b))
            }
            Generalisation::City => {
                let s = v.as_str().ok_or(TreatError::BadRegion)?;
                let r =
                    adapters::domain::RegionCode::parse(s).map_err(|_| TreatError::BadRegion)?;
                let city = &r.as_str()[..4];
                Value::String(format!("{city}00"))
            }
        },
    })
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `YYYY-MM-DD` (or the date part of an RFC 3339 timestamp), or an
/// 8-digit `YYYYMMDD`.
pub fn parse_date(v: &Value) -> Option<Date> {
    let s = v.as_str()?.trim();
    let (y, m, d) = if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
        (s.get(0..4)?, s.get(5..7)?, s.get(8..10)?)
    } else if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        (&s[0..4], &s[4..6], &s[6..8])
    } else {
        return None;
    };
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::date;

    #[test]
    fn id_number_mask() {
        assert_eq!(
            MaskKind::IdNumber.apply("441702198001010017"),
            "441702********0017"
        );
        assert_eq!(
            MaskKind::IdNumber.apply("11010519491231002X"),
            "110105********002X"
        );
        // 15-digit legacy numbers: same shape.
        assert_eq!(
            MaskKind::IdNumber.apply("441702800101001"),
            "441702*****1001"
        );
        assert_eq!(MaskKind::IdNumber.apply("12345"), "*****");
        assert_eq!(MaskKind::IdNumber.apply(""), "*");
    }

    #[test]
    fn mobile_mask() {
        assert_eq!(MaskKind::Mobile.apply("13812341234"), "138****1234");
        assert_eq!(MaskKind::Mobile.apply("1381234"), "*******");
    }

    #[test]
    fn name_mask() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("张小三"), "张*");
        assert_eq!(mask_name("欧阳修"), "欧阳*");
        assert_eq!(mask_name("欧阳"), "欧*");
        assert_eq!(mask_name("王"), "*");
        assert_eq!(mask_name("买买提·艾力"), "买*");
        assert_eq!(mask_name(""), "*");
    }

    #[test]
    fn bank_card_mask() {
        assert_eq!(mask_bank_card("6222 0212 3456 7890"), "****7890");
        assert_eq!(mask_bank_card("6222021234567890123"), "****0123");
        assert_eq!(mask_bank_card("1234"), "****");
    }

    #[test]
    fn address_mask() {
        assert_eq!(
            mask_address("广东省阳江市江城区东风一路12号"),
            "广东省阳江市江城区"
        );
        assert_eq!(mask_address("阳江市阳西县织篢镇某村"), "阳江市阳西县");
        assert_eq!(
            mask_address("广东省阳江市阳春市春城街道1号"),
            "广东省阳江市阳春市"
        );
        assert_eq!(mask_address("阳春市春城街道1号"), "阳春市");
        assert_eq!(
            mask_address("广西壮族自治区南宁市青秀区民族大道1号"),
            "广西壮族自治区南宁市青秀区"
        );
        assert_eq!(mask_address("东风一路12号"), "***");
    }

    #[test]
    fn generalisations() {
        let today = date!(2026 - 11 - 28);
        assert_eq!(
            age_band(date!(1980 - 01 - 01), today).as_deref(),
            Some("40-49")
        );
        assert_eq!(
            age_band(date!(1986 - 11 - 29), today).as_deref(),
            Some("30-39")
        );
        assert_eq!(
            age_band(date!(1930 - 01 - 01), today).as_deref(),
            Some("80+")
        );
        assert_eq!(age_band(date!(2027 - 01 - 01), today), None);
        assert_eq!(band(750.0, DEFAULT_BANDS), "500-1000");
        assert_eq!(band(0.0, DEFAULT_BANDS), "0-500");
        assert_eq!(band(-1.0, DEFAULT_BANDS), "<0");
        assert_eq!(band(250_000.0, DEFAULT_BANDS), "100000+");
        let key = PseudonymKey::generate().for_department("education");
        let ctx = TreatCtx { today, key: &key };
        let g =
            |t: &str, k, v: Value| treat(&Treatment::parse(t, k).expect("treatment"), k, &v, &ctx);
        assert_eq!(
            g("generalise", FieldKind::BirthDate, json!("1980-05-06")),
            Ok(json!("1980"))
        );
        assert_eq!(
            g(
                "generalise:age-band",
                FieldKind::BirthDate,
                json!("19800506")
            ),
            Ok(json!("40-49"))
        );
        assert_eq!(
            g("generalise", FieldKind::Money, json!("1234.50")),
            Ok(json!("1000-2000"))
        );
        assert_eq!(
            g("generalise:band:0,300,600", FieldKind::Money, json!(450)),
            Ok(json!("300-600"))
        );
        assert_eq!(
            g("generalise", FieldKind::Region, json!("441702")),
            Ok(json!("441700"))
        );
        assert_eq!(
            g("generalise", FieldKind::Money, json!("abc")),
            Err(TreatError::BadNumber)
        );
        assert_eq!(
            g("generalise", FieldKind::BirthDate, json!("1980-13-01")),
            Err(TreatError::BadDate)
        );
        assert_eq!(
            g("clear", FieldKind::Text, json!({"a": 1})),
            Err(TreatError::NotScalar)
        );
        assert_eq!(g("mask", FieldKind::Name, Value::Null), Ok(Value::Null));
    }

    #[test]
    fn parse_checks_kinds() {
        assert!(Treatment::parse("mask", FieldKind::Boolean).is_err());
        assert!(Treatment::parse("mask:mobile", FieldKind::Name).is_err());
        assert_eq!(
            Treatment::parse("mask:mobile", FieldKind::Text),
            Ok(Treatment::Mask(MaskKind::Mobile))
        );
        assert!(Treatment::parse("mask:retina", FieldKind::Text).is_err());
        assert!(Treatment::parse("generalise:year", FieldKind::Money).is_err());
        assert!(Treatment::parse("generalise:band:5,1", FieldKind::Money).is_err());
        assert!(Treatment::parse("pseudonym", FieldKind::Object).is_err());
        assert!(Treatment::parse("blur", FieldKind::Text).is_err());
        for s in [
            "clear",
            "drop",
            "pseudonym",
            "mask:name",
            "generalise:age-band",
            "generalise:band:0,10",
        ] {
            let k = match s {
                "mask:name" => FieldKind::Name,
                "generalise:age-band" => FieldKind::BirthDate,
                "generalise:band:0,10" => FieldKind::Money,
                _ => FieldKind::Text,
            };
            assert_eq!(
                Treatment::parse(s, k).map(|t| t.to_string()).as_deref(),
                Ok(s)
            );
        }
    }

    #[test]
    fn most_restrictive_order() {
        use Treatment::*;
        let m = Mask(MaskKind::Name);
        let g = Generalise(Generalisation::Year);
        let order = [Clear, m.clone(), g.clone(), Pseudonym, Drop];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let want = if i >= j { a } else { b };
                assert_eq!(&Treatment::most_restrictive(a, b), want);
            }
        }
        assert_eq!(
            Treatment::most_restrictive(&g, &Generalise(Generalisation::AgeBand)),
            Generalise(Generalisation::AgeBand)
        );
        assert_eq!(
            Treatment::most_restrictive(&m, &Mask(MaskKind::Address)),
            Drop
        );
    }

    #[test]
    fn pseudonyms_are_stable_per_department_and_differ_between() {
        let k = PseudonymKey::from_bytes(&[7u8; 32]).expect("key");
        let a = k.for_department("education");
        let b = k.for_department("housing");
        let x = a.pseudonym(FieldKind::IdNumber, "11010519491231002x");
        assert_eq!(x, a.pseudonym(FieldKind::IdNumber, "11010519491231002X"));
        assert_ne!(x, b.pseudonym(FieldKind::IdNumber, "11010519491231002X"));
        assert_eq!(x.len(), 34);
        assert!(PseudonymKey::from_bytes(&[1u8; 31]).is_err());
        assert_eq!(format!("{k:?}"), "PseudonymKey(<redacted>)");
    }
}
