//! Stored events of old schema versions must keep decoding.

use ledgerdesk_domain::ticket::{Priority, TicketEvent};
use ledgerdesk_domain::{AnyEvent, DomainEvent};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn ticket_created_v1_decodes_with_normal_priority() {
    let stored = fixture("ticket_created_v1.json");
    assert_eq!(stored["schema_version"], 1);
    assert!(
        stored["payload"].get("priority").is_none(),
        "fixture must stay v1"
    );
    let event = AnyEvent::decode(
        stored["stream_type"].as_str().unwrap(),
        stored["event_type"].as_str().unwrap(),
        1,
        &stored["payload"],
    )
    .unwrap();
    let AnyEvent::Ticket(TicketEvent::Created {
        priority,
        tags,
        pii,
        ..
    }) = &event
    else {
        panic!("expected ticket.created, got {event:?}");
    };
    assert_eq!(*priority, Priority::Normal);
    assert_eq!(tags, &["billing"]);
    assert_eq!(pii.data.requester_name, "Ada Lovelace");
    // Re-encoding writes the current version, with the priority made explicit.
    assert_eq!(event.schema_version(), 2);
    assert_eq!(event.to_payload()["priority"], "normal");
    let AnyEvent::Ticket(ticket_event) = &event else {
        unreachable!()
    };
    assert_eq!(
        TicketEvent::decode("ticket.created", 2, &ticket_event.to_payload()).as_ref(),
        Ok(ticket_event)
    );
}

#[test]
fn v1_payload_without_priority_is_not_a_valid_v2() {
    let stored = fixture("ticket_created_v1.json");
    let error = TicketEvent::decode("ticket.created", 2, &stored["payload"]).unwrap_err();
    assert!(error.reason.contains("priority"), "{error}");
}
