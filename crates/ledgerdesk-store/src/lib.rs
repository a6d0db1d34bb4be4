//! The event store: ledgerdesk's system of record, an append-only log of
//! events on SQLite (embedded default) or PostgreSQL (production).
//!
//! # Layout
//! - [`event`]: the record — [`NewEvent`] in, [`RecordedEvent`] out, with
//!   [`Metadata`] (actor, IP, user agent, correlation) and [`ExpectedVersion`].
//! - [`store`]: the [`EventStore`] trait the rest of ledgerdesk uses.
//! - `writer` + `plan`: one serialized writer per process with group commit;
//!   positions and hashes are assigned inside a database-wide lock, so
//!   positions are gap-free and commit in order (see `docs/adr/0001`).
//! - [`hash`]: the canonical encoding and the SHA-256 chain.
//! - [`verify`]: walking the chain to find the first altered position.
//! - [`sqlite`], [`postgres`]: the two backends; SQL they share is in `sql`.
//! - [`merkle`]: the RFC 9162 Merkle tree over the log (leaf = the canonical
//!   bytes of [`hash`]), kept incrementally in `merkle_nodes`, with inclusion
//!   and consistency proofs.
//! - [`checkpoint`]: Ed25519-signed tree heads, the key file, the background
//!   [`Checkpointer`], and [`verify_all`].
//! - [`bundle`]: evidence bundles of a range of events, verifiable offline.
//!
//! [`open`] picks the backend from the URL.
#![deny(missing_docs)]

pub mod bundle;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod hash;
pub mod merkle;
mod plan;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod store;
pub mod verify;
mod writer;

use std::sync::Arc;

pub use bundle::{export_bundle, verify_bundle, Bundle, BundleError, BundleReport};
pub use checkpoint::{
    checkpoint_now, checkpoints, latest_checkpoint, verify_all, AuditReport, Checkpoint,
    CheckpointKey, CheckpointRange, Checkpointer, PublicKey,
};
pub use error::StoreError;
pub use event::{
    ActorKind, Appended, Backend, ExpectedVersion, Head, Metadata, NewEvent, RecordedEvent,
    StreamAppend, StreamRange,
};
pub use merkle::{
    consistency_proof, inclusion_proof, sync_leaves, tree_root, AuditError, ConsistencyProof,
    InclusionProof, MerkleHash,
};
pub use plan::MAX_EVENTS_PER_APPEND;
pub use store::{DbPool, EventStore};
pub use verify::{verify_chain, VerifyReport};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Apply pending migrations first.
    pub migrate: bool,
    /// Size of the read pool.
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            max_connections: 8,
        }
    }
}

/// The backend a database URL selects.
pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// Open the store at `url`: `sqlite://PATH` or `postgres://…`.
pub async fn open(url: &str, options: &OpenOptions) -> Result<Arc<dyn EventStore>, StoreError> {
    Ok(match backend_of(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(url, options).await?),
        Backend::Postgres => Arc::new(postgres::PostgresStore::open(url, options).await?),
    })
}
