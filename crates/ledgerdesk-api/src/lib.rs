//! The HTTP API of ledgerdesk, on actix-web.
//!
//! # Layout
//! - [`configuration`]: settings from defaults, `ledgerdesk.toml` and
//!   `LEDGERDESK__…` variables.
//! - [`telemetry`]: the tracing subscriber.
//! - [`startup`]: `Application::build` → `port()` → `run_until_stopped()`.
//! - [`state`]: what handlers share.
//! - [`routes`]: one module per resource.
#![deny(missing_docs)]

pub mod configuration;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use configuration::Settings;
pub use startup::Application;
