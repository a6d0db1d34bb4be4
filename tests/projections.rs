//! Projections on both backends: the runner, the read models, rebuilds,
//! as-of builds and (PostgreSQL) the one-worker-per-projection lease.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerdesk_domain::ticket::{
    BodyPii, Channel, CreatedPii, Direction, Priority, RatingPii, Status,
};
use ledgerdesk_domain::user::{FieldChange, Presence, Role};
use ledgerdesk_domain::{AnyEvent, Pii, TicketEvent, UserEvent};
use ledgerdesk_projections::audit::{self, AuditFilter, AuditProjection};
use ledgerdesk_projections::db::Tx;
use ledgerdesk_projections::tickets::{self, TicketFilter};
use ledgerdesk_projections::{
    async_trait, presence, reports, Event, Names, Projection, ProjectionError, Projector,
    WorkerState,
};
use ledgerdesk_store::{ActorKind, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent};
use ledgerdesk_tests::{backend_tests, Kind, TestDb};
use uuid::Uuid;

backend_tests!(
    tickets_reflect_a_realistic_sequence,
    audit_rows_filters_and_stable_cursor,
    checkpoint_is_atomic_with_its_page,
    rebuild_matches_incremental_and_serves_meanwhile,
    as_of_build_gives_the_past_state,
    one_worker_per_projection_across_processes,
    presence_and_reports_on_a_known_history,
    background_worker_follows_appends,
    an_append_the_head_watch_missed_is_found_by_the_poll,
    upgrade_replaces_the_read_models,
    text_search_beyond_ascii,
    text_with_control_characters_is_projected,
    a_failing_projection_is_reported_and_the_others_carry_on,
    wait_until_wakes_on_progress_and_times_out,
);

fn meta(actor: Option<Uuid>, kind: ActorKind) -> Metadata {
    Metadata {
        actor_id: actor,
        actor_kind: kind,
        ip: Some("192.0.2.7".into()),
        user_agent: Some("tests/1.0".into()),
        correlation_id: Some("req-42".into()),
        causation_id: None,
    }
}

fn agent(id: Uuid) -> Metadata {
    meta(Some(id), ActorKind::Agent)
}

/// Append domain events to their streams; returns the recorded events.
async fn append(store: &dyn EventStore, events: Vec<(AnyEvent, Metadata)>) -> Vec<RecordedEvent> {
    let head = store.head().await.unwrap().position;
    for (ev, m) in events {
        let id = match &ev {
            AnyEvent::Ticket(t) => t.ticket_id(),
            AnyEvent::User(u) => u.user_id(),
            AnyEvent::Department(d) => d.department_id(),
            AnyEvent::Settings(_) => Uuid::nil(),
        };
        let stream = ledgerdesk_domain::stream_id(ev.stream_type(), id);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    ev.event_type(),
                    ev.schema_version(),
                    ev.to_payload(),
                    m,
                )],
            )
            .await
            .expect("append");
    }
    store.read_all(head, 100_000).await.unwrap()
}

fn created(
    ticket: Uuid,
    subject: &str,
    channel: Channel,
    department: Option<Uuid>,
    tags: &[&str],
) -> AnyEvent {
    TicketEvent::Created {
        ticket_id: ticket,
        message_id: Uuid::now_v7(),
        channel,
        priority: Priority::Normal,
        department,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        split_from: None,
        pii: Pii::new(
            Uuid::from_u128(99),
            CreatedPii {
                subject: subject.into(),
                body: "Hello".into(),
                requester_name: "Ann Customer".into(),
                requester_email: Some("ann@example.com".into()),
            },
        ),
    }
    .into()
}

fn message(ticket: Uuid, direction: Direction) -> AnyEvent {
    TicketEvent::MessageAdded {
        ticket_id: ticket,
        message_id: Uuid::now_v7(),
        direction,
        channel: Channel::Email,
        pii: Pii::new(
            Uuid::from_u128(99),
            BodyPii {
                body: "text".into(),
            },
        ),
    }
    .into()
}

fn status(ticket: Uuid, from: Status, to: Status) -> AnyEvent {
    TicketEvent::StatusChanged {
        ticket_id: ticket,
        from,
        to,
    }
    .into()
}

fn transfer(
    ticket: Uuid,
    to_agent: Option<Uuid>,
    from_department: Option<Uuid>,
    to_department: Option<Uuid>,
) -> AnyEvent {
    TicketEvent::Transferred {
        ticket_id: ticket,
        from_agent: None,
        to_agent,
        from_department,
        to_department,
    }
    .into()
}

fn user_created(user: Uuid, name: &str, department: Option<Uuid>) -> AnyEvent {
    UserEvent::Created {
        user_id: user,
        name: name.into(),
        email: format!("{}@helpdesk.test", name.to_lowercase()),
        role: Role::Agent,
        department,
    }
    .into()
}

async fn all_tickets(pool: &ledgerdesk_store::DbPool) -> Vec<tickets::TicketRow> {
    tickets::list(
        pool,
        &TicketFilter {
            limit: Some(500),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .items
}

async fn all_audit(pool: &ledgerdesk_store::DbPool) -> Vec<audit::AuditRow> {
    audit::search(
        pool,
        &AuditFilter {
            limit: Some(500),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .items
}

/// A history touching every projection: users, tickets with messages,
/// status changes, transfers, tags, merge and split. Returns (ticket A,
/// ticket B, ticket C, agent, departments).
struct History {
    a: Uuid,
    b: Uuid,
    c: Uuid,
    agent: Uuid,
    d1: Uuid,
    d2: Uuid,
    events: Vec<RecordedEvent>,
}

async fn history(store: &dyn EventStore) -> History {
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (agent_id, d1, d2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let customer = meta(None, ActorKind::Customer);
    let moved = Uuid::now_v7();
    let events = append(
        store,
        vec![
            (
                user_created(agent_id, "Xavier", Some(d1)),
                Metadata::system(),
            ),
            (
                created(a, "Invoice missing", Channel::Email, Some(d1), &["billing"]),
                customer.clone(),
            ),
            (message(a, Direction::Inbound), customer.clone()),
            (message(a, Direction::Outbound), agent(agent_id)),
            (status(a, Status::New, Status::Open), agent(agent_id)),
            (
                transfer(a, Some(agent_id), Some(d1), Some(d2)),
                agent(agent_id),
            ),
            (
                TicketEvent::TagsChanged {
                    ticket_id: a,
                    added: vec!["urgent".into()],
                    removed: vec!["billing".into()],
                }
                .into(),
                agent(agent_id),
            ),
            (
                TicketEvent::PriorityChanged {
                    ticket_id: a,
                    from: Priority::Normal,
                    to: Priority::High,
                }
                .into(),
                agent(agent_id),
            ),
            (
                created(b, "Invoice again", Channel::Email, Some(d1), &[]),
                customer.clone(),
            ),
            (
                TicketEvent::Merged {
                    ticket_id: b,
                    into: a,
                    previous_status: Status::New,
                }
                .into(),
                agent(agent_id),
            ),
            (
                TicketEvent::InternalMessageAdded {
                    ticket_id: a,
                    message_id: moved,
                    pii: Pii::new(
                        Uuid::from_u128(99),
                        BodyPii {
                            body: "note".into(),
                        },
                    ),
                }
                .into(),
                agent(agent_id),
            ),
            (
                TicketEvent::Split {
                    ticket_id: a,
                    split_into: c,
                    message_ids: vec![moved],
                }
                .into(),
                agent(agent_id),
            ),
            (
                TicketEvent::Created {
                    ticket_id: c,
                    message_id: Uuid::now_v7(),
                    channel: Channel::Chat,
                    priority: Priority::Low,
                    department: Some(d2),
                    tags: vec![],
                    split_from: Some(a),
                    pii: Pii::new(
                        Uuid::from_u128(99),
                        CreatedPii {
                            subject: "Split part".into(),
                            body: "moved".into(),
                            requester_name: "Ann Customer".into(),
                            requester_email: None,
                        },
                    ),
                }
                .into(),
                agent(agent_id),
            ),
        ],
    )
    .await;
    History {
        a,
        b,
        c,
        agent: agent_id,
        d1,
        d2,
        events,
    }
}

async fn tickets_reflect_a_realistic_sequence(db: &TestDb) {
    let store = db.open().await;
    let h = history(&*store).await;
    let projector = Projector::new(store.clone());
    projector.catch_up().await.unwrap();
    let pool = store.db();

    let a = tickets::get(&pool, h.a).await.unwrap().expect("ticket A");
    assert_eq!(a.subject.as_deref(), Some("Invoice missing"));
    assert_eq!(a.requester_name.as_deref(), Some("Ann Customer"));
    assert_eq!(a.requester_email.as_deref(), Some("ann@example.com"));
    assert_eq!(
        (a.status.as_str(), a.priority.as_str(), a.channel.as_str()),
        ("open", "high", "email")
    );
    assert_eq!((a.assignee, a.department), (Some(h.agent), Some(h.d2)));
    assert_eq!(a.tags, vec!["urgent".to_string()]);
    // first message + inbound + outbound + internal, minus the one split off
    assert_eq!(a.message_count, 3);
    let reply = &h.events[3];
    assert_eq!(a.first_response_at, Some(reply.recorded_at));
    assert_eq!(a.created_at, h.events[1].recorded_at);
    assert_eq!(a.updated_at, h.events[11].recorded_at);
    assert_eq!(a.version, 9);

    let b = tickets::get(&pool, h.b).await.unwrap().expect("ticket B");
    assert_eq!((b.status.as_str(), b.merged_into), ("closed", Some(h.a)));
    let c = tickets::get(&pool, h.c).await.unwrap().expect("ticket C");
    assert_eq!(
        (c.split_from, c.message_count, c.channel.as_str()),
        (Some(h.a), 1, "chat")
    );
    assert!(tickets::get(&pool, Uuid::now_v7()).await.unwrap().is_none());

    let ids = |p: ledgerdesk_projections::Page<tickets::TicketRow>| {
        p.items.iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let f = |f: TicketFilter| f;
    let list = |filter: TicketFilter| {
        let pool = pool.clone();
        async move { tickets::list(&pool, &filter).await.unwrap() }
    };
    assert_eq!(
        ids(list(f(TicketFilter {
            status: Some("open".into()),
            ..Default::default()
        }))
        .await),
        vec![h.a]
    );
    assert_eq!(
        ids(list(TicketFilter {
            tag: Some("URGENT".into()),
            ..Default::default()
        })
        .await),
        vec![h.a]
    );
    assert!(ids(list(TicketFilter {
        tag: Some("billing".into()),
        ..Default::default()
    })
    .await)
    .is_empty());
    assert_eq!(
        ids(list(TicketFilter {
            department: Some(h.d2),
            ..Default::default()
        })
        .await),
        vec![h.c, h.a]
    );
    assert_eq!(
        ids(list(TicketFilter {
            department: Some(h.d2),
            channel: Some("chat".into()),
            ..Default::default()
        })
        .await),
        vec![h.c]
    );
    assert_eq!(
        ids(list(TicketFilter {
            q: Some("INVOICE".into()),
            ..Default::default()
        })
        .await),
        vec![h.a, h.b]
    );
    assert_eq!(
        ids(list(TicketFilter {
            q: Some("invoice".into()),
            assignee: Some(h.agent),
            priority: Some("high".into()),
            ..Default::default()
        })
        .await),
        vec![h.a]
    );
    assert!(ids(list(TicketFilter {
        q: Some("%".into()),
        ..Default::default()
    })
    .await)
    .is_empty());

    // Pagination: 7 more tickets, pages of 4, newest updated first, no overlap.
    let mut more = Vec::new();
    for i in 0..7 {
        more.push((
            created(
                Uuid::now_v7(),
                &format!("Extra {i}"),
                Channel::Web,
                None,
                &[],
            ),
            Metadata::system(),
        ));
    }
    append(&*store, more).await;
    projector.catch_up().await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = list(TicketFilter {
            limit: Some(4),
            cursor: cursor.clone(),
            ..Default::default()
        })
        .await;
        pages += 1;
        seen.extend(page.items.iter().map(|t| (t.updated_at, t.id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 10);
    assert_eq!(seen.iter().map(|s| s.1).collect::<HashSet<_>>().len(), 10);
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted, "newest updated first");
    assert!(matches!(
        tickets::list(
            &pool,
            &TicketFilter {
                cursor: Some("nonsense".into()),
                ..Default::default()
            }
        )
        .await,
        Err(ProjectionError::InvalidCursor)
    ));
}

async fn audit_rows_filters_and_stable_cursor(db: &TestDb) {
    let store = db.open().await;
    let h = history(&*store).await;
    // The agent moves to d2, then acts again.
    let later = append(
        &*store,
        vec![
            (
                UserEvent::Updated {
                    user_id: h.agent,
                    name: None,
                    role: None,
                    department: Some(FieldChange {
                        before: Some(h.d1),
                        after: Some(h.d2),
                    }),
                    active: None,
                }
                .into(),
                Metadata::system(),
            ),
            (
                status(h.a, Status::Open, Status::Resolved),
                Metadata {
                    ip: Some("198.51.100.1".into()),
                    ..agent(h.agent)
                },
            ),
        ],
    )
    .await;
    let projector = Projector::new(store.clone());
    projector.catch_up().await.unwrap();
    let pool = store.db();
    let total = store.head().await.unwrap().position;
    assert_eq!(audit::count(&pool).await.unwrap(), total);
    let rows = all_audit(&pool).await;
    assert_eq!(rows.len() as u64, total);
    assert_eq!(rows.first().unwrap().position, total, "newest first");

    // The status change: label, description, changes, context.
    let open = rows
        .iter()
        .find(|r| r.position == h.events[4].position)
        .unwrap();
    let expected = AnyEvent::decode(
        "ticket",
        "ticket.status_changed",
        1,
        &h.events[4].payload_json().unwrap(),
    )
    .unwrap()
    .audit();
    assert_eq!(open.action, "ticket.status_changed");
    assert_eq!(open.label, "Ticket – Status");
    assert_eq!(open.description, expected.description);
    assert_eq!(
        open.changes,
        serde_json::json!([{"field": "status", "before": "new", "after": "open"}])
    );
    assert_eq!(open.ticket_id, Some(h.a));
    assert_eq!(open.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(open.user_agent.as_deref(), Some("tests/1.0"));
    assert_eq!(open.correlation_id.as_deref(), Some("req-42"));
    assert_eq!(
        (
            open.actor_id,
            open.actor_name.as_deref(),
            open.actor_kind.as_str()
        ),
        (Some(h.agent), Some("Xavier"), "agent")
    );
    assert_eq!(open.actor_department, Some(h.d1));
    assert_eq!(open.event_id, h.events[4].event_id);
    let resolved = rows
        .iter()
        .find(|r| r.position == later[1].position)
        .unwrap();
    assert_eq!(
        resolved.actor_department,
        Some(h.d2),
        "department at the time of the event"
    );

    let search = |f: AuditFilter| {
        let pool = pool.clone();
        async move {
            audit::search(&pool, &f)
                .await
                .unwrap()
                .items
                .iter()
                .map(|r| r.position)
                .collect::<Vec<_>>()
        }
    };
    let status_changes = search(AuditFilter {
        actions: vec!["ticket.status_changed".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(
        status_changes,
        vec![later[1].position, h.events[4].position]
    );
    assert_eq!(
        search(AuditFilter {
            actions: vec!["ticket.status_changed".into()],
            departments: vec![h.d1],
            ..Default::default()
        })
        .await,
        vec![h.events[4].position]
    );
    assert_eq!(
        search(AuditFilter {
            actions: vec!["ticket.status_changed".into(), "ticket.merged".into()],
            actors: vec![h.agent],
            ..Default::default()
        })
        .await,
        vec![
            later[1].position,
            h.events[9].position,
            h.events[4].position
        ]
    );
    assert_eq!(
        search(AuditFilter {
            ips: vec!["198.51.100.1".into()],
            ..Default::default()
        })
        .await,
        vec![later[1].position]
    );
    let on_b = search(AuditFilter {
        tickets: vec![h.b],
        ..Default::default()
    })
    .await;
    assert_eq!(on_b, vec![h.events[9].position, h.events[8].position]);
    // Exclusions leave out what they match, and keep rows without the
    // value (customer and system rows have no actor).
    let not_agent = search(AuditFilter {
        exclude: audit::Exclusions {
            actors: vec![h.agent],
            ..Default::default()
        },
        limit: Some(500),
        ..Default::default()
    })
    .await;
    let all = search(AuditFilter {
        limit: Some(500),
        ..Default::default()
    })
    .await;
    let by_agent = search(AuditFilter {
        actors: vec![h.agent],
        limit: Some(500),
        ..Default::default()
    })
    .await;
    assert!(!by_agent.is_empty() && !not_agent.is_empty());
    assert_eq!(not_agent.len() + by_agent.len(), all.len());
    assert!(not_agent.iter().all(|p| !by_agent.contains(p)));
    // The same search written in the query language.
    let parsed = audit::query::parse(&format!(
        "action:ticket.status,ticket.merged actor:{} -\"no such text\"",
        h.agent
    ))
    .unwrap();
    assert_eq!(
        search(parsed).await,
        vec![
            later[1].position,
            h.events[9].position,
            h.events[4].position
        ]
    );
    // Oldest first after a position: what the live stream follows.
    let after = search(AuditFilter {
        after_position: Some(h.events[2].position),
        limit: Some(3),
        ..Default::default()
    })
    .await;
    assert_eq!(
        after,
        vec![
            h.events[3].position,
            h.events[4].position,
            h.events[5].position
        ]
    );
    // Text over description and changes: the tag names live in `changes`.
    let tagged = search(AuditFilter {
        text: vec!["URGENT".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(tagged, vec![h.events[6].position]);
    let window = search(AuditFilter {
        from: Some(h.events[4].recorded_at),
        to: Some(h.events[6].recorded_at),
        tickets: vec![h.a],
        ..Default::default()
    })
    .await;
    assert!(window.contains(&h.events[4].position) && window.contains(&h.events[5].position));
    assert!(!window.contains(&h.events[6].position) && !window.contains(&h.events[3].position));

    // Cursor on position: new events do not shift the next page.
    let first = audit::search(
        &pool,
        &AuditFilter {
            limit: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let cursor: u64 = first.next_cursor.clone().unwrap().parse().unwrap();
    append(
        &*store,
        vec![
            (
                message(h.a, Direction::Inbound),
                meta(None, ActorKind::Customer)
            );
            3
        ],
    )
    .await;
    projector.catch_up().await.unwrap();
    let second = audit::search(
        &pool,
        &AuditFilter {
            limit: Some(5),
            before_position: Some(cursor),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let expect: Vec<u64> = (total - 9..=total - 5).rev().collect();
    assert_eq!(
        second.items.iter().map(|r| r.position).collect::<Vec<_>>(),
        expect
    );
    assert_eq!(audit::count(&pool).await.unwrap(), total + 3);
}

/// Audit, but failing on the page holding `fail_at` after writing its rows.
struct Failing {
    fail_at: u64,
}

#[async_trait]
impl Projection for Failing {
    fn name(&self) -> &'static str {
        "audit"
    }
    fn tables(&self) -> &'static [ledgerdesk_projections::schema::Table] {
        AuditProjection.tables()
    }
    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        AuditProjection.apply(events, names, tx).await?;
        if events.iter().any(|e| e.record.position == self.fail_at) {
            return Err(ProjectionError::Io("crash in the middle of a page".into()));
        }
        Ok(())
    }
}

async fn positions(store: &dyn EventStore) -> (u64, u64, u64, u64) {
    let rows = all_positions(store).await;
    let distinct = rows.iter().collect::<HashSet<_>>().len() as u64;
    (
        rows.len() as u64,
        distinct,
        rows.iter().copied().min().unwrap_or(0),
        rows.iter().copied().max().unwrap_or(0),
    )
}

async fn all_positions(store: &dyn EventStore) -> Vec<u64> {
    let pool = store.db();
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = audit::search(
            &pool,
            &AuditFilter {
                limit: Some(500),
                before_position: before,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        out.extend(page.items.iter().map(|r| r.position));
        match page.next_cursor {
            Some(c) => before = Some(c.parse().unwrap()),
            None => return out,
        }
    }
}

async fn checkpoint_is_atomic_with_its_page(db: &TestDb) {
    let store = db.open().await;
    let user = Uuid::now_v7();
    let mut events = vec![(user_created(user, "Una", None), Metadata::system())];
    for _ in 0..99 {
        events.push((UserEvent::LoggedIn { user_id: user }.into(), agent(user)));
    }
    append(&*store, events).await;

    let projector = Projector::new(store.clone()).page_size(7);
    assert_eq!(projector.run_pages("audit", 3).await.unwrap(), 21);
    assert_eq!(positions(&*store).await, (21, 21, 1, 21));

    // A crash inside the page holding position 40: that page's rows are
    // rolled back with its checkpoint.
    let failing =
        Projector::with_projections(store.clone(), vec![Arc::new(Failing { fail_at: 40 })])
            .page_size(7);
    assert!(failing.run_pages("audit", 100).await.is_err());
    assert_eq!(positions(&*store).await, (35, 35, 1, 35));
    let status = projector.status().await.unwrap();
    let audit_status = status.iter().find(|s| s.name == "audit").unwrap();
    assert_eq!(
        (
            audit_status.position,
            audit_status.head,
            audit_status.lag_events
        ),
        (35, 100, 65)
    );
    assert!(audit_status.lag_seconds >= 0.0);

    // Another process resumes: nothing twice, nothing skipped.
    let restarted = Projector::new(db.open().await).page_size(7);
    restarted.catch_up().await.unwrap();
    assert_eq!(positions(&*store).await, (100, 100, 1, 100));
    let status = restarted.status().await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.position == 100 && s.lag_events == 0 && s.lag_seconds == 0.0),
        "{status:?}"
    );
}

async fn rebuild_matches_incremental_and_serves_meanwhile(db: &TestDb) {
    let store = db.open().await;
    let h = history(&*store).await;
    let mut more = Vec::new();
    for i in 0..40 {
        let t = Uuid::now_v7();
        more.push((
            created(t, &format!("Bulk {i}"), Channel::Api, Some(h.d1), &["bulk"]),
            Metadata::system(),
        ));
        more.push((message(t, Direction::Outbound), agent(h.agent)));
    }
    append(&*store, more).await;
    let projector = Projector::new(store.clone()).page_size(10);
    projector.catch_up().await.unwrap();
    let pool = store.db();
    let tickets_before = all_tickets(&pool).await;
    let audit_before = all_audit(&pool).await;
    let presence_before = presence::agents(&pool).await.unwrap();
    assert_eq!(tickets_before.len(), 43);

    for round in 0..2 {
        // Readers keep being served by the live tables during the rebuild.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let reader = {
            let (pool, stop, reads) = (pool.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = tickets::list(
                        &pool,
                        &TicketFilter {
                            limit: Some(500),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("live table serves during the rebuild")
                    .items
                    .len();
                    assert_eq!(n, 43);
                    reads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        let position = projector
            .rebuild("tickets", move |done, total| {
                seen.lock().unwrap().push((done, total));
                std::thread::sleep(Duration::from_millis(5));
            })
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.await.unwrap();
        let head = store.head().await.unwrap().position;
        assert_eq!(position, head);
        let calls = calls.lock().unwrap().clone();
        assert!(calls.len() >= 9, "round {round}: {calls:?}");
        assert_eq!(calls.last().copied(), Some((head, head)));
        assert!(reads.load(Ordering::Relaxed) > 0);
        assert_eq!(all_tickets(&pool).await, tickets_before, "round {round}");
    }
    projector.rebuild("audit", |_, _| {}).await.unwrap();
    projector.rebuild("presence", |_, _| {}).await.unwrap();
    projector.rebuild("reports", |_, _| {}).await.unwrap();
    assert_eq!(all_audit(&pool).await, audit_before);
    assert_eq!(presence::agents(&pool).await.unwrap(), presence_before);

    // The swapped-in tables keep following the log.
    append(
        &*store,
        vec![(status(h.a, Status::Open, Status::Pending), agent(h.agent))],
    )
    .await;
    projector.catch_up().await.unwrap();
    assert_eq!(
        tickets::get(&pool, h.a).await.unwrap().unwrap().status,
        "pending"
    );
    assert_eq!(
        audit::count(&pool).await.unwrap(),
        store.head().await.unwrap().position
    );
    assert!(matches!(
        projector.rebuild("nope", |_, _| {}).await,
        Err(ProjectionError::UnknownProjection(_))
    ));
}

async fn as_of_build_gives_the_past_state(db: &TestDb) {
    let store = db.open().await;
    let h = history(&*store).await;
    let projector = Projector::new(store.clone());
    projector.catch_up().await.unwrap();
    let dir = std::env::temp_dir().join("ledgerdesk-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("asof-{}.db", Uuid::now_v7().simple()));

    // Just before the ticket was opened and transferred.
    let until = h.events[3].position;
    let reached = ledgerdesk_projections::build_as_of(store.clone(), "tickets", until, &out)
        .await
        .unwrap();
    assert_eq!(reached, until);
    let past = ledgerdesk_projections::open_as_of(&out).await.unwrap();
    let a = tickets::get(&past, h.a).await.unwrap().unwrap();
    assert_eq!(
        (a.status.as_str(), a.assignee, a.department, a.message_count),
        ("new", None, Some(h.d1), 3)
    );
    assert_eq!(a.tags, vec!["billing".to_string()]);
    assert!(tickets::get(&past, h.b).await.unwrap().is_none());
    past.close().await;

    // By time, for audit: the live database is untouched.
    let live_before = all_audit(&store.db()).await;
    let at = h.events[5].recorded_at;
    let reached = ledgerdesk_projections::build_as_of_time(store.clone(), "audit", at, &out)
        .await
        .unwrap();
    assert_eq!(reached, store.position_at(at).await.unwrap());
    let past = ledgerdesk_projections::open_as_of(&out).await.unwrap();
    let rows = all_audit(&past).await;
    assert_eq!(rows.len() as u64, reached);
    assert_eq!(rows.first().unwrap().position, reached);
    assert_eq!(all_audit(&store.db()).await, live_before);
    past.close().await;
    let _ = std::fs::remove_file(&out);
    assert!(matches!(
        ledgerdesk_projections::build_as_of(store.clone(), "nope", 1, &out).await,
        Err(ProjectionError::UnknownProjection(_))
    ));
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn states(p: &Projector) -> Vec<WorkerState> {
    p.status().await.unwrap().iter().map(|s| s.state).collect()
}

async fn background_worker_follows_appends(db: &TestDb) {
    let store = db.open().await;
    let projector = Projector::new(store.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = projector.spawn(async move {
        let _ = stopped.await;
    });
    let h = history(&*store).await;
    let pool = store.db();
    let head = store.head().await.unwrap().position;
    let started = std::time::Instant::now();
    wait_for("the workers to catch up", async || {
        projector
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.position == head)
    })
    .await;
    // Woken by the head watch, well before the 1 s poll.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        tickets::get(&pool, h.a).await.unwrap().unwrap().status,
        "open"
    );
    wait_for("idle workers", async || {
        states(&projector)
            .await
            .iter()
            .all(|s| *s == WorkerState::Idle)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert!(states(&projector)
        .await
        .iter()
        .all(|s| *s == WorkerState::Stopped));
}

/// Appends this process's head watch does not see (another process's on
/// SQLite; a lost NOTIFY on PostgreSQL) are found by the workers' poll: the
/// pages the workers share must not hand an idle worker the same empty page
/// poll after poll.
async fn an_append_the_head_watch_missed_is_found_by_the_poll(db: &TestDb) {
    let store = db.open().await;
    let projector = Projector::new(store.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = projector.spawn(async move {
        let _ = stopped.await;
    });
    history(&*store).await;
    let head = store.head().await.unwrap().position;
    wait_for("the workers to catch up", async || {
        projector
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.position == head)
    })
    .await;
    // Idle past a poll, which read an empty page at this head; then
    // another process appends.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let other = db.open().await;
    history(&*other).await;
    let head = other.head().await.unwrap().position;
    wait_for("the poll to find the other process's events", async || {
        projector
            .status()
            .await
            .unwrap()
            .iter()
            .all(|s| s.position == head)
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap();
}

async fn one_worker_per_projection_across_processes(db: &TestDb) {
    if db.kind() != Kind::Postgres {
        // SQLite assumes one process (docs/projections.md).
        return;
    }
    let store_a = db.open().await;
    let store_b = db.open().await;
    let a = Projector::new(store_a.clone());
    let b = Projector::new(store_b.clone());
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let handle_a = a.spawn(async move {
        let _ = stopped_a.await;
    });
    wait_for("A to hold every lease", async || {
        states(&a).await.iter().all(|s| *s == WorkerState::Idle)
    })
    .await;
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let handle_b = b.spawn(async move {
        let _ = stopped_b.await;
    });
    wait_for("B to stand by", async || {
        states(&b).await.iter().all(|s| *s == WorkerState::Standby)
    })
    .await;

    let pool = store_a.db();
    let lease_count = || {
        let pool = pool.clone();
        async move {
            ledgerdesk_tests::ints(
                &pool,
                "SELECT COUNT(*) AS v FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())",
                vec![],
            )
            .await[0]
            .unwrap()
        }
    };
    assert_eq!(
        lease_count().await,
        ledgerdesk_projections::builtin().len() as i64
    );

    history(&*store_b).await;
    let head = store_b.head().await.unwrap().position;
    wait_for("A to apply", async || {
        a.status().await.unwrap().iter().all(|s| s.position == head)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        states(&b).await.iter().all(|s| *s == WorkerState::Standby),
        "B never ran"
    );

    // The holder goes away: its sessions close and B takes over.
    stop_a.send(()).unwrap();
    handle_a.await.unwrap();
    wait_for("B to take over", async || {
        states(&b).await.iter().all(|s| *s == WorkerState::Idle)
    })
    .await;
    assert_eq!(
        lease_count().await,
        ledgerdesk_projections::builtin().len() as i64
    );
    let user = Uuid::now_v7();
    append(
        &*store_a,
        vec![(user_created(user, "Late", None), Metadata::system())],
    )
    .await;
    let head = store_a.head().await.unwrap().position;
    wait_for("B to apply", async || {
        b.status().await.unwrap().iter().all(|s| s.position == head)
    })
    .await;
    assert_eq!(positions(&*store_a).await, (head, head, 1, head));
    stop_b.send(()).unwrap();
    handle_b.await.unwrap();
    // The server releases a closed session's locks a moment later.
    wait_for("every lease released", async || lease_count().await == 0).await;
}

async fn presence_and_reports_on_a_known_history(db: &TestDb) {
    let store = db.open().await;
    let (x, y, d1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (t1, t2, watched) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let state = |from, to| {
        AnyEvent::from(UserEvent::StateChanged {
            user_id: x,
            from,
            to,
        })
    };
    let pause = || tokio::time::sleep(Duration::from_millis(15));
    let mut ev = Vec::new();
    ev.extend(
        append(
            &*store,
            vec![
                (user_created(x, "Xena", Some(d1)), Metadata::system()),
                (user_created(y, "Yann", Some(d1)), Metadata::system()),
            ],
        )
        .await,
    );
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![(UserEvent::LoggedIn { user_id: x }.into(), agent(x))],
        )
        .await,
    ); // 2
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![(state(Presence::Offline, Presence::Available), agent(x))],
        )
        .await,
    ); // 3
    ev.extend(
        append(
            &*store,
            vec![(
                UserEvent::ViewingTicket {
                    user_id: x,
                    ticket_id: watched,
                }
                .into(),
                agent(x),
            )],
        )
        .await,
    ); // 4
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![(state(Presence::Available, Presence::Away), agent(x))],
        )
        .await,
    ); // 5
    let projector = Projector::new(store.clone());
    projector.catch_up().await.unwrap();
    let pool = store.db();
    let now = presence::agents(&pool).await.unwrap();
    let xa = now.iter().find(|a| a.user_id == x).unwrap();
    assert_eq!(
        (xa.state.as_str(), xa.logged_in, xa.viewing.clone()),
        ("away", true, vec![watched])
    );
    assert_eq!(xa.name.as_deref(), Some("Xena"));
    assert_eq!(presence::viewers(&pool, watched).await.unwrap(), vec![x]);
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![(
                UserEvent::LeftTicket {
                    user_id: x,
                    ticket_id: watched,
                }
                .into(),
                agent(x),
            )],
        )
        .await,
    ); // 6
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![(
                UserEvent::LoggedOut {
                    user_id: x,
                    previous_state: Presence::Away,
                }
                .into(),
                agent(x),
            )],
        )
        .await,
    ); // 7

    // Tickets: x creates t1, replies, resolves; y replies to t2 and resolves it.
    let t = |e: AnyEvent, m: Metadata| (e, m);
    let customer = meta(None, ActorKind::Customer);
    ev.extend(
        append(
            &*store,
            vec![t(
                created(t1, "One", Channel::Email, Some(d1), &[]),
                agent(x),
            )],
        )
        .await,
    ); // 8
    ev.extend(
        append(
            &*store,
            vec![t(
                created(t2, "Two", Channel::Email, Some(d1), &[]),
                customer.clone(),
            )],
        )
        .await,
    ); // 9
    pause().await;
    ev.extend(append(&*store, vec![t(message(t1, Direction::Outbound), agent(x))]).await); // 10
    ev.extend(
        append(
            &*store,
            vec![t(transfer(t1, Some(x), Some(d1), Some(d1)), agent(x))],
        )
        .await,
    ); // 11
    pause().await;
    ev.extend(append(&*store, vec![t(message(t2, Direction::Outbound), agent(y))]).await); // 12
    ev.extend(append(&*store, vec![t(message(t2, Direction::Outbound), agent(y))]).await); // 13
    ev.extend(
        append(
            &*store,
            vec![t(transfer(t2, Some(y), Some(d1), Some(d1)), agent(y))],
        )
        .await,
    ); // 14
    ev.extend(
        append(
            &*store,
            vec![t(status(t1, Status::New, Status::Resolved), agent(x))],
        )
        .await,
    ); // 15
    pause().await;
    ev.extend(
        append(
            &*store,
            vec![t(status(t2, Status::New, Status::Resolved), agent(y))],
        )
        .await,
    ); // 16
    let rank = |ticket, rating| {
        AnyEvent::from(TicketEvent::Ranked {
            ticket_id: ticket,
            previous_rating: None,
            rating,
            pii: Pii::new(Uuid::from_u128(99), RatingPii { comment: None }),
        })
    };
    ev.extend(
        append(
            &*store,
            vec![
                t(rank(t1, 4), customer.clone()),
                t(rank(t2, 2), customer.clone()),
            ],
        )
        .await,
    ); // 17, 18
    projector.catch_up().await.unwrap();

    let at = |i: usize| ev[i].recorded_at;
    let secs =
        |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_microseconds().unwrap() as f64 / 1e6;
    let xa = presence::agents(&pool)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.user_id == x)
        .unwrap();
    assert_eq!(
        (xa.state.as_str(), xa.logged_in, xa.viewing.len()),
        ("offline", false, 0)
    );
    let today = at(1).date_naive();
    let days = presence::daily(
        &pool,
        Some(x),
        today.pred_opt().unwrap(),
        today.succ_opt().unwrap(),
        Utc::now(),
    )
    .await
    .unwrap();
    let sum = |f: fn(&presence::PresenceDay) -> f64| days.iter().map(f).sum::<f64>();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(
        close(sum(|d| d.available_seconds), secs(at(3), at(5))),
        "{days:?}"
    );
    assert!(
        close(sum(|d| d.away_seconds), secs(at(5), at(7))),
        "{days:?}"
    );
    assert!(
        close(sum(|d| d.logged_in_seconds), secs(at(2), at(7))),
        "{days:?}"
    );
    assert!(sum(|d| d.available_seconds) > 0.0);

    let (from, to) = (
        at(1) - chrono::Duration::hours(1),
        Utc::now() + chrono::Duration::hours(1),
    );
    let agents = reports::agents(&pool, from, to).await.unwrap();
    let rx = agents.iter().find(|r| r.id == x).unwrap();
    assert_eq!(
        (rx.tickets_created, rx.tickets_replied, rx.tickets_resolved),
        (1, 1, 1)
    );
    assert!(close(
        rx.median_first_response_seconds.unwrap(),
        secs(at(8), at(10))
    ));
    assert!(close(
        rx.median_resolution_seconds.unwrap(),
        secs(at(8), at(15))
    ));
    assert_eq!((rx.ratings, rx.average_rating), (1, Some(4.0)));
    let ry = agents.iter().find(|r| r.id == y).unwrap();
    assert_eq!(
        (ry.tickets_created, ry.tickets_replied, ry.tickets_resolved),
        (0, 1, 1)
    );
    assert!(close(
        ry.median_first_response_seconds.unwrap(),
        secs(at(9), at(12))
    ));
    assert_eq!((ry.ratings, ry.average_rating), (1, Some(2.0)));

    let departments = reports::departments(&pool, from, to).await.unwrap();
    assert_eq!(departments.len(), 1);
    let rd = &departments[0];
    assert_eq!(rd.id, d1);
    assert_eq!(
        (rd.tickets_created, rd.tickets_replied, rd.tickets_resolved),
        (2, 2, 2)
    );
    let fr = (secs(at(8), at(10)) + secs(at(9), at(12))) / 2.0;
    assert!(close(rd.median_first_response_seconds.unwrap(), fr));
    assert_eq!((rd.ratings, rd.average_rating), (2, Some(3.0)));
    // A range before anything happened is empty.
    assert!(
        reports::agents(&pool, from - chrono::Duration::days(2), from)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A database the first release left (migrations before the read models
/// were replaced), with a projected row and a checkpoint in the old tables.
async fn first_release_database(db: &TestDb) {
    let dir = match db.kind() {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
    };
    let path = format!("{}/../migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(&path))
        .await
        .unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 30)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let stale = "INSERT INTO tickets (id, status, priority, channel, tags, message_count, \
                 created_at, updated_at, version, position) \
                 VALUES ('stale', 'open', 'normal', 'email', '[]', 0, 0, 0, 1, 1); \
                 INSERT INTO projection_checkpoints (name, position, event_time, updated_at) \
                 VALUES ('tickets', 1000000, NULL, 0)";
    match db.kind() {
        Kind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(stale).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(stale).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

async fn upgrade_replaces_the_read_models(db: &TestDb) {
    first_release_database(db).await;
    // Opening applies the rest; the old migrations' checksums must still match.
    let store = db.open().await;
    let h = history(&*store).await;
    let projector = Projector::new(store.clone());
    projector.catch_up().await.unwrap();
    let pool = store.db();
    let rows = all_tickets(&pool).await;
    // The stale row and its checkpoint went with the old tables; every
    // ticket was projected from the log, new columns filled.
    let mut ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    ids.sort();
    let mut expected = vec![h.a, h.b, h.c];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(rows
        .iter()
        .all(|r| r.data_subject == Some(Uuid::from_u128(99))));
    let head = store.head().await.unwrap().position;
    let at = projector.status().await.unwrap();
    assert!(at.iter().all(|s| s.position == head), "{at:?}");
}

/// Case-insensitive text search with letters outside ASCII, which SQLite's
/// LOWER does not fold: lowercase stored text matches any case typed, and
/// the case as stored matches too.
async fn text_search_beyond_ascii(db: &TestDb) {
    let store = db.open().await;
    let t = Uuid::now_v7();
    append(
        &*store,
        vec![(
            created(
                t,
                "Ärger über die Rechnung",
                Channel::Email,
                None,
                &["Größe"],
            ),
            Metadata::system(),
        )],
    )
    .await;
    Projector::new(store.clone()).catch_up().await.unwrap();
    let pool = store.db();
    for q in ["Ärger", "ÜBER", "über", "rechnung", "RECHNUNG"] {
        let found = tickets::list(
            &pool,
            &TicketFilter {
                q: Some(q.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
        assert_eq!(
            found.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![t],
            "{q}"
        );
    }
    // The tag is stored lowercased ("größe"): any case typed finds it.
    for q in ["größe", "GRÖßE", "Größe"] {
        let hits = audit::search(
            &pool,
            &AuditFilter {
                text: vec![q.into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
        assert_eq!(hits.len(), 1, "{q}");
    }
}

/// Text that a log may hold but PostgreSQL's `TEXT` cannot (NUL), and other
/// control characters, written straight to the log as logs from before the
/// API refused them hold it: every projection applies it, on both backends,
/// keeping NUL as U+FFFD.
async fn text_with_control_characters_is_projected(db: &TestDb) {
    let store = db.open().await;
    let t = Uuid::now_v7();
    let someone = Uuid::now_v7();
    let odd = Metadata {
        user_agent: Some("agent\0/1.0".into()),
        correlation_id: Some("req\0\u{1}".into()),
        ..agent(someone)
    };
    let recorded = append(
        &*store,
        vec![
            (user_created(someone, "Nul\0Name", None), Metadata::system()),
            (
                created(
                    t,
                    "Bad\0subject \u{1}\u{1b}[31m\u{7f}",
                    Channel::Email,
                    None,
                    &["x\0y"],
                ),
                odd.clone(),
            ),
            (message(t, Direction::Inbound), odd),
        ],
    )
    .await;
    let head = recorded.last().unwrap().position;
    let projector = Projector::new(store.clone());
    projector
        .catch_up()
        .await
        .expect("every projection applies text holding NUL");
    for s in projector.status().await.unwrap() {
        assert_eq!(s.position, head, "{}", s.name);
    }
    let pool = store.db();
    let row = tickets::get(&pool, t)
        .await
        .unwrap()
        .expect("the ticket is in the tickets projection");
    assert_eq!(
        row.subject.as_deref(),
        Some("Bad\u{fffd}subject \u{1}\u{1b}[31m\u{7f}")
    );
    // Tags are kept as JSON text, where NUL is escaped: they keep it.
    assert_eq!(row.tags, vec!["x\0y".to_string()]);
    let audit = all_audit(&pool).await;
    let created_row = audit
        .iter()
        .find(|r| r.ticket_id == Some(t) && r.event_type == "ticket.created")
        .expect("the ticket is in the audit view");
    assert_eq!(created_row.user_agent.as_deref(), Some("agent\u{fffd}/1.0"));
    // A search for the text as the log has it finds it.
    let found = tickets::list(
        &pool,
        &TicketFilter {
            q: Some("bad\0subject".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .items;
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), vec![t]);
}

/// Fails on status changes while `broken` is set.
struct Fragile {
    broken: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Projection for Fragile {
    fn name(&self) -> &'static str {
        "fragile"
    }
    fn tables(&self) -> &'static [ledgerdesk_projections::schema::Table] {
        &[]
    }
    async fn apply(
        &self,
        events: &[Event],
        _names: &Names,
        _tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        if self.broken.load(Ordering::SeqCst)
            && events
                .iter()
                .any(|e| e.record.event_type == "ticket.status_changed")
        {
            return Err(ProjectionError::Io("cannot apply a status change".into()));
        }
        Ok(())
    }
}

/// A projection that keeps failing on one event is marked failed at that
/// event's position, with its error, after a bounded number of attempts;
/// the events before it are applied and the other projections carry on.
/// A rebuild after the fix clears it.
async fn a_failing_projection_is_reported_and_the_others_carry_on(db: &TestDb) {
    let store = db.open().await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let projector = Projector::with_projections(
        store.clone(),
        vec![
            Arc::new(tickets::TicketsProjection),
            Arc::new(Fragile {
                broken: broken.clone(),
            }),
        ],
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = projector.spawn(async move {
        let _ = stopped.await;
    });
    let t = Uuid::now_v7();
    let recorded = append(
        &*store,
        vec![
            (
                created(t, "One", Channel::Email, None, &[]),
                Metadata::system(),
            ),
            (message(t, Direction::Inbound), Metadata::system()),
            (status(t, Status::New, Status::Open), Metadata::system()),
            (message(t, Direction::Outbound), Metadata::system()),
        ],
    )
    .await;
    let bad = recorded[2].position;
    let head = recorded.last().unwrap().position;
    let fragile = async || {
        projector
            .status()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "fragile")
            .unwrap()
    };
    wait_for("the fragile projection to be marked failed", async || {
        fragile().await.state == WorkerState::Failed
    })
    .await;
    let s = fragile().await;
    let failure = s.failure.expect("the failure is recorded");
    assert_eq!(failure.position, bad);
    assert!(
        failure.error.contains("cannot apply a status change"),
        "{failure:?}"
    );
    assert_eq!(s.position, bad - 1, "the events before it are applied");
    let failures = projector.failures().await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "fragile");
    let health = projector.health();
    let h = health.iter().find(|h| h.name == "fragile").unwrap();
    assert_eq!((h.state, h.failures_total), (WorkerState::Failed, 1));
    wait_for("the tickets projection to carry on", async || {
        projector.position("tickets").await.unwrap() == head
    })
    .await;

    // The fix, then a rebuild: no longer failed, anywhere.
    broken.store(false, Ordering::SeqCst);
    assert_eq!(projector.rebuild("fragile", |_, _| {}).await.unwrap(), head);
    let s = fragile().await;
    assert!(s.failure.is_none(), "{s:?}");
    assert_ne!(s.state, WorkerState::Failed);
    assert!(projector.failures().await.unwrap().is_empty());
    stop.send(()).unwrap();
    handle.await.unwrap();
}

/// `wait_until` answers as soon as the projection gets there, and where it
/// stands when the time is up.
async fn wait_until_wakes_on_progress_and_times_out(db: &TestDb) {
    let store = db.open().await;
    let t = Uuid::now_v7();
    let head = append(
        &*store,
        vec![(
            created(t, "Wait", Channel::Email, None, &[]),
            Metadata::system(),
        )],
    )
    .await
    .last()
    .unwrap()
    .position;
    let projector = Projector::new(store.clone());
    projector.ensure_schema().await.unwrap();

    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let at = projector
        .wait_until("tickets", head, timeout)
        .await
        .unwrap();
    assert!(at < head, "nothing applied it");
    assert!(started.elapsed() >= timeout, "gave up early");

    let catching_up = projector.clone();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        catching_up.run_pages("tickets", usize::MAX).await.unwrap()
    });
    let started = std::time::Instant::now();
    let at = projector
        .wait_until("tickets", head, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(at >= head);
    // Far below the timeout: it woke on the progress, not the deadline.
    assert!(started.elapsed() < Duration::from_secs(60));
    worker.await.unwrap();
    assert!(matches!(
        projector.wait_until("nope", 1, timeout).await,
        Err(ProjectionError::UnknownProjection(_))
    ));
}
