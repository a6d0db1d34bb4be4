//! The state of a ticket, what can be asked of it, and the two functions
//! between them: `decide` (command → events or a refusal) and `apply`
//! (event → state).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::fields::{self, limits, FieldError};
use crate::{Aggregate, Pii};

/// What can be asked of a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketCommand {
    /// Open the ticket.
    Create(CreateTicket),
    /// Hand the ticket to an agent and/or a department.
    Transfer {
        /// The new assignee.
        to_agent: Option<AgentFact>,
        /// The new department.
        to_department: Option<DepartmentFact>,
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
    /// One of the plain actions, which need nothing from outside the
    /// ticket but their own fields.
    Act(TicketAction),
}

/// The plain ticket actions: one variant each, decided on the ticket's own
/// state alone. The HTTP API mounts one route per variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketAction {
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
        /// Channel wire name; the ticket's own channel when absent.
        channel: Option<String>,
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
    /// Change the priority.
    ChangePriority {
        /// Priority wire name.
        to: String,
    },
    /// Set the date the ticket should be solved by, or with `None` clear it.
    /// A date already past is accepted: the domain has no clock, and an
    /// overdue ticket is what the SLA reports look for.
    SetDueDate {
        /// The new due date.
        due_at: Option<DateTime<Utc>>,
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
    /// When it should be solved by.
    pub due_at: Option<DateTime<Utc>>,
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
    /// Decides a plain action.
    fn act(&self, action: &TicketAction) -> Result<Vec<TicketEvent>, TicketError> {
        use TicketAction as A;
        use TicketEvent as E;
        match action {
            A::ChangeStatus { to } => {
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
            A::AddPublicMessage {
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
                    channel: match channel {
                        Some(channel) => Channel::parse(channel)?,
                        None => self.channel.unwrap_or(Channel::Email),
                    },
                    pii: body(subject, "body", text, limits::BODY_MAX)?,
                }])
            }
            A::AddInternalMessage {
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
            A::AddNote {
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
            A::AttachFile {
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
            A::ChangeTags { add, remove } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.change_tags(ticket_id, add, remove)
            }
            A::AddVoiceMessage {
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
            A::LogCall {
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
            A::AddChatMessage {
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
            A::Forward { to } => {
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
            A::Rate { rating, comment } => {
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
            A::ChangePriority { to } => {
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
            A::SetDueDate { due_at } => {
                let (ticket_id, _) = self.open_for_content()?;
                if *due_at == self.due_at {
                    return Err(TicketError::NoChange { field: "due_at" });
                }
                Ok(vec![E::DueDateChanged {
                    ticket_id,
                    from: self.due_at,
                    to: *due_at,
                }])
            }
            A::AddSystemMessage { text } => {
                // The system reports on merged and closed tickets too.
                let (ticket_id, _) = self.existing()?;
                Ok(vec![E::SystemMessageAdded {
                    ticket_id,
                    text: fields::text("text", text, limits::SYSTEM_TEXT_MAX)?,
                }])
            }
            A::RecordOther {
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
            TicketEvent::DueDateChanged { to, .. } => self.due_at = *to,
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
            C::Transfer {
                to_agent,
                to_department,
            } => {
                let (ticket_id, _) = self.open_for_content()?;
                self.transfer(ticket_id, *to_agent, *to_department)
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
            C::Act(action) => self.act(action),
        }
    }
}

impl TicketAction {
    /// A message as a client asks for it: public by default (an `outbound`
    /// reply through the ticket's channel), or with `internal` a message
    /// between agents, which has neither a channel nor a direction.
    pub fn message(
        message_id: Uuid,
        body: String,
        internal: bool,
        channel: Option<String>,
        direction: Option<String>,
    ) -> Result<Self, TicketError> {
        if internal {
            let field = match (&channel, &direction) {
                (Some(_), _) => Some("channel"),
                (None, Some(_)) => Some("direction"),
                (None, None) => None,
            };
            return match field {
                Some(field) => Err(TicketError::NotPublic { field }),
                None => Ok(TicketAction::AddInternalMessage { message_id, body }),
            };
        }
        Ok(TicketAction::AddPublicMessage {
            message_id,
            direction: direction.unwrap_or_else(|| Direction::Outbound.as_str().to_string()),
            channel,
            body,
        })
    }

    /// The message, note or file the action adds, if it adds one.
    pub fn item(&self) -> Option<Uuid> {
        match self {
            TicketAction::AddPublicMessage { message_id, .. }
            | TicketAction::AddInternalMessage { message_id, .. }
            | TicketAction::AddVoiceMessage { message_id, .. }
            | TicketAction::AddChatMessage { message_id, .. } => Some(*message_id),
            TicketAction::AddNote { note_id, .. } => Some(*note_id),
            TicketAction::AttachFile { file_id, .. } => Some(*file_id),
            _ => None,
        }
    }
}

impl From<TicketAction> for TicketCommand {
    fn from(action: TicketAction) -> Self {
        TicketCommand::Act(action)
    }
}
