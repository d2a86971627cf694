//! Record lookups against an SQLite file through SQLite's C API (rusqlite),
//! without the async driver in between (connections:
//! [`crate::storage::sqlite_read`]).
//!
//! Through sqlx a match chunk's rows were stepped on the connection's
//! worker thread, every column value copied (`sqlite3_value_dup`) and each
//! row handed to the async side over a channel: for a 100k-ID match that
//! hand-off and the copies were a large share of the time. Here the
//! calling thread steps the query itself and builds each [`RecordText`]
//! straight from SQLite's buffers: a blocking thread for a match chunk, the
//! async worker itself for one person.

use adapters::domain::IdNumber;
use rusqlite::Connection;

use super::sqlite::json_array;
use super::{RecordText, RecordsError, stored_record};

/// [`super::sqlite::match_ids`] on `conn`, on this thread: `(index into
/// ids, record)` for every current, not withdrawn record about `ids[i]` in
/// `datasets`. Blocking.
pub(super) fn match_ids(
    conn: &Connection,
    ids: &[IdNumber],
    datasets: &[String],
) -> Result<Vec<(usize, RecordText)>, RecordsError> {
    let ids: Vec<&str> = ids.iter().map(IdNumber::as_str).collect();
    query(conn, &json_array(&ids)?, &json_array(datasets)?)
}

fn query(
    conn: &Connection,
    ids: &str,
    datasets: &str,
) -> Result<Vec<(usize, RecordText)>, RecordsError> {
    let mut stmt = conn.prepare_cached(super::sqlite::MATCH_SQL)?;
    let mut rows = stmt.query((ids, datasets))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let i: i64 = r.get(0)?;
        let i = usize::try_from(i).map_err(|_| RecordsError::Corrupt("match index"))?;
        let rec = stored_record(
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            text(r, 4, "region")?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            text(r, 8, "department")?,
            r.get(9)?,
        )?;
        out.push((i, rec));
    }
    Ok(out)
}

/// Column `i` as text, borrowed from SQLite's buffer.
fn text<'a>(
    r: &'a rusqlite::Row<'_>,
    i: usize,
    what: &'static str,
) -> Result<&'a str, RecordsError> {
    r.get_ref(i)?
        .as_str()
        .map_err(|_| RecordsError::Corrupt(what))
}
