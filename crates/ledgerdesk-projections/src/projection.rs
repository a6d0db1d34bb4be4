//! The contract between the runner and a read model: a [`Projection`] is
//! handed pages of decoded [`Event`]s and a transaction, and writes to the
//! tables [`Names`] gives it (live, or a rebuild's shadow). It knows nothing
//! of workers, leases or checkpoints.

use std::collections::BTreeSet;

use async_trait::async_trait;
use ledgerdesk_domain::AnyEvent;
use ledgerdesk_store::{Metadata, RecordedEvent};
use serde_json::Value;

use crate::db::Tx;
use crate::error::ProjectionError;
use crate::schema::Table;

/// One event of the log, decoded once per page for a projection.
#[derive(Debug, Clone)]
pub struct Event {
    /// The stored record.
    pub record: RecordedEvent,
    /// Its parsed metadata (default when unreadable).
    pub metadata: Metadata,
    /// Its parsed payload (`Null` when unreadable).
    pub payload: Value,
    /// The domain event, when the projection wants its stream type and it
    /// decodes.
    pub domain: Option<AnyEvent>,
}

/// The ticket ids a page of events touches, sorted and without repeats: the
/// rows a ticket-keyed projection loads before applying the page.
pub(crate) fn ticket_ids(events: &[Event]) -> Vec<String> {
    let ids: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match &e.domain {
            Some(AnyEvent::Ticket(t)) => Some(t.ticket_id().to_string()),
            _ => None,
        })
        .collect();
    ids.into_iter().collect()
}

impl Event {
    /// Decode `record`; the domain event only if `want` is true.
    pub fn decode(record: RecordedEvent, want: bool) -> Self {
        let metadata = record.metadata().unwrap_or_default();
        let payload = if want {
            serde_json::from_str(&record.payload).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let domain = if want {
            match AnyEvent::decode(
                &record.stream_type,
                &record.event_type,
                record.schema_version,
                &payload,
            ) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::debug!(position = record.position, error = %e, "event not decodable");
                    None
                }
            }
        } else {
            None
        };
        Event {
            record,
            metadata,
            payload,
            domain,
        }
    }

    /// `recorded_at` in microseconds.
    pub fn at(&self) -> i64 {
        self.record.recorded_at.timestamp_micros()
    }
}

/// The table names a projection writes to: live, or a rebuild's shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    suffix: &'static str,
}

impl Names {
    /// The live tables.
    pub const LIVE: Names = Names { suffix: "" };
    /// A rebuild's shadow tables.
    pub const SHADOW: Names = Names { suffix: "__shadow" };

    /// The actual name of table `base`.
    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }
}

/// A read model: a name, its tables and how a page of events changes them.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Unique name; the checkpoint's key.
    fn name(&self) -> &'static str;
    /// The tables it owns (created by the migration; shadowed on rebuild).
    fn tables(&self) -> &'static [Table];
    /// Whether events of this stream and event type matter (others are
    /// skipped without decoding; the checkpoint still moves past them).
    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        let _ = (stream_type, event_type);
        true
    }
    /// Apply a page of events, in position order, inside `tx`.
    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError>;
}
