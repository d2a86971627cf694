//! The stored form of an event and the exact bytes that are hashed.
//!
//! # Encoding (`GWA1`)
//!
//! The event bytes are the columns of one `audit_events` row, in this order,
//! each string as a 4-byte big-endian length followed by its UTF-8 bytes and
//! each integer as 8 bytes big-endian:
//!
//! ```text
//! "GWA1" | log_id | seq:u64 | event_id | time_ms:i64 | kind | department
//!        | client_id | datasets | purpose | decision | status:i64
//!        | subjects | body
//! ```
//!
//! `body` is the event's JSON exactly as stored; the hash covers those bytes
//! as they are, so no JSON canonicalisation is needed to verify, and the
//! indexed columns (department, client, …) are covered too, so editing one
//! of them to hide an event from a query is detected. Length prefixes make the
//! encoding unambiguous; `log_id` and `seq` bind the event to its position.
//!
//! Then, per event:
//! - `leaf_hash = SHA-256(0x00 || event bytes)` (the RFC 6962 leaf),
//! - `hash = SHA-256(prev_hash || leaf_hash)`, with `prev_hash` the previous
//!   event's `hash` in the same log, 32 zero bytes for `seq = 0`.

use aws_lc_rs::digest;

use super::event::AuditEvent;
use super::merkle::{Hash, leaf_hash};

/// The `prev_hash` of the first event of every log.
pub const GENESIS: Hash = [0u8; 32];

const MAGIC: &[u8; 4] = b"GWA1";

/// One row of `audit_events` minus the three hashes, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub log_id: &'a str,
    pub seq: u64,
    pub event_id: &'a str,
    pub time_ms: i64,
    pub kind: &'a str,
    pub department: &'a str,
    pub client_id: &'a str,
    pub datasets: &'a str,
    pub purpose: &'a str,
    pub decision: &'a str,
    pub status: i64,
    pub subjects: &'a str,
    pub body: &'a str,
}

/// The same, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub log_id: String,
    pub seq: u64,
    pub event_id: String,
    pub time_ms: i64,
    pub kind: String,
    pub department: String,
    pub client_id: String,
    pub datasets: String,
    pub purpose: String,
    pub decision: String,
    pub status: i64,
    pub subjects: String,
    pub body: String,
}

fn put_bytes(buf: &mut Vec<u8>, s: &[u8]) {
    // Strings are capped far below 4 GiB by the writer; saturate defensively.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s);
}

/// One row's hashed columns exactly as stored: the text columns as their
/// raw bytes. The one place the `GWA1` layout is written; verification of
/// an SQLite file encodes straight from SQLite's column buffers with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawColumns<'a> {
    pub log_id: &'a [u8],
    pub seq: u64,
    pub event_id: &'a [u8],
    pub time_ms: i64,
    pub kind: &'a [u8],
    pub department: &'a [u8],
    pub client_id: &'a [u8],
    pub datasets: &'a [u8],
    pub purpose: &'a [u8],
    pub decision: &'a [u8],
    pub status: i64,
    pub subjects: &'a [u8],
    pub body: &'a [u8],
}

impl RawColumns<'_> {
    /// Appends the event bytes to `buf` (which is not cleared).
    pub(crate) fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(MAGIC);
        put_bytes(buf, self.log_id);
        buf.extend_from_slice(&self.seq.to_be_bytes());
        put_bytes(buf, self.event_id);
        buf.extend_from_slice(&self.time_ms.to_be_bytes());
        put_bytes(buf, self.kind);
        put_bytes(buf, self.department);
        put_bytes(buf, self.client_id);
        put_bytes(buf, self.datasets);
        put_bytes(buf, self.purpose);
        put_bytes(buf, self.decision);
        buf.extend_from_slice(&self.status.to_be_bytes());
        put_bytes(buf, self.subjects);
        put_bytes(buf, self.body);
    }
}

impl RecordRef<'_> {
    /// Appends the event bytes to `buf` (which is not cleared).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        RawColumns {
            log_id: self.log_id.as_bytes(),
            seq: self.seq,
            event_id: self.event_id.as_bytes(),
            time_ms: self.time_ms,
            kind: self.kind.as_bytes(),
            department: self.department.as_bytes(),
            client_id: self.client_id.as_bytes(),
            datasets: self.datasets.as_bytes(),
            purpose: self.purpose.as_bytes(),
            decision: self.decision.as_bytes(),
            status: self.status,
            subjects: self.subjects.as_bytes(),
            body: self.body.as_bytes(),
        }
        .encode_into(buf);
    }

    /// The event bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(96 + self.body.len() + self.subjects.len());
        self.encode_into(&mut buf);
        buf
    }
}

impl Record {
    /// Borrows the fields.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            log_id: &self.log_id,
            seq: self.seq,
            event_id: &self.event_id,
            time_ms: self.time_ms,
            kind: &self.kind,
            department: &self.department,
            client_id: &self.client_id,
            datasets: &self.datasets,
            purpose: &self.purpose,
            decision: &self.decision,
            status: self.status,
            subjects: &self.subjects,
            body: &self.body,
        }
    }

    /// Builds the row for `event` at position `seq` of `log_id`. The event's
    /// `instance_id` must already be set.
    pub fn from_event(
        log_id: &str,
        seq: u64,
        event: &AuditEvent,
    ) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(event)?;
        Ok(Record {
            log_id: log_id.to_owned(),
            seq,
            event_id: event.event_id.to_string(),
            time_ms: event.time_ms,
            kind: event.kind.as_str().to_owned(),
            department: event.department.clone().unwrap_or_default(),
            client_id: event.client_id.clone().unwrap_or_default(),
            datasets: datasets_column(&event.datasets),
            purpose: event.purpose.clone().unwrap_or_default(),
            decision: event.decision.as_str().to_owned(),
            status: event.status.map(i64::from).unwrap_or(0),
            subjects: event
                .subjects
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            body,
        })
    }

    /// Parses event bytes back into a record (archives, per-person reports).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let rec = Record {
            log_id: r.string()?,
            seq: r.u64()?,
            event_id: r.string()?,
            time_ms: r.u64()? as i64,
            kind: r.string()?,
            department: r.string()?,
            client_id: r.string()?,
            datasets: r.string()?,
            purpose: r.string()?,
            decision: r.string()?,
            status: r.u64()? as i64,
            subjects: r.string()?,
            body: r.string()?,
        };
        r.0.is_empty().then_some(rec)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// The `datasets` column: `,a,b,` (so `,a,` finds dataset `a` exactly), or
/// the empty string.
pub fn datasets_column(datasets: &[String]) -> String {
    if datasets.is_empty() {
        return String::new();
    }
    let mut s = String::from(",");
    for d in datasets {
        s.push_str(&d.replace(',', "_"));
        s.push(',');
    }
    s
}

/// `SHA-256(prev_hash || leaf_hash)`.
pub fn chain_hash(prev: &Hash, leaf: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(leaf);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Leaf and chain hash of one record after `prev`; `buf` is scratch space.
pub fn hash_record(rec: &RecordRef<'_>, prev: &Hash, buf: &mut Vec<u8>) -> (Hash, Hash) {
    buf.clear();
    rec.encode_into(buf);
    let leaf = leaf_hash(buf);
    (leaf, chain_hash(prev, &leaf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::AuditEvent;

    #[test]
    fn encoding_round_trips_and_is_unambiguous() {
        let ev = AuditEvent::access("records.read")
            .client("edu-1", "education")
            .dataset("enrolments")
            .build();
        let rec = Record::from_event("gw-a", 7, &ev).expect("serialises");
        let bytes = rec.as_ref().encode();
        assert_eq!(Record::decode(&bytes).as_ref(), Some(&rec));
        assert!(Record::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_none());

        // Moving a character between adjacent columns changes the bytes.
        let mut a = rec.clone();
        a.department = "educatio".into();
        a.client_id = "nedu-1".into();
        assert_ne!(a.as_ref().encode(), bytes);
        // The position is bound.
        let mut b = rec.clone();
        b.seq = 8;
        assert_ne!(b.as_ref().encode(), bytes);
    }

    #[test]
    fn chain_links_to_previous() {
        let ev = AuditEvent::access("x").build();
        let rec = Record::from_event("l", 0, &ev).expect("serialises");
        let mut buf = Vec::new();
        let (leaf, h) = hash_record(&rec.as_ref(), &GENESIS, &mut buf);
        assert_eq!(h, chain_hash(&GENESIS, &leaf));
        let (_, h2) = hash_record(&rec.as_ref(), &h, &mut buf);
        assert_ne!(h, h2);
        assert_eq!(datasets_column(&["a".into(), "b,c".into()]), ",a,b_c,");
    }
}
