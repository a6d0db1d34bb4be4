//! The SQLite backend: the embedded default.
//!
//! WAL mode with `synchronous=FULL`, so a commit is on disk when an append
//! returns. One writer connection takes `BEGIN IMMEDIATE`, which is SQLite's
//! database-wide write lock, so several processes on one file also stay
//! serialized. `secure_delete` is on: erasure relies on deleted bytes
//! being overwritten (`docs/privacy.md`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::watch;

use crate::db::{DbPool, Pool, SqliteWrites};
use crate::event::{Appended, Backend, Head, RecordedEvent, StreamAppend, StreamRange};
use crate::plan::{Row as EventRow, Tip};
use crate::store::EventStore;
use crate::writer::{WriteConn, Writer};
use crate::{sql, OpenOptions, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Rows per INSERT statement: 11 binds each stays far below SQLite's limit.
const INSERT_CHUNK: usize = 256;

/// The SQLite event store.
pub struct SqliteStore {
    pool: SqlitePool,
    writes: SqliteWrites,
    writer: Writer,
    head: watch::Receiver<u64>,
}

/// Opening is serialised within a process. A new file's first connections
/// switch it to WAL and migrate it, and SQLite answers "database is locked"
/// at once, without its busy timeout, to a transaction that read before
/// another connection committed; several stores opening one new file
/// together (the tests, a CLI beside a server) then exhaust the migration
/// retries. Across processes the retries remain.
static OPENING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl SqliteStore {
    /// Open (creating the file and its folder if needed) and migrate.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self, StoreError> {
        let _opening = OPENING.lock().await;
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.lock_timeout)
            // Deleted and overwritten content is zeroed, so a destroyed
            // subject key or a deleted email does not linger in free pages.
            .pragma("secure_delete", "ON")
            .foreign_keys(true);
        if let Some(dir) = connect.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect.clone())
            .await?;
        if options.migrate {
            Self::migrate(&pool).await?;
        }
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await?;
        // One connection: read-model writes queue behind the gate anyway.
        let relaxed = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.synchronous(SqliteSynchronous::Normal))
            .await?;
        let writes = SqliteWrites {
            gate: Arc::default(),
            behind: Arc::default(),
            relaxed,
        };
        let (head_tx, head) = watch::channel(0);
        let tip = sql::decode_tip(sqlx::query(sql::TIP).fetch_optional(&pool).await?)?;
        head_tx.send_replace(tip.position);
        let writer = Writer::spawn(
            SqliteWriter {
                pool: write_pool,
                gate: writes.gate.clone(),
                held: None,
                lock_timeout: options.lock_timeout,
                conn: None,
            },
            head_tx,
            options.observer.clone(),
        );
        Ok(Self {
            pool,
            writes,
            writer,
            head,
        })
    }

    /// Apply the migrations to `pool`.
    ///
    /// SQLite has no migration lock: when two processes start on a new file
    /// at once, one of them fails on "table already exists". Running again
    /// then finds the migration recorded and skips it.
    pub async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match MIGRATOR.run(pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 10 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn db(&self) -> DbPool {
        DbPool(Pool::Sqlite(self.pool.clone()), Some(self.writes.clone()))
    }

    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<Appended>, StoreError> {
        self.writer.append(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        range: StreamRange,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let [from, to, until_pos, until_time] = sql::stream_bounds(&range);
        sqlx::query(&sql::read_stream())
            .bind(stream_id)
            .bind(from)
            .bind(to)
            .bind(until_pos)
            .bind(until_time)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sql::decode_event)
            .collect()
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        // Each row is decoded as it arrives, while the database produces
        // the next ones, instead of after the whole page is buffered.
        let mut events = Vec::with_capacity(limit.min(sql::READ_ALL_RESERVE));
        let statement = sql::read_all();
        let mut rows = sqlx::query(&statement)
            .bind(sql::clamp(after))
            .bind(sql::clamp(limit as u64))
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            events.push(sql::decode_event(&row)?);
        }
        Ok(events)
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let tip = sql::decode_tip(sqlx::query(sql::TIP).fetch_optional(&self.pool).await?)?;
        Ok(tip.into())
    }

    async fn position_at(&self, time: DateTime<Utc>) -> Result<u64, StoreError> {
        let p: i64 = sqlx::query_scalar(sql::POSITION_AT)
            .bind(time.timestamp_micros())
            .fetch_one(&self.pool)
            .await?;
        Ok(p.max(0) as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }
}

struct SqliteWriter {
    pool: SqlitePool,
    /// The process's write gate ([`SqliteWrites::gate`]), held from
    /// `BEGIN IMMEDIATE` to the end of the transaction.
    gate: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// How long an append waits for the gate, as for SQLite's own lock
    /// (`busy_timeout`): a read-model transaction that never ends makes
    /// appends unavailable (503), not stuck.
    lock_timeout: Duration,
    conn: Option<PoolConnection<Sqlite>>,
}

impl SqliteWriter {
    fn conn(&mut self) -> Result<&mut PoolConnection<Sqlite>, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Invalid("writer used outside a transaction".into()))
    }
}

impl WriteConn for SqliteWriter {
    async fn begin_locked(&mut self) -> Result<Tip, StoreError> {
        let gate = tokio::time::timeout(self.lock_timeout, self.gate.clone().lock_owned());
        self.held = Some(
            gate.await
                .map_err(|_| StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut)))?,
        );
        // Kept before BEGIN so that the writer's rollback always finds it.
        self.conn = Some(self.pool.acquire().await?);
        // IMMEDIATE takes the write lock now; a deferred BEGIN would fail
        // with SQLITE_BUSY on upgrade if another process wrote meanwhile.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut **self.conn()?)
            .await?;
        let row = sqlx::query(sql::TIP)
            .fetch_optional(&mut **self.conn()?)
            .await?;
        sql::decode_tip(row)
    }

    async fn versions(&mut self, streams: &[String]) -> Result<HashMap<String, u64>, StoreError> {
        let ids = serde_json::to_string(streams).unwrap_or_else(|_| "[]".into());
        // One index probe per stream for its last version; `MAX … GROUP BY`
        // read every event of each stream, a cost that grew with its length.
        // Streams without events come back as NULL and are skipped here: a
        // `WHERE v IS NOT NULL` would make SQLite run the probe twice.
        let rows = sqlx::query(
            "SELECT s.value, (SELECT version FROM events WHERE stream_id = s.value \
             ORDER BY version DESC LIMIT 1) AS v FROM json_each($1) AS s",
        )
        .bind(ids)
        .fetch_all(&mut **self.conn()?)
        .await?;
        rows.iter()
            .filter_map(|r| match r.try_get::<Option<i64>, _>(1) {
                Ok(None) => None,
                Ok(Some(v)) => Some(r.try_get::<String, _>(0).map(|id| (id, v.max(0) as u64))),
                Err(e) => Some(Err(e)),
            })
            .map(|r| Ok(r?))
            .collect()
    }

    async fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        let conn = self.conn()?;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({}) ", sql::COLUMNS));
            q.push_values(chunk, |mut b, r| {
                // Bound as `&str`, which sqlx keeps borrowed; a `&String` is
                // copied into the arguments.
                b.push_bind(r.position)
                    .push_bind(r.stream_id.as_str())
                    .push_bind(r.stream_type.as_str())
                    .push_bind(r.version)
                    .push_bind(r.event_id.as_str())
                    .push_bind(r.event_type.as_str())
                    .push_bind(r.schema_version)
                    .push_bind(r.payload.as_str())
                    .push_bind(r.metadata.as_str())
                    .push_bind(r.recorded_at_us)
                    .push_bind(r.hash.as_str());
            });
            q.build().execute(&mut **conn).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, _head: Option<u64>) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut **self.conn()?).await?;
        // Only a committed connection goes back to the pool; after a failed
        // COMMIT the caller's rollback still has it.
        self.conn = None;
        self.held = None;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        // Whatever happens below, this transaction no longer writes.
        let _held = self.held.take();
        if let Some(mut conn) = self.conn.take() {
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                // A connection in an unknown state must not go back to the pool.
                conn.detach();
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl From<Tip> for Head {
    fn from(t: Tip) -> Self {
        Head {
            position: t.position,
            hash: t.hash,
            recorded_at: (t.position > 0)
                .then(|| sql::from_micros(t.recorded_at_us))
                .flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{EventStore, ExpectedVersion, Metadata, NewEvent};

    /// A read-model transaction holds the write gate; an append waits for
    /// it no longer than for SQLite's own lock, then is unavailable (a 503),
    /// and goes through once the transaction ends.
    #[tokio::test]
    async fn an_append_waits_for_the_write_gate_no_longer_than_the_lock_timeout() {
        let dir = std::env::temp_dir().join("ledgerdesk-store-tests");
        let path = dir.join(format!("{}-gate.db", uuid::Uuid::now_v7().simple()));
        let options = crate::OpenOptions {
            lock_timeout: std::time::Duration::from_millis(200),
            ..crate::OpenOptions::default()
        };
        let store = super::SqliteStore::open(&format!("sqlite://{}", path.display()), &options)
            .await
            .unwrap();
        let event = || {
            vec![NewEvent::new(
                "test.happened",
                1,
                serde_json::json!({}),
                Metadata::system(),
            )]
        };
        let read_model = crate::db::begin_rebuildable(&store.db()).await.unwrap();
        let refused = store.append("test-1", ExpectedVersion::Any, event()).await;
        assert!(
            matches!(&refused, Err(e) if e.is_unavailable()),
            "{refused:?}"
        );
        read_model.commit().await.unwrap();
        let done = store
            .append("test-1", ExpectedVersion::Any, event())
            .await
            .unwrap();
        assert_eq!(done.position, 1, "the refused append wrote nothing");
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// Several stores opening one new file at once (the test suites do,
    /// a CLI beside a server can): before opening was serialised, about 1
    /// open in 100 failed with "database is locked" on a busy machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_open_one_new_file_together() {
        let dir = std::env::temp_dir().join("ledgerdesk-store-tests");
        for round in 0..20 {
            let path = dir.join(format!("{}-{round}.db", uuid::Uuid::now_v7().simple()));
            let url = format!("sqlite://{}", path.display());
            let options = crate::OpenOptions::default();
            let opened =
                futures::future::join_all((0..6).map(|_| super::SqliteStore::open(&url, &options)))
                    .await;
            let failed: Vec<String> = opened
                .iter()
                .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                .collect();
            drop(opened);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            assert!(failed.is_empty(), "round {round}: {failed:?}");
        }
    }
}
