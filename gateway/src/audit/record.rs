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
//! # Events naming many subjects (`GWA2`)
//!
//! An event whose `subjects` column names more than
//! [`SUBJECTS_LISTED_MAX`] subjects (a batch match names up to 100,000)
//! commits to them through a Merkle root instead of listing them: the same
//! layout with magic `"GWA2"` and, in place of the `subjects` string,
//!
//! ```text
//! subject_count:u64 | subjects_root (32 bytes)
//! ```
//!
//! where `subjects_root` is the RFC 6962 root (see `audit::merkle`) over the
//! column's space-separated parts in column order, each leaf
//! `SHA-256(0x00 || subject)`. The column is still stored whole and still
//! covered: change, add, drop or reorder one subject and the root, hence
//! the leaf hash, changes. What it buys is the per-person report: proving
//! that one access named a person takes the event bytes (about a kilobyte)
//! and that subject's path to the root (17 hashes at 100,000), where the
//! listed form needed every other subject's HMAC too (7 MB). Events naming
//! more subjects written before this form existed are `GWA1`; whoever
//! checks a stored row accepts either encoding (the magic keeps them
//! apart, and both commit to every column), see [`RecordRef::encode_for`].
//!
//! `body` is the stored body (below) exactly as stored; the hash covers those
//! bytes as they are, so no JSON canonicalisation is needed to verify, and the
//! indexed columns (department, client, …) are covered too, so editing one
//! of them to hide an event from a query is detected. Length prefixes make the
//! encoding unambiguous; `log_id` and `seq` bind the event to its position.
//!
//! # The stored body
//!
//! `body` is not the event's full JSON ([`AuditEvent`] as the API shows
//! it) but what the row's other columns do not already say: since the
//! columns are hashed too, repeating them in the body only made every event
//! longer to hash, write and keep (a person query's event ~1.9 KB → ~1.2 KB;
//! a 100,000-ID match's 7 MB of subject HMACs stored once instead of
//! twice). So the body
//! - leaves out `event_id`, `time_ms`, `kind`, `decision`, and, whenever the
//!   column gives them back exactly, `time` (the RFC 3339 form of
//!   `time_ms`), `instance_id` (= `log_id`), `client_id`, `department`,
//!   `purpose` (`None` ↔ empty column), `datasets` (no comma in a name),
//!   `status` (`None` ↔ 0) and `subjects` (space-separated);
//! - leaves out keys that are `null`, empty lists and a zero
//!   `records_disclosed`;
//! - writes `fields` compactly, as one string: runs of fields of one
//!   dataset as `dataset:path,path=treatment,…`, runs separated by a
//!   space, the treatment `clear` left out (`assistance-enrolment:category,
//!   head.name=mask:name monitoring-object:subject_type`); as
//!   `[field, treatment]` pairs when a name or treatment holds a space, a
//!   comma or `=`, and in bodies written before the compact form.
//!
//! # Contexts
//!
//! Most of a data decision's body is the same for every event of one client
//! under one plan: role, certificate fingerprint and serial, action, route,
//! legal basis, grant, disclosed fields, rule ids and policy version. Such
//! an event ([`Record::from_event_sharing`]: one with a client and disclosed
//! fields or rules) stores those keys once, as a context: a JSON object
//! whose id is hex `SHA-256("GWC1" || its bytes)` ([`context_id`]), kept in
//! `audit_contexts`. Its body then begins `{"context":"<id>",` and leaves the
//! context's keys out (a person query's event bytes ~1.0 KB → ~0.5 KB). The
//! event bytes cover the id, so the chain and the checkpoints cover the
//! context through it; verification checks every named context against its
//! id. The id is the body's first key so that [`context_ref`] finds it
//! without parsing.
//!
//! [`RecordRef::event`] puts the event back together from columns and body.
//! It reads bodies written before this form (the whole event, every key
//! present) as well: a key present in the body wins over its column, and
//! `fields` may be compact, pairs or objects. Either way the hash covers the bytes
//! as stored, so old and new events verify alike.
//!
//! Then, per event:
//! - `leaf_hash = SHA-256(0x00 || event bytes)` (the RFC 6962 leaf),
//! - `hash = SHA-256(prev_hash || leaf_hash)`, with `prev_hash` the previous
//!   event's `hash` in the same log, 32 zero bytes for `seq = 0`.

use aws_lc_rs::digest;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use super::event::{AuditEvent, EventKind, FieldDisclosure, Outcome, SubjectRef, rfc3339_ms};
use super::merkle::{
    CHUNK, Frontier, Hash, MerkleTree, hex32, leaf_hash, sha256, verify_inclusion,
};
use crate::identity::Role;

/// The `prev_hash` of the first event of every log.
pub const GENESIS: Hash = [0u8; 32];

const MAGIC: &[u8; 4] = b"GWA1";
const MAGIC_ROOTED: &[u8; 4] = b"GWA2";

/// Most subjects an event lists in its event bytes (`GWA1`); an event
/// naming more commits to them through a Merkle root (`GWA2`, see the module
/// documentation). At this size a listed proof is ~4.4 KB of HMACs; a path
/// to the root would be 6 hashes.
pub const SUBJECTS_LISTED_MAX: usize = 64;

/// How an event with many subjects commits to them (`GWA2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectsRoot {
    /// Subjects named.
    pub count: u64,
    /// RFC 6962 root over them, in column order.
    pub root: Hash,
}

impl SubjectsRoot {
    /// The root over a `subjects` column's space-separated parts.
    ///
    /// A match names up to 100,000 subjects, ~200,000 hashes that the audit
    /// writer computes before the match's answer may start: past two
    /// [`CHUNK`]s they are hashed on two threads, a chunk at a time. The
    /// tree over the chunks' roots (the last one possibly partial) is the
    /// tree over the leaves (see [`ChunkedTree`](super::merkle::ChunkedTree)).
    pub fn of_column(column: &[u8]) -> Self {
        let parts: Vec<&[u8]> = column.split(|b| *b == b' ').collect();
        let count = parts.len() as u64;
        if parts.len() <= 2 * CHUNK as usize {
            return SubjectsRoot {
                count,
                root: subtree_root(&parts),
            };
        }
        let chunks: Vec<&[&[u8]]> = parts.chunks(CHUNK as usize).collect();
        let (first, second) = chunks.split_at(chunks.len() / 2);
        let roots = |cs: &[&[&[u8]]]| cs.iter().map(|c| subtree_root(c)).collect::<Vec<_>>();
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| roots(first));
            let b = roots(second);
            // A hashing thread cannot panic short of a bug; hash here then.
            (other.join().unwrap_or_else(|_| roots(first)), b)
        });
        let mut f = Frontier::new();
        a.into_iter().chain(b).for_each(|r| f.push(r));
        SubjectsRoot {
            count,
            root: f.root(),
        }
    }

    /// The tree over a `subjects` column and the position of `subject` in
    /// it, to prove that the column names it.
    pub fn prove(column: &str, subject: &str) -> Option<SubjectProof> {
        let parts: Vec<&str> = column.split(' ').collect();
        let index = parts.iter().position(|p| *p == subject)? as u64;
        let tree = MerkleTree::from_leaves(parts.iter().map(|p| leaf_hash(p.as_bytes())).collect());
        let path = tree.inclusion_proof(index, parts.len() as u64).ok()?;
        Some(SubjectProof {
            subject: subject.to_owned(),
            index,
            path,
        })
    }
}

/// The RFC 6962 root over `parts` as leaves.
fn subtree_root(parts: &[&[u8]]) -> Hash {
    let mut f = Frontier::new();
    // `0x00 || subject` in one buffer and one-shot SHA-256: short leaves
    // cost less than through a hashing context each.
    let mut leaf = Vec::with_capacity(80);
    for part in parts {
        leaf.clear();
        leaf.push(0x00);
        leaf.extend_from_slice(part);
        f.push(sha256(&leaf));
    }
    f.root()
}

/// That a `GWA2` event names one subject: its position among the event's
/// subjects and the path from it to [`SubjectsRoot::root`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectProof {
    /// The subject as the `subjects` column spells it (`v<key version>:<hex>`).
    pub subject: String,
    /// Its position in the column.
    pub index: u64,
    /// Sibling hashes from the leaf up, hex.
    #[serde(with = "hex32::vec")]
    pub path: Vec<Hash>,
}

impl SubjectProof {
    /// Whether the path leads from the subject to `root`.
    pub fn verify(&self, root: &SubjectsRoot) -> bool {
        verify_inclusion(
            self.index,
            root.count,
            &leaf_hash(self.subject.as_bytes()),
            &self.path,
            &root.root,
        )
    }
}

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
/// raw bytes. The one place the event-bytes layouts (`GWA1`, `GWA2`) are written; verification of
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
    /// Whether the row's event bytes commit to its subjects by a root
    /// (`GWA2`): its `subjects` column names more than
    /// [`SUBJECTS_LISTED_MAX`].
    pub(crate) fn rooted(&self) -> bool {
        // Parts = spaces + 1. A person query's one HMAC has no space, which
        // a word-at-a-time search finds out before any byte is counted.
        self.subjects.contains(&b' ')
            && self.subjects.iter().filter(|b| **b == b' ').count() >= SUBJECTS_LISTED_MAX
    }

    /// Appends the event bytes to `buf` (which is not cleared): `GWA2` when
    /// [`RawColumns::rooted`], else `GWA1`.
    pub(crate) fn encode_into(&self, buf: &mut Vec<u8>) {
        self.encode_as(buf, self.rooted());
    }

    /// Writes into `buf` (cleared first) the event bytes of a stored row
    /// whose `leaf_hash` column is `stored`, and returns their leaf hash and
    /// whether they are `GWA2`: the bytes as [`RawColumns::encode_into`]
    /// writes them, or, for a rooted row written before `GWA2` existed, its
    /// `GWA1` bytes if those are what `stored` is the hash of. Either way a
    /// row whose columns changed gets a leaf that differs from `stored`.
    pub(crate) fn encode_stored(&self, stored: Option<&Hash>, buf: &mut Vec<u8>) -> (Hash, bool) {
        buf.clear();
        let rooted = self.rooted();
        self.encode_as(buf, rooted);
        let leaf = leaf_hash(buf);
        if rooted && stored.is_some_and(|s| *s != leaf) {
            buf.clear();
            self.encode_as(buf, false);
            let listed = leaf_hash(buf);
            if stored == Some(&listed) {
                return (listed, false);
            }
            // Changed since it was written: its bytes as they read now.
            buf.clear();
            self.encode_as(buf, true);
        }
        (leaf, rooted)
    }

    /// The leaf hash [`RawColumns::encode_stored`] gives; `buf` is scratch.
    pub(crate) fn leaf_for(&self, stored: Option<&Hash>, buf: &mut Vec<u8>) -> Hash {
        self.encode_stored(stored, buf).0
    }

    fn encode_as(&self, buf: &mut Vec<u8>, rooted: bool) {
        buf.extend_from_slice(if rooted { MAGIC_ROOTED } else { MAGIC });
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
        if rooted {
            let r = SubjectsRoot::of_column(self.subjects);
            buf.extend_from_slice(&r.count.to_be_bytes());
            buf.extend_from_slice(&r.root);
        } else {
            put_bytes(buf, self.subjects);
        }
        put_bytes(buf, self.body);
    }
}

impl<'a> RecordRef<'a> {
    /// The id of the context the row's body names, if it names one.
    pub fn context_id(&self) -> Option<&'a str> {
        context_ref(self.body.as_bytes()).and_then(|id| std::str::from_utf8(id).ok())
    }

    /// Appends the event bytes to `buf` (which is not cleared).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        self.raw().encode_into(buf);
    }

    /// The event bytes whose leaf hash is `stored` (the row's `leaf_hash`),
    /// and whether they commit to the subjects by a root (`GWA2`): the bytes
    /// as the writer encodes them now, or, for a row naming more than
    /// [`SUBJECTS_LISTED_MAX`] subjects written before `GWA2` existed, its
    /// listed (`GWA1`) bytes if those are what `stored` is the hash of. For
    /// proofs and archives, which hand the bytes out.
    pub fn encode_for(&self, stored: &Hash) -> (Vec<u8>, bool) {
        let mut buf = Vec::with_capacity(128 + self.body.len());
        let (_, rooted) = self.raw().encode_stored(Some(stored), &mut buf);
        (buf, rooted)
    }

    fn raw(&self) -> RawColumns<'a> {
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
    }

    /// The event bytes, as the writer hashes them now.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128 + self.body.len());
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
        let body = serde_json::to_string(&StoredBody {
            log_id,
            event,
            context: None,
        })?;
        Ok(Self::with_body(log_id, seq, event, body))
    }

    /// Builds the row for `event` as [`Record::from_event`] does, except
    /// that an event whose context keys other events share (a client's
    /// data decision: its certificate, route, legal basis, disclosed
    /// fields, rules and policy version) names its context by id instead of
    /// spelling them out. The context is returned beside the row; it must
    /// be stored (`audit_contexts`) in the same transaction as the row.
    pub fn from_event_sharing(
        log_id: &str,
        seq: u64,
        event: &AuditEvent,
    ) -> Result<(Self, Option<StoredContextRow>), serde_json::Error> {
        if !shares_context(event) {
            return Ok((Self::from_event(log_id, seq, event)?, None));
        }
        let context = serde_json::to_string(&StoredContext(event))?;
        let id = context_id(&context);
        let body = serde_json::to_string(&StoredBody {
            log_id,
            event,
            context: Some(&id),
        })?;
        Ok((
            Self::with_body(log_id, seq, event, body),
            Some(StoredContextRow { id, body: context }),
        ))
    }

    fn with_body(log_id: &str, seq: u64, event: &AuditEvent, body: String) -> Self {
        Record {
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
        }
    }

    /// Parses event bytes back into a record (archives, proofs). For `GWA2`
    /// bytes the record's `subjects` is empty and the root says what they
    /// commit to.
    pub fn decode(bytes: &[u8]) -> Option<(Self, Option<SubjectsRoot>)> {
        let mut r = Reader(bytes);
        let rooted = match r.take(4)? {
            m if m == MAGIC => false,
            m if m == MAGIC_ROOTED => true,
            _ => return None,
        };
        let mut root = None;
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
            subjects: if rooted {
                let count = r.u64()?;
                let hash = r.take(32)?.try_into().ok()?;
                // A rooted event names more than SUBJECTS_LISTED_MAX.
                if count <= SUBJECTS_LISTED_MAX as u64 {
                    return None;
                }
                root = Some(SubjectsRoot { count, root: hash });
                String::new()
            } else {
                r.string()?
            },
            body: r.string()?,
        };
        r.0.is_empty().then_some((rec, root))
    }
}

/// Serialises the stored body of `event` in log `log_id` (see the module
/// documentation): the keys its row's columns cannot give back.
struct StoredBody<'a> {
    log_id: &'a str,
    event: &'a AuditEvent,
    /// The id of the event's context, whose keys the body then leaves out.
    context: Option<&'a str>,
}

/// Serialises an event's context: the keys of its stored body that every
/// event of one client under one plan repeats (see the module
/// documentation), in the order and form [`StoredBody`] writes them.
struct StoredContext<'a>(&'a AuditEvent);

/// `fields` as the body and the context write them.
struct Pairs<'a>(&'a [FieldDisclosure]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|f| (f.field.as_str(), f.treatment.as_str())),
        )
    }
}

/// Writes the context keys of `e` into the map `m`.
fn serialize_context_keys<M: SerializeMap>(m: &mut M, e: &AuditEvent) -> Result<(), M::Error> {
    macro_rules! some {
        ($key:literal, $v:expr) => {
            if let Some(v) = &$v {
                m.serialize_entry($key, v)?;
            }
        };
    }
    some!("role", e.role);
    some!("cert_fingerprint", e.cert_fingerprint);
    some!("cert_serial", e.cert_serial);
    m.serialize_entry("action", &e.action)?;
    some!("route", e.route);
    some!("legal_basis", e.legal_basis);
    some!("grant_id", e.grant_id);
    if !e.fields.is_empty() {
        match compact_fields(&e.fields) {
            Some(c) => m.serialize_entry("fields", &c)?,
            None => m.serialize_entry("fields", &Pairs(&e.fields))?,
        }
    }
    if !e.rule_ids.is_empty() {
        m.serialize_entry("rule_ids", &e.rule_ids)?;
    }
    if let Some(v) = &e.policy_version {
        m.serialize_entry("policy_version", v)?;
    }
    Ok(())
}

impl Serialize for StoredContext<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        serialize_context_keys(&mut m, self.0)?;
        m.end()
    }
}

/// What a context's id is the hash of: this tag, then the context's bytes.
const CONTEXT_TAG: &[u8; 4] = b"GWC1";

/// The id of the context whose stored bytes are `body`: hex of
/// `SHA-256("GWC1" || body)`.
pub fn context_id(body: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(CONTEXT_TAG);
    ctx.update(body.as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// How a body that names a context begins: the context's id is its first
/// key.
const CONTEXT_PREFIX: &[u8] = b"{\"context\":\"";

/// The id of the context a stored body names, if it names one: the
/// writer puts it first, so this looks at the body's first bytes only
/// (verification does it for every event).
pub fn context_ref(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(CONTEXT_PREFIX)?;
    let id = rest.get(..64)?;
    (rest.get(64) == Some(&b'"')).then_some(id)
}

/// An event context as stored in `audit_contexts`: its id and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredContextRow {
    /// [`context_id`] of `body`.
    pub id: String,
    /// The context's keys as a JSON object.
    pub body: String,
}

/// Whether an event's body should name a context rather than spell out
/// the context keys: an authenticated client's data decision (it has
/// disclosed fields or rules). Other events (refused handshakes, health
/// checks, admin actions) are rare or vary too much for sharing to pay.
fn shares_context(e: &AuditEvent) -> bool {
    e.client_id.is_some() && (!e.fields.is_empty() || !e.rule_ids.is_empty())
}

/// A text column stores `None` as the empty string, so only `Some("")`
/// needs the body.
fn text_needs_body(v: &Option<String>) -> bool {
    v.as_deref() == Some("")
}

impl Serialize for StoredBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_map(None)?;
        // First, so that [`context_ref`] finds it by the body's first bytes.
        if let Some(id) = self.context {
            m.serialize_entry("context", id)?;
        }
        macro_rules! some {
            ($key:literal, $v:expr) => {
                if let Some(v) = &$v {
                    m.serialize_entry($key, v)?;
                }
            };
        }
        // What the columns hold only approximately.
        if e.time != rfc3339_ms(e.time_ms) {
            m.serialize_entry("time", &e.time)?;
        }
        if e.instance_id != self.log_id {
            m.serialize_entry("instance_id", &e.instance_id)?;
        }
        if text_needs_body(&e.client_id) {
            m.serialize_entry("client_id", &e.client_id)?;
        }
        if text_needs_body(&e.department) {
            m.serialize_entry("department", &e.department)?;
        }
        if text_needs_body(&e.purpose) {
            m.serialize_entry("purpose", &e.purpose)?;
        }
        if e.datasets.iter().any(|d| d.contains(',')) {
            m.serialize_entry("datasets", &e.datasets)?;
        }
        if e.status == Some(0) {
            m.serialize_entry("status", &e.status)?;
        }
        if e.subjects
            .iter()
            .any(|r| r.as_str().is_empty() || r.as_str().contains(' '))
        {
            m.serialize_entry("subjects", &e.subjects)?;
        }
        // What only the body (or its context) holds.
        some!("trace_id", e.trace_id);
        some!("source_addr", e.source_addr);
        some!("authorisation_ref", e.authorisation_ref);
        if e.records_disclosed != 0 {
            m.serialize_entry("records_disclosed", &e.records_disclosed)?;
        }
        if self.context.is_none() {
            serialize_context_keys(&mut m, e)?;
        }
        some!("latency_us", e.latency_us);
        some!("error_class", e.error_class);
        some!("reason", e.reason);
        m.end()
    }
}

/// A stored body as read: every key optional (the columns fill in what is
/// missing), in the current form or the earlier whole-event form.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BodyKeys {
    context: Option<String>,
    event_id: Option<Uuid>,
    time_ms: Option<i64>,
    time: Option<String>,
    kind: Option<EventKind>,
    instance_id: Option<String>,
    trace_id: Option<String>,
    client_id: Option<String>,
    department: Option<String>,
    role: Option<Role>,
    cert_fingerprint: Option<String>,
    cert_serial: Option<String>,
    source_addr: Option<String>,
    action: Option<String>,
    route: Option<String>,
    datasets: Option<Vec<String>>,
    purpose: Option<String>,
    legal_basis: Option<String>,
    grant_id: Option<String>,
    authorisation_ref: Option<String>,
    subjects: Option<Vec<SubjectRef>>,
    records_disclosed: u64,
    fields: StoredFields,
    decision: Option<Outcome>,
    rule_ids: Vec<String>,
    policy_version: Option<String>,
    status: Option<u16>,
    latency_us: Option<u64>,
    error_class: Option<String>,
    reason: Option<String>,
}

/// A stored context as read ([`StoredContext`]).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContextKeys {
    role: Option<Role>,
    cert_fingerprint: Option<String>,
    cert_serial: Option<String>,
    action: Option<String>,
    route: Option<String>,
    legal_basis: Option<String>,
    grant_id: Option<String>,
    fields: StoredFields,
    rule_ids: Vec<String>,
    policy_version: Option<String>,
}

/// A disclosed field as stored: a `[field, treatment]` pair, or (bodies
/// written before the pair form) an object.
#[derive(Deserialize)]
#[serde(untagged)]
enum FieldItem {
    Pair(String, String),
    Object(FieldDisclosure),
}

/// The treatment a compact `fields` item without `=` has.
const CLEAR: &str = "clear";

/// Characters that delimit the compact `fields` form.
fn delimits(c: char) -> bool {
    matches!(c, ' ' | ',' | '=')
}

/// `fields` in the compact form, if every field allows it: runs of fields
/// of one dataset as `dataset:path,path=treatment,…`, runs separated by a
/// space, `clear` left out. A person query's dozen fields take ~200 bytes
/// this way against ~550 as `[field, treatment]` pairs, and every event's
/// bytes are hashed when written and again by every verification. Fields
/// whose names or treatments hold a delimiter (never the gateway's own:
/// `dataset:path`, paths like `members[].id_number`, treatments like
/// `mask:name`) keep the pairs.
fn compact_fields(fields: &[FieldDisclosure]) -> Option<String> {
    let mut out = String::with_capacity(fields.len() * 24);
    let mut dataset: Option<&str> = None;
    for f in fields {
        let (d, path) = f.field.split_once(':')?;
        if d.is_empty() || path.is_empty() || f.treatment.is_empty() {
            return None;
        }
        if f.field.contains(delimits) || f.treatment.contains(delimits) {
            return None;
        }
        if dataset == Some(d) {
            out.push(',');
        } else {
            if dataset.is_some() {
                out.push(' ');
            }
            out.push_str(d);
            out.push(':');
            dataset = Some(d);
        }
        out.push_str(path);
        if f.treatment != CLEAR {
            out.push('=');
            out.push_str(&f.treatment);
        }
    }
    Some(out)
}

/// Reads the compact form back ([`compact_fields`]); `None` if it is not.
fn parse_compact_fields(s: &str) -> Option<Vec<FieldDisclosure>> {
    let mut out = Vec::new();
    for run in s.split(' ') {
        let (dataset, items) = run.split_once(':')?;
        if dataset.is_empty() {
            return None;
        }
        for item in items.split(',') {
            let (path, treatment) = item.split_once('=').unwrap_or((item, CLEAR));
            if path.is_empty() || treatment.is_empty() {
                return None;
            }
            out.push(FieldDisclosure {
                field: format!("{dataset}:{path}"),
                treatment: treatment.to_owned(),
            });
        }
    }
    Some(out)
}

/// A stored `fields` value: the compact string ([`compact_fields`]), or a
/// list of `[field, treatment]` pairs or (bodies written before the pair
/// form) objects.
#[derive(Default)]
struct StoredFields(Vec<FieldDisclosure>);

impl<'de> Deserialize<'de> for StoredFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StoredFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("disclosed fields, compact or listed")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StoredFields, E> {
                parse_compact_fields(s)
                    .map(StoredFields)
                    .ok_or_else(|| E::custom("fields: not the compact form"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StoredFields, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<FieldItem>()? {
                    out.push(match item {
                        FieldItem::Pair(field, treatment) => FieldDisclosure { field, treatment },
                        FieldItem::Object(f) => f,
                    });
                }
                Ok(StoredFields(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `None` for the empty string.
fn column_text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl RecordRef<'_> {
    /// The event this row stores, put back together from its columns and
    /// body (see the module documentation). The error says which part does
    /// not decode; `verify` tells whether the row was tampered with.
    ///
    /// `context` is the stored context the body names ([`context_ref`]),
    /// if it names one; it must hash to that id.
    pub fn event(&self, context: Option<&str>) -> Result<AuditEvent, &'static str> {
        let mut b: BodyKeys = serde_json::from_str(self.body)
            .map_err(|_| "an event body is not a stored event; run verify")?;
        if b.context.as_deref().map(str::as_bytes) != context_ref(self.body.as_bytes()) {
            return Err("an event body names its context out of place; run verify");
        }
        if let Some(id) = b.context.take() {
            let c = context.ok_or("an event's context is not stored; run verify")?;
            if context_id(c) != id {
                return Err("an event's context does not match its id; run verify");
            }
            let c: ContextKeys = serde_json::from_str(c)
                .map_err(|_| "an event context is not a stored context; run verify")?;
            b.role = b.role.or(c.role);
            b.cert_fingerprint = b.cert_fingerprint.or(c.cert_fingerprint);
            b.cert_serial = b.cert_serial.or(c.cert_serial);
            b.action = b.action.or(c.action);
            b.route = b.route.or(c.route);
            b.legal_basis = b.legal_basis.or(c.legal_basis);
            b.grant_id = b.grant_id.or(c.grant_id);
            if b.fields.0.is_empty() {
                b.fields = c.fields;
            }
            if b.rule_ids.is_empty() {
                b.rule_ids = c.rule_ids;
            }
            b.policy_version = b.policy_version.or(c.policy_version);
        }
        let event_id = match b.event_id {
            Some(id) => id,
            None => Uuid::parse_str(self.event_id)
                .map_err(|_| "an event's event_id column is not a UUID; run verify")?,
        };
        let kind = match b.kind {
            Some(k) => k,
            None => EventKind::parse(self.kind)
                .ok_or("an event's kind column is not a kind; run verify")?,
        };
        let decision = match b.decision {
            Some(d) => d,
            None => Outcome::parse(self.decision)
                .ok_or("an event's decision column is not a decision; run verify")?,
        };
        let status = match b.status {
            Some(s) => Some(s),
            None if self.status == 0 => None,
            None => Some(
                u16::try_from(self.status)
                    .map_err(|_| "an event's status column is out of range; run verify")?,
            ),
        };
        let time_ms = b.time_ms.unwrap_or(self.time_ms);
        Ok(AuditEvent {
            event_id,
            time_ms,
            time: b.time.unwrap_or_else(|| rfc3339_ms(time_ms)),
            kind,
            instance_id: b.instance_id.unwrap_or_else(|| self.log_id.to_owned()),
            trace_id: b.trace_id,
            client_id: b.client_id.or_else(|| column_text(self.client_id)),
            department: b.department.or_else(|| column_text(self.department)),
            role: b.role,
            cert_fingerprint: b.cert_fingerprint,
            cert_serial: b.cert_serial,
            source_addr: b.source_addr,
            action: b.action.ok_or("an event body has no action; run verify")?,
            route: b.route,
            datasets: b.datasets.unwrap_or_else(|| {
                self.datasets
                    .strip_prefix(',')
                    .and_then(|d| d.strip_suffix(','))
                    .map(|d| d.split(',').map(str::to_owned).collect())
                    .unwrap_or_default()
            }),
            purpose: b.purpose.or_else(|| column_text(self.purpose)),
            legal_basis: b.legal_basis,
            grant_id: b.grant_id,
            authorisation_ref: b.authorisation_ref,
            subjects: b.subjects.unwrap_or_else(|| {
                if self.subjects.is_empty() {
                    Vec::new()
                } else {
                    self.subjects
                        .split(' ')
                        .map(|s| SubjectRef::from_column(s.to_owned()))
                        .collect()
                }
            }),
            records_disclosed: b.records_disclosed,
            fields: b.fields.0,
            decision,
            rule_ids: b.rule_ids,
            policy_version: b.policy_version,
            status,
            latency_us: b.latency_us,
            error_class: b.error_class,
            reason: b.reason,
        })
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

    #[test]
    fn encoding_round_trips_and_is_unambiguous() {
        let ev = AuditEvent::access("records.read")
            .client("edu-1", "education")
            .dataset("enrolments")
            .build();
        let rec = Record::from_event("gw-a", 7, &ev).expect("serialises");
        let bytes = rec.as_ref().encode();
        assert_eq!(Record::decode(&bytes), Some((rec.clone(), None)));
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

    /// A match's event naming `n` subjects.
    fn batch_event(n: usize) -> AuditEvent {
        AuditEvent::access("POST /v1/match")
            .client("edu-1", "education")
            .dataset("assistance-enrolment")
            .purpose("student-aid")
            .subjects((0..n).map(|i| subject(i as u32)))
            .decision(Outcome::Allow, ["r1"], Some("sha256:00".to_owned()))
            .status(200)
            .build()
    }

    fn subject(i: u32) -> SubjectRef {
        SubjectRef::parse(&format!("v1:{i:064x}")).expect("subject")
    }

    #[test]
    fn events_naming_many_subjects_commit_to_them_by_a_root() {
        // Up to the limit the subjects are listed in the bytes.
        let small = Record::from_event("gw-a", 1, &batch_event(SUBJECTS_LISTED_MAX)).expect("ok");
        let bytes = small.as_ref().encode();
        assert_eq!(&bytes[..4], b"GWA1");
        assert_eq!(Record::decode(&bytes), Some((small.clone(), None)));

        let rec = Record::from_event("gw-a", 2, &batch_event(1_000)).expect("ok");
        let bytes = rec.as_ref().encode();
        assert_eq!(&bytes[..4], b"GWA2");
        assert!(bytes.len() < 600, "{} bytes", bytes.len());
        let (back, root) = Record::decode(&bytes).expect("decodes");
        let root = root.expect("a root");
        assert_eq!(root, SubjectsRoot::of_column(rec.subjects.as_bytes()));
        assert_eq!(root.count, 1_000);
        assert_eq!(
            back,
            Record {
                subjects: String::new(),
                ..rec.clone()
            }
        );
        // Every other column is still in the bytes and read back.
        assert_eq!(back.body, rec.body);

        // Changing, dropping or reordering one subject changes the bytes.
        let parts: Vec<&str> = rec.subjects.split(' ').collect();
        let mut changed = parts.clone();
        let other = subject(5_000);
        changed[500] = other.as_str();
        let mut dropped = parts.clone();
        dropped.remove(999);
        let mut swapped = parts.clone();
        swapped.swap(0, 1);
        for variant in [changed, dropped, swapped] {
            let r = Record {
                subjects: variant.join(" "),
                ..rec.clone()
            };
            assert_ne!(leaf_hash(&r.as_ref().encode()), leaf_hash(&bytes));
        }

        // A GWA2 header claiming a listable count is not an encoding.
        let mut forged = bytes.clone();
        let at = forged.len() - (4 + rec.body.len()) - 32 - 8;
        forged[at..at + 8].copy_from_slice(&64u64.to_be_bytes());
        assert!(Record::decode(&forged).is_none());
    }

    #[test]
    fn the_subjects_root_hashed_on_two_threads_is_the_tree_over_every_subject() {
        let chunk = CHUNK as u32;
        for n in [65, 2 * chunk, 2 * chunk + 1, 3 * chunk - 1, 5 * chunk + 77] {
            let column = (0..n)
                .map(|i| subject(i).as_str().to_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let leaves = column.split(' ').map(|p| leaf_hash(p.as_bytes())).collect();
            let whole = MerkleTree::from_leaves(leaves).root(u64::from(n));
            let r = SubjectsRoot::of_column(column.as_bytes());
            assert_eq!((r.count, Ok(r.root)), (u64::from(n), whole), "{n} subjects");
        }
    }

    #[test]
    fn a_subject_path_proves_one_subject_of_a_rooted_event() {
        let rec = Record::from_event("gw-a", 2, &batch_event(300)).expect("ok");
        let root = SubjectsRoot::of_column(rec.subjects.as_bytes());
        let s = subject(123);
        let p = SubjectsRoot::prove(&rec.subjects, s.as_str()).expect("named");
        assert_eq!(p.index, 123);
        assert_eq!(p.path.len(), 9);
        assert!(p.verify(&root));
        let mut other = p.clone();
        other.subject = subject(124).as_str().to_owned();
        assert!(!other.verify(&root));
        let mut moved = p.clone();
        moved.index = 122;
        assert!(!moved.verify(&root));
        assert!(SubjectsRoot::prove(&rec.subjects, subject(300).as_str()).is_none());
    }

    #[test]
    fn rooted_rows_hashed_in_the_listed_form_before_gwa2_still_match() {
        let rec = Record::from_event("gw-a", 2, &batch_event(100)).expect("ok");
        let raw = rec.as_ref().raw();
        let mut listed = Vec::new();
        raw.encode_as(&mut listed, false);
        assert_eq!(&listed[..4], b"GWA1");
        let old_leaf = leaf_hash(&listed);
        let mut buf = Vec::new();
        assert_eq!(
            rec.as_ref().raw().leaf_for(Some(&old_leaf), &mut buf),
            old_leaf
        );
        assert_eq!(rec.as_ref().encode_for(&old_leaf), (listed.clone(), false));
        let new_leaf = leaf_hash(&rec.as_ref().encode());
        assert_eq!(
            rec.as_ref().raw().leaf_for(Some(&new_leaf), &mut buf),
            new_leaf
        );
        assert!(rec.as_ref().encode_for(&new_leaf).1);
        // A row changed since matches neither.
        let changed = Record {
            department: "housing".into(),
            ..rec.clone()
        };
        for stored in [old_leaf, new_leaf] {
            assert_ne!(
                changed.as_ref().raw().leaf_for(Some(&stored), &mut buf),
                stored
            );
        }
        // Decoding the listed form gives the subjects back.
        assert_eq!(Record::decode(&listed), Some((rec, None)));
    }

    fn full_event() -> AuditEvent {
        let subject = SubjectRef::parse(&format!("v1:{}", "ab".repeat(32))).expect("subject");
        AuditEvent::access("GET /v1/persons/{id_number}")
            .route("/v1/persons/{id_number}")
            .client("edu-1", "education")
            .certificate("9f2c", "3b1f")
            .source("127.0.0.1:5000".parse().expect("addr"))
            .dataset("assistance-enrolment")
            .dataset("monitoring-object")
            .purpose("student-aid")
            .subject(subject)
            .records_disclosed(2)
            .field("assistance-enrolment/head/name", "mask")
            .field("assistance-enrolment/category", "clear")
            .decision(Outcome::Allow, ["r1", "r2"], Some("sha256:00".to_owned()))
            .status(200)
            .latency(std::time::Duration::from_micros(900))
            .build()
    }

    /// Writes `ev` as log `log`'s event and reads it back.
    fn round_trip(log: &str, ev: &AuditEvent) -> (Record, AuditEvent) {
        let rec = Record::from_event(log, 3, ev).expect("serialises");
        let back = rec.as_ref().event(None).expect("decodes");
        (rec, back)
    }

    #[test]
    fn the_stored_body_leaves_out_what_the_columns_hold_and_loses_nothing() {
        let mut ev = full_event();
        ev.instance_id = "gw-a".into();
        let (rec, back) = round_trip("gw-a", &ev);
        assert_eq!(back, ev);
        for key in [
            "event_id",
            "time",
            "kind",
            "instance_id",
            "client_id",
            "department",
            "datasets",
            "purpose",
            "subjects",
            "decision",
            "status",
            "null",
            "\"field\"",
        ] {
            assert!(!rec.body.contains(key), "{key} in {}", rec.body);
        }
        let whole = serde_json::to_string(&ev).expect("serialises");
        assert!(
            rec.body.len() * 2 < whole.len(),
            "{} vs {}",
            rec.body,
            whole
        );

        // Values the columns cannot say exactly go into the body.
        let mut odd = AuditEvent::builder(EventKind::Admin, "policy.load").build();
        odd.instance_id = "gw-b".into();
        odd.client_id = Some(String::new());
        odd.department = Some(String::new());
        odd.purpose = Some(String::new());
        odd.datasets = vec!["a,b".into(), String::new()];
        odd.status = Some(0);
        odd.time = "not the time".into();
        odd.decision = Outcome::Error;
        let (rec, back) = round_trip("gw-a", &odd);
        assert_eq!(back, odd, "{}", rec.body);
        // And the ordinary missing values come back as missing.
        let bare = AuditEvent::builder(EventKind::TlsRefused, "tls.handshake").build();
        assert_eq!(round_trip("gw-a", &bare).1.client_id, None);
        let (_, back) = round_trip(
            "gw-a",
            &AuditEvent {
                datasets: vec![String::new()],
                ..bare.clone()
            },
        );
        assert_eq!(back.datasets, vec![String::new()]);
    }

    /// `full_event` with `fields` instead of its own.
    fn with_fields(fields: &[(&str, &str)]) -> AuditEvent {
        AuditEvent {
            fields: fields
                .iter()
                .map(|(f, t)| FieldDisclosure {
                    field: (*f).to_owned(),
                    treatment: (*t).to_owned(),
                })
                .collect(),
            ..full_event()
        }
    }

    #[test]
    fn disclosed_fields_are_stored_compactly_and_read_back_in_order() {
        let ev = with_fields(&[
            ("assistance-enrolment:category", "clear"),
            ("assistance-enrolment:head.name", "mask:name"),
            ("assistance-enrolment:members[].id_number", "mask:id-number"),
            ("monitoring-object:subject_type", "clear"),
            // A dataset seen before starts a run of its own: order is kept.
            ("assistance-enrolment:status", "clear"),
            ("a:b:c", "generalise:age-band"),
        ]);
        let rec = Record::from_event("gw-a", 3, &ev).expect("serialises");
        assert!(
            rec.body.contains(
                r#""fields":"assistance-enrolment:category,head.name=mask:name,members[].id_number=mask:id-number monitoring-object:subject_type assistance-enrolment:status a:b:c=generalise:age-band""#
            ),
            "{}",
            rec.body
        );
        assert_eq!(rec.as_ref().event(None).expect("decodes"), ev);

        // Names or treatments the compact form cannot carry keep the pairs,
        // and still come back exactly.
        for odd in [
            ("assistance-enrolment/category", "clear"),
            ("a:b c", "clear"),
            ("a:b,c", "clear"),
            ("a:b=c", "clear"),
            ("a:b", "mask name"),
            ("a:b", "mask,name"),
            ("a:b", "x=y"),
            ("a:b", ""),
            (":b", "clear"),
            ("a:", "clear"),
        ] {
            let ev = with_fields(&[("assistance-enrolment:category", "clear"), odd]);
            let rec = Record::from_event("gw-a", 3, &ev).expect("serialises");
            assert!(rec.body.contains(r#""fields":[["#), "{odd:?}: {}", rec.body);
            assert_eq!(rec.as_ref().event(None).expect("decodes"), ev, "{odd:?}");
        }

        // Bodies written with pairs (before the compact form) read as ever.
        let mut old = Record::from_event("gw-a", 3, &ev).expect("serialises");
        old.body = old.body.replace(
            r#""fields":"assistance-enrolment:category,head.name=mask:name,members[].id_number=mask:id-number monitoring-object:subject_type assistance-enrolment:status a:b:c=generalise:age-band""#,
            r#""fields":[["assistance-enrolment:category","clear"],["assistance-enrolment:head.name","mask:name"],["assistance-enrolment:members[].id_number","mask:id-number"],["monitoring-object:subject_type","clear"],["assistance-enrolment:status","clear"],["a:b:c","generalise:age-band"]]"#,
        );
        assert!(old.body.contains(r#""fields":[["#));
        assert_eq!(old.as_ref().event(None).expect("decodes"), ev);

        // A compact string that is not one is an error, not fields.
        for bad in ["", "nodataset", "a:", "a:b,,c", "a:b=", ":b", "a:b  c:d"] {
            let mut r = rec.clone();
            r.body = format!(r#"{{"action":"x","fields":{}}}"#, serde_json::json!(bad));
            assert!(r.as_ref().event(None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_written_whole_still_read_and_win_over_columns() {
        let ev = full_event();
        let mut rec = Record::from_event("gw-a", 3, &ev).expect("serialises");
        // The form before the stored body: the whole event, fields as objects.
        rec.body = serde_json::to_string(&ev).expect("serialises");
        assert_eq!(rec.as_ref().event(None).expect("decodes"), ev);
        rec.department = "housing".into();
        assert_eq!(
            rec.as_ref().event(None).expect("decodes").department,
            ev.department
        );

        let mut bad = Record::from_event("gw-a", 3, &ev).expect("serialises");
        bad.kind = "nonsense".into();
        assert!(bad.as_ref().event(None).is_err());
        bad.kind = "access".into();
        bad.body = "{\"action\":\"x\",\"surprise\":1}".into();
        assert!(bad.as_ref().event(None).is_err());
        bad.body = "{}".into();
        assert!(bad.as_ref().event(None).is_err());
    }

    mod any {
        //! Events with every field drawn at random, the awkward values
        //! (empty text, commas and spaces where columns join lists, a zero
        //! status, a `time` that is not `time_ms`) included.
        use proptest::collection::vec;
        use proptest::option;
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[a-z]{1,8}",
                "[ a-z,:\"\\\\{}\\[\\]\u{4e00}-\u{4e10}]{0,12}",
            ]
        }

        /// A disclosed field's name: mostly `dataset:path` as the gateway
        /// writes them (the compact form), sometimes with a delimiter of
        /// that form in it, sometimes anything.
        fn field_name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-c]{1,2}:[a-z.:\\[\\]]{1,6}",
                "[a-c]{0,2}:[a-z =,:]{0,4}",
                text(),
            ]
        }

        /// A treatment: `clear`, one with a colon, or with a delimiter.
        fn treatment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("clear".to_owned()),
                "mask:[a-z-]{1,6}",
                "[a-z =,:]{0,4}",
                text(),
            ]
        }

        fn kind() -> impl Strategy<Value = EventKind> {
            prop_oneof![
                Just(EventKind::Access),
                Just(EventKind::TlsRefused),
                Just(EventKind::Admin),
                Just(EventKind::AuditorQuery),
                Just(EventKind::StoreOutage),
                Just(EventKind::StreamCompleted),
            ]
        }

        fn outcome() -> impl Strategy<Value = Outcome> {
            prop_oneof![
                Just(Outcome::Allow),
                Just(Outcome::Deny),
                Just(Outcome::Error)
            ]
        }

        fn role() -> impl Strategy<Value = Role> {
            prop_oneof![Just(Role::System), Just(Role::Admin), Just(Role::Auditor)]
        }

        prop_compose! {
            fn head()(
                kind in kind(),
                time_ms in -1_000_000_000_000i64..5_000_000_000_000,
                odd_time in option::weighted(0.2, text()),
                instance_id in prop_oneof![Just("gw-a".to_owned()), text()],
                trace_id in option::of(text()),
                client_id in option::of(text()),
                department in option::of(text()),
                role in option::of(role()),
                cert_fingerprint in option::of(text()),
                cert_serial in option::of(text()),
                source_addr in option::of(text()),
            ) -> AuditEvent {
                let mut e = AuditEvent::builder(kind, "").time_ms(time_ms).build();
                if let Some(t) = odd_time {
                    e.time = t;
                }
                AuditEvent {
                    instance_id, trace_id, client_id, department, role,
                    cert_fingerprint, cert_serial, source_addr, ..e
                }
            }
        }

        prop_compose! {
            pub(super) fn event()(
                head in head(),
                action in text(),
                route in option::of(text()),
                datasets in vec(text(), 0..4),
                purpose in option::of(text()),
                legal_basis in option::of(text()),
                grant_id in option::of(text()),
                authorisation_ref in option::of(text()),
                subjects in vec(text(), 0..4),
                records_disclosed in prop_oneof![Just(0u64), any::<u64>()],
                fields in vec((field_name(), treatment()), 0..6),
                decision in outcome(),
                rule_ids in vec(text(), 0..3),
                policy_version in option::of(text()),
                status in option::of(prop_oneof![Just(0u16), any::<u16>()]),
                latency_us in option::of(any::<u64>()),
                error_class in option::of(text()),
                reason in option::of(text()),
            ) -> AuditEvent {
                AuditEvent {
                    action, route, datasets, purpose, legal_basis, grant_id,
                    authorisation_ref,
                    subjects: subjects.into_iter().map(SubjectRef::from_column).collect(),
                    records_disclosed,
                    fields: fields
                        .into_iter()
                        .map(|(field, treatment)| FieldDisclosure { field, treatment })
                        .collect(),
                    decision, rule_ids, policy_version, status, latency_us,
                    error_class, reason,
                    ..head
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 500, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever the event, its row gives back exactly that event, and
        /// so does the whole-event body written before the stored form.
        #[test]
        fn any_event_comes_back_from_its_row(ev in any::event()) {
            let rec = Record::from_event("gw-a", 9, &ev).expect("serialises");
            proptest::prop_assert_eq!(&rec.as_ref().event(None).expect("decodes"), &ev);
            let whole = Record {
                body: serde_json::to_string(&ev).expect("serialises"),
                ..rec.clone()
            };
            proptest::prop_assert_eq!(&whole.as_ref().event(None).expect("decodes"), &ev);
            proptest::prop_assert!(rec.body.len() <= whole.body.len());
            // And so does the row that names a context, with that context.
            let (shared, context) = Record::from_event_sharing("gw-a", 9, &ev).expect("serialises");
            let context = context.as_ref().map(|c| c.body.as_str());
            proptest::prop_assert_eq!(&shared.as_ref().event(context).expect("decodes"), &ev);
        }
    }

    #[test]
    fn a_clients_repeated_keys_are_stored_once_as_a_context() {
        let mut ev = full_event();
        ev.instance_id = "gw-a".into();
        let (rec, context) = Record::from_event_sharing("gw-a", 3, &ev).expect("serialises");
        let context = context.expect("a client's data decision shares its context");
        assert_eq!(context.id, context_id(&context.body));
        assert_eq!(
            context_ref(rec.body.as_bytes()),
            Some(context.id.as_bytes())
        );
        for key in [
            "fields",
            "rule_ids",
            "cert_fingerprint",
            "route",
            "policy_version",
        ] {
            assert!(!rec.body.contains(key), "{key} in {}", rec.body);
            assert!(context.body.contains(key), "{key} not in {}", context.body);
        }
        // What varies per request stays in the body.
        for key in ["source_addr", "records_disclosed", "latency_us"] {
            assert!(rec.body.contains(key), "{key} not in {}", rec.body);
        }
        assert_eq!(rec.as_ref().event(Some(&context.body)), Ok(ev.clone()));

        // The next query of the same client under the same plan: another
        // person, time, address and latency, the same context.
        let mut next = full_event();
        next.instance_id = "gw-a".into();
        next.subjects = vec![SubjectRef::parse(&format!("v1:{}", "cd".repeat(32))).expect("s")];
        next.source_addr = Some("10.0.0.9:41000".into());
        next.latency_us = Some(1_234);
        let (other, again) = Record::from_event_sharing("gw-a", 4, &next).expect("serialises");
        assert_eq!(again.as_ref(), Some(&context));
        assert_ne!(other.body, rec.body);

        // Without its context, or with another one, the event does not read.
        assert!(rec.as_ref().event(None).is_err());
        let mut changed = context.body.replace("r1", "r9");
        assert!(rec.as_ref().event(Some(&changed)).is_err());
        changed = context.body.clone() + " ";
        assert!(rec.as_ref().event(Some(&changed)).is_err());
        // A body naming a context anywhere but first is not one the
        // gateway wrote.
        let moved = Record {
            body: rec
                .body
                .replacen("{\"context\"", "{\"latency_us\":1,\"context\"", 1),
            ..rec.clone()
        };
        assert!(moved.as_ref().event(Some(&context.body)).is_err());

        // Events without a client's decision keep everything in the body.
        let handshake = AuditEvent::builder(EventKind::TlsRefused, "tls.handshake")
            .certificate("9f2c", "3b1f")
            .build();
        let (hs, none) = Record::from_event_sharing("gw-a", 5, &handshake).expect("serialises");
        assert!(none.is_none());
        assert_eq!(context_ref(hs.body.as_bytes()), None);
        assert_eq!(hs.as_ref().event(None), Ok(handshake));

        for body in [
            "{\"context\":\"ab\"}",
            "{\"context\":1}",
            " {\"context\":\"",
            "",
        ] {
            assert_eq!(context_ref(body.as_bytes()), None, "{body}");
        }
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
