//! The event store: ledgerdesk's system of record, an append-only log of
//! events on SQLite (embedded default) or PostgreSQL (production).
//!
//! # Layout
//! - [`event`]: the record — [`NewEvent`] in, [`RecordedEvent`] out, with
//!   [`Metadata`] (actor, IP, user agent, correlation) and [`ExpectedVersion`].
//! - [`store`]: the [`EventStore`] trait the rest of ledgerdesk uses.
//! - [`db`]: the one way to run SQL beside the log, on either backend
//!   ([`DbPool`] from [`EventStore::db`], [`db::Tx`], [`db::Arg`],
//!   [`db::DbRow`]), used by the store's own tables, the app's vault and
//!   data subjects, the projections and the API's tables.
//! - `writer` + `plan`: one serialized writer per process with group commit;
//!   positions and hashes are assigned inside a database-wide lock, so
//!   positions are gap-free and commit in order (see `docs/adr/0001`). A
//!   [`WriterObserver`] in [`OpenOptions`] is told each group (metrics).
//! - [`hash`]: the canonical encoding and the SHA-256 chain.
//! - [`verify`]: walking the chain to find the first altered position.
//! - [`sqlite`], [`postgres`]: the two backends; SQL they share is in `sql`.
//! - [`merkle`]: the RFC 9162 Merkle tree over the log (leaf = the canonical
//!   bytes of [`hash`]), kept incrementally in `merkle_nodes`, with inclusion
//!   and consistency proofs.
//! - [`checkpoint`]: Ed25519-signed tree heads — the key file (`key`),
//!   signing, storing and the background [`Checkpointer`] (`signed`), and
//!   [`verify_all`] (`audit`).
//! - [`bundle`]: evidence bundles of a range of events, verifiable offline.
//!
//! - [`subjects`]: the email → data subject mapping and the subjects' keys
//!   (the app's vault does the cryptography).
//! - [`files`]: the index of uploaded files and the subjects holding them.
//! - [`accounts`]: login accounts beside the user streams (email
//!   reservation, role and activity for sessions).
//!
//! [`open`] picks the backend from the URL.
#![deny(missing_docs)]

pub mod accounts;
pub mod bundle;
pub mod checkpoint;
pub mod db;
pub mod error;
pub mod event;
pub mod files;
pub mod hash;
pub mod merkle;
mod plan;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod store;
pub mod subjects;
pub mod verify;
mod writer;

use std::sync::Arc;

pub use bundle::{export_bundle, verify_bundle, Bundle, BundleError, BundleReport};
pub use checkpoint::{
    checkpoint_now, checkpoints, latest_checkpoint, verify_all, AuditReport, Checkpoint,
    CheckpointKey, CheckpointRange, Checkpointer, PublicKey,
};
pub use db::DbPool;
pub use error::{is_unavailable, StoreError};
pub use event::{
    ActorKind, Appended, Backend, ExpectedVersion, Head, Metadata, NewEvent, RecordedEvent,
    StreamAppend, StreamRange,
};
pub use merkle::{
    consistency_proof, inclusion_proof, sync_leaves, tree_root, AuditError, ConsistencyProof,
    InclusionProof, MerkleHash,
};
pub use plan::MAX_EVENTS_PER_APPEND;
pub use store::EventStore;
pub use verify::{verify_chain, VerifyReport};
pub use writer::{GroupStats, WriterObserver};

/// How to open a store.
#[derive(Clone)]
pub struct OpenOptions {
    /// Apply pending migrations first.
    pub migrate: bool,
    /// Size of the read pool.
    pub max_connections: u32,
    /// How long an append waits for the database's write lock (SQLite's
    /// busy timeout, PostgreSQL's `lock_timeout` on the writer) before it
    /// fails as [`StoreError::Unavailable`].
    pub lock_timeout: std::time::Duration,
    /// Told about every group the writer commits (metrics).
    pub observer: Option<Arc<dyn WriterObserver>>,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("migrate", &self.migrate)
            .field("max_connections", &self.max_connections)
            .field("lock_timeout", &self.lock_timeout)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            max_connections: 8,
            lock_timeout: std::time::Duration::from_secs(30),
            observer: None,
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

#[cfg(test)]
mod tests {
    /// Every migration that has landed, with the start of its checksum.
    /// sqlx refuses to open a database whose applied migration has since
    /// changed, so a landed file is never edited: a schema change is a new
    /// migration (and a new line here).
    const LANDED: &[(&str, i64, &str)] = &[
        ("sqlite", 1, "23ceea5c9778d21d"),
        ("sqlite", 2, "c6bc9ec32dce640c"),
        ("sqlite", 3, "2dfd27b703a9d061"),
        ("sqlite", 4, "968719e9b8badf71"),
        ("sqlite", 10, "2d38bcf565b42788"),
        ("sqlite", 20, "fc8e826016dd77e2"),
        ("sqlite", 30, "d622ac1f696ae2ac"),
        ("sqlite", 40, "4c749260ff460ccb"),
        ("sqlite", 60, "279aca616abe9bb1"),
        ("postgres", 1, "7804d3120762023b"),
        ("postgres", 2, "016a0002a021cc07"),
        ("postgres", 3, "fa081db32390d0c2"),
        ("postgres", 4, "968719e9b8badf71"),
        ("postgres", 10, "373835b11a96177a"),
        ("postgres", 20, "13262687520a7ed2"),
        ("postgres", 30, "e0ce9d98308e48f2"),
        ("postgres", 40, "aa8d0abbbfefad4f"),
        ("postgres", 60, "279aca616abe9bb1"),
    ];

    #[test]
    fn landed_migrations_are_never_edited() {
        let mut found = Vec::new();
        for (dialect, migrator) in [
            ("sqlite", &crate::sqlite::MIGRATOR),
            ("postgres", &crate::postgres::MIGRATOR),
        ] {
            for m in migrator.iter() {
                found.push((dialect, m.version, hex::encode(&m.checksum[..8])));
            }
        }
        let found: Vec<(&str, i64, &str)> =
            found.iter().map(|(d, v, c)| (*d, *v, c.as_str())).collect();
        assert_eq!(
            found, LANDED,
            "a landed migration changed, or a new one is not listed here yet"
        );
    }
}
