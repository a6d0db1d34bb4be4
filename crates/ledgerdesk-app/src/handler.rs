//! The generic command handler: load → fold → decide → append with the
//! loaded version → on conflict reload and retry.
//!
//! Aggregates decide on the state they were folded from, so an append is only
//! valid if nobody wrote to the stream in between; the store enforces that
//! with the expected version and we answer a conflict by deciding again on
//! fresh state.

use std::time::Duration;

use ledgerdesk_domain::{fold, Aggregate, DomainEvent};
use ledgerdesk_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError, StreamAppend,
    StreamRange,
};

use crate::error::{AppError, DomainRefusal};

/// How many times a command is decided and appended before giving up with
/// [`AppError::Conflict`].
pub const MAX_ATTEMPTS: u32 = 5;

/// A stream folded into its aggregate.
#[derive(Debug, Clone)]
pub struct Loaded<A: Aggregate> {
    /// The state.
    pub state: A,
    /// The events, decoded, in version order.
    pub events: Vec<A::Event>,
    /// The stream's version (0 = no stream).
    pub version: u64,
    /// The global position of the stream's last event read (0 = none).
    pub position: u64,
}

/// Where a command's events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The stream's version after the command.
    pub version: u64,
    /// The global position of the command's last event (or of the stream's
    /// last event when the command appended nothing).
    pub position: u64,
}

/// Reads the whole stream `stream_id` and folds it: the state and its version
/// (0 and the default state for a stream that does not exist).
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<(A, u64), AppError> {
    let loaded = load_range::<A>(store, stream_id, StreamRange::all()).await?;
    Ok((loaded.state, loaded.version))
}

/// Reads part of a stream (e.g. up to a past position or time) and folds it.
pub async fn load_range<A: Aggregate>(
    store: &dyn EventStore,
    stream_id: &str,
    range: StreamRange,
) -> Result<Loaded<A>, AppError> {
    let records = store.read_stream(stream_id, range).await?;
    let events = records
        .iter()
        .map(decode::<A>)
        .collect::<Result<Vec<_>, _>>()?;
    let last = records.last();
    Ok(Loaded {
        state: fold(A::default(), &events),
        events,
        version: last.map_or(0, |r| r.version),
        position: last.map_or(0, |r| r.position),
    })
}

/// A stored event that does not decode is corruption (or a newer writer),
/// never the client's fault.
fn decode<A: Aggregate>(record: &RecordedEvent) -> Result<A::Event, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        position: i64::try_from(record.position).unwrap_or(i64::MAX),
        reason,
    };
    let payload = record.payload_json().map_err(|e| corrupt(e.to_string()))?;
    A::Event::decode(&record.event_type, record.schema_version, &payload)
        .map_err(|e| corrupt(e.to_string()))
}

/// Runs one command on one stream.
///
/// Loads the stream, builds the command from the state with `build` (which
/// may refuse, e.g. with [`AppError::NotFound`]), checks `expected_version`
/// when given ([`AppError::PreconditionFailed`]), decides, and appends with
/// the loaded version. On a version conflict it starts over, at most
/// [`MAX_ATTEMPTS`] times. A decision without events appends nothing.
pub async fn execute<A, F>(
    store: &dyn EventStore,
    stream_id: &str,
    expected_version: Option<u64>,
    metadata: &Metadata,
    mut build: F,
) -> Result<Committed, AppError>
where
    A: Aggregate,
    DomainRefusal: From<A::Error>,
    F: FnMut(&A) -> Result<A::Command, AppError>,
{
    for attempt in 1..=MAX_ATTEMPTS {
        let loaded = load_range::<A>(store, stream_id, StreamRange::all()).await?;
        let command = build(&loaded.state)?;
        check_precondition(expected_version, loaded.version)?;
        let events = loaded.state.decide(&command).map_err(AppError::rejected)?;
        if events.is_empty() {
            return Ok(Committed {
                version: loaded.version,
                position: loaded.position,
            });
        }
        let append = stream_append(stream_id, loaded.version, &events, metadata);
        match store.append_many(vec![append]).await {
            Ok(done) => {
                let done = done
                    .last()
                    .ok_or_else(|| StoreError::Invalid("append returned no result".to_string()))?;
                return Ok(Committed {
                    version: done.version,
                    position: done.position,
                });
            }
            Err(StoreError::Conflict { .. }) => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Conflict {
        stream_id: stream_id.to_string(),
        attempts: MAX_ATTEMPTS,
    })
}

/// `If-Match`: the client's version must be the stream's.
pub(crate) fn check_precondition(expected: Option<u64>, current: u64) -> Result<(), AppError> {
    match expected {
        Some(v) if v != current => Err(AppError::PreconditionFailed { current }),
        _ => Ok(()),
    }
}

/// The append of `events` to a stream that was at `version` when decided.
pub(crate) fn stream_append<E: DomainEvent>(
    stream_id: &str,
    version: u64,
    events: &[E],
    metadata: &Metadata,
) -> StreamAppend {
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    let events = events
        .iter()
        .map(|e| {
            NewEvent::new(
                e.event_type(),
                e.schema_version(),
                e.to_payload(),
                metadata.clone(),
            )
        })
        .collect();
    StreamAppend::new(stream_id, expected, events)
}

/// Decides several commands in a row on one state, folding each decision in
/// before the next: for handlers that write more than one event to a stream.
pub(crate) fn decide_all<A>(state: &A, commands: &[A::Command]) -> Result<Vec<A::Event>, AppError>
where
    A: Aggregate,
    DomainRefusal: From<A::Error>,
{
    let mut state = state.clone();
    let mut all = Vec::new();
    for command in commands {
        let events = state.decide(command).map_err(AppError::rejected)?;
        state = fold(state, &events);
        all.extend(events);
    }
    Ok(all)
}

/// Waits a random while before the next attempt, longer each time, so
/// writers that just collided do not collide again in lockstep.
pub(crate) async fn backoff(attempt: u32) {
    if attempt >= MAX_ATTEMPTS {
        return;
    }
    let ceiling_ms = 8u128 << attempt.min(6);
    // A v4 UUID is 122 random bits: enough jitter without another crate.
    let jitter = uuid::Uuid::new_v4().as_u128() % ceiling_ms;
    tokio::time::sleep(Duration::from_millis(jitter as u64 + 1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerdesk_domain::{Department, DepartmentCommand};

    #[test]
    fn a_precondition_only_binds_when_given() {
        assert!(check_precondition(None, 7).is_ok());
        assert!(check_precondition(Some(7), 7).is_ok());
        assert!(matches!(
            check_precondition(Some(6), 7),
            Err(AppError::PreconditionFailed { current: 7 })
        ));
    }

    #[test]
    fn appends_expect_the_loaded_version() {
        let events = decide_all(
            &Department::default(),
            &[
                DepartmentCommand::Create {
                    department_id: uuid::Uuid::nil(),
                    name: "Support".into(),
                },
                DepartmentCommand::Rename {
                    name: "Help".into(),
                },
            ],
        )
        .unwrap();
        let meta = Metadata::system();
        let fresh = stream_append("department-x", 0, &events, &meta);
        assert_eq!(fresh.expected, ExpectedVersion::NoStream);
        assert_eq!(fresh.stream_type, "department");
        assert_eq!(
            fresh
                .events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
            ["department.created", "department.renamed"]
        );
        let later = stream_append("department-x", 4, &events, &meta);
        assert_eq!(later.expected, ExpectedVersion::Exact(4));
    }

    #[test]
    fn decide_all_stops_at_the_first_refusal() {
        let refused = decide_all(
            &Department::default(),
            &[DepartmentCommand::Rename { name: "x".into() }],
        );
        assert!(matches!(
            refused,
            Err(AppError::Rejected(DomainRefusal {
                code: "department_not_found",
                ..
            }))
        ));
    }
}
