//! Departments: created by admins, listed from the `api_departments` table.

use actix_web::{web, HttpResponse};
use ledgerdesk_app::input;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::DepartmentRow;
use crate::error::ApiError;
use crate::extract::{Cx, Json};
use crate::routes::{etag, CommandResult, Page};
use crate::state::AppState;

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
    /// The limit used.
    pub limit: i64,
    /// The offset used.
    pub offset: i64,
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
    if let Some((department, _)) = state.helpdesk.department(outcome.id).await? {
        let row = DepartmentRow {
            id: outcome.id,
            name: department.name,
            active: !department.deactivated,
        };
        state.db.insert_department(&row).await?;
    }
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::ETAG, etag(outcome.version)))
        .json(CommandResult::from(outcome)))
}

/// List departments by name.
#[utoipa::path(
    get,
    path = "/api/v1/departments",
    tag = "departments",
    params(Page),
    responses((status = 200, description = "A page of departments", body = DepartmentList))
)]
pub async fn list(
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page.bounds()?;
    let items = state.db.list_departments(limit, offset).await?;
    Ok(HttpResponse::Ok().json(DepartmentList {
        items,
        limit,
        offset,
    }))
}
