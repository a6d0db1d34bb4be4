//! The application layer: one request becomes one command, decided by a
//! domain aggregate and appended to the event store.
//!
//! # Layout
//!
//! - [`handler`]: the generic command handler. [`load`] reads a stream and
//!   folds it; [`execute`] loads, builds the command from the state, decides
//!   and appends with the version it loaded, retrying on a version conflict
//!   at most [`MAX_ATTEMPTS`] times.
//! - [`Helpdesk`] ([`helpdesk`], with the ticket commands in `tickets` and the
//!   user, department and settings commands in `staff`): one entry,
//!   [`Helpdesk::act`], for the plain ticket actions (a domain
//!   [`TicketAction`](ledgerdesk_domain::ticket::TicketAction)), and one
//!   method for each command that needs more than one stream's state
//!   (create, transfer, merge, split, users, departments, settings). It
//!   checks the acting user, looks up the facts that cross
//!   aggregates (transfer targets, merge targets, departments) and writes the
//!   commands that touch two streams (merge, split) atomically. Within one
//!   process, commands on one stream queue behind each other (`locks`), so
//!   version conflicts only come from other processes.
//! - [`input`]: what callers hand to the other [`Helpdesk`] methods;
//!   [`Actor`] ([`actor`]) is who calls, and
//!   becomes the store's [`Metadata`](ledgerdesk_store::Metadata).
//! - [`history`]: a stream as people read it (label, description,
//!   before/after per event), for ticket history and `ledgerdesk replay`.
//! - [`accounts`]: creating and changing users together with their login
//!   account (email reservation, undo on refusal, role and activity for
//!   sessions), for the API and the bootstrap alike.
//! - [`privacy`]: erasing a data subject (the event, their files, their key,
//!   in that order).
//! - [`subjects`]: data subjects, the random ids that personal data in the log
//!   is filed under, mapped from emails in a table outside the log.
//! - [`error`]: [`AppError`], keeping business refusals apart from failures,
//!   each variant with its HTTP meaning.
#![deny(missing_docs)]

pub mod accounts;
pub mod actor;
mod cache;
pub mod error;
pub mod handler;
pub mod helpdesk;
pub mod history;
pub mod input;
mod locks;
pub mod privacy;
pub mod seed;
mod staff;
pub mod subjects;
mod tickets;
pub mod vault;

pub use actor::Actor;
pub use error::{AppError, DomainRefusal};
pub use handler::{execute, load, load_range, Committed, Loaded, MAX_ATTEMPTS};
pub use helpdesk::{Helpdesk, Outcome, PairOutcome};
pub use history::HistoryEntry;
pub use ledgerdesk_store::ActorKind;
pub use vault::{SealedStore, SubjectStatus, Vault};
