//! What callers hand to the [`Helpdesk`](crate::Helpdesk) methods that need
//! more than one aggregate's state (create, transfer, merge, split, users,
//! departments, settings); the plain ticket actions take a
//! [`TicketAction`](ledgerdesk_domain::ticket::TicketAction) instead. The
//! API builds these from its own request types, which own the wire format.
//! Enumerations (channel, status, priority, direction, role, state) stay
//! strings so the domain is the one place that refuses bad values, naming
//! the field. Ids left out are minted here as UUID v7.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

/// Opens a ticket.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewTicket {
    /// The ticket's id; minted when absent.
    #[serde(default)]
    pub ticket_id: Option<Uuid>,
    /// Channel wire name, e.g. `email`.
    pub channel: String,
    /// Subject line.
    pub subject: String,
    /// The first message.
    pub body: String,
    /// The first message's id; minted when absent.
    #[serde(default)]
    pub message_id: Option<Uuid>,
    /// The requester's name.
    pub requester_name: String,
    /// The requester's email: identifies their data subject.
    #[serde(default)]
    pub requester_email: Option<String>,
    /// Priority wire name; normal when absent.
    #[serde(default)]
    pub priority: Option<String>,
    /// The department to file it under.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Hands a ticket to an agent and/or a department.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Transfer {
    /// The new assignee's user id.
    #[serde(default)]
    pub to_agent: Option<Uuid>,
    /// The new department.
    #[serde(default)]
    pub to_department: Option<Uuid>,
}

/// Moves messages of a ticket into a new ticket.
#[derive(Debug, Clone, Deserialize)]
pub struct Split {
    /// The new ticket's id; minted when absent.
    #[serde(default)]
    pub new_ticket_id: Option<Uuid>,
    /// Messages to move.
    pub message_ids: Vec<Uuid>,
    /// The new ticket's subject line; the source's when absent.
    #[serde(default)]
    pub subject: Option<String>,
    /// The new ticket's opening text.
    pub body: String,
}

/// Merges a ticket into another.
#[derive(Debug, Clone, Deserialize)]
pub struct Merge {
    /// The surviving ticket.
    pub into: Uuid,
}

/// An integration's own action (on a ticket or a user).
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    /// Action name.
    pub action: String,
    /// Description; keep personal data out.
    pub description: String,
}

/// Creates a user.
#[derive(Debug, Clone, Deserialize)]
pub struct NewUser {
    /// Minted when absent.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// Display name.
    pub name: String,
    /// Login email.
    pub email: String,
    /// `agent`, `admin` or `auditor`.
    pub role: String,
    /// Home department.
    #[serde(default)]
    pub department_id: Option<Uuid>,
}

/// Changes some of a user's fields; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New role wire name.
    #[serde(default)]
    pub role: Option<String>,
    /// New department; `null` clears it, absent leaves it.
    #[serde(default, deserialize_with = "present")]
    pub department_id: Option<Option<Uuid>>,
    /// `false` deactivates, `true` reactivates.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A present field, even `null`, is `Some`: tells "clear it" from "leave it".
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A failed login attempt.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginFailure {
    /// Why, e.g. `wrong_password`.
    pub reason: String,
}

/// Changes a user's availability.
#[derive(Debug, Clone, Deserialize)]
pub struct StateChange {
    /// `available`, `away` or `offline`.
    pub state: String,
}

/// Creates a department.
#[derive(Debug, Clone, Deserialize)]
pub struct NewDepartment {
    /// Minted when absent.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Name.
    pub name: String,
}

/// Renames a department.
#[derive(Debug, Clone, Deserialize)]
pub struct DepartmentRename {
    /// New name.
    pub name: String,
}

/// Changes a department's name and/or activity in one append.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DepartmentUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// `false` deactivates, `true` reactivates.
    #[serde(default)]
    pub active: Option<bool>,
}

/// Sets (or, with `null`, unsets) an account setting.
#[derive(Debug, Clone, Deserialize)]
pub struct SettingChange {
    /// Key: lowercase letters, digits, `.`, `_`, `-`.
    pub key: String,
    /// New value.
    pub value: Value,
}

/// The id the caller gave, or a fresh UUID v7.
pub(crate) fn id_or_new(id: Option<Uuid>) -> Uuid {
    id.unwrap_or_else(Uuid::now_v7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_department_clears_and_an_absent_one_leaves_it() {
        let clear: UserUpdate = serde_json::from_str(r#"{"department_id": null}"#).unwrap();
        assert_eq!(clear.department_id, Some(None));
        let leave: UserUpdate = serde_json::from_str(r#"{"name": "Bo"}"#).unwrap();
        assert_eq!(leave.department_id, None);
        let id = Uuid::now_v7();
        let set: UserUpdate =
            serde_json::from_value(serde_json::json!({ "department_id": id })).unwrap();
        assert_eq!(set.department_id, Some(Some(id)));
    }

    #[test]
    fn missing_ids_are_minted_as_v7() {
        assert_eq!(id_or_new(None).get_version_num(), 7);
        assert_eq!(id_or_new(Some(Uuid::nil())), Uuid::nil());
    }
}
