//! `conversation`: what was written on each ticket, in order — messages,
//! internal messages, notes, chat lines, calls, voice messages, forwards,
//! system messages and files — so that a page of a thread is one range
//! query on the primary key, however long the thread.
//!
//! Tables: `conversation_items`, keyed by (ticket, log position of the
//! event that wrote the item), and `ticket_links`, the merges into and the
//! splits out of each ticket (facts the ticket's own stream does not hold
//! all of: a merge is written on the merged ticket's stream).
//!
//! A split moves the listed messages to the new ticket: their rows change
//! ticket and remember `moved_from`, and keep their position, so the new
//! ticket's thread opens with the moved messages in their old order. A
//! merge moves nothing (the domain keeps the merged ticket's messages on
//! it; the surviving ticket gets a system message and a `merged_from`
//! link).
//!
//! [`Thread`] is the same fold in memory, for time travel: it reads one
//! ticket's stream up to a point and answers the items as they stood.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerdesk_domain::pii::ERASED;
use ledgerdesk_domain::ticket::Direction;
use ledgerdesk_domain::{AnyEvent, TicketEvent, UserEvent};
use ledgerdesk_store::{ActorKind, DbPool};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{self, Arg, DbRow, Record, Tx};
use crate::personal::personal;
use crate::projection::{Event, Names, Projection};
use crate::schema::Table;
use crate::{clamp_limit, Page, ProjectionError};

const TABLES: &[Table] = &[
    Table {
        name: "conversation_items",
        columns: "
    ticket_id        TEXT NOT NULL,        -- the ticket the item is on now
    position         {int} NOT NULL,       -- log position of the event that wrote it
    item_id          TEXT NOT NULL,        -- message, note or file id (else the event id)
    kind             TEXT NOT NULL,        -- message, internal_message, note, chat, call, …
    action           TEXT NOT NULL,        -- catalogue code of the event
    author_kind      TEXT NOT NULL,        -- agent, customer or system
    author_id        TEXT,                 -- the agent (customers: the data subject)
    body             TEXT,                 -- personal (pii), except system messages
    channel          TEXT,
    direction        TEXT,                 -- inbound or outbound
    internal         {int} NOT NULL,       -- 1 for internal messages and notes
    duration_seconds {int},                -- calls and voice messages
    file_name        TEXT,                 -- personal (pii)
    file_size        {int},
    content_type     TEXT,
    sha256           TEXT,
    at               {int} NOT NULL,       -- µs, recorded_at
    moved_from       TEXT,                 -- the ticket a split moved it from
    data_subject     TEXT,                 -- whose personal data the row holds (erasure)
    PRIMARY KEY (ticket_id, position)
",
        indexes: &[
            ("conversation_items_item", "item_id"),
            ("conversation_items_subject", "data_subject"),
        ],
    },
    Table {
        name: "ticket_links",
        columns: "
    ticket_id TEXT NOT NULL,
    relation  TEXT NOT NULL,               -- merged_from or split_into
    other_id  TEXT NOT NULL,
    position  {int} NOT NULL,              -- log position of the merge or split
    PRIMARY KEY (ticket_id, relation, other_id)
",
        indexes: &[],
    },
];

const COLUMNS: &[&str] = &[
    "ticket_id",
    "position",
    "item_id",
    "kind",
    "action",
    "author_kind",
    "author_id",
    "body",
    "channel",
    "direction",
    "internal",
    "duration_seconds",
    "file_name",
    "file_size",
    "content_type",
    "sha256",
    "at",
    "moved_from",
    "data_subject",
];

/// One item of a ticket's thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemRow {
    /// The ticket it is on.
    pub ticket_id: Uuid,
    /// Log position of the event that wrote it; the thread's order and
    /// cursor.
    pub position: u64,
    /// Message, note or file id; the event id for items without one.
    pub item_id: Uuid,
    /// `message`, `internal_message`, `note`, `chat`, `call`,
    /// `voice_message`, `forward`, `system_message` or `file`.
    pub kind: String,
    /// The catalogue code of the event (`ticket.message_added`, …).
    pub action: String,
    /// `agent`, `customer` or `system`.
    pub author_kind: String,
    /// The agent; for a customer, the data subject.
    pub author_id: Option<Uuid>,
    /// The text (personal data, except a system message's).
    pub body: Option<String>,
    /// The channel of a public message.
    pub channel: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// Internal messages and notes.
    pub internal: bool,
    /// Calls and voice messages.
    pub duration_seconds: Option<u32>,
    /// A file's name (personal data).
    pub file_name: Option<String>,
    /// A file's size in bytes.
    pub file_size: Option<u64>,
    /// A file's media type.
    pub content_type: Option<String>,
    /// A file's (or a voice message's recording's) SHA-256.
    pub sha256: Option<String>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The ticket a split moved it from.
    pub moved_from: Option<Uuid>,
    /// Whose personal data it holds.
    pub data_subject: Option<Uuid>,
}

impl Record for ItemRow {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(ItemRow {
            ticket_id: r.uuid("ticket_id")?.unwrap_or_default(),
            position: r.int0("position")?.max(0) as u64,
            item_id: r.uuid("item_id")?.unwrap_or_default(),
            kind: r.text("kind")?.unwrap_or_default(),
            action: r.text("action")?.unwrap_or_default(),
            author_kind: r.text("author_kind")?.unwrap_or_default(),
            author_id: r.uuid("author_id")?,
            body: r.text("body")?,
            channel: r.text("channel")?,
            direction: r.text("direction")?,
            internal: r.int0("internal")? != 0,
            duration_seconds: r
                .int("duration_seconds")?
                .map(|v| v.clamp(0, u32::MAX as i64) as u32),
            file_name: r.text("file_name")?,
            file_size: r.int("file_size")?.map(|v| v.max(0) as u64),
            content_type: r.text("content_type")?,
            sha256: r.text("sha256")?,
            at: r.time("at")?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            moved_from: r.uuid("moved_from")?,
            data_subject: r.uuid("data_subject")?,
        })
    }
}

impl ItemRow {
    fn args(&self) -> Vec<Arg> {
        vec![
            self.ticket_id.into(),
            self.position.into(),
            self.item_id.into(),
            self.kind.clone().into(),
            self.action.clone().into(),
            self.author_kind.clone().into(),
            self.author_id.into(),
            self.body.clone().into(),
            self.channel.clone().into(),
            self.direction.clone().into(),
            i64::from(self.internal).into(),
            self.duration_seconds.map(i64::from).into(),
            self.file_name.clone().into(),
            self.file_size.map(|s| s.min(i64::MAX as u64) as i64).into(),
            self.content_type.clone().into(),
            self.sha256.clone().into(),
            self.at.into(),
            self.moved_from.into(),
            self.data_subject.into(),
        ]
    }
}

/// A merge into, or a split out of, a ticket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// `merged_from` or `split_into`.
    pub relation: String,
    /// The other ticket.
    pub other_id: Uuid,
    /// Where in the log it happened.
    pub position: u64,
}

impl Record for Link {
    fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
        Ok(Link {
            relation: r.text("relation")?.unwrap_or_default(),
            other_id: r.uuid("other_id")?.unwrap_or_default(),
            position: r.int0("position")?.max(0) as u64,
        })
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

fn actor_kind(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Agent => "agent",
        ActorKind::Customer => "customer",
        ActorKind::System => "system",
    }
}

/// The thread item an event writes, if it writes one.
pub fn item_of(e: &Event, ev: &TicketEvent) -> Option<ItemRow> {
    use TicketEvent as E;
    let pii = personal(&e.payload);
    let acting = (actor_kind(e.metadata.actor_kind), e.metadata.actor_id);
    let customer = ("customer", pii.subject());
    let mut item = ItemRow {
        ticket_id: ev.ticket_id(),
        position: e.record.position,
        item_id: e.record.event_id,
        kind: String::new(),
        action: e
            .domain
            .as_ref()
            .map(|d| d.audit().action.code)
            .unwrap_or(e.record.event_type.as_str())
            .to_owned(),
        author_kind: String::new(),
        author_id: None,
        body: pii.text("body"),
        channel: None,
        direction: None,
        internal: false,
        duration_seconds: None,
        file_name: None,
        file_size: None,
        content_type: None,
        sha256: None,
        at: e.record.recorded_at,
        moved_from: None,
        data_subject: pii.subject(),
    };
    let (kind, (author_kind, author_id)) = match ev {
        // The opening message is the requester's, unless a split wrote it.
        E::Created {
            message_id,
            channel,
            split_from,
            ..
        } => {
            item.item_id = *message_id;
            item.channel = Some(channel.as_str().to_owned());
            let author = if split_from.is_some() {
                acting
            } else {
                item.direction = Some("inbound".into());
                customer
            };
            ("message", author)
        }
        E::MessageAdded {
            message_id,
            direction: d,
            channel,
            ..
        } => {
            item.item_id = *message_id;
            item.channel = Some(channel.as_str().to_owned());
            item.direction = Some(direction(*d).into());
            let author = match d {
                Direction::Inbound => customer,
                Direction::Outbound => acting,
            };
            ("message", author)
        }
        E::InternalMessageAdded { message_id, .. } => {
            item.item_id = *message_id;
            item.internal = true;
            ("internal_message", acting)
        }
        E::NoteAdded { note_id, .. } => {
            item.item_id = *note_id;
            item.internal = true;
            ("note", acting)
        }
        E::ChatMessageAdded { message_id, .. } => {
            item.item_id = *message_id;
            item.channel = Some("chat".into());
            ("chat", acting)
        }
        E::CallLogged {
            direction: d,
            duration_seconds,
            ..
        } => {
            item.channel = Some("call".into());
            item.direction = Some(direction(*d).into());
            item.duration_seconds = Some(*duration_seconds);
            ("call", acting)
        }
        E::VoiceMessageAdded {
            message_id,
            duration_seconds,
            file_sha256,
            ..
        } => {
            item.item_id = *message_id;
            item.channel = Some("call".into());
            item.duration_seconds = Some(*duration_seconds);
            item.sha256 = file_sha256.clone();
            ("voice_message", acting)
        }
        E::Forwarded { .. } => {
            item.body = pii.text("to");
            ("forward", acting)
        }
        E::SystemMessageAdded { text, .. } => {
            item.body = Some(text.clone());
            item.data_subject = None;
            ("system_message", ("system", None))
        }
        E::FileAttached {
            file_id,
            content_type,
            size,
            sha256,
            ..
        } => {
            item.item_id = *file_id;
            item.file_name = pii.text("name");
            item.file_size = Some(*size);
            item.content_type = Some(content_type.clone());
            item.sha256 = Some(sha256.clone());
            ("file", acting)
        }
        // Changes to the ticket's fields are not part of its thread; a
        // new kind of ticket event needs nothing here unless it adds one.
        _ => return None,
    };
    item.kind = kind.to_owned();
    item.author_kind = author_kind.to_owned();
    item.author_id = author_id;
    Some(item)
}

/// One ticket's thread folded in memory from its own stream (time travel).
#[derive(Debug, Default)]
pub struct Thread {
    /// The items, oldest first.
    pub items: Vec<ItemRow>,
    /// The split that created this ticket, when one did: the source ticket.
    pub split_from: Option<Uuid>,
    /// Tickets split out of this one.
    pub split_into: Vec<(Uuid, u64)>,
}

impl Thread {
    /// Items moved in by the split that created the ticket, before its own
    /// events are applied.
    pub fn seed(&mut self, moved: Vec<ItemRow>) {
        self.items.extend(moved);
        self.items.sort_by_key(|i| i.position);
    }

    /// Apply one event of the ticket's stream.
    pub fn apply(&mut self, e: &Event) {
        let Some(AnyEvent::Ticket(ev)) = &e.domain else {
            return;
        };
        match ev {
            TicketEvent::Created { split_from, .. } => self.split_from = *split_from,
            TicketEvent::Split {
                split_into,
                message_ids,
                ..
            } => {
                let moved: BTreeSet<Uuid> = message_ids.iter().copied().collect();
                self.items.retain(|i| !moved.contains(&i.item_id));
                self.split_into.push((*split_into, e.record.position));
            }
            _ => {}
        }
        if let Some(item) = item_of(e, ev) {
            self.items.push(item);
        }
    }
}

/// The items a split moved into `into`, as they read there (`moved_from`
/// set): `events` is the source's stream (up to the moment asked) and
/// `seed` the items a split had moved into the source before.
pub fn moved_by_split(seed: Vec<ItemRow>, events: &[Event], into: Uuid) -> Vec<ItemRow> {
    let is_the_split = |e: &Event| match &e.domain {
        Some(AnyEvent::Ticket(TicketEvent::Split {
            split_into,
            message_ids,
            ..
        })) if *split_into == into => Some(message_ids.iter().copied().collect::<BTreeSet<_>>()),
        _ => None,
    };
    let mut before = Thread::default();
    before.seed(seed);
    for e in events {
        if let Some(ids) = is_the_split(e) {
            return before
                .items
                .into_iter()
                .filter(|i| ids.contains(&i.item_id))
                .map(|mut i| {
                    i.moved_from = Some(i.ticket_id);
                    i.ticket_id = into;
                    i
                })
                .collect();
        }
        before.apply(e);
    }
    Vec::new()
}

/// The `conversation` projection.
pub struct ConversationProjection;

enum Step {
    Split {
        from: Uuid,
        into: Uuid,
        ids: Vec<Uuid>,
        position: u64,
    },
    Merged {
        from: Uuid,
        into: Uuid,
        position: u64,
    },
    Erased(Uuid),
}

#[async_trait]
impl Projection for ConversationProjection {
    fn name(&self) -> &'static str {
        "conversation"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    // And erasures: they scrub the personal data the rows copied in clear.
    fn wants(&self, stream_type: &str, event_type: &str) -> bool {
        stream_type == "ticket" || event_type == "user.personal_data_erased"
    }

    async fn apply(
        &self,
        events: &[Event],
        names: &Names,
        tx: &mut Tx,
    ) -> Result<(), ProjectionError> {
        let items = names.table("conversation_items");
        let links = names.table("ticket_links");
        let mut pending: Vec<Vec<Arg>> = Vec::new();
        for e in events {
            let step = match &e.domain {
                Some(AnyEvent::Ticket(ev)) => {
                    if let Some(item) = item_of(e, ev) {
                        pending.push(item.args());
                    }
                    match ev {
                        TicketEvent::Split {
                            ticket_id,
                            split_into,
                            message_ids,
                        } => Some(Step::Split {
                            from: *ticket_id,
                            into: *split_into,
                            ids: message_ids.clone(),
                            position: e.record.position,
                        }),
                        TicketEvent::Merged {
                            ticket_id, into, ..
                        } => Some(Step::Merged {
                            from: *ticket_id,
                            into: *into,
                            position: e.record.position,
                        }),
                        _ => None,
                    }
                }
                Some(AnyEvent::User(UserEvent::PersonalDataErased { subject, .. })) => {
                    Some(Step::Erased(*subject))
                }
                _ => None,
            };
            let Some(step) = step else { continue };
            // Rows of earlier events in the page must be there before a
            // split moves them or an erasure scrubs them.
            let rows = std::mem::take(&mut pending);
            tx.insert(&items, COLUMNS, "ON CONFLICT DO NOTHING", rows)
                .await?;
            let link_columns = &["ticket_id", "relation", "other_id", "position"];
            match step {
                Step::Split {
                    from,
                    into,
                    ids,
                    position,
                } => {
                    for chunk in ids.chunks(500) {
                        let sql = format!(
                            "UPDATE {items} SET ticket_id = $1, moved_from = $2 \
                             WHERE ticket_id = $2 AND item_id IN ({})",
                            db::placeholders(3, chunk.len())
                        );
                        let mut args = vec![Arg::from(into), Arg::from(from)];
                        args.extend(chunk.iter().map(|id| Arg::from(*id)));
                        tx.execute(&sql, args).await?;
                    }
                    let row = vec![
                        from.into(),
                        "split_into".into(),
                        into.into(),
                        position.into(),
                    ];
                    tx.insert(&links, link_columns, "ON CONFLICT DO NOTHING", vec![row])
                        .await?;
                }
                Step::Merged {
                    from,
                    into,
                    position,
                } => {
                    let row = vec![
                        into.into(),
                        "merged_from".into(),
                        from.into(),
                        position.into(),
                    ];
                    tx.insert(&links, link_columns, "ON CONFLICT DO NOTHING", vec![row])
                        .await?;
                }
                Step::Erased(subject) => {
                    tx.execute(
                        &format!(
                            "UPDATE {items} SET \
                             body = CASE WHEN body IS NULL THEN NULL ELSE $1 END, \
                             file_name = CASE WHEN file_name IS NULL THEN NULL ELSE $1 END \
                             WHERE data_subject = $2"
                        ),
                        vec![Arg::from(ERASED), Arg::from(subject)],
                    )
                    .await?;
                }
            }
        }
        tx.insert(&items, COLUMNS, "ON CONFLICT DO NOTHING", pending)
            .await?;
        Ok(())
    }
}

/// A page of `ticket_id`'s thread, oldest first: items after `cursor` (the
/// previous page's `next_cursor`), at most `limit` (default 50, at most 500).
pub async fn page(
    pool: &DbPool,
    ticket_id: Uuid,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page<ItemRow>, ProjectionError> {
    let limit = clamp_limit(limit);
    let after = match cursor {
        Some(c) => decode_cursor(c)?,
        None => -1,
    };
    let sql = format!(
        "SELECT {} FROM conversation_items WHERE ticket_id = $1 AND position > $2 \
         ORDER BY position LIMIT $3",
        COLUMNS.join(", ")
    );
    let items: Vec<ItemRow> = db::fetch(
        pool,
        &sql,
        vec![ticket_id.into(), after.into(), ((limit + 1) as i64).into()],
    )
    .await?;
    Ok(page_of(items, limit))
}

/// `items` (oldest first, at most `limit + 1`) as a page of `limit`.
pub fn page_of(mut items: Vec<ItemRow>, limit: usize) -> Page<ItemRow> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.position.to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// The position a cursor stands for.
pub fn decode_cursor(cursor: &str) -> Result<i64, ProjectionError> {
    cursor
        .parse::<i64>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or(ProjectionError::InvalidCursor)
}

/// How many items `ticket_id`'s thread holds.
pub async fn count(pool: &DbPool, ticket_id: Uuid) -> Result<u64, ProjectionError> {
    #[derive(Debug)]
    struct Count(i64);
    impl Record for Count {
        fn read(r: &dyn DbRow) -> Result<Self, sqlx::Error> {
            Ok(Count(r.int0("n")?))
        }
    }
    let rows: Vec<Count> = db::fetch(
        pool,
        "SELECT COUNT(*) AS n FROM conversation_items WHERE ticket_id = $1",
        vec![ticket_id.into()],
    )
    .await?;
    Ok(rows.first().map_or(0, |c| c.0.max(0) as u64))
}

/// The merges into and splits out of `ticket_id`, at or before `until`
/// when given.
pub async fn links(
    pool: &DbPool,
    ticket_id: Uuid,
    until: Option<u64>,
) -> Result<Vec<Link>, ProjectionError> {
    let until = until.map_or(i64::MAX, |p| p.min(i64::MAX as u64) as i64);
    Ok(db::fetch(
        pool,
        "SELECT relation, other_id, position FROM ticket_links \
         WHERE ticket_id = $1 AND position <= $2 ORDER BY position",
        vec![ticket_id.into(), until.into()],
    )
    .await?)
}
