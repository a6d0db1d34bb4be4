//! Evidence bundles: a range of events with everything an outside auditor
//! needs to check, offline and without the database, that nothing in the
//! range was altered, removed, inserted or reordered.
//!
//! A bundle holds the events of positions `from ..= to` (every stored field),
//! the chain hash of the event before `from`, the first signed checkpoint
//! whose tree holds `to`, a *range proof* (the roots of the maximal subtrees
//! left and right of the range: with the range's own leaves they rebuild the
//! checkpoint's root; at most about 2·log2(tree size) hashes whatever the
//! range), optionally the checkpoint before the range with a consistency
//! proof to the covering one, and the public key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checkpoint::{self, Checkpoint, PublicKey, SignatureError};
use crate::event::RecordedEvent;
use crate::hash::GENESIS_HASH;
use crate::merkle::{self, AuditError, MerkleHash, ProofError};
use crate::store::EventStore;
use crate::verify::{ChainBreak, ChainVerifier};

/// The `format` of bundles this version writes and reads.
pub const BUNDLE_FORMAT: &str = "ledgerdesk-bundle-v1";

/// The most events one bundle may hold.
pub const MAX_BUNDLE_EVENTS: u64 = 100_000;

/// One event with every stored field (the same as [`RecordedEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    /// Global position.
    pub position: u64,
    /// Stream id.
    pub stream_id: String,
    /// Stream type.
    pub stream_type: String,
    /// Version in the stream.
    pub version: u64,
    /// Event id (UUID v7).
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u32,
    /// Payload JSON text, exactly as stored and hashed.
    pub payload: String,
    /// Metadata JSON text, exactly as stored and hashed.
    pub metadata: String,
    /// Recorded time (UTC, microseconds).
    pub recorded_at: DateTime<Utc>,
    /// The chain hash, hex.
    pub hash: String,
}

impl From<RecordedEvent> for BundleEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            position: e.position,
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
            hash: e.hash,
        }
    }
}

impl From<BundleEvent> for RecordedEvent {
    fn from(e: BundleEvent) -> Self {
        Self {
            position: e.position,
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
            hash: e.hash,
        }
    }
}

/// An evidence bundle (serialise it with serde_json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// First position in the range.
    pub from_position: u64,
    /// Last position in the range.
    pub to_position: u64,
    /// The chain hash of the event at `from_position − 1` (the genesis hash
    /// when the range starts at 1).
    pub previous_hash: String,
    /// The events, in position order.
    pub events: Vec<BundleEvent>,
    /// The first checkpoint whose tree holds `to_position`.
    pub checkpoint: Checkpoint,
    /// Roots of the subtrees of the checkpoint's tree outside the range, left
    /// to right ([`merkle::range_proof_ranges`]).
    pub range_proof: Vec<MerkleHash>,
    /// The last checkpoint signed before the range (tree size < from), if any.
    pub previous_checkpoint: Option<Checkpoint>,
    /// `PROOF(previous size, D[checkpoint size])` when there is a previous
    /// checkpoint.
    pub consistency_proof: Option<Vec<MerkleHash>>,
    /// The key that signed the checkpoints.
    pub public_key: PublicKey,
}

/// Why a bundle does not verify. Each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle this version understands, or internally inconsistent.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// The bundle's key is not the key the auditor trusts.
    #[error("bundle is signed with key {found}, not with the trusted key {expected}")]
    UntrustedKey {
        /// The trusted key's id.
        expected: String,
        /// The bundle's key id.
        found: String,
    },
    /// The events are not the consecutive positions from..=to (one was
    /// removed, inserted or moved).
    #[error("events are not consecutive: expected position {expected}, found {found}")]
    NotConsecutive {
        /// The position expected.
        expected: u64,
        /// The position found.
        found: u64,
    },
    /// Fewer or more events than the range.
    #[error("range {from}..={to} needs {expected} events, the bundle has {found}")]
    WrongCount {
        /// First position.
        from: u64,
        /// Last position.
        to: u64,
        /// Events expected.
        expected: u64,
        /// Events found.
        found: u64,
    },
    /// The hash chain breaks inside the range.
    #[error("hash chain: {0}")]
    Chain(ChainBreak),
    /// The events do not rebuild the signed root.
    #[error("events do not reproduce the Merkle root signed by checkpoint {seq} (tree size {tree_size}): an event was altered, removed, inserted or reordered")]
    RootMismatch {
        /// The checkpoint.
        seq: u64,
        /// Its tree size.
        tree_size: u64,
    },
    /// The range proof is unusable.
    #[error("range proof: {0}")]
    RangeProof(ProofError),
    /// A checkpoint's signature does not verify.
    #[error("{which} checkpoint: {error}")]
    Signature {
        /// `covering` or `previous`.
        which: &'static str,
        /// What is wrong.
        error: SignatureError,
    },
    /// The consistency proof between the checkpoints does not verify.
    #[error("consistency between checkpoints of sizes {first} and {second}: {error}")]
    Consistency {
        /// The previous checkpoint's size.
        first: u64,
        /// The covering checkpoint's size.
        second: u64,
        /// What is wrong.
        error: ProofError,
    },
}

/// What a verified bundle shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// First position.
    pub from_position: u64,
    /// Last position.
    pub to_position: u64,
    /// Events verified.
    pub events: u64,
    /// The covering checkpoint's tree size.
    pub tree_size: u64,
    /// Its root.
    pub root_hash: MerkleHash,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// The signing key.
    pub key_id: String,
    /// Whether the key was the one the auditor passed in (false: checked
    /// only against the key in the bundle itself).
    pub key_trusted: bool,
    /// The previous checkpoint's size, when its consistency was checked.
    pub consistent_with: Option<u64>,
}

/// Build the bundle for positions `from ..= to`. The stored tree is synced
/// first; fails with [`AuditError::NotCovered`] until a checkpoint holds
/// `to` (call `checkpoint_now` first to cover the latest events).
pub async fn export_bundle(
    store: &dyn EventStore,
    from: u64,
    to: u64,
    public_key: &PublicKey,
) -> Result<Bundle, AuditError> {
    if from == 0 || from > to {
        return Err(AuditError::OutOfRange(format!(
            "invalid range {from}..={to}: positions start at 1"
        )));
    }
    if to - from + 1 > MAX_BUNDLE_EVENTS {
        return Err(AuditError::OutOfRange(format!(
            "a bundle holds at most {MAX_BUNDLE_EVENTS} events"
        )));
    }
    merkle::sync_leaves(store).await?;
    let cp = checkpoint::checkpoint_covering(store, to)
        .await?
        .ok_or(AuditError::NotCovered(to))?;
    let previous = checkpoint::checkpoint_at_or_before(store, from - 1)
        .await?
        .filter(|p| p.tree_size > 0 && p.seq < cp.seq);
    let previous_hash = if from == 1 {
        GENESIS_HASH.to_owned()
    } else {
        store
            .read_all(from - 2, 1)
            .await?
            .pop()
            .map(|e| e.hash)
            .ok_or_else(|| AuditError::OutOfRange(format!("position {} is missing", from - 1)))?
    };
    let mut events: Vec<BundleEvent> = Vec::with_capacity((to - from + 1) as usize);
    let mut after = from - 1;
    while after < to {
        let page = store
            .read_all(after, ((to - after) as usize).min(5_000))
            .await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events.extend(
            page.into_iter()
                .filter(|e| e.position <= to)
                .map(BundleEvent::from),
        );
    }
    let range_proof = merkle::range_proof(store, from - 1, to, cp.tree_size).await?;
    let consistency_proof = match &previous {
        Some(p) => Some(
            merkle::consistency_proof(store, p.tree_size, cp.tree_size)
                .await?
                .proof,
        ),
        None => None,
    };
    Ok(Bundle {
        format: BUNDLE_FORMAT.into(),
        from_position: from,
        to_position: to,
        previous_hash,
        events,
        checkpoint: cp,
        range_proof,
        previous_checkpoint: previous,
        consistency_proof,
        public_key: *public_key,
    })
}

/// Verify a bundle offline. With `trusted_public_key` the bundle's key must
/// be that key; without, the bundle is checked against its own key (which
/// proves integrity only if the auditor trusts that key by other means).
pub fn verify_bundle(
    bundle: &Bundle,
    trusted_public_key: Option<&PublicKey>,
) -> Result<BundleReport, BundleError> {
    if bundle.format != BUNDLE_FORMAT {
        return Err(BundleError::Malformed(format!(
            "unknown format `{}`",
            bundle.format
        )));
    }
    let key = &bundle.public_key;
    if let Some(trusted) = trusted_public_key {
        if trusted != key {
            return Err(BundleError::UntrustedKey {
                expected: trusted.key_id(),
                found: key.key_id(),
            });
        }
    }
    let (from, to) = (bundle.from_position, bundle.to_position);
    if from == 0 || from > to {
        return Err(BundleError::Malformed(format!(
            "invalid range {from}..={to}"
        )));
    }
    let cp = &bundle.checkpoint;
    cp.verify(key).map_err(|error| BundleError::Signature {
        which: "covering",
        error,
    })?;
    if cp.tree_size < to {
        return Err(BundleError::Malformed(format!(
            "checkpoint of size {} does not cover position {to}",
            cp.tree_size
        )));
    }

    // Positions, then the chain from the previous hash.
    let mut chain = ChainVerifier::starting_after(from - 1, bundle.previous_hash.clone());
    let mut leaves = Vec::with_capacity(bundle.events.len());
    for (i, e) in bundle.events.iter().enumerate() {
        let expected = from + i as u64;
        if e.position != expected {
            return Err(BundleError::NotConsecutive {
                expected,
                found: e.position,
            });
        }
        let e = RecordedEvent::from(e.clone());
        chain.push(&e).map_err(BundleError::Chain)?;
        leaves.push(merkle::event_leaf_hash(&e));
    }
    let expected = to - from + 1;
    if leaves.len() as u64 != expected {
        return Err(BundleError::WrongCount {
            from,
            to,
            expected,
            found: leaves.len() as u64,
        });
    }

    // The signed root, rebuilt from the events' leaves and the range proof.
    let root = merkle::root_from_range(from - 1, &leaves, cp.tree_size, &bundle.range_proof)
        .map_err(BundleError::RangeProof)?;
    if root != cp.root_hash {
        return Err(BundleError::RootMismatch {
            seq: cp.seq,
            tree_size: cp.tree_size,
        });
    }

    let mut consistent_with = None;
    match (&bundle.previous_checkpoint, &bundle.consistency_proof) {
        (None, None) => {}
        (Some(p), Some(proof)) => {
            p.verify(key).map_err(|error| BundleError::Signature {
                which: "previous",
                error,
            })?;
            if p.tree_size >= from {
                return Err(BundleError::Malformed(format!(
                    "previous checkpoint of size {} is not before position {from}",
                    p.tree_size
                )));
            }
            merkle::verify_consistency(
                p.tree_size,
                cp.tree_size,
                &p.root_hash,
                &cp.root_hash,
                proof,
            )
            .map_err(|error| BundleError::Consistency {
                first: p.tree_size,
                second: cp.tree_size,
                error,
            })?;
            consistent_with = Some(p.tree_size);
        }
        _ => {
            return Err(BundleError::Malformed(
                "previous checkpoint and consistency proof come together".into(),
            ))
        }
    }

    Ok(BundleReport {
        from_position: from,
        to_position: to,
        events: expected,
        tree_size: cp.tree_size,
        root_hash: cp.root_hash,
        signed_at: cp.signed_at,
        key_id: cp.key_id.clone(),
        key_trusted: trusted_public_key.is_some(),
        consistent_with,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointKey;
    use crate::hash::HashedFields;

    /// A hash-chained log of `n` events, as the store would record it.
    fn log(n: u64) -> Vec<RecordedEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|p| {
                let mut e = RecordedEvent {
                    position: p,
                    // One stream per event, so only the Merkle root catches a
                    // renumbered, rechained forgery.
                    stream_id: format!("ticket-{p}"),
                    stream_type: "ticket".into(),
                    version: 1,
                    event_id: Uuid::from_u128(p as u128),
                    event_type: "ticket.noted".into(),
                    schema_version: 1,
                    payload: format!("{{\"n\":{p}}}"),
                    metadata: "{}".into(),
                    recorded_at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + p as i64)
                        .unwrap(),
                    hash: String::new(),
                };
                e.hash = rehash(&e, &prev);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn rehash(e: &RecordedEvent, prev: &str) -> String {
        let id = e.event_id.hyphenated().to_string();
        HashedFields {
            position: e.position,
            stream_id: &e.stream_id,
            stream_type: &e.stream_type,
            version: e.version,
            event_id: &id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &e.payload,
            metadata: &e.metadata,
            recorded_at_us: e.recorded_at.timestamp_micros(),
        }
        .chain_hash(prev)
    }

    /// Recompute every chain hash from `from` on, as a careful forger would.
    fn rechain(b: &mut Bundle) {
        let mut prev = b.previous_hash.clone();
        for e in &mut b.events {
            e.hash = rehash(&RecordedEvent::from(e.clone()), &prev);
            prev = e.hash.clone();
        }
    }

    /// A bundle of `from..=to` built the way `export_bundle` does, from
    /// memory, with checkpoints at sizes 10 and `size`.
    fn bundle(from: u64, to: u64, size: u64) -> (Bundle, PublicKey) {
        let key = CheckpointKey::from_seed([3; 32]);
        let events = log(size);
        let leaves: Vec<_> = events.iter().map(merkle::event_leaf_hash).collect();
        let mut cp = key.sign(size, merkle::root_of(&leaves), Utc::now());
        cp.seq = 2;
        let previous = (from > 10).then(|| {
            let mut p = key.sign(10, merkle::root_of(&leaves[..10]), Utc::now());
            p.seq = 1;
            p
        });
        let range_proof = merkle::range_proof_ranges(from - 1, to, size)
            .unwrap()
            .iter()
            .map(|(a, b)| merkle::root_of(&leaves[*a as usize..*b as usize]))
            .collect();
        let consistency_proof = previous
            .as_ref()
            .map(|p| merkle::consistency_path(p.tree_size, &leaves).unwrap());
        let previous_hash = if from == 1 {
            GENESIS_HASH.to_owned()
        } else {
            events[from as usize - 2].hash.clone()
        };
        let b = Bundle {
            format: BUNDLE_FORMAT.into(),
            from_position: from,
            to_position: to,
            previous_hash,
            events: events[from as usize - 1..to as usize]
                .iter()
                .cloned()
                .map(BundleEvent::from)
                .collect(),
            checkpoint: cp,
            range_proof,
            previous_checkpoint: previous,
            consistency_proof,
            public_key: key.public_key(),
        };
        (b, key.public_key())
    }

    fn fails(b: &Bundle, pk: &PublicKey) -> String {
        verify_bundle(b, Some(pk))
            .expect_err("tampered bundle must not verify")
            .to_string()
    }

    #[test]
    fn honest_bundles_verify_after_a_json_round_trip() {
        for (from, to, size) in [
            (1, 1, 1),
            (1, 37, 37),
            (12, 20, 37),
            (37, 37, 40),
            (11, 11, 11),
        ] {
            let (b, pk) = bundle(from, to, size);
            let json = serde_json::to_string(&b).unwrap();
            let b: Bundle = serde_json::from_str(&json).unwrap();
            let r = verify_bundle(&b, Some(&pk)).unwrap();
            assert_eq!(
                (r.from_position, r.to_position, r.events),
                (from, to, to - from + 1)
            );
            assert!(r.key_trusted);
            assert_eq!(r.consistent_with, (from > 10).then_some(10));
            assert!(verify_bundle(&b, None).is_ok());
        }
    }

    #[test]
    fn altered_event_is_named() {
        let (mut b, pk) = bundle(12, 20, 37);
        b.events[3].payload = "{\"n\":999}".into();
        assert!(fails(&b, &pk).contains("position 15"), "{}", fails(&b, &pk));
        // Also when the forger recomputes the chain.
        rechain(&mut b);
        assert!(fails(&b, &pk).contains("do not reproduce the Merkle root"));
    }

    #[test]
    fn removed_event_is_named() {
        let (mut b, pk) = bundle(12, 20, 37);
        b.events.remove(4);
        assert!(fails(&b, &pk).contains("expected position 16, found 17"));
        // Removed from the end.
        let (mut b, pk) = bundle(12, 20, 37);
        b.events.pop();
        assert!(fails(&b, &pk).contains("needs 9 events, the bundle has 8"));
        // Removed and the rest renumbered and rechained.
        let (mut b, pk) = bundle(12, 20, 37);
        b.events.remove(4);
        for (i, e) in b.events.iter_mut().enumerate() {
            e.position = 12 + i as u64;
        }
        b.to_position = 19;
        rechain(&mut b);
        let msg = fails(&b, &pk);
        assert!(
            msg.contains("Merkle root") || msg.contains("range proof"),
            "{msg}"
        );
    }

    #[test]
    fn inserted_event_is_named() {
        let (mut b, pk) = bundle(12, 20, 37);
        let mut extra = b.events[2].clone();
        extra.event_id = Uuid::from_u128(999);
        extra.stream_id = "ticket-999".into();
        b.events.insert(3, extra);
        assert!(fails(&b, &pk).contains("expected position 15, found 14"));
        // Inserted, renumbered, rechained, with the range grown to fit.
        for (i, e) in b.events.iter_mut().enumerate() {
            e.position = 12 + i as u64;
        }
        b.to_position = 21;
        rechain(&mut b);
        let msg = fails(&b, &pk);
        assert!(
            msg.contains("Merkle root") || msg.contains("range proof"),
            "{msg}"
        );
    }

    #[test]
    fn swapped_events_are_named() {
        let (mut b, pk) = bundle(12, 20, 37);
        b.events.swap(2, 3);
        assert!(fails(&b, &pk).contains("expected position 14, found 15"));
        // Swapped with positions kept in order and the chain recomputed.
        let (p2, p3) = (b.events[3].position, b.events[2].position);
        b.events[2].position = p2;
        b.events[3].position = p3;
        rechain(&mut b);
        assert!(fails(&b, &pk).contains("do not reproduce the Merkle root"));
    }

    #[test]
    fn tampered_checkpoints_and_keys_are_named() {
        let (b, pk) = bundle(12, 20, 37);

        let mut t = b.clone();
        t.checkpoint.root_hash.0[0] ^= 1;
        assert!(
            fails(&t, &pk).contains("covering checkpoint: checkpoint signature does not verify")
        );

        let mut t = b.clone();
        t.checkpoint.tree_size += 1;
        assert!(fails(&t, &pk).contains("covering checkpoint"));

        let mut t = b.clone();
        let mut sig = t.checkpoint.signature.into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        t.checkpoint.signature = String::from_utf8(sig).unwrap();
        assert!(fails(&t, &pk).contains("covering checkpoint"));

        let mut t = b.clone();
        t.previous_checkpoint.as_mut().unwrap().root_hash.0[1] ^= 1;
        assert!(fails(&t, &pk).contains("previous checkpoint"));

        let mut t = b.clone();
        t.consistency_proof.as_mut().unwrap()[0].0[0] ^= 1;
        assert!(fails(&t, &pk).contains("consistency between checkpoints of sizes 10 and 37"));

        let mut t = b.clone();
        t.range_proof[0].0[0] ^= 1;
        assert!(fails(&t, &pk).contains("Merkle root"));

        let mut t = b.clone();
        t.range_proof.pop();
        assert!(fails(&t, &pk).contains("range proof"));

        let mut t = b.clone();
        t.previous_hash = GENESIS_HASH.into();
        assert!(fails(&t, &pk).contains("position 12"));

        // A whole bundle re-signed with another key: caught by the trusted key.
        let other = CheckpointKey::from_seed([4; 32]);
        let mut t = b.clone();
        t.checkpoint = other.sign(t.checkpoint.tree_size, t.checkpoint.root_hash, Utc::now());
        t.previous_checkpoint = None;
        t.consistency_proof = None;
        t.public_key = other.public_key();
        assert!(fails(&t, &pk).contains("not with the trusted key"));
        assert!(verify_bundle(&t, None).is_ok_and(|r| !r.key_trusted));
    }
}
