//! The `EventStore` trait: the one interface the rest of ledgerdesk uses.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::db::DbPool;
use crate::event::{
    Appended, Backend, ExpectedVersion, Head, NewEvent, RecordedEvent, StreamAppend, StreamRange,
};
use crate::StoreError;

/// The append-only event log.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// The database behind the store, through the typed layer of [`crate::db`]
    /// (read models, the vault and the API's tables share it).
    fn db(&self) -> DbPool;

    /// Append to several streams atomically: every stream's expected version
    /// must match, or nothing at all is written. Returns once durable.
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<Appended>, StoreError>;

    /// Read one stream in version order.
    async fn read_stream(
        &self,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Read the whole log in position order, after `after`, at most `limit` events.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The last event of the log.
    async fn head(&self) -> Result<Head, StoreError>;

    /// The last position recorded at or before `time` (0 if none).
    async fn position_at(&self, time: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The head position, updated as appends commit (in this process, and on
    /// PostgreSQL in every process through LISTEN/NOTIFY).
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// Append events to one stream.
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let mut done = self
            .append_many(vec![StreamAppend::new(stream_id, expected, events)])
            .await?;
        done.pop()
            .ok_or_else(|| StoreError::Invalid("append produced no result".into()))
    }
}
