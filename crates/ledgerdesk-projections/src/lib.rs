//! Read models derived from the event log. The log is the only source of
//! truth: every table here can be dropped and rebuilt from it.
//!
//! # Layout
//! - [`projection`]: the contract, the [`Projection`] trait and the
//!   [`Event`]s it is handed; [`builtin`] lists ledgerdesk's read models.
//! - [`runner`]: the [`Projector`], which reads the log in pages from each
//!   projection's checkpoint and applies a page and its new checkpoint in
//!   one transaction; background workers (one per projection, held by a
//!   PostgreSQL advisory lock across processes), `catch_up`, `status`,
//!   `rebuild` (shadow tables, atomic swap) and `build_as_of` (a past
//!   position into a separate SQLite file). It knows projections only
//!   through the trait.
//! - [`schema`]: tables as DDL templates shared by the migration, shadow
//!   rebuilds and as-of files.
//! - [`db`]: the store's database layer (re-exported), through which every
//!   read model writes its SQL once for both backends.
//! - [`personal`]: the single place personal data (`payload.pii`) is read.
//! - One module per read model with its queries: [`tickets`],
//!   [`conversation`], [`audit`], [`presence`], [`reports`], [`people`]
//!   (users and departments, and the names every other read model shows).
#![deny(missing_docs)]

pub mod audit;
pub mod conversation;
pub use ledgerdesk_store::db;
mod error;
pub mod people;
pub mod personal;
pub mod presence;
pub mod projection;
pub mod reports;
pub mod runner;
pub mod schema;
pub mod tickets;

/// Re-exported so custom [`Projection`]s can be written without adding the crate.
pub use async_trait::async_trait;
pub use error::ProjectionError;
pub use projection::{Event, Names, Projection};
pub use runner::{
    build_as_of, build_as_of_time, open_as_of, LagHistogram, ProjectionFailure, ProjectionHealth,
    ProjectionStatus, Projector, WorkerState, LAG_BUCKETS_MS,
};

use std::sync::Arc;

use serde::Serialize;

/// The read models of ledgerdesk, as [`Projector::new`] runs them.
pub fn builtin() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(tickets::TicketsProjection),
        Arc::new(conversation::ConversationProjection),
        Arc::new(audit::AuditProjection),
        Arc::new(presence::PresenceProjection),
        Arc::new(reports::ReportsProjection),
        Arc::new(people::PeopleProjection),
    ]
}

/// One page of a keyset-paginated query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Pass back as the filter's cursor for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Default and largest page sizes of the list queries.
pub const DEFAULT_LIMIT: usize = 50;
/// See [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 500;

pub(crate) fn clamp_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}
