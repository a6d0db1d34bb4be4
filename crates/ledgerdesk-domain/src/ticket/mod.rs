//! The ticket aggregate: one customer request, its messages and its life
//! cycle. Stream `ticket-<ticket uuid>`.
//!
//! The ticket's data subject is its requester: every personal field of its
//! events (subject line, bodies, file names, comments, addresses) is wrapped
//! in a [`Pii`](crate::Pii) for the requester's subject id, which the state
//! remembers from `ticket.created`.
//!
//! # Layout
//!
//! - this file: the values a ticket is made of (channel, status and its
//!   [`STATUS_TRANSITIONS`], priority, direction, tags) and the facts a
//!   command brings from outside the aggregate.
//! - `aggregate`: the state [`Ticket`], what can be asked of it
//!   ([`TicketCommand`]: create, transfer, split and merge, which bring facts
//!   or touch two tickets, and the plain [`TicketAction`]s), and `decide` /
//!   `apply`.
//! - `events`: [`TicketEvent`], its personal data parts, the stored event
//!   types and their upcasts.
//! - `error`: [`TicketError`], the business refusals.
//! - `tests`: given/when/then scenarios of `decide` and `apply`.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::fields::{self, limits, string_enum, FieldError};

mod aggregate;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Ticket, TicketAction, TicketCommand};
pub use error::TicketError;
pub use events::{
    actions, BodyPii, CreatedPii, FilePii, ForwardPii, RatingPii, TicketEvent, EVENT_TYPES,
};

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
