//! RFC 6962 / RFC 9162 Merkle trees over the leaf hashes of one log.
//!
//! - leaf hash `SHA-256(0x00 || event bytes)` ([`leaf_hash`]),
//! - interior node `SHA-256(0x01 || left || right)` ([`node_hash`]),
//! - the tree of `n` leaves splits at the largest power of two `k < n`
//!   (RFC 6962 §2.1), so a tree is never "padded".
//!
//! [`Frontier`] computes roots incrementally (O(log n) memory) for the writer
//! and the verifier; [`MerkleTree`] holds all complete levels in memory to
//! answer many inclusion and consistency proofs in O(log² n) each. The
//! verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 literally.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

/// A 32-byte SHA-256 value.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    to_hash(digest::digest(&digest::SHA256, data))
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree being built leaf by leaf: one subtree hash per
/// set bit of the leaf count, largest (leftmost) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, hash)` of the perfect subtrees, left to right.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_reporting(leaf, u32::MAX);
    }

    /// Appends a leaf hash and returns the hash of the perfect subtree of
    /// height `height` this leaf completed, if it completed one (every
    /// `2^height` leaves): the root of a [`CHUNK`]-leaf chunk, say, at no
    /// extra hashing.
    pub fn push_reporting(&mut self, leaf: Hash, height: u32) -> Option<Hash> {
        let mut cur = (0u32, leaf);
        let mut formed = (height == 0).then_some(leaf);
        while let Some(&(h, ref left)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            cur = (h + 1, node_hash(left, &cur.1));
            if cur.0 == height {
                formed = Some(cur.1);
            }
            self.stack.pop();
        }
        self.stack.push(cur);
        self.size += 1;
        formed
    }

    /// The RFC 6962 root of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, last)) = iter.next() else {
            return empty_root();
        };
        iter.fold(last, |acc, (_, left)| node_hash(left, &acc))
    }

    /// The subtree hashes, for persisting alongside a checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.stack.len() * 32);
        out.extend_from_slice(&self.size.to_be_bytes());
        for (_, h) in &self.stack {
            out.extend_from_slice(h);
        }
        out
    }

    /// Restores a frontier saved by [`Frontier::to_bytes`]; `None` if the bytes
    /// do not have the shape the size implies.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let rest = &bytes[8..];
        if rest.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let mut stack = Vec::new();
        let mut chunks = rest.chunks_exact(32);
        for bit in (0..64u32).rev() {
            if size & (1u64 << bit) != 0 {
                let mut h = [0u8; 32];
                h.copy_from_slice(chunks.next()?);
                stack.push((bit, h));
            }
        }
        Some(Frontier { size, stack })
    }
}

/// All complete levels of a tree, for answering proofs.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves; `levels[h][i]` is the hash of the perfect
    /// subtree over leaves `i·2^h .. (i+1)·2^h`.
    levels: Vec<Vec<Hash>>,
}

/// Why a proof cannot be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} exceeds the {available} leaves known")]
    SizeOutOfRange { size: u64, available: u64 },
    #[error("consistency needs 0 < first ({first}) <= second ({second})")]
    BadConsistencyRange { first: u64, second: u64 },
}

impl MerkleTree {
    /// Builds the levels over `leaves`.
    pub fn from_leaves(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(last) = levels.last() {
            if last.len() < 2 {
                break;
            }
            let next: Vec<Hash> = last
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The root of the tree made of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.mth(0, size))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                available: self.size(),
            });
        }
        Ok(())
    }

    /// MTH(D[start..end]); `start` is always aligned to the largest power of
    /// two not above `end - start` in RFC 6962's recursion.
    fn mth(&self, start: u64, end: u64) -> Hash {
        let len = end - start;
        if len.is_power_of_two() {
            let h = len.trailing_zeros() as usize;
            if start.is_multiple_of(len)
                && let Some(v) = self
                    .levels
                    .get(h)
                    .and_then(|l| l.get((start >> h) as usize))
            {
                return *v;
            }
        }
        if len == 1 {
            return self.levels[0][start as usize];
        }
        let k = split_point(len);
        node_hash(&self.mth(start, start + k), &self.mth(start + k, end))
    }

    /// The audit path of leaf `index` in the tree of the first `size` leaves
    /// (RFC 6962 §2.1.1 PATH), leaf-side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        path(index, 0, size, &|a, b| Some(self.mth(a, b)), &mut out);
        Ok(out)
    }

    /// The consistency proof between the trees of the first `first` and the
    /// first `second` leaves (RFC 6962 §2.1.2 PROOF).
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(second)?;
        if first == 0 || first > second {
            return Err(ProofError::BadConsistencyRange { first, second });
        }
        let mut out = Vec::new();
        if first < second {
            subproof(
                first,
                0,
                second,
                true,
                &|a, b| Some(self.mth(a, b)),
                &mut out,
            );
        }
        Ok(out)
    }
}

/// RFC 6962 PATH(m, D[start..end]) with subtree hashes from `mth`.
fn path(
    m: u64,
    start: u64,
    end: u64,
    mth: &impl Fn(u64, u64) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Option<()> {
    let n = end - start;
    if n <= 1 {
        return Some(());
    }
    let k = split_point(n);
    if m < k {
        path(m, start, start + k, mth, out)?;
        out.push(mth(start + k, end)?);
    } else {
        path(m - k, start + k, end, mth, out)?;
        out.push(mth(start, start + k)?);
    }
    Some(())
}

/// RFC 6962 SUBPROOF(m, D[start..end], b) with subtree hashes from `mth`.
fn subproof(
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    mth: &impl Fn(u64, u64) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Option<()> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(mth(start, end)?);
        }
        return Some(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, b, mth, out)?;
        out.push(mth(start + k, end)?);
    } else {
        subproof(m - k, start + k, end, false, mth, out)?;
        out.push(mth(start, start + k)?);
    }
    Some(())
}

/// Leaves per chunk of a log whose root is kept (`audit_merkle_chunks`), so
/// that a proof reads the roots of the complete chunks and the leaves of at
/// most two chunks instead of every leaf of the log.
pub const CHUNK: u64 = 4_096;

/// The height of a chunk's subtree ([`CHUNK`] = 2^this), for
/// [`Frontier::push_reporting`].
pub const CHUNK_HEIGHT: u32 = CHUNK.trailing_zeros();

/// A log's tree answered from the roots of its complete chunks plus the
/// leaves of the chunks a proof descends into ([`ChunkedTree::needed`]).
///
/// This gives the same hashes as [`MerkleTree`] over all leaves: RFC 6962
/// splits a range of more than one chunk, starting at a chunk boundary, at
/// a multiple of the chunk size (the largest power of two below `q` chunks
/// and a bit is `chunk ×` the largest power of two below `q + 1`), so the
/// tree over whole chunks is the tree over their roots, and a range inside
/// one chunk is that chunk's own tree.
#[derive(Clone, Debug)]
pub struct ChunkedTree {
    chunk: u64,
    /// Over the roots of complete chunks.
    top: MerkleTree,
    /// Chunk index → the tree over its leaves (possibly fewer than `chunk`:
    /// the log's last, incomplete chunk).
    chunks: BTreeMap<u64, MerkleTree>,
}

impl ChunkedTree {
    /// A tree of `chunk`-leaf chunks (a power of two, [`CHUNK`] in the
    /// gateway) whose complete chunks have roots `roots`, in order.
    pub fn new(chunk: u64, roots: Vec<Hash>) -> Self {
        debug_assert!(chunk.is_power_of_two());
        ChunkedTree {
            chunk,
            top: MerkleTree::from_leaves(roots),
            chunks: BTreeMap::new(),
        }
    }

    /// Leaves known: every complete chunk's, and those of a loaded last chunk.
    pub fn size(&self) -> u64 {
        let complete = self.top.size() * self.chunk;
        match self.chunks.last_key_value() {
            Some((&c, t)) if c >= self.top.size() => c * self.chunk + t.size(),
            _ => complete,
        }
    }

    /// The chunks whose leaves must be loaded (with [`ChunkedTree::add_chunk`])
    /// to answer a root, inclusion or consistency proof touching the trees of
    /// the first `sizes` leaves and the leaf `index`: the chunk of `index` and
    /// each chunk a size ends inside of.
    pub fn needed(&self, index: Option<u64>, sizes: &[u64]) -> Vec<u64> {
        let mut out: Vec<u64> = index.map(|i| i / self.chunk).into_iter().collect();
        for &n in sizes {
            if n % self.chunk != 0 {
                out.push(n / self.chunk);
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|c| !self.chunks.contains_key(c));
        out
    }

    /// Forgets the leaves of every loaded chunk but those `keep` names
    /// (a report proving many events, oldest first, needs one chunk at a
    /// time besides the last).
    pub fn keep_chunks(&mut self, keep: impl Fn(u64) -> bool) {
        self.chunks.retain(|c, _| keep(*c));
    }

    /// The leaves of chunk `c` (all of them, or those of an incomplete last
    /// chunk up to the largest size asked about).
    pub fn add_chunk(&mut self, c: u64, leaves: Vec<Hash>) {
        self.chunks.insert(c, MerkleTree::from_leaves(leaves));
    }

    fn mth(&self, start: u64, end: u64) -> Option<Hash> {
        if start.is_multiple_of(self.chunk)
            && end.is_multiple_of(self.chunk)
            && end / self.chunk <= self.top.size()
        {
            return Some(self.top.mth(start / self.chunk, end / self.chunk));
        }
        let (first, last) = (start / self.chunk, (end - 1) / self.chunk);
        if first == last {
            let t = self.chunks.get(&first)?;
            let base = first * self.chunk;
            if end - base > t.size() {
                return None;
            }
            return Some(t.mth(start - base, end - base));
        }
        let k = split_point(end - start);
        Some(node_hash(
            &self.mth(start, start + k)?,
            &self.mth(start + k, end)?,
        ))
    }

    fn missing(&self, size: u64) -> ProofError {
        ProofError::SizeOutOfRange {
            size,
            available: self.size(),
        }
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size == 0 {
            return Ok(empty_root());
        }
        self.mth(0, size).ok_or_else(|| self.missing(size))
    }

    /// As [`MerkleTree::inclusion_proof`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        path(index, 0, size, &|a, b| self.mth(a, b), &mut out).ok_or_else(|| self.missing(size))?;
        Ok(out)
    }

    /// As [`MerkleTree::consistency_proof`].
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        if first == 0 || first > second {
            return Err(ProofError::BadConsistencyRange { first, second });
        }
        let mut out = Vec::new();
        if first < second {
            subproof(first, 0, second, true, &|a, b| self.mth(a, b), &mut out)
                .ok_or_else(|| self.missing(second))?;
        }
        Ok(out)
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2). Equal sizes need an empty
/// proof and equal roots.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *first_root && sr == *second_root && snode == 0
}

/// Hex (de)serialisation of hashes in exported JSON.
pub mod hex32 {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as lower-case hex.
    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    /// Parses 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }

    /// Parses 64 hex digits.
    pub fn parse(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(out)
    }

    /// A list of hashes as hex strings.
    pub mod vec {
        use super::super::Hash;
        use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

        /// Serialises as a list of lower-case hex strings.
        pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for h in v {
                seq.serialize_element(&hex::encode(h))?;
            }
            seq.end()
        }

        /// Parses a list of 64-hex-digit strings.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
            let v = Vec::<String>::deserialize(d)?;
            v.iter()
                .map(|s| {
                    super::parse(s)
                        .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
                })
                .collect()
        }
    }
}

/// An inclusion proof as exported to auditors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The log the leaf is in.
    pub log_id: String,
    /// The leaf index (= the event's sequence number).
    pub leaf_index: u64,
    /// The tree size the proof is against.
    pub tree_size: u64,
    /// `SHA-256(0x00 || event bytes)`.
    #[serde(with = "hex32")]
    pub leaf_hash: Hash,
    /// The audit path, leaf-side first.
    #[serde(with = "hex32::vec")]
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Whether the proof leads from the leaf to `root`.
    pub fn verify(&self, root: &Hash) -> bool {
        verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &self.leaf_hash,
            &self.path,
            root,
        )
    }
}

/// A consistency proof between two tree sizes of one log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The log.
    pub log_id: String,
    /// The older tree size.
    pub first_size: u64,
    /// The newer tree size.
    pub second_size: u64,
    /// The proof nodes.
    #[serde(with = "hex32::vec")]
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Whether the older root is a prefix of the newer one.
    pub fn verify(&self, first_root: &Hash, second_root: &Hash) -> bool {
        verify_consistency(
            self.first_size,
            self.second_size,
            first_root,
            second_root,
            &self.path,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_tree_answers_as_the_whole_tree_does() {
        for chunk in [1u64, 2, 4, 8] {
            let all = leaves(45);
            let whole = MerkleTree::from_leaves(all.clone());
            let roots: Vec<Hash> = all
                .chunks_exact(chunk as usize)
                .map(|c| {
                    MerkleTree::from_leaves(c.to_vec())
                        .root(chunk)
                        .expect("root")
                })
                .collect();
            let load = |t: &mut ChunkedTree, needed: Vec<u64>| {
                for c in needed {
                    let from = (c * chunk) as usize;
                    let to = (from + chunk as usize).min(all.len());
                    t.add_chunk(c, all[from..to].to_vec());
                }
            };
            for n in 1..=45u64 {
                // Only the chunks `needed` names are loaded, per question.
                let complete = roots[..(n / chunk) as usize].to_vec();
                let mut t = ChunkedTree::new(chunk, complete.clone());
                let needed = t.needed(None, &[n]);
                load(&mut t, needed);
                assert_eq!(t.root(n), whole.root(n), "chunk {chunk}, size {n}");
                for i in 0..n {
                    let mut t = ChunkedTree::new(chunk, complete.clone());
                    let needed = t.needed(Some(i), &[n]);
                    assert!(needed.len() <= 2);
                    load(&mut t, needed);
                    assert_eq!(
                        t.inclusion_proof(i, n),
                        whole.inclusion_proof(i, n),
                        "chunk {chunk}, leaf {i} of {n}"
                    );
                }
                for m in 1..=n {
                    let mut t = ChunkedTree::new(chunk, complete.clone());
                    let needed = t.needed(None, &[m, n]);
                    load(&mut t, needed);
                    assert_eq!(
                        t.consistency_proof(m, n),
                        whole.consistency_proof(m, n),
                        "chunk {chunk}, {m} → {n}"
                    );
                }
            }
            // Without the chunk it needs, it says so instead of guessing.
            let t = ChunkedTree::new(chunk, roots.clone());
            if chunk > 1 {
                assert!(t.inclusion_proof(1, 45).is_err());
            }
        }
    }

    #[test]
    fn the_frontier_reports_each_completed_chunk() {
        let all = leaves(20);
        let mut f = Frontier::new();
        let mut got = Vec::new();
        for l in &all {
            if let Some(h) = f.push_reporting(*l, 2) {
                got.push(h);
            }
        }
        let want: Vec<Hash> = all
            .chunks_exact(4)
            .map(|c| MerkleTree::from_leaves(c.to_vec()).root(4).expect("root"))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            f.root(),
            MerkleTree::from_leaves(all).root(20).expect("root")
        );
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The recursive definition of RFC 6962 §2.1, as the reference.
    fn reference_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_mth(&d[..k]), &reference_mth(&d[k..]))
            }
        }
    }

    #[test]
    fn rfc6962_test_vectors() {
        // Roots from certificate-transparency-go's merkle tests over the
        // leaves "", 00, 10, 2021, 3031, 40414243, 5051525354555657, ...
        let inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            vec![
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut f = Frontier::new();
        for (input, root) in inputs.iter().zip(roots) {
            f.push(leaf_hash(input));
            assert_eq!(hex::encode(f.root()), root, "size {}", f.size());
        }
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_and_tree_match_reference() {
        let all = leaves(70);
        let tree = MerkleTree::from_leaves(all.clone());
        let mut f = Frontier::new();
        for n in 0..=70u64 {
            let expected = reference_mth(&all[..n as usize]);
            assert_eq!(f.root(), expected, "frontier at {n}");
            assert_eq!(tree.root(n).ok(), Some(expected), "tree at {n}");
            let restored = Frontier::from_bytes(&f.to_bytes());
            assert_eq!(restored.as_ref(), Some(&f));
            if n < 70 {
                f.push(all[n as usize]);
            }
        }
        assert!(Frontier::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 3, 1]).is_none());
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_on_wrong_root() {
        let all = leaves(40);
        let tree = MerkleTree::from_leaves(all.clone());
        for n in 1..=40u64 {
            let root = tree.root(n).expect("size in range");
            let mut wrong = root;
            wrong[0] ^= 1;
            for m in 0..n {
                let proof = tree.inclusion_proof(m, n).expect("in range");
                assert!(
                    verify_inclusion(m, n, &all[m as usize], &proof, &root),
                    "{m}/{n}"
                );
                assert!(!verify_inclusion(m, n, &all[m as usize], &proof, &wrong));
                let other = all[((m + 1) % 40) as usize];
                assert!(!verify_inclusion(m, n, &other, &proof, &root));
                if n > 1 {
                    assert!(!verify_inclusion(
                        (m + 1) % n,
                        n,
                        &all[m as usize],
                        &proof,
                        &root
                    ));
                    let mut shorter = proof.clone();
                    shorter.pop();
                    assert!(!verify_inclusion(m, n, &all[m as usize], &shorter, &root));
                }
            }
            assert!(tree.inclusion_proof(n, n).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_fail_on_wrong_root() {
        let all = leaves(40);
        let tree = MerkleTree::from_leaves(all);
        for second in 1..=40u64 {
            let r2 = tree.root(second).expect("in range");
            for first in 1..=second {
                let r1 = tree.root(first).expect("in range");
                let proof = tree.consistency_proof(first, second).expect("in range");
                assert!(
                    verify_consistency(first, second, &r1, &r2, &proof),
                    "{first}/{second}"
                );
                let mut bad = r1;
                bad[31] ^= 0x80;
                assert!(!verify_consistency(first, second, &bad, &r2, &proof));
                assert!(!verify_consistency(first, second, &r1, &bad, &proof));
                if first < second {
                    let mut longer = proof.clone();
                    longer.push(r1);
                    assert!(!verify_consistency(first, second, &r1, &r2, &longer));
                }
            }
        }
        assert!(tree.consistency_proof(0, 3).is_err());
        assert!(tree.consistency_proof(4, 3).is_err());
        assert!(tree.consistency_proof(3, 41).is_err());
    }
}
