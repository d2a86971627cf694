//! Proofs out of the database: inclusion of one event, consistency between
//! checkpoints, the per-person access report, checkpoint export.
//!
//! Every proof carries the event bytes (base64), so a checker recomputes the
//! leaf hash itself, reads the event from the same bytes, and checks the
//! path against a signed checkpoint it can compare with what witnesses hold.
//! An event naming many subjects (a batch match) commits to them by a root
//! (`GWA2`, see `audit::record`): its bytes stay small, and a proof that it
//! named one person adds that subject's path to the root ([`SubjectProof`]).

use std::collections::{BTreeMap, HashMap};

use adapters::domain::IdNumber;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::checkpoint::{CheckpointExport, EXPORT_FORMAT, SignedCheckpoint};
use super::event::{FieldDisclosure, SubjectKeys, SubjectRef, rfc3339_ms};
use super::merkle::{CHUNK, ChunkedTree, ConsistencyProof, InclusionProof, leaf_hash};
use super::query::{Filter, MAX_LIMIT, query};
use super::record::{Record, SubjectProof, SubjectsRoot, context_id};
use super::store;
use crate::storage::Database;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// One event with its inclusion proof against a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventProof {
    /// The event id.
    pub event_id: String,
    /// The event bytes (see `audit::record`), base64.
    pub event_bytes: String,
    /// The path.
    pub proof: InclusionProof,
    /// The checkpoint it leads to.
    pub checkpoint: SignedCheckpoint,
    /// For an event that commits to its subjects by a root: that it names
    /// one of them (the per-person report's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectProof>,
    /// For an event whose body names a context (see `audit::record`): the
    /// context's stored bytes, which hash to the id the event bytes hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// What a verified [`EventProof`] establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proven {
    /// The event's columns as encoded. For an event that commits to its
    /// subjects by a root, `subjects` is empty: see `subjects_root`.
    pub record: Record,
    /// How such an event commits to its subjects.
    pub subjects_root: Option<SubjectsRoot>,
    /// The subject the proof's [`SubjectProof`] shows such an event names.
    pub proven_subject: Option<String>,
    /// The context the event names, checked against its id; read the
    /// event with `record.as_ref().event(context.as_deref())`.
    pub context: Option<String>,
}

impl EventProof {
    /// Checks everything a witness can check: the bytes decode, hash to the
    /// leaf, name this event and position, the path leads to the
    /// checkpoint's root, the signature is valid (and by a trusted key,
    /// when given), and a subject path leads to the event's subjects root.
    /// Returns what the bytes say.
    pub fn verify(&self, trusted_keys: &[String]) -> Result<Proven, String> {
        let bytes = b64()
            .decode(&self.event_bytes)
            .map_err(|_| "event_bytes is not base64".to_owned())?;
        let (rec, subjects_root) =
            Record::decode(&bytes).ok_or("event_bytes is not an encoded event")?;
        if leaf_hash(&bytes) != self.proof.leaf_hash {
            return Err("the event bytes do not hash to the proof's leaf".into());
        }
        if rec.event_id != self.event_id
            || rec.log_id != self.proof.log_id
            || rec.seq != self.proof.leaf_index
        {
            return Err("the event bytes name another event or position".into());
        }
        check_checkpoint(&self.checkpoint, trusted_keys)?;
        if self.checkpoint.log_id != self.proof.log_id
            || self.checkpoint.tree_size != self.proof.tree_size
        {
            return Err("the proof is for another log or tree size than the checkpoint".into());
        }
        if !self.proof.verify(&self.checkpoint.root) {
            return Err("the inclusion proof does not lead to the checkpoint's root".into());
        }
        match (rec.as_ref().context_id(), &self.context) {
            (None, None) => {}
            (Some(id), Some(c)) if context_id(c) == id => {}
            (Some(_), Some(_)) => {
                return Err("the context does not hash to the id the event names".into());
            }
            (Some(_), None) => return Err("the event names a context the proof lacks".into()),
            (None, Some(_)) => return Err("a context for an event that names none".into()),
        }
        let proven_subject = match (&self.subject, &subjects_root) {
            (None, _) => None,
            (Some(sp), Some(root)) if sp.verify(root) => Some(sp.subject.clone()),
            (Some(_), Some(_)) => {
                return Err("the subject path does not lead to the event's subjects root".into());
            }
            (Some(_), None) => {
                return Err("a subject path for an event that lists its subjects".into());
            }
        };
        Ok(Proven {
            record: rec,
            subjects_root,
            proven_subject,
            context: self.context.clone(),
        })
    }
}

fn check_checkpoint(cp: &SignedCheckpoint, trusted_keys: &[String]) -> Result<(), String> {
    if !cp.signature_valid() {
        return Err("the checkpoint signature is invalid".into());
    }
    if !trusted_keys.is_empty()
        && !trusted_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&cp.public_key))
    {
        return Err("the checkpoint is signed by an untrusted key".into());
    }
    Ok(())
}

/// The tree of `log_id` as far as `sizes` reach, from its chunk roots, with
/// the leaves loaded that proofs about the trees of those sizes (and about
/// leaf `index`) descend into.
async fn chunked_tree(
    db: &Database,
    log_id: &str,
    sizes: &[u64],
    index: Option<u64>,
) -> Result<ChunkedTree, AuditError> {
    let upto = sizes.iter().copied().max().unwrap_or(0);
    let roots = store::chunk_roots(db, log_id, upto / CHUNK).await?;
    let mut tree = ChunkedTree::new(CHUNK, roots);
    load_chunks(db, log_id, &mut tree, index, sizes).await?;
    Ok(tree)
}

/// Loads the leaves of the chunks `tree` still needs (see
/// [`ChunkedTree::needed`]), up to the largest of `sizes`.
async fn load_chunks(
    db: &Database,
    log_id: &str,
    tree: &mut ChunkedTree,
    index: Option<u64>,
    sizes: &[u64],
) -> Result<(), AuditError> {
    let upto = sizes.iter().copied().max().unwrap_or(0);
    for c in tree.needed(index, sizes) {
        let (from, to) = (c * CHUNK, ((c + 1) * CHUNK).min(upto));
        tree.add_chunk(c, store::leaves(db, log_id, from, to).await?);
    }
    Ok(())
}

/// Builds proofs for many events of one log against one checkpoint. It
/// reads the log's chunk roots and the leaves of the chunks its proofs
/// descend into, not every leaf of the log.
struct LogProver {
    tree: ChunkedTree,
    checkpoint: SignedCheckpoint,
}

impl LogProver {
    async fn load(db: &Database, log_id: &str) -> Result<Option<Self>, AuditError> {
        let Some(cp) = store::latest_checkpoint(db, log_id).await? else {
            return Ok(None);
        };
        let tree = chunked_tree(db, log_id, &[cp.tree_size], None).await?;
        if tree.root(cp.tree_size).ok() != Some(cp.root) {
            return Err(AuditError::Corrupt(
                "the stored leaves do not match the latest checkpoint; run verify",
            ));
        }
        Ok(Some(LogProver {
            tree,
            checkpoint: cp,
        }))
    }

    /// Loads what the proof of the event at `seq` needs, and forgets the
    /// leaves earlier proofs needed and this one does not (memory stays at
    /// two chunks however many events a report proves).
    async fn prepare(&mut self, db: &Database, seq: u64) -> Result<(), AuditError> {
        if seq < self.checkpoint.tree_size {
            let (log_id, size) = (&self.checkpoint.log_id, self.checkpoint.tree_size);
            let (this, last) = (seq / CHUNK, (size - 1) / CHUNK);
            self.tree.keep_chunks(|c| c == this || c == last);
            load_chunks(db, log_id, &mut self.tree, Some(seq), &[size]).await?;
        }
        Ok(())
    }

    /// The proof of `e`, carrying `context` (the context its body names);
    /// for an event committing to its subjects by a root, with the path of
    /// the first of `person` it names.
    fn prove(
        &self,
        e: &store::StoredEvent,
        person: &[SubjectRef],
        context: Option<String>,
    ) -> Option<EventProof> {
        let path = self
            .tree
            .inclusion_proof(e.record.seq, self.checkpoint.tree_size)
            .ok()?;
        let (bytes, rooted) = e.record.as_ref().encode_for(&e.leaf_hash);
        let subject = if rooted {
            person
                .iter()
                .find_map(|s| SubjectsRoot::prove(&e.record.subjects, s.as_str()))
        } else {
            None
        };
        Some(EventProof {
            event_id: e.record.event_id.clone(),
            subject,
            context,
            event_bytes: b64().encode(bytes),
            proof: InclusionProof {
                log_id: e.record.log_id.clone(),
                leaf_index: e.record.seq,
                tree_size: self.checkpoint.tree_size,
                leaf_hash: e.leaf_hash,
                path,
            },
            checkpoint: self.checkpoint.clone(),
        })
    }
}

/// The inclusion proof of one event against its log's latest checkpoint
/// (`GET /v1/audit/proof/{event_id}`).
pub async fn inclusion_proof(db: &Database, event_id: &str) -> Result<EventProof, AuditError> {
    let e = store::event_by_id(db, event_id)
        .await?
        .ok_or_else(|| AuditError::NotFound("no audit event with this id".into()))?;
    let mut prover = LogProver::load(db, &e.record.log_id)
        .await?
        .ok_or_else(|| AuditError::NotYetCheckpointed(event_id.to_owned()))?;
    prover.prepare(db, e.record.seq).await?;
    let context = context_of(db, &e.record, &mut HashMap::new()).await?;
    prover
        .prove(&e, &[], context)
        .ok_or_else(|| AuditError::NotYetCheckpointed(event_id.to_owned()))
}

/// The stored context `record` names, if it names one, through `cache`.
async fn context_of(
    db: &Database,
    record: &Record,
    cache: &mut HashMap<String, String>,
) -> Result<Option<String>, AuditError> {
    let Some(id) = record.as_ref().context_id() else {
        return Ok(None);
    };
    if !cache.contains_key(id) {
        cache.extend(store::contexts(db, Some(&[id])).await?);
    }
    cache.get(id).cloned().map(Some).ok_or(AuditError::Corrupt(
        "an event's context is not stored; run verify",
    ))
}

/// A consistency proof between two checkpoints of a log, with both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConsistency {
    /// The older checkpoint.
    pub first: SignedCheckpoint,
    /// The newer checkpoint.
    pub second: SignedCheckpoint,
    /// The proof.
    pub proof: ConsistencyProof,
}

impl CheckpointConsistency {
    /// Checks both signatures and the proof.
    pub fn verify(&self, trusted_keys: &[String]) -> Result<(), String> {
        check_checkpoint(&self.first, trusted_keys)?;
        check_checkpoint(&self.second, trusted_keys)?;
        if self.first.log_id != self.second.log_id
            || self.proof.first_size != self.first.tree_size
            || self.proof.second_size != self.second.tree_size
        {
            return Err("the proof does not match the two checkpoints".into());
        }
        if !self.proof.verify(&self.first.root, &self.second.root) {
            return Err("the newer checkpoint does not extend the older one".into());
        }
        Ok(())
    }
}

/// The consistency proof between the stored checkpoints of `log_id` at
/// `first` and `second` events (`second` defaults to the latest).
pub async fn consistency_proof(
    db: &Database,
    log_id: &str,
    first: u64,
    second: Option<u64>,
) -> Result<CheckpointConsistency, AuditError> {
    let cps = store::checkpoints(db, Some(log_id)).await?;
    let find = |size: u64| cps.iter().find(|c| c.tree_size == size).cloned();
    let first_cp = find(first).ok_or_else(|| {
        AuditError::NotFound(format!(
            "log {log_id} has no checkpoint at tree size {first}"
        ))
    })?;
    let second_cp = match second {
        Some(s) => find(s),
        None => cps.last().cloned(),
    }
    .ok_or_else(|| AuditError::NotFound(format!("log {log_id} has no such later checkpoint")))?;
    if second_cp.tree_size < first {
        return Err(AuditError::BadRequest(
            "first: must not be larger than second".into(),
        ));
    }
    let tree = chunked_tree(db, log_id, &[first, second_cp.tree_size], None).await?;
    let path = tree
        .consistency_proof(first, second_cp.tree_size)
        .map_err(|e| AuditError::BadRequest(e.to_string()))?;
    Ok(CheckpointConsistency {
        proof: ConsistencyProof {
            log_id: log_id.to_owned(),
            first_size: first,
            second_size: second_cp.tree_size,
            path,
        },
        first: first_cp,
        second: second_cp,
    })
}

/// Every stored checkpoint (of one log or all), for witnesses.
pub async fn export_checkpoints(
    db: &Database,
    log_id: Option<&str>,
) -> Result<CheckpointExport, AuditError> {
    let checkpoints = store::checkpoints(db, log_id).await?;
    let mut keys: Vec<String> = checkpoints.iter().map(|c| c.public_key.clone()).collect();
    keys.sort();
    keys.dedup();
    Ok(CheckpointExport {
        format: EXPORT_FORMAT.to_owned(),
        exported_at: rfc3339_ms(super::event::now_ms()),
        public_keys: keys,
        checkpoints,
    })
}

/// One access to the person's records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAccess {
    /// When, RFC 3339.
    pub time: String,
    /// Which client system.
    pub client_id: Option<String>,
    /// Which department.
    pub department: Option<String>,
    /// Action.
    pub action: String,
    /// Stated purpose.
    pub purpose: Option<String>,
    /// Legal basis.
    pub legal_basis: Option<String>,
    /// The decision.
    pub decision: String,
    /// Which fields, with treatment.
    pub fields: Vec<FieldDisclosure>,
    /// Where it is recorded and its proof; `None` while the event is newer
    /// than the latest checkpoint.
    pub proof: Option<EventProof>,
    /// The event id.
    pub event_id: String,
}

/// Every access to one person, with proofs (`GET /v1/audit/subject`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectReport {
    /// The person's HMACs under every key version (never the ID number).
    pub subjects: Vec<SubjectRef>,
    /// When generated, RFC 3339.
    pub generated_at: String,
    /// The accesses, oldest first.
    pub accesses: Vec<SubjectAccess>,
    /// Accesses not yet covered by a checkpoint.
    pub not_yet_checkpointed: u64,
}

impl SubjectReport {
    /// Checks every proof, and that each proven event names one of the
    /// report's subjects and says what the report says. Returns the number
    /// of proven accesses.
    pub fn verify(&self, trusted_keys: &[String]) -> Result<usize, String> {
        let mut n = 0;
        for (i, a) in self.accesses.iter().enumerate() {
            let Some(p) = &a.proof else { continue };
            let proven = p
                .verify(trusted_keys)
                .map_err(|e| format!("access {i}: {e}"))?;
            let ev = proven
                .record
                .as_ref()
                .event(proven.context.as_deref())
                .map_err(|e| format!("access {i}: the proven event does not decode: {e}"))?;
            let names_person = match &proven.subjects_root {
                None => ev.subjects.iter().any(|s| self.subjects.contains(s)),
                Some(_) => proven
                    .proven_subject
                    .as_deref()
                    .is_some_and(|p| self.subjects.iter().any(|s| s.as_str() == p)),
            };
            if !names_person {
                return Err(format!(
                    "access {i}: the proven event does not name this person"
                ));
            }
            if ev.event_id.to_string() != a.event_id
                || ev.fields != a.fields
                || ev.purpose != a.purpose
                || ev.client_id != a.client_id
                || ev.time != a.time
            {
                return Err(format!(
                    "access {i}: the report differs from the proven event"
                ));
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Every access to the person with ID number `id` in `[from_ms, to_ms)`,
/// each with an inclusion proof against its log's latest checkpoint. The
/// number is only used to compute HMACs under every key version.
pub async fn subject_report(
    db: &Database,
    keys: &SubjectKeys,
    id: &IdNumber,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<SubjectReport, AuditError> {
    let subjects = keys.all_versions(id);
    let f = Filter {
        from_ms,
        to_ms,
        subjects: subjects.clone(),
        ..Filter::default()
    };
    let mut provers: BTreeMap<String, Option<LogProver>> = BTreeMap::new();
    let mut contexts = HashMap::new();
    let mut accesses = Vec::new();
    let mut not_yet = 0;
    let mut cursor = None;
    loop {
        let page = query(db, &f, cursor.as_ref(), MAX_LIMIT).await?;
        for le in &page.events {
            if !provers.contains_key(&le.log_id) {
                provers.insert(le.log_id.clone(), LogProver::load(db, &le.log_id).await?);
            }
            let ev_id = le.event.event_id.to_string();
            let proof = match provers.get_mut(&le.log_id).and_then(Option::as_mut) {
                Some(p) if le.seq < p.checkpoint.tree_size => {
                    let stored = store::event_by_id(db, &ev_id)
                        .await?
                        .ok_or(AuditError::Corrupt("an event vanished during the report"))?;
                    p.prepare(db, le.seq).await?;
                    let context = context_of(db, &stored.record, &mut contexts).await?;
                    p.prove(&stored, &subjects, context)
                }
                _ => None,
            };
            if proof.is_none() {
                not_yet += 1;
            }
            let e = &le.event;
            accesses.push(SubjectAccess {
                time: e.time.clone(),
                client_id: e.client_id.clone(),
                department: e.department.clone(),
                action: e.action.clone(),
                purpose: e.purpose.clone(),
                legal_basis: e.legal_basis.clone(),
                decision: e.decision.as_str().to_owned(),
                fields: e.fields.clone(),
                proof,
                event_id: ev_id,
            });
        }
        match page.next_cursor {
            Some(c) => cursor = Some(super::query::Cursor::parse(&c)?),
            None => break,
        }
    }
    Ok(SubjectReport {
        subjects,
        generated_at: rfc3339_ms(super::event::now_ms()),
        accesses,
        not_yet_checkpointed: not_yet,
    })
}
