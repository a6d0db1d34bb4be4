//! The projection workers as real processes: killed with SIGKILL in the
//! middle of a run they resume with nothing applied twice and nothing
//! skipped; on PostgreSQL only one worker runs each projection and a
//! survivor takes over from a killed one.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerdesk_app::SealedStore;
use ledgerdesk_projections::{runner::lease_key, tickets, Projector};
use ledgerdesk_store::{DbPool, EventStore};
use ledgerdesk_tests::{Kind, TestDb};

const NAMES: [&str; 4] = ["tickets", "audit", "presence", "reports"];

fn worker(db: &TestDb) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ledgerdesk"))
        .arg("project")
        .env("LEDGERDESK__DATABASE__URL", &db.url)
        .env("LEDGERDESK__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ledgerdesk project")
}

async fn checkpoints(pool: &DbPool) -> Vec<(String, i64)> {
    let sql = "SELECT name, position FROM projection_checkpoints ORDER BY name";
    match pool {
        DbPool::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
        DbPool::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
    }
    .unwrap_or_default()
}

async fn scalar(pool: &DbPool, sql: &str) -> i64 {
    match pool {
        DbPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        DbPool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .expect(sql)
}

async fn wait_until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn seeded(db: &TestDb, events: u64) -> (Arc<dyn EventStore>, u64) {
    let store: Arc<dyn EventStore> = Arc::new(SealedStore::new(db.open().await));
    let report = ledgerdesk_app::seed::seed(store.as_ref(), events, |_| {})
        .await
        .unwrap();
    (store, report.events)
}

async fn all_caught_up(pool: &DbPool, head: i64) -> bool {
    let c = checkpoints(pool).await;
    c.len() == NAMES.len() && c.iter().all(|(_, p)| *p == head)
}

async fn crash_and_resume(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let (store, head) = seeded(&db, 30_000).await;
    let pool = store.pool();
    let head = head as i64;

    let mut first = worker(&db);
    // Kill it once some pages are in but not all.
    wait_until("a projection mid-run", || async {
        checkpoints(&pool)
            .await
            .iter()
            .any(|(_, p)| *p > 0 && *p < head)
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let at_kill = checkpoints(&pool).await;
    assert!(
        at_kill.iter().any(|(_, p)| *p < head),
        "killed before the end: {at_kill:?}"
    );

    let mut second = worker(&db);
    wait_until("catch-up after restart", || all_caught_up(&pool, head)).await;
    second.kill().unwrap();
    second.wait().unwrap();

    // Nothing skipped: one audit row per event, positions 1..=head.
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM audit_log").await, head);
    assert_eq!(
        scalar(&pool, "SELECT MAX(position) FROM audit_log").await,
        head
    );
    // Nothing applied twice: the live tickets equal a fresh build of the same log.
    let dir = std::env::temp_dir().join(format!("ledgerdesk-asof-{}.db", uuid_like()));
    Projector::new(store.clone())
        .build_as_of("tickets", head as u64, &dir)
        .await
        .unwrap();
    let fresh = ledgerdesk_projections::open_as_of(&dir).await.unwrap();
    let page = |pool: DbPool| async move {
        let filter = tickets::TicketFilter {
            limit: Some(500),
            ..Default::default()
        };
        let mut rows = tickets::list(&pool, &filter).await.unwrap().items;
        rows.sort_by_key(|r| r.id);
        rows.into_iter()
            .map(|r| (r.id, r.message_count, r.status))
            .collect::<Vec<_>>()
    };
    let live = page(pool.clone()).await;
    assert!(!live.is_empty());
    assert_eq!(live, page(fresh).await);
    let _ = std::fs::remove_file(dir);
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_worker_killed_mid_run_resumes_exactly() {
    crash_and_resume(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_worker_killed_mid_run_resumes_exactly() {
    crash_and_resume(Kind::Postgres).await;
}

/// Granted lease locks per projection, on PostgreSQL.
async fn leases(pool: &DbPool) -> Vec<i64> {
    let DbPool::Postgres(p) = pool else {
        unreachable!()
    };
    let mut out = Vec::new();
    for name in NAMES {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(lease_key(name))
        .fetch_one(p)
        .await
        .unwrap();
        out.push(n);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_worker_per_projection_and_a_survivor_takes_over() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let (store, head) = seeded(&db, 3_000).await;
    let pool = store.pool();

    let mut a = worker(&db);
    wait_until(
        "the first worker to take every lease and catch up",
        || async { leases(&pool).await == [1, 1, 1, 1] && all_caught_up(&pool, head as i64).await },
    )
    .await;
    let mut b = worker(&db);
    // B runs but may hold nothing while A lives: still exactly one holder each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        leases(&pool).await,
        [1, 1, 1, 1],
        "one holder per projection"
    );

    a.kill().expect("SIGKILL the holder");
    a.wait().unwrap();
    let more = ledgerdesk_app::seed::seed(store.as_ref(), 500, |_| {})
        .await
        .unwrap();
    let new_head = (head + more.events) as i64;
    wait_until("the survivor to take over and catch up", || async {
        leases(&pool).await == [1, 1, 1, 1] && all_caught_up(&pool, new_head).await
    })
    .await;
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM audit_log").await,
        new_head
    );
}

fn cli(db: &TestDb, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ledgerdesk"))
        .args(args)
        .env("LEDGERDESK__DATABASE__URL", &db.url)
        .env("LEDGERDESK__LOG__LEVEL", "warn")
        .output()
        .expect("run ledgerdesk");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `projections rebuild` and `projections build --at-position`, as an
/// operator runs them: the rebuilt tables equal an incremental run, and the
/// as-of file holds exactly the events up to its position.
async fn rebuild_and_as_of_from_the_cli(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let (store, head) = seeded(&db, 3_000).await;
    let pool = store.pool();
    Projector::new(store.clone()).catch_up().await.unwrap();
    let before = scalar(&pool, "SELECT COUNT(*) FROM audit_log").await;

    let out = cli(&db, &["projections", "rebuild", "audit"]);
    assert!(
        out.contains(&format!("rebuilt audit to position {head}")),
        "{out}"
    );
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM audit_log").await,
        before
    );
    assert_eq!(before, head as i64);

    let file = std::env::temp_dir().join(format!("ledgerdesk-asof-cli-{}.db", uuid_like()));
    let out = cli(
        &db,
        &[
            "projections",
            "build",
            "audit",
            "--at-position",
            "1000",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.contains("as of position 1000"), "{out}");
    let then = ledgerdesk_projections::open_as_of(&file).await.unwrap();
    assert_eq!(scalar(&then, "SELECT COUNT(*) FROM audit_log").await, 1000);
    assert_eq!(
        scalar(&then, "SELECT MAX(position) FROM audit_log").await,
        1000
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_and_as_of_from_the_cli() {
    rebuild_and_as_of_from_the_cli(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_and_as_of_from_the_cli() {
    rebuild_and_as_of_from_the_cli(Kind::Postgres).await;
}

/// `ledgerdesk replay`: a ticket's history on the terminal, whole or up to
/// a position, as text or one JSON object per event.
async fn replay_prints_a_ticket_history(kind: Kind) {
    let Some(db) = TestDb::new(kind).await else {
        return;
    };
    let (store, _) = seeded(&db, 500).await;
    let first = store
        .read_all(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "ticket.created")
        .unwrap();
    let events = store
        .read_stream(&first.stream_id, ledgerdesk_store::StreamRange::all())
        .await
        .unwrap();
    assert!(events.len() >= 3, "a ticket with some life");

    let text = cli(&db, &["replay", &first.stream_id]);
    assert!(text.contains("Ticket – Created"), "{text}");
    assert!(
        text.contains(&format!("{} events of {}", events.len(), first.stream_id)),
        "{text}"
    );

    let cut = events[1].position;
    let json = cli(
        &db,
        &[
            "replay",
            &first.stream_id,
            "--at-position",
            &cut.to_string(),
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "Ticket – Created");
    assert_eq!(lines[1]["position"], cut);

    let missing = Command::new(env!("CARGO_BIN_EXE_ledgerdesk"))
        .args(["replay", "ticket-00000000-0000-0000-0000-000000000000"])
        .env("LEDGERDESK__DATABASE__URL", &db.url)
        .env("LEDGERDESK__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replay_prints_a_ticket_history() {
    replay_prints_a_ticket_history(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_prints_a_ticket_history() {
    replay_prints_a_ticket_history(Kind::Postgres).await;
}
