//! What people read, served from the projections: the ticket list, reports
//! and the projections' own status. A query may pass `min_position` (the
//! position a command returned) to read its own writes: the handler waits,
//! up to `projections.max_wait_ms`, for the projection to get there.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_domain::fields::limits::SEARCH_TEXT_MAX;
use ledgerdesk_projections::{reports, tickets, ProjectionError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::consistency::reached;
use crate::error::ApiError;
use crate::extract::Query;
use crate::paging;
use crate::state::AppState;

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::InvalidCursor => {
                ApiError::bad_field("cursor", "the cursor is not one this API gave out")
            }
            ProjectionError::UnknownProjection(name) => ApiError::NotFound {
                code: "projection_not_found",
                detail: format!("there is no projection `{name}`"),
            },
            other => ApiError::internal(other),
        }
    }
}

/// Filters of `GET /tickets`; they combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// new, open, pending, resolved or closed.
    pub status: Option<String>,
    /// The assigned agent.
    pub assignee: Option<Uuid>,
    /// The department.
    pub department: Option<Uuid>,
    /// A tag.
    pub tag: Option<String>,
    /// The channel the ticket came in by.
    pub channel: Option<String>,
    /// low, normal, high or urgent.
    pub priority: Option<String>,
    /// Text in the subject (at most 200 characters).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// At most this many tickets (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Wait until the projection has applied this log position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// A page of tickets, most recently updated first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketPage {
    /// The tickets (as in the tickets projection).
    pub items: Vec<tickets::TicketRow>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The log position the projection had reached.
    pub position: u64,
}

/// List tickets from the tickets projection.
#[utoipa::path(
    get,
    path = "/api/v1/tickets",
    tag = "tickets",
    params(TicketQuery),
    responses((status = 200, description = "A page of tickets; `position` says how far the projection had read; `Link: rel=next` while there is more", body = TicketPage,
        headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))))
)]
pub async fn list_tickets(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Query<TicketQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = ticket_page(&state, query.into_inner()).await?;
    let mut response = HttpResponse::Ok();
    paging::link_next(&mut response, &req, &[], page.next_cursor.as_deref());
    Ok(response
        .insert_header(("X-Projection-Position", page.position.to_string()))
        .json(page))
}

/// A page of the ticket list: what `GET /tickets` answers and the
/// console's ticket list shows.
pub async fn ticket_page(state: &AppState, q: TicketQuery) -> Result<TicketPage, ApiError> {
    let limit = paging::limit(q.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))?;
    if q.q
        .as_ref()
        .is_some_and(|text| text.chars().count() > SEARCH_TEXT_MAX)
    {
        return Err(ApiError::bad_field(
            "q",
            format!("q is longer than {SEARCH_TEXT_MAX} characters"),
        ));
    }
    let position = reached(state, "tickets", q.min_position).await?;
    let filter = tickets::TicketFilter {
        status: q.status,
        assignee: q.assignee,
        department: q.department,
        tag: q.tag,
        channel: q.channel,
        priority: q.priority,
        q: q.q,
        limit: Some(limit),
        cursor: paging::open("tickets", q.cursor.as_deref())?,
    };
    let page = tickets::list(&state.store.db(), &filter).await?;
    Ok(TicketPage {
        items: page.items,
        next_cursor: paging::seal("tickets", page.next_cursor),
        position,
    })
}

/// The time range of a report: `[from, to)`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start (RFC 3339), inclusive; default 30 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), exclusive; default now.
    pub to: Option<DateTime<Utc>>,
}

/// Figures per agent or department.
#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// One row per agent or department.
    pub rows: Vec<reports::ReportRow>,
}

fn report(from: DateTime<Utc>, to: DateTime<Utc>, rows: Vec<reports::ReportRow>) -> Report {
    Report { from, to, rows }
}

fn range(q: &ReportQuery) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(ApiError::bad_field("from", "from must be before to"));
    }
    Ok((from, to))
}

/// Per agent: tickets created, replied to, resolved; median first-response
/// and resolution times; ratings.
#[utoipa::path(
    get,
    path = "/api/v1/reports/agents",
    tag = "reports",
    params(ReportQuery),
    responses((status = 200, description = "Figures per agent", body = Report))
)]
pub async fn agent_report(
    state: web::Data<AppState>,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range(&query)?;
    let rows = reports::agents(&state.store.db(), from, to).await?;
    Ok(HttpResponse::Ok().json(report(from, to, rows)))
}

/// The same figures per department.
#[utoipa::path(
    get,
    path = "/api/v1/reports/departments",
    tag = "reports",
    params(ReportQuery),
    responses((status = 200, description = "Figures per department", body = Report))
)]
pub async fn department_report(
    state: web::Data<AppState>,
    query: Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = range(&query)?;
    let rows = reports::departments(&state.store.db(), from, to).await?;
    Ok(HttpResponse::Ok().json(report(from, to, rows)))
}

/// The range and grouping of the time report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeQuery {
    /// Start (RFC 3339), inclusive; default 30 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339), exclusive; default now.
    pub to: Option<DateTime<Utc>>,
    /// `agent` (default) or `department`.
    #[param(pattern = "^(agent|department)$")]
    pub group: Option<String>,
}

/// The time report.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimeReport {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range.
    pub to: DateTime<Utc>,
    /// `agent` or `department`.
    pub group: String,
    /// One row per agent or department.
    pub rows: Vec<reports::TimeRow>,
}

/// Per agent or department: tickets handled, replies, median first
/// response and resolution, and time with tickets open.
#[utoipa::path(
    get,
    path = "/api/v1/reports/time",
    tag = "reports",
    params(TimeQuery),
    responses((status = 200, description = "Working time per agent or department", body = TimeReport))
)]
pub async fn time_report(
    state: web::Data<AppState>,
    query: Query<TimeQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (group, name) = match q.group.as_deref().unwrap_or("agent") {
        "agent" => (reports::Group::Agent, "agent"),
        "department" => (reports::Group::Department, "department"),
        _ => {
            return Err(ApiError::bad_field(
                "group",
                "group must be agent or department",
            ))
        }
    };
    let (from, to) = range(&ReportQuery {
        from: q.from,
        to: q.to,
    })?;
    let rows = reports::time(&state.store.db(), group, from, to, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(TimeReport {
        from,
        to,
        group: name.into(),
        rows,
    }))
}

/// Each projection's position, the log head, the lag and the state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionList {
    /// One entry per projection.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<ledgerdesk_projections::ProjectionStatus>,
}

/// Projection status: position, log head, lag in events and seconds.
#[utoipa::path(
    get,
    path = "/api/v1/admin/projections",
    tag = "projections",
    responses((status = 200, description = "Every projection's status", body = ProjectionList))
)]
pub async fn projections(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ProjectionList {
        items: state.projector.status().await?,
    }))
}

/// A rebuild that was started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RebuildStarted {
    /// The projection.
    pub name: String,
    /// Always `rebuilding`; follow it in `GET /admin/projections`.
    pub state: String,
}

/// Rebuild a projection from the whole log into shadow tables while the
/// live one keeps serving, then swap them in atomically. Runs in the
/// background.
#[utoipa::path(
    post,
    path = "/api/v1/admin/projections/{name}/rebuild",
    tag = "projections",
    params(("name" = String, Path, description = "tickets, conversation, audit, presence, reports or people")),
    responses((status = 202, description = "The rebuild started", body = RebuildStarted))
)]
pub async fn rebuild(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    start_rebuild(&state, &name)?;
    Ok(HttpResponse::Accepted().json(RebuildStarted {
        name,
        state: "rebuilding".into(),
    }))
}

/// Start rebuilding projection `name` in the background (what the rebuild
/// route and the console's operations page do); its progress is kept in
/// [`AppState::rebuilds`] while it runs.
pub fn start_rebuild(state: &AppState, name: &str) -> Result<(), ApiError> {
    if !state.projector.names().contains(&name) {
        return Err(ProjectionError::UnknownProjection(name.to_string()).into());
    }
    let projector = state.projector.clone();
    let rebuilds = state.rebuilds.clone();
    let task_name = name.to_string();
    // Two rebuilds of one projection would share its shadow table (on
    // SQLite the lease is always granted): the second would wipe what the
    // first had loaded, and the first would swap in a table with a gap.
    if !rebuilds.try_start(&task_name) {
        return Err(ApiError::Conflict {
            code: "rebuild_running",
            detail: format!("projection `{name}` is already being rebuilt"),
        });
    }
    tokio::spawn(async move {
        let progress = {
            let rebuilds = rebuilds.clone();
            let name = task_name.clone();
            move |done, total| {
                rebuilds.set(&name, done, total);
            }
        };
        if let Err(e) = projector.rebuild(&task_name, progress).await {
            tracing::error!(projection = %task_name, error = %e, "rebuild failed");
        }
        rebuilds.finish(&task_name);
    });
    Ok(())
}
