//! What happens to a ticket: [`TicketEvent`], the personal data parts of
//! its payloads, the stored event types with their upcasts, and how each
//! event reads in the audit view and history: its catalogue action
//! ([`actions`]) and its audit line ([`TicketEvent::audit`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use serde_json::json;

use self::actions as c;
use super::{Channel, Direction, Priority, Status};
use crate::audit::{one_line, opt, plural, Audit, Change};
use crate::catalogue::Action;
use crate::{codec, DecodeError, DomainEvent, Pii};

/// The audit actions of tickets, labelled the way helpdesk audit logs name
/// them; part of [`crate::catalogue::ACTIONS`].
pub mod actions {
    crate::catalogue::actions! {
        ACTIONS:
        TICKET_CREATED = "ticket.created", "Ticket – Created", "A ticket was opened.";
        TICKET_STATUS = "ticket.status_changed", "Ticket – Status", "A ticket's status changed (including reopening).";
        TICKET_MESSAGE = "ticket.message_added", "Ticket – Message", "A customer's message or a reply to the customer.";
        TICKET_FACEBOOK = "ticket.facebook", "Ticket – Facebook", "A public message through Facebook.";
        TICKET_TWEET = "ticket.tweet", "Ticket – Tweet", "A public message through Twitter.";
        TICKET_WEIBO = "ticket.weibo", "Ticket – Weibo", "A public message through Weibo.";
        TICKET_TENCENT = "ticket.tencent", "Ticket – Tencent", "A public message through Tencent.";
        TICKET_KNOWLEDGEBASE = "ticket.knowledgebase", "Ticket – Knowledgebase", "A public message through the knowledge base.";
        TICKET_OFFLINE = "ticket.offline", "Ticket – Offline", "A public message through the offline form.";
        TICKET_INTERNAL_MESSAGE = "ticket.internal_message_added", "Ticket – Internal Message", "A message between agents.";
        TICKET_NOTE = "ticket.note_added", "Ticket – Note", "A note on a ticket.";
        TICKET_FILE = "ticket.file_attached", "Ticket – File", "A file was attached.";
        TICKET_TRANSFER = "ticket.transferred", "Ticket – Transfer", "A ticket moved to another agent or department.";
        TICKET_TAGS_CHANGED = "ticket.tags_changed", "Ticket – Tags changed", "Tags were added or removed.";
        TICKET_VOICE_MESSAGE = "ticket.voice_message_added", "Ticket – Voice message", "A voice message.";
        TICKET_CALL = "ticket.call_logged", "Ticket – Call", "A phone call was logged.";
        TICKET_CHAT = "ticket.chat_message_added", "Ticket – Chat", "A chat message or transcript.";
        TICKET_FORWARD = "ticket.forwarded", "Ticket – Forward", "A ticket was forwarded to an address.";
        TICKET_RANKING = "ticket.ranked", "Ticket – Ranking", "The customer rated the ticket.";
        TICKET_SPLIT = "ticket.split", "Ticket – Split", "Messages were moved into a new ticket.";
        TICKET_MERGE = "ticket.merged", "Ticket – Merge", "A ticket was merged into another.";
        TICKET_PRIORITY = "ticket.priority_changed", "Ticket – Priority", "A ticket's priority changed.";
        TICKET_SYSTEM_MESSAGE = "ticket.system_message_added", "Ticket – System message", "A message produced by the system.";
        TICKET_OTHER = "ticket.other", "Ticket – Other", "An integration's own action on a ticket.";
        TICKET_DUE_DATE = "ticket.due_date_changed", "Ticket – Due date", "A ticket's due date was set, changed or cleared.";
    }
}

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
    /// `ticket.due_date_changed`: when the ticket should be solved by.
    #[serde(rename = "ticket.due_date_changed")]
    DueDateChanged {
        /// The ticket.
        ticket_id: Uuid,
        /// Before; `None` when it had none.
        from: Option<DateTime<Utc>>,
        /// Now; `None` when cleared.
        to: Option<DateTime<Utc>>,
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
    ("ticket.due_date_changed", 1),
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
            | TicketEvent::Other { ticket_id, .. }
            | TicketEvent::DueDateChanged { ticket_id, .. } => *ticket_id,
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
            TicketEvent::DueDateChanged { .. } => "ticket.due_date_changed",
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

/// How a channel reads in a sentence ("by email", "by Facebook").
fn by(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "by email",
        Channel::Chat => "by chat",
        Channel::Call => "by phone",
        Channel::Facebook => "on Facebook",
        Channel::Twitter => "on Twitter",
        Channel::Weibo => "on Weibo",
        Channel::Tencent => "on Tencent",
        Channel::OfflineForm => "through the offline form",
        Channel::KnowledgeBase => "through the knowledge base",
        Channel::Web => "through the web portal",
        Channel::Api => "through the API",
    }
}

/// A public message through these channels is its own action.
fn message_action(channel: Channel) -> &'static Action {
    match channel {
        Channel::Facebook => &c::TICKET_FACEBOOK,
        Channel::Twitter => &c::TICKET_TWEET,
        Channel::Weibo => &c::TICKET_WEIBO,
        Channel::Tencent => &c::TICKET_TENCENT,
        Channel::KnowledgeBase => &c::TICKET_KNOWLEDGEBASE,
        Channel::OfflineForm => &c::TICKET_OFFLINE,
        Channel::Email | Channel::Chat | Channel::Call | Channel::Web | Channel::Api => {
            &c::TICKET_MESSAGE
        }
    }
}

impl TicketEvent {
    /// The audit line of this event.
    pub fn audit(&self) -> Audit {
        let event = self;
        use TicketEvent as E;
        let (action, description, changes): (&'static Action, String, Vec<Change>) = match event {
            E::Created {
                channel,
                priority,
                department,
                tags,
                split_from,
                ..
            } => {
                let mut description =
                    format!("Ticket created {} with {priority} priority", by(*channel));
                let mut changes = vec![
                    Change::set("status", Status::New.as_str()),
                    Change::set("channel", channel.as_str()),
                    Change::set("priority", priority.as_str()),
                ];
                if let Some(department) = department {
                    changes.push(Change::set("department", json!(department)));
                }
                changes.extend(tags.iter().map(|tag| Change::set("tags", tag.as_str())));
                if let Some(source) = split_from {
                    description.push_str(&format!(", split from ticket {source}"));
                    changes.push(Change::set("split_from", json!(source)));
                }
                (&c::TICKET_CREATED, description, changes)
            }
            E::StatusChanged { from, to, .. } => {
                let reopened =
                    *to == Status::Open && matches!(from, Status::Resolved | Status::Closed);
                let description = if reopened {
                    format!("Ticket reopened: status changed from {from} to {to}")
                } else {
                    format!("Status changed from {from} to {to}")
                };
                (
                    &c::TICKET_STATUS,
                    description,
                    vec![Change::from_to("status", from.as_str(), to.as_str())],
                )
            }
            E::MessageAdded {
                message_id,
                direction,
                channel,
                ..
            } => {
                let description = match direction {
                    Direction::Inbound => format!("Message from the customer {}", by(*channel)),
                    Direction::Outbound => format!("Replied to the customer {}", by(*channel)),
                };
                (
                    message_action(*channel),
                    description,
                    vec![Change::set("message_id", json!(message_id))],
                )
            }
            E::InternalMessageAdded { message_id, .. } => (
                &c::TICKET_INTERNAL_MESSAGE,
                "Internal message between agents".to_string(),
                vec![Change::set("message_id", json!(message_id))],
            ),
            E::NoteAdded { note_id, .. } => (
                &c::TICKET_NOTE,
                "Note added".to_string(),
                vec![Change::set("note_id", json!(note_id))],
            ),
            E::FileAttached {
                file_id,
                content_type,
                size,
                ..
            } => (
                &c::TICKET_FILE,
                format!(
                    "File attached ({content_type}, {})",
                    plural(*size as usize, "byte", "bytes")
                ),
                vec![Change::set("file_id", json!(file_id))],
            ),
            E::Transferred {
                from_agent,
                to_agent,
                from_department,
                to_department,
                ..
            } => {
                let mut parts = Vec::new();
                let mut changes = Vec::new();
                if from_agent != to_agent {
                    parts.push(match to_agent {
                        Some(agent) => format!("to agent {agent}"),
                        None => "to no agent".to_string(),
                    });
                    changes.push(Change::new("agent", opt(*from_agent), opt(*to_agent)));
                }
                if from_department != to_department {
                    parts.push(match to_department {
                        Some(department) => format!("to department {department}"),
                        None => "to no department".to_string(),
                    });
                    changes.push(Change::new(
                        "department",
                        opt(*from_department),
                        opt(*to_department),
                    ));
                }
                let description = if parts.is_empty() {
                    "Transferred".to_string()
                } else {
                    format!("Transferred {}", parts.join(" and "))
                };
                (&c::TICKET_TRANSFER, description, changes)
            }
            E::TagsChanged { added, removed, .. } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(", ")));
                }
                let changes = added
                    .iter()
                    .map(|tag| Change::set("tags", tag.as_str()))
                    .chain(
                        removed
                            .iter()
                            .map(|tag| Change::new("tags", Some(json!(tag)), None)),
                    )
                    .collect();
                (
                    &c::TICKET_TAGS_CHANGED,
                    format!("Tags changed: {}", parts.join(", ")),
                    changes,
                )
            }
            E::VoiceMessageAdded {
                message_id,
                duration_seconds,
                ..
            } => (
                &c::TICKET_VOICE_MESSAGE,
                format!(
                    "Voice message of {}",
                    plural(*duration_seconds as usize, "second", "seconds")
                ),
                vec![Change::set("message_id", json!(message_id))],
            ),
            E::CallLogged {
                direction,
                duration_seconds,
                ..
            } => {
                let kind = match direction {
                    Direction::Inbound => "Inbound",
                    Direction::Outbound => "Outbound",
                };
                (
                    &c::TICKET_CALL,
                    format!(
                        "{kind} call of {}",
                        plural(*duration_seconds as usize, "second", "seconds")
                    ),
                    Vec::new(),
                )
            }
            E::ChatMessageAdded { message_id, .. } => (
                &c::TICKET_CHAT,
                "Chat message".to_string(),
                vec![Change::set("message_id", json!(message_id))],
            ),
            E::Forwarded { .. } => (
                &c::TICKET_FORWARD,
                "Ticket forwarded by email".to_string(),
                Vec::new(),
            ),
            E::Ranked {
                previous_rating,
                rating,
                pii,
                ..
            } => {
                let comment = if pii.data.comment.is_some() {
                    " with a comment"
                } else {
                    ""
                };
                (
                    &c::TICKET_RANKING,
                    format!("Customer rated the ticket {rating} of 5{comment}"),
                    vec![Change::new(
                        "rating",
                        previous_rating.map(|r| json!(r)),
                        Some(json!(rating)),
                    )],
                )
            }
            E::Split {
                split_into,
                message_ids,
                ..
            } => (
                &c::TICKET_SPLIT,
                format!(
                    "Split {} into ticket {split_into}",
                    plural(message_ids.len(), "message", "messages")
                ),
                vec![
                    Change::set("split_into", json!(split_into)),
                    Change::new("message_ids", Some(json!(message_ids)), None),
                ],
            ),
            E::Merged {
                into,
                previous_status,
                ..
            } => (
                &c::TICKET_MERGE,
                format!("Merged into ticket {into}"),
                vec![
                    Change::set("merged_into", json!(into)),
                    Change::from_to("status", previous_status.as_str(), Status::Closed.as_str()),
                ],
            ),
            E::PriorityChanged { from, to, .. } => (
                &c::TICKET_PRIORITY,
                format!("Priority changed from {from} to {to}"),
                vec![Change::from_to("priority", from.as_str(), to.as_str())],
            ),
            E::SystemMessageAdded { text, .. } => (
                &c::TICKET_SYSTEM_MESSAGE,
                format!("System message: {}", one_line(text)),
                Vec::new(),
            ),
            E::Other {
                action,
                description,
                ..
            } => (
                &c::TICKET_OTHER,
                format!("{}: {}", one_line(action), one_line(description)),
                Vec::new(),
            ),
            E::DueDateChanged { from, to, .. } => (
                &c::TICKET_DUE_DATE,
                match (from, to) {
                    (_, Some(to)) => format!(
                        "Due date set to {}",
                        to.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                    (_, None) => "Due date cleared".to_string(),
                },
                vec![Change::new(
                    "due_at",
                    from.map(|at| json!(at)),
                    to.map(|at| json!(at)),
                )],
            ),
        };
        Audit {
            action,
            description,
            ticket_id: Some(event.ticket_id()),
            changes,
        }
    }
}
