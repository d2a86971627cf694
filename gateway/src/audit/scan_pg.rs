//! Verification's read path for PostgreSQL: the events as one binary `COPY`
//! stream, parsed on the hashing thread.
//!
//! Read as query rows, every event was a sqlx row of sixteen values,
//! each column fetched through a typed, checked accessor on the hashing
//! thread: the client spent about twice the hashing's CPU on rows. `COPY
//! (SELECT …) TO STDOUT (FORMAT binary)` streams the same rows in the same
//! `(log_id, seq)` order as length-prefixed fields; the reading task only
//! forwards the chunks, and the hashing thread takes each row's columns
//! straight from them ([`RawColumns`], the event bytes the writer hashed)
//! and feeds the [`Verifier`].
//!
//! The format (PostgreSQL's documentation, "COPY", "Binary Format"): an
//! 11-byte signature, a 32-bit flags field and a header extension of a
//! given length; then per row a 16-bit field count and, per field, a
//! 32-bit length (-1 for NULL) and that many bytes; then a field count of
//! -1. Text is its UTF-8 bytes, `BIGINT` eight bytes big-endian, `BYTEA`
//! its bytes.

use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;

use super::AuditError;
use super::record::{RawColumns, context_ref};
use super::store::EVENT_COLUMNS;
use super::verify::{RowKey, Verifier, count_subjects, stored_hashes};

/// Bytes of `COPY` data handed to the hashing thread at a time.
const BATCH_BYTES: usize = 256 * 1024;

/// Batches in flight (bounds memory to about this many times
/// [`BATCH_BYTES`]).
const BATCHES_IN_FLIGHT: usize = 4;

/// The binary `COPY` signature.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Columns per row ([`EVENT_COLUMNS`]).
const COLUMNS: usize = 16;

/// Feeds every event in `pool` to `v`, in `(log_id, seq)` order.
pub(crate) async fn feed(pool: &PgPool, v: Verifier) -> Result<Verifier, AuditError> {
    let sql = format!(
        "COPY (SELECT {EVENT_COLUMNS} FROM audit_events ORDER BY log_id, seq) \
         TO STDOUT (FORMAT binary)"
    );
    let mut stream = pool.copy_out_raw(&sql).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(BATCHES_IN_FLIGHT);
    let hasher = tokio::task::spawn_blocking(move || -> Result<Verifier, AuditError> {
        let mut p = Parser::new(v);
        while let Some(batch) = rx.blocking_recv() {
            for chunk in batch {
                p.push(&chunk)?;
            }
        }
        p.finish()
    });
    let mut batch = Vec::new();
    let mut size = 0;
    let mut read: Result<(), AuditError> = Ok(());
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                size += chunk.len();
                batch.push(chunk);
                if size >= BATCH_BYTES {
                    size = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        // The hashing thread stopped on an error: it
                        // reports it below.
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                read = Err(e.into());
                break;
            }
        }
    }
    if read.is_ok() && !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let parsed = hasher
        .await
        .map_err(|_| AuditError::Io(std::io::Error::other("the verification thread failed")))?;
    read?;
    parsed
}

/// Parses the `COPY` stream, whatever its chunking, and feeds the rows.
struct Parser {
    v: Verifier,
    /// An incomplete row carried over to the next chunk.
    carry: Vec<u8>,
    header_read: bool,
    trailer_read: bool,
    scratch: Vec<u8>,
}

impl Parser {
    fn new(v: Verifier) -> Self {
        Parser {
            v,
            carry: Vec::new(),
            header_read: false,
            trailer_read: false,
            scratch: Vec::with_capacity(4096),
        }
    }

    /// Takes the next chunk of the stream.
    fn push(&mut self, chunk: &[u8]) -> Result<(), AuditError> {
        if self.carry.is_empty() {
            // PostgreSQL sends a row per message: usually nothing is
            // carried and rows are read where they arrived.
            let used = self.parse(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            let used = self.parse(&data)?;
            data.drain(..used);
            self.carry = data;
        }
        Ok(())
    }

    /// The verifier, once the whole stream has been read.
    fn finish(self) -> Result<Verifier, AuditError> {
        if !self.trailer_read || !self.carry.is_empty() {
            return Err(AuditError::Corrupt(
                "the audit events' COPY stream ended early",
            ));
        }
        Ok(self.v)
    }

    /// Reads the header and whole rows from `data`; returns how many bytes
    /// it used (the rest is an incomplete row).
    fn parse(&mut self, data: &[u8]) -> Result<usize, AuditError> {
        let mut pos = 0;
        if !self.header_read {
            let Some(fixed) = data.get(..SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if &fixed[..SIGNATURE.len()] != SIGNATURE {
                return Err(AuditError::Corrupt(
                    "the audit events' COPY stream has no binary header",
                ));
            }
            let ext = be_u32(&fixed[SIGNATURE.len() + 4..]) as usize;
            pos = fixed.len() + ext;
            if data.len() < pos {
                return Ok(0);
            }
            self.header_read = true;
        }
        loop {
            let rest = &data[pos..];
            if self.trailer_read {
                if !rest.is_empty() {
                    return Err(AuditError::Corrupt(
                        "the audit events' COPY stream goes on after its end",
                    ));
                }
                return Ok(pos);
            }
            let Some(count) = rest.get(..2) else {
                return Ok(pos);
            };
            match i16::from_be_bytes([count[0], count[1]]) {
                -1 => {
                    self.trailer_read = true;
                    pos += 2;
                    continue;
                }
                n if n as usize == COLUMNS => {}
                _ => {
                    return Err(AuditError::Corrupt(
                        "an audit row in COPY has the wrong number of columns",
                    ));
                }
            }
            let mut at = 2;
            let mut fields: [&[u8]; COLUMNS] = [&[]; COLUMNS];
            for f in &mut fields {
                let Some(len) = rest.get(at..at + 4) else {
                    return Ok(pos);
                };
                let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                at += 4;
                let Ok(len) = usize::try_from(len) else {
                    return Err(AuditError::Corrupt(
                        "an audit row in COPY has a NULL column",
                    ));
                };
                let Some(value) = rest.get(at..at + len) else {
                    return Ok(pos);
                };
                *f = value;
                at += len;
            }
            self.row(&fields)?;
            pos += at;
        }
    }

    /// Checks one row (columns in [`EVENT_COLUMNS`] order).
    fn row(&mut self, f: &[&[u8]; COLUMNS]) -> Result<(), AuditError> {
        let cols = RawColumns {
            log_id: f[0],
            seq: int(f[1])? as u64,
            event_id: f[2],
            time_ms: int(f[3])?,
            kind: f[4],
            department: f[5],
            client_id: f[6],
            datasets: f[7],
            purpose: f[8],
            decision: f[9],
            status: int(f[10])?,
            subjects: f[11],
            body: f[12],
        };
        let (Ok(log_id), Ok(event_id)) = (std::str::from_utf8(f[0]), std::str::from_utf8(f[2]))
        else {
            return Err(AuditError::Corrupt(
                "an audit row's log_id or event_id is not UTF-8 text",
            ));
        };
        let stored = stored_hashes([f[13], f[14], f[15]]);
        let leaf = cols.leaf_for(stored.as_ref().ok().map(|[l, _, _]| l), &mut self.scratch);
        let key = RowKey {
            log_id,
            seq: cols.seq,
            event_id,
            subjects: count_subjects(cols.subjects),
            context: context_ref(cols.body),
        };
        self.v.check(&key, stored, leaf);
        Ok(())
    }
}

/// A `BIGINT` column.
fn int(b: &[u8]) -> Result<i64, AuditError> {
    <[u8; 8]>::try_from(b)
        .map(i64::from_be_bytes)
        .map_err(|_| AuditError::Corrupt("an audit row's integer column in COPY is not 8 bytes"))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::audit::VerifyOptions;
    use crate::audit::record::{GENESIS, chain_hash};
    use crate::audit::store::IndexState;

    /// A binary `COPY` stream of `n` chained events of log `gw-a`, as
    /// PostgreSQL would send it for [`feed`]'s query.
    fn stream(n: u64) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        // A header extension of 3 bytes, which readers must skip.
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        let mut prev = GENESIS;
        let mut buf = Vec::new();
        for seq in 0..n {
            let event_id = format!("ev-{seq}");
            let body = format!("{{\"n\":{seq}}}");
            let cols = RawColumns {
                log_id: b"gw-a",
                seq,
                event_id: event_id.as_bytes(),
                time_ms: 1_700_000_000_000 + seq as i64,
                kind: b"access",
                department: b"education",
                client_id: b"edu-1",
                datasets: b"assistance-enrolment",
                purpose: b"student-aid",
                decision: b"allow",
                status: 200,
                subjects: b"",
                body: body.as_bytes(),
            };
            let leaf = cols.leaf_for(None, &mut buf);
            let hash = chain_hash(&prev, &leaf);
            let seq_be = (seq as i64).to_be_bytes();
            let time_be = cols.time_ms.to_be_bytes();
            let status_be = cols.status.to_be_bytes();
            let fields: [&[u8]; COLUMNS] = [
                cols.log_id,
                &seq_be,
                cols.event_id,
                &time_be,
                cols.kind,
                cols.department,
                cols.client_id,
                cols.datasets,
                cols.purpose,
                cols.decision,
                &status_be,
                cols.subjects,
                cols.body,
                &leaf,
                &prev,
                &hash,
            ];
            out.extend_from_slice(&(COLUMNS as i16).to_be_bytes());
            for f in fields {
                out.extend_from_slice(&(f.len() as i32).to_be_bytes());
                out.extend_from_slice(f);
            }
            prev = hash;
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn verifier() -> Verifier {
        let index = IndexState {
            watermark: Some(0),
            rows: 0,
            in_progress: 0,
        };
        Verifier::new(
            VerifyOptions::default(),
            Vec::new(),
            vec!["gw-a".to_owned()],
            BTreeMap::from([("gw-a".to_owned(), index)]),
            BTreeMap::new(),
            Default::default(),
        )
    }

    fn parse_in_chunks(data: &[u8], size: usize) -> Result<Verifier, AuditError> {
        let mut p = Parser::new(verifier());
        for chunk in data.chunks(size) {
            p.push(chunk)?;
        }
        p.finish()
    }

    #[test]
    fn rows_are_read_whatever_the_chunking() {
        let data = stream(25);
        for size in [1, 2, 7, 64, 1000, data.len()] {
            let report = parse_in_chunks(&data, size)
                .expect("a valid stream")
                .finish(Instant::now());
            assert!(report.ok, "chunks of {size}: {:?}", report.first_problem);
            assert_eq!(report.events, 25, "chunks of {size}");
        }
    }

    #[test]
    fn a_changed_column_is_named_at_its_row() {
        let mut data = stream(10);
        // `{"n":4}` becomes `{"n":5}` in event 4's body.
        let at = data
            .windows(7)
            .position(|w| w == b"{\"n\":4}")
            .expect("event 4's body");
        data[at + 5] = b'5';
        let report = parse_in_chunks(&data, 13)
            .expect("a valid stream")
            .finish(Instant::now());
        let p = report.first_problem.expect("a problem");
        assert_eq!(p.seq, Some(4));
        assert_eq!(p.kind, crate::audit::verify::ProblemKind::Modified);
    }

    #[test]
    fn a_malformed_stream_is_an_error_not_a_report() {
        let data = stream(3);
        // Cut short: no trailer.
        let cut = parse_in_chunks(&data[..data.len() - 5], 4);
        assert!(matches!(cut, Err(AuditError::Corrupt(m)) if m.contains("ended early")));
        // Not a binary COPY stream.
        let text = parse_in_chunks(b"gw-a\t0\tev-0\n\\.\n...........", 8);
        assert!(matches!(text, Err(AuditError::Corrupt(m)) if m.contains("binary header")));
        // A row with a column too few.
        let mut short = data.clone();
        let first_row = SIGNATURE.len() + 8 + 3;
        short[first_row..first_row + 2].copy_from_slice(&15i16.to_be_bytes());
        let wrong = parse_in_chunks(&short, 1000);
        assert!(matches!(wrong, Err(AuditError::Corrupt(m)) if m.contains("number of columns")));
    }
}
