//! The audit log for admins and auditors: search (a page of JSON), export
//! (the whole result as CSV or NDJSON, streamed), the live stream (SSE) and
//! the catalogue of actions. All read the `audit` projection; every search,
//! export and stream is itself recorded on the caller's stream first
//! (`user.audit_searched` / `user.audit_exported`), so no one looks without
//! leaving a trace.
//!
//! Filters come either as separate parameters or as one `query` in the
//! audit query language (`ledgerdesk_projections::audit::query`), not both.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures::stream::{self, Stream, StreamExt};
use ledgerdesk_domain::catalogue::ACTIONS;
use ledgerdesk_domain::fields::limits::SEARCH_TEXT_MAX;
use ledgerdesk_projections::audit::{self, query, AuditFilter, AuditRow};
use ledgerdesk_store::DbPool;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit_feed::{AuditFeed, Batch, StreamSlot};
use crate::caller::authorize;
use crate::consistency::reached;
use crate::error::ApiError;
use crate::extract::Cx;
use crate::paging;
use crate::permissions::{self, Access};
use crate::state::AppState;

/// Rows per database round trip of an export or the stream.
const CHUNK: usize = 500;

/// Filters of the audit endpoints. Lists may repeat the parameter
/// (`action=a&action=b`) or separate values with commas.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; `Params::parse` reads them
pub struct AuditParams {
    /// The filters in the audit query language, e.g.
    /// `action:ticket.status actor:<id> created:>=2026-01-01 "refund"`.
    /// Not combinable with the separate filters.
    query: Option<String>,
    /// Action codes, categories (`ticket`) or code prefixes (`ticket.status`).
    action: Option<Vec<String>>,
    /// Acting users.
    actor: Option<Vec<Uuid>>,
    /// The actors' departments at the time.
    department: Option<Vec<Uuid>>,
    /// Tickets.
    ticket: Option<Vec<Uuid>>,
    /// The callers' IP addresses.
    ip: Option<Vec<String>>,
    /// Text in the description or the before/after values.
    q: Option<String>,
    /// Recorded at or after (RFC 3339 or YYYY-MM-DD).
    from: Option<String>,
    /// Recorded before (RFC 3339 or YYYY-MM-DD).
    to: Option<String>,
    /// Page size, 1 to 500 (default 50); JSON only.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `json` (default), `csv` or `ndjson`; or send `Accept: text/csv` /
    /// `application/x-ndjson`.
    format: Option<String>,
    /// Wait until the audit view has applied this log position.
    #[param(minimum = 0)]
    min_position: Option<u64>,
}

/// What the response should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Ndjson,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// The audit parameters of one request, read and checked.
#[derive(Debug, Default)]
struct Params {
    filter: AuditFilter,
    format: Option<Format>,
    limit: Option<usize>,
    cursor: Option<u64>,
    min_position: Option<u64>,
    last_event_id: Option<u64>,
}

const FILTERS: &[&str] = &[
    "action",
    "actor",
    "department",
    "ticket",
    "ip",
    "q",
    "from",
    "to",
];

impl Params {
    /// Read the query string; `allowed` are the non-filter parameters this
    /// endpoint takes.
    fn parse(query_string: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut p = Params::default();
        let mut query_text = None;
        let mut separate = None;
        let mut seen = std::collections::HashSet::new();
        for (key, value) in form_urlencoded::parse(query_string.as_bytes()) {
            let key = key.as_ref();
            let value = value.as_ref();
            let bad = |detail: String| ApiError::bad_field(key, detail);
            if FILTERS.contains(&key) {
                separate.get_or_insert(key.to_string());
            }
            // Filters may repeat (each adds values); the others hold one
            // value, and a second one must not silently win.
            let repeatable = matches!(
                key,
                "action" | "actor" | "department" | "ticket" | "ip" | "q"
            );
            if !repeatable && !seen.insert(key.to_string()) {
                return Err(bad(format!("`{key}` is given more than once")));
            }
            match key {
                "query" => {
                    let f = query::parse(value).map_err(|e| {
                        ApiError::bad_field("query", format!("the query is malformed: {e}"))
                    })?;
                    query_text = Some(f);
                }
                "action" | "actor" | "department" | "ticket" | "ip" => {
                    let qualifier = if key == "department" { "dept" } else { key };
                    query::apply(&mut p.filter, qualifier, value, false).map_err(bad)?;
                }
                "q" => {
                    if value.trim().is_empty() {
                        return Err(bad("q must not be empty".into()));
                    }
                    if value.chars().count() > SEARCH_TEXT_MAX {
                        return Err(bad(format!(
                            "q is longer than {SEARCH_TEXT_MAX} characters"
                        )));
                    }
                    p.filter.text.push(value.trim().to_string());
                }
                "from" => p.filter.from = Some(time(key, value, true)?),
                "to" => p.filter.to = Some(time(key, value, false)?),
                _ if !allowed.contains(&key) => {
                    return Err(bad(format!(
                        "unknown parameter `{key}`; see /openapi.json for the audit filters"
                    )))
                }
                "limit" => {
                    p.limit = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|l| (1..=500).contains(l))
                            .ok_or_else(|| {
                                bad("limit must be a whole number from 1 to 500".into())
                            })?,
                    )
                }
                "cursor" => p.cursor = Some(decode_cursor(value)?),
                "min_position" => {
                    p.min_position = Some(super::parse_position("min_position", value)?)
                }
                "last_event_id" => {
                    p.last_event_id = Some(super::parse_position("last_event_id", value)?)
                }
                "format" => {
                    p.format = Some(match value {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        "ndjson" => Format::Ndjson,
                        _ => return Err(bad("format must be json, csv or ndjson".into())),
                    })
                }
                _ => return Err(bad(format!("unknown parameter `{key}`"))),
            }
        }
        if let Some(f) = query_text {
            if let Some(other) = separate {
                return Err(ApiError::bad_field(
                    "query",
                    format!("`query` cannot be combined with `{other}`; write it in the query"),
                ));
            }
            p.filter = f;
        }
        if let (Some(from), Some(to)) = (p.filter.from, p.filter.to) {
            if from >= to {
                return Err(ApiError::bad_field("from", "from must be before to"));
            }
        }
        Ok(p)
    }
}

/// `2026-01-01` or RFC 3339; a date as `from` is its first instant, as `to`
/// the first instant of the next day (so `to=2026-01-31` includes that day).
fn time(key: &str, value: &str, from: bool) -> Result<DateTime<Utc>, ApiError> {
    // An unencoded `+01:00` arrives as ` 01:00`.
    let value = value.replace(' ', "+");
    let (start, end) = query::instant(&value).ok_or_else(|| {
        ApiError::bad_field(
            key,
            format!("{key} must be a date (YYYY-MM-DD) or an RFC 3339 time"),
        )
    })?;
    Ok(if from || DateTime::parse_from_rfc3339(&value).is_ok() {
        start
    } else {
        end
    })
}

fn encode_cursor(position: u64) -> String {
    paging::position_cursor("audit", position)
}

fn decode_cursor(cursor: &str) -> Result<u64, ApiError> {
    paging::decode_position_cursor("audit", cursor)
}

/// The format asked for: the parameter, else the `Accept` header.
fn format_of(req: &HttpRequest, asked: Option<Format>) -> Format {
    if let Some(f) = asked {
        return f;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains("ndjson") {
        Format::Ndjson
    } else {
        Format::Json
    }
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The entries.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<AuditRow>,
    /// Pass as `cursor` for the next (older) page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The log position the audit view had reached.
    pub position: u64,
    /// The filters as a query string (what the search was recorded with).
    pub query: String,
}

/// Search the audit log, or export it (`format=csv|ndjson`).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditParams),
    responses((status = 200, description = "A page of entries (JSON; `Link: rel=next` while there is more), or the whole result streamed as CSV or NDJSON", content(
        (AuditPage = "application/json"),
        (String = "text/csv"),
        (String = "application/x-ndjson"),
    )))
)]
pub async fn search(
    state: web::Data<AppState>,
    cx: Cx,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(
        req.query_string(),
        &["query", "limit", "cursor", "format", "min_position"],
    )?;
    let format = format_of(&req, p.format);
    if format == Format::Json {
        let page = search_page(&state, &cx, p).await?;
        let mut response = HttpResponse::Ok();
        paging::link_next(&mut response, &req, &[], page.next_cursor.as_deref());
        return Ok(response
            .insert_header(("X-Projection-Position", page.position.to_string()))
            .json(page));
    }
    let position = reached(&state, "audit", p.min_position).await?;
    let rendered = query::render(&p.filter);
    state
        .helpdesk
        .record_audit_access(&cx.actor, cx.caller.user_id, &rendered, format.as_str())
        .await?;
    let mut filter = p.filter;
    // An export is a snapshot: what the view held when it started.
    filter.before_position = Some(p.cursor.unwrap_or(position.saturating_add(1)));
    let pool = state.store.db();
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/x-ndjson", "ndjson"),
    };
    let name = format!("audit-{}.{extension}", Utc::now().format("%Y%m%dT%H%M%SZ"));
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header(("X-Projection-Position", position.to_string()))
        .streaming(export(pool, filter, format)))
}

/// One page of a search, recorded as `user.audit_searched` first: what
/// `GET /api/v1/audit` answers in JSON and the console's audit page shows.
/// `query_string` holds the API's parameters (filters, `limit`, `cursor`,
/// `min_position`).
pub async fn page(state: &AppState, cx: &Cx, query_string: &str) -> Result<AuditPage, ApiError> {
    let p = Params::parse(query_string, &["query", "limit", "cursor", "min_position"])?;
    search_page(state, cx, p).await
}

async fn search_page(state: &AppState, cx: &Cx, p: Params) -> Result<AuditPage, ApiError> {
    let position = reached(state, "audit", p.min_position).await?;
    let rendered = query::render(&p.filter);
    state
        .helpdesk
        .record_audit_access(
            &cx.actor,
            cx.caller.user_id,
            &rendered,
            Format::Json.as_str(),
        )
        .await?;
    let mut filter = p.filter;
    filter.before_position = Some(p.cursor.unwrap_or(position.saturating_add(1)));
    filter.limit = p.limit;
    let page = audit::search(&state.store.db(), &filter).await?;
    let next_cursor = page
        .next_cursor
        .and_then(|c| c.parse().ok())
        .map(encode_cursor);
    Ok(AuditPage {
        items: page.items,
        next_cursor,
        position,
        query: rendered,
    })
}

/// The whole result, a chunk of rows at a time: memory stays flat however
/// many rows match.
fn export(
    pool: DbPool,
    filter: AuditFilter,
    format: Format,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let header = (format == Format::Csv).then(|| Ok(Bytes::from(csv_header())));
    let rows = stream::try_unfold(Some(filter), move |next| {
        let pool = pool.clone();
        async move {
            let Some(mut filter) = next else {
                return Ok(None);
            };
            filter.limit = Some(CHUNK);
            let page = audit::search(&pool, &filter).await.map_err(|e| {
                tracing::error!(error = %e, "audit export failed part-way");
                actix_web::error::ErrorInternalServerError("export failed")
            })?;
            let mut out = String::with_capacity(page.items.len() * 300);
            for row in &page.items {
                match format {
                    Format::Csv => csv_row(&mut out, row),
                    _ => {
                        out.push_str(&serde_json::to_string(row).unwrap_or_default());
                        out.push('\n');
                    }
                }
            }
            filter.before_position = page.next_cursor.and_then(|c| c.parse().ok());
            let next = filter.before_position.is_some().then_some(filter);
            Ok(Some((Bytes::from(out), next)))
        }
    });
    stream::iter(header).chain(rows)
}

/// The audit view's columns but the stored event type and stream, which
/// an auditor's spreadsheet has no use for.
fn csv_columns() -> impl Iterator<Item = &'static str> {
    audit::COLUMNS
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "event_type" | "stream_id"))
}

fn csv_header() -> String {
    // A byte-order mark makes spreadsheets read the file as UTF-8.
    format!(
        "\u{feff}{}\r\n",
        csv_columns().collect::<Vec<_>>().join(",")
    )
}

/// One RFC 4180 record. The row serialises under its column names, so
/// header and values cannot drift apart.
fn csv_row(out: &mut String, r: &AuditRow) {
    let row = serde_json::to_value(r).unwrap_or_default();
    for (i, column) in csv_columns().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match &row[column] {
            Value::Null => {}
            Value::String(text) => csv_field(out, text),
            other => csv_field(out, &other.to_string()),
        }
    }
    out.push_str("\r\n");
}

fn csv_field(out: &mut String, value: &str) {
    // Every cell is quoted, and a formula trigger (= + - @, tab, carriage
    // return) that begins the cell or follows a separator a spreadsheet may
    // split on (, ; | tab, line breaks) gets a ' before it, so no cell, and
    // no piece of one that another locale's separator cuts out, starts a
    // formula (OWASP CSV injection). NDJSON keeps the exact text.
    const TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];
    const SEPARATORS: [char; 6] = [',', ';', '|', '\t', '\r', '\n'];
    out.push('"');
    let mut at_start = true;
    for c in value.chars() {
        if at_start && TRIGGERS.contains(&c) {
            out.push('\'');
        }
        if c == '"' {
            out.push('"');
        }
        out.push(c);
        at_start = SEPARATORS.contains(&c);
    }
    out.push('"');
}

/// Follow new audit entries as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/audit/stream",
    tag = "audit",
    params(
        ("query" = Option<String>, Query, description = "Filters in the audit query language (or the separate filters of GET /api/v1/audit)"),
        ("last_event_id" = Option<u64>, Query, description = "Resume after this position, for clients that cannot send the Last-Event-ID header"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position (the `id` of the last event received)"),
    ),
    responses(
        (status = 200, description = "An endless stream: one `audit` event per entry, `id` = its position", content_type = "text/event-stream", body = String),
        (status = 429, description = "Too many live streams open for this user or this server; see Retry-After", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn stream(
    state: web::Data<AppState>,
    cx: Cx,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), &["query", "last_event_id"])?;
    let header_id = match req.headers().get("Last-Event-ID") {
        None => None,
        Some(v) => Some(super::parse_position(
            "Last-Event-ID",
            v.to_str().unwrap_or("not text").trim(),
        )?),
    };
    let slot = state.audit_feed.open(cx.caller.user_id)?;
    let start = match header_id.or(p.last_event_id) {
        Some(id) => id,
        // Only what happens from now on.
        None => reached(&state, "audit", None).await?,
    };
    state
        .helpdesk
        .record_audit_access(
            &cx.actor,
            cx.caller.user_id,
            &query::render(&p.filter),
            "stream",
        )
        .await?;
    let events = follow(
        state.clone(),
        p.filter,
        start,
        cx.caller.token_hash.clone(),
        slot,
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}

/// How long the follower trusts the head watch alone before reading anyway
/// (a writer it cannot hear), and waits at most for the audit view to
/// apply a head it was woken for.
const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// The pause after a failed round, so a database that is away is not asked
/// in a tight loop.
const RETRY: Duration = Duration::from_millis(200);
/// How long a stream stays silent before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the stream checks that its caller may still read it.
pub const SESSION_CHECK: Duration = Duration::from_secs(5);
/// The process's one reader of new audit entries: woken by the store's
/// head, it reads what the audit view added since its last read and sends
/// it to every stream. It reads nothing while no stream listens.
pub async fn follow_audit(state: AppState) {
    let feed = state.audit_feed.clone();
    let mut head = state.store.watch_head();
    let mut listened = false;
    loop {
        let target = *head.borrow_and_update();
        let mut caught_up = true;
        if feed.batches.receiver_count() > 0 {
            match feed_once(&state, &feed, !listened, target).await {
                Ok(done) => {
                    caught_up = done;
                    listened = true;
                }
                // A failed round keeps `listened` as it was: a restart that
                // could not send its starting batch is tried again, rather
                // than reading on from a position left long ago.
                Err(e) => {
                    caught_up = false;
                    tracing::warn!(error = %e, "the audit follower failed to read");
                }
            }
        } else {
            listened = false;
        }
        if caught_up {
            if let Ok(Err(_)) = tokio::time::timeout(IDLE_RECHECK, head.changed()).await {
                // The store is gone: no head will wake us again.
                tokio::time::sleep(IDLE_RECHECK).await;
            }
        } else {
            // The view is still applying the head: woken by its own
            // progress (as a read with `min_position` is), not by polling.
            let waited = state
                .projector
                .wait_until("audit", target, IDLE_RECHECK)
                .await;
            if waited.is_err() {
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One round of the follower: whether the audit view had reached `target`
/// (so nothing more is to come until the head moves).
async fn feed_once(
    state: &AppState,
    feed: &AuditFeed,
    restart: bool,
    target: u64,
) -> Result<bool, ApiError> {
    // Read the view's position before its rows: every row up to it is in
    // what follows.
    let view = reached(state, "audit", None).await?;
    if restart {
        // Nobody listened for a while: start from the view's position. An
        // empty batch that starts there tells each stream that joined
        // meanwhile to read up to it from its own position.
        let from = feed.position.fetch_max(view, Ordering::SeqCst).max(view);
        let _ = feed.batches.send(Arc::new(Batch {
            after: from,
            to: from,
            rows: Vec::new(),
        }));
    }
    let pool = state.store.db();
    loop {
        let after = feed.position.load(Ordering::SeqCst);
        let filter = AuditFilter {
            after_position: Some(after),
            limit: Some(CHUNK),
            ..AuditFilter::default()
        };
        feed.follower_reads.fetch_add(1, Ordering::SeqCst);
        let page = audit::search(&pool, &filter).await?;
        let full = page.items.len() >= CHUNK;
        if let Some(to) = page.items.last().map(|r| r.position) {
            feed.position.store(to, Ordering::SeqCst);
            let _ = feed.batches.send(Arc::new(Batch {
                after,
                to,
                rows: page.items,
            }));
        }
        if !full {
            return Ok(view >= target);
        }
    }
}

/// Whether the token still stands for a user who may follow the stream:
/// the gate checked it once, at connection, and a stream lasts for hours.
async fn may_still_follow(state: &AppState, token_hash: &str) -> bool {
    const PATTERN: &str = "/api/v1/audit/stream";
    let roles = match permissions::lookup("GET", PATTERN).map(|p| p.access) {
        Some(Access::Roles(roles)) => roles,
        _ => &[],
    };
    match authorize(state, token_hash.to_string(), "GET", PATTERN, roles).await {
        Ok(_) => true,
        Err(ApiError::Unauthorized { .. } | ApiError::Forbidden { .. }) => false,
        // A failed check is no revocation; the next one decides.
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the audit stream's session");
            true
        }
    }
}

/// One live stream: where it stands and what it listens to.
struct Follower {
    state: web::Data<AppState>,
    filter: AuditFilter,
    /// Every matching row up to here has been sent.
    covered: u64,
    /// Reading from its own position, not from the follower's batches.
    behind: bool,
    batches: broadcast::Receiver<Arc<Batch>>,
    checked: Instant,
    token_hash: String,
    _slot: StreamSlot,
}

type Chunk = Result<Option<Bytes>, actix_web::Error>;

fn stream_failed(e: impl std::fmt::Display) -> actix_web::Error {
    tracing::error!(error = %e, "audit stream failed");
    actix_web::error::ErrorInternalServerError("stream failed")
}

fn sse(rows: &[AuditRow]) -> Bytes {
    let mut out = String::new();
    for row in rows {
        out.push_str(&format!(
            "id: {}\nevent: audit\ndata: {}\n\n",
            row.position,
            serde_json::to_string(row).unwrap_or_default()
        ));
    }
    Bytes::from(out)
}

impl Follower {
    /// Rows matching the filter after `covered`, from the view itself.
    async fn read(&mut self, to: Option<u64>) -> Result<Vec<AuditRow>, actix_web::Error> {
        let mut filter = self.filter.clone();
        filter.after_position = Some(self.covered);
        filter.before_position = to.map(|t| t + 1);
        filter.limit = Some(CHUNK);
        self.state
            .audit_feed
            .stream_reads
            .fetch_add(1, Ordering::SeqCst);
        let page = audit::search(&self.state.store.db(), &filter)
            .await
            .map_err(stream_failed)?;
        Ok(page.items)
    }

    /// The next piece of the stream; `None` ends it.
    async fn next(&mut self) -> Chunk {
        let quiet = Instant::now();
        loop {
            if self.checked.elapsed() >= SESSION_CHECK {
                if !may_still_follow(&self.state, &self.token_hash).await {
                    tracing::info!("audit stream ended: its session is no longer valid");
                    return Ok(None);
                }
                self.checked = Instant::now();
            }
            if self.behind {
                // The follower's position before the read: the view holds
                // at least that much, so a short page means caught up to it.
                let sent = self.state.audit_feed.position.load(Ordering::SeqCst);
                let rows = self.read(None).await?;
                let full = rows.len() >= CHUNK;
                if let Some(last) = rows.last() {
                    self.covered = last.position;
                }
                if !full {
                    self.covered = self.covered.max(sent);
                    self.behind = false;
                }
                if !rows.is_empty() {
                    return Ok(Some(sse(&rows)));
                }
                continue;
            }
            let until_check = SESSION_CHECK.saturating_sub(self.checked.elapsed());
            let until_quiet = KEEP_ALIVE.saturating_sub(quiet.elapsed());
            let wait = until_check.min(until_quiet);
            match tokio::time::timeout(wait, self.batches.recv()).await {
                Ok(Ok(batch)) => {
                    if batch.to <= self.covered {
                        continue;
                    }
                    if batch.after > self.covered {
                        // Something lies between: read it, then rejoin.
                        self.behind = true;
                        continue;
                    }
                    let fresh = batch.rows.iter().filter(|r| r.position > self.covered);
                    let mut rows = Vec::new();
                    let mut undecided = false;
                    for row in fresh {
                        match self.filter.admits(row) {
                            Some(true) => rows.push(row.clone()),
                            Some(false) => {}
                            None => undecided = true,
                        }
                    }
                    if undecided {
                        rows = self.read(Some(batch.to)).await?;
                    }
                    self.covered = batch.to;
                    if !rows.is_empty() {
                        return Ok(Some(sse(&rows)));
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => self.behind = true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(None),
                Err(_) if quiet.elapsed() >= KEEP_ALIVE => {
                    return Ok(Some(Bytes::from_static(b": keep-alive\n\n")));
                }
                Err(_) => {}
            }
        }
    }
}

/// Entries after `after`, oldest first, for as long as the client listens
/// and its session (`token_hash`) stays valid: a logout, an expired token,
/// a deactivation or a change to a role that may not read the audit log
/// ends the stream within [`SESSION_CHECK`]. The stream first reads what
/// lies between `after` and the follower from the view, then takes the
/// follower's batches; one that falls behind them reads from its own
/// position again. Positions only grow and a projection page commits
/// whole, so resuming after the last `id` neither skips nor repeats an
/// entry.
fn follow(
    state: web::Data<AppState>,
    filter: AuditFilter,
    after: u64,
    token_hash: String,
    slot: StreamSlot,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    // Listen before reading, so nothing sent meanwhile is missed.
    let batches = state.audit_feed.batches.subscribe();
    let follower = Follower {
        state,
        filter,
        covered: after,
        behind: true,
        batches,
        checked: Instant::now(),
        token_hash,
        _slot: slot,
    };
    stream::try_unfold(follower, |mut follower| async move {
        Ok(follower.next().await?.map(|chunk| (chunk, follower)))
    })
}

/// One action of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionInfo {
    /// The code to filter with, e.g. `ticket.status_changed`.
    pub code: &'static str,
    /// The label shown to people, e.g. `Ticket – Status`.
    pub label: &'static str,
    /// What it records.
    pub summary: &'static str,
    /// The category (`ticket`, `user`, …), also a valid `action` filter.
    pub category: &'static str,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    /// Every action, in catalogue order.
    pub items: Vec<ActionInfo>,
}

/// Every action code and label, for building a filter menu.
#[utoipa::path(
    get,
    path = "/api/v1/audit/actions",
    tag = "audit",
    responses((status = 200, description = "The catalogue of actions", body = ActionList))
)]
pub async fn actions() -> HttpResponse {
    HttpResponse::Ok().json(ActionList {
        items: ACTIONS
            .iter()
            .map(|a| ActionInfo {
                code: a.code,
                label: a.label,
                summary: a.summary,
                category: a.code.split('.').next().unwrap_or(a.code),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;

    use super::*;

    #[test]
    fn csv_quotes_per_rfc_4180_and_defuses_formulas() {
        let cell = |v: &str| {
            let mut out = String::new();
            csv_field(&mut out, v);
            out
        };
        assert_eq!(cell("plain"), "\"plain\"");
        assert_eq!(cell("a,b \"c\"\r\nd"), "\"a,b \"\"c\"\"\r\nd\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("\t=1+1"), "\"'\t'=1+1\"");
        // After a separator another locale's spreadsheet splits on.
        assert_eq!(cell("ok;=cmd|' /C calc'!A0"), "\"ok;'=cmd|' /C calc'!A0\"");
        assert_eq!(cell("a,-2+3"), "\"a,'-2+3\"");
        assert_eq!(cell("line\n@SUM(A1)"), "\"line\n'@SUM(A1)\"");
        assert_eq!(cell("x|+1"), "\"x|'+1\"");
        // A trigger inside a cell's text is left alone.
        assert_eq!(cell("1-2=3"), "\"1-2=3\"");
        assert_eq!(cell(""), "\"\"");
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("42").is_err());
        assert!(decode_cursor(&B64.encode("tickets:42")).is_err());
    }

    #[test]
    fn times_take_dates_and_instants() {
        let d = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            time("from", "2026-01-31", true).unwrap(),
            d("2026-01-31T00:00:00Z")
        );
        assert_eq!(
            time("to", "2026-01-31", false).unwrap(),
            d("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            time("to", "2026-01-31T10:00:00+01:00", false).unwrap(),
            d("2026-01-31T09:00:00Z")
        );
        assert!(time("from", "yesterday", true).is_err());
        assert!(time("from", "2026-01-01..2026-02-01", true).is_err());
    }
}
