//! Catch-up, status and failures: what the CLI, `/readyz`, the admin
//! routes and the metrics ask of the projections.

use std::collections::HashMap;

use chrono::DateTime;

use super::{
    now_us, FailureRow, ProjectionFailure, ProjectionHealth, ProjectionStatus, Projector, Step,
    WorkerState, Write,
};
use crate::db::{self, Dialect};
use crate::error::ProjectionError;
use crate::projection::Names;
use crate::schema::FAILURES;

impl Projector {
    /// Every failed projection, from the database (so across processes).
    pub async fn failures(&self) -> Result<Vec<(String, ProjectionFailure)>, ProjectionError> {
        self.failures_table().await;
        let rows: Vec<FailureRow> = db::fetch(
            &self.pool(),
            "SELECT name, position, error, failed_at FROM projection_failures ORDER BY name",
            vec![],
        )
        .await?;
        Ok(rows.into_iter().map(|FailureRow(n, f)| (n, f)).collect())
    }

    /// Position, state and failure count of each projection as this
    /// process knows them, without a query (for metrics).
    pub fn health(&self) -> Vec<ProjectionHealth> {
        let totals = self
            .inner
            .failures_total
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        self.inner
            .projections
            .iter()
            .map(|p| ProjectionHealth {
                name: p.name(),
                position: self
                    .inner
                    .positions
                    .get(p.name())
                    .map_or(0, |tx| *tx.borrow()),
                state: self.state(p.name()),
                failures_total: totals.get(p.name()).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Create the failures table unless this projector already saw it: a
    /// status may be asked before any worker ran `ensure_schema` (a
    /// process on standby, the CLI). A failed create (two processes racing
    /// on PostgreSQL) is left to the query that follows.
    async fn failures_table(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.failures_table.load(Ordering::Relaxed) {
            return;
        }
        let pool = self.pool();
        let sql = FAILURES
            .create_table(Dialect::of(&pool), FAILURES.name)
            .replacen("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1);
        if db::execute(&pool, &sql, vec![]).await.is_ok() {
            self.inner.failures_table.store(true, Ordering::Relaxed);
        }
    }

    /// Mark `name` failed at `position` in the database, where every
    /// process sees it; `failed_at` keeps the first time.
    pub(super) async fn record_failure(&self, name: &'static str, position: u64, error: &str) {
        self.failures_table().await;
        let written = db::execute(
            &self.pool(),
            "INSERT INTO projection_failures (name, position, error, failed_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, error = excluded.error",
            vec![name.into(), position.into(), error.into(), now_us().into()],
        )
        .await;
        if let Err(e) = written {
            tracing::error!(projection = name, error = %e, "cannot record the projection's failure");
        }
    }

    pub(super) async fn clear_failure(&self, name: &str) -> Result<(), sqlx::Error> {
        db::execute(
            &self.pool(),
            "DELETE FROM projection_failures WHERE name = $1",
            vec![name.into()],
        )
        .await
        .map(|_| ())
    }

    /// Apply at most `max_pages` pages of projection `name` from its
    /// checkpoint; the number of events applied. For tests and step-wise
    /// tools.
    pub async fn run_pages(&self, name: &str, max_pages: usize) -> Result<u64, ProjectionError> {
        let p = self.projection(name)?;
        self.ensure_schema().await?;
        let pool = self.pool();
        let mut done = 0;
        let mut pages = 0;
        let mut position = self.checkpoint(name).await?.position;
        while pages < max_pages {
            match self
                .step(&*p, &pool, &Names::LIVE, position, None, Write::Checkpoint)
                .await?
            {
                (Step::Applied(0), _) => break,
                (Step::Applied(n), to) => {
                    done += n as u64;
                    position = to;
                    pages += 1;
                    self.publish(name, to);
                }
                (Step::Moved, _) => position = self.checkpoint(name).await?.position,
            }
        }
        Ok(done)
    }

    /// Bring every projection up to the log's current head, once; events
    /// applied per projection.
    pub async fn catch_up(&self) -> Result<Vec<(&'static str, u64)>, ProjectionError> {
        let mut out = Vec::new();
        for p in self.inner.projections.clone() {
            out.push((p.name(), self.run_pages(p.name(), usize::MAX).await?));
        }
        Ok(out)
    }

    /// Where each projection stands.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.inner.store.head().await?;
        let mut failures: HashMap<String, ProjectionFailure> =
            self.failures().await?.into_iter().collect();
        let mut out = Vec::new();
        for p in &self.inner.projections {
            let cp = self.checkpoint(p.name()).await?;
            let failure = failures.remove(p.name());
            let lag_seconds = match (head.recorded_at, cp.position < head.position) {
                (Some(h), true) => {
                    let from = cp.event_time.unwrap_or(0);
                    ((h.timestamp_micros() - from).max(0)) as f64 / 1e6
                }
                _ => 0.0,
            };
            out.push(ProjectionStatus {
                name: p.name().to_owned(),
                position: cp.position,
                head: head.position,
                lag_events: head.position.saturating_sub(cp.position),
                lag_seconds,
                // The recorded failure wins over this process's view: the
                // worker that failed may run in another process.
                state: if failure.is_some() {
                    WorkerState::Failed
                } else {
                    self.state(p.name())
                },
                updated_at: cp.updated_at.and_then(DateTime::from_timestamp_micros),
                failure,
            });
        }
        Ok(out)
    }
}
