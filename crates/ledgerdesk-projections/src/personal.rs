//! The one place this crate reads personal data.
//!
//! Every personal field of an event sits under `payload.pii.data` (see
//! `ledgerdesk_domain::pii`). Projections never read it anywhere else, so a
//! later decryption or erasure step slots in here: it receives the payload
//! and can return decrypted, or `[erased]`, values.

use serde_json::{Map, Value};
use uuid::Uuid;

/// The personal part of one event payload.
#[derive(Debug, Clone, Copy)]
pub struct Personal<'a> {
    subject: Option<&'a str>,
    data: Option<&'a Map<String, Value>>,
}

/// The personal data of `payload` (empty when it has none).
pub fn personal(payload: &Value) -> Personal<'_> {
    let pii = payload.get(ledgerdesk_domain::pii::PII_KEY);
    Personal {
        subject: pii.and_then(|p| p.get("subject")).and_then(Value::as_str),
        data: pii.and_then(|p| p.get("data")).and_then(Value::as_object),
    }
}

impl Personal<'_> {
    /// The data subject.
    pub fn subject(&self) -> Option<Uuid> {
        self.subject.and_then(|s| s.parse().ok())
    }

    /// One personal string field.
    pub fn text(&self, field: &str) -> Option<String> {
        self.data
            .and_then(|d| d.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_pii_data_and_survives_erasure() {
        let payload = json!({"ticket_id": "x", "pii": {"subject": "00000000-0000-0000-0000-000000000001", "data": {"requester_name": "Ann"}}});
        let p = personal(&payload);
        assert_eq!(p.text("requester_name").as_deref(), Some("Ann"));
        assert_eq!(p.subject(), Some(Uuid::from_u128(1)));
        let erased = ledgerdesk_domain::pii::erase(&payload);
        assert_eq!(
            personal(&erased).text("requester_name").as_deref(),
            Some("[erased]")
        );
        assert_eq!(personal(&json!({})).text("requester_name"), None);
    }
}
