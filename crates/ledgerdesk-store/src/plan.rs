//! The group-commit planner: given the log's head and the current versions of
//! the streams involved, decide which waiting appends go in, and give their
//! events positions, times and hashes. Pure, so both backends share it and it
//! is tested without a database.

use std::collections::HashMap;

use crate::event::{Appended, StreamAppend};
use crate::hash::HashedFields;
use crate::StoreError;

/// Appends larger than this are refused: one request should not hold the
/// writer for long, and a single transaction should stay modest.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// One event row, ready to insert.
#[derive(Debug, Clone)]
pub struct Row {
    pub position: i64,
    pub stream_id: String,
    pub stream_type: String,
    pub version: i64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
    pub metadata: String,
    pub recorded_at_us: i64,
    pub hash: String,
}

/// The log's last event, as the writer sees it inside its lock.
#[derive(Debug, Clone)]
pub struct Tip {
    pub position: u64,
    pub hash: String,
    pub recorded_at_us: i64,
}

/// The result of planning one group.
#[derive(Debug)]
pub struct Plan {
    pub rows: Vec<Row>,
    /// One outcome per request, in the order given.
    pub outcomes: Vec<Result<Vec<Appended>, StoreError>>,
    pub tip: Tip,
}

/// Every stream id named by the requests, for the version look-up.
pub fn streams_of<'a>(requests: impl IntoIterator<Item = &'a [StreamAppend]>) -> Vec<String> {
    let mut ids: Vec<String> = requests
        .into_iter()
        .flatten()
        .map(|a| a.stream_id.clone())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Plan a group. Each request is all-or-nothing on its own; a refused request
/// does not disturb the others in the group.
pub fn plan(
    requests: &[&[StreamAppend]],
    tip: Tip,
    versions: &HashMap<String, u64>,
    now_us: i64,
) -> Plan {
    // Time never runs backwards along the log, so "as of time T" and
    // "as of position P" always agree, even if the clock steps back.
    let recorded_at_us = now_us.max(tip.recorded_at_us);
    let mut versions: HashMap<&str, u64> = versions.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut tip = tip;

    for request in requests {
        if let Err(e) = validate(request) {
            outcomes.push(Err(e));
            continue;
        }
        // Check every stream first (a request may name a stream twice).
        let mut local: HashMap<&str, u64> = HashMap::new();
        let mut refused = None;
        for append in request.iter() {
            let current = local
                .get(append.stream_id.as_str())
                .or_else(|| versions.get(append.stream_id.as_str()))
                .copied()
                .unwrap_or(0);
            if !append.expected.matches(current) {
                refused = Some(StoreError::Conflict {
                    stream_id: append.stream_id.clone(),
                    expected: append.expected,
                    actual: current,
                });
                break;
            }
            local.insert(&append.stream_id, current + append.events.len() as u64);
        }
        if let Some(e) = refused {
            outcomes.push(Err(e));
            continue;
        }

        let mut appended = Vec::with_capacity(request.len());
        for append in request.iter() {
            let mut version = versions
                .get(append.stream_id.as_str())
                .copied()
                .unwrap_or(0);
            for event in &append.events {
                version += 1;
                let position = tip.position + 1;
                let event_id = event.event_id.hyphenated().to_string();
                // The same compact text as `Value`'s `Display`, written
                // straight into a buffer instead of through a formatter.
                let payload = serde_json::to_string(&event.payload)
                    .unwrap_or_else(|_| event.payload.to_string());
                // Serialising a plain struct of strings cannot fail.
                let metadata =
                    serde_json::to_string(&event.metadata).unwrap_or_else(|_| "{}".into());
                let hash = HashedFields {
                    position,
                    stream_id: &append.stream_id,
                    stream_type: &append.stream_type,
                    version,
                    event_id: &event_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &payload,
                    metadata: &metadata,
                    recorded_at_us,
                }
                .chain_hash(&tip.hash);
                rows.push(Row {
                    position: position as i64,
                    stream_id: append.stream_id.clone(),
                    stream_type: append.stream_type.clone(),
                    version: version as i64,
                    event_id,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version as i32,
                    payload,
                    metadata,
                    recorded_at_us,
                    hash: hash.clone(),
                });
                tip = Tip {
                    position,
                    hash,
                    recorded_at_us,
                };
            }
            versions.insert(&append.stream_id, version);
            appended.push(Appended {
                version,
                position: tip.position,
            });
        }
        outcomes.push(Ok(appended));
    }
    Plan {
        rows,
        outcomes,
        tip,
    }
}

fn validate(request: &[StreamAppend]) -> Result<(), StoreError> {
    let total: usize = request.iter().map(|a| a.events.len()).sum();
    if total > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::Invalid(format!(
            "{total} events in one append; the limit is {MAX_EVENTS_PER_APPEND}"
        )));
    }
    for a in request {
        if a.stream_id.is_empty() || a.stream_id.len() > 200 {
            return Err(StoreError::Invalid(
                "stream id must be 1 to 200 characters".into(),
            ));
        }
        if a.stream_type.is_empty() {
            return Err(StoreError::Invalid(format!(
                "stream {} has no stream type",
                a.stream_id
            )));
        }
        if a.events.iter().any(|e| e.event_type.is_empty()) {
            return Err(StoreError::Invalid("event type must not be empty".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExpectedVersion, Metadata, NewEvent};
    use crate::hash::GENESIS_HASH;

    fn ev() -> NewEvent {
        NewEvent::new(
            "t.happened",
            1,
            serde_json::json!({"n": 1}),
            Metadata::system(),
        )
    }
    fn genesis() -> Tip {
        Tip {
            position: 0,
            hash: GENESIS_HASH.into(),
            recorded_at_us: 0,
        }
    }

    #[test]
    fn a_conflicting_request_writes_nothing_and_spares_the_others() {
        let a = [StreamAppend::new(
            "t-a",
            ExpectedVersion::NoStream,
            vec![ev(), ev()],
        )];
        let b = [StreamAppend::new(
            "t-b",
            ExpectedVersion::Exact(3),
            vec![ev()],
        )];
        let c = [StreamAppend::new(
            "t-a",
            ExpectedVersion::Exact(2),
            vec![ev()],
        )];
        let p = plan(&[&a, &b, &c], genesis(), &HashMap::new(), 10);
        assert_eq!(p.rows.len(), 3);
        assert_eq!(
            p.outcomes[0].as_ref().unwrap(),
            &[Appended {
                version: 2,
                position: 2
            }]
        );
        assert!(matches!(
            p.outcomes[1],
            Err(StoreError::Conflict { actual: 0, .. })
        ));
        assert_eq!(
            p.outcomes[2].as_ref().unwrap(),
            &[Appended {
                version: 3,
                position: 3
            }]
        );
        let positions: Vec<i64> = p.rows.iter().map(|r| r.position).collect();
        assert_eq!(positions, [1, 2, 3]);
    }

    #[test]
    fn a_multi_stream_request_is_all_or_nothing() {
        let r = [
            StreamAppend::new("t-a", ExpectedVersion::NoStream, vec![ev()]),
            StreamAppend::new("t-b", ExpectedVersion::Exact(1), vec![ev()]),
        ];
        let p = plan(&[&r], genesis(), &HashMap::new(), 10);
        assert!(p.rows.is_empty());
        assert!(p.outcomes[0].is_err());
    }

    #[test]
    fn hashes_chain_and_time_never_goes_back() {
        let r = [StreamAppend::new(
            "t-a",
            ExpectedVersion::Any,
            vec![ev(), ev()],
        )];
        let tip = Tip {
            position: 7,
            hash: "ab".repeat(32),
            recorded_at_us: 1_000,
        };
        let p = plan(&[&r], tip, &HashMap::from([("t-a".to_string(), 4)]), 500);
        assert_eq!(p.rows[0].position, 8);
        assert_eq!(p.rows[0].version, 5);
        assert!(p.rows.iter().all(|r| r.recorded_at_us == 1_000));
        assert_eq!(p.tip.hash, p.rows[1].hash);
        assert_ne!(p.rows[0].hash, p.rows[1].hash);
    }

    #[test]
    fn refuses_empty_stream_ids_and_oversized_appends() {
        let r = [StreamAppend::new("", ExpectedVersion::Any, vec![ev()])];
        let big = [StreamAppend::new(
            "t-a",
            ExpectedVersion::Any,
            vec![ev(); MAX_EVENTS_PER_APPEND + 1],
        )];
        let p = plan(&[&r, &big], genesis(), &HashMap::new(), 0);
        assert!(p.rows.is_empty());
        assert!(p
            .outcomes
            .iter()
            .all(|o| matches!(o, Err(StoreError::Invalid(_)))));
    }
}
