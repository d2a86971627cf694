//! Ledger import: CSV inline and XLSX written with rust_xlsxwriter, good rows
//! and every error with its exact sheet, row and column.

mod common;

use adapters::RecordError;
use adapters::domain::IdNumber;
use adapters::ledger::{LedgerMapping, LedgerRecord, XlsxLedger, read_csv, read_xlsx};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde_json::json;
use time::macros::date;

use common::{catalogue, synthetic};

const HEADER: &str = "救助对象编号,救助类别,行政区划代码,城乡类别,户主姓名,户主身份证号码,户籍地址,姓名,身份证号码,性别,出生日期,与户主关系,是否纳入保障,家庭人口数,保障人数,月保障金额,保障起始日期,保障状态,序号";

fn ids() -> (String, String, String) {
    let a = "441702198001010017".to_owned();
    let b = IdNumber::from_parts("441702", date!(1982 - 03 - 04), 2)
        .expect("id")
        .as_str()
        .to_owned();
    let c = IdNumber::from_parts("441781", date!(1950 - 10 - 01), 7)
        .expect("id")
        .as_str()
        .to_owned();
    (a, b, c)
}

fn ledger_csv() -> String {
    let (a, b, c) = ids();
    format!(
        "{HEADER}\n\
         SYN-A-0001,低保,441702,城市,陈甲,{a},广东省阳江市江城区示例路1号（合成数据）,陈甲,{a},男,1980-01-01,户主,是,2,2,1200.00,2024-01-01,正常,1\n\
         SYN-A-0001,,,,,,,林乙,{b},女,1982/3/4,配偶,是,,,,,,2\n\
         SYN-B-0002,低保边缘,441781,农村,李丙,{c},广东省阳江市阳春市样本街2号（合成数据）,李丙,{c},男,19501001,户主,是,1,1,0,2024年2月1日,正常,3\n"
    )
}

fn mapping() -> LedgerMapping {
    LedgerMapping::default_for("assistance-enrolment").expect("built-in mapping")
}

fn read_all(csv: &str, m: &LedgerMapping) -> Vec<Result<LedgerRecord, Vec<RecordError>>> {
    read_csv(csv.as_bytes(), m)
        .expect("header is fine")
        .collect()
}

fn assert_located(
    errors: &[RecordError],
    sheet: Option<&str>,
    row: u64,
    column: Option<&str>,
    path: &str,
) {
    assert!(
        errors.iter().any(|e| e.sheet.as_deref() == sheet
            && e.row == Some(row)
            && e.column.as_deref() == column
            && e.path == path),
        "no error at sheet {sheet:?} row {row} column {column:?} path {path}: {errors:#?}"
    );
}

#[test]
fn csv_rows_group_into_households_and_validate() {
    let m = mapping();
    let csv = ledger_csv();
    let reader = read_csv(csv.as_bytes(), &m).expect("header");
    assert_eq!(reader.ignored_columns(), ["序号"]);
    let records: Vec<LedgerRecord> = reader.map(|r| r.expect("row converts")).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].rows, (2, 3));
    assert_eq!(records[1].rows, (4, 4));
    let a = &records[0].record;
    assert_eq!(a["members"].as_array().expect("members").len(), 2);
    assert_eq!(a["members"][1]["birth_date"], "1982-03-04");
    assert_eq!(a["members"][1]["relation"], "10");
    assert_eq!(a["monthly_amount"], json!(1200));
    assert_eq!(records[1].record["valid_from"], "2024-02-01");
    let d = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset");
    for r in records {
        let v = r.validate(d).expect("valid");
        assert!(!v.subjects.is_empty());
    }
}

#[test]
fn title_rows_above_the_header_are_skipped_and_rows_keep_their_numbers() {
    let csv = format!("阳江市社会救助对象台账（合成数据）,,\n{}", ledger_csv());
    let m = mapping();
    let records: Vec<_> = read_all(&csv, &m)
        .into_iter()
        .map(|r| r.expect("ok"))
        .collect();
    assert_eq!(records[0].rows, (3, 4));
}

#[test]
fn missing_required_column_is_named() {
    let csv = ledger_csv().replacen(",身份证号码,", ",证件,", 1);
    let m = mapping();
    let Err(errors) = read_csv(csv.as_bytes(), &m) else {
        panic!("missing column accepted")
    };
    assert_located(&errors, None, 1, Some("身份证号码"), "");
    assert!(errors[0].message.contains("missing required column"));
}

#[test]
fn bad_id_number_is_reported_with_row_column_and_pointer() {
    let (_, b, _) = ids();
    let bad = format!("{}{}", &b[..17], if b.ends_with('1') { '2' } else { '1' });
    let csv = ledger_csv().replace(&b, &bad);
    let m = mapping();
    let results = read_all(&csv, &m);
    let errors = results[0].as_ref().expect_err("bad id");
    assert_located(errors, None, 3, Some("身份证号码"), "/members/1/id_number");
    assert!(!errors[0].message.contains(&bad[..12]));
    assert!(results[1].is_ok(), "the next household is still read");
}

#[test]
fn unparseable_cells_are_reported() {
    let csv = ledger_csv()
        .replace(",1200.00,", ",五百,")
        .replace(",1982/3/4,", ",1982/2/30,")
        .replace(",配偶,", ",表亲,");
    let m = mapping();
    let results = read_all(&csv, &m);
    let errors = results[0].as_ref().expect_err("bad cells");
    assert_located(errors, None, 2, Some("月保障金额"), "/monthly_amount");
    assert_located(errors, None, 3, Some("出生日期"), "/members/1/birth_date");
    assert_located(errors, None, 3, Some("与户主关系"), "/members/1/relation");
    assert_eq!(errors.len(), 3);
}

#[test]
fn a_household_cell_that_differs_on_a_later_row_is_an_error() {
    let csv = ledger_csv().replace(",配偶,是,,,,,,2", ",配偶,是,,,999.00,,,2");
    let m = mapping();
    let errors = read_all(&csv, &m).remove(0).expect_err("conflict");
    assert_located(&errors, None, 3, Some("月保障金额"), "/monthly_amount");
    assert!(errors[0].message.contains("first row 2"));
}

#[test]
fn a_household_split_over_distant_rows_and_an_empty_key_are_errors() {
    let lines: Vec<String> = ledger_csv().lines().map(str::to_owned).collect();
    let reordered = [
        lines[0].clone(),
        lines[1].clone(),
        lines[3].clone(),
        lines[2].clone(),
    ]
    .join("\n");
    let m = mapping();
    let results = read_all(&reordered, &m);
    assert_eq!(results.len(), 3);
    assert_located(
        results[2].as_ref().expect_err("split"),
        None,
        4,
        Some("救助对象编号"),
        "/enrolment_id",
    );

    let no_key = ledger_csv().replacen("SYN-B-0002,", ",", 1);
    let results = read_all(&no_key, &m);
    assert_located(
        results[1].as_ref().expect_err("empty key"),
        None,
        4,
        Some("救助对象编号"),
        "/enrolment_id",
    );
}

#[test]
fn validation_errors_are_placed_on_rows_and_columns() {
    let csv = ledger_csv().replace(",1982/3/4,", ",2100/3/4,");
    let m = mapping();
    let d = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset");
    let records: Vec<LedgerRecord> = read_all(&csv, &m)
        .into_iter()
        .map(|r| r.expect("converts"))
        .collect();
    let errors = records[0]
        .clone()
        .validate(d)
        .expect_err("future birth date");
    assert_located(&errors, None, 3, Some("出生日期"), "/members/1/birth_date");
}

#[test]
fn non_utf8_cells_are_reported() {
    let mut bytes = ledger_csv().into_bytes();
    let at = bytes
        .windows("陈甲".len())
        .position(|w| w == "陈甲".as_bytes())
        .expect("name");
    bytes[at] = 0xb3; // a GBK lead byte: not UTF-8
    let m = mapping();
    let results: Vec<_> = read_csv(&bytes[..], &m).expect("header").collect();
    let errors = results[0].as_ref().expect_err("bad encoding");
    assert!(
        errors.iter().any(|e| e.row == Some(2)
            && e.column.as_deref() == Some("户主姓名")
            && e.message.contains("UTF-8")),
        "{errors:#?}"
    );
}

fn xlsx(ids_as_number_on_row: Option<u32>) -> Vec<u8> {
    let (a, b, c) = ids();
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("低保台账").expect("name");
    ws.write_string(0, 0, "阳江市社会救助对象台账（合成数据）")
        .expect("write");
    let headers: Vec<&str> = HEADER.split(',').collect();
    for (i, h) in headers.iter().enumerate() {
        ws.write_string(1, i as u16, *h).expect("write");
    }
    let date_fmt = Format::new().set_num_format("yyyy-mm-dd");
    let rows: [[&str; 19]; 3] = [
        [
            "SYN-A-0001",
            "低保",
            "441702",
            "城市",
            "陈甲",
            &a,
            "广东省阳江市江城区示例路1号（合成数据）",
            "陈甲",
            &a,
            "男",
            "D1980-01-01",
            "户主",
            "是",
            "N2",
            "N2",
            "N1200.5",
            "D2024-01-01",
            "正常",
            "N1",
        ],
        [
            "SYN-A-0001",
            "",
            "",
            "",
            "",
            "",
            "",
            "林乙",
            &b,
            "女",
            "D1982-03-04",
            "配偶",
            "是",
            "",
            "",
            "",
            "",
            "",
            "N2",
        ],
        [
            "SYN-B-0002",
            "低保边缘",
            "441781",
            "农村",
            "李丙",
            &c,
            "广东省阳江市阳春市样本街2号（合成数据）",
            "李丙",
            &c,
            "男",
            "D1950-10-01",
            "户主",
            "否",
            "N1",
            "N1",
            "N0",
            "D2024-02-01",
            "正常",
            "N3",
        ],
    ];
    for (r, row) in rows.iter().enumerate() {
        let excel_row = r as u32 + 2;
        for (col, cell) in row.iter().enumerate() {
            let col = col as u16;
            if let Some(n) = cell.strip_prefix('N') {
                ws.write_number(excel_row, col, n.parse::<f64>().expect("number"))
                    .expect("write");
            } else if let Some(d) = cell.strip_prefix('D') {
                let dt = ExcelDateTime::parse_from_str(d).expect("date");
                ws.write_datetime_with_format(excel_row, col, &dt, &date_fmt)
                    .expect("write");
            } else if col == 8 && Some(excel_row + 1) == ids_as_number_on_row {
                ws.write_number(excel_row, col, cell.parse::<f64>().expect("digits"))
                    .expect("write");
            } else if !cell.is_empty() {
                ws.write_string(excel_row, col, *cell).expect("write");
            }
        }
    }
    wb.save_to_buffer().expect("xlsx")
}

#[test]
fn xlsx_ledgers_read_dates_numbers_and_validate() {
    let bytes = xlsx(None);
    let m = mapping();
    let reader = read_xlsx(&bytes, &m, None).expect("header");
    assert_eq!(reader.sheet(), Some("低保台账"));
    let records: Vec<LedgerRecord> = reader.map(|r| r.expect("converts")).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].rows, (3, 4));
    assert_eq!(records[0].sheet.as_deref(), Some("低保台账"));
    assert_eq!(records[0].record["monthly_amount"], json!(1200.5));
    assert_eq!(records[0].record["members"][1]["birth_date"], "1982-03-04");
    assert_eq!(records[1].record["members"][0]["enrolled"], false);
    let d = catalogue()
        .dataset("assistance-enrolment")
        .expect("dataset");
    // Household B enrols nobody while claiming 1 enrolled person: still schema-valid.
    for r in records {
        r.validate(d).expect("valid");
    }
}

#[test]
fn xlsx_id_numbers_stored_as_numbers_are_reported_on_their_cell() {
    let bytes = xlsx(Some(3));
    let m = mapping();
    let results: Vec<_> = read_xlsx(&bytes, &m, Some("低保台账"))
        .expect("header")
        .collect();
    let errors = results[0].as_ref().expect_err("number id");
    assert_located(
        errors,
        Some("低保台账"),
        3,
        Some("身份证号码"),
        "/members/0/id_number",
    );
    assert!(errors[0].message.contains("format the column as text"));
}

#[test]
fn xlsx_problems_with_the_file_itself() {
    let m = mapping();
    let Err(e) = read_xlsx(b"not a zip", &m, None) else {
        panic!("garbage accepted")
    };
    assert!(e[0].message.contains("XLSX"));
    let bytes = xlsx(None);
    let Err(e) = read_xlsx(&bytes, &m, Some("Sheet9")) else {
        panic!("missing sheet accepted")
    };
    assert!(e[0].message.contains("Sheet9"));
}

#[test]
fn every_dataset_round_trips_through_its_default_ledger() {
    for d in catalogue().datasets() {
        let m = LedgerMapping::default_for(d.id()).expect("mapping");
        let records = synthetic(d.id(), 30);
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(m.headers()).expect("csv");
        for r in &records {
            for row in m.to_rows(r) {
                w.write_record(&row).expect("csv");
            }
        }
        let bytes = w.into_inner().expect("csv");
        let read: Vec<_> = read_csv(&bytes[..], &m).expect("header").collect();
        assert_eq!(read.len(), records.len(), "{}", d.id());
        for (got, want) in read.into_iter().zip(records) {
            let got = got.unwrap_or_else(|e| panic!("{}: {e:#?}", d.id()));
            let got = got
                .validate(d)
                .unwrap_or_else(|e| panic!("{}: {e:#?}", d.id()));
            let want = d.validate(want).expect("valid");
            assert_eq!(got.record, want.record, "{}", d.id());
        }
    }
}

#[test]
fn streamed_xlsx_reads_exactly_like_the_whole_sheet() {
    let m = mapping();
    for bad_row in [None, Some(3)] {
        let bytes = xlsx(bad_row);
        let whole: Vec<_> = read_xlsx(&bytes, &m, None).expect("header").collect();
        let mut book = XlsxLedger::open(&bytes).expect("workbook");
        assert_eq!(book.sheet_names(), ["低保台账"]);
        let streamed: Vec<_> = book.read(&m, None).expect("header").collect();
        assert_eq!(whole.len(), streamed.len());
        for (w, s) in whole.iter().zip(&streamed) {
            match (w, s) {
                (Ok(w), Ok(s)) => {
                    assert_eq!(w.record, s.record);
                    assert_eq!(w.rows, s.rows);
                }
                (Err(w), Err(s)) => assert_eq!(w, s),
                _ => panic!("streamed and whole-sheet reads disagree"),
            }
        }
    }
    let Err(e) = XlsxLedger::open(b"PK garbage") else {
        panic!("garbage accepted")
    };
    assert!(e[0].message.contains("XLSX"));
}
