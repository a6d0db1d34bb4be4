//! `reports`: per agent and per department over a time range — tickets
//! handled, created, replied to and resolved, median first-response and
//! resolution times, ratings, and the time tickets were open on screen.
//!
//! Tables: `report_tickets` (per ticket: creation time, current department
//! and assignee, first response) and `report_facts` (one row per fact:
//! `created`, `replied`, `first_response`, `resolved`, `rated`,
//! `transferred` (counted for the agent and department it went to),
//! `viewing` (a view still open: `at` is its start) and `viewed` (a closed
//! view: `at` its start, `seconds` its length), with the agent and
//! department it counts for at that time). Counts and averages are SQL
//! aggregates; medians and view overlaps are computed in Rust. Rows carry
//! the names the `people` projection has.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerdesk_domain::ticket::{Direction, Status};
use ledgerdesk_domain::user::FieldChange;
use ledgerdesk_domain::{AnyEvent, TicketEvent, UserEvent};
use ledgerdesk_store::{ActorKind, DbPool};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx};
use crate::projection::{Event, Names, Projection};
use crate::schema::Table;
use crate::ProjectionError;

const TABLES: &[Table] = &[
    Table {
        name: "report_tickets",
        columns: "
    ticket_id         TEXT PRIMARY KEY,
    created_at        {int} NOT NULL,    -- µs
    department        TEXT,
    assignee          TEXT,
    first_response_at {int}
",
        indexes: &[],
    },
    Table {
        name: "report_facts",
        columns: "
    position   {int} NOT NULL,           -- the event
    kind       TEXT NOT NULL,            -- created, replied, first_response, resolved, rated, transferred, viewing, viewed
    at         {int} NOT NULL,           -- µs
    ticket_id  TEXT NOT NULL,
    agent      TEXT,
    department TEXT,
    seconds    {real},                   -- first_response, resolved: since creation, viewed: its length
    rating     {int},                    -- rated: 1 to 5
    PRIMARY KEY (position, kind)
",
        indexes: &[("report_facts_kind_at", "kind, at")],
    },
];

const TICKET_COLUMNS: &[&str] = &[
    "ticket_id",
    "created_at",
    "department",
    "assignee",
    "first_response_at",
];
const FACT_COLUMNS: &[&str] = &[
    "position",
    "kind",
    "at",
    "ticket_id",
    "agent",
    "department",
    "seconds",
    "rating",
];

#[derive(Debug, Clone, Default)]
struct TicketFacts {
    created_at: i64,
    department: Option<Uuid>,
    assignee: Option<Uuid>,
    first_response_at: Option<i64>,
}

struct TicketFactsRow(Uuid, TicketFacts);

impl Record for TicketFactsRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(TicketFactsRow(
            r.uuid("ticket_id")?.unwrap_or_default(),
            TicketFacts {
                created_at: r.int0("created_at")?,
                department: r.uuid("department")?,
                assignee: r.uuid("assignee")?,
                first_response_at: r.int("first_response_at")?,
            },
        ))
    }
}

/// The `reports` projection.
pub struct ReportsProjection;

#[async_trait]
impl Projection for ReportsProjection {
    fn name(&self) -> &'static str {
        "reports"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        stream_type == "ticket"
            || (stream_type == "user"
                && matches!(
                    event_type,
                    "user.viewing_ticket" | "user.left_ticket" | "user.logged_out" | "user.updated"
                ))
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let tickets_table = names.table("report_tickets");
        let facts_table = names.table("report_facts");
        let mut ids: BTreeSet<String> = crate::projection::ticket_ids(events).into_iter().collect();
        let mut viewers = BTreeSet::new();
        for e in events {
            if let Some(AnyEvent::User(u)) = &e.domain {
                viewers.insert(u.user_id().to_string());
                if let UserEvent::ViewingTicket { ticket_id, .. } = u {
                    ids.insert(ticket_id.to_string());
                }
            }
        }
        if ids.is_empty() && viewers.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let viewers: Vec<String> = viewers.into_iter().collect();
        let mut state: HashMap<Uuid, TicketFacts> = tx
            .fetch_in::<TicketFactsRow>(
                &format!(
                    "SELECT {} FROM {tickets_table} WHERE ticket_id IN",
                    TICKET_COLUMNS.join(", ")
                ),
                &ids,
            )
            .await?
            .into_iter()
            .map(|TicketFactsRow(id, f)| (id, f))
            .collect();
        // Views still open, by (agent, ticket); `stored` says whether the
        // row is in the table already (and must go when the view closes).
        let mut open: BTreeMap<(Uuid, Uuid), OpenView> = tx
            .fetch_in::<OpenView>(
                &format!(
                    "SELECT position, at, agent, ticket_id, department FROM {facts_table} \
                     WHERE kind = 'viewing' AND agent IN"
                ),
                &viewers,
            )
            .await?
            .into_iter()
            .map(|v| ((v.agent, v.ticket), v))
            .collect();
        let mut closed_rows: Vec<i64> = Vec::new();
        let mut dirty = BTreeSet::new();
        let mut facts: Vec<Vec<Arg>> = Vec::new();
        for e in events {
            let at = e.at();
            let ev = match &e.domain {
                Some(AnyEvent::Ticket(ev)) => ev,
                Some(AnyEvent::User(u)) => {
                    let user = u.user_id();
                    let mut close = |key: (Uuid, Uuid), open: &mut BTreeMap<_, OpenView>| {
                        if let Some(v) = open.remove(&key) {
                            if v.stored {
                                closed_rows.push(v.position);
                            }
                            facts.push(v.closed_at(at));
                        }
                    };
                    match u {
                        UserEvent::ViewingTicket { ticket_id, .. } => {
                            open.entry((user, *ticket_id)).or_insert_with(|| OpenView {
                                position: e.record.position as i64,
                                at,
                                agent: user,
                                ticket: *ticket_id,
                                department: state.get(ticket_id).and_then(|t| t.department),
                                stored: false,
                            });
                        }
                        UserEvent::LeftTicket { ticket_id, .. } => {
                            close((user, *ticket_id), &mut open);
                        }
                        // A logout or a deactivation ends every view.
                        UserEvent::LoggedOut { .. }
                        | UserEvent::Updated {
                            active: Some(FieldChange { after: false, .. }),
                            ..
                        } => {
                            let keys: Vec<_> = open
                                .range((user, Uuid::nil())..)
                                .take_while(|(k, _)| k.0 == user)
                                .map(|(k, _)| *k)
                                .collect();
                            for key in keys {
                                close(key, &mut open);
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                _ => continue,
            };
            let id = ev.ticket_id();
            let actor = (e.metadata.actor_kind == ActorKind::Agent)
                .then_some(e.metadata.actor_id)
                .flatten();
            if let TicketEvent::Created { department, .. } = ev {
                state.insert(
                    id,
                    TicketFacts {
                        created_at: at,
                        department: *department,
                        ..TicketFacts::default()
                    },
                );
            }
            let Some(t) = state.get_mut(&id) else {
                continue;
            };
            dirty.insert(id);
            if let TicketEvent::Transferred {
                to_agent,
                to_department,
                ..
            } = ev
            {
                t.assignee = *to_agent;
                t.department = *to_department;
                // Counted for whoever received it, so a department that
                // only ever received transfers still has a row.
                facts.push(vec![
                    e.record.position.into(),
                    "transferred".into(),
                    at.into(),
                    id.into(),
                    (*to_agent).into(),
                    (*to_department).into(),
                    Arg::Real(None),
                    Arg::Int(None),
                ]);
                continue;
            }
            let mut fact =
                |kind: &str, agent: Option<Uuid>, seconds: Option<f64>, rating: Option<i64>| {
                    facts.push(vec![
                        e.record.position.into(),
                        kind.into(),
                        at.into(),
                        id.into(),
                        agent.into(),
                        t.department.into(),
                        seconds.into(),
                        rating.into(),
                    ]);
                };
            let since_created = (at - t.created_at) as f64 / 1e6;
            match ev {
                TicketEvent::Created { .. } => fact("created", actor, None, None),
                TicketEvent::MessageAdded {
                    direction: Direction::Outbound,
                    ..
                } => {
                    fact("replied", actor, None, None);
                    if t.first_response_at.is_none() {
                        fact("first_response", actor, Some(since_created), None);
                        t.first_response_at = Some(at);
                    }
                }
                TicketEvent::StatusChanged {
                    to: Status::Resolved,
                    ..
                } => fact("resolved", actor.or(t.assignee), Some(since_created), None),
                TicketEvent::Ranked { rating, .. } => {
                    fact("rated", t.assignee, None, Some(i64::from(*rating)))
                }
                _ => {}
            }
        }
        let rows = dirty
            .iter()
            .filter_map(|id| state.get(id).map(|t| (id, t)))
            .map(|(id, t)| {
                vec![
                    Arg::from(*id),
                    t.created_at.into(),
                    t.department.into(),
                    t.assignee.into(),
                    t.first_response_at.into(),
                ]
            })
            .collect();
        tx.insert(
            &tickets_table,
            TICKET_COLUMNS,
            &upsert_clause(&["ticket_id"], TICKET_COLUMNS),
            rows,
        )
        .await?;
        for chunk in closed_rows.chunks(1000) {
            let sql = format!(
                "DELETE FROM {facts_table} WHERE kind = 'viewing' AND position IN ({})",
                db::placeholders(1, chunk.len())
            );
            tx.execute(&sql, chunk.iter().map(|p| Arg::from(*p)).collect())
                .await?;
        }
        facts.extend(
            open.values()
                .filter(|v| !v.stored)
                .map(OpenView::still_open),
        );
        tx.insert(&facts_table, FACT_COLUMNS, "", facts).await?;
        Ok(())
    }
}

/// A view of a ticket not closed yet by a leave, a logout or a
/// deactivation.
struct OpenView {
    position: i64,
    at: i64,
    agent: Uuid,
    ticket: Uuid,
    department: Option<Uuid>,
    stored: bool,
}

impl Record for OpenView {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(OpenView {
            position: r.int0("position")?,
            at: r.int0("at")?,
            agent: r.uuid("agent")?.unwrap_or_default(),
            ticket: r.uuid("ticket_id")?.unwrap_or_default(),
            department: r.uuid("department")?,
            stored: true,
        })
    }
}

impl OpenView {
    fn row(&self, kind: &str, seconds: Option<f64>) -> Vec<Arg> {
        vec![
            self.position.into(),
            kind.into(),
            self.at.into(),
            self.ticket.into(),
            self.agent.into(),
            self.department.into(),
            seconds.into(),
            Arg::Int(None),
        ]
    }

    fn still_open(&self) -> Vec<Arg> {
        self.row("viewing", None)
    }

    fn closed_at(&self, at: i64) -> Vec<Arg> {
        self.row("viewed", Some((at - self.at).max(0) as f64 / 1e6))
    }
}

/// Whom a report's rows are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One row per agent.
    Agent,
    /// One row per department.
    Department,
}

impl Group {
    fn column(self) -> &'static str {
        match self {
            Group::Agent => "agent",
            Group::Department => "department",
        }
    }
}

/// The fact kinds that make a ticket count as handled: created, replied to,
/// resolved, or transferred to the agent or department. Views and ratings
/// alone do not.
const HANDLED: &str = "('created', 'replied', 'first_response', 'resolved', 'transferred')";

/// One agent's or department's figures over a range.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReportRow {
    /// The agent or department.
    pub id: Uuid,
    /// Its name, as the `people` projection has it (absent when unknown).
    pub name: Option<String>,
    /// Distinct tickets created, replied to, resolved or transferred in.
    pub tickets_handled: u64,
    /// Tickets created (by the agent / filed under the department).
    pub tickets_created: u64,
    /// Distinct tickets with at least one outbound public message.
    pub tickets_replied: u64,
    /// Distinct tickets changed to resolved.
    pub tickets_resolved: u64,
    /// Median seconds from creation to the first response, over first
    /// responses in the range.
    pub median_first_response_seconds: Option<f64>,
    /// Median seconds from creation to resolution, over resolutions in the
    /// range.
    pub median_resolution_seconds: Option<f64>,
    /// Ratings received (for agents: while assigned).
    pub ratings: u64,
    /// Their average.
    pub average_rating: Option<f64>,
}

/// Per agent, for facts recorded in `[from, to)`.
pub async fn agents(
    pool: &DbPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    report(pool, Group::Agent, from, to).await
}

/// Per department, for facts recorded in `[from, to)`.
pub async fn departments(
    pool: &DbPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    report(pool, Group::Department, from, to).await
}

struct Agg {
    key: Option<Uuid>,
    kind: String,
    n: i64,
    tickets: i64,
    avg_rating: Option<f64>,
}

impl Record for Agg {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Agg {
            key: r.uuid("k")?,
            kind: r.text("kind")?.unwrap_or_default(),
            n: r.int0("n")?,
            tickets: r.int0("tickets")?,
            avg_rating: r.real("avg_rating")?,
        })
    }
}

struct Handled(Option<Uuid>, i64);

impl Record for Handled {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Handled(r.uuid("k")?, r.int0("tickets")?))
    }
}

struct Duration(Option<Uuid>, String, f64);

impl Record for Duration {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Duration(
            r.uuid("k")?,
            r.text("kind")?.unwrap_or_default(),
            r.real("seconds")?.unwrap_or_default(),
        ))
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// What every report starts from: per key, the aggregates per fact kind,
/// the distinct tickets handled, and the duration samples.
struct Figures {
    aggs: Vec<Agg>,
    handled: HashMap<Uuid, u64>,
    medians: HashMap<(Uuid, String), f64>,
}

async fn figures(
    pool: &DbPool,
    group: Group,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Figures, ProjectionError> {
    let key = group.column();
    let range = || vec![Arg::from(from), Arg::from(to)];
    let aggs: Vec<Agg> = db::fetch(
        pool,
        &format!(
            "SELECT {key} AS k, kind, COUNT(*) AS n, COUNT(DISTINCT ticket_id) AS tickets, \
             AVG(CAST(rating AS DOUBLE PRECISION)) AS avg_rating \
             FROM report_facts WHERE at >= $1 AND at < $2 AND {key} IS NOT NULL \
             AND kind NOT IN ('viewing', 'viewed') GROUP BY {key}, kind"
        ),
        range(),
    )
    .await?;
    let handled: Vec<Handled> = db::fetch(
        pool,
        &format!(
            "SELECT {key} AS k, COUNT(DISTINCT ticket_id) AS tickets FROM report_facts \
             WHERE at >= $1 AND at < $2 AND {key} IS NOT NULL AND kind IN {HANDLED} GROUP BY {key}"
        ),
        range(),
    )
    .await?;
    let durations: Vec<Duration> = db::fetch(
        pool,
        &format!(
            "SELECT {key} AS k, kind, seconds FROM report_facts \
             WHERE at >= $1 AND at < $2 AND {key} IS NOT NULL AND kind IN ('first_response', 'resolved')"
        ),
        range(),
    )
    .await?;
    let mut samples: HashMap<(Uuid, String), Vec<f64>> = HashMap::new();
    for Duration(k, kind, s) in durations {
        if let Some(k) = k {
            samples.entry((k, kind)).or_default().push(s);
        }
    }
    Ok(Figures {
        aggs,
        handled: handled
            .into_iter()
            .filter_map(|Handled(k, n)| k.map(|k| (k, n.max(0) as u64)))
            .collect(),
        medians: samples
            .into_iter()
            .filter_map(|(k, mut v)| median(&mut v).map(|m| (k, m)))
            .collect(),
    })
}

/// The names of `ids` for `group`.
async fn names_of(
    pool: &DbPool,
    group: Group,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, ProjectionError> {
    let names = match group {
        Group::Agent => crate::people::names(pool, ids, &[]).await?.users,
        Group::Department => crate::people::names(pool, &[], ids).await?.departments,
    };
    Ok(names)
}

async fn report(
    pool: &DbPool,
    group: Group,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    let f = figures(pool, group, from, to).await?;
    let mut rows: BTreeMap<Uuid, ReportRow> = BTreeMap::new();
    let blank = |id| ReportRow {
        id,
        name: None,
        tickets_handled: 0,
        tickets_created: 0,
        tickets_replied: 0,
        tickets_resolved: 0,
        median_first_response_seconds: None,
        median_resolution_seconds: None,
        ratings: 0,
        average_rating: None,
    };
    for a in f.aggs {
        let Some(id) = a.key else { continue };
        let r = rows.entry(id).or_insert_with(|| blank(id));
        let tickets = a.tickets.max(0) as u64;
        match a.kind.as_str() {
            "created" => r.tickets_created = tickets,
            "replied" => r.tickets_replied = tickets,
            "resolved" => r.tickets_resolved = tickets,
            "rated" => {
                r.ratings = a.n.max(0) as u64;
                r.average_rating = a.avg_rating;
            }
            _ => {}
        }
    }
    for (id, r) in rows.iter_mut() {
        r.tickets_handled = f.handled.get(id).copied().unwrap_or_default();
        r.median_first_response_seconds =
            f.medians.get(&(*id, "first_response".to_owned())).copied();
        r.median_resolution_seconds = f.medians.get(&(*id, "resolved".to_owned())).copied();
    }
    let ids: Vec<Uuid> = rows.keys().copied().collect();
    let names = names_of(pool, group, &ids).await?;
    for (id, r) in rows.iter_mut() {
        r.name = names.get(id).cloned();
    }
    Ok(rows.into_values().collect())
}

/// One agent's or department's working time over a range (LiveAgent's
/// time report).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimeRow {
    /// The agent or department.
    pub id: Uuid,
    /// Its name, as the `people` projection has it (absent when unknown).
    pub name: Option<String>,
    /// Distinct tickets created, replied to, resolved or transferred in.
    pub tickets_handled: u64,
    /// Outbound public messages written.
    pub replies: u64,
    /// Median seconds from creation to the first response.
    pub median_first_response_seconds: Option<f64>,
    /// Median seconds from creation to resolution.
    pub median_resolution_seconds: Option<f64>,
    /// Seconds tickets were open on screen within the range: every view
    /// from `user.viewing_ticket` to `user.left_ticket` (or the logout or
    /// deactivation that ended it), cut to the range; a view still open
    /// counts up to `now`.
    pub open_seconds: f64,
}

struct View {
    key: Option<Uuid>,
    at: i64,
    seconds: Option<f64>,
}

impl Record for View {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(View {
            key: r.uuid("k")?,
            at: r.int0("at")?,
            seconds: r.real("seconds")?,
        })
    }
}

/// The time report per agent or department over `[from, to)`; `now` ends
/// the views still open.
pub async fn time(
    pool: &DbPool,
    group: Group,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<TimeRow>, ProjectionError> {
    let f = figures(pool, group, from, to).await?;
    let key = group.column();
    // Views that started before the end; those that ended before the start
    // add nothing and are dropped below.
    let views: Vec<View> = db::fetch(
        pool,
        &format!(
            "SELECT {key} AS k, at, seconds FROM report_facts \
             WHERE at < $1 AND {key} IS NOT NULL AND kind IN ('viewing', 'viewed')"
        ),
        vec![Arg::from(to)],
    )
    .await?;
    let mut rows: BTreeMap<Uuid, TimeRow> = BTreeMap::new();
    let blank = |id| TimeRow {
        id,
        name: None,
        tickets_handled: 0,
        replies: 0,
        median_first_response_seconds: None,
        median_resolution_seconds: None,
        open_seconds: 0.0,
    };
    let (from_us, to_us, now_us) = (
        from.timestamp_micros(),
        to.timestamp_micros(),
        now.timestamp_micros(),
    );
    for v in views {
        let Some(id) = v.key else { continue };
        let end = match v.seconds {
            Some(s) => v.at + (s * 1e6).round() as i64,
            None => now_us,
        };
        let overlap = end.min(to_us) - v.at.max(from_us);
        if overlap > 0 {
            rows.entry(id).or_insert_with(|| blank(id)).open_seconds += overlap as f64 / 1e6;
        }
    }
    for a in f.aggs {
        let Some(id) = a.key else { continue };
        if a.kind == "replied" {
            rows.entry(id).or_insert_with(|| blank(id)).replies = a.n.max(0) as u64;
        }
    }
    for (id, n) in &f.handled {
        rows.entry(*id)
            .or_insert_with(|| blank(*id))
            .tickets_handled = *n;
    }
    for ((id, kind), m) in &f.medians {
        let r = rows.entry(*id).or_insert_with(|| blank(*id));
        match kind.as_str() {
            "first_response" => r.median_first_response_seconds = Some(*m),
            "resolved" => r.median_resolution_seconds = Some(*m),
            _ => {}
        }
    }
    let ids: Vec<Uuid> = rows.keys().copied().collect();
    let names = names_of(pool, group, &ids).await?;
    for (id, r) in rows.iter_mut() {
        r.name = names.get(id).cloned();
    }
    Ok(rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(super::median(&mut []), None);
    }
}
