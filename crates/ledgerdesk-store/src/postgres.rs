//! The PostgreSQL backend: the production engine, shared by several API
//! servers and projection workers.
//!
//! Every writer, in every process, takes one transaction-scoped advisory lock
//! before it reads the tip, so commits happen one at a time in position
//! order. `synchronous_commit=on` is set on every connection. Each commit
//! also sends `NOTIFY ledgerdesk_events` with the new head, which reaches the
//! other processes' head watchers when the transaction commits.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Row};
use tokio::sync::watch;

use crate::db::{DbPool, Pool};
use crate::event::{Appended, Backend, Head, RecordedEvent, StreamAppend, StreamRange};
use crate::plan::{Row as EventRow, Tip};
use crate::store::EventStore;
use crate::writer::{WriteConn, Writer};
use crate::{sql, OpenOptions, StoreError};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The advisory lock every writer holds while it appends ("ledgerdk" in ASCII).
pub const WRITE_LOCK_KEY: i64 = 0x6c65_6467_6572_646b;
/// The channel that carries new head positions.
pub const NOTIFY_CHANNEL: &str = "ledgerdesk_events";

/// The PostgreSQL event store.
pub struct PostgresStore {
    pool: PgPool,
    writer: Writer,
    head: watch::Receiver<u64>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connect and migrate.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)?
            .options([("synchronous_commit", "on")])
            .application_name("ledgerdesk");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect.clone())
            .await?;
        if options.migrate {
            Self::migrate(&pool).await?;
        }
        // A writer that waits longer than this for the advisory lock (another
        // process stuck inside a commit) gives up with 55P03, which the
        // caller sees as "unavailable, retry", instead of hanging forever.
        let write_connect = connect.options([(
            "lock_timeout",
            format!("{}ms", options.lock_timeout.as_millis().max(1)),
        )]);
        let write_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(write_connect)
            .await?;
        let tip = sql::decode_tip(sqlx::query(sql::TIP).fetch_optional(&pool).await?)?;
        let (head_tx, head) = watch::channel(tip.position);
        let listener = tokio::spawn(listen(pool.clone(), head_tx.clone()));
        let writer = Writer::spawn(
            PgWriter {
                pool: write_pool,
                conn: None,
            },
            head_tx,
            options.observer.clone(),
        );
        Ok(Self {
            pool,
            writer,
            head,
            listener,
        })
    }

    /// Apply the migrations to `pool`.
    pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        Ok(MIGRATOR.run(pool).await?)
    }
}

/// Follow other processes' commits; reconnects on failure.
async fn listen(pool: PgPool, head: watch::Sender<u64>) {
    loop {
        let result: Result<(), sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                let n = listener.recv().await?;
                if let Ok(p) = n.payload().parse::<u64>() {
                    head.send_if_modified(|h| {
                        let moved = p > *h;
                        *h = (*h).max(p);
                        moved
                    });
                }
            }
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "event notification listener failed; reconnecting");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn db(&self) -> DbPool {
        DbPool(Pool::Postgres(self.pool.clone()), None)
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

struct PgWriter {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

/// The rows in PostgreSQL's binary COPY format: a signature and two empty
/// header words, then per row the field count and each field as a length
/// and its bytes (big-endian integers, UTF-8 text), then a -1 trailer.
/// The field order is [`sql::COLUMNS`].
fn copy_binary(rows: &[EventRow]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        // Every text is far below 2 GiB: payloads are bounded by the API,
        // and PostgreSQL refuses a field of 1 GiB or more anyway.
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn int8(out: &mut Vec<u8>, v: i64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    let size: usize = rows
        .iter()
        .map(|r| {
            110 + r.stream_id.len()
                + r.stream_type.len()
                + r.event_id.len()
                + r.event_type.len()
                + r.payload.len()
                + r.metadata.len()
                + r.hash.len()
        })
        .sum();
    let mut out = Vec::with_capacity(size + 21);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&[0; 8]);
    for r in rows {
        out.extend_from_slice(&11i16.to_be_bytes());
        int8(&mut out, r.position);
        text(&mut out, &r.stream_id);
        text(&mut out, &r.stream_type);
        int8(&mut out, r.version);
        text(&mut out, &r.event_id);
        text(&mut out, &r.event_type);
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&r.schema_version.to_be_bytes());
        text(&mut out, &r.payload);
        text(&mut out, &r.metadata);
        int8(&mut out, r.recorded_at_us);
        text(&mut out, &r.hash);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

impl PgWriter {
    fn conn(&mut self) -> Result<&mut PoolConnection<Postgres>, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Invalid("writer used outside a transaction".into()))
    }
}

/// Groups of at least this many rows go through binary COPY: it costs one
/// round trip more than the `UNNEST` insert, and pays that back in encoding
/// and parsing from a few dozen rows on.
const COPY_MIN_ROWS: usize = 64;

/// `BEGIN`, the advisory lock and the tip in one round trip. The simple query
/// protocol runs each statement with a fresh snapshot, so the tip is read
/// after the lock is held and sees every earlier writer's commit; in one
/// statement the snapshot would predate the lock wait.
fn begin_lock_tip() -> String {
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY}); {}",
        sql::TIP
    )
}

impl WriteConn for PgWriter {
    async fn begin_locked(&mut self) -> Result<Tip, StoreError> {
        // Kept from before BEGIN, so that whatever fails next the writer's
        // rollback finds the connection and either cleans it or drops it:
        // the write pool has one connection, and one left in an aborted
        // transaction would stop every later append.
        self.conn = Some(self.pool.acquire().await?);
        // A plain `&str` carries no arguments, so sqlx sends it with the
        // simple protocol, several statements at once.
        let statement = begin_lock_tip();
        let rows = self.conn()?.fetch_all(statement.as_str()).await?;
        // The lock's own row has one column; the tip's has three.
        sql::decode_tip(rows.into_iter().find(|r| r.len() == 3))
    }

    async fn versions(&mut self, streams: &[String]) -> Result<HashMap<String, u64>, StoreError> {
        // One index probe per stream for its last version; `MAX … GROUP BY`
        // read every event of each stream, a cost that grew with its length.
        let rows = sqlx::query(
            "SELECT s.id, v.version FROM UNNEST($1::text[]) AS s(id) CROSS JOIN LATERAL \
             (SELECT version FROM events WHERE stream_id = s.id ORDER BY version DESC LIMIT 1) v",
        )
        .bind(streams)
        .fetch_all(&mut **self.conn()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<i64, _>(1)?.max(0) as u64,
                ))
            })
            .collect()
    }

    async fn insert(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        let conn = self.conn()?;
        if rows.len() >= COPY_MIN_ROWS {
            let data = copy_binary(rows);
            let mut copy = conn
                .copy_in_raw(&format!(
                    "COPY events ({}) FROM STDIN (FORMAT binary)",
                    sql::COLUMNS
                ))
                .await?;
            copy.send(data).await?;
            copy.finish().await?;
            return Ok(());
        }
        // One statement with one array per column: far fewer round trips and
        // bind slots than a multi-row VALUES list.
        fn col<'a, T>(rows: &'a [EventRow], f: impl Fn(&'a EventRow) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        sqlx::query(&format!(
            "INSERT INTO events ({}) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
             $5::text[], $6::text[], $7::int[], $8::text[], $9::text[], $10::bigint[], $11::text[])",
            sql::COLUMNS
        ))
        .bind(col(rows, |r| r.position))
        .bind(col(rows, |r| r.stream_id.as_str()))
        .bind(col(rows, |r| r.stream_type.as_str()))
        .bind(col(rows, |r| r.version))
        .bind(col(rows, |r| r.event_id.as_str()))
        .bind(col(rows, |r| r.event_type.as_str()))
        .bind(col(rows, |r| r.schema_version))
        .bind(col(rows, |r| r.payload.as_str()))
        .bind(col(rows, |r| r.metadata.as_str()))
        .bind(col(rows, |r| r.recorded_at_us))
        .bind(col(rows, |r| r.hash.as_str()))
        .execute(&mut **conn)
        .await?;
        Ok(())
    }

    async fn commit(&mut self, head: Option<u64>) -> Result<(), StoreError> {
        // The notification is queued inside the transaction and delivered
        // only if it commits; sent with COMMIT it costs no round trip of its
        // own. Both texts are ours (a constant and a number), never input.
        let statement = match head {
            Some(head) => format!("SELECT pg_notify('{NOTIFY_CHANNEL}', '{head}'); COMMIT"),
            None => "COMMIT".to_owned(),
        };
        self.conn()?.execute(statement.as_str()).await?;
        self.conn = None;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        if let Some(mut conn) = self.conn.take() {
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                conn.detach();
                return Err(e.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::{ExpectedVersion, Metadata, NewEvent, StreamRange};

    fn row(position: i64, payload: &str) -> EventRow {
        EventRow {
            position,
            stream_id: "s-1".into(),
            stream_type: "s".into(),
            version: position,
            event_id: "e".into(),
            event_type: "t".into(),
            schema_version: 3,
            payload: payload.into(),
            metadata: "{}".into(),
            recorded_at_us: -5,
            hash: "ab".into(),
        }
    }

    #[test]
    fn copy_binary_frames_rows_as_postgres_reads_them() {
        let data = copy_binary(&[row(1, "{\"é\":1}"), row(2, "")]);
        assert_eq!(&data[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&data[11..19], &[0; 8]);
        assert_eq!(&data[data.len() - 2..], &[0xff, 0xff]);
        // Walk the rows back: 11 fields each, lengths that add up exactly.
        let mut at = 19;
        let mut payloads = Vec::new();
        for _ in 0..2 {
            assert_eq!(i16::from_be_bytes([data[at], data[at + 1]]), 11);
            at += 2;
            for field in 0..11 {
                let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                at += 4;
                if field == 7 {
                    payloads.push(String::from_utf8(data[at..at + len].to_vec()).unwrap());
                }
                if field == 9 {
                    assert_eq!(data[at..at + len], (-5i64).to_be_bytes());
                }
                at += len;
            }
        }
        assert_eq!(at, data.len() - 2);
        assert_eq!(payloads, ["{\"é\":1}", ""]);
    }

    /// A group large enough for COPY is stored exactly as a small one
    /// would be: same fields back, an intact chain, positions in order.
    #[tokio::test]
    async fn a_copied_group_reads_back_and_verifies() {
        let Ok(admin) = std::env::var("LEDGERDESK_TEST_POSTGRES_URL") else {
            return;
        };
        let name = format!("ldstore_copy_{}", uuid::Uuid::now_v7().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let store = PostgresStore::open(&format!("{base}/{name}"), &OpenOptions::default())
            .await
            .unwrap();
        let small: Vec<NewEvent> = (0..3)
            .map(|n| {
                NewEvent::new(
                    "t.small",
                    1,
                    serde_json::json!({ "n": n }),
                    Metadata::system(),
                )
            })
            .collect();
        let large: Vec<NewEvent> = (0..COPY_MIN_ROWS * 2)
            .map(|n| {
                NewEvent::new(
                    "t.large",
                    2,
                    serde_json::json!({ "n": n, "text": "naïve \"quoted\" \\ ✓" }),
                    Metadata::system(),
                )
            })
            .collect();
        let outcome = async {
            store
                .append("s-small", ExpectedVersion::NoStream, small)
                .await?;
            let done = store
                .append("s-large", ExpectedVersion::NoStream, large.clone())
                .await?;
            let read = store.read_stream("s-large", StreamRange::all()).await?;
            let report = crate::verify_chain(&store).await?;
            Ok::<_, StoreError>((done, read, report))
        }
        .await;
        drop(store);
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
        let (done, read, report) = outcome.unwrap();
        assert_eq!(done.position, 3 + large.len() as u64);
        assert_eq!(read.len(), large.len());
        for (i, (stored, sent)) in read.iter().zip(&large).enumerate() {
            assert_eq!(stored.position, 4 + i as u64);
            assert_eq!(stored.version, 1 + i as u64);
            assert_eq!(stored.event_id, sent.event_id);
            assert_eq!(stored.schema_version, 2);
            assert_eq!(stored.payload_json().unwrap(), sent.payload);
        }
        assert!(report.ok(), "{:?}", report.first_break);
        assert_eq!(report.verified, done.position);
    }
}
