//! The live audit stream's shared state: new audit rows, read once by the
//! process's one follower (`routes::audit::follow_audit`) and handed to
//! every open stream, and the count of open streams per user and in all.
//! It holds no application state, so [`crate::state`] can keep it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ledgerdesk_projections::audit::AuditRow;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::ApiError;

/// Batches the follower keeps for slow streams; one further behind reads
/// from its own position instead.
const BUFFER: usize = 64;
/// What a 429 for too many streams asks to wait, in seconds.
const STREAM_RETRY_AFTER: u64 = 10;

/// New audit entries of the process, read once by one follower and shared
/// with every live stream; and the count of open streams, per user and in
/// all.
#[derive(Debug)]
pub struct AuditFeed {
    max_per_user: usize,
    max: usize,
    open: std::sync::Mutex<(usize, HashMap<Uuid, usize>)>,
    pub(crate) batches: broadcast::Sender<Arc<Batch>>,
    /// Every audit row up to here has been sent as a batch.
    pub(crate) position: AtomicU64,
    pub(crate) follower_reads: AtomicU64,
    pub(crate) stream_reads: AtomicU64,
}

/// The audit rows with positions in `(after, to]`, all of them.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) after: u64,
    pub(crate) to: u64,
    pub(crate) rows: Vec<AuditRow>,
}

/// A stream's place in the count; given back when the stream ends, however
/// it ends (a client gone drops the response body, and this with it).
#[derive(Debug)]
pub struct StreamSlot {
    feed: Arc<AuditFeed>,
    user: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.feed.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

impl AuditFeed {
    /// At most `max_per_user` streams per user and `max` in all.
    pub fn new(max_per_user: usize, max: usize) -> Self {
        Self {
            max_per_user,
            max,
            open: Default::default(),
            batches: broadcast::channel(BUFFER).0,
            position: AtomicU64::new(0),
            follower_reads: AtomicU64::new(0),
            stream_reads: AtomicU64::new(0),
        }
    }

    /// A slot for one more stream of `user`, or 429.
    pub fn open(self: &Arc<Self>, user: Uuid) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.1.get(&user).copied().unwrap_or(0);
        let detail = if mine >= self.max_per_user {
            "too many live audit streams open for this user; close one first"
        } else if open.0 >= self.max {
            "too many live audit streams open on this server"
        } else {
            open.0 += 1;
            *open.1.entry(user).or_default() += 1;
            return Ok(StreamSlot {
                feed: self.clone(),
                user,
            });
        };
        Err(ApiError::Limited {
            code: "too_many_streams",
            detail,
            retry_after: STREAM_RETRY_AFTER,
        })
    }

    /// Queries the follower made.
    pub fn follower_reads(&self) -> u64 {
        self.follower_reads.load(Ordering::SeqCst)
    }

    /// Queries the streams made on their own: one when they start, and
    /// again only when one falls behind the follower or filters by text.
    pub fn stream_reads(&self) -> u64 {
        self.stream_reads.load(Ordering::SeqCst)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}
