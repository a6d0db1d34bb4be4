//! The helpdesk's pure domain: commands, events and the aggregates that
//! decide between them. No I/O, no clock, no randomness: ids and facts from
//! outside an aggregate come in through commands, timestamps and actors live
//! in the event store's envelope.
//!
//! # Layout
//!
//! - [`Aggregate`] and [`DomainEvent`] (this file) are the contract with the
//!   store and the command handlers: `decide(&state, &command)` returns new
//!   events or a business refusal, `apply(state, &event)` folds one event.
//! - [`ticket`], [`user`], [`department`], [`settings`]: one module per
//!   aggregate with its state, command, event and error types.
//! - [`AnyEvent`] wraps the four event enums for readers of the whole log
//!   (projections, the audit view); [`AnyEvent::decode`] dispatches on the
//!   stream type.
//! - [`catalogue`] lists every audit action (code, label, summary) and
//!   [`audit`] turns any event into an [`Audit`] line with before/after
//!   [`Change`]s. A ticket event's action and audit line are declared with
//!   the event, in `ticket/events.rs`, so a new ticket event is one file.
//! - [`pii`]: personal data sits in [`Pii`] under the payload key `"pii"`, so
//!   it can be encrypted or erased per data subject.
//! - [`fields`]: limits and field validation shared by the aggregates.
//!
//! Stream ids are `<stream type>-<uuid>` ([`stream_id`]); settings are one
//! account-wide stream, [`settings::STREAM_ID`].
#![deny(missing_docs)]

pub mod audit;
pub mod catalogue;
mod codec;
pub mod department;
pub mod fields;
pub mod pii;
pub mod settings;
pub mod ticket;
pub mod user;

#[cfg(test)]
mod testing;

pub use audit::{Audit, Change};
pub use department::{Department, DepartmentCommand, DepartmentError, DepartmentEvent};
pub use fields::FieldError;
pub use pii::Pii;
pub use settings::{Settings, SettingsCommand, SettingsError, SettingsEvent};
pub use ticket::{Ticket, TicketCommand, TicketError, TicketEvent};
pub use user::{User, UserCommand, UserError, UserEvent};

use uuid::Uuid;

/// An event as the store keeps it: a type, a schema version and a JSON
/// object payload.
pub trait DomainEvent: Sized + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The event type, e.g. `"ticket.created"`.
    fn event_type(&self) -> &'static str;
    /// The schema version written for this event type today.
    fn schema_version(&self) -> u32;
    /// The payload: a JSON object, personal data under `"pii"`.
    fn to_payload(&self) -> serde_json::Value;
    /// Decodes a stored payload, upcasting older schema versions.
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, DecodeError>;
}

/// A consistency boundary: state folded from its own stream's events.
pub trait Aggregate: Default + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The events of this aggregate's streams.
    type Event: DomainEvent;
    /// What callers ask of it.
    type Command: std::fmt::Debug + Send + Sync;
    /// Business refusals; never technical failures.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The stream type: the prefix of [`stream_id`].
    const STREAM_TYPE: &'static str;
    /// Folds one event. Deterministic and total: never panics, whatever the
    /// sequence, because replay must always succeed.
    fn apply(self, event: &Self::Event) -> Self;
    /// Decides what a command means in this state: the events to append
    /// (never empty) or a refusal (nothing is appended).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// Folds events into a state: what the store does when loading a stream.
pub fn fold<'a, A: Aggregate>(state: A, events: impl IntoIterator<Item = &'a A::Event>) -> A {
    events.into_iter().fold(state, A::apply)
}

/// The stream id of one aggregate instance: `"<stream_type>-<uuid>"`, e.g.
/// `"ticket-0190c8a4-…"`. Settings use the single stream
/// [`settings::STREAM_ID`] (`"settings-account"`) instead.
pub fn stream_id(stream_type: &str, id: Uuid) -> String {
    format!("{stream_type}-{id}")
}

/// A stored event that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version}: {reason}")]
pub struct DecodeError {
    /// The stored event type.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// What failed; serde's reasons name the field (``missing field `x` ``).
    pub reason: String,
}

/// Any event of any aggregate, for readers of the whole log.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyEvent {
    /// A ticket stream event.
    Ticket(TicketEvent),
    /// A user stream event.
    User(UserEvent),
    /// A department stream event.
    Department(DepartmentEvent),
    /// The settings stream's event.
    Settings(SettingsEvent),
}

impl AnyEvent {
    /// Decodes a stored event of the stream type `stream_type`
    /// (`"ticket"`, `"user"`, `"department"` or `"settings"`).
    pub fn decode(
        stream_type: &str,
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        match stream_type {
            Ticket::STREAM_TYPE => {
                TicketEvent::decode(event_type, schema_version, payload).map(AnyEvent::Ticket)
            }
            User::STREAM_TYPE => {
                UserEvent::decode(event_type, schema_version, payload).map(AnyEvent::User)
            }
            Department::STREAM_TYPE => DepartmentEvent::decode(event_type, schema_version, payload)
                .map(AnyEvent::Department),
            Settings::STREAM_TYPE => {
                SettingsEvent::decode(event_type, schema_version, payload).map(AnyEvent::Settings)
            }
            other => Err(DecodeError {
                event_type: event_type.to_string(),
                schema_version,
                reason: format!("unknown stream type `{other}`"),
            }),
        }
    }

    /// The stream type the event belongs to.
    pub fn stream_type(&self) -> &'static str {
        match self {
            AnyEvent::Ticket(_) => Ticket::STREAM_TYPE,
            AnyEvent::User(_) => User::STREAM_TYPE,
            AnyEvent::Department(_) => Department::STREAM_TYPE,
            AnyEvent::Settings(_) => Settings::STREAM_TYPE,
        }
    }

    /// See [`DomainEvent::event_type`].
    pub fn event_type(&self) -> &'static str {
        match self {
            AnyEvent::Ticket(e) => e.event_type(),
            AnyEvent::User(e) => e.event_type(),
            AnyEvent::Department(e) => e.event_type(),
            AnyEvent::Settings(e) => e.event_type(),
        }
    }

    /// See [`DomainEvent::schema_version`].
    pub fn schema_version(&self) -> u32 {
        match self {
            AnyEvent::Ticket(e) => e.schema_version(),
            AnyEvent::User(e) => e.schema_version(),
            AnyEvent::Department(e) => e.schema_version(),
            AnyEvent::Settings(e) => e.schema_version(),
        }
    }

    /// See [`DomainEvent::to_payload`].
    pub fn to_payload(&self) -> serde_json::Value {
        match self {
            AnyEvent::Ticket(e) => e.to_payload(),
            AnyEvent::User(e) => e.to_payload(),
            AnyEvent::Department(e) => e.to_payload(),
            AnyEvent::Settings(e) => e.to_payload(),
        }
    }
}

impl From<TicketEvent> for AnyEvent {
    fn from(event: TicketEvent) -> Self {
        AnyEvent::Ticket(event)
    }
}

impl From<UserEvent> for AnyEvent {
    fn from(event: UserEvent) -> Self {
        AnyEvent::User(event)
    }
}

impl From<DepartmentEvent> for AnyEvent {
    fn from(event: DepartmentEvent) -> Self {
        AnyEvent::Department(event)
    }
}

impl From<SettingsEvent> for AnyEvent {
    fn from(event: SettingsEvent) -> Self {
        AnyEvent::Settings(event)
    }
}

/// Every event type of every aggregate with its current schema version.
pub fn event_types() -> impl Iterator<Item = (&'static str, u32)> {
    ticket::EVENT_TYPES
        .iter()
        .chain(user::EVENT_TYPES)
        .chain(department::EVENT_TYPES)
        .chain(settings::EVENT_TYPES)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_type_dash_uuid() {
        let id = Uuid::from_u128(1);
        assert_eq!(
            stream_id(Ticket::STREAM_TYPE, id),
            "ticket-00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(settings::STREAM_ID, "settings-account");
    }

    #[test]
    fn unknown_stream_type_event_type_and_version_are_refused() {
        let payload = serde_json::json!({});
        let err = AnyEvent::decode("invoice", "invoice.paid", 1, &payload).unwrap_err();
        assert!(err.reason.contains("unknown stream type"), "{err}");
        let err = AnyEvent::decode("ticket", "ticket.exploded", 1, &payload).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode ticket.exploded v1: unknown event type"
        );
        let err = AnyEvent::decode("user", "user.logged_in", 99, &payload).unwrap_err();
        assert!(err.reason.contains("unsupported schema version"), "{err}");
        let err =
            AnyEvent::decode("user", "user.logged_in", 1, &serde_json::json!([1])).unwrap_err();
        assert!(err.reason.contains("not a JSON object"), "{err}");
    }

    #[test]
    fn decode_names_the_missing_field() {
        let err =
            AnyEvent::decode("user", "user.logged_in", 1, &serde_json::json!({})).unwrap_err();
        assert!(err.reason.contains("user_id"), "{err}");
    }

    #[test]
    fn event_types_are_unique_and_prefixed_by_their_stream_type() {
        let mut seen = std::collections::BTreeSet::new();
        for (event_type, version) in event_types() {
            assert!(seen.insert(event_type), "duplicate {event_type}");
            assert!(version >= 1);
            let prefix = event_type.split('.').next().unwrap();
            assert!(
                ["ticket", "user", "department", "settings"].contains(&prefix),
                "{event_type}"
            );
        }
    }
}
