//! Recompute everything: chains, Merkle roots, checkpoint signatures.
//!
//! [`verify`] streams `audit_events` ordered by `(log_id, seq)` once and, for
//! every log, checks that
//! - sequence numbers run 0, 1, 2, … without a gap (a gap = deleted events),
//! - each row's `leaf_hash` is `SHA-256(0x00 || event bytes)` of its own
//!   columns (else its content was modified, or it was moved: the encoding
//!   binds log id and seq),
//! - each row's `prev_hash` is the previous row's `hash` and its `hash` is
//!   `SHA-256(prev_hash || leaf_hash)` (else rows were inserted, removed or
//!   rewritten with recomputed hashes),
//! - the RFC 6962 root recomputed from the leaves equals the root of every
//!   stored checkpoint (and of every witness checkpoint given), and no
//!   checkpoint covers more events than the log holds (truncation),
//! - every checkpoint signature is valid (and made by a trusted key, when
//!   trusted keys are given),
//! - the derived data matches the events: the subject index's size below
//!   its watermark, and every stored chunk root (`audit_merkle_chunks`,
//!   what proofs are built from) is the root recomputed over its 4,096
//!   events.
//!
//! Several instances write several logs; verification covers every log id
//! found in `audit_logs`, `audit_events` or `audit_checkpoints`, so a log
//! cannot hide by losing its events (its checkpoints remain) or its
//! checkpoints (its registration and events remain). Removing a log
//! entirely (all three) is only visible against checkpoints kept outside:
//! pass them as witnesses ([`VerifyOptions::witnesses`]). Events after a
//! log's newest checkpoint are chained but not yet signed; the report counts
//! them per log (`unsigned_tail`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::AuditError;
use super::checkpoint::SignedCheckpoint;
use super::merkle::{CHUNK, CHUNK_HEIGHT, Frontier, Hash};
use super::record::{GENESIS, chain_hash, context_id};
use super::store;
use crate::storage::Database;

/// What to trust beyond the database itself.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Ed25519 public keys (hex) allowed to sign checkpoints. Empty: accept
    /// any key whose signature is valid and list the keys in the report.
    pub trusted_keys: Vec<String>,
    /// Checkpoints kept by outside witnesses; each must match the log.
    pub witnesses: Vec<SignedCheckpoint>,
}

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The row's columns no longer hash to its leaf hash.
    Modified,
    /// Sequence numbers skip: events were deleted.
    Deleted,
    /// The row is internally consistent but belongs elsewhere (reordered,
    /// renumbered or copied in from another position).
    Reordered,
    /// The row does not link to its predecessor: an event was inserted,
    /// removed or rewritten with recomputed hashes.
    ChainBroken,
    /// A checkpoint covers more events than the log holds.
    Truncated,
    /// The recomputed root differs from a checkpoint's.
    RootMismatch,
    /// A checkpoint's signature is invalid.
    BadSignature,
    /// A checkpoint is signed by a key not in the trusted set.
    UntrustedKey,
    /// The subject index does not match the events.
    SubjectIndex,
    /// A stored chunk root (`audit_merkle_chunks`, what proofs are built
    /// from) does not match the events.
    ChunkRoot,
    /// The context an event names (`audit_contexts`: the keys it shares
    /// with a client's other events) is missing, or its stored bytes no
    /// longer hash to its id.
    Context,
    /// A row cannot be read (bad hash length, …).
    Unreadable,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The log.
    pub log_id: String,
    /// The position, when one event is concerned.
    pub seq: Option<u64>,
    /// The event id stored at that position.
    pub event_id: Option<String>,
    /// The kind of problem.
    pub kind: ProblemKind,
    /// What exactly.
    pub detail: String,
}

/// Per-log summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// The log.
    pub log_id: String,
    /// Events read.
    pub events: u64,
    /// Recomputed root over all of them, hex.
    pub root: String,
    /// Checkpoints checked (stored and witness).
    pub checkpoints_checked: u64,
    /// Size of the newest stored checkpoint.
    pub latest_checkpoint: Option<u64>,
    /// Events after the newest checkpoint (chained, not yet signed).
    pub unsigned_tail: u64,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// No problem at all.
    pub ok: bool,
    /// Events read in total.
    pub events: u64,
    /// Per log.
    pub logs: Vec<LogReport>,
    /// The first problem (by log id, then position), if any.
    pub first_problem: Option<Problem>,
    /// All problems found (at most 100).
    pub problems: Vec<Problem>,
    /// Keys that signed the checkpoints, hex.
    pub signing_keys: Vec<String>,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Events per second.
    pub events_per_sec: u64,
}

const MAX_PROBLEMS: usize = 100;

/// What [`Verifier::check`] needs of a row besides its hashes.
pub(crate) struct RowKey<'a> {
    pub log_id: &'a str,
    pub seq: u64,
    pub event_id: &'a str,
    /// Subjects the row's `subjects` column names.
    pub subjects: u64,
    /// The id of the context its body names
    /// ([`context_ref`](super::record::context_ref)).
    pub context: Option<&'a [u8]>,
}

/// A row's stored `[leaf_hash, prev_hash, hash]` columns as hashes, or why
/// they cannot be used (reported as [`ProblemKind::Unreadable`] at the row).
pub(crate) fn stored_hashes(cols: [&[u8]; 3]) -> Result<[Hash; 3], String> {
    match cols.map(store::to_hash) {
        [Some(l), Some(p), Some(h)] => Ok([l, p, h]),
        _ => Err("a hash column is not 32 bytes".to_owned()),
    }
}

/// Subjects in a `subjects` column (space-separated).
pub(crate) fn count_subjects(col: &[u8]) -> u64 {
    // Most events name one subject or none: no space to split at, and
    // looking for one is a word-at-a-time search, not a byte loop.
    if !col.contains(&b' ') {
        return u64::from(!col.is_empty());
    }
    col.split(|b| *b == b' ').filter(|s| !s.is_empty()).count() as u64
}

struct CheckpointCheck {
    size: u64,
    root: Hash,
    what: String,
}

struct LogState {
    log_id: String,
    next_seq: u64,
    prev: Hash,
    frontier: Frontier,
    checks: Vec<CheckpointCheck>,
    next_check: usize,
    checked: u64,
    latest: Option<u64>,
    broken: bool,
    prev_event_id: Option<String>,
    /// The log's subject index.
    index: store::IndexState,
    /// Subjects named by the events below the watermark.
    refs_below: u64,
    /// Subjects named by the events at and after it.
    refs_above: u64,
    /// The log's stored chunk roots, in chunk order, and how many of them
    /// have been compared.
    chunks: Vec<(u64, Hash)>,
    chunks_checked: usize,
}

/// Verification state, fed one row at a time.
pub(crate) struct Verifier {
    opts: VerifyOptions,
    checkpoints: BTreeMap<String, Vec<SignedCheckpoint>>,
    pending_logs: BTreeSet<String>,
    cur: Option<LogState>,
    problems: Vec<Problem>,
    logs: Vec<LogReport>,
    keys: BTreeSet<String>,
    events: u64,
    subject_index: BTreeMap<String, store::IndexState>,
    chunk_roots: BTreeMap<String, Vec<(u64, Hash)>>,
    contexts: ContextCheck,
}

/// What verification knows of the stored event contexts.
#[derive(Default)]
struct ContextCheck {
    /// Ids whose stored bytes hash to them.
    good: HashSet<Vec<u8>>,
    /// Ids whose stored bytes do not.
    altered: HashSet<Vec<u8>>,
    /// Altered ids already reported (at the first event naming each).
    reported: HashSet<Vec<u8>>,
    /// The last id found good: consecutive events mostly name the same.
    last: Vec<u8>,
    /// Ids named by events but not stored when verification started (the
    /// gateway may have written them since), with the first event naming
    /// each: looked up again at the end ([`Verifier::resolve_contexts`]).
    unknown: BTreeMap<Vec<u8>, (String, u64, String)>,
}

impl ContextCheck {
    fn new(stored: HashMap<String, String>) -> Self {
        let mut c = ContextCheck::default();
        for (id, body) in stored {
            c.add(id, &body);
        }
        c
    }

    fn add(&mut self, id: String, body: &str) {
        if context_id(body) == id {
            self.good.insert(id.into_bytes());
        } else {
            self.altered.insert(id.into_bytes());
        }
    }
}

impl Verifier {
    /// `subject_index`: per log, its subject index
    /// ([`store::subject_index_state`]); `chunk_roots`: per log, its stored
    /// chunk roots ([`store::stored_chunk_roots`]); both read before the
    /// events.
    pub(crate) fn new(
        opts: VerifyOptions,
        cps: Vec<SignedCheckpoint>,
        logs: Vec<String>,
        subject_index: BTreeMap<String, store::IndexState>,
        chunk_roots: BTreeMap<String, Vec<(u64, Hash)>>,
        contexts: HashMap<String, String>,
    ) -> Self {
        let mut checkpoints: BTreeMap<String, Vec<SignedCheckpoint>> = BTreeMap::new();
        let mut pending_logs: BTreeSet<String> = logs.into_iter().collect();
        pending_logs.extend(subject_index.keys().cloned());
        pending_logs.extend(chunk_roots.keys().cloned());
        for cp in cps {
            pending_logs.insert(cp.log_id.clone());
            checkpoints.entry(cp.log_id.clone()).or_default().push(cp);
        }
        for w in &opts.witnesses {
            pending_logs.insert(w.log_id.clone());
        }
        Verifier {
            opts,
            checkpoints,
            pending_logs,
            cur: None,
            problems: Vec::new(),
            logs: Vec::new(),
            keys: BTreeSet::new(),
            events: 0,
            subject_index,
            chunk_roots,
            contexts: ContextCheck::new(contexts),
        }
    }

    /// Ids of the contexts events named that were not stored when
    /// verification started.
    pub(crate) fn unresolved_contexts(&self) -> Vec<String> {
        self.contexts
            .unknown
            .keys()
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .collect()
    }

    /// Settles [`Verifier::unresolved_contexts`] with the contexts stored
    /// now (contexts never change once written, so a later look is as good
    /// as one inside the scan's snapshot): a context still missing or
    /// altered is reported at the first event that names it.
    pub(crate) fn resolve_contexts(&mut self, stored: HashMap<String, String>) {
        for (id, body) in stored {
            self.contexts.add(id, &body);
        }
        let unknown = std::mem::take(&mut self.contexts.unknown);
        for (id, (log_id, seq, event_id)) in unknown {
            if self.contexts.good.contains(&id) || self.contexts.reported.contains(&id) {
                continue;
            }
            let what = if self.contexts.altered.contains(&id) {
                "was modified: its stored bytes no longer hash to its id"
            } else {
                "is not stored (deleted)"
            };
            self.problem(Problem {
                log_id,
                seq: Some(seq),
                event_id: Some(event_id),
                kind: ProblemKind::Context,
                detail: format!(
                    "the event's context {} {what}",
                    String::from_utf8_lossy(&id)
                ),
            });
        }
    }

    /// Checks the context an intact event names: reported at once if it was
    /// altered, later if it is not stored.
    fn check_context(&mut self, rec: &RowKey<'_>) -> Option<(ProblemKind, String)> {
        let id = rec.context?;
        let c = &mut self.contexts;
        if c.last == id {
            return None;
        }
        if c.good.contains(id) {
            c.last.clear();
            c.last.extend_from_slice(id);
            return None;
        }
        if c.reported.contains(id) {
            return None;
        }
        if c.altered.remove(id) {
            c.reported.insert(id.to_vec());
            return Some((
                ProblemKind::Context,
                format!(
                    "the event's context {} was modified: its stored bytes no longer hash to its id",
                    String::from_utf8_lossy(id)
                ),
            ));
        }
        c.unknown
            .entry(id.to_vec())
            .or_insert_with(|| (rec.log_id.to_owned(), rec.seq, rec.event_id.to_owned()));
        None
    }

    fn problem(&mut self, p: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn start_log(&mut self, log_id: &str) {
        self.pending_logs.remove(log_id);
        let mut checks = Vec::new();
        let mut latest = None;
        let stored = self.checkpoints.remove(log_id).unwrap_or_default();
        let mut problems = Vec::new();
        for cp in stored.iter().map(|c| (c, "checkpoint")).chain(
            self.opts
                .witnesses
                .iter()
                .filter(|w| w.log_id == log_id)
                .map(|c| (c, "witness checkpoint")),
        ) {
            let (cp, what) = cp;
            self.keys.insert(cp.public_key.clone());
            if what == "checkpoint" {
                latest = latest.max(Some(cp.tree_size));
            }
            if !cp.signature_valid() {
                problems.push(Problem {
                    log_id: log_id.to_owned(),
                    seq: None,
                    event_id: None,
                    kind: ProblemKind::BadSignature,
                    detail: format!(
                        "{what} at tree size {} has an invalid signature",
                        cp.tree_size
                    ),
                });
            } else if !self.opts.trusted_keys.is_empty()
                && !self
                    .opts
                    .trusted_keys
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&cp.public_key))
            {
                problems.push(Problem {
                    log_id: log_id.to_owned(),
                    seq: None,
                    event_id: None,
                    kind: ProblemKind::UntrustedKey,
                    detail: format!(
                        "{what} at tree size {} is signed by untrusted key {}",
                        cp.tree_size, cp.public_key
                    ),
                });
            }
            checks.push(CheckpointCheck {
                size: cp.tree_size,
                root: cp.root,
                what: format!("{what} at tree size {}", cp.tree_size),
            });
        }
        for p in problems {
            self.problem(p);
        }
        checks.sort_by_key(|c| c.size);
        let mut st = LogState {
            log_id: log_id.to_owned(),
            next_seq: 0,
            prev: GENESIS,
            frontier: Frontier::new(),
            checks,
            next_check: 0,
            checked: 0,
            latest,
            broken: false,
            prev_event_id: None,
            index: self.subject_index.remove(log_id).unwrap_or_default(),
            refs_below: 0,
            refs_above: 0,
            chunks: self.chunk_roots.remove(log_id).unwrap_or_default(),
            chunks_checked: 0,
        };
        // A checkpoint of size 0 is meaningless; anything else is checked
        // as the leaves arrive.
        self.run_checks(&mut st);
        self.cur = Some(st);
    }

    fn run_checks(&mut self, st: &mut LogState) {
        while let Some(c) = st.checks.get(st.next_check) {
            if c.size != st.frontier.size() {
                if c.size < st.frontier.size() {
                    st.next_check += 1;
                    continue;
                }
                break;
            }
            st.checked += 1;
            if st.frontier.root() != c.root {
                let detail = format!(
                    "recomputed root over {} events differs from the {}",
                    c.size, c.what
                );
                let (log_id, seq) = (st.log_id.clone(), c.size.checked_sub(1));
                st.next_check += 1;
                self.problem(Problem {
                    log_id,
                    seq,
                    event_id: None,
                    kind: ProblemKind::RootMismatch,
                    detail,
                });
                continue;
            }
            st.next_check += 1;
        }
    }

    fn finish_log(&mut self) {
        let Some(mut st) = self.cur.take() else {
            return;
        };
        self.run_checks(&mut st);
        self.check_subject_index(&st);
        let complete = st.frontier.size() / CHUNK;
        if let Some(&(c, _)) = st.chunks[st.chunks_checked..]
            .iter()
            .find(|(c, _)| *c >= complete)
        {
            let held = st.frontier.size();
            self.chunk_problem(
                &st,
                c,
                format!("which the log does not hold ({held} events)"),
            );
        }
        let size = st.frontier.size();
        if let Some(c) = st
            .checks
            .iter()
            .skip(st.next_check)
            .find(|c| c.size > st.next_seq)
        {
            let detail = format!(
                "the {} covers {} events but the log ends after {} (events {}..{} deleted)",
                c.what,
                c.size,
                st.next_seq,
                st.next_seq,
                c.size - 1
            );
            self.problem(Problem {
                log_id: st.log_id.clone(),
                seq: Some(st.next_seq),
                event_id: None,
                kind: ProblemKind::Truncated,
                detail,
            });
        }
        self.logs.push(LogReport {
            log_id: st.log_id.clone(),
            events: size,
            root: hex::encode(st.frontier.root()),
            checkpoints_checked: st.checked,
            latest_checkpoint: st.latest,
            unsigned_tail: size.saturating_sub(st.latest.unwrap_or(0)),
        });
    }

    /// The index's complete passes must hold exactly the subjects of the
    /// events below the watermark, a pass in progress no more than the
    /// events after it name, and the watermark must not point past the
    /// log's end (the events in between would never be indexed, nor
    /// searched as tail).
    fn check_subject_index(&mut self, st: &LogState) {
        let store::IndexState {
            watermark: mark,
            rows,
            in_progress,
        } = st.index;
        let detail = match mark {
            None if st.next_seq > 0 || rows > 0 => {
                Some("the log has no subject-index watermark".to_owned())
            }
            Some(m) if m > st.next_seq => Some(format!(
                "the subject-index watermark {m} is past the end of the log ({} events)",
                st.next_seq
            )),
            _ if rows != st.refs_below => Some(format!(
                "the subject index has {rows} rows for this log but its events below the watermark name {} subjects",
                st.refs_below
            )),
            _ if in_progress > st.refs_above => Some(format!(
                "the subject index has {in_progress} rows of a pass in progress for this log but its events past the watermark name {} subjects",
                st.refs_above
            )),
            _ => None,
        };
        if let Some(detail) = detail {
            self.problem(Problem {
                log_id: st.log_id.clone(),
                seq: None,
                event_id: None,
                kind: ProblemKind::SubjectIndex,
                detail,
            });
        }
    }

    /// Logs with checkpoints or a registration but no events, before `upto`.
    fn flush_empty_logs(&mut self, upto: Option<&str>) {
        let empties: Vec<String> = self
            .pending_logs
            .iter()
            .filter(|l| upto.is_none_or(|u| l.as_str() < u))
            .cloned()
            .collect();
        for l in empties {
            self.start_log(&l);
            self.finish_log();
        }
    }

    /// Checks one stored row: `stored` is its `[leaf_hash, prev_hash,
    /// hash]` columns (or why they cannot be read), `real_leaf` the leaf
    /// hash recomputed from its other columns.
    pub(crate) fn check(
        &mut self,
        rec: &RowKey<'_>,
        stored: Result<[Hash; 3], String>,
        real_leaf: Hash,
    ) {
        if self.cur.as_ref().is_none_or(|c| c.log_id != rec.log_id) {
            self.finish_log();
            self.flush_empty_logs(Some(rec.log_id));
            self.start_log(rec.log_id);
        }
        self.events += 1;
        let Some(mut st) = self.cur.take() else {
            return;
        };
        if st.index.watermark.is_some_and(|m| rec.seq < m) {
            st.refs_below += rec.subjects;
        } else {
            st.refs_above += rec.subjects;
        }
        let mut found: Option<(ProblemKind, String)> = None;
        let [stored_leaf, stored_prev, stored_hash] = match stored {
            Ok(h) => h,
            Err(detail) => {
                self.report(&mut st, rec, Some((ProblemKind::Unreadable, detail)));
                st.next_seq = rec.seq + 1;
                self.cur = Some(st);
                return;
            }
        };
        if rec.seq != st.next_seq {
            found = Some((
                ProblemKind::Deleted,
                format!(
                    "events {}..={} are missing (deleted): the next stored event is {}",
                    st.next_seq,
                    rec.seq.saturating_sub(1),
                    rec.seq
                ),
            ));
        }
        let leaf_ok = real_leaf == stored_leaf;
        let prev_ok = stored_prev == st.prev;
        let self_consistent = chain_hash(&stored_prev, &stored_leaf) == stored_hash;
        if found.is_none() {
            found = match (leaf_ok, prev_ok, self_consistent) {
                (true, true, true) => None,
                (false, false, true) => Some((
                    ProblemKind::Reordered,
                    "the row carries the hashes of another position: events were reordered or renumbered"
                        .to_owned(),
                )),
                (false, _, _) => Some((
                    ProblemKind::Modified,
                    "the event's columns do not match its leaf hash: its content was modified".to_owned(),
                )),
                (true, false, _) => Some((
                    ProblemKind::ChainBroken,
                    match &st.prev_event_id {
                        Some(id) => format!(
                            "prev_hash does not match the hash of seq {} (event {id}): that event was rewritten with recomputed hashes, or this one was inserted",
                            rec.seq.saturating_sub(1)
                        ),
                        None => "the first event does not start from the genesis hash: events before it were removed or it was inserted".to_owned(),
                    },
                )),
                (true, true, false) => Some((
                    ProblemKind::Modified,
                    "the hash column was modified".to_owned(),
                )),
            };
        }
        if found.is_none() {
            found = self.check_context(rec);
        }
        self.report(&mut st, rec, found);
        // Re-anchor on the stored values, so each later problem is reported
        // where it is; roots use the recomputed leaves.
        st.prev = stored_hash;
        st.next_seq = rec.seq + 1;
        if let Some(root) = st.frontier.push_reporting(real_leaf, CHUNK_HEIGHT) {
            self.check_chunk(&mut st, root);
        }
        let prev_id = st.prev_event_id.get_or_insert_with(String::new);
        prev_id.clear();
        prev_id.push_str(rec.event_id);
        self.run_checks(&mut st);
        self.cur = Some(st);
    }

    /// The log's newest complete chunk has recomputed root `root`: its
    /// stored root, if there is one yet, must be the same.
    fn check_chunk(&mut self, st: &mut LogState, root: Hash) {
        let c = st.frontier.size() / CHUNK - 1;
        while st
            .chunks
            .get(st.chunks_checked)
            .is_some_and(|(i, _)| *i < c)
        {
            st.chunks_checked += 1;
        }
        if let Some(&(i, stored)) = st.chunks.get(st.chunks_checked)
            && i == c
        {
            st.chunks_checked += 1;
            if stored != root {
                self.chunk_problem(st, c, "differs from the root recomputed from them".into());
            }
        }
    }

    /// Reports the stored root of chunk `c`: `what` is wrong with it.
    fn chunk_problem(&mut self, st: &LogState, c: u64, what: String) {
        self.problem(Problem {
            log_id: st.log_id.clone(),
            seq: Some(c * CHUNK),
            event_id: None,
            kind: ProblemKind::ChunkRoot,
            detail: format!(
                "the chunk root stored for events {}..{} {what}",
                c * CHUNK,
                (c + 1) * CHUNK
            ),
        });
    }

    fn report(
        &mut self,
        st: &mut LogState,
        rec: &RowKey<'_>,
        found: Option<(ProblemKind, String)>,
    ) {
        if let Some((kind, detail)) = found {
            st.broken = true;
            self.problem(Problem {
                log_id: rec.log_id.to_owned(),
                seq: Some(rec.seq),
                event_id: Some(rec.event_id.to_owned()),
                kind,
                detail,
            });
        }
    }

    /// Ends the run.
    pub(crate) fn finish(mut self, started: Instant) -> VerifyReport {
        self.finish_log();
        self.flush_empty_logs(None);
        let mut problems = self.problems;
        // By log, then position (checkpoint problems first within a log);
        // a mismatch of derived data (the subject index, chunk roots),
        // usually a consequence of another problem (events modified,
        // deleted or inserted), last.
        problems.sort_by(|a, b| {
            let derived =
                |p: &Problem| matches!(p.kind, ProblemKind::SubjectIndex | ProblemKind::ChunkRoot);
            let key = |p: &Problem| (p.log_id.clone(), derived(p), p.seq);
            key(a).cmp(&key(b))
        });
        let elapsed = started.elapsed();
        VerifyReport {
            ok: problems.is_empty(),
            events: self.events,
            logs: self.logs,
            first_problem: problems.first().cloned(),
            problems,
            signing_keys: self.keys.into_iter().collect(),
            elapsed_ms: elapsed.as_millis() as u64,
            events_per_sec: (self.events as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        }
    }
}

/// Recomputes every log in `db`; see the module documentation. Errors only
/// when the database cannot be read; everything wrong with the data is in
/// the report.
pub async fn verify(db: &Database, opts: VerifyOptions) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let cps = store::checkpoints(db, None).await?;
    let logs = store::registered_log_ids(db).await?;
    let subject_index = store::subject_index_state(db).await?;
    let chunk_roots = store::stored_chunk_roots(db).await?;
    let contexts = store::contexts(db, None).await?;
    let v = Verifier::new(opts, cps, logs, subject_index, chunk_roots, contexts);
    let mut v = match db {
        Database::Sqlite(p) => {
            let path = p.connect_options().get_filename().to_owned();
            if !super::scan_sqlite::usable(&path) {
                return Err(AuditError::Io(std::io::Error::other(format!(
                    "verification reads an SQLite database from its file, and {} is not one",
                    path.display()
                ))));
            }
            // Read with the gateway's own memory-map setting.
            let mmap: i64 = sqlx::query_scalar("PRAGMA mmap_size").fetch_one(p).await?;
            tokio::task::spawn_blocking(move || super::scan_sqlite::feed(&path, mmap, v))
                .await
                .map_err(|_| {
                    AuditError::Io(std::io::Error::other("the verification thread failed"))
                })??
        }
        Database::Postgres(p) => super::scan_pg::feed(p, v).await?,
    };
    let unresolved = v.unresolved_contexts();
    if !unresolved.is_empty() {
        let ids: Vec<&str> = unresolved.iter().map(String::as_str).collect();
        v.resolve_contexts(store::contexts(db, Some(&ids)).await?);
    }
    Ok(v.finish(started))
}

#[cfg(test)]
mod tests {
    use super::count_subjects;

    #[test]
    fn subjects_are_counted_as_the_non_empty_parts_of_the_column() {
        for (col, n) in [
            ("", 0),
            (" ", 0),
            ("v1:ab", 1),
            ("v1:ab ", 1),
            (" v1:ab", 1),
            ("v1:ab v1:cd", 2),
            ("v1:ab  v1:cd v1:ef", 3),
        ] {
            assert_eq!(count_subjects(col.as_bytes()), n, "{col:?}");
        }
    }
}
