//! `tickets`: the current state of every ticket, for lists and detail views.
//!
//! Tables: `tickets` (one row per ticket) and `ticket_tags` (one row per
//! tag, for the tag filter). Per page, the touched tickets are loaded,
//! folded in memory and written back with one multi-row upsert.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerdesk_domain::pii::ERASED;
use ledgerdesk_domain::ticket::{Direction, Status};
use ledgerdesk_domain::{AnyEvent, TicketEvent, UserEvent};
use ledgerdesk_store::DbPool;
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, upsert_clause, Arg, DbRow, Record, Tx, Where};
use crate::personal::personal;
use crate::projection::{Event, Names, Projection};
use crate::schema::Table;
use crate::{clamp_limit, Page, ProjectionError};

const TABLES: &[Table] = &[
    Table {
        name: "tickets",
        columns: "
    id                TEXT PRIMARY KEY,
    subject           TEXT,                 -- personal (pii)
    status            TEXT NOT NULL,
    priority          TEXT NOT NULL,
    channel           TEXT NOT NULL,
    requester_name    TEXT,                 -- personal (pii)
    requester_email   TEXT,                 -- personal (pii)
    data_subject      TEXT,                 -- whose personal data the row holds (erasure)
    assignee          TEXT,
    department        TEXT,
    tags              TEXT NOT NULL,        -- JSON array, sorted
    message_count     {int} NOT NULL,
    rating            {int},
    created_at        {int} NOT NULL,       -- µs, recorded_at of ticket.created
    updated_at        {int} NOT NULL,       -- µs, recorded_at of the last event
    first_response_at {int},                -- first outbound public message
    resolved_at       {int},                -- last change to resolved (cleared on reopen)
    merged_into       TEXT,
    split_from        TEXT,
    version           {int} NOT NULL,       -- stream version applied
    position          {int} NOT NULL        -- log position applied
",
        indexes: &[
            ("tickets_updated", "updated_at, id"),
            ("tickets_status", "status, updated_at"),
            ("tickets_assignee", "assignee, updated_at"),
            ("tickets_department", "department, updated_at"),
            ("tickets_data_subject", "data_subject"),
        ],
    },
    Table {
        name: "ticket_tags",
        columns: "
    tag       TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    PRIMARY KEY (tag, ticket_id)
",
        indexes: &[("ticket_tags_ticket", "ticket_id")],
    },
];

const COLUMNS: &[&str] = &[
    "id",
    "subject",
    "status",
    "priority",
    "channel",
    "requester_name",
    "requester_email",
    "data_subject",
    "assignee",
    "department",
    "tags",
    "message_count",
    "rating",
    "created_at",
    "updated_at",
    "first_response_at",
    "resolved_at",
    "merged_into",
    "split_from",
    "version",
    "position",
];

/// One ticket's current state.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TicketRow {
    /// The ticket.
    pub id: Uuid,
    /// Subject line (personal data).
    pub subject: Option<String>,
    /// `new`, `open`, `pending`, `resolved` or `closed`.
    pub status: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// The channel it came through.
    pub channel: String,
    /// Requester's name (personal data).
    pub requester_name: Option<String>,
    /// Requester's email (personal data).
    pub requester_email: Option<String>,
    /// The requester as a data subject: `POST /admin/erasure` takes this id.
    pub data_subject: Option<Uuid>,
    /// Assigned agent.
    pub assignee: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Messages on the ticket (public, internal, chat, voice; moved ones leave with a split).
    pub message_count: u64,
    /// The customer's last rating.
    pub rating: Option<u8>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The first outbound public message.
    pub first_response_at: Option<DateTime<Utc>>,
    /// The last change to resolved, cleared when reopened.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The ticket it was merged into.
    pub merged_into: Option<Uuid>,
    /// The ticket it was split from.
    pub split_from: Option<Uuid>,
    /// Stream version applied.
    pub version: u64,
    /// Log position applied.
    pub position: u64,
}

impl Record for TicketRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        Ok(TicketRow {
            id: r.uuid("id")?.unwrap_or_default(),
            subject: r.text("subject")?,
            status: r.text("status")?.unwrap_or_default(),
            priority: r.text("priority")?.unwrap_or_default(),
            channel: r.text("channel")?.unwrap_or_default(),
            requester_name: r.text("requester_name")?,
            requester_email: r.text("requester_email")?,
            data_subject: r.uuid("data_subject")?,
            assignee: r.uuid("assignee")?,
            department: r.uuid("department")?,
            tags: r
                .text("tags")?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            message_count: r.int0("message_count")?.max(0) as u64,
            rating: r.int("rating")?.map(|v| v.clamp(0, 255) as u8),
            created_at: r.time("created_at")?.unwrap_or(epoch),
            updated_at: r.time("updated_at")?.unwrap_or(epoch),
            first_response_at: r.time("first_response_at")?,
            resolved_at: r.time("resolved_at")?,
            merged_into: r.uuid("merged_into")?,
            split_from: r.uuid("split_from")?,
            version: r.int0("version")?.max(0) as u64,
            position: r.int0("position")?.max(0) as u64,
        })
    }
}

impl TicketRow {
    /// Replace the personal fields, as an erasure leaves them.
    fn scrub(&mut self) {
        for field in [
            &mut self.subject,
            &mut self.requester_name,
            &mut self.requester_email,
        ] {
            if field.is_some() {
                *field = Some(ERASED.to_owned());
            }
        }
    }

    fn args(&self) -> Vec<Arg> {
        vec![
            self.id.into(),
            self.subject.clone().into(),
            self.status.clone().into(),
            self.priority.clone().into(),
            self.channel.clone().into(),
            self.requester_name.clone().into(),
            self.requester_email.clone().into(),
            self.data_subject.into(),
            self.assignee.into(),
            self.department.into(),
            serde_json::to_string(&self.tags).unwrap_or_default().into(),
            self.message_count.into(),
            self.rating.map(i64::from).into(),
            self.created_at.into(),
            self.updated_at.into(),
            self.first_response_at.into(),
            self.resolved_at.into(),
            self.merged_into.into(),
            self.split_from.into(),
            self.version.into(),
            self.position.into(),
        ]
    }
}

/// The `tickets` projection.
pub struct TicketsProjection;

#[async_trait]
impl Projection for TicketsProjection {
    fn name(&self) -> &'static str {
        "tickets"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    // And erasures (`user.personal_data_erased`): they must scrub the
    // personal data this table already copied in clear.
    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        stream_type == "ticket" || event_type == "user.personal_data_erased"
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let table = names.table("tickets");
        let tags_table = names.table("ticket_tags");
        let ids = crate::projection::ticket_ids(events);
        let erased: Vec<Uuid> = events
            .iter()
            .filter_map(|e| match &e.domain {
                Some(AnyEvent::User(UserEvent::PersonalDataErased { subject, .. })) => {
                    Some(*subject)
                }
                _ => None,
            })
            .collect();
        if ids.is_empty() && erased.is_empty() {
            return Ok(());
        }
        let select = format!("SELECT {} FROM {table} WHERE id IN", COLUMNS.join(", "));
        let mut state: HashMap<Uuid, TicketRow> = tx
            .fetch_in::<TicketRow>(&select, &ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let mut dirty = BTreeSet::new();
        let mut tags_dirty = BTreeSet::new();
        for e in events {
            if let Some(AnyEvent::Ticket(ev)) = &e.domain {
                let id = ev.ticket_id();
                if fold(&mut state, e, ev) {
                    dirty.insert(id);
                    if matches!(
                        ev,
                        TicketEvent::Created { .. } | TicketEvent::TagsChanged { .. }
                    ) {
                        tags_dirty.insert(id);
                    }
                }
            }
        }
        // Rows of this page may have been read before the key was destroyed.
        for t in state.values_mut() {
            if t.data_subject.is_some_and(|s| erased.contains(&s)) {
                t.scrub();
                dirty.insert(t.id);
            }
        }
        let rows = dirty
            .iter()
            .filter_map(|id| state.get(id))
            .map(TicketRow::args)
            .collect();
        tx.insert(&table, COLUMNS, &upsert_clause(&["id"], COLUMNS), rows)
            .await?;
        for subject in &erased {
            tx.execute(
                &format!(
                    "UPDATE {table} SET \
                     subject = CASE WHEN subject IS NULL THEN NULL ELSE $1 END, \
                     requester_name = CASE WHEN requester_name IS NULL THEN NULL ELSE $1 END, \
                     requester_email = CASE WHEN requester_email IS NULL THEN NULL ELSE $1 END \
                     WHERE data_subject = $2"
                ),
                vec![Arg::from(ERASED), Arg::from(*subject)],
            )
            .await?;
        }
        if !tags_dirty.is_empty() {
            let keys: Vec<String> = tags_dirty.iter().map(Uuid::to_string).collect();
            tx.delete_in(&tags_table, "ticket_id", &keys).await?;
            let rows = tags_dirty
                .iter()
                .filter_map(|id| state.get(id))
                .flat_map(|t| {
                    t.tags
                        .iter()
                        .map(|tag| vec![Arg::from(tag.as_str()), t.id.into()])
                })
                .collect();
            tx.insert(&tags_table, &["tag", "ticket_id"], "", rows)
                .await?;
        }
        Ok(())
    }
}

/// Fold one event into the page's state; false when it changed nothing
/// (an event for a ticket whose creation is unknown).
fn fold(state: &mut HashMap<Uuid, TicketRow>, e: &Event, ev: &TicketEvent) -> bool {
    use TicketEvent as E;
    let at = e.record.recorded_at;
    if let E::Created {
        ticket_id,
        channel,
        priority,
        department,
        tags,
        split_from,
        ..
    } = ev
    {
        let pii = personal(&e.payload);
        state.insert(
            *ticket_id,
            TicketRow {
                id: *ticket_id,
                subject: pii.text("subject"),
                status: Status::New.as_str().to_owned(),
                priority: priority.as_str().to_owned(),
                channel: channel.as_str().to_owned(),
                requester_name: pii.text("requester_name"),
                requester_email: pii.text("requester_email"),
                data_subject: pii.subject(),
                assignee: None,
                department: *department,
                tags: tags.clone(),
                message_count: 1,
                rating: None,
                created_at: at,
                updated_at: at,
                first_response_at: None,
                resolved_at: None,
                merged_into: None,
                split_from: *split_from,
                version: e.record.version,
                position: e.record.position,
            },
        );
        return true;
    }
    let Some(t) = state.get_mut(&ev.ticket_id()) else {
        tracing::debug!(
            position = e.record.position,
            "event for an unknown ticket skipped"
        );
        return false;
    };
    t.updated_at = at;
    t.version = e.record.version;
    t.position = e.record.position;
    match ev {
        E::Created { .. } => {}
        E::StatusChanged { to, .. } => {
            t.status = to.as_str().to_owned();
            match to {
                Status::Resolved => t.resolved_at = Some(at),
                Status::Open | Status::Pending | Status::New => t.resolved_at = None,
                Status::Closed => {}
            }
        }
        E::MessageAdded { direction, .. } => {
            t.message_count += 1;
            if *direction == Direction::Outbound && t.first_response_at.is_none() {
                t.first_response_at = Some(at);
            }
        }
        E::InternalMessageAdded { .. }
        | E::ChatMessageAdded { .. }
        | E::VoiceMessageAdded { .. } => {
            t.message_count += 1;
        }
        E::Transferred {
            to_agent,
            to_department,
            ..
        } => {
            t.assignee = *to_agent;
            t.department = *to_department;
        }
        E::TagsChanged { added, removed, .. } => {
            let mut tags: BTreeSet<String> = t.tags.drain(..).collect();
            tags.extend(added.iter().cloned());
            for r in removed {
                tags.remove(r);
            }
            t.tags = tags.into_iter().collect();
        }
        E::Ranked { rating, .. } => t.rating = Some(*rating),
        E::Split { message_ids, .. } => {
            t.message_count = t.message_count.saturating_sub(message_ids.len() as u64);
        }
        E::Merged { into, .. } => {
            t.merged_into = Some(*into);
            t.status = Status::Closed.as_str().to_owned();
        }
        E::PriorityChanged { to, .. } => t.priority = to.as_str().to_owned(),
        // The rest changes no column of the row; a new kind of ticket
        // event needs nothing here unless it has a column of its own.
        _ => {}
    }
    true
}

/// One ticket's row folded in memory from its own stream, the way the
/// projection folds it (time travel); `None` before it was created.
pub fn fold_stream(events: &[Event]) -> Option<TicketRow> {
    let mut state = HashMap::new();
    let mut id = None;
    for e in events {
        if let Some(AnyEvent::Ticket(ev)) = &e.domain {
            id = Some(ev.ticket_id());
            fold(&mut state, e, ev);
        }
    }
    id.and_then(|id| state.remove(&id))
}

/// Filters of [`list`]; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Status wire name.
    pub status: Option<String>,
    /// Assigned agent.
    pub assignee: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// A tag (normalised like the domain does).
    pub tag: Option<String>,
    /// Channel wire name.
    pub channel: Option<String>,
    /// Priority wire name.
    pub priority: Option<String>,
    /// Text in the subject (case-insensitive).
    pub q: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn encode_cursor(t: &TicketRow) -> String {
    format!("{}_{}", t.updated_at.timestamp_micros(), t.id)
}

fn decode_cursor(c: &str) -> Result<(i64, Uuid), ProjectionError> {
    let (at, id) = c.split_once('_').ok_or(ProjectionError::InvalidCursor)?;
    Ok((
        at.parse().map_err(|_| ProjectionError::InvalidCursor)?,
        id.parse().map_err(|_| ProjectionError::InvalidCursor)?,
    ))
}

/// Tickets matching `filter`, most recently updated first, with keyset
/// pagination on (updated_at, id).
pub async fn list(
    pool: &DbPool,
    filter: &TicketFilter,
) -> Result<Page<TicketRow>, ProjectionError> {
    let limit = clamp_limit(filter.limit);
    let mut w = Where::default();
    let eq = |w: &mut Where, col: &str, v: Option<Arg>| {
        if let Some(v) = v {
            let p = w.arg(v);
            w.and(format!("t.{col} = {p}"));
        }
    };
    eq(&mut w, "status", filter.status.clone().map(Arg::from));
    eq(&mut w, "assignee", filter.assignee.map(Arg::from));
    eq(&mut w, "department", filter.department.map(Arg::from));
    eq(&mut w, "channel", filter.channel.clone().map(Arg::from));
    eq(&mut w, "priority", filter.priority.clone().map(Arg::from));
    if let Some(tag) = &filter.tag {
        let tag =
            ledgerdesk_domain::ticket::normalise_tag(tag).unwrap_or_else(|_| tag.to_lowercase());
        let p = w.arg(tag);
        w.and(format!(
            "EXISTS (SELECT 1 FROM ticket_tags g WHERE g.ticket_id = t.id AND g.tag = {p})"
        ));
    }
    if let Some(q) = filter.q.as_deref().filter(|q| !q.trim().is_empty()) {
        let test = w.contains_text(&["t.subject"], q.trim());
        w.and(test);
    }
    if let Some(c) = &filter.cursor {
        let (at, id) = decode_cursor(c)?;
        let (pa, pi) = (w.arg(at), w.arg(id));
        w.and(format!("(t.updated_at, t.id) < ({pa}, {pi})"));
    }
    let pl = w.arg((limit + 1) as i64);
    let sql = format!(
        "SELECT {} FROM tickets t {} ORDER BY t.updated_at DESC, t.id DESC LIMIT {pl}",
        COLUMNS
            .iter()
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        w.sql()
    );
    let mut items: Vec<TicketRow> = db::fetch(pool, &sql, w.args).await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// One ticket.
pub async fn get(pool: &DbPool, id: Uuid) -> Result<Option<TicketRow>, ProjectionError> {
    let sql = format!("SELECT {} FROM tickets WHERE id = $1", COLUMNS.join(", "));
    Ok(db::fetch(pool, &sql, vec![id.into()])
        .await?
        .into_iter()
        .next())
}
