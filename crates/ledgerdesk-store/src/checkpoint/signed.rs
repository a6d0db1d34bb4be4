//! Signing, storing and reading checkpoints; the background [`Checkpointer`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use super::key::{CheckpointKey, PublicKey};
use super::CHECKPOINT_FORMAT;
use crate::db::{self, Arg, DbPool, DbRow, Pool, Record};
use crate::merkle::{self, AuditError, MerkleHash};
use crate::store::EventStore;

// Signing lives beside the checkpoint it makes, so the key knows nothing of
// checkpoints.
impl CheckpointKey {
    /// Sign a checkpoint of `tree_size` with `root_hash` at `signed_at`
    /// (truncated to microseconds).
    pub fn sign(
        &self,
        tree_size: u64,
        root_hash: MerkleHash,
        signed_at: DateTime<Utc>,
    ) -> Checkpoint {
        let signed_at = truncate_micros(signed_at);
        let text = signed_text(tree_size, &root_hash, signed_at);
        let signature = self.key.sign(text.as_bytes());
        Checkpoint {
            seq: 0,
            tree_size,
            root_hash,
            signed_at,
            key_id: self.public_key().key_id(),
            signature: B64.encode(signature.to_bytes()),
        }
    }
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its row number (1, 2, 3 …; 0 before it is stored). Not signed.
    pub seq: u64,
    /// How many events the tree holds.
    pub tree_size: u64,
    /// MTH of the first `tree_size` events.
    pub root_hash: MerkleHash,
    /// When it was signed (UTC, microseconds).
    pub signed_at: DateTime<Utc>,
    /// The signing key's id ([`PublicKey::key_id`]).
    pub key_id: String,
    /// Ed25519 signature of [`Checkpoint::signed_text`], standard base64.
    pub signature: String,
}

/// Why a checkpoint's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// It names another key.
    #[error("checkpoint is signed by key {found}, not by the trusted key {expected}")]
    WrongKey {
        /// The trusted key's id.
        expected: String,
        /// The id the checkpoint names.
        found: String,
    },
    /// The signature is not valid base64 of 64 bytes.
    #[error("checkpoint signature is malformed")]
    Malformed,
    /// The signature does not verify over the checkpoint's text.
    #[error("checkpoint signature does not verify")]
    Invalid,
}

impl Checkpoint {
    /// The exact text that is signed.
    pub fn signed_text(&self) -> String {
        signed_text(self.tree_size, &self.root_hash, self.signed_at)
    }

    /// Check the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if self.key_id != key.key_id() {
            return Err(SignatureError::WrongKey {
                expected: key.key_id(),
                found: self.key_id.clone(),
            });
        }
        let bytes = B64
            .decode(&self.signature)
            .map_err(|_| SignatureError::Malformed)?;
        let sig =
            ed25519_dalek::Signature::from_slice(&bytes).map_err(|_| SignatureError::Malformed)?;
        key.0
            .verify(self.signed_text().as_bytes(), &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// `ledgerdesk-checkpoint-v1\n<tree_size>\n<root hex>\n<signed_at>\n`, the
/// time as RFC 3339 in UTC with microseconds (`2025-01-02T03:04:05.123456Z`).
pub fn signed_text(tree_size: u64, root_hash: &MerkleHash, signed_at: DateTime<Utc>) -> String {
    format!(
        "{CHECKPOINT_FORMAT}\n{tree_size}\n{root_hash}\n{}\n",
        signed_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

const CHECKPOINT_COLUMNS: &str = "seq, tree_size, root_hash, signed_at, key_id, signature";

/// A checkpoint row as stored; checked by [`decode_checkpoint`].
struct CheckpointRow {
    seq: i64,
    tree_size: i64,
    root: String,
    signed_at: i64,
    key_id: String,
    signature: String,
}

impl Record for CheckpointRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(CheckpointRow {
            seq: row.int0("seq")?,
            tree_size: row.int0("tree_size")?,
            root: row.text("root_hash")?.unwrap_or_default(),
            signed_at: row.int0("signed_at")?,
            key_id: row.text("key_id")?.unwrap_or_default(),
            signature: row.text("signature")?.unwrap_or_default(),
        })
    }
}

fn decode_checkpoint(row: CheckpointRow) -> Result<Checkpoint, AuditError> {
    let seq = row.seq;
    let corrupt =
        |reason: &str| AuditError::Corrupt(format!("checkpoint {seq} is unreadable: {reason}"));
    Ok(Checkpoint {
        seq: seq.max(0) as u64,
        tree_size: u64::try_from(row.tree_size).map_err(|_| corrupt("negative tree size"))?,
        root_hash: MerkleHash::from_hex(&row.root).map_err(|_| corrupt("root hash"))?,
        signed_at: DateTime::from_timestamp_micros(row.signed_at)
            .ok_or_else(|| corrupt("signed_at"))?,
        key_id: row.key_id,
        signature: row.signature,
    })
}

async fn query_checkpoints(
    pool: &DbPool,
    filter: &str,
    binds: &[i64],
) -> Result<Vec<Checkpoint>, AuditError> {
    let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints {filter}");
    let args = binds.iter().map(|b| Arg::from(*b)).collect();
    db::fetch::<CheckpointRow>(pool, &sql, args)
        .await?
        .into_iter()
        .map(decode_checkpoint)
        .collect()
}

/// Sync the tree with the log, then sign and store a checkpoint of it, even
/// when nothing was appended since the last one. Waits for a checkpointer
/// of another process that is signing (see [`Checkpointer`]).
pub async fn checkpoint_now(
    store: &dyn EventStore,
    key: &CheckpointKey,
) -> Result<Checkpoint, AuditError> {
    let lock = SignLock::take(&store.db(), false).await?;
    let signed = sign(store, key).await;
    lock.release().await;
    signed
}

/// The `seq` a checkpoint insert returns.
struct Seq(i64);

impl Record for Seq {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Seq(row.int0("seq")?))
    }
}

/// How often [`sign`] re-syncs when a larger tree was signed meanwhile.
const SIGN_ATTEMPTS: usize = 5;

/// Sign the log as it is now; the caller holds the [`SignLock`].
async fn sign(store: &dyn EventStore, key: &CheckpointKey) -> Result<Checkpoint, AuditError> {
    // Sizes never shrink along `seq` (the audit would report TreeShrank for
    // ever, and the table is append-only). The lock orders signers on
    // PostgreSQL; the guard in the insert also orders them on SQLite,
    // where a CLI (`ledgerdesk export`) may sign beside the server. A
    // refused insert means a larger tree was signed meanwhile: sync again.
    let pool = store.db();
    let sql = "INSERT INTO checkpoints (tree_size, root_hash, signed_at, key_id, signature) \
               SELECT $1, $2, $3, $4, $5 \
               WHERE NOT EXISTS (SELECT 1 FROM checkpoints WHERE tree_size > $1) \
               RETURNING seq";
    for _ in 0..SIGN_ATTEMPTS {
        let size = merkle::sync_leaves(store).await?;
        let root = merkle::tree_root(store, size).await?;
        let mut cp = key.sign(size, root, Utc::now());
        let args = vec![
            Arg::from(crate::sql::clamp(cp.tree_size)),
            Arg::from(cp.root_hash.to_hex()),
            Arg::from(cp.signed_at.timestamp_micros()),
            Arg::from(cp.key_id.as_str()),
            Arg::from(cp.signature.as_str()),
        ];
        let seq = db::fetch_one::<Seq>(&pool, sql, args).await?.map(|s| s.0);
        if let Some(seq) = seq {
            cp.seq = seq.max(0) as u64;
            tracing::debug!(tree_size = cp.tree_size, root = %cp.root_hash, "signed a checkpoint");
            return Ok(cp);
        }
    }
    Err(AuditError::Busy)
}

/// The most recent checkpoint.
pub async fn latest_checkpoint(store: &dyn EventStore) -> Result<Option<Checkpoint>, AuditError> {
    Ok(
        query_checkpoints(&store.db(), "ORDER BY seq DESC LIMIT 1", &[])
            .await?
            .pop(),
    )
}

/// The first checkpoint whose tree holds position `position`
/// (`tree_size >= position`).
pub async fn checkpoint_covering(
    store: &dyn EventStore,
    position: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    Ok(query_checkpoints(
        &store.db(),
        "WHERE tree_size >= $1 ORDER BY seq LIMIT 1",
        &[crate::sql::clamp(position)],
    )
    .await?
    .pop())
}

/// The last checkpoint of a tree of at most `tree_size` events.
pub async fn checkpoint_at_or_before(
    store: &dyn EventStore,
    tree_size: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    Ok(query_checkpoints(
        &store.db(),
        "WHERE tree_size <= $1 ORDER BY seq DESC LIMIT 1",
        &[crate::sql::clamp(tree_size)],
    )
    .await?
    .pop())
}

/// Which checkpoints to list; every bound is optional and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRange {
    /// Only checkpoints after this `seq` (for paging).
    pub after_seq: u64,
    /// Signed at or after.
    pub since: Option<DateTime<Utc>>,
    /// Signed at or before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: usize,
}

impl Default for CheckpointRange {
    fn default() -> Self {
        Self {
            after_seq: 0,
            since: None,
            until: None,
            limit: 1_000,
        }
    }
}

/// Checkpoints in signing order.
pub async fn checkpoints(
    store: &dyn EventStore,
    range: CheckpointRange,
) -> Result<Vec<Checkpoint>, AuditError> {
    query_checkpoints(
        &store.db(),
        "WHERE seq > $1 AND signed_at >= $2 AND signed_at <= $3 ORDER BY seq LIMIT $4",
        &[
            crate::sql::clamp(range.after_seq),
            range.since.map_or(i64::MIN, |t| t.timestamp_micros()),
            range.until.map_or(i64::MAX, |t| t.timestamp_micros()),
            range.limit as i64,
        ],
    )
    .await
}

/// Signs checkpoints in the background: after every `every_events` new
/// events and at least every `every` (also when nothing was appended, so a
/// quiet hour is provably quiet). Zero disables either trigger.
///
/// Each API process runs one. What is due is judged against the latest
/// checkpoint in the database, whoever signed it, and on PostgreSQL the
/// judging and signing hold an advisory lock: several servers on one
/// database sign once per trigger, not once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointer {
    /// Sign once the log grew by this many events (0: never by count).
    pub every_events: u64,
    /// Sign at least this often (zero: never by time).
    pub every: Duration,
}

/// The advisory lock checkpointers hold while they judge and sign
/// ("ldckpt" in ASCII).
pub const CHECKPOINT_LOCK_KEY: i64 = 0x6c64_636b_7074;

impl Checkpointer {
    /// When the next checkpoint is due by time after `latest` (None: never).
    fn due_at(&self, latest: Option<&Checkpoint>) -> Option<DateTime<Utc>> {
        if self.every.is_zero() {
            return None;
        }
        let last_at = latest.map_or(DateTime::<Utc>::MIN_UTC, |c| c.signed_at);
        chrono::Duration::from_std(self.every)
            .ok()
            .and_then(|d| last_at.checked_add_signed(d))
    }

    /// Whether a checkpoint is due with the log at `head`.
    fn due(&self, latest: Option<&Checkpoint>, head: u64, now: DateTime<Utc>) -> bool {
        let last_size = latest.map_or(0, |c| c.tree_size);
        let by_count = self.every_events > 0 && head >= last_size.saturating_add(self.every_events);
        by_count || self.due_at(latest).is_some_and(|d| d <= now)
    }

    /// Sign a checkpoint if one is due now; the latest checkpoint after it
    /// (the new one, or the one that made it not due).
    ///
    /// [`AuditError::Busy`] when another process holds the lock: it is
    /// signing, and waiting for it could hold up this one's shutdown.
    pub async fn sign_if_due(
        &self,
        store: &dyn EventStore,
        key: &CheckpointKey,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let lock = SignLock::take(&store.db(), true).await?;
        let judged = async {
            let latest = latest_checkpoint(store).await?;
            let head = store.head().await?.position;
            if self.due(latest.as_ref(), head, Utc::now()) {
                sign(store, key).await.map(Some)
            } else {
                Ok(latest)
            }
        }
        .await;
        lock.release().await;
        judged
    }

    /// Run until `shutdown` completes. Errors are logged and retried; the
    /// task itself never fails.
    pub async fn run(
        self,
        store: Arc<dyn EventStore>,
        key: Arc<CheckpointKey>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut head = store.watch_head();
        let mut head_open = true;
        // The latest checkpoint as last read; None until read. Another
        // process's newer one only makes this look due early: the locked
        // re-judging in `sign_if_due` then reads it and signs nothing.
        let mut known: Option<Option<Checkpoint>> = None;
        let mut failures = 0u32;
        loop {
            if failures > 0 {
                let backoff = Duration::from_millis(500 << failures.min(4));
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            let latest = match known.take() {
                Some(latest) => latest,
                None => match latest_checkpoint(store.as_ref()).await {
                    Ok(latest) => latest,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the latest checkpoint");
                        failures += 1;
                        continue;
                    }
                },
            };
            // Judged here without the lock first: the head moves with every
            // commit, and most moves trigger nothing.
            let grown = *head.borrow_and_update();
            let latest = if self.due(latest.as_ref(), grown, Utc::now()) {
                match self.sign_if_due(store.as_ref(), &key).await {
                    Ok(latest) => latest,
                    Err(AuditError::Busy) => {
                        // Another server is signing; look again after a
                        // back-off, when its checkpoint is in.
                        failures = 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot sign a checkpoint");
                        failures += 1;
                        continue;
                    }
                }
            } else {
                latest
            };
            failures = 0;
            let wait = self
                .due_at(latest.as_ref())
                .map(|d| (d - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600));
            known = Some(latest);
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                changed = head.changed(), if head_open => {
                    if changed.is_err() {
                        head_open = false;
                    }
                }
            }
        }
    }
}

/// Held while a checkpoint is judged and signed. PostgreSQL: a session
/// advisory lock on a connection of its own (not the pool's, which a small
/// `max_connections` could exhaust while the signing reads through it);
/// closing that connection, also by an error, releases the lock. SQLite:
/// nothing; the guarded insert in [`sign`] keeps sizes in order.
enum SignLock {
    Postgres(sqlx::PgConnection),
    None,
}

impl SignLock {
    /// With `try_only`, [`AuditError::Busy`] instead of waiting when
    /// another session holds the lock.
    async fn take(pool: &DbPool, try_only: bool) -> Result<Self, AuditError> {
        use sqlx::ConnectOptions as _;
        Ok(match &pool.0 {
            Pool::Postgres(p) => {
                let mut conn = p.connect_options().connect().await?;
                if try_only {
                    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(CHECKPOINT_LOCK_KEY)
                        .fetch_one(&mut conn)
                        .await?;
                    if !got {
                        use sqlx::Connection as _;
                        let _ = conn.close().await;
                        return Err(AuditError::Busy);
                    }
                } else {
                    sqlx::query("SELECT pg_advisory_lock($1)")
                        .bind(CHECKPOINT_LOCK_KEY)
                        .execute(&mut conn)
                        .await?;
                }
                SignLock::Postgres(conn)
            }
            Pool::Sqlite(_) => SignLock::None,
        })
    }

    async fn release(self) {
        if let SignLock::Postgres(conn) = self {
            use sqlx::Connection as _;
            // Closing ends the session, which releases its advisory locks.
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_text_is_fixed() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let root = merkle::empty_root();
        assert_eq!(
            signed_text(3, &root, t),
            format!("ledgerdesk-checkpoint-v1\n3\n{root}\n2023-11-14T22:13:20.123456Z\n")
        );
    }

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let key = CheckpointKey::from_seed([7; 32]);
        let pk = key.public_key();
        let cp = key.sign(10, merkle::leaf_hash(b"x"), Utc::now());
        cp.verify(&pk).unwrap();
        let json = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        back.verify(&pk).unwrap();

        let mut c = cp.clone();
        c.tree_size = 11;
        assert_eq!(c.verify(&pk), Err(SignatureError::Invalid));
        let mut c = cp.clone();
        c.root_hash.0[0] ^= 1;
        assert_eq!(c.verify(&pk), Err(SignatureError::Invalid));
        let mut c = cp.clone();
        c.signed_at += chrono::Duration::microseconds(1);
        assert_eq!(c.verify(&pk), Err(SignatureError::Invalid));
        let mut c = cp.clone();
        c.signature = "AAAA".into();
        assert_eq!(c.verify(&pk), Err(SignatureError::Malformed));
        let other = CheckpointKey::from_seed([8; 32]).public_key();
        assert!(matches!(
            cp.verify(&other),
            Err(SignatureError::WrongKey { .. })
        ));
        // Same key id claimed, other key's signature.
        let mut forged = CheckpointKey::from_seed([8; 32]).sign(10, cp.root_hash, cp.signed_at);
        forged.key_id = cp.key_id.clone();
        assert_eq!(forged.verify(&pk), Err(SignatureError::Invalid));
    }
}
