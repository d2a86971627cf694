//! A deterministic synthetic population of Yangjiang (阳江) for demos, tests
//! and benchmarks.
//!
//! **Everything here is fictitious and labelled so**: names are drawn from
//! short lists of common surnames and given-name characters, every record id
//! starts with `SYN-`, every address ends with （合成数据）, amounts are
//! illustrative (the real Yangjiang 低保 standards were not found; the
//! standards below are example values), and ID numbers, although valid per
//! GB 11643, are generated.
//!
//! The same seed (and reference date) always yields the same population. The
//! generator is an iterator of households, each carrying its records for all
//! five datasets, so a million persons stream in constant memory (plus a small
//! table that keeps ID numbers unique).
//!
//! Proportions (illustrative): 低保 50 %, 特困 8 %, 低保边缘 17 %, 刚性支出
//! 10 %, 临时救助 10 %, and 5 % of households only on the rural monitoring
//! list; 35 % of rural households are monitored (60 % of those 脱贫户); 70 %
//! of school-age members get student aid; 30 % of persons have a medical
//! settlement; 10 % of roster households get housing assistance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Number, Value, json};
use time::{Date, Duration, Month};

use crate::adapter::for_dataset;
use crate::domain::IdNumber;
use crate::ledger::LedgerMapping;

/// The default reference date ("today" of the synthetic world): fixed so the
/// output does not change from day to day.
pub const REFERENCE_DATE: Date = time::macros::date!(2026 - 06 - 30);

/// The five dataset ids, in the order records of a household are emitted.
pub const DATASETS: [&str; 5] = [
    "assistance-enrolment",
    "monitoring-object",
    "student-aid",
    "medical-settlement",
    "housing-assistance",
];

/// County-level divisions with their weight in the population and the share
/// of urban households (illustrative).
const COUNTIES: [(&str, &str, u32, f64); 4] = [
    ("441702", "江城区", 30, 0.7),
    ("441704", "阳东区", 22, 0.35),
    ("441721", "阳西县", 18, 0.25),
    ("441781", "阳春市", 30, 0.3),
];

const SURNAMES: &[&str] = &[
    "陈", "李", "黄", "梁", "林", "冯", "关", "谭", "刘", "吴", "何", "杨", "张", "周", "许", "邓",
    "叶", "莫", "罗", "钟",
];
const GIVEN: &[&str] = &[
    "志", "文", "明", "华", "伟", "强", "秀", "英", "芳", "玲", "建", "国", "海", "燕", "丽", "军",
    "平", "红", "金", "宝", "嘉", "俊", "思", "雨", "欣", "浩", "子", "晓", "佳", "泽",
];
const ROADS: &[&str] = &["示例路", "样本街", "虚构大道", "演示巷", "合成路"];
const VILLAGES: &[&str] = &["东岸村", "南山村", "北坑村", "西湾村", "新联村", "石门村"];
const DIAGNOSES: &[(&str, &str)] = &[
    ("I10", "原发性高血压"),
    ("E11.9", "2型糖尿病"),
    ("J18.9", "肺炎"),
    ("C34.9", "支气管或肺恶性肿瘤"),
    ("N18.5", "慢性肾脏病5期"),
    ("I63.9", "脑梗死"),
];
const INSTITUTIONS: &[(&str, &str)] = &[
    ("H44170200001", "阳江市示例人民医院（合成数据）"),
    ("H44178100002", "阳春市示例中医院（合成数据）"),
    ("H44172100003", "阳西县示例人民医院（合成数据）"),
    ("H44170400004", "阳东区示例卫生院（合成数据）"),
];

/// Illustrative monthly 低保 standard per person, yuan (urban, rural).
const DIBAO_STANDARD: (u64, u64) = (1000, 800);

/// One synthetic person.
#[derive(Clone)]
pub struct Person {
    /// Valid, unique ID number.
    pub id: IdNumber,
    /// Fictitious name.
    pub name: String,
    /// GB/T 2261.1 sex code: 1 or 2.
    pub sex: u8,
    /// Date of birth.
    pub birth: Date,
    /// GB/T 4761 relation to the household head.
    pub relation: &'static str,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Person(<synthetic>)")
    }
}

/// One record of one dataset.
#[derive(Clone, Debug)]
pub struct SynthRecord {
    /// The dataset id.
    pub dataset: &'static str,
    /// The canonical record.
    pub record: Value,
}

/// One synthetic household with its records.
#[derive(Clone, Debug)]
pub struct Household {
    /// Running number from 1.
    pub number: u64,
    /// County-level region code of residence.
    pub region: &'static str,
    /// Members, the head first.
    pub members: Vec<Person>,
    /// Whether the household is on the civil-affairs roster
    /// (has an `assistance-enrolment` record).
    pub on_roster: bool,
    /// The household's records for all datasets.
    pub records: Vec<SynthRecord>,
}

/// The generator's parameters.
#[derive(Clone, Copy, Debug)]
pub struct SynthConfig {
    /// RNG seed.
    pub seed: u64,
    /// Number of persons to generate.
    pub persons: u64,
    /// "Today" of the synthetic world; no date lies after it.
    pub today: Date,
}

impl SynthConfig {
    /// A config with the fixed [`REFERENCE_DATE`].
    pub fn new(seed: u64, persons: u64) -> Self {
        SynthConfig {
            seed,
            persons,
            today: REFERENCE_DATE,
        }
    }
}

/// The household stream.
pub struct Population {
    rng: StdRng,
    config: SynthConfig,
    produced: u64,
    households: u64,
    settlements: u64,
    aids: u64,
    /// Next free sequence number per (address code, birth day, sex).
    sequences: HashMap<(u32, i32, bool), u16>,
}

impl std::fmt::Debug for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Population")
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

/// Streams the households of a synthetic population.
pub fn population(config: SynthConfig) -> Population {
    Population {
        rng: StdRng::seed_from_u64(config.seed),
        config,
        produced: 0,
        households: 0,
        settlements: 0,
        aids: 0,
        sequences: HashMap::new(),
    }
}

/// Streams every record of a synthetic population of `persons` persons.
pub fn records(seed: u64, persons: u64) -> impl Iterator<Item = SynthRecord> {
    population(SynthConfig::new(seed, persons)).flat_map(|h| h.records)
}

fn money(fen: u64) -> Value {
    if fen.is_multiple_of(100) {
        Value::Number((fen / 100).into())
    } else {
        Number::from_f64(fen as f64 / 100.0).map_or(Value::Null, Value::Number)
    }
}

fn date_str(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn add_months(d: Date, months: i32) -> Date {
    let total = i32::from(u8::from(d.month())) - 1 + months;
    let year = d.year() + total.div_euclid(12);
    let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).unwrap_or(1))
        .unwrap_or(Month::January);
    let day = d.day().min(28);
    Date::from_calendar_date(year, month, day).unwrap_or(d)
}

fn age_on(birth: Date, today: Date) -> i32 {
    let mut age = today.year() - birth.year();
    if (u8::from(today.month()), today.day()) < (u8::from(birth.month()), birth.day()) {
        age -= 1;
    }
    age
}

impl Population {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    fn name(&mut self, surname: &str) -> String {
        let mut n = surname.to_owned();
        n.push_str(self.pick(GIVEN));
        if self.chance(0.7) {
            n.push_str(self.pick(GIVEN));
        }
        n
    }

    fn birth_for_age(&mut self, age: i32) -> Date {
        let today = self.config.today;
        let days = self.rng.random_range(0..365);
        let d = today - Duration::days(i64::from(age) * 365 + i64::from(age / 4) + days);
        d.min(today)
    }

    /// A unique valid ID number: sequence numbers are handed out per address
    /// code, birth day and sex (odd = male), 499 per day and sex at most.
    fn id_number(&mut self, address: &str, birth: &mut Date, male: bool) -> IdNumber {
        let code: u32 = address.parse().unwrap_or(441700);
        loop {
            let slot = self
                .sequences
                .entry((code, birth.to_julian_day(), male))
                .or_insert(0);
            // Sequences 001..999: odd for men, even for women (never 000).
            if *slot < 499 {
                let seq = *slot * 2 + if male { 1 } else { 2 };
                *slot += 1;
                if let Ok(id) = IdNumber::from_parts(address, *birth, seq) {
                    return id;
                }
            }
            // This day is full (or unusable): the person is born a day earlier.
            *birth = birth.previous_day().unwrap_or(*birth);
        }
    }

    fn person(
        &mut self,
        county: &str,
        surname: &str,
        age: i32,
        male: bool,
        relation: &'static str,
    ) -> Person {
        let mut birth = self.birth_for_age(age.clamp(0, 100));
        // Numbers issued in 阳东 before the 2014 reform keep the retired code 441723.
        let address = if county == "441704" && birth.year() < 2014 && self.chance(0.4) {
            "441723"
        } else {
            county
        };
        let id = self.id_number(address, &mut birth, male);
        let name = self.name(surname);
        Person {
            id,
            name,
            sex: if male { 1 } else { 2 },
            birth,
            relation,
        }
    }

    fn members(&mut self, county: &str, size: usize) -> Vec<Person> {
        let surname = self.pick(SURNAMES);
        let head_age = self.rng.random_range(25..86);
        let head_male = self.chance(0.7);
        let mut out = vec![self.person(county, surname, head_age, head_male, "02")];
        let mut has_spouse = false;
        while out.len() < size {
            let roll: f64 = self.rng.random();
            let p = if !has_spouse && roll < 0.5 {
                has_spouse = true;
                let other = self.pick(SURNAMES);
                let age = (head_age + self.rng.random_range(-5..6)).max(18);
                self.person(county, other, age, !head_male, "10")
            } else if roll < 0.85 || head_age > 70 {
                let age = (head_age - self.rng.random_range(20..36)).max(0);
                let male = self.chance(0.5);
                let rel = if head_age > 70 && roll > 0.85 {
                    "40"
                } else if male {
                    "20"
                } else {
                    "30"
                };
                let age = if rel == "40" {
                    age.min(head_age - 45).max(0)
                } else {
                    age
                };
                self.person(county, surname, age, male, rel)
            } else {
                let age = (head_age + self.rng.random_range(20..31)).min(100);
                let male = self.chance(0.5);
                self.person(county, surname, age, male, "50")
            };
            out.push(p);
        }
        out
    }

    fn address(&mut self, county_name: &str) -> String {
        let road = self.pick(ROADS);
        let n = self.rng.random_range(1..400);
        format!("广东省阳江市{county_name}{road}{n}号（合成数据）")
    }

    fn mobile(&mut self) -> String {
        format!(
            "1{}{:09}",
            self.pick(&[3, 5, 7, 8, 9]),
            self.rng.random_range(0..1_000_000_000u64)
        )
    }

    fn bank_card(&mut self) -> String {
        format!(
            "6217{:015}",
            self.rng.random_range(0..1_000_000_000_000_000u64)
        )
    }

    fn member_json(p: &Person) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id_number".into(), Value::String(p.id.as_str().to_owned()));
        m.insert("name".into(), Value::String(p.name.clone()));
        m.insert("sex".into(), Value::String(p.sex.to_string()));
        m.insert("birth_date".into(), Value::String(date_str(p.birth)));
        m.insert("relation".into(), Value::String(p.relation.to_owned()));
        m
    }

    fn head_json(&mut self, h: &Person, address: &str) -> Value {
        let mobile = self.mobile();
        json!({"id_number": h.id.as_str(), "name": h.name, "address": address, "mobile": mobile})
    }

    fn date_within(&mut self, from: Date, to: Date) -> Date {
        let span = (to - from).whole_days().max(0);
        from + Duration::days(self.rng.random_range(0..=span))
    }

    #[allow(clippy::too_many_lines)]
    fn enrolment(
        &mut self,
        number: u64,
        county: &str,
        urban: bool,
        members: &[Person],
        category: &str,
        address: &str,
    ) -> Value {
        let today = self.config.today;
        let size = members.len() as u64;
        let standard = if urban {
            DIBAO_STANDARD.0
        } else {
            DIBAO_STANDARD.1
        } * 100;
        let single = category == "dibao" && size >= 2 && self.chance(0.05);
        let enrolled: u64 = if single { 1 } else { size };
        let income = match category {
            "dibao" | "tekun" => self.rng.random_range(0..standard * 8 / 10),
            "dibao_marginal" => self.rng.random_range(standard..standard * 3 / 2),
            _ => self.rng.random_range(standard / 2..standard * 2),
        } / 100
            * 100;
        let valid_from = self.date_within(today - Duration::days(1500), today - Duration::days(30));
        let mut rec = Map::new();
        rec.insert(
            "enrolment_id".into(),
            json!(format!("SYN-MZ-{county}-{number:08}")),
        );
        rec.insert("category".into(), json!(category));
        if category == "temporary" {
            rec.insert(
                "temporary_type".into(),
                json!(if self.chance(0.4) {
                    "emergency"
                } else {
                    "expenditure"
                }),
            );
        }
        rec.insert("region_code".into(), json!(county));
        rec.insert(
            "area_type".into(),
            json!(if urban { "urban" } else { "rural" }),
        );
        let head = self.head_json(&members[0], address);
        rec.insert("head".into(), head);
        let mut list = Vec::with_capacity(members.len());
        let ill = if single {
            self.rng.random_range(0..members.len())
        } else {
            usize::MAX
        };
        for (i, p) in members.iter().enumerate() {
            let mut m = Self::member_json(p);
            if i == ill {
                m.insert("single_person_enrolment".into(), json!(true));
                m.insert("illness".into(), json!("重病（合成数据）"));
            } else if self.chance(0.1) {
                m.insert("illness".into(), json!("慢性病（合成数据）"));
            }
            if self.chance(0.08) {
                let g = self.pick(&["1", "2", "3", "4"]);
                m.insert("disability_grade".into(), json!(g));
            }
            m.insert("enrolled".into(), json!(!single || i == ill));
            list.push(Value::Object(m));
        }
        rec.insert("members".into(), Value::Array(list));
        rec.insert("household_size".into(), json!(size));
        rec.insert("enrolled_persons".into(), json!(enrolled));
        let monthly = match category {
            "dibao" => (standard.saturating_sub(income)) * enrolled,
            "tekun" => standard * 16 / 10,
            _ => 0,
        };
        if category == "tekun" {
            let (level, care) = match self.rng.random_range(0..10) {
                0..=5 => ("self_care", 3240),
                6..=8 => ("partial_self_care", 48600),
                _ => ("full_care", 97200),
            };
            rec.insert("care_level".into(), json!(level));
            rec.insert(
                "support_mode".into(),
                json!(if self.chance(0.8) {
                    "dispersed"
                } else {
                    "centralized"
                }),
            );
            rec.insert("care_allowance".into(), money(care));
        }
        rec.insert("monthly_amount".into(), money(monthly));
        rec.insert("per_capita_income".into(), money(income));
        rec.insert(
            "approval_date".into(),
            json!(date_str(valid_from - Duration::days(10))),
        );
        rec.insert("valid_from".into(), json!(date_str(valid_from)));
        let roll: f64 = self.rng.random();
        if category == "rigid_expenditure" || category == "temporary" {
            let to = add_months(valid_from, 12) - Duration::days(1);
            rec.insert("valid_to".into(), json!(date_str(to)));
            rec.insert(
                "status".into(),
                json!(if to < today { "ended" } else { "active" }),
            );
        } else if roll < 0.1 && category == "dibao" {
            let start = self.date_within(valid_from, today);
            rec.insert("status".into(), json!("graduating"));
            rec.insert("graduation_start_date".into(), json!(date_str(start)));
            rec.insert(
                "graduation_end_date".into(),
                json!(date_str(add_months(start, 6) - Duration::days(1))),
            );
        } else if roll < 0.2 {
            let end = self.date_within(valid_from, today);
            rec.insert("valid_to".into(), json!(date_str(end)));
            rec.insert("status".into(), json!("ended"));
        } else {
            rec.insert("status".into(), json!("active"));
        }
        let card = self.bank_card();
        rec.insert("bank_account".into(), json!(card));
        Value::Object(rec)
    }

    fn monitoring(
        &mut self,
        number: u64,
        county: &str,
        members: &[Person],
        address: &str,
    ) -> Value {
        let today = self.config.today;
        let roll: f64 = self.rng.random();
        let subject = match roll {
            r if r < 0.6 => "lifted",
            r if r < 0.75 => "unstable_lifted",
            r if r < 0.9 => "marginal_vulnerable",
            _ => "sudden_hardship",
        };
        const CAUSES: [&str; 9] = [
            "illness",
            "education",
            "disability",
            "disaster",
            "accident",
            "industry_failure",
            "unstable_employment",
            "labour_shortage",
            "other",
        ];
        let n_causes = if subject == "lifted" {
            self.rng.random_range(0..2)
        } else {
            self.rng.random_range(1..3)
        };
        let mut causes: Vec<&str> = Vec::new();
        while causes.len() < n_causes {
            let c = self.pick(&CAUSES);
            if !causes.contains(&c) {
                causes.push(c);
            }
        }
        let village = self.pick(VILLAGES);
        let head = self.head_json(&members[0], address);
        let list: Vec<Value> = members
            .iter()
            .map(|p| {
                let mut m = Self::member_json(p);
                let age = age_on(p.birth, today);
                let health = self.pick(&[
                    "healthy", "healthy", "healthy", "chronic", "serious", "disabled",
                ]);
                m.insert("health_status".into(), json!(health));
                let labour = if !(16..=65).contains(&age) {
                    "none"
                } else if health == "healthy" {
                    "normal"
                } else {
                    "weak"
                };
                m.insert("labour_ability".into(), json!(labour));
                m.insert("in_school".into(), json!((6..=22).contains(&age)));
                Value::Object(m)
            })
            .collect();
        let mut rec = Map::new();
        rec.insert(
            "monitor_id".into(),
            json!(format!("SYN-XC-{county}-{number:08}")),
        );
        rec.insert("subject_type".into(), json!(subject));
        rec.insert("region_code".into(), json!(county));
        rec.insert("village".into(), json!(village));
        rec.insert("head".into(), head);
        rec.insert("members".into(), Value::Array(list));
        rec.insert("household_size".into(), json!(members.len()));
        rec.insert("risk_causes".into(), json!(causes));
        rec.insert(
            "per_capita_net_income".into(),
            money(self.rng.random_range(5000..15000) * 100),
        );
        let removed = self.chance(0.3);
        if subject == "lifted" {
            rec.insert(
                "lifted_year".into(),
                json!(self.rng.random_range(2016..2021)),
            );
        } else {
            let identified =
                self.date_within(today - Duration::days(1200), today - Duration::days(60));
            rec.insert("identified_date".into(), json!(date_str(identified)));
            if removed {
                let d = self.date_within(identified, today);
                rec.insert("risk_removed_date".into(), json!(date_str(d)));
            }
        }
        let removed = removed && subject != "lifted";
        rec.insert("risk_removed".into(), json!(removed));
        Value::Object(rec)
    }

    fn student_aid(
        &mut self,
        county: &str,
        student: &Person,
        guardian: Option<&Person>,
        difficulty: &str,
    ) -> Option<Value> {
        let today = self.config.today;
        let age = age_on(student.birth, today);
        let (stage, aid, fen) = match age {
            3..=5 => ("preschool", "fee_waiver", 100_000),
            6..=11 => ("primary", "living_allowance", 100_000),
            12..=14 => ("junior_secondary", "living_allowance", 125_000),
            15..=17 if self.chance(0.3) => ("secondary_vocational", "tuition_waiver", 200_000),
            15..=17 => ("senior_secondary", "national_grant", 200_000),
            18..=22 if self.chance(0.5) => ("higher_vocational", "national_grant", 370_000),
            18..=22 => ("undergraduate", "student_loan", 1_200_000),
            _ => return None,
        };
        self.aids += 1;
        let year = if u8::from(today.month()) >= 9 {
            today.year()
        } else {
            today.year() - 1
        };
        let school_code = format!("21{}{:04}", &county[2..6], self.rng.random_range(0..10_000));
        let mut rec = Map::new();
        rec.insert("aid_id".into(), json!(format!("SYN-JY-{:010}", self.aids)));
        let mut s = Map::new();
        s.insert("id_number".into(), json!(student.id.as_str()));
        s.insert("name".into(), json!(student.name));
        s.insert("sex".into(), json!(student.sex.to_string()));
        s.insert("birth_date".into(), json!(date_str(student.birth)));
        s.insert(
            "student_no".into(),
            json!(format!("G{}", student.id.as_str())),
        );
        rec.insert("student".into(), Value::Object(s));
        if let Some(g) = guardian {
            let mobile = self.mobile();
            rec.insert(
                "guardian".into(),
                json!({"id_number": g.id.as_str(), "name": g.name, "relation": if g.sex == 1 { "51" } else { "52" }, "mobile": mobile}),
            );
        }
        rec.insert("region_code".into(), json!(county));
        rec.insert("school".into(), json!({"code": school_code, "name": format!("阳江市示例学校{}（合成数据）", &school_code[6..])}));
        rec.insert("stage".into(), json!(stage));
        rec.insert("aid_type".into(), json!(aid));
        rec.insert("family_difficulty".into(), json!(difficulty));
        rec.insert(
            "academic_year".into(),
            json!(format!("{}-{}", year, year + 1)),
        );
        rec.insert(
            "term".into(),
            json!(if aid == "student_loan" {
                "year"
            } else {
                "autumn"
            }),
        );
        rec.insert("amount".into(), money(fen));
        let paid = Date::from_calendar_date(year, Month::November, 15)
            .unwrap_or(today)
            .min(today);
        rec.insert("paid_date".into(), json!(date_str(paid)));
        let card = self.bank_card();
        rec.insert("bank_account".into(), json!(card));
        Some(Value::Object(rec))
    }

    fn settlement(&mut self, county: &str, p: &Person, category: &str) -> Value {
        let today = self.config.today;
        self.settlements += 1;
        let kind = self.pick(&[
            "outpatient",
            "outpatient",
            "chronic_outpatient",
            "inpatient",
        ]);
        let total: u64 = match kind {
            "outpatient" => self.rng.random_range(5_000..80_000),
            "chronic_outpatient" => self.rng.random_range(20_000..300_000),
            _ => self.rng.random_range(300_000..6_000_000),
        };
        let basic = total * self.rng.random_range(50..71) / 100;
        let critical = if kind == "inpatient" && total > 1_000_000 {
            (total - basic) * 4 / 10
        } else {
            0
        };
        let rest = total - basic - critical;
        let maf = rest * self.rng.random_range(30..71) / 100;
        let personal = rest - maf;
        let area = match self.rng.random_range(0..20) {
            0 => "441799",
            1 => "441742",
            2 => "441743",
            _ => county,
        };
        let (dcode, dname) = self.pick(DIAGNOSES);
        let (icode, iname) = self.pick(INSTITUTIONS);
        let admission = self.date_within(today - Duration::days(365), today - Duration::days(20));
        let mut rec = Map::new();
        rec.insert(
            "setl_id".into(),
            json!(format!("SYN-YB-{:010}", self.settlements)),
        );
        rec.insert(
            "insured_person_no".into(),
            json!(format!("44170000{:010}", self.settlements)),
        );
        rec.insert(
            "patient".into(),
            json!({"id_number": p.id.as_str(), "name": p.name, "sex": p.sex.to_string(), "birth_date": date_str(p.birth)}),
        );
        rec.insert(
            "insurance_type".into(),
            json!(if self.chance(0.85) {
                "resident_basic"
            } else {
                "employee_basic"
            }),
        );
        rec.insert("insurance_area".into(), json!(area));
        rec.insert("assistance_category".into(), json!(category));
        rec.insert("institution".into(), json!({"code": icode, "name": iname}));
        rec.insert("medical_type".into(), json!(kind));
        rec.insert("diagnosis_code".into(), json!(dcode));
        rec.insert("diagnosis_name".into(), json!(dname));
        rec.insert("admission_date".into(), json!(date_str(admission)));
        let settled = if kind == "inpatient" {
            let discharge = admission + Duration::days(self.rng.random_range(2..20));
            rec.insert("discharge_date".into(), json!(date_str(discharge)));
            discharge
        } else {
            admission
        };
        rec.insert("settlement_date".into(), json!(date_str(settled)));
        rec.insert("total_cost".into(), money(total));
        rec.insert("basic_insurance_paid".into(), money(basic));
        rec.insert("critical_illness_paid".into(), money(critical));
        rec.insert("medical_assistance_paid".into(), money(maf));
        rec.insert("personal_paid".into(), money(personal));
        Value::Object(rec)
    }

    fn housing(
        &mut self,
        number: u64,
        county: &str,
        urban: bool,
        members: &[Person],
        category: &str,
        address: &str,
    ) -> Value {
        let today = self.config.today;
        let kind = if urban {
            if self.chance(0.5) {
                "public_rental"
            } else {
                "rental_subsidy"
            }
        } else {
            "rural_renovation"
        };
        let start = self.date_within(today - Duration::days(1000), today - Duration::days(30));
        let head = self.head_json(&members[0], address);
        let list: Vec<Value> = members
            .iter()
            .map(|p| Value::Object(Self::member_json(p)))
            .collect();
        let mut rec = Map::new();
        rec.insert(
            "assistance_id".into(),
            json!(format!("SYN-ZJ-{county}-{number:08}")),
        );
        rec.insert("assistance_type".into(), json!(kind));
        rec.insert("region_code".into(), json!(county));
        rec.insert("head".into(), head);
        rec.insert("members".into(), Value::Array(list));
        rec.insert("household_size".into(), json!(members.len()));
        rec.insert("qualifying_category".into(), json!(category));
        rec.insert(
            "per_capita_income".into(),
            money(self.rng.random_range(300..1200) * 100),
        );
        let area: f64 = f64::from(self.rng.random_range(300..900u32)) / 10.0;
        match kind {
            "rural_renovation" => {
                rec.insert(
                    "amount".into(),
                    money(self.rng.random_range(100..400) * 10_000),
                );
                rec.insert("amount_period".into(), json!("one_off"));
                let grade = self.pick(&["C", "D"]);
                rec.insert(
                    "dwelling".into(),
                    json!({"address": address, "floor_area": area, "danger_grade": grade}),
                );
                let end = add_months(start, 6);
                rec.insert("start_date".into(), json!(date_str(start)));
                rec.insert("end_date".into(), json!(date_str(end)));
                rec.insert(
                    "status".into(),
                    json!(if end < today {
                        "completed"
                    } else {
                        "in_progress"
                    }),
                );
            }
            _ => {
                rec.insert(
                    "amount".into(),
                    money(self.rng.random_range(20..90) * 1_000),
                );
                rec.insert("amount_period".into(), json!("monthly"));
                let flat = format!(
                    "阳江市示例公租房小区{}栋{}室（合成数据）",
                    self.rng.random_range(1..20),
                    self.rng.random_range(101..1800)
                );
                let dwelling_address = if kind == "public_rental" {
                    flat
                } else {
                    address.to_owned()
                };
                rec.insert(
                    "dwelling".into(),
                    json!({"address": dwelling_address, "floor_area": area}),
                );
                rec.insert("start_date".into(), json!(date_str(start)));
                rec.insert("status".into(), json!("approved"));
            }
        }
        let card = self.bank_card();
        rec.insert("bank_account".into(), json!(card));
        Value::Object(rec)
    }
}

impl Iterator for Population {
    type Item = Household;

    fn next(&mut self) -> Option<Household> {
        let left = self.config.persons.saturating_sub(self.produced);
        if left == 0 {
            return None;
        }
        self.households += 1;
        let number = self.households;
        let weight: u32 = self.rng.random_range(0..100);
        let mut acc = 0;
        let (county, county_name, _, urban_share) = COUNTIES
            .iter()
            .copied()
            .find(|c| {
                acc += c.2;
                weight < acc
            })
            .unwrap_or(COUNTIES[0]);
        let urban = self.chance(urban_share);
        let roll: f64 = self.rng.random();
        let category = match roll {
            r if r < 0.50 => Some("dibao"),
            r if r < 0.58 => Some("tekun"),
            r if r < 0.75 => Some("dibao_marginal"),
            r if r < 0.85 => Some("rigid_expenditure"),
            r if r < 0.95 => Some("temporary"),
            _ => None,
        };
        let mut size = match self.rng.random_range(0..100) {
            0..=24 => 1,
            25..=49 => 2,
            50..=69 => 3,
            70..=84 => 4,
            85..=94 => 5,
            _ => 6,
        };
        if category == Some("tekun") {
            size = 1;
        }
        let size = size.min(usize::try_from(left).unwrap_or(usize::MAX));
        let members = self.members(county, size);
        self.produced += members.len() as u64;
        let address = self.address(county_name);
        let mut records = Vec::new();
        let rural = !urban;
        if let Some(cat) = category {
            let rec = self.enrolment(number, county, urban, &members, cat, &address);
            records.push(SynthRecord {
                dataset: "assistance-enrolment",
                record: rec,
            });
        }
        let monitored = rural && (category.is_none() || self.chance(0.35));
        if monitored {
            let rec = self.monitoring(number, county, &members, &address);
            records.push(SynthRecord {
                dataset: "monitoring-object",
                record: rec,
            });
        }
        let qualifying = category.unwrap_or("monitoring");
        let qualifying = if qualifying == "temporary" {
            "other"
        } else {
            qualifying
        };
        for i in 0..members.len() {
            let guardian = if i == 0 { None } else { Some(&members[0]) };
            if self.chance(0.7)
                && let Some(rec) = self.student_aid(county, &members[i], guardian, qualifying)
            {
                records.push(SynthRecord {
                    dataset: "student-aid",
                    record: rec,
                });
            }
        }
        for p in &members {
            if self.chance(0.3) {
                let rec = self.settlement(county, p, qualifying);
                records.push(SynthRecord {
                    dataset: "medical-settlement",
                    record: rec,
                });
            }
        }
        if category.is_some() && self.chance(0.1) {
            let rec = self.housing(number, county, urban, &members, qualifying, &address);
            records.push(SynthRecord {
                dataset: "housing-assistance",
                record: rec,
            });
        }
        Some(Household {
            number,
            region: county,
            members,
            on_roster: category.is_some(),
            records,
        })
    }
}

/// One example file for the demo.
#[derive(Clone, Debug)]
pub struct ExampleFile {
    /// File name: `<dataset>.canonical.json`, `<dataset>.native.json` or
    /// `<dataset>.csv`.
    pub name: String,
    /// Contents.
    pub contents: Vec<u8>,
}

/// How many records each example file holds.
const EXAMPLES_PER_DATASET: usize = 3;

/// The demo's example files: per dataset, a JSON array of canonical records,
/// the same records in the publisher's native format, and a CSV ledger with
/// the default Chinese headers. Everything is synthetic (seeded).
pub fn example_files(seed: u64) -> Vec<ExampleFile> {
    let mut picked: Vec<Vec<Value>> = vec![Vec::new(); DATASETS.len()];
    for household in population(SynthConfig::new(seed, 5_000)) {
        for r in household.records {
            if let Some(i) = DATASETS.iter().position(|d| *d == r.dataset)
                && picked[i].len() < EXAMPLES_PER_DATASET
            {
                picked[i].push(r.record);
            }
        }
        if picked.iter().all(|p| p.len() >= EXAMPLES_PER_DATASET) {
            break;
        }
    }
    let mut files = Vec::new();
    for (dataset, records) in DATASETS.iter().zip(picked) {
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        files.push(ExampleFile {
            name: format!("{dataset}.canonical.json"),
            contents: pretty(&Value::Array(records.clone())),
        });
        if let Some(adapter) = for_dataset(dataset) {
            let native: Vec<Value> = records.iter().map(|r| adapter.to_native(r)).collect();
            files.push(ExampleFile {
                name: format!("{dataset}.native.json"),
                contents: pretty(&Value::Array(native)),
            });
        }
        if let Some(mapping) = LedgerMapping::default_for(dataset) {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(mapping.headers());
            for r in &records {
                for row in mapping.to_rows(r) {
                    let _ = w.write_record(&row);
                }
            }
            files.push(ExampleFile {
                name: format!("{dataset}.csv"),
                contents: w.into_inner().unwrap_or_default(),
            });
        }
    }
    files
}

/// `csv` (a ledger such as [`example_files`] writes) with the check
/// character of the first data row's 18-digit ID number changed, so the ID
/// is invalid: for showing how an import names the bad cell.
pub fn with_bad_check_character(csv: &str) -> String {
    with_bad_check_character_at(csv, 1)
}

/// As [`with_bad_check_character`], in line `line` (0 is the header; the
/// last line is `lines - 1`).
pub fn with_bad_check_character_at(csv: &str, line: usize) -> String {
    let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
    if let Some(row) = lines.get_mut(line)
        && let Some(id) = row
            .split(',')
            .find(|c| c.len() == 18 && c.as_bytes()[..17].iter().all(u8::is_ascii_digit))
            .map(str::to_owned)
    {
        let last = if id.ends_with('1') { '2' } else { '1' };
        *row = row.replacen(&id, &format!("{}{last}", &id[..17]), 1);
    }
    lines.join("\n")
}

/// A CSV ledger (default Chinese headers) of the first `n` synthetic
/// records of `dataset` in the population of `seed`; fewer if the
/// population of `50 * n` persons holds fewer (generated lazily). Empty for a dataset without a
/// ledger mapping.
pub fn ledger_csv(dataset: &str, seed: u64, n: usize) -> Vec<u8> {
    let Some(mapping) = LedgerMapping::default_for(dataset) else {
        return Vec::new();
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(mapping.headers());
    for r in records(seed, 50 * n as u64)
        .filter(|r| r.dataset == dataset)
        .take(n)
    {
        for row in mapping.to_rows(&r.record) {
            let _ = w.write_record(&row);
        }
    }
    w.into_inner().unwrap_or_default()
}

/// Writes [`example_files`] into `dir` (created if missing) and returns the
/// paths written.
pub fn write_examples(dir: &Path, seed: u64) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for f in example_files(seed) {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.contents)?;
        out.push(path);
    }
    Ok(out)
}
