//! What every handler shares.

use std::path::PathBuf;
use std::sync::Arc;

use ledgerdesk_app::{Helpdesk, Vault};
use ledgerdesk_projections::Projector;
use ledgerdesk_store::{EventStore, PublicKey};

use crate::auth::{LoginLimiter, Passwords, SessionCache, Verifier};
use crate::db::Db;
use crate::metrics::Metrics;

/// Shared application state (one per process, behind `web::Data`).
#[derive(Clone)]
pub struct AppState {
    /// The event log, through the vault (personal data opened).
    pub store: Arc<dyn EventStore>,
    /// The per-subject keys behind `store` (erasure destroys one).
    pub vault: Arc<Vault>,
    /// The event log exactly as stored and hashed (personal data sealed):
    /// what the verifiable-history endpoints serve and check.
    pub raw_store: Arc<dyn EventStore>,
    /// The checkpoint key's public half; the seed stays with the signer.
    pub public_key: PublicKey,
    /// The read models.
    pub projector: Projector,
    /// `projections.max_wait_ms`: how long `min_position` may wait.
    pub projection_wait: std::time::Duration,
    /// The command side: one per process, cloned.
    pub helpdesk: Helpdesk,
    /// The API's own tables.
    pub db: Db,
    /// Password hashing.
    pub passwords: Passwords,
    /// Recently checked sessions.
    pub sessions: Arc<SessionCache>,
    /// Failed-login counting.
    pub limiter: Arc<LoginLimiter>,
    /// Password verification, a bounded number at a time.
    pub verifier: Verifier,
    /// New audit entries for the live streams, and their count.
    pub audit_feed: Arc<crate::audit_feed::AuditFeed>,
    /// Request and append counters.
    pub metrics: Arc<Metrics>,
    /// `auth.token_ttl_secs`.
    pub token_ttl_secs: u64,
    /// `http.max_json_bytes`.
    pub max_json_bytes: usize,
    /// `files.dir`.
    pub files_dir: PathBuf,
    /// `files.max_bytes`.
    pub max_file_bytes: u64,
    /// Held while an upload is checked, recorded and kept, and while an
    /// erasure destroys files and the key: in this process an erasure and
    /// an upload for the same subject, or of the same bytes, never
    /// interleave (an upload that read its body while the subject was
    /// being erased is refused, not kept).
    pub files_lock: Arc<tokio::sync::Mutex<()>>,
    /// How far each rebuild started in this process has come.
    pub rebuilds: Arc<crate::rebuilds::Rebuilds>,
}
