//! Departments: created by admins, listed from the `people` projection. A
//! write answers once the projection has applied it (see `users`).

use actix_web::{web, HttpRequest, HttpResponse};
use ledgerdesk_app::input;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::consistency::reached;
use crate::error::ApiError;
use crate::extract::{Cx, Json, Query};
use crate::paging;
use crate::routes::users::{settle, PeoplePage};
use crate::routes::{etag, CommandResult, IdPath};
use crate::state::AppState;

/// A department as the list shows it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct DepartmentRow {
    /// The department id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Whether it takes tickets.
    pub active: bool,
}

/// A new department.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    /// Name.
    pub name: String,
}

/// A page of departments.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentList {
    /// Departments by name.
    pub items: Vec<DepartmentRow>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The log position the `people` projection had reached.
    pub position: u64,
}

/// Create a department (admins).
#[utoipa::path(
    post,
    path = "/api/v1/departments",
    tag = "departments",
    request_body = CreateDepartment,
    responses((status = 201, description = "Created", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn create(
    state: web::Data<AppState>,
    cx: Cx,
    Json(body): Json<CreateDepartment>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .helpdesk
        .create_department(
            &cx.actor,
            input::NewDepartment {
                department_id: None,
                name: body.name,
            },
        )
        .await?;
    settle(&state, outcome.position).await?;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::ETAG, etag(outcome.version)))
        .json(CommandResult::from(outcome)))
}

/// List departments by name, from the `people` projection.
#[utoipa::path(
    get,
    path = "/api/v1/departments",
    tag = "departments",
    params(PeoplePage),
    responses((status = 200, description = "A page of departments; `position` says how far the projection had read; `Link: rel=next` while there is more", body = DepartmentList,
        headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))))
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: Query<PeoplePage>,
) -> Result<HttpResponse, ApiError> {
    let limit = paging::limit(page.limit)?;
    let position = reached(&state, "people", page.min_position).await?;
    let cursor = paging::open("departments", page.cursor.as_deref())?;
    let found = ledgerdesk_projections::people::departments(
        &state.store.db(),
        Some(limit),
        cursor.as_deref(),
    )
    .await?;
    let next_cursor = paging::seal("departments", found.next_cursor);
    let items = found
        .items
        .into_iter()
        .map(|d| DepartmentRow {
            id: d.id,
            name: d.name,
            active: d.active,
        })
        .collect();
    let mut response = HttpResponse::Ok();
    paging::link_next(&mut response, &req, &[], next_cursor.as_deref());
    Ok(response
        .insert_header(("X-Projection-Position", position.to_string()))
        .json(DepartmentList {
            items,
            next_cursor,
            position,
        }))
}

/// Changes to a department; send at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDepartment {
    /// A new name.
    pub name: Option<String>,
    /// `false` stops filing and transferring tickets to it; `true` resumes.
    pub active: Option<bool>,
}

/// Rename, deactivate or reactivate a department (admins): the changes
/// are one append, written together or not at all.
#[utoipa::path(
    patch,
    path = "/api/v1/departments/{id}",
    tag = "departments",
    params(IdPath),
    request_body = UpdateDepartment,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn update(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<UpdateDepartment>,
) -> Result<HttpResponse, ApiError> {
    let update = input::DepartmentUpdate {
        name: body.name,
        active: body.active,
    };
    let outcome = state
        .helpdesk
        .update_department(&cx.actor, path.id, update, cx.if_match)
        .await?;
    settle(&state, outcome.position).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, etag(outcome.version)))
        .json(CommandResult::from(outcome)))
}
