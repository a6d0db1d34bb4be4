//! Ticket commands of [`Helpdesk`]: [`Helpdesk::act`] for the plain actions,
//! and the ones that need more than the ticket itself: create (a data
//! subject, a department), transfer (agent and department facts), merge and
//! split (two streams).

use ledgerdesk_domain::ticket::{CreateTicket, Requester, TicketAction, TicketEvent};
use ledgerdesk_domain::{stream_id, Aggregate, Ticket, TicketCommand};
use ledgerdesk_store::{ActorKind, Metadata, StoreError, StreamRange};
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::{AppError, DomainRefusal};
use crate::handler::{
    backoff, check_precondition, decide_all, load_range, stream_append, Committed, Loaded,
    MAX_ATTEMPTS,
};
use crate::helpdesk::{Helpdesk, Outcome, PairOutcome};
use crate::input::{self, id_or_new};
use crate::subjects;

fn ticket_stream(id: Uuid) -> String {
    stream_id(Ticket::STREAM_TYPE, id)
}

fn not_found(id: Uuid) -> AppError {
    AppError::NotFound { what: "ticket", id }
}

impl Helpdesk {
    /// Opens a ticket. The requester's email is resolved to their data subject
    /// (created on first contact); a requester without an email gets a subject
    /// of their own for this ticket. A department is looked up and must exist
    /// and be active.
    pub async fn create_ticket(
        &self,
        actor: &Actor,
        input: input::NewTicket,
    ) -> Result<Outcome, AppError> {
        self.ensure_can_act(actor).await?;
        let ticket_id = id_or_new(input.ticket_id);
        let department = match input.department_id {
            Some(id) => Some(self.department_fact(id).await?),
            None => None,
        };
        let email = input
            .requester_email
            .filter(|e| !e.trim().is_empty())
            .map(|e| subjects::normalise_email(&e));
        let mut create = CreateTicket {
            ticket_id,
            channel: input.channel,
            subject: input.subject,
            body: input.body,
            message_id: id_or_new(input.message_id),
            requester: Requester {
                name: input.requester_name,
                email: email.clone(),
            },
            requester_subject: Uuid::nil(),
            priority: input.priority,
            department,
            tags: input.tags,
            split_from: None,
        };
        // Refuse bad input before a subject row is written for it: the table
        // should only hold people who really have tickets.
        Ticket::default()
            .decide(&TicketCommand::Create(create.clone()))
            .map_err(AppError::rejected)?;
        create.requester_subject = match &email {
            Some(email) => subjects::resolve(&self.store.db(), email).await?,
            None => Uuid::now_v7(),
        };
        let mut metadata = actor.metadata();
        if actor.kind == ActorKind::Customer && metadata.actor_id.is_none() {
            // A customer is known by their data subject.
            metadata.actor_id = Some(create.requester_subject);
        }
        let message_id = create.message_id;
        let committed = self
            .run::<Ticket, _>(
                &ticket_stream(ticket_id),
                None,
                &metadata,
                Some(actor),
                |_| Ok(TicketCommand::Create(create.clone())),
            )
            .await?;
        Ok(Outcome::new(ticket_id, committed).with_item(message_id))
    }

    /// One of the plain ticket actions ([`TicketAction`]): decided on the
    /// ticket's own state, so every such action takes this one path. The
    /// outcome's item is the message, note or file the action adds.
    pub async fn act(
        &self,
        actor: &Actor,
        ticket_id: Uuid,
        expected_version: Option<u64>,
        action: TicketAction,
    ) -> Result<Outcome, AppError> {
        let item = action.item();
        let outcome = self
            .on_ticket(actor, ticket_id, expected_version, action.into())
            .await?;
        Ok(match item {
            Some(item) => outcome.with_item(item),
            None => outcome,
        })
    }

    /// Hands a ticket to an agent and/or department; each named target is
    /// looked up and must exist and be active.
    pub async fn transfer_ticket(
        &self,
        actor: &Actor,
        ticket_id: Uuid,
        input: input::Transfer,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let to_agent = match input.to_agent {
            Some(id) => Some(self.agent_fact(id).await?),
            None => None,
        };
        let to_department = match input.to_department {
            Some(id) => Some(self.department_fact(id).await?),
            None => None,
        };
        let command = TicketCommand::Transfer {
            to_agent,
            to_department,
        };
        self.on_ticket(actor, ticket_id, expected_version, command)
            .await
    }

    /// Merges `ticket_id` into `input.into`. In one atomic append: the
    /// source's `ticket.merged` and a system message on the target, each
    /// stream checked against the version it was decided on.
    /// `expected_version` applies to the source.
    pub async fn merge_ticket(
        &self,
        actor: &Actor,
        ticket_id: Uuid,
        input: input::Merge,
        expected_version: Option<u64>,
    ) -> Result<PairOutcome, AppError> {
        self.ensure_can_act(actor).await?;
        let into = input.into;
        self.pair(
            actor,
            ticket_id,
            into,
            expected_version,
            |source, target| {
                let command = TicketCommand::Merge {
                    into,
                    into_is_merged: target.state.merged_into.is_some(),
                    into_is_closed: target.state.status
                        == ledgerdesk_domain::ticket::Status::Closed,
                };
                // The source's own rules first (merged already, into itself…);
                // only then does a missing target matter.
                let merged = decide_all(&source.state, &[command])?;
                if target.state.id.is_none() {
                    return Err(AppError::Rejected(DomainRefusal {
                        code: "ticket_not_found",
                        field: Some("into"),
                        message: format!("ticket {into} does not exist"),
                    }));
                }
                let note = TicketCommand::from(TicketAction::AddSystemMessage {
                    text: format!("ticket {ticket_id} was merged into this ticket"),
                });
                let noted = decide_all(&target.state, &[note])?;
                Ok((merged, noted))
            },
        )
        .await
    }

    /// Moves `input.message_ids` of `ticket_id` into a new ticket, in one
    /// atomic append: the source's `ticket.split`, and the new ticket's
    /// `ticket.created` (with `split_from`, the source's requester, channel,
    /// priority and department) followed by a system message.
    /// `expected_version` applies to the source.
    pub async fn split_ticket(
        &self,
        actor: &Actor,
        ticket_id: Uuid,
        input: input::Split,
        expected_version: Option<u64>,
    ) -> Result<PairOutcome, AppError> {
        self.ensure_can_act(actor).await?;
        let new_ticket_id = id_or_new(input.new_ticket_id);
        let message_id = Uuid::now_v7();
        let outcome = self
            .pair(
                actor,
                ticket_id,
                new_ticket_id,
                expected_version,
                |source, target| {
                    let split = TicketCommand::Split {
                        new_ticket_id,
                        message_ids: input.message_ids.clone(),
                    };
                    let moved = decide_all(&source.state, &[split])?;
                    let inherited = inherited(source)?;
                    let create = TicketCommand::Create(CreateTicket {
                        ticket_id: new_ticket_id,
                        message_id,
                        subject: input
                            .subject
                            .clone()
                            .unwrap_or_else(|| inherited.subject.clone()),
                        body: input.body.clone(),
                        split_from: Some(ticket_id),
                        ..inherited
                    });
                    let note = TicketCommand::from(TicketAction::AddSystemMessage {
                        text: format!("ticket was split from ticket {ticket_id}"),
                    });
                    let created = decide_all(&target.state, &[create, note])?;
                    Ok((moved, created))
                },
            )
            .await?;
        Ok(PairOutcome {
            target: outcome.target.with_item(message_id),
            ..outcome
        })
    }

    /// One command on one existing ticket, by an actor allowed to act.
    async fn on_ticket(
        &self,
        actor: &Actor,
        ticket_id: Uuid,
        expected_version: Option<u64>,
        command: TicketCommand,
    ) -> Result<Outcome, AppError> {
        let committed = self
            .run::<Ticket, _>(
                &ticket_stream(ticket_id),
                expected_version,
                &actor.metadata(),
                Some(actor),
                |state| match state.id {
                    Some(_) => Ok(command.clone()),
                    None => Err(not_found(ticket_id)),
                },
            )
            .await?;
        Ok(Outcome::new(ticket_id, committed))
    }

    /// Decides on two ticket streams and appends to both atomically, each
    /// with the version it was decided on; retried on conflict like
    /// [`execute`].
    async fn pair<F>(
        &self,
        actor: &Actor,
        source_id: Uuid,
        target_id: Uuid,
        expected_version: Option<u64>,
        mut decide: F,
    ) -> Result<PairOutcome, AppError>
    where
        F: FnMut(
            &Loaded<Ticket>,
            &Loaded<Ticket>,
        ) -> Result<(Vec<TicketEvent>, Vec<TicketEvent>), AppError>,
    {
        let metadata: Metadata = actor.metadata();
        let (source_stream, target_stream) = (ticket_stream(source_id), ticket_stream(target_id));
        let _queued = self.locks.lock(&[&source_stream, &target_stream]).await;
        // Appended to here without the cache: the next command on either
        // stream reads it again (it could not run before this one ends).
        self.cache.evict(&source_stream);
        self.cache.evict(&target_stream);
        for attempt in 1..=MAX_ATTEMPTS {
            let source =
                load_range::<Ticket>(&*self.store, &source_stream, StreamRange::all()).await?;
            if source.state.id.is_none() {
                return Err(not_found(source_id));
            }
            check_precondition(expected_version, source.version)?;
            // Same stream twice would be one append fighting itself; the
            // domain refuses merge/split into self on the source's own state.
            let target = if source_id == target_id {
                None
            } else {
                Some(load_range::<Ticket>(&*self.store, &target_stream, StreamRange::all()).await?)
            };
            let target = target.as_ref().unwrap_or(&source);
            let (source_events, target_events) = decide(&source, target)?;
            let target_version = target.version;
            let appends = vec![
                stream_append(&source_stream, source.version, &source_events, &metadata),
                stream_append(&target_stream, target_version, &target_events, &metadata),
            ];
            match self.store.append_many(appends).await {
                Ok(done) => {
                    let [s, t] = done.as_slice() else {
                        return Err(StoreError::Invalid(
                            "a two-stream append returned another number of results".into(),
                        )
                        .into());
                    };
                    return Ok(PairOutcome {
                        source: Outcome::new(
                            source_id,
                            Committed {
                                version: s.version,
                                position: s.position,
                            },
                        ),
                        target: Outcome::new(
                            target_id,
                            Committed {
                                version: t.version,
                                position: t.position,
                            },
                        ),
                    });
                }
                Err(StoreError::Conflict { .. }) => backoff(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Conflict {
            stream_id: source_stream,
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// What a ticket split off `source` keeps of it: requester, channel,
/// priority, department, tags and (unless the caller gives another) the
/// subject line.
fn inherited(source: &Loaded<Ticket>) -> Result<CreateTicket, AppError> {
    let created = source.events.iter().find_map(|e| match e {
        TicketEvent::Created {
            channel,
            priority,
            department,
            tags,
            pii,
            ..
        } => Some((channel, priority, department, tags, pii)),
        _ => None,
    });
    let Some((channel, priority, department, tags, pii)) = created else {
        return Err(not_found(source.state.id.unwrap_or_default()));
    };
    Ok(CreateTicket {
        ticket_id: Uuid::nil(),
        channel: channel.as_str().to_string(),
        subject: pii.data.subject.clone(),
        body: String::new(),
        message_id: Uuid::nil(),
        requester: Requester {
            name: pii.data.requester_name.clone(),
            email: pii.data.requester_email.clone(),
        },
        requester_subject: pii.subject,
        priority: Some(priority.as_str().to_string()),
        // The department was active when the source was filed there; the
        // split follows it without a new check.
        department: department.map(|id| ledgerdesk_domain::ticket::DepartmentFact {
            id,
            exists: true,
            active: true,
        }),
        tags: tags.clone(),
        split_from: None,
    })
}
