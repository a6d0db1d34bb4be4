//! Rebuild throughput per projection, on SQLite and (when
//! `LEDGERDESK_TEST_POSTGRES_URL` is set) PostgreSQL. Ignored by default:
//!
//! ```text
//! LEDGERDESK_BENCH_EVENTS=200000 LEDGERDESK_TEST_POSTGRES_URL=postgres://… \
//!   cargo test -p ledgerdesk-projections --release --test throughput -- --ignored --nocapture
//! ```

use std::sync::Arc;
use std::time::Instant;

use ledgerdesk_domain::ticket::{BodyPii, Channel, CreatedPii, Direction, Priority, Status};
use ledgerdesk_domain::user::Presence;
use ledgerdesk_domain::{AnyEvent, Pii, TicketEvent, UserEvent};
use ledgerdesk_projections::Projector;
use ledgerdesk_store::{
    ActorKind, EventStore, ExpectedVersion, Metadata, NewEvent, OpenOptions, StreamAppend,
};
use uuid::Uuid;

fn new_event(ev: AnyEvent, actor: Uuid) -> NewEvent {
    NewEvent::new(
        ev.event_type(),
        ev.schema_version(),
        ev.to_payload(),
        Metadata {
            actor_id: Some(actor),
            actor_kind: ActorKind::Agent,
            ip: Some("192.0.2.1".into()),
            user_agent: Some("bench".into()),
            correlation_id: Some("req".into()),
            causation_id: None,
        },
    )
}

/// A ticket's life: created, 4 messages, open, resolved, plus one agent
/// presence change: 8 events.
fn ticket_life(i: usize, agents: &[Uuid], departments: &[Uuid]) -> Vec<StreamAppend> {
    let t = Uuid::now_v7();
    let agent = agents[i % agents.len()];
    let subject = Uuid::from_u128(i as u128);
    let body = |b: &str| Pii::new(subject, BodyPii { body: b.into() });
    let msg = |d| {
        AnyEvent::from(TicketEvent::MessageAdded {
            ticket_id: t,
            message_id: Uuid::now_v7(),
            direction: d,
            channel: Channel::Email,
            pii: body("Thanks for your message, we are looking into it."),
        })
    };
    let events = vec![
        AnyEvent::from(TicketEvent::Created {
            ticket_id: t,
            message_id: Uuid::now_v7(),
            channel: Channel::Email,
            priority: Priority::Normal,
            department: Some(departments[i % departments.len()]),
            tags: vec!["billing".into()],
            split_from: None,
            pii: Pii::new(
                subject,
                CreatedPii {
                    subject: format!("Invoice {i} missing"),
                    body: "Hello, my invoice is missing.".into(),
                    requester_name: "Ann Customer".into(),
                    requester_email: Some("ann@example.com".into()),
                },
            ),
        }),
        msg(Direction::Inbound),
        msg(Direction::Outbound),
        AnyEvent::from(TicketEvent::StatusChanged {
            ticket_id: t,
            from: Status::New,
            to: Status::Open,
        }),
        msg(Direction::Inbound),
        msg(Direction::Outbound),
        AnyEvent::from(TicketEvent::StatusChanged {
            ticket_id: t,
            from: Status::Open,
            to: Status::Resolved,
        }),
    ];
    let (from, to) = if i & 1 == 0 {
        (Presence::Available, Presence::Away)
    } else {
        (Presence::Away, Presence::Available)
    };
    vec![
        StreamAppend::new(
            ledgerdesk_domain::stream_id("ticket", t),
            ExpectedVersion::NoStream,
            events.into_iter().map(|e| new_event(e, agent)).collect(),
        ),
        StreamAppend::new(
            ledgerdesk_domain::stream_id("user", agent),
            ExpectedVersion::Any,
            vec![new_event(
                UserEvent::StateChanged {
                    user_id: agent,
                    from,
                    to,
                }
                .into(),
                agent,
            )],
        ),
    ]
}

async fn seed(store: &Arc<dyn EventStore>, events: usize) {
    let agents: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    let departments: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let lives = events / 8;
    let started = Instant::now();
    let mut i = 0;
    while i < lives {
        // Distinct streams per batch, well under the per-append limit.
        let batch: Vec<StreamAppend> = (i..(i + 50).min(lives))
            .flat_map(|k| ticket_life(k, &agents[(k % 50)..=(k % 50)], &departments))
            .collect();
        i += 50;
        store.append_many(batch).await.expect("seed");
    }
    eprintln!(
        "seeded {} events in {:.1?}",
        store.head().await.unwrap().position,
        started.elapsed()
    );
}

async fn measure(url: &str, label: &str) {
    let events: usize = std::env::var("LEDGERDESK_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let store = ledgerdesk_store::open(url, &OpenOptions::default())
        .await
        .expect("open");
    seed(&store, events).await;
    let projector = Projector::new(store.clone());
    let head = store.head().await.unwrap().position;
    for name in projector.names() {
        let started = Instant::now();
        projector.rebuild(name, |_, _| {}).await.expect("rebuild");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{label} rebuild {name:>8}: {head} events in {secs:.2} s = {:.0} events/s",
            head as f64 / secs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release"]
async fn rebuild_throughput_sqlite() {
    let path =
        std::env::temp_dir().join(format!("ledgerdesk-bench-{}.db", Uuid::now_v7().simple()));
    measure(&format!("sqlite://{}", path.display()), "sqlite").await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release"]
async fn rebuild_throughput_postgres() {
    use sqlx::Connection;
    let Ok(admin) = std::env::var("LEDGERDESK_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LEDGERDESK_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("ldbench_{}", Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    measure(&format!("{base}/{name}"), "postgres").await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
