//! Every action the audit view shows, labelled the way helpdesk audit logs
//! (LiveAgent and others) already name them.
//!
//! Codes are the event types, except for public messages through social and
//! self-service channels, which get their own action (`ticket.facebook`, …)
//! as support teams expect.

/// One audit action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    /// Stable code, e.g. `user.logged_in`.
    pub code: &'static str,
    /// Label shown to people, e.g. `User – Logged In`.
    pub label: &'static str,
    /// One sentence on what it records.
    pub summary: &'static str,
}

/// Declares actions, one constant each, and `$list`, all of them in order.
macro_rules! actions {
    ($list:ident: $( $name:ident = $code:literal, $label:literal, $summary:literal; )+) => {
        $(
            #[doc = concat!("`", $code, "`: ", $label, ".")]
            pub const $name: $crate::catalogue::Action = $crate::catalogue::Action {
                code: $code,
                label: $label,
                summary: $summary,
            };
        )+
        pub(crate) const $list: &[$crate::catalogue::Action] = &[$($name),+];
    };
}
pub(crate) use actions;

/// The whole catalogue: users, then tickets (declared with their events in
/// [`crate::ticket`]), then departments and settings.
pub const ACTIONS: &[Action] = &all::<{ USERS.len() + TICKETS.len() + OTHERS.len() }>();

const fn all<const N: usize>() -> [Action; N] {
    let parts = [USERS, TICKETS, OTHERS];
    let mut all = [USERS[0]; N];
    let (mut n, mut p) = (0, 0);
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            all[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    all
}

use crate::ticket::actions::ACTIONS as TICKETS;
pub use crate::ticket::actions::*;

actions! {
    USERS:
    USER_CREATED = "user.created", "User – Created", "A user account was created.";
    USER_UPDATED = "user.updated", "User – Updated", "A user's name, role or department changed, or the user was deactivated or reactivated.";
    USER_LOGGED_IN = "user.logged_in", "User – Logged In", "A user logged in.";
    USER_LOGIN_FAILED = "user.login_failed", "User – Login Failed", "A login attempt failed.";
    USER_LOGGED_OUT = "user.logged_out", "User – Logged Out", "A user logged out.";
    USER_STATE_CHANGED = "user.state_changed", "User – Changed State", "A user became available, away or offline.";
    USER_VIEWING_TICKET = "user.viewing_ticket", "User – Viewing ticket", "A user opened a ticket.";
    USER_LEFT_TICKET = "user.left_ticket", "User – Left ticket", "A user left a ticket.";
    GENERAL_ACTION = "user.general_action", "General Action", "An action outside tickets, e.g. by an integration.";
    AUDIT_SEARCHED = "user.audit_searched", "Audit – Searched", "A user searched the audit log or followed it live.";
    AUDIT_EXPORTED = "user.audit_exported", "Audit – Exported", "A user exported the audit log as CSV or NDJSON.";
    PERSONAL_DATA_ERASED = "user.personal_data_erased", "Privacy – Personal data erased", "A data subject's personal data was erased (its key destroyed).";
}

actions! {
    OTHERS:
    DEPARTMENT_CREATED = "department.created", "Department – Created", "A department was created.";
    DEPARTMENT_RENAMED = "department.renamed", "Department – Renamed", "A department was renamed.";
    DEPARTMENT_DEACTIVATED = "department.deactivated", "Department – Deactivated", "A department stopped taking tickets.";
    DEPARTMENT_REACTIVATED = "department.reactivated", "Department – Reactivated", "A department takes tickets again.";
    SETTINGS_CHANGED = "settings.changed", "Settings – Changed", "An account setting changed.";
}

/// The action with this code.
pub fn by_code(code: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|action| action.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_and_labels_are_unique() {
        let codes: BTreeSet<_> = ACTIONS.iter().map(|a| a.code).collect();
        let labels: BTreeSet<_> = ACTIONS.iter().map(|a| a.label).collect();
        assert_eq!(codes.len(), ACTIONS.len());
        assert_eq!(labels.len(), ACTIONS.len());
    }

    #[test]
    fn every_event_type_has_its_action() {
        for (event_type, _) in crate::event_types() {
            assert!(by_code(event_type).is_some(), "{event_type} has no action");
        }
    }

    #[test]
    fn labels_known_to_support_teams_are_present() {
        let labels: BTreeSet<_> = ACTIONS.iter().map(|a| a.label).collect();
        for label in [
            "User – Changed State",
            "User – Logged In",
            "User – Logged Out",
            "General Action",
            "User – Viewing ticket",
            "User – Left ticket",
            "Ticket – Status",
            "Ticket – Message",
            "Ticket – Internal Message",
            "Ticket – File",
            "Ticket – Transfer",
            "Ticket – System message",
            "Ticket – Tags changed",
            "Ticket – Voice message",
            "Ticket – Note",
            "Ticket – Ranking",
            "Ticket – Split",
            "Ticket – Other",
            "Ticket – Call",
            "Ticket – Chat",
            "Ticket – Facebook",
            "Ticket – Forward",
            "Ticket – Knowledgebase",
            "Ticket – Offline",
            "Ticket – Tweet",
            "Ticket – Tencent",
            "Ticket – Weibo",
            "Ticket – Merge",
            "Settings – Changed",
        ] {
            assert!(labels.contains(label), "missing {label}");
        }
    }
}
