//! The background workers: one per projection, holding its [`Lease`],
//! applying pages as the head moves, and marking the projection failed on
//! an event it cannot apply after [`MAX_ATTEMPTS`].

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use super::lease::Lease;
use super::{
    Projector, Step, WorkerState, Write, FAILED_RETRY_INTERVAL, FIRST_BACKOFF, MAX_ATTEMPTS,
    POLL_INTERVAL,
};
use crate::projection::{Names, Projection};

impl Projector {
    /// Start one background worker per projection; they stop when
    /// `shutdown` completes. The handle resolves once every worker has
    /// stopped and released its lease.
    pub fn spawn(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let workers: Vec<_> = self
            .inner
            .projections
            .iter()
            .map(|p| tokio::spawn(self.clone().worker(p.clone(), stop_rx.clone())))
            .collect();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            for w in workers {
                let _ = w.await;
            }
        })
    }

    async fn worker(self, p: Arc<dyn Projection>, mut stop: watch::Receiver<bool>) {
        let name = p.name();
        let pool = self.pool();
        let mut head = self.inner.store.watch_head();
        let mut lease = Lease::new(name);
        // Several workers start at once; on SQLite a read-then-write
        // transaction may be refused as busy, so retry until it succeeds.
        while let Err(e) = self.ensure_schema().boxed().await {
            tracing::warn!(projection = name, error = %e, "cannot prepare the projection's schema; retrying");
            wait(&mut stop, None, Duration::from_millis(50))
                .boxed()
                .await;
            if *stop.borrow() {
                self.set_state(name, WorkerState::Stopped);
                return;
            }
        }
        'outer: while !*stop.borrow() {
            match lease.acquire(&pool).boxed().await {
                Ok(true) => {}
                Ok(false) => {
                    self.set_state(name, WorkerState::Standby);
                    wait(&mut stop, None, POLL_INTERVAL).boxed().await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "cannot take the projection lease");
                    lease.release().boxed().await;
                    wait(&mut stop, None, POLL_INTERVAL).boxed().await;
                    continue;
                }
            }
            tracing::info!(projection = name, "projection worker holds the lease");
            let mut position = None;
            // Consecutive failures at one position: (position, attempts).
            let mut failing: Option<(u64, u32)> = None;
            // Consecutive rounds the database was unavailable (backoff).
            let mut unavailable: u32 = 0;
            // After a failed page, events up to here go one per page, so
            // the events before the bad one are applied and the failure
            // names the bad one's position.
            let mut single_until = 0;
            // A failure recorded before this worker took the lease (by an
            // earlier process) is cleared by its first page that applies.
            let mut recorded_failure = true;
            loop {
                if *stop.borrow() {
                    break 'outer;
                }
                if !lease.alive().boxed().await {
                    tracing::warn!(projection = name, "projection lease lost");
                    lease.release().boxed().await;
                    continue 'outer;
                }
                let from = match position {
                    Some(p) => p,
                    None => match self.checkpoint(name).boxed().await {
                        Ok(cp) => cp.position,
                        Err(e) => {
                            tracing::warn!(projection = name, error = %e, "cannot read checkpoint");
                            wait(&mut stop, None, POLL_INTERVAL).boxed().await;
                            continue;
                        }
                    },
                };
                if !matches!(
                    self.state(name),
                    WorkerState::Rebuilding | WorkerState::Failed
                ) {
                    self.set_state(name, WorkerState::Running);
                }
                let until = (from < single_until).then_some(from + 1);
                match self
                    .step(&*p, &pool, &Names::LIVE, from, until, Write::Worker)
                    .boxed()
                    .await
                {
                    Ok((Step::Applied(n), to)) => {
                        unavailable = 0;
                        position = Some(to);
                        self.publish(name, to);
                        if failing.take().is_some() || std::mem::take(&mut recorded_failure) {
                            if let Err(e) = self.clear_failure(name).boxed().await {
                                tracing::warn!(projection = name, error = %e, "cannot clear the projection's failure");
                            }
                            if self.state(name) == WorkerState::Failed {
                                tracing::info!(
                                    projection = name,
                                    position = to,
                                    "projection recovered"
                                );
                                self.set_state(name, WorkerState::Running);
                            }
                        }
                        let full = if until.is_some() {
                            1
                        } else {
                            self.inner.page_size
                        };
                        if n < full {
                            if self.state(name) != WorkerState::Rebuilding {
                                self.set_state(name, WorkerState::Idle);
                            }
                            // Lag-free: wake on the head watch, poll as a fallback.
                            if *head.borrow_and_update() <= to {
                                wait(&mut stop, Some(&mut head), POLL_INTERVAL)
                                    .boxed()
                                    .await;
                            }
                        }
                    }
                    Ok((Step::Moved, _)) => position = None,
                    Err(e) if e.is_unavailable() => {
                        // The database is away (restarting, unreachable):
                        // nothing is wrong with the event, so this is no
                        // attempt at it; wait and read again.
                        position = None;
                        unavailable = (unavailable + 1).min(5);
                        tracing::warn!(projection = name, error = %e, "database unavailable; the projection waits");
                        wait(&mut stop, None, FIRST_BACKOFF * unavailable)
                            .boxed()
                            .await;
                    }
                    Err(e) => {
                        position = None;
                        unavailable = 0;
                        let attempts = match failing {
                            Some((at, n)) if at == from => n + 1,
                            _ => 1,
                        };
                        failing = Some((from, attempts));
                        single_until = single_until.max(from + self.inner.page_size as u64);
                        let pause = if attempts < MAX_ATTEMPTS {
                            tracing::warn!(projection = name, position = from + 1, attempts, error = %e, "projection page failed; retrying");
                            FIRST_BACKOFF * 2u32.pow(attempts - 1)
                        } else {
                            // Loudly, and where every process sees it; the
                            // events after it wait, the other projections
                            // carry on.
                            tracing::error!(projection = name, position = from + 1, attempts, error = %e, "projection failed: it cannot apply this event");
                            // The row first: whoever sees the state
                            // `failed` must also find what failed.
                            self.record_failure(name, from + 1, &error_chain(&e))
                                .boxed()
                                .await;
                            if self.state(name) != WorkerState::Failed {
                                if let Ok(mut totals) = self.inner.failures_total.lock() {
                                    *totals.entry(name).or_default() += 1;
                                }
                                self.set_state(name, WorkerState::Failed);
                            }
                            FAILED_RETRY_INTERVAL
                        };
                        wait(&mut stop, None, pause).boxed().await;
                    }
                }
            }
        }
        lease.release().boxed().await;
        self.set_state(name, WorkerState::Stopped);
    }
}

/// `error: cause: cause …`: the whole story, for the failure record.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Wait for `stop`, a head change (if given) or `timeout`, whichever first.
async fn wait(
    stop: &mut watch::Receiver<bool>,
    head: Option<&mut watch::Receiver<u64>>,
    timeout: Duration,
) {
    let head_changed = async {
        match head {
            Some(h) => {
                if h.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop.changed() => {}
        _ = head_changed => {}
        _ = tokio::time::sleep(timeout) => {}
    }
}
