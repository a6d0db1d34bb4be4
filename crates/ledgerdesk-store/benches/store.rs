//! `make bench`: appended events per second and read-all events per second,
//! for each backend, beside the raw database doing the same inserts and scan
//! in the same run, so the ratio holds on a noisy machine.
//!
//! SQLite always; PostgreSQL when `LEDGERDESK_BENCH_POSTGRES_URL` (or
//! `LEDGERDESK_TEST_POSTGRES_URL`) names a server. `BENCH_EVENTS` sets the
//! size of the read-all log (default 1,000,000); `BENCH_ONLY=sqlite` or
//! `=postgres` measures one backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ledgerdesk_store::{
    ActorKind, EventStore, ExpectedVersion, GroupStats, Metadata, NewEvent, OpenOptions,
    StreamAppend, WriterObserver,
};
use sqlx::{Connection, QueryBuilder};

const BATCH: usize = 1_000;
const WRITERS: usize = 16;

fn event(n: usize) -> NewEvent {
    // About 500 bytes stored: a realistic ticket message event.
    NewEvent::new(
        "ticket.message_added",
        1,
        serde_json::json!({
            "ticket_id": "0192f0c4-8a5e-7b3c-9d2e-1f4a5b6c7d8e",
            "message_id": format!("0192f0c4-8a5e-7b3c-9d2e-{n:012}"),
            "direction": "outbound",
            "channel": "email",
            "pii": { "subject": "0192f0c4-0000-7000-8000-000000000001", "data": { "body": "Thanks for the details — we have refunded the duplicate charge; it shows on your statement in 3 to 5 working days. Anything else, just reply here." } }
        }),
        Metadata {
            actor_id: Some(uuid::Uuid::now_v7()),
            actor_kind: ActorKind::Agent,
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
            correlation_id: Some(uuid::Uuid::now_v7().to_string()),
            causation_id: None,
        },
    )
}

struct Db {
    url: String,
    cleanup: Box<dyn FnOnce()>,
}

fn sqlite_db() -> Db {
    let dir = std::env::temp_dir().join("ledgerdesk-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("{}.db", uuid::Uuid::now_v7().simple()));
    let p = path.clone();
    Db {
        url: format!("sqlite://{}", path.display()),
        cleanup: Box::new(move || {
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", p.display()));
            }
        }),
    }
}

async fn postgres_db(admin: &str) -> Db {
    let name = format!("ldbench_{}", uuid::Uuid::now_v7().simple());
    let mut c = sqlx::PgConnection::connect(admin).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b).to_owned();
    let admin = admin.to_owned();
    Db {
        url: format!("{base}/{name}"),
        cleanup: Box::new(move || {
            // Called from inside the runtime: clean up on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }),
    }
}

/// Counts the writer's groups, to show how well appends were gathered.
#[derive(Default)]
struct Groups {
    groups: AtomicUsize,
    appends: AtomicUsize,
    micros: AtomicUsize,
}

impl Groups {
    fn snapshot(&self) -> (usize, usize, usize) {
        (
            self.groups.load(Ordering::Relaxed),
            self.appends.load(Ordering::Relaxed),
            self.micros.load(Ordering::Relaxed),
        )
    }
    fn since(&self, (g, a, m): (usize, usize, usize)) -> (usize, usize, usize) {
        let (g2, a2, m2) = self.snapshot();
        (g2 - g, a2 - a, m2 - m)
    }
}

impl WriterObserver for Groups {
    fn group(&self, group: GroupStats) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(group.appends, Ordering::Relaxed);
        self.micros
            .fetch_add(group.elapsed.as_micros() as usize, Ordering::Relaxed);
    }
}

fn rate(n: usize, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64()
}

/// (a) batches of 1,000 events, each to a new stream.
async fn batch_append(store: &dyn EventStore, batches: usize, offset: usize) -> f64 {
    // Built before the clock starts, as the raw rows are.
    let all: Vec<Vec<NewEvent>> = (0..batches)
        .map(|b| (0..BATCH).map(|i| event(b * BATCH + i)).collect())
        .collect();
    let t = Instant::now();
    for (b, events) in all.into_iter().enumerate() {
        store
            .append(
                &format!("ticket-b{}", offset + b),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .expect("append");
    }
    rate(batches * BATCH, t)
}

/// (b) single-event appends from 16 concurrent writers on different streams.
async fn concurrent_append(store: Arc<dyn EventStore>, per_writer: usize) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let events: Vec<NewEvent> = (0..per_writer).map(event).collect();
            tokio::spawn(async move {
                for e in events {
                    store
                        .append(&format!("ticket-w{w}"), ExpectedVersion::Any, vec![e])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    rate(WRITERS * per_writer, t)
}

/// (c) read the whole log in pages.
async fn read_all(store: &dyn EventStore) -> (usize, f64) {
    let t = Instant::now();
    let (mut after, mut n) = (0, 0);
    loop {
        let page = store.read_all(after, 10_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        n += page.len();
    }
    (n, rate(n, t))
}

/// position, stream id, version, event id, payload, metadata, time, hash.
type RawRow = (i64, String, i64, String, String, String, i64, String);

/// Rows shaped like the store's, inserted without hashing or checks.
fn raw_rows(n: usize, offset: usize) -> Vec<RawRow> {
    (0..n)
        .map(|i| {
            let e = event(i);
            (
                (offset + i) as i64,
                format!("raw-{}", (offset + i) / BATCH),
                (i % BATCH) as i64 + 1,
                uuid::Uuid::now_v7().to_string(),
                e.payload.to_string(),
                serde_json::to_string(&e.metadata).unwrap(),
                1_700_000_000_000_000,
                "0".repeat(64),
            )
        })
        .collect()
}

const RAW_TABLE: &str = "CREATE TABLE raw_events (position BIGINT PRIMARY KEY, stream_id TEXT NOT NULL, stream_type TEXT NOT NULL, \
    version BIGINT NOT NULL, event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, \
    payload TEXT NOT NULL, metadata TEXT NOT NULL, recorded_at BIGINT NOT NULL, hash TEXT NOT NULL, UNIQUE (stream_id, version))";

async fn raw_batch_sqlite(url: &str, batches: usize) -> f64 {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    sqlx::query(RAW_TABLE).execute(&pool).await.unwrap();
    let rows = raw_rows(batches * BATCH, 1);
    let t = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let mut tx = pool.begin().await.unwrap();
        for part in chunk.chunks(256) {
            let mut q = QueryBuilder::new("INSERT INTO raw_events ");
            q.push_values(part, |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(&r.1)
                    .push_bind("raw")
                    .push_bind(r.2)
                    .push_bind(&r.3)
                    .push_bind("ticket.message_added")
                    .push_bind(1)
                    .push_bind(&r.4)
                    .push_bind(&r.5)
                    .push_bind(r.6)
                    .push_bind(&r.7);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    rate(rows.len(), t)
}

/// The binary COPY format (PostgreSQL's `COPY … FROM STDIN (FORMAT binary)`):
/// a header, per row a field count and length-prefixed fields, a trailer.
fn copy_rows(rows: &[RawRow]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn int8(out: &mut Vec<u8>, v: i64) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut out = Vec::with_capacity(rows.len() * 700);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&[0; 8]);
    for r in rows {
        out.extend_from_slice(&11i16.to_be_bytes());
        int8(&mut out, r.0);
        text(&mut out, &r.1);
        text(&mut out, "raw");
        int8(&mut out, r.2);
        text(&mut out, &r.3);
        text(&mut out, "ticket.message_added");
        out.extend_from_slice(&4i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        text(&mut out, &r.4);
        text(&mut out, &r.5);
        int8(&mut out, r.6);
        text(&mut out, &r.7);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Raw batches through binary COPY, each in its own transaction: the
/// fastest way PostgreSQL takes rows, so the honest baseline for a store
/// that uses it.
async fn raw_copy_postgres(url: &str, batches: usize) -> f64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let table = format!("raw_copy_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&RAW_TABLE.replace("raw_events", &table))
        .execute(&pool)
        .await
        .unwrap();
    let rows = raw_rows(batches * BATCH, 1);
    let copy = format!("COPY {table} FROM STDIN (FORMAT binary)");
    let t = Instant::now();
    for chunk in rows.chunks(BATCH) {
        // Encoding is part of the operation, as the store's hashing is.
        let data = copy_rows(chunk);
        let mut tx = pool.begin().await.unwrap();
        let mut sink = tx.copy_in_raw(&copy).await.unwrap();
        sink.send(data).await.unwrap();
        sink.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    rate(rows.len(), t)
}

async fn raw_batch_postgres(url: &str, batches: usize) -> f64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(RAW_TABLE).execute(&pool).await.unwrap();
    let rows = raw_rows(batches * BATCH, 1);
    let t = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let mut q = QueryBuilder::new("INSERT INTO raw_events ");
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.0)
                .push_bind(&r.1)
                .push_bind("raw")
                .push_bind(r.2)
                .push_bind(&r.3)
                .push_bind("ticket.message_added")
                .push_bind(1)
                .push_bind(&r.4)
                .push_bind(&r.5)
                .push_bind(r.6)
                .push_bind(&r.7);
        });
        q.build().execute(&pool).await.unwrap();
    }
    rate(rows.len(), t)
}

/// Raw single-row autocommit inserts from 16 connections.
async fn raw_concurrent(url: &str, per_writer: usize, postgres: bool) -> f64 {
    let table = format!("raw_single_{}", uuid::Uuid::now_v7().simple());
    let ddl = RAW_TABLE.replace("raw_events", &table);
    let insert = format!(
        "INSERT INTO {table} VALUES ($1, $2, 'raw', $3, $4, 'ticket.message_added', 1, $5, $6, $7, $8)"
    );
    let rows = Arc::new(raw_rows(WRITERS * per_writer, 1));
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query(&ddl).execute(&pool).await.unwrap();
            let t = Instant::now();
            let tasks: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (pool, rows, insert) = (pool.clone(), rows.clone(), insert.clone());
                    tokio::spawn(async move {
                        for r in &rows[w * per_writer..(w + 1) * per_writer] {
                            sqlx::query(&insert)
                                .bind(r.0)
                                .bind(&r.1)
                                .bind(r.0)
                                .bind(&r.3)
                                .bind(&r.4)
                                .bind(&r.5)
                                .bind(r.6)
                                .bind(&r.7)
                                .execute(&pool)
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            rate(WRITERS * per_writer, t)
        }};
    }
    if postgres {
        run!(sqlx::postgres::PgPoolOptions::new()
            .max_connections(WRITERS as u32)
            .connect(url)
            .await
            .unwrap())
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let opts = opts
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(60));
        run!(sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(WRITERS as u32)
            .connect_with(opts)
            .await
            .unwrap())
    }
}

/// A scan through sqlx directly, on a pool of the backend's own: the
/// baseline the store's `read_all` is compared with.
async fn raw_scan(url: &str) -> f64 {
    use futures::TryStreamExt;
    let sql = "SELECT position, stream_id, stream_type, version, event_id, event_type, schema_version, payload, metadata, recorded_at, hash FROM events ORDER BY position";
    let n = if url.starts_with("sqlite:") {
        let p = sqlx::SqlitePool::connect(url).await.unwrap();
        let t = Instant::now();
        let n = sqlx::query(sql)
            .fetch(&p)
            .try_fold(0usize, |n, _| async move { Ok(n + 1) })
            .await;
        (n, t)
    } else {
        let p = sqlx::PgPool::connect(url).await.unwrap();
        let t = Instant::now();
        let n = sqlx::query(sql)
            .fetch(&p)
            .try_fold(0usize, |n, _| async move { Ok(n + 1) })
            .await;
        (n, t)
    };
    rate(n.0.unwrap(), n.1)
}

async fn fill(store: &dyn EventStore, total: usize) {
    let mut done = store.head().await.unwrap().position as usize;
    let mut b = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let appends = vec![StreamAppend::new(
            format!("ticket-fill{b}"),
            ExpectedVersion::NoStream,
            (0..n).map(|i| event(done + i)).collect(),
        )];
        store.append_many(appends).await.unwrap();
        done += n;
        b += 1;
    }
}

fn line(what: &str, ours: f64, raw: f64) {
    println!(
        "  {what:<44} {ours:>10.0} events/s   raw {raw:>10.0}/s   ratio {:.2}",
        ours / raw
    );
}

async fn bench(name: &str, db: Db, postgres: bool, read_events: usize) {
    println!("{name}:");
    let groups = Arc::new(Groups::default());
    let store = ledgerdesk_store::open(
        &db.url,
        &OpenOptions {
            observer: Some(groups.clone()),
            ..OpenOptions::default()
        },
    )
    .await
    .expect("open");
    let batches = 100;
    let ours = batch_append(store.as_ref(), batches, 0).await;
    if postgres {
        let insert = raw_batch_postgres(&db.url, batches).await;
        let copy = raw_copy_postgres(&db.url, batches).await;
        println!("  (a) raw multi-row INSERT {insert:.0}/s, raw binary COPY {copy:.0}/s");
        line(
            "(a) batch append, 1,000 events per batch",
            ours,
            insert.max(copy),
        );
    } else {
        let raw = raw_batch_sqlite(&db.url, batches).await;
        line("(a) batch append, 1,000 events per batch", ours, raw);
    }

    let per_writer = 1_000;
    let before = groups.snapshot();
    let ours = concurrent_append(store.clone(), per_writer).await;
    let (n_groups, n_appends, micros) = groups.since(before);
    let raw = raw_concurrent(&db.url, per_writer / 4, postgres).await;
    line("(b) 16 writers, one event per append", ours, raw);
    println!(
        "  (b) {n_groups} groups, {:.1} appends and {:.0} µs from lock to commit per group",
        n_appends as f64 / n_groups.max(1) as f64,
        micros as f64 / n_groups.max(1) as f64
    );

    let t = Instant::now();
    fill(store.as_ref(), read_events).await;
    println!(
        "  (filled the log to {read_events} events in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let (n, ours) = read_all(store.as_ref()).await;
    let raw = raw_scan(&db.url).await;
    line(&format!("(c) read-all over {n} events"), ours, raw);
    drop(store);
    (db.cleanup)();
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` (make test) runs bench targets too, without
    // `--bench`: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with cargo bench (make bench)");
        return;
    }
    let read_events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "ledgerdesk event store benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // BENCH_ONLY=sqlite or =postgres measures one backend.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "postgres" {
        bench("sqlite", sqlite_db(), false, read_events).await;
    }
    let pg = std::env::var("LEDGERDESK_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("LEDGERDESK_TEST_POSTGRES_URL"))
        .ok()
        .filter(|_| only != "sqlite");
    match pg {
        Some(url) => bench("postgres", postgres_db(&url).await, true, read_events).await,
        None => println!("postgres: skipped (set LEDGERDESK_BENCH_POSTGRES_URL)"),
    }
}
