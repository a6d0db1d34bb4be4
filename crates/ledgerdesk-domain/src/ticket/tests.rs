//! Given/when/then scenarios of the ticket aggregate.

use super::*;
use crate::testing::given;
use crate::{Aggregate, DomainEvent, Pii};
use TicketAction as A;
use TicketCommand as C;
use TicketEvent as E;

const T: Uuid = Uuid::from_u128(1);
const OTHER: Uuid = Uuid::from_u128(2);
const SUBJECT: Uuid = Uuid::from_u128(100);
const M1: Uuid = Uuid::from_u128(11);
const M2: Uuid = Uuid::from_u128(12);
const M3: Uuid = Uuid::from_u128(13);
const AGENT: Uuid = Uuid::from_u128(200);
const DEPT: Uuid = Uuid::from_u128(300);
const SHA: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

fn create() -> CreateTicket {
    CreateTicket {
        ticket_id: T,
        channel: "email".into(),
        subject: " Printer on fire ".into(),
        body: "It is burning.".into(),
        message_id: M1,
        requester: Requester {
            name: "Ada".into(),
            email: Some("ada@example.com".into()),
        },
        requester_subject: SUBJECT,
        priority: None,
        department: None,
        tags: vec![],
        split_from: None,
    }
}

fn created() -> TicketEvent {
    E::Created {
        ticket_id: T,
        message_id: M1,
        channel: Channel::Email,
        priority: Priority::Normal,
        department: None,
        tags: vec![],
        split_from: None,
        pii: Pii::new(
            SUBJECT,
            CreatedPii {
                subject: "Printer on fire".into(),
                body: "It is burning.".into(),
                requester_name: "Ada".into(),
                requester_email: Some("ada@example.com".into()),
            },
        ),
    }
}

fn status(from: Status, to: Status) -> TicketEvent {
    E::StatusChanged {
        ticket_id: T,
        from,
        to,
    }
}

fn closed() -> Vec<TicketEvent> {
    vec![created(), status(Status::New, Status::Closed)]
}

fn merged() -> Vec<TicketEvent> {
    vec![
        created(),
        E::Merged {
            ticket_id: T,
            into: OTHER,
            previous_status: Status::New,
        },
    ]
}

fn body_pii(body: &str) -> Pii<BodyPii> {
    Pii::new(SUBJECT, BodyPii { body: body.into() })
}

fn message(id: Uuid) -> TicketEvent {
    E::InternalMessageAdded {
        ticket_id: T,
        message_id: id,
        pii: body_pii("x"),
    }
}

fn public(body: &str) -> TicketAction {
    A::AddPublicMessage {
        message_id: M2,
        direction: "inbound".into(),
        channel: Some("facebook".into()),
        body: body.into(),
    }
}

fn agent(active: bool) -> AgentFact {
    AgentFact {
        id: AGENT,
        exists: true,
        active,
    }
}

fn dept(exists: bool, active: bool) -> DepartmentFact {
    DepartmentFact {
        id: DEPT,
        exists,
        active,
    }
}

fn field(error: FieldError) -> TicketError {
    TicketError::Field(error)
}

/// Every command that adds content, for the closed/merged/missing rules.
fn content_commands() -> Vec<TicketCommand> {
    vec![
        public("hi").into(),
        A::AddInternalMessage {
            message_id: M2,
            body: "hi".into(),
        }
        .into(),
        A::AddNote {
            note_id: M2,
            body: "hi".into(),
        }
        .into(),
        A::AttachFile {
            file_id: M2,
            name: "a.pdf".into(),
            content_type: "application/pdf".into(),
            size: 3,
            sha256: SHA.into(),
        }
        .into(),
        A::ChangeTags {
            add: vec!["vip".into()],
            remove: vec![],
        }
        .into(),
        A::AddVoiceMessage {
            message_id: M2,
            duration_seconds: 3,
            file_sha256: None,
        }
        .into(),
        A::LogCall {
            direction: "inbound".into(),
            duration_seconds: 3,
        }
        .into(),
        A::AddChatMessage {
            message_id: M2,
            body: "hi".into(),
        }
        .into(),
        A::Forward {
            to: "bob@example.com".into(),
        }
        .into(),
        C::Transfer {
            to_agent: Some(agent(true)),
            to_department: None,
        },
        A::ChangePriority { to: "high".into() }.into(),
        C::Split {
            new_ticket_id: OTHER,
            message_ids: vec![M1],
        },
    ]
}

#[test]
fn create_opens_a_new_ticket_with_pii_apart() {
    let state = given::<Ticket>([])
        .when(C::Create(create()))
        .then_events(vec![created()]);
    assert_eq!(state.id, Some(T));
    assert_eq!(state.requester_subject, Some(SUBJECT));
    assert_eq!(state.status, Status::New);
    assert_eq!(state.priority, Priority::Normal);
    assert!(state.message_ids.contains(&M1));
}

#[test]
fn create_normalises_tags_and_parses_priority_and_department() {
    let mut cmd = create();
    cmd.priority = Some("urgent".into());
    cmd.tags = vec!["  VIP ".into(), "Billing  Issue".into(), "vip".into()];
    cmd.department = Some(dept(true, true));
    cmd.split_from = Some(OTHER);
    let mut expected = created();
    if let E::Created {
        priority,
        tags,
        department,
        split_from,
        ..
    } = &mut expected
    {
        *priority = Priority::Urgent;
        *tags = vec!["billing-issue".into(), "vip".into()];
        *department = Some(DEPT);
        *split_from = Some(OTHER);
    }
    let state = given::<Ticket>([])
        .when(C::Create(cmd))
        .then_events(vec![expected]);
    assert_eq!(state.tags.len(), 2);
    assert_eq!(state.split_from, Some(OTHER));
    assert_eq!(state.department, Some(DEPT));
}

#[test]
fn create_refuses_bad_fields_naming_them() {
    type Case = (fn(&mut CreateTicket), &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (|c| c.channel = "fax".into(), "channel", "unknown_value"),
        (|c| c.subject = "   ".into(), "subject", "field_empty"),
        (|c| c.subject = "s".repeat(256), "subject", "field_too_long"),
        (|c| c.body = "\n".into(), "body", "field_empty"),
        (|c| c.body = "b".repeat(65_537), "body", "field_too_long"),
        (
            |c| c.requester.name = "".into(),
            "requester.name",
            "field_empty",
        ),
        (
            |c| c.requester.email = Some("nope".into()),
            "requester.email",
            "field_malformed",
        ),
        (
            |c| c.priority = Some("asap".into()),
            "priority",
            "unknown_value",
        ),
        (|c| c.tags = vec![" ".into()], "tags", "field_empty"),
        (|c| c.tags = vec!["t".repeat(51)], "tags", "field_too_long"),
        (
            |c| c.tags = (0..51).map(|i| format!("t{i}")).collect(),
            "tags",
            "too_many",
        ),
        (
            |c| c.department = Some(dept(false, false)),
            "department",
            "department_not_found",
        ),
        (
            |c| c.department = Some(dept(true, false)),
            "department",
            "department_inactive",
        ),
        (|c| c.split_from = Some(T), "split_from", "field_malformed"),
    ];
    for (mutate, field, code) in cases {
        let mut cmd = create();
        mutate(&mut cmd);
        let error = Ticket::default().decide(&C::Create(cmd)).unwrap_err();
        assert_eq!(
            (error.field(), error.code()),
            (Some(field), code),
            "{error}"
        );
    }
    let error = Ticket::default()
        .decide(&C::Create(CreateTicket {
            body: "b".repeat(65_537),
            ..create()
        }))
        .unwrap_err();
    assert_eq!(error.to_string(), "body is longer than 65536 characters");
}

#[test]
fn create_on_existing_ticket_is_refused() {
    given::<Ticket>([created()])
        .when(C::Create(create()))
        .then_error(TicketError::AlreadyExists);
}

#[test]
fn every_other_command_on_a_missing_ticket_is_refused() {
    let mut commands = content_commands();
    commands.extend([
        A::ChangeStatus { to: "open".into() }.into(),
        A::Rate {
            rating: 5,
            comment: None,
        }
        .into(),
        C::Merge {
            into: OTHER,
            into_is_merged: false,
            into_is_closed: false,
        },
        A::AddSystemMessage { text: "x".into() }.into(),
        A::RecordOther {
            action: "a".into(),
            description: "d".into(),
        }
        .into(),
    ]);
    for command in commands {
        given::<Ticket>([])
            .when(command)
            .then_error(TicketError::NotFound);
    }
}

#[test]
fn content_on_a_closed_ticket_is_refused() {
    for command in content_commands() {
        given::<Ticket>(closed())
            .when(command)
            .then_error(TicketError::Closed);
    }
}

#[test]
fn content_on_a_merged_ticket_is_refused() {
    for command in content_commands() {
        given::<Ticket>(merged())
            .when(command)
            .then_error(TicketError::Merged { into: OTHER });
    }
}

#[test]
fn status_follows_the_transition_table() {
    let state = given::<Ticket>([created()])
        .when(A::ChangeStatus { to: "open".into() })
        .then_events(vec![status(Status::New, Status::Open)]);
    assert_eq!(state.status, Status::Open);
    for &(from, to) in STATUS_TRANSITIONS {
        let history = vec![created(), status(Status::New, from)];
        given::<Ticket>(history)
            .when(A::ChangeStatus {
                to: to.as_str().into(),
            })
            .then_events(vec![status(from, to)]);
    }
}

#[test]
fn status_changes_outside_the_table_are_refused() {
    for &from in Status::ALL {
        for &to in Status::ALL {
            if from.can_become(to) {
                continue;
            }
            given::<Ticket>([created(), status(Status::New, from)])
                .when(A::ChangeStatus {
                    to: to.as_str().into(),
                })
                .then_error(TicketError::InvalidTransition { from, to });
        }
    }
    let error = TicketError::InvalidTransition {
        from: Status::Closed,
        to: Status::Pending,
    };
    assert_eq!(
        error.to_string(),
        "cannot change status from closed to pending"
    );
    assert_eq!(error.code(), "invalid_transition");
}

#[test]
fn closed_ticket_can_be_reopened_and_then_takes_messages() {
    let state = given::<Ticket>(closed())
        .when(A::ChangeStatus { to: "open".into() })
        .then_events(vec![status(Status::Closed, Status::Open)]);
    assert!(state.decide(&public("back").into()).is_ok());
}

#[test]
fn merged_ticket_status_cannot_change() {
    given::<Ticket>(merged())
        .when(A::ChangeStatus { to: "open".into() })
        .then_error(TicketError::Merged { into: OTHER });
}

#[test]
fn unknown_status_is_refused_naming_the_field() {
    let error = given::<Ticket>([created()]).when(A::ChangeStatus { to: "done".into() });
    error.then_error(field(FieldError::Unknown {
        field: "status",
        value: "done".into(),
        expected: Status::WIRE_NAMES,
    }));
}

#[test]
fn public_message_records_direction_and_channel() {
    let state = given::<Ticket>([created()])
        .when(public("Any news?"))
        .then_events(vec![E::MessageAdded {
            ticket_id: T,
            message_id: M2,
            direction: Direction::Inbound,
            channel: Channel::Facebook,
            pii: body_pii("Any news?"),
        }]);
    assert!(state.message_ids.contains(&M2));
}

#[test]
fn public_message_refusals() {
    given::<Ticket>([created()])
        .when(public(" "))
        .then_error(field(FieldError::Empty { field: "body" }));
    given::<Ticket>([created()])
        .when(public(&"x".repeat(65_537)))
        .then_error(field(FieldError::TooLong {
            field: "body",
            max: limits::BODY_MAX,
        }));
    given::<Ticket>([created()])
        .when(A::AddPublicMessage {
            message_id: M2,
            direction: "inbound".into(),
            channel: Some("pigeon".into()),
            body: "hi".into(),
        })
        .then_error(field(FieldError::Unknown {
            field: "channel",
            value: "pigeon".into(),
            expected: Channel::WIRE_NAMES,
        }));
    given::<Ticket>([created()])
        .when(A::AddPublicMessage {
            message_id: M2,
            direction: "sideways".into(),
            channel: Some("email".into()),
            body: "hi".into(),
        })
        .then_error(field(FieldError::Unknown {
            field: "direction",
            value: "sideways".into(),
            expected: Direction::WIRE_NAMES,
        }));
    given::<Ticket>([created()])
        .when(A::AddPublicMessage {
            message_id: M1,
            direction: "inbound".into(),
            channel: Some("email".into()),
            body: "hi".into(),
        })
        .then_error(TicketError::DuplicateMessage { id: M1 });
}

#[test]
fn internal_message_note_and_chat() {
    let state = given::<Ticket>([created()])
        .when(A::AddInternalMessage {
            message_id: M2,
            body: "ask finance".into(),
        })
        .then_events(vec![E::InternalMessageAdded {
            ticket_id: T,
            message_id: M2,
            pii: body_pii("ask finance"),
        }]);
    assert!(state.message_ids.contains(&M2));
    let state = given::<Ticket>([created()])
        .when(A::AddNote {
            note_id: M2,
            body: "call back".into(),
        })
        .then_events(vec![E::NoteAdded {
            ticket_id: T,
            note_id: M2,
            pii: body_pii("call back"),
        }]);
    assert!(!state.message_ids.contains(&M2), "notes are not messages");
    given::<Ticket>([created()])
        .when(A::AddNote {
            note_id: M2,
            body: "n".repeat(65_537),
        })
        .then_error(field(FieldError::TooLong {
            field: "body",
            max: limits::NOTE_MAX,
        }));
    let state = given::<Ticket>([created()])
        .when(A::AddChatMessage {
            message_id: M2,
            body: "hello".into(),
        })
        .then_events(vec![E::ChatMessageAdded {
            ticket_id: T,
            message_id: M2,
            pii: body_pii("hello"),
        }]);
    assert!(state.message_ids.contains(&M2));
}

#[test]
fn file_attachment_validates_the_digest() {
    given::<Ticket>([created()])
        .when(A::AttachFile {
            file_id: M2,
            name: " invoice.pdf ".into(),
            content_type: "application/pdf".into(),
            size: 1024,
            sha256: SHA.to_uppercase(),
        })
        .then_events(vec![E::FileAttached {
            ticket_id: T,
            file_id: M2,
            content_type: "application/pdf".into(),
            size: 1024,
            sha256: SHA.into(),
            pii: Pii::new(
                SUBJECT,
                FilePii {
                    name: "invoice.pdf".into(),
                },
            ),
        }]);
    let error = Ticket::default()
        .apply(&created())
        .decide(&C::Act(A::AttachFile {
            file_id: M2,
            name: "a".into(),
            content_type: "text/plain".into(),
            size: 1,
            sha256: "abc".into(),
        }))
        .unwrap_err();
    assert_eq!(
        (error.code(), error.field()),
        ("field_malformed", Some("sha256"))
    );
    let error = Ticket::default()
        .apply(&created())
        .decide(&C::Act(A::AttachFile {
            file_id: M2,
            name: " ".into(),
            content_type: "text/plain".into(),
            size: 1,
            sha256: SHA.into(),
        }))
        .unwrap_err();
    assert_eq!(error.field(), Some("name"));
}

#[test]
fn transfer_carries_previous_assignee_and_department() {
    let state = given::<Ticket>([created()])
        .when(C::Transfer {
            to_agent: Some(agent(true)),
            to_department: Some(dept(true, true)),
        })
        .then_events(vec![E::Transferred {
            ticket_id: T,
            from_agent: None,
            to_agent: Some(AGENT),
            from_department: None,
            to_department: Some(DEPT),
        }]);
    assert_eq!(
        (state.assignee, state.department),
        (Some(AGENT), Some(DEPT))
    );
    // Naming only a department keeps the assignee.
    let other = DepartmentFact {
        id: OTHER,
        exists: true,
        active: true,
    };
    given::<Ticket>(vec![
        created(),
        E::Transferred {
            ticket_id: T,
            from_agent: None,
            to_agent: Some(AGENT),
            from_department: None,
            to_department: Some(DEPT),
        },
    ])
    .when(C::Transfer {
        to_agent: None,
        to_department: Some(other),
    })
    .then_events(vec![E::Transferred {
        ticket_id: T,
        from_agent: Some(AGENT),
        to_agent: Some(AGENT),
        from_department: Some(DEPT),
        to_department: Some(OTHER),
    }]);
}

#[test]
fn transfer_refusals() {
    let when = |to_agent, to_department| {
        given::<Ticket>([created()]).when(C::Transfer {
            to_agent,
            to_department,
        })
    };
    when(None, None).then_error(TicketError::TransferTargetMissing);
    when(
        Some(AgentFact {
            id: AGENT,
            exists: false,
            active: false,
        }),
        None,
    )
    .then_error(TicketError::AgentNotFound { id: AGENT });
    when(Some(agent(false)), None).then_error(TicketError::AgentInactive { id: AGENT });
    when(None, Some(dept(false, true))).then_error(TicketError::DepartmentNotFound { id: DEPT });
    when(None, Some(dept(true, false))).then_error(TicketError::DepartmentInactive { id: DEPT });
    given::<Ticket>(vec![
        created(),
        E::Transferred {
            ticket_id: T,
            from_agent: None,
            to_agent: Some(AGENT),
            from_department: None,
            to_department: None,
        },
    ])
    .when(C::Transfer {
        to_agent: Some(agent(true)),
        to_department: None,
    })
    .then_error(TicketError::NoChange {
        field: "assignee and department",
    });
}

#[test]
fn tags_are_normalised_and_noop_changes_refused() {
    let state = given::<Ticket>([created()])
        .when(A::ChangeTags {
            add: vec![" Billing ".into(), "VIP".into(), "billing".into()],
            remove: vec!["absent".into()],
        })
        .then_events(vec![E::TagsChanged {
            ticket_id: T,
            added: vec!["billing".into(), "vip".into()],
            removed: vec![],
        }]);
    assert_eq!(state.tags.iter().collect::<Vec<_>>(), ["billing", "vip"]);
    let tagged = vec![
        created(),
        E::TagsChanged {
            ticket_id: T,
            added: vec!["vip".into()],
            removed: vec![],
        },
    ];
    let state = given::<Ticket>(tagged.clone())
        .when(A::ChangeTags {
            add: vec!["Second  Line".into()],
            remove: vec!["VIP".into()],
        })
        .then_events(vec![E::TagsChanged {
            ticket_id: T,
            added: vec!["second-line".into()],
            removed: vec!["vip".into()],
        }]);
    assert_eq!(state.tags.iter().collect::<Vec<_>>(), ["second-line"]);
    given::<Ticket>(tagged.clone())
        .when(A::ChangeTags {
            add: vec!["vip".into()],
            remove: vec![],
        })
        .then_error(TicketError::NoChange { field: "tags" });
    given::<Ticket>(tagged)
        .when(A::ChangeTags {
            add: vec![],
            remove: vec!["absent".into()],
        })
        .then_error(TicketError::NoChange { field: "tags" });
    let full: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    given::<Ticket>(vec![
        created(),
        E::TagsChanged {
            ticket_id: T,
            added: full,
            removed: vec![],
        },
    ])
    .when(A::ChangeTags {
        add: vec!["one-more".into()],
        remove: vec![],
    })
    .then_error(field(FieldError::TooMany {
        field: "tags",
        max: limits::TAGS_MAX,
    }));
}

#[test]
fn voice_message_and_call() {
    let state = given::<Ticket>([created()])
        .when(A::AddVoiceMessage {
            message_id: M2,
            duration_seconds: 42,
            file_sha256: Some(SHA.into()),
        })
        .then_events(vec![E::VoiceMessageAdded {
            ticket_id: T,
            message_id: M2,
            duration_seconds: 42,
            file_sha256: Some(SHA.into()),
        }]);
    assert!(state.message_ids.contains(&M2));
    given::<Ticket>([created()])
        .when(A::AddVoiceMessage {
            message_id: M2,
            duration_seconds: 42,
            file_sha256: Some("zz".into()),
        })
        .then_error(field(FieldError::Malformed {
            field: "file_sha256",
            problem: "must be 64 hexadecimal characters (a SHA-256 digest)",
        }));
    given::<Ticket>([created()])
        .when(A::LogCall {
            direction: "outbound".into(),
            duration_seconds: 90,
        })
        .then_events(vec![E::CallLogged {
            ticket_id: T,
            direction: Direction::Outbound,
            duration_seconds: 90,
        }]);
}

#[test]
fn forward_needs_an_email_address() {
    given::<Ticket>([created()])
        .when(A::Forward {
            to: "finance@example.com".into(),
        })
        .then_events(vec![E::Forwarded {
            ticket_id: T,
            pii: Pii::new(
                SUBJECT,
                ForwardPii {
                    to: "finance@example.com".into(),
                },
            ),
        }]);
    given::<Ticket>([created()])
        .when(A::Forward {
            to: "finance".into(),
        })
        .then_error(field(FieldError::Malformed {
            field: "to",
            problem: "must look like an email address",
        }));
}

#[test]
fn rating_is_one_to_five_and_allowed_after_closing() {
    let ranked = E::Ranked {
        ticket_id: T,
        previous_rating: None,
        rating: 4,
        pii: Pii::new(
            SUBJECT,
            RatingPii {
                comment: Some("quick".into()),
            },
        ),
    };
    let state = given::<Ticket>(closed())
        .when(A::Rate {
            rating: 4,
            comment: Some("quick".into()),
        })
        .then_events(vec![ranked.clone()]);
    assert_eq!(state.rating, Some(4));
    given::<Ticket>(vec![created(), ranked])
        .when(A::Rate {
            rating: 5,
            comment: Some("  ".into()),
        })
        .then_events(vec![E::Ranked {
            ticket_id: T,
            previous_rating: Some(4),
            rating: 5,
            pii: Pii::new(SUBJECT, RatingPii { comment: None }),
        }]);
    for rating in [0, 6, 255] {
        given::<Ticket>([created()])
            .when(A::Rate {
                rating,
                comment: None,
            })
            .then_error(TicketError::RatingOutOfRange { rating });
    }
    given::<Ticket>(merged())
        .when(A::Rate {
            rating: 3,
            comment: None,
        })
        .then_error(TicketError::Merged { into: OTHER });
}

#[test]
fn split_moves_own_messages_and_leaves_one_behind() {
    let history = vec![created(), message(M2), message(M3)];
    let state = given::<Ticket>(history.clone())
        .when(C::Split {
            new_ticket_id: OTHER,
            message_ids: vec![M3, M2, M3],
        })
        .then_events(vec![E::Split {
            ticket_id: T,
            split_into: OTHER,
            message_ids: vec![M2, M3],
        }]);
    assert_eq!(state.message_ids.iter().collect::<Vec<_>>(), [&M1]);
    let split = |ids: Vec<Uuid>, into| {
        given::<Ticket>(history.clone()).when(C::Split {
            new_ticket_id: into,
            message_ids: ids,
        })
    };
    split(vec![], OTHER).then_error(field(FieldError::Empty {
        field: "message_ids",
    }));
    split(vec![AGENT], OTHER).then_error(TicketError::UnknownMessage { id: AGENT });
    split(vec![M1, M2, M3], OTHER).then_error(TicketError::SplitTakesAll);
    split(vec![M2], T).then_error(TicketError::SplitIntoSelf);
}

#[test]
fn merge_closes_the_ticket_for_good() {
    let state = given::<Ticket>([created()])
        .when(C::Merge {
            into: OTHER,
            into_is_merged: false,
            into_is_closed: false,
        })
        .then_events(vec![E::Merged {
            ticket_id: T,
            into: OTHER,
            previous_status: Status::New,
        }]);
    assert_eq!(state.merged_into, Some(OTHER));
    assert_eq!(state.status, Status::Closed);
}

#[test]
fn merge_refusals() {
    let merge = |into, into_is_merged, into_is_closed| C::Merge {
        into,
        into_is_merged,
        into_is_closed,
    };
    given::<Ticket>([created()])
        .when(merge(T, false, false))
        .then_error(TicketError::MergeIntoSelf);
    given::<Ticket>([created()])
        .when(merge(OTHER, true, false))
        .then_error(TicketError::MergeTargetMerged { into: OTHER });
    given::<Ticket>([created()])
        .when(merge(OTHER, false, true))
        .then_error(TicketError::MergeTargetClosed { into: OTHER });
    given::<Ticket>(merged())
        .when(merge(AGENT, false, false))
        .then_error(TicketError::Merged { into: OTHER });
}

#[test]
fn priority_changes_carry_from_and_to() {
    let state = given::<Ticket>([created()])
        .when(A::ChangePriority { to: "high".into() })
        .then_events(vec![E::PriorityChanged {
            ticket_id: T,
            from: Priority::Normal,
            to: Priority::High,
        }]);
    assert_eq!(state.priority, Priority::High);
    given::<Ticket>([created()])
        .when(A::ChangePriority {
            to: "normal".into(),
        })
        .then_error(TicketError::NoChange { field: "priority" });
}

#[test]
fn system_messages_are_allowed_on_merged_tickets() {
    given::<Ticket>(merged())
        .when(A::AddSystemMessage {
            text: "Merged into another ticket".into(),
        })
        .then_events(vec![E::SystemMessageAdded {
            ticket_id: T,
            text: "Merged into another ticket".into(),
        }]);
    given::<Ticket>([created()])
        .when(A::AddSystemMessage { text: "".into() })
        .then_error(field(FieldError::Empty { field: "text" }));
}

#[test]
fn other_actions_are_validated() {
    given::<Ticket>([created()])
        .when(A::RecordOther {
            action: " crm.sync ".into(),
            description: "Synced to CRM".into(),
        })
        .then_events(vec![E::Other {
            ticket_id: T,
            action: "crm.sync".into(),
            description: "Synced to CRM".into(),
        }]);
    given::<Ticket>([created()])
        .when(A::RecordOther {
            action: "".into(),
            description: "d".into(),
        })
        .then_error(field(FieldError::Empty { field: "action" }));
    given::<Ticket>([created()])
        .when(A::RecordOther {
            action: "a".into(),
            description: "d".repeat(1_001),
        })
        .then_error(field(FieldError::TooLong {
            field: "description",
            max: limits::DESCRIPTION_MAX,
        }));
}

#[test]
fn apply_is_total_on_odd_sequences() {
    // Events without a creation, or after a merge, must still fold.
    let odd = vec![
        message(M2),
        E::Split {
            ticket_id: T,
            split_into: OTHER,
            message_ids: vec![M2, M3],
        },
        status(Status::Closed, Status::Pending),
        created(),
        created(),
    ];
    let state = crate::fold(Ticket::default(), &odd);
    assert_eq!(state.id, Some(T));
    assert_eq!(
        state.status,
        Status::New,
        "a second creation resets the state"
    );
}

#[test]
fn v1_ticket_created_is_upcast_to_normal_priority() {
    let mut payload = created().to_payload();
    payload.as_object_mut().unwrap().remove("priority");
    assert!(TicketEvent::decode("ticket.created", 2, &payload).is_err());
    assert_eq!(
        TicketEvent::decode("ticket.created", 1, &payload),
        Ok(created())
    );
}

#[test]
fn payload_keeps_pii_under_one_key() {
    let payload = created().to_payload();
    assert_eq!(payload["pii"]["subject"], serde_json::json!(SUBJECT));
    assert_eq!(payload["pii"]["data"]["subject"], "Printer on fire");
    assert!(payload.get("type").is_none());
    let erased = crate::pii::erase(&payload);
    let decoded = TicketEvent::decode("ticket.created", 2, &erased).unwrap();
    let E::Created { pii, .. } = decoded else {
        panic!("wrong variant")
    };
    assert_eq!(pii.data.body, crate::pii::ERASED);
}

#[test]
fn a_message_is_a_reply_through_the_tickets_channel_unless_it_says_otherwise() {
    let mut by_chat = created();
    if let E::Created { channel, .. } = &mut by_chat {
        *channel = Channel::Chat;
    }
    let reply = TicketAction::message(M2, "hi".into(), false, None, None).unwrap();
    given::<Ticket>([by_chat])
        .when(reply)
        .then_events(vec![E::MessageAdded {
            ticket_id: T,
            message_id: M2,
            direction: Direction::Outbound,
            channel: Channel::Chat,
            pii: body_pii("hi"),
        }]);
}

#[test]
fn an_internal_message_with_a_channel_or_direction_is_refused() {
    let refused = |channel: Option<&str>, direction: Option<&str>| {
        TicketAction::message(
            M2,
            "hi".into(),
            true,
            channel.map(Into::into),
            direction.map(Into::into),
        )
        .unwrap_err()
    };
    let error = refused(Some("email"), Some("inbound"));
    assert_eq!(
        (error.code(), error.field()),
        ("not_public", Some("channel"))
    );
    let error = refused(None, Some("inbound"));
    assert_eq!(error.field(), Some("direction"));
    assert_eq!(
        TicketAction::message(M2, "hi".into(), true, None, None).unwrap(),
        A::AddInternalMessage {
            message_id: M2,
            body: "hi".into()
        }
    );
}

#[test]
fn a_due_date_is_set_changed_and_cleared_with_its_previous_value() {
    let friday = "2026-12-11T17:00:00Z".parse().unwrap();
    let monday = "2026-12-14T09:00:00Z".parse().unwrap();
    let set = E::DueDateChanged {
        ticket_id: T,
        from: None,
        to: Some(friday),
    };
    let state = given::<Ticket>([created()])
        .when(A::SetDueDate {
            due_at: Some(friday),
        })
        .then_events(vec![set.clone()]);
    assert_eq!(state.due_at, Some(friday));
    given::<Ticket>([created(), set.clone()])
        .when(A::SetDueDate {
            due_at: Some(monday),
        })
        .then_events(vec![E::DueDateChanged {
            ticket_id: T,
            from: Some(friday),
            to: Some(monday),
        }]);
    let cleared = given::<Ticket>([created(), set])
        .when(A::SetDueDate { due_at: None })
        .then_events(vec![E::DueDateChanged {
            ticket_id: T,
            from: Some(friday),
            to: None,
        }]);
    assert_eq!(cleared.due_at, None);
}

#[test]
fn a_due_date_that_changes_nothing_or_on_a_closed_ticket_is_refused() {
    given::<Ticket>([created()])
        .when(A::SetDueDate { due_at: None })
        .then_error(TicketError::NoChange { field: "due_at" });
    given::<Ticket>(closed())
        .when(A::SetDueDate {
            due_at: Some("2026-12-11T17:00:00Z".parse().unwrap()),
        })
        .then_error(TicketError::Closed);
}

#[test]
fn a_due_date_reads_in_the_audit_with_before_and_after() {
    let audit = E::DueDateChanged {
        ticket_id: T,
        from: None,
        to: Some("2026-12-11T17:00:00Z".parse().unwrap()),
    }
    .audit();
    assert_eq!(audit.action.label, "Ticket – Due date");
    assert_eq!(audit.description, "Due date set to 2026-12-11T17:00:00Z");
    assert_eq!(
        audit.changes_json(),
        serde_json::json!([{"field": "due_at", "before": null, "after": "2026-12-11T17:00:00Z"}])
    );
}
