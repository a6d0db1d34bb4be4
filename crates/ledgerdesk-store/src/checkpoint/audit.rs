//! The full audit: every chain hash, every checkpoint's signature and tree.

use serde::Serialize;

use super::key::PublicKey;
use super::signed::{checkpoints, Checkpoint, CheckpointRange};
use crate::merkle::{self, AuditError, Frontier, MerkleHash};
use crate::store::EventStore;
use crate::verify::{ChainBreak, ChainVerifier, VerifyReport};

/// Events read per page by [`verify_all`].
const PAGE: usize = 5_000;

/// Why a checkpoint fails the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CheckpointProblem {
    /// Its signature does not verify with the trusted key.
    BadSignature {
        /// What is wrong.
        reason: String,
    },
    /// It is for a smaller tree than the checkpoint before it.
    TreeShrank {
        /// The previous checkpoint's size.
        previous: u64,
    },
    /// It covers more events than the log holds: events were removed.
    BeyondLog {
        /// How many events the log holds.
        events: u64,
    },
    /// Its root is not the Merkle root of the events as they are now.
    RootMismatch {
        /// The root of the stored events at its size.
        computed: MerkleHash,
    },
    /// The stored tree gives another root at its size (the `merkle_nodes`
    /// table was altered); proofs served from it would not verify.
    StoredTreeMismatch {
        /// What the stored tree gives.
        stored: MerkleHash,
    },
}

/// The first checkpoint that fails the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadCheckpoint {
    /// Its row number.
    pub seq: u64,
    /// Its tree size.
    pub tree_size: u64,
    /// What is wrong.
    pub problem: CheckpointProblem,
}

impl std::fmt::Display for BadCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checkpoint {} (tree size {}): ",
            self.seq, self.tree_size
        )?;
        match &self.problem {
            CheckpointProblem::BadSignature { reason } => f.write_str(reason),
            CheckpointProblem::TreeShrank { previous } => {
                write!(f, "tree shrank from {previous}")
            }
            CheckpointProblem::BeyondLog { events } => {
                write!(
                    f,
                    "covers more events than the log's {events}: events were removed"
                )
            }
            CheckpointProblem::RootMismatch { computed } => {
                write!(
                    f,
                    "signed root does not match the events (they give {computed})"
                )
            }
            CheckpointProblem::StoredTreeMismatch { stored } => {
                write!(f, "the stored Merkle tree gives another root ({stored})")
            }
        }
    }
}

/// The outcome of [`verify_all`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The hash chain walk (first broken position, if any).
    pub chain: VerifyReport,
    /// Events read.
    pub events: u64,
    /// Stored leaf hashes compared with the events.
    pub leaves_checked: u64,
    /// The first position whose stored leaf hash does not match its event
    /// (or whose leaf has no event any more).
    pub first_bad_leaf: Option<u64>,
    /// Checkpoints checked.
    pub checkpoints_checked: u64,
    /// The first checkpoint that fails.
    pub first_bad_checkpoint: Option<BadCheckpoint>,
    /// The latest checkpoint.
    pub latest_checkpoint: Option<Checkpoint>,
}

impl AuditReport {
    /// Whether everything verified.
    pub fn ok(&self) -> bool {
        self.chain.ok() && self.first_bad_leaf.is_none() && self.first_bad_checkpoint.is_none()
    }

    /// One line per finding, for the CLI.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = &self.chain.first_break {
            out.push(format!("hash chain: {b}"));
        }
        if let Some(p) = self.first_bad_leaf {
            out.push(format!(
                "position {p}: stored Merkle leaf does not match the event"
            ));
        }
        if let Some(c) = &self.first_bad_checkpoint {
            out.push(c.to_string());
        }
        out
    }
}

/// Check everything: the hash chain, that the stored leaf hashes match the
/// events, and for each checkpoint its signature (with `public_key`), that
/// sizes never shrink, that it is within the log, that its root is the
/// Merkle root of the events as stored now, and that the stored tree agrees.
///
/// One pass over the log; read-only (it does not sync the stored tree).
pub async fn verify_all(
    store: &dyn EventStore,
    public_key: &PublicKey,
) -> Result<AuditReport, AuditError> {
    let pool = store.db();
    let cps = all_checkpoints(store).await?;
    let mut chain = ChainVerifier::default();
    let mut chain_break: Option<ChainBreak> = None;
    let mut frontier = Frontier::default();
    // Roots recomputed from the events at each checkpoint size.
    let mut wanted: Vec<u64> = cps.iter().map(|c| c.tree_size).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut wanted = wanted.into_iter().peekable();
    let mut roots = std::collections::BTreeMap::new();
    if wanted.peek() == Some(&0) {
        roots.insert(0, frontier.root());
        wanted.next();
    }
    let (mut leaves_checked, mut first_bad_leaf) = (0u64, None);
    let mut after = 0u64;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        let last_position = last.position;
        let stored = merkle::stored_leaves(&pool, after, page.len()).await?;
        let mut stored = stored.into_iter().peekable();
        for e in &page {
            if chain_break.is_none() {
                chain_break = chain.push(e).err();
            }
            let leaf = merkle::event_leaf_hash(e);
            // Leaf i is position i + 1; in a log with gaps, compare by index.
            while let Some((i, _)) = stored.next_if(|(i, _)| *i + 1 < e.position) {
                // A stored leaf whose event is gone.
                first_bad_leaf.get_or_insert(i + 1);
            }
            if let Some((_, h)) = stored.next_if(|(i, _)| *i + 1 == e.position) {
                leaves_checked += 1;
                if h != leaf {
                    first_bad_leaf.get_or_insert(e.position);
                }
            }
            frontier.push(leaf);
            while wanted.peek() == Some(&frontier.size()) {
                roots.insert(frontier.size(), frontier.root());
                wanted.next();
            }
        }
        after = last_position;
    }
    let events = frontier.size();
    // Stored leaves past the end of the log: events were removed.
    if first_bad_leaf.is_none() {
        if let Some((i, _)) = merkle::stored_leaves(&pool, events, 1).await?.first() {
            first_bad_leaf = Some(i + 1);
        }
    }
    let first_bad_checkpoint = check_checkpoints(store, &cps, &roots, events, public_key).await?;
    Ok(AuditReport {
        chain: chain.report(chain_break),
        events,
        leaves_checked,
        first_bad_leaf,
        checkpoints_checked: cps.len() as u64,
        first_bad_checkpoint,
        latest_checkpoint: cps.last().cloned(),
    })
}

async fn all_checkpoints(store: &dyn EventStore) -> Result<Vec<Checkpoint>, AuditError> {
    let mut out: Vec<Checkpoint> = Vec::new();
    loop {
        let range = CheckpointRange {
            after_seq: out.last().map_or(0, |c| c.seq),
            limit: 10_000,
            ..Default::default()
        };
        let page = checkpoints(store, range).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn check_checkpoints(
    store: &dyn EventStore,
    cps: &[Checkpoint],
    roots: &std::collections::BTreeMap<u64, MerkleHash>,
    events: u64,
    key: &PublicKey,
) -> Result<Option<BadCheckpoint>, AuditError> {
    let stored_size = merkle::stored_size(store).await?;
    let mut previous = 0;
    let mut stored_roots = std::collections::HashMap::new();
    for c in cps {
        let bad = |problem| {
            Some(BadCheckpoint {
                seq: c.seq,
                tree_size: c.tree_size,
                problem,
            })
        };
        if let Err(e) = c.verify(key) {
            return Ok(bad(CheckpointProblem::BadSignature {
                reason: e.to_string(),
            }));
        }
        if c.tree_size < previous {
            return Ok(bad(CheckpointProblem::TreeShrank { previous }));
        }
        previous = c.tree_size;
        let Some(computed) = roots.get(&c.tree_size) else {
            return Ok(bad(CheckpointProblem::BeyondLog { events }));
        };
        if *computed != c.root_hash {
            return Ok(bad(CheckpointProblem::RootMismatch {
                computed: *computed,
            }));
        }
        if c.tree_size <= stored_size {
            // Quiet periods give runs of checkpoints of one size: read its
            // stored root once.
            let stored = match stored_roots.get(&c.tree_size) {
                Some(r) => *r,
                None => {
                    let r = merkle::tree_root(store, c.tree_size).await?;
                    stored_roots.insert(c.tree_size, r);
                    r
                }
            };
            if stored != c.root_hash {
                return Ok(bad(CheckpointProblem::StoredTreeMismatch { stored }));
            }
        }
    }
    Ok(None)
}
