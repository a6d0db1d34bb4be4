//! The event record: what callers hand to the store and what they read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Who caused an event. Part of every event's metadata so the audit log can
/// tell an agent's action from a customer's and from the system's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A helpdesk user (agent, admin or auditor).
    Agent,
    /// A customer, writing through a channel.
    Customer,
    /// The helpdesk itself (bootstrap, automations, projections).
    #[default]
    System,
}

/// Request context stored with every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata {
    /// The acting user or customer, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Uuid>,
    /// What kind of actor `actor_id` is.
    #[serde(default)]
    pub actor_kind: ActorKind,
    /// The caller's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The caller's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request id: every event written by one request shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event (id) that caused this one, when one event leads to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
}

impl Metadata {
    /// Metadata for something the helpdesk does by itself.
    pub fn system() -> Self {
        Self::default()
    }
}

/// An event not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// A UUID v7, generated when the event is made.
    pub event_id: Uuid,
    /// The event type, e.g. `ticket.created`.
    pub event_type: String,
    /// The version of the payload's schema for that type.
    pub schema_version: u32,
    /// The event's data.
    pub payload: Value,
    /// The request context.
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event with a fresh UUID v7.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        payload: Value,
        metadata: Metadata,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            payload,
            metadata,
        }
    }
}

/// An event as stored in the log.
///
/// `payload` and `metadata` are kept as the exact JSON text that was hashed,
/// so verification never depends on how a JSON library re-serialises a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedEvent {
    /// Global position: 1, 2, 3 … in commit order, without gaps.
    pub position: u64,
    /// The stream, e.g. `ticket-0190…`.
    pub stream_id: String,
    /// The stream's type, e.g. `ticket`.
    pub stream_type: String,
    /// The version within the stream: 1, 2, 3 …
    pub version: u64,
    /// The event's UUID v7.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload, as stored (JSON text).
    pub payload: String,
    /// The metadata, as stored (JSON text).
    pub metadata: String,
    /// When the store recorded it (UTC, microseconds; never earlier than the
    /// event before it in the log).
    pub recorded_at: DateTime<Utc>,
    /// Hex SHA-256 chaining this event to the one before it.
    pub hash: String,
}

impl RecordedEvent {
    /// The payload parsed as JSON.
    pub fn payload_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The metadata parsed; fields unknown to this version are ignored.
    pub fn metadata(&self) -> Result<Metadata, serde_json::Error> {
        serde_json::from_str(&self.metadata)
    }
}

/// What the caller believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` (0 = no stream) meets it.
    pub fn matches(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(v) => v == current,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Events to append to one stream.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream, e.g. `ticket-<uuid>`.
    pub stream_id: String,
    /// The stream's type, e.g. `ticket`.
    pub stream_type: String,
    /// The version check.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Events for `stream_id`, whose type is the part before the first `-`.
    pub fn new(
        stream_id: impl Into<String>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Self {
        let stream_id = stream_id.into();
        let stream_type = stream_id.split('-').next().unwrap_or_default().to_owned();
        Self {
            stream_id,
            stream_type,
            expected,
            events,
        }
    }
}

/// Where one stream append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the append's last event.
    pub position: u64,
}

/// A slice of one stream; every bound is inclusive and optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamRange {
    /// Lowest version.
    pub from_version: Option<u64>,
    /// Highest version.
    pub to_version: Option<u64>,
    /// Only events at or before this global position.
    pub until_position: Option<u64>,
    /// Only events recorded at or before this time.
    pub until_time: Option<DateTime<Utc>>,
}

impl StreamRange {
    /// The whole stream.
    pub fn all() -> Self {
        Self::default()
    }
}

/// The last event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Its position (0 for an empty log).
    pub position: u64,
    /// Its hash (the genesis value for an empty log).
    pub hash: String,
    /// When it was recorded (None for an empty log).
    pub recorded_at: Option<DateTime<Utc>>,
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// The production engine.
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}
