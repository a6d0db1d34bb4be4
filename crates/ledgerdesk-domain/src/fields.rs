//! Field validation shared by every aggregate: the limits, the refusals a
//! malformed field produces, and the small string enums commands parse.
//!
//! Commands carry client input verbatim (enumerations as strings, text as
//! given), so that `decide` is the one place that refuses bad input and every
//! refusal names the field it concerns.

use thiserror::Error;

/// Length and count limits, in Unicode scalar values (`char`s) for text.
pub mod limits {
    /// Ticket subject.
    pub const SUBJECT_MAX: usize = 255;
    /// Public, internal and chat message bodies.
    pub const BODY_MAX: usize = 65_536;
    /// Ticket notes.
    pub const NOTE_MAX: usize = 65_536;
    /// One tag, after normalisation.
    pub const TAG_MAX: usize = 50;
    /// Tags on one ticket.
    pub const TAGS_MAX: usize = 50;
    /// Names: requester, user, department.
    pub const NAME_MAX: usize = 200;
    /// Email addresses (RFC 5321 path limit).
    pub const EMAIL_MAX: usize = 254;
    /// Attached file names.
    pub const FILE_NAME_MAX: usize = 255;
    /// Attached file content types.
    pub const CONTENT_TYPE_MAX: usize = 255;
    /// Rating comments.
    pub const COMMENT_MAX: usize = 2_000;
    /// Login failure reasons.
    pub const REASON_MAX: usize = 200;
    /// Action names of "other" and general actions.
    pub const ACTION_NAME_MAX: usize = 100;
    /// Descriptions of "other" and general actions.
    pub const DESCRIPTION_MAX: usize = 1_000;
    /// Audit queries recorded with an audit search or export.
    pub const AUDIT_QUERY_MAX: usize = 4_000;
    /// Free text searched for (`q` of the ticket list and the audit log):
    /// longer than any searchable field's text that a match could need,
    /// and short enough for every backend's pattern limits (SQLite refuses
    /// a LIKE pattern over 50,000 bytes).
    pub const SEARCH_TEXT_MAX: usize = 200;
    /// System message text.
    pub const SYSTEM_TEXT_MAX: usize = 2_000;
    /// Setting keys.
    pub const SETTING_KEY_MAX: usize = 100;
    /// Setting values, in bytes of compact JSON.
    pub const SETTING_VALUE_MAX_BYTES: usize = 16_384;
    /// Messages moved by one split.
    pub const SPLIT_MESSAGES_MAX: usize = 1_000;
}

/// A field of a command that cannot be accepted as given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FieldError {
    /// Empty, or only whitespace.
    #[error("{field} must not be empty")]
    Empty {
        /// The offending field.
        field: &'static str,
    },
    /// Longer than its limit.
    #[error("{field} is longer than {max} characters")]
    TooLong {
        /// The offending field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// A list with more entries than its limit.
    #[error("{field} has more than {max} entries")]
    TooMany {
        /// The offending field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// Not one of the values the field accepts.
    #[error("unknown {field} `{value}`, expected one of: {}", expected.join(", "))]
    Unknown {
        /// The offending field.
        field: &'static str,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static [&'static str],
    },
    /// Holds a character no text field accepts (see [`is_refused_char`]).
    #[error("{field} contains a control character (only tab, line feed and carriage return are allowed)")]
    ControlCharacter {
        /// The offending field.
        field: &'static str,
    },
    /// Present but malformed.
    #[error("{field} {problem}")]
    Malformed {
        /// The offending field.
        field: &'static str,
        /// What is wrong, as the end of a sentence starting with the field.
        problem: &'static str,
    },
}

impl FieldError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            FieldError::Empty { .. } => "field_empty",
            FieldError::TooLong { .. } => "field_too_long",
            FieldError::TooMany { .. } => "too_many",
            FieldError::Unknown { .. } => "unknown_value",
            FieldError::ControlCharacter { .. } => CONTROL_CHARACTER,
            FieldError::Malformed { .. } => "field_malformed",
        }
    }

    /// The offending field.
    pub fn field(&self) -> &'static str {
        match self {
            FieldError::Empty { field }
            | FieldError::TooLong { field, .. }
            | FieldError::TooMany { field, .. }
            | FieldError::Unknown { field, .. }
            | FieldError::ControlCharacter { field }
            | FieldError::Malformed { field, .. } => field,
        }
    }
}

/// The code of [`FieldError::ControlCharacter`]: malformed input rather than
/// a business refusal, so the API answers it 400 like its own edge check.
pub const CONTROL_CHARACTER: &str = "control_character";

/// Whether no text field accepts `c`: the C0 controls except tab, line feed
/// and carriage return, and DEL. NUL cannot be stored in a PostgreSQL
/// `TEXT` at all, and the others have no meaning in a helpdesk's text but
/// can hide content from a reader or break exports; C1 controls and
/// everything above are kept (lone surrogates cannot occur in a Rust
/// string, so the JSON parser already refuses them).
pub fn is_refused_char(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7f}'
}

/// Refuses `value` when it holds a character of [`is_refused_char`].
pub fn plain(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(is_refused_char) {
        return Err(FieldError::ControlCharacter { field });
    }
    Ok(())
}

/// Refuses every string inside a JSON value (keys included) that
/// [`plain`] refuses: settings values are free-form JSON.
pub fn plain_json(field: &'static str, value: &serde_json::Value) -> Result<(), FieldError> {
    use serde_json::Value;
    match value {
        Value::String(s) => plain(field, s),
        Value::Array(items) => items.iter().try_for_each(|v| plain_json(field, v)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| plain(field, k).and_then(|()| plain_json(field, v))),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Refuses text that is empty after trimming or longer than `max` chars and
/// returns it trimmed: for one-line fields (subjects, names).
pub fn line(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    // Checked before trimming: trim() would quietly drop a vertical tab or
    // form feed at either end, and the rule should not depend on where a
    // character sits.
    plain(field, value)?;
    let trimmed = value.trim();
    check_len(field, trimmed, max)?;
    Ok(trimmed.to_string())
}

/// Like [`line()`] but keeps the text as given: bodies keep their layout.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    plain(field, value)?;
    check_len(field, value.trim(), max)?;
    if value.chars().count() > max {
        return Err(FieldError::TooLong { field, max });
    }
    Ok(value.to_string())
}

/// Optional text: `None` or blank becomes `None`.
pub fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, v, max).map(Some),
        _ => Ok(None),
    }
}

fn check_len(field: &'static str, trimmed: &str, max: usize) -> Result<(), FieldError> {
    plain(field, trimmed)?;
    if trimmed.is_empty() {
        return Err(FieldError::Empty { field });
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::TooLong { field, max });
    }
    Ok(())
}

/// A plausibility check, not RFC 5322: one `@`, a non-empty local part, a
/// dotted domain, no whitespace. Delivery is the only real validation.
pub fn email(field: &'static str, value: &str) -> Result<String, FieldError> {
    let value = line(field, value, limits::EMAIL_MAX)?;
    let malformed = FieldError::Malformed {
        field,
        problem: "must look like an email address",
    };
    let Some((local, domain)) = value.split_once('@') else {
        return Err(malformed);
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if local.is_empty() || !domain_ok || value.chars().any(char::is_whitespace) {
        return Err(malformed);
    }
    Ok(value)
}

/// A SHA-256 digest as 64 hex characters, normalised to lowercase.
pub fn sha256_hex(field: &'static str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FieldError::Malformed {
            field,
            problem: "must be 64 hexadecimal characters (a SHA-256 digest)",
        });
    }
    Ok(value.to_ascii_lowercase())
}

/// Declares a closed set of values with a wire name each, parsed from client
/// input with a refusal that names the field.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, field = $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every wire name, in declaration order.
            pub const WIRE_NAMES: &'static [&'static str] = &[$($wire),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire ),+
                }
            }

            /// Parses a wire name (surrounding whitespace ignored), refusing
            /// anything else with an error naming the field.
            pub fn parse(value: &str) -> Result<Self, $crate::fields::FieldError> {
                match value.trim() {
                    $( $wire => Ok($name::$variant), )+
                    _ => Err($crate::fields::FieldError::Unknown {
                        field: $field,
                        value: value.to_string(),
                        expected: Self::WIRE_NAMES,
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_trims_and_refuses_blank_and_long() {
        assert_eq!(line("subject", "  hi ", 5).unwrap(), "hi");
        assert_eq!(
            line("subject", " \n ", 5),
            Err(FieldError::Empty { field: "subject" })
        );
        assert_eq!(
            line("subject", "abcdef", 5),
            Err(FieldError::TooLong {
                field: "subject",
                max: 5
            })
        );
        // Counted in chars, not bytes.
        assert!(line("subject", "ééééé", 5).is_ok());
    }

    #[test]
    fn text_keeps_layout_but_counts_everything() {
        assert_eq!(text("body", " a\n", 3).unwrap(), " a\n");
        assert!(text("body", "  a  ", 3).is_err());
    }

    #[test]
    fn control_characters_are_refused_everywhere_but_layout() {
        for bad in ["a\u{0}b", "\u{1}", "x\u{1f}", "x\u{7f}", "\u{b}x", "x\u{c}"] {
            assert_eq!(
                line("subject", bad, 50),
                Err(FieldError::ControlCharacter { field: "subject" }),
                "{bad:?}"
            );
            assert!(text("body", bad, 50).is_err(), "{bad:?}");
            assert_eq!(
                email("to", &format!("a{bad}@b.co")).unwrap_err().code(),
                CONTROL_CHARACTER
            );
        }
        assert_eq!(text("body", "a\tb\r\nc", 50).unwrap(), "a\tb\r\nc");
        assert!(line("name", "Zoë \u{85} ok", 50).is_ok());
        let value = serde_json::json!({"a": ["ok", {"b\u{0}": 1}]});
        assert!(plain_json("value", &value).is_err());
        assert!(plain_json("value", &serde_json::json!({"a": ["ok\n"]})).is_ok());
    }

    #[test]
    fn email_plausibility() {
        for ok in ["a@b.co", " x.y@mail.example.org "] {
            assert!(email("email", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.", "a b@c.de", "a@b@c.de", "a@b..c",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        assert_eq!(email("to", "x").unwrap_err().field(), "to");
    }

    #[test]
    fn sha256_is_64_hex_lowercased() {
        let upper = "A".repeat(64);
        assert_eq!(sha256_hex("sha256", &upper).unwrap(), "a".repeat(64));
        assert!(sha256_hex("sha256", &"a".repeat(63)).is_err());
        assert!(sha256_hex("sha256", &"g".repeat(64)).is_err());
    }

    #[test]
    fn messages_name_the_field() {
        assert_eq!(
            FieldError::TooLong {
                field: "body",
                max: 65_536
            }
            .to_string(),
            "body is longer than 65536 characters"
        );
        let unknown = FieldError::Unknown {
            field: "channel",
            value: "fax".into(),
            expected: &["email", "chat"],
        };
        assert_eq!(
            unknown.to_string(),
            "unknown channel `fax`, expected one of: email, chat"
        );
        assert_eq!(unknown.code(), "unknown_value");
    }
}
