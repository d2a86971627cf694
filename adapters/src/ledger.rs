//! Spreadsheet ledgers (台账): CSV and XLSX with Chinese column headers,
//! streamed row by row into canonical records.
//!
//! # Mapping
//! A [`LedgerMapping`] says which column header (with aliases) fills which
//! canonical field and how the cell is read (`text`, `id_number`, `date`,
//! `money`, `integer`, `number`, `flag` 是/否, or a code table of Chinese
//! names). Default mappings per dataset live in `adapters/mappings/ledger/`
//! and are compiled in; [`LedgerMapping::from_toml`] reads an operator's own.
//!
//! # Rows and records
//! The header row is the first row (of the first ten) that holds every
//! required column, so title rows above it are skipped. Columns the mapping
//! does not know are ignored and listed by [`LedgerReader::ignored_columns`].
//!
//! Datasets with household members (`members[]`) use one row per member: the
//! mapping's `group_by` column (e.g. 救助对象编号) names the household, and
//! **adjacent rows with the same value form one record**. Household-level
//! cells are read from the group's first row; on later rows they may be empty
//! or repeat the same value (a different value is an error). Member cells of
//! each row become one element of `members`, in row order. A household's rows
//! must be adjacent (a key seen again later is an error), so the reader holds
//! one household at a time. CSV ([`read_csv`]) and XLSX through
//! [`XlsxLedger`] stream cell by cell with bounded memory (the upload itself
//! and the workbook's shared-string table aside); [`read_xlsx`] is the
//! one-call variant that loads the sheet whole. Datasets without members use
//! one row per record.
//!
//! # Errors
//! Every problem carries the sheet (XLSX), the row as the spreadsheet shows it
//! (1-based, header included), the column header and the JSON pointer of the
//! canonical field. [`LedgerRecord::validate`] runs the catalogue's validation
//! and places its errors on rows and columns the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read};
use std::sync::Arc;

use calamine::{Data, DataRef, Reader, Xlsx, XlsxCellReader};
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use time::{Date, Month, OffsetDateTime};

use crate::adapter::{MappingError, parse_money_text};
use crate::catalogue::{
    Dataset, RecordError, Seg, Validated, check_money, id_message, parse_date, parse_field_path,
    push_index, push_token,
};
use crate::domain::IdNumber;

/// How a cell is read.
#[derive(Clone, Debug)]
enum CellFormat {
    Text,
    IdNumber,
    Date,
    Money,
    Integer,
    Number,
    Flag,
    /// Several codes in one cell, separated by 、 , ， ; or ；.
    CodeList {
        name: String,
        table: Arc<HashMap<String, String>>,
        reverse: Arc<HashMap<String, String>>,
    },
    Codes {
        name: String,
        table: Arc<HashMap<String, String>>,
        reverse: Arc<HashMap<String, String>>,
    },
}

/// One mapped column.
#[derive(Clone, Debug)]
struct Column {
    header: String,
    aliases: Vec<String>,
    field: String,
    segs: Vec<Seg>,
    member: bool,
    required: bool,
    format: CellFormat,
}

/// Header -> field mapping of one dataset's ledgers.
#[derive(Clone, Debug)]
pub struct LedgerMapping {
    dataset: String,
    group_by: Option<usize>,
    columns: Vec<Column>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    dataset: String,
    group_by: Option<String>,
    #[serde(default)]
    codes: BTreeMap<String, BTreeMap<String, String>>,
    columns: Vec<ColumnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnFile {
    header: String,
    #[serde(default)]
    aliases: Vec<String>,
    field: String,
    #[serde(default)]
    required: bool,
    format: Option<String>,
    codes: Option<String>,
}

/// The built-in ledger mappings (`adapters/mappings/ledger/`).
pub const BUILTIN_LEDGER_MAPPINGS: &[(&str, &str)] = &[
    (
        "assistance-enrolment",
        include_str!("../mappings/ledger/assistance-enrolment.toml"),
    ),
    (
        "monitoring-object",
        include_str!("../mappings/ledger/monitoring-object.toml"),
    ),
    (
        "student-aid",
        include_str!("../mappings/ledger/student-aid.toml"),
    ),
    (
        "medical-settlement",
        include_str!("../mappings/ledger/medical-settlement.toml"),
    ),
    (
        "housing-assistance",
        include_str!("../mappings/ledger/housing-assistance.toml"),
    ),
];

fn normalise_header(s: &str) -> String {
    s.trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '*' && *c != '＊')
        .collect()
}

impl LedgerMapping {
    /// The built-in mapping of a dataset.
    pub fn default_for(dataset: &str) -> Option<LedgerMapping> {
        BUILTIN_LEDGER_MAPPINGS
            .iter()
            .find(|(d, _)| *d == dataset)
            .and_then(|(_, t)| LedgerMapping::from_toml(t).ok())
    }

    /// Reads a mapping (the TOML format of `adapters/mappings/ledger/`).
    pub fn from_toml(text: &str) -> Result<LedgerMapping, MappingError> {
        let file: LedgerFile = toml::from_str(text).map_err(|e| MappingError {
            name: "ledger".into(),
            message: e.to_string(),
        })?;
        let name = format!("ledger {}", file.dataset);
        let err = |message: String| MappingError {
            name: name.clone(),
            message,
        };
        let mut tables = HashMap::new();
        for (tname, codes) in &file.codes {
            let mut reverse = HashMap::new();
            for (zh, code) in codes {
                reverse.entry(code.clone()).or_insert_with(|| zh.clone());
            }
            let mut table: HashMap<String, String> = codes
                .iter()
                .map(|(k, v)| (normalise_header(k), v.clone()))
                .collect();
            // A canonical code written as is is accepted too.
            for code in codes.values() {
                table.entry(code.clone()).or_insert_with(|| code.clone());
            }
            tables.insert(tname.clone(), (Arc::new(table), Arc::new(reverse)));
        }
        let mut columns: Vec<Column> = Vec::new();
        for c in file.columns {
            let segs = parse_field_path(&c.field)
                .ok_or_else(|| err(format!("column {}: bad field path {:?}", c.header, c.field)))?;
            let eaches = segs.iter().filter(|s| **s == Seg::Each).count();
            let member = eaches == 1
                && segs.first() == Some(&Seg::Key("members".into()))
                && segs.get(1) == Some(&Seg::Each);
            if eaches > 1 || (eaches == 1 && !member) {
                return Err(err(format!(
                    "column {}: only members[].x fields may sit in an array",
                    c.header
                )));
            }
            let format =
                match (c.format.as_deref(), c.codes) {
                    (None, Some(t)) | (Some("codes"), Some(t)) => {
                        let (table, reverse) = tables.get(&t).cloned().ok_or_else(|| {
                            err(format!("column {}: no code table {t}", c.header))
                        })?;
                        CellFormat::Codes {
                            name: t,
                            table,
                            reverse,
                        }
                    }
                    (Some("list"), Some(t)) => {
                        let (table, reverse) = tables.get(&t).cloned().ok_or_else(|| {
                            err(format!("column {}: no code table {t}", c.header))
                        })?;
                        CellFormat::CodeList {
                            name: t,
                            table,
                            reverse,
                        }
                    }
                    (None | Some("text"), None) => CellFormat::Text,
                    (Some("id_number"), None) => CellFormat::IdNumber,
                    (Some("date"), None) => CellFormat::Date,
                    (Some("money"), None) => CellFormat::Money,
                    (Some("integer"), None) => CellFormat::Integer,
                    (Some("number"), None) => CellFormat::Number,
                    (Some("flag"), None) => CellFormat::Flag,
                    (Some(f), _) => {
                        return Err(err(format!("column {}: unknown format {f}", c.header)));
                    }
                };
            let header = normalise_header(&c.header);
            if columns
                .iter()
                .any(|x| x.field == c.field || x.header == header)
            {
                return Err(err(format!(
                    "column {} or field {} is mapped twice",
                    c.header, c.field
                )));
            }
            columns.push(Column {
                header,
                aliases: c.aliases.iter().map(|a| normalise_header(a)).collect(),
                field: c.field,
                segs,
                member,
                required: c.required,
                format,
            });
        }
        let group_by = match &file.group_by {
            Some(g) => Some(
                columns
                    .iter()
                    .position(|c| &c.field == g && !c.member)
                    .ok_or_else(|| err(format!("group_by {g} is not a household-level column")))?,
            ),
            None => None,
        };
        if group_by.is_none() && columns.iter().any(|c| c.member) {
            return Err(err(
                "member columns need group_by (the household's key column)".into(),
            ));
        }
        if let Some(g) = group_by {
            columns[g].required = true;
        }
        Ok(LedgerMapping {
            dataset: file.dataset,
            group_by,
            columns,
        })
    }

    /// The dataset this mapping fills.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The column headers, in mapping order.
    pub fn headers(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.header.as_str())
    }

    /// Writes a canonical record as ledger rows (one per member, or one), in
    /// the order of [`LedgerMapping::headers`]: the inverse of reading, used
    /// to produce example ledgers.
    pub fn to_rows(&self, record: &Value) -> Vec<Vec<String>> {
        let members = record
            .get("members")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let n = if self.group_by.is_some() {
            members.max(1)
        } else {
            1
        };
        (0..n)
            .map(|m| {
                self.columns
                    .iter()
                    .map(|c| {
                        let v = c.segs.iter().try_fold(record, |v, s| match s {
                            Seg::Key(k) => v.get(k.as_str()),
                            Seg::Each => v.get(m),
                        });
                        v.map(|v| cell_text(&c.format, v)).unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }
}

fn cell_text(format: &CellFormat, v: &Value) -> String {
    match (format, v) {
        (CellFormat::Codes { reverse, .. }, Value::String(s)) => {
            reverse.get(s).cloned().unwrap_or_else(|| s.clone())
        }
        (CellFormat::CodeList { reverse, .. }, Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| reverse.get(s).cloned().unwrap_or_else(|| s.to_owned()))
            .collect::<Vec<_>>()
            .join("、"),
        (CellFormat::Flag, Value::Bool(b)) => if *b { "是" } else { "否" }.to_owned(),
        (CellFormat::Money, Value::Number(n)) => {
            n.as_f64().map(|x| format!("{x:.2}")).unwrap_or_default()
        }
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A cell as read from the file.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    Date(Date),
    /// Not readable (bad UTF-8, a formula error): the reason.
    Invalid(&'static str),
}

impl Cell {
    fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Cell::Text(s) => Some(s.trim().to_owned()),
            Cell::Number(x) if x.fract() == 0.0 && x.abs() < 1e15 => Some(format!("{}", *x as i64)),
            Cell::Number(x) => Some(x.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::Date(d) => Some(date_string(*d)),
            Cell::Empty | Cell::Invalid(_) => None,
        }
    }
}

fn date_string(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Parses the date spellings ledgers use: 2024-01-05, 2024/1/5, 2024.01.05,
/// 20240105, 2024年1月5日.
fn parse_ledger_date(s: &str) -> Option<Date> {
    let s = s.trim();
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        return parse_date(&format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]));
    }
    let s = s.strip_suffix('日').unwrap_or(s);
    let parts: Vec<&str> = s.split(['-', '/', '.', '年', '月']).collect();
    if parts.len() != 3
        || parts[0].len() != 4
        || parts[1].is_empty()
        || parts[1].len() > 2
        || parts[2].is_empty()
        || parts[2].len() > 2
    {
        return None;
    }
    let y: i32 = parts[0].parse().ok()?;
    let m: u8 = parts[1].parse().ok()?;
    let d: u8 = parts[2].parse().ok()?;
    if !(1850..2200).contains(&y) {
        return None;
    }
    Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()
}

/// Converts one cell by its column format. Messages never repeat the value.
fn convert(format: &CellFormat, cell: &Cell, today: Date) -> Result<Value, String> {
    if let Cell::Invalid(why) = cell {
        return Err((*why).to_owned());
    }
    match format {
        CellFormat::Text => cell
            .text()
            .map(Value::String)
            .ok_or_else(|| "expected text".into()),
        CellFormat::IdNumber => {
            let s = match cell {
                Cell::Number(x) if *x >= 1e15 => {
                    return Err("the ID number is stored as a number and has lost its last digits; format the column as text".into());
                }
                Cell::Number(x) if x.fract() == 0.0 && *x >= 0.0 => format!("{}", *x as u64),
                Cell::Text(s) => s.trim().to_owned(),
                _ => return Err("expected an ID number".into()),
            };
            IdNumber::parse_at(&s, today)
                .map(|id| Value::String(id.as_str().to_owned()))
                .map_err(|e| id_message(&e))
        }
        CellFormat::Date => {
            let d = match cell {
                Cell::Date(d) => Some(*d),
                Cell::Text(s) => parse_ledger_date(s),
                Cell::Number(x) if x.fract() == 0.0 && (1e7..1e8).contains(x) => {
                    parse_ledger_date(&format!("{}", *x as u64))
                }
                _ => None,
            };
            d.map(|d| Value::String(date_string(d)))
                .ok_or_else(|| "expected a date such as 2024-01-31".into())
        }
        CellFormat::Money => {
            let v = match cell {
                Cell::Number(x) => Number::from_f64((x * 100.0).round() / 100.0)
                    .filter(|_| ((x * 100.0).round() / 100.0 - x).abs() < 1e-9)
                    .map(Value::Number),
                Cell::Text(s) => parse_money_text(&s.replace([',', '，'], "")),
                _ => None,
            };
            let v = v.ok_or("expected an amount of yuan with at most two decimals")?;
            check_money(&v)?;
            Ok(v)
        }
        CellFormat::Integer => match cell {
            Cell::Number(x) if x.fract() == 0.0 && *x >= 0.0 && *x < 1e15 => {
                Ok(Value::Number((*x as u64).into()))
            }
            Cell::Text(s) => s
                .trim()
                .parse::<u64>()
                .map(|n| Value::Number(n.into()))
                .map_err(|_| "expected a whole number".into()),
            _ => Err("expected a whole number".into()),
        },
        CellFormat::Number => match cell {
            Cell::Number(x) => Number::from_f64(*x)
                .map(Value::Number)
                .ok_or_else(|| "expected a number".into()),
            Cell::Text(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| "expected a number".into()),
            _ => Err("expected a number".into()),
        },
        CellFormat::Flag => match cell {
            Cell::Bool(b) => Ok(Value::Bool(*b)),
            Cell::Number(x) if *x == 1.0 || *x == 0.0 => Ok(Value::Bool(*x == 1.0)),
            Cell::Text(s) => match s.trim() {
                "是" | "Y" | "y" | "1" | "true" | "TRUE" => Ok(Value::Bool(true)),
                "否" | "N" | "n" | "0" | "false" | "FALSE" => Ok(Value::Bool(false)),
                _ => Err("expected 是 or 否".into()),
            },
            _ => Err("expected 是 or 否".into()),
        },
        CellFormat::CodeList { name, table, .. } => {
            let s = cell.text().unwrap_or_default();
            s.split(['、', ',', '，', ';', '；'])
                .map(normalise_header)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    table
                        .get(&p)
                        .map(|c| Value::String(c.clone()))
                        .ok_or_else(|| format!("an element is not a value of table {name}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        CellFormat::Codes { name, table, .. } => {
            let s = cell
                .text()
                .ok_or_else(|| format!("expected a value of table {name}"))?;
            table
                .get(&normalise_header(&s))
                .map(|c| Value::String(c.clone()))
                .ok_or_else(|| format!("not a value of table {name}"))
        }
    }
}

/// A row source: CSV or XLSX.
trait Rows {
    /// The next row: its number as the spreadsheet shows it, and its cells.
    fn next_row(&mut self) -> Option<Result<(u64, Vec<Cell>), RecordError>>;
}

struct CsvRows<R: Read> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    fallback_line: u64,
}

impl<R: Read> Rows for CsvRows<R> {
    fn next_row(&mut self) -> Option<Result<(u64, Vec<Cell>), RecordError>> {
        self.fallback_line += 1;
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => {
                let row = e.position().map_or(self.fallback_line, csv::Position::line);
                let mut err = RecordError::at("", "the CSV is malformed here (unbalanced quotes?)");
                err.row = Some(row);
                let _ = e;
                Some(Err(err))
            }
            Ok(true) => {
                let row = self
                    .record
                    .position()
                    .map_or(self.fallback_line, csv::Position::line);
                self.fallback_line = row;
                let cells = self
                    .record
                    .iter()
                    .map(|b| match std::str::from_utf8(b) {
                        Ok(s) if s.trim().is_empty() => Cell::Empty,
                        Ok(s) => Cell::Text(s.to_owned()),
                        Err(_) => Cell::Invalid(
                            "the cell is not UTF-8 text; save the ledger as \"CSV UTF-8\"",
                        ),
                    })
                    .collect();
                Some(Ok((row, cells)))
            }
        }
    }
}

struct XlsxRows {
    range: calamine::Range<Data>,
    next: usize,
}

fn xlsx_cell(d: &Data) -> Cell {
    match d {
        Data::Empty => Cell::Empty,
        Data::String(s) if s.trim().is_empty() => Cell::Empty,
        Data::String(s) => Cell::Text(s.clone()),
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Bool(*b),
        Data::DateTime(dt) => {
            let (y, m, day, ..) = dt.to_ymd_hms_milli();
            Month::try_from(m)
                .ok()
                .and_then(|m| Date::from_calendar_date(i32::from(y), m, day).ok())
                .map_or(Cell::Invalid("not a real date"), Cell::Date)
        }
        Data::DateTimeIso(s) => s
            .get(..10)
            .and_then(parse_date)
            .map_or(Cell::Invalid("not a real date"), Cell::Date),
        Data::DurationIso(_) => Cell::Invalid("a duration is not a ledger value"),
        Data::Error(_) => Cell::Invalid("the cell holds a spreadsheet error (#N/A, #VALUE!, …)"),
    }
}

impl Rows for XlsxRows {
    fn next_row(&mut self) -> Option<Result<(u64, Vec<Cell>), RecordError>> {
        let (start_row, _) = self.range.start()?;
        let width = self.range.width();
        if self.next >= self.range.height() {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let cells = (0..width)
            .map(|c| self.range.get((i, c)).map_or(Cell::Empty, xlsx_cell))
            .collect();
        Some(Ok((u64::from(start_row) + i as u64 + 1, cells)))
    }
}

/// Streams the cells of one sheet (calamine's cell reader), row by row.
struct XlsxStream<'a, 'b> {
    cells: XlsxCellReader<'a, Cursor<&'b [u8]>>,
    pending: Option<((u32, u32), Cell)>,
    done: bool,
}

fn xlsx_cell_ref(d: &DataRef<'_>) -> Cell {
    match d {
        DataRef::SharedString(s) if s.trim().is_empty() => Cell::Empty,
        DataRef::SharedString(s) => Cell::Text((*s).to_owned()),
        DataRef::String(s) if s.trim().is_empty() => Cell::Empty,
        DataRef::String(s) => Cell::Text(s.clone()),
        DataRef::Int(i) => Cell::Number(*i as f64),
        DataRef::Float(f) => Cell::Number(*f),
        DataRef::Bool(b) => Cell::Bool(*b),
        DataRef::DateTime(dt) => xlsx_cell(&Data::DateTime(*dt)),
        DataRef::DateTimeIso(s) => xlsx_cell(&Data::DateTimeIso(s.clone())),
        DataRef::DurationIso(_) => Cell::Invalid("a duration is not a ledger value"),
        DataRef::Error(_) => Cell::Invalid("the cell holds a spreadsheet error (#N/A, #VALUE!, …)"),
        DataRef::Empty => Cell::Empty,
    }
}

impl Rows for XlsxStream<'_, '_> {
    fn next_row(&mut self) -> Option<Result<(u64, Vec<Cell>), RecordError>> {
        let mut row: Option<u32> = None;
        let mut cells: Vec<Cell> = Vec::new();
        loop {
            let next = match self.pending.take() {
                Some(p) => Some(p),
                None if self.done => None,
                None => match self.cells.next_cell() {
                    Ok(Some(c)) => Some((c.get_position(), xlsx_cell_ref(c.get_value()))),
                    Ok(None) => {
                        self.done = true;
                        None
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(RecordError::at(
                            "",
                            format!("the sheet cannot be read further: {e}"),
                        )));
                    }
                },
            };
            let Some(((r, c), cell)) = next else {
                return row.map(|r| Ok((u64::from(r) + 1, cells)));
            };
            match row {
                Some(current) if current != r => {
                    self.pending = Some(((r, c), cell));
                    return Some(Ok((u64::from(current) + 1, cells)));
                }
                _ => {
                    row = Some(r);
                    let c = c as usize;
                    if c > 16_384 {
                        continue; // beyond Excel's last column: not a ledger cell
                    }
                    if cells.len() <= c {
                        cells.resize(c + 1, Cell::Empty);
                    }
                    cells[c] = cell;
                }
            }
        }
    }
}

/// An XLSX workbook opened for streaming: cells are converted as calamine
/// reads them, one row at a time, so memory stays bounded by one household
/// plus the workbook's shared-string table.
pub struct XlsxLedger<'b> {
    book: Xlsx<Cursor<&'b [u8]>>,
}

impl std::fmt::Debug for XlsxLedger<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxLedger").finish_non_exhaustive()
    }
}

impl<'b> XlsxLedger<'b> {
    /// Opens a workbook.
    pub fn open(bytes: &'b [u8]) -> Result<Self, Vec<RecordError>> {
        calamine::open_workbook_from_rs(Cursor::new(bytes))
            .map(|book| XlsxLedger { book })
            .map_err(|e| {
                vec![RecordError::at(
                    "",
                    format!("not a readable XLSX workbook: {e}"),
                )]
            })
    }

    /// The sheet names, in workbook order.
    pub fn sheet_names(&self) -> Vec<String> {
        self.book.sheet_names()
    }

    /// Streams the named sheet (or the first) through `mapping`.
    pub fn read<'s>(
        &'s mut self,
        mapping: &'s LedgerMapping,
        sheet: Option<&str>,
    ) -> Result<LedgerReader<'s>, Vec<RecordError>> {
        let fail = |m: String| vec![RecordError::at("", m)];
        let names = self.book.sheet_names();
        let name = match sheet {
            Some(s) if names.iter().any(|n| n == s) => s.to_owned(),
            Some(s) => return Err(fail(format!("the workbook has no sheet named {s:?}"))),
            None => names
                .first()
                .cloned()
                .ok_or_else(|| fail("the workbook has no sheets".into()))?,
        };
        let cells = self
            .book
            .worksheet_cells_reader(&name)
            .map_err(|e| fail(format!("sheet {name:?} cannot be read: {e}")))?;
        LedgerReader::new(
            Box::new(XlsxStream {
                cells,
                pending: None,
                done: false,
            }),
            mapping,
            Some(name),
        )
    }
}

/// One record read from a ledger, with where it came from. `Debug` leaves
/// out the record (personal data).
#[derive(Clone)]
pub struct LedgerRecord {
    /// The canonical record (not yet validated).
    pub record: Value,
    /// The sheet (XLSX), `None` for CSV.
    pub sheet: Option<String>,
    /// First and last spreadsheet row of the record.
    pub rows: (u64, u64),
    member_rows: Vec<u64>,
    headers: Arc<HashMap<String, String>>,
}

impl std::fmt::Debug for LedgerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerRecord")
            .field("sheet", &self.sheet)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl LedgerRecord {
    /// Places an error on the record's sheet, row and column from its JSON
    /// pointer (a member's field -> that member's row).
    pub fn locate(&self, mut error: RecordError) -> RecordError {
        let mut pattern = String::new();
        let mut row = self.rows.0;
        for t in error.path.split('/').skip(1) {
            if let Ok(i) = t.parse::<usize>() {
                pattern.push_str("[]");
                if pattern == "members[]" {
                    row = self.member_rows.get(i).copied().unwrap_or(row);
                }
                continue;
            }
            if !pattern.is_empty() {
                pattern.push('.');
            }
            pattern.push_str(&t.replace("~1", "/").replace("~0", "~"));
        }
        error.sheet.clone_from(&self.sheet);
        error.row = Some(row);
        error.column = self.headers.get(&pattern).cloned();
        error
    }

    /// Validates the record against its dataset, placing every error on its
    /// row and column.
    pub fn validate(self, dataset: &Dataset) -> Result<Validated, Vec<RecordError>> {
        let LedgerRecord {
            record,
            sheet,
            rows,
            member_rows,
            headers,
        } = self;
        let this = LedgerRecord {
            record: Value::Null,
            sheet,
            rows,
            member_rows,
            headers,
        };
        dataset
            .validate(record)
            .map_err(|errs| errs.into_iter().map(|e| this.locate(e)).collect())
    }
}

/// A streaming ledger reader: an iterator of records (or of each record's
/// errors).
pub struct LedgerReader<'m> {
    rows: Box<dyn Rows + 'm>,
    mapping: &'m LedgerMapping,
    sheet: Option<String>,
    /// Cell index of each mapping column (None if the column is absent).
    index: Vec<Option<usize>>,
    ignored: Vec<String>,
    headers: Arc<HashMap<String, String>>,
    pending: Option<(u64, Vec<Cell>)>,
    seen: HashSet<String>,
    today: Date,
    done: bool,
}

/// Most rows one household may span.
const MAX_GROUP_ROWS: usize = 50;
/// Rows searched for the header row.
const HEADER_SEARCH_ROWS: usize = 10;

/// Reads a CSV ledger (UTF-8, comma-separated, header row with Chinese
/// headers). Fails early if the header row lacks a required column.
pub fn read_csv<'m, R: Read + 'm>(
    input: R,
    mapping: &'m LedgerMapping,
) -> Result<LedgerReader<'m>, Vec<RecordError>> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let rows = CsvRows {
        reader,
        record: csv::ByteRecord::new(),
        fallback_line: 0,
    };
    LedgerReader::new(Box::new(rows), mapping, None)
}

/// Reads an XLSX ledger: the named sheet, or the first one. The sheet is
/// loaded whole (simple, one call); [`XlsxLedger`] streams it instead.
pub fn read_xlsx<'m>(
    bytes: &[u8],
    mapping: &'m LedgerMapping,
    sheet: Option<&str>,
) -> Result<LedgerReader<'m>, Vec<RecordError>> {
    let fail = |m: String| vec![RecordError::at("", m)];
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e| fail(format!("not a readable XLSX workbook: {e}")))?;
    let names = book.sheet_names();
    let name = match sheet {
        Some(s) if names.iter().any(|n| n == s) => s.to_owned(),
        Some(s) => return Err(fail(format!("the workbook has no sheet named {s:?}"))),
        None => names
            .first()
            .cloned()
            .ok_or_else(|| fail("the workbook has no sheets".into()))?,
    };
    let range = book
        .worksheet_range(&name)
        .map_err(|e| fail(format!("sheet {name:?} cannot be read: {e}")))?;
    LedgerReader::new(Box::new(XlsxRows { range, next: 0 }), mapping, Some(name))
}

impl<'m> LedgerReader<'m> {
    fn new(
        mut rows: Box<dyn Rows + 'm>,
        mapping: &'m LedgerMapping,
        sheet: Option<String>,
    ) -> Result<Self, Vec<RecordError>> {
        let located = |row: Option<u64>, column: Option<String>, m: String| {
            let mut e = RecordError::at("", m);
            e.sheet.clone_from(&sheet);
            e.row = row;
            e.column = column;
            e
        };
        // (columns found, row number, cell index per column, header cells)
        type Candidate = (usize, u64, Vec<Option<usize>>, Vec<Cell>);
        let mut best: Option<Candidate> = None;
        let mut searched = 0;
        while searched < HEADER_SEARCH_ROWS {
            let Some(next) = rows.next_row() else { break };
            let (row, cells) = next.map_err(|mut e| {
                e.sheet.clone_from(&sheet);
                vec![e]
            })?;
            if cells.iter().all(Cell::is_empty) {
                continue;
            }
            searched += 1;
            let names: Vec<String> = cells
                .iter()
                .map(|c| c.text().map(|t| normalise_header(&t)).unwrap_or_default())
                .collect();
            let index: Vec<Option<usize>> = mapping
                .columns
                .iter()
                .map(|c| {
                    names
                        .iter()
                        .position(|n| *n == c.header || c.aliases.contains(n))
                })
                .collect();
            let found = index.iter().filter(|i| i.is_some()).count();
            let complete = mapping
                .columns
                .iter()
                .zip(&index)
                .all(|(c, i)| !c.required || i.is_some());
            if best.as_ref().is_none_or(|b| found > b.0) {
                best = Some((found, row, index, cells));
            }
            if complete {
                break;
            }
        }
        let Some((_, header_row, index, cells)) = best else {
            return Err(vec![located(None, None, "the ledger has no rows".into())]);
        };
        let mut errors = Vec::new();
        if cells.iter().any(|c| matches!(c, Cell::Invalid(_))) {
            errors.push(located(
                Some(header_row),
                None,
                "the header row is not UTF-8 text; save the ledger as \"CSV UTF-8\"".into(),
            ));
        }
        for (c, i) in mapping.columns.iter().zip(&index) {
            if c.required && i.is_none() {
                errors.push(located(
                    Some(header_row),
                    Some(c.header.clone()),
                    format!("missing required column {}", c.header),
                ));
            }
        }
        for (ci, a) in index.iter().enumerate() {
            if let Some(a) = a
                && index[..ci].contains(&Some(*a))
            {
                errors.push(located(
                    Some(header_row),
                    Some(mapping.columns[ci].header.clone()),
                    "one cell matches two columns".into(),
                ));
            }
        }
        let mut seen_headers = HashSet::new();
        for c in &cells {
            if let Some(t) = c
                .text()
                .map(|t| normalise_header(&t))
                .filter(|t| !t.is_empty())
                && !seen_headers.insert(t.clone())
                && mapping
                    .columns
                    .iter()
                    .any(|m| m.header == t || m.aliases.contains(&t))
            {
                errors.push(located(
                    Some(header_row),
                    Some(t),
                    "the column appears twice".into(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ignored = cells
            .iter()
            .enumerate()
            .filter(|(i, _)| !index.contains(&Some(*i)))
            .filter_map(|(_, c)| c.text().filter(|t| !t.trim().is_empty()))
            .collect();
        let headers = Arc::new(
            mapping
                .columns
                .iter()
                .map(|c| (c.field.clone(), c.header.clone()))
                .collect(),
        );
        Ok(LedgerReader {
            rows,
            mapping,
            sheet,
            index,
            ignored,
            headers,
            pending: None,
            seen: HashSet::new(),
            today: OffsetDateTime::now_utc().date(),
            done: false,
        })
    }

    /// Header cells of columns the mapping does not know (ignored).
    pub fn ignored_columns(&self) -> &[String] {
        &self.ignored
    }

    /// The sheet being read (XLSX).
    pub fn sheet(&self) -> Option<&str> {
        self.sheet.as_deref()
    }

    fn cell<'c>(&self, cells: &'c [Cell], column: usize) -> &'c Cell {
        self.index[column]
            .and_then(|i| cells.get(i))
            .unwrap_or(&Cell::Empty)
    }

    fn error(
        &self,
        row: u64,
        column: Option<&Column>,
        path: String,
        message: String,
    ) -> RecordError {
        RecordError {
            path,
            message,
            sheet: self.sheet.clone(),
            row: Some(row),
            column: column.map(|c| c.header.clone()),
        }
    }

    fn next_nonempty_row(&mut self) -> Option<Result<(u64, Vec<Cell>), RecordError>> {
        if let Some(p) = self.pending.take() {
            return Some(Ok(p));
        }
        loop {
            match self.rows.next_row()? {
                Ok((_, cells)) if cells.iter().all(Cell::is_empty) => continue,
                Err(mut e) => {
                    e.sheet.clone_from(&self.sheet);
                    return Some(Err(e));
                }
                ok => return Some(ok),
            }
        }
    }

    fn group_key(&self, cells: &[Cell]) -> Option<String> {
        self.mapping
            .group_by
            .and_then(|g| self.cell(cells, g).text())
            .filter(|s| !s.is_empty())
    }

    fn build(&self, group: &[(u64, Vec<Cell>)]) -> Result<LedgerRecord, Vec<RecordError>> {
        let mut out = Value::Object(Map::new());
        let mut errors = Vec::new();
        let mut member_rows = Vec::new();
        let mut first_values: Vec<Option<Value>> = vec![None; self.mapping.columns.len()];
        for (gi, (row, cells)) in group.iter().enumerate() {
            let has_member = self
                .mapping
                .columns
                .iter()
                .enumerate()
                .any(|(ci, c)| c.member && !self.cell(cells, ci).is_empty());
            let member_index = member_rows.len();
            if has_member {
                member_rows.push(*row);
            }
            for (ci, col) in self.mapping.columns.iter().enumerate() {
                let cell = self.cell(cells, ci);
                if col.member && !has_member {
                    continue;
                }
                if cell.is_empty() {
                    // An empty list cell on the household's row is an empty list.
                    if gi == 0 && !col.member && matches!(col.format, CellFormat::CodeList { .. }) {
                        set_at(&mut out, &col.segs, member_index, Value::Array(Vec::new()));
                    }
                    continue;
                }
                let mut pointer = String::new();
                for s in &col.segs {
                    match s {
                        Seg::Key(k) => push_token(&mut pointer, k),
                        Seg::Each => push_index(&mut pointer, member_index),
                    }
                }
                let value = match convert(&col.format, cell, self.today) {
                    Ok(v) => v,
                    Err(m) => {
                        errors.push(self.error(*row, Some(col), pointer, m));
                        continue;
                    }
                };
                if !col.member && gi > 0 {
                    match &first_values[ci] {
                        Some(first) if *first != value => errors.push(self.error(
                            *row,
                            Some(col),
                            pointer,
                            format!("differs from the household's first row {}", group[0].0),
                        )),
                        _ => {}
                    }
                    continue;
                }
                if !col.member {
                    first_values[ci] = Some(value.clone());
                }
                set_at(&mut out, &col.segs, member_index, value);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let first = group.first().map_or(0, |g| g.0);
        let last = group.last().map_or(0, |g| g.0);
        Ok(LedgerRecord {
            record: out,
            sheet: self.sheet.clone(),
            rows: (first, last),
            member_rows,
            headers: self.headers.clone(),
        })
    }
}

fn set_at(root: &mut Value, segs: &[Seg], member: usize, value: Value) {
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match seg {
            Seg::Key(k) => {
                let Value::Object(map) = cur else { return };
                if last {
                    map.insert(k.clone(), value);
                    return;
                }
                let next_is_each = matches!(segs.get(i + 1), Some(Seg::Each));
                cur = map.entry(k.clone()).or_insert_with(|| {
                    if next_is_each {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(Map::new())
                    }
                });
            }
            Seg::Each => {
                let Value::Array(items) = cur else { return };
                while items.len() <= member {
                    items.push(Value::Object(Map::new()));
                }
                if last {
                    items[member] = value;
                    return;
                }
                cur = &mut items[member];
            }
        }
    }
}

impl Iterator for LedgerReader<'_> {
    type Item = Result<LedgerRecord, Vec<RecordError>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let first = match self.next_nonempty_row() {
            None => {
                self.done = true;
                return None;
            }
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(vec![e]));
            }
            Some(Ok(r)) => r,
        };
        let Some(g) = self.mapping.group_by else {
            return Some(self.build(std::slice::from_ref(&first)));
        };
        let Some(key) = self.group_key(&first.1) else {
            let col = &self.mapping.columns[g];
            return Some(Err(vec![self.error(
                first.0,
                Some(col),
                format!("/{}", col.field),
                "empty: every row names its household".into(),
            )]));
        };
        let mut group = vec![first];
        let mut trouble = Vec::new();
        loop {
            match self.next_nonempty_row() {
                None => break,
                Some(Err(e)) => {
                    self.done = true;
                    trouble.push(e);
                    break;
                }
                Some(Ok(r)) => {
                    if self.group_key(&r.1).as_deref() == Some(key.as_str()) {
                        if group.len() >= MAX_GROUP_ROWS {
                            let col = &self.mapping.columns[g];
                            trouble.push(self.error(
                                r.0,
                                Some(col),
                                String::new(),
                                format!("a household spans at most {MAX_GROUP_ROWS} rows"),
                            ));
                            continue;
                        }
                        group.push(r);
                    } else {
                        self.pending = Some(r);
                        break;
                    }
                }
            }
        }
        if !self.seen.insert(key) {
            let col = &self.mapping.columns[g];
            trouble.push(self.error(
                group[0].0,
                Some(col),
                format!("/{}", col.field),
                "this household already appeared in earlier rows; keep a household's rows together".into(),
            ));
        }
        let built = self.build(&group);
        if trouble.is_empty() {
            Some(built)
        } else {
            if let Err(mut e) = built {
                trouble.append(&mut e);
            }
            Some(Err(trouble))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn every_builtin_ledger_mapping_compiles() {
        for (name, text) in BUILTIN_LEDGER_MAPPINGS {
            let m = LedgerMapping::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.dataset(), *name);
        }
    }

    #[test]
    fn ledger_dates_in_common_spellings() {
        for s in [
            "2024-01-05",
            "2024/1/5",
            "2024.01.05",
            "20240105",
            "2024年1月5日",
        ] {
            assert_eq!(parse_ledger_date(s), Some(date!(2024 - 01 - 05)), "{s}");
        }
        for s in ["2024-02-30", "24/1/5", "2024-1", "", "二〇二四年"] {
            assert_eq!(parse_ledger_date(s), None, "{s}");
        }
    }

    #[test]
    fn id_numbers_stored_as_numbers_are_refused() {
        let today = date!(2026 - 11 - 28);
        assert!(
            convert(
                &CellFormat::IdNumber,
                &Cell::Number(441702198001010017.0),
                today
            )
            .is_err()
        );
        // A 15-digit legacy number survives as a number and converts.
        assert_eq!(
            convert(
                &CellFormat::IdNumber,
                &Cell::Number(441702800101001.0),
                today
            ),
            Ok(Value::String("441702198001010017".into()))
        );
    }
}
