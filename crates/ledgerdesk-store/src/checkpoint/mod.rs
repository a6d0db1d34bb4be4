//! Signed tree heads ("checkpoints"), the key that signs them, and the full
//! audit walk.
//!
//! A checkpoint commits to the first `tree_size` events through the Merkle
//! root, signed with Ed25519 over a fixed text ([`signed_text`]). Copies kept
//! outside the database (by auditors, in backups, in e-mail) make a later
//! rewrite of history detectable even by someone who recomputes every chain
//! hash: they cannot re-sign the old checkpoints. The `checkpoints` table is
//! append-only, like `events`.
//!
//! Its parts, along the seams of the work: [`key`] (the signing key and the
//! public key auditors trust), [`signed`] (signing, storing and reading
//! checkpoints, and the background [`Checkpointer`]) and [`audit`] (the
//! full walk, [`verify_all`]).

mod audit;
mod key;
mod signed;

pub use audit::{verify_all, AuditReport, BadCheckpoint, CheckpointProblem};
pub use key::{CheckpointKey, PublicKey, PublicKeyInfo};
pub use signed::{
    checkpoint_at_or_before, checkpoint_covering, checkpoint_now, checkpoints, latest_checkpoint,
    signed_text, Checkpoint, CheckpointRange, Checkpointer, SignatureError, CHECKPOINT_LOCK_KEY,
};

/// The first line of every signed checkpoint text.
pub const CHECKPOINT_FORMAT: &str = "ledgerdesk-checkpoint-v1";
