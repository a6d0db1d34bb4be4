//! `audit`: one row per event of the log, for the audit view, and its
//! search ([`search`], with the query language in [`query`]).
//!
//! Tables: `audit_log` (one row per position) and `audit_actors` (each
//! user's name and department, kept from user events so a row records the
//! actor's department at the time of the event).

pub mod query;

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerdesk_domain::{AnyEvent, UserEvent};
use ledgerdesk_store::{ActorKind, DbPool};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx, Where};
use crate::projection::{Event, Names, Projection};
use crate::schema::Table;
use crate::{clamp_limit, Page, ProjectionError};

const TABLES: &[Table] = &[
    Table {
        name: "audit_log",
        columns: "
    position         {int} PRIMARY KEY,   -- the event's log position
    event_id         TEXT NOT NULL,
    recorded_at      {int} NOT NULL,      -- µs
    actor_id         TEXT,
    actor_name       TEXT,
    actor_kind       TEXT NOT NULL,       -- agent, customer or system
    actor_department TEXT,                -- the actor's department when it acted
    action           TEXT NOT NULL,       -- catalogue code
    label            TEXT NOT NULL,
    ticket_id        TEXT,
    description      TEXT NOT NULL,
    changes          TEXT NOT NULL,       -- JSON [{field, before, after}]
    ip               TEXT,
    user_agent       TEXT,
    correlation_id   TEXT,
    event_type       TEXT NOT NULL,
    stream_id        TEXT NOT NULL
",
        indexes: &[
            ("audit_log_action", "action, position"),
            ("audit_log_actor", "actor_id, position"),
            // One agent's one action: the investigator's commonest question.
            ("audit_log_actor_action", "actor_id, action, position"),
            ("audit_log_department", "actor_department, position"),
            ("audit_log_ticket", "ticket_id, position"),
            ("audit_log_time", "recorded_at"),
        ],
    },
    Table {
        name: "audit_actors",
        columns: "
    id         TEXT PRIMARY KEY,
    name       TEXT,
    department TEXT
",
        indexes: &[],
    },
];

/// The columns of `audit_log`, in order; [`AuditRow`] serialises under
/// the same names.
pub const COLUMNS: &[&str] = &[
    "position",
    "event_id",
    "recorded_at",
    "actor_id",
    "actor_name",
    "actor_kind",
    "actor_department",
    "action",
    "label",
    "ticket_id",
    "description",
    "changes",
    "ip",
    "user_agent",
    "correlation_id",
    "event_type",
    "stream_id",
];

/// One line of the audit view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// The event's log position (the cursor).
    pub position: u64,
    /// The event.
    pub event_id: Uuid,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who acted.
    pub actor_id: Option<Uuid>,
    /// The actor's name then (users only).
    pub actor_name: Option<String>,
    /// `agent`, `customer` or `system`.
    pub actor_kind: String,
    /// The actor's department then.
    pub actor_department: Option<Uuid>,
    /// Catalogue action code (the event type for events outside the catalogue).
    pub action: String,
    /// Its label.
    pub label: String,
    /// The ticket concerned.
    pub ticket_id: Option<Uuid>,
    /// One line, free of personal data.
    pub description: String,
    /// `[{"field", "before", "after"}]`.
    pub changes: Value,
    /// The caller's IP.
    pub ip: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// The request id.
    pub correlation_id: Option<String>,
    /// The stored event type.
    pub event_type: String,
    /// The stream.
    pub stream_id: String,
}

impl Record for AuditRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(AuditRow {
            position: r.int0("position")?.max(0) as u64,
            event_id: r.uuid("event_id")?.unwrap_or_default(),
            recorded_at: r.time("recorded_at")?.unwrap_or_default(),
            actor_id: r.uuid("actor_id")?,
            actor_name: r.text("actor_name")?,
            actor_kind: r.text("actor_kind")?.unwrap_or_default(),
            actor_department: r.uuid("actor_department")?,
            action: r.text("action")?.unwrap_or_default(),
            label: r.text("label")?.unwrap_or_default(),
            ticket_id: r.uuid("ticket_id")?,
            description: r.text("description")?.unwrap_or_default(),
            changes: r
                .text("changes")?
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or(Value::Null),
            ip: r.text("ip")?,
            user_agent: r.text("user_agent")?,
            correlation_id: r.text("correlation_id")?,
            event_type: r.text("event_type")?.unwrap_or_default(),
            stream_id: r.text("stream_id")?.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Default)]
struct Actor {
    name: Option<String>,
    department: Option<Uuid>,
}

struct ActorRow(Uuid, Actor);

impl Record for ActorRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(ActorRow(
            r.uuid("id")?.unwrap_or_default(),
            Actor {
                name: r.text("name")?,
                department: r.uuid("department")?,
            },
        ))
    }
}

fn kind_str(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Agent => "agent",
        ActorKind::Customer => "customer",
        ActorKind::System => "system",
    }
}

/// The `audit` projection.
pub struct AuditProjection;

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let log = names.table("audit_log");
        let actors_table = names.table("audit_actors");
        let mut keys = BTreeSet::new();
        for e in events {
            if let Some(id) = e.metadata.actor_id {
                keys.insert(id);
            }
            if let Some(AnyEvent::User(u)) = &e.domain {
                keys.insert(u.user_id());
            }
        }
        let keys: Vec<String> = keys.iter().map(Uuid::to_string).collect();
        let mut actors: HashMap<Uuid, Actor> = if keys.is_empty() {
            HashMap::new()
        } else {
            tx.fetch_in::<ActorRow>(
                &format!("SELECT id, name, department FROM {actors_table} WHERE id IN"),
                &keys,
            )
            .await?
            .into_iter()
            .map(|ActorRow(id, a)| (id, a))
            .collect()
        };
        let mut dirty = BTreeSet::new();
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            // The user's own state first, so `user.created` shows its name.
            if let Some(AnyEvent::User(u)) = &e.domain {
                match u {
                    UserEvent::Created {
                        user_id,
                        name,
                        department,
                        ..
                    } => {
                        actors.insert(
                            *user_id,
                            Actor {
                                name: Some(name.clone()),
                                department: *department,
                            },
                        );
                        dirty.insert(*user_id);
                    }
                    UserEvent::Updated {
                        user_id,
                        name,
                        department,
                        ..
                    } => {
                        let a = actors.entry(*user_id).or_default();
                        if let Some(n) = name {
                            a.name = Some(n.after.clone());
                        }
                        if let Some(d) = department {
                            a.department = d.after;
                        }
                        dirty.insert(*user_id);
                    }
                    _ => {}
                }
            }
            rows.push(row(e, &actors));
        }
        tx.insert(&log, COLUMNS, "", rows).await?;
        let actor_rows = dirty
            .iter()
            .filter_map(|id| actors.get(id).map(|a| (id, a)))
            .map(|(id, a)| vec![Arg::from(*id), a.name.clone().into(), a.department.into()])
            .collect();
        let cols = ["id", "name", "department"];
        tx.insert(
            &actors_table,
            &cols,
            &upsert_clause(&["id"], &cols),
            actor_rows,
        )
        .await?;
        Ok(())
    }
}

fn row(e: &Event, actors: &HashMap<Uuid, Actor>) -> Vec<Arg> {
    let r = &e.record;
    let m = &e.metadata;
    let (action, label, description, ticket_id, changes) = match &e.domain {
        Some(ev) => {
            let a = ev.audit();
            let changes = a.changes_json().to_string();
            (
                a.action.code.to_owned(),
                a.action.label.to_owned(),
                a.description,
                a.ticket_id,
                changes,
            )
        }
        None => (
            r.event_type.clone(),
            r.event_type.clone(),
            String::new(),
            None,
            "[]".to_owned(),
        ),
    };
    let actor = m.actor_id.and_then(|id| actors.get(&id));
    vec![
        r.position.into(),
        r.event_id.into(),
        r.recorded_at.into(),
        m.actor_id.into(),
        actor.and_then(|a| a.name.clone()).into(),
        kind_str(m.actor_kind).into(),
        actor.and_then(|a| a.department).into(),
        action.into(),
        label.into(),
        ticket_id.into(),
        description.into(),
        changes.into(),
        m.ip.clone().into(),
        m.user_agent.clone().into(),
        m.correlation_id.clone().into(),
        r.event_type.as_str().into(),
        r.stream_id.as_str().into(),
    ]
}

/// Filters of [`search`]. Different filters combine with AND; a list
/// matches any of its values, an exclusion list none of them.
///
/// [`query::parse`] builds one from the audit query language and
/// [`query::render`] writes one back as a query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Action codes.
    pub actions: Vec<String>,
    /// Actor ids.
    pub actors: Vec<Uuid>,
    /// The actors' departments at the time.
    pub departments: Vec<Uuid>,
    /// Tickets.
    pub tickets: Vec<Uuid>,
    /// The caller's IP, exactly.
    pub ips: Vec<String>,
    /// Texts that must each appear in the description or the changes
    /// (case-insensitive).
    pub text: Vec<String>,
    /// What must not match.
    pub exclude: Exclusions,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// Only rows before this position (newest-first paging: the previous
    /// page's last position).
    pub before_position: Option<u64>,
    /// Only rows after this position, and oldest first (following the log).
    pub after_position: Option<u64>,
}

/// The negated half of an [`AuditFilter`]: rows matching any of these are
/// left out. A row without the value (a system action has no actor) is
/// never left out by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    /// Action codes.
    pub actions: Vec<String>,
    /// Actor ids.
    pub actors: Vec<Uuid>,
    /// Departments.
    pub departments: Vec<Uuid>,
    /// Tickets.
    pub tickets: Vec<Uuid>,
    /// IPs.
    pub ips: Vec<String>,
    /// Texts.
    pub text: Vec<String>,
}

fn uuids(values: &[Uuid]) -> Vec<Arg> {
    values.iter().map(|v| Arg::from(*v)).collect()
}

fn texts(values: &[String]) -> Vec<Arg> {
    values.iter().map(|v| Arg::from(v.as_str())).collect()
}

impl AuditFilter {
    /// Whether `row` passes the filter, decided in memory the way
    /// [`Self::where_clause`] decides it in SQL (the live stream filters
    /// the rows it is handed with it; keep the two side by side). `None`
    /// when the filter searches text, which only the database matches the
    /// way a search does.
    pub fn admits(&self, row: &AuditRow) -> Option<bool> {
        fn any<T: PartialEq>(wanted: &[T], value: Option<&T>) -> bool {
            wanted.is_empty() || value.is_some_and(|v| wanted.contains(v))
        }
        fn none<T: PartialEq>(unwanted: &[T], value: Option<&T>) -> bool {
            value.is_none_or(|v| !unwanted.contains(v))
        }
        let x = &self.exclude;
        let kept = any(&self.actions, Some(&row.action))
            && any(&self.actors, row.actor_id.as_ref())
            && any(&self.departments, row.actor_department.as_ref())
            && any(&self.tickets, row.ticket_id.as_ref())
            && any(&self.ips, row.ip.as_ref())
            && none(&x.actions, Some(&row.action))
            && none(&x.actors, row.actor_id.as_ref())
            && none(&x.departments, row.actor_department.as_ref())
            && none(&x.tickets, row.ticket_id.as_ref())
            && none(&x.ips, row.ip.as_ref())
            && self.from.is_none_or(|t| row.recorded_at >= t)
            && self.to.is_none_or(|t| row.recorded_at < t);
        let text = self
            .text
            .iter()
            .chain(&x.text)
            .any(|t| !t.trim().is_empty());
        match (kept, text) {
            (false, _) => Some(false),
            (true, false) => Some(true),
            (true, true) => None,
        }
    }

    fn where_clause(&self) -> Where {
        let mut w = Where::default();
        w.any_of("action", texts(&self.actions));
        w.any_of("actor_id", uuids(&self.actors));
        w.any_of("actor_department", uuids(&self.departments));
        w.any_of("ticket_id", uuids(&self.tickets));
        w.any_of("ip", texts(&self.ips));
        let x = &self.exclude;
        w.none_of("action", texts(&x.actions));
        w.none_of("actor_id", uuids(&x.actors));
        w.none_of("actor_department", uuids(&x.departments));
        w.none_of("ticket_id", uuids(&x.tickets));
        w.none_of("ip", texts(&x.ips));
        for (terms, negate) in [(&self.text, ""), (&x.text, "NOT ")] {
            for t in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
                let test = w.contains_text(&["description", "changes"], t);
                w.and(format!("{negate}{test}"));
            }
        }
        // `recorded_at` never decreases along the log (the store's writer
        // takes the later of the clock and the tip's time), so a time bound
        // is also a position bound. With it the `(…, position)` indexes seek
        // straight to the period instead of walking back from the newest
        // row and reading each row's time (docs/benchmarks.md: 10M rows).
        if let Some(from) = self.from {
            let p = w.arg(from);
            w.and(format!(
                "recorded_at >= {p} AND position >= {}",
                first_position_at(&p)
            ));
        }
        if let Some(to) = self.to {
            let p = w.arg(to);
            w.and(format!(
                "recorded_at < {p} AND position < {}",
                first_position_at(&p)
            ));
        }
        if let Some(before) = self.before_position {
            let p = w.arg(before);
            w.and(format!("position < {p}"));
        }
        if let Some(after) = self.after_position {
            let p = w.arg(after);
            w.and(format!("position > {p}"));
        }
        w
    }
}

/// SQL for the first position recorded at or after the time in
/// placeholder `p` (past the end when there is none).
fn first_position_at(p: &str) -> String {
    format!(
        "COALESCE((SELECT position FROM audit_log WHERE recorded_at >= {p} \
         ORDER BY recorded_at, position LIMIT 1), {})",
        i64::MAX
    )
}

/// Audit rows matching `filter`: newest first, or oldest first when
/// `after_position` is set. The cursor is a position, so pages stay stable
/// while new events arrive.
pub async fn search(
    pool: &DbPool,
    filter: &AuditFilter,
) -> Result<Page<AuditRow>, ProjectionError> {
    let limit = clamp_limit(filter.limit);
    let mut w = filter.where_clause();
    let order = if filter.after_position.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let pl = w.arg((limit + 1) as i64);
    let sql = format!(
        "SELECT {} FROM audit_log {} ORDER BY position {order} LIMIT {pl}",
        COLUMNS.join(", "),
        w.sql()
    );
    let mut items: Vec<AuditRow> = db::fetch(pool, &sql, w.args).await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| r.position.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The number of audit rows (one per event applied).
pub async fn count(pool: &DbPool) -> Result<u64, ProjectionError> {
    struct N(i64);
    impl Record for N {
        fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
            Ok(N(r.int0("n")?))
        }
    }
    let rows: Vec<N> = db::fetch(pool, "SELECT COUNT(*) AS n FROM audit_log", vec![]).await?;
    Ok(rows.first().map_or(0, |n| n.0.max(0) as u64))
}
