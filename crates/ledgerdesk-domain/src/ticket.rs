//! The ticket aggregate: one customer request, its messages and its life
//! cycle. Stream `ticket-<ticket uuid>`.
//!
//! The ticket's data subject is its requester: every personal field of its
//! events (subject line, bodies, file names, comments, addresses) is wrapped
//! in a [`Pii`] for the requester's subject id, which the state remembers from
//! `ticket.created`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::fields::{self, limits, string_enum, FieldError};
use crate::{codec, Aggregate, DecodeError, DomainEvent, Pii};

string_enum! {
    /// Where a ticket or a public message came from / went through.
    Channel, field = "channel" {
        /// Email.
        Email => "email",
        /// Live chat.
        Chat => "chat",
        /// Phone call.
        Call => "call",
        /// Facebook.
        Facebook => "facebook",
        /// Twitter.
        Twitter => "twitter",
        /// Weibo.
        Weibo => "weibo",
        /// Tencent.
        Tencent => "tencent",
        /// The offline contact form.
        OfflineForm => "offline_form",
        /// The knowledge base.
        KnowledgeBase => "knowledge_base",
        /// The web portal.
        Web => "web",
        /// The public API.
        Api => "api",
    }
}

string_enum! {
    /// Where a ticket is in its life cycle; see [`STATUS_TRANSITIONS`].
    #[derive(Default)]
    Status, field = "status" {
        /// Not yet looked at.
        #[default]
        New => "new",
        /// Being worked on.
        Open => "open",
        /// Waiting for the customer or a third party.
        Pending => "pending",
        /// Answered; may still be reopened.
        Resolved => "resolved",
        /// Done; closed to new messages until reopened.
        Closed => "closed",
    }
}

string_enum! {
    /// How urgent a ticket is.
    #[derive(Default)]
    Priority, field = "priority" {
        /// Low.
        Low => "low",
        /// Normal (the default).
        #[default]
        Normal => "normal",
        /// High.
        High => "high",
        /// Urgent.
        Urgent => "urgent",
    }
}

string_enum! {
    /// Whether a message or call came from the customer or went to them.
    Direction, field = "direction" {
        /// From the customer.
        Inbound => "inbound",
        /// To the customer (an agent's reply).
        Outbound => "outbound",
    }
}

/// Every status change allowed: the one table, copied into `docs/domain.md`.
/// A change to `open` from `resolved` or `closed` is a reopening.
pub const STATUS_TRANSITIONS: &[(Status, Status)] = &[
    (Status::New, Status::Open),
    (Status::New, Status::Pending),
    (Status::New, Status::Resolved),
    (Status::New, Status::Closed),
    (Status::Open, Status::Pending),
    (Status::Open, Status::Resolved),
    (Status::Open, Status::Closed),
    (Status::Pending, Status::Open),
    (Status::Pending, Status::Resolved),
    (Status::Pending, Status::Closed),
    (Status::Resolved, Status::Open),
    (Status::Resolved, Status::Closed),
    (Status::Closed, Status::Open),
];

impl Status {
    /// Whether [`STATUS_TRANSITIONS`] allows `self → to`.
    pub fn can_become(self, to: Status) -> bool {
        STATUS_TRANSITIONS.contains(&(self, to))
    }
}

/// Normalises one tag: trimmed, lowercased, inner whitespace runs to `-`.
pub fn normalise_tag(tag: &str) -> Result<String, FieldError> {
    fields::plain("tags", tag)?;
    let normal = tag
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase();
    if normal.is_empty() {
        return Err(FieldError::Empty { field: "tags" });
    }
    if normal.chars().count() > limits::TAG_MAX {
        return Err(FieldError::TooLong {
            field: "tags",
            max: limits::TAG_MAX,
        });
    }
    Ok(normal)
}

/// Normalises a list of tags: each with [`normalise_tag`], deduplicated, sorted.
pub fn normalise_tags(tags: &[String]) -> Result<BTreeSet<String>, FieldError> {
    tags.iter().map(|t| normalise_tag(t)).collect()
}

/// What the handler found out about an agent named in a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentFact {
    /// The agent's user id.
    pub id: Uuid,
    /// Whether such a user exists.
    pub exists: bool,
    /// Whether it is not deactivated.
    pub active: bool,
}

/// What the handler found out about a department named in a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepartmentFact {
    /// The department id.
    pub id: Uuid,
    /// Whether such a department exists.
    pub exists: bool,
    /// Whether it is not deactivated.
    pub active: bool,
}

/// The customer who opened the ticket, as given by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// Display name.
    pub name: String,
    /// Email address, when the channel has one.
    pub email: Option<String>,
}

/// Opens a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTicket {
    /// The new ticket's id (generated by the caller).
    pub ticket_id: Uuid,
    /// The channel's wire name, see [`Channel`].
    pub channel: String,
    /// Subject line.
    pub subject: String,
    /// The first message's body.
    pub body: String,
    /// The first message's id.
    pub message_id: Uuid,
    /// Who asked.
    pub requester: Requester,
    /// The requester's data-subject id (looked up or minted by the handler).
    pub requester_subject: Uuid,
    /// Priority wire name; `None` means normal.
    pub priority: Option<String>,
    /// The department to file it under.
    pub department: Option<DepartmentFact>,
    /// Tags, normalised by `decide`.
    pub tags: Vec<String>,
    /// The ticket this one was split from.
    pub split_from: Option<Uuid>,
}

/// What can be asked of a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketCommand {
    /// Open the ticket.
    Create(CreateTicket),
    /// Move it along [`STATUS_TRANSITIONS`].
    ChangeStatus {
        /// Target status wire name.
        to: String,
    },
    /// A customer's message through a channel, or an agent's reply.
    AddPublicMessage {
        /// New message id.
        message_id: Uuid,
        /// `inbound` (from the customer) or `outbound` (a reply).
        direction: String,
        /// Channel wire name.
        channel: String,
        /// Message body.
        body: String,
    },
    /// A message between agents.
    AddInternalMessage {
        /// New message id.
        message_id: Uuid,
        /// Message body.
        body: String,
    },
    /// A note on the ticket.
    AddNote {
        /// New note id.
        note_id: Uuid,
        /// Note text.
        body: String,
    },
    /// A stored file attached to the ticket.
    AttachFile {
        /// The stored file's id.
        file_id: Uuid,
        /// Original file name.
        name: String,
        /// Media type.
        content_type: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the stored bytes, 64 hex characters.
        sha256: String,
    },
    /// Hand the ticket to an agent and/or a department.
    Transfer {
        /// The new assignee.
        to_agent: Option<AgentFact>,
        /// The new department.
        to_department: Option<DepartmentFact>,
    },
    /// Add and remove tags.
    ChangeTags {
        /// Tags to add.
        add: Vec<String>,
        /// Tags to remove.
        remove: Vec<String>,
    },
    /// A voice message.
    AddVoiceMessage {
        /// New message id.
        message_id: Uuid,
        /// Length in seconds.
        duration_seconds: u32,
        /// SHA-256 of the stored recording.
        file_sha256: Option<String>,
    },
    /// A phone call.
    LogCall {
        /// `inbound` or `outbound`.
        direction: String,
        /// Length in seconds.
        duration_seconds: u32,
    },
    /// A chat message or transcript.
    AddChatMessage {
        /// New message id.
        message_id: Uuid,
        /// The text.
        body: String,
    },
    /// Forward the ticket to an address.
    Forward {
        /// Email address.
        to: String,
    },
    /// The customer's rating.
    Rate {
        /// 1 to 5.
        rating: u8,
        /// Optional comment.
        comment: Option<String>,
    },
    /// Move some messages into a new ticket (created separately with
    /// `split_from`).
    Split {
        /// The new ticket's id.
        new_ticket_id: Uuid,
        /// Messages of this ticket to move.
        message_ids: Vec<Uuid>,
    },
    /// Merge this ticket into another; it is then closed to new messages.
    Merge {
        /// The surviving ticket.
        into: Uuid,
        /// Fact: the surviving ticket is itself merged.
        into_is_merged: bool,
        /// Fact: the surviving ticket is closed.
        into_is_closed: bool,
    },
    /// Change the priority.
    ChangePriority {
        /// Priority wire name.
        to: String,
    },
    /// A message produced by the system (merge, split, auto-close…).
    AddSystemMessage {
        /// The text; not personal data.
        text: String,
    },
    /// An integration's own action.
    RecordOther {
        /// Free action name.
        action: String,
        /// Description; integrations must keep personal data out of it.
        description: String,
    },
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

/// Why a ticket command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TicketError {
    /// A field of the command is empty, too long, unknown or malformed.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Any command but create on a ticket never created.
    #[error("ticket does not exist")]
    NotFound,
    /// Create on an existing ticket.
    #[error("ticket already exists")]
    AlreadyExists,
    /// Messages, files, tags… on a closed ticket.
    #[error("ticket is closed; reopen it first")]
    Closed,
    /// Anything that changes a merged ticket.
    #[error("ticket was merged into {into}")]
    Merged {
        /// Where it was merged.
        into: Uuid,
    },
    /// A status change not in [`STATUS_TRANSITIONS`].
    #[error("cannot change status from {from} to {to}")]
    InvalidTransition {
        /// Current status.
        from: Status,
        /// Requested status.
        to: Status,
    },
    /// A change that changes nothing.
    #[error("{field} is unchanged")]
    NoChange {
        /// The field that would not change.
        field: &'static str,
    },
    /// A message id already used on this ticket.
    #[error("message_id {id} is already used on this ticket")]
    DuplicateMessage {
        /// The id.
        id: Uuid,
    },
    /// Rating outside 1..=5.
    #[error("rating must be between 1 and 5, got {rating}")]
    RatingOutOfRange {
        /// What was given.
        rating: u8,
    },
    /// Transfer naming neither agent nor department.
    #[error("transfer needs to_agent or to_department")]
    TransferTargetMissing,
    /// The named agent does not exist.
    #[error("to_agent {id} does not exist")]
    AgentNotFound {
        /// The agent.
        id: Uuid,
    },
    /// The named agent is deactivated.
    #[error("to_agent {id} is deactivated")]
    AgentInactive {
        /// The agent.
        id: Uuid,
    },
    /// The named department does not exist.
    #[error("department {id} does not exist")]
    DepartmentNotFound {
        /// The department.
        id: Uuid,
    },
    /// The named department is deactivated.
    #[error("department {id} is deactivated")]
    DepartmentInactive {
        /// The department.
        id: Uuid,
    },
    /// Merge into the same ticket.
    #[error("a ticket cannot be merged into itself")]
    MergeIntoSelf,
    /// Merge into a ticket that is merged itself.
    #[error("cannot merge into ticket {into}: it is merged")]
    MergeTargetMerged {
        /// The target.
        into: Uuid,
    },
    /// Merge into a closed ticket.
    #[error("cannot merge into ticket {into}: it is closed")]
    MergeTargetClosed {
        /// The target.
        into: Uuid,
    },
    /// Split into the same ticket id.
    #[error("new_ticket_id must differ from the ticket's own id")]
    SplitIntoSelf,
    /// Split naming a message the ticket does not hold.
    #[error("message_ids: {id} is not a message of this ticket")]
    UnknownMessage {
        /// The id.
        id: Uuid,
    },
    /// Split moving every message.
    #[error("message_ids: a split must leave at least one message behind")]
    SplitTakesAll,
}

impl TicketError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            TicketError::Field(e) => e.code(),
            TicketError::NotFound => "ticket_not_found",
            TicketError::AlreadyExists => "ticket_exists",
            TicketError::Closed => "ticket_closed",
            TicketError::Merged { .. } => "ticket_merged",
            TicketError::InvalidTransition { .. } => "invalid_transition",
            TicketError::NoChange { .. } => "no_change",
            TicketError::DuplicateMessage { .. } => "duplicate_id",
            TicketError::RatingOutOfRange { .. } => "rating_out_of_range",
            TicketError::TransferTargetMissing => "field_empty",
            TicketError::AgentNotFound { .. } => "agent_not_found",
            TicketError::AgentInactive { .. } => "agent_inactive",
            TicketError::DepartmentNotFound { .. } => "department_not_found",
            TicketError::DepartmentInactive { .. } => "department_inactive",
            TicketError::MergeIntoSelf => "merge_into_self",
            TicketError::MergeTargetMerged { .. } => "merge_target_merged",
            TicketError::MergeTargetClosed { .. } => "merge_target_closed",
            TicketError::SplitIntoSelf => "split_into_self",
            TicketError::UnknownMessage { .. } => "unknown_message",
            TicketError::SplitTakesAll => "split_takes_all",
        }
    }

    /// The offending command field, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            TicketError::Field(e) => Some(e.field()),
            TicketError::InvalidTransition { .. } => Some("status"),
            TicketError::NoChange { field } => Some(field),
            TicketError::DuplicateMessage { .. } => Some("message_id"),
            TicketError::RatingOutOfRange { .. } => Some("rating"),
            TicketError::AgentNotFound { .. } | TicketError::AgentInactive { .. } => {
                Some("to_agent")
            }
            TicketError::DepartmentNotFound { .. } | TicketError::DepartmentInactive { .. } => {
                Some("department")
            }
            TicketError::MergeIntoSelf
            | TicketError::MergeTargetMerged { .. }
            | TicketError::MergeTargetClosed { .. } => Some("into"),
            TicketError::SplitIntoSelf => Some("new_ticket_id"),
            TicketError::UnknownMessage { .. } | TicketError::SplitTakesAll => Some("message_ids"),
            TicketError::NotFound
            | TicketError::AlreadyExists
            | TicketError::Closed
            | TicketError::Merged { .. }
            | TicketError::TransferTargetMissing => None,
        }
    }
}

/// A ticket's state as far as decisions need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ticket {
    /// `None` until `ticket.created`.
    pub id: Option<Uuid>,
    /// The requester's data-subject id, for the [`Pii`] of later events.
    pub requester_subject: Option<Uuid>,
    /// Life-cycle status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// The channel it came through.
    pub channel: Option<Channel>,
    /// Assigned agent.
    pub assignee: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// Normalised tags.
    pub tags: BTreeSet<String>,
    /// Ids of messages (public, internal, voice, chat) still on the ticket.
    pub message_ids: BTreeSet<Uuid>,
    /// Latest customer rating.
    pub rating: Option<u8>,
    /// Set once merged; a merged ticket is closed for good.
    pub merged_into: Option<Uuid>,
    /// The ticket it was split from.
    pub split_from: Option<Uuid>,
}

impl Ticket {
    /// The ticket id and requester subject, or `NotFound`.
    fn existing(&self) -> Result<(Uuid, Uuid), TicketError> {
        match (self.id, self.requester_subject) {
            (Some(id), Some(subject)) => Ok((id, subject)),
            _ => Err(TicketError::NotFound),
        }
    }

    fn not_merged(&self) -> Result<(), TicketError> {
        match self.merged_into {
            Some(into) => Err(TicketError::Merged { into }),
            None => Ok(()),
        }
    }

    /// Open for new content: neither merged nor closed.
    fn open_for_content(&self) -> Result<(Uuid, Uuid), TicketError> {
        let ids = self.existing()?;
        self.not_merged()?;
        if self.status == Status::Closed {
            return Err(TicketError::Closed);
        }
        Ok(ids)
    }

    fn new_message_id(&self, id: Uuid) -> Result<(), TicketError> {
        if self.message_ids.contains(&id) {
            return Err(TicketError::DuplicateMessage { id });
        }
        Ok(())
    }

    fn create(&self, c: &CreateTicket) -> Result<Vec<TicketEvent>, TicketError> {
        if self.id.is_some() {
            return Err(TicketError::AlreadyExists);
        }
        let channel = Channel::parse(&c.channel)?;
        let subject = fields::line("subject", &c.subject, limits::SUBJECT_MAX)?;
        let body = fields::text("body", &c.body, limits::BODY_MAX)?;
        let requester_name = fields::line("requester.name", &c.requester.name, limits::NAME_MAX)?;
        let requester_email = match c.requester.email.as_deref() {
            Some(email) if !email.trim().is_empty() => {
                Some(fields::email("requester.email", email)?)
            }
            _ => None,
        };
        let priority = match c.priority.as_deref() {
            Some(p) => Priority::parse(p)?,
            None => Priority::Normal,
        };
        let department = c.department.map(check_department).transpose()?;
        let tags = normalise_tags(&c.tags)?;
        if tags.len() > limits::TAGS_MAX {
            return Err(FieldError::TooMany {
                field: "tags",
                max: limits::TAGS_MAX,
            }
            .into());
        }
        if c.split_from == Some(c.ticket_id) {
            return Err(FieldError::Malformed {
                field: "split_from",
                problem: "must differ from ticket_id",
            }
            .into());
        }
        Ok(vec![TicketEvent::Created {
            ticket_id: c.ticket_id,
            message_id: c.message_id,
            channel,
            priority,
            department,
            tags: tags.into_iter().collect(),
            split_from: c.split_from,
            pii: Pii::new(
                c.requester_subject,
                CreatedPii {
                    subject,
                    body,
                    requester_name,
                    requester_email,
                },
            ),
        }])
    }

    fn transfer(
        &self,
        ticket_id: Uuid,
        to_agent: Option<AgentFact>,
        to_department: Option<DepartmentFact>,
    ) -> Result<Vec<TicketEvent>, TicketError> {
        if to_agent.is_none() && to_department.is_none() {
            return Err(TicketError::TransferTargetMissing);
        }
        if let Some(agent) = to_agent {
            if !agent.exists {
                return Err(TicketError::AgentNotFound { id: agent.id });
            }
            if !agent.active {
                return Err(TicketError::AgentInactive { id: agent.id });
            }
        }
        let department = to_department.map(check_department).transpose()?;
        let new_agent = to_agent.map(|a| a.id).or(self.assignee);
        let new_department = department.or(self.department);
        if new_agent == self.assignee && new_department == self.department {
            return Err(TicketError::NoChange {
                field: "assignee and department",
            });
        }
        Ok(vec![TicketEvent::Transferred {
            ticket_id,
            from_agent: self.assignee,
            to_agent: new_agent,
            from_department: self.department,
            to_department: new_department,
        }])
    }

    fn change_tags(
        &self,
        ticket_id: Uuid,
        add: &[String],
        remove: &[String],
    ) -> Result<Vec<TicketEvent>, TicketError> {
        let add = normalise_tags(add)?;
        let remove = normalise_tags(remove)?;
        let added: Vec<String> = add.difference(&self.tags).cloned().collect();
        let removed: Vec<String> = remove
            .intersection(&self.tags)
            .filter(|t| !add.contains(*t))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Err(TicketError::NoChange { field: "tags" });
        }
        if self.tags.len() + added.len() - removed.len() > limits::TAGS_MAX {
            return Err(FieldError::TooMany {
                field: "tags",
                max: limits::TAGS_MAX,
            }
            .into());
        }
        Ok(vec![TicketEvent::TagsChanged {
            ticket_id,
            added,
            removed,
        }])
    }

    fn split(
        &self,
        ticket_id: Uuid,
        new_ticket_id: Uuid,
        message_ids: &[Uuid],
    ) -> Result<Vec<TicketEvent>, TicketError> {
        if new_ticket_id == ticket_id {
            return Err(TicketError::SplitIntoSelf);
        }
        let moved: BTreeSet<Uuid> = message_ids.iter().copied().collect();
        if moved.is_empty() {
            return Err(FieldError::Empty {
                field: "message_ids",
            }
            .into());
        }
        if moved.len() > limits::SPLIT_MESSAGES_MAX {
            return Err(FieldError::TooMany {
                field: "message_ids",
                max: limits::SPLIT_MESSAGES_MAX,
            }
            .into());
        }
        if let Some(id) = moved.iter().find(|id| !self.message_ids.contains(id)) {
            return Err(TicketError::UnknownMessage { id: *id });
        }
        if moved.len() >= self.message_ids.len() {
            return Err(TicketError::SplitTakesAll);
        }
        Ok(vec![TicketEvent::Split {
            ticket_id,
            split_into: new_ticket_id,
            message_ids: moved.into_iter().collect(),
        }])
    }
}

fn check_department(fact: DepartmentFact) -> Result<Uuid, TicketError> {
    if !fact.exists {
        return Err(TicketError::DepartmentNotFound { id: fact.id });
    }
    if !fact.active {
        return Err(TicketError::DepartmentInactive { id: fact.id });
    }
    Ok(fact.id)
}

fn body(
    subject: Uuid,
    field: &'static str,
    body: &str,
    max: usize,
) -> Result<Pii<BodyPii>, TicketError> {
    Ok(Pii::new(
        subject,
        BodyPii {
            body: fields::text(field, body, max)?,
        },
    ))
}

impl Aggregate for Ticket {
    type Event = TicketEvent;
    type Command = TicketCommand;
    type Error = TicketError;
    const STREAM_TYPE: &'static str = "ticket";

    fn apply(mut self, event: &TicketEvent) -> Self {
        match event {
            TicketEvent::Created {
                ticket_id,
                message_id,
                channel,
                priority,
                department,
                tags,
                split_from,
                pii,
            } => {
                self = Ticket {
                    id: Some(*ticket_id),
                    requester_subject: Some(pii.subject),
                    channel: Some(*channel),
                    priority: *priority,
                    department: *department,
                    tags: tags.iter().cloned().collect(),
                    split_from: *split_from,
                    ..Ticket::default()
                };
                self.message_ids.insert(*message_id);
            }
            TicketEvent::StatusChanged { to, .. } => self.status = *to,
            TicketEvent::MessageAdded { message_id, .. }
            | TicketEvent::InternalMessageAdded { message_id, .. }
            | TicketEvent::VoiceMessageAdded { message_id, .. }
            | TicketEvent::ChatMessageAdded { message_id, .. } => {
                self.message_ids.insert(*message_id);
            }
            TicketEvent::Transferred {
                to_agent,
                to_department,
                ..
            } => {
                self.assignee = *to_agent;
                self.department = *to_department;
            }
            TicketEvent::TagsChanged { added, removed, .. } => {
                for tag in removed {
                    self.tags.remove(tag);
                }
                self.tags.extend(added.iter().cloned());
            }
            TicketEvent::Ranked { rating, .. } => self.rating = Some(*rating),
            TicketEvent::Split { message_ids, .. } => {
                for id in message_ids {
                    self.message_ids.remove(id);
                }
            }
            TicketEvent::Merged { into, .. } => {
                self.merged_into = Some(*into);
                self.status = Status::Closed;
            }
            TicketEvent::PriorityChanged { to, .. } => self.priority = *to,
            TicketEvent::NoteAdded { .. }
            | TicketEvent::FileAttached { .. }
            | TicketEvent::CallLogged { .. }
            | TicketEvent::Forwarded { .. }
            | TicketEvent::SystemMessageAdded { .. }
            | TicketEvent::Other { .. } => {}
        }
        self
    }

    fn decide(&self, command: &TicketCommand) -> Result<Vec<TicketEvent>, TicketError> {
        use TicketCommand as C;
        use TicketEvent as E;
        match command {
            C::Create(create) => self.create(create),
            C::ChangeStatus { to } => {
                let (ticket_id, _) = self.existing()?;
                self.not_merged()?;
                let to = Status::parse(to)?;
                if !self.status.can_become(to) {
                    return Err(TicketError::InvalidTransition {
                        from: self.status,
                        to,
                    });
                }
                Ok(vec![E::StatusChanged {
                    ticket_id,
                    from: self.status,
                    to,
                }])
            }
            C::AddPublicMessage {
                message_id,
                direction,
                channel,
                body: text,
            } => {
                let (ticket_id, subject) = self.open_for_content()?;
                self.new_message_id(*message_id)?;
                Ok(vec![E::MessageAdded {
                    ticket_id,
                    message_id: *message_id,
                    direction: Direction::parse(direction)?,
                    channel: Channel::parse(channel)?,
                    pii: body(subject, "body", text, limits::BODY_MAX)?,
                }])
            }
            C::AddInternalMessage {
                message_id,
                body: text,
            } => {
                let (ticket_id, subject) = self.open_for_content()?;
                self.new_message_id(*message_id)?;
                Ok(vec![E::InternalMessageAdded {
                    ticket_id,
                    message_id: *message_id,
                    pii: body(subject, "body", text, limits::BODY_MAX)?,
                }])
            }
            C::AddNote {
                note_id,
                body: text,
            } => {
                let (ticket_id, subject) = self.open_for_content()?;
                Ok(vec![E::NoteAdded {
                    ticket_id,
                    note_id: *note_id,
                    pii: body(subject, "body", text, limits::NOTE_MAX)?,
                }])
            }
            C::AttachFile {
                file_id,
                name,
                content_type,
                size,
                sha256,
            } => {
                let (ticket_id, subject) = self.open_for_content()?;
                let name = fields::line("name", name, limits::FILE_NAME_MAX)?;
                Ok(vec![E::FileAttached {
                    ticket_id,
                    file_id: *file_id,
                    content_type: fields::line(
                        "content_type",
                        content_type,
                        limits::CONTENT_TYPE_MAX,
                    )?,
                    size: *size,
                    sha256: fields::sha256_hex("sha256", sha256)?,
                    pii: Pii::new(subject, FilePii { name }),
                }])
            }
            C::Transfer {
                to_agent,
                to_department,
            } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.transfer(ticket_id, *to_agent, *to_department)
            }
            C::ChangeTags { add, remove } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.change_tags(ticket_id, add, remove)
            }
            C::AddVoiceMessage {
                message_id,
                duration_seconds,
                file_sha256,
            } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.new_message_id(*message_id)?;
                Ok(vec![E::VoiceMessageAdded {
                    ticket_id,
                    message_id: *message_id,
                    duration_seconds: *duration_seconds,
                    file_sha256: file_sha256
                        .as_deref()
                        .map(|sha| fields::sha256_hex("file_sha256", sha))
                        .transpose()?,
                }])
            }
            C::LogCall {
                direction,
                duration_seconds,
            } => {
                let (ticket_id, _) = self.open_for_content()?;
                Ok(vec![E::CallLogged {
                    ticket_id,
                    direction: Direction::parse(direction)?,
                    duration_seconds: *duration_seconds,
                }])
            }
            C::AddChatMessage {
                message_id,
                body: text,
            } => {
                let (ticket_id, subject) = self.open_for_content()?;
                self.new_message_id(*message_id)?;
                Ok(vec![E::ChatMessageAdded {
                    ticket_id,
                    message_id: *message_id,
                    pii: body(subject, "body", text, limits::BODY_MAX)?,
                }])
            }
            C::Forward { to } => {
                let (ticket_id, subject) = self.open_for_content()?;
                Ok(vec![E::Forwarded {
                    ticket_id,
                    pii: Pii::new(
                        subject,
                        ForwardPii {
                            to: fields::email("to", to)?,
                        },
                    ),
                }])
            }
            C::Rate { rating, comment } => {
                // Customers rate after closing, so only a merge stops it.
                let (ticket_id, subject) = self.existing()?;
                self.not_merged()?;
                if !(1..=5).contains(rating) {
                    return Err(TicketError::RatingOutOfRange { rating: *rating });
                }
                let comment =
                    fields::optional_text("comment", comment.as_deref(), limits::COMMENT_MAX)?;
                Ok(vec![E::Ranked {
                    ticket_id,
                    previous_rating: self.rating,
                    rating: *rating,
                    pii: Pii::new(subject, RatingPii { comment }),
                }])
            }
            C::Split {
                new_ticket_id,
                message_ids,
            } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.split(ticket_id, *new_ticket_id, message_ids)
            }
            C::Merge {
                into,
                into_is_merged,
                into_is_closed,
            } => {
                let (ticket_id, _) = self.existing()?;
                self.not_merged()?;
                if *into == ticket_id {
                    return Err(TicketError::MergeIntoSelf);
                }
                if *into_is_merged {
                    return Err(TicketError::MergeTargetMerged { into: *into });
                }
                if *into_is_closed {
                    return Err(TicketError::MergeTargetClosed { into: *into });
                }
                Ok(vec![E::Merged {
                    ticket_id,
                    into: *into,
                    previous_status: self.status,
                }])
            }
            C::ChangePriority { to } => {
                let (ticket_id, _) = self.open_for_content()?;
                let to = Priority::parse(to)?;
                if to == self.priority {
                    return Err(TicketError::NoChange { field: "priority" });
                }
                Ok(vec![E::PriorityChanged {
                    ticket_id,
                    from: self.priority,
                    to,
                }])
            }
            C::AddSystemMessage { text } => {
                // The system reports on merged and closed tickets too.
                let (ticket_id, _) = self.existing()?;
                Ok(vec![E::SystemMessageAdded {
                    ticket_id,
                    text: fields::text("text", text, limits::SYSTEM_TEXT_MAX)?,
                }])
            }
            C::RecordOther {
                action,
                description,
            } => {
                let (ticket_id, _) = self.existing()?;
                Ok(vec![E::Other {
                    ticket_id,
                    action: fields::line("action", action, limits::ACTION_NAME_MAX)?,
                    description: fields::line("description", description, limits::DESCRIPTION_MAX)?,
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use TicketCommand as C;
    use TicketEvent as E;

    const T: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const SUBJECT: Uuid = Uuid::from_u128(100);
    const M1: Uuid = Uuid::from_u128(11);
    const M2: Uuid = Uuid::from_u128(12);
    const M3: Uuid = Uuid::from_u128(13);
    const AGENT: Uuid = Uuid::from_u128(200);
    const DEPT: Uuid = Uuid::from_u128(300);
    const SHA: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

    fn create() -> CreateTicket {
        CreateTicket {
            ticket_id: T,
            channel: "email".into(),
            subject: " Printer on fire ".into(),
            body: "It is burning.".into(),
            message_id: M1,
            requester: Requester {
                name: "Ada".into(),
                email: Some("ada@example.com".into()),
            },
            requester_subject: SUBJECT,
            priority: None,
            department: None,
            tags: vec![],
            split_from: None,
        }
    }

    fn created() -> TicketEvent {
        E::Created {
            ticket_id: T,
            message_id: M1,
            channel: Channel::Email,
            priority: Priority::Normal,
            department: None,
            tags: vec![],
            split_from: None,
            pii: Pii::new(
                SUBJECT,
                CreatedPii {
                    subject: "Printer on fire".into(),
                    body: "It is burning.".into(),
                    requester_name: "Ada".into(),
                    requester_email: Some("ada@example.com".into()),
                },
            ),
        }
    }

    fn status(from: Status, to: Status) -> TicketEvent {
        E::StatusChanged {
            ticket_id: T,
            from,
            to,
        }
    }

    fn closed() -> Vec<TicketEvent> {
        vec![created(), status(Status::New, Status::Closed)]
    }

    fn merged() -> Vec<TicketEvent> {
        vec![
            created(),
            E::Merged {
                ticket_id: T,
                into: OTHER,
                previous_status: Status::New,
            },
        ]
    }

    fn body_pii(body: &str) -> Pii<BodyPii> {
        Pii::new(SUBJECT, BodyPii { body: body.into() })
    }

    fn message(id: Uuid) -> TicketEvent {
        E::InternalMessageAdded {
            ticket_id: T,
            message_id: id,
            pii: body_pii("x"),
        }
    }

    fn public(body: &str) -> TicketCommand {
        C::AddPublicMessage {
            message_id: M2,
            direction: "inbound".into(),
            channel: "facebook".into(),
            body: body.into(),
        }
    }

    fn agent(active: bool) -> AgentFact {
        AgentFact {
            id: AGENT,
            exists: true,
            active,
        }
    }

    fn dept(exists: bool, active: bool) -> DepartmentFact {
        DepartmentFact {
            id: DEPT,
            exists,
            active,
        }
    }

    fn field(error: FieldError) -> TicketError {
        TicketError::Field(error)
    }

    /// Every command that adds content, for the closed/merged/missing rules.
    fn content_commands() -> Vec<TicketCommand> {
        vec![
            public("hi"),
            C::AddInternalMessage {
                message_id: M2,
                body: "hi".into(),
            },
            C::AddNote {
                note_id: M2,
                body: "hi".into(),
            },
            C::AttachFile {
                file_id: M2,
                name: "a.pdf".into(),
                content_type: "application/pdf".into(),
                size: 3,
                sha256: SHA.into(),
            },
            C::ChangeTags {
                add: vec!["vip".into()],
                remove: vec![],
            },
            C::AddVoiceMessage {
                message_id: M2,
                duration_seconds: 3,
                file_sha256: None,
            },
            C::LogCall {
                direction: "inbound".into(),
                duration_seconds: 3,
            },
            C::AddChatMessage {
                message_id: M2,
                body: "hi".into(),
            },
            C::Forward {
                to: "bob@example.com".into(),
            },
            C::Transfer {
                to_agent: Some(agent(true)),
                to_department: None,
            },
            C::ChangePriority { to: "high".into() },
            C::Split {
                new_ticket_id: OTHER,
                message_ids: vec![M1],
            },
        ]
    }

    #[test]
    fn create_opens_a_new_ticket_with_pii_apart() {
        let state = given::<Ticket>([])
            .when(C::Create(create()))
            .then_events(vec![created()]);
        assert_eq!(state.id, Some(T));
        assert_eq!(state.requester_subject, Some(SUBJECT));
        assert_eq!(state.status, Status::New);
        assert_eq!(state.priority, Priority::Normal);
        assert!(state.message_ids.contains(&M1));
    }

    #[test]
    fn create_normalises_tags_and_parses_priority_and_department() {
        let mut cmd = create();
        cmd.priority = Some("urgent".into());
        cmd.tags = vec!["  VIP ".into(), "Billing  Issue".into(), "vip".into()];
        cmd.department = Some(dept(true, true));
        cmd.split_from = Some(OTHER);
        let mut expected = created();
        if let E::Created {
            priority,
            tags,
            department,
            split_from,
            ..
        } = &mut expected
        {
            *priority = Priority::Urgent;
            *tags = vec!["billing-issue".into(), "vip".into()];
            *department = Some(DEPT);
            *split_from = Some(OTHER);
        }
        let state = given::<Ticket>([])
            .when(C::Create(cmd))
            .then_events(vec![expected]);
        assert_eq!(state.tags.len(), 2);
        assert_eq!(state.split_from, Some(OTHER));
        assert_eq!(state.department, Some(DEPT));
    }

    #[test]
    fn create_refuses_bad_fields_naming_them() {
        type Case = (fn(&mut CreateTicket), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|c| c.channel = "fax".into(), "channel", "unknown_value"),
            (|c| c.subject = "   ".into(), "subject", "field_empty"),
            (|c| c.subject = "s".repeat(256), "subject", "field_too_long"),
            (|c| c.body = "\n".into(), "body", "field_empty"),
            (|c| c.body = "b".repeat(65_537), "body", "field_too_long"),
            (
                |c| c.requester.name = "".into(),
                "requester.name",
                "field_empty",
            ),
            (
                |c| c.requester.email = Some("nope".into()),
                "requester.email",
                "field_malformed",
            ),
            (
                |c| c.priority = Some("asap".into()),
                "priority",
                "unknown_value",
            ),
            (|c| c.tags = vec![" ".into()], "tags", "field_empty"),
            (|c| c.tags = vec!["t".repeat(51)], "tags", "field_too_long"),
            (
                |c| c.tags = (0..51).map(|i| format!("t{i}")).collect(),
                "tags",
                "too_many",
            ),
            (
                |c| c.department = Some(dept(false, false)),
                "department",
                "department_not_found",
            ),
            (
                |c| c.department = Some(dept(true, false)),
                "department",
                "department_inactive",
            ),
            (|c| c.split_from = Some(T), "split_from", "field_malformed"),
        ];
        for (mutate, field, code) in cases {
            let mut cmd = create();
            mutate(&mut cmd);
            let error = Ticket::default().decide(&C::Create(cmd)).unwrap_err();
            assert_eq!(
                (error.field(), error.code()),
                (Some(field), code),
                "{error}"
            );
        }
        let error = Ticket::default()
            .decide(&C::Create(CreateTicket {
                body: "b".repeat(65_537),
                ..create()
            }))
            .unwrap_err();
        assert_eq!(error.to_string(), "body is longer than 65536 characters");
    }

    #[test]
    fn create_on_existing_ticket_is_refused() {
        given::<Ticket>([created()])
            .when(C::Create(create()))
            .then_error(TicketError::AlreadyExists);
    }

    #[test]
    fn every_other_command_on_a_missing_ticket_is_refused() {
        let mut commands = content_commands();
        commands.extend([
            C::ChangeStatus { to: "open".into() },
            C::Rate {
                rating: 5,
                comment: None,
            },
            C::Merge {
                into: OTHER,
                into_is_merged: false,
                into_is_closed: false,
            },
            C::AddSystemMessage { text: "x".into() },
            C::RecordOther {
                action: "a".into(),
                description: "d".into(),
            },
        ]);
        for command in commands {
            given::<Ticket>([])
                .when(command)
                .then_error(TicketError::NotFound);
        }
    }

    #[test]
    fn content_on_a_closed_ticket_is_refused() {
        for command in content_commands() {
            given::<Ticket>(closed())
                .when(command)
                .then_error(TicketError::Closed);
        }
    }

    #[test]
    fn content_on_a_merged_ticket_is_refused() {
        for command in content_commands() {
            given::<Ticket>(merged())
                .when(command)
                .then_error(TicketError::Merged { into: OTHER });
        }
    }

    #[test]
    fn status_follows_the_transition_table() {
        let state = given::<Ticket>([created()])
            .when(C::ChangeStatus { to: "open".into() })
            .then_events(vec![status(Status::New, Status::Open)]);
        assert_eq!(state.status, Status::Open);
        for &(from, to) in STATUS_TRANSITIONS {
            let history = vec![created(), status(Status::New, from)];
            given::<Ticket>(history)
                .when(C::ChangeStatus {
                    to: to.as_str().into(),
                })
                .then_events(vec![status(from, to)]);
        }
    }

    #[test]
    fn status_changes_outside_the_table_are_refused() {
        for &from in Status::ALL {
            for &to in Status::ALL {
                if from.can_become(to) {
                    continue;
                }
                given::<Ticket>([created(), status(Status::New, from)])
                    .when(C::ChangeStatus {
                        to: to.as_str().into(),
                    })
                    .then_error(TicketError::InvalidTransition { from, to });
            }
        }
        let error = TicketError::InvalidTransition {
            from: Status::Closed,
            to: Status::Pending,
        };
        assert_eq!(
            error.to_string(),
            "cannot change status from closed to pending"
        );
        assert_eq!(error.code(), "invalid_transition");
    }

    #[test]
    fn closed_ticket_can_be_reopened_and_then_takes_messages() {
        let state = given::<Ticket>(closed())
            .when(C::ChangeStatus { to: "open".into() })
            .then_events(vec![status(Status::Closed, Status::Open)]);
        assert!(state.decide(&public("back")).is_ok());
    }

    #[test]
    fn merged_ticket_status_cannot_change() {
        given::<Ticket>(merged())
            .when(C::ChangeStatus { to: "open".into() })
            .then_error(TicketError::Merged { into: OTHER });
    }

    #[test]
    fn unknown_status_is_refused_naming_the_field() {
        let error = given::<Ticket>([created()]).when(C::ChangeStatus { to: "done".into() });
        error.then_error(field(FieldError::Unknown {
            field: "status",
            value: "done".into(),
            expected: Status::WIRE_NAMES,
        }));
    }

    #[test]
    fn public_message_records_direction_and_channel() {
        let state = given::<Ticket>([created()])
            .when(public("Any news?"))
            .then_events(vec![E::MessageAdded {
                ticket_id: T,
                message_id: M2,
                direction: Direction::Inbound,
                channel: Channel::Facebook,
                pii: body_pii("Any news?"),
            }]);
        assert!(state.message_ids.contains(&M2));
    }

    #[test]
    fn public_message_refusals() {
        given::<Ticket>([created()])
            .when(public(" "))
            .then_error(field(FieldError::Empty { field: "body" }));
        given::<Ticket>([created()])
            .when(public(&"x".repeat(65_537)))
            .then_error(field(FieldError::TooLong {
                field: "body",
                max: limits::BODY_MAX,
            }));
        given::<Ticket>([created()])
            .when(C::AddPublicMessage {
                message_id: M2,
                direction: "inbound".into(),
                channel: "pigeon".into(),
                body: "hi".into(),
            })
            .then_error(field(FieldError::Unknown {
                field: "channel",
                value: "pigeon".into(),
                expected: Channel::WIRE_NAMES,
            }));
        given::<Ticket>([created()])
            .when(C::AddPublicMessage {
                message_id: M2,
                direction: "sideways".into(),
                channel: "email".into(),
                body: "hi".into(),
            })
            .then_error(field(FieldError::Unknown {
                field: "direction",
                value: "sideways".into(),
                expected: Direction::WIRE_NAMES,
            }));
        given::<Ticket>([created()])
            .when(C::AddPublicMessage {
                message_id: M1,
                direction: "inbound".into(),
                channel: "email".into(),
                body: "hi".into(),
            })
            .then_error(TicketError::DuplicateMessage { id: M1 });
    }

    #[test]
    fn internal_message_note_and_chat() {
        let state = given::<Ticket>([created()])
            .when(C::AddInternalMessage {
                message_id: M2,
                body: "ask finance".into(),
            })
            .then_events(vec![E::InternalMessageAdded {
                ticket_id: T,
                message_id: M2,
                pii: body_pii("ask finance"),
            }]);
        assert!(state.message_ids.contains(&M2));
        let state = given::<Ticket>([created()])
            .when(C::AddNote {
                note_id: M2,
                body: "call back".into(),
            })
            .then_events(vec![E::NoteAdded {
                ticket_id: T,
                note_id: M2,
                pii: body_pii("call back"),
            }]);
        assert!(!state.message_ids.contains(&M2), "notes are not messages");
        given::<Ticket>([created()])
            .when(C::AddNote {
                note_id: M2,
                body: "n".repeat(65_537),
            })
            .then_error(field(FieldError::TooLong {
                field: "body",
                max: limits::NOTE_MAX,
            }));
        let state = given::<Ticket>([created()])
            .when(C::AddChatMessage {
                message_id: M2,
                body: "hello".into(),
            })
            .then_events(vec![E::ChatMessageAdded {
                ticket_id: T,
                message_id: M2,
                pii: body_pii("hello"),
            }]);
        assert!(state.message_ids.contains(&M2));
    }

    #[test]
    fn file_attachment_validates_the_digest() {
        given::<Ticket>([created()])
            .when(C::AttachFile {
                file_id: M2,
                name: " invoice.pdf ".into(),
                content_type: "application/pdf".into(),
                size: 1024,
                sha256: SHA.to_uppercase(),
            })
            .then_events(vec![E::FileAttached {
                ticket_id: T,
                file_id: M2,
                content_type: "application/pdf".into(),
                size: 1024,
                sha256: SHA.into(),
                pii: Pii::new(
                    SUBJECT,
                    FilePii {
                        name: "invoice.pdf".into(),
                    },
                ),
            }]);
        let error = Ticket::default()
            .apply(&created())
            .decide(&C::AttachFile {
                file_id: M2,
                name: "a".into(),
                content_type: "text/plain".into(),
                size: 1,
                sha256: "abc".into(),
            })
            .unwrap_err();
        assert_eq!(
            (error.code(), error.field()),
            ("field_malformed", Some("sha256"))
        );
        let error = Ticket::default()
            .apply(&created())
            .decide(&C::AttachFile {
                file_id: M2,
                name: " ".into(),
                content_type: "text/plain".into(),
                size: 1,
                sha256: SHA.into(),
            })
            .unwrap_err();
        assert_eq!(error.field(), Some("name"));
    }

    #[test]
    fn transfer_carries_previous_assignee_and_department() {
        let state = given::<Ticket>([created()])
            .when(C::Transfer {
                to_agent: Some(agent(true)),
                to_department: Some(dept(true, true)),
            })
            .then_events(vec![E::Transferred {
                ticket_id: T,
                from_agent: None,
                to_agent: Some(AGENT),
                from_department: None,
                to_department: Some(DEPT),
            }]);
        assert_eq!(
            (state.assignee, state.department),
            (Some(AGENT), Some(DEPT))
        );
        // Naming only a department keeps the assignee.
        let other = DepartmentFact {
            id: OTHER,
            exists: true,
            active: true,
        };
        given::<Ticket>(vec![
            created(),
            E::Transferred {
                ticket_id: T,
                from_agent: None,
                to_agent: Some(AGENT),
                from_department: None,
                to_department: Some(DEPT),
            },
        ])
        .when(C::Transfer {
            to_agent: None,
            to_department: Some(other),
        })
        .then_events(vec![E::Transferred {
            ticket_id: T,
            from_agent: Some(AGENT),
            to_agent: Some(AGENT),
            from_department: Some(DEPT),
            to_department: Some(OTHER),
        }]);
    }

    #[test]
    fn transfer_refusals() {
        let when = |to_agent, to_department| {
            given::<Ticket>([created()]).when(C::Transfer {
                to_agent,
                to_department,
            })
        };
        when(None, None).then_error(TicketError::TransferTargetMissing);
        when(
            Some(AgentFact {
                id: AGENT,
                exists: false,
                active: false,
            }),
            None,
        )
        .then_error(TicketError::AgentNotFound { id: AGENT });
        when(Some(agent(false)), None).then_error(TicketError::AgentInactive { id: AGENT });
        when(None, Some(dept(false, true)))
            .then_error(TicketError::DepartmentNotFound { id: DEPT });
        when(None, Some(dept(true, false)))
            .then_error(TicketError::DepartmentInactive { id: DEPT });
        given::<Ticket>(vec![
            created(),
            E::Transferred {
                ticket_id: T,
                from_agent: None,
                to_agent: Some(AGENT),
                from_department: None,
                to_department: None,
            },
        ])
        .when(C::Transfer {
            to_agent: Some(agent(true)),
            to_department: None,
        })
        .then_error(TicketError::NoChange {
            field: "assignee and department",
        });
    }

    #[test]
    fn tags_are_normalised_and_noop_changes_refused() {
        let state = given::<Ticket>([created()])
            .when(C::ChangeTags {
                add: vec![" Billing ".into(), "VIP".into(), "billing".into()],
                remove: vec!["absent".into()],
            })
            .then_events(vec![E::TagsChanged {
                ticket_id: T,
                added: vec!["billing".into(), "vip".into()],
                removed: vec![],
            }]);
        assert_eq!(state.tags.iter().collect::<Vec<_>>(), ["billing", "vip"]);
        let tagged = vec![
            created(),
            E::TagsChanged {
                ticket_id: T,
                added: vec!["vip".into()],
                removed: vec![],
            },
        ];
        let state = given::<Ticket>(tagged.clone())
            .when(C::ChangeTags {
                add: vec!["Second  Line".into()],
                remove: vec!["VIP".into()],
            })
            .then_events(vec![E::TagsChanged {
                ticket_id: T,
                added: vec!["second-line".into()],
                removed: vec!["vip".into()],
            }]);
        assert_eq!(state.tags.iter().collect::<Vec<_>>(), ["second-line"]);
        given::<Ticket>(tagged.clone())
            .when(C::ChangeTags {
                add: vec!["vip".into()],
                remove: vec![],
            })
            .then_error(TicketError::NoChange { field: "tags" });
        given::<Ticket>(tagged)
            .when(C::ChangeTags {
                add: vec![],
                remove: vec!["absent".into()],
            })
            .then_error(TicketError::NoChange { field: "tags" });
        let full: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        given::<Ticket>(vec![
            created(),
            E::TagsChanged {
                ticket_id: T,
                added: full,
                removed: vec![],
            },
        ])
        .when(C::ChangeTags {
            add: vec!["one-more".into()],
            remove: vec![],
        })
        .then_error(field(FieldError::TooMany {
            field: "tags",
            max: limits::TAGS_MAX,
        }));
    }

    #[test]
    fn voice_message_and_call() {
        let state = given::<Ticket>([created()])
            .when(C::AddVoiceMessage {
                message_id: M2,
                duration_seconds: 42,
                file_sha256: Some(SHA.into()),
            })
            .then_events(vec![E::VoiceMessageAdded {
                ticket_id: T,
                message_id: M2,
                duration_seconds: 42,
                file_sha256: Some(SHA.into()),
            }]);
        assert!(state.message_ids.contains(&M2));
        given::<Ticket>([created()])
            .when(C::AddVoiceMessage {
                message_id: M2,
                duration_seconds: 42,
                file_sha256: Some("zz".into()),
            })
            .then_error(field(FieldError::Malformed {
                field: "file_sha256",
                problem: "must be 64 hexadecimal characters (a SHA-256 digest)",
            }));
        given::<Ticket>([created()])
            .when(C::LogCall {
                direction: "outbound".into(),
                duration_seconds: 90,
            })
            .then_events(vec![E::CallLogged {
                ticket_id: T,
                direction: Direction::Outbound,
                duration_seconds: 90,
            }]);
    }

    #[test]
    fn forward_needs_an_email_address() {
        given::<Ticket>([created()])
            .when(C::Forward {
                to: "finance@example.com".into(),
            })
            .then_events(vec![E::Forwarded {
                ticket_id: T,
                pii: Pii::new(
                    SUBJECT,
                    ForwardPii {
                        to: "finance@example.com".into(),
                    },
                ),
            }]);
        given::<Ticket>([created()])
            .when(C::Forward {
                to: "finance".into(),
            })
            .then_error(field(FieldError::Malformed {
                field: "to",
                problem: "must look like an email address",
            }));
    }

    #[test]
    fn rating_is_one_to_five_and_allowed_after_closing() {
        let ranked = E::Ranked {
            ticket_id: T,
            previous_rating: None,
            rating: 4,
            pii: Pii::new(
                SUBJECT,
                RatingPii {
                    comment: Some("quick".into()),
                },
            ),
        };
        let state = given::<Ticket>(closed())
            .when(C::Rate {
                rating: 4,
                comment: Some("quick".into()),
            })
            .then_events(vec![ranked.clone()]);
        assert_eq!(state.rating, Some(4));
        given::<Ticket>(vec![created(), ranked])
            .when(C::Rate {
                rating: 5,
                comment: Some("  ".into()),
            })
            .then_events(vec![E::Ranked {
                ticket_id: T,
                previous_rating: Some(4),
                rating: 5,
                pii: Pii::new(SUBJECT, RatingPii { comment: None }),
            }]);
        for rating in [0, 6, 255] {
            given::<Ticket>([created()])
                .when(C::Rate {
                    rating,
                    comment: None,
                })
                .then_error(TicketError::RatingOutOfRange { rating });
        }
        given::<Ticket>(merged())
            .when(C::Rate {
                rating: 3,
                comment: None,
            })
            .then_error(TicketError::Merged { into: OTHER });
    }

    #[test]
    fn split_moves_own_messages_and_leaves_one_behind() {
        let history = vec![created(), message(M2), message(M3)];
        let state = given::<Ticket>(history.clone())
            .when(C::Split {
                new_ticket_id: OTHER,
                message_ids: vec![M3, M2, M3],
            })
            .then_events(vec![E::Split {
                ticket_id: T,
                split_into: OTHER,
                message_ids: vec![M2, M3],
            }]);
        assert_eq!(state.message_ids.iter().collect::<Vec<_>>(), [&M1]);
        let split = |ids: Vec<Uuid>, into| {
            given::<Ticket>(history.clone()).when(C::Split {
                new_ticket_id: into,
                message_ids: ids,
            })
        };
        split(vec![], OTHER).then_error(field(FieldError::Empty {
            field: "message_ids",
        }));
        split(vec![AGENT], OTHER).then_error(TicketError::UnknownMessage { id: AGENT });
        split(vec![M1, M2, M3], OTHER).then_error(TicketError::SplitTakesAll);
        split(vec![M2], T).then_error(TicketError::SplitIntoSelf);
    }

    #[test]
    fn merge_closes_the_ticket_for_good() {
        let state = given::<Ticket>([created()])
            .when(C::Merge {
                into: OTHER,
                into_is_merged: false,
                into_is_closed: false,
            })
            .then_events(vec![E::Merged {
                ticket_id: T,
                into: OTHER,
                previous_status: Status::New,
            }]);
        assert_eq!(state.merged_into, Some(OTHER));
        assert_eq!(state.status, Status::Closed);
    }

    #[test]
    fn merge_refusals() {
        let merge = |into, into_is_merged, into_is_closed| C::Merge {
            into,
            into_is_merged,
            into_is_closed,
        };
        given::<Ticket>([created()])
            .when(merge(T, false, false))
            .then_error(TicketError::MergeIntoSelf);
        given::<Ticket>([created()])
            .when(merge(OTHER, true, false))
            .then_error(TicketError::MergeTargetMerged { into: OTHER });
        given::<Ticket>([created()])
            .when(merge(OTHER, false, true))
            .then_error(TicketError::MergeTargetClosed { into: OTHER });
        given::<Ticket>(merged())
            .when(merge(AGENT, false, false))
            .then_error(TicketError::Merged { into: OTHER });
    }

    #[test]
    fn priority_changes_carry_from_and_to() {
        let state = given::<Ticket>([created()])
            .when(C::ChangePriority { to: "high".into() })
            .then_events(vec![E::PriorityChanged {
                ticket_id: T,
                from: Priority::Normal,
                to: Priority::High,
            }]);
        assert_eq!(state.priority, Priority::High);
        given::<Ticket>([created()])
            .when(C::ChangePriority {
                to: "normal".into(),
            })
            .then_error(TicketError::NoChange { field: "priority" });
    }

    #[test]
    fn system_messages_are_allowed_on_merged_tickets() {
        given::<Ticket>(merged())
            .when(C::AddSystemMessage {
                text: "Merged into another ticket".into(),
            })
            .then_events(vec![E::SystemMessageAdded {
                ticket_id: T,
                text: "Merged into another ticket".into(),
            }]);
        given::<Ticket>([created()])
            .when(C::AddSystemMessage { text: "".into() })
            .then_error(field(FieldError::Empty { field: "text" }));
    }

    #[test]
    fn other_actions_are_validated() {
        given::<Ticket>([created()])
            .when(C::RecordOther {
                action: " crm.sync ".into(),
                description: "Synced to CRM".into(),
            })
            .then_events(vec![E::Other {
                ticket_id: T,
                action: "crm.sync".into(),
                description: "Synced to CRM".into(),
            }]);
        given::<Ticket>([created()])
            .when(C::RecordOther {
                action: "".into(),
                description: "d".into(),
            })
            .then_error(field(FieldError::Empty { field: "action" }));
        given::<Ticket>([created()])
            .when(C::RecordOther {
                action: "a".into(),
                description: "d".repeat(1_001),
            })
            .then_error(field(FieldError::TooLong {
                field: "description",
                max: limits::DESCRIPTION_MAX,
            }));
    }

    #[test]
    fn apply_is_total_on_odd_sequences() {
        // Events without a creation, or after a merge, must still fold.
        let odd = vec![
            message(M2),
            E::Split {
                ticket_id: T,
                split_into: OTHER,
                message_ids: vec![M2, M3],
            },
            status(Status::Closed, Status::Pending),
            created(),
            created(),
        ];
        let state = crate::fold(Ticket::default(), &odd);
        assert_eq!(state.id, Some(T));
        assert_eq!(
            state.status,
            Status::New,
            "a second creation resets the state"
        );
    }

    #[test]
    fn v1_ticket_created_is_upcast_to_normal_priority() {
        let mut payload = created().to_payload();
        payload.as_object_mut().unwrap().remove("priority");
        assert!(TicketEvent::decode("ticket.created", 2, &payload).is_err());
        assert_eq!(
            TicketEvent::decode("ticket.created", 1, &payload),
            Ok(created())
        );
    }

    #[test]
    fn payload_keeps_pii_under_one_key() {
        let payload = created().to_payload();
        assert_eq!(payload["pii"]["subject"], serde_json::json!(SUBJECT));
        assert_eq!(payload["pii"]["data"]["subject"], "Printer on fire");
        assert!(payload.get("type").is_none());
        let erased = crate::pii::erase(&payload);
        let decoded = TicketEvent::decode("ticket.created", 2, &erased).unwrap();
        let E::Created { pii, .. } = decoded else {
            panic!("wrong variant")
        };
        assert_eq!(pii.data.body, crate::pii::ERASED);
    }
}
