//! `ledgerdesk seed --events N`: a realistic helpdesk history, for trying the
//! system and for benchmarks.
//!
//! Every event is decided by the real aggregates, so the log is one the
//! command handlers could have written; only the I/O is batched (many
//! streams per `append_many`), which is what makes a million events take
//! seconds rather than an hour.

use std::collections::HashMap;

use ledgerdesk_domain::department::{Department, DepartmentCommand};
use ledgerdesk_domain::ticket::{
    AgentFact, CreateTicket, DepartmentFact, Requester, Ticket, TicketAction, TicketCommand,
};
use ledgerdesk_domain::user::{Presence, User, UserCommand};
use ledgerdesk_domain::{stream_id, Aggregate};
use ledgerdesk_store::{ActorKind, EventStore, ExpectedVersion, Metadata, StreamAppend};
use uuid::Uuid;

use crate::error::AppError;
use crate::handler::stream_append;
use crate::subjects;

/// What a seed run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Events appended.
    pub events: u64,
    /// Tickets created.
    pub tickets: u64,
    /// Agents created.
    pub agents: u64,
}

const DEPARTMENTS: [&str; 4] = ["Billing", "Technical support", "Sales", "Returns"];
const AGENTS_PER_DEPARTMENT: usize = 5;
const CUSTOMERS: usize = 400;
const CHANNELS: [&str; 8] = [
    "email",
    "chat",
    "call",
    "web",
    "facebook",
    "twitter",
    "api",
    "offline_form",
];
const TAGS: [&str; 8] = [
    "billing", "refund", "vip", "bug", "shipping", "login", "invoice", "feedback",
];
/// Tickets whose events go to the store in one `append_many`.
const TICKETS_PER_APPEND: usize = 40;

/// A deterministic generator (no randomness crate, and repeatable runs).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One stream being written in memory: its state, version and new events.
struct Stream<A: Aggregate> {
    id: String,
    state: A,
    version: u64,
    pending: Vec<A::Event>,
}

impl<A: Aggregate> Stream<A>
where
    A::Error: std::fmt::Display,
{
    fn new(id: String) -> Self {
        Self {
            id,
            state: A::default(),
            version: 0,
            pending: Vec::new(),
        }
    }

    fn decide(&mut self, command: A::Command) -> Result<(), AppError> {
        let events = self.state.decide(&command).map_err(|e| AppError::Invalid {
            field: "seed",
            message: format!("seed command refused on {}: {e}", self.id),
        })?;
        for e in &events {
            self.state = std::mem::take(&mut self.state).apply(e);
        }
        self.pending.extend(events);
        Ok(())
    }

    fn take(&mut self, metadata: &Metadata) -> Option<StreamAppend> {
        if self.pending.is_empty() {
            return None;
        }
        let append = stream_append(&self.id, self.version, &self.pending, metadata);
        self.version += self.pending.len() as u64;
        self.pending.clear();
        Some(append)
    }
}

struct Agent {
    id: Uuid,
    department: Uuid,
    stream: Stream<User>,
}

/// Append about `target` events of a realistic mix: departments, agents
/// logging in and out and changing state, and tickets from many channels
/// worked through their life (views, replies, internal messages, notes,
/// files, tags, transfers, calls, ratings, status changes up to closed).
pub async fn seed(
    store: &dyn EventStore,
    target: u64,
    mut progress: impl FnMut(u64),
) -> Result<SeedReport, AppError> {
    let mut dice = Dice(0x5eed_1ed9_e2de_5c01 ^ target);
    let mut report = SeedReport::default();
    let system = Metadata::system();

    let mut appends = Vec::new();
    let mut departments = Vec::new();
    for name in DEPARTMENTS {
        let id = Uuid::now_v7();
        let mut d = Stream::<Department>::new(stream_id("department", id));
        d.decide(DepartmentCommand::Create {
            department_id: id,
            name: name.to_owned(),
        })?;
        appends.extend(d.take(&system));
        departments.push(id);
    }
    let mut agents = Vec::new();
    for (i, department) in departments
        .iter()
        .flat_map(|d| std::iter::repeat_n(*d, AGENTS_PER_DEPARTMENT))
        .enumerate()
    {
        let id = Uuid::now_v7();
        let mut s = Stream::<User>::new(stream_id("user", id));
        s.decide(UserCommand::Create {
            user_id: id,
            name: format!("Agent {}", i + 1),
            email: format!(
                "agent{}-{}@example.com",
                i + 1,
                &id.simple().to_string()[24..]
            ),
            role: "agent".into(),
            department: Some(department),
        })?;
        appends.extend(s.take(&system));
        agents.push(Agent {
            id,
            department,
            stream: s,
        });
    }
    report.agents = agents.len() as u64;
    report.events += flush(store, &mut appends).await?;

    // Customers are data subjects; their emails live outside the log.
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for i in 0..CUSTOMERS {
        let email = format!("customer{i}@example.org");
        let subject = subjects::resolve(&store.db(), &email).await?;
        customers.push((format!("Customer {i}"), email, subject));
    }

    while report.events < target {
        let mut tickets = Vec::with_capacity(TICKETS_PER_APPEND);
        let mut metadata_of: HashMap<String, Metadata> = HashMap::new();
        for _ in 0..TICKETS_PER_APPEND {
            let agent_ix = dice.below(agents.len());
            let (name, email, subject) = customers[dice.below(customers.len())].clone();
            let ticket = life_of_a_ticket(
                &mut dice,
                &mut agents,
                agent_ix,
                &departments,
                name,
                email,
                subject,
            )?;
            metadata_of.insert(ticket.id.clone(), customer_metadata(subject));
            tickets.push(ticket);
            report.tickets += 1;
        }
        for mut t in tickets {
            let metadata = metadata_of.remove(&t.id).unwrap_or_default();
            appends.extend(t.take(&metadata));
        }
        for a in agents.iter_mut() {
            let metadata = agent_metadata(a.id);
            appends.extend(a.stream.take(&metadata));
        }
        report.events += flush(store, &mut appends).await?;
        progress(report.events);
    }
    Ok(report)
}

fn customer_metadata(subject: Uuid) -> Metadata {
    Metadata {
        actor_id: Some(subject),
        actor_kind: ActorKind::Customer,
        ip: Some("198.51.100.23".into()),
        user_agent: Some("Mail gateway".into()),
        correlation_id: Some(Uuid::now_v7().to_string()),
        causation_id: None,
    }
}

fn agent_metadata(id: Uuid) -> Metadata {
    Metadata {
        actor_id: Some(id),
        actor_kind: ActorKind::Agent,
        ip: Some("203.0.113.10".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) ledgerdesk-seed".into()),
        correlation_id: Some(Uuid::now_v7().to_string()),
        causation_id: None,
    }
}

/// One ticket from creation to close, and what its agent did around it.
/// The ticket's events are all stored with the customer's metadata: the seed
/// favours volume and variety over attributing each reply to its agent.
fn life_of_a_ticket(
    dice: &mut Dice,
    agents: &mut [Agent],
    agent_ix: usize,
    departments: &[Uuid],
    name: String,
    email: String,
    subject: Uuid,
) -> Result<Stream<Ticket>, AppError> {
    let id = Uuid::now_v7();
    let mut t = Stream::<Ticket>::new(stream_id("ticket", id));
    let channel = CHANNELS[dice.below(CHANNELS.len())];
    let department = departments[dice.below(departments.len())];
    t.decide(TicketCommand::Create(CreateTicket {
        ticket_id: id,
        channel: channel.into(),
        subject: format!("Question about order {}", dice.next() % 100_000),
        body: "Hello, I was charged twice for my last order. Could you look into it? Thanks."
            .into(),
        message_id: Uuid::now_v7(),
        requester: Requester {
            name,
            email: Some(email),
        },
        requester_subject: subject,
        priority: Some(["low", "normal", "normal", "high", "urgent"][dice.below(5)].into()),
        department: Some(DepartmentFact {
            id: department,
            exists: true,
            active: true,
        }),
        tags: vec![TAGS[dice.below(TAGS.len())].into()],
        split_from: None,
    }))?;

    let agent = &mut agents[agent_ix];
    if !agent.stream.state.logged_in {
        agent.stream.decide(UserCommand::LogIn)?;
    }
    if agent.stream.state.presence != Presence::Available {
        agent.stream.decide(UserCommand::ChangeState {
            to: "available".into(),
        })?;
    }
    agent
        .stream
        .decide(UserCommand::ViewTicket { ticket_id: id })?;
    t.decide(TicketCommand::Transfer {
        to_agent: Some(AgentFact {
            id: agent.id,
            exists: true,
            active: true,
        }),
        to_department: Some(DepartmentFact {
            id: agent.department,
            exists: true,
            active: true,
        }),
    })?;
    t.decide(TicketCommand::Act(TicketAction::ChangeStatus {
        to: "open".into(),
    }))?;
    for round in 0..1 + dice.below(3) {
        t.decide(TicketCommand::Act(TicketAction::AddPublicMessage {
            message_id: Uuid::now_v7(),
            direction: "outbound".into(),
            channel: Some(channel.into()),
            body: "Thanks for the details: we refunded the duplicate charge; it shows in 3 to 5 working days.".into(),
        }))?;
        if dice.chance(40) {
            t.decide(TicketCommand::Act(TicketAction::AddInternalMessage {
                message_id: Uuid::now_v7(),
                body: "Checked the payment provider: the second charge was a retry.".into(),
            }))?;
        }
        if dice.chance(25) {
            t.decide(TicketCommand::Act(TicketAction::AddNote {
                note_id: Uuid::now_v7(),
                body: "Customer prefers email over phone.".into(),
            }))?;
        }
        t.decide(TicketCommand::Act(TicketAction::ChangeStatus {
            to: "pending".into(),
        }))?;
        t.decide(TicketCommand::Act(TicketAction::AddPublicMessage {
            message_id: Uuid::now_v7(),
            direction: "inbound".into(),
            channel: Some(channel.into()),
            body: format!("Thank you! One more question (round {round})."),
        }))?;
        t.decide(TicketCommand::Act(TicketAction::ChangeStatus {
            to: "open".into(),
        }))?;
    }
    if dice.chance(20) {
        t.decide(TicketCommand::Act(TicketAction::AttachFile {
            file_id: Uuid::now_v7(),
            name: "receipt.pdf".into(),
            content_type: "application/pdf".into(),
            size: 20_000 + dice.next() % 100_000,
            sha256: format!("{:064x}", dice.next() as u128 * 7919),
        }))?;
    }
    if dice.chance(20) {
        let tag = TAGS[dice.below(TAGS.len())];
        if !t.state.tags.iter().any(|x| x == tag) {
            t.decide(TicketCommand::Act(TicketAction::ChangeTags {
                add: vec![tag.into()],
                remove: vec![],
            }))?;
        }
    }
    if dice.chance(10) {
        t.decide(TicketCommand::Act(TicketAction::LogCall {
            direction: "outbound".into(),
            duration_seconds: 60 + (dice.next() % 900) as u32,
        }))?;
    }
    if dice.chance(10) {
        let to = if t.state.priority.as_str() == "urgent" {
            "normal"
        } else {
            "urgent"
        };
        t.decide(TicketCommand::Act(TicketAction::ChangePriority {
            to: to.into(),
        }))?;
    }
    t.decide(TicketCommand::Act(TicketAction::ChangeStatus {
        to: "resolved".into(),
    }))?;
    if dice.chance(50) {
        t.decide(TicketCommand::Act(TicketAction::Rate {
            rating: 1 + (dice.next() % 5) as u8,
            comment: Some("Quick and friendly.".into()),
        }))?;
    }
    t.decide(TicketCommand::Act(TicketAction::ChangeStatus {
        to: "closed".into(),
    }))?;

    let agent = &mut agents[agent_ix];
    agent
        .stream
        .decide(UserCommand::LeaveTicket { ticket_id: id })?;
    if dice.chance(15) {
        agent
            .stream
            .decide(UserCommand::ChangeState { to: "away".into() })?;
        agent.stream.decide(UserCommand::LogOut)?;
    }
    Ok(t)
}

async fn flush(store: &dyn EventStore, appends: &mut Vec<StreamAppend>) -> Result<u64, AppError> {
    if appends.is_empty() {
        return Ok(0);
    }
    let n = appends.iter().map(|a| a.events.len() as u64).sum();
    let batch = std::mem::take(appends);
    debug_assert!(batch.iter().all(|a| a.expected != ExpectedVersion::Any));
    store.append_many(batch).await?;
    Ok(n)
}
