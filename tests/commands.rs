//! Command handlers through the event store on both backends: the life of a
//! ticket, refusals that write nothing, atomic two-stream commands,
//! concurrency without lost updates, `If-Match`, and data subjects.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use ledgerdesk_app::input::{
    Action, DepartmentRename, LoginFailure, Merge, NewDepartment, NewTicket, NewUser,
    SettingChange, Split, StateChange, Transfer, UserUpdate,
};
use ledgerdesk_app::{Actor, ActorKind, AppError, Helpdesk};
use ledgerdesk_domain::ticket::{Priority, Status, TicketAction};
use ledgerdesk_domain::user::Presence;
use ledgerdesk_domain::{fold, AnyEvent, Ticket};
use ledgerdesk_store::{EventStore, RecordedEvent, StreamRange};
use ledgerdesk_tests::{backend_tests, TestDb};
use serde_json::json;
use uuid::Uuid;

backend_tests!(
    ticket_life_is_recorded_with_actor_and_metadata,
    refusals_write_nothing,
    merge_writes_both_streams_atomically,
    split_writes_both_streams_atomically,
    concurrent_messages_through_one_store_lose_nothing,
    concurrent_messages_through_several_stores_lose_nothing,
    no_message_lands_after_a_concurrent_close,
    expected_version_mismatch_writes_nothing,
    one_email_is_one_data_subject,
    user_department_and_settings_commands_are_recorded,
    seed_writes_a_valid_varied_history,
    erasure_shreds_personal_data_and_keeps_the_log_verifiable,
    a_cached_state_never_outlives_another_processs_write,
);

const SHA: &str = "AB01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

/// A helpdesk with one active agent (created by the system) acting through
/// a request with full context.
async fn setup(db: &TestDb) -> (Helpdesk, Actor) {
    let helpdesk = Helpdesk::new(db.open().await);
    let agent = create_agent(&helpdesk, "Alice").await;
    let actor = Actor::agent(agent)
        .with_ip("192.0.2.7")
        .with_user_agent("tests/1.0")
        .with_correlation_id("req-42");
    (helpdesk, actor)
}

async fn create_agent(helpdesk: &Helpdesk, name: &str) -> Uuid {
    helpdesk
        .create_user(
            &Actor::system(),
            NewUser {
                user_id: None,
                name: name.into(),
                email: format!("{}@desk.example", name.to_lowercase()),
                role: "agent".into(),
                department_id: None,
            },
        )
        .await
        .expect("create agent")
        .id
}

fn new_ticket(email: &str) -> NewTicket {
    NewTicket {
        channel: "email".into(),
        subject: "Refund please".into(),
        body: "I was charged twice.".into(),
        requester_name: "Ann".into(),
        requester_email: Some(email.into()),
        ..NewTicket::default()
    }
}

fn public(body: &str) -> TicketAction {
    message(Uuid::now_v7(), "outbound", body)
}

fn message(message_id: Uuid, direction: &str, body: &str) -> TicketAction {
    TicketAction::AddPublicMessage {
        message_id,
        direction: direction.into(),
        channel: Some("email".into()),
        body: body.into(),
    }
}

fn status(to: &str) -> TicketAction {
    TicketAction::ChangeStatus { to: to.into() }
}

async fn head(helpdesk: &Helpdesk) -> u64 {
    helpdesk.store().head().await.unwrap().position
}

async fn stream(store: &Arc<dyn EventStore>, stream_id: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream_id, StreamRange::all())
        .await
        .unwrap()
}

fn ticket_stream(id: Uuid) -> String {
    format!("ticket-{id}")
}

/// The ticket folded straight from the log, without the handler's loader.
fn rebuild(records: &[RecordedEvent]) -> Ticket {
    let events: Vec<_> = records
        .iter()
        .map(|r| {
            match AnyEvent::decode(
                "ticket",
                &r.event_type,
                r.schema_version,
                &r.payload_json().unwrap(),
            ) {
                Ok(AnyEvent::Ticket(e)) => e,
                other => panic!("not a ticket event: {other:?}"),
            }
        })
        .collect();
    fold(Ticket::default(), &events)
}

#[track_caller]
fn assert_refused(result: Result<impl std::fmt::Debug, AppError>, code: &str) {
    match result {
        Err(AppError::Rejected(refusal)) => assert_eq!(refusal.code, code, "{refusal:?}"),
        other => panic!("expected refusal `{code}`, got {other:?}"),
    }
}

async fn ticket_life_is_recorded_with_actor_and_metadata(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let store = helpdesk.store().clone();
    let bob = create_agent(&helpdesk, "Bob").await;
    let billing = helpdesk
        .create_department(
            &agent,
            NewDepartment {
                department_id: None,
                name: "Billing".into(),
            },
        )
        .await
        .unwrap()
        .id;

    let customer = Actor::customer(None).with_ip("198.51.100.9");
    let created = helpdesk
        .create_ticket(&customer, new_ticket("ann@example.com"))
        .await
        .unwrap();
    let id = created.id;
    assert_eq!(created.version, 1);
    assert_eq!(created.position, head(&helpdesk).await);

    let inbound = message(Uuid::now_v7(), "inbound", "Any news?");
    helpdesk.act(&customer, id, None, inbound).await.unwrap();
    helpdesk
        .act(&agent, id, None, public("Looking into it."))
        .await
        .unwrap();
    let internal = TicketAction::AddInternalMessage {
        message_id: Uuid::now_v7(),
        body: "Bob, can you check the ledger?".into(),
    };
    helpdesk.act(&agent, id, None, internal).await.unwrap();
    let note = TicketAction::AddNote {
        note_id: Uuid::now_v7(),
        body: "Customer is a VIP.".into(),
    };
    helpdesk.act(&agent, id, None, note).await.unwrap();
    let file = TicketAction::AttachFile {
        file_id: Uuid::now_v7(),
        name: "invoice.pdf".into(),
        content_type: "application/pdf".into(),
        size: 1234,
        sha256: SHA.into(),
    };
    let attached = helpdesk.act(&agent, id, None, file).await.unwrap();
    assert!(attached.item.is_some(), "the minted file id is returned");
    let chat = TicketAction::AddChatMessage {
        message_id: Uuid::now_v7(),
        body: "chat transcript".into(),
    };
    helpdesk.act(&agent, id, None, chat).await.unwrap();
    let voice = TicketAction::AddVoiceMessage {
        message_id: Uuid::now_v7(),
        duration_seconds: 30,
        file_sha256: None,
    };
    helpdesk.act(&agent, id, None, voice).await.unwrap();
    let call = TicketAction::LogCall {
        direction: "outbound".into(),
        duration_seconds: 120,
    };
    helpdesk.act(&agent, id, None, call).await.unwrap();
    let tags = TicketAction::ChangeTags {
        add: vec!["VIP".into(), "Refund  Request".into()],
        remove: vec![],
    };
    helpdesk.act(&agent, id, None, tags).await.unwrap();
    let transfer = Transfer {
        to_agent: Some(bob),
        to_department: Some(billing),
    };
    helpdesk
        .transfer_ticket(&agent, id, transfer, None)
        .await
        .unwrap();
    for to in ["open", "pending", "resolved"] {
        helpdesk.act(&agent, id, None, status(to)).await.unwrap();
    }
    let opened_at = stream(&store, &ticket_stream(id)).await[11].position;
    let priority = TicketAction::ChangePriority { to: "high".into() };
    helpdesk.act(&agent, id, None, priority).await.unwrap();
    let forward = TicketAction::Forward {
        to: "accounts@example.com".into(),
    };
    helpdesk.act(&agent, id, None, forward).await.unwrap();
    let system = TicketAction::AddSystemMessage {
        text: "SLA reminder sent".into(),
    };
    helpdesk
        .act(&Actor::system(), id, None, system)
        .await
        .unwrap();
    let other = TicketAction::RecordOther {
        action: "crm.synced".into(),
        description: "synced to the CRM".into(),
    };
    helpdesk
        .act(&Actor::system(), id, None, other)
        .await
        .unwrap();
    helpdesk
        .act(&agent, id, None, status("closed"))
        .await
        .unwrap();
    let rating = TicketAction::Rate {
        rating: 5,
        comment: Some("Thanks!".into()),
    };
    let last = helpdesk.act(&customer, id, None, rating).await.unwrap();

    let records = stream(&store, &ticket_stream(id)).await;
    let types: Vec<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "ticket.created",
            "ticket.message_added",
            "ticket.message_added",
            "ticket.internal_message_added",
            "ticket.note_added",
            "ticket.file_attached",
            "ticket.chat_message_added",
            "ticket.voice_message_added",
            "ticket.call_logged",
            "ticket.tags_changed",
            "ticket.transferred",
            "ticket.status_changed",
            "ticket.status_changed",
            "ticket.status_changed",
            "ticket.priority_changed",
            "ticket.forwarded",
            "ticket.system_message_added",
            "ticket.other",
            "ticket.status_changed",
            "ticket.ranked",
        ]
    );
    assert_eq!(
        records.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u64>>()
    );
    assert_eq!((last.version, last.position), (20, head(&helpdesk).await));

    // Who did it and from where is in every event's envelope.
    let subject = helpdesk
        .data_subject("ann@example.com")
        .await
        .unwrap()
        .expect("subject");
    for record in &records {
        let meta = record.metadata().unwrap();
        match record.event_type.as_str() {
            "ticket.created" | "ticket.ranked" => {
                assert_eq!(meta.actor_kind, ActorKind::Customer);
                assert_eq!(meta.ip.as_deref(), Some("198.51.100.9"));
            }
            "ticket.system_message_added" | "ticket.other" => {
                assert_eq!(meta.actor_kind, ActorKind::System);
                assert_eq!(meta.actor_id, None);
            }
            _ if record.version == 2 => assert_eq!(meta.actor_kind, ActorKind::Customer),
            _ => {
                assert_eq!(meta.actor_kind, ActorKind::Agent, "{}", record.event_type);
                assert_eq!(meta.actor_id, agent.id);
                assert_eq!(meta.ip.as_deref(), Some("192.0.2.7"));
                assert_eq!(meta.user_agent.as_deref(), Some("tests/1.0"));
                assert_eq!(meta.correlation_id.as_deref(), Some("req-42"));
            }
        }
    }
    let created_meta = records[0].metadata().unwrap();
    assert_eq!(
        created_meta.actor_id,
        Some(subject),
        "customer known by subject"
    );

    // Rebuilding from the log gives the state the handlers decided on.
    let (ticket, version) = helpdesk.ticket(id).await.unwrap().expect("ticket");
    assert_eq!(version, 20);
    assert_eq!(rebuild(&records), ticket);
    assert_eq!(ticket.status, Status::Closed);
    assert_eq!(ticket.priority, Priority::High);
    assert_eq!(ticket.assignee, Some(bob));
    assert_eq!(ticket.department, Some(billing));
    assert_eq!(ticket.requester_subject, Some(subject));
    assert_eq!(
        ticket.tags,
        BTreeSet::from(["refund-request".to_string(), "vip".to_string()])
    );
    assert_eq!(ticket.rating, Some(5));
    assert_eq!(
        ticket.message_ids.len(),
        6,
        "first, 2 public, internal, chat, voice"
    );

    // And the past is there too.
    let range = StreamRange {
        until_position: Some(opened_at),
        ..StreamRange::all()
    };
    let (then, then_version) = helpdesk.ticket_as_of(id, range).await.unwrap().unwrap();
    assert_eq!((then.status, then_version), (Status::Open, 12));
    let before = StreamRange {
        until_position: Some(created.position - 1),
        ..StreamRange::all()
    };
    assert!(helpdesk.ticket_as_of(id, before).await.unwrap().is_none());
}

async fn refusals_write_nothing(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let open = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let closed = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    helpdesk
        .act(&agent, closed, None, status("closed"))
        .await
        .unwrap();
    let carol = create_agent(&helpdesk, "Carol").await;
    let deactivate = UserUpdate {
        active: Some(false),
        ..UserUpdate::default()
    };
    helpdesk
        .update_user(&agent, carol, deactivate, None)
        .await
        .unwrap();
    let at = head(&helpdesk).await;

    assert_refused(
        helpdesk.act(&agent, closed, None, public("hello?")).await,
        "ticket_closed",
    );
    assert_refused(
        helpdesk
            .merge_ticket(&agent, open, Merge { into: open }, None)
            .await,
        "merge_into_self",
    );
    assert_refused(
        helpdesk
            .merge_ticket(&agent, open, Merge { into: closed }, None)
            .await,
        "merge_target_closed",
    );
    let missing = Uuid::now_v7();
    let merge_missing = helpdesk
        .merge_ticket(&agent, open, Merge { into: missing }, None)
        .await;
    assert_refused(merge_missing, "ticket_not_found");
    let to_carol = Transfer {
        to_agent: Some(carol),
        to_department: None,
    };
    assert_refused(
        helpdesk.transfer_ticket(&agent, open, to_carol, None).await,
        "agent_inactive",
    );
    let to_nowhere = Transfer {
        to_agent: None,
        to_department: Some(missing),
    };
    assert_refused(
        helpdesk
            .transfer_ticket(&agent, open, to_nowhere, None)
            .await,
        "department_not_found",
    );
    let as_carol = Actor::agent(carol);
    let note = TicketAction::AddNote {
        note_id: Uuid::now_v7(),
        body: "sneaky".into(),
    };
    match helpdesk.act(&as_carol, open, None, note).await {
        Err(AppError::Rejected(r)) => {
            assert_eq!((r.code, r.field), ("user_deactivated", Some("actor")))
        }
        other => panic!("deactivated agent acted: {other:?}"),
    }
    let bad_rating = TicketAction::Rate {
        rating: 9,
        comment: None,
    };
    assert_refused(
        helpdesk.act(&agent, open, None, bad_rating).await,
        "rating_out_of_range",
    );
    let fax = NewTicket {
        channel: "fax".into(),
        ..new_ticket("fax@example.com")
    };
    match helpdesk.create_ticket(&agent, fax).await {
        Err(AppError::Rejected(r)) => {
            assert_eq!((r.code, r.field), ("unknown_value", Some("channel")))
        }
        other => panic!("unknown channel accepted: {other:?}"),
    }
    assert_eq!(
        helpdesk.data_subject("fax@example.com").await.unwrap(),
        None,
        "a refused ticket leaves no data subject behind"
    );
    let split_all = Split {
        new_ticket_id: None,
        message_ids: helpdesk
            .ticket(open)
            .await
            .unwrap()
            .unwrap()
            .0
            .message_ids
            .into_iter()
            .collect(),
        subject: Some("part two".into()),
        body: "moved".into(),
    };
    assert_refused(
        helpdesk.split_ticket(&agent, open, split_all, None).await,
        "split_takes_all",
    );
    match helpdesk.act(&agent, missing, None, public("anyone?")).await {
        Err(e @ AppError::NotFound { .. }) => assert_eq!(e.code(), "ticket_not_found"),
        other => panic!("message on a missing ticket: {other:?}"),
    }
    let unchanged = TicketAction::ChangeTags {
        add: vec![],
        remove: vec![],
    };
    assert_refused(
        helpdesk.act(&agent, open, None, unchanged).await,
        "no_change",
    );

    assert_eq!(head(&helpdesk).await, at, "a refusal wrote something");
}

async fn merge_writes_both_streams_atomically(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let store = helpdesk.store().clone();
    let source = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let target = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;

    let done = helpdesk
        .merge_ticket(&agent, source, Merge { into: target }, Some(1))
        .await
        .unwrap();
    assert_eq!((done.source.id, done.target.id), (source, target));
    assert_eq!((done.source.version, done.target.version), (2, 2));
    assert_eq!(done.target.position, done.source.position + 1, "one append");
    assert_eq!(done.target.position, head(&helpdesk).await);

    let merged = stream(&store, &ticket_stream(source)).await;
    let noted = stream(&store, &ticket_stream(target)).await;
    assert_eq!(merged[1].event_type, "ticket.merged");
    assert_eq!(noted[1].event_type, "ticket.system_message_added");
    let text = noted[1].payload_json().unwrap()["text"].clone();
    assert_eq!(
        text,
        json!(format!("ticket {source} was merged into this ticket"))
    );
    assert_eq!(merged[1].metadata().unwrap(), noted[1].metadata().unwrap());

    let (state, _) = helpdesk.ticket(source).await.unwrap().unwrap();
    assert_eq!(
        (state.merged_into, state.status),
        (Some(target), Status::Closed)
    );

    // Into a merged ticket, or twice: refused, nothing written.
    let third = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let at = head(&helpdesk).await;
    assert_refused(
        helpdesk
            .merge_ticket(&agent, third, Merge { into: source }, None)
            .await,
        "merge_target_merged",
    );
    assert_refused(
        helpdesk
            .merge_ticket(&agent, source, Merge { into: third }, None)
            .await,
        "ticket_merged",
    );
    assert_eq!(head(&helpdesk).await, at);
}

async fn split_writes_both_streams_atomically(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let store = helpdesk.store().clone();
    let source = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let mut moved = Vec::new();
    for body in ["second question", "more on it"] {
        let m = helpdesk
            .act(&agent, source, None, public(body))
            .await
            .unwrap();
        moved.push(m.item.unwrap());
    }

    let split = Split {
        new_ticket_id: None,
        message_ids: moved.clone(),
        subject: Some("Second question".into()),
        body: "Split off the refund ticket.".into(),
    };
    let done = helpdesk
        .split_ticket(&agent, source, split, None)
        .await
        .unwrap();
    let new_id = done.target.id;
    assert_eq!(done.source.version, 4);
    assert_eq!(done.target.version, 2, "created + system message");
    assert_eq!(done.target.position, done.source.position + 2, "one append");
    assert_eq!(done.target.position, head(&helpdesk).await);

    let source_events = stream(&store, &ticket_stream(source)).await;
    let new_events = stream(&store, &ticket_stream(new_id)).await;
    assert_eq!(source_events[3].event_type, "ticket.split");
    assert_eq!(
        new_events
            .iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
        ["ticket.created", "ticket.system_message_added"]
    );
    assert_eq!(new_events[0].position, source_events[3].position + 1);

    let (old, _) = helpdesk.ticket(source).await.unwrap().unwrap();
    let (new, _) = helpdesk.ticket(new_id).await.unwrap().unwrap();
    assert_eq!(old.message_ids.len(), 1);
    assert!(moved.iter().all(|m| !old.message_ids.contains(m)));
    assert_eq!(new.split_from, Some(source));
    assert_eq!(
        new.requester_subject, old.requester_subject,
        "same requester"
    );
    assert_eq!(new.channel, old.channel);
}

/// 16 tasks add 10 messages each to one ticket, spread over `stores` (one
/// `Helpdesk` per store, as one per process). Returns how many requests
/// gave up with a 409 and had to be resent.
async fn hammer(stores: Vec<Arc<dyn EventStore>>) -> usize {
    let helpdesks: Vec<Helpdesk> = stores.iter().cloned().map(Helpdesk::new).collect();
    let first = helpdesks[0].clone();
    let agent = Actor::agent(create_agent(&first, "Alice").await);
    let ticket = first
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let mut tasks = Vec::new();
    for task in 0..16 {
        let helpdesk = helpdesks[task % helpdesks.len()].clone();
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut gave_up = 0;
            for n in 0..10 {
                let id = Uuid::now_v7();
                let message = message(id, "outbound", &format!("task {task} message {n}"));
                // A 409 is a client's cue to send again; it is not a lost
                // update (nothing was written), so count it and resend.
                loop {
                    match helpdesk.act(&agent, ticket, None, message.clone()).await {
                        Ok(_) => break,
                        Err(AppError::Conflict { .. }) => gave_up += 1,
                        Err(e) => panic!("task {task}: {e}"),
                    }
                }
                ids.push(id);
            }
            (ids, gave_up)
        }));
    }
    let mut sent = HashSet::new();
    let mut gave_up = 0;
    for task in tasks {
        let (ids, conflicts) = task.await.unwrap();
        sent.extend(ids);
        gave_up += conflicts;
    }
    eprintln!("requests that exhausted their retries: {gave_up}");
    assert_eq!(sent.len(), 160);

    let (state, version) = first.ticket(ticket).await.unwrap().unwrap();
    assert_eq!(version, 161);
    assert_eq!(state.message_ids.len(), 161);
    assert!(
        sent.iter().all(|id| state.message_ids.contains(id)),
        "lost update"
    );
    let records = stream(&stores[0], &ticket_stream(ticket)).await;
    assert_eq!(
        records.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=161).collect::<Vec<u64>>(),
        "versions 1..N without gaps or duplicates"
    );
    gave_up
}

async fn concurrent_messages_through_one_store_lose_nothing(db: &TestDb) {
    // One process queues its own writers: no conflict at all.
    assert_eq!(hammer(vec![db.open().await]).await, 0);
}

async fn concurrent_messages_through_several_stores_lose_nothing(db: &TestDb) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.open().await);
    }
    // Four processes race through the version check; retries absorb it.
    let gave_up = hammer(stores).await;
    assert!(gave_up < 32, "{gave_up} requests exhausted their retries");
}

async fn expected_version_mismatch_writes_nothing(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let ticket = helpdesk
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let at = head(&helpdesk).await;
    for stale in [0, 2, 7] {
        match helpdesk
            .act(&agent, ticket, Some(stale), public("late"))
            .await
        {
            Err(e @ AppError::PreconditionFailed { current: 1 }) => {
                assert_eq!(e.code(), "precondition_failed")
            }
            other => panic!("stale version {stale} accepted: {other:?}"),
        }
    }
    assert!(matches!(
        helpdesk
            .merge_ticket(
                &agent,
                ticket,
                Merge {
                    into: Uuid::now_v7()
                },
                Some(3)
            )
            .await,
        Err(AppError::PreconditionFailed { current: 1 })
    ));
    assert!(matches!(
        helpdesk
            .change_setting(
                &agent,
                SettingChange {
                    key: "sla.hours".into(),
                    value: json!(8),
                },
                Some(1),
            )
            .await,
        Err(AppError::PreconditionFailed { current: 0 })
    ));
    assert_eq!(head(&helpdesk).await, at, "a failed precondition wrote");

    let done = helpdesk
        .act(&agent, ticket, Some(1), public("on time"))
        .await
        .unwrap();
    assert_eq!(done.version, 2);
}

async fn one_email_is_one_data_subject(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let mut subjects = Vec::new();
    for email in ["ann@example.com", "  Ann@Example.COM ", "ANN@EXAMPLE.COM"] {
        let id = helpdesk
            .create_ticket(&agent, new_ticket(email))
            .await
            .unwrap()
            .id;
        let (ticket, _) = helpdesk.ticket(id).await.unwrap().unwrap();
        subjects.push(ticket.requester_subject.unwrap());
    }
    assert!(subjects.iter().all(|s| *s == subjects[0]), "{subjects:?}");
    assert_eq!(subjects[0].get_version_num(), 7);
    assert_eq!(
        helpdesk.data_subject(" ann@EXAMPLE.com").await.unwrap(),
        Some(subjects[0])
    );

    let other = helpdesk
        .create_ticket(&agent, new_ticket("bob@example.com"))
        .await
        .unwrap()
        .id;
    let (other, _) = helpdesk.ticket(other).await.unwrap().unwrap();
    assert_ne!(other.requester_subject, Some(subjects[0]));

    // First contact from one address in several requests at once: one subject.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (helpdesk, agent) = (helpdesk.clone(), agent.clone());
            tokio::spawn(async move {
                let id = helpdesk
                    .create_ticket(&agent, new_ticket("Race@Example.com"))
                    .await
                    .unwrap()
                    .id;
                helpdesk
                    .ticket(id)
                    .await
                    .unwrap()
                    .unwrap()
                    .0
                    .requester_subject
            })
        })
        .collect();
    let mut raced = HashSet::new();
    for task in tasks {
        raced.insert(task.await.unwrap());
    }
    assert_eq!(raced.len(), 1, "{raced:?}");

    // The email itself is not in the log: only the subject id.
    let created = &stream(helpdesk.store(), &ticket_stream(other.id.unwrap())).await[0];
    let payload = created.payload_json().unwrap();
    assert_eq!(
        payload["pii"]["subject"],
        json!(other.requester_subject.unwrap().to_string())
    );
}

async fn user_department_and_settings_commands_are_recorded(db: &TestDb) {
    let (helpdesk, agent) = setup(db).await;
    let store = helpdesk.store().clone();
    let me = agent.id.unwrap();
    let dept = helpdesk
        .create_department(
            &agent,
            NewDepartment {
                department_id: None,
                name: "Support".into(),
            },
        )
        .await
        .unwrap()
        .id;
    let rename = DepartmentRename {
        name: "Customer Support".into(),
    };
    helpdesk
        .rename_department(&agent, dept, rename, Some(1))
        .await
        .unwrap();
    helpdesk
        .deactivate_department(&agent, dept, None)
        .await
        .unwrap();
    let filed = NewTicket {
        department_id: Some(dept),
        ..new_ticket("ann@example.com")
    };
    assert_refused(
        helpdesk.create_ticket(&agent, filed.clone()).await,
        "department_inactive",
    );
    helpdesk
        .reactivate_department(&agent, dept, None)
        .await
        .unwrap();
    let ticket = helpdesk.create_ticket(&agent, filed).await.unwrap().id;
    let (department, version) = helpdesk.department(dept).await.unwrap().unwrap();
    assert_eq!((department.name.as_str(), version), ("Customer Support", 4));

    helpdesk.log_in(&agent, me).await.unwrap();
    let away = StateChange {
        state: "away".into(),
    };
    helpdesk.change_user_state(&agent, me, away).await.unwrap();
    helpdesk.view_ticket(&agent, me, ticket).await.unwrap();
    let (user, _) = helpdesk.user(me).await.unwrap().unwrap();
    assert!(user.logged_in && user.viewing.contains(&ticket));
    assert_eq!(user.presence, Presence::Away);
    helpdesk.leave_ticket(&agent, me, ticket).await.unwrap();
    let general = Action {
        action: "report.exported".into(),
        description: "weekly report".into(),
    };
    helpdesk
        .record_general_action(&agent, me, general)
        .await
        .unwrap();
    let update = UserUpdate {
        department_id: Some(Some(dept)),
        ..UserUpdate::default()
    };
    helpdesk
        .update_user(&agent, me, update, None)
        .await
        .unwrap();
    helpdesk.log_out(&agent, me).await.unwrap();
    let failure = LoginFailure {
        reason: "wrong_password".into(),
    };
    helpdesk
        .fail_login(&Actor::system().with_ip("203.0.113.5"), me, failure)
        .await
        .unwrap();
    assert!(matches!(
        helpdesk.view_ticket(&agent, me, Uuid::now_v7()).await,
        Err(AppError::NotFound { what: "ticket", .. })
    ));

    let records = stream(&store, &format!("user-{me}")).await;
    assert_eq!(
        records
            .iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
        [
            "user.created",
            "user.logged_in",
            "user.state_changed",
            "user.viewing_ticket",
            "user.left_ticket",
            "user.general_action",
            "user.updated",
            "user.logged_out",
            "user.login_failed",
        ]
    );
    let failed = records.last().unwrap().metadata().unwrap();
    assert_eq!(
        (failed.actor_kind, failed.ip.as_deref()),
        (ActorKind::System, Some("203.0.113.5"))
    );

    let setting = SettingChange {
        key: "sla.hours".into(),
        value: json!(8),
    };
    let changed = helpdesk
        .change_setting(&agent, setting.clone(), None)
        .await
        .unwrap();
    assert_eq!((changed.id, changed.version), (Uuid::nil(), 1));
    assert_refused(
        helpdesk.change_setting(&agent, setting, None).await,
        "no_change",
    );
    let (settings, version) = helpdesk.settings().await.unwrap();
    assert_eq!(
        (settings.values["sla.hours"].clone(), version),
        (json!(8), 1)
    );
}

/// Decisions race a close from another process: whatever wins, the log never
/// holds a message after the close (each decision saw the state it appended
/// on).
async fn no_message_lands_after_a_concurrent_close(db: &TestDb) {
    let (closer, agent) = setup(db).await;
    let writer = Helpdesk::new(db.open().await);
    let ticket = closer
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (writer, agent) = (writer.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                let body = format!("task {task} message {n}");
                match writer.act(&agent, ticket, None, public(&body)).await {
                    Ok(_) | Err(AppError::Conflict { .. }) => {}
                    Err(AppError::Rejected(r)) if r.code == "ticket_closed" => return,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    loop {
        match closer.act(&agent, ticket, None, status("closed")).await {
            Ok(_) => break,
            Err(AppError::Conflict { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let records = stream(closer.store(), &ticket_stream(ticket)).await;
    let closed_at = records
        .iter()
        .position(|r| r.event_type == "ticket.status_changed")
        .expect("closed");
    assert!(
        records[closed_at..]
            .iter()
            .all(|r| r.event_type != "ticket.message_added"),
        "a message was appended after the close"
    );
}

/// The seed generator writes through the real aggregates: every event
/// decodes, every stream folds, the chain verifies and the mix is varied.
async fn seed_writes_a_valid_varied_history(db: &TestDb) {
    let store = db.open().await;
    let mut seen = 0;
    let report = ledgerdesk_app::seed::seed(store.as_ref(), 3_000, |n| seen = n)
        .await
        .unwrap();
    assert!(report.events >= 3_000, "{report:?}");
    assert_eq!(seen, report.events);
    assert_eq!(store.head().await.unwrap().position, report.events);
    let events = store.read_all(0, 10_000).await.unwrap();
    let mut types = HashSet::new();
    for e in &events {
        let payload = e.payload_json().unwrap();
        AnyEvent::decode(&e.stream_type, &e.event_type, e.schema_version, &payload)
            .unwrap_or_else(|err| panic!("position {}: {err}", e.position));
        types.insert(e.event_type.clone());
    }
    assert!(types.len() >= 12, "a varied mix, got {types:?}");
    assert!(ledgerdesk_store::verify_chain(store.as_ref())
        .await
        .unwrap()
        .ok());
}

/// Personal data is stored sealed under the requester's key; erasing the
/// subject makes every view read `[erased]` while the stored log, and so its
/// hash chain, stays exactly as it was.
async fn erasure_shreds_personal_data_and_keeps_the_log_verifiable(db: &TestDb) {
    let raw = db.open().await;
    let sealed = Arc::new(ledgerdesk_app::SealedStore::new(raw.clone()));
    let vault = sealed.vault();
    let helpdesk = Helpdesk::new(sealed.clone());
    let agent = Actor::agent(create_agent(&helpdesk, "Alice").await);
    let mut input = new_ticket("erin@example.com");
    input.requester_name = "Erin Example".into();
    input.body = "My card number ends in 4242".into();
    let id = helpdesk.create_ticket(&agent, input).await.unwrap().id;
    helpdesk
        .act(&agent, id, None, public("Refunded, Erin."))
        .await
        .unwrap();
    let other = helpdesk
        .create_ticket(&agent, new_ticket("someone@example.com"))
        .await
        .unwrap()
        .id;
    let stream_id = format!("ticket-{id}");

    // Stored: no personal data in clear.
    for e in raw.read_all(0, 1000).await.unwrap() {
        for secret in [
            "Erin Example",
            "erin@example.com",
            "4242",
            "Refunded, Erin.",
        ] {
            assert!(
                !e.payload.contains(secret),
                "{secret} stored in clear at {}",
                e.position
            );
        }
    }
    // Read through the vault: the data is there.
    let created = &stream(&(sealed.clone() as Arc<dyn EventStore>), &stream_id).await[0];
    let payload = created.payload_json().unwrap();
    assert_eq!(
        payload["pii"]["data"]["requester_name"], "Erin Example",
        "{payload}"
    );
    let subject: Uuid = payload["pii"]["subject"].as_str().unwrap().parse().unwrap();
    let before = ledgerdesk_store::verify_chain(raw.as_ref()).await.unwrap();

    assert!(vault.erase(subject).await.unwrap());
    assert!(vault.is_erased(subject).await.unwrap());

    for e in stream(&(sealed.clone() as Arc<dyn EventStore>), &stream_id).await {
        let p = e.payload_json().unwrap();
        if let Some(data) = p["pii"]["data"].as_object() {
            assert!(data.values().all(|v| v == "[erased]" || v.is_null()), "{p}");
        }
        AnyEvent::decode(&e.stream_type, &e.event_type, e.schema_version, &p).unwrap();
    }
    // Other customers keep their data; the ticket still works.
    let other_created = &stream(
        &(sealed.clone() as Arc<dyn EventStore>),
        &format!("ticket-{other}"),
    )
    .await[0];
    assert_eq!(
        other_created.payload_json().unwrap()["pii"]["data"]["requester_email"],
        "someone@example.com"
    );
    helpdesk
        .act(&agent, id, None, public("Anything else?"))
        .await
        .unwrap();
    assert_eq!(
        helpdesk.data_subject("erin@example.com").await.unwrap(),
        None
    );

    // The log itself is untouched and still verifies.
    let after = ledgerdesk_store::verify_chain(raw.as_ref()).await.unwrap();
    assert!(after.ok());
    assert_eq!(after.verified, before.verified + 1);
}

/// Each process keeps the states it decided on last (the aggregate cache).
/// Another process's writes make them stale; every command must still be
/// decided on the current state: a stale hit is a conflict and a fresh
/// decision, and a refusal, a precondition or a no-op is never answered
/// from the cache alone.
async fn a_cached_state_never_outlives_another_processs_write(db: &TestDb) {
    let (here, agent) = setup(db).await;
    let there = Helpdesk::new(db.open().await);
    let ticket = here
        .create_ticket(&agent, new_ticket("ann@example.com"))
        .await
        .unwrap()
        .id;
    let cached = here.act(&agent, ticket, None, public("one")).await.unwrap();

    // Written elsewhere: the cached state is one version behind.
    let elsewhere = there
        .act(&agent, ticket, None, public("two"))
        .await
        .unwrap();
    assert_eq!(elsewhere.version, cached.version + 1);
    let done = here
        .act(&agent, ticket, None, public("three"))
        .await
        .unwrap();
    assert_eq!(
        done.version,
        elsewhere.version + 1,
        "decided on the current state"
    );

    // `If-Match` with the version the other process returned.
    let elsewhere = there
        .act(&agent, ticket, None, public("four"))
        .await
        .unwrap();
    let done = here
        .act(&agent, ticket, Some(elsewhere.version), public("five"))
        .await
        .expect("the version another process returned is current");
    assert_eq!(done.version, elsewhere.version + 1);

    // Closed elsewhere: no message lands on the closed ticket.
    there
        .act(&agent, ticket, None, status("closed"))
        .await
        .unwrap();
    assert_refused(
        here.act(&agent, ticket, None, public("too late")).await,
        "ticket_closed",
    );
    // Reopened elsewhere: the cached refusal is not the answer.
    there
        .act(&agent, ticket, None, status("open"))
        .await
        .unwrap();
    here.act(&agent, ticket, None, public("welcome back"))
        .await
        .expect("decided again on the reopened ticket");

    // The agent's account deactivated elsewhere: this process, which just
    // judged the account active, refuses the agent's next command.
    let admin = Actor::system();
    there
        .update_user(
            &admin,
            agent.id.unwrap(),
            UserUpdate {
                active: Some(false),
                ..UserUpdate::default()
            },
            None,
        )
        .await
        .unwrap();
    let at = head(&here).await;
    assert_refused(
        here.act(&agent, ticket, None, public("after deactivation"))
            .await,
        "user_deactivated",
    );
    assert_eq!(head(&here).await, at, "a refused command wrote");

    let records = stream(here.store(), &ticket_stream(ticket)).await;
    assert_eq!(
        records.iter().map(|r| r.version).collect::<Vec<_>>(),
        (1..=records.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        rebuild(&records),
        here.ticket(ticket).await.unwrap().unwrap().0
    );
}
