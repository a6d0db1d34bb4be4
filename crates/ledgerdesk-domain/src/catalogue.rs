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

macro_rules! actions {
    ($( $name:ident = $code:literal, $label:literal, $summary:literal; )+) => {
        $(
            #[doc = concat!("`", $code, "`: ", $label, ".")]
            pub const $name: Action = Action { code: $code, label: $label, summary: $summary };
        )+
        /// The whole catalogue.
        pub const ACTIONS: &[Action] = &[$($name),+];
    };
}

actions! {
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
    TICKET_CREATED = "ticket.created", "Ticket – Created", "A ticket was opened.";
    TICKET_STATUS = "ticket.status_changed", "Ticket – Status", "A ticket's status changed (including reopening).";
    TICKET_MESSAGE = "ticket.message_added", "Ticket – Message", "A customer's message or a reply to the customer.";
    TICKET_FACEBOOK = "ticket.facebook", "Ticket – Facebook", "A public message through Facebook.";
    TICKET_TWEET = "ticket.tweet", "Ticket – Tweet", "A public message through Twitter.";
    TICKET_WEIBO = "ticket.weibo", "Ticket – Weibo", "A public message through Weibo.";
    TICKET_TENCENT = "ticket.tencent", "Ticket – Tencent", "A public message through Tencent.";
    TICKET_KNOWLEDGEBASE = "ticket.knowledgebase", "Ticket – Knowledgebase", "A public message through the knowledge base.";
    TICKET_OFFLINE = "ticket.offline", "Ticket – Offline", "A public message through the offline form.";
    TICKET_INTERNAL_MESSAGE = "ticket.internal_message_added", "Ticket – Internal Message", "A message between agents.";
    TICKET_NOTE = "ticket.note_added", "Ticket – Note", "A note on a ticket.";
    TICKET_FILE = "ticket.file_attached", "Ticket – File", "A file was attached.";
    TICKET_TRANSFER = "ticket.transferred", "Ticket – Transfer", "A ticket moved to another agent or department.";
    TICKET_TAGS_CHANGED = "ticket.tags_changed", "Ticket – Tags changed", "Tags were added or removed.";
    TICKET_VOICE_MESSAGE = "ticket.voice_message_added", "Ticket – Voice message", "A voice message.";
    TICKET_CALL = "ticket.call_logged", "Ticket – Call", "A phone call was logged.";
    TICKET_CHAT = "ticket.chat_message_added", "Ticket – Chat", "A chat message or transcript.";
    TICKET_FORWARD = "ticket.forwarded", "Ticket – Forward", "A ticket was forwarded to an address.";
    TICKET_RANKING = "ticket.ranked", "Ticket – Ranking", "The customer rated the ticket.";
    TICKET_SPLIT = "ticket.split", "Ticket – Split", "Messages were moved into a new ticket.";
    TICKET_MERGE = "ticket.merged", "Ticket – Merge", "A ticket was merged into another.";
    TICKET_PRIORITY = "ticket.priority_changed", "Ticket – Priority", "A ticket's priority changed.";
    TICKET_SYSTEM_MESSAGE = "ticket.system_message_added", "Ticket – System message", "A message produced by the system.";
    TICKET_OTHER = "ticket.other", "Ticket – Other", "An integration's own action on a ticket.";
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
