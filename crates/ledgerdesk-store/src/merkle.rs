//! The Merkle tree over the log, in the style of Certificate Transparency
//! (RFC 9162 §2.1).
//!
//! ```text
//! leaf i   = SHA-256(0x00 ‖ canonical_bytes(event at position i+1))
//! node     = SHA-256(0x01 ‖ left ‖ right)
//! MTH({})  = SHA-256("")
//! MTH(D[n])= node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//! ```
//!
//! The first half of this module is pure: tree hashes, inclusion proofs
//! (PATH, §2.1.3) and consistency proofs (PROOF, §2.1.4) over a slice of leaf
//! hashes, their verification algorithms (§2.1.3.2, §2.1.4.2), and the range
//! proof used by evidence bundles. The second half keeps the tree in the
//! database (`merkle_nodes`: every leaf and every complete, aligned subtree),
//! filled incrementally by [`sync_leaves`], so [`tree_root`],
//! [`inclusion_proof`] and [`consistency_proof`] read O(log² n) 32-byte hashes
//! and never re-hash events.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{self, Arg, DbPool, DbRow, Record};
use crate::event::RecordedEvent;
use crate::hash::HashedFields;
use crate::store::EventStore;
use crate::StoreError;

/// A 32-byte SHA-256 tree hash; hex in JSON and text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MerkleHash(pub [u8; 32]);

impl MerkleHash {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ProofError> {
        let bytes = hex::decode(s.trim()).map_err(|_| ProofError::Malformed(s.to_owned()))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| ProofError::Malformed(s.to_owned()))
    }
}

impl fmt::Display for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleHash({})", self.to_hex())
    }
}

impl FromStr for MerkleHash {
    type Err = ProofError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl Serialize for MerkleHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for MerkleHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a proof was rejected, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof between sizes that are not ordered.
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder {
        /// The first (older) size.
        first: u64,
        /// The second (newer) size.
        second: u64,
    },
    /// The proof has the wrong number of hashes for its sizes.
    #[error("proof has {found} hashes where {expected} are needed")]
    WrongLength {
        /// How many the sizes call for.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// The proof does not lead to the expected root.
    #[error("proof does not reproduce the {which} root")]
    RootMismatch {
        /// Which root: `tree`, `first` or `second`.
        which: &'static str,
    },
    /// The range of leaves is empty or does not fit in the tree.
    #[error("leaf range {start}..{end} does not fit in a tree of size {size}")]
    BadRange {
        /// First leaf index.
        start: u64,
        /// One past the last leaf index.
        end: u64,
        /// The tree size.
        size: u64,
    },
    /// Text that is not a 32-byte hex hash.
    #[error("not a 32-byte hex hash: `{0}`")]
    Malformed(String),
}

/// Failures of the verifiable-history functions that touch the database or
/// the key file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request outside what the log holds (a position or tree size beyond
    /// the head, an empty range …); an HTTP layer answers 400/404.
    #[error("{0}")]
    OutOfRange(String),
    /// A proof could not be built (stored tree incomplete or malformed).
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The signing key could not be read, parsed or written.
    #[error("signing key: {0}")]
    Key(String),
    /// No signed checkpoint covers the requested positions yet.
    #[error("no signed checkpoint covers position {0} yet")]
    NotCovered(u64),
    /// What the database holds is damaged: a stored Merkle node missing
    /// inside the synced tree, a checkpoint row that cannot be read. Never
    /// the caller's fault.
    #[error("{0}")]
    Corrupt(String),
    /// Another process is signing a checkpoint right now.
    #[error("another process is signing a checkpoint")]
    Busy,
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

// ---------------------------------------------------------------------------
// Pure tree functions.

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> MerkleHash {
    MerkleHash(Sha256::digest([]).into())
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> MerkleHash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    MerkleHash(h.finalize().into())
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &MerkleHash, right: &MerkleHash) -> MerkleHash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    MerkleHash(h.finalize().into())
}

/// The leaf hash of a stored event: over exactly its canonical bytes.
pub fn event_leaf_hash(e: &RecordedEvent) -> MerkleHash {
    let event_id = e.event_id.hyphenated().to_string();
    leaf_hash(
        &HashedFields {
            position: e.position,
            stream_id: &e.stream_id,
            stream_type: &e.stream_type,
            version: e.version,
            event_id: &event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at_us: e.recorded_at.timestamp_micros(),
        }
        .canonical_bytes(),
    )
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A half-open range of leaf indexes, `[start, end)`.
pub type LeafRange = (u64, u64);

/// `MTH(D[n])` over leaf hashes.
pub fn root_of(leaves: &[MerkleHash]) -> MerkleHash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The subtrees whose roots form `PATH(index, D[size])`, leaf to root.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<LeafRange>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0, size);
    let mut out = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The subtrees whose roots form `PROOF(first, D[second])`, in RFC order.
/// Empty when `first` is 0 or equal to `second`.
pub fn consistency_ranges(first: u64, second: u64) -> Result<Vec<LeafRange>, ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: the recursion appends after the
    // recursive call, so collect on the way down and reverse.
    let (mut lo, mut hi, mut m, mut whole) = (0, second, first, true);
    let mut out = Vec::new();
    loop {
        if m == hi - lo {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// `PATH(index, D[n])` over leaf hashes.
pub fn inclusion_path(index: u64, leaves: &[MerkleHash]) -> Result<Vec<MerkleHash>, ProofError> {
    Ok(inclusion_ranges(index, leaves.len() as u64)?
        .into_iter()
        .map(|(a, b)| root_of(&leaves[a as usize..b as usize]))
        .collect())
}

/// `PROOF(first, D[n])` over leaf hashes.
pub fn consistency_path(first: u64, leaves: &[MerkleHash]) -> Result<Vec<MerkleHash>, ProofError> {
    Ok(consistency_ranges(first, leaves.len() as u64)?
        .into_iter()
        .map(|(a, b)| root_of(&leaves[a as usize..b as usize]))
        .collect())
}

/// RFC 9162 §2.1.3.2: does `path` prove `leaf` is leaf `index` of the tree
/// of `size` leaves whose root is `root`?
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &MerkleHash,
    path: &[MerkleHash],
    root: &MerkleHash,
) -> Result<(), ProofError> {
    let expected = inclusion_ranges(index, size)?.len();
    if path.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            found: path.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                expected,
                found: path.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || r != *root {
        return Err(ProofError::RootMismatch { which: "tree" });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree of `first` leaves with root
/// `first_root` is a prefix of the tree of `second` leaves with `second_root`?
///
/// The RFC algorithm covers 0 < first < second. Here `first == second`
/// needs an empty proof and equal roots, and `first == 0` an empty proof and
/// `first_root` the empty tree's root (every tree extends the empty one).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &MerkleHash,
    second_root: &MerkleHash,
    proof: &[MerkleHash],
) -> Result<(), ProofError> {
    let expected = consistency_ranges(first, second)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            found: proof.len(),
        });
    }
    if first == 0 {
        return if *first_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::RootMismatch { which: "first" })
        };
    }
    if first == second {
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch { which: "second" })
        };
    }
    let mut path: Vec<MerkleHash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                expected,
                found: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr != *first_root {
        return Err(ProofError::RootMismatch { which: "first" });
    }
    if snode != 0 || sr != *second_root {
        return Err(ProofError::RootMismatch { which: "second" });
    }
    Ok(())
}

/// The maximal subtrees of the tree of `size` leaves that lie wholly outside
/// the leaves `[start, end)`, in left-to-right order: with the range's own
/// leaves, their roots reproduce `MTH(D[size])` (see [`root_from_range`]).
pub fn range_proof_ranges(start: u64, end: u64, size: u64) -> Result<Vec<LeafRange>, ProofError> {
    if start >= end || end > size {
        return Err(ProofError::BadRange { start, end, size });
    }
    fn walk(a: u64, b: u64, start: u64, end: u64, out: &mut Vec<LeafRange>) {
        if b <= start || a >= end {
            out.push((a, b));
        } else if a < start || b > end {
            let k = split(b - a);
            walk(a, a + k, start, end, out);
            walk(a + k, b, start, end, out);
        }
    }
    let mut out = Vec::new();
    walk(0, size, start, end, &mut out);
    Ok(out)
}

/// Rebuild `MTH(D[size])` from the consecutive leaves starting at index
/// `start` and the hashes of [`range_proof_ranges`], in that order. Every
/// hash must be used exactly once.
pub fn root_from_range(
    start: u64,
    leaves: &[MerkleHash],
    size: u64,
    proof: &[MerkleHash],
) -> Result<MerkleHash, ProofError> {
    let end = start + leaves.len() as u64;
    let expected = range_proof_ranges(start, end, size)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            found: proof.len(),
        });
    }
    struct Walk<'a> {
        start: u64,
        end: u64,
        leaves: &'a [MerkleHash],
        proof: std::slice::Iter<'a, MerkleHash>,
    }
    impl Walk<'_> {
        fn hash(&mut self, a: u64, b: u64) -> MerkleHash {
            if b <= self.start || a >= self.end {
                // The length was checked against the same walk.
                *self.proof.next().expect("proof length checked")
            } else if a >= self.start && b <= self.end {
                root_of(&self.leaves[(a - self.start) as usize..(b - self.start) as usize])
            } else {
                let k = split(b - a);
                let l = self.hash(a, a + k);
                let r = self.hash(a + k, b);
                node_hash(&l, &r)
            }
        }
    }
    let mut w = Walk {
        start,
        end,
        leaves,
        proof: proof.iter(),
    };
    Ok(w.hash(0, size))
}

// ---------------------------------------------------------------------------
// Proof records, as the HTTP layer serves them.

/// An inclusion proof for the event at `position` in the tree of `tree_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The event's log position (leaf index + 1).
    pub position: u64,
    /// The leaf index (position − 1).
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The event's leaf hash.
    pub leaf_hash: MerkleHash,
    /// `PATH(leaf_index, D[tree_size])`, leaf to root.
    pub audit_path: Vec<MerkleHash>,
    /// The tree's root at `tree_size` (compare with a signed checkpoint's).
    pub root_hash: MerkleHash,
}

impl InclusionProof {
    /// Check the proof against a root the caller trusts (a signed
    /// checkpoint's), not the `root_hash` the proof carries.
    pub fn verify(&self, trusted_root: &MerkleHash) -> Result<(), ProofError> {
        if self.leaf_index + 1 != self.position {
            return Err(ProofError::IndexOutOfRange {
                index: self.leaf_index,
                size: self.tree_size,
            });
        }
        verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &self.leaf_hash,
            &self.audit_path,
            trusted_root,
        )
    }
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub first: u64,
    /// The newer size.
    pub second: u64,
    /// The root at `first`.
    pub first_root: MerkleHash,
    /// The root at `second`.
    pub second_root: MerkleHash,
    /// `PROOF(first, D[second])`.
    pub proof: Vec<MerkleHash>,
}

impl ConsistencyProof {
    /// Check the proof against two roots the caller trusts.
    pub fn verify(
        &self,
        first_root: &MerkleHash,
        second_root: &MerkleHash,
    ) -> Result<(), ProofError> {
        verify_consistency(
            self.first,
            self.second,
            first_root,
            second_root,
            &self.proof,
        )
    }
}

// ---------------------------------------------------------------------------
// The stored tree.

/// Events hashed per transaction by [`sync_leaves`].
const SYNC_PAGE: usize = 2_000;
/// Rows per INSERT statement.
const INSERT_CHUNK: usize = 500;

/// A stored node: (level, index) and its hash.
struct NodeRow(i64, i64, String);

impl Record for NodeRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(NodeRow(
            row.int0("level")?,
            row.int0("idx")?,
            row.text("hash")?.unwrap_or_default(),
        ))
    }
}

/// One integer column named `n`.
struct Count(i64);

impl Record for Count {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Count(row.int0("n")?))
    }
}

/// How many leaves the stored tree holds.
pub async fn stored_size(store: &dyn EventStore) -> Result<u64, AuditError> {
    let pool = store.db();
    let n = db::fetch_one::<Count>(
        &pool,
        "SELECT COALESCE(MAX(idx) + 1, 0) AS n FROM merkle_nodes WHERE level = 0",
        vec![],
    )
    .await?
    .map_or(0, |c| c.0);
    Ok(n.max(0) as u64)
}

/// Hash the events not yet in the stored tree, in pages, storing each leaf
/// and every complete subtree it completes. Returns the stored tree's size.
///
/// Safe to run from several tasks or processes at once: rows are
/// deterministic and inserted with `ON CONFLICT DO NOTHING`.
pub async fn sync_leaves(store: &dyn EventStore) -> Result<u64, AuditError> {
    let pool = store.db();
    let mut size = stored_size(store).await?;
    let mut frontier = load_frontier(&pool, size).await?;
    loop {
        let page = store.read_all(size, SYNC_PAGE).await?;
        if page.is_empty() {
            return Ok(size);
        }
        let mut rows: Vec<(u32, u64, MerkleHash)> = Vec::with_capacity(page.len() * 2);
        for e in &page {
            if e.position != size + 1 {
                return Err(StoreError::Corrupt {
                    position: (size + 1) as i64,
                    reason: format!("log has a gap: found position {}", e.position),
                }
                .into());
            }
            let (mut level, mut idx, mut node) = (0u32, size, event_leaf_hash(e));
            rows.push((level, idx, node));
            while idx & 1 == 1 {
                let (l, left) = frontier.pop().expect("frontier holds the left sibling");
                debug_assert_eq!(l, level);
                node = node_hash(&left, &node);
                level += 1;
                idx >>= 1;
                rows.push((level, idx, node));
            }
            frontier.push((level, node));
            size += 1;
        }
        insert_nodes(&pool, &rows).await?;
    }
}

/// The roots of the complete subtrees on the right edge of a tree of `size`,
/// largest first.
async fn load_frontier(pool: &DbPool, size: u64) -> Result<Vec<(u32, MerkleHash)>, AuditError> {
    let keys: Vec<(u32, u64)> = (0..64u32)
        .rev()
        .filter(|l| size >> l & 1 == 1)
        .map(|l| (l, (size >> l) - 1))
        .collect();
    let found = fetch_nodes(pool, &keys).await?;
    keys.iter()
        .map(|k| {
            found
                .get(k)
                .map(|h| (k.0, *h))
                .ok_or_else(|| missing_node(*k))
        })
        .collect()
}

fn missing_node((level, idx): (u32, u64)) -> AuditError {
    AuditError::Corrupt(format!(
        "stored Merkle tree has no node at level {level}, index {idx}"
    ))
}

async fn insert_nodes(pool: &DbPool, rows: &[(u32, u64, MerkleHash)]) -> Result<(), AuditError> {
    // Integers and hex digits only, so the statement is built as text and
    // runs unprepared (one-off statements would only fill the cache).
    let statements: Vec<String> = rows
        .chunks(INSERT_CHUNK)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|(l, i, h)| format!("({l},{i},'{h}')"))
                .collect();
            format!(
                "INSERT INTO merkle_nodes (level, idx, hash) VALUES {} ON CONFLICT DO NOTHING",
                values.join(",")
            )
        })
        .collect();
    let mut tx = db::begin(pool).await?;
    for s in &statements {
        tx.script(s).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Read stored nodes by (level, index).
async fn fetch_nodes(
    pool: &DbPool,
    keys: &[(u32, u64)],
) -> Result<BTreeMap<(u32, u64), MerkleHash>, AuditError> {
    let mut by_level: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (l, i) in keys {
        by_level.entry(*l).or_default().insert(*i);
    }
    let mut out = BTreeMap::new();
    if by_level.is_empty() {
        return Ok(out);
    }
    let filter: Vec<String> = by_level
        .iter()
        .map(|(l, idx)| {
            let list: Vec<String> = idx.iter().map(u64::to_string).collect();
            format!("(level = {l} AND idx IN ({}))", list.join(","))
        })
        .collect();
    let sql = format!(
        "SELECT level, idx, hash FROM merkle_nodes WHERE {}",
        filter.join(" OR ")
    );
    for NodeRow(l, i, h) in db::fetch::<NodeRow>(pool, &sql, vec![]).await? {
        out.insert((l as u32, i as u64), MerkleHash::from_hex(&h)?);
    }
    Ok(out)
}

/// The stored (aligned, complete) subtrees whose hashes make `MTH(D[a:b])`.
fn node_keys(a: u64, b: u64, out: &mut Vec<(u32, u64)>) {
    let n = b - a;
    if n.is_power_of_two() && a & (n - 1) == 0 {
        out.push((n.trailing_zeros(), a / n));
    } else {
        let k = split(n);
        node_keys(a, a + k, out);
        node_keys(a + k, b, out);
    }
}

fn compose(
    a: u64,
    b: u64,
    nodes: &BTreeMap<(u32, u64), MerkleHash>,
) -> Result<MerkleHash, AuditError> {
    let n = b - a;
    if n.is_power_of_two() && a & (n - 1) == 0 {
        let key = (n.trailing_zeros(), a / n);
        nodes.get(&key).copied().ok_or_else(|| missing_node(key))
    } else {
        let k = split(n);
        Ok(node_hash(
            &compose(a, a + k, nodes)?,
            &compose(a + k, b, nodes)?,
        ))
    }
}

/// The hashes of `ranges` (MTH of each), read from the stored tree, which is
/// first synced if it is shorter than `size`.
async fn range_hashes(
    store: &dyn EventStore,
    size: u64,
    ranges: &[LeafRange],
) -> Result<Vec<MerkleHash>, AuditError> {
    if size > stored_size(store).await? {
        let synced = sync_leaves(store).await?;
        if size > synced {
            return Err(AuditError::OutOfRange(format!(
                "tree size {size} is beyond the log's {synced} events"
            )));
        }
    }
    let mut keys = Vec::new();
    for (a, b) in ranges {
        node_keys(*a, *b, &mut keys);
    }
    let nodes = fetch_nodes(&store.db(), &keys).await?;
    ranges
        .iter()
        .map(|(a, b)| compose(*a, *b, &nodes))
        .collect()
}

/// The Merkle root of the first `size` events.
pub async fn tree_root(store: &dyn EventStore, size: u64) -> Result<MerkleHash, AuditError> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(range_hashes(store, size, &[(0, size)]).await?[0])
}

/// The inclusion proof of the event at `position` (1-based) in the tree of
/// the first `tree_size` events.
pub async fn inclusion_proof(
    store: &dyn EventStore,
    position: u64,
    tree_size: u64,
) -> Result<InclusionProof, AuditError> {
    if position == 0 || position > tree_size {
        return Err(AuditError::OutOfRange(format!(
            "position {position} is not in a tree of size {tree_size}"
        )));
    }
    let index = position - 1;
    let mut ranges = inclusion_ranges(index, tree_size)?;
    ranges.push((index, position));
    ranges.push((0, tree_size));
    let mut hashes = range_hashes(store, tree_size, &ranges).await?;
    let root_hash = hashes.pop().expect("root requested");
    let leaf_hash = hashes.pop().expect("leaf requested");
    Ok(InclusionProof {
        position,
        leaf_index: index,
        tree_size,
        leaf_hash,
        audit_path: hashes,
        root_hash,
    })
}

/// The consistency proof between the trees of the first `first` and the
/// first `second` events.
pub async fn consistency_proof(
    store: &dyn EventStore,
    first: u64,
    second: u64,
) -> Result<ConsistencyProof, AuditError> {
    if first > second {
        return Err(AuditError::OutOfRange(format!(
            "tree size {first} is larger than tree size {second}"
        )));
    }
    let mut ranges = consistency_ranges(first, second)?;
    let (mut first_root, mut second_root) = (empty_root(), empty_root());
    if second > 0 {
        ranges.push((0, second));
    }
    if first > 0 {
        ranges.push((0, first));
    }
    let mut hashes = range_hashes(store, second, &ranges).await?;
    if first > 0 {
        first_root = hashes.pop().expect("first root requested");
    }
    if second > 0 {
        second_root = hashes.pop().expect("second root requested");
    }
    Ok(ConsistencyProof {
        first,
        second,
        first_root,
        second_root,
        proof: hashes,
    })
}

/// The hashes of the range proof for leaves `[start, end)` in the tree of
/// `size` (see [`range_proof_ranges`]).
pub async fn range_proof(
    store: &dyn EventStore,
    start: u64,
    end: u64,
    size: u64,
) -> Result<Vec<MerkleHash>, AuditError> {
    let ranges = range_proof_ranges(start, end, size)?;
    range_hashes(store, size, &ranges).await
}

/// Stored leaf hashes for leaf indexes `after..`, at most `limit`, in order.
pub(crate) async fn stored_leaves(
    pool: &DbPool,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, MerkleHash)>, AuditError> {
    let rows = db::fetch::<NodeRow>(
        pool,
        "SELECT level, idx, hash FROM merkle_nodes WHERE level = 0 AND idx >= $1 ORDER BY idx LIMIT $2",
        vec![Arg::from(crate::sql::clamp(after)), Arg::from(limit as i64)],
    )
    .await?;
    rows.into_iter()
        .map(|NodeRow(_, i, h)| Ok((i.max(0) as u64, MerkleHash::from_hex(&h)?)))
        .collect()
}

/// Incremental root computation over a stream of leaves: the right edge of
/// the tree (one complete subtree per set bit of the size).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<(u32, MerkleHash)>,
}

impl Frontier {
    /// Append the next leaf.
    pub fn push(&mut self, leaf: MerkleHash) {
        let (mut level, mut node) = (0u32, leaf);
        let mut idx = self.size;
        while idx & 1 == 1 {
            let (_, left) = self.nodes.pop().expect("frontier holds the left sibling");
            node = node_hash(&left, &node);
            level += 1;
            idx >>= 1;
        }
        self.nodes.push((level, node));
        self.size += 1;
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the leaves pushed so far.
    pub fn root(&self) -> MerkleHash {
        let mut it = self.nodes.iter().rev();
        let Some((_, last)) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, (_, left)| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<MerkleHash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn h(s: &str) -> MerkleHash {
        MerkleHash::from_hex(s).unwrap()
    }

    /// Roots of the RFC 6962 reference tree (the C++/Go test vectors: the
    /// eight leaves "", 0x00, 0x10, 0x2021, 0x3031, 0x40414243,
    /// 0x5051525354555657, 0x606162636465666768696a6b6c6d6e6f).
    fn reference_leaves() -> Vec<MerkleHash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).unwrap()))
        .collect()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        let l = reference_leaves();
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
        for (n, r) in roots.iter().enumerate() {
            assert_eq!(root_of(&l[..=n]), h(r), "root of {} leaves", n + 1);
        }
    }

    #[test]
    fn known_inclusion_and_consistency_paths() {
        let l = reference_leaves();
        // RFC 6962 reference: PATH(0, D[8]) and PROOF(1, D[8]).
        let path0 = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        let got = inclusion_path(0, &l).unwrap();
        assert_eq!(got, path0.iter().map(|s| h(s)).collect::<Vec<_>>());
        let proof1 = consistency_path(1, &l).unwrap();
        assert_eq!(proof1, got);
        // PROOF(6, D[8]).
        let proof6 = [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ];
        assert_eq!(
            consistency_path(6, &l).unwrap(),
            proof6.iter().map(|s| h(s)).collect::<Vec<_>>()
        );
    }

    /// A brute-force check of the RFC definitions, independent of the
    /// iterative range walks.
    fn path_rec(m: usize, d: &[MerkleHash]) -> Vec<MerkleHash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = split(n as u64) as usize;
        if m < k {
            let mut p = path_rec(m, &d[..k]);
            p.push(root_of(&d[k..]));
            p
        } else {
            let mut p = path_rec(m - k, &d[k..]);
            p.push(root_of(&d[..k]));
            p
        }
    }

    fn subproof_rec(m: usize, d: &[MerkleHash], b: bool) -> Vec<MerkleHash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![root_of(d)] };
        }
        let k = split(n as u64) as usize;
        if m <= k {
            let mut p = subproof_rec(m, &d[..k], b);
            p.push(root_of(&d[k..]));
            p
        } else {
            let mut p = subproof_rec(m - k, &d[k..], false);
            p.push(root_of(&d[..k]));
            p
        }
    }

    #[test]
    fn paths_match_the_recursive_definitions() {
        for n in 1..=40u64 {
            let l = leaves(n);
            for i in 0..n {
                assert_eq!(inclusion_path(i, &l).unwrap(), path_rec(i as usize, &l));
            }
            for m in 1..n {
                assert_eq!(
                    consistency_path(m, &l).unwrap(),
                    subproof_rec(m as usize, &l, true)
                );
            }
        }
    }

    #[test]
    fn every_honest_proof_verifies() {
        for n in 1..=64u64 {
            let l = leaves(n);
            let root = root_of(&l);
            for i in 0..n {
                let p = inclusion_path(i, &l).unwrap();
                verify_inclusion(i, n, &l[i as usize], &p, &root).unwrap();
            }
            for m in 0..=n {
                let p = consistency_path(m, &l).unwrap();
                verify_consistency(m, n, &root_of(&l[..m as usize]), &root, &p).unwrap();
            }
        }
    }

    #[test]
    fn frontier_roots_match() {
        let l = leaves(70);
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for n in 1..=70 {
            f.push(l[n - 1]);
            assert_eq!(f.root(), root_of(&l[..n]));
        }
    }

    #[test]
    fn range_proofs_reproduce_the_root() {
        for n in 1..=33u64 {
            let l = leaves(n);
            let root = root_of(&l);
            for a in 0..n {
                for b in a + 1..=n {
                    let ranges = range_proof_ranges(a, b, n).unwrap();
                    let proof: Vec<_> = ranges
                        .iter()
                        .map(|(x, y)| root_of(&l[*x as usize..*y as usize]))
                        .collect();
                    let slice = &l[a as usize..b as usize];
                    assert_eq!(root_from_range(a, slice, n, &proof).unwrap(), root);
                    // Shifted by one, or with a leaf changed, it does not.
                    if a > 0 {
                        assert_ne!(root_from_range(a - 1, slice, n, &proof).ok(), Some(root));
                    }
                    let mut bad = slice.to_vec();
                    bad[0].0[0] ^= 1;
                    assert_ne!(root_from_range(a, &bad, n, &proof).unwrap(), root);
                    let mut longer = proof.clone();
                    longer.push(root);
                    assert!(root_from_range(a, slice, n, &longer).is_err());
                }
            }
        }
    }

    /// Every way of forging an inclusion proof we can think of is refused.
    fn inclusion_forgeries_rejected(n: u64, i: u64) {
        let l = leaves(n);
        let root = root_of(&l);
        let leaf = l[i as usize];
        let p = inclusion_path(i, &l).unwrap();
        let bad =
            |idx: u64, size: u64, leaf: &MerkleHash, path: &[MerkleHash], root: &MerkleHash| {
                verify_inclusion(idx, size, leaf, path, root).is_err()
            };
        if !p.is_empty() {
            assert!(bad(i, n, &leaf, &p[..p.len() - 1], &root), "truncated");
            for k in 0..p.len() {
                let mut f = p.clone();
                f[k].0[31] ^= 0x80;
                assert!(bad(i, n, &leaf, &f, &root), "flipped byte in hash {k}");
            }
        }
        let mut ext = p.clone();
        ext.push(root);
        assert!(bad(i, n, &leaf, &ext, &root), "extended");
        let mut ext0 = p.clone();
        ext0.insert(0, leaf);
        assert!(bad(i, n, &leaf, &ext0, &root), "extended at the front");
        if p.len() >= 2 {
            let mut r = p.clone();
            r.swap(0, 1);
            if r != p {
                assert!(bad(i, n, &leaf, &r, &root), "reordered");
            }
            let mut rev = p.clone();
            rev.reverse();
            if rev != p {
                assert!(bad(i, n, &leaf, &rev, &root), "reversed");
            }
        }
        for j in 0..n {
            if l[j as usize] != leaf {
                assert!(bad(j, n, &leaf, &p, &root), "wrong index {j}");
            }
            assert!(
                bad(i, n, &l[j as usize], &p, &root) || j == i,
                "wrong leaf {j}"
            );
        }
        assert!(bad(n, n, &leaf, &p, &root), "index = size");
        // Claimed for another size, with that size's true root (a signed
        // checkpoint binds size and root, so that is the forger's option).
        let big = leaves(n + 2);
        for s in 1..=n + 2 {
            if s != n {
                let r = root_of(&big[..s as usize]);
                assert!(bad(i, s, &leaf, &p, &r), "wrong size {s} for {n}");
            }
        }
        let mut wrong_root = root;
        wrong_root.0[0] ^= 1;
        assert!(bad(i, n, &leaf, &p, &wrong_root), "wrong root");
        assert!(
            bad(i, n, &leaf, &p, &root_of(&l[..n as usize - 1])) || n == 1,
            "older root"
        );
        let mut wrong_leaf = leaf;
        wrong_leaf.0[5] ^= 4;
        assert!(bad(i, n, &wrong_leaf, &p, &root), "flipped leaf");
    }

    fn consistency_forgeries_rejected(m: u64, n: u64) {
        let l = leaves(n);
        let (r1, r2) = (root_of(&l[..m as usize]), root_of(&l));
        let p = consistency_path(m, &l).unwrap();
        let bad = |a: u64, b: u64, x: &MerkleHash, y: &MerkleHash, q: &[MerkleHash]| {
            verify_consistency(a, b, x, y, q).is_err()
        };
        if m == 0 {
            // Every tree extends the empty one: only the empty root and an
            // empty proof are accepted.
            assert!(bad(0, n, &l[0], &r2, &p), "non-empty first root");
            assert!(bad(0, n, &r1, &r2, &[r2]), "non-empty proof");
            return;
        }
        if !p.is_empty() {
            assert!(bad(m, n, &r1, &r2, &p[..p.len() - 1]), "truncated");
            assert!(bad(m, n, &r1, &r2, &p[1..]), "front dropped");
            for k in 0..p.len() {
                let mut f = p.clone();
                f[k].0[0] ^= 1;
                assert!(bad(m, n, &r1, &r2, &f), "flipped byte in hash {k}");
            }
        }
        let mut ext = p.clone();
        ext.push(r2);
        assert!(bad(m, n, &r1, &r2, &ext), "extended");
        if p.len() >= 2 {
            let mut r = p.clone();
            r.swap(0, p.len() - 1);
            if r != p {
                assert!(bad(m, n, &r1, &r2, &r), "reordered");
            }
        }
        let mut x = r1;
        x.0[3] ^= 1;
        assert!(bad(m, n, &x, &r2, &p), "wrong first root");
        let mut y = r2;
        y.0[3] ^= 1;
        assert!(bad(m, n, &r1, &y, &p), "wrong second root");
        if m != n {
            assert!(bad(m, n, &r2, &r1, &p), "roots swapped");
        }
        // Claimed for other sizes, with those sizes' true roots.
        let big = leaves(n + 2);
        for s in m..=n + 2 {
            if s != n {
                let r = root_of(&big[..s as usize]);
                assert!(bad(m, s, &r1, &r, &p), "wrong second size {s} for {m},{n}");
            }
        }
        for s in 0..=n {
            // (Size 0 with an empty proof is a true statement.)
            if s != m && !(s == 0 && p.is_empty()) {
                let r = root_of(&l[..s as usize]);
                assert!(bad(s, n, &r, &r2, &p), "wrong first size {s} for {m},{n}");
            }
        }
        assert!(bad(n + 1, n, &r1, &r2, &p), "first beyond second");
    }

    #[test]
    fn forged_proofs_are_rejected_exhaustively() {
        for n in 1..=20u64 {
            for i in 0..n {
                inclusion_forgeries_rejected(n, i);
            }
            for m in 0..=n {
                consistency_forgeries_rejected(m, n);
            }
        }
    }

    #[test]
    fn hashes_round_trip_as_hex() {
        let x = leaf_hash(b"x");
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, format!("\"{}\"", x.to_hex()));
        assert_eq!(serde_json::from_str::<MerkleHash>(&json).unwrap(), x);
        assert!(MerkleHash::from_hex("abcd").is_err());
    }

    proptest! {
        #[test]
        fn honest_inclusion_proofs_verify(n in 1u64..=64, i in 0u64..64) {
            let i = i % n;
            let l = leaves(n);
            let p = inclusion_path(i, &l).unwrap();
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &p, &root_of(&l)).is_ok());
        }

        #[test]
        fn honest_consistency_proofs_verify(n in 1u64..=64, m in 0u64..=64) {
            let m = m % (n + 1);
            let l = leaves(n);
            let p = consistency_path(m, &l).unwrap();
            prop_assert!(
                verify_consistency(m, n, &root_of(&l[..m as usize]), &root_of(&l), &p).is_ok()
            );
        }

        #[test]
        fn a_flipped_bit_anywhere_is_rejected(n in 2u64..=64, i in 0u64..64, bit in 0usize..256, k in 0usize..8) {
            let i = i % n;
            let l = leaves(n);
            let mut p = inclusion_path(i, &l).unwrap();
            let k = k % p.len();
            p[k].0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(i, n, &l[i as usize], &p, &root_of(&l)).is_err());
        }

        #[test]
        fn consistency_with_a_flipped_bit_is_rejected(n in 2u64..=64, m in 1u64..64, bit in 0usize..256, k in 0usize..8) {
            let m = 1 + m % (n - 1);
            let l = leaves(n);
            let mut p = consistency_path(m, &l).unwrap();
            let k = k % p.len();
            p[k].0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(
                verify_consistency(m, n, &root_of(&l[..m as usize]), &root_of(&l), &p).is_err()
            );
        }
    }
}
