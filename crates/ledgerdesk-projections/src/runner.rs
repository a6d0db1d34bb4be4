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
//! one process (the compare-and-set still keeps a second one correct).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use ledgerdesk_domain::AnyEvent;
use ledgerdesk_store::{DbPool, EventStore, Metadata, RecordedEvent};
use serde::Serialize;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::watch;

use crate::db::{self, Arg, DbRow, Dialect, Record, Tx};
use crate::schema::{Table, CHECKPOINTS, FAILURES};
use crate::ProjectionError;

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

/// One event of the log, decoded once per page for a projection.
#[derive(Debug, Clone)]
pub struct Event {
    /// The stored record.
    pub record: RecordedEvent,
    /// Its parsed metadata (default when unreadable).
    pub metadata: Metadata,
    /// Its parsed payload (`Null` when unreadable).
    pub payload: Value,
    /// The domain event, when the projection wants its stream type and it
    /// decodes.
    pub domain: Option<AnyEvent>,
}

/// The ticket ids a page of events touches, sorted and without repeats: the
/// rows a ticket-keyed projection loads before applying the page.
pub(crate) fn ticket_ids(events: &[Event]) -> Vec<String> {
    let ids: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| match &e.domain {
            Some(AnyEvent::Ticket(t)) => Some(t.ticket_id().to_string()),
            _ => None,
        })
        .collect();
    ids.into_iter().collect()
}

impl Event {
    /// Decode `record`; the domain event only if `want` is true.
    pub fn decode(record: RecordedEvent, want: bool) -> Self {
        let metadata = record.metadata().unwrap_or_default();
        let payload = if want {
            serde_json::from_str(&record.payload).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let domain = if want {
            match AnyEvent::decode(
                &record.stream_type,
                &record.event_type,
                record.schema_version,
                &payload,
            ) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::debug!(position = record.position, error = %e, "event not decodable");
                    None
                }
            }
        } else {
            None
        };
        Event {
            record,
            metadata,
            payload,
            domain,
        }
    }

    /// `recorded_at` in microseconds.
    pub fn at(&self) -> i64 {
        self.record.recorded_at.timestamp_micros()
    }
}

/// The table names a projection writes to: live, or a rebuild's shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    suffix: &'static str,
}

impl Names {
    /// The live tables.
    pub const LIVE: Names = Names { suffix: "" };
    /// A rebuild's shadow tables.
    pub const SHADOW: Names = Names { suffix: "__shadow" };

    /// The actual name of table `base`.
    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }
}

/// A read model: a name, its tables and how a page of events changes them.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Unique name; the checkpoint's key.
    fn name(&self) -> &'static str;
    /// The tables it owns (created by the migration; shadowed on rebuild).
    fn tables(&self) -> &'static [Table];
    /// Whether events of this stream and event type matter (others are
    /// skipped without decoding; the checkpoint still moves past them).
    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        let _ = (stream_type, event_type);
        true
    }
    /// Apply a page of events, in position order, inside `tx`.
    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError>;
}

/// The read models of ledgerdesk.
pub fn builtin() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(crate::tickets::TicketsProjection),
        Arc::new(crate::conversation::ConversationProjection),
        Arc::new(crate::audit::AuditProjection),
        Arc::new(crate::presence::PresenceProjection),
        Arc::new(crate::reports::ReportsProjection),
        Arc::new(crate::people::PeopleProjection),
    ]
}

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

impl Record for (String, ProjectionFailure) {
    fn read(row: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok((
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
        Self::with_projections(store, builtin())
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
        Projector {
            inner: Arc::new(Inner {
                store,
                projections,
                page_size: DEFAULT_PAGE_SIZE,
                states: Mutex::new(states),
                positions,
                failures_total: Mutex::default(),
                failures_table: Default::default(),
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
        self.inner.store.pool()
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

    /// Every failed projection, from the database (so across processes).
    pub async fn failures(&self) -> Result<Vec<(String, ProjectionFailure)>, ProjectionError> {
        self.failures_table().await;
        Ok(db::fetch(
            &self.pool(),
            "SELECT name, position, error, failed_at FROM projection_failures ORDER BY name",
            vec![],
        )
        .await?)
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
    async fn record_failure(&self, name: &'static str, position: u64, error: &str) {
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

    async fn clear_failure(&self, name: &str) -> Result<(), sqlx::Error> {
        db::execute(
            &self.pool(),
            "DELETE FROM projection_failures WHERE name = $1",
            vec![name.into()],
        )
        .await
        .map(|_| ())
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

    /// Read the page after `from` and apply it to `names`. With
    /// `checkpoint`, the checkpoint moves from `from` in the same
    /// transaction (compare-and-set).
    async fn step(
        &self,
        p: &dyn Projection,
        pool: &DbPool,
        names: &Names,
        from: u64,
        until: Option<u64>,
        checkpoint: bool,
    ) -> Result<(Step, u64), ProjectionError> {
        let mut limit = self.inner.page_size;
        if let Some(until) = until {
            limit = limit.min(until.saturating_sub(from) as usize);
        }
        if limit == 0 {
            return Ok((Step::Applied(0), from));
        }
        let records = self.inner.store.read_all(from, limit).await?;
        let Some(last) = records.last() else {
            return Ok((Step::Applied(0), from));
        };
        let (to, to_time) = (last.position, last.recorded_at.timestamp_micros());
        let n = records.len();
        let events: Vec<Event> = records
            .into_iter()
            .filter(|r| p.wants(&r.stream_type, &r.event_type))
            .map(|r| Event::decode(r, true))
            .collect();
        let mut tx = if checkpoint {
            db::begin(pool).await?
        } else {
            db::begin_write(pool).await?
        };
        // The checkpoint first: it takes the row lock (PostgreSQL) or the
        // write lock (SQLite) before any read-model row is touched.
        if checkpoint {
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
        }
        if !events.is_empty() {
            p.apply(&events, names, &mut tx).await?;
        }
        tx.commit().await?;
        Ok((Step::Applied(n), to))
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
                .step(&*p, &pool, &Names::LIVE, position, None, true)
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
                    .step(&*p, &pool, &Names::LIVE, from, until, true)
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
                            if self.state(name) != WorkerState::Failed {
                                if let Ok(mut totals) = self.inner.failures_total.lock() {
                                    *totals.entry(name).or_default() += 1;
                                }
                                self.set_state(name, WorkerState::Failed);
                            }
                            self.record_failure(name, from + 1, &error_chain(&e))
                                .boxed()
                                .await;
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

    /// Rebuild projection `name` from position 0 into shadow tables while
    /// the live ones keep serving, then swap them in with the checkpoint in
    /// one transaction. `progress(done, total)` is called after each page.
    /// Returns the position the rebuilt tables stand at.
    pub async fn rebuild(
        &self,
        name: &str,
        progress: impl Fn(u64, u64) + Send + Sync,
    ) -> Result<u64, ProjectionError> {
        let p = self.projection(name)?;
        self.ensure_schema().await?;
        let pool = self.pool();
        let dialect = Dialect::of(&pool);
        let mut lock = Lease::named(&format!("rebuild:{name}"));
        if !lock.acquire(&pool).await? {
            return Err(ProjectionError::Io(format!(
                "a rebuild of `{name}` is already running"
            )));
        }
        let previous = self.state(p.name());
        self.set_state(p.name(), WorkerState::Rebuilding);
        let result = self.rebuild_inner(&*p, &pool, dialect, &progress).await;
        self.set_state(
            p.name(),
            match previous {
                WorkerState::Rebuilding => WorkerState::Stopped,
                // A rebuild resets a failure; the worker's next page says
                // how it fares on the rebuilt tables.
                WorkerState::Failed if result.is_ok() => WorkerState::Running,
                other => other,
            },
        );
        lock.release().await;
        result
    }

    async fn rebuild_inner(
        &self,
        p: &dyn Projection,
        pool: &DbPool,
        dialect: Dialect,
        progress: &(impl Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, ProjectionError> {
        let shadow = Names::SHADOW;
        let mut tx = db::begin(pool).await?;
        for t in p.tables() {
            let s = shadow.table(t.name);
            tx.batch(&format!("DROP TABLE IF EXISTS {s}")).await?;
            // Indexes come after the load: building them once is cheaper.
            tx.batch(&t.create_table(dialect, &s)).await?;
        }
        tx.commit().await?;

        let mut total = self.inner.store.head().await?.position;
        let mut position = 0;
        loop {
            let (step, to) = self.step(p, pool, &shadow, position, None, false).await?;
            match step {
                Step::Applied(0) => break,
                Step::Applied(_) => {
                    position = to;
                    total = total.max(to);
                    progress(position, total);
                }
                Step::Moved => unreachable!("shadow builds do not compare-and-set"),
            }
        }
        let recorded_at = if position == 0 {
            None
        } else {
            self.inner
                .store
                .read_all(position - 1, 1)
                .await?
                .first()
                .map(|e| e.recorded_at.timestamp_micros())
        };

        // Indexes get a fresh suffix: index names are database-wide on both
        // engines and the live table's indexes still hold theirs.
        let index_suffix = format!("__r{}", now_us());
        let mut tx = db::begin(pool).await?;
        for t in p.tables() {
            tx.batch(&t.create_indexes(&shadow.table(t.name), &index_suffix))
                .await?;
        }
        tx.commit().await?;

        // The swap: the checkpoint row first (it serialises against a live
        // page in flight), then drop and rename every table.
        let mut tx = db::begin(pool).await?;
        tx.execute(
            "UPDATE projection_checkpoints SET position = $1, event_time = $2, updated_at = $3 WHERE name = $4",
            vec![position.into(), recorded_at.into(), now_us().into(), p.name().into()],
        )
        .await?;
        for t in p.tables() {
            tx.batch(&format!(
                "DROP TABLE {live}; ALTER TABLE {shadow} RENAME TO {live};",
                live = t.name,
                shadow = shadow.table(t.name)
            ))
            .await?;
        }
        tx.execute(
            "DELETE FROM projection_failures WHERE name = $1",
            vec![p.name().into()],
        )
        .await?;
        tx.commit().await?;
        self.publish(p.name(), position);
        tracing::info!(
            projection = p.name(),
            position,
            "projection rebuilt and swapped in"
        );
        Ok(position)
    }

    /// See [`build_as_of`].
    pub async fn build_as_of(
        &self,
        name: &str,
        until_position: u64,
        out: &Path,
    ) -> Result<u64, ProjectionError> {
        let p = self.projection(name)?;
        self.as_of(&*p, until_position, out).await
    }

    async fn as_of(
        &self,
        p: &dyn Projection,
        until: u64,
        out: &Path,
    ) -> Result<u64, ProjectionError> {
        let _ = std::fs::remove_file(out);
        let pool = open_sqlite_file(out, true).await?;
        let target = DbPool::Sqlite(pool.clone());
        let mut tx = db::begin(&target).await?;
        tx.batch(&CHECKPOINTS.create_table(Dialect::Sqlite, CHECKPOINTS.name))
            .await?;
        for t in p.tables() {
            tx.batch(&t.create_table(Dialect::Sqlite, t.name)).await?;
            tx.batch(&t.create_indexes(t.name, "")).await?;
        }
        tx.execute(
            "INSERT INTO projection_checkpoints (name, position, event_time, updated_at) VALUES ($1, 0, NULL, $2)",
            vec![p.name().into(), now_us().into()],
        )
        .await?;
        tx.commit().await?;
        let mut position = 0;
        loop {
            match self
                .step(p, &target, &Names::LIVE, position, Some(until), true)
                .await?
            {
                (Step::Applied(0), _) => break,
                (Step::Applied(_), to) => position = to,
                (Step::Moved, _) => {
                    return Err(ProjectionError::Io("as-of file changed underneath".into()))
                }
            }
        }
        pool.close().await;
        Ok(position)
    }
}

/// Build projection `name` as it stood at log position `until_position`
/// into a new SQLite file `out` (replaced if present), without touching the
/// live database. Returns the position reached (≤ `until_position`). Open
/// the file with [`open_as_of`] and use the usual query functions on it.
pub async fn build_as_of(
    store: Arc<dyn EventStore>,
    name: &str,
    until_position: u64,
    out: &Path,
) -> Result<u64, ProjectionError> {
    Projector::new(store)
        .build_as_of(name, until_position, out)
        .await
}

/// [`build_as_of`] at the last position recorded at or before `time`.
pub async fn build_as_of_time(
    store: Arc<dyn EventStore>,
    name: &str,
    time: DateTime<Utc>,
    out: &Path,
) -> Result<u64, ProjectionError> {
    let until = store.position_at(time).await?;
    build_as_of(store, name, until, out).await
}

/// Open an as-of file for queries.
pub async fn open_as_of(path: &Path) -> Result<DbPool, ProjectionError> {
    Ok(DbPool::Sqlite(open_sqlite_file(path, false).await?))
}

async fn open_sqlite_file(path: &Path, create: bool) -> Result<sqlx::SqlitePool, ProjectionError> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?)
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

/// The advisory-lock key of a lease: FNV-1a of the name, stable across
/// processes and builds.
pub fn lease_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "ledgerdesk.projection:".bytes().chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The right to run one projection: on PostgreSQL a session-level advisory
/// lock held by a dedicated connection; on SQLite always granted.
struct Lease {
    key: i64,
    conn: Option<sqlx::PgConnection>,
    held: bool,
}

impl Lease {
    fn new(projection: &str) -> Self {
        Self::named(projection)
    }

    fn named(name: &str) -> Self {
        Lease {
            key: lease_key(name),
            conn: None,
            held: false,
        }
    }

    async fn acquire(&mut self, pool: &DbPool) -> Result<bool, sqlx::Error> {
        let DbPool::Postgres(pg) = pool else {
            self.held = true;
            return Ok(true);
        };
        if self.conn.is_none() {
            self.conn = Some(pg.acquire().await?.detach());
        }
        let conn = self.conn.as_mut().expect("connection just set");
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?;
        self.held = got;
        Ok(got)
    }

    async fn alive(&mut self) -> bool {
        match &mut self.conn {
            None => self.held,
            Some(conn) => self.held && conn.ping().await.is_ok(),
        }
    }

    async fn release(&mut self) {
        self.held = false;
        if let Some(conn) = self.conn.take() {
            // Closing the session releases its advisory locks.
            let _ = conn.close().await;
        }
    }
}
