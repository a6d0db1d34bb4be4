//! Shadow rebuilds (a projection rebuilt from position 0 beside its live
//! tables, then swapped in) and as-of files (a projection as it stood at a
//! past position, in a separate SQLite file).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledgerdesk_store::{DbPool, EventStore};

use super::lease::Lease;
use super::{now_us, Projector, Step, WorkerState, Write};
use crate::db::{self, Dialect};
use crate::error::ProjectionError;
use crate::projection::Event;
use crate::projection::{Names, Projection};
use crate::schema::CHECKPOINTS;

impl Projector {
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
        let result = self.rebuild_inner(&p, &pool, dialect, &progress).await;
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
        p: &Arc<dyn Projection>,
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
        // Page N+1 is read and decoded while page N is applied: the read
        // and the JSON decoding run on the runtime's threads while the
        // database (SQLite's worker thread, or the PostgreSQL server)
        // writes. A shadow build has no checkpoint to compare-and-set, so
        // the pages need not wait for each other's commit.
        let mut pages = read_ahead(self.inner.store.clone(), p.clone(), self.inner.page_size);
        while let Some(page) = pages.recv().await {
            let page = page?;
            if !page.events.is_empty() {
                // The shadow tables are seen by no one until the swap,
                // whose commit is synchronous and so flushes the log up to
                // itself, every page before it included; a crash before the
                // swap leaves a shadow the next rebuild drops. A page need
                // not wait for its own flush.
                let mut tx = db::begin_rebuildable(pool).await?;
                p.apply(&page.events, &shadow, &mut tx).await?;
                tx.commit().await?;
            }
            position = page.to;
            total = total.max(position);
            progress(position, total);
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
}

/// One page of the log, decoded for a projection.
struct Page {
    /// The events the projection wants.
    events: Vec<Event>,
    /// The position of the page's last event (wanted or not).
    to: u64,
}

/// Pages of the whole log from position 0, read and decoded for `p` by a
/// task of their own, at most two ahead of the caller. The task ends at
/// the end of the log, after an error (sent as the last item), or when the
/// receiver is dropped.
fn read_ahead(
    store: Arc<dyn EventStore>,
    p: Arc<dyn Projection>,
    page_size: usize,
) -> tokio::sync::mpsc::Receiver<Result<Page, ProjectionError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut from = 0;
        loop {
            let records = match store.read_all(from, page_size).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let Some(last) = records.last() else {
                return;
            };
            let to = last.position;
            let events = records
                .into_iter()
                .filter(|r| p.wants(&r.stream_type, &r.event_type))
                .map(|r| Event::decode(r, true))
                .collect();
            if tx.send(Ok(Page { events, to })).await.is_err() {
                return;
            }
            from = to;
        }
    });
    rx
}

impl Projector {
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
        let target = DbPool::open_sqlite_file(out, true).await?;
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
                .step(
                    p,
                    &target,
                    &Names::LIVE,
                    position,
                    Some(until),
                    Write::Checkpoint,
                )
                .await?
            {
                (Step::Applied(0), _) => break,
                (Step::Applied(_), to) => position = to,
                (Step::Moved, _) => {
                    return Err(ProjectionError::Io("as-of file changed underneath".into()))
                }
            }
        }
        target.close().await;
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
    Ok(DbPool::open_sqlite_file(path, false).await?)
}
