use ledgerdesk_store::StoreError;

/// Why a projection or a read-model query failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read-model database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// No projection has this name.
    #[error("unknown projection `{0}`")]
    UnknownProjection(String),
    /// A pagination cursor that this crate did not produce.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A file could not be written.
    #[error("{0}")]
    Io(String),
}

impl ProjectionError {
    /// Whether the database was out of reach or too busy (see
    /// `ledgerdesk_store::is_unavailable`), rather than unable to take this
    /// event: a worker waits that out instead of counting it as a failure.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ProjectionError::Store(e) => e.is_unavailable(),
            ProjectionError::Database(e) => ledgerdesk_store::is_unavailable(e),
            _ => false,
        }
    }
}
