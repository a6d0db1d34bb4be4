//! [`Helpdesk`]: the service the HTTP layer calls: `act` for the plain
//! ticket actions, one method for each other command.
//! The command methods live in `tickets.rs` (tickets) and `staff.rs` (users,
//! departments, settings); this file holds the service itself, what the
//! commands return, the read helpers and the checks shared by all commands.

use std::sync::Arc;

use ledgerdesk_domain::ticket::{AgentFact, DepartmentFact};
use ledgerdesk_domain::{fold, settings, stream_id, Aggregate, Department, Settings, Ticket, User};
use ledgerdesk_store::{
    ActorKind, EventStore, ExpectedVersion, Metadata, StoreError, StreamAppend, StreamRange,
};
use serde::Serialize;
use uuid::Uuid;

use crate::actor::Actor;
use crate::cache::{AggregateCache, Cached};
use crate::error::{AppError, DomainRefusal};
use crate::handler::MAX_ATTEMPTS;
use crate::handler::{backoff, check_precondition, load, load_range, stream_append, Committed};
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
    /// Shared by clones: the states this process decided on last.
    pub(crate) cache: Arc<AggregateCache>,
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
            cache: Arc::default(),
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

    /// One command on one stream, behind this process's queue for the
    /// stream: [`execute`]'s load → build → decide → append, on the state
    /// the cache holds when it holds one.
    ///
    /// When `check_actor` names an agent, the agent's own
    /// account must be able to act, and the append carries a zero-event
    /// check of the account's stream at the version that was judged: an
    /// account deactivated meanwhile (in any process) is a conflict, and the
    /// command is judged again, so no command slips in after a
    /// deactivation.
    pub(crate) async fn run<A, F>(
        &self,
        stream_id: &str,
        expected_version: Option<u64>,
        metadata: &Metadata,
        check_actor: Option<&Actor>,
        mut build: F,
    ) -> Result<Committed, AppError>
    where
        A: Aggregate,
        DomainRefusal: From<A::Error>,
        F: FnMut(&A) -> Result<A::Command, AppError>,
    {
        let _queued = self.locks.lock(&[stream_id]).await;
        let mut attempt = 1;
        // A cached state may be stale; whatever it cannot prove with an
        // append (a refusal, a precondition, nothing to do) is asked again
        // of the store.
        let mut use_cache = true;
        loop {
            let (guard, account_cached) = match check_actor {
                Some(actor) => match self.account_guard(actor, use_cache).await {
                    Ok(guard) => guard,
                    Err(e) if use_cache => {
                        tracing::trace!(error = %e, "refusal on a cached account; asking the store");
                        use_cache = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                None => (None, false),
            };
            let (loaded, cached) = self.cached::<A>(stream_id, use_cache).await?;
            let decided = build(&loaded.state).and_then(|command| {
                check_precondition(expected_version, loaded.version)?;
                loaded.state.decide(&command).map_err(AppError::rejected)
            });
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                _ if cached || account_cached => {
                    use_cache = false;
                    continue;
                }
                Ok(_) => {
                    return Ok(Committed {
                        version: loaded.version,
                        position: loaded.position,
                    })
                }
                Err(e) => return Err(e),
            };
            let mut appends: Vec<StreamAppend> = guard.into_iter().collect();
            appends.push(stream_append(stream_id, loaded.version, &events, metadata));
            match self.store.append_many(appends).await {
                Ok(done) => {
                    let done = done.last().ok_or_else(|| {
                        StoreError::Invalid("append returned no result".to_string())
                    })?;
                    self.cache.put(
                        stream_id,
                        Cached {
                            state: fold(loaded.state, &events),
                            version: done.version,
                            position: done.position,
                        },
                    );
                    return Ok(Committed {
                        version: done.version,
                        position: done.position,
                    });
                }
                Err(StoreError::Conflict {
                    stream_id: stale, ..
                }) => {
                    self.cache.evict(&stale);
                    // The account's stream, or this one when it came from
                    // the cache: a state another process had moved on from.
                    let stale_cache = stale != stream_id || cached;
                    if use_cache && stale_cache {
                        // Nobody is contending with this command: it decides
                        // again at once, on a fresh load, without spending
                        // an attempt.
                        use_cache = false;
                        continue;
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(AppError::Conflict {
                            stream_id: stream_id.to_string(),
                            attempts: MAX_ATTEMPTS,
                        });
                    }
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    // Whether it was written is unknown (a connection lost at
                    // the commit): the next command reads the stream again.
                    self.cache.evict(stream_id);
                    return Err(e.into());
                }
            }
        }
    }

    /// The state of `stream_id` and whether it came from the cache.
    async fn cached<A: Aggregate>(
        &self,
        stream_id: &str,
        use_cache: bool,
    ) -> Result<(Cached<A>, bool), AppError> {
        if use_cache {
            if let Some(hit) = self.cache.get::<A>(stream_id) {
                return Ok((hit, true));
            }
        }
        let loaded = load_range::<A>(&*self.store, stream_id, StreamRange::all()).await?;
        let fresh = Cached {
            state: loaded.state,
            version: loaded.version,
            position: loaded.position,
        };
        if fresh.version > 0 {
            self.cache.put(stream_id, fresh.clone());
        }
        Ok((fresh, false))
    }

    /// For an agent: its account may act (on the cached or a fresh state),
    /// the zero-event append that pins the account at that version, and
    /// whether the state came from the cache.
    async fn account_guard(
        &self,
        actor: &Actor,
        use_cache: bool,
    ) -> Result<(Option<StreamAppend>, bool), AppError> {
        if actor.kind != ActorKind::Agent {
            return Ok((None, false));
        }
        let id = actor.id.ok_or_else(|| AppError::Invalid {
            field: "actor",
            message: "an agent request needs the agent's user id".to_string(),
        })?;
        let stream = stream_id(User::STREAM_TYPE, id);
        let (account, cached) = self.cached::<User>(&stream, use_cache).await?;
        can_act(&account.state)?;
        let expected = match account.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        Ok((
            Some(StreamAppend::new(&stream, expected, Vec::new())),
            cached,
        ))
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
        can_act(&user)
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

/// An agent acts only through an existing, active account.
fn can_act(user: &User) -> Result<(), AppError> {
    user.ensure_can_act().map_err(|e| {
        let mut refusal = DomainRefusal::from(e);
        refusal.field = Some("actor");
        AppError::Rejected(refusal)
    })
}
