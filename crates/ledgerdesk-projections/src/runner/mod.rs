//! The projection runner.
//!
//! A projection reads the log in position order from its checkpoint. Each
//! page (up to [`DEFAULT_PAGE_SIZE`] events) is applied in one transaction
//! that first moves the checkpoint with a compare-and-set
//! (`UPDATE … WHERE position = <expected>`), so a crash resumes exactly after
//! the last committed page and two writers can never apply the same page.
//!
//! Workers wake on [`EventStore::watch_head`] and poll every second as a
//! fallback. On PostgreSQL each worker first takes a session-level advisory
//! lock named after its projection on a dedicated connection (the lease):
//! one worker per projection across processes; the others retry every
//! second and take over when the holder's connection closes. SQLite assumes
//! one process (the compare-and-set still keeps a second one correct).//!
//! Its parts: this module holds the [`Projector`], checkpoints and one page
//! (`step`); `worker` the background workers, `lease` the advisory lock
//! that makes one of them run per projection, `status` catch-up, status
//! and failures, `rebuild` shadow rebuilds and as-of files.

mod lag;
mod lease;
mod rebuild;
mod status;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerdesk_store::{DbPool, EventStore, RecordedEvent};
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{self, Arg, DbRow, Dialect, Record, Tx};
use crate::error::ProjectionError;
use crate::projection::{Event, Names, Projection};
use crate::schema::{Table, FAILURES};

pub use lag::{LagHistogram, LAG_BUCKETS_MS};
pub use lease::lease_key;
pub use rebuild::{build_as_of, build_as_of_time, open_as_of};

/// Events per page (and per transaction).
pub const DEFAULT_PAGE_SIZE: usize = 2_000;
/// How often an idle worker looks at the log without a wake-up, and how
/// often a worker without the lease retries.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts at one position before a projection is marked failed; the
/// waits between them double from [`FIRST_BACKOFF`] (0.2 + 0.4 + 0.8 +
/// 1.6 s), long enough to ride out a connection blip.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first wait after a failed page.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How often a failed projection tries again: a fix to the database (a
/// table repaired, space freed) then takes effect without a restart, and
/// a fix to the code takes effect with the restart that deploys it.
pub const FAILED_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// How often [`Projector::wait_until`] re-reads the checkpoint while
/// another process's worker holds the projection (its progress does not
/// reach this process's watch).
const RECHECK_INTERVAL: Duration = Duration::from_millis(250);
/// What a projection's worker in this process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// No worker in this process.
    Stopped,
    /// Waiting for the lease another process holds.
    Standby,
    /// Applying events.
    Running,
    /// Caught up, waiting for new events.
    Idle,
    /// A rebuild into shadow tables is in progress.
    Rebuilding,
    /// Stopped on an event it could not apply after [`MAX_ATTEMPTS`];
    /// retried every [`FAILED_RETRY_INTERVAL`], reset by a rebuild.
    Failed,
}

/// Why a projection is failed: the event it cannot apply and the error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionFailure {
    /// The log position of the event it cannot apply.
    pub position: u64,
    /// The error, as the database or the projection gave it.
    pub error: String,
    /// When it was marked failed.
    pub failed_at: Option<DateTime<Utc>>,
}

/// A row of `projection_failures`: the projection's name and its failure.
pub(super) struct FailureRow(String, ProjectionFailure);

impl Record for FailureRow {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(FailureRow(
            row.text("name")?.unwrap_or_default(),
            ProjectionFailure {
                position: row.int0("position")?.max(0) as u64,
                error: row.text("error")?.unwrap_or_default(),
                failed_at: row.time("failed_at")?,
            },
        ))
    }
}

/// What this process knows of a projection without asking the database,
/// for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionHealth {
    /// The projection.
    pub name: &'static str,
    /// The last position this process saw it reach.
    pub position: u64,
    /// Its worker's state in this process.
    pub state: WorkerState,
    /// How often it was marked failed since this process started.
    pub failures_total: u64,
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// Last position applied.
    pub position: u64,
    /// The log's head.
    pub head: u64,
    /// Events not applied yet.
    pub lag_events: u64,
    /// Head's `recorded_at` minus that of the checkpoint's event.
    pub lag_seconds: f64,
    /// The worker in this process.
    pub state: WorkerState,
    /// When the checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
    /// Why it is `failed`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProjectionFailure>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    projections: Vec<Arc<dyn Projection>>,
    page_size: usize,
    states: Mutex<HashMap<&'static str, WorkerState>>,
    /// Each projection's position as this process last saw it: published
    /// by the workers (and every checkpoint read), so that a read waiting
    /// for its own write wakes on the projection's progress.
    positions: HashMap<&'static str, watch::Sender<u64>>,
    failures_total: Mutex<HashMap<&'static str, u64>>,
    failures_table: std::sync::atomic::AtomicBool,
    /// Per projection, how long events waited for this process's worker.
    lags: HashMap<&'static str, lag::LagCounts>,
    /// Pages of the log read lately, shared by the workers.
    pages: Pages,
}

/// The workers of one process mostly want the same page at the same time
/// (they wake on the same head change): one of them reads it (and the vault
/// opens its personal data once), the others take it from here.
#[derive(Default)]
struct Pages {
    recent: Mutex<std::collections::VecDeque<Page>>,
    reading: tokio::sync::Mutex<()>,
}

struct Page {
    from: u64,
    limit: usize,
    /// The head this process knew when the page was read.
    head: u64,
    /// When it was read: a short page is only shared by the workers woken
    /// together, never kept for the poll that looks past a head watch that
    /// did not move (another process's append, a lost NOTIFY).
    read_at: std::time::Instant,
    records: Arc<Vec<RecordedEvent>>,
}

/// How long a page that is not full may be handed to another worker.
const SHORT_PAGE_FRESH: Duration = Duration::from_millis(50);

/// Pages kept: enough for workers a few pages apart.
const PAGES_KEPT: usize = 8;

impl Pages {
    /// A page read earlier that is still what a read now would return: the
    /// same start and size, and either full or read just now at the current
    /// head.
    fn find(&self, from: u64, limit: usize, head: u64) -> Option<Arc<Vec<RecordedEvent>>> {
        let recent = self.recent.lock().ok()?;
        recent
            .iter()
            .find(|p| {
                p.from == from
                    && p.limit == limit
                    && (p.records.len() == limit
                        || (p.head >= head && p.read_at.elapsed() < SHORT_PAGE_FRESH))
            })
            .map(|p| p.records.clone())
    }

    fn keep(&self, page: Page) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= PAGES_KEPT {
                recent.pop_front();
            }
            recent.push_back(page);
        }
    }
}

/// Runs projections against one store: background workers, catch-up,
/// status, rebuilds.
#[derive(Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

struct Checkpoint {
    position: u64,
    event_time: Option<i64>,
    updated_at: Option<i64>,
}

impl Record for Checkpoint {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Checkpoint {
            position: row.int0("position")?.max(0) as u64,
            event_time: row.int("event_time")?,
            updated_at: row.int("updated_at")?,
        })
    }
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// Where a page goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// The live tables and the checkpoint (catch-up, as-of builds).
    Checkpoint,
    /// As `Checkpoint`, by the background worker, whose pages count
    /// towards the projection's lag.
    Worker,
}

/// Outcome of one page.
enum Step {
    /// Applied this many events.
    Applied(usize),
    /// Someone else moved the checkpoint; reload it.
    Moved,
}

impl Projector {
    /// The built-in projections on `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_projections(store, crate::builtin())
    }

    /// Custom projections on `store`.
    pub fn with_projections(
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Self {
        let states = projections
            .iter()
            .map(|p| (p.name(), WorkerState::Stopped))
            .collect();
        let positions = projections
            .iter()
            .map(|p| (p.name(), watch::channel(0).0))
            .collect();
        let lags = projections
            .iter()
            .map(|p| (p.name(), lag::LagCounts::default()))
            .collect();
        Projector {
            inner: Arc::new(Inner {
                store,
                projections,
                page_size: DEFAULT_PAGE_SIZE,
                states: Mutex::new(states),
                positions,
                failures_total: Mutex::default(),
                failures_table: Default::default(),
                lags,
                pages: Pages::default(),
            }),
        }
    }

    /// Set the page size (events per transaction). Call before starting.
    pub fn page_size(self, page_size: usize) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            store: arc.store.clone(),
            projections: arc.projections.clone(),
            page_size: arc.page_size,
            states: Mutex::new(arc.states.lock().map(|s| s.clone()).unwrap_or_default()),
            positions: arc
                .positions
                .iter()
                .map(|(name, tx)| (*name, watch::channel(*tx.borrow()).0))
                .collect(),
            failures_total: Mutex::default(),
            failures_table: Default::default(),
            lags: arc
                .lags
                .keys()
                .map(|name| (*name, lag::LagCounts::default()))
                .collect(),
            pages: Pages::default(),
        });
        Projector {
            inner: Arc::new(Inner {
                page_size: page_size.max(1),
                ..inner
            }),
        }
    }

    /// The projections' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner.projections.iter().map(|p| p.name()).collect()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    fn pool(&self) -> DbPool {
        self.inner.store.db()
    }

    fn projection(&self, name: &str) -> Result<Arc<dyn Projection>, ProjectionError> {
        self.inner
            .projections
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    fn set_state(&self, name: &'static str, state: WorkerState) {
        if let Ok(mut s) = self.inner.states.lock() {
            s.insert(name, state);
        }
    }

    fn state(&self, name: &str) -> WorkerState {
        self.inner
            .states
            .lock()
            .ok()
            .and_then(|s| s.get(name).copied())
            .unwrap_or(WorkerState::Stopped)
    }

    /// Tell waiters `name` has reached `position` (positions only grow).
    fn publish(&self, name: &str, position: u64) {
        if let Some(tx) = self.inner.positions.get(name) {
            tx.send_if_modified(|p| {
                let grew = position > *p;
                *p = (*p).max(position);
                grew
            });
        }
    }

    /// How long events waited for this process's workers, per projection.
    pub fn lags(&self) -> Vec<LagHistogram> {
        self.inner
            .projections
            .iter()
            .filter_map(|p| self.inner.lags.get(p.name()).map(|l| l.snapshot(p.name())))
            .collect()
    }

    /// The position of projection `name`, read from its checkpoint.
    pub async fn position(&self, name: &str) -> Result<u64, ProjectionError> {
        self.projection(name)?;
        let rows: Vec<Checkpoint> = db::fetch(
            &self.pool(),
            "SELECT position, event_time, updated_at FROM projection_checkpoints WHERE name = $1",
            vec![name.into()],
        )
        .await?;
        let position = rows.first().map_or(0, |c| c.position);
        self.publish(name, position);
        Ok(position)
    }

    /// Wait until projection `name` has reached `position`, at most
    /// `timeout`; where it stands then (below `position` on a timeout).
    ///
    /// Wakes on the worker's own progress (a watch it publishes after each
    /// page), so a read that follows a write answers as soon as the page
    /// holding the write commits. When this process's worker does not hold
    /// the projection (another process does, on PostgreSQL), the
    /// checkpoint is re-read every 250 ms instead.
    pub async fn wait_until(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<u64, ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = self
            .inner
            .positions
            .get(name)
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))?
            .subscribe();
        let mut reached = self.position(name).await?;
        loop {
            reached = reached.max(*seen.borrow_and_update());
            let now = tokio::time::Instant::now();
            if reached >= position || now >= deadline {
                return Ok(reached);
            }
            let local = matches!(self.state(name), WorkerState::Running | WorkerState::Idle);
            let nap = if local {
                deadline - now
            } else {
                (deadline - now).min(RECHECK_INTERVAL)
            };
            match tokio::time::timeout(nap, seen.changed()).await {
                Ok(_) => {}
                Err(_) if !local => reached = self.position(name).await?,
                Err(_) => {}
            }
        }
    }

    /// Create the checkpoint rows, and any table the migration did not
    /// create (custom projections, the failures table). Idempotent.
    pub async fn ensure_schema(&self) -> Result<(), ProjectionError> {
        let pool = self.pool();
        let dialect = Dialect::of(&pool);
        let tables: Vec<Table> = self
            .inner
            .projections
            .iter()
            .flat_map(|p| p.tables().iter().copied())
            .chain(std::iter::once(FAILURES))
            .collect();
        let names = self.names();
        let mut tx = db::begin_write(&pool).await?;
        if dialect == Dialect::Postgres {
            // Every worker of every process runs this at start; two
            // concurrent `CREATE TABLE`s of a table no migration made (a
            // projection added since) collide in PostgreSQL's catalogue.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                vec![lease_key("ensure_schema").into()],
            )
            .await?;
        }
        for t in tables {
            if !table_exists(&mut tx, t.name.to_owned()).await? {
                tx.batch(&t.create_table(dialect, t.name)).await?;
                tx.batch(&t.create_indexes(t.name, "")).await?;
            }
        }
        for name in names {
            tx.execute(
                "INSERT INTO projection_checkpoints (name, position, event_time, updated_at) \
                 VALUES ($1, 0, NULL, $2) ON CONFLICT (name) DO NOTHING",
                vec![name.into(), now_us().into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self, name: &str) -> Result<Checkpoint, ProjectionError> {
        // The row must exist for the compare-and-set to ever succeed.
        db::execute(
            &self.pool(),
            "INSERT INTO projection_checkpoints (name, position, event_time, updated_at) \
             VALUES ($1, 0, NULL, $2) ON CONFLICT (name) DO NOTHING",
            vec![name.into(), now_us().into()],
        )
        .await?;
        let rows: Vec<Checkpoint> = db::fetch(
            &self.pool(),
            "SELECT position, event_time, updated_at FROM projection_checkpoints WHERE name = $1",
            vec![name.into()],
        )
        .await?;
        let cp = rows.into_iter().next().unwrap_or(Checkpoint {
            position: 0,
            event_time: None,
            updated_at: None,
        });
        self.publish(name, cp.position);
        Ok(cp)
    }

    /// The `limit` events after `from`, read once for all the workers that
    /// ask for them (see [`Pages`]).
    async fn page(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Arc<Vec<RecordedEvent>>, ProjectionError> {
        let pages = &self.inner.pages;
        let head = *self.inner.store.watch_head().borrow();
        if let Some(page) = pages.find(from, limit, head) {
            return Ok(page);
        }
        let _one_reader = pages.reading.lock().await;
        let head = *self.inner.store.watch_head().borrow();
        if let Some(page) = pages.find(from, limit, head) {
            return Ok(page);
        }
        let records = Arc::new(self.inner.store.read_all(from, limit).await?);
        pages.keep(Page {
            from,
            limit,
            head,
            read_at: std::time::Instant::now(),
            records: records.clone(),
        });
        Ok(records)
    }

    /// Read the page after `from` and apply it to `names`; the checkpoint
    /// moves from `from` in the same transaction (compare-and-set).
    async fn step(
        &self,
        p: &dyn Projection,
        pool: &DbPool,
        names: &Names,
        from: u64,
        until: Option<u64>,
        write: Write,
    ) -> Result<(Step, u64), ProjectionError> {
        let mut limit = self.inner.page_size;
        if let Some(until) = until {
            limit = limit.min(until.saturating_sub(from) as usize);
        }
        if limit == 0 {
            return Ok((Step::Applied(0), from));
        }
        let records = self.page(from, limit).await?;
        let Some(last) = records.last() else {
            return Ok((Step::Applied(0), from));
        };
        let (to, to_time) = (last.position, last.recorded_at.timestamp_micros());
        let n = records.len();
        let recorded: Vec<i64> = match write {
            Write::Worker => records
                .iter()
                .map(|r| r.recorded_at.timestamp_micros())
                .collect(),
            Write::Checkpoint => Vec::new(),
        };
        let events: Vec<Event> = records
            .iter()
            .filter(|r| p.wants(&r.stream_type, &r.event_type))
            .map(|r| Event::decode(r.clone(), true))
            .collect();
        // Read models are rebuilt from the log, so their commits need not
        // wait for the disk (`begin_rebuildable`, ADR 0001).
        let mut tx = db::begin_rebuildable(pool).await?;
        // The checkpoint first: it takes the row lock (PostgreSQL) or the
        // write lock (SQLite) before any read-model row is touched.
        let moved = tx
            .execute(
                "UPDATE projection_checkpoints SET position = $1, event_time = $2, updated_at = $3 \
                 WHERE name = $4 AND position = $5",
                vec![to.into(), to_time.into(), now_us().into(), p.name().into(), from.into()],
            )
            .await?;
        if moved == 0 {
            return Ok((Step::Moved, from));
        }
        if !events.is_empty() {
            p.apply(&events, names, &mut tx).await?;
        }
        tx.commit().await?;
        if let Some(lags) = self.inner.lags.get(p.name()) {
            lags.record(now_us(), recorded.into_iter());
        }
        Ok((Step::Applied(n), to))
    }
}

async fn table_exists(tx: &mut Tx, name: String) -> Result<bool, sqlx::Error> {
    struct Count(i64);
    impl Record for Count {
        fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
            Ok(Count(row.int0("n")?))
        }
    }
    let sql = match tx.dialect() {
        Dialect::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
        Dialect::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let rows: Vec<Count> = tx.fetch(sql, vec![Arg::from(name)]).await?;
    Ok(rows.first().is_some_and(|c| c.0 > 0))
}
