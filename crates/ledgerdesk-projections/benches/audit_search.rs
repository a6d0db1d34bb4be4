//! `make bench-audit`: audit search latency with a large `audit_log`
//! (issue 6: 10,000,000 events, one agent + one action + one month under
//! 50 ms at the median).
//!
//! For each backend (SQLite always; PostgreSQL when
//! `LEDGERDESK_BENCH_POSTGRES_URL` or `LEDGERDESK_TEST_POSTGRES_URL` names a
//! server): create a fresh database, open it with `ledgerdesk_store` so the
//! migrations create the schema, fill `audit_log` directly with generated
//! rows (set-up, not measured: the search reads only the projection table),
//! then time `audit::search` for several filter shapes.
//!
//! Settings (environment):
//! - `LEDGERDESK_BENCH_AUDIT_ROWS`: rows to store (default 10,000,000).
//! - `LEDGERDESK_BENCH_AUDIT_QUERIES`: samples of the main query (default 200);
//!   the other lines take a quarter of it (at least 10), each line stopping
//!   early after 60 s of measured time.
//! - `LEDGERDESK_BENCH_AUDIT_BACKENDS`: `sqlite`, `postgres` or both
//!   (default: both when a PostgreSQL URL is set).
//! - `LEDGERDESK_BENCH_AUDIT_KEEP=1`: keep the filled database and print
//!   its URL; `LEDGERDESK_BENCH_AUDIT_URL=<url>`: measure that database (filled
//!   by an earlier run with the same row count) without filling one.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ledgerdesk_domain::catalogue::ACTIONS;
use ledgerdesk_projections::audit::{self, AuditFilter, AuditProjection};
use ledgerdesk_projections::{Projection, Projector};
use ledgerdesk_store::{DbPool, OpenOptions};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};
use uuid::Uuid;

const AGENTS: usize = 200;
const DEPARTMENTS: usize = 30;
const CUSTOMERS: u64 = 50_000;
const TICKETS: u64 = 400_000;
/// Buckets of each actor kind's action distribution.
const BUCKETS: u64 = 10_000;
/// Rows per fill statement (progress is printed after each).
const CHUNK: u64 = 1_000_000;
/// Random values are kept to 52 bits so both dialects compute them alike.
const RAND_MASK: u64 = (1 << 52) - 1;
const LINE_BUDGET: Duration = Duration::from_secs(60);

/// SplitMix64: the queries and the generated ids repeat from run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(
            ((u128::from(self.next()) << 64) | u128::from(self.next())).to_be_bytes(),
        )
        .into_uuid()
    }
}

/// How often an agent performs each action, per 10,000 of its events:
/// replies and status changes dominate, as in a real helpdesk.
const AGENT_WEIGHTS: &[(&str, u64)] = &[
    ("ticket.message_added", 2600),
    ("ticket.status_changed", 1700),
    ("user.viewing_ticket", 1200),
    ("user.left_ticket", 800),
    ("ticket.internal_message_added", 500),
    ("ticket.note_added", 400),
    ("ticket.transferred", 350),
    ("ticket.tags_changed", 350),
    ("ticket.created", 300),
    ("user.state_changed", 300),
    ("ticket.priority_changed", 200),
    ("ticket.chat_message_added", 200),
    ("user.logged_in", 150),
    ("user.logged_out", 120),
    ("ticket.file_attached", 120),
    ("ticket.call_logged", 80),
    ("ticket.forwarded", 50),
    ("ticket.facebook", 50),
    ("ticket.tweet", 40),
    ("ticket.merged", 40),
    ("user.login_failed", 30),
    ("ticket.split", 20),
    ("ticket.knowledgebase", 20),
    ("ticket.offline", 20),
    ("ticket.voice_message_added", 20),
    ("ticket.other", 20),
    ("user.general_action", 20),
    ("ticket.weibo", 10),
    ("ticket.tencent", 10),
    ("user.updated", 10),
    ("user.created", 5),
    ("settings.changed", 5),
    ("department.created", 2),
    ("department.renamed", 2),
    ("department.deactivated", 1),
    ("department.reactivated", 1),
    ("ticket.ranked", 1),
    ("ticket.system_message_added", 1),
];
const CUSTOMER_WEIGHTS: &[(&str, u64)] = &[
    ("ticket.message_added", 5500),
    ("ticket.created", 2000),
    ("ticket.chat_message_added", 1200),
    ("ticket.ranked", 800),
    ("ticket.offline", 300),
    ("ticket.facebook", 200),
];
const SYSTEM_WEIGHTS: &[(&str, u64)] = &[
    ("ticket.status_changed", 4500),
    ("ticket.system_message_added", 3500),
    ("ticket.other", 1000),
    ("user.general_action", 600),
    ("user.login_failed", 400),
];

const FIRST_NAMES: &[&str] = &[
    "Amelia", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi", "Ines", "Jonas",
    "Kavya", "Lucas", "Marta", "Nikolai", "Olivia", "Pedro", "Quentin", "Rosa", "Sofia", "Tomas",
];
const LAST_NAMES: &[&str] = &[
    "Almeida", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Horvat", "Ivanova",
    "Jansen",
];
/// The tail of a description; `refund` (in 3 of 16) is what the free-text
/// line searches for.
const PHRASES: &[&str] = &[
    "customer asked for a refund of a duplicate charge on the last invoice",
    "shipping address corrected before dispatch",
    "password reset link sent again after the first one expired",
    "escalated to the billing team for a partial refund",
    "waiting for the customer to confirm the order number",
    "follow-up scheduled for the next business day",
    "duplicate of an earlier request about the same delivery",
    "warranty claim accepted, replacement unit on its way to the customer",
    "invoice copy sent as a PDF attachment",
    "customer reports the mobile app crashes on start after the update",
    "refund approved and issued to the original payment method",
    "subscription downgraded at the end of the current billing period",
    "asked for screenshots of the error message",
    "account unlocked after identity check",
    "delivery delayed by the carrier; new estimate shared",
    "closed after no reply for seven days",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:129.0) Gecko/20100101 Firefox/129.0",
    "ledgerdesk-mobile/3.4.1 (Android 14; Pixel 8)",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The generated population, the same on every run.
struct World {
    agents: Vec<(Uuid, String, Uuid)>,
    departments: Vec<Uuid>,
}

impl World {
    fn new() -> Self {
        let mut rng = Rng(0x1ed6_e4de_5c00_a0d1);
        let departments: Vec<Uuid> = (0..DEPARTMENTS).map(|_| rng.uuid()).collect();
        let agents = (0..AGENTS)
            .map(|i| {
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[i % FIRST_NAMES.len()],
                    LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()]
                );
                (rng.uuid(), name, departments[rng.below(DEPARTMENTS)])
            })
            .collect();
        Self {
            agents,
            departments,
        }
    }
}

/// The twelve months the rows span: [2025-01-01, 2026-01-01).
fn month(m: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(2025, m + 1, 1, 0, 0, 0).unwrap();
    let end = if m == 11 {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    } else {
        Utc.with_ymd_and_hms(2025, m + 2, 1, 0, 0, 0).unwrap()
    };
    (start, end)
}

fn span() -> (i64, i64) {
    (
        month(0).0.timestamp_micros(),
        month(11).1.timestamp_micros(),
    )
}

// ---------------------------------------------------------------------------
// Databases

struct Db {
    url: String,
    backend: Backend,
    cleanup: Option<Box<dyn FnOnce()>>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(c) = self.cleanup.take() {
            c();
        }
    }
}

fn sqlite_db() -> Db {
    let dir = std::env::temp_dir().join("ledgerdesk-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("audit-{}.db", Uuid::now_v7().simple()));
    let p = path.clone();
    Db {
        url: format!("sqlite://{}", path.display()),
        backend: Backend::Sqlite,
        cleanup: Some(Box::new(move || {
            for s in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", p.display()));
            }
        })),
    }
}

async fn postgres_db(admin: &str) -> Db {
    let name = format!("ldbench_audit_{}", Uuid::now_v7().simple());
    let mut c = PgConnection::connect(admin).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b).to_owned();
    let admin = admin.to_owned();
    Db {
        url: format!("{base}/{name}"),
        backend: Backend::Postgres,
        cleanup: Some(Box::new(move || {
            // Called from inside the runtime: clean up on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        })),
    }
}

/// One raw connection for the fill, tuned for bulk loading.
enum FillConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl FillConn {
    async fn open(db: &Db) -> Self {
        match db.backend {
            Backend::Sqlite => {
                let mut c = SqliteConnection::connect(&db.url).await.expect("sqlite");
                // Set-up only: the measured queries use the store's own pool.
                for p in [
                    "PRAGMA synchronous=OFF",
                    "PRAGMA cache_size=-524288",
                    "PRAGMA threads=2",
                ] {
                    sqlx::query(p).execute(&mut c).await.expect(p);
                }
                FillConn::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = PgConnection::connect(&db.url).await.expect("postgres");
                for p in [
                    "SET synchronous_commit = off",
                    "SET maintenance_work_mem = '1GB'",
                    "SET work_mem = '256MB'",
                ] {
                    sqlx::query(p).execute(&mut c).await.expect(p);
                }
                FillConn::Postgres(c)
            }
        }
    }

    async fn exec(&mut self, sql: &str) {
        let r = match self {
            FillConn::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
            FillConn::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        };
        if let Err(e) = r {
            panic!("{e}\n{sql}");
        }
    }

    async fn scalar_i64(&mut self, sql: &str) -> i64 {
        match self {
            FillConn::Sqlite(c) => sqlx::query(sql).fetch_one(c).await.unwrap().get(0),
            FillConn::Postgres(c) => sqlx::query(sql).fetch_one(c).await.unwrap().get(0),
        }
    }

    async fn strings(&mut self, sql: &str) -> Vec<String> {
        match self {
            FillConn::Sqlite(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect(),
            FillConn::Postgres(c) => sqlx::query(sql)
                .fetch_all(c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect(),
        }
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL for a UUID-shaped text whose last 12 hex digits are `expr`.
fn uuid_sql(backend: Backend, head: &str, expr: &str) -> String {
    match backend {
        Backend::Sqlite => format!("('{head}' || printf('%012x', {expr}))"),
        Backend::Postgres => format!("('{head}' || lpad(to_hex({expr}), 12, '0'))"),
    }
}

/// `(n_i / div) % m` picked from a list of literals.
fn pick_sql(expr: &str, items: &[&str]) -> String {
    let mut s = format!("CASE {expr} % {}", items.len());
    for (i, it) in items.iter().enumerate() {
        s.push_str(&format!(" WHEN {i} THEN {}", lit(it)));
    }
    s.push_str(" END");
    s
}

struct ActionShape {
    event_type: &'static str,
    stream_type: &'static str,
    has_ticket: bool,
    field: &'static str,
    before: &'static str,
    after: &'static str,
}

fn shape(code: &'static str) -> ActionShape {
    let message = matches!(
        code,
        "ticket.facebook"
            | "ticket.tweet"
            | "ticket.weibo"
            | "ticket.tencent"
            | "ticket.knowledgebase"
            | "ticket.offline"
    );
    let (field, before, after) = match code {
        "ticket.status_changed" => ("status", "\"open\"", "\"pending\""),
        "ticket.priority_changed" => ("priority", "\"normal\"", "\"high\""),
        "ticket.transferred" => ("assignee", "\"tier-1\"", "\"tier-2 billing\""),
        "ticket.tags_changed" => ("tags", "[\"billing\"]", "[\"billing\",\"refund\"]"),
        "user.state_changed" => ("state", "\"available\"", "\"away\""),
        "ticket.created" => ("status", "null", "\"new\""),
        "user.updated" | "user.created" => ("role", "\"agent\"", "\"supervisor\""),
        "settings.changed" => ("business_hours", "\"09:00-17:00\"", "\"08:00-18:00\""),
        c if c.starts_with("department.") => ("name", "\"Billing\"", "\"Billing & Payments\""),
        c if c.starts_with("ticket.") => ("message", "null", "\"email outbound, 1 attachment\""),
        _ => ("session", "null", "\"web\""),
    };
    ActionShape {
        event_type: if message {
            "ticket.message_added"
        } else {
            code_static(code)
        },
        stream_type: code.split('.').next().unwrap_or("ticket"),
        has_ticket: code.starts_with("ticket.")
            || matches!(code, "user.viewing_ticket" | "user.left_ticket"),
        field,
        before,
        after,
    }
}

fn code_static(code: &str) -> &'static str {
    ACTIONS
        .iter()
        .find(|a| a.code == code)
        .map(|a| a.code)
        .unwrap_or_else(|| panic!("{code} is not in the catalogue"))
}

/// Expand weights into exactly `BUCKETS` buckets.
fn buckets(weights: &[(&str, u64)]) -> Vec<(u64, &'static str)> {
    let total: u64 = weights.iter().map(|w| w.1).sum();
    let mut out = Vec::with_capacity(BUCKETS as usize);
    let mut cum = 0;
    for (code, w) in weights {
        let lo = cum * BUCKETS / total;
        cum += w;
        let hi = cum * BUCKETS / total;
        for b in lo..hi {
            out.push((b, code_static(code)));
        }
    }
    assert_eq!(out.len() as u64, BUCKETS);
    out
}

async fn fill(db: &Db, world: &World, rows: u64) -> Duration {
    let t0 = Instant::now();
    let b = db.backend;
    let mut c = FillConn::open(db).await;
    let temp = "CREATE TEMPORARY TABLE";
    c.exec(&format!(
        "{temp} bench_actor (idx INTEGER PRIMARY KEY, actor_id TEXT, actor_name TEXT, actor_department TEXT)"
    ))
    .await;
    let values: Vec<String> = world
        .agents
        .iter()
        .enumerate()
        .map(|(i, (id, name, dept))| format!("({i}, '{id}', {}, '{dept}')", lit(name)))
        .collect();
    c.exec(&format!(
        "INSERT INTO bench_actor VALUES {}",
        values.join(", ")
    ))
    .await;
    c.exec(&format!(
        "{temp} bench_action (kind TEXT NOT NULL, bucket INTEGER NOT NULL, code TEXT NOT NULL, label TEXT NOT NULL, \
         event_type TEXT NOT NULL, stream_type TEXT NOT NULL, has_ticket INTEGER NOT NULL, changes_head TEXT NOT NULL, \
         PRIMARY KEY (kind, bucket))"
    ))
    .await;
    for (kind, weights) in [
        ("agent", AGENT_WEIGHTS),
        ("customer", CUSTOMER_WEIGHTS),
        ("system", SYSTEM_WEIGHTS),
    ] {
        let all = buckets(weights);
        for chunk in all.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(bucket, code)| {
                    let a = ACTIONS.iter().find(|a| a.code == *code).unwrap();
                    let s = shape(code);
                    let head = format!(
                        "[{{\"field\":\"{}\",\"before\":{},\"after\":{}}}",
                        s.field, s.before, s.after
                    );
                    format!(
                        "('{kind}', {bucket}, '{}', {}, '{}', '{}', {}, {})",
                        a.code,
                        lit(a.label),
                        s.event_type,
                        s.stream_type,
                        i32::from(s.has_ticket),
                        lit(&head)
                    )
                })
                .collect();
            c.exec(&format!(
                "INSERT INTO bench_action VALUES {}",
                values.join(", ")
            ))
            .await;
        }
    }
    // The user names and departments the projection keeps beside the log.
    c.exec(
        "INSERT INTO audit_actors (id, name, department) \
         SELECT actor_id, actor_name, actor_department FROM bench_actor",
    )
    .await;

    // The schema's indexes are built after the rows: much faster than
    // maintaining six of them through ten million inserts.
    let tables = AuditProjection.tables();
    let log = tables.iter().find(|t| t.name == "audit_log").unwrap();
    for (index, _) in log.indexes {
        c.exec(&format!("DROP INDEX IF EXISTS {index}")).await;
    }

    let (start, end) = span();
    let step = (end - start) / rows as i64;
    let kind = "CASE WHEN s.r1 % 100 < 80 THEN 'agent' WHEN s.r1 % 100 < 92 THEN 'customer' ELSE 'system' END";
    let ticket = uuid_sql(
        b,
        "0192e3a1-7c44-7d1e-9f3a-",
        &format!("(s.r2 / 1000 % {TICKETS})"),
    );
    let customer = uuid_sql(
        b,
        "0191b7c2-1f0e-7a5b-8c6d-",
        &format!("(s.r2 % {CUSTOMERS})"),
    );
    let correlation = uuid_sql(b, "0193f0aa-3b2c-4d5e-8f60-", "(s.r3 / 1024)");
    let event_id = uuid_sql(b, "0194c0de-5a6b-7c8d-9e0f-", "s.g");
    let tk = format!("CASE WHEN ac.has_ticket = 1 THEN {ticket} END");
    let actor_id = format!("COALESCE(a.actor_id, CASE WHEN s.r1 % 100 < 92 THEN {customer} END)");
    let department = uuid_sql(b, "0190aa00-0000-7000-8000-", "(s.r2 % 30)");
    let who = "COALESCE(a.actor_name, CASE WHEN s.r1 % 100 < 92 THEN 'the customer' ELSE 'the system' END)";
    let phrase = pick_sql("(s.r3 / 7)", PHRASES);
    let ua = pick_sql("(s.r3 / 1000003)", USER_AGENTS);
    let select = format!(
        "SELECT s.g, {event_id}, {start} + (s.g - 1) * {step}, {actor_id}, a.actor_name, {kind}, \
         a.actor_department, ac.code, ac.label, {tk}, \
         ac.label || ' by ' || {who} || CASE WHEN ac.has_ticket = 1 THEN ' on ticket ' || {ticket} ELSE '' END || ': ' || {phrase}, \
         ac.changes_head || ',{{\"field\":\"' || CASE WHEN ac.has_ticket = 1 THEN 'ticket_id' ELSE 'session_id' END || '\",\"before\":null,\"after\":\"' || COALESCE({tk}, {correlation}) || '\"}}]', \
         CASE WHEN s.r1 % 100 < 92 THEN '10.' || (s.r2 % 250) || '.' || (s.r3 % 250) || '.' || (s.r3 / 250 % 250) END, \
         CASE WHEN s.r1 % 100 < 92 THEN {ua} END, \
         {correlation}, ac.event_type, \
         ac.stream_type || '-' || COALESCE({tk}, {actor_id}, {department}) \
         FROM s \
         LEFT JOIN bench_actor a ON s.r1 % 100 < 80 AND a.idx = (s.r1 / 1000000) % {AGENTS} \
         JOIN bench_action ac ON ac.kind = {kind} AND ac.bucket = (s.r1 / 100) % {BUCKETS}"
    );
    let columns = "position, event_id, recorded_at, actor_id, actor_name, actor_kind, actor_department, \
                   action, label, ticket_id, description, changes, ip, user_agent, correlation_id, event_type, stream_id";
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + CHUNK - 1).min(rows);
        let t = Instant::now();
        let sql = match b {
            Backend::Sqlite => format!(
                "WITH RECURSIVE s(g, r1, r2, r3) AS (\
                   SELECT {lo}, random() & {RAND_MASK}, random() & {RAND_MASK}, random() & {RAND_MASK} \
                   UNION ALL \
                   SELECT g + 1, random() & {RAND_MASK}, random() & {RAND_MASK}, random() & {RAND_MASK} FROM s WHERE g < {hi}) \
                 INSERT INTO audit_log ({columns}) {select}"
            ),
            Backend::Postgres => format!(
                "INSERT INTO audit_log ({columns}) {select}",
                select = select.replacen(
                    "FROM s ",
                    &format!(
                        "FROM (SELECT g, floor(random() * {m})::bigint AS r1, floor(random() * {m})::bigint AS r2, \
                         floor(random() * {m})::bigint AS r3 FROM generate_series({lo}::bigint, {hi}::bigint) g OFFSET 0) s ",
                        m = RAND_MASK + 1
                    ),
                    1
                )
            ),
        };
        c.exec(&sql).await;
        eprintln!(
            "  rows {lo}..={hi} in {:.1} s (load {})",
            t.elapsed().as_secs_f64(),
            load()
        );
        lo = hi + 1;
    }
    let rows_done = t0.elapsed();
    let t = Instant::now();
    for sql in log.create_indexes(log.name, "").lines() {
        let ti = Instant::now();
        c.exec(sql).await;
        eprintln!("  {sql} {:.1} s", ti.elapsed().as_secs_f64());
    }
    let indexes_done = t.elapsed();
    let t = Instant::now();
    match b {
        Backend::Sqlite => c.exec("ANALYZE").await,
        Backend::Postgres => c.exec("VACUUM ANALYZE").await,
    }
    let analyze_done = t.elapsed();
    let n = c.scalar_i64("SELECT COUNT(*) FROM audit_log").await;
    assert_eq!(n as u64, rows);
    println!(
        "fill: {rows} rows in {:.0} s, indexes {:.0} s, {} {:.0} s; total {:.0} s",
        rows_done.as_secs_f64(),
        indexes_done.as_secs_f64(),
        if b == Backend::Sqlite {
            "ANALYZE"
        } else {
            "VACUUM ANALYZE"
        },
        analyze_done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    if let FillConn::Sqlite(s) = c {
        let _ = s.close().await;
    }
    t0.elapsed()
}

async fn describe(db: &Db) {
    let mut c = FillConn::open(db).await;
    match db.backend {
        Backend::Sqlite => {
            let v = c.strings("SELECT sqlite_version()").await;
            let path = db.url.trim_start_matches("sqlite://");
            let size: u64 = ["", "-wal"]
                .iter()
                .filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok())
                .map(|m| m.len())
                .sum();
            println!("SQLite {} (bundled with sqlx), file {}", v[0], gib(size));
            let idx = c
                .strings("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log' ORDER BY name")
                .await;
            println!("indexes on audit_log: {}", idx.join(", "));
        }
        Backend::Postgres => {
            let v = c.strings("SHOW server_version").await;
            let sb = c.strings("SHOW shared_buffers").await;
            let db_size = c
                .scalar_i64("SELECT pg_database_size(current_database())")
                .await;
            let table = c.scalar_i64("SELECT pg_relation_size('audit_log')").await;
            let total = c
                .scalar_i64("SELECT pg_total_relation_size('audit_log')")
                .await;
            println!(
                "PostgreSQL {} (shared_buffers {}), database {}, audit_log {} + indexes {}",
                v[0],
                sb[0],
                gib(db_size as u64),
                gib(table as u64),
                gib((total - table) as u64)
            );
            let idx = c
                .strings("SELECT indexname::text FROM pg_indexes WHERE tablename = 'audit_log' ORDER BY 1")
                .await;
            println!("indexes on audit_log: {}", idx.join(", "));
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The kernel's page cache: how much of the database reads can come from
/// memory (this machine's DAMON reclaim shrinks it while idle).
fn page_cache() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("Cached:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| gib(kb * 1024))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------
// Queries

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    AgentActionMonth,
    AgentAnyCatalogueActionMonth,
    AgentMonth,
    ActionMonth,
    DepartmentMonth,
    AgentActionMonthPage2,
    AgentMonthText,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::AgentActionMonth => "one agent + one action + one month",
            Shape::AgentAnyCatalogueActionMonth => {
                "one agent + one action (uniform over the catalogue) + one month"
            }
            Shape::AgentMonth => "one agent + one month (any action)",
            Shape::ActionMonth => "one action + one month",
            Shape::DepartmentMonth => "one department + one month",
            Shape::AgentActionMonthPage2 => "one agent + one action + one month, page 2",
            Shape::AgentMonthText => "one agent + one month + text `refund`",
        }
    }
}

fn weighted_action(rng: &mut Rng) -> &'static str {
    let total: u64 = AGENT_WEIGHTS.iter().map(|w| w.1).sum();
    let mut x = rng.next() % total;
    for (code, w) in AGENT_WEIGHTS {
        if x < *w {
            return code_static(code);
        }
        x -= w;
    }
    unreachable!()
}

fn filter(shape: Shape, world: &World, rng: &mut Rng) -> AuditFilter {
    let agent = world.agents[rng.below(AGENTS)].0;
    let (from, to) = month(rng.below(12) as u32);
    let action = weighted_action(rng).to_owned();
    let any_action = ACTIONS[rng.below(ACTIONS.len())].code.to_owned();
    let department = world.departments[rng.below(DEPARTMENTS)];
    let (from, to) = (Some(from), Some(to));
    match shape {
        Shape::AgentActionMonth | Shape::AgentActionMonthPage2 => AuditFilter {
            actors: vec![agent],
            actions: vec![action],
            from,
            to,
            ..Default::default()
        },
        Shape::AgentAnyCatalogueActionMonth => AuditFilter {
            actors: vec![agent],
            actions: vec![any_action],
            from,
            to,
            ..Default::default()
        },
        Shape::AgentMonth => AuditFilter {
            actors: vec![agent],
            from,
            to,
            ..Default::default()
        },
        Shape::ActionMonth => AuditFilter {
            actions: vec![action],
            from,
            to,
            ..Default::default()
        },
        Shape::DepartmentMonth => AuditFilter {
            departments: vec![department],
            from,
            to,
            ..Default::default()
        },
        Shape::AgentMonthText => AuditFilter {
            actors: vec![agent],
            from,
            to,
            text: vec!["refund".into()],
            ..Default::default()
        },
    }
}

struct Line {
    label: &'static str,
    samples: Vec<Duration>,
    rows: usize,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn measure(pool: &DbPool, world: &World, shape: Shape, n: usize, seed: u64) -> Line {
    let mut rng = Rng(seed);
    let mut samples = Vec::with_capacity(n);
    let mut rows = 0;
    let started = Instant::now();
    let mut tries = 0;
    while samples.len() < n && tries < n * 20 {
        tries += 1;
        if samples.len() >= 10 && started.elapsed() > LINE_BUDGET {
            break;
        }
        let mut f = filter(shape, world, &mut rng);
        if shape == Shape::AgentActionMonthPage2 {
            let first = audit::search(pool, &f).await.expect("search");
            let Some(cursor) = first.next_cursor else {
                continue; // one page only: no page 2 to time
            };
            f.before_position = Some(cursor.parse().expect("cursor"));
        }
        let t = Instant::now();
        let page = audit::search(pool, &f).await.expect("search");
        samples.push(t.elapsed());
        rows += page.items.len();
    }
    Line {
        label: shape.label(),
        samples,
        rows,
    }
}

/// The main query's SQL as `audit::search` builds it, with literals, for
/// the plan.
fn plan_sql(f: &AuditFilter) -> String {
    let mut w = Vec::new();
    if let Some(a) = f.actions.first() {
        w.push(format!("action IN ('{a}')"));
    }
    if let Some(a) = f.actors.first() {
        w.push(format!("actor_id IN ('{a}')"));
    }
    if let Some(d) = f.departments.first() {
        w.push(format!("actor_department IN ('{d}')"));
    }
    if let Some(t) = f.from {
        w.push(format!("recorded_at >= {}", t.timestamp_micros()));
    }
    if let Some(t) = f.to {
        w.push(format!("recorded_at < {}", t.timestamp_micros()));
    }
    format!(
        "SELECT * FROM audit_log WHERE {} ORDER BY position DESC LIMIT 51",
        w.join(" AND ")
    )
}

/// Query plans, through a connection of the backend's own (the plan rows
/// differ by backend, so the store's layer has no shape for them).
async fn plans(url: &str, world: &World) {
    let mut rng = Rng(7);
    for shape in [
        Shape::AgentActionMonth,
        Shape::AgentMonth,
        Shape::ActionMonth,
        Shape::DepartmentMonth,
    ] {
        let mut f = filter(shape, world, &mut rng);
        // The hardest month for a newest-first scan: the first one.
        let (from, to) = month(0);
        f.from = Some(from);
        f.to = Some(to);
        let sql = plan_sql(&f);
        println!("\nplan, {} (January):\n  {sql}", shape.label());
        let lines: Vec<String> = if url.starts_with("sqlite:") {
            let mut c = SqliteConnection::connect(url).await.expect("sqlite");
            sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect()
        } else {
            let mut c = PgConnection::connect(url).await.expect("postgres");
            sqlx::query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect()
        };
        for l in lines {
            println!("  {l}");
        }
    }
}

async fn run(db: &Db, world: &World, rows: u64, fill_it: bool) {
    let label = match db.backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    println!("\n== {label}: {rows} audit rows (load {})", load());
    if fill_it {
        // The schema as the app creates it: the store's migrations, then the
        // projector's own check.
        let store = ledgerdesk_store::open(&db.url, &OpenOptions::default())
            .await
            .expect("open store");
        Projector::new(store.clone())
            .ensure_schema()
            .await
            .expect("ensure schema");
        drop(store);
        fill(db, world, rows).await;
    }
    describe(db).await;
    // A fresh store, so every pooled connection sees the statistics.
    let store = ledgerdesk_store::open(&db.url, &OpenOptions::default())
        .await
        .expect("open store");
    let pool = store.db();
    let n = std::env::var("LEDGERDESK_BENCH_AUDIT_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize);
    let extra = (n / 4).max(10);
    let cache_before = page_cache();
    // Warm-up: the same shape as the main line, other samples.
    let _ = measure(&pool, world, Shape::AgentActionMonth, 20, 99).await;
    let mut lines = Vec::new();
    for (shape, count, seed) in [
        (Shape::AgentActionMonth, n, 1),
        (Shape::AgentAnyCatalogueActionMonth, extra, 2),
        (Shape::AgentMonth, extra, 3),
        (Shape::ActionMonth, extra, 4),
        (Shape::DepartmentMonth, extra, 5),
        (Shape::AgentActionMonthPage2, extra, 6),
        (Shape::AgentMonthText, extra, 8),
    ] {
        let t = Instant::now();
        let line = measure(&pool, world, shape, count, seed).await;
        eprintln!(
            "  {}: {} queries in {:.1} s (load {})",
            line.label,
            line.samples.len(),
            t.elapsed().as_secs_f64(),
            load()
        );
        lines.push(line);
    }
    println!(
        "\n{label}, {rows} rows, load average {} after the queries, page cache {} (was {cache_before})\n",
        load(),
        page_cache()
    );
    println!("| query | n | median ms | p95 ms | max ms | rows/page |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for mut l in lines {
        if l.samples.is_empty() {
            println!("| {} | 0 | — | — | — | — |", l.label);
            continue;
        }
        l.samples.sort();
        println!(
            "| {} | {} | {} | {} | {} | {:.0} |",
            l.label,
            l.samples.len(),
            ms(pct(&l.samples, 0.5)),
            ms(pct(&l.samples, 0.95)),
            ms(*l.samples.last().unwrap()),
            l.rows as f64 / l.samples.len() as f64
        );
    }
    plans(&db.url, world).await;
}

fn main() {
    // `cargo test --all-targets` (make test) runs bench targets too, without
    // `--bench`: measure only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with cargo bench (make bench)");
        return;
    }
    let rows: u64 = std::env::var("LEDGERDESK_BENCH_AUDIT_ROWS")
        .ok()
        .map(|v| {
            v.replace(['_', ','], "")
                .parse()
                .expect("LEDGERDESK_BENCH_AUDIT_ROWS")
        })
        .unwrap_or(10_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let world = World::new();
        let keep = std::env::var("LEDGERDESK_BENCH_AUDIT_KEEP").is_ok_and(|v| v == "1");
        if let Ok(url) = std::env::var("LEDGERDESK_BENCH_AUDIT_URL") {
            let db = Db {
                backend: if url.starts_with("sqlite:") {
                    Backend::Sqlite
                } else {
                    Backend::Postgres
                },
                url,
                cleanup: None,
            };
            run(&db, &world, rows, false).await;
            return;
        }
        let pg = std::env::var("LEDGERDESK_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("LEDGERDESK_TEST_POSTGRES_URL"))
            .ok()
            .filter(|u| !u.is_empty());
        let only = std::env::var("LEDGERDESK_BENCH_AUDIT_BACKENDS").unwrap_or_default();
        let wants = |name: &str| only.is_empty() || only.split(',').any(|b| b.trim() == name);
        if wants("sqlite") {
            let mut db = sqlite_db();
            if keep {
                db.cleanup = None;
            }
            run(&db, &world, rows, true).await;
            if keep {
                println!("kept: {}", db.url);
            }
        }
        match pg {
            Some(admin) if wants("postgres") => {
                let mut db = postgres_db(&admin).await;
                if keep {
                    db.cleanup = None;
                }
                run(&db, &world, rows, true).await;
                if keep {
                    println!("kept: {}", db.url);
                }
            }
            Some(_) => {}
            None => println!(
                "\npostgres: skipped (set LEDGERDESK_BENCH_POSTGRES_URL or LEDGERDESK_TEST_POSTGRES_URL)"
            ),
        }
    });
}
