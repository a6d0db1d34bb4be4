//! What happens to a ticket: [`TicketEvent`], the personal data parts of
//! its payloads, and the stored event types with their upcasts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Channel, Direction, Priority, Status};
use crate::{codec, DecodeError, DomainEvent, Pii};

/// Personal data of `ticket.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPii {
    /// Subject line.
    pub subject: String,
    /// First message body.
    pub body: String,
    /// Requester's name.
    pub requester_name: String,
    /// Requester's email.
    pub requester_email: Option<String>,
}

/// Personal data of a message, note or chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyPii {
    /// The text.
    pub body: String,
}

/// Personal data of an attached file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePii {
    /// Original file name.
    pub name: String,
}

/// Personal data of a forward.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPii {
    /// Address forwarded to.
    pub to: String,
}

/// Personal data of a rating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingPii {
    /// The customer's comment.
    pub comment: Option<String>,
}

/// Something that happened to a ticket. Every variant names its ticket so an
/// event read alone (audit, projections) says which ticket it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TicketEvent {
    /// `ticket.created` v2 (v1 had no `priority`; upcast to normal).
    #[serde(rename = "ticket.created")]
    Created {
        /// The ticket.
        ticket_id: Uuid,
        /// First message id.
        message_id: Uuid,
        /// Channel.
        channel: Channel,
        /// Priority.
        priority: Priority,
        /// Department.
        department: Option<Uuid>,
        /// Normalised tags, sorted.
        tags: Vec<String>,
        /// Source ticket when created by a split.
        split_from: Option<Uuid>,
        /// Subject, body and requester.
        pii: Pii<CreatedPii>,
    },
    /// `ticket.status_changed`.
    #[serde(rename = "ticket.status_changed")]
    StatusChanged {
        /// The ticket.
        ticket_id: Uuid,
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// `ticket.message_added`: a public message.
    #[serde(rename = "ticket.message_added")]
    MessageAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// The message.
        message_id: Uuid,
        /// From or to the customer.
        direction: Direction,
        /// Through which channel.
        channel: Channel,
        /// Body.
        pii: Pii<BodyPii>,
    },
    /// `ticket.internal_message_added`.
    #[serde(rename = "ticket.internal_message_added")]
    InternalMessageAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// The message.
        message_id: Uuid,
        /// Body.
        pii: Pii<BodyPii>,
    },
    /// `ticket.note_added`.
    #[serde(rename = "ticket.note_added")]
    NoteAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// The note.
        note_id: Uuid,
        /// Text.
        pii: Pii<BodyPii>,
    },
    /// `ticket.file_attached`.
    #[serde(rename = "ticket.file_attached")]
    FileAttached {
        /// The ticket.
        ticket_id: Uuid,
        /// The stored file.
        file_id: Uuid,
        /// Media type.
        content_type: String,
        /// Bytes.
        size: u64,
        /// SHA-256, lowercase hex.
        sha256: String,
        /// File name.
        pii: Pii<FilePii>,
    },
    /// `ticket.transferred`: assignee and department, before and after.
    #[serde(rename = "ticket.transferred")]
    Transferred {
        /// The ticket.
        ticket_id: Uuid,
        /// Previous assignee.
        from_agent: Option<Uuid>,
        /// Assignee now.
        to_agent: Option<Uuid>,
        /// Previous department.
        from_department: Option<Uuid>,
        /// Department now.
        to_department: Option<Uuid>,
    },
    /// `ticket.tags_changed`.
    #[serde(rename = "ticket.tags_changed")]
    TagsChanged {
        /// The ticket.
        ticket_id: Uuid,
        /// Added tags, sorted.
        added: Vec<String>,
        /// Removed tags, sorted.
        removed: Vec<String>,
    },
    /// `ticket.voice_message_added`.
    #[serde(rename = "ticket.voice_message_added")]
    VoiceMessageAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// The message.
        message_id: Uuid,
        /// Seconds.
        duration_seconds: u32,
        /// SHA-256 of the recording.
        file_sha256: Option<String>,
    },
    /// `ticket.call_logged`.
    #[serde(rename = "ticket.call_logged")]
    CallLogged {
        /// The ticket.
        ticket_id: Uuid,
        /// Who called whom.
        direction: Direction,
        /// Seconds.
        duration_seconds: u32,
    },
    /// `ticket.chat_message_added`.
    #[serde(rename = "ticket.chat_message_added")]
    ChatMessageAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// The message.
        message_id: Uuid,
        /// Text.
        pii: Pii<BodyPii>,
    },
    /// `ticket.forwarded`.
    #[serde(rename = "ticket.forwarded")]
    Forwarded {
        /// The ticket.
        ticket_id: Uuid,
        /// Address.
        pii: Pii<ForwardPii>,
    },
    /// `ticket.ranked`: the customer's rating.
    #[serde(rename = "ticket.ranked")]
    Ranked {
        /// The ticket.
        ticket_id: Uuid,
        /// Rating before.
        previous_rating: Option<u8>,
        /// Rating now, 1 to 5.
        rating: u8,
        /// Comment.
        pii: Pii<RatingPii>,
    },
    /// `ticket.split`: messages moved into a new ticket.
    #[serde(rename = "ticket.split")]
    Split {
        /// The source ticket.
        ticket_id: Uuid,
        /// The new ticket.
        split_into: Uuid,
        /// The moved messages.
        message_ids: Vec<Uuid>,
    },
    /// `ticket.merged`: closed for good, continued in `into`.
    #[serde(rename = "ticket.merged")]
    Merged {
        /// The merged ticket.
        ticket_id: Uuid,
        /// The surviving ticket.
        into: Uuid,
        /// Status before the merge closed it.
        previous_status: Status,
    },
    /// `ticket.priority_changed`.
    #[serde(rename = "ticket.priority_changed")]
    PriorityChanged {
        /// The ticket.
        ticket_id: Uuid,
        /// Before.
        from: Priority,
        /// After.
        to: Priority,
    },
    /// `ticket.system_message_added`.
    #[serde(rename = "ticket.system_message_added")]
    SystemMessageAdded {
        /// The ticket.
        ticket_id: Uuid,
        /// Text; not personal.
        text: String,
    },
    /// `ticket.other`: an integration's action.
    #[serde(rename = "ticket.other")]
    Other {
        /// The ticket.
        ticket_id: Uuid,
        /// Action name.
        action: String,
        /// Description.
        description: String,
    },
}

/// Ticket event types and their current schema versions.
pub const EVENT_TYPES: &[(&str, u32)] = &[
    ("ticket.created", 2),
    ("ticket.status_changed", 1),
    ("ticket.message_added", 1),
    ("ticket.internal_message_added", 1),
    ("ticket.note_added", 1),
    ("ticket.file_attached", 1),
    ("ticket.transferred", 1),
    ("ticket.tags_changed", 1),
    ("ticket.voice_message_added", 1),
    ("ticket.call_logged", 1),
    ("ticket.chat_message_added", 1),
    ("ticket.forwarded", 1),
    ("ticket.ranked", 1),
    ("ticket.split", 1),
    ("ticket.merged", 1),
    ("ticket.priority_changed", 1),
    ("ticket.system_message_added", 1),
    ("ticket.other", 1),
];

impl TicketEvent {
    /// The ticket the event is about.
    pub fn ticket_id(&self) -> Uuid {
        match self {
            TicketEvent::Created { ticket_id, .. }
            | TicketEvent::StatusChanged { ticket_id, .. }
            | TicketEvent::MessageAdded { ticket_id, .. }
            | TicketEvent::InternalMessageAdded { ticket_id, .. }
            | TicketEvent::NoteAdded { ticket_id, .. }
            | TicketEvent::FileAttached { ticket_id, .. }
            | TicketEvent::Transferred { ticket_id, .. }
            | TicketEvent::TagsChanged { ticket_id, .. }
            | TicketEvent::VoiceMessageAdded { ticket_id, .. }
            | TicketEvent::CallLogged { ticket_id, .. }
            | TicketEvent::ChatMessageAdded { ticket_id, .. }
            | TicketEvent::Forwarded { ticket_id, .. }
            | TicketEvent::Ranked { ticket_id, .. }
            | TicketEvent::Split { ticket_id, .. }
            | TicketEvent::Merged { ticket_id, .. }
            | TicketEvent::PriorityChanged { ticket_id, .. }
            | TicketEvent::SystemMessageAdded { ticket_id, .. }
            | TicketEvent::Other { ticket_id, .. } => *ticket_id,
        }
    }
}

impl DomainEvent for TicketEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TicketEvent::Created { .. } => "ticket.created",
            TicketEvent::StatusChanged { .. } => "ticket.status_changed",
            TicketEvent::MessageAdded { .. } => "ticket.message_added",
            TicketEvent::InternalMessageAdded { .. } => "ticket.internal_message_added",
            TicketEvent::NoteAdded { .. } => "ticket.note_added",
            TicketEvent::FileAttached { .. } => "ticket.file_attached",
            TicketEvent::Transferred { .. } => "ticket.transferred",
            TicketEvent::TagsChanged { .. } => "ticket.tags_changed",
            TicketEvent::VoiceMessageAdded { .. } => "ticket.voice_message_added",
            TicketEvent::CallLogged { .. } => "ticket.call_logged",
            TicketEvent::ChatMessageAdded { .. } => "ticket.chat_message_added",
            TicketEvent::Forwarded { .. } => "ticket.forwarded",
            TicketEvent::Ranked { .. } => "ticket.ranked",
            TicketEvent::Split { .. } => "ticket.split",
            TicketEvent::Merged { .. } => "ticket.merged",
            TicketEvent::PriorityChanged { .. } => "ticket.priority_changed",
            TicketEvent::SystemMessageAdded { .. } => "ticket.system_message_added",
            TicketEvent::Other { .. } => "ticket.other",
        }
    }

    fn schema_version(&self) -> u32 {
        codec::current_version(EVENT_TYPES, self.event_type()).unwrap_or(1)
    }

    fn to_payload(&self) -> Value {
        codec::to_payload(self)
    }

    fn decode(event_type: &str, schema_version: u32, payload: &Value) -> Result<Self, DecodeError> {
        let upcast;
        let payload = match (event_type, schema_version) {
            // v2 added `priority`; every v1 ticket was normal.
            ("ticket.created", 1) => {
                upcast = with_default(payload, "priority", Value::from("normal"));
                &upcast
            }
            _ => payload,
        };
        codec::decode(EVENT_TYPES, event_type, schema_version, payload)
    }
}

fn with_default(payload: &Value, key: &str, value: Value) -> Value {
    let mut payload = payload.clone();
    if let Value::Object(map) = &mut payload {
        map.entry(key).or_insert(value);
    }
    payload
}
