//! Archiving a segment of a log to a file that verifies off-line.
//!
//! The gateway never deletes events (the tables refuse it); retention
//! (`AuditConfig::retention_days`, ≥ 3 years) says how long they must be
//! kept. Old segments can be copied out to cheaper storage as NDJSON files:
//!
//! ```text
//! {"type":"segment","format":"gateway-audit-segment/v3","log_id":…,"start":S,"end":E,
//!  "frontier":"<hex: Merkle right edge over events 0..S>","prev_hash":"<hash of event S-1>"}
//! {"type":"context","id":"<hex>","body":"{…}"}
//! {"type":"event","seq":S,"event_bytes":"<base64>","prev_hash":…,"hash":…}
//! {"type":"event","seq":S+1,"event_bytes":"<base64>","subjects":"v1:… v1:…",…}
//! …
//! {"type":"checkpoint","checkpoint":{signed checkpoint at tree size E}}
//! ```
//!
//! [`verify_segment`] recomputes every leaf and chain hash, extends the
//! frontier with the leaves and checks that the resulting root is the signed
//! checkpoint's: the frontier (O(log n) hashes) stands in for every earlier
//! event, and a wrong frontier cannot produce the signed root. Consecutive
//! segment files chain: the last `hash` of one is the next one's
//! `prev_hash`.
//!
//! An event whose bytes commit to its subjects by a root (`GWA2`, a batch
//! match; see `audit::record`) carries its `subjects` column beside them,
//! checked against that root, so the archive keeps whom it named.
//!
//! An event whose body names a context (the keys a client's events share,
//! stored once; see `audit::record`) is preceded, the first time the file
//! needs it, by a `context` line with that context's bytes, checked against
//! its id. Files of the earlier formats (`gateway-audit-segment/v1`, before
//! `GWA2` existed; `v2`, before contexts) verify as before.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::checkpoint::SignedCheckpoint;
use super::merkle::{Frontier, Hash, hex32, leaf_hash};
use super::record::{GENESIS, Record, SubjectsRoot, chain_hash, context_id};
use super::store;
use crate::storage::Database;

/// The format tag of segment files.
pub const SEGMENT_FORMAT: &str = "gateway-audit-segment/v3";

/// Earlier format tags still read: v2 differs only in having no `context`
/// lines, v1 also in having no `GWA2` events, so no `subjects` key.
const SEGMENT_FORMATS_READ: [&str; 3] = [
    SEGMENT_FORMAT,
    "gateway-audit-segment/v2",
    "gateway-audit-segment/v1",
];

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Segment {
        format: String,
        log_id: String,
        start: u64,
        end: u64,
        frontier: String,
        #[serde(with = "hex32")]
        prev_hash: Hash,
    },
    Event {
        seq: u64,
        event_bytes: String,
        /// The `subjects` column of an event whose bytes hold only its
        /// subjects' root.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subjects: Option<String>,
        #[serde(with = "hex32")]
        prev_hash: Hash,
        #[serde(with = "hex32")]
        hash: Hash,
    },
    Checkpoint {
        checkpoint: SignedCheckpoint,
    },
    /// A context the events after it may name.
    Context {
        id: String,
        body: String,
    },
}

/// What a segment holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentSummary {
    /// The log.
    pub log_id: String,
    /// First seq.
    pub start: u64,
    /// One past the last seq (= the checkpoint's tree size).
    pub end: u64,
    /// Root of the signed checkpoint, hex.
    pub root: String,
    /// Hash of the last event (the next segment's `prev_hash`), hex.
    pub last_hash: String,
}

/// Writes events `start..end` of `log_id` with the checkpoint at `end`
/// (`None`: the latest checkpoint) to `out`.
pub async fn archive_segment<W: Write>(
    db: &Database,
    log_id: &str,
    start: u64,
    end: Option<u64>,
    out: &mut W,
) -> Result<SegmentSummary, AuditError> {
    let cps = store::checkpoints(db, Some(log_id)).await?;
    let cp = match end {
        Some(e) => cps.into_iter().find(|c| c.tree_size == e),
        None => cps.into_iter().last(),
    }
    .ok_or_else(|| {
        AuditError::NotFound(format!(
            "log {log_id} has no checkpoint at the requested end; segments end at a checkpoint"
        ))
    })?;
    let end = cp.tree_size;
    if start >= end {
        return Err(AuditError::BadRequest(format!(
            "start: must be below the checkpoint's tree size {end}"
        )));
    }
    let frontier = store::frontier(db, log_id, start).await?;
    let prev_hash = if start == 0 {
        GENESIS
    } else {
        store::events_range(db, log_id, start - 1, start)
            .await?
            .first()
            .map(|e| e.hash)
            .ok_or(AuditError::Corrupt("the log has a gap; run verify"))?
    };
    let mut write = |line: &Line| -> Result<(), AuditError> {
        serde_json::to_writer(&mut *out, line)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    write(&Line::Segment {
        format: SEGMENT_FORMAT.to_owned(),
        log_id: log_id.to_owned(),
        start,
        end,
        frontier: hex::encode(frontier.to_bytes()),
        prev_hash,
    })?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut contexts_written: HashSet<String> = HashSet::new();
    let mut last = prev_hash;
    let mut at = start;
    while at < end {
        let to = (at + 10_000).min(end);
        let chunk = store::events_range(db, log_id, at, to).await?;
        if chunk.len() as u64 != to - at {
            return Err(AuditError::Corrupt("the log has a gap; run verify"));
        }
        let mut needed: Vec<&str> = chunk
            .iter()
            .filter_map(|e| e.record.as_ref().context_id())
            .filter(|id| !contexts_written.contains(*id))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let found = store::contexts(db, Some(&needed)).await?;
        for e in &chunk {
            if let Some(id) = e.record.as_ref().context_id()
                && !contexts_written.contains(id)
            {
                let body = found.get(id).ok_or(AuditError::Corrupt(
                    "an event's context is not stored; run verify",
                ))?;
                write(&Line::Context {
                    id: id.to_owned(),
                    body: body.clone(),
                })?;
                contexts_written.insert(id.to_owned());
            }
            let (bytes, rooted) = e.record.as_ref().encode_for(&e.leaf_hash);
            write(&Line::Event {
                seq: e.record.seq,
                event_bytes: b64.encode(bytes),
                subjects: rooted.then(|| e.record.subjects.clone()),
                prev_hash: e.prev_hash,
                hash: e.hash,
            })?;
            last = e.hash;
        }
        at = to;
    }
    let root = hex::encode(cp.root);
    write(&Line::Checkpoint { checkpoint: cp })?;
    out.flush()?;
    Ok(SegmentSummary {
        log_id: log_id.to_owned(),
        start,
        end,
        root,
        last_hash: hex::encode(last),
    })
}

/// Verifies a segment file off-line (no database): see the module
/// documentation. The error names the line and what is wrong.
pub fn verify_segment<R: BufRead>(
    input: R,
    trusted_keys: &[String],
) -> Result<SegmentSummary, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut header: Option<(String, u64, u64)> = None;
    let mut frontier = Frontier::new();
    let mut prev = GENESIS;
    let mut next_seq = 0u64;
    let mut done: Option<SegmentSummary> = None;
    let mut contexts: HashSet<String> = HashSet::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("line {n}: cannot read: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if done.is_some() {
            return Err(format!("line {n}: content after the checkpoint"));
        }
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|e| format!("line {n}: not a segment line: {e}"))?;
        match (parsed, header.clone()) {
            (
                Line::Segment {
                    format,
                    log_id,
                    start,
                    end,
                    frontier: f,
                    prev_hash,
                },
                None,
            ) => {
                if !SEGMENT_FORMATS_READ.contains(&format.as_str()) {
                    return Err(format!("line {n}: unknown format {format:?}"));
                }
                let bytes =
                    hex::decode(&f).map_err(|_| format!("line {n}: frontier is not hex"))?;
                frontier = Frontier::from_bytes(&bytes)
                    .filter(|fr| fr.size() == start)
                    .ok_or_else(|| {
                        format!("line {n}: frontier does not describe {start} events")
                    })?;
                if start == 0 && prev_hash != GENESIS {
                    return Err(format!(
                        "line {n}: a segment from 0 must start at the genesis hash"
                    ));
                }
                prev = prev_hash;
                next_seq = start;
                header = Some((log_id, start, end));
            }
            (
                Line::Event {
                    seq,
                    event_bytes,
                    subjects,
                    prev_hash,
                    hash,
                },
                Some((log_id, _, end)),
            ) => {
                let (log_id, end) = (&log_id, &end);
                let bytes = b64
                    .decode(&event_bytes)
                    .map_err(|_| format!("line {n}: event_bytes is not base64"))?;
                let (rec, root) = Record::decode(&bytes)
                    .ok_or_else(|| format!("line {n}: not an encoded event"))?;
                if let Some(id) = rec.as_ref().context_id()
                    && !contexts.contains(id)
                {
                    return Err(format!(
                        "line {n}: event {seq} names context {id}, which no line before it holds"
                    ));
                }
                match (root, subjects) {
                    (None, None) => {}
                    (Some(root), Some(s)) if SubjectsRoot::of_column(s.as_bytes()) == root => {}
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "line {n}: event {seq}'s subjects do not match the root its bytes commit to"
                        ));
                    }
                    (Some(_), None) => {
                        return Err(format!(
                            "line {n}: event {seq} commits to its subjects by a root but the line does not list them"
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(format!(
                            "line {n}: event {seq} lists its subjects in its bytes; the line must not add any"
                        ));
                    }
                }
                if seq != next_seq || rec.seq != seq || &rec.log_id != log_id || seq >= *end {
                    return Err(format!(
                        "line {n}: expected event {next_seq} of log {log_id}, found seq {seq} (encoded {} of {})",
                        rec.seq, rec.log_id
                    ));
                }
                if prev_hash != prev {
                    return Err(format!(
                        "line {n}: event {seq} does not link to the previous event"
                    ));
                }
                let leaf = leaf_hash(&bytes);
                if chain_hash(&prev, &leaf) != hash {
                    return Err(format!(
                        "line {n}: event {seq} (id {}) was modified",
                        rec.event_id
                    ));
                }
                frontier.push(leaf);
                prev = hash;
                next_seq += 1;
            }
            (Line::Checkpoint { checkpoint }, Some((log_id, start, end))) => {
                let (log_id, start, end) = (&log_id, &start, &end);
                if !checkpoint.signature_valid() {
                    return Err(format!("line {n}: the checkpoint signature is invalid"));
                }
                if !trusted_keys.is_empty()
                    && !trusted_keys
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(&checkpoint.public_key))
                {
                    return Err(format!(
                        "line {n}: the checkpoint is signed by an untrusted key"
                    ));
                }
                if &checkpoint.log_id != log_id || checkpoint.tree_size != *end || next_seq != *end
                {
                    return Err(format!(
                        "line {n}: the segment holds events up to {next_seq} but the checkpoint covers {} of log {}",
                        checkpoint.tree_size, checkpoint.log_id
                    ));
                }
                if frontier.root() != checkpoint.root {
                    return Err(format!(
                        "line {n}: the recomputed root differs from the signed checkpoint's"
                    ));
                }
                done = Some(SegmentSummary {
                    log_id: log_id.clone(),
                    start: *start,
                    end: *end,
                    root: hex::encode(checkpoint.root),
                    last_hash: hex::encode(prev),
                });
            }
            (Line::Context { id, body }, Some(_)) => {
                if context_id(&body) != id {
                    return Err(format!(
                        "line {n}: context {id} was modified: its bytes do not hash to its id"
                    ));
                }
                contexts.insert(id);
            }
            (_, None) => {
                return Err(format!(
                    "line {n}: the file must start with a segment header"
                ));
            }
            (Line::Segment { .. }, Some(_)) => {
                return Err(format!("line {n}: a second segment header"));
            }
        }
    }
    done.ok_or_else(|| "the segment ends without its checkpoint (truncated)".to_owned())
}
