//! The operations page (admins): every projection with its position, the
//! log's head, the lag and the worker's state, and a rebuild with its
//! progress, through the code of the API's projection routes
//! ([`Projector::status`](ledgerdesk_projections::Projector::status),
//! [`views::start_rebuild`]).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use askama::Template;

use crate::routes::views;
use crate::state::AppState;

use super::page::{html, see_other, Chrome, PageResult, Time};

/// One projection as the table shows it.
#[derive(Debug)]
pub struct Row {
    name: String,
    state: String,
    position: u64,
    head: u64,
    lag_events: u64,
    lag_seconds: String,
    updated: Option<Time>,
    failure: Option<String>,
    progress: Option<(u64, u64)>,
}

#[derive(Template)]
#[template(path = "console/operations.html")]
struct OperationsPage {
    chrome: Option<Chrome>,
    rows: Vec<Row>,
    rebuilding: bool,
}

/// `GET /console/operations`.
pub async fn page(state: web::Data<AppState>, req: HttpRequest) -> PageResult {
    let chrome = Chrome::of(&state, &req, "/console/operations").await?;
    let rows: Vec<Row> = state
        .projector
        .status()
        .await
        .map_err(crate::error::ApiError::from)?
        .into_iter()
        .map(|s| {
            let state_name = serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Row {
                progress: state.rebuilds.progress(&s.name),
                state: state_name,
                position: s.position,
                head: s.head,
                lag_events: s.lag_events,
                lag_seconds: format!("{:.1}", s.lag_seconds),
                updated: s.updated_at.map(Time::from),
                failure: s
                    .failure
                    .map(|f| format!("at position {}: {}", f.position, f.error)),
                name: s.name,
            }
        })
        .collect();
    let rebuilding = rows
        .iter()
        .any(|r| r.progress.is_some() || r.state == "rebuilding");
    Ok(html(
        StatusCode::OK,
        &OperationsPage {
            chrome: Some(chrome),
            rows,
            rebuilding,
        },
    ))
}

/// `POST /console/operations/{name}/rebuild`: start it, then back to the
/// page, which shows its progress.
pub async fn rebuild(state: web::Data<AppState>, name: web::Path<String>) -> PageResult {
    views::start_rebuild(&state, &name)?;
    Ok(see_other("/console/operations"))
}
