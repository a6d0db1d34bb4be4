//! The event store's conformance suite, written once and run on both backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledgerdesk_store::verify::BreakReason;
use ledgerdesk_store::{
    verify_chain, ActorKind, EventStore, ExpectedVersion, Metadata, NewEvent, StoreError,
    StreamAppend, StreamRange,
};
use ledgerdesk_tests::{backend_tests, exec, ints, texts, Kind, TestDb};
use serde_json::json;

backend_tests!(
    appends_then_reads,
    rejects_stale_version_and_writes_nothing,
    multi_stream_append_is_atomic,
    one_winner_per_version_across_connections,
    concurrent_retries_lose_no_event,
    tail_never_skips_late_commits,
    reads_ranges_of_a_stream,
    reads_the_log_in_pages,
    durability_settings_are_on,
    database_refuses_update_and_delete,
    verify_reports_ok_with_count_and_head,
    verify_names_an_edited_event,
    verify_names_a_deleted_event,
    verify_names_an_inserted_event,
    verify_names_swapped_events,
    head_watch_follows_appends,
    migrations_are_idempotent,
    a_write_lock_held_too_long_is_unavailable_and_the_writer_recovers,
);

fn ev(n: u64) -> NewEvent {
    NewEvent::new(
        "test.happened",
        1,
        json!({ "n": n, "text": "x".repeat(40) }),
        Metadata {
            actor_id: Some(uuid::Uuid::nil()),
            actor_kind: ActorKind::Agent,
            ip: Some("192.0.2.1".into()),
            user_agent: Some("tests".into()),
            correlation_id: Some("req-1".into()),
            causation_id: None,
        },
    )
}

async fn seed(store: &dyn EventStore, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let events = (1..=per_stream).map(ev).collect();
        store
            .append(&format!("test-{s}"), ExpectedVersion::NoStream, events)
            .await
            .expect("seed");
    }
}

async fn appends_then_reads(db: &TestDb) {
    let store = db.open().await;
    let first = ev(1);
    let done = store
        .append(
            "ticket-a",
            ExpectedVersion::NoStream,
            vec![first.clone(), ev(2), ev(3)],
        )
        .await
        .unwrap();
    assert_eq!((done.version, done.position), (3, 3));
    let more = store
        .append("ticket-b", ExpectedVersion::Any, vec![ev(4)])
        .await
        .unwrap();
    assert_eq!((more.version, more.position), (1, 4));

    let read = store
        .read_stream("ticket-a", StreamRange::all())
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    let e = &read[0];
    assert_eq!((e.position, e.version), (1, 1));
    assert_eq!(e.stream_type, "ticket");
    assert_eq!(e.event_id, first.event_id);
    assert_eq!(e.event_type, "test.happened");
    assert_eq!(e.schema_version, 1);
    assert_eq!(e.payload_json().unwrap(), first.payload);
    assert_eq!(e.metadata().unwrap(), first.metadata);
    assert_eq!(e.hash.len(), 64);
    assert!((Utc::now() - e.recorded_at).num_seconds() < 60);
    assert_eq!(
        e.recorded_at.timestamp_subsec_nanos() % 1000,
        0,
        "microsecond precision"
    );
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(store.head().await.unwrap().position, 4);
}

async fn rejects_stale_version_and_writes_nothing(db: &TestDb) {
    let store = db.open().await;
    store
        .append(
            "ticket-a",
            ExpectedVersion::NoStream,
            vec![ev(1), ev(2), ev(3)],
        )
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    for expected in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(4),
    ] {
        match store.append("ticket-a", expected, vec![ev(9)]).await {
            Err(StoreError::Conflict {
                stream_id, actual, ..
            }) => {
                assert_eq!(stream_id, "ticket-a");
                assert_eq!(actual, 3);
            }
            other => panic!("expected a conflict for {expected}, got {other:?}"),
        }
    }
    assert!(matches!(
        store
            .append("ticket-new", ExpectedVersion::Exact(1), vec![ev(1)])
            .await,
        Err(StoreError::Conflict { actual: 0, .. })
    ));
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(
        store
            .append("ticket-a", ExpectedVersion::Exact(3), vec![ev(4)])
            .await
            .unwrap()
            .version,
        4
    );
}

async fn multi_stream_append_is_atomic(db: &TestDb) {
    let store = db.open().await;
    store
        .append("ticket-b", ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let refused = store
        .append_many(vec![
            StreamAppend::new("ticket-a", ExpectedVersion::NoStream, vec![ev(1), ev(2)]),
            StreamAppend::new("ticket-b", ExpectedVersion::NoStream, vec![ev(3)]),
        ])
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict { .. })));
    assert!(store
        .read_stream("ticket-a", StreamRange::all())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.head().await.unwrap().position, 1);

    let done = store
        .append_many(vec![
            StreamAppend::new("ticket-a", ExpectedVersion::NoStream, vec![ev(1), ev(2)]),
            StreamAppend::new("ticket-b", ExpectedVersion::Exact(1), vec![ev(3)]),
        ])
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].version, done[0].position), (2, 3));
    assert_eq!((done[1].version, done[1].position), (2, 4));
}

/// Many stores (separate connections and writers, as separate processes
/// would be) race for the same versions: each version has one winner.
async fn one_winner_per_version_across_connections(db: &TestDb) {
    let stores: Vec<Arc<dyn EventStore>> =
        futures::future::join_all((0..4).map(|_| db.open())).await;
    for version in 0..10u64 {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let attempts = (0..16).map(|i| {
            let store = stores[i % stores.len()].clone();
            async move {
                store
                    .append("ticket-race", expected, vec![ev(version)])
                    .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "exactly one append wins version {}", version + 1);
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(r, StoreError::Conflict { .. }),
                "losers get a conflict, got {r:?}"
            );
        }
    }
    let read = stores[0]
        .read_stream("ticket-race", StreamRange::all())
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
}

/// Writers that reload and retry on conflict: every intended event lands
/// exactly once, with versions 1..=N and no duplicates.
async fn concurrent_retries_lose_no_event(db: &TestDb) {
    let stores: Vec<Arc<dyn EventStore>> =
        futures::future::join_all((0..4).map(|_| db.open())).await;
    let writers = (0..16u64).map(|w| {
        let store = stores[w as usize % stores.len()].clone();
        tokio::spawn(async move {
            for i in 0..10u64 {
                loop {
                    let current = store
                        .read_stream("ticket-shared", StreamRange::all())
                        .await
                        .unwrap()
                        .last()
                        .map_or(0, |e| e.version);
                    let expected = if current == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(current)
                    };
                    match store
                        .append("ticket-shared", expected, vec![ev(w * 1000 + i)])
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
    });
    for w in futures::future::join_all(writers).await {
        w.unwrap();
    }
    let read = stores[0]
        .read_stream("ticket-shared", StreamRange::all())
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=160).collect::<Vec<_>>()
    );
    let ns: HashSet<u64> = read
        .iter()
        .map(|e| e.payload_json().unwrap()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns.len(), 160, "no event lost or doubled");
}

/// 16 writers × 1,500 appends on their own streams, each through its own
/// store (own connection and writer), while a reader tails the log by
/// position: the reader sees all 24,000 exactly once, in order, and the hash
/// chain covers that same order.
async fn tail_never_skips_late_commits(db: &TestDb) {
    const WRITERS: u64 = 16;
    const PER_WRITER: u64 = 1_500;
    let total = WRITERS * PER_WRITER;
    let reader_store = db.open().await;
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let store = db.open().await;
        handles.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                store
                    .append(&format!("test-{w}"), ExpectedVersion::Any, vec![ev(i)])
                    .await
                    .unwrap();
            }
        }));
    }
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(total as usize);
        let mut after = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while (seen.len() as u64) < total {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reader timed out at {}",
                seen.len()
            );
            let page = reader_store.read_all(after, 500).await.unwrap();
            if page.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            for e in page {
                after = e.position;
                seen.push(e.position);
            }
        }
        (seen, reader_store)
    });
    for h in handles {
        h.await.unwrap();
    }
    let (seen, store) = reader.await.unwrap();
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "every position exactly once, in order"
    );
    let report = verify_chain(store.as_ref()).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
    assert_eq!(report.verified, total);
}

async fn reads_ranges_of_a_stream(db: &TestDb) {
    let store = db.open().await;
    store
        .append("ticket-a", ExpectedVersion::NoStream, vec![ev(1), ev(2)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .append("ticket-b", ExpectedVersion::NoStream, vec![ev(3)])
        .await
        .unwrap();
    store
        .append("ticket-a", ExpectedVersion::Exact(2), vec![ev(4), ev(5)])
        .await
        .unwrap();

    let versions =
        |r: Vec<ledgerdesk_store::RecordedEvent>| r.iter().map(|e| e.version).collect::<Vec<_>>();
    let from = StreamRange {
        from_version: Some(2),
        to_version: Some(3),
        ..StreamRange::all()
    };
    assert_eq!(
        versions(store.read_stream("ticket-a", from).await.unwrap()),
        [2, 3]
    );
    let until_pos = StreamRange {
        until_position: Some(4),
        ..StreamRange::all()
    };
    assert_eq!(
        versions(store.read_stream("ticket-a", until_pos).await.unwrap()),
        [1, 2, 3]
    );
    let until_time = StreamRange {
        until_time: Some(cut),
        ..StreamRange::all()
    };
    assert_eq!(
        versions(store.read_stream("ticket-a", until_time).await.unwrap()),
        [1, 2]
    );
    assert_eq!(store.position_at(cut).await.unwrap(), 2);
    assert!(store
        .read_stream("ticket-none", StreamRange::all())
        .await
        .unwrap()
        .is_empty());
}

async fn reads_the_log_in_pages(db: &TestDb) {
    let store = db.open().await;
    seed(store.as_ref(), 7, 13).await;
    let mut positions = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = last.position;
        positions.extend(page.iter().map(|e| e.position));
    }
    assert_eq!(positions, (1..=91).collect::<Vec<_>>());
    assert_eq!(store.read_all(91, 10).await.unwrap().len(), 0);
}

async fn durability_settings_are_on(db: &TestDb) {
    let store = db.open().await;
    let pool = store.db();
    match db.kind() {
        Kind::Sqlite => {
            let mode = texts(
                &pool,
                "SELECT journal_mode AS v FROM pragma_journal_mode",
                vec![],
            )
            .await;
            let sync = ints(
                &pool,
                "SELECT synchronous AS v FROM pragma_synchronous",
                vec![],
            )
            .await;
            assert_eq!(mode, [Some("wal".to_string())]);
            assert_eq!(sync, [Some(2)], "synchronous=FULL");
        }
        Kind::Postgres => {
            let sync = texts(
                &pool,
                "SELECT current_setting('synchronous_commit') AS v",
                vec![],
            )
            .await;
            assert_eq!(sync, [Some("on".to_string())]);
        }
    }
}

async fn database_refuses_update_and_delete(db: &TestDb) {
    let store = db.open().await;
    seed(store.as_ref(), 1, 3).await;
    let pool = store.db();
    let mut statements = vec![
        "UPDATE events SET payload = '{}' WHERE position = 2",
        "DELETE FROM events WHERE position = 3",
        "DELETE FROM events",
    ];
    if db.kind() == Kind::Postgres {
        statements.push("TRUNCATE events");
    }
    for sql in statements {
        let err = exec(&pool, sql).await.expect_err(sql);
        assert!(err.to_string().contains("immutable"), "{sql}: {err}");
    }
    assert_eq!(store.read_all(0, 10).await.unwrap().len(), 3);
    assert!(verify_chain(store.as_ref()).await.unwrap().ok());
}

async fn verify_reports_ok_with_count_and_head(db: &TestDb) {
    let store = db.open().await;
    let empty = verify_chain(store.as_ref()).await.unwrap();
    assert!(empty.ok());
    assert_eq!(empty.verified, 0);
    seed(store.as_ref(), 3, 4).await;
    let report = verify_chain(store.as_ref()).await.unwrap();
    assert!(report.ok());
    assert_eq!(report.verified, 12);
    assert_eq!(report.head_hash, store.head().await.unwrap().hash);
}

/// A tampered log of 10 events, with the database's guard taken off first
/// as an attacker with database access would.
async fn tampered(db: &TestDb, sql: &str) -> ledgerdesk_store::VerifyReport {
    let store = db.open().await;
    seed(store.as_ref(), 2, 5).await;
    let pool = store.db();
    let unguard = match db.kind() {
        Kind::Sqlite => "DROP TRIGGER events_reject_update; DROP TRIGGER events_reject_delete;",
        Kind::Postgres => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    exec(&pool, unguard).await.unwrap();
    exec(&pool, sql).await.unwrap();
    verify_chain(store.as_ref()).await.unwrap()
}

fn first_break(report: &ledgerdesk_store::VerifyReport) -> (u64, BreakReason) {
    let b = report
        .first_break
        .clone()
        .expect("tampering must be detected");
    (b.position, b.reason)
}

async fn verify_names_an_edited_event(db: &TestDb) {
    let report = tampered(
        db,
        "UPDATE events SET payload = '{\"n\":999}' WHERE position = 5",
    )
    .await;
    let (position, reason) = first_break(&report);
    assert_eq!(position, 5);
    assert!(matches!(reason, BreakReason::HashMismatch { .. }));
    assert_eq!(report.verified, 4);
}

async fn verify_names_a_deleted_event(db: &TestDb) {
    let report = tampered(db, "DELETE FROM events WHERE position = 7").await;
    assert_eq!(first_break(&report), (7, BreakReason::Missing { found: 8 }));
}

async fn verify_names_an_inserted_event(db: &TestDb) {
    // Appended by hand at the end, with a plausible but wrong hash.
    let report = tampered(
        db,
        "INSERT INTO events (position, stream_id, stream_type, version, event_id, event_type, schema_version, \
         payload, metadata, recorded_at, hash) SELECT 11, 'test-0', 'test', 6, 'f0000000-0000-7000-8000-000000000000', \
         'test.happened', 1, '{}', '{}', recorded_at, hash FROM events WHERE position = 10",
    )
    .await;
    let (position, reason) = first_break(&report);
    assert_eq!(position, 11);
    assert!(matches!(reason, BreakReason::HashMismatch { .. }));
}

async fn verify_names_swapped_events(db: &TestDb) {
    // Swap the positions of events 3 and 4 (through a free position).
    let report = tampered(
        db,
        "UPDATE events SET position = 1000 WHERE position = 3; \
         UPDATE events SET position = 3 WHERE position = 4; \
         UPDATE events SET position = 4 WHERE position = 1000;",
    )
    .await;
    let (position, reason) = first_break(&report);
    assert_eq!(position, 3);
    assert!(matches!(reason, BreakReason::HashMismatch { .. }));
}

async fn head_watch_follows_appends(db: &TestDb) {
    let store = db.open().await;
    let mut head = store.watch_head();
    assert_eq!(*head.borrow(), 0);
    store
        .append("ticket-a", ExpectedVersion::Any, vec![ev(1), ev(2)])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|p| *p == 2))
        .await
        .expect("head watch moved")
        .unwrap();
    if db.kind() == Kind::Postgres {
        // Another process's commit reaches this one through NOTIFY.
        let other = db.open().await;
        other
            .append("ticket-b", ExpectedVersion::Any, vec![ev(3)])
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), head.wait_for(|p| *p == 3))
            .await
            .expect("notification from another store")
            .unwrap();
    }
}

async fn migrations_are_idempotent(db: &TestDb) {
    let store = db.open().await;
    seed(store.as_ref(), 1, 2).await;
    let again = db.open().await;
    assert_eq!(again.head().await.unwrap().position, 2);
}

/// Holds the database's write lock from another connection (another process
/// stuck in a commit) until dropped.
enum LockHolder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl LockHolder {
    async fn take(db: &TestDb) -> Self {
        use sqlx::Connection;
        match db.kind() {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                LockHolder::Sqlite(c)
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(ledgerdesk_store::postgres::WRITE_LOCK_KEY)
                    .execute(&mut c)
                    .await
                    .unwrap();
                LockHolder::Postgres(c)
            }
        }
    }

    async fn release(self) {
        match self {
            LockHolder::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            LockHolder::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

/// Bounds a step that must not hang (a writer left without a usable
/// connection waits for its pool forever).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

async fn a_write_lock_held_too_long_is_unavailable_and_the_writer_recovers(db: &TestDb) {
    let options = ledgerdesk_store::OpenOptions {
        lock_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let store = ledgerdesk_store::open(&db.url, &options).await.unwrap();
    store
        .append("test-0", ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let holder = LockHolder::take(db).await;
    let refused = within(
        "an append behind a held lock",
        store.append("test-0", ExpectedVersion::Exact(1), vec![ev(2)]),
    )
    .await;
    match refused {
        Err(e) => assert!(e.is_unavailable(), "{e:?} should be Unavailable"),
        Ok(done) => panic!("appended at {} while another held the lock", done.position),
    }
    holder.release().await;
    // The writer kept a usable connection: the next appends go through.
    for n in 2..=4 {
        within(
            "an append after the lock was released",
            store.append("test-0", ExpectedVersion::Exact(n - 1), vec![ev(n)]),
        )
        .await
        .unwrap();
    }
    assert!(verify_chain(store.as_ref()).await.unwrap().ok());
    assert_eq!(store.head().await.unwrap().position, 4);
}

/// The PostgreSQL writer's backend is terminated while it waits for the
/// advisory lock, i.e. after `BEGIN`: the writer must not keep that dead
/// connection (its pool has only one), and the next appends succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writer_recovers_when_its_backend_is_terminated() {
    use sqlx::Connection;
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let store = db.open().await;
    store
        .append("test-0", ExpectedVersion::NoStream, vec![ev(1)])
        .await
        .unwrap();
    let holder = LockHolder::take(&db).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("test-0", ExpectedVersion::Exact(1), vec![ev(2)])
                .await
        })
    };
    // Wait until the writer waits for the lock, then end its backend.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut terminated = false;
    for _ in 0..200 {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%' \
             AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if let Some(pid) = pids.first() {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut admin)
                .await
                .unwrap();
            terminated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(terminated, "the writer never waited for the lock");
    let failed = within("the interrupted append", writer).await.unwrap();
    match failed {
        Err(e) => assert!(e.is_unavailable(), "{e:?} should be Unavailable"),
        Ok(done) => panic!("appended at {} through a terminated backend", done.position),
    }
    holder.release().await;
    for n in 2..=4 {
        within(
            "an append after the backend was terminated",
            store.append("test-0", ExpectedVersion::Exact(n - 1), vec![ev(n)]),
        )
        .await
        .unwrap();
    }
    assert!(verify_chain(store.as_ref()).await.unwrap().ok());
}

/// A backend terminated between statements while appends keep coming:
/// every append either commits (once) or fails as unavailable, and the
/// store writes again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_appends_survive_terminated_backends_under_load() {
    use sqlx::Connection;
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let store = db.open().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            for n in 0..400u64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match store
                    .append(
                        &format!("load-{w}-{n}"),
                        ExpectedVersion::NoStream,
                        vec![ev(n)],
                    )
                    .await
                {
                    Ok(done) => ok.push(done.position),
                    Err(e) => {
                        assert!(e.is_unavailable(), "{e:?} should be Unavailable");
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (ok, failed)
        }));
    }
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut admin)
        .await
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for t in tasks {
        let (ok, _) = within("a writer task", t).await.unwrap();
        acknowledged.extend(ok);
    }
    within(
        "an append after the faults",
        store.append("after", ExpectedVersion::NoStream, vec![ev(0)]),
    )
    .await
    .unwrap();
    let all = store.read_all(0, 100_000).await.unwrap();
    let positions: HashSet<u64> = all.iter().map(|e| e.position).collect();
    for p in &acknowledged {
        assert!(
            positions.contains(p),
            "acknowledged position {p} is missing"
        );
    }
    assert!(verify_chain(store.as_ref()).await.unwrap().ok());
}
