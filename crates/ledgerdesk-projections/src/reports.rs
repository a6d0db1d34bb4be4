//! `reports`: per agent and per department over a time range — tickets
//! created, replied to and resolved, median first-response and resolution
//! times, ratings.
//!
//! Tables: `report_tickets` (per ticket: creation time, current department
//! and assignee, first response) and `report_facts` (one row per fact:
//! `created`, `replied`, `first_response`, `resolved`, `rated`, with the
//! agent and department it counts for at that time). Counts and averages
//! are SQL aggregates; medians are computed in Rust.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerdesk_domain::ticket::{Direction, Status};
use ledgerdesk_domain::{AnyEvent, TicketEvent};
use ledgerdesk_store::{ActorKind, DbPool};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx};
use crate::runner::{Event, Names, Projection};
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
    kind       TEXT NOT NULL,            -- created, replied, first_response, resolved, rated
    at         {int} NOT NULL,           -- µs
    ticket_id  TEXT NOT NULL,
    agent      TEXT,
    department TEXT,
    seconds    {real},                   -- first_response, resolved: since creation
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

    fn wants(&self, stream_type: &str, _: &str) -> bool {
        stream_type == "ticket"
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let tickets_table = names.table("report_tickets");
        let facts_table = names.table("report_facts");
        let ids = crate::runner::ticket_ids(events);
        if ids.is_empty() {
            return Ok(());
        }
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
        let mut dirty = BTreeSet::new();
        let mut facts: Vec<Vec<Arg>> = Vec::new();
        for e in events {
            let Some(AnyEvent::Ticket(ev)) = &e.domain else {
                continue;
            };
            let at = e.at();
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
                TicketEvent::Transferred {
                    to_agent,
                    to_department,
                    ..
                } => {
                    t.assignee = *to_agent;
                    t.department = *to_department;
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
        tx.insert(&facts_table, FACT_COLUMNS, "", facts).await?;
        Ok(())
    }
}

/// One agent's or department's figures over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    /// The agent or department.
    pub id: Uuid,
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
    report(pool, "agent", from, to).await
}

/// Per department, for facts recorded in `[from, to)`.
pub async fn departments(
    pool: &DbPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    report(pool, "department", from, to).await
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

async fn report(
    pool: &DbPool,
    key: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    let range = || vec![Arg::from(from), Arg::from(to)];
    let aggs: Vec<Agg> = db::fetch(
        pool,
        &format!(
            "SELECT {key} AS k, kind, COUNT(*) AS n, COUNT(DISTINCT ticket_id) AS tickets, \
             AVG(CAST(rating AS DOUBLE PRECISION)) AS avg_rating \
             FROM report_facts WHERE at >= $1 AND at < $2 AND {key} IS NOT NULL GROUP BY {key}, kind"
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
    let mut rows: BTreeMap<Uuid, ReportRow> = BTreeMap::new();
    let blank = |id| ReportRow {
        id,
        tickets_created: 0,
        tickets_replied: 0,
        tickets_resolved: 0,
        median_first_response_seconds: None,
        median_resolution_seconds: None,
        ratings: 0,
        average_rating: None,
    };
    for a in aggs {
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
    let mut samples: HashMap<(Uuid, String), Vec<f64>> = HashMap::new();
    for Duration(k, kind, s) in durations {
        if let Some(k) = k {
            samples.entry((k, kind)).or_default().push(s);
        }
    }
    for ((id, kind), mut values) in samples {
        let r = rows.entry(id).or_insert_with(|| blank(id));
        match kind.as_str() {
            "first_response" => r.median_first_response_seconds = median(&mut values),
            "resolved" => r.median_resolution_seconds = median(&mut values),
            _ => {}
        }
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
