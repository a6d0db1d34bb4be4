//! Who makes a request, and the request context stored with its events.

use ledgerdesk_store::{ActorKind, Metadata};
use uuid::Uuid;

/// The caller of a [`Helpdesk`](crate::Helpdesk) method: who acts, plus the
/// request context that every event written for the request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The acting user (agents: their user id) or customer, when known.
    pub id: Option<Uuid>,
    /// Agent, customer or the system itself.
    pub kind: ActorKind,
    /// The caller's IP address.
    pub ip: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// The request id shared by every event the request writes.
    pub correlation_id: Option<String>,
}

impl Actor {
    /// A helpdesk user (agent, admin or auditor) acting through its account.
    pub fn agent(user_id: Uuid) -> Self {
        Self {
            id: Some(user_id),
            kind: ActorKind::Agent,
            ..Self::default()
        }
    }

    /// A customer; `id` is their data subject when known.
    pub fn customer(id: Option<Uuid>) -> Self {
        Self {
            id,
            kind: ActorKind::Customer,
            ..Self::default()
        }
    }

    /// The helpdesk itself (bootstrap, automations, integrations).
    pub fn system() -> Self {
        Self::default()
    }

    /// With the caller's IP address.
    pub fn with_ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// With the caller's user agent.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// With the request id.
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// The metadata stored with every event of this request.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            actor_id: self.id,
            actor_kind: self.kind,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: None,
        }
    }
}
