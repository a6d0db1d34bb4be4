//! The store's one error type.

use std::sync::Arc;

use crate::event::ExpectedVersion;

/// Why an operation on the event store failed.
///
/// `Conflict` is the only refusal a caller is expected to handle (reload and
/// retry); the rest are failures. Database errors are shared behind an `Arc`
/// because one failed group commit fails every append that was in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The stream's version was not the expected one; nothing was written.
    #[error("version conflict on stream {stream_id}: expected {expected}, found {actual}")]
    Conflict {
        /// The stream.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version (0 = no stream).
        actual: u64,
    },
    /// The append itself was malformed (empty stream id, too many events…).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The database URL names no backend we support.
    #[error("unsupported database url `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(Arc<sqlx::migrate::MigrateError>),
    /// A stored row could not be read back as an event.
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt {
        /// Its position.
        position: i64,
        /// What was wrong.
        reason: String,
    },
    /// The writer task is gone (the store is shutting down).
    #[error("the event store is closed")]
    Closed,
    /// A file-system problem when opening the database.
    #[error("{0}")]
    Io(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(Arc::new(e))
    }
}
