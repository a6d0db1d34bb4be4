//! A stream's history as people read it: every event in order, with who
//! acted, the catalogue label, a description and the field-level
//! before/after. `GET /tickets/{id}/history` and `ledgerdesk replay` both
//! print this.

use chrono::{DateTime, Utc};
use ledgerdesk_domain::AnyEvent;
use ledgerdesk_store::{ActorKind, StoreError, StreamRange};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{AppError, Helpdesk};

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Global log position.
    pub position: u64,
    /// Version of the stream after this event.
    pub version: u64,
    /// The event.
    pub event_id: Uuid,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The stored event type.
    pub event_type: String,
    /// Catalogue action code.
    pub action: String,
    /// Its label, e.g. `Ticket – Status`.
    pub label: String,
    /// One line, free of personal data.
    pub description: String,
    /// `[{"field", "before", "after"}]`.
    pub changes: Value,
    /// Who acted.
    pub actor_id: Option<Uuid>,
    /// `agent`, `customer` or `system`.
    pub actor_kind: ActorKind,
    /// The caller's IP.
    pub ip: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// The request that wrote it.
    pub correlation_id: Option<String>,
}

impl Helpdesk {
    /// Every event of `stream_id` within `range`, oldest first. Personal
    /// data never appears: descriptions and changes hold none.
    pub async fn history(
        &self,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<HistoryEntry>, AppError> {
        let events = self.store().read_stream(stream_id, range).await?;
        events
            .into_iter()
            .map(|e| {
                let position = e.position as i64;
                let codec = |err: serde_json::Error| {
                    AppError::Store(StoreError::Corrupt {
                        position,
                        reason: err.to_string(),
                    })
                };
                let payload = e.payload_json().map_err(codec)?;
                let metadata = e.metadata().map_err(codec)?;
                // An event this build cannot decode still shows, by type.
                let (action, label, description, changes) = match AnyEvent::decode(
                    &e.stream_type,
                    &e.event_type,
                    e.schema_version,
                    &payload,
                ) {
                    Ok(event) => {
                        let a = event.audit();
                        let changes = a.changes_json();
                        (
                            a.action.code.to_string(),
                            a.action.label.to_string(),
                            a.description,
                            changes,
                        )
                    }
                    Err(_) => (
                        e.event_type.clone(),
                        e.event_type.clone(),
                        String::new(),
                        Value::Array(Vec::new()),
                    ),
                };
                Ok(HistoryEntry {
                    position: e.position,
                    version: e.version,
                    event_id: e.event_id,
                    recorded_at: e.recorded_at,
                    event_type: e.event_type,
                    action,
                    label,
                    description,
                    changes,
                    actor_id: metadata.actor_id,
                    actor_kind: metadata.actor_kind,
                    ip: metadata.ip,
                    user_agent: metadata.user_agent,
                    correlation_id: metadata.correlation_id,
                })
            })
            .collect()
    }
}
