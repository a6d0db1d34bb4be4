//! Signed tree heads ("checkpoints"), the key that signs them, and the full
//! audit walk.
//!
//! A checkpoint commits to the first `tree_size` events through the Merkle
//! root, signed with Ed25519 over a fixed text ([`signed_text`]). Copies kept
//! outside the database (by auditors, in backups, in e-mail) make a later
//! rewrite of history detectable even by someone who recomputes every chain
//! hash: they cannot re-sign the old checkpoints. The `checkpoints` table is
//! append-only, like `events`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::merkle::{self, with_pool, AuditError, Frontier, MerkleHash};
use crate::store::{DbPool, EventStore};
use crate::verify::{ChainBreak, ChainVerifier, VerifyReport};

/// The first line of every signed checkpoint text.
pub const CHECKPOINT_FORMAT: &str = "ledgerdesk-checkpoint-v1";

/// Events read per page by [`verify_all`].
const PAGE: usize = 5_000;

// ---------------------------------------------------------------------------
// Keys.

/// The Ed25519 key that signs checkpoints. Its seed never prints.
pub struct CheckpointKey {
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointKey({})", self.public_key().key_id())
    }
}

impl CheckpointKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Result<Self, AuditError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| AuditError::Key(format!("no randomness: {e}")))?;
        Ok(Self::from_seed(seed))
    }

    /// Parse a seed written as 64 hex digits or as base64 (surrounding
    /// whitespace ignored).
    pub fn parse_seed(text: &str) -> Result<Self, AuditError> {
        decode_32(text)
            .map(Self::from_seed)
            .ok_or_else(|| AuditError::Key("expected a 32-byte seed in hex or base64".into()))
    }

    /// Load the key at `path`; if the file does not exist, generate a key and
    /// write its seed there (hex, mode 0600), atomically: two processes
    /// starting at once end up with the same key.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::Key(format!("{what} {}: {e}", path.display()))
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_readable_by_others(path);
                return Self::parse_seed(&text)
                    .map_err(|e| AuditError::Key(format!("{}: {e}", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read", e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the folder of", e))?;
        }
        let key = Self::generate()?;
        // Write a private temporary file, then link it into place: the link
        // fails if another process won the race, and we read its key instead.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::now_v7().simple()));
        write_private(
            &tmp,
            format!("{}\n", hex::encode(key.key.to_bytes())).as_bytes(),
        )
        .map_err(|e| io("cannot write", e))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), key_id = %key.public_key().key_id(), "generated a new checkpoint signing key");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(|e| io("cannot read", e))?;
                Self::parse_seed(&text)
            }
            Err(e) => Err(io("cannot create", e)),
        }
    }

    /// The public half, for `GET /api/v1/audit/public-key` and verifiers.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

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

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "checkpoint signing key is readable by other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// 32 bytes from 64 hex digits or base64.
fn decode_32(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()?
    } else {
        B64.decode(t).ok()?
    };
    bytes.try_into().ok()
}

/// An Ed25519 public key; base64 in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// Parse 64 hex digits or base64 of the 32-byte key.
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let bytes = decode_32(text).ok_or_else(|| {
            AuditError::Key("expected a 32-byte public key in hex or base64".into())
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| AuditError::Key(format!("not an Ed25519 public key: {e}")))
    }

    /// Standard base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// Lowercase hex of the 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The key's short name: hex of the first 8 bytes of SHA-256(key).
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// The body of `GET /api/v1/audit/public-key`.
    pub fn info(&self) -> PublicKeyInfo {
        PublicKeyInfo {
            algorithm: "ed25519".into(),
            key_id: self.key_id(),
            public_key: self.to_base64(),
            public_key_hex: self.to_hex(),
            checkpoint_format: CHECKPOINT_FORMAT.into(),
        }
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What the public-key endpoint returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The key id checkpoints name.
    pub key_id: String,
    /// The key, standard base64.
    pub public_key: String,
    /// The key, hex.
    pub public_key_hex: String,
    /// The first line of the signed text.
    pub checkpoint_format: String,
}

// ---------------------------------------------------------------------------
// Checkpoints.

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

fn decode_checkpoint<R>(row: &R) -> Result<Checkpoint, AuditError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let seq: i64 = row.try_get(0)?;
    let corrupt =
        |reason: &str| AuditError::Corrupt(format!("checkpoint {seq} is unreadable: {reason}"));
    let tree_size: i64 = row.try_get(1)?;
    let root: String = row.try_get(2)?;
    let signed_at: i64 = row.try_get(3)?;
    Ok(Checkpoint {
        seq: seq.max(0) as u64,
        tree_size: u64::try_from(tree_size).map_err(|_| corrupt("negative tree size"))?,
        root_hash: MerkleHash::from_hex(&root).map_err(|_| corrupt("root hash"))?,
        signed_at: DateTime::from_timestamp_micros(signed_at)
            .ok_or_else(|| corrupt("signed_at"))?,
        key_id: row.try_get(4)?,
        signature: row.try_get(5)?,
    })
}

async fn query_checkpoints(
    pool: &DbPool,
    filter: &str,
    binds: &[i64],
) -> Result<Vec<Checkpoint>, AuditError> {
    let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints {filter}");
    with_pool!(pool, p => {
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.fetch_all(p).await?.iter().map(decode_checkpoint).collect()
    })
}

/// Sync the tree with the log, then sign and store a checkpoint of it, even
/// when nothing was appended since the last one. Waits for a checkpointer
/// of another process that is signing (see [`Checkpointer`]).
pub async fn checkpoint_now(
    store: &dyn EventStore,
    key: &CheckpointKey,
) -> Result<Checkpoint, AuditError> {
    let lock = SignLock::take(&store.pool(), false).await?;
    let signed = sign(store, key).await;
    lock.release().await;
    signed
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
    let pool = store.pool();
    let sql = "INSERT INTO checkpoints (tree_size, root_hash, signed_at, key_id, signature) \
               SELECT $1, $2, $3, $4, $5 \
               WHERE NOT EXISTS (SELECT 1 FROM checkpoints WHERE tree_size > $1) \
               RETURNING seq";
    for _ in 0..SIGN_ATTEMPTS {
        let size = merkle::sync_leaves(store).await?;
        let root = merkle::tree_root(store, size).await?;
        let mut cp = key.sign(size, root, Utc::now());
        let seq: Option<i64> = with_pool!(&pool, p => sqlx::query_scalar(sql)
            .bind(crate::sql::clamp(cp.tree_size))
            .bind(cp.root_hash.to_hex())
            .bind(cp.signed_at.timestamp_micros())
            .bind(&cp.key_id)
            .bind(&cp.signature)
            .fetch_optional(p)
            .await?);
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
        query_checkpoints(&store.pool(), "ORDER BY seq DESC LIMIT 1", &[])
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
        &store.pool(),
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
        &store.pool(),
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
        &store.pool(),
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
        let lock = SignLock::take(&store.pool(), true).await?;
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
        Ok(match pool {
            DbPool::Postgres(p) => {
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
            DbPool::Sqlite(_) => SignLock::None,
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

// ---------------------------------------------------------------------------
// The full audit.

/// Why a checkpoint fails the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CheckpointProblem {
    /// Its signature does not verify with the trusted key.
    BadSignature {
        /// What is wrong.
        reason: String,
    },
    /// It is for a smaller tree than the checkpoint before it.
    TreeShrank {
        /// The previous checkpoint's size.
        previous: u64,
    },
    /// It covers more events than the log holds: events were removed.
    BeyondLog {
        /// How many events the log holds.
        events: u64,
    },
    /// Its root is not the Merkle root of the events as they are now.
    RootMismatch {
        /// The root of the stored events at its size.
        computed: MerkleHash,
    },
    /// The stored tree gives another root at its size (the `merkle_nodes`
    /// table was altered); proofs served from it would not verify.
    StoredTreeMismatch {
        /// What the stored tree gives.
        stored: MerkleHash,
    },
}

/// The first checkpoint that fails the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadCheckpoint {
    /// Its row number.
    pub seq: u64,
    /// Its tree size.
    pub tree_size: u64,
    /// What is wrong.
    pub problem: CheckpointProblem,
}

impl std::fmt::Display for BadCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checkpoint {} (tree size {}): ",
            self.seq, self.tree_size
        )?;
        match &self.problem {
            CheckpointProblem::BadSignature { reason } => f.write_str(reason),
            CheckpointProblem::TreeShrank { previous } => {
                write!(f, "tree shrank from {previous}")
            }
            CheckpointProblem::BeyondLog { events } => {
                write!(
                    f,
                    "covers more events than the log's {events}: events were removed"
                )
            }
            CheckpointProblem::RootMismatch { computed } => {
                write!(
                    f,
                    "signed root does not match the events (they give {computed})"
                )
            }
            CheckpointProblem::StoredTreeMismatch { stored } => {
                write!(f, "the stored Merkle tree gives another root ({stored})")
            }
        }
    }
}

/// The outcome of [`verify_all`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The hash chain walk (first broken position, if any).
    pub chain: VerifyReport,
    /// Events read.
    pub events: u64,
    /// Stored leaf hashes compared with the events.
    pub leaves_checked: u64,
    /// The first position whose stored leaf hash does not match its event
    /// (or whose leaf has no event any more).
    pub first_bad_leaf: Option<u64>,
    /// Checkpoints checked.
    pub checkpoints_checked: u64,
    /// The first checkpoint that fails.
    pub first_bad_checkpoint: Option<BadCheckpoint>,
    /// The latest checkpoint.
    pub latest_checkpoint: Option<Checkpoint>,
}

impl AuditReport {
    /// Whether everything verified.
    pub fn ok(&self) -> bool {
        self.chain.ok() && self.first_bad_leaf.is_none() && self.first_bad_checkpoint.is_none()
    }

    /// One line per finding, for the CLI.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = &self.chain.first_break {
            out.push(format!("hash chain: {b}"));
        }
        if let Some(p) = self.first_bad_leaf {
            out.push(format!(
                "position {p}: stored Merkle leaf does not match the event"
            ));
        }
        if let Some(c) = &self.first_bad_checkpoint {
            out.push(c.to_string());
        }
        out
    }
}

/// Check everything: the hash chain, that the stored leaf hashes match the
/// events, and for each checkpoint its signature (with `public_key`), that
/// sizes never shrink, that it is within the log, that its root is the
/// Merkle root of the events as stored now, and that the stored tree agrees.
///
/// One pass over the log; read-only (it does not sync the stored tree).
pub async fn verify_all(
    store: &dyn EventStore,
    public_key: &PublicKey,
) -> Result<AuditReport, AuditError> {
    let pool = store.pool();
    let cps = all_checkpoints(store).await?;
    let mut chain = ChainVerifier::default();
    let mut chain_break: Option<ChainBreak> = None;
    let mut frontier = Frontier::default();
    // Roots recomputed from the events at each checkpoint size.
    let mut wanted: Vec<u64> = cps.iter().map(|c| c.tree_size).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut wanted = wanted.into_iter().peekable();
    let mut roots = std::collections::BTreeMap::new();
    if wanted.peek() == Some(&0) {
        roots.insert(0, frontier.root());
        wanted.next();
    }
    let (mut leaves_checked, mut first_bad_leaf) = (0u64, None);
    let mut after = 0u64;
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        let last_position = last.position;
        let stored = merkle::stored_leaves(&pool, after, page.len()).await?;
        let mut stored = stored.into_iter().peekable();
        for e in &page {
            if chain_break.is_none() {
                chain_break = chain.push(e).err();
            }
            let leaf = merkle::event_leaf_hash(e);
            // Leaf i is position i + 1; in a log with gaps, compare by index.
            while let Some((i, _)) = stored.next_if(|(i, _)| *i + 1 < e.position) {
                // A stored leaf whose event is gone.
                first_bad_leaf.get_or_insert(i + 1);
            }
            if let Some((_, h)) = stored.next_if(|(i, _)| *i + 1 == e.position) {
                leaves_checked += 1;
                if h != leaf {
                    first_bad_leaf.get_or_insert(e.position);
                }
            }
            frontier.push(leaf);
            while wanted.peek() == Some(&frontier.size()) {
                roots.insert(frontier.size(), frontier.root());
                wanted.next();
            }
        }
        after = last_position;
    }
    let events = frontier.size();
    // Stored leaves past the end of the log: events were removed.
    if first_bad_leaf.is_none() {
        if let Some((i, _)) = merkle::stored_leaves(&pool, events, 1).await?.first() {
            first_bad_leaf = Some(i + 1);
        }
    }
    let first_bad_checkpoint = check_checkpoints(store, &cps, &roots, events, public_key).await?;
    Ok(AuditReport {
        chain: chain.report(chain_break),
        events,
        leaves_checked,
        first_bad_leaf,
        checkpoints_checked: cps.len() as u64,
        first_bad_checkpoint,
        latest_checkpoint: cps.last().cloned(),
    })
}

async fn all_checkpoints(store: &dyn EventStore) -> Result<Vec<Checkpoint>, AuditError> {
    let mut out: Vec<Checkpoint> = Vec::new();
    loop {
        let range = CheckpointRange {
            after_seq: out.last().map_or(0, |c| c.seq),
            limit: 10_000,
            ..Default::default()
        };
        let page = checkpoints(store, range).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn check_checkpoints(
    store: &dyn EventStore,
    cps: &[Checkpoint],
    roots: &std::collections::BTreeMap<u64, MerkleHash>,
    events: u64,
    key: &PublicKey,
) -> Result<Option<BadCheckpoint>, AuditError> {
    let stored_size = merkle::stored_size(store).await?;
    let mut previous = 0;
    let mut stored_roots = std::collections::HashMap::new();
    for c in cps {
        let bad = |problem| {
            Some(BadCheckpoint {
                seq: c.seq,
                tree_size: c.tree_size,
                problem,
            })
        };
        if let Err(e) = c.verify(key) {
            return Ok(bad(CheckpointProblem::BadSignature {
                reason: e.to_string(),
            }));
        }
        if c.tree_size < previous {
            return Ok(bad(CheckpointProblem::TreeShrank { previous }));
        }
        previous = c.tree_size;
        let Some(computed) = roots.get(&c.tree_size) else {
            return Ok(bad(CheckpointProblem::BeyondLog { events }));
        };
        if *computed != c.root_hash {
            return Ok(bad(CheckpointProblem::RootMismatch {
                computed: *computed,
            }));
        }
        if c.tree_size <= stored_size {
            // Quiet periods give runs of checkpoints of one size: read its
            // stored root once.
            let stored = match stored_roots.get(&c.tree_size) {
                Some(r) => *r,
                None => {
                    let r = merkle::tree_root(store, c.tree_size).await?;
                    stored_roots.insert(c.tree_size, r);
                    r
                }
            };
            if stored != c.root_hash {
                return Ok(bad(CheckpointProblem::StoredTreeMismatch { stored }));
            }
        }
    }
    Ok(None)
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

    #[test]
    fn keys_parse_as_hex_or_base64_and_are_created_once() {
        let key = CheckpointKey::from_seed([9; 32]);
        let pk = key.public_key();
        assert_eq!(PublicKey::parse(&pk.to_hex()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap(), pk);
        assert_eq!(
            CheckpointKey::parse_seed(&B64.encode([9u8; 32]))
                .unwrap()
                .public_key(),
            pk
        );
        assert!(CheckpointKey::parse_seed("nope").is_err());

        let dir =
            std::env::temp_dir().join(format!("ledgerdesk-key-{}", uuid::Uuid::now_v7().simple()));
        let path = dir.join("sub").join("checkpoint.key");
        let a = CheckpointKey::load_or_create(&path).unwrap();
        let b = CheckpointKey::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let listed: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(listed.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(!format!("{a:?}").contains(&hex::encode([9u8; 32])));
    }
}
