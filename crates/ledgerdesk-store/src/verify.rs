//! Walking the log to prove it unaltered.

use serde::Serialize;

use crate::event::RecordedEvent;
use crate::hash::{HashedFields, GENESIS_HASH};
use crate::store::EventStore;
use crate::StoreError;

/// Events read per page while verifying.
const PAGE: usize = 10_000;

/// Why the chain breaks at a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BreakReason {
    /// The position after the previous event is missing (an event was
    /// deleted, or positions were renumbered).
    Missing {
        /// The position that was found in its place.
        found: u64,
    },
    /// The stored hash is not the hash of the stored content and the previous
    /// hash: the event was edited, inserted or moved.
    HashMismatch {
        /// What the content hashes to.
        computed: String,
        /// What is stored.
        stored: String,
    },
    /// A stream's versions do not run 1, 2, 3 … in log order.
    VersionOutOfOrder {
        /// The stream.
        stream_id: String,
        /// The version expected there.
        expected: u64,
        /// The version found.
        found: u64,
    },
}

/// The first position where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The position.
    pub position: u64,
    /// What is wrong there.
    pub reason: BreakReason,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            BreakReason::Missing { found } => {
                write!(f, "position {} is missing (found {found} in its place)", self.position)
            }
            BreakReason::HashMismatch { computed, stored } => write!(
                f,
                "position {}: stored hash {stored} does not match the content and chain ({computed})",
                self.position
            ),
            BreakReason::VersionOutOfOrder {
                stream_id,
                expected,
                found,
            } => write!(
                f,
                "position {}: stream {stream_id} has version {found} where {expected} was expected",
                self.position
            ),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events that verified before the first break (all of them if none).
    pub verified: u64,
    /// The hash of the last verified event.
    pub head_hash: String,
    /// The first break, if any.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    /// Whether the whole log verified.
    pub fn ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Incremental chain check, fed events in position order; shared by the
/// online walk and any offline check over exported events.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_position: u64,
    prev_hash: String,
    versions: std::collections::HashMap<String, u64>,
    verified: u64,
    from_genesis: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::starting_after(0, GENESIS_HASH.to_owned())
    }
}

impl ChainVerifier {
    /// Continue a chain from a known (position, hash), e.g. a trusted checkpoint.
    /// Stream versions are then only checked for streams that start after it.
    pub fn starting_after(position: u64, hash: String) -> Self {
        Self {
            expected_position: position + 1,
            prev_hash: hash,
            versions: Default::default(),
            verified: 0,
            from_genesis: position == 0,
        }
    }

    /// Check the next event; the first error is where the chain breaks.
    pub fn push(&mut self, e: &RecordedEvent) -> Result<(), ChainBreak> {
        let at = self.expected_position;
        if e.position != at {
            return Err(ChainBreak {
                position: at,
                reason: BreakReason::Missing { found: e.position },
            });
        }
        let event_id = e.event_id.hyphenated().to_string();
        let computed = HashedFields {
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
        .chain_hash(&self.prev_hash);
        if computed != e.hash {
            return Err(ChainBreak {
                position: at,
                reason: BreakReason::HashMismatch {
                    computed,
                    stored: e.hash.clone(),
                },
            });
        }
        let expected_version = match self.versions.get(&e.stream_id) {
            Some(last) => Some(last + 1),
            None if self.from_genesis => Some(1),
            // A stream first seen after a mid-log starting point began earlier.
            None => None,
        };
        if let Some(expected) = expected_version.filter(|x| *x != e.version) {
            return Err(ChainBreak {
                position: e.position,
                reason: BreakReason::VersionOutOfOrder {
                    stream_id: e.stream_id.clone(),
                    expected,
                    found: e.version,
                },
            });
        }
        self.versions.insert(e.stream_id.clone(), e.version);
        self.prev_hash = e.hash.clone();
        self.expected_position += 1;
        self.verified += 1;
        Ok(())
    }

    /// The report so far.
    pub fn report(&self, first_break: Option<ChainBreak>) -> VerifyReport {
        VerifyReport {
            verified: self.verified,
            head_hash: self.prev_hash.clone(),
            first_break,
        }
    }
}

/// Walk the whole log from position 1 and check every link of the chain.
pub async fn verify_chain(store: &dyn EventStore) -> Result<VerifyReport, StoreError> {
    let mut v = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            if let Err(b) = v.push(e) {
                return Ok(v.report(Some(b)));
            }
        }
    }
    Ok(v.report(None))
}
