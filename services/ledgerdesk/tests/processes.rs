//! The projection workers as real processes: killed with SIGKILL in the
//! middle of a run they resume with nothing applied twice and nothing
//! skipped; on PostgreSQL only one worker runs each projection and a
//! survivor takes over from a killed one. The server keeps every write it
//! acknowledged, and answers 503 rather than 500, while its database
//! connections are terminated under load.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerdesk_app::SealedStore;
use ledgerdesk_projections::{runner::lease_key, tickets, Projector};
use ledgerdesk_store::{DbPool, EventStore};
use ledgerdesk_tests::{Kind, TestDb};

const NAMES: [&str; 6] = [
    "tickets",
    "conversation",
    "audit",
    "presence",
    "reports",
    "people",
];

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
    let sql = "SELECT name AS v FROM projection_checkpoints ORDER BY name";
    let names = ledgerdesk_tests::texts(pool, sql, vec![]).await;
    let sql = "SELECT position AS v FROM projection_checkpoints ORDER BY name";
    let positions = ledgerdesk_tests::ints(pool, sql, vec![]).await;
    names
        .into_iter()
        .zip(positions)
        .map(|(n, p)| (n.unwrap_or_default(), p.unwrap_or_default()))
        .collect()
}

/// One integer: `sql` selects it as `v`.
async fn scalar(pool: &DbPool, sql: &str) -> i64 {
    ledgerdesk_tests::ints(pool, sql, vec![]).await[0].unwrap_or_default()
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
    let pool = store.db();
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
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) AS v FROM audit_log").await,
        head
    );
    assert_eq!(
        scalar(&pool, "SELECT MAX(position) AS v FROM audit_log").await,
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
    let mut out = Vec::new();
    for name in NAMES {
        let n = ledgerdesk_tests::ints(
            pool,
            "SELECT COUNT(*) AS v FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            vec![ledgerdesk_store::db::Arg::from(lease_key(name))],
        )
        .await[0]
        .unwrap_or_default();
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
    let pool = store.db();

    let mut a = worker(&db);
    wait_until(
        "the first worker to take every lease and catch up",
        || async {
            leases(&pool).await == [1; NAMES.len()] && all_caught_up(&pool, head as i64).await
        },
    )
    .await;
    let mut b = worker(&db);
    // B runs but may hold nothing while A lives: still exactly one holder each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        leases(&pool).await,
        [1; NAMES.len()],
        "one holder per projection"
    );

    a.kill().expect("SIGKILL the holder");
    a.wait().unwrap();
    let more = ledgerdesk_app::seed::seed(store.as_ref(), 500, |_| {})
        .await
        .unwrap();
    let new_head = (head + more.events) as i64;
    wait_until("the survivor to take over and catch up", || async {
        leases(&pool).await == [1; NAMES.len()] && all_caught_up(&pool, new_head).await
    })
    .await;
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) AS v FROM audit_log").await,
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
    let pool = store.db();
    Projector::new(store.clone()).catch_up().await.unwrap();
    let before = scalar(&pool, "SELECT COUNT(*) AS v FROM audit_log").await;

    let out = cli(&db, &["projections", "rebuild", "audit"]);
    assert!(
        out.contains(&format!("rebuilt audit to position {head}")),
        "{out}"
    );
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) AS v FROM audit_log").await,
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
    assert_eq!(
        scalar(&then, "SELECT COUNT(*) AS v FROM audit_log").await,
        1000
    );
    assert_eq!(
        scalar(&then, "SELECT MAX(position) AS v FROM audit_log").await,
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

/// The server as a real process on a free port of loopback, killed on drop.
struct Server {
    child: Child,
    base: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ADMIN: (&str, &str) = ("admin@desk.example", "admin-password-1");

async fn serve(db: &TestDb) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("ledgerdesk-serve-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ledgerdesk"))
        .arg("serve")
        .env("LEDGERDESK__DATABASE__URL", &db.url)
        .env("LEDGERDESK__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("LEDGERDESK__HTTP__WORKERS", "2")
        .env("LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL", ADMIN.0)
        .env("LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD", ADMIN.1)
        .env("LEDGERDESK__AUTH__ARGON2_MEMORY_KIB", "64")
        .env("LEDGERDESK__AUTH__ARGON2_ITERATIONS", "1")
        .env("LEDGERDESK__FILES__DIR", dir.join("files"))
        .env(
            "LEDGERDESK__AUDIT__SIGNING_KEY_FILE",
            dir.join("checkpoint.key"),
        )
        .env("LEDGERDESK__LOG__LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ledgerdesk serve");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: TempDir(dir),
    };
    let client = reqwest::Client::new();
    let url = format!("{}/healthz", server.base);
    wait_until("the server to listen", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    server
}

/// One write the clients sent, and how it was answered.
struct Answer {
    status: u16,
    body: serde_json::Value,
    retry_after: Option<String>,
}

async fn create_ticket(client: &reqwest::Client, base: &str, token: &str, n: usize) -> Answer {
    let res = client
        .post(format!("{base}/api/v1/tickets"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "subject": format!("Load {n}"), "body": "Written while the database is cut off.",
            "channel": "email",
            "requester": {"email": format!("load-{n}@customer.example"), "name": "Load"}
        }))
        .send()
        .await
        .expect("the server answers (it must not crash)");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        body,
        retry_after,
    }
}

async fn terminate_backends(db: &TestDb) -> u64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
    ended.into_iter().filter(|e| *e).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_connections_lose_no_acknowledged_write() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let server = serve(&db).await;
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&serde_json::json!({"email": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .unwrap();
    assert!(login.status().is_success(), "login: {}", login.status());
    let token: String = login.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (client, base, token, stop) = (
                client.clone(),
                server.base.clone(),
                token.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..300 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    answers.push(create_ticket(&client, &base, &token, c * 1000 + i).await);
                }
                answers
            })
        })
        .collect();
    let mut terminated = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        terminated += terminate_backends(&db).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    assert!(terminated > 0, "no backend was terminated");

    // Every failure said "unavailable, retry", never "internal error".
    let unavailable = answers.iter().filter(|a| a.status == 503).count();
    for a in &answers {
        match a.status {
            201 | 409 | 412 => {}
            503 => {
                assert_eq!(a.body["code"], "database_unavailable", "{}", a.body);
                assert!(a.retry_after.is_some(), "a 503 without Retry-After");
            }
            other => panic!("a write answered {other}: {}", a.body),
        }
    }
    // The server serves again.
    let n = 99_999;
    let mut again = create_ticket(&client, &server.base, &token, n).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while again.status == 503 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        again = create_ticket(&client, &server.base, &token, n).await;
    }
    assert_eq!(again.status, 201, "after the faults: {}", again.body);
    answers.push(again);

    // Every acknowledged write is in the log, once, where it was reported.
    let store = db.open().await;
    let events = store.read_all(0, 1_000_000).await.unwrap();
    let created: std::collections::HashMap<String, Vec<u64>> = events
        .iter()
        .filter(|e| e.event_type == "ticket.created")
        .fold(Default::default(), |mut m, e| {
            m.entry(e.stream_id.clone()).or_default().push(e.position);
            m
        });
    let acknowledged: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    for a in &acknowledged {
        let stream = format!("ticket-{}", a.body["id"].as_str().unwrap());
        let position = a.body["position"].as_u64().unwrap();
        let at = created.get(&stream).cloned().unwrap_or_default();
        assert_eq!(at.len(), 1, "{stream} is in the log {} times", at.len());
        assert!(
            events
                .iter()
                .any(|e| e.stream_id == stream && e.position == position),
            "{stream} was acknowledged at position {position}, which is not its own"
        );
    }
    // Gap-free and unaltered.
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=events.len() as u64).collect::<Vec<_>>());
    let verify = client
        .get(format!("{}/api/v1/admin/verify", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    let verify: serde_json::Value = verify.json().await.unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    eprintln!(
        "{} writes: {} acknowledged, {unavailable} answered 503; {terminated} backends terminated",
        answers.len(),
        acknowledged.len()
    );
}
