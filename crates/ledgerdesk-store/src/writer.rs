//! The single serialized writer with group commit.
//!
//! Every append in a process is sent to one task. The task takes everything
//! waiting, opens one transaction, takes the database's write lock (an
//! advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), reads the log's
//! tip and the streams' versions, plans positions and hashes (`plan.rs`),
//! inserts and commits. Only then does each caller get its answer.
//!
//! Because every commit happens under one lock, in position order, a reader
//! that follows the log by position can never see position N+1 before N:
//! skipping is impossible by construction, and positions have no gaps.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{Appended, StreamAppend};
use crate::plan::{plan, streams_of, Plan, Row, Tip};
use crate::StoreError;

/// How many events one group may gather before it is written.
const GROUP_MAX_EVENTS: usize = 20_000;
/// At most this many yields to let waiting appends join a group.
const MAX_GATHER_YIELDS: usize = 64;
/// How many appends may wait for the writer before callers are slowed down.
const QUEUE_DEPTH: usize = 4_096;
/// How long a group waits for the callers the previous group answered.
const GATHER_WAIT: Duration = Duration::from_micros(300);
/// At most this many groups skip the gather wait after waits that brought
/// nobody.
const MAX_SKIPPED_WAITS: usize = 64;
/// Groups of at most this many appends count as small: waiting for their
/// callers costs little, and gathering them is worth a commit each.
const SMALL_GROUP: usize = 256;

/// The database operations the writer needs; each backend implements them
/// with its own SQL on one dedicated connection.
pub(crate) trait WriteConn: Send + 'static {
    /// Begin a transaction holding the database-wide write lock, and read
    /// the log's last event under it.
    fn begin_locked(&mut self) -> impl Future<Output = Result<Tip, StoreError>> + Send;
    /// The current version of each named stream that exists.
    fn versions(
        &mut self,
        streams: &[String],
    ) -> impl Future<Output = Result<HashMap<String, u64>, StoreError>> + Send;
    /// Insert the planned rows.
    fn insert(&mut self, rows: &[Row]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Commit durably; `head` is the new head position when rows were
    /// inserted (PostgreSQL tells other processes in the same commit).
    fn commit(&mut self, head: Option<u64>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Roll back after a failure.
    fn rollback(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Told about every group the writer tries to commit, for metrics. The
/// store stays free of any metrics library: the API implements this.
pub trait WriterObserver: Send + Sync + 'static {
    /// One group: the appends and events it gathered, the time from
    /// taking the write lock to the end of the commit (or the failure), and
    /// whether it committed.
    fn group(&self, group: GroupStats);
}

/// What [`WriterObserver::group`] is told.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupStats {
    /// Appends (callers) served by the group.
    pub appends: usize,
    /// Events they carried.
    pub events: usize,
    /// From asking for the write lock to the end of the commit.
    pub elapsed: Duration,
    /// Whether the group committed.
    pub committed: bool,
}

pub(crate) struct Job {
    pub appends: Vec<StreamAppend>,
    pub reply: oneshot::Sender<Result<Vec<Appended>, StoreError>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer on `conn`; `head` is told each new head position,
    /// `observer` (if any) each group.
    pub fn spawn<C: WriteConn>(
        conn: C,
        head: watch::Sender<u64>,
        observer: Option<Arc<dyn WriterObserver>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(conn, rx, head, observer));
        Self { tx }
    }

    pub async fn append(&self, appends: Vec<StreamAppend>) -> Result<Vec<Appended>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { appends, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run<C: WriteConn>(
    mut conn: C,
    mut rx: mpsc::Receiver<Job>,
    head: watch::Sender<u64>,
    observer: Option<Arc<dyn WriterObserver>>,
) {
    // The callers known to be active when the last group was answered:
    // those it answered (likely to append again at once) and those already
    // waiting behind it. A caller has one append in flight at a time, so
    // the two sets are apart.
    let mut active = 0usize;
    let (mut skip, mut backoff) = (0usize, 0usize);
    while let Some(first) = rx.recv().await {
        let mut size: usize = first.appends.iter().map(|a| a.events.len()).sum();
        let mut jobs = vec![first];
        // Callers answered by the previous commit are re-submitting right
        // now; yielding while new appends keep arriving (microseconds,
        // against a commit that waits for the disk) lets them join this group
        // instead of trickling in one by one behind it.
        for _ in 0..MAX_GATHER_YIELDS {
            if size >= GROUP_MAX_EVENTS {
                break;
            }
            tokio::task::yield_now().await;
            let before = jobs.len();
            gather(&mut rx, &mut jobs, &mut size);
            if jobs.len() == before {
                break;
            }
        }
        // When several callers take turns with one-event appends, the
        // yields above end before the slower of them are back, and groups
        // settle into half-empty cohorts that alternate: wait a little
        // longer for the callers known to be active, but only while they are
        // few and not all here. A lone caller never waits.
        // Callers that take longer than the wait to come back (an HTTP
        // request between two appends) make it a pure cost, so after a wait
        // that brought nobody the next ones are skipped, for twice as many
        // groups each time, up to MAX_SKIPPED_WAITS.
        if active > 1 && active <= SMALL_GROUP && jobs.len() < active {
            if skip > 0 {
                skip -= 1;
            } else {
                let before = jobs.len();
                let deadline = Instant::now() + GATHER_WAIT;
                while jobs.len() < active && size < GROUP_MAX_EVENTS && Instant::now() < deadline {
                    tokio::task::yield_now().await;
                    gather(&mut rx, &mut jobs, &mut size);
                }
                if jobs.len() == before {
                    backoff = (backoff * 2).clamp(1, MAX_SKIPPED_WAITS);
                    skip = backoff;
                } else {
                    backoff = 0;
                }
            }
        }
        let requests: Vec<&[StreamAppend]> = jobs.iter().map(|j| j.appends.as_slice()).collect();
        let started = Instant::now();
        let written = write_group(&mut conn, &requests).await;
        if let Some(observer) = &observer {
            observer.group(GroupStats {
                appends: jobs.len(),
                events: size,
                elapsed: started.elapsed(),
                committed: written.is_ok(),
            });
        }
        active = jobs.len() + rx.len();
        match written {
            Ok(plan) => {
                head.send_if_modified(|h| {
                    let moved = *h != plan.tip.position;
                    *h = plan.tip.position;
                    moved
                });
                for (job, outcome) in jobs.into_iter().zip(plan.outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                // Usually nothing was written; a connection lost during
                // COMMIT leaves it unknown, which is why such failures are
                // "unavailable, retry" and never an acknowledgement.
                tracing::error!(error = %e, appends = jobs.len(), "group commit failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Take every append already waiting, up to the group's size limit.
fn gather(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, size: &mut usize) {
    while *size < GROUP_MAX_EVENTS {
        match rx.try_recv() {
            Ok(job) => {
                *size += job.appends.iter().map(|a| a.events.len()).sum::<usize>();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
}

async fn write_group<C: WriteConn>(
    conn: &mut C,
    requests: &[&[StreamAppend]],
) -> Result<Plan, StoreError> {
    // A failure while beginning (the lock timed out, the connection broke)
    // is cleaned up like any other: the writer must always be left with a
    // usable connection or none.
    let result = match conn.begin_locked().await {
        Ok(tip) => write_locked(conn, requests, tip).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(plan) => Ok(plan),
        Err(e) => {
            if let Err(rb) = conn.rollback().await {
                tracing::warn!(error = %rb, "rollback after a failed group commit failed");
            }
            Err(e)
        }
    }
}

async fn write_locked<C: WriteConn>(
    conn: &mut C,
    requests: &[&[StreamAppend]],
    tip: Tip,
) -> Result<Plan, StoreError> {
    let versions = conn.versions(&streams_of(requests.iter().copied())).await?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let plan = plan(requests, tip, &versions, now_us);
    let head = if plan.rows.is_empty() {
        None
    } else {
        conn.insert(&plan.rows).await?;
        Some(plan.tip.position)
    };
    conn.commit(head).await?;
    Ok(plan)
}
