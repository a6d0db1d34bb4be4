//! The HTTP API of ledgerdesk, on actix-web.
//!
//! # Layout
//! - [`configuration`]: settings from defaults, `ledgerdesk.toml` and
//!   `LEDGERDESK__…` variables.
//! - [`telemetry`]: the tracing subscriber.
//! - [`startup`]: `Application::build` → `port()` → `run_until_stopped()`.
//! - [`state`]: what handlers share; [`audit_feed`]: the live audit
//!   stream's rows and slots, which it holds.
//! - [`middleware`]: request id + metrics, then the [`permissions`] table
//!   (token → [`auth::Caller`], role check), then `Idempotency-Key` replay.
//! - [`consistency`]: `min_position`, a read waiting for its own write.
//! - [`routes`]: one module per resource; handlers turn a request into one
//!   `ledgerdesk_app::Helpdesk` call with an `Actor` built by [`extract`].
//! - [`paging`]: the one paging style of every list (keyset cursor,
//!   `limit`, `next_cursor` and `Link: rel="next"`).
//! - [`error`]: [`ApiError`], the one error type, sent as problem+json.
//! - [`db`]: the API's own tables (credentials, sessions, idempotency);
//!   [`bootstrap`] creates the first accounts through the app on first
//!   start.
//! - [`openapi`]: the OpenAPI 3.1 document; [`metrics`]: Prometheus text.
//! - [`console`]: the pages for people (audit log, tickets, integrity,
//!   operations), signed in by cookie; mounted by [`routes::configure`]
//!   with their own rows.
#![deny(missing_docs)]

pub mod access;
pub mod audit_feed;
pub mod auth;
pub mod bootstrap;
pub mod caller;
pub mod configuration;
pub mod consistency;
pub mod console;
pub mod db;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod paging;
pub mod permissions;
pub mod rebuilds;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use error::ApiError;

pub use configuration::Settings;
pub use startup::Application;
