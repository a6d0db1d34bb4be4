//! The audit view of any event: its catalogue action, a one-line description
//! and the before/after values of what it changed.
//!
//! Everything here is derived from the event alone (events carry their
//! previous values for this reason) and never reads [`crate::Pii`]: audit
//! lines hold no personal data, so they survive erasure unchanged.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::catalogue::{self as c, Action};
use crate::department::DepartmentEvent;
use crate::settings::SettingsEvent;
use crate::user::{FieldChange, UserEvent};
use crate::AnyEvent;

/// One line of the audit view.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    /// The catalogue action.
    pub action: &'static Action,
    /// One readable line, free of personal data.
    pub description: String,
    /// The ticket concerned, if any.
    pub ticket_id: Option<Uuid>,
    /// What changed, field by field.
    pub changes: Vec<Change>,
}

/// One field's value before and after; `None` for "absent".
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Field name.
    pub field: String,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

impl Audit {
    /// The changes as the audit view and ticket history show them:
    /// `[{"field", "before", "after"}]`.
    pub fn changes_json(&self) -> Value {
        self.changes
            .iter()
            .map(|c| json!({"field": c.field, "before": c.before, "after": c.after}))
            .collect()
    }
}

impl Change {
    pub(crate) fn new(field: &str, before: Option<Value>, after: Option<Value>) -> Self {
        Change {
            field: field.to_string(),
            before,
            after,
        }
    }

    pub(crate) fn set(field: &str, after: impl Into<Value>) -> Self {
        Change::new(field, None, Some(after.into()))
    }

    pub(crate) fn from_to(field: &str, before: impl Into<Value>, after: impl Into<Value>) -> Self {
        Change::new(field, Some(before.into()), Some(after.into()))
    }
}

pub(crate) fn opt(id: Option<Uuid>) -> Option<Value> {
    id.map(|id| json!(id))
}

fn null_as_none(value: &Value) -> Option<Value> {
    (!value.is_null()).then(|| value.clone())
}

impl AnyEvent {
    /// The audit line of this event.
    pub fn audit(&self) -> Audit {
        match self {
            AnyEvent::Ticket(e) => e.audit(),
            AnyEvent::User(e) => user(e),
            AnyEvent::Department(e) => department(e),
            AnyEvent::Settings(e) => settings(e),
        }
    }
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Audit lines are single lines whatever the input.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn change<T: serde::Serialize>(field: &str, change: &Option<FieldChange<T>>) -> Option<Change> {
    change.as_ref().map(|c| {
        Change::new(
            field,
            null_as_none(&json!(c.before)),
            null_as_none(&json!(c.after)),
        )
    })
}

fn user(event: &UserEvent) -> Audit {
    use UserEvent as E;
    let mut ticket_id = None;
    let (action, description, changes): (&'static Action, String, Vec<Change>) = match event {
        E::Created {
            name,
            email,
            role,
            department,
            ..
        } => {
            let mut changes = vec![
                Change::set("name", name.as_str()),
                Change::set("email", email.as_str()),
                Change::set("role", role.as_str()),
            ];
            changes.extend(opt(*department).map(|d| Change::new("department", None, Some(d))));
            (
                &c::USER_CREATED,
                format!("User created with role {role}"),
                changes,
            )
        }
        E::Updated {
            name,
            role,
            department,
            active,
            ..
        } => {
            let mut parts = Vec::new();
            if name.is_some() {
                parts.push("name changed".to_string());
            }
            if let Some(role) = role {
                parts.push(format!(
                    "role changed from {} to {}",
                    role.before, role.after
                ));
            }
            if department.is_some() {
                parts.push("department changed".to_string());
            }
            if let Some(active) = active {
                parts.push(
                    if active.after {
                        "reactivated"
                    } else {
                        "deactivated"
                    }
                    .to_string(),
                );
            }
            let changes = [
                change("name", name),
                change("role", role),
                change("department", department),
                change("active", active),
            ]
            .into_iter()
            .flatten()
            .collect();
            (
                &c::USER_UPDATED,
                format!("User updated: {}", parts.join(", ")),
                changes,
            )
        }
        E::LoggedIn { .. } => (&c::USER_LOGGED_IN, "Logged in".to_string(), Vec::new()),
        E::LoginFailed { reason, .. } => (
            &c::USER_LOGIN_FAILED,
            format!("Login failed: {}", one_line(reason)),
            Vec::new(),
        ),
        E::LoggedOut { previous_state, .. } => (
            &c::USER_LOGGED_OUT,
            "Logged out".to_string(),
            vec![Change::from_to("state", previous_state.as_str(), "offline")],
        ),
        E::StateChanged { from, to, .. } => (
            &c::USER_STATE_CHANGED,
            format!("State changed from {from} to {to}"),
            vec![Change::from_to("state", from.as_str(), to.as_str())],
        ),
        E::ViewingTicket { ticket_id: t, .. } => {
            ticket_id = Some(*t);
            (
                &c::USER_VIEWING_TICKET,
                format!("Viewing ticket {t}"),
                Vec::new(),
            )
        }
        E::LeftTicket { ticket_id: t, .. } => {
            ticket_id = Some(*t);
            (&c::USER_LEFT_TICKET, format!("Left ticket {t}"), Vec::new())
        }
        E::GeneralAction {
            action,
            description,
            ..
        } => (
            &c::GENERAL_ACTION,
            format!("{}: {}", one_line(action), one_line(description)),
            Vec::new(),
        ),
        E::AuditSearched { query, live, .. } => (
            &c::AUDIT_SEARCHED,
            match (live, query.is_empty()) {
                (false, true) => "Searched the audit log without filters".to_string(),
                (false, false) => format!("Searched the audit log: {}", one_line(query)),
                (true, true) => "Followed the live audit log without filters".to_string(),
                (true, false) => format!("Followed the live audit log: {}", one_line(query)),
            },
            vec![Change::set("query", query.as_str())],
        ),
        E::AuditExported { query, format, .. } => (
            &c::AUDIT_EXPORTED,
            if query.is_empty() {
                format!("Exported the whole audit log as {format}")
            } else {
                format!("Exported the audit log as {format}: {}", one_line(query))
            },
            vec![
                Change::set("query", query.as_str()),
                Change::set("format", format.as_str()),
            ],
        ),
        E::PersonalDataErased { subject, .. } => (
            &c::PERSONAL_DATA_ERASED,
            format!("Erased the personal data of data subject {subject}"),
            vec![Change::set("subject", subject.to_string().as_str())],
        ),
    };
    Audit {
        action,
        description,
        ticket_id,
        changes,
    }
}

fn department(event: &DepartmentEvent) -> Audit {
    use DepartmentEvent as E;
    let (action, description, changes) = match event {
        E::Created { name, .. } => (
            &c::DEPARTMENT_CREATED,
            format!("Department created: {}", one_line(name)),
            vec![Change::set("name", name.as_str())],
        ),
        E::Renamed { from, to, .. } => (
            &c::DEPARTMENT_RENAMED,
            format!(
                "Department renamed from {} to {}",
                one_line(from),
                one_line(to)
            ),
            vec![Change::from_to("name", from.as_str(), to.as_str())],
        ),
        E::Deactivated { .. } => (
            &c::DEPARTMENT_DEACTIVATED,
            "Department deactivated".to_string(),
            vec![Change::from_to("active", true, false)],
        ),
        E::Reactivated { .. } => (
            &c::DEPARTMENT_REACTIVATED,
            "Department reactivated".to_string(),
            vec![Change::from_to("active", false, true)],
        ),
    };
    Audit {
        action,
        description,
        ticket_id: None,
        changes,
    }
}

fn settings(event: &SettingsEvent) -> Audit {
    match event {
        SettingsEvent::Changed { key, old, new } => Audit {
            action: &c::SETTINGS_CHANGED,
            description: match (old.is_null(), new.is_null()) {
                (true, _) => format!("Setting {key} set"),
                (false, true) => format!("Setting {key} unset"),
                (false, false) => format!("Setting {key} changed"),
            },
            ticket_id: None,
            changes: vec![Change::new(key, null_as_none(old), null_as_none(new))],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{BodyPii, Channel, Direction, Priority, Status, TicketEvent};
    use crate::user::Role;
    use crate::Pii;

    const T: Uuid = Uuid::from_u128(1);

    fn ticket_audit(event: TicketEvent) -> Audit {
        AnyEvent::from(event).audit()
    }

    #[test]
    fn status_change_reads_from_and_to() {
        let audit = ticket_audit(TicketEvent::StatusChanged {
            ticket_id: T,
            from: Status::Open,
            to: Status::Pending,
        });
        assert_eq!(audit.action.label, "Ticket – Status");
        assert_eq!(audit.description, "Status changed from open to pending");
        assert_eq!(audit.ticket_id, Some(T));
        assert_eq!(
            audit.changes,
            vec![Change::from_to("status", "open", "pending")]
        );
        let reopened = ticket_audit(TicketEvent::StatusChanged {
            ticket_id: T,
            from: Status::Closed,
            to: Status::Open,
        });
        assert!(reopened.description.starts_with("Ticket reopened"));
    }

    #[test]
    fn public_messages_use_channel_actions_and_hide_the_body() {
        let message = |channel, direction| TicketEvent::MessageAdded {
            ticket_id: T,
            message_id: T,
            direction,
            channel,
            pii: Pii::new(
                T,
                BodyPii {
                    body: "secret body".into(),
                },
            ),
        };
        let reply = ticket_audit(message(Channel::Email, Direction::Outbound));
        assert_eq!(reply.description, "Replied to the customer by email");
        assert_eq!(reply.action.label, "Ticket – Message");
        for (channel, label) in [
            (Channel::Facebook, "Ticket – Facebook"),
            (Channel::Twitter, "Ticket – Tweet"),
            (Channel::Weibo, "Ticket – Weibo"),
            (Channel::Tencent, "Ticket – Tencent"),
            (Channel::KnowledgeBase, "Ticket – Knowledgebase"),
            (Channel::OfflineForm, "Ticket – Offline"),
        ] {
            let audit = ticket_audit(message(channel, Direction::Inbound));
            assert_eq!(audit.action.label, label);
            assert!(!audit.description.contains("secret"));
        }
    }

    #[test]
    fn tags_priority_and_merge() {
        let tags = ticket_audit(TicketEvent::TagsChanged {
            ticket_id: T,
            added: vec!["billing".into()],
            removed: vec!["vip".into()],
        });
        assert_eq!(tags.description, "Tags changed: added billing, removed vip");
        assert_eq!(tags.changes.len(), 2);
        let priority = ticket_audit(TicketEvent::PriorityChanged {
            ticket_id: T,
            from: Priority::Normal,
            to: Priority::Urgent,
        });
        assert_eq!(
            priority.description,
            "Priority changed from normal to urgent"
        );
        let merged = ticket_audit(TicketEvent::Merged {
            ticket_id: T,
            into: Uuid::from_u128(2),
            previous_status: Status::Open,
        });
        assert_eq!(merged.action.label, "Ticket – Merge");
        assert!(merged
            .changes
            .contains(&Change::from_to("status", "open", "closed")));
    }

    #[test]
    fn user_and_settings_lines() {
        let updated = AnyEvent::from(UserEvent::Updated {
            user_id: T,
            name: None,
            role: Some(FieldChange {
                before: Role::Agent,
                after: Role::Admin,
            }),
            department: None,
            active: Some(FieldChange {
                before: true,
                after: false,
            }),
        })
        .audit();
        assert_eq!(
            updated.description,
            "User updated: role changed from agent to admin, deactivated"
        );
        assert_eq!(updated.changes[1], Change::from_to("active", true, false));
        let viewing = AnyEvent::from(UserEvent::ViewingTicket {
            user_id: T,
            ticket_id: Uuid::from_u128(5),
        })
        .audit();
        assert_eq!(viewing.action.label, "User – Viewing ticket");
        assert_eq!(viewing.ticket_id, Some(Uuid::from_u128(5)));
        let setting = AnyEvent::from(SettingsEvent::Changed {
            key: "sla.hours".into(),
            old: json!(8),
            new: json!(4),
        })
        .audit();
        assert_eq!(setting.action.label, "Settings – Changed");
        assert_eq!(setting.changes, vec![Change::from_to("sla.hours", 8, 4)]);
    }
}
