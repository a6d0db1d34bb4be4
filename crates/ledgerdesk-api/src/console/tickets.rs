//! The ticket pages: the list with its filters, a ticket with its whole
//! conversation, and its history; both of a ticket "as it stood at" a
//! moment. Each reads through the function its API route calls
//! ([`views::ticket_page`], [`conversation::ticket_view`],
//! [`tickets::ticket_history`]).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use askama::Template;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use ledgerdesk_domain::ticket::TicketAction;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::IdPath;
use crate::routes::conversation::{self, TicketView};
use crate::routes::names::names;
use crate::routes::tickets::{self, AsOf};
use crate::routes::views::{self, TicketQuery};
use crate::state::AppState;

use super::page::{html, Chrome, PageResult, Time};

/// Tickets per page of the list.
const LIST_PAGE: usize = 50;
/// Items per page of a conversation.
const THREAD_PAGE: usize = 200;

fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn uuid(name: &str, v: &str) -> Result<Option<Uuid>, ApiError> {
    if v.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(v)
        .map(Some)
        .map_err(|_| ApiError::bad_field(name, format!("{name} must be an id (UUID)")))
}

fn some(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// A choice in a menu.
#[derive(Debug)]
pub struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices(values: &[(&str, &str)], current: &str) -> Vec<Choice> {
    values
        .iter()
        .map(|(v, l)| Choice {
            value: v.to_string(),
            label: l.to_string(),
            selected: *v == current,
        })
        .collect()
}

/// One ticket of the list.
#[derive(Debug)]
pub struct ListRow {
    id: String,
    subject: String,
    requester: String,
    status: String,
    priority: String,
    assignee: String,
    department: String,
    tags: String,
    updated: Time,
}

#[derive(Template)]
#[template(path = "console/tickets.html")]
struct ListPage {
    chrome: Option<Chrome>,
    q: String,
    tag: String,
    statuses: Vec<Choice>,
    priorities: Vec<Choice>,
    agents: Vec<Choice>,
    departments: Vec<Choice>,
    rows: Vec<ListRow>,
    error: Option<String>,
    next: Option<String>,
    first: Option<String>,
}

const STATUSES: &[(&str, &str)] = &[
    ("", "Any status"),
    ("new", "New"),
    ("open", "Open"),
    ("pending", "Pending"),
    ("resolved", "Resolved"),
    ("closed", "Closed"),
];
const PRIORITIES: &[(&str, &str)] = &[
    ("", "Any priority"),
    ("low", "Low"),
    ("normal", "Normal"),
    ("high", "High"),
    ("urgent", "Urgent"),
];

/// `GET /console/tickets`.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> PageResult {
    let chrome = Chrome::of(&state, &req, "/console/tickets").await?;
    let p = pairs(&req);
    let pool = state.store.db();
    let hidden: Vec<Uuid> = state.helpdesk.system_account().await?.into_iter().collect();
    let (people_rows, dept_rows) = super::people_and_departments(&pool, &hidden).await?;
    let mut view = ListPage {
        chrome: Some(chrome),
        q: get(&p, "q").to_string(),
        tag: get(&p, "tag").to_string(),
        statuses: choices(STATUSES, get(&p, "status")),
        priorities: choices(PRIORITIES, get(&p, "priority")),
        agents: people_rows
            .iter()
            .filter(|u| u.role != "auditor")
            .map(|u| Choice {
                value: u.id.to_string(),
                label: u.name.clone(),
                selected: u.id.to_string() == get(&p, "assignee"),
            })
            .collect(),
        departments: dept_rows
            .iter()
            .map(|d| Choice {
                value: d.id.to_string(),
                label: d.name.clone(),
                selected: d.id.to_string() == get(&p, "department"),
            })
            .collect(),
        rows: Vec::new(),
        error: None,
        next: None,
        first: None,
    };
    // As on the audit page: the reader's own last change is listed.
    let head = state.store.head().await.map_err(ApiError::from)?.position;
    let query = (|| {
        Ok::<_, ApiError>(TicketQuery {
            status: some(get(&p, "status")),
            assignee: uuid("assignee", get(&p, "assignee"))?,
            department: uuid("department", get(&p, "department"))?,
            tag: some(get(&p, "tag")),
            channel: some(get(&p, "channel")),
            priority: some(get(&p, "priority")),
            q: some(get(&p, "q")),
            limit: Some(LIST_PAGE),
            cursor: some(get(&p, "cursor")),
            min_position: Some(head),
        })
    })();
    let found = match query {
        Ok(q) => views::ticket_page(&state, q).await,
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(found) => found,
        Err(e @ ApiError::BadRequest { .. }) => {
            view.error = Some(e.to_string());
            return Ok(html(StatusCode::BAD_REQUEST, &view));
        }
        Err(e) => return Err(e.into()),
    };
    let user_ids: Vec<Uuid> = found.items.iter().filter_map(|t| t.assignee).collect();
    let dept_ids: Vec<Uuid> = found.items.iter().filter_map(|t| t.department).collect();
    let n = names(&state, &user_ids, &dept_ids).await?;
    view.rows = found
        .items
        .iter()
        .map(|t| ListRow {
            id: t.id.to_string(),
            subject: t.subject.clone().unwrap_or_else(|| "(no subject)".into()),
            requester: t
                .requester_name
                .clone()
                .or_else(|| t.requester_email.clone())
                .unwrap_or_default(),
            status: t.status.clone(),
            priority: t.priority.clone(),
            assignee: t.assignee.and_then(|a| n.user(a)).unwrap_or_default(),
            department: t
                .department
                .and_then(|d| n.department(d))
                .unwrap_or_default(),
            tags: t.tags.join(", "),
            updated: t.updated_at.into(),
        })
        .collect();
    let mut own = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p {
        if k != "cursor" && !v.is_empty() {
            own.append_pair(k, v);
        }
    }
    let own = own.finish();
    let sep = if own.is_empty() { "" } else { "&" };
    view.next = found.next_cursor.map(|c| {
        let c: String = form_urlencoded::byte_serialize(c.as_bytes()).collect();
        format!("/console/tickets?{own}{sep}cursor={c}")
    });
    view.first = (!get(&p, "cursor").is_empty()).then(|| format!("/console/tickets?{own}"));
    Ok(html(StatusCode::OK, &view))
}

/// `as_of` as typed in the page (a `datetime-local` value in the reader's
/// zone, `tz` minutes east of UTC) or as RFC 3339.
fn as_of(p: &[(String, String)]) -> Result<Option<DateTime<Utc>>, ApiError> {
    let text = get(p, "as_of");
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let bad = || {
        ApiError::bad_field(
            "as_of",
            "as_of must be a date and time, e.g. 2026-01-31T14:00",
        )
    };
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| bad())?;
    let minutes = match get(p, "tz") {
        "" => 0,
        tz => tz
            .parse::<i32>()
            .ok()
            .filter(|m| (-840..=840).contains(m))
            .ok_or_else(|| ApiError::bad_field("tz", "tz must be minutes east of UTC"))?,
    };
    let zone = FixedOffset::east_opt(minutes * 60).ok_or_else(bad)?;
    zone.from_local_datetime(&local)
        .single()
        .map(|t| Some(t.with_timezone(&Utc)))
        .ok_or_else(bad)
}

/// One item of the conversation.
#[derive(Debug)]
pub struct Item {
    kind: String,
    label: String,
    author: String,
    author_kind: String,
    body: String,
    internal: bool,
    time: Time,
    files: Vec<File>,
}

/// An attachment.
#[derive(Debug)]
pub struct File {
    name: String,
    size: String,
    href: String,
}

/// The header of a ticket page.
#[derive(Debug)]
pub struct Header {
    id: String,
    subject: String,
    requester: String,
    requester_email: String,
    status: String,
    priority: String,
    channel: String,
    assignee: String,
    department: String,
    tags: Vec<String>,
    created: Time,
    updated: Time,
    merged_into: Option<String>,
}

fn header(t: &TicketView) -> Header {
    Header {
        id: t.id.to_string(),
        subject: t.subject.clone().unwrap_or_else(|| "(no subject)".into()),
        requester: t.requester.name.clone().unwrap_or_default(),
        requester_email: t.requester.email.clone().unwrap_or_default(),
        status: t.status.clone(),
        priority: t.priority.clone(),
        channel: t.channel.clone(),
        assignee: t
            .assignee
            .as_ref()
            .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
            .unwrap_or_else(|| "Unassigned".into()),
        department: t
            .department
            .as_ref()
            .map(|d| d.name.clone().unwrap_or_else(|| d.id.to_string()))
            .unwrap_or_default(),
        tags: t.tags.clone(),
        created: t.created_at.into(),
        updated: t.updated_at.into(),
        merged_into: t.merged_into.map(|m| m.to_string()),
    }
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => String::new(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[derive(Template)]
#[template(path = "console/ticket.html")]
struct TicketPage {
    chrome: Option<Chrome>,
    t: Header,
    items: Vec<Item>,
    more: Option<String>,
    as_of: Option<Time>,
    as_of_input: String,
    tz: String,
    tab: &'static str,
    history: Vec<HistoryRow>,
    /// The reply, note, status and assign forms (staff, and only now, not
    /// in the past).
    forms: Option<Forms>,
}

/// What the action forms offer.
#[derive(Debug)]
pub struct Forms {
    statuses: Vec<Choice>,
    agents: Vec<Choice>,
    departments: Vec<Choice>,
}

/// One event of the history tab.
#[derive(Debug)]
pub struct HistoryRow {
    time: Time,
    who: String,
    label: String,
    description: String,
    changes: Vec<(String, String, String)>,
}

fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn ticket_page(
    state: &AppState,
    req: &HttpRequest,
    id: Uuid,
    tab: &'static str,
) -> PageResult {
    let chrome = Chrome::of(state, req, "/console/tickets").await?;
    let p = pairs(req);
    let when = as_of(&p)?;
    let cursor = some(get(&p, "cursor"));
    let limit = if tab == "conversation" {
        THREAD_PAGE
    } else {
        1
    };
    let view = conversation::ticket_view(state, id, when, limit, cursor.as_deref()).await?;
    let items = if tab == "conversation" {
        view.messages
            .items
            .iter()
            .map(|i| Item {
                kind: i.kind.clone(),
                label: i.label.clone(),
                author: i
                    .author
                    .name
                    .clone()
                    .unwrap_or_else(|| i.author.kind.clone()),
                author_kind: i.author.kind.clone(),
                body: i.body.clone().unwrap_or_default(),
                internal: i.internal,
                time: i.at.into(),
                files: i
                    .attachments
                    .iter()
                    .map(|a| File {
                        name: a.file_name.clone().unwrap_or_else(|| a.sha256.clone()),
                        size: size(a.size),
                        href: format!("/console/files/{}", a.sha256),
                    })
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let more = if tab == "conversation" {
        view.messages.next_cursor.as_ref().map(|c| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &p {
                if k != "cursor" && !v.is_empty() {
                    s.append_pair(k, v);
                }
            }
            s.append_pair("cursor", c);
            format!("/console/tickets/{id}?{}", s.finish())
        })
    } else {
        None
    };
    let mut history = Vec::new();
    if tab == "history" {
        let found = tickets::ticket_history(
            state,
            id,
            &AsOf {
                as_of: when,
                at_position: None,
                min_position: None,
            },
        )
        .await?;
        let users: Vec<Uuid> = found.items.iter().filter_map(|e| e.actor_id).collect();
        let n = names(state, &users, &[]).await?;
        history = found
            .items
            .iter()
            .map(|e| HistoryRow {
                time: e.recorded_at.into(),
                who: e.actor_id.and_then(|a| n.user(a)).unwrap_or_else(|| {
                    serde_json::to_value(e.actor_kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                }),
                label: e.label.clone(),
                description: e.description.clone(),
                changes: e
                    .changes
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                (
                                    c["field"].as_str().unwrap_or_default().to_string(),
                                    shown(&c["before"]),
                                    shown(&c["after"]),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
    }
    let staff = matches!(chrome.role, "agent" | "admin");
    let forms = if staff && when.is_none() {
        let pool = state.store.db();
        let hidden: Vec<Uuid> = state.helpdesk.system_account().await?.into_iter().collect();
        let assignee = view.assignee.as_ref().map(|a| a.id.to_string());
        let department = view.department.as_ref().map(|d| d.id.to_string());
        let (people_rows, dept_rows) = super::people_and_departments(&pool, &hidden).await?;
        Some(Forms {
            statuses: choices(&STATUSES[1..], &view.status),
            agents: people_rows
                .into_iter()
                .filter(|u| u.role != "auditor" && u.active)
                .map(|u| Choice {
                    selected: Some(u.id.to_string()) == assignee,
                    value: u.id.to_string(),
                    label: u.name,
                })
                .collect(),
            departments: dept_rows
                .into_iter()
                .filter(|d| d.active)
                .map(|d| Choice {
                    selected: Some(d.id.to_string()) == department,
                    value: d.id.to_string(),
                    label: d.name,
                })
                .collect(),
        })
    } else {
        None
    };
    let page = TicketPage {
        forms,
        chrome: Some(chrome),
        t: header(&view),
        items,
        more,
        as_of: when.map(Time::from),
        as_of_input: get(&p, "as_of").to_string(),
        tz: get(&p, "tz").to_string(),
        tab,
        history,
    };
    Ok(html(StatusCode::OK, &page))
}

/// `GET /console/tickets/{id}`: the ticket and its conversation.
pub async fn show(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<IdPath>,
) -> PageResult {
    ticket_page(&state, &req, path.id, "conversation").await
}

/// `GET /console/tickets/{id}/history`: who did what, before and after.
pub async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<IdPath>,
) -> PageResult {
    ticket_page(&state, &req, path.id, "history").await
}

/// The fields of a posted form (its CSRF token already checked by the gate).
fn posted(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Text as the API's edge takes it: no control characters but tab and
/// line breaks (the domain refuses what else it must).
fn text(name: &'static str, value: &str) -> Result<String, ApiError> {
    ledgerdesk_domain::fields::plain(name, value)
        .map_err(|e| ApiError::bad_field(name, e.to_string()))?;
    Ok(value.to_string())
}

fn back(id: Uuid) -> actix_web::HttpResponse {
    super::page::see_other(&format!("/console/tickets/{id}#conversation"))
}

/// Run a ticket action from a form of the ticket page, as the API's action
/// routes do (without `If-Match`: the page shows the ticket as it is), and
/// go back to the ticket.
async fn act(
    state: &AppState,
    cx: &crate::extract::Cx,
    id: Uuid,
    action: TicketAction,
) -> PageResult {
    state
        .helpdesk
        .act(&cx.actor, id, None, action)
        .await
        .map_err(ApiError::from)?;
    Ok(back(id))
}

/// `POST /console/tickets/{id}/reply`: a public message to the requester,
/// on the channel the page names (the ticket's).
pub async fn reply(
    state: web::Data<AppState>,
    cx: crate::extract::Cx,
    path: web::Path<IdPath>,
    body: web::Bytes,
) -> PageResult {
    let f = posted(&body);
    let channel = match get(&f, "channel") {
        "" => None,
        c => Some(text("channel", c)?),
    };
    let message = TicketAction::AddPublicMessage {
        message_id: Uuid::now_v7(),
        direction: "outbound".into(),
        channel,
        body: text("body", get(&f, "body"))?,
    };
    act(&state, &cx, path.id, message).await
}

/// `POST /console/tickets/{id}/note`: an internal note.
pub async fn note(
    state: web::Data<AppState>,
    cx: crate::extract::Cx,
    path: web::Path<IdPath>,
    body: web::Bytes,
) -> PageResult {
    let f = posted(&body);
    let note = TicketAction::AddNote {
        note_id: Uuid::now_v7(),
        body: text("body", get(&f, "body"))?,
    };
    act(&state, &cx, path.id, note).await
}

/// `POST /console/tickets/{id}/status`.
pub async fn status(
    state: web::Data<AppState>,
    cx: crate::extract::Cx,
    path: web::Path<IdPath>,
    body: web::Bytes,
) -> PageResult {
    let f = posted(&body);
    let change = TicketAction::ChangeStatus {
        to: text("status", get(&f, "status"))?,
    };
    act(&state, &cx, path.id, change).await
}

/// `POST /console/tickets/{id}/assign`: to an agent, a department or both.
pub async fn assign(
    state: web::Data<AppState>,
    cx: crate::extract::Cx,
    path: web::Path<IdPath>,
    body: web::Bytes,
) -> PageResult {
    let f = posted(&body);
    let transfer = ledgerdesk_app::input::Transfer {
        to_agent: uuid("agent", get(&f, "agent"))?,
        to_department: uuid("department", get(&f, "department"))?,
    };
    if transfer.to_agent.is_none() && transfer.to_department.is_none() {
        return Err(ApiError::bad_field("agent", "choose an agent or a department").into());
    }
    state
        .helpdesk
        .transfer_ticket(&cx.actor, path.id, transfer, None)
        .await
        .map_err(ApiError::from)?;
    Ok(back(path.id))
}
