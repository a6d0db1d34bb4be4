//! Users: created and changed by admins, listed and read from the `people`
//! projection. The API's own `api_users` table keeps only what events do
//! not: the email reservation, the system flag, and the copy of role and
//! activity that sessions are checked against at once (a deactivation must
//! not wait for a projection).
//!
//! A write answers once the `people` projection has applied it (or after
//! `projections.max_wait_ms`), so the admin who made it reads it back in
//! the next list; another process's reader passes `min_position`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ledgerdesk_app::accounts::AccountUpdate;
use ledgerdesk_app::input;
use ledgerdesk_projections::people;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Role, PASSWORD_MAX, PASSWORD_MIN};
use crate::consistency::reached;
use crate::error::ApiError;
use crate::extract::{Cx, Json, Query};
use crate::paging;
use crate::routes::{command_ok, created, etag, CommandResult, IdPath};
use crate::state::AppState;

/// `?limit=&cursor=&min_position=` of the user and department lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeoplePage {
    /// At most this many items (1 to 500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Wait until the `people` projection has applied this log position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// `?min_position=` of a single user (other parameters are ignored, as
/// they were before the read came from a projection).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtPosition {
    /// Wait until the `people` projection has applied this log position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// Let the `people` projection apply a write before answering it (bounded
/// by `projections.max_wait_ms`; a timeout is not an error).
pub(crate) async fn settle(state: &AppState, position: u64) -> Result<(), ApiError> {
    reached(state, "people", Some(position)).await.map(|_| ())
}

/// A user as the `people` projection has it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// The user id.
    pub id: Uuid,
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `agent`, `admin` or `auditor`.
    pub role: String,
    /// Home department.
    pub department_id: Option<Uuid>,
    /// Whether the user may log in and act.
    pub active: bool,
    /// Whether a session is open.
    pub logged_in: bool,
    /// `available`, `away` or `offline`.
    pub state: String,
    /// Tickets the user is viewing.
    pub viewing: Vec<Uuid>,
    /// The stream version (also the `ETag`).
    pub version: u64,
}

impl From<people::Person> for UserView {
    fn from(p: people::Person) -> Self {
        UserView {
            id: p.id,
            email: p.email,
            name: p.name,
            role: p.role,
            department_id: p.department_id,
            active: p.active,
            logged_in: p.logged_in,
            state: p.state,
            viewing: p.viewing,
            version: p.version,
        }
    }
}

/// A user as the list shows it (and as an account is reserved).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct UserRow {
    /// The user id.
    pub id: Uuid,
    /// Login email (lowercase).
    pub email: String,
    /// Display name.
    pub name: String,
    /// `agent`, `admin` or `auditor`.
    pub role: String,
    /// Home department.
    pub department_id: Option<Uuid>,
    /// Whether the user may log in and act.
    pub active: bool,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// Users by email.
    pub items: Vec<UserRow>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The log position the `people` projection had reached.
    pub position: u64,
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Display name.
    #[schema(example = "Alice Agent")]
    pub name: String,
    /// Login email; unique.
    #[schema(example = "alice@example.com")]
    pub email: String,
    /// `agent`, `admin` or `auditor`.
    #[schema(example = "agent")]
    pub role: String,
    /// Initial password (8 to 1024 characters).
    #[schema(example = "a-long-password")]
    pub password: String,
    /// Home department.
    #[serde(default)]
    pub department_id: Option<Uuid>,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New role.
    #[serde(default)]
    pub role: Option<String>,
    /// New department; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub department_id: Option<Option<Uuid>>,
    /// `false` deactivates (and ends the user's sessions), `true` reactivates.
    #[serde(default)]
    pub active: Option<bool>,
    /// A new password (ends the user's other sessions).
    #[serde(default)]
    pub password: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

/// A presence change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    /// `available`, `away` or `offline`.
    #[schema(example = "available")]
    pub state: String,
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(ApiError::unprocessable(
            "password_too_short",
            "password",
            format!("a password needs at least {PASSWORD_MIN} characters"),
        ));
    }
    if n > PASSWORD_MAX {
        return Err(ApiError::unprocessable(
            "password_too_long",
            "password",
            format!("a password has at most {PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    let passwords = state.passwords.clone();
    web::block(move || passwords.hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// 200 with the caller's own view, folded from the user stream: a
/// session's own account must answer even before (or without) the
/// projection.
pub async fn own_view(state: &AppState, id: Uuid) -> Result<HttpResponse, ApiError> {
    let (user, version) = state
        .helpdesk
        .user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: "user_not_found",
            detail: format!("user {id} does not exist"),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(version)))
        .json(UserView {
            id,
            email: user.email,
            name: user.name,
            role: user.role.as_str().to_string(),
            department_id: user.department,
            active: !user.deactivated,
            logged_in: user.logged_in,
            state: user.presence.as_str().to_string(),
            viewing: user.viewing.into_iter().collect(),
            version,
        }))
}

/// 200 with the user's view (from the `people` projection) and `ETag`, or
/// 404.
pub async fn user_view(
    state: &AppState,
    id: Uuid,
    min_position: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let position = reached(state, "people", min_position).await?;
    let person = people::user(&state.store.db(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: "user_not_found",
            detail: format!("user {id} does not exist"),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(person.version)))
        .insert_header(("X-Projection-Position", position.to_string()))
        .json(UserView::from(person)))
}

/// Create a user with a password (admins).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body = CreateUser,
    responses((status = 201, description = "Created; Location names the user", body = CommandResult,
        headers(("Location" = String), ("ETag" = String))))
)]
pub async fn create(
    state: web::Data<AppState>,
    cx: Cx,
    Json(body): Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    check_password(&body.password)?;
    let hash = hash_password(&state, body.password).await?;
    let id = Uuid::now_v7();
    let new_user = input::NewUser {
        user_id: Some(id),
        name: body.name,
        email: body.email,
        role: body.role,
        department_id: body.department_id,
    };
    let outcome = state
        .helpdesk
        .create_account(&cx.actor, new_user, false)
        .await?;
    state.db.set_password(id, &hash).await?;
    settle(&state, outcome.position).await?;
    Ok(created(outcome, format!("/api/v1/users/{id}")))
}

/// List users (without the system account), by email, from the `people`
/// projection.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    params(PeoplePage),
    responses((status = 200, description = "A page of users; `position` says how far the projection had read; `Link: rel=next` while there is more", body = UserList,
        headers(("Link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))))
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: Query<PeoplePage>,
) -> Result<HttpResponse, ApiError> {
    let limit = paging::limit(page.limit)?;
    let position = reached(&state, "people", page.min_position).await?;
    let hidden: Vec<Uuid> = state.helpdesk.system_account().await?.into_iter().collect();
    let cursor = paging::open("users", page.cursor.as_deref())?;
    let found = people::users(&state.store.db(), &hidden, Some(limit), cursor.as_deref()).await?;
    let next_cursor = paging::seal("users", found.next_cursor);
    let items = found
        .items
        .into_iter()
        .map(|p| UserRow {
            id: p.id,
            email: p.email,
            name: p.name,
            role: p.role,
            department_id: p.department_id,
            active: p.active,
        })
        .collect();
    let mut response = HttpResponse::Ok();
    paging::link_next(&mut response, &req, &[], next_cursor.as_deref());
    Ok(response
        .insert_header(("X-Projection-Position", position.to_string()))
        .json(UserList {
            items,
            next_cursor,
            position,
        }))
}

/// One user, from the `people` projection.
#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(IdPath, AtPosition),
    responses((status = 200, description = "The user", body = UserView, headers(("ETag" = String))))
)]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    query: Query<AtPosition>,
) -> Result<HttpResponse, ApiError> {
    user_view(&state, path.id, query.min_position).await
}

/// Change a user's name, role, department, activity or password (admins).
/// An admin cannot deactivate themselves or give up their own admin role.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    params(IdPath),
    request_body = UpdateUser,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn update(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    let id = path.id;
    if let Some(password) = &body.password {
        check_password(password)?;
    }
    let hash = match body.password {
        Some(p) => Some(hash_password(&state, p).await?),
        None => None,
    };
    let update = AccountUpdate {
        user: input::UserUpdate {
            name: body.name,
            role: body.role,
            department_id: body.department_id,
            active: body.active,
        },
        password_changed: hash.is_some(),
    };
    let change = state
        .helpdesk
        .update_account(&cx.actor, id, update, cx.if_match)
        .await?;
    // A new password or a deactivation ends the user's other sessions.
    if let Some(hash) = &hash {
        state.db.set_password(id, hash).await?;
    }
    if hash.is_some() || !change.active {
        state
            .db
            .revoke_sessions_of(id, &cx.caller.token_hash)
            .await?;
    }
    // Role and activity are read with the session: look them up afresh.
    state.sessions.forget_user(id);
    settle(&state, change.outcome.position).await?;
    Ok(command_ok(change.outcome))
}

/// Change a user's presence: agents their own, admins anyone's.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/state",
    tag = "users",
    params(IdPath),
    request_body = StateRequest,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn change_state(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<StateRequest>,
) -> Result<HttpResponse, ApiError> {
    if cx.caller.role != Role::Admin && cx.caller.user_id != path.id {
        return Err(ApiError::Forbidden {
            detail: "agents change only their own state".into(),
        });
    }
    let outcome = state
        .helpdesk
        .change_user_state(&cx.actor, path.id, input::StateChange { state: body.state })
        .await?;
    settle(&state, outcome.position).await?;
    Ok(command_ok(outcome))
}
