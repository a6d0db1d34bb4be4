//! Turning events into payloads and back.
//!
//! Each aggregate's event enum is a serde internally tagged enum whose tag is
//! the event type. The tag is stripped from the stored payload (the event
//! store keeps the type in its envelope) and put back before decoding, so a
//! payload is just the event's fields.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::DecodeError;

const TAG: &str = "type";

pub(crate) fn to_payload<E: Serialize>(event: &E) -> Value {
    // Events are plain data with string keys: serialisation cannot fail.
    let mut value = serde_json::to_value(event).expect("domain events always serialise");
    if let Value::Object(map) = &mut value {
        map.remove(TAG);
    }
    value
}

/// The current schema version of `event_type` in `types`.
pub(crate) fn current_version(types: &[(&str, u32)], event_type: &str) -> Option<u32> {
    types
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, version)| *version)
}

/// Checks the type and version against `types` and decodes an already
/// upcast payload.
pub(crate) fn decode<E: DeserializeOwned>(
    types: &[(&str, u32)],
    event_type: &str,
    schema_version: u32,
    payload: &Value,
) -> Result<E, DecodeError> {
    let fail = |reason: String| DecodeError {
        event_type: event_type.to_string(),
        schema_version,
        reason,
    };
    let current =
        current_version(types, event_type).ok_or_else(|| fail("unknown event type".into()))?;
    if schema_version == 0 || schema_version > current {
        return Err(fail(format!(
            "unsupported schema version (known: 1 to {current})"
        )));
    }
    let Value::Object(map) = payload else {
        return Err(fail("payload is not a JSON object".into()));
    };
    let mut map = map.clone();
    map.insert(TAG.to_string(), Value::String(event_type.to_string()));
    serde_json::from_value(Value::Object(map)).map_err(|e| fail(e.to_string()))
}
