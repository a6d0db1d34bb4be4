//! Why a ticket command was refused.

use thiserror::Error;
use uuid::Uuid;

use super::Status;
use crate::fields::FieldError;

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
    /// A channel or direction on a message between agents.
    #[error("an internal message has no channel or direction")]
    NotPublic {
        /// `channel` or `direction`.
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
            TicketError::NotPublic { .. } => "not_public",
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
            TicketError::NoChange { field } | TicketError::NotPublic { field } => Some(field),
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
