//! [`Helpdesk`]: the service the HTTP layer calls: `act` for the plain
//! ticket actions, one method for each other command.
//! The command methods live in `tickets.rs` (tickets) and `staff.rs` (users,
//! departments, settings); this file holds the service itself, what the
//! commands return, the read helpers and the checks shared by all commands.

use std::sync::Arc;

use ledgerdesk_domain::ticket::{AgentFact, DepartmentFact};
use ledgerdesk_domain::{settings, stream_id, Aggregate, Department, Settings, Ticket, User};
use ledgerdesk_store::{ActorKind, EventStore, Metadata, StreamRange};
use serde::Serialize;
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::{AppError, DomainRefusal};
use crate::handler::{execute, load, load_range, Committed};
use crate::locks::StreamLocks;
use crate::subjects;

/// Where a command left its stream; the API returns it (the version also
/// becomes the `ETag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The ticket, user or department (nil for the account settings).
    pub id: Uuid,
    /// The stream's version after the command.
    pub version: u64,
    /// The global position of the command's last event.
    pub position: u64,
    /// The message, note, file or new ticket the command added, when it
    /// added one (minted here unless the caller gave it).
    pub item: Option<Uuid>,
}

impl Outcome {
    pub(crate) fn new(id: Uuid, committed: Committed) -> Self {
        Self {
            id,
            version: committed.version,
            position: committed.position,
            item: None,
        }
    }

    pub(crate) fn with_item(mut self, item: Uuid) -> Self {
        self.item = Some(item);
        self
    }
}

/// A command written to two streams at once (merge, split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PairOutcome {
    /// The ticket the command was addressed to.
    pub source: Outcome,
    /// The other ticket: the merge target, or the ticket a split created.
    pub target: Outcome,
}

/// The helpdesk's command side over one event store. Make one per process
/// and clone it: clones share the per-stream queue that keeps this process's
/// commands on one stream from racing each other.
#[derive(Clone)]
pub struct Helpdesk {
    pub(crate) store: Arc<dyn EventStore>,
    /// Shared by clones: one `Helpdesk` per process, cloned into handlers.
    pub(crate) locks: Arc<StreamLocks>,
}

impl std::fmt::Debug for Helpdesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpdesk")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl Helpdesk {
    /// A helpdesk writing to `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            locks: Arc::default(),
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// A ticket and its version, or `None` if it does not exist.
    pub async fn ticket(&self, id: Uuid) -> Result<Option<(Ticket, u64)>, AppError> {
        self.ticket_as_of(id, StreamRange::all()).await
    }

    /// A ticket as it was within `range` (e.g. `until_position` or
    /// `until_time`), and its version then; `None` if it did not exist yet.
    pub async fn ticket_as_of(
        &self,
        id: Uuid,
        range: StreamRange,
    ) -> Result<Option<(Ticket, u64)>, AppError> {
        let loaded =
            load_range::<Ticket>(&*self.store, &stream_id(Ticket::STREAM_TYPE, id), range).await?;
        Ok(loaded
            .state
            .id
            .is_some()
            .then_some((loaded.state, loaded.version)))
    }

    /// A user and its version, or `None`.
    pub async fn user(&self, id: Uuid) -> Result<Option<(User, u64)>, AppError> {
        let (user, version) = self.load_user(id).await?;
        Ok(user.id.is_some().then_some((user, version)))
    }

    /// A department and its version, or `None`.
    pub async fn department(&self, id: Uuid) -> Result<Option<(Department, u64)>, AppError> {
        let (department, version) = self.load_department(id).await?;
        Ok(department.id.is_some().then_some((department, version)))
    }

    /// The account settings and their version (0 when never changed).
    pub async fn settings(&self) -> Result<(Settings, u64), AppError> {
        load::<Settings>(&*self.store, settings::STREAM_ID).await
    }

    /// The data subject of `email`, if it has one (case and surrounding
    /// whitespace do not matter).
    pub async fn data_subject(&self, email: &str) -> Result<Option<Uuid>, AppError> {
        subjects::find(&self.store.db(), email).await
    }

    /// [`execute`] behind this process's queue for the stream.
    pub(crate) async fn run<A, F>(
        &self,
        stream_id: &str,
        expected_version: Option<u64>,
        metadata: &Metadata,
        build: F,
    ) -> Result<Committed, AppError>
    where
        A: Aggregate,
        DomainRefusal: From<A::Error>,
        F: FnMut(&A) -> Result<A::Command, AppError>,
    {
        let _queued = self.locks.lock(&[stream_id]).await;
        execute::<A, F>(&*self.store, stream_id, expected_version, metadata, build).await
    }

    pub(crate) async fn load_user(&self, id: Uuid) -> Result<(User, u64), AppError> {
        load::<User>(&*self.store, &stream_id(User::STREAM_TYPE, id)).await
    }

    pub(crate) async fn load_department(&self, id: Uuid) -> Result<(Department, u64), AppError> {
        load::<Department>(&*self.store, &stream_id(Department::STREAM_TYPE, id)).await
    }

    /// An agent may only act through an existing, active account; customers
    /// and the system have no account to check.
    pub(crate) async fn ensure_can_act(&self, actor: &Actor) -> Result<(), AppError> {
        if actor.kind != ActorKind::Agent {
            return Ok(());
        }
        let id = actor.id.ok_or_else(|| AppError::Invalid {
            field: "actor",
            message: "an agent request needs the agent's user id".to_string(),
        })?;
        let (user, _) = self.load_user(id).await?;
        user.ensure_can_act().map_err(|e| {
            let mut refusal = DomainRefusal::from(e);
            refusal.field = Some("actor");
            AppError::Rejected(refusal)
        })
    }

    /// What the ticket aggregate needs to know about a named agent.
    pub(crate) async fn agent_fact(&self, id: Uuid) -> Result<AgentFact, AppError> {
        let (user, _) = self.load_user(id).await?;
        Ok(AgentFact {
            id,
            exists: user.id.is_some(),
            active: !user.deactivated,
        })
    }

    /// What the ticket aggregate needs to know about a named department.
    pub(crate) async fn department_fact(&self, id: Uuid) -> Result<DepartmentFact, AppError> {
        let (department, _) = self.load_department(id).await?;
        Ok(DepartmentFact {
            id,
            exists: department.id.is_some(),
            active: !department.deactivated,
        })
    }
}
