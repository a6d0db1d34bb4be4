//! What an agent reads of a ticket: its header (`GET /tickets/{id}`) and
//! its thread (`GET /tickets/{id}/messages`, oldest first, keyset-paged on
//! the log position).
//!
//! Now: both come from the projections (`tickets` for the header,
//! `conversation` for the thread and the merge/split links). Without
//! `min_position` the handler waits for the log head as it was when the
//! request came in, so a client reads its own writes, bounded by
//! `projections.max_wait_ms` like every projection read.
//!
//! Then (`as_of` / `at_position`): both are folded from the ticket's own
//! stream up to the point, with the same fold the projections use, so the
//! past has the same shape. Messages a split moved in are taken from the
//! source's stream; `merged_from` (written on the other ticket's stream)
//! comes from the projection's links at or before the point.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_domain::{catalogue, Aggregate, AnyEvent, Ticket, TicketEvent};
use ledgerdesk_projections::conversation::{self, ItemRow, Thread};
use ledgerdesk_projections::tickets::{self as ticket_rows, TicketRow};
use ledgerdesk_projections::{Event, Page, DEFAULT_LIMIT, MAX_LIMIT};
use ledgerdesk_store::StreamRange;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::consistency::reached;
use crate::error::ApiError;
use crate::extract::Query;
use crate::routes::names::{names, Names};
use crate::routes::{etag, IdPath};
use crate::state::AppState;

/// How deep a chain of splits time travel follows back for moved messages.
const MAX_SPLIT_DEPTH: usize = 16;

/// `GET /tickets/{id}`: now, or as it stood at a moment.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// The ticket as it stood at this time (RFC 3339).
    pub as_of: Option<DateTime<Utc>>,
    /// The ticket as it stood once the log reached this position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub at_position: Option<u64>,
    /// Wait until the projections have applied this log position (default:
    /// the log head when the request came in).
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// `GET /tickets/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// At most this many items (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The thread as it stood at this time (RFC 3339).
    pub as_of: Option<DateTime<Utc>>,
    /// The thread as it stood once the log reached this position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub at_position: Option<u64>,
    /// Wait until the projection has applied this log position (default:
    /// the log head when the request came in).
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// The customer who asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequesterView {
    /// Name, or `[erased]`.
    pub name: Option<String>,
    /// Email, or `[erased]`.
    pub email: Option<String>,
    /// The data subject (`POST /admin/erasure` takes it).
    pub data_subject: Option<Uuid>,
}

/// A user or department by id and name.
#[derive(Debug, Serialize, ToSchema)]
pub struct Named {
    /// Its id.
    pub id: Uuid,
    /// Its name (absent when unknown).
    pub name: Option<String>,
}

/// Who wrote an item.
#[derive(Debug, Serialize, ToSchema)]
pub struct Author {
    /// The agent; for the customer, their data subject; absent for the system.
    pub id: Option<Uuid>,
    /// The agent's name, or the requester's (or `[erased]`).
    pub name: Option<String>,
    /// `agent`, `customer` or `system`.
    pub kind: String,
}

/// A file on an item.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attachment {
    /// File name (personal data: `[erased]` after an erasure).
    pub file_name: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
    /// Media type.
    pub content_type: Option<String>,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Where to download it.
    pub download_url: String,
}

/// One item of a ticket's thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationItem {
    /// Message, note or file id (the event id for calls, forwards and system
    /// messages).
    pub id: Uuid,
    /// Log position of the event that wrote it: the thread's order.
    pub position: u64,
    /// `message`, `internal_message`, `note`, `chat`, `call`,
    /// `voice_message`, `forward`, `system_message` or `file`.
    pub kind: String,
    /// The catalogue code of the event, e.g. `ticket.message_added`.
    pub action: String,
    /// The catalogue label, e.g. `Ticket – Message`.
    pub label: String,
    /// Who wrote it.
    pub author: Author,
    /// The text (a forward's: the address), or `[erased]`.
    pub body: Option<String>,
    /// The channel.
    pub channel: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// Internal messages and notes, which the customer never sees.
    pub internal: bool,
    /// Calls and voice messages.
    pub duration_seconds: Option<u32>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The ticket a split moved it from.
    pub moved_from: Option<Uuid>,
    /// Its files.
    pub attachments: Vec<Attachment>,
}

/// A page of a ticket's thread, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    /// The ticket.
    pub ticket_id: Uuid,
    /// The items.
    pub items: Vec<ConversationItem>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The log position the answer reflects: how far the projections had
    /// read; for a time-travel read, the ticket's last event at that point.
    pub position: u64,
}

/// A ticket as an agent sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    /// The ticket id.
    pub id: Uuid,
    /// Subject line, or `[erased]`.
    pub subject: Option<String>,
    /// Who asked.
    pub requester: RequesterView,
    /// `new`, `open`, `pending`, `resolved` or `closed`.
    pub status: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// The channel it came through.
    pub channel: String,
    /// Assigned agent.
    pub assignee: Option<Named>,
    /// Department.
    pub department: Option<Named>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// The customer's latest rating.
    pub rating: Option<u8>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The first reply to the customer.
    pub first_response_at: Option<DateTime<Utc>>,
    /// When it was last resolved (cleared when reopened).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The ticket it was merged into.
    pub merged_into: Option<Uuid>,
    /// Tickets merged into it.
    pub merged_from: Vec<Uuid>,
    /// The ticket it was split from.
    pub split_from: Option<Uuid>,
    /// Tickets split out of it.
    pub split_into: Vec<Uuid>,
    /// Messages on the ticket (public, internal, chat, voice).
    pub message_count: u64,
    /// The stream version (also the `ETag`).
    pub version: u64,
    /// The log position the answer reflects.
    pub position: u64,
    /// The first page of the thread, oldest first; follow
    /// `messages.next_cursor` on `GET /tickets/{id}/messages`.
    pub messages: ConversationPage,
}

fn not_found(id: Uuid, past: bool) -> ApiError {
    ApiError::NotFound {
        code: "ticket_not_found",
        detail: if past {
            format!("ticket {id} did not exist yet at that moment")
        } else {
            format!("ticket {id} does not exist")
        },
    }
}

/// A ticket's header row and all of its thread's items that a page may
/// show, as of now or a moment.
struct Read {
    row: TicketRow,
    page: Page<ItemRow>,
    merged_from: Vec<Uuid>,
    split_into: Vec<Uuid>,
    position: u64,
}

/// The moment asked for, as a log position; `None` for now.
async fn point(
    state: &AppState,
    as_of: Option<DateTime<Utc>>,
    at_position: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    match (as_of, at_position) {
        (Some(_), Some(_)) => Err(ApiError::bad_field(
            "as_of",
            "give as_of or at_position, not both",
        )),
        (Some(time), None) => Ok(Some(state.store.position_at(time).await?)),
        (None, p) => Ok(p),
    }
}

fn stream(id: Uuid) -> String {
    ledgerdesk_domain::stream_id(Ticket::STREAM_TYPE, id)
}

async fn events_until(state: &AppState, id: Uuid, until: u64) -> Result<Vec<Event>, ApiError> {
    let range = StreamRange {
        until_position: Some(until),
        ..StreamRange::all()
    };
    Ok(state
        .store
        .read_stream(&stream(id), range)
        .await?
        .into_iter()
        .map(|r| Event::decode(r, true))
        .collect())
}

/// What `id`'s thread starts with: the messages the split that created it
/// moved in, taken from the source's stream up to `until` (and, for a
/// source itself split off another ticket, from that one's, and so on).
fn moved_in<'a>(
    state: &'a AppState,
    id: Uuid,
    events: &'a [Event],
    until: u64,
    depth: usize,
) -> Pin<Box<dyn Future<Output = Result<Vec<ItemRow>, ApiError>> + 'a>> {
    Box::pin(async move {
        let source = events.iter().find_map(|e| match &e.domain {
            Some(AnyEvent::Ticket(TicketEvent::Created { split_from, .. })) => *split_from,
            _ => None,
        });
        let Some(source) = source.filter(|_| depth < MAX_SPLIT_DEPTH) else {
            return Ok(Vec::new());
        };
        let source_events = events_until(state, source, until).await?;
        let seed = moved_in(state, source, &source_events, until, depth + 1).await?;
        Ok(conversation::moved_by_split(seed, &source_events, id))
    })
}

async fn read_past(state: &AppState, id: Uuid, until: u64) -> Result<Read, ApiError> {
    let events = events_until(state, id, until).await?;
    let row = ticket_rows::fold_stream(&events).ok_or_else(|| not_found(id, true))?;
    let mut thread = Thread::default();
    thread.seed(moved_in(state, id, &events, until, 0).await?);
    for e in &events {
        thread.apply(e);
    }
    // The ticket's last event at the point stands for the point: a merge
    // into it wrote a system message on it in the same append, so no link
    // at or before the point is later than that event.
    let position = row.position;
    reached(state, "conversation", Some(position)).await?;
    let merged_from = conversation::links(&state.store.db(), id, Some(position))
        .await?
        .into_iter()
        .filter(|l| l.relation == "merged_from")
        .map(|l| l.other_id)
        .collect();
    Ok(Read {
        row,
        page: Page {
            items: thread.items,
            next_cursor: None,
        },
        merged_from,
        split_into: thread.split_into.into_iter().map(|(t, _)| t).collect(),
        position,
    })
}

async fn read_now(
    state: &AppState,
    id: Uuid,
    min_position: Option<u64>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Read, ApiError> {
    let target = match min_position {
        Some(p) => p,
        None => state.store.head().await?.position,
    };
    let tickets_at = reached(state, "tickets", Some(target)).await?;
    let conversation_at = reached(state, "conversation", Some(target)).await?;
    let pool = state.store.db();
    let row = ticket_rows::get(&pool, id)
        .await?
        .ok_or_else(|| not_found(id, false))?;
    let page = conversation::page(&pool, id, Some(limit), cursor).await?;
    let links = conversation::links(&pool, id, None).await?;
    let of = |relation: &str| {
        links
            .iter()
            .filter(|l| l.relation == relation)
            .map(|l| l.other_id)
            .collect()
    };
    Ok(Read {
        merged_from: of("merged_from"),
        split_into: of("split_into"),
        row,
        page,
        position: tickets_at.min(conversation_at),
    })
}

/// One page of `items` (oldest first) after `cursor`.
fn page_in_memory(
    items: Vec<ItemRow>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<ItemRow>, ApiError> {
    let after = match cursor {
        Some(c) => conversation::decode_cursor(c)?,
        None => -1,
    };
    let rest: Vec<ItemRow> = items
        .into_iter()
        .filter(|i| i.position as i64 > after)
        .take(limit + 1)
        .collect();
    Ok(conversation::page_of(rest, limit))
}

async fn read(
    state: &AppState,
    id: Uuid,
    until: Option<u64>,
    min_position: Option<u64>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Read, ApiError> {
    match until {
        Some(until) => {
            let mut read = read_past(state, id, until).await?;
            read.page = page_in_memory(std::mem::take(&mut read.page.items), limit, cursor)?;
            Ok(read)
        }
        None => read_now(state, id, min_position, limit, cursor).await,
    }
}

fn item_view(item: ItemRow, row: &TicketRow, names: &Names) -> ConversationItem {
    let name = match item.author_kind.as_str() {
        "customer" => row.requester_name.clone(),
        _ => item.author_id.and_then(|id| names.user(id)),
    };
    let attachments = item
        .sha256
        .clone()
        .map(|sha256| Attachment {
            file_name: item.file_name.clone(),
            size: item.file_size,
            content_type: item.content_type.clone(),
            download_url: format!("/api/v1/files/{sha256}"),
            sha256,
        })
        .into_iter()
        .collect();
    ConversationItem {
        id: item.item_id,
        position: item.position,
        label: catalogue::by_code(&item.action)
            .map_or_else(|| item.action.clone(), |a| a.label.to_owned()),
        action: item.action,
        kind: item.kind,
        author: Author {
            id: item.author_id,
            name,
            kind: item.author_kind,
        },
        body: item.body,
        channel: item.channel,
        direction: item.direction,
        internal: item.internal,
        duration_seconds: item.duration_seconds,
        at: item.at,
        moved_from: item.moved_from,
        attachments,
    }
}

async fn view(state: &AppState, id: Uuid, read: Read) -> Result<TicketView, ApiError> {
    let Read {
        row,
        page,
        merged_from,
        split_into,
        position,
    } = read;
    let mut users: Vec<Uuid> = page.items.iter().filter_map(|i| i.author_id).collect();
    users.extend(row.assignee);
    let departments: Vec<Uuid> = row.department.into_iter().collect();
    let names = names(state, &users, &departments).await?;
    let items = page
        .items
        .into_iter()
        .map(|i| item_view(i, &row, &names))
        .collect();
    Ok(TicketView {
        id,
        subject: row.subject,
        requester: RequesterView {
            name: row.requester_name,
            email: row.requester_email,
            data_subject: row.data_subject,
        },
        status: row.status,
        priority: row.priority,
        channel: row.channel,
        assignee: row.assignee.map(|id| Named {
            id,
            name: names.user(id),
        }),
        department: row.department.map(|id| Named {
            id,
            name: names.department(id),
        }),
        tags: row.tags,
        rating: row.rating,
        created_at: row.created_at,
        updated_at: row.updated_at,
        first_response_at: row.first_response_at,
        resolved_at: row.resolved_at,
        merged_into: row.merged_into,
        merged_from,
        split_from: row.split_from,
        split_into,
        message_count: row.message_count,
        version: row.version,
        position,
        messages: ConversationPage {
            ticket_id: id,
            items,
            next_cursor: page.next_cursor,
            position,
        },
    })
}

/// One ticket: subject, requester, status, people, times, links and the
/// first page of its thread; with `as_of` or `at_position`, as it stood
/// then.
#[utoipa::path(
    get,
    path = "/api/v1/tickets/{id}",
    tag = "tickets",
    params(IdPath, TicketQuery),
    responses((status = 200, description = "The ticket", body = TicketView, headers(("ETag" = String))))
)]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    query: Query<TicketQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.id;
    let until = point(&state, query.as_of, query.at_position).await?;
    let read = read(&state, id, until, query.min_position, DEFAULT_LIMIT, None).await?;
    let ticket = view(&state, id, read).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(ticket.version)))
        .json(ticket))
}

/// Ticket `id` now, or as it stood at `as_of`, with a page of its thread
/// (`limit` items after `cursor`): what the ticket routes answer and the
/// console's ticket page shows.
pub async fn ticket_view(
    state: &AppState,
    id: Uuid,
    as_of: Option<DateTime<Utc>>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<TicketView, ApiError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let until = point(state, as_of, None).await?;
    let read = read(state, id, until, None, limit, cursor).await?;
    view(state, id, read).await
}

/// The ticket's thread, oldest first, keyset-paged on the log position:
/// every message, internal message, note, chat line, call, voice message,
/// forward, system message and file. `Link: <…>; rel="next"` names the
/// next page.
#[utoipa::path(
    get,
    path = "/api/v1/tickets/{id}/messages",
    tag = "tickets",
    params(IdPath, MessagesQuery),
    responses((status = 200, description = "A page of the thread", body = ConversationPage,
        headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))))
)]
pub async fn messages(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    query: Query<MessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.id;
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let until = point(&state, q.as_of, q.at_position).await?;
    let read = read(
        &state,
        id,
        until,
        q.min_position,
        limit,
        q.cursor.as_deref(),
    )
    .await?;
    let ticket = view(&state, id, read).await?;
    let page = ticket.messages;
    let mut res = HttpResponse::Ok();
    if let Some(next) = &page.next_cursor {
        // A time-travel read keeps its moment as a position, which needs
        // no escaping and names the same point.
        let at = until.map_or_else(String::new, |p| format!("&at_position={p}"));
        res.insert_header((
            header::LINK,
            format!(
                "</api/v1/tickets/{id}/messages?limit={limit}&cursor={next}{at}>; rel=\"next\""
            ),
        ));
    }
    Ok(res.json(page))
}
