//! Properties of every aggregate over random command sequences, valid and
//! invalid mixed.
//!
//! Personal strings the generators produce all contain the marker `PII` and
//! nothing else does (tags, names of staff, keys are lowercase), so "no
//! personal data outside `pii`" is checkable as "no `PII` outside `pii`".

use ledgerdesk_domain::department::DepartmentCommand;
use ledgerdesk_domain::settings::SettingsCommand;
use ledgerdesk_domain::ticket::{
    AgentFact, CreateTicket, DepartmentFact, Requester, TicketAction, TicketCommand,
};
use ledgerdesk_domain::user::UserCommand;
use ledgerdesk_domain::{
    catalogue, fold, pii, Aggregate, AnyEvent, Department, DomainEvent, Settings, Ticket, User,
};
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const MARKER: &str = "PII";

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// Checks the four properties for one sequence.
fn check<A>(commands: &[A::Command], page: usize) -> Result<(), TestCaseError>
where
    A: Aggregate + PartialEq,
    A::Event: PartialEq + Into<AnyEvent>,
    A::Error: PartialEq,
{
    let mut state = A::default();
    let mut log: Vec<A::Event> = Vec::new();
    for command in commands {
        // (1) The state the decider sees is the fold of what was emitted.
        prop_assert_eq!(&fold(A::default(), &log), &state);
        let before = state.clone();
        match state.decide(command) {
            Ok(events) => {
                prop_assert!(!events.is_empty(), "accepted {:?} emitted nothing", command);
                state = fold(state, &events);
                log.extend(events);
            }
            Err(error) => {
                // (2) A refusal emits nothing and is a pure function of the state.
                prop_assert_eq!(&state, &before);
                prop_assert_eq!(state.decide(command).err(), Some(error));
            }
        }
    }
    prop_assert_eq!(&fold(A::default(), &log), &state);

    // (3) Folding page by page equals folding the whole log.
    let mut paged = A::default();
    for chunk in log.chunks(page) {
        paged = fold(paged.clone(), chunk);
    }
    prop_assert_eq!(&paged, &state);

    // (4) Round trips, the pii rule, and audit lines free of personal data.
    for event in &log {
        let (event_type, version, payload) = (
            event.event_type(),
            event.schema_version(),
            event.to_payload(),
        );
        prop_assert!(payload.is_object());
        prop_assert_eq!(
            &A::Event::decode(event_type, version, &payload).unwrap(),
            event
        );
        let any: AnyEvent = event.clone().into();
        prop_assert_eq!(
            &AnyEvent::decode(A::STREAM_TYPE, event_type, version, &payload).unwrap(),
            &any
        );

        let mut outside = payload.clone();
        let personal = outside.as_object_mut().unwrap().remove(pii::PII_KEY);
        prop_assert!(
            !outside.to_string().contains(MARKER),
            "personal data outside pii: {}",
            payload
        );
        if let Some(personal) = personal {
            prop_assert!(personal["subject"].is_string());
            let data = personal["data"].as_object().expect("pii.data is an object");
            prop_assert!(data.values().all(|v| v.is_string() || v.is_null()));
            let erased = pii::erase(&payload);
            prop_assert!(!erased.to_string().contains(MARKER));
            prop_assert!(A::Event::decode(event_type, version, &erased).is_ok());
        }

        let audit = any.audit();
        prop_assert!(
            !audit.description.contains(MARKER),
            "pii in audit line: {}",
            audit.description
        );
        prop_assert!(!audit.description.contains('\n'));
        prop_assert!(catalogue::by_code(audit.action.code).is_some());
        for change in &audit.changes {
            let values = format!("{:?}{:?}", change.before, change.after);
            prop_assert!(!values.contains(MARKER), "pii in changes: {}", values);
        }
    }
    Ok(())
}

fn personal() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "PII[a-z ]{0,12}",
        1 => Just(String::new()),
        1 => Just("  ".to_string()),
    ]
}

fn personal_email() -> impl Strategy<Value = String> {
    prop_oneof![4 => "PII[a-z]{1,6}@example\\.com", 1 => Just("PII-not-an-email".to_string())]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z]{1,6}( [a-z]{1,4})?", 1 => Just(String::new())]
}

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_string)
}

fn message_id() -> impl Strategy<Value = Uuid> {
    (10u128..16).prop_map(id)
}

fn sha() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9a-f]{64}", "[0-9a-f]{3}"]
}

fn requester_subject() -> Uuid {
    id(100)
}

fn create_ticket() -> impl Strategy<Value = CreateTicket> {
    (
        prop_oneof![3 => Just(id(1)), 1 => Just(id(2))],
        one_of(&["email", "facebook", "web", "fax"]),
        personal(),
        personal(),
        message_id(),
        (personal(), proptest::option::of(personal_email())),
        proptest::option::of(one_of(&["low", "urgent", "asap"])),
        prop::collection::vec(word(), 0..3),
        proptest::option::of(Just(id(2))),
    )
        .prop_map(
            |(
                ticket_id,
                channel,
                subject,
                body,
                message_id,
                (name, email),
                priority,
                tags,
                split_from,
            )| {
                CreateTicket {
                    ticket_id,
                    channel,
                    subject,
                    body,
                    message_id,
                    requester: Requester { name, email },
                    requester_subject: requester_subject(),
                    priority,
                    department: None,
                    tags,
                    split_from,
                }
            },
        )
}

fn valid_create() -> CreateTicket {
    CreateTicket {
        ticket_id: id(1),
        channel: "email".into(),
        subject: "PII subject".into(),
        body: "PII body".into(),
        message_id: id(10),
        requester: Requester {
            name: "PII name".into(),
            email: Some("PIIname@example.com".into()),
        },
        requester_subject: requester_subject(),
        priority: None,
        department: None,
        tags: vec![],
        split_from: None,
    }
}

fn ticket_command() -> impl Strategy<Value = TicketCommand> {
    use TicketAction as A;
    use TicketCommand as C;
    let fact = (any::<bool>(), any::<bool>());
    prop_oneof![
        create_ticket().prop_map(C::Create),
        one_of(&["new", "open", "pending", "resolved", "closed", "done"])
            .prop_map(|to| C::Act(A::ChangeStatus { to })),
        (
            message_id(),
            one_of(&["inbound", "outbound", "up"]),
            one_of(&["email", "twitter", "weibo", "offline_form", "fax"]),
            personal()
        )
            .prop_map(|(message_id, direction, channel, body)| C::Act(
                A::AddPublicMessage {
                    message_id,
                    direction,
                    channel: Some(channel),
                    body
                }
            )),
        (message_id(), personal())
            .prop_map(|(message_id, body)| C::Act(A::AddInternalMessage { message_id, body })),
        (message_id(), personal()).prop_map(|(note_id, body)| C::Act(A::AddNote { note_id, body })),
        (
            message_id(),
            personal(),
            one_of(&["image/png", ""]),
            any::<u32>(),
            sha()
        )
            .prop_map(|(file_id, name, content_type, size, sha256)| C::Act(
                A::AttachFile {
                    file_id,
                    name,
                    content_type,
                    size: size.into(),
                    sha256
                }
            )),
        (proptest::option::of(fact), proptest::option::of(fact)).prop_map(|(agent, department)| {
            C::Transfer {
                to_agent: agent.map(|(exists, active)| AgentFact {
                    id: id(200),
                    exists,
                    active,
                }),
                to_department: department.map(|(exists, active)| DepartmentFact {
                    id: id(300),
                    exists,
                    active,
                }),
            }
        }),
        (
            prop::collection::vec(word(), 0..3),
            prop::collection::vec(word(), 0..3)
        )
            .prop_map(|(add, remove)| C::Act(A::ChangeTags { add, remove })),
        (message_id(), 0u32..600, proptest::option::of(sha())).prop_map(
            |(message_id, duration_seconds, file_sha256)| C::Act(A::AddVoiceMessage {
                message_id,
                duration_seconds,
                file_sha256
            })
        ),
        (one_of(&["inbound", "outbound", "up"]), 0u32..600).prop_map(
            |(direction, duration_seconds)| C::Act(A::LogCall {
                direction,
                duration_seconds
            })
        ),
        (message_id(), personal())
            .prop_map(|(message_id, body)| C::Act(A::AddChatMessage { message_id, body })),
        personal_email().prop_map(|to| C::Act(A::Forward { to })),
        (0u8..8, proptest::option::of(personal()))
            .prop_map(|(rating, comment)| C::Act(A::Rate { rating, comment })),
        (
            prop_oneof![Just(id(1)), Just(id(3))],
            prop::collection::vec(message_id(), 0..4)
        )
            .prop_map(|(new_ticket_id, message_ids)| C::Split {
                new_ticket_id,
                message_ids
            }),
        (
            prop_oneof![Just(id(1)), Just(id(2)), Just(id(3))],
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(into, into_is_merged, into_is_closed)| C::Merge {
                into,
                into_is_merged,
                into_is_closed
            }),
        one_of(&["low", "normal", "high", "urgent", "meh"])
            .prop_map(|to| C::Act(A::ChangePriority { to })),
        word().prop_map(|text| C::Act(A::AddSystemMessage { text })),
        (word(), word()).prop_map(|(action, description)| C::Act(A::RecordOther {
            action,
            description
        })),
    ]
}

fn user_command() -> impl Strategy<Value = UserCommand> {
    use UserCommand as C;
    prop_oneof![
        (
            word(),
            one_of(&["a@example.com", "bad"]),
            one_of(&["agent", "admin", "auditor", "boss"])
        )
            .prop_map(|(name, email, role)| C::Create {
                user_id: id(1),
                name,
                email,
                role,
                department: None
            }),
        (
            proptest::option::of(word()),
            proptest::option::of(one_of(&["agent", "admin", "boss"])),
            proptest::option::of(proptest::option::of(Just(id(3)))),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(name, role, department, active)| C::Update {
                name,
                role,
                department,
                active
            }),
        Just(C::LogIn),
        word().prop_map(|reason| C::FailLogin { reason }),
        Just(C::LogOut),
        one_of(&["available", "away", "offline", "busy"]).prop_map(|to| C::ChangeState { to }),
        (8u128..10).prop_map(|t| C::ViewTicket { ticket_id: id(t) }),
        (8u128..10).prop_map(|t| C::LeaveTicket { ticket_id: id(t) }),
        (word(), word()).prop_map(|(action, description)| C::RecordGeneralAction {
            action,
            description
        }),
        (word(), one_of(&["json", "stream", "csv", "ndjson", "xml"]))
            .prop_map(|(query, format)| C::RecordAuditAccess { query, format }),
        (1u128..4).prop_map(|s| C::RecordErasure { subject: id(s) }),
    ]
}

fn department_command() -> impl Strategy<Value = DepartmentCommand> {
    use DepartmentCommand as C;
    prop_oneof![
        word().prop_map(|name| C::Create {
            department_id: id(3),
            name
        }),
        word().prop_map(|name| C::Rename { name }),
        Just(C::Deactivate),
        Just(C::Reactivate),
    ]
}

fn setting_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
        prop::collection::vec((-5i64..5).prop_map(Value::from), 0..3).prop_map(Value::from),
    ]
}

fn settings_command() -> impl Strategy<Value = SettingsCommand> {
    (
        one_of(&["sla.hours", "locale", "Bad Key", ""]),
        setting_value(),
    )
        .prop_map(|(key, value)| SettingsCommand::Change { key, value })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ticket_properties(commands in prop::collection::vec(ticket_command(), 0..40), page in 1usize..8) {
        let mut all = vec![TicketCommand::Create(valid_create())];
        all.extend(commands);
        check::<Ticket>(&all, page)?;
    }

    #[test]
    fn user_properties(commands in prop::collection::vec(user_command(), 0..40), page in 1usize..8) {
        check::<User>(&commands, page)?;
    }

    #[test]
    fn department_properties(commands in prop::collection::vec(department_command(), 0..20), page in 1usize..8) {
        check::<Department>(&commands, page)?;
    }

    #[test]
    fn settings_properties(commands in prop::collection::vec(settings_command(), 0..20), page in 1usize..8) {
        check::<Settings>(&commands, page)?;
    }
}

/// Guards the generators: a sequence the properties run on must actually
/// reach the interesting states, or the properties above prove little.
#[test]
fn generators_reach_accepted_and_refused_commands() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(ticket_command(), 40);
    let (mut accepted, mut refused) = (std::collections::BTreeSet::new(), 0);
    for _ in 0..50 {
        let commands = strategy.new_tree(&mut runner).unwrap().current();
        let mut state = Ticket::default().apply(
            &Ticket::default()
                .decide(&TicketCommand::Create(valid_create()))
                .unwrap()[0],
        );
        for command in &commands {
            match state.decide(command) {
                Ok(events) => {
                    for event in &events {
                        accepted.insert(event.event_type());
                    }
                    state = fold(state, &events);
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(refused > 0);
    assert!(accepted.len() >= 12, "only reached {accepted:?}");
}
