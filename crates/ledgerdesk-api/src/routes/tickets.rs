//! Tickets: open one, read it (folded from its stream), and one endpoint per
//! action. Every action accepts `If-Match` (except views) and answers with
//! the stream's new version (also the `ETag`) and the global position.
//! `GET /api/v1/tickets` (the filtered list) comes from the projections.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_app::{input, HistoryEntry};
use ledgerdesk_domain::{Aggregate, Ticket};
use ledgerdesk_store::StreamRange;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Cx, Json, Query};
use crate::routes::{command_ok, created, etag, CommandResult, IdPath, PairResult};
use crate::state::AppState;

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
    /// Length in seconds.
    pub duration_seconds: u32,
}

/// A voice message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoiceMessageRequest {
    /// Length in seconds.
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

/// Add a message (`Ticket – Message` or `Ticket – Internal Message`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/messages",
    tag = "tickets",
    params(IdPath),
    request_body = MessageRequest,
    responses((status = 200, description = "Added; item is the message id", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn message(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<MessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path.id;
    let outcome = if body.internal {
        if body.channel.is_some() || body.direction.is_some() {
            return Err(ApiError::unprocessable(
                "not_public",
                if body.channel.is_some() {
                    "channel"
                } else {
                    "direction"
                },
                "an internal message has no channel or direction",
            ));
        }
        let message = input::InternalMessage {
            message_id: None,
            body: body.body,
        };
        state
            .helpdesk
            .add_internal_message(&cx.actor, id, message, cx.if_match)
            .await?
    } else {
        let channel = match body.channel {
            Some(channel) => channel,
            None => {
                let (ticket, _) = state
                    .helpdesk
                    .ticket(id)
                    .await?
                    .ok_or_else(|| ticket_not_found(id))?;
                ticket
                    .channel
                    .map_or_else(|| "email".to_string(), |c| c.as_str().to_string())
            }
        };
        let message = input::PublicMessage {
            message_id: None,
            direction: body.direction.unwrap_or_else(|| "outbound".into()),
            channel,
            body: body.body,
        };
        state
            .helpdesk
            .add_public_message(&cx.actor, id, message, cx.if_match)
            .await?
    };
    Ok(command_ok(outcome))
}

/// Add a note (`Ticket – Note`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/notes",
    tag = "tickets",
    params(IdPath),
    request_body = NoteRequest,
    responses((status = 200, description = "Added; item is the note id", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn note(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<NoteRequest>,
) -> Result<HttpResponse, ApiError> {
    let note = input::Note {
        note_id: None,
        body: body.body,
    };
    let outcome = state
        .helpdesk
        .add_note(&cx.actor, path.id, note, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Change the status (`Ticket – Status`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/status",
    tag = "tickets",
    params(IdPath),
    request_body = StatusRequest,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn status(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = input::StatusChange {
        status: body.status,
    };
    let outcome = state
        .helpdesk
        .change_ticket_status(&cx.actor, path.id, change, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Change the priority (`Ticket – Priority`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/priority",
    tag = "tickets",
    params(IdPath),
    request_body = PriorityRequest,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn priority(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<PriorityRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = input::PriorityChange {
        priority: body.priority,
    };
    let outcome = state
        .helpdesk
        .change_ticket_priority(&cx.actor, path.id, change, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
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

/// Add and remove tags (`Ticket – Tags changed`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/tags",
    tag = "tickets",
    params(IdPath),
    request_body = TagsRequest,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn tags(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<TagsRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = input::TagChange {
        add: body.add,
        remove: body.remove,
    };
    let outcome = state
        .helpdesk
        .change_ticket_tags(&cx.actor, path.id, change, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Record the customer's rating (`Ticket – Ranking`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/ranking",
    tag = "tickets",
    params(IdPath),
    request_body = RankingRequest,
    responses((status = 200, description = "Rated", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn ranking(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<RankingRequest>,
) -> Result<HttpResponse, ApiError> {
    let rating = input::Rating {
        rating: body.rating,
        comment: body.comment,
    };
    let outcome = state
        .helpdesk
        .rate_ticket(&cx.actor, path.id, rating, cx.if_match)
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

/// Forward the ticket to an address (`Ticket – Forward`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/forward",
    tag = "tickets",
    params(IdPath),
    request_body = ForwardRequest,
    responses((status = 200, description = "Forwarded", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn forward(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<ForwardRequest>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .helpdesk
        .forward_ticket(
            &cx.actor,
            path.id,
            input::Forward { to: body.to },
            cx.if_match,
        )
        .await?;
    Ok(command_ok(outcome))
}

/// Log a phone call (`Ticket – Call`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/calls",
    tag = "tickets",
    params(IdPath),
    request_body = CallRequest,
    responses((status = 200, description = "Logged", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn call(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<CallRequest>,
) -> Result<HttpResponse, ApiError> {
    let call = input::Call {
        direction: body.direction,
        duration_seconds: body.duration_seconds,
    };
    let outcome = state
        .helpdesk
        .log_call(&cx.actor, path.id, call, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Add a voice message (`Ticket – Voice message`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/voice-messages",
    tag = "tickets",
    params(IdPath),
    request_body = VoiceMessageRequest,
    responses((status = 200, description = "Added; item is the message id", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn voice_message(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<VoiceMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let voice = input::VoiceMessage {
        message_id: None,
        duration_seconds: body.duration_seconds,
        file_sha256: body.file_sha256,
    };
    let outcome = state
        .helpdesk
        .add_voice_message(&cx.actor, path.id, voice, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Add a chat message or transcript (`Ticket – Chat`).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/chat",
    tag = "tickets",
    params(IdPath),
    request_body = ChatRequest,
    responses((status = 200, description = "Added; item is the message id", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn chat(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let chat = input::ChatMessage {
        message_id: None,
        body: body.body,
    };
    let outcome = state
        .helpdesk
        .add_chat_message(&cx.actor, path.id, chat, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Add a message by the system (`Ticket – System message`; admins).
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/system-messages",
    tag = "tickets",
    params(IdPath),
    request_body = SystemMessageRequest,
    responses((status = 200, description = "Added", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn system_message(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    Json(body): Json<SystemMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .helpdesk
        .add_system_message(
            &cx.actor,
            path.id,
            input::SystemMessage { text: body.text },
            cx.if_match,
        )
        .await?;
    Ok(command_ok(outcome))
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
