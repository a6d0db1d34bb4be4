//! The settings aggregate: account-wide key/value settings with JSON values.
//! One stream for the whole account, [`STREAM_ID`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::fields::{self, limits, FieldError};
use crate::{codec, Aggregate, DecodeError, DomainEvent};

/// The single settings stream (settings have no id of their own).
pub const STREAM_ID: &str = "settings-account";

/// What can be asked of the settings.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingsCommand {
    /// Set `key` to `value`; `null` unsets it.
    Change {
        /// Setting key: lowercase letters, digits, `.`, `_`, `-`.
        key: String,
        /// New value.
        value: Value,
    },
}

/// Something that happened to the settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SettingsEvent {
    /// `settings.changed`: `null` stands for "not set", before or after.
    #[serde(rename = "settings.changed")]
    Changed {
        /// Key.
        key: String,
        /// Value before.
        old: Value,
        /// Value after.
        new: Value,
    },
}

/// Settings event types and their current schema versions.
pub const EVENT_TYPES: &[(&str, u32)] = &[("settings.changed", 1)];

impl DomainEvent for SettingsEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SettingsEvent::Changed { .. } => "settings.changed",
        }
    }

    fn schema_version(&self) -> u32 {
        codec::current_version(EVENT_TYPES, self.event_type()).unwrap_or(1)
    }

    fn to_payload(&self) -> Value {
        codec::to_payload(self)
    }

    fn decode(event_type: &str, schema_version: u32, payload: &Value) -> Result<Self, DecodeError> {
        codec::decode(EVENT_TYPES, event_type, schema_version, payload)
    }
}

/// Why a settings command was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// The key is empty, too long or malformed, or the value too large.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The value is already set.
    #[error("value is unchanged")]
    NoChange,
}

impl SettingsError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::Field(e) => e.code(),
            SettingsError::NoChange => "no_change",
        }
    }

    /// The offending command field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            SettingsError::Field(e) => Some(e.field()),
            SettingsError::NoChange => Some("value"),
        }
    }
}

/// The account's settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Set values; unset keys are absent.
    pub values: BTreeMap<String, Value>,
}

impl Aggregate for Settings {
    type Event = SettingsEvent;
    type Command = SettingsCommand;
    type Error = SettingsError;
    const STREAM_TYPE: &'static str = "settings";

    fn apply(mut self, event: &SettingsEvent) -> Self {
        match event {
            SettingsEvent::Changed { key, new, .. } => {
                if new.is_null() {
                    self.values.remove(key);
                } else {
                    self.values.insert(key.clone(), new.clone());
                }
            }
        }
        self
    }

    fn decide(&self, command: &SettingsCommand) -> Result<Vec<SettingsEvent>, SettingsError> {
        match command {
            SettingsCommand::Change { key, value } => {
                let key = fields::line("key", key, limits::SETTING_KEY_MAX)?;
                let key_ok = key.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                });
                if !key_ok {
                    return Err(FieldError::Malformed {
                        field: "key",
                        problem: "may only hold lowercase letters, digits, '.', '_' and '-'",
                    }
                    .into());
                }
                fields::plain_json("value", value)?;
                if value.to_string().len() > limits::SETTING_VALUE_MAX_BYTES {
                    return Err(FieldError::TooLong {
                        field: "value",
                        max: limits::SETTING_VALUE_MAX_BYTES,
                    }
                    .into());
                }
                let old = self.values.get(&key).cloned().unwrap_or(Value::Null);
                if old == *value {
                    return Err(SettingsError::NoChange);
                }
                Ok(vec![SettingsEvent::Changed {
                    key,
                    old,
                    new: value.clone(),
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use serde_json::json;

    fn change(key: &str, value: Value) -> SettingsCommand {
        SettingsCommand::Change {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn change_carries_old_and_new_values() {
        let state = given::<Settings>([])
            .when(change("sla.hours", json!(8)))
            .then_events(vec![SettingsEvent::Changed {
                key: "sla.hours".into(),
                old: Value::Null,
                new: json!(8),
            }]);
        assert_eq!(state.values["sla.hours"], json!(8));
        let set = SettingsEvent::Changed {
            key: "sla.hours".into(),
            old: Value::Null,
            new: json!(8),
        };
        let state = given::<Settings>([set.clone()])
            .when(change("sla.hours", Value::Null))
            .then_events(vec![SettingsEvent::Changed {
                key: "sla.hours".into(),
                old: json!(8),
                new: Value::Null,
            }]);
        assert!(state.values.is_empty(), "null unsets");
        given::<Settings>([set])
            .when(change("sla.hours", json!(8)))
            .then_error(SettingsError::NoChange);
    }

    #[test]
    fn keys_and_values_are_validated() {
        given::<Settings>([])
            .when(change(" ", json!(1)))
            .then_error(SettingsError::Field(FieldError::Empty { field: "key" }));
        let error = Settings::default()
            .decide(&change("Bad Key", json!(1)))
            .unwrap_err();
        assert_eq!(
            (error.code(), error.field()),
            ("field_malformed", Some("key"))
        );
        let error = Settings::default()
            .decide(&change("big", json!("x".repeat(20_000))))
            .unwrap_err();
        assert_eq!(error.field(), Some("value"));
    }
}
