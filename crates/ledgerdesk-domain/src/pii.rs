//! Personal data, kept apart so it can be encrypted or erased per data subject.
//!
//! Rule for every event payload: all personal data sits under the single
//! top-level key `"pii"`, shaped `{"subject": "<uuid>", "data": {..}}`, and
//! `data` holds only strings (or nulls). An erasure layer may therefore
//! replace every string inside `data` with `"[erased]"` and the event still
//! decodes; nothing outside `"pii"` is personal.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The JSON key under which an event payload keeps its personal data.
pub const PII_KEY: &str = "pii";

/// What an erasure layer writes in place of each personal string.
pub const ERASED: &str = "[erased]";

/// Personal data `data` belonging to the data subject `subject`.
///
/// `T` has only `String` / `Option<String>` fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pii<T> {
    /// The data subject (for ticket data: the ticket's requester).
    pub subject: Uuid,
    /// The personal fields.
    pub data: T,
}

impl<T> Pii<T> {
    /// Wraps `data` as belonging to `subject`.
    pub fn new(subject: Uuid, data: T) -> Self {
        Pii { subject, data }
    }
}

/// Replaces every string under `pii.data` of a payload with [`ERASED`]:
/// what crypto-shredding looks like to a reader. Used by tests, and by anyone
/// who needs to show an erased event.
pub fn erase(payload: &serde_json::Value) -> serde_json::Value {
    let mut out = payload.clone();
    if let Some(serde_json::Value::Object(data)) =
        out.get_mut(PII_KEY).and_then(|pii| pii.get_mut("data"))
    {
        for value in data.values_mut() {
            if value.is_string() {
                *value = serde_json::Value::String(ERASED.to_string());
            }
        }
    }
    out
}
