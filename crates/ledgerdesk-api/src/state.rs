//! What every handler shares.

use std::sync::Arc;

use ledgerdesk_store::EventStore;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// The event log.
    pub store: Arc<dyn EventStore>,
}
