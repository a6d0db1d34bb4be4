//! Tickets: open one, read its history, and act on it. Every action accepts
//! `If-Match` (except views) and answers with the stream's new version (also
//! the `ETag`) and the global position. `GET /api/v1/tickets` (the filtered
//! list) comes from the projections.
//!
//! The plain actions ([`TicketAction`]) are one table, [`ACTIONS`]: a row
//! names the route, who may call it and its request body, whose
//! [`ActionBody`] impl turns it into the action. The routes, their rows of
//! the permission table and their OpenAPI entries are all generated from
//! it. Create, transfer, split, merge and views have handlers of their own.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_app::{input, AppError, DomainRefusal, HistoryEntry};
use ledgerdesk_domain::ticket::{TicketAction, TicketError};
use ledgerdesk_domain::{Aggregate, Ticket};
use ledgerdesk_store::StreamRange;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::access::{Access, Auth, Permission, ADMIN, STAFF};
use crate::error::ApiError;
use crate::extract::{Cx, Json, Query};
use crate::routes::{command_ok, created, etag, CommandResult, IdPath, PairResult, Secured};
use crate::state::AppState;

/// One plain ticket action as HTTP serves it: `POST {path}` with a JSON
/// body, answered with [`CommandResult`] and the new version as `ETag`.
#[derive(Clone, Copy)]
pub struct ActionRoute {
    /// The route pattern.
    pub path: &'static str,
    /// Who may call it: its row of the permission table.
    pub access: Access,
    /// The OpenAPI summary: what it does, and its catalogue label.
    pub summary: &'static str,
    /// The OpenAPI description of its 200 answer.
    pub answer: &'static str,
    mount: fn(Secured) -> Secured,
    schema: fn() -> (String, Value),
}

/// A request body of a plain ticket action.
pub trait ActionBody: DeserializeOwned + ToSchema + 'static {
    /// The action it asks for; ids of what it adds are minted here.
    fn action(self) -> Result<TicketAction, TicketError>;
}

const fn row<B: ActionBody>(
    path: &'static str,
    access: Access,
    summary: &'static str,
    answer: &'static str,
) -> ActionRoute {
    ActionRoute {
        path,
        access,
        summary,
        answer,
        mount: mount::<B>,
        schema: schema::<B>,
    }
}

/// The plain ticket actions. Adding one: a [`TicketAction`] variant (and
/// its decide/apply in the domain), a body type with [`ActionBody`] below,
/// and a row here; see "Adding a ticket action" in docs/ARCHITECTURE.md.
pub const ACTIONS: &[ActionRoute] = &[
    row::<MessageRequest>(
        MESSAGES,
        STAFF,
        "Add a message (`Ticket – Message` or `Ticket – Internal Message`).",
        "Added; item is the message id",
    ),
    row::<NoteRequest>(
        "/api/v1/tickets/{id}/notes",
        STAFF,
        "Add a note (`Ticket – Note`).",
        "Added; item is the note id",
    ),
    row::<StatusRequest>(
        "/api/v1/tickets/{id}/status",
        STAFF,
        "Change the status (`Ticket – Status`).",
        "Changed",
    ),
    row::<PriorityRequest>(
        "/api/v1/tickets/{id}/priority",
        STAFF,
        "Change the priority (`Ticket – Priority`).",
        "Changed",
    ),
    row::<TagsRequest>(
        "/api/v1/tickets/{id}/tags",
        STAFF,
        "Add and remove tags (`Ticket – Tags changed`).",
        "Changed",
    ),
    row::<RankingRequest>(
        "/api/v1/tickets/{id}/ranking",
        STAFF,
        "Record the customer's rating (`Ticket – Ranking`).",
        "Rated",
    ),
    row::<ForwardRequest>(
        "/api/v1/tickets/{id}/forward",
        STAFF,
        "Forward the ticket to an address (`Ticket – Forward`).",
        "Forwarded",
    ),
    row::<CallRequest>(
        "/api/v1/tickets/{id}/calls",
        STAFF,
        "Log a phone call (`Ticket – Call`).",
        "Logged",
    ),
    row::<VoiceMessageRequest>(
        "/api/v1/tickets/{id}/voice-messages",
        STAFF,
        "Add a voice message (`Ticket – Voice message`).",
        "Added; item is the message id",
    ),
    row::<ChatRequest>(
        "/api/v1/tickets/{id}/chat",
        STAFF,
        "Add a chat message or transcript (`Ticket – Chat`).",
        "Added; item is the message id",
    ),
    row::<SystemMessageRequest>(
        "/api/v1/tickets/{id}/system-messages",
        ADMIN,
        "Add a message by the system (`Ticket – System message`; admins).",
        "Added",
    ),
    row::<DueDateRequest>(
        "/api/v1/tickets/{id}/due-date",
        STAFF,
        "Set or clear the due date (`Ticket – Due date`).",
        "Changed",
    ),
];

/// The one action route that shares its path with a read: the conversation
/// (`GET`) is mounted on the same resource.
pub const MESSAGES: &str = "/api/v1/tickets/{id}/messages";

impl ActionRoute {
    /// Its row of the permission table.
    pub const fn permission(&self) -> Permission {
        Permission {
            method: "POST",
            path: self.path,
            access: self.access,
            auth: Auth::Bearer,
        }
    }

    /// Adds the action's `POST` to `resource`.
    pub(super) fn mount(&self, resource: Secured) -> Secured {
        (self.mount)(resource)
    }

    /// The OpenAPI operation of the route, before `crate::openapi`
    /// completes it (roles, problems, headers) like every other one; and
    /// the body's schema name and schema.
    pub fn openapi(&self) -> (Value, (String, Value)) {
        let (name, schema) = (self.schema)();
        let operation = json!({
            "tags": ["tickets"],
            "summary": self.summary,
            "parameters": [{
                "name": "id",
                "in": "path",
                "description": "The id (UUID).",
                "required": true,
                "schema": { "type": "string", "format": "uuid" }
            }],
            "requestBody": {
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } },
                "required": true
            },
            "responses": {
                "200": {
                    "description": self.answer,
                    "headers": { "ETag": { "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CommandResult" } } }
                }
            }
        });
        (operation, (name, schema))
    }
}

fn mount<B: ActionBody>(resource: Secured) -> Secured {
    resource.on("POST", act::<B>)
}

fn schema<B: ActionBody>() -> (String, Value) {
    (
        B::name().into_owned(),
        serde_json::to_value(B::schema()).unwrap_or_default(),
    )
}

/// The handler of every plain action: the body becomes the action (a
/// refusal there is the domain's, a 422), which the helpdesk decides.
async fn act<B: ActionBody>(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<B>,
) -> Result<HttpResponse, ApiError> {
    let action = body
        .action()
        .map_err(|e| AppError::Rejected(DomainRefusal::from(e)))?;
    let outcome = state
        .helpdesk
        .act(&cx.actor, path.id, cx.if_match, action)
        .await?;
    Ok(command_ok(outcome))
}

/// Who asked.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// Their email: files their personal data under one data subject.
    #[serde(default)]
    #[schema(example = "carol@example.com")]
    pub email: Option<String>,
    /// Their name.
    #[schema(example = "Carol")]
    pub name: String,
}

/// A new ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    /// Subject line.
    #[schema(example = "Printer on fire")]
    pub subject: String,
    /// The first message.
    #[schema(example = "It is on fire.")]
    pub body: String,
    /// `email`, `chat`, `call`, `facebook`, `twitter`, `weibo`, `tencent`,
    /// `offline_form`, `knowledge_base`, `web`, `api`.
    #[schema(example = "email")]
    pub channel: String,
    /// Who asked.
    pub requester: Requester,
    /// `low`, `normal` (default), `high`, `urgent`.
    #[serde(default)]
    pub priority: Option<String>,
    /// The department to file it under.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A message: a reply (or, with `direction: inbound`, the customer's
/// message), or with `internal: true` a message between agents.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// Text.
    #[schema(example = "We are on it.")]
    pub body: String,
    /// Between agents only.
    #[serde(default)]
    pub internal: bool,
    /// Channel of a public message; the ticket's own when absent.
    #[serde(default)]
    pub channel: Option<String>,
    /// `outbound` (default: a reply) or `inbound` (from the customer).
    #[serde(default)]
    pub direction: Option<String>,
}

/// A note.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// Text.
    #[schema(example = "VIP customer")]
    pub body: String,
}

/// A status change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Target status: `new`, `open`, `pending`, `resolved`, `closed`.
    #[schema(example = "open")]
    pub status: String,
}

/// A priority change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    /// `low`, `normal`, `high`, `urgent`.
    #[schema(example = "high")]
    pub priority: String,
}

/// A transfer to an agent and/or a department.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The new assignee.
    #[serde(default)]
    pub to_agent: Option<Uuid>,
    /// The new department.
    #[serde(default)]
    pub to_department: Option<Uuid>,
}

/// Tags to add and remove.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// Added.
    #[serde(default)]
    pub add: Vec<String>,
    /// Removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The customer's rating.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RankingRequest {
    /// 1 to 5.
    #[schema(example = 5)]
    pub rating: u8,
    /// Comment.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Moves messages into a new ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// Messages to move.
    pub message_ids: Vec<Uuid>,
    /// The new ticket's subject; the original's when absent.
    #[serde(default)]
    pub subject: Option<String>,
    /// The new ticket's opening text.
    pub body: String,
}

/// Merges this ticket into another.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The surviving ticket.
    pub into: Uuid,
}

/// Forwards the ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    /// Email address.
    #[schema(example = "finance@example.com")]
    pub to: String,
}

/// A phone call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// `inbound` or `outbound`.
    #[schema(example = "outbound")]
    pub direction: String,
    /// Length in seconds, 0 to 4,294,967,295.
    // `int64` with the bound: the `int32` a `u32` would be documented as
    // stops at 2^31 - 1, and a contract test sent 2^31 and saw it taken.
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_u64)]
    pub duration_seconds: u32,
}

/// A voice message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoiceMessageRequest {
    /// Length in seconds, 0 to 4,294,967,295.
    // `int64` with the bound: the `int32` a `u32` would be documented as
    // stops at 2^31 - 1, and a contract test sent 2^31 and saw it taken.
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_u64)]
    pub duration_seconds: u32,
    /// SHA-256 of the recording uploaded as a file.
    #[serde(default)]
    pub file_sha256: Option<String>,
}

/// A chat message or transcript.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Text.
    #[schema(example = "Chat transcript")]
    pub body: String,
}

/// A message by the system.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemMessageRequest {
    /// Text; not personal data.
    #[schema(example = "SLA breached")]
    pub text: String,
}

impl ActionBody for MessageRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        TicketAction::message(
            Uuid::now_v7(),
            self.body,
            self.internal,
            self.channel,
            self.direction,
        )
    }
}

impl ActionBody for NoteRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::AddNote {
            note_id: Uuid::now_v7(),
            body: self.body,
        })
    }
}

impl ActionBody for StatusRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::ChangeStatus { to: self.status })
    }
}

impl ActionBody for PriorityRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::ChangePriority { to: self.priority })
    }
}

impl ActionBody for TagsRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::ChangeTags {
            add: self.add,
            remove: self.remove,
        })
    }
}

impl ActionBody for RankingRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::Rate {
            rating: self.rating,
            comment: self.comment,
        })
    }
}

impl ActionBody for ForwardRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::Forward { to: self.to })
    }
}

impl ActionBody for CallRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::LogCall {
            direction: self.direction,
            duration_seconds: self.duration_seconds,
        })
    }
}

impl ActionBody for VoiceMessageRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::AddVoiceMessage {
            message_id: Uuid::now_v7(),
            duration_seconds: self.duration_seconds,
            file_sha256: self.file_sha256,
        })
    }
}

impl ActionBody for ChatRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::AddChatMessage {
            message_id: Uuid::now_v7(),
            body: self.body,
        })
    }
}

impl ActionBody for SystemMessageRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::AddSystemMessage { text: self.text })
    }
}

/// The date a ticket should be solved by.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DueDateRequest {
    /// An RFC 3339 instant, or `null` to clear it; required, so that an
    /// empty body clears nothing by accident.
    #[serde(deserialize_with = "nullable")]
    #[schema(required = true, example = "2026-12-11T17:00:00Z")]
    pub due_at: Option<DateTime<Utc>>,
}

/// A field that must be present but may be `null`.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

impl ActionBody for DueDateRequest {
    fn action(self) -> Result<TicketAction, TicketError> {
        Ok(TicketAction::SetDueDate {
            due_at: self.due_at,
        })
    }
}

fn ticket_not_found(id: Uuid) -> ApiError {
    ApiError::NotFound {
        code: "ticket_not_found",
        detail: format!("ticket {id} does not exist"),
    }
}

/// Open a ticket.
#[utoipa::path(
    post,
    path = "/api/v1/tickets",
    tag = "tickets",
    request_body = CreateTicket,
    responses((status = 201, description = "Opened; Location names the ticket", body = CommandResult,
        headers(("Location" = String), ("ETag" = String))))
)]
pub async fn create(
    state: web::Data<AppState>,
    cx: Cx,
    Json(body): Json<CreateTicket>,
) -> Result<HttpResponse, ApiError> {
    let new = input::NewTicket {
        ticket_id: None,
        channel: body.channel,
        subject: body.subject,
        body: body.body,
        message_id: None,
        requester_name: body.requester.name,
        requester_email: body.requester.email,
        priority: body.priority,
        department_id: body.department_id,
        tags: body.tags,
    };
    let outcome = state.helpdesk.create_ticket(&cx.actor, new).await?;
    let location = format!("/api/v1/tickets/{}", outcome.id);
    Ok(created(outcome, location))
}

/// A moment in a ticket's past: `?as_of=TIME` or `?at_position=N`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOf {
    /// The ticket as it stood at this time (RFC 3339): events recorded at
    /// or before it.
    pub as_of: Option<DateTime<Utc>>,
    /// The ticket as it stood once the log reached this position.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub at_position: Option<u64>,
    /// Accepted like on every read; trivially met, since the history is
    /// read from the log itself.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

impl AsOf {
    fn range(&self) -> Result<StreamRange, ApiError> {
        if self.as_of.is_some() && self.at_position.is_some() {
            return Err(ApiError::bad_field(
                "as_of",
                "give as_of or at_position, not both",
            ));
        }
        Ok(StreamRange {
            until_time: self.as_of,
            until_position: self.at_position,
            ..StreamRange::all()
        })
    }
}

/// A ticket's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketHistory {
    /// The ticket.
    pub id: Uuid,
    /// Every event of the ticket, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<HistoryEntry>,
}

/// Every event of the ticket in order, with actor, label, description and
/// the field-level before/after; `as_of` / `at_position` stop it there.
#[utoipa::path(
    get,
    path = "/api/v1/tickets/{id}/history",
    tag = "tickets",
    params(IdPath, AsOf),
    responses((status = 200, description = "The ticket's events, oldest first", body = TicketHistory))
)]
pub async fn history(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    when: Query<AsOf>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ticket_history(&state, path.id, &when).await?))
}

/// Every event of ticket `id` in order, up to `when`: what the history
/// route and the console's history tab show.
pub async fn ticket_history(
    state: &AppState,
    id: Uuid,
    when: &AsOf,
) -> Result<TicketHistory, ApiError> {
    let stream = ledgerdesk_domain::stream_id(Ticket::STREAM_TYPE, id);
    let items = state.helpdesk.history(&stream, when.range()?).await?;
    if items.is_empty() && state.helpdesk.ticket(id).await?.is_none() {
        return Err(ticket_not_found(id));
    }
    Ok(TicketHistory { id, items })
}

/// Hand the ticket to an agent and/or a department (`Ticket – Transfer`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/transfer",
    tag = "tickets",
    params(IdPath),
    request_body = TransferRequest,
    responses((status = 200, description = "Transferred", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn transfer(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    let transfer = input::Transfer {
        to_agent: body.to_agent,
        to_department: body.to_department,
    };
    let outcome = state
        .helpdesk
        .transfer_ticket(&cx.actor, path.id, transfer, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Move messages into a new ticket (`Ticket – Split`); `target` is the new ticket.
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/split",
    tag = "tickets",
    params(IdPath),
    request_body = SplitRequest,
    responses((status = 200, description = "Split", body = PairResult, headers(("ETag" = String))))
)]
pub async fn split(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<SplitRequest>,
) -> Result<HttpResponse, ApiError> {
    let split = input::Split {
        new_ticket_id: None,
        message_ids: body.message_ids,
        subject: body.subject,
        body: body.body,
    };
    let pair = state
        .helpdesk
        .split_ticket(&cx.actor, path.id, split, cx.if_match)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(pair.source.version)))
        .json(PairResult::from(pair)))
}

/// Merge this ticket into another (`Ticket – Merge`); `target` is the survivor.
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/merge",
    tag = "tickets",
    params(IdPath),
    request_body = MergeRequest,
    responses((status = 200, description = "Merged", body = PairResult, headers(("ETag" = String))))
)]
pub async fn merge(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<MergeRequest>,
) -> Result<HttpResponse, ApiError> {
    let pair = state
        .helpdesk
        .merge_ticket(
            &cx.actor,
            path.id,
            input::Merge { into: body.into },
            cx.if_match,
        )
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(pair.source.version)))
        .json(PairResult::from(pair)))
}

/// The caller starts viewing the ticket (`User – Viewing ticket`, on the
/// caller's stream: the version and position are the user stream's).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/views",
    tag = "tickets",
    params(IdPath),
    responses((status = 200, description = "Viewing", body = CommandResult))
)]
pub async fn view(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .helpdesk
        .view_ticket(&cx.actor, cx.caller.user_id, path.id)
        .await?;
    Ok(command_ok(outcome))
}

/// The caller leaves the ticket (`User – Left ticket`).
#[utoipa::path(
    delete,
    path = "/api/v1/tickets/{id}/views",
    tag = "tickets",
    params(IdPath),
    responses((status = 200, description = "Left", body = CommandResult))
)]
pub async fn leave(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
) -> Result<HttpResponse, ApiError> {
    if state.helpdesk.ticket(path.id).await?.is_none() {
        return Err(ticket_not_found(path.id));
    }
    let outcome = state
        .helpdesk
        .leave_ticket(&cx.actor, cx.caller.user_id, path.id)
        .await?;
    Ok(command_ok(outcome))
}
